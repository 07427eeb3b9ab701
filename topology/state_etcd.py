"""State over etcd: several controllers write one model, each keeping its own in-memory copy current.

A write validates `fn` on the local model at revision `base` (the last model write it has applied), then
commits it as one etcd txn that holds only if etcd's head is still `base` (topology/etcd_store.py). So a
write never commits over one it did not see: two controllers can never hand out the same IP, MAC, segment
or tunnel key, and a read-modify-write checked against an etag sees the other's write. When the compare
fails, the write waits until the watch has brought the model to the new head and runs `fn` again (a few
times, then ABORTED). A committed write is applied to the model at once, at the revision etcd gave it,
under the model lock; its echo from the watch is then at or below the model's revision and ignored. The
watch thread applies other controllers' writes, in etcd's order, through the same listeners as local ones.

Group commit (as the SQLite store batches fsyncs): concurrent writers queue; one of them (the leader, the
first to find nobody leading) takes the whole queue, validates each write in turn on the model as the ones
before it leave it (applied tentatively, under the model lock, so no reader sees them), and commits them as
ONE txn, still guarded by the head. Every write of it is acknowledged only once the txn succeeded; on a
conflict or a failure the tentative changes are undone and each write is validated again (or gets the
failure). A txn is one etcd revision, so the writes of a batch share ONE model revision: in the change log
(Watch, resume) that revision holds their changes in the order they were validated, which is the order of
the txn's operations and so the order etcd's watch gives every other controller; a Watch resumes between
revisions, never inside one, as for a write that changes several records. A record is changed by at most
one write of a batch (a write touching a record an earlier one of the batch changes waits for the next
txn), so a record has one state per revision and its etag names exactly what the write that changed it
returned. With one writer a batch is one write and nothing is handed between threads.

The model lock is held for the txn's round trip: a reader waits at most one round trip.
"""

from __future__ import annotations

import contextvars
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
from topology.state import CALLER_CONTEXT, RecentChanges, State, WriteFn
from topology.store import OP_DELETED, HistoryCompacted

log = logging.getLogger(__name__)

Row = tuple[int, str, str, Record]


#: fairness: a controller whose writes lost YIELD_AFTER txns in a row (said within YIELD_FRESH_S) is let go
#: first: the others pause YIELD_S after a commit that told them; a loser retries after a random pause
#: below RETRY_PAUSE_S times its tries (to 10), so that two controllers do not collide in step
YIELD_AFTER = 2
YIELD_FRESH_S = 0.5
RETRY_PAUSE_S = 0.0005
YIELD_S = 0.005


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


@dataclasses.dataclass(eq=False)
class _Write:
    """One caller's write in the group-commit queue."""

    fn: WriteFn
    ctx: contextvars.Context = dataclasses.field(default_factory=contextvars.copy_context)  # the caller's
    tries: int = 0  # rounds it was in whose txn another controller's write beat
    rechecked: bool = False  # refused once on a model behind etcd: the next refusal is final
    solo: bool = False  # in a txn of its own (a batch with it was refused by etcd as too large)
    decided: bool = False  # answered (by a round, under the model lock)
    done: bool = False  # answered and its caller may go (set under the queue's lock)
    revision: int = 0
    changes: list[Change] = dataclasses.field(default_factory=list)
    error: BaseException | None = None


def _owned(lock: threading.RLock) -> bool:
    """Does this thread hold `lock`?"""
    return bool(lock._is_owned())  # type: ignore[attr-defined]


