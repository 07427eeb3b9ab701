"""Shared fixtures: a real gRPC server on a free port over a real SQLite store in a temp dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from controller import plugins
from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from lab.proc import READY_POLL_OPTIONS
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology.state import State

ROOT = Path(__file__).resolve().parent.parent


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before: ports are picked when a
    ControllerProcess is made, so two made before either starts could otherwise get the same one (the second
    controller then has no OpenFlow listener: two controllers on etcd, tests/test_e2e_ha.py)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class Api:
    """A client's view of a server: endpoint, tokens, a stub, and helpers to call as someone."""

    endpoint: str
    admin_token: str
    channel: grpc.Channel
    stub: pb_grpc.TopologyServiceStub

    @staticmethod
    def md(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return self.md(self.admin_token)

    def tenant_token(self, tenant: str) -> str:
        return str(self.stub.CreateToken(pb.CreateTokenRequest(tenant=tenant), metadata=self.admin).token)


@dataclass
class InProcessServer:
    api: Api
    server: ApiServer
    state: State
    data_dir: Path


@pytest.fixture(scope="module")
def qos_plugin() -> Iterator[None]:
    """The QoS plug-in (plugins/qos, installed in the venv) installed in this process for a module's tests,
    and taken out again after them: no other test sees its stages, kinds or units."""
    from sdn_qos.plugin import PLUGIN

    report = plugins.install([PLUGIN])
    assert report.loaded == [PLUGIN], report.refused
    try:
        yield
    finally:
        plugins.uninstall(PLUGIN)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    """An ApiServer in this process (fast), with a real channel to it."""
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    srv = ApiServer(state, tokens, "127.0.0.1:0", workers=32)
    srv.start()
    endpoint = f"127.0.0.1:{srv.port}"
    channel = grpc.insecure_channel(endpoint)
    api = Api(endpoint, tokens.admin_token(), channel, pb_grpc.TopologyServiceStub(channel))
    try:
        yield InProcessServer(api, srv, state, tmp_path)
    finally:
        channel.close()
        srv.stop(0)
        state.close()


@pytest.fixture
def api(server: InProcessServer) -> Api:
    return server.api


class ControllerProcess:
    """`run_controller.py` as a child process on free ports, restartable, killable with any signal."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.grpc_port = free_port()
        self.of_port = free_port()
        self.of_host = "127.0.0.1"
        self.metrics_port = free_port()
        self.dashboard_port = free_port()
        self.neutron_port = free_port()  # the Neutron REST API (plain HTTP on loopback)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "controller.log"
        self.credentials: grpc.ChannelCredentials | None = None  # TLS to the API (--grpc-tls always)
        # the compile self-check after every change: every test controller runs it (benchmarks turn it off:
        # it is a full compile per change)
        self.self_check_every_change = True

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "run_controller.py"),
                    "--data-dir",
                    str(self.data_dir),
                    "--grpc-listen",
                    self.endpoint,
                    "--openflow-listen",
                    f"{self.of_host}:{self.of_port}",
                    "--metrics-listen",
                    f"127.0.0.1:{self.metrics_port}",
                    "--dashboard-listen",
                    f"127.0.0.1:{self.dashboard_port}",
                    "--neutron-listen",
                    f"127.0.0.1:{self.neutron_port}",
                    *(["--self-check-every-change"] if self.self_check_every_change else []),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        channel = self.channel(READY_POLL_OPTIONS)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"controller exited: {self.log.read_text()[-2000:]}")
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return
                except grpc.FutureTimeoutError:
                    continue
            raise TimeoutError("controller did not start")
        finally:
            channel.close()

    @property
    def neutron_url(self) -> str:
        return f"http://127.0.0.1:{self.neutron_port}"

    def channel(self, options: list[tuple[str, int]] | None = None) -> grpc.Channel:
        """A channel to the API: TLS when `credentials` are set, else plaintext (loopback)."""
        if self.credentials is not None:
            return grpc.secure_channel(self.endpoint, self.credentials, options=options)
        return grpc.insecure_channel(self.endpoint, options=options)

    def admin_token(self) -> str:
        data = json.loads((self.data_dir / "tokens.json").read_text())
        return next(t for t, v in data["tokens"].items() if v["admin"])

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def divergences(self) -> list[str]:
        """What the compile self-check (run after every change here) found over this controller's whole
        life, restarts included: every lab test ends by asserting it found nothing."""
        if not self.log.exists():
            return []
        return [
            line for line in self.log.read_text(errors="replace").splitlines() if "compile divergence" in line
        ]

    def assert_no_divergence(self) -> None:
        found = self.divergences()
        assert not found, "the incremental compile diverged from a full compile:\n" + "\n".join(found[:40])


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()
    proc.assert_no_divergence()


os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
