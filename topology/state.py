"""The one place writes happen: the in-memory Topology, the durable Store, and change notification.

`write(fn)` runs `fn(topology, revision, now)` under the model lock; `fn` validates and returns changes
without mutating anything, or changing the model as it goes and handing those changes over (model.py,
`keeps_trial`: applied once, not taken back and applied again); a refused write changes nothing. Accepted
changes are in memory at once (the next writer validates against them: two writers can never pick the same IP or MAC) and handed to
the committer thread; the call returns only when the committer has them on disk.

Group commit (leader/follower): a writer that finds no commit running commits every queued write itself in
one SQLite transaction with one fsync; writers arriving meanwhile queue and the next leader takes them all.
With one client that is one transaction per call and no thread hand-off. Each call is still all-or-nothing and acknowledged only once durable; under
concurrency this turns N fsyncs into one. If a commit ever fails, every write not yet durable is refused
and the model is reloaded from the store, i.e. from exactly what was acknowledged.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from topology.errors import ApiError
from topology.model import Change, ModelConfig, Topology
from topology.records import Record
from topology.store import OP_CREATED, OP_DELETED, OP_UPDATED, ChangeLog, HistoryCompacted, Store

log = logging.getLogger(__name__)

#: string context variables a write's caller has set (the API's request, for flow provenance) that the
#: listeners read when told of the write. A store that commits one caller's write on another thread (etcd's
#: group commit) tells the listeners with each variable set to the values of the writes told of, joined by
#: "; " (controller/api/context.py registers its REQUEST here).
CALLER_CONTEXT: list[ContextVar[str]] = []

WriteFn = Callable[[Topology, int, float], list[Change]]
T = TypeVar("T")
Listener = Callable[[int, list[Change]], None]
Row = tuple[int, str, str, Record]  # (revision, kind, op, record) as ChangeLog.changes_since gives them


@dataclass
class _Pending:
    revision: int
    changes: list[Change]
    done: bool = False
    error: BaseException | None = None
    lead: bool = False  # handed the commit: its writer commits the queue next
    wake: threading.Event = field(default_factory=threading.Event)  # done, or lead


class RecentChanges:
    """The newest model changes as this controller applied them, in order, the records as the model holds
    them: most Watch reads are served from here (not read back from the store and decoded again; on etcd,
    also while etcd is away); older ones are read from the store's history."""

    def __init__(self, keep_rows: int = 20_000) -> None:
        self.keep_rows = keep_rows
        self._rows: collections.deque[Row] = collections.deque()
        self.floor = 0  # every change after this revision (up to the newest applied) is here
        self._lock = threading.Lock()

    def add(self, revision: int, changes: list[Change]) -> None:
        rows = []
        for kind, _ident, old, new in changes:
            if new is None:
                assert old is not None
                rows.append((revision, kind, OP_DELETED, old))
            else:
                rows.append((revision, kind, OP_CREATED if old is None else OP_UPDATED, new))
        with self._lock:
            self._rows.extend(rows)
            while len(self._rows) > self.keep_rows:  # whole revisions only
                gone = self._rows[0][0]
                while self._rows and self._rows[0][0] == gone:
                    self._rows.popleft()
                self.floor = gone

    def reset(self, revision: int) -> None:
        with self._lock:
            self._rows.clear()
            self.floor = revision

    def get(self, after: int, upto: int) -> list[Row] | None:
        """The rows with after < revision <= upto, or None if some may be older than what is kept."""
        with self._lock:
            if after < self.floor:
                return None
            out = []
            for r in reversed(self._rows):  # readers are mostly near the newest: walk back to `after` only
                if r[0] <= after:
                    break
                if r[0] <= upto:
                    out.append(r)
            out.reverse()
            return out


