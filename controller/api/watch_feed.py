"""How Watch streams at the head learn of new changes without a thundering herd.

With hundreds of streams open, waking every stream on every write (each then reading the store and
checking what it may see) costs the unary calls their latency: every write had 200 threads fight for the
GIL. Instead one feed thread reads each new range of revisions once and wakes only the streams that can see
one of its records; a stream that sees none of them has its cursor moved past them while it sleeps.
Streams still wake every WATCH_WAIT_S on their own to re-check their client and their token.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from topology.records import Record
from topology.state import State
from topology.store import ChangeLog

log = logging.getLogger(__name__)

Row = tuple[int, str, str, Record]  # (revision, kind, op, record) as ChangeLog.changes_since gives them


class SharedChanges:
    """Store.changes_since shared by the readers of the same range: streams woken by one write all ask for
    the same (cursor, head]; the first reads the store, the others wait for its rows."""

    KEEP = 16  # ranges remembered

    def __init__(self, store: ChangeLog) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[int, int], list[Row]] = OrderedDict()
        self._reading: dict[tuple[int, int], threading.Event] = {}

    def get(self, after: int, upto: int) -> list[Row]:
        key = (after, upto)
        while True:
            with self._lock:
                rows = self._rows.get(key)
                if rows is not None:
                    return rows
                busy = self._reading.get(key)
                if busy is None:
                    done = self._reading[key] = threading.Event()
                    break
            busy.wait()  # another reader reads it; its rows (or, if it failed, our own read) follow
        try:
            rows = self.store.changes_since(after, upto)  # HistoryCompacted goes to this caller
            with self._lock:
                self._rows[key] = rows
                while len(self._rows) > self.KEEP:
                    self._rows.popitem(last=False)
            return rows
        finally:
            with self._lock:
                del self._reading[key]
            done.set()


@dataclass(eq=False)
class Follower:
    """A stream waiting at `cursor` for records `sees` accepts. `cursor` is only read and written under
    the feed's lock: the feed moves it forward over ranges the stream would have shown nothing of."""

    sees: Callable[[Record], bool]
    cursor: int
    event: threading.Event = field(default_factory=threading.Event)


class ChangeFeed:
    def __init__(
        self, state: State, changes: SharedChanges, stopping: Callable[[], bool], batch: int = 500
    ) -> None:
        self.state = state
        self.changes = changes
        self.stopping = stopping
        self.batch = batch
        self.lock = threading.Lock()
        self._followers: set[Follower] = set()
        self._thread: threading.Thread | None = None

    def follow(self, f: Follower) -> None:
        with self.lock:
            self._followers.add(f)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="watch-feed", daemon=True)
                self._thread.start()

    def unfollow(self, f: Follower) -> None:
        with self.lock:
            self._followers.discard(f)

    def wake_all(self) -> None:
        """Every follower re-checks now (stop, revocation)."""
        with self.lock:
            for f in self._followers:
                f.event.set()

    def wait(self, f: Follower, cursor: int, timeout: float) -> int:
        """Sleep at `cursor` until a change `f` can see arrives, a wake_all, or `timeout`; the cursor to go
        on from (moved forward over the ranges that held nothing for `f`)."""
        f.event.clear()
        with self.lock:
            f.cursor = cursor
        if self.state.durable_revision > cursor:
            return cursor  # already behind: read it now
        f.event.wait(timeout)
        with self.lock:
            return max(cursor, f.cursor)

    def _run(self) -> None:
        state = self.state
        head = state.durable_revision
        while not state.closed and not self.stopping():
            with state.changed:
                if state.durable_revision <= head:
                    state.changed.wait(timeout=1.0)
            if state.durable_revision <= head:
                continue
            upto = min(state.durable_revision, head + self.batch)
            try:
                rows = self.changes.get(head, upto)
            except Exception:  # compacted, or failed: the streams read (and report) it themselves
                log.debug(
                    "watch feed: reading (%d, %d] failed; waking every stream", head, upto, exc_info=True
                )
                self.wake_all()
                head = upto
                continue
            records = [rec for _rev, _kind, _op, rec in rows]
            with self.lock:
                for f in self._followers:
                    if f.cursor == head and not any(f.sees(r) for r in records):
                        f.cursor = upto  # nothing for it in (head, upto]: it need not wake
                    elif f.cursor < upto:
                        f.event.set()
            head = upto
