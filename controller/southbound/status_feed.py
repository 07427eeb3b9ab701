"""What each chassis's master knows of it, shared with the other controllers through etcd (store = "etcd").

Only a chassis's master talks to its switch (controller/southbound/roles.py), so only it knows whether the
switch is connected and which model revisions it has realized. It publishes that, under the deployment's
prefix, attached to its ownership lease (gone when it is):

    status/chassis/<chassis id>        ChassisReport as JSON, rewritten when it changes
    status/compiled/<controller id>    the model revision this controller has compiled every change of

Writes are coalesced (at most one txn every `min_interval_s`, whatever the number of bundles or model
writes in between, and none while nothing changed). Every controller reads both from a watch, so
ListChassisStatus and WaitRealized answer the same on each (`realized`).

WaitRealized(R) on a chassis another controller A masters: realized when A has compiled every change up to
R (`compiled` >= R) and none of the chassis's changes up to R is still unconfirmed by its switch
(`pending`: the model revisions of the changes handed to the engine and not yet confirmed, the oldest first).
A report and A's compiled revision are written in one txn from one snapshot, so a reader never pairs a
newer compiled revision with an older pending list.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from topology.etcd_store import EtcdStore, StoreUnavailable
from topology.store import HistoryCompacted

log = logging.getLogger(__name__)

#: at most this many keys in one txn (etcd's --max-txn-ops defaults to 128)
TXN_KEYS = 100
#: a report's pending list keeps the oldest this many revisions (the first one decides most waits)
MAX_PENDING = 32


@dataclass(frozen=True)
class ChassisReport:
    """One chassis as its master sees it (what ListChassisStatus shows, and what realization needs)."""

    controller: str
    connected: bool = False  # the switch's OpenFlow connection is up (and the engine talks to it)
    ovsdb_ready: bool = False
    ready: bool = False  # the engine has the chassis's compile (its OVSDB facts known, not mid-takeover)
    realized_revision: int = 0  # the newest model revision of a change of this chassis its switch confirmed
    pending: tuple[int, ...] = ()  # model revisions of this chassis's changes not confirmed yet, oldest first
    desired_flows: int = 0
    installed_flows: int = 0
    flow_mods_sent: int = 0
    group_mods_sent: int = 0
    bundles_sent: int = 0
    resyncs: int = 0
    packet_ins: int = 0
    drift_repairs: int = 0
    compile_divergences: int = 0

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ChassisReport:
        d = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}  # a newer controller's extra fields
        d["pending"] = tuple(d.get("pending", ()))
        return cls(**d)

    def realized(self, revision: int, compiled: int) -> bool:
        """Has the switch realized every change of this chassis up to model revision `revision`, given the
        revision its master has compiled every change of?"""
        if revision <= 0:
            return self.ready
        return self.ready and compiled >= revision and not any(p <= revision for p in self.pending)

    def needed(self, revision: int) -> int:
        """The newest revision of a change of this chassis at or below `revision` that the master knows of
        (as the master's own WaitRealized report says it)."""
        waiting = [p for p in self.pending if p <= revision]
        if waiting:
            return max(waiting)
        return self.realized_revision if self.realized_revision <= revision else 0


#: local() -> (this controller's compiled model revision, {chassis it masters: report}), one snapshot
Snapshot = Callable[[], tuple[int, dict[str, ChassisReport]]]


class StatusFeed:
    """Publishes this controller's chassis reports and reads every controller's; see the module docstring.

    `lease()` is the ownership lease to attach the keys to (None: not granted yet, nothing is written)."""

    def __init__(
        self,
        store: EtcdStore,
        controller_id: str,
        local: Snapshot,
        lease: Callable[[], int | None],
        min_interval_s: float = 0.05,
        refresh_s: float = 1.0,
    ) -> None:
        self.store = store
        self.controller_id = controller_id
        self._local = local
        self._lease = lease
        self.min_interval_s = min_interval_s
        self.refresh_s = refresh_s
        self.chassis_prefix = store.prefix + b"status/chassis/"
        self.compiled_prefix = store.prefix + b"status/compiled/"
        self.prefix = store.prefix + b"status/"
        self._wake = threading.Event()
        self._stop = threading.Event()
        # what we wrote, under which lease (a new lease: everything again, the old keys went with it)
        self._sent: dict[str, bytes] = {}
        self._sent_compiled = -1
        self._sent_lease: int | None = None
        # every controller's, as read from etcd
        self.changed = threading.Condition(threading.Lock())
        self.reports: dict[str, ChassisReport] = {}
        self.compiled: dict[str, int] = {}
        self.writes = 0  # txns written (tests, benchmarks: coalescing)
        self.on_change: Callable[[], None] | None = None  # after reports read from etcd changed
        self._threads: list[threading.Thread] = []

    # --------------------------------------------------------------------------------------- reading

    def report(self, chassis_id: str) -> tuple[ChassisReport, int] | None:
        """The chassis's report as its master published it, with that master's compiled revision."""
        with self.changed:
            rep = self.reports.get(chassis_id)
            return None if rep is None else (rep, self.compiled.get(rep.controller, 0))

    def wait(self, timeout: float) -> None:
        """Wait (at most `timeout`) for a report or compiled revision to change."""
        with self.changed:
            self.changed.wait(timeout)

    def _apply(self, events: list[tuple[int, bytes, bytes | None]], reset: bool = False) -> None:
        with self.changed:
            if reset:
                self.reports.clear()
                self.compiled.clear()
            for _rev, key, value in events:
                if key.startswith(self.chassis_prefix):
                    ch = key[len(self.chassis_prefix) :].decode()
                    if value is None:
                        self.reports.pop(ch, None)
                    else:
                        try:
                            self.reports[ch] = ChassisReport.from_json(value)
                        except (ValueError, TypeError) as err:
                            log.warning("status of chassis %s unreadable: %s", ch, err)
                elif key.startswith(self.compiled_prefix):
                    ctl = key[len(self.compiled_prefix) :].decode()
                    if value is None:
                        self.compiled.pop(ctl, None)
                    else:
                        self.compiled[ctl] = int(value)
            self.changed.notify_all()
        if self.on_change is not None:
            self.on_change()

    def _read(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                rev, kvs = self.store.range_prefix(self.prefix)
                self._apply([(rev, k, v) for k, v, _c in kvs], reset=True)
                for events in self.store.watch_keys(self.prefix, rev + 1):
                    self._apply(events)
                    backoff = 0.1
            except HistoryCompacted:
                continue  # read everything again
            except (StoreUnavailable, OSError) as err:
                log.debug("status feed: %s", err)
            except Exception:
                log.exception("status feed: watch failed")
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    # --------------------------------------------------------------------------------------- publishing

    def wake(self) -> None:
        """Something a report shows may have changed (a bundle confirmed, a model write, a role)."""
        self._wake.set()

    def _publish(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.refresh_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.flush()
            except (StoreUnavailable, OSError) as err:
                log.debug("status feed: publishing failed: %s", err)
                self._wake.set()  # try again after the interval
            except Exception:
                log.exception("status feed: publishing failed")
            self._stop.wait(self.min_interval_s)  # coalesce what changes meanwhile into the next txn

    def flush(self) -> None:
        """Write what changed since the last write (one txn per TXN_KEYS keys)."""
        lease = self._lease()
        if lease is None:
            return
        if lease != self._sent_lease:
            self._sent, self._sent_compiled, self._sent_lease = {}, -1, lease
        compiled, reports = self._local()
        now = {ch: rep.to_json() for ch, rep in reports.items()}
        puts = [
            (self.chassis_prefix + ch.encode(), v) for ch, v in sorted(now.items()) if self._sent.get(ch) != v
        ]
        deletes = [self.chassis_prefix + ch.encode() for ch in sorted(set(self._sent) - set(now))]
        if compiled != self._sent_compiled:
            puts.append((self.compiled_prefix + self.controller_id.encode(), str(compiled).encode()))
        if not puts and not deletes:
            return
        # the compiled revision goes last, in the same txn as the reports it covers when they fit in one
        keys: list[tuple[bytes, bytes | None]] = [(k, None) for k in deletes] + [(k, v) for k, v in puts]
        for i in range(0, len(keys), TXN_KEYS):
            chunk = keys[i : i + TXN_KEYS]
            self.store.put_many_leased(
                [(k, v) for k, v in chunk if v is not None], [k for k, v in chunk if v is None], lease
            )
            self.writes += 1
        self._sent = now
        self._sent_compiled = compiled

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for target, name in ((self._read, "status-feed-read"), (self._publish, "status-feed-publish")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._threads[1].join(timeout=2)  # the publisher (the reader sits in its watch: a daemon thread)
