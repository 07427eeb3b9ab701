"""Entry point: one process with the os-ken OpenFlow listener and the gRPC API over one data directory."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from controller import config as config_mod
from controller.auth import TokenFile
from controller.server import ApiServer
from topology.state import State

log = logging.getLogger("sdn")


def start_openflow(listen: str) -> object:
    """Start os-ken in this process (its hub runs native threads); returns the OFApp instance."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    host, port = config_mod.split_hostport(listen)
    cfg.CONF(args=["--ofp-listen-host", host, "--ofp-tcp-listen-port", str(port)], project="os_ken")
    mgr = AppManager.get_instance()
    mgr.load_apps(["controller.ofapp"])
    contexts = mgr.create_contexts()
    mgr.instantiate_apps(**contexts)
    return mgr.applications["OFApp"]


def main(argv: list[str] | None = None) -> int:
    cfg = config_mod.load(argv)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = cfg.data_path
    data.mkdir(parents=True, exist_ok=True)
    state = State(data / "topology.sqlite", cfg.model_config())
    # The model keeps many small long-lived objects; the default thresholds make the cyclic GC walk all of
    # them every few hundred writes (it doubled CreatePort latency at 10k ports). Records form no cycles.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    tokens = TokenFile(data / "tokens.json")
    if tokens.created_admin_token:
        log.info("created %s with an admin token (mode 0600)", data / "tokens.json")
    api = ApiServer(state, tokens, cfg.grpc_listen, cfg.grpc_workers)
    api.start()
    grpc_host, _ = config_mod.split_hostport(cfg.grpc_listen)
    endpoints = {"grpc": f"{grpc_host}:{api.port}", "openflow": cfg.openflow_listen, "pid": os.getpid()}
    (data / "endpoints.json").write_text(json.dumps(endpoints))
    log.info("gRPC API on %s (revision %d); data in %s", endpoints["grpc"], state.revision, data.resolve())
    start_openflow(cfg.openflow_listen)
    log.info("OpenFlow listener on %s", cfg.openflow_listen)

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
    api.stop(cfg.shutdown_grace_s)
    state.close()
    log.info("stopped cleanly at revision %d", state.revision)
    logging.shutdown()
    os._exit(0)  # os-ken's hub threads are not daemonic; the store is closed, nothing is left to flush


if __name__ == "__main__":
    raise SystemExit(main())
