"""Per-switch synchronisation: desired flows and groups vs what the switch holds, one bundle per change.

One SwitchSync per datapath id. Callers (gRPC threads, the dataplane glue) change the desired state with
apply() / replace_desired(); those calls only update memory and wake the engine's sender thread, which

- on connect (and after any error) dumps the switch's flows and groups, decodes them (flows/decode.py),
  ADOPTS what equals a desired entry, and sends one bundle that adds what is missing and deletes what is
  unknown (foreign cookie, undecodable, or ours but no longer desired); nothing differs -> nothing is sent;
- afterwards sends each coalesced difference as one atomic, ordered ONF bundle followed by a barrier.
  The barrier reply (with no error for any message of the bundle) confirms the bundle: the installed set
  is updated and `realized_revision` advances to the revision the bundle was built from.

Groups travel inside the same bundle: checked on OVS 3.1, an OF1.3 ONF bundle accepts group-mods, and a
flow referencing a group added earlier in the same bundle validates (OVS checks group existence at commit,
against the bundle's version). Order inside a bundle: group ADD, group MODIFY, flow DELETE, flow ADD,
group DELETE (OVS deletes the flows that still point at a deleted group, so those go first).

Meters (MeterEntry) are desired state too, but OVS takes no meter-mod inside a bundle (OFPBFC_MSG_UNSUP):
meter ADD / MODIFY go as plain messages with a barrier BEFORE the bundle (a flow naming a missing meter
is rejected), meter DELETE after the bundle is confirmed (deleting a meter deletes the flows that use it).
A resync dumps the meters' config (OFPMeterConfigStatsRequest), adopts the equal ones, modifies the
differing ones and deletes unknown ones (but KEEP_METERS).

Flows are identified by (stage, priority, match). A flow whose actions or cookie change is sent as one ADD
(OpenFlow ADD replaces the entry; MODIFY would keep the old cookie). Deletes are DELETE_STRICT carrying the
entry's own cookie with a full cookie mask, so a delete never hits an entry we did not see.

Errors: OVS reports a bad message of a bundle at commit (error with that message's xid, then
ONFERR_ET_FAILED, i.e. OFPBFC_MSG_FAILED, for the commit) and applies nothing (atomic). The engine logs the
failing message decoded (ovs-ofctl syntax), does not advance realized_revision, and resyncs; if the same
desired state fails again it waits for the next desired change (or a growing delay) before retrying.

Dumps: flow-stats replies are taken as raw bytes (ofapp hands them over before os-ken parses them, which
runs at ~7k entries/s). An entry whose bytes are what we would send for a desired flow (match fields
compared as a set, reg_move field headers compared in OXM spelling: OVS orders matches its own way and
reports moves with NXM headers) is adopted without decoding; anything else goes through os-ken's parser
and flows/decode.py. A 50k-flow resync with nothing to change takes ~1-1.5 s here and sends nothing.

Before the first apply()/replace_desired() an engine never reconciles: an empty desired state would sweep
the switch (a restarted controller must not wipe a switch it has not recompiled yet).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller.southbound import ofwire
from flows import encode
from flows.cookie import CookieRegistry, is_ours
from flows.decode import DecodeError, decode_flow, decode_group, decode_meter
from flows.flow import Flow, Group, MeterEntry
from flows.format import format_flow, format_group, format_meter

log = logging.getLogger(__name__)

Item = Flow | Group | MeterEntry

#: meters the engine never deletes although nobody desires them: the packet-in meter, which the OpenFlow
#: app adds on every connection itself (apps.ids.PACKET_IN_METER)
KEEP_METERS = frozenset({1})


class FlowKey:
    """What OpenFlow identifies a flow by (stage, priority, match), with its hash computed once: tuples
    re-hash their nested match on every dict lookup, which dominated diffing 50k flows."""

    __slots__ = ("_hash", "key")

    def __init__(self, flow: Flow) -> None:
        self.key = flow.key()
        self._hash = hash(self.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, FlowKey) and self._hash == other._hash and self.key == other.key
        )

    def __repr__(self) -> str:
        return f"FlowKey{self.key!r}"


_ALL_COOKIE = (1 << 64) - 1
_XID_BASE = 1 << 31  # our xids live in the upper half; os-ken's own counter is random but rarely gets there

#: Datapath attribute holding {xid: callable(raw reply bytes)}: ofapp hands those multipart replies over
#: unparsed (see ofapp._raw_multipart_replies)
RAW_SINKS_ATTR = "_sdn_raw_sinks"

#: errors of one bundle logged one by one
MAX_LOGGED_ERRORS = 20
#: bundle messages per socket write
SEND_CHUNK = 2048
#: how long to wait for a dump or a barrier before calling the connection broken
DUMP_TIMEOUT = 60.0
BARRIER_TIMEOUT = 60.0
#: retry delay after a bundle failed and the desired state did not change since (doubles, capped)
RETRY_MIN, RETRY_MAX = 1.0, 60.0


@contextlib.contextmanager
def _gc_paused():
    """Automatic garbage collection off while a bundle is diffed and encoded: a full collection of a
    controller's heap (every Flow value) costs ~0.1-0.2 s and would otherwise land in the middle of a
    50k-flow bundle; it runs after the bytes are on their way instead. Re-enabled only by whoever
    disabled it (two engines at once: the first to finish re-enables)."""
    was = gc.isenabled()
    if was:
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class SyncError(RuntimeError):
    """A switch that is not connected, did not answer, or rejected a request."""


@dataclass(frozen=True, slots=True)
class Diff:
    """What verify() found: desired entries missing on the switch, switch entries not desired, and switch
    entries no Flow value describes (as text)."""

    missing: frozenset[Item]
    unexpected: frozenset[Item]
    undecodable: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.undecodable)


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
    last_send_seconds: float = 0.0  # encoding and writing the last bundle
    last_bundle_seconds: float = 0.0  # the last bundle, from first byte to barrier reply


@dataclass(slots=True)
class _Op:
    """One message of a bundle: what it does (for logs), its type and encoded body."""

    command: str
    item: Item | str  # a str describes an undecodable switch entry
    msg_type: int
    body: bytes


@dataclass
class _Waiter:
    """A request in flight: collects multipart bodies / errors until done or the connection drops."""

    kind: str  # "flows", "groups", "meters", "barrier"
    done: threading.Event = field(default_factory=threading.Event)
    entries: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    broken: bool = False


@dataclass
class _Snapshot:
    """A decoded dump of a switch."""

    flows: dict[FlowKey, Flow]
    groups: dict[int, Group]
    raw_flows: list[Any]  # os-ken OFPFlowStats no Flow describes
    raw_groups: list[Any]
    stats: dict[FlowKey, tuple[int, int]]  # (packets, bytes) per decoded flow
    meters: dict[int, MeterEntry] = field(default_factory=dict)
    raw_meters: list[Any] = field(default_factory=list)  # os-ken OFPMeterConfigStats no MeterEntry describes


def _describe_raw_flow(e: Any) -> str:
    return (
        f"cookie={e.cookie:#x}, table={e.table_id}, priority={e.priority},"
        f"{','.join(f'{k}={v}' for k, v in e.match.items())} instructions={e.instructions}"
    )


class SwitchSync:
    """Desired vs installed flows and groups of one datapath; see the module docstring.

    Thread-safe. apply() / replace_desired() never touch the network: a per-switch sender thread does.
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
        # what we believe the switch holds (written by the sender thread only)
        self._installed: dict[FlowKey, Flow] = {}
        self._installed_groups: dict[int, Group] = {}
        self._installed_meters: dict[int, MeterEntry] = {}
        self._realized = 0
        self._notify: int | None = None  # realized revision not yet reported to on_realized
        # connection
        self._dp: Any = None
        self._conn = 0  # bumps on every attach / detach
        self._synced = False  # installed set confirmed on the current connection
        self._failed_version: int | None = None  # desired version whose bundle failed
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN
        self._waiters: dict[int, _Waiter] = {}
        self._bundle_range: tuple[int, int] | None = None  # xids of the bundle in flight
        self._bundle_ops: list[_Op] = []
        self._bundle_errors: list[str] = []
        self._xid = _XID_BASE + random.randrange(1 << 24)
        self._bundle_ids = itertools.count(random.randrange(1 << 16))
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
                elif isinstance(item, MeterEntry):
                    self._desired_meters[item.meter_id] = item
                    self._dirty_meters.add(item.meter_id)
                else:
                    self._desired_groups[item.group_id] = item
                    self._dirty_groups.add(item.group_id)
            self._changed(revision)

    def replace_desired(self, flows: Iterable[Item], revision: int) -> None:
        """Set the whole desired state (initial compile, or a full recompile) as `revision`."""
        desired: dict[FlowKey, Flow] = {}
        groups: dict[int, Group] = {}
        meters: dict[int, MeterEntry] = {}
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
            self._changed(revision)

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
        snap = self._dump(timeout)
        return {snap.flows[k]: v for k, v in snap.stats.items()}

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
        snap = self._dump(timeout)
        return SwitchDump(
            {f: snap.stats.get(k, (0, 0)) for k, f in snap.flows.items()},
            tuple(snap.groups.values()),
            tuple(_describe_raw_flow(e) for e in snap.raw_flows),
            tuple(snap.meters.values()),
        )

    def verify(self, timeout: float = DUMP_TIMEOUT) -> Diff:
        """Dump the switch now and compare with the desired state; changes nothing."""
        snap = self._dump(timeout)
        with self._lock:
            want = (
                set(self._desired.values())
                | set(self._desired_groups.values())
                | set(self._desired_meters.values())
            )
        have = (
            set(snap.flows.values())
            | set(snap.groups.values())
            | {m for m in snap.meters.values() if m.meter_id not in KEEP_METERS}
        )
        raw = (
            tuple(_describe_raw_flow(e) for e in snap.raw_flows)
            + tuple(f"group_id={g.group_id} type={g.type} buckets={g.buckets}" for g in snap.raw_groups)
            + tuple(
                f"meter={m.meter_id} flags={m.flags:#x} bands={m.bands}"
                for m in snap.raw_meters
                if m.meter_id not in KEEP_METERS
            )
        )
        return Diff(frozenset(want - have), frozenset(have - want), raw)

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
        snap = self._dump(timeout)
        raw = [f" UNDECODABLE {_describe_raw_flow(e)}" for e in snap.raw_flows]
        return _format(
            list(snap.flows.values()),
            list(snap.groups.values()),
            self.registry,
            {snap.flows[k]: v for k, v in snap.stats.items()},
            raw,
            list(snap.meters.values()),
        )

    def close(self) -> None:
        """Stop the sender thread (the switch keeps its flows)."""
        with self._cond:
            self._closed = True
            self._fail_waiters()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    # --- connection (os-ken threads) ---------------------------------------------------------------------

    def attach(self, dp: Any) -> None:
        """The switch connected (reached MAIN): reconcile it."""
        with self._cond:
            if self._dp is dp:
                return
            self._fail_waiters()
            self._dp = dp
            self._conn += 1
            self._synced = False
            self._failed_version = None
            self._retry_delay = RETRY_MIN
            self._cond.notify_all()

    def detach(self, dp: Any) -> None:
        """The switch's connection `dp` died; anything in flight is unknown until the next resync."""
        with self._cond:
            if self._dp is not dp:
                return
            self._dp = None
            self._conn += 1
            self._synced = False
            self._fail_waiters()
            self._cond.notify_all()

    def on_message(self, dp: Any, msg: Any) -> None:
        """A reply from the switch (barrier, multipart, error, bundle control), from os-ken's thread."""
        with self._cond:
            if dp is not self._dp:
                return
            xid = msg.xid
            if isinstance(msg, ofpp.OFPErrorMsg):
                self._on_error(xid, msg)
                return
            w = self._waiters.get(xid)
            if w is None:
                return
            if isinstance(
                msg, (ofpp.OFPFlowStatsReply, ofpp.OFPGroupDescStatsReply, ofpp.OFPMeterConfigStatsReply)
            ):
                w.entries.extend(msg.body)
                if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                    del self._waiters[xid]
                    w.done.set()
            elif isinstance(msg, ofpp.OFPBarrierReply):
                del self._waiters[xid]
                w.done.set()

    def _on_error(self, xid: int, msg: Any) -> None:
        self._stats.errors += 1
        what = ofwire.error_name(msg)
        rng = self._bundle_range
        if rng is not None and rng[0] <= xid <= rng[1]:
            if len(self._bundle_errors) >= MAX_LOGGED_ERRORS:  # a bundle of 50k bad flows: not 50k lines
                self._bundle_errors.append(what)
                return
            i = xid - rng[0] - 1
            if 0 <= i < len(self._bundle_ops):
                op = self._bundle_ops[i]
                text = (
                    op.item
                    if isinstance(op.item, str)
                    else (
                        format_flow(op.item, self.registry)
                        if isinstance(op.item, Flow)
                        else format_meter(op.item)
                        if isinstance(op.item, MeterEntry)
                        else format_group(op.item)
                    )
                )
                detail = f"{what} for {op.command}: {text.strip()}"
            else:
                detail = f"{what} for bundle {'commit' if xid == rng[1] else 'open'} (xid {xid:#x})"
            self._bundle_errors.append(detail)
            log.error(
                "dp %016x: bundle rejected: %s%s",
                self.datapath_id,
                detail,
                " (further errors of this bundle are counted, not logged)"
                if len(self._bundle_errors) == MAX_LOGGED_ERRORS
                else "",
            )
            return
        w = self._waiters.pop(xid, None)
        if w is not None:
            w.errors.append(what)
            w.done.set()
        log.error("dp %016x: OpenFlow error %s (xid %#x)", self.datapath_id, what, xid)

    def _fail_waiters(self) -> None:
        for w in self._waiters.values():
            w.broken = True
            w.done.set()
        self._waiters.clear()

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
                    wait = None
                    if self._failed_version is not None and self._dp is not None:
                        wait = max(0.01, self._retry_at - time.monotonic())
                    self._cond.wait(wait)
                dp, conn = self._dp, self._conn
            try:
                if job == "resync":
                    self._resync(dp, conn)
                else:
                    self._push(dp, conn)
            except Exception as e:  # never let the sender die: log, and reconcile from scratch
                if isinstance(e, SyncError):
                    log.warning("dp %016x: %s", self.datapath_id, e)
                else:
                    log.exception("dp %016x: sync failed", self.datapath_id)
                with self._cond:
                    if self._conn == conn:
                        self._synced = False
                        self._note_failure(self._desired_version)
            with self._cond:
                notify, self._notify = self._notify, None
            cb = self._on_realized
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

    def _resync(self, dp: Any, conn: int) -> None:
        start = time.monotonic()
        with self._cond:
            gen = self._resync_gen
        snap = self._dump(DUMP_TIMEOUT, dp, conn)
        with self._cond:
            if self._conn != conn:
                return
            desired, groups = dict(self._desired), dict(self._desired_groups)
            meters = dict(self._desired_meters)
            revision, version = self._revision, self._desired_version
            self._dirty.clear()
            self._dirty_groups.clear()
            self._dirty_meters.clear()
            self._full_diff = False
        with _gc_paused():
            ops = self._ops(
                desired, groups, snap.flows, snap.groups, None, groups.keys() | snap.groups.keys()
            )
        ops[2][:0] = [self._raw_flow_delete(e) for e in snap.raw_flows]  # before an ADD of the same key
        # an undecodable group whose id we want is overwritten (MODIFY), any other one deleted
        raw_ids = {g.group_id for g in snap.raw_groups}
        for op in [op for op in ops[0] if op.item.group_id in raw_ids]:  # type: ignore[union-attr]
            ops[0].remove(op)
            group: Any = op.item  # a Group: its id is a wanted group's
            ops[1].append(
                _Op(encode.MODIFY, group, ofp.OFPT_GROUP_MOD, self._enc.group_body(group, encode.MODIFY))
            )
        ops[4].extend(
            _Op(
                encode.DELETE,
                f"group_id={g.group_id} (undecodable)",
                ofp.OFPT_GROUP_MOD,
                struct.pack("!HBxI", ofp.OFPGC_DELETE, g.type, g.group_id),
            )
            for g in snap.raw_groups
            if g.group_id not in groups
        )
        flat = [op for part in ops for op in part]
        n_flow = sum(1 for op in flat if op.msg_type == ofp.OFPT_FLOW_MOD)
        adopted = sum(1 for k, f in snap.flows.items() if desired.get(k) == f)
        raw_meters = {m.meter_id for m in snap.raw_meters if m.meter_id not in KEEP_METERS}
        m_before, m_after = self._meter_ops(
            meters, snap.meters, meters.keys() | snap.meters.keys() | raw_meters, raw_meters
        )
        log.info(
            "dp %016x: resync: %d flows on switch, %d adopted, %d raw/stale to delete, %d mods, "
            "%d meter-mods (revision %d)",
            self.datapath_id,
            len(snap.flows) + len(snap.raw_flows),
            adopted,
            len(ops[2]),
            len(flat),
            len(m_before) + len(m_after),
            revision,
        )
        ok = self._send_all(dp, conn, m_before, flat, m_after)
        with self._cond:
            if self._conn != conn:
                return
            self._stats.resyncs += 1
            self._stats.last_resync_flow_mods = n_flow
            self._stats.last_resync_group_mods = len(flat) - n_flow
            self._stats.last_resync_seconds = time.monotonic() - start
            if not ok:
                self._synced = False
                self._note_failure(version)
                return
            self._installed, self._installed_groups, self._installed_meters = desired, groups, meters
            self._synced = gen == self._resync_gen
            self._failed_version = None
            self._retry_delay = RETRY_MIN
            for op in flat:
                if op.command == encode.DELETE and isinstance(op.item, (Flow, Group)):
                    self._enc.discard(op.item)
            self._advance(revision)

    def _push(self, dp: Any, conn: int) -> None:
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
        with _gc_paused():
            ops = self._ops(desired, groups, self._installed, self._installed_groups, keys, gkeys)
        flat = [op for part in ops for op in part]
        m_before, m_after = self._meter_ops(meters, self._installed_meters, mkeys)
        ok = self._send_all(dp, conn, m_before, flat, m_after)
        with self._cond:
            if self._conn != conn:
                return
            if not ok:
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

    def _advance(self, revision: int) -> None:
        """Under the lock: the desired state of `revision` is on the switch."""
        if revision <= self._realized:
            return
        self._realized = revision
        self._notify = revision
        self._cond.notify_all()

    # --- building and sending ------------------------------------------------------------------------------

    def _ops(
        self,
        desired: dict[FlowKey, Flow],
        groups: dict[int, Group],
        inst: dict[FlowKey, Flow],
        inst_groups: dict[int, Group],
        keys: Iterable[FlowKey] | None,
        gkeys: Iterable[int],
    ) -> list[list[_Op]]:
        """[group adds, group mods, flow deletes, flow adds, group deletes] turning `inst` into `desired`
        over `keys` (None: every key of either) / `gkeys`."""
        enc = self._enc
        g_add: list[_Op] = []
        g_mod: list[_Op] = []
        g_del: list[_Op] = []
        for g in gkeys:
            want, have = groups.get(g), inst_groups.get(g)
            if want == have:
                continue
            if want is None:
                assert have is not None
                g_del.append(
                    _Op(encode.DELETE, have, ofp.OFPT_GROUP_MOD, enc.group_body(have, encode.DELETE))
                )
            elif have is None:
                g_add.append(_Op(encode.ADD, want, ofp.OFPT_GROUP_MOD, enc.group_body(want, encode.ADD)))
            else:
                g_mod.append(
                    _Op(encode.MODIFY, want, ofp.OFPT_GROUP_MOD, enc.group_body(want, encode.MODIFY))
                )
        # a group whose buckets point at another new group goes after it (one level of chaining)
        g_add.sort(key=lambda op: _refers_to_groups(op.item))
        f_del: list[_Op] = []
        f_add: list[_Op] = []
        flow_mod = ofp.OFPT_FLOW_MOD
        if keys is None:
            if not inst:  # an empty switch (cold install): everything is an ADD, nothing to compare
                # body encoded while sending (b""): overlaps with the switch parsing earlier chunks
                add = encode.ADD
                f_add = [_Op(add, f, flow_mod, b"") for f in desired.values()]
                return [g_add, g_mod, f_del, f_add, g_del]
            keys = desired.keys() | inst.keys()
        for k in keys:
            fwant, fhave = desired.get(k), inst.get(k)
            if fhave is None:
                if fwant is not None:
                    # body encoded while sending (b""): overlaps with the switch parsing earlier chunks
                    f_add.append(_Op(encode.ADD, fwant, flow_mod, b""))
            elif fwant is None:
                f_del.append(_Op(encode.DELETE, fhave, flow_mod, self._delete_body(fhave)))
            elif fwant is not fhave and fwant != fhave:
                # same match+priority, other actions or cookie: ADD replaces (MODIFY would keep the cookie)
                f_add.append(_Op(encode.ADD, fwant, flow_mod, b""))
        return [g_add, g_mod, f_del, f_add, g_del]

    def _meter_ops(
        self,
        desired: dict[int, MeterEntry],
        inst: dict[int, MeterEntry],
        mkeys: Iterable[int],
        raw: Iterable[int] = (),
    ) -> tuple[list[_Op], list[_Op]]:
        """(adds and modifies to send before the bundle, deletes to send after it) turning `inst` into
        `desired` over meter ids `mkeys`; `raw`: ids the switch holds with a config no MeterEntry describes."""
        before: list[_Op] = []
        after: list[_Op] = []
        raw = set(raw)
        t = ofp.OFPT_METER_MOD
        for m in sorted(mkeys):
            want, have = desired.get(m), inst.get(m)
            if want is not None:
                if have is None and m not in raw:
                    before.append(_Op(encode.ADD, want, t, encode.meter_mod_body(want, encode.ADD)))
                elif want != have:
                    before.append(_Op(encode.MODIFY, want, t, encode.meter_mod_body(want, encode.MODIFY)))
            elif m not in KEEP_METERS and (have is not None or m in raw):
                gone = have or MeterEntry(m, 1)
                after.append(_Op(encode.DELETE, gone, t, encode.meter_mod_body(gone, encode.DELETE)))
        return before, after

    def _send_all(self, dp: Any, conn: int, before: list[_Op], bundle: list[_Op], after: list[_Op]) -> bool:
        """Meter adds/modifies, then the bundle once they are confirmed, then meter deletes once the bundle
        is: each step only if it has messages; True when all of them were confirmed without error."""
        for ops, plain in ((before, True), (bundle, False), (after, True)):
            if ops and not self._send_bundle(dp, conn, ops, plain=plain):
                return False
        return True

    def _delete_body(self, flow: Flow) -> bytes:
        """DELETE_STRICT body restricted to the entry's own cookie (full cookie mask)."""
        return ofwire.COOKIES.pack(flow.cookie, _ALL_COOKIE) + self._enc.flow_body(flow, encode.DELETE)[16:]

    @staticmethod
    def _raw_flow_delete(e: Any) -> _Op:
        msg = ofpp.OFPFlowMod(
            encode.DATAPATH_DESC,
            cookie=e.cookie,
            cookie_mask=_ALL_COOKIE,
            table_id=e.table_id,
            command=ofp.OFPFC_DELETE_STRICT,
            priority=e.priority,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=e.match,
            instructions=[],
        )
        msg.set_xid(0)
        return _Op(encode.DELETE, _describe_raw_flow(e), ofp.OFPT_FLOW_MOD, encode.osken_bytes(msg)[8:])

    def _alloc_xids(self, n: int) -> int:
        """Under the lock: `n` consecutive xids (never wrapping inside the range)."""
        if self._xid + n >= 1 << 32:
            self._xid = _XID_BASE
        start = self._xid
        self._xid += n
        return start

    def _send_bundle(self, dp: Any, conn: int, ops: list[_Op], plain: bool = False) -> bool:
        """Send ops as one atomic ordered bundle plus a barrier; True once the barrier confirms no error.
        plain=True: the same messages unbundled, in order (meter-mods, which OVS takes in no bundle)."""
        t0 = time.monotonic()
        with self._cond:
            if self._conn != conn:
                return False
            xid = self._alloc_xids(len(ops) + 3)
            bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
            barrier_xid = xid + len(ops) + 2
            waiter = _Waiter("barrier")
            self._waiters[barrier_xid] = waiter
            self._bundle_range = (xid, xid + len(ops) + 1)
            self._bundle_ops = ops
            self._bundle_errors = []
        flags = encode.BUNDLE_FLAGS
        parts = [] if plain else [encode.bundle_ctrl(bundle_id, ofp.ONF_BCT_OPEN_REQUEST, xid, flags)]
        pack = ofwire.BUNDLE_ADD.pack
        flow_body = self._enc.flow_body
        x = xid + 1
        onf, add = ofproto_common.ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_ADD_MESSAGE
        sent = True
        # Large writes, but streamed in chunks: the switch validates the first messages of the bundle
        # while the rest are still being encoded.
        with _gc_paused():
            for i, op in enumerate(ops, 1):
                body = op.body or flow_body(op.item, op.command)  # type: ignore[arg-type]
                inner = 8 + len(body)
                if plain:
                    parts.append(struct.pack("!BBHI", ofp.OFP_VERSION, op.msg_type, inner, x))
                else:
                    parts.append(
                        pack(
                            ofp.OFP_VERSION,
                            ofp.OFPT_EXPERIMENTER,
                            24 + inner,
                            x,
                            onf,
                            add,
                            bundle_id,
                            flags,
                            ofp.OFP_VERSION,
                            op.msg_type,
                            inner,
                            x,
                        )
                    )
                parts.append(body)
                x += 1
                if not i % SEND_CHUNK:
                    sent = sent and dp.send(b"".join(parts))
                    parts = []
            if not plain:
                parts.append(encode.bundle_ctrl(bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, x, flags))
            parts.append(encode.barrier_request(barrier_xid))
            sent = sent and dp.send(b"".join(parts))
        t_sent = time.monotonic() - t0
        n_flow = sum(1 for op in ops if op.msg_type == ofp.OFPT_FLOW_MOD)
        n_meter = sum(1 for op in ops if op.msg_type == ofp.OFPT_METER_MOD)
        with self._cond:
            self._stats.bundles_sent += 0 if plain else 1
            self._stats.flow_mods_sent += n_flow
            self._stats.meter_mods_sent += n_meter
            self._stats.group_mods_sent += len(ops) - n_flow - n_meter
        ok = sent and waiter.done.wait(BARRIER_TIMEOUT + len(ops) / 5000) and not waiter.broken
        with self._cond:
            errors = self._bundle_errors
            self._bundle_range = None
            self._bundle_ops = []
            self._bundle_errors = []
            self._waiters.pop(barrier_xid, None)
            self._stats.last_bundle_seconds = time.monotonic() - t0
            self._stats.last_send_seconds = t_sent
        if self.on_bundle is not None:
            try:
                self.on_bundle(self.datapath_id, time.monotonic() - t0, len(ops), bool(ok) and not errors)
            except Exception:
                log.exception("dp %016x: on_bundle callback failed", self.datapath_id)
        if not ok:
            log.warning(
                "dp %016x: no barrier reply for a bundle of %d messages (connection lost?)",
                self.datapath_id,
                len(ops),
            )
            return False
        if errors:
            log.error(
                "dp %016x: bundle of %d messages failed (%d errors); will resync",
                self.datapath_id,
                len(ops),
                len(errors),
            )
            return False
        log.debug(
            "dp %016x: bundle of %d messages in %.3fs", self.datapath_id, len(ops), time.monotonic() - t0
        )
        return True

    def _on_raw(self, dp: Any, xid: int, w: _Waiter, buf: bytes) -> None:
        """A raw flow-stats reply (os-ken receive thread)."""
        w.entries.append(buf)
        if not ofwire.MP_HDR.unpack_from(buf)[5] & ofp.OFPMPF_REPLY_MORE:
            w.done.set()

    def _flow_entries(self, parts: list[Any], desired: list[Flow], snap: _Snapshot) -> Iterable[Any]:
        """Flow entries of a dump that need decoding, as os-ken OFPFlowStats.

        Fast path for raw replies: an entry whose bytes are exactly what we send for a desired flow (match
        fields compared as a set: OVS orders them its own way) is that flow; it goes straight into `snap`
        without os-ken's parser or decode (together ~5k entries/s). Entries OVS re-encodes (move with NXM
        headers, ...) take the slow path.
        """
        expected: dict[tuple[Any, ...], Flow] | None = None
        for part in parts:
            if not isinstance(part, bytes):  # parsed by os-ken (raw sinks not installed)
                yield from part if isinstance(part, list) else (part,)
                continue
            off, end = ofwire.MP_HDR.size, len(part)
            if off < end and expected is None:  # built on the first entry: an empty switch needs none
                enc = self._enc
                expected = {}
                for f in desired:
                    body = enc.flow_body(f, encode.ADD)
                    expected[ofwire.canonical_key(f.table, f.priority, f.cookie, body, 40)] = f
            unpack = ofwire.FLOW_STATS.unpack_from
            while off < end:
                length, table, _, _, prio, _, _, _, cookie, packets, nbytes = unpack(part, off)
                entry = part[off : off + length]
                key = ofwire.canonical_key(table, prio, cookie, entry, 48)
                assert expected is not None
                hit = expected.get(key)
                if hit is None:
                    moved = ofwire.oxm_moves(key[4])
                    if moved is not None:
                        hit = expected.get(key[:4] + (moved,))
                if hit is not None:
                    k = FlowKey(hit)
                    snap.flows[k] = hit
                    snap.stats[k] = (packets, nbytes)
                else:
                    yield ofpp.OFPFlowStats.parser(part, off)
                off += length

    def _dump(self, timeout: float, dp: Any = None, conn: int | None = None) -> _Snapshot:
        """Dump all flows and groups of the switch and decode them."""
        t0 = time.monotonic()
        with self._cond:
            if dp is None:
                dp, conn = self._dp, self._conn
            if dp is None or conn != self._conn:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
            xid = self._alloc_xids(3)
            wf, wg, wm = _Waiter("flows"), _Waiter("groups"), _Waiter("meters")
            self._waiters[xid], self._waiters[xid + 1], self._waiters[xid + 2] = wf, wg, wm
            sinks = getattr(dp, RAW_SINKS_ATTR, None)
            if sinks is None:
                sinks = {}
                setattr(dp, RAW_SINKS_ATTR, sinks)
            sinks[xid] = lambda buf, w=wf: self._on_raw(dp, xid, w, buf)
        req = ofpp.OFPFlowStatsRequest(
            encode.DATAPATH_DESC, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, ofpp.OFPMatch()
        )
        req.set_xid(xid)
        greq = ofpp.OFPGroupDescStatsRequest(encode.DATAPATH_DESC, 0)
        greq.set_xid(xid + 1)
        mreq = ofpp.OFPMeterConfigStatsRequest(encode.DATAPATH_DESC, 0, ofp.OFPM_ALL)
        mreq.set_xid(xid + 2)
        dp.send(encode.osken_bytes(req) + encode.osken_bytes(greq) + encode.osken_bytes(mreq))
        deadline = time.monotonic() + timeout
        try:
            for w in (wf, wg, wm):
                if (
                    not w.done.wait(max(0.0, deadline - time.monotonic()))
                    or w.broken
                    or (w.errors and w is not wm)
                ):
                    raise SyncError(
                        f"dump of {self.datapath_id:016x} failed: "
                        f"{w.errors or ('connection lost' if w.broken else 'timeout')}"
                    )
            if wm.errors:  # a switch without meters: it holds none (and flows using one will fail loudly)
                log.warning("dp %016x: meter config request failed: %s", self.datapath_id, wm.errors)
                wm.entries.clear()
        finally:
            sinks.pop(xid, None)
            with self._cond:
                self._waiters.pop(xid, None)
                self._waiters.pop(xid + 1, None)
                self._waiters.pop(xid + 2, None)
        snap = _Snapshot({}, {}, [], [], {})
        with self._lock:
            desired = list(self._desired.values())
        slow = 0
        for e in self._flow_entries(wf.entries, desired, snap):
            slow += 1
            try:
                f = decode_flow(e)
            except DecodeError as err:
                if is_ours(e.cookie):
                    log.warning(
                        "dp %016x: our cookie %#x on an entry no Flow describes: %s",
                        self.datapath_id,
                        e.cookie,
                        err,
                    )
                snap.raw_flows.append(e)
                continue
            k = FlowKey(f)
            snap.flows[k] = f
            snap.stats[k] = (e.packet_count, e.byte_count)
        for e in wg.entries:
            try:
                g = decode_group(e)
            except DecodeError:
                snap.raw_groups.append(e)
                continue
            snap.groups[g.group_id] = g
        for e in wm.entries:
            try:
                snap.meters[e.meter_id] = decode_meter(e)
            except DecodeError:
                snap.raw_meters.append(e)
        with self._lock:
            self._stats.last_dump_seconds = time.monotonic() - t0
            self._stats.last_dump_entries = len(snap.flows) + len(snap.raw_flows)
            self._stats.last_dump_slow = slow
        return snap


def _refers_to_groups(item: Item | str) -> bool:
    from flows.actions import GroupAction

    return isinstance(item, Group) and any(
        isinstance(a, GroupAction) for b in item.buckets for a in b.actions
    )


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
                if dp is not None:
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
            eng = self._engines.get(dp.id)
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
