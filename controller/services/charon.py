"""One strongSwan IKE daemon (charon) in a network namespace, driven through VICI (strongSwan's `vici` package).

charon keeps its pid file at the fixed path /var/run/charon.pid, so each one gets its own /run: it starts
under `ip netns exec` (whose mount namespace is private) after bind mounts of its directory on INSIDE (where
it finds its configuration, VICI socket and log: the directory itself may be under /run) and of a
subdirectory over /run. Its strongswan.conf is fixed text: the plug-in list and load order (the ESP backend: kernel-libipsec,
strongSwan's userspace ESP through a TUN device, before kernel-netlink, which still does routes and
addresses; or kernel-netlink alone for kernel ESP), the VICI socket and a log file. Connections, keys and
SAs are never in files: they come and go through VICI (load-conn, load-shared, initiate, terminate,
list-sas, and the log / updown events a listener thread keeps reading).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import vici

log = logging.getLogger(__name__)

CHARON = "/usr/lib/ipsec/charon"
#: where a daemon sees its own directory (a bind mount in its private mount namespace)
INSIDE = "/mnt"
#: the ESP backends: "userspace" (kernel-libipsec: ESP in UDP through a TUN device, no kernel ESP needed;
#: what this machine can do) or "kernel" (the kernel's xfrm ESP, kernel-netlink alone: real hosts)
ESP_BACKENDS = ("userspace", "kernel")
_COMMON_PLUGINS = (
    "random nonce openssl aes sha1 sha2 hmac gmp kdf pem pkcs1 x509 pubkey revocation constraints "
    "socket-default vici updown"
)

#: log lines that explain why a connection is down (the reason reported with DOWN)
_REASONS = (
    "AUTHENTICATION_FAILED",
    "MAC mismatched",
    "no shared key",
    "NO_PROPOSAL_CHOSEN",
    "TS_UNACCEPTABLE",
    "no matching",
    "giving up",
    "not responding",
    "failed",
    "unable to",
)


def strongswan_conf(rundir: Path | str, esp: str) -> str:
    """The daemon's whole configuration: plug-ins in load order, VICI socket, log file."""
    if esp not in ESP_BACKENDS:
        raise ValueError(f"unknown ESP backend {esp!r}: expected one of {ESP_BACKENDS}")
    # the first plug-in to register an ESP backend wins: kernel-libipsec must load before kernel-netlink
    kernel = "kernel-libipsec kernel-netlink" if esp == "userspace" else "kernel-netlink"
    return f"""charon {{
  load_modular = no
  load = {kernel} {_COMMON_PLUGINS}
  install_virtual_ip = no
  retransmit_tries = 3
  retransmit_timeout = 1.0
  retransmit_base = 1.4
  plugins {{
    vici {{
      socket = unix://{rundir}/charon.vici
    }}
  }}
  filelog {{
    main {{
      path = {rundir}/charon.log
      flush_line = yes
      default = 1
      ike = 1
      time_format = %H:%M:%S
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
}}
"""


