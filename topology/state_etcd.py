"""State over etcd: several controllers write one model, each keeping its own in-memory copy current.

A write validates `fn` on the local model at revision `base` (the last model write it has applied), then
commits it as one etcd txn that holds only if etcd's head is still `base` (topology/etcd_store.py). So a
write never commits over one it did not see: two controllers can never hand out the same IP, MAC, segment
or tunnel key, and a read-modify-write checked against an etag sees the other's write. When the compare
fails, the write waits until the watch has brought the model to the new head and runs `fn` again (a few
times, then ABORTED). A committed write is applied to the model at once, at the revision etcd gave it,
under the model lock; its echo from the watch is then at or below the model's revision and ignored. The
watch thread applies other controllers' writes, in etcd's order, through the same listeners as local ones.

The model lock is held for the txn's round trip: local writers are serialised (no group commit, unlike
SQLite), and a reader waits at most one round trip.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc

from topology.errors import ApiError
from topology.etcd_store import Commit, EtcdStore, Snapshot, StoreUnavailable, WatchBatch
from topology.model import Change, ModelConfig, Topology
from topology.records import Record, to_dict
from topology.state import State, WriteFn
from topology.store import OP_CREATED, OP_DELETED, OP_UPDATED, HistoryCompacted

log = logging.getLogger(__name__)

Row = tuple[int, str, str, Record]


class RecentChanges:
    """The newest model changes as this controller applied them, in order: most Watch reads are served
    from here (and still are while etcd is away); older ones are read from etcd's history."""

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


class EtcdChangeLog:
    """The change history as Watch readers see it: recent changes from memory, older from etcd."""

    def __init__(self, store: EtcdStore, recent: RecentChanges) -> None:
        self.etcd = store
        self.recent = recent

    @property
    def path(self) -> Path:
        return self.etcd.path

    @property
    def compacted_revision(self) -> int:
        return self.etcd.compacted_revision

    def changes_since(self, after: int, upto: int) -> list[Row]:
        rows = self.recent.get(after, upto)
        return rows if rows is not None else self.etcd.changes_since(after, upto)

    def oldest_retained_revision(self) -> int:
        return self.etcd.compacted_revision

    def sizes(self) -> dict[str, int]:
        return {}