class SqliteChangeLog:
    """The SQLite store's change history as Watch readers see it: the recent changes from memory (written
    once, by the commit, never read back), older ones from the file; a read from before the store's
    compaction raises HistoryCompacted as the file does."""

    def __init__(self, store: Store, recent: RecentChanges) -> None:
        self.sqlite = store
        self.recent = recent

    @property
    def path(self) -> Path:
        return self.sqlite.path

    @property
    def compacted_revision(self) -> int:
        return self.sqlite.compacted_revision

    def changes_since(self, after: int, upto: int) -> list[tuple[int, str, str, Record]]:
        compacted = self.sqlite.compacted_revision
        if after < compacted:
            raise HistoryCompacted(after, compacted)
        rows = self.recent.get(after, upto)
        return rows if rows is not None else self.sqlite.changes_since(after, upto)

    def oldest_retained_revision(self) -> int:
        return self.sqlite.oldest_retained_revision()

    def sizes(self) -> dict[str, int]:
        return self.sqlite.sizes()


class State:
    def __init__(
        self, path: Path, config: ModelConfig | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._sqlite = Store(path)
        #: the SQLite store (None with another store): compaction, checkpoints, sizes
        self.sqlite: Store | None = self._sqlite
        records, revision = self._sqlite.load()
        self.recent = RecentChanges()
        self.recent.reset(revision)
        #: the change history as readers see it (Watch), whichever store keeps it
        self.store: ChangeLog = SqliteChangeLog(self._sqlite, self.recent)
        self._setup(config, clock, records, revision)

    def _setup(
        self, config: ModelConfig | None, clock: Callable[[], float], records: list[Record], revision: int
    ) -> None:
        self.topology = Topology(config)
        self.topology.load(records, revision)
        self.durable_revision = revision
        self._lock = threading.RLock()
        self.changed = threading.Condition(threading.Lock())  # notified when durable_revision moves
        self._clock = clock
        self._listeners: list[Listener] = []
        self._queue: list[_Pending] = []
        self._cv = threading.Condition(threading.Lock())  # guards _queue, _committing, _Pending.done
        self._committing = False
        self.closed = False
        self.listener_errors = 0  # listener calls that raised (each logged); tests assert none
        #: called after each durable transaction with (seconds, writes in it), by the committing thread
        self.on_commit: Callable[[float, int], None] | None = None

    @property
    def revision(self) -> int:
        """The revision of the in-memory model (may be a moment ahead of durable_revision)."""
        return self.topology.revision

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read a consistent view of the topology (writes take it too)."""
        return self._lock

    def add_listener(self, fn: Listener) -> None:
        """Called under the model lock after each applied write, in revision order."""
        self._listeners.append(fn)

    def unknown_kinds(self) -> dict[str, int]:
        """Record kinds the store holds that no loaded code knows (an uninstalled plug-in's): kind -> count."""
        return self._sqlite.unknown_kinds()

    def _notify(self, revision: int, changes: list[Change]) -> None:
        """Tell the listeners. The write is already in the model and on its way to the store: a listener
        that fails (a bug of its own) is logged and counted, and neither undoes nor stalls the write."""
        for listener in self._listeners:
            try:
                listener(revision, changes)
            except Exception:
                self.listener_errors += 1
                log.exception("model listener %r failed on revision %d", listener, revision)

    def _run(self, fn: WriteFn, revision: int) -> list[Change]:
        """`fn` on the model, under the model lock, letting it hand over the changes it made as it went
        (Topology.keeps_trial): on return the model holds exactly its changes, at the old revision; refused
        (or without effect), the model is as it was."""
        topo = self.topology
        topo.keeps_trial, topo.trial = True, []
        try:
            changes = fn(topo, revision, self._clock())
        except BaseException:
            topo.take_back()
            raise
        finally:
            topo.keeps_trial = False
        if changes:
            topo.settle(changes)
        else:
            topo.take_back()
        topo.trial = []
        return changes

    def write(self, fn: WriteFn) -> tuple[int, list[Change]]:
        with self._lock:
            if self.closed:
                raise ApiError("UNAVAILABLE", "SHUTTING_DOWN", "the controller is shutting down")
            revision = self.topology.revision + 1
            changes = self._run(fn, revision)
            if not changes:
                return self.topology.revision, []
            self.topology.revision = revision  # the changes are in the model already (_run)
            pending = _Pending(revision, changes)
            with self._cv:
                self._queue.append(pending)
            self._notify(revision, changes)
        self._drive(pending)
        if pending.error is not None:
            raise ApiError(
                "UNAVAILABLE",
                "STORE_WRITE_FAILED",
                f"the write could not be made durable and was not applied: {pending.error}",
            )
        return revision, changes

    def catch_up(self, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the model has `revision` (one from another controller sharing the store); True if it
        has. With one controller every revision it hands out is already in its model."""
        return self.topology.revision >= revision

    def head(self) -> int:
        """The store's newest model revision, read now (shared with other controllers, the model may not
        have it yet: catch_up waits for it). One controller: the model's."""
        return self.topology.revision

    def dry_run(
        self,
        fn: WriteFn,
        planner: Callable[[int, list[Change]], T] | None = None,
    ) -> tuple[int, list[Change], T | None]:
        """validate_only: run `fn` as a write would, let `planner` look at the model as it would be, then put
        everything back. Nothing is stored; holds the model lock throughout, so no reader sees it."""
        with self._lock:
            if self.closed:
                raise ApiError("UNAVAILABLE", "SHUTTING_DOWN", "the controller is shutting down")
            before = self.topology.revision
            revision = before + 1
            changes = self._run(fn, revision)
            if not changes:
                return before, [], None
            self.topology.revision = revision
            try:
                result = planner(revision, changes) if planner is not None else None
            finally:
                self.topology.apply([(k, i, new, old) for k, i, old, new in reversed(changes)], before)
            return revision, changes, result

    def _drive(self, pending: _Pending) -> None:
        """Return once `pending` is durable (or failed), committing as the leader when nobody else is. A
        writer waits on its own event: the leader wakes the writers it committed and hands the commit to the
        oldest write queued meanwhile, so each waiting thread wakes once (no herd woken by every commit)."""
        with self._cv:
            if pending.done:  # committed by a leader before this writer got here
                return
            lead = not self._committing
            self._committing = True
        if not lead:
            pending.wake.wait()
            if pending.done:
                return
            assert pending.lead
        with self._cv:
            batch, self._queue = self._queue, []
        error: BaseException | None = None
        t0 = time.monotonic()
        try:
            self._sqlite.commit_many([(p.revision, p.changes) for p in batch])
        except BaseException as err:
            log.exception("store commit failed; reloading the model from the store")
            error = err
        if error is not None:
            batch = self._recover(batch)
        with self._cv:
            for p in batch:
                p.error = error
                p.done = True
            nxt = self._queue[0] if self._queue else None
            if nxt is None:
                self._committing = False
                self._cv.notify_all()  # close() waits for the queue to drain
            else:
                nxt.lead = True
        if error is None:
            for p in batch:
                self.recent.add(p.revision, p.changes)
            with self.changed:
                self.durable_revision = batch[-1].revision
                self.changed.notify_all()
        for p in batch:
            if p is not pending:
                p.wake.set()
        if nxt is not None:
            nxt.wake.set()
        if error is None:
            hook = self.on_commit
            if hook is not None:
                try:
                    hook(time.monotonic() - t0, len(batch))
                except Exception:
                    log.exception("on_commit hook failed")

    def _recover(self, batch: list[_Pending]) -> list[_Pending]:
        """After a failed commit: drop every write not yet durable and reload what the store holds."""
        with self._lock:
            with self._cv:
                failed, self._queue = batch + self._queue, []
            records, revision = self._sqlite.load()
            fresh = Topology(self.topology.config)
            fresh.load(records, revision)
            self.topology = fresh
        return failed

    def close(self) -> None:
        """Refuse new writes, let queued ones become durable, close the store."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        with self._cv:
            while self._queue or self._committing:
                self._cv.wait()
        self._sqlite.close()
        with self.changed:
            self.changed.notify_all()
