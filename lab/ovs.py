"""One Open vSwitch instance: an ovsdb-server (root namespace) and an ovs-vswitchd inside a namespace."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from controller.pki import TlsFiles
from lab import proc
from lab.state import LabState

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OPENFLOW = "OpenFlow13"
OVSDB_SSL_PORT = 6640  # on the chassis's own management address, inside its namespace: always free


def _pidfile_locked(path: Path) -> bool:
    """True while some process holds the fcntl lock OVS daemons keep on their pidfile."""
    try:
        with open(path, "r+b") as f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.lockf(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


class OvsInstance:
    """ovsdb-server + ovs-vswitchd with all files in `rundir`, vswitchd running in `namespace`.

    With `tls` (key, certificate, CA: a chassis certificate of the controller's CA), ovs-vswitchd uses it for
    its ssl: controller connections, and ovsdb-server runs in the namespace too and also serves SSL on
    `ovsdb_ssl_ip`:6640 (clients need a certificate of the same CA); the unix socket stays for local tools.
    """

    def __init__(
        self,
        rundir: Path,
        namespace: str,
        state: LabState,
        tls: TlsFiles | None = None,
        ovsdb_ssl_ip: str | None = None,
        system_routes: bool = True,
    ) -> None:
        self.rundir = rundir
        self.namespace = namespace
        self._state = state
        # False: ovs-vswitchd does not mirror the kernel's routes (--disable-system-route); native tunnels
        # then need a route added with `ovs/route/add` after every start (see Chassis.start_vswitchd).
        self.system_routes = system_routes
        self.tls = tls
        self.ovsdb_ssl_ip = ovsdb_ssl_ip if tls is not None else None

    @property
    def ovsdb_remote(self) -> str:
        """The address a controller uses: ssl:IP:6640 with TLS, else the unix socket."""
        return f"ssl:{self.ovsdb_ssl_ip}:{OVSDB_SSL_PORT}" if self.ovsdb_ssl_ip else self.ovsdb

    def _tls_args(self) -> list[str]:
        t = self.tls
        return [] if t is None else [f"--private-key={t.key}", f"--certificate={t.cert}", f"--ca-cert={t.ca}"]

    @property
    def db_sock(self) -> str:
        return str(self.rundir / "db.sock")

    @property
    def ovsdb(self) -> str:
        """OVSDB address for ovs-vsctl --db / the ovs IDL."""
        return f"unix:{self.db_sock}"

    @property
    def env(self) -> dict[str, str]:
        d = str(self.rundir)
        return {"OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d, "OVS_SYSCONFDIR": d}

    def _daemon_args(self, name: str) -> list[str]:
        d = self.rundir
        return [
            f"--pidfile={d}/{name}.pid",
            f"--unixctl={d}/{name}.ctl",
            f"--log-file={d}/{name}.log",
            "--detach",
            "--no-chdir",
        ]

    def _record(self, name: str) -> int:
        pid = proc.read_pidfile(str(self.rundir / f"{name}.pid"))
        if pid is None:
            raise RuntimeError(f"{name} in {self.rundir} wrote no pidfile")
        self._state.add_pid(pid)
        return pid

    def start(self) -> None:
        """Create the database and start both daemons."""
        self.rundir.mkdir(parents=True, exist_ok=False)
        db = str(self.rundir / "conf.db")
        proc.run(["ovsdb-tool", "create", db, SCHEMA], env=self.env)
        remotes = [f"--remote=punix:{self.db_sock}"]
        if self.ovsdb_ssl_ip:
            remotes.append(f"--remote=pssl:{OVSDB_SSL_PORT}:{self.ovsdb_ssl_ip}")
        proc.run(
            ["ovsdb-server", db, *remotes, *self._tls_args(), *self._daemon_args("ovsdb-server")],
            namespace=self.namespace if self.ovsdb_ssl_ip else None,
            env=self.env,
        )
        self._record("ovsdb-server")
        self.vsctl("init", wait=False)
        self.start_vswitchd()

    def start_vswitchd(self) -> None:
        """Start ovs-vswitchd inside the namespace; it re-creates bridges and ports but has no flows."""
        routes = [] if self.system_routes else ["--disable-system-route"]
        proc.run(
            ["ovs-vswitchd", self.ovsdb, *routes, *self._tls_args(), *self._daemon_args("ovs-vswitchd")],
            namespace=self.namespace,
            env=self.env,
        )
        self._record("ovs-vswitchd")

    def vswitchd_pid(self) -> int | None:
        """Pid of the running ovs-vswitchd, None when it is not running."""
        pid = proc.read_pidfile(str(self.rundir / "ovs-vswitchd.pid"))
        return pid if pid is not None and proc.pid_alive(pid) else None

    def kill_vswitchd(self) -> None:
        """SIGKILL ovs-vswitchd (a crash, not a clean exit) and wait until it is gone."""
        pid = self.vswitchd_pid()
        if pid is not None:
            os.kill(pid, 9)
            proc.wait_until(lambda: not proc.pid_alive(pid), timeout=5)
            # A killed multi-threaded vswitchd shows as a zombie while its other threads still tear down
            # (seconds with 50k flows) and its pidfile stays locked: a new one would refuse to start.
            proc.wait_until(lambda: not _pidfile_locked(self.rundir / "ovs-vswitchd.pid"), timeout=30)

    def vsctl(self, *args: str, wait: bool = True, check: bool = True) -> str:
        """ovs-vsctl against this instance; `wait=False` does not wait for ovs-vswitchd to apply it."""
        opts = [f"--db={self.ovsdb}", "--timeout=20"] + ([] if wait else ["--no-wait"])
        return proc.run(["ovs-vsctl", *opts, *args], env=self.env, check=check).stdout.strip()

    def ofctl(self, *args: str, check: bool = True) -> str:
        """ovs-ofctl speaking OpenFlow 1.3 to this vswitchd (through its bridge's mgmt socket in rundir)."""
        return proc.run(["ovs-ofctl", "-O", OPENFLOW, *args], env=self.env, check=check).stdout

    def appctl(self, *args: str, check: bool = True) -> str:
        """ovs-appctl to this ovs-vswitchd."""
        target = str(self.rundir / "ovs-vswitchd.ctl")
        return proc.run(["ovs-appctl", "-t", target, *args], env=self.env, check=check).stdout