class EtcdState(State):
    def __init__(
        self,
        store: EtcdStore,
        config: ModelConfig | None = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 24,
        catch_up_s: float = 5.0,
    ) -> None:
        self.etcd = store
        self.sqlite = None
        self.recent = RecentChanges()
        self.store = EtcdChangeLog(store, self.recent)
        self.max_attempts = max_attempts
        self.catch_up_s = catch_up_s
        snap = store.load()
        self._setup(config, clock, snap.records, snap.revision)
        self.recent.reset(snap.revision)
        self._watch_from = snap.read_at + 1
        #: conflicts (another controller wrote first) and writes given up on, for metrics and tests
        self.conflicts = 0
        self.aborted = 0
        self._watcher = threading.Thread(target=self._follow, name="etcd-watch", daemon=True)
        self._watcher.start()

    def unknown_kinds(self) -> dict[str, int]:
        return self.etcd.unknown_kinds()

    # ------------------------------------------------------------------------------------------ writes

    def write(self, fn: WriteFn) -> tuple[int, list[Change]]:
        write_id = uuid.uuid4().hex
        rechecked = False
        for attempt in range(self.max_attempts):
            with self._lock:
                if self.closed:
                    raise ApiError("UNAVAILABLE", "SHUTTING_DOWN", "the controller is shutting down")
                base = self.topology.revision
                try:
                    changes = fn(self.topology, base + 1, self._clock())
                except ApiError:
                    # refused on this model: if another controller wrote since (a client's create there,
                    # then its update here), the refusal may be stale: decide once more at etcd's head
                    seen = base if rechecked else self._head_or(base)
                    if seen <= base:
                        raise
                    rechecked = True
                    changes = []
                else:
                    if not changes:
                        return base, []
                    changes = _collapsed(changes)
                    done = self._commit(base, changes, write_id)
                    if done.ok:
                        changes = [(k, i, old, _stamp(new, done.revision)) for k, i, old, new in changes]
                        self._apply(done.revision, changes)
                        return done.revision, changes
                    self.conflicts += 1
                    seen = done.head
            # another controller wrote first: validate again on the model once it has that write, after a
            # pause growing with the tries (random: two controllers in step would collide again)
            self._wait_applied(seen, self.catch_up_s)
            if changes:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
        self.aborted += 1
        raise ApiError(
            "ABORTED",
            "CONCURRENT_WRITES",
            f"other controllers kept writing first ({self.max_attempts} tries): retry",
        )

    def _head_or(self, default: int) -> int:
        try:
            return self.etcd.head()
        except (StoreUnavailable, grpc.RpcError):
            return default

    def _commit(self, base: int, changes: list[Change], write_id: str) -> Commit:
        """The txn of `changes` validated at `base` (one record changed at most once: etcd refuses a key
        twice in a txn); ApiError UNAVAILABLE when etcd cannot be reached."""
        puts = [
            (self.etcd.key(kind, ident), _json(new)) for kind, ident, _old, new in changes if new is not None
        ]
        deletes = [self.etcd.key(kind, ident) for kind, ident, _old, new in changes if new is None]
        t0 = time.monotonic()
        try:
            done = self.etcd.commit(base, puts, deletes, write_id)
        except StoreUnavailable as err:
            raise _unavailable(err) from None
        except grpc.RpcError as err:  # refused by etcd itself: too large, not permitted, ...
            raise ApiError(
                "RESOURCE_EXHAUSTED" if err.code() is grpc.StatusCode.INVALID_ARGUMENT else "INTERNAL",
                "STORE_REFUSED",
                f"etcd refused the write ({len(puts) + len(deletes) + 1} operations): {err.details()} "
                "(etcd's --max-txn-ops and --max-request-bytes bound one write)",
                metadata={"store": "etcd", "code": err.code().name},
            ) from None
        hook = self.on_commit
        if done.ok and hook is not None:
            try:
                hook(time.monotonic() - t0, 1)
            except Exception:
                log.exception("on_commit hook failed")
        return done

    def _apply(self, revision: int, changes: list[Change]) -> None:
        """Under the model lock: make `changes` (of `revision`) current and tell everyone."""
        self.topology.apply(changes, revision)
        self.recent.add(revision, changes)
        self._notify(revision, changes)
        with self.changed:
            self.durable_revision = revision
            self.changed.notify_all()

    def _wait_applied(self, revision: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.topology.revision < revision and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return self.topology.revision >= revision

    def catch_up(self, revision: int, timeout: float = 5.0) -> bool:
        return self.topology.revision >= revision or self._wait_applied(revision, timeout)

    def head(self) -> int:
        """etcd's model revision now (a linearizable read); StoreUnavailable or grpc.RpcError if unreachable."""
        return self.etcd.head()

    def sync(self, timeout: float = 5.0) -> int:
        """Wait until the model has every write etcd had when called (a linearizable read); its revision."""
        head = self.etcd.head()
        self._wait_applied(head, timeout)
        return self.topology.revision

    # ------------------------------------------------------------------------------------------ the watch

    def _follow(self) -> None:
        """Apply the model's changes from etcd in order, for as long as the state is open: reconnecting
        after a broken stream from where it stopped, re-reading everything after a compaction."""
        backoff = 0.1
        while not self.closed:
            try:
                for batch in self.etcd.watch(self._watch_from):
                    self._remote(batch)
                    self._watch_from = batch.revision + 1
                    backoff = 0.1
                if self.closed:
                    return
            except HistoryCompacted:
                log.warning("etcd compacted history this controller had not read: reloading the model")
                try:
                    self._resync(self.etcd.load())
                except StoreUnavailable:
                    time.sleep(backoff)
            except StoreUnavailable as err:
                if self.closed:
                    return
                log.warning("etcd watch: %s; retrying in %.1f s", err, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                if self.closed:
                    return
                log.exception("etcd watch failed; retrying")
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _remote(self, batch: WatchBatch) -> None:
        with self._lock:
            if batch.revision <= self.topology.revision:
                return  # our own write (applied when it committed), or one a resync already has
            table = self.topology.table
            changes: list[Change] = []
            for kind, ident, rec, op in batch.events:
                old = table(kind).get(ident)
                changes.append((kind, ident, old, None if op == OP_DELETED else rec))
            self._apply(batch.revision, changes)

    def _resync(self, snap: Snapshot) -> None:
        """After a compaction hid changes: the difference between the model and etcd, as one change."""
        with self._lock:
            if snap.revision <= self.topology.revision:
                self._watch_from = snap.read_at + 1
                return
            now: dict[tuple[str, str], Record] = {(r.KIND, r.id): r for r in snap.records}
            have = {(r.KIND, r.id): r for r in self.topology.all_records()}
            changes: list[Change] = [(k, i, old, None) for (k, i), old in have.items() if (k, i) not in now]
            changes += [
                (k, i, have.get((k, i)), new) for (k, i), new in now.items() if have.get((k, i)) != new
            ]
            # rebuilt from scratch: indices derived incrementally must not depend on the diff's order
            fresh = Topology(self.topology.config)
            fresh.load(snap.records, snap.revision)
            self.topology = fresh
            self.recent.reset(snap.revision)
            self._notify(snap.revision, changes)
            with self.changed:
                self.durable_revision = snap.revision
                self.changed.notify_all()
            self._watch_from = snap.read_at + 1

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self.etcd.close()
        self._watcher.join(timeout=5)
        with self.changed:
            self.changed.notify_all()


def _collapsed(changes: list[Change]) -> list[Change]:
    """One change per record (etcd refuses a txn naming a key twice): the first old, the last new, at the
    record's first place; a record created and deleted in the same write is dropped."""
    at: dict[tuple[str, str], int] = {}
    out: list[Change | None] = []
    for kind, ident, old, new in changes:
        i = at.get((kind, ident))
        if i is None:
            at[(kind, ident)] = len(out)
            out.append((kind, ident, old, new))
        else:
            first = out[i]
            assert first is not None
            out[i] = (kind, ident, first[2], new)
    return [c for c in out if c is not None and not (c[2] is None and c[3] is None)]


def _json(rec: Record) -> bytes:
    return json.dumps(to_dict(rec), separators=(",", ":")).encode()


def _stamp(rec: Record | None, revision: int) -> Record | None:
    """A written record's revision (etag) is the revision etcd gave the write, as every controller sees it."""
    if rec is None or rec.revision == revision:
        return rec
    return dataclasses.replace(rec, revision=revision)


def _unavailable(err: StoreUnavailable) -> ApiError:
    if err.maybe_applied:
        what = "etcd did not answer in time: the write may or may not be applied (a Get shows which)"
    else:
        what = (
            "etcd is unreachable or has lost its quorum (no leader): the write was not applied; reads still "
            "answer (from this controller)"
        )
    return ApiError("UNAVAILABLE", "STORE_UNAVAILABLE", f"{what}: {err}", metadata={"store": "etcd"})