class EtcdState(State):
    def __init__(
        self,
        store: EtcdStore,
        config: ModelConfig | None = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 24,
        catch_up_s: float = 5.0,
        max_batch: int = 64,
        max_batch_ops: int = 100,
        max_batch_bytes: int = 1 << 20,
    ) -> None:
        """`max_batch`: writes in one txn at most (1: no group commit); a batch also stays within
        `max_batch_ops` keys and `max_batch_bytes` (etcd's --max-txn-ops, default 128, and
        --max-request-bytes, default 1.5 MiB, bound one txn; a single write larger goes alone)."""
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
        self.max_batch = max_batch
        self.max_batch_ops = max_batch_ops
        self.max_batch_bytes = max_batch_bytes
        self._writes: list[_Write] = []  # waiting for a round, in arrival order
        self._wcv = threading.Condition(threading.Lock())  # guards _writes, _leading, _Write.done
        self._leading = False  # a thread runs rounds for the queue
        #: for metrics and tests: txns refused because another controller wrote first (conflicts), writes
        #: validated again after one (retried), writes given up on (aborted), txns committed and the writes
        #: they carried (txn_writes / txns: the group commit's batch size)
        self.conflicts = 0
        self.retried = 0
        self.aborted = 0
        self.txns = 0
        self.txn_writes = 0
        #: this State's name in the fairness hints (etcd_store.commit); rounds it yielded after one
        self.ident = uuid.uuid4().hex[:12]
        self.yields = 0
        self._yield_until = 0.0  # time.monotonic() to pause the next round until (0: none)
        self._watcher = threading.Thread(target=self._follow, name="etcd-watch", daemon=True)
        self._watcher.start()

    def unknown_kinds(self) -> dict[str, int]:
        return self.etcd.unknown_kinds()

    # ------------------------------------------------------------------------------------------ writes

    def write(self, fn: WriteFn) -> tuple[int, list[Change]]:
        """Validate `fn` and commit it to etcd (with the writes queued meanwhile: group commit); return once
        etcd has it, with the revision etcd gave it and its changes as stored. Refused as `fn` refuses it,
        ABORTED CONCURRENT_WRITES when other controllers kept writing first, UNAVAILABLE when etcd is away."""
        w = _Write(fn)
        if _owned(self._lock):
            # the caller holds the model lock (a packet-in handler, a listener): it must not wait for a
            # leader who waits for that lock; its write goes alone, now, on this thread
            while not w.done:
                self._run_round([w], queue=False)
            return self._result(w)
        with self._wcv:
            self._writes.append(w)
            while not w.done and self._leading:
                self._wcv.wait()
            if not w.done:
                self._leading = True
        if not w.done:
            try:
                while not w.done:  # lead rounds until this write is decided; the next waiter leads on
                    if self._yield_until:
                        # another controller keeps losing to this one: let its next txn go first, until
                        # YIELD_S after the commit that told (the writes that commit acknowledged are not
                        # held back: this is before the next round)
                        left, self._yield_until = self._yield_until - time.monotonic(), 0.0
                        if left > 0:
                            time.sleep(left)
                    with self._wcv:
                        batch, self._writes = self._writes, []
                    self._run_round(batch)
            finally:
                with self._wcv:
                    self._leading = False
                    self._wcv.notify_all()
        return self._result(w)

    @staticmethod
    def _result(w: _Write) -> tuple[int, list[Change]]:
        if w.error is not None:
            raise w.error
        return w.revision, w.changes

    def _run_round(self, batch: list[_Write], queue: bool = True) -> None:
        """One round for `batch` (queue order): the writes decided are marked done (their callers wake);
        with `queue`, the others go back to the head of the queue. Then, when the round found the model
        behind etcd, wait for it to catch up."""
        try:
            catch_up, pause = self._round(batch)
        except BaseException as err:  # a bug here: nobody waits forever, the model is as before the round
            log.exception("etcd write round failed")
            for w in batch:
                if not w.decided:
                    w.error, w.decided = err, True
            catch_up, pause = 0, 0.0
        with self._wcv:
            for w in batch:
                if w.decided:
                    w.done = True
            if queue:
                self._writes[:0] = [w for w in batch if not w.done]
            self._wcv.notify_all()
        if catch_up:
            self._catch_up_to(catch_up)
        if pause:
            time.sleep(random.uniform(0, pause))

    def _round(self, batch: list[_Write]) -> tuple[int, float]:
        """Validate the writes of `batch` in order on the model, each on the model as the ones taken before
        it leave it (applied tentatively, under the model lock), and commit those taken as ONE txn guarded
        by the head being the model's revision. A write is left for the next round when a write taken
        already changes one of its records (each record has one state per revision: the etag names exactly
        what the write that changed it returned) or the txn would grow past etcd's bounds. On success every
        write taken, refused or without effect is decided at the txn's revision; on a conflict or a failure
        the tentative changes are undone and nothing is acknowledged but the failure to the writes that
        carried it. Returns (a head to wait for before the next round, a pause's bound in seconds)."""
        with self._lock:
            if self.closed:
                for w in batch:
                    w.error, w.decided = _shutting_down(), True
                return 0, 0.0
            base = self.topology.revision
            now = self._clock()
            taken: list[tuple[_Write, list[Change]]] = []
            checked: list[tuple[_Write, bool]] = []  # refused or no-op: (write, validated after a taken one)
            keys: set[tuple[str, str]] = set()
            ops: list[tuple[bytes, bytes | None]] = []
            size = 0
            try:
                for w in batch:
                    if taken and (w.solo or taken[0][0].solo or len(taken) >= self.max_batch):
                        continue  # next round
                    w.error, w.changes = None, []
                    try:
                        changes = self._tried(w.fn, base + 1, now)
                    except ApiError as err:
                        w.error = err
                        checked.append((w, bool(taken)))
                        continue
                    except Exception as err:  # noqa: BLE001 (a bug of `fn`: its caller gets it, as it is)
                        w.error, w.decided = err, True
                        continue
                    if not changes:
                        self.topology.take_back()
                        checked.append((w, bool(taken)))
                        continue
                    mine = {(k, i) for k, i, _old, _new in changes}
                    encoded = [
                        (self.etcd.key(k, i), None if new is None else _json(new))
                        for k, i, _old, new in changes
                    ]
                    n = sum(len(k) + len(v or b"") for k, v in encoded)
                    if taken and (
                        mine & keys
                        or len(ops) + len(encoded) > self.max_batch_ops
                        or size + n > self.max_batch_bytes
                    ):
                        self.topology.take_back()
                        continue  # next round
                    # tentative (undone unless the txn commits); in the model already if `fn` handed it over
                    self.topology.settle(changes)
                    self.topology.trial = []
                    taken.append((w, changes))
                    keys |= mine
                    ops += encoded
                    size += n
            except BaseException:  # encoding, a bug: the model goes back to `base` before anyone sees it
                self.topology.take_back()
                self._undo(taken, base)
                raise
            if not taken:
                return self._decide_unwritten(checked, base), 0.0
            t0 = time.monotonic()
            try:
                done = self._commit(base, ops, uuid.uuid4().hex, max(w.tries for w, _ in taken + checked))
            except ApiError as err:
                self._undo(taken, base)
                if err.reason == "STORE_REFUSED" and len(taken) > 1:
                    for w, _ in taken:  # too large together (etcd's bounds): each in a txn of its own
                        w.solo = True
                    return 0, 0.0
                for w, _ in taken:
                    w.error, w.decided = err, True
                return 0, 0.0  # the refused and no-op ones are validated again in the next round
            except BaseException:
                self._undo(taken, base)
                raise
            if not done.ok:  # another controller wrote first: all of them again once the model has it
                self._undo(taken, base)
                self.conflicts += 1
                tries = 0
                for w in [w for w, _ in taken] + [w for w, _ in checked]:
                    w.tries += 1
                    self.retried += 1
                    tries = max(tries, w.tries)
                    if w.tries >= self.max_attempts:
                        self.aborted += 1
                        w.error, w.decided = _aborted(self.max_attempts), True
                return done.head, RETRY_PAUSE_S * min(tries - 1, 10)
            revision = done.revision
            applied: list[Change] = []
            for w, changes in taken:
                w.changes = [(k, i, old, _stamp(new, revision)) for k, i, old, new in changes]
                w.revision, w.decided = revision, True
                applied += w.changes
            # every refusal and no-op was decided on the model at `base` plus writes now committed right
            # after it: the compare held, so no other controller wrote in between
            for w, _after in checked:
                w.revision, w.decided = revision, True
            _in_callers_context([w for w, _ in taken], lambda: self._apply(revision, applied, restamp=True))
            hook = self.on_commit
            if hook is not None:
                try:
                    hook(time.monotonic() - t0, len(taken))
                except Exception:
                    log.exception("on_commit hook failed")
            self.txns += 1
            self.txn_writes += len(taken)
            return 0, 0.0

    def _tried(self, fn: WriteFn, revision: int, now: float) -> list[Change]:
        """`fn`'s changes, one per record; the model changed by them as `fn` left it (Topology.keeps_trial:
        listed in its `trial`, for the round to keep or take back). Refused, the model is as it was."""
        topo = self.topology
        topo.keeps_trial, topo.trial = True, []
        try:
            return _collapsed(fn(topo, revision, now))
        except BaseException:
            topo.take_back()
            raise
        finally:
            topo.keeps_trial = False

    def _decide_unwritten(self, checked: list[tuple[_Write, bool]], base: int) -> int:
        """A round that writes nothing: a no-op is answered at `base`; a refusal too, unless etcd is ahead
        of the model (another controller's create, then this update here): then it is decided once more
        when the model has caught up (once). Returns the head to catch up to, or 0."""
        stale = [w for w, _ in checked if w.error is not None and not w.rechecked]
        head = self._head_or(base) if stale else base
        for w, _ in checked:
            if w in stale and head > base:
                w.rechecked = True
                w.error = None
                continue
            w.revision, w.decided = base, True
        return head if head > base and stale else 0

    def _undo(self, taken: list[tuple[_Write, list[Change]]], base: int) -> None:
        for _w, changes in reversed(taken):
            self.topology.apply([(k, i, new, old) for k, i, old, new in reversed(changes)], base)

    def _catch_up_to(self, head: int) -> None:
        """Before validating again: the model at `head` (another controller's write). A caller holding the
        model lock would stop the watch thread from applying it: it reads the changes from etcd itself."""
        if _owned(self._lock):
            try:
                with self._lock:
                    if self.topology.revision < head:
                        for batch in self.etcd.watch(self.topology.revision + 1, stop_at=head):
                            self._remote(batch)
            except (StoreUnavailable, HistoryCompacted, grpc.RpcError) as err:
                log.warning("catching up with etcd under the model lock: %s", err)
            return
        self._wait_applied(head, self.catch_up_s)

    def _head_or(self, default: int) -> int:
        try:
            return self.etcd.head()
        except (StoreUnavailable, grpc.RpcError):
            return default

    def _commit(self, base: int, ops: list[tuple[bytes, bytes | None]], write_id: str, tries: int) -> Commit:
        """The txn of `ops` (key, JSON or None to delete) validated at `base` (a key at most once: etcd
        refuses a key twice in a txn); ApiError UNAVAILABLE when etcd cannot be reached. After it commits,
        when another controller says its txns keep losing, this one's next round waits for a write of
        another (or YIELD_S): the loser goes first (a hint; the head compare decides)."""
        try:
            done = self.etcd.commit(base, ops, write_id, self.ident, tries)
        except StoreUnavailable as err:
            raise _unavailable(err) from None
        except grpc.RpcError as err:  # refused by etcd itself: too large, not permitted, ...
            raise ApiError(
                "RESOURCE_EXHAUSTED" if err.code() is grpc.StatusCode.INVALID_ARGUMENT else "INTERNAL",
                "STORE_REFUSED",
                f"etcd refused the write ({len(ops) + 3} operations): {err.details()} "
                "(etcd's --max-txn-ops and --max-request-bytes bound one write)",
                metadata={"store": "etcd", "code": err.code().name},
            ) from None
        now = time.time()
        if done.ok and any(
            t >= YIELD_AFTER and now - ts < YIELD_FRESH_S for t, ts in done.contenders.values()
        ):
            self._yield_until = time.monotonic() + YIELD_S
            self.yields += 1
        return done

    def _apply(self, revision: int, changes: list[Change], restamp: bool = False) -> None:
        """Under the model lock: make `changes` (of `revision`) current and tell everyone. With `restamp`, the
        model has them already (a round's tentative changes) but for their records' revision (etag), which
        only etcd's answer gave: the records are replaced, no index changes (they hold ids, never records)."""
        if restamp:
            for kind, ident, _old, new in changes:
                if new is not None:
                    self.topology.table(kind)[ident] = new
            self.topology.revision = revision
        else:
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
                except Exception as err:  # noqa: BLE001 (etcd away, or closed meanwhile: tried again)
                    if self.closed:
                        return
                    log.warning("reloading the model from etcd: %s; retrying in %.1f s", err, backoff)
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


