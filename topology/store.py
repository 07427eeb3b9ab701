"""Durable storage of the model: one SQLite file in WAL mode, one transaction per accepted write.

Tables: `objects` (current records as JSON), `changes` (recent changes with their revision and commit time,
for Watch replay), `meta` (the revision, and `compacted_revision`: every change up to it is dropped), and
`ip_allocations` / `mac_addresses` whose UNIQUE constraints make a duplicate IP or MAC impossible even if the
in-memory checks had a bug. `synchronous=FULL`: a commit is on disk before the call that made it returns.

History is bounded by compaction (topology/history.py drives it): `compact_batch` drops the oldest whole
revisions of `changes` a few hundred rows at a time under the write lock, so a write waits at most one small
batch; `objects` is never touched by it. Freed pages go to SQLite's freelist and new rows reuse them; new
stores use incremental auto-vacuum so `vacuum_step` can hand a large surplus back to the file system.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from topology.model import Change
from topology.records import RECORD_TYPES, Port, Record, from_dict, to_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, revision INTEGER NOT NULL, kind TEXT NOT NULL,
    id TEXT NOT NULL, op TEXT NOT NULL, tenant TEXT NOT NULL, data TEXT NOT NULL, ts REAL);
CREATE INDEX IF NOT EXISTS changes_by_revision ON changes (revision);
CREATE TABLE IF NOT EXISTS ip_allocations (
    subnet_id TEXT NOT NULL, address TEXT NOT NULL, port_id TEXT NOT NULL, PRIMARY KEY (subnet_id, address));
CREATE TABLE IF NOT EXISTS mac_addresses (mac TEXT PRIMARY KEY, port_id TEXT NOT NULL);
"""

OP_CREATED, OP_UPDATED, OP_DELETED = "CREATED", "UPDATED", "DELETED"


class HistoryCompacted(Exception):
    """The changes a reader asked for are compacted: it must re-read the objects (a snapshot) and go on."""

    def __init__(self, after: int, compacted_revision: int) -> None:
        super().__init__(f"changes after revision {after} are compacted up to revision {compacted_revision}")
        self.after = after
        self.compacted_revision = compacted_revision


