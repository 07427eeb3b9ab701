"""Real-traffic checks for lab tests: a TCP transfer between hosts, and tcpdump captures."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lab import proc
from lab.hosts import Host

_SERVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(float(sys.argv[2])); h = hashlib.sha256()
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
c.sendall(h.hexdigest().encode()); c.close()
"""

_CLIENT = """
import hashlib, os, socket, sys, time
data = os.urandom(int(sys.argv[3])); deadline = time.monotonic() + float(sys.argv[4])
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
c.settimeout(float(sys.argv[4])); c.sendall(data); c.shutdown(socket.SHUT_WR)
got = b""
while True:
    b = c.recv(1024)
    if not b:
        break
    got += b
sys.exit(0 if got.decode() == hashlib.sha256(data).hexdigest() else 3)
"""


def tcp_transfer(
    client: Host, server: Host, port: int = 5001, nbytes: int = 256 * 1024, timeout: float = 10
) -> bool:
    """True when `client` sends `nbytes` over TCP to `server` and gets back their correct SHA-256."""
    srv = server.popen([sys.executable, "-c", _SERVER, str(port), str(timeout)])
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "ready":
            return False
        result = client.exec(
            [sys.executable, "-c", _CLIENT, server.ip, str(port), str(nbytes), str(timeout)],
            check=False,
            timeout=timeout + 5,
        )
        return result.returncode == 0 and srv.wait(timeout=timeout) == 0
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.communicate()


@dataclass
class Capture:
    """Lines tcpdump printed (filled when the `capture` block ends)."""

    lines: list[str] = field(default_factory=list)

    def matching(self, text: str) -> list[str]:
        return [ln for ln in self.lines if text in ln]


@contextmanager
def capture(
    ifname: str, bpf: str = "", namespace: str | None = None, ready_timeout: float = 5.0
) -> Iterator[Capture]:
    """Run `tcpdump -e -nn` on `ifname` for the duration of the block; `Capture.lines` holds its output.

    Blocks until tcpdump is listening, so traffic started inside the block is seen.
    """
    cmd = ["tcpdump", "-i", ifname, "-e", "-nn", "-l", "--immediate-mode", *bpf.split()]
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in the finally below)
    p = subprocess.Popen(proc.in_netns(namespace, cmd), stdout=subprocess.PIPE, stderr=errors, text=True)
    result = Capture()

    def listening() -> bool:
        errors.seek(0)
        return "listening on" in errors.read() or p.poll() is not None

    try:
        if not proc.wait_until(listening, ready_timeout) or p.poll() is not None:
            errors.seek(0)
            raise RuntimeError(f"tcpdump on {ifname} did not start: {errors.read()}")
        yield result
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        errors.close()
        result.lines = [ln for ln in out.splitlines() if ln.strip()]


@dataclass
class PingResult:
    sent: int  # requests that could be judged (those still in flight when the ping was stopped left out)
    received: int
    lost: list[tuple[float, int]]  # (wall-clock time, icmp_seq) of each request never answered

    def lost_at(self, events: dict[str, float]) -> str:
        """Where the losses were, relative to named wall-clock moments."""
        return "; ".join(
            f"seq {seq} at " + ", ".join(f"{t - at:+.2f} s from {name}" for name, at in events.items())
            for t, seq in self.lost[:10]
        )


class Pinger:
    """A ping every `interval` s from `host` to `ip` until stop(), into a file (a pipe nobody reads would
    fill and stall it): each reply with its wall-clock time (-D), each request unanswered when the next goes
    (-O). stop() ends it with SIGINT; the requests sent in the last `grace` s before it cannot be judged
    (their replies may be on their way, several under load) and are left out rather than counted lost."""

    def __init__(self, host: Host, ip: str, interval: float = 0.01, grace: float = 1.0) -> None:
        self.grace = grace
        self._out = tempfile.NamedTemporaryFile("w+", prefix="ping-", suffix=".txt")  # noqa: SIM115
        self.proc = host.popen(
            ["ping", "-n", "-D", "-O", "-i", str(interval), "-W", "2", ip],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> PingResult:
        stopped = time.time()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self._out.seek(0)
        out = self._out.read()
        self._out.close()
        m = re.search(r"(\d+) packets transmitted", out)
        if m is None:
            raise RuntimeError(f"ping printed no statistics: {out[-2000:]}")
        transmitted = int(m.group(1))
        answered = {int(s) for s in re.findall(r"bytes from .* icmp_seq=(\d+)", out)}
        late = {
            int(s): float(t) for t, s in re.findall(r"\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)", out)
        }
        lost: list[tuple[float, int]] = []
        unjudged = 0
        for seq in range(1, transmitted + 1):
            if seq in answered:
                continue
            at = late.get(seq)
            if at is None or at >= stopped - self.grace:
                unjudged += 1  # sent just before the stop: its reply may still have been on its way
            else:
                lost.append((at, seq))
        sent = transmitted - unjudged
        return PingResult(sent, sent - len(lost), lost)
