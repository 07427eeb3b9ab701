"""Per-switch synchronisation engine: desired flows, groups and meters vs what the switch holds, one bundle
per change.

One SwitchSync per datapath id. Callers (gRPC threads, the dataplane glue) change the desired state with
apply() / replace_desired(); those calls only update memory and wake the engine's sender thread, which

- on connect (and after any error) dumps the switch (transport.py), plans against the dump (plan.py:
  ADOPT what equals a desired entry, add what is missing, delete what is unknown: foreign cookie,
  undecodable, or ours but no longer desired) and sends the plan; nothing differs -> nothing is sent;
- afterwards plans each coalesced difference against what it believes is installed and sends it as one
  atomic, ordered ONF bundle followed by a barrier (meters as plain messages around it, see plan.py).
  The barrier reply (with no error for any message of the bundle) confirms the bundle: the installed set
  is updated and `realized_revision` advances to the revision the bundle was built from.

Groups travel inside the same bundle: checked on OVS 3.1, an OF1.3 ONF bundle accepts group-mods, and a
flow referencing a group added earlier in the same bundle validates (OVS checks group existence at commit,
against the bundle's version). Meters do not (OFPBFC_MSG_UNSUP): they go before / after the bundle.

Errors: OVS reports a bad message of a bundle at commit and applies nothing (atomic). The transport logs the
failing message decoded (ovs-ofctl syntax); the engine does not advance realized_revision, and resyncs; if
the same desired state fails again it waits for the next desired change (or a growing delay) before
retrying. A 100k-flow resync with nothing to change sends nothing and costs the controller ~0.4 s of CPU
(BENCHMARKS.md): the engine keeps the bytes the switch reports for each desired flow (ExpectedIndex), built
by the sender thread when it has nothing else to do (after replace_desired: a restart's first compile,
typically before the switch connects) or else by the next dump, and patched with the flow keys apply()
changed since, so a dump only looks its entries up. The index is used and changed only under _index_lock,
with a snapshot of the desired flows taken together with the changed keys, so it is always that of the
snapshot the dump recognises against (a delta or a replace_desired during a build or a dump reaches the
next dump's index).

Before the first apply()/replace_desired() an engine never reconciles: an empty desired state would sweep
the switch (a restarted controller must not wipe a switch it has not recompiled yet).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from controller import latency
from controller.southbound.plan import (
    DELETE,
    FLUSH,
    KEEP_METERS,
    FlowKey,
    Installed,
    Item,
    Op,
    Plan,
    ZoneFlush,
    plan_push,
    plan_resync,
)
from controller.southbound.transport import (
    DUMP_TIMEOUT,
    CounterScan,
    ExpectedIndex,
    SyncError,
    Transport,
    gc_paused,
)
from flows import encode
from flows.cookie import CookieRegistry
from flows.flow import Flow, Group, MeterEntry
from flows.format import format_flow, format_group, format_meter

__all__ = [
    "DUMP_TIMEOUT",
    "KEEP_METERS",
    "Diff",
    "FlowKey",
    "Item",
    "SwitchDump",
    "SwitchSync",
    "SyncError",
    "SyncManager",
    "SyncStats",
]

log = logging.getLogger(__name__)

#: retry delay after a bundle failed and the desired state did not change since (doubles, capped)
RETRY_MIN, RETRY_MAX = 1.0, 60.0
#: a resync logs its first operations this many (a takeover that adopts everything logs none)
RESYNC_LOGGED_OPS = 20


@dataclass(frozen=True, slots=True)
class Diff:
    """What verify() found: desired entries missing on the switch, switch entries not desired, and switch
    entries no Flow value describes (as text)."""

    missing: frozenset[Item]
    unexpected: frozenset[Item]
    undecodable: tuple[str, ...] = ()
    #: False: a change was not yet realized when the dump began, or the whole desired state was replaced
    #: while it ran: no verdict (the switch may hold either side of the change)
    settled: bool = True

    @property
    def clean(self) -> bool:
        return self.settled and not (self.missing or self.unexpected or self.undecodable)


def _flushes(zones: set[int]) -> list[Op]:
    return [Op(FLUSH, ZoneFlush(z)) for z in sorted(zones)]


class _Touched:
    """What of the desired state changed while a verify() dump ran (its flows' keys, group and meter ids;
    `all` after a replace or forget): the dump may show those entries before or after their change."""

    __slots__ = ("all", "flows", "groups", "meters")

    def __init__(self) -> None:
        self.all = False
        self.flows: set[FlowKey] = set()
        self.groups: set[int] = set()
        self.meters: set[int] = set()


@dataclass(frozen=True, slots=True)
class SwitchDump:
    """What a switch holds right now: decoded flows -> (packets, bytes), groups, undecodable entries."""

    flows: dict[Flow, tuple[int, int]]
    groups: tuple[Group, ...]
    undecodable: tuple[str, ...] = ()
    meters: tuple[MeterEntry, ...] = ()


@dataclass(slots=True)
class SyncStats:
    """Counters of one engine (exported to Prometheus later)."""

    flow_mods_sent: int = 0
    group_mods_sent: int = 0
    meter_mods_sent: int = 0
    bundles_sent: int = 0
    bundles_failed: int = 0
    errors: int = 0
    resyncs: int = 0
    last_resync_flow_mods: int = 0
    last_resync_group_mods: int = 0
    last_resync_seconds: float = 0.0
    last_dump_seconds: float = 0.0  # request to decoded snapshot
    last_dump_entries: int = 0
    last_dump_slow: int = 0  # entries that needed os-ken's parser + decode (not byte-equal to a desired flow)
    last_dump_reordered: int = 0  # recognised after re-ordering their match fields (OVS's order unexpected)
    last_send_seconds: float = 0.0  # encoding and writing the last bundle
    last_bundle_seconds: float = 0.0  # the last bundle, from first byte to barrier reply
    index_builds: int = 0  # expected-bytes indexes built from a whole desired state (ExpectedIndex)
    last_index_seconds: float = 0.0  # the last build, wall
    last_index_cpu: float = 0.0  # the last build, CPU of the building thread


#: how long a dump cut short by the switch reconnecting waits for the new connection before failing
RECONNECT_WAIT_S = 20.0


class SwitchSync:
    """Desired vs installed flows, groups and meters of one datapath; see the module docstring.

    Thread-safe. apply() / replace_desired() never touch the network: a per-switch sender thread does,
    through the Transport of the current connection.
    """

    def __init__(
        self,
        datapath_id: int,
        encoder: encode.Encoder | None = None,
        on_realized: Callable[[int, int], None] | None = None,
        registry: CookieRegistry | None = None,
    ) -> None:
        self.datapath_id = datapath_id
        self.registry = registry
        self._enc = encoder or encode.Encoder()
        self._on_realized = on_realized
        #: called on the sender thread after each bundle: (datapath id, seconds to barrier, messages, ok)
        self.on_bundle: Callable[[int, float, int, bool], None] | None = None
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # desired state (callers' threads)
        self._desired: dict[FlowKey, Flow] = {}
        self._desired_groups: dict[int, Group] = {}
        self._desired_meters: dict[int, MeterEntry] = {}
        self._desired_known = False  # no reconcile before the first desired state: it would sweep the switch
        self._desired_version = 0  # bumps on every change of the desired state
        self._revision = 0
        self._dirty: set[FlowKey] = set()
        self._dirty_groups: set[int] = set()
        self._dirty_meters: set[int] = set()
        self._full_diff = False
        self._resync_gen = 0  # bumped by request_resync
        self._touching: list[_Touched] = []  # one per verify() in progress
        self._flush: set[int] = set()  # conntrack zones to flush after the next bundle (flush_zones)
        # the expected bytes of the desired flows for recognising a dump (see _expected): built by the sender
        # thread while idle or by the first dump after replace_desired, patched with the flow keys apply()
        # changed since. Used and changed only under _index_lock (taken before _lock, never after it).
        self._index_lock = threading.Lock()
        self._index: ExpectedIndex | None = None
        self._index_dirty: set[FlowKey] = set()  # changed since the index's snapshot
        self._index_tracked = False  # an index of this desired state exists or is being built
        # what we believe the switch holds (written by the sender thread only)
        self._installed: dict[FlowKey, Flow] = {}
        self._installed_groups: dict[int, Group] = {}
        self._installed_meters: dict[int, MeterEntry] = {}
        self._realized = 0
        self._notify: int | None = None  # realized revision not yet reported to on_realized
        # connection: one Transport per connection, replaced on every attach / detach
        self._dp: Any = None
        self._transport: Transport | None = None
        self._synced = False  # installed set confirmed on the current connection
        self._failed_version: int | None = None  # desired version whose bundle failed
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN
        self._stats = SyncStats()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sync-{datapath_id:016x}", daemon=True)
        self._thread.start()

    # --- desired state (any thread) --------------------------------------------------------------------

    def apply(self, add: Iterable[Item], remove: Iterable[Item], revision: int) -> None:
        """Change the desired state by a delta (removes first, then adds) and mark it as `revision`."""
        add, remove = list(add), list(remove)
        for item in (*add, *remove):
            if not isinstance(item, (Flow, Group, MeterEntry)):
                raise TypeError(f"not a Flow, Group or MeterEntry: {item!r}")
        with self._cond:
            for item in remove:
                if isinstance(item, Flow):
                    key = FlowKey(item)
                    if self._desired.get(key) == item:
                        del self._desired[key]
                        self._dirty.add(key)
                        if self._index_tracked:
                            self._index_dirty.add(key)
                elif isinstance(item, MeterEntry):
                    if self._desired_meters.get(item.meter_id) == item:
                        del self._desired_meters[item.meter_id]
                        self._dirty_meters.add(item.meter_id)
                else:
                    if self._desired_groups.get(item.group_id) == item:
                        del self._desired_groups[item.group_id]
                        self._dirty_groups.add(item.group_id)
            for item in add:
                if isinstance(item, Flow):
                    key = FlowKey(item)
                    old = self._desired.get(key)
                    if old is not None and old != item:
                        log.debug("dp %016x: %s replaces %s", self.datapath_id, item, old)
                    self._desired[key] = item
                    self._dirty.add(key)
                    if self._index_tracked:
                        self._index_dirty.add(key)
                elif isinstance(item, MeterEntry):
                    self._desired_meters[item.meter_id] = item
                    self._dirty_meters.add(item.meter_id)
                else:
                    self._desired_groups[item.group_id] = item
                    self._dirty_groups.add(item.group_id)
            for touched in self._touching:
                for item in (*add, *remove):
                    if isinstance(item, Flow):
                        touched.flows.add(FlowKey(item))
                    elif isinstance(item, MeterEntry):
                        touched.meters.add(item.meter_id)
                    else:
                        touched.groups.add(item.group_id)
            self._changed(revision)

    def replace_desired(self, flows: Iterable[Item], revision: int) -> None:
        """Set the whole desired state (initial compile, or a full recompile) as `revision`."""
        desired: dict[FlowKey, Flow] = {}
        groups: dict[int, Group] = {}
        meters: dict[int, MeterEntry] = {}
        # tens of thousands of new FlowKeys: with the default thresholds the cyclic GC would walk the whole
        # heap several times meanwhile (~0.3 s of a cold 50k-flow install, bench_sync.py --cold-runs)
        with gc_paused():
            for item in flows:
                if isinstance(item, Flow):
                    desired[FlowKey(item)] = item
                elif isinstance(item, Group):
                    groups[item.group_id] = item
                elif isinstance(item, MeterEntry):
                    meters[item.meter_id] = item
                else:
                    raise TypeError(f"not a Flow, Group or MeterEntry: {item!r}")
        with self._cond:
            self._desired, self._desired_groups, self._desired_meters = desired, groups, meters
            self._full_diff = True  # the next push compares everything (cheaper than tracking keys here)
            for touched in self._touching:
                touched.all = True
            self._drop_index()
            self._changed(revision)

    def flush_zones(self, zones: Iterable[int]) -> None:
        """Flush the switch's conntrack entries of `zones` once the next bundle is confirmed (the caller's
        delta removing the zones' last flows goes in it or in an earlier one): a zone a port gave up is
        empty when another port gets it. Kept across a reconnect; lost with the process."""
        with self._cond:
            self._flush.update(zones)
            self._cond.notify_all()

    def forget(self) -> None:
        """Drop the desired and installed state (another controller masters the switch now: memory). Until
        the next replace_desired the engine never reconciles, as a new one."""
        with self._cond:
            self._desired, self._desired_groups, self._desired_meters = {}, {}, {}
            self._installed, self._installed_groups, self._installed_meters = {}, {}, {}
            self._dirty.clear()
            self._dirty_groups.clear()
            self._dirty_meters.clear()
            self._flush.clear()  # the new master's to do (it flushes what it frees)
            self._full_diff = False
            self._desired_known = False
            self._synced = False
            self._desired_version += 1
            for touched in self._touching:
                touched.all = True
            self._drop_index()
            self._enc = encode.Encoder()  # its cached encodings (a transport in use keeps the old one)

    def _drop_index(self) -> None:
        """Under the lock: the desired state was replaced whole; the next index is built anew (a dump using
        the old one keeps it: it matches that dump's snapshot of the desired state)."""
        self._index = None
        self._index_dirty = set()
        self._index_tracked = False

    def _changed(self, revision: int) -> None:
        self._desired_known = True
        self._desired_version += 1
        self._revision = max(self._revision, revision)
        self._cond.notify_all()

    def desired(self) -> frozenset[Item]:
        """The desired flows, groups and meters."""
        with self._lock:
            return frozenset(
                itertools.chain(
                    self._desired.values(), self._desired_groups.values(), self._desired_meters.values()
                )
            )

    # --- observation -----------------------------------------------------------------------------------

    @property
    def realized_revision(self) -> int:
        """The highest revision whose desired state is confirmed installed on the switch."""
        with self._lock:
            return self._realized

    @property
    def revision(self) -> int:
        """The revision of the desired state."""
        with self._lock:
            return self._revision

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._dp is not None

    @property
    def stats(self) -> SyncStats:
        """A copy of the counters."""
        with self._lock:
            return replace(self._stats)

    def wait_realized(self, revision: int, timeout: float) -> bool:
        """Block until `revision` is realized; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._realized < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def flow_stats(self, timeout: float = DUMP_TIMEOUT) -> dict[Flow, tuple[int, int]]:
        """Dump the switch now: each decodable flow with its (packets, bytes) counters."""
        have = self._dump(timeout)
        return {have.flows[k]: v for k, v in have.counters.items()}

    def counters(self, last: Mapping[int, bytes], timeout: float = DUMP_TIMEOUT) -> CounterScan:
        """Dump the switch's flow counters now, no entry decoded (transport.CounterScan: each entry's
        identity, cookie and counters read by offset; `last` a previous scan's `now`). Raises SyncError."""
        with self._lock:
            t = self._transport
            if t is None:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
        return t.counters(last, timeout)

    def activity(self, timeout: float = DUMP_TIMEOUT) -> tuple[int, ...]:
        """A cheap fingerprint of what a dump would show, for skipping dumps that would show nothing new:
        the switch's aggregate (packets, bytes, flows) over all its flows (one small request, no entry
        encoded or decoded), then this engine's bundles sent, resyncs and realized revision (our own
        changes). Equal fingerprints: no flow counter moved, no flow came or went, we changed nothing.
        Raises SyncError."""
        with self._lock:
            t = self._transport
            if t is None:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
            ours = (self._stats.bundles_sent, self._stats.resyncs, self._realized)
        return (*t.aggregate(timeout), *ours)

    def installed_count(self) -> int:
        """How many flows, groups and meters we believe the switch holds."""
        with self._lock:
            return len(self._installed) + len(self._installed_groups) + len(self._installed_meters)

    def installed(self) -> frozenset[Item]:
        """What we believe the switch holds (as of the last confirmed bundle or dump)."""
        with self._lock:
            return frozenset(
                itertools.chain(
                    self._installed.values(), self._installed_groups.values(), self._installed_meters.values()
                )
            )

    def request_resync(self) -> None:
        """Dump and reconcile again (drift repair): adopts what is right, sends only the difference."""
        with self._cond:
            self._synced = False
            self._resync_gen += 1  # a resync already running started too early: it must not count
            self._cond.notify_all()

    def dump(self, timeout: float = DUMP_TIMEOUT) -> SwitchDump:
        """Dump the switch now: decoded flows with (packets, bytes) counters, groups, and entries no Flow
        describes (as text). Changes nothing (traces, dashboards)."""
        have = self._dump(timeout)
        return SwitchDump(
            {f: have.counters.get(k, (0, 0)) for k, f in have.flows.items()},
            tuple(have.groups.values()),
            tuple(e.text for e in have.raw_flows),
            tuple(have.meters.values()),
        )

    def verify(self, timeout: float = DUMP_TIMEOUT) -> Diff:
        """Dump the switch now and compare with the desired state; changes nothing.

        The dump takes a while (seconds at 100k flows) and writes go on meanwhile: an entry whose desired
        state changed while it ran is left out of the comparison (the switch may show it before or after
        the change, and the change's own bundle confirms it); a change not yet realized when the dump began,
        or a new whole desired state meanwhile, gives no verdict (`settled` False)."""
        touched = _Touched()
        with self._lock:
            touched.all = self._realized < self._revision
            self._touching.append(touched)
        try:
            have = self._dump(timeout)
        finally:
            with self._lock:
                self._touching.remove(touched)
                want = (
                    set(self._desired.values())
                    | set(self._desired_groups.values())
                    | set(self._desired_meters.values())
                )
        if touched.all:
            return Diff(frozenset(), frozenset(), settled=False)
        found = (
            set(have.flows.values())
            | set(have.groups.values())
            | {m for m in have.meters.values() if m.meter_id not in KEEP_METERS}
        )
        raw = (
            tuple(e.text for e in have.raw_flows)
            + tuple(g.text for g in have.raw_groups)
            + tuple(m.text for m in have.raw_meters if m.meter_id not in KEEP_METERS)
        )

        def changed(item: Item) -> bool:
            if isinstance(item, Flow):
                return FlowKey(item) in touched.flows
            if isinstance(item, MeterEntry):
                return item.meter_id in touched.meters
            return item.group_id in touched.groups

        return Diff(
            frozenset(i for i in want - found if not changed(i)),
            frozenset(i for i in found - want if not changed(i)),
            raw,
        )

    def dump_text(self, live: bool = False, timeout: float = DUMP_TIMEOUT) -> str:
        """`ovs-ofctl dump-flows`-shaped lines with stage names and owners (``# app/owner``), then groups.

        live=False formats what we believe is installed; live=True dumps the switch now (with counters,
        and entries no Flow describes marked ``UNDECODABLE``).
        """
        if not live:
            with self._lock:
                flows, groups = list(self._installed.values()), list(self._installed_groups.values())
                meters = list(self._installed_meters.values())
            return _format(flows, groups, self.registry, {}, (), meters)
        have = self._dump(timeout)
        return _format(
            list(have.flows.values()),
            list(have.groups.values()),
            self.registry,
            {have.flows[k]: v for k, v in have.counters.items()},
            [f" UNDECODABLE {e.text}" for e in have.raw_flows],
            list(have.meters.values()),
        )

    def close(self) -> None:
        """Stop the sender thread (the switch keeps its flows)."""
        with self._cond:
            self._closed = True
            if self._transport is not None:
                self._transport.close()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    # --- connection (os-ken threads) ---------------------------------------------------------------------

    def attach(self, dp: Any) -> None:
        """The switch connected (reached MAIN): reconcile it."""
        with self._cond:
            if self._dp is dp:
                return
            if self._transport is not None:
                self._transport.close()
            self._dp = dp
            self._transport = Transport(dp, self.datapath_id, self._enc, self.registry)
            self._synced = False
            self._failed_version = None
            self._retry_delay = RETRY_MIN
            self._cond.notify_all()

    def detach(self, dp: Any) -> None:
        """The switch's connection `dp` died; anything in flight is unknown until the next resync."""
        with self._cond:
            if self._dp is not dp:
                return
            if self._transport is not None:
                self._transport.close()
            self._dp = None
            self._transport = None
            self._synced = False
            self._cond.notify_all()

    def on_message(self, dp: Any, msg: Any) -> None:
        """A reply from the switch (barrier, multipart, error, bundle control), from os-ken's thread."""
        with self._cond:
            t = self._transport if dp is self._dp else None
        if t is not None and t.on_message(msg):
            with self._cond:
                self._stats.errors += 1

    # --- sender thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    job = self._next_job()
                    if job:
                        break
                    if self._desired_known and not self._index_tracked:
                        job = "index"  # nothing else to do: have the next resync's index ready
                        break
                    wait = None
                    if self._failed_version is not None and self._dp is not None:
                        wait = max(0.01, self._retry_at - time.monotonic())
                    self._cond.wait(wait)
                t = self._transport
                assert t is not None or job == "index"
                if latency.ON:
                    latency.stamp("s.job", f"{self.datapath_id:x}/{self._revision}")
            try:
                if job == "index" or t is None:  # no transport: only the index job (asserted above)
                    self._build_index()
                elif job == "resync":
                    self._resync(t)
                else:
                    self._push(t)
            except Exception as e:  # never let the sender die: log, and reconcile from scratch
                if isinstance(e, SyncError):
                    log.warning("dp %016x: %s", self.datapath_id, e)
                else:
                    log.exception("dp %016x: sync failed", self.datapath_id)
                with self._cond:
                    if self._transport is t and t is not None:
                        self._synced = False
                        self._note_failure(self._desired_version)
            with self._cond:
                notify, self._notify = self._notify, None
            cb = self._on_realized
            if latency.ON and notify is not None:
                latency.stamp("s.realized", f"{self.datapath_id:x}/{notify}")
            if notify is not None and cb is not None:
                try:  # on the sender thread, without the lock: a slow callback delays the next bundle
                    cb(self.datapath_id, notify)
                except Exception:
                    log.exception("dp %016x: on_realized callback failed", self.datapath_id)

    def _next_job(self) -> str | None:
        """What to do now (under the lock): "resync", "push" or None (wait)."""
        if self._dp is None or not self._desired_known:
            return None
        if self._failed_version is not None:
            if self._failed_version == self._desired_version and time.monotonic() < self._retry_at:
                return None
            return "resync"
        if not self._synced:
            return "resync"
        if (
            self._dirty
            or self._dirty_groups
            or self._dirty_meters
            or self._full_diff
            or self._flush
            or self._realized < self._revision
        ):
            return "push"
        return None

    def _note_failure(self, version: int) -> None:
        """Under the lock: the state of desired version `version` could not be installed. Retry at once if
        the desired state changed since, else after a growing delay."""
        self._stats.bundles_failed += 1
        if self._failed_version == version:
            self._retry_delay = min(RETRY_MAX, self._retry_delay * 2)
        else:
            self._retry_delay = RETRY_MIN
        self._failed_version = version
        self._retry_at = time.monotonic() + self._retry_delay

    def _resync(self, t: Transport) -> None:
        # automatic collection off for the whole resync: the dump's keys and the plan make ~10^5 young
        # objects, and the full collection they would trigger (~0.5-1 s with a big model's heap) lands
        # after the switch is reconciled instead of in the middle of its dump
        with gc_paused():
            self._resync_paused(t)

    def _resync_paused(self, t: Transport) -> None:
        start = time.monotonic()
        with self._cond:
            gen = self._resync_gen
        have = self._dump(DUMP_TIMEOUT, t)
        with self._cond:
            if self._transport is not t:
                return
            desired, groups = dict(self._desired), dict(self._desired_groups)
            meters = dict(self._desired_meters)
            revision, version = self._revision, self._desired_version
            self._dirty.clear()
            self._dirty_groups.clear()
            self._dirty_meters.clear()
            self._full_diff = False
            flush, self._flush = self._flush, set()
        plan = plan_resync(desired, groups, meters, have)
        log.info(
            "dp %016x: resync: %d flows on switch, %d adopted, %d raw/stale to delete, %d mods, "
            "%d meter-mods (revision %d)",
            self.datapath_id,
            len(have.flows) + len(have.raw_flows),
            plan.adopted,
            plan.flow_deletes,
            len(plan.bundle),
            plan.meter_mods,
            revision,
        )
        # what it did not adopt (why a reconnect or takeover changed the switch)
        for op in plan.ops()[:RESYNC_LOGGED_OPS]:
            log.info("dp %016x: resync %s %s", self.datapath_id, op.command, self._describe(op.item))
        ok = self._send(t, plan)
        with self._cond:
            if self._transport is not t:
                self._flush |= flush
                return
            self._stats.resyncs += 1
            n_flow = plan.flow_mods
            self._stats.last_resync_flow_mods = n_flow
            self._stats.last_resync_group_mods = len(plan.bundle) - n_flow
            self._stats.last_resync_seconds = time.monotonic() - start
            if not ok:
                self._flush |= flush
                self._synced = False
                self._note_failure(version)
                return
            self._installed, self._installed_groups, self._installed_meters = desired, groups, meters
            self._synced = gen == self._resync_gen
            self._failed_version = None
            self._retry_delay = RETRY_MIN
            for op in plan.bundle:
                if op.command == DELETE and isinstance(op.item, (Flow, Group)):
                    self._enc.discard(op.item)
            self._advance(revision)
        self._send_flushes(t, flush)

    def _describe(self, item: Any) -> str:
        if isinstance(item, Flow):
            return format_flow(item, self.registry)
        if isinstance(item, Group):
            return format_group(item)
        if isinstance(item, MeterEntry):
            return format_meter(item)
        return str(item)

    def _push(self, t: Transport) -> None:
        with self._cond:
            keys, gkeys, mkeys = self._dirty, self._dirty_groups, self._dirty_meters
            self._dirty, self._dirty_groups, self._dirty_meters = set(), set(), set()
            if self._full_diff:
                keys |= self._desired.keys() | self._installed.keys()
                gkeys |= self._desired_groups.keys() | self._installed_groups.keys()
                mkeys |= self._desired_meters.keys() | self._installed_meters.keys()
                self._full_diff = False
            desired = {k: self._desired[k] for k in keys if k in self._desired}
            groups = {g: self._desired_groups[g] for g in gkeys if g in self._desired_groups}
            meters = {m: self._desired_meters[m] for m in mkeys if m in self._desired_meters}
            revision, version = self._revision, self._desired_version
            flush, self._flush = self._flush, set()
        with gc_paused():
            plan = plan_push(
                desired,
                groups,
                meters,
                self._installed,
                self._installed_groups,
                self._installed_meters,
                keys,
                gkeys,
                mkeys,
            )
        if latency.ON:
            latency.stamp("s.planned", f"{self.datapath_id:x}/{revision}")
        ok = self._send(t, plan)
        with self._cond:
            if self._transport is not t:
                self._flush |= flush
                return
            if not ok:
                self._flush |= flush
                self._synced = False
                self._note_failure(version)
                return
            for k in keys:
                f = desired.get(k)
                if f is None:
                    old = self._installed.pop(k, None)
                    if old is not None:
                        self._enc.discard(old)
                else:
                    old = self._installed.get(k)
                    if old is not None and old != f:
                        self._enc.discard(old)  # replaced: its encoding will not be needed again
                    self._installed[k] = f
            for g in gkeys:
                grp = groups.get(g)
                if grp is None:
                    self._installed_groups.pop(g, None)
                else:
                    self._installed_groups[g] = grp
            for m in mkeys:
                meter = meters.get(m)
                if meter is None:
                    self._installed_meters.pop(m, None)
                else:
                    self._installed_meters[m] = meter
            self._advance(revision)
        self._send_flushes(t, flush)

    def _send_flushes(self, t: Transport, zones: set[int]) -> None:
        """After a confirmed bundle: flush `zones`' conntrack entries. A switch refusing it is logged and not
        asked again (stale entries then expire by conntrack's timeouts; no resync loop over it); a lost
        connection keeps them for the next connection's resync."""
        if not zones:
            return
        sent = t.send(_flushes(zones), bundled=False)
        if sent.ok:
            return
        if sent.errors:
            log.warning(
                "dp %016x: conntrack zones %s not flushed: %s", self.datapath_id, sorted(zones), sent.errors
            )
            return
        with self._cond:
            self._flush |= zones

    def _advance(self, revision: int) -> None:
        """Under the lock: the desired state of `revision` is on the switch."""
        if revision <= self._realized:
            return
        self._realized = revision
        self._notify = revision
        self._cond.notify_all()

    # --- through the transport ---------------------------------------------------------------------------

    def _send(self, t: Transport, plan: Plan) -> bool:
        """The plan's steps in order, each only if it has operations and the one before was confirmed;
        True when all of them were confirmed without error. Meter adds / modifies go ahead of the bundle in
        its write (one round trip, not two: Transport.send's `ahead`); meter deletes wait for the bundle's
        confirmation (OVS deletes the flows that use a deleted meter)."""
        ahead = plan.meters_before if plan.bundle else []
        steps = (
            (plan.meters_before if not ahead else [], False),
            (plan.bundle, True),
            (plan.meters_after, False),
        )
        for ops, bundled in steps:
            if not ops:
                continue
            sent = t.send(ops, bundled, ahead) if bundled and ahead else t.send(ops, bundled)
            if sent.written:
                with self._cond:
                    st = self._stats
                    st.bundles_sent += 1 if bundled else 0
                    st.flow_mods_sent += sent.flow_mods
                    st.group_mods_sent += sent.group_mods
                    st.meter_mods_sent += sent.meter_mods
                    st.last_bundle_seconds = sent.seconds
                    st.last_send_seconds = sent.write_seconds
                if self.on_bundle is not None:
                    try:
                        n = len(ops) + (len(ahead) if bundled else 0)
                        self.on_bundle(self.datapath_id, sent.seconds, n, sent.ok)
                    except Exception:
                        log.exception("dp %016x: on_bundle callback failed", self.datapath_id)
            if not sent.ok:
                return False
        return True

    def _dump(self, timeout: float, t: Transport | None = None) -> Installed:
        """Dump the switch through the current connection's transport (or `t`) and decode it. A dump of the
        current connection that the switch's reconnecting cut short is taken once more on the new one."""
        t0 = time.monotonic()
        current = t is None
        with self._lock:
            if t is None:
                t = self._transport
            if t is None or t is not self._transport:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
        with self._index_lock:
            return self._dump_indexed(timeout, t, current, t0)

    def _build_index(self) -> None:
        """The sender thread, idle: build the index of the desired state ahead of the next dump."""
        with self._index_lock, gc_paused():
            self._expected()

    def _expected(self) -> tuple[dict[FlowKey, Flow], ExpectedIndex]:
        """Under _index_lock: a snapshot of the desired flows and the index of exactly them (the kept one
        patched with the keys changed since its snapshot, or a new one)."""
        with self._lock:
            desired = dict(self._desired)  # its keys are reused for what the dump holds unchanged
            index, dirty = self._index, self._index_dirty
            self._index_dirty = set()
            self._index_tracked = True  # apply() records changed keys from this snapshot on
            enc = self._enc
        if index is None:
            t0, c0 = time.monotonic(), time.thread_time()
            index = ExpectedIndex.build(desired, enc)
            seconds, cpu = time.monotonic() - t0, time.thread_time() - c0
            with self._lock:
                self._stats.index_builds += 1
                self._stats.last_index_seconds = seconds
                self._stats.last_index_cpu = cpu
        elif dirty:
            index.patch(dirty, desired, enc)
        with self._lock:
            if self._index_tracked:  # else replace_desired / forget came meanwhile: serves this dump only
                self._index = index
        return desired, index

    def _dump_indexed(self, timeout: float, t: Transport, current: bool, t0: float) -> Installed:
        desired, index = self._expected()
        try:
            have, slow = t.dump(desired, timeout, index)
        except SyncError:
            # the switch reconnecting cut it short: wait a moment for the new connection and dump that
            until = min(t0 + timeout, time.monotonic() + RECONNECT_WAIT_S)
            with self._cond:
                while (
                    current
                    and t.closed
                    and not self._closed
                    and self._transport in (None, t)
                    and time.monotonic() < until
                ):
                    self._cond.wait(0.1)
                again = self._transport
            if not current or again is None or again is t:
                raise
            log.info(
                "dp %016x: the switch reconnected during a dump; dumping the new connection", self.datapath_id
            )
            have, slow = again.dump(desired, max(1.0, timeout - (time.monotonic() - t0)), index)
        with self._lock:
            self._stats.last_dump_seconds = time.monotonic() - t0
            self._stats.last_dump_entries = len(have.flows) + len(have.raw_flows)
            self._stats.last_dump_slow = slow
            self._stats.last_dump_reordered = have.reordered
        return have


def _format(
    flows: list[Flow],
    groups: list[Group],
    registry: CookieRegistry | None,
    counters: dict[Flow, tuple[int, int]],
    extra: Iterable[str],
    meters: Iterable[MeterEntry] = (),
) -> str:
    ordered = sorted(flows, key=lambda f: (f.table, -f.priority, repr(f.match)))
    lines = []
    for f in ordered:
        line = format_flow(f, registry)
        c = counters.get(f)
        if c is not None:  # dump-flows puts counters between table and priority
            head, sep, rest = line.partition(" priority=")
            line = f"{head} n_packets={c[0]}, n_bytes={c[1]},{sep}{rest}"
        lines.append(line)
    lines.extend(extra)
    lines.extend(format_group(g) for g in sorted(groups, key=lambda g: g.group_id))
    lines.extend(
        format_meter(m) for m in sorted(meters, key=lambda m: m.meter_id) if m.meter_id not in KEEP_METERS
    )
    return "\n".join(lines)


class SyncManager:
    """One SwitchSync per datapath id, wired to os-ken's connection events; resettable (tests)."""

    def __init__(
        self,
        encoder: encode.Encoder | None = None,
        on_realized: Callable[[int, int], None] | None = None,
        registry: CookieRegistry | None = None,
    ) -> None:
        self.encoder = encoder
        self.on_realized = on_realized
        self.on_bundle: Callable[[int, float, int, bool], None] | None = None  # see SwitchSync.on_bundle
        self.registry = registry
        self._lock = threading.Lock()
        self._engines: dict[int, SwitchSync] = {}
        self._connected: dict[int, Any] = {}
        #: datapath ids whose engines may talk to their switch (OpenFlow roles: the ones we are master of);
        #: None = every one (one controller)
        self.active: set[int] | None = None

    def _may_attach(self, datapath_id: int) -> bool:
        return self.active is None or datapath_id in self.active

    def set_active(self, datapath_id: int, active: bool) -> None:
        """Roles: the engine of `datapath_id` starts (attaches to its connection: dump, adopt, push) or
        stops talking to its switch. Its desired state keeps being updated either way."""
        with self._lock:
            if self.active is None:
                self.active = set()
            if active:
                self.active.add(datapath_id)
            else:
                self.active.discard(datapath_id)
            dp = self._connected.get(datapath_id)
            eng = self._engines.get(datapath_id)
        if eng is None or dp is None:
            return
        if active:
            eng.attach(dp)
        else:
            eng.detach(dp)

    def get(self, datapath_id: int) -> SwitchSync:
        """The engine of `datapath_id`, created (and attached, if the switch is connected) on first use."""
        with self._lock:
            eng = self._engines.get(datapath_id)
            if eng is None:
                eng = self._engines[datapath_id] = SwitchSync(
                    datapath_id, self.encoder, self._realized, self.registry
                )
                eng.on_bundle = self._bundle
                dp = self._connected.get(datapath_id)
                if dp is not None and self._may_attach(datapath_id):
                    eng.attach(dp)
            return eng

    def _realized(self, datapath_id: int, revision: int) -> None:
        cb = self.on_realized  # read at call time: the glue may set it after engines exist
        if cb is not None:
            cb(datapath_id, revision)

    def _bundle(self, datapath_id: int, seconds: float, n_messages: int, ok: bool) -> None:
        cb = self.on_bundle
        if cb is not None:
            cb(datapath_id, seconds, n_messages, ok)

    def engine(self, datapath_id: int) -> SwitchSync | None:
        with self._lock:
            return self._engines.get(datapath_id)

    def engines(self) -> dict[int, SwitchSync]:
        with self._lock:
            return dict(self._engines)

    def remove(self, datapath_id: int) -> None:
        """Stop and forget one engine (its switch keeps its flows)."""
        with self._lock:
            eng = self._engines.pop(datapath_id, None)
        if eng is not None:
            eng.close()

    def reset(self) -> None:
        """Stop and forget every engine, as a fresh process would have none (connections stay)."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for eng in engines:
            eng.close()

    def dump_text(self, datapath_id: int, live: bool = False) -> str:
        """Debug dump of one switch (see SwitchSync.dump_text)."""
        eng = self.engine(datapath_id)
        if eng is None:
            raise KeyError(f"no sync engine for datapath {datapath_id:016x}")
        return eng.dump_text(live=live)

    # --- called by ofapp ---------------------------------------------------------------------------------

    def switch_connected(self, dp: Any) -> None:
        with self._lock:
            self._connected[dp.id] = dp
            eng = self._engines.get(dp.id) if self._may_attach(dp.id) else None
        if eng is not None:
            eng.attach(dp)

    def switch_disconnected(self, dp: Any) -> None:
        dpid = dp.id
        with self._lock:
            if self._connected.get(dpid) is dp:
                del self._connected[dpid]
            eng = self._engines.get(dpid)
        if eng is not None:
            eng.detach(dp)

    def dispatch(self, dp: Any, msg: Any) -> None:
        with self._lock:
            eng = self._engines.get(dp.id) if dp.id is not None else None
        if eng is not None:
            eng.on_message(dp, msg)
