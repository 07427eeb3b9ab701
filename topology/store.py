"""Durable storage of the model: one SQLite file in WAL mode, one transaction per accepted write.

Tables: `objects` (current records as JSON), `changes` (every change with its revision, for Watch replay),
`meta` (the revision), and `ip_allocations` / `mac_addresses` whose UNIQUE constraints make a duplicate IP or
MAC impossible even if the in-memory checks had a bug. `synchronous=FULL`: a commit is on disk before the
call that made it returns.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from topology.model import Change
from topology.records import Port, Record, from_dict, to_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, tenant TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, revision INTEGER NOT NULL, kind TEXT NOT NULL,
    id TEXT NOT NULL, op TEXT NOT NULL, tenant TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_revision ON changes (revision);
CREATE TABLE IF NOT EXISTS ip_allocations (
    subnet_id TEXT NOT NULL, address TEXT NOT NULL, port_id TEXT NOT NULL, PRIMARY KEY (subnet_id, address));
CREATE TABLE IF NOT EXISTS mac_addresses (mac TEXT PRIMARY KEY, port_id TEXT NOT NULL);
"""

OP_CREATED, OP_UPDATED, OP_DELETED = "CREATED", "UPDATED", "DELETED"


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # private from the start: SQLite gives the -wal and -shm files the database file's mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = self._connect()
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------------------ reads

    def revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        return int(row[0]) if row else 0

    def load(self) -> tuple[list[Record], int]:
        with self._lock:
            rows = self._db.execute("SELECT kind, data FROM objects").fetchall()
            rev = self.revision()
        return [from_dict(kind, json.loads(data)) for kind, data in rows], rev

    def changes_since(self, after: int, upto: int) -> list[tuple[int, str, str, Record]]:
        """(revision, kind, op, record) of the changes with after < revision <= upto, oldest first (whole
        revisions only); a fresh connection per call so readers never wait for the writer (WAL)."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            rows = db.execute("SELECT revision, kind, op, data FROM changes WHERE revision > ? AND revision <= ? "
                              "ORDER BY seq", (after, upto)).fetchall()
        finally:
            db.close()
        return [(rev, kind, op, from_dict(kind, json.loads(data))) for rev, kind, op, data in rows]

    def oldest_retained_revision(self) -> int:
        row = self._db.execute("SELECT MIN(revision) FROM changes").fetchone()
        return int(row[0]) - 1 if row and row[0] is not None else self.revision()

    # ------------------------------------------------------------------------------------------ writes

    def commit(self, revision: int, changes: list[Change]) -> None:
        """Persist one write atomically; raises (and stores nothing) on any constraint violation."""
        self.commit_many([(revision, changes)])

    def commit_many(self, writes: list[tuple[int, list[Change]]]) -> None:
        """Persist several writes (in revision order) in one transaction and one fsync: all or nothing."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for revision, changes in writes:
                    self._write_changes(db, revision, changes)
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)",
                           (str(writes[-1][0]),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _write_changes(db: sqlite3.Connection, revision: int, changes: list[Change]) -> None:
            for kind, ident, old, new in changes:
                if isinstance(old, Port):
                    db.execute("DELETE FROM ip_allocations WHERE port_id=?", (ident,))
                    db.execute("DELETE FROM mac_addresses WHERE port_id=?", (ident,))
                if new is None:
                    assert old is not None
                    db.execute("DELETE FROM objects WHERE kind=? AND id=?", (kind, ident))
                    op, rec = OP_DELETED, old
                    data = json.dumps(to_dict(old))
                else:
                    data = json.dumps(to_dict(new))
                    db.execute("INSERT OR REPLACE INTO objects (kind, id, tenant, data) VALUES (?,?,?,?)",
                               (kind, ident, new.tenant, data))
                    op, rec = (OP_CREATED if old is None else OP_UPDATED), new
                if isinstance(new, Port):
                    db.executemany("INSERT INTO ip_allocations (subnet_id, address, port_id) VALUES (?,?,?)",
                                   [(s, a, ident) for s, a in new.fixed_ips])
                    db.execute("INSERT INTO mac_addresses (mac, port_id) VALUES (?,?)", (new.mac, ident))
                db.execute("INSERT INTO changes (revision, kind, id, op, tenant, data) VALUES (?,?,?,?,?,?)",
                           (revision, kind, ident, op, rec.tenant, data))

    def compact(self, keep_revisions: int) -> int:
        """Drop change-log entries older than the newest `keep_revisions` revisions; returns rows removed."""
        with self._lock:
            cur = self._db.execute("DELETE FROM changes WHERE revision <= ?", (self.revision() - keep_revisions,))
            return cur.rowcount

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        yield from self._db.execute("SELECT kind, id FROM objects")