class ChangeLog(Protocol):
    """What readers of the change history use, whichever store keeps it (this SQLite file, or etcd)."""

    @property
    def path(self) -> Path: ...

    @property
    def compacted_revision(self) -> int: ...

    def changes_since(self, after: int, upto: int) -> list[tuple[int, str, str, Record]]: ...

    def oldest_retained_revision(self) -> int: ...

    def sizes(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Checkpoint:
    """What one `checkpoint()` did: WAL frames and how many were copied, whether the WAL file was truncated,
    and how long that held the write lock."""

    wal_frames: int
    checkpointed: int
    truncated: bool
    locked_s: float = 0.0


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._unknown: dict[str, int] = {}  # kinds of no loaded code, counted by load()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        # private from the start: SQLite gives the -wal and -shm files the database file's mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = self._connect(new_file=fresh)
        self._db.executescript(SCHEMA)
        if "ts" not in {row[1] for row in self._db.execute("PRAGMA table_info(changes)")}:
            self._db.execute("ALTER TABLE changes ADD COLUMN ts REAL")  # stores from before compaction
        self._lock = threading.Lock()
        self._last_ts = 0.0
        self._maint: sqlite3.Connection | None = None  # the compactor's connection (synchronous=NORMAL)
        #: the longest the compactor held the write lock in one step (seconds), for benchmarks and metrics
        self.longest_maintenance_hold = 0.0
        #: the longest a commit waited for the write lock (seconds): the stall maintenance caused a write
        self.longest_write_wait = 0.0
        self.compacted_revision = self._read_compacted_revision()
        # on disk too: changes_since checks it in its own snapshot
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('compacted_revision', ?)",
            (str(self.compacted_revision),),
        )

    def _connect(self, synchronous: str = "FULL", new_file: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        if new_file:
            # before anything writes the header: freed pages can then be given back in small steps
            # (vacuum_step) instead of by a VACUUM, which would block writes while it rewrites the file
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        return db

    def close(self) -> None:
        with self._lock:
            if self._maint is not None:
                self._maint.close()
                self._maint = None
            self._db.close()

    # ------------------------------------------------------------------------------------------ reads

    def revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        return int(row[0]) if row else 0

    def load(self) -> tuple[list[Record], int]:
        """The records and the revision. Rows of kinds no loaded code knows (an uninstalled plug-in's) stay
        in the file, untouched, and are left out (counted by unknown_kinds)."""
        with self._lock:
            rows = self._db.execute("SELECT kind, data FROM objects").fetchall()
            rev = self.revision()
        unknown: dict[str, int] = {}
        for kind, _data in rows:
            if kind not in RECORD_TYPES:
                unknown[kind] = unknown.get(kind, 0) + 1
        self._unknown = unknown
        return [from_dict(kind, json.loads(data)) for kind, data in rows if kind in RECORD_TYPES], rev

    def unknown_kinds(self) -> dict[str, int]:
        """Kinds stored here that no loaded code knows (an uninstalled plug-in's): kind -> records kept, as
        of the last load() (nothing this process runs writes them: a plug-in's kinds are known while it is
        loaded)."""
        return dict(self._unknown)

    def changes_since(self, after: int, upto: int) -> list[tuple[int, str, str, Record]]:
        """(revision, kind, op, record) of the changes with after < revision <= upto, oldest first (whole
        revisions only); a fresh connection per call so readers never wait for the writer (WAL). Raises
        HistoryCompacted if some of them are compacted: the check and the read share one snapshot, so a
        compaction running meanwhile can never make a silent gap."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN")
            row = db.execute("SELECT value FROM meta WHERE key='compacted_revision'").fetchone()
            compacted = int(row[0]) if row else 0
            if after < compacted:
                raise HistoryCompacted(after, compacted)
            rows = db.execute(
                "SELECT revision, kind, op, data FROM changes WHERE revision > ? AND revision <= ? "
                "ORDER BY seq",
                (after, upto),
            ).fetchall()
            db.execute("COMMIT")
        finally:
            db.close()
        return [
            (rev, kind, op, from_dict(kind, json.loads(data)))
            for rev, kind, op, data in rows
            if kind in RECORD_TYPES  # an uninstalled plug-in's changes are not the API's any more
        ]

    def oldest_retained_revision(self) -> int:
        """The oldest revision a reader can resume from (changes after it are all kept)."""
        return self.compacted_revision

    def _read_compacted_revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='compacted_revision'").fetchone()
        if row:
            return int(row[0])
        # a store from before compaction kept everything, or was cut by hand: the first change kept says
        row = self._db.execute("SELECT MIN(revision) FROM changes").fetchone()
        return int(row[0]) - 1 if row and row[0] is not None else self.revision()

    def sizes(self) -> dict[str, int]:
        """Bytes on disk of the database file and of its write-ahead log (0 if absent)."""
        out = {}
        for name, path in (("db", self.path), ("wal", self.path.with_name(self.path.name + "-wal"))):
            try:
                out[name] = path.stat().st_size
            except FileNotFoundError:
                out[name] = 0
        return out

    def history_rows(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0])

    # ------------------------------------------------------------------------------------------ writes

    def commit(self, revision: int, changes: list[Change]) -> None:
        """Persist one write atomically; raises (and stores nothing) on any constraint violation."""
        self.commit_many([(revision, changes)])

    def commit_many(self, writes: list[tuple[int, list[Change]]]) -> None:
        """Persist several writes (in revision order) in one transaction and one fsync: all or nothing."""
        t0 = time.monotonic()
        with self._lock:
            # with group commit only one writer commits at a time: a wait here is the compactor's doing
            self.longest_write_wait = max(self.longest_write_wait, time.monotonic() - t0)
            db = self._db
            # commit time of the changes, for compaction by age; never going back, so it grows with seq
            self._last_ts = ts = max(self._last_ts, time.time())
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write_changes(db, writes, ts)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)", (str(writes[-1][0]),)
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _write_changes(db: sqlite3.Connection, writes: list[tuple[int, list[Change]]], ts: float) -> None:
        """The writes' rows, a few `executemany` per transaction whatever the number of writes: each record
        serialized once (the same JSON goes to `objects` and `changes`), `objects` rows by their net effect
        (a record's last state in the batch), and the IP / MAC keys only of ports whose addresses changed,
        deleted and inserted by key (a port update that keeps its addresses, e.g. a binding, touches none)."""
        upserts: dict[tuple[str, str], tuple[str, str, str, str] | None] = {}
        history: list[tuple[int, str, str, str, str, str, float]] = []
        ips: dict[tuple[str, str], str | None] = {}  # (subnet, address) -> port id, None: freed
        macs: dict[str, str | None] = {}
        freed_ips: list[tuple[str, str]] = []
        freed_macs: list[str] = []
        for revision, changes in writes:
            for kind, ident, old, new in changes:
                if isinstance(old, Port) or isinstance(new, Port):
                    _port_keys(ident, old, new, ips, macs, freed_ips, freed_macs)
                if new is None:
                    assert old is not None
                    upserts[(kind, ident)] = None
                    history.append((revision, kind, ident, OP_DELETED, old.tenant, _json(old), ts))
                else:
                    data = _json(new)
                    upserts[(kind, ident)] = (kind, ident, new.tenant, data)
                    op = OP_CREATED if old is None else OP_UPDATED
                    history.append((revision, kind, ident, op, new.tenant, data, ts))
        if freed_ips:
            db.executemany("DELETE FROM ip_allocations WHERE subnet_id=? AND address=?", freed_ips)
        if freed_macs:
            db.executemany("DELETE FROM mac_addresses WHERE mac=?", [(m,) for m in freed_macs])
        taken_ips = [(s, a, p) for (s, a), p in ips.items() if p is not None]
        if taken_ips:
            db.executemany(
                "INSERT INTO ip_allocations (subnet_id, address, port_id) VALUES (?,?,?)", taken_ips
            )
        taken_macs = [(m, p) for m, p in macs.items() if p is not None]
        if taken_macs:
            db.executemany("INSERT INTO mac_addresses (mac, port_id) VALUES (?,?)", taken_macs)
        gone = [key for key, row in upserts.items() if row is None]
        if gone:
            db.executemany("DELETE FROM objects WHERE kind=? AND id=?", gone)
        rows = [row for row in upserts.values() if row is not None]
        if rows:
            db.executemany("INSERT OR REPLACE INTO objects (kind, id, tenant, data) VALUES (?,?,?,?)", rows)
        db.executemany(
            "INSERT INTO changes (revision, kind, id, op, tenant, data, ts) VALUES (?,?,?,?,?,?,?)", history
        )

    # ------------------------------------------------------------------------------------------ maintenance

    def _maintenance_db(self) -> sqlite3.Connection:
        # NORMAL: a compaction step need not be on disk before the next write's fsync carries it (losing one
        # on power loss only keeps more history); the checkpoint still syncs the database file
        if self._maint is None:
            self._maint = self._connect("NORMAL")
            # its commits happen under the write lock: leave checkpoints to `checkpoint` (copies unlocked)
            self._maint.execute("PRAGMA wal_autocheckpoint=0")
        return self._maint

    def committed_revision(self) -> int:
        """The revision on disk, read on the compactor's own connection: never a transaction still open on
        the writer's connection (which `revision()`, sharing it, could see)."""
        row = self._maintenance_db().execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        return int(row[0]) if row else 0

    def compact_batch(self, max_revision: int, before_ts: float | None, limit: int = 500) -> tuple[int, int]:
        """Drop the oldest changes, whole revisions only, about `limit` rows (a single larger revision goes
        whole): those of a revision <= `max_revision` or committed before `before_ts` (None: no age bound).
        Objects are never touched. Returns (rows dropped, compacted revision); 0 rows when none is due."""
        with self._lock:
            t0 = time.monotonic()
            db = self._maintenance_db()
            rows = db.execute(
                "SELECT revision, ts FROM changes ORDER BY seq LIMIT ?", (limit + 1,)
            ).fetchall()
            # revision and ts never decrease along seq, so what is due is a prefix; one revision's rows
            # share one ts (one transaction), so the first row not due starts a revision not due
            # (ts None: a change from before compaction existed, older than any with a ts)
            if not rows:
                return 0, self.compacted_revision
            for rev, ts in rows:
                if not (rev <= max_revision or (before_ts is not None and (ts or 0.0) < before_ts)):
                    bound = rev - 1
                    break
            else:  # all due; past the limit, the last row may start a revision that goes on beyond it
                bound = rows[-1][0] if len(rows) <= limit else max(rows[-1][0] - 1, rows[0][0])
            if bound < rows[0][0]:
                return 0, self.compacted_revision
            db.execute("BEGIN IMMEDIATE")
            try:
                n = db.execute("DELETE FROM changes WHERE revision <= ?", (bound,)).rowcount
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('compacted_revision', ?)", (str(bound),)
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.compacted_revision = bound
            self._note_hold(time.monotonic() - t0)
            return n, bound

    def compact(self, keep_revisions: int) -> int:
        """Drop every change older than the newest `keep_revisions` revisions now; returns rows removed."""
        removed = 0
        while True:
            n, _ = self.compact_batch(self.revision() - keep_revisions, None, limit=10_000)
            if not n:
                return removed
            removed += n

    def checkpoint(self, truncate: bool = True) -> Checkpoint:
        """Copy the WAL into the database file without blocking writers (PASSIVE); if that got every frame,
        truncate the WAL file under the write lock (nothing is left to copy, so it is quick), not waiting
        for readers still on an older snapshot (then the next round does it)."""
        db = self._maintenance_db()
        _busy, frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        truncated, held = False, 0.0
        if truncate and frames > 0 and done == frames:
            with self._lock:
                t0 = time.monotonic()
                db.execute("PRAGMA busy_timeout=0")
                try:
                    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    db.execute("PRAGMA busy_timeout=30000")
                truncated = not busy
                held = time.monotonic() - t0
                self._note_hold(held)
        return Checkpoint(frames, done, truncated, held)

    def checkpoint_truncate_locked(self) -> float:
        """TRUNCATE straight away under the write lock (copying the whole WAL there); seconds held. Only to
        measure what `checkpoint` avoids (bench/bench_store.py)."""
        db = self._maintenance_db()
        with self._lock:
            t0 = time.monotonic()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return time.monotonic() - t0

    def vacuum_step(self, max_pages: int = 256, keep_free: float = 1.0) -> int:
        """Return up to `max_pages` free pages to the file system (incremental auto-vacuum stores only) while
        free pages outnumber `keep_free` times the pages in use: that slack stays for churn to reuse. Returns
        the pages freed."""
        with self._lock:
            t0 = time.monotonic()
            db = self._maintenance_db()
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                return 0
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            surplus = free - int(keep_free * (pages - free))
            if surplus < 64:  # not worth a transaction
                return 0
            # executescript steps the pragma to the end (execute frees one page per step taken, i.e. one)
            db.executescript(f"PRAGMA incremental_vacuum({min(max_pages, surplus)});")
            self._note_hold(time.monotonic() - t0)
            return int(free - db.execute("PRAGMA freelist_count").fetchone()[0])

    def _note_hold(self, seconds: float) -> None:
        self.longest_maintenance_hold = max(self.longest_maintenance_hold, seconds)

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        yield from self._db.execute("SELECT kind, id FROM objects")


def _json(rec: Record) -> str:
    return json.dumps(to_dict(rec), separators=(",", ":"))


class DuplicateKey(sqlite3.IntegrityError):
    """Two ports of one commit claim the same IP or MAC: refused like the UNIQUE constraint refuses one
    already stored."""


def _port_keys(
    ident: str,
    old: Record | None,
    new: Record | None,
    ips: dict[tuple[str, str], str | None],
    macs: dict[str, str | None],
    freed_ips: list[tuple[str, str]],
    freed_macs: list[str],
) -> None:
    """A port change's effect on the IP and MAC keys, folded into the commit's net effect (`ips`, `macs`:
    key -> the port holding it at the end, None: freed). A key the old port held and the new one does not
    is freed; its row is deleted (`freed_*`) when it was stored before this commit, i.e. when this commit
    frees it before anything of it takes it. A key the new port gains is taken: inserted at the end, where
    the UNIQUE constraint refuses it if a port not freed in this commit holds it; taken twice in this commit
    without a free in between raises DuplicateKey."""
    old_ips = old.fixed_ips if isinstance(old, Port) else ()
    new_ips = new.fixed_ips if isinstance(new, Port) else ()
    if old_ips != new_ips:
        if len(set(new_ips)) != len(new_ips):
            raise DuplicateKey(f"UNIQUE constraint failed: ip_allocations, an address twice in port {ident}")
        for key in set(old_ips).difference(new_ips):
            if key not in ips:
                freed_ips.append(key)
            ips[key] = None
        for key in set(new_ips).difference(old_ips):
            if ips.get(key) is not None:
                raise DuplicateKey(f"UNIQUE constraint failed: ip_allocations {key[0]} {key[1]} (one commit)")
            ips[key] = ident
    old_mac = old.mac if isinstance(old, Port) else None
    new_mac = new.mac if isinstance(new, Port) else None
    if old_mac != new_mac:
        if old_mac is not None:
            if old_mac not in macs:
                freed_macs.append(old_mac)
            macs[old_mac] = None
        if new_mac is not None:
            if macs.get(new_mac) is not None:
                raise DuplicateKey(f"UNIQUE constraint failed: mac_addresses {new_mac} (one commit)")
            macs[new_mac] = ident
