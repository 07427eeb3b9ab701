"""Real etcd servers for tests, benchmarks and the lab: Debian's `etcd` binary on free loopback ports, each with
its own data directory, stopped by pid (never by name: other helpers' etcds may run on the same machine).

    with EtcdCluster(tmp_path, members=3) as cluster:
        cluster.endpoints        # ["http://127.0.0.1:PORT", ...] the client URLs
        cluster.members[0].kill()  # SIGKILL one member; .start() brings it back on the same ports and data
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before (ports are picked before the
    processes that listen on them start: two picked in a row could otherwise be the same)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass(frozen=True)
class ServerTls:
    """The members' server certificate (valid for 127.0.0.1), its key, the CA that verifies clients."""

    cert: Path
    key: Path
    ca: Path
    client_cert_auth: bool = True


@dataclass(frozen=True)
class MemberStatus:
    member_id: int
    leader: int  # the leader's member id as this member knows it; 0: none (no quorum, or an election)
    raft_term: int


class EtcdMember:
    def __init__(
        self,
        name: str,
        data_dir: Path,
        client_port: int,
        peer_port: int,
        tls: ServerTls | None = None,
        max_txn_ops: int = 10000,
    ) -> None:
        self.tls = tls
        self.max_txn_ops = max_txn_ops
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.initial_cluster = ""
        self.cluster_state = "new"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [
                ETCD,
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir / "data"),
                "--listen-client-urls",
                self.client_url,
                "--advertise-client-urls",
                self.client_url,
                "--listen-peer-urls",
                self.peer_url,
                "--initial-advertise-peer-urls",
                self.peer_url,
                "--initial-cluster",
                self.initial_cluster or f"{self.name}={self.peer_url}",
                "--initial-cluster-state",
                self.cluster_state,
                "--initial-cluster-token",
                f"sdn-{os.getpid()}",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                # a write is one txn op per record it changes: big ones (a network with its ports) need room
                "--max-txn-ops",
                str(self.max_txn_ops),
                "--max-request-bytes",
                str(32 << 20),
                *self._tls_args(),
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def _tls_args(self) -> list[str]:
        t = self.tls
        if t is None:
            return []
        return ["--cert-file", str(t.cert), "--key-file", str(t.key), "--trusted-ca-file", str(t.ca)] + (
            ["--client-cert-auth"] if t.client_cert_auth else []
        )

    def healthy(self) -> bool:
        if self.tls is not None:  # /health would want a client certificate: is the port open?
            try:
                socket.create_connection(("127.0.0.1", self.client_port), timeout=1).close()
                return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1) as r:
                return b'"health":"true"' in r.read()
        except OSError:
            return False

    def status(self) -> MemberStatus:
        """The member's own view (etcd's maintenance Status through its JSON gateway; plaintext members
        only)."""
        if self.tls is not None:
            raise NotImplementedError("status of a TLS member (it wants a client certificate)")
        req = urllib.request.Request(self.client_url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            got = json.loads(r.read())
        return MemberStatus(
            int(got["header"]["member_id"]), int(got.get("leader", 0)), int(got.get("raftTerm", 0))
        )

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {self.name} not healthy after {timeout} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL (a crash): its data directory stays, start() brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


class EtcdCluster:
    """`members` etcd servers forming one cluster, in `workdir` (`max_txn_ops`: etcd's --max-txn-ops; its
    own default is 128)."""

    def __init__(
        self, workdir: Path, members: int = 1, tls: ServerTls | None = None, max_txn_ops: int = 10000
    ) -> None:
        self.workdir = Path(workdir)
        self.members = [
            EtcdMember(f"m{i}", self.workdir / f"m{i}", free_port(), free_port(), tls, max_txn_ops)
            for i in range(members)
        ]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = cluster

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def leader(self, timeout: float = 10.0) -> int:
        """The index in `members` of the leader the running members agree on (waits for one)."""
        deadline = time.monotonic() + timeout
        while True:
            seen: dict[int, int] = {}  # member id -> index
            leaders = set()
            for i, m in enumerate(self.members):
                if m.proc is None:
                    continue
                try:
                    st = m.status()
                except OSError:
                    continue
                seen[st.member_id] = i
                leaders.add(st.leader)
            if len(leaders) == 1 and (lead := leaders.pop()) in seen:
                return seen[lead]
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd: no leader agreed on ({leaders})")
            time.sleep(0.05)

    def start(self) -> EtcdCluster:
        for m in self.members:
            m.start()
        for m in self.members:
            m.wait_healthy()
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
