"""Process helpers: run commands (optionally inside a netns), find and kill processes.

A process in state Z counts as gone: PID 1 here reaps detached daemons only about once a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from pyroute2 import netns as pr_netns

Cmd = Sequence[str]

#: gRPC channel options for waiting on a server that is starting: a refused connect is retried every 50 ms
#: (gRPC's default backoff, 1 s growing by 1.6x, found a freshly started controller up to ~1.5 s late)
READY_POLL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 50),
]


class CommandError(RuntimeError):
    """A command exited non-zero; carries its output so failures say why."""

    def __init__(self, cmd: Cmd, returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{' '.join(self.cmd)} exited {returncode}: {stderr.strip() or stdout.strip()}")


def in_netns(namespace: str | None, cmd: Cmd) -> list[str]:
    """Wrap `cmd` so it runs inside `namespace` (root namespace when None).

    `ip netns exec` rather than a pyroute2 setns() preexec hook: it also remounts /sys for the namespace,
    which is what ovs-vswitchd and ethtool expect to see.
    """
    if namespace is None:
        return list(cmd)
    return ["ip", "netns", "exec", namespace, *cmd]


def run(
    cmd: Cmd,
    namespace: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` to completion and capture its text output; raise CommandError when `check` and it fails."""
    full = in_netns(namespace, cmd)
    merged = {**os.environ, **env} if env else None
    proc = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, env=merged, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise CommandError(full, proc.returncode, proc.stdout, proc.stderr)
    return proc


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain spaces or ')'.
    state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
    return state not in ("Z", "X")


def pid_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (guards against pid reuse), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def pid_cmdline(pid: int) -> str:
    """The command line of `pid` joined by spaces ('' if gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def pids_matching(substring: str) -> list[int]:
    """Live pids whose command line contains `substring` (never our own pid)."""
    found = []
    for entry in os.listdir("/proc"):
        pid = int(entry) if entry.isdigit() else 0
        if pid and pid != os.getpid() and substring in pid_cmdline(pid) and pid_alive(pid):
            found.append(pid)
    return found


def pids_in_netns(namespaces: Iterable[str]) -> list[int]:
    """Live pids whose network namespace is one of the named ones."""
    wanted = set(namespaces)
    by_ns = pr_netns.ns_pids()
    return [pid for name, pids in by_ns.items() if name in wanted for pid in pids if pid_alive(pid)]


def read_pidfile(path: str) -> int | None:
    """The pid in an OVS pidfile, None when missing or empty."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def kill_pids(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM `pids`, wait up to `grace` seconds, then SIGKILL whatever is left and wait for it."""
    pending = [p for p in set(pids) if p != os.getpid() and pid_alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pending:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if pid_alive(p)]
            if pending:
                time.sleep(0.02)
        if not pending:
            return
    raise RuntimeError(f"processes survived SIGKILL: {pending}")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