class Charon:
    """A charon process in `netns` with its files in `rundir`; `on_event(kind, message)` gets VICI events
    ("log", "ike-updown", "child-updown", decoded to str values) from the listener thread."""

    def __init__(
        self,
        netns: str,
        rundir: Path,
        esp: str = "userspace",
        on_event: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.netns = netns
        self.rundir = Path(rundir)
        self.esp = esp
        self.on_event = on_event
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the daemon's (ours, or one an earlier controller started: adopt)
        self._session: vici.Session | None = None
        self._lock = threading.Lock()  # one VICI request at a time on the command session
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def socket_path(self) -> Path:
        return self.rundir / "charon.vici"

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _is_charon(self.pid)

    def adopt(self) -> bool:
        """Take over a daemon an earlier controller started in this namespace and directory (still running
        with its SAs): True if its pid file names a live charon whose VICI socket answers."""
        try:
            pid = int((self.rundir / "run" / "charon.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if not _is_charon(pid):
            return False
        try:
            self._session = vici.Session(self._connect())
        except OSError:
            return False
        self.proc, self.pid = None, pid
        self._stopping.clear()
        self._listener = threading.Thread(target=self._listen, name=f"vici-{self.netns}", daemon=True)
        self._listener.start()
        log.info("charon in %s adopted (pid %d)", self.netns, pid)
        return True

    def start(self, timeout: float = 10.0) -> None:
        """Start the daemon and connect to its VICI socket (raises RuntimeError if it does not come up)."""
        if self.running():
            return
        run = self.rundir / "run"
        run.mkdir(parents=True, exist_ok=True)
        conf = self.rundir / "strongswan.conf"
        conf.write_text(strongswan_conf(INSIDE, self.esp))
        for stale in (self.socket_path, run / "charon.pid"):
            stale.unlink(missing_ok=True)  # a daemon killed earlier leaves them behind
        env = {**os.environ, "STRONGSWAN_CONF": f"{INSIDE}/strongswan.conf"}
        mounts = f'mount --bind "{self.rundir}" {INSIDE} && mount --bind "{run}" /run'
        argv = ["ip", "netns", "exec", self.netns, "sh", "-c", f"{mounts} && exec {CHARON}"]
        self._stopping.clear()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.rundir / "charon.stderr", "ab"),  # noqa: SIM115 (the child holds it)
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"charon in {self.netns} exited ({self.proc.returncode}): {self._tail()}")
            try:
                self._session = vici.Session(self._connect())
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"charon in {self.netns}: no VICI socket after {timeout} s") from None
                time.sleep(0.05)
        self._listener = threading.Thread(target=self._listen, name=f"vici-{self.netns}", daemon=True)
        self._listener.start()
        self.pid = self.proc.pid  # `ip netns exec` and sh exec charon: the same process
        log.info("charon started in %s (pid %d, %s ESP)", self.netns, self.proc.pid, self.esp)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL); idempotent."""
        self._stopping.set()
        if self._listener is not None:  # it unregisters its events while the daemon still listens
            self._listener.join(timeout=3)
            self._listener = None
        proc, self.proc = self.proc, None
        pid, self.pid = self.pid, None
        self._session = None
        if proc is None:
            if pid is not None:
                _kill(pid)
            self.socket_path.unlink(missing_ok=True)
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.socket_path.unlink(missing_ok=True)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        return sock

    def _tail(self) -> str:
        try:
            return (self.rundir / "charon.stderr").read_text(errors="replace")[-500:]
        except OSError:
            return ""

    # --- VICI commands (any thread) -----------------------------------------------------------------------

    def call(self, fn: Callable[[vici.Session], Any]) -> Any:
        """Run `fn(session)` on the command session (one request at a time)."""
        with self._lock:
            if self._session is None:
                raise RuntimeError(f"charon in {self.netns} is not running")
            return fn(self._session)

    def list_sas(self) -> list[dict[str, Any]]:
        """Every IKE_SA, decoded: [{name: {..., "child-sas": {...}}}, ...]."""
        return [_decode(sa) for sa in self.call(lambda s: list(s.list_sas()))]

    def initiate(self, child: str, ike: str, timeout_ms: int = 0) -> None:
        """Start establishing `child` of `ike` without waiting for it (timeout 0: VICI returns at once)."""
        req = {"child": child, "ike": ike, "timeout": timeout_ms, "init-limits": "no"}
        try:
            self.call(lambda s: list(s.initiate(req)))
        except vici.exception.CommandException as e:
            log.info("charon in %s: initiate %s: %s", self.netns, ike, e)

    def _listen(self) -> None:
        """Read events from a second session until the daemon stops."""
        try:
            session = vici.Session(self._connect())
        except OSError:
            return
        events = session.listen(["log", "ike-updown", "child-updown"], timeout=0.5)
        try:
            for kind, msg in events:
                if self._stopping.is_set():
                    break
                if kind is None or self.on_event is None:
                    continue
                try:
                    self.on_event(kind.decode() if isinstance(kind, bytes) else str(kind), _decode(msg))
                except Exception:
                    log.exception("charon in %s: event handler failed", self.netns)
        except (OSError, vici.exception.SessionException, ConnectionError):
            if not self._stopping.is_set():
                log.warning("charon in %s: VICI event session closed", self.netns)
        finally:
            try:
                events.close()
            except (OSError, vici.exception.SessionException):
                pass  # the daemon is gone: nothing to unregister from
            session.transport.close()


def _is_charon(pid: int) -> bool:
    """A live (not zombie) charon process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and cmdline.split(b"\0")[0].endswith(b"charon")


def _kill(pid: int) -> None:
    """SIGTERM a charon we did not start, SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _is_charon(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _is_charon(pid):
            return


def reason_of(message: str) -> bool:
    """Does this charon log line explain a failure?"""
    return any(k in message for k in _REASONS)


def _decode(value: Any) -> Any:
    """VICI answers in bytes: to str (recursively)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    return value