def _in_callers_context(writes: list[_Write], call: Callable[[], None]) -> None:
    """`call` (telling the listeners of `writes`) with CALLER_CONTEXT's variables as the writes' callers
    set them, joined by "; " when they differ: this thread may be another writer's."""

    def run() -> None:
        for var in CALLER_CONTEXT:
            values = dict.fromkeys(v for w in writes if (v := w.ctx.get(var, "")))
            var.set("; ".join(values))
        call()

    contextvars.copy_context().run(run)


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


def _shutting_down() -> ApiError:
    return ApiError("UNAVAILABLE", "SHUTTING_DOWN", "the controller is shutting down")


def _aborted(tries: int) -> ApiError:
    return ApiError(
        "ABORTED", "CONCURRENT_WRITES", f"other controllers kept writing first ({tries} tries): retry"
    )


def _unavailable(err: StoreUnavailable) -> ApiError:
    if err.maybe_applied:
        what = "etcd did not answer in time: the write may or may not be applied (a Get shows which)"
    else:
        what = (
            "etcd is unreachable or has lost its quorum (no leader): the write was not applied; reads still "
            "answer (from this controller)"
        )
    return ApiError("UNAVAILABLE", "STORE_UNAVAILABLE", f"{what}: {err}", metadata={"store": "etcd"})
