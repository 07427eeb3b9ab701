"""Entry point: one process with the os-ken OpenFlow listener and the gRPC API over one data directory."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

# os-ken and the ovs library import eventlet (for hubs we do not use: os-ken runs its native-thread hub),
# which prints a deprecation notice at import. Silence that one notice before they are imported.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from apps import ids  # noqa: E402
from controller import config as config_mod  # noqa: E402
from controller import (  # noqa: E402
    logs,
    pki,
    plugins,
)
from controller.api.auth import TokenFile, Tokens  # noqa: E402
from controller.api.auth_etcd import EtcdTokens  # noqa: E402
from controller.api.server import ApiServer, tls_credentials  # noqa: E402
from controller.datadir import DataDir, DataDirError  # noqa: E402
from controller.dataplane import Dataplane  # noqa: E402
from controller.debug.drift import DriftMonitor  # noqa: E402
from controller.debug.metrics import Metrics  # noqa: E402
from controller.neutron import kinds as neutron_kinds  # noqa: E402
from controller.neutron.rest import NeutronServer  # noqa: E402
from controller.neutron.rest import listen as neutron_listen  # noqa: E402
from controller.periodic import Periodic  # noqa: E402
from controller.services import dhcp, dhcp6, firewall_reject, health, ra  # noqa: E402
from controller.services.vpn import VpnRealizer  # noqa: E402
from controller.services.vpn_host import LocalVpnHost, VpnHost  # noqa: E402
from controller.southbound import ofapp, ovsdb  # noqa: E402
from controller.southbound.ovsdb import ChassisAgent  # noqa: E402
from controller.southbound.roles import Ownership  # noqa: E402
from controller.southbound.status_feed import StatusFeed  # noqa: E402
from topology.etcd_store import EtcdStore  # noqa: E402
from topology.history import Compactor  # noqa: E402
from topology.records import Chassis  # noqa: E402
from topology.state import State  # noqa: E402
from topology.state_etcd import EtcdState  # noqa: E402

log = logging.getLogger("sdn")


def setup_tls(cfg: config_mod.Config) -> pki.TlsFiles:
    """The CA (created on first start) and the controller's certificate, valid for the addresses clients and
    switches are told to use; and warnings for every channel an insecure_* option leaves in plaintext."""
    authority = pki.Pki(cfg.pki_path)
    if authority.init():
        log.info("created a certificate authority in %s (its key ca.key is 0600)", cfg.pki_path)
    names = [
        h
        for h in (
            config_mod.split_hostport(cfg.grpc_listen)[0],
            config_mod.split_hostport(cfg.openflow_listen)[0],
            *([config_mod.split_hostport(cfg.neutron_listen)[0]] if cfg.neutron_listen else []),
            cfg.switch_controller_target.split(":")[1],
        )
        if h not in ("0.0.0.0", "::", "")
    ]
    files = authority.ensure_controller([*names, *cfg.tls_san])
    if cfg.insecure_openflow:
        log.warning(
            "insecure_openflow: OpenFlow on %s is PLAINTEXT and unauthenticated: any host reaching it "
            "can claim a datapath id not yet connected",
            cfg.openflow_listen,
        )
    if cfg.insecure_ovsdb:
        log.warning(
            "insecure_ovsdb: chassis may use plaintext tcp: OVSDB addresses (unauthenticated, readable "
            "by anyone on the path)"
        )
    if not cfg.grpc_uses_tls and not config_mod.is_loopback(config_mod.split_hostport(cfg.grpc_listen)[0]):
        log.warning(
            "insecure_grpc: the gRPC API on %s is PLAINTEXT beyond loopback: bearer tokens travel in clear",
            cfg.grpc_listen,
        )
    if cfg.neutron_listen and not cfg.neutron_uses_tls:
        host = config_mod.split_hostport(cfg.neutron_listen)[0]
        if not config_mod.is_loopback(host):
            log.warning(
                "insecure_neutron: the Neutron API on %s is plain HTTP beyond loopback: tokens travel in clear",
                cfg.neutron_listen,
            )
    for what, listen in (("dashboard", cfg.dashboard_listen), ("metrics", cfg.metrics_listen)):
        if listen and not config_mod.is_loopback(config_mod.split_hostport(listen)[0]):
            log.warning("the %s on %s is plain HTTP beyond loopback", what, listen)
    return files


def open_state(cfg: config_mod.Config) -> State:
    """The model from its store: the SQLite file in the data directory, or etcd (README "Store on etcd")."""
    if cfg.store == "etcd":
        return EtcdState(EtcdStore(cfg.etcd_config()), cfg.model_config())
    return State(cfg.data_path / "topology.sqlite", cfg.model_config())


def _authorizer(state: State) -> Callable[[int, str], str | None]:
    """A switch may be datapath `dpid` only if its certificate names a registered chassis with that id."""

    def authorize(dpid: int, chassis_id: str) -> str | None:
        ch = state.topology.chassis.get(chassis_id)  # one dict read: no lock (this is os-ken's event thread)
        if ch is None:
            return "unknown_chassis"
        if ch.datapath_id != dpid:
            return "wrong_datapath_id"
        return None

    return authorize


def start_dataplane(cfg: config_mod.Config, state: State, tls: pki.TlsFiles) -> Dataplane:
    """os-ken in this process (its hub runs native threads), the sync engines, the OVSDB agents."""
    host, port = config_mod.split_hostport(cfg.openflow_listen)
    app = ofapp.ensure_started(host, port, tls=None if cfg.insecure_openflow else tls)
    if cfg.store == "etcd":  # several controllers: no engine talks to a switch before its role is known
        app.enable_roles()
    if not cfg.insecure_openflow:
        app.authorize = _authorizer(state)
    ovsdb.set_ssl_identity(tls)  # ssl: OVSDB addresses; process-wide in the ovs library
    targets = cfg.switch_controller_targets  # every controller's: all of them write the same list

    def agent(ch: Chassis, on_change: Callable[[str, Any], None]) -> ChassisAgent:
        return ChassisAgent(
            ch.id,
            ch.ovsdb_address,
            controller_targets=targets,
            datapath_id=ch.datapath_id,
            bridge_mappings=dict(ch.bridge_mappings),
            datapath_type=cfg.datapath_type,
            on_change=on_change,
            allow_tcp=cfg.insecure_ovsdb,
        )

    dataplane = Dataplane(
        state,
        engine_factory=lambda dpid, _cb: app.sync.get(dpid),  # type: ignore[arg-type,return-value]
        agent_factory=agent,
        packet_ins=lambda dpid: app.packet_ins.get(dpid, 0),
        gateway_chassis=tuple(cfg.gateway_chassis),
        neighbors_file=cfg.data_path / "neighbors.json",
        dhcp_rate_pps=cfg.dhcp_rate_pps,
        connected=lambda dpid: app.registry.get(dpid) is not None,
        gateway_failover_s=cfg.gateway_failover_s,
        neighbor_ttl_s=cfg.neighbor_ttl_s,
        gateways_file=cfg.data_path / "gateways.json",
        self_check_interval_s=cfg.self_check_interval_s,
        self_check_every_change=cfg.self_check_every_change,
        owned_only=cfg.store == "etcd",  # several controllers: each compiles the chassis it masters
    )
    app.sync.on_realized = dataplane._on_realized
    dataplane.vswitchd_ctl_dir = cfg.vswitchd_ctl_dir
    dataplane.packet_out = app.packet_out
    # address configuration: DHCPv4, IPv6 router solicitations (and periodic advertisements), DHCPv6
    advertiser = ra.Advertiser(host=dataplane, send=app.packet_out)
    dataplane.packet_in_apps[ids.DHCP] = dhcp6.by_protocol(
        dhcp.Responder(lease_s=cfg.dhcp_lease_s, send=app.packet_out),
        advertiser,
        dhcp6.Responder6(lease_s=cfg.dhcp_lease_s, send=app.packet_out),
    )
    state.add_listener(advertiser.on_write)
    Periodic(
        "router-advertisements", ra.TICK_S, lambda: advertiser.tick(time.monotonic())
    ).start()  # a daemon
    dataplane.packet_in_apps[ids.FIREWALL] = firewall_reject.handler(app.packet_out)
    # load balancers' health monitors: probes injected into the pipeline, answers from the LB app's packet-ins
    dataplane.health = health.HealthService(state, app.inject)
    app.packet_in_handler = health.answers_first(dataplane.health, dataplane.on_packet_in)
    dataplane.start()
    dataplane.health.start()
    dataplane.drift = DriftMonitor(dataplane, cfg.drift_interval_s)
    dataplane.drift.start()
    return dataplane


def start_ownership(cfg: config_mod.Config, state: State, dataplane: Dataplane) -> Ownership | None:
    """store = "etcd": split the chassis with the other controllers (OpenFlow roles, README "Several
    controllers"); every switch is a slave of ours until this controller holds its owner key. None with
    SQLite (one controller: every switch is ours, no role requests)."""
    if cfg.store != "etcd":
        return None
    app = ofapp.ensure_started(*config_mod.split_hostport(cfg.openflow_listen))  # the running app
    app.enable_roles()
    # its own connections, with requests short enough to step down in time when etcd stops answering
    store = EtcdStore(
        replace(cfg.etcd_config(), timeout_s=min(cfg.etcd_timeout_s, cfg.ownership_margin_s / 3))
    )
    controller_id = (
        cfg.controller_id or f"{socket.gethostname()}:{config_mod.split_hostport(cfg.openflow_listen)[1]}"
    )

    def chassis() -> list[str]:
        with state.lock:
            return list(state.topology.chassis)

    def on_role(chassis_id: str, master: bool, generation: int) -> None:
        ch = state.topology.chassis.get(chassis_id)
        if ch is None:
            return
        dpid = ch.datapath_id
        # a new master claims the switch at once (the old one stepped down before releasing the key), but
        # its engine talks to the switch only once the model has every write etcd had by then
        # (Dataplane.chassis_role): the old master's flows came from such a model, and are adopted as they are
        app.set_role(dpid, master, generation, activate=False)
        dataplane.chassis_role(chassis_id, master, activate=lambda: app.activate(dpid, generation))

    ownership = Ownership(
        store, controller_id, chassis, on_role, lease_s=cfg.ownership_lease_s, margin_s=cfg.ownership_margin_s
    )
    dataplane.owns = ownership.is_master
    dataplane.master_of = ownership.owner_of
    if dataplane.health is not None:
        dataplane.health.owns = app.is_master
    # what each master knows of its chassis, for every controller's ListChassisStatus and WaitRealized
    feed = StatusFeed(store, controller_id, lambda: dataplane.status_snapshot(controller_id), ownership.lease)
    feed.on_change = dataplane.notify_realized
    dataplane.status_feed = feed
    feed.start()
    ownership.start()
    log.info("controller %s: chassis split with the other controllers on %s", controller_id, store.path)
    return ownership


def start_vpn(cfg: config_mod.Config, state: State, dataplane: Dataplane, tls: pki.TlsFiles) -> VpnRealizer:
    """VPN services on the gateway chassis this controller masters; the chassis named in vpn_netns are on
    this machine and get their IKE daemons from here (controller/services/vpn_host.py)."""
    workdir = Path(cfg.vpn_dir) if cfg.vpn_dir else cfg.data_path / "vpn"

    def ovsdb_of(chassis_id: str) -> Callable[[], str]:
        def address() -> str:
            with state.lock:
                ch = state.topology.chassis.get(chassis_id)
            return ch.ovsdb_address if ch is not None else ""

        return address

    hosts: dict[str, VpnHost] = {}
    for entry in cfg.vpn_netns:
        chassis_id, netns = entry.split("=", 1)
        hosts[chassis_id] = LocalVpnHost(
            chassis_id, netns, ovsdb_of(chassis_id), workdir / chassis_id, esp=cfg.vpn_esp, tls=tls
        )
    realizer = VpnRealizer(state, dataplane.current_view, hosts, owns=lambda c: dataplane.owns(c))
    realizer.start()
    if hosts:
        log.info("VPN services of chassis %s run here (%s ESP)", ", ".join(sorted(hosts)), cfg.vpn_esp)
    return realizer


def start_metrics(
    cfg: config_mod.Config, state: State, dataplane: Dataplane, compactor: Compactor | None = None
) -> Metrics | None:
    """The Prometheus endpoint and its hooks (store commits, bundles, packet-ins, flow counters), or None."""
    if not cfg.metrics_listen:
        return None
    app = ofapp.ensure_started(*config_mod.split_hostport(cfg.openflow_listen))  # the running app
    metrics = Metrics(
        state,
        dataplane,
        lambda: dict(app.packet_ins_by_reason),
        cfg.stats_interval_s,
        compactor=compactor,
        southbound_rejected=app.rejected,
    )
    port = metrics.start(cfg.metrics_listen, sync=app.sync)
    log.info("metrics on http://%s:%d/metrics", config_mod.split_hostport(cfg.metrics_listen)[0], port)
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["pki"]:
        return pki.main(args[1:])
    cfg = config_mod.load(args)
    logs.setup(cfg.log_level, cfg.log_format)
    data = cfg.data_path
    datadir = DataDir(data)
    try:
        datadir.acquire()  # one controller per data directory, held until the process exits
        plugins.load(cfg.disabled_plugins)  # their record kinds before the store is read
        state = open_state(cfg)
        plugins.report_orphans(state.unknown_kinds())  # kinds kept in the store without their plug-in
        local_tokens = TokenFile(data / "tokens.json")
        # with etcd, one token table for every controller (controller/api/auth_etcd.py)
        tokens: Tokens = (
            EtcdTokens(state.etcd, local_tokens) if isinstance(state, EtcdState) else local_tokens
        )
    except (DataDirError, OSError, sqlite3.Error, ValueError, KeyError) as err:
        log.error("cannot start: %s", _one_line(err, data))
        return 1
    compactor = Compactor(state.sqlite, cfg.history_policy()) if state.sqlite is not None else None
    if compactor is not None:  # etcd bounds its own history (its auto-compaction)
        compactor.start()
    # The model keeps many small long-lived objects; the default thresholds make the cyclic GC walk all of
    # them every few hundred writes (it doubled CreatePort latency at 10k ports). Records form no cycles.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if tokens.created_admin_token:
        log.info("created %s with an admin token (mode 0600)", data / "tokens.json")
    tls = setup_tls(cfg)
    try:
        dataplane = start_dataplane(cfg, state, tls)
    except OSError as err:  # the OpenFlow port is taken, or the address is not ours
        log.error("cannot start: %s", _one_line(err, data))
        logging.shutdown()
        os._exit(1)  # os-ken's hub threads are not daemonic
    ownership = start_ownership(cfg, state, dataplane)
    vpn_realizer = start_vpn(cfg, state, dataplane, tls)
    log.info(
        "OpenFlow listener on %s; switches are told to connect to %s",
        cfg.openflow_listen,
        cfg.switch_controller_target,
    )
    metrics = start_metrics(cfg, state, dataplane, compactor)
    api = ApiServer(
        state,
        tokens,
        cfg.grpc_listen,
        cfg.grpc_workers,
        dataplane=dataplane,
        interceptors=[metrics.interceptor()] if metrics is not None else [],
        flow_budget=cfg.flow_budget_per_tenant,
        max_streams=cfg.max_streams,
        max_streams_per_tenant=cfg.max_streams_per_tenant,
        credentials=tls_credentials(tls, cfg.grpc_require_client_cert) if cfg.grpc_uses_tls else None,
    )
    if metrics is not None:
        metrics.streams = api.streams
    api.start()
    grpc_host, _ = config_mod.split_hostport(cfg.grpc_listen)
    endpoints = {
        "grpc": f"{grpc_host}:{api.port}",
        "openflow": cfg.openflow_listen,
        "pid": os.getpid(),
        "grpc_tls": cfg.grpc_uses_tls,
        "ca_cert": str(tls.ca.resolve()),
    }
    neutron: NeutronServer | None = None
    if cfg.neutron_listen:
        host, port = config_mod.split_hostport(cfg.neutron_listen)
        try:
            neutron = neutron_listen(
                api.topology, tokens, neutron_kinds.ALL, host, port, tls if cfg.neutron_uses_tls else None
            )
        except OSError as err:
            log.error("cannot start: the Neutron API on %s: %s", cfg.neutron_listen, err)
            logging.shutdown()
            os._exit(1)  # os-ken's hub threads are not daemonic
        endpoints["neutron"] = neutron.url
        log.info("Neutron API on %s", neutron.url)
    dashboard = None
    if cfg.dashboard_listen:
        from controller.dashboard import DashboardServer, connect

        # a client of the API: a channel to our own gRPC server, as any client reaches it
        channel = connect(str(endpoints["grpc"]), tls if cfg.grpc_uses_tls else None)
        dashboard = DashboardServer(channel, cfg.dashboard_listen)
        dashboard.start()
        endpoints["dashboard"] = dashboard.url
        log.info("dashboard on %s", dashboard.url)
    try:
        (data / "endpoints.json").write_text(json.dumps(endpoints))
    except OSError as err:
        log.error("cannot start: %s", _one_line(err, data))
        logging.shutdown()
        os._exit(1)  # os-ken's hub threads are not daemonic
    log.info(
        "gRPC API on %s (%s; revision %d); data in %s",
        endpoints["grpc"],
        "TLS" if cfg.grpc_uses_tls else "plaintext, loopback only",
        state.revision,
        data.resolve(),
    )

    if cfg.demo:
        from controller import demo

        demo.seed(str(endpoints["grpc"]), tokens.admin_token(), data)

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
    if neutron is not None:
        neutron.stop()
    api.stop(cfg.shutdown_grace_s)
    if metrics is not None:
        metrics.stop()
    if dataplane.status_feed is not None:
        dataplane.status_feed.stop()
    if ownership is not None:
        ownership.stop()
    vpn_realizer.stop()
    dataplane.drift.stop()
    if dataplane.health is not None:
        dataplane.health.stop()
    dataplane.stop()
    if compactor is not None:
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
