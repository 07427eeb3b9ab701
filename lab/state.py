"""Crash-safe record of what a lab created, and removal of labs whose owner process died.

Each lab writes STATE_DIR/<prefix>.json as it creates things (namespaces, root-namespace links, daemon pids,
its work directory). `cleanup_stale()` reads those files and tears down every lab whose owner is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab import netlink, proc

DEFAULT_STATE_DIR = Path(os.environ.get("SDN_LAB_STATE_DIR", "/run/sdn-lab"))


@dataclass
class LabState:
    """What one lab owns; saved atomically after every change."""

    prefix: str
    state_dir: str
    workdir: str
    owner_pid: int
    owner_start: int | None
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / f"{self.prefix}.json"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    def add_namespace(self, name: str) -> None:
        self.namespaces.append(name)
        self.save()

    def add_link(self, ifname: str) -> None:
        self.links.append(ifname)
        self.save()

    def add_pid(self, pid: int) -> None:
        self.pids.append(pid)
        self.save()

    def forget_namespace(self, name: str) -> None:
        if name in self.namespaces:
            self.namespaces.remove(name)
            self.save()

    def owner_alive(self) -> bool:
        """True while the process that created the lab still runs (same pid and start time).

        A detached lab (owner_pid 0, `python -m lab up --detach`) never goes stale: only `down` removes it.
        """
        if self.owner_pid == 0:
            return True
        return proc.pid_alive(self.owner_pid) and proc.pid_start_time(self.owner_pid) == self.owner_start

    @classmethod
    def load(cls, path: Path) -> LabState:
        return cls(**json.loads(path.read_text()))


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Serialise lab creation and stale cleanup across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def destroy(state: LabState) -> None:
    """Remove everything `state` lists: processes first, then links, namespaces, files.

    Daemons die before their namespaces go: a vswitchd in a deleted namespace keeps running, hidden.
    If a process survives SIGKILL the rest is still removed, but the state file stays for a later retry.
    """
    doomed = set(proc.pids_in_netns(state.namespaces)) | set(proc.pids_matching(state.workdir + "/"))
    doomed |= {p for p in state.pids if state.workdir in proc.pid_cmdline(p)}
    survivors: RuntimeError | None = None
    try:
        proc.kill_pids(doomed)
    except RuntimeError as e:
        survivors = e
    # Root-side veth ends first: a deleted namespace releases its veths asynchronously.
    for ifname in reversed(state.links):
        netlink.delete_link(ifname)
    for name in reversed(state.namespaces):
        netlink.remove_netns(name)
    shutil.rmtree(state.workdir, ignore_errors=True)
    if survivors is not None:
        raise survivors
    state.path.unlink(missing_ok=True)


def cleanup_stale(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Destroy every lab under `state_dir` whose owner process is dead; return their prefixes."""
    removed: list[str] = []
    if not state_dir.is_dir():
        return removed
    with state_lock(state_dir):
        for state in list_labs(state_dir):
            if not state.owner_alive():
                destroy(state)
                removed.append(state.prefix)
    return removed


def list_labs(state_dir: Path = DEFAULT_STATE_DIR) -> list[LabState]:
    """Every lab recorded under `state_dir`."""
    labs = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            labs.append(LabState.load(path))
        except (ValueError, TypeError, OSError):
            continue
    return labs
