"""Entry point: one process with the os-ken OpenFlow listener and the gRPC API over one data directory."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

# os-ken and the ovs library import eventlet (for hubs we do not use: os-ken runs its native-thread hub),
# which prints a deprecation notice at import. Silence that one notice before they are imported.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from apps import ids  # noqa: E402
from controller import config as config_mod  # noqa: E402
from controller.services import dhcp, firewall_reject, health  # noqa: E402
from controller.southbound import ofapp  # noqa: E402
from controller.api.auth import TokenFile  # noqa: E402
from controller.datadir import DataDir, DataDirError  # noqa: E402
from controller.dataplane import Dataplane  # noqa: E402
from controller.debug.drift import DriftMonitor  # noqa: E402
from controller.debug.metrics import Metrics  # noqa: E402
from controller.southbound.ovsdb import ChassisAgent  # noqa: E402
from controller.api.server import ApiServer  # noqa: E402
from topology.history import Compactor
from topology.records import Chassis  # noqa: E402
from topology.state import State  # noqa: E402

log = logging.getLogger("sdn")


def start_dataplane(cfg: config_mod.Config, state: State) -> Dataplane:
    """os-ken in this process (its hub runs native threads), the sync engines, the OVSDB agents."""
    host, port = config_mod.split_hostport(cfg.openflow_listen)
    app = ofapp.ensure_started(host, port)
    target = cfg.switch_controller_target

    def agent(ch: Chassis, on_change: Callable[[str, Any], None]) -> ChassisAgent:
        return ChassisAgent(ch.id, ch.ovsdb_address, controller_targets=[target], datapath_id=ch.datapath_id,
                            bridge_mappings=dict(ch.bridge_mappings), datapath_type=cfg.datapath_type,
                            on_change=on_change)

    dataplane = Dataplane(state, engine_factory=lambda dpid, _cb: app.sync.get(dpid), agent_factory=agent,
                          packet_ins=lambda dpid: app.packet_ins.get(dpid, 0),
                          gateway_chassis=tuple(cfg.gateway_chassis),
                          neighbors_file=cfg.data_path / "neighbors.json", dhcp_rate_pps=cfg.dhcp_rate_pps,
                          connected=lambda dpid: app.registry.get(dpid) is not None,
                          gateway_failover_s=cfg.gateway_failover_s, neighbor_ttl_s=cfg.neighbor_ttl_s,
                          gateways_file=cfg.data_path / "gateways.json",
                          self_check_interval_s=cfg.self_check_interval_s,
                          self_check_every_change=cfg.self_check_every_change)
    app.sync.on_realized = dataplane._on_realized
    dataplane.packet_out = app.packet_out
    dataplane.packet_in_apps[ids.DHCP] = dhcp.Responder(lease_s=cfg.dhcp_lease_s, send=app.packet_out)
    dataplane.packet_in_apps[ids.FIREWALL] = firewall_reject.handler(app.packet_out)
    # load balancers' health monitors: probes injected into the pipeline, answers from the LB app's packet-ins
    dataplane.health = health.HealthService(state, app.inject)
    dataplane.packet_in_apps[ids.LB] = dataplane.health.on_packet_in
    app.packet_in_handler = dataplane.on_packet_in
    dataplane.start()
    dataplane.health.start()
    dataplane.drift = DriftMonitor(dataplane, cfg.drift_interval_s)
    dataplane.drift.start()
    return dataplane


def start_metrics(cfg: config_mod.Config, state: State, dataplane: Dataplane,
                  compactor: Compactor | None = None) -> Metrics | None:
    """The Prometheus endpoint and its hooks (store commits, bundles, packet-ins, flow counters), or None."""
    if not cfg.metrics_listen:
        return None
    app = ofapp.ensure_started(*config_mod.split_hostport(cfg.openflow_listen))  # the running app
    metrics = Metrics(state, dataplane, lambda: dict(app.packet_ins_by_reason), cfg.stats_interval_s,
                      compactor=compactor)
    port = metrics.start(cfg.metrics_listen, sync=app.sync)
    log.info("metrics on http://%s:%d/metrics", config_mod.split_hostport(cfg.metrics_listen)[0], port)
    return metrics


def main(argv: list[str] | None = None) -> int:
    cfg = config_mod.load(argv)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = cfg.data_path
    datadir = DataDir(data)
    try:
        datadir.acquire()  # one controller per data directory, held until the process exits
        state = State(data / "topology.sqlite", cfg.model_config())
        tokens = TokenFile(data / "tokens.json")
    except (DataDirError, OSError, sqlite3.Error, ValueError, KeyError) as err:
        log.error("cannot start: %s", _one_line(err, data))
        return 1
    compactor = Compactor(state.store, cfg.history_policy())
    compactor.start()
    # The model keeps many small long-lived objects; the default thresholds make the cyclic GC walk all of
    # them every few hundred writes (it doubled CreatePort latency at 10k ports). Records form no cycles.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if tokens.created_admin_token:
        log.info("created %s with an admin token (mode 0600)", data / "tokens.json")
    dataplane = start_dataplane(cfg, state)
    log.info("OpenFlow listener on %s; switches are told to connect to %s", cfg.openflow_listen,
             cfg.switch_controller_target)
    metrics = start_metrics(cfg, state, dataplane, compactor)
    api = ApiServer(state, tokens, cfg.grpc_listen, cfg.grpc_workers, dataplane=dataplane,
                    interceptors=[metrics.interceptor()] if metrics is not None else [],
                    flow_budget=cfg.flow_budget_per_tenant, max_streams=cfg.max_streams,
                    max_streams_per_tenant=cfg.max_streams_per_tenant)
    if metrics is not None:
        metrics.streams = api.streams
    api.start()
    grpc_host, _ = config_mod.split_hostport(cfg.grpc_listen)
    endpoints = {"grpc": f"{grpc_host}:{api.port}", "openflow": cfg.openflow_listen, "pid": os.getpid()}
    dashboard = None
    if cfg.dashboard_listen:
        from controller.dashboard import DashboardServer

        dashboard = DashboardServer(state, tokens, cfg.dashboard_listen, dataplane=dataplane)
        dashboard.start()
        endpoints["dashboard"] = dashboard.url
        log.info("dashboard on %s", dashboard.url)
    try:
        (data / "endpoints.json").write_text(json.dumps(endpoints))
    except OSError as err:
        log.error("cannot start: %s", _one_line(err, data))
        logging.shutdown()
        os._exit(1)  # os-ken's hub threads are not daemonic
    log.info("gRPC API on %s (revision %d); data in %s", endpoints["grpc"], state.revision, data.resolve())

    if cfg.demo:
        from controller import demo

        demo.seed(endpoints["grpc"], tokens.admin_token(), data)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("ready")
    while not stop.wait(1.0):
        pass
    if dashboard is not None:
        dashboard.stop()
    api.stop(cfg.shutdown_grace_s)
    if metrics is not None:
        metrics.stop()
    dataplane.drift.stop()
    if dataplane.health is not None:
        dataplane.health.stop()
    dataplane.stop()
    compactor.stop()
    state.close()
    log.info("stopped cleanly at revision %d", state.revision)
    logging.shutdown()
    os._exit(0)  # os-ken's hub threads are not daemonic; the store is closed, nothing is left to flush


def _one_line(err: BaseException, data: object) -> str:
    """What went wrong starting on the data directory, in one line for the operator (no traceback)."""
    if isinstance(err, DataDirError):
        return str(err)
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return f"data directory {data}: {err.strerror or err}{where}"
    if isinstance(err, sqlite3.Error):
        return f"data directory {data}: the store cannot be opened: {err}"
    return f"data directory {data}: tokens.json is not a token file ({type(err).__name__}: {err})"


if __name__ == "__main__":
    raise SystemExit(main())
