"""Bounded change history: a background thread compacts the store's change log, checkpoints the WAL and gives
surplus free pages back, in small steps so that a write never waits long behind it.

A change is dropped once it is more than `revisions` revisions behind the head or older than `age_s`,
whichever comes first (0 turns that bound off; both 0: everything is kept). Only the change log shrinks:
the current objects are the model itself and are never touched. A Watch resuming from before the compacted
revision is told to re-list (controller/api/northbound.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from topology.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryPolicy:
    revisions: int = 10_000  # keep at least the changes of the newest N revisions (0 = no count bound)
    age_s: float = 3600.0  # drop changes committed longer ago than this (0 = no age bound)
    interval_s: float = 5.0  # between compaction rounds
    batch_rows: int = 500  # change rows per step; the write lock is held for one step at a time
    # truncate the WAL file after a complete checkpoint: "idle" (only if nothing was written since the last
    # round: a busy store refills it at once, and a growing WAL makes each write's fsync dearer), "always",
    # "never" (SQLite's auto-checkpoint still bounds it near 1000 pages)
    wal_truncate: str = "idle"
    vacuum: bool = True  # give a large free-page surplus back to the file system (incremental auto-vacuum)

    @property
    def enabled(self) -> bool:
        return self.revisions > 0 or self.age_s > 0


@dataclass
class RoundStats:
    """One compaction round: rows dropped, steps, compacted revision after, WAL truncated, pages freed."""

    rows: int = 0
    steps: int = 0
    compacted_revision: int = 0
    wal_truncated: bool = False
    pages_freed: int = 0
    seconds: float = 0.0
    longest_step_s: float = 0.0  # longest write-lock hold of one step (compaction, vacuum, truncate)


class Compactor:
    def __init__(self, store: Store, policy: HistoryPolicy, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_dropped = 0  # since start, for metrics
        self._last_revision = -1  # the head at the previous round: unchanged means idle
        self.last_round: RoundStats | None = None

    def start(self) -> None:
        if not self.policy.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="store-compactor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.policy.interval_s):
            try:
                self.run_once()
            except Exception:  # a failed round only keeps history longer; the next one retries
                log.exception("store compaction round failed")

    def due(self, head: int, now: float) -> tuple[int, float | None]:
        """(highest revision due by count, commit time before which changes are due by age, or None)."""
        p = self.policy
        by_count = head - p.revisions if p.revisions > 0 else 0
        return by_count, (now - p.age_s if p.age_s > 0 else None)

    def run_once(self, now: float | None = None) -> RoundStats:
        """Compact everything due, one step at a time with a pause as long as the step after each (a writer
        queued behind a step gets in before the next), then checkpoint the WAL and free surplus pages."""
        stats = RoundStats(compacted_revision=self.store.compacted_revision)
        if not self.policy.enabled:
            return stats
        t0 = time.monotonic()
        head = self.store.committed_revision()
        idle, self._last_revision = head == self._last_revision, head
        max_revision, before_ts = self.due(head, self._clock() if now is None else now)
        while not self._stop.is_set():
            s0 = time.monotonic()
            n, stats.compacted_revision = self.store.compact_batch(
                max_revision, before_ts, self.policy.batch_rows
            )
            if not n:
                break
            stats.longest_step_s = max(stats.longest_step_s, time.monotonic() - s0)
            stats.rows += n
            stats.steps += 1
            self.rows_dropped += n
            time.sleep(time.monotonic() - s0)
        if stats.rows and self.policy.vacuum:
            while not self._stop.is_set():
                s0 = time.monotonic()
                freed = self.store.vacuum_step()
                if not freed:
                    break
                stats.longest_step_s = max(stats.longest_step_s, time.monotonic() - s0)
                stats.pages_freed += freed
                time.sleep(time.monotonic() - s0)
        mode = self.policy.wal_truncate
        ckpt = self.store.checkpoint(truncate=mode == "always" or (mode == "idle" and idle))
        stats.wal_truncated = ckpt.truncated
        stats.longest_step_s = max(stats.longest_step_s, ckpt.locked_s)
        stats.seconds = time.monotonic() - t0
        self.last_round = stats
        if stats.rows:
            log.debug(
                "compacted %d changes up to revision %d in %d steps (%.3f s)",
                stats.rows,
                stats.compacted_revision,
                stats.steps,
                stats.seconds,
            )
        return stats
