"""The one place writes happen: a lock, the in-memory Topology, the durable Store, and change notification.

`write(fn)` runs `fn(topology, revision, now)` under the lock; `fn` validates and returns changes without
mutating anything. The changes are committed to SQLite first and applied in memory only after the commit,
so a refused or failed write leaves both as they were, and two writers can never pick the same IP or MAC.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from topology.model import Change, ModelConfig, Topology
from topology.store import Store

WriteFn = Callable[[Topology, int, float], list[Change]]


class State:
    def __init__(self, path: Path, config: ModelConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = Store(path)
        self.topology = Topology(config)
        records, revision = self.store.load()
        self.topology.load(records, revision)
        self._lock = threading.RLock()
        self.changed = threading.Condition(threading.Lock())
        self._clock = clock
        self._listeners: list[Callable[[int, list[Change]], None]] = []
        self.closed = False

    @property
    def revision(self) -> int:
        return self.topology.revision

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read a consistent view of the topology (writes take it too)."""
        return self._lock

    def add_listener(self, fn: Callable[[int, list[Change]], None]) -> None:
        """Called under the write lock after each applied write (e.g. the dataplane compiler)."""
        self._listeners.append(fn)

    def write(self, fn: WriteFn) -> tuple[int, list[Change]]:
        with self._lock:
            if self.closed:
                raise RuntimeError("store is closed")
            revision = self.topology.revision + 1
            changes = fn(self.topology, revision, self._clock())
            if not changes:
                return self.topology.revision, []
            self.store.commit(revision, changes)
            self.topology.apply(changes, revision)
            for listener in self._listeners:
                listener(revision, changes)
        with self.changed:
            self.changed.notify_all()
        return revision, changes

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.store.close()
        with self.changed:
            self.changed.notify_all()
