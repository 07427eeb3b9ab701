"""OpenFlow to one switch connection for the sync engine: plan operations as messages, bundles, barriers,
errors mapped back to the operation that caused them, and flow / group / meter dumps decoded.

One Transport per connection (a reconnect makes a new one); the engine (sync.py) owns it and hands it
the replies os-ken receives (`on_message`). Bodies come from the engine's encoder (flows/encode.py, cached
per Flow / Group), framing from ofwire.

Bundles: OPEN, one ADD_MESSAGE per operation (xids counting up, so an error names the operation), COMMIT,
then a barrier, written in chunks of SEND_CHUNK messages while the rest is still being encoded. OVS
reports a bad message of a bundle at commit (an error with that message's xid, then OFPBFC_MSG_FAILED for
the commit) and applies nothing. Meter-mods go the same way unbundled (OVS takes none in a bundle).
Deletes are DELETE_STRICT carrying the entry's own cookie with a full cookie mask, so a delete never hits
an entry we did not see.

Dumps: each flow-stats reply is recognised as it arrives, on the engine's thread, while the rest are
still coming (the request can also be split per table: DUMP_TABLES). Flow-stats replies are taken as raw bytes (ofapp hands them over before
os-ken parses them, which runs at ~7k entries/s). An entry whose bytes are what OVS reports for a desired
flow (Recognizer: our match fields in OVS's order, reg_move field headers in NXM spelling, timeouts and
flags 0) is that flow without decoding; anything else goes through os-ken's parser and flows/decode.py
(an entry with a timeout or flags, which no Flow has, is kept as undecodable: the resync replaces it).
Those expected bytes (ExpectedIndex) are the caller's when it keeps them (the engine does, patched with
its deltas: sync.py), else built on the dump's first entry.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import queue
import random
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller import latency
from controller.southbound import ofwire
from controller.southbound.plan import (
    ADD,
    DELETE,
    MODIFY,
    FlowKey,
    Installed,
    Op,
    RawFlow,
    RawGroup,
    RawMeter,
    ZoneFlush,
)
from flows import encode
from flows.cookie import CookieRegistry, is_ours
from flows.decode import DecodeError, decode_flow, decode_group, decode_meter
from flows.flow import Flow, Group, MeterEntry
from flows.format import format_flow, format_group, format_meter

log = logging.getLogger(__name__)

#: Nicira vendor message subtype: flush one conntrack zone (struct nx_zone_id: 6 zero bytes, then the zone), OVS 2.10+
NXT_CT_FLUSH_ZONE = 29

assert (ADD, MODIFY, DELETE) == (encode.ADD, encode.MODIFY, encode.DELETE), "plan and encoder commands differ"

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
#: the flow-stats requests of a dump, one per entry (a table id, or OFPTT_ALL), sent in one write. One for all
#: tables: asking table by table (range(254): 254 is OVS's hidden internal table, which a dump of all tables
#: leaves out too) let OVS send a table's replies while building the next one's, but its whole dump of 100k
#: flows costs it ~0.18 s of CPU, the split saved nothing measurable and cost ~20 ms on a small switch
#: (BENCHMARKS.md, bench_resync_e2e.py --per-table)
DUMP_TABLES: tuple[int, ...] = (ofp.OFPTT_ALL,)


class SyncError(RuntimeError):
    """A switch that is not connected, did not answer, or rejected a request."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


@dataclass(frozen=True, slots=True)
class Sent:
    """What sending one step of a plan did."""

    ok: bool  # confirmed by the barrier with no error
    written: bool  # the messages went out on this connection (False: it was already closed)
    seconds: float = 0.0  # first byte to barrier reply (or giving up)
    write_seconds: float = 0.0  # encoding and writing
    flow_mods: int = 0
    group_mods: int = 0
    meter_mods: int = 0
    errors: tuple[str, ...] = ()


@dataclass
class _Waiter:
    """A request in flight: collects multipart bodies / errors until done or the connection drops."""

    kind: str  # "flows", "groups", "meters", "barrier"
    done: threading.Event = field(default_factory=threading.Event)
    entries: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    broken: bool = False
    #: a flow dump's replies as they arrive (raw bytes, or (xid, flags, entries) parsed by os-ken); None
    #: in it wakes the reader to look at `broken` / `errors`
    parts: queue.SimpleQueue[Any] | None = None

    def wake(self) -> None:
        self.done.set()
        if self.parts is not None:
            self.parts.put(None)


def describe_raw_flow(e: Any) -> str:
    """An os-ken OFPFlowStats no Flow describes, as text."""
    return (
        f"cookie={e.cookie:#x}, table={e.table_id}, priority={e.priority},"
        f"{','.join(f'{k}={v}' for k, v in e.match.items())} instructions={e.instructions}"
    )


def describe(item: Any, registry: CookieRegistry | None = None) -> str:
    """An operation's subject as one line (ovs-ofctl syntax where there is a value)."""
    if isinstance(item, Flow):
        return format_flow(item, registry)
    if isinstance(item, MeterEntry):
        return format_meter(item)
    if isinstance(item, Group):
        return format_group(item)
    return str(item)


#: the order OVS lists match fields in a flow-stats entry (lib/nx-match.c nx_put_raw: metadata, Ethernet,
#: VLAN, L3 / ARP, L4, tunnel, registers, mark, conntrack, OpenFlow metadata). Only speed depends on it: an
#: entry in another order is re-ordered and looked up again (Recognizer.reordered counts them).
_OVS_MATCH_ORDER = (
    "in_port",
    "eth_src",
    "eth_dst",
    "eth_type",
    "vlan_vid",
    "vlan_pcp",
    "ipv4_src",
    "ipv4_dst",
    "ipv6_src",
    "ipv6_dst",
    "ip_dscp",
    "ip_ecn",
    "ipv6_flabel",
    "ip_proto",
    "tcp_src",
    "tcp_dst",
    "tcp_flags",
    "udp_src",
    "udp_dst",
    "sctp_src",
    "sctp_dst",
    "icmpv4_type",
    "icmpv4_code",
    "icmpv6_type",
    "icmpv6_code",
    "ipv6_nd_target",
    "ipv6_nd_sll",
    "ipv6_nd_tll",
    "arp_op",
    "arp_spa",
    "arp_tpa",
    "arp_sha",
    "arp_tha",
    "tunnel_id",
    "tun_ipv4_src",
    "tun_ipv4_dst",
    *(f"reg{i}" for i in range(16)),
    "pkt_mark",
    "ct_state",
    "ct_zone",
    "ct_mark",
    "ct_label",
    "metadata",
)


def _match_ranks() -> dict[int, int]:
    """OXM class and field (a TLV header's first 23 bits) -> position in _OVS_MATCH_ORDER."""
    ranks = {}
    for i, name in enumerate(_OVS_MATCH_ORDER):
        try:
            header, _ = encode._oxm_header(name, False)
        except (encode.EncodeError, KeyError, ValueError):
            continue
        ranks[header >> 9] = i
    return ranks


_RANKS = _match_ranks()


def _rank(tlv: bytes) -> int:
    field_id = int.from_bytes(tlv[:3], "big") >> 1
    return _RANKS.get(field_id, 1 << 24 | field_id)


#: the part of a flow-stats entry after its length and table: priority, idle / hard timeouts, flags,
#: padding, cookie (offsets 12-32; duration and counters left out)
_ENTRY_HEAD = struct.Struct("!HHHH4xQ")
_COUNTERS = struct.Struct("!QQ")


class ExpectedIndex:
    """The bytes a switch reports for each desired flow (see Recognizer), per table: table -> entry bytes
    (priority, timeouts, flags, cookie, match TLVs in OVS's order, instructions with reg_move in NXM
    spelling) -> the flow's key. Built once from a desired state (`build`) and kept up to date by
    `patch` with the keys a delta changed, so that a resync only dumps and looks up (the engine keeps one,
    sync.py). Not thread-safe: its owner serialises use."""

    __slots__ = ("by_table", "where", "_perms", "_reported", "_tables")

    def __init__(self) -> None:
        self.by_table: dict[int, dict[bytes, FlowKey]] = {}
        self.where: dict[FlowKey, tuple[int, bytes]] = {}  # what patch removes
        self._perms: dict[tuple[str, ...], tuple[int, ...] | None] = {}  # None: already in OVS's order
        self._reported: dict[bytes, bytes] = {}  # our instructions -> as OVS reports them (NXM reg_move)
        self._tables: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.where)

    @classmethod
    def build(cls, desired: Mapping[FlowKey, Flow], enc: encode.Encoder) -> ExpectedIndex:
        """The index of `desired` (its own key objects as values)."""
        idx = cls()
        idx._add(desired.items(), enc)
        return idx

    def patch(self, keys: Iterable[FlowKey], desired: Mapping[FlowKey, Flow], enc: encode.Encoder) -> None:
        """Make the index that of `desired`, given that only the flows under `keys` may differ from those
        it was built or last patched for."""
        by_table, where = self.by_table, self.where
        add = []
        for fk in keys:
            old = where.pop(fk, None)
            if old is not None:
                d = by_table[old[0]]
                if d.get(old[1]) == fk:
                    del d[old[1]]
            f = desired.get(fk)
            if f is not None:
                add.append((fk, f))
        self._add(add, enc)

    def _add(self, flows: Iterable[tuple[FlowKey, Flow]], enc: encode.Encoder) -> None:
        by_table, where, perms, reported, tables = (
            self.by_table,
            self.where,
            self._perms,
            self._reported,
            self._tables,
        )
        head, match_hdr, pads = _ENTRY_HEAD.pack, encode._MATCH_HDR.pack, encode._PADS
        tlv_of, entry_tlv, instructions_of = (
            encode._MATCH_TLVS.get,
            encode._entry_tlv,
            encode.flow_instructions,
        )
        if len(reported) >= encode.CACHE_LIMIT:
            reported.clear()
        clock = time.perf_counter
        ran = clock()
        for i, (fk, f) in enumerate(flows):
            if not i & 1023 and clock() - ran > YIELD_S:
                time.sleep(0)  # ~1 s for 240k flows: let a thread waiting for the GIL (an API call) go first
                ran = clock()
            try:
                ours = instructions_of(f)
                instructions = reported.get(ours)
                if instructions is None:
                    instructions = reported[ours] = ofwire.nxm_moves(ours) or ours
                match = f.match
                tlvs = [tlv_of(e) or entry_tlv(e) for e in match]
            except encode.EncodeError:  # no struct encoding: from the flow-mod itself
                body = enc.flow_body(f, encode.ADD)
                key = Recognizer._ordered(body, 40, len(body))
            else:
                if len(tlvs) < 2:
                    m = tlvs[0] if tlvs else b""
                else:
                    names = tuple([e[0] for e in match])
                    perm = perms.get(names, ())
                    if perm == ():
                        order = tuple(sorted(range(len(tlvs)), key=lambda i: _rank(tlvs[i])))
                        perm = perms[names] = None if order == tuple(range(len(tlvs))) else order
                    m = b"".join(tlvs if perm is None else [tlvs[i] for i in perm])
                n = 4 + len(m)
                key = head(f.priority, 0, 0, 0, f.cookie) + match_hdr(1, n) + m + pads[-n & 7] + instructions
            table = tables.get(f.stage)
            if table is None:
                table = tables[f.stage] = f.table
            d = by_table.get(table)
            if d is None:
                d = by_table[table] = {}
            d[key] = fk
            where[fk] = (table, key)


class Recognizer:
    """Flow-stats entries recognised by their bytes as desired flows, reply by reply (see the module
    docstring); what it does not recognise is handed back parsed by os-ken for decoding.

    An entry is `desired`'s flow when its table, priority, cookie, match TLVs (as a set) and instructions
    are those of the flow-mod we send for it and its timeouts and flags are 0 as we send them; counters
    and duration do not matter. The expected bytes (ExpectedIndex) are those of `expected` when given (the
    engine's index, which must be that of `desired`), else built on the first entry (an empty switch needs
    none) from the encoder's per-field and per-action caches, match fields in the order OVS reports them
    (_OVS_MATCH_ORDER), so a recognised entry costs a slice and a dict lookup. An entry that misses is
    re-ordered (and its reg_move headers respelled) and looked up once more. reg_move's field headers
    are expected in NXM spelling where the field has one: OVS reports them so whatever we sent. `have` collects the
    recognised flows (under the engine's own keys when `desired` is a mapping: an adopted entry then shares
    the desired key object, and the plan's comparisons stop at identity)."""

    def __init__(
        self,
        desired: Iterable[Flow] | Mapping[FlowKey, Flow],
        enc: encode.Encoder,
        expected: ExpectedIndex | None = None,
    ) -> None:
        self.desired: Mapping[FlowKey, Flow] = (
            desired if isinstance(desired, Mapping) else {FlowKey(f): f for f in desired}
        )
        self.enc = enc
        self.have = Installed()
        # table -> entry bytes -> key
        self.expected: dict[int, dict[bytes, FlowKey]] | None = (
            None if expected is None else expected.by_table
        )

    def _build(self) -> dict[int, dict[bytes, FlowKey]]:
        self.expected = ExpectedIndex.build(self.desired, self.enc).by_table
        return self.expected

    @staticmethod
    def _ordered(buf: bytes, start: int, stop: int) -> bytes:
        """The head and body of a flow-mod body (start=40) or flow-stats entry (start=48) with its match
        TLVs in _OVS_MATCH_ORDER and reg_move headers spelled NXM: the expected bytes."""
        if start == 40:  # flow-mod: cookie at 0, priority at 14; our timeouts and flags are 0
            cookie = int.from_bytes(buf[0:8], "big")
            prio = (buf[14] << 8) | buf[15]
            head = _ENTRY_HEAD.pack(prio, 0, 0, 0, cookie)
        else:
            head = buf[start - 36 : start - 16]
        mlen = (buf[start + 2] << 8) | buf[start + 3]
        end = start + mlen
        off = start + 4
        tlvs = []
        while off < end:
            n = 4 + buf[off + 3]
            tlvs.append(buf[off : off + n])
            off += n
        tlvs.sort(key=_rank)
        instructions = buf[start + ((mlen + 7) & ~7) : stop]
        instructions = ofwire.nxm_moves(instructions) or instructions
        return head + buf[start : start + 4] + b"".join(tlvs) + encode._PADS[-mlen & 7] + instructions

    def feed(self, part: bytes, slow: list[Any]) -> None:
        """One raw flow-stats reply: recognised entries into `have`, the others parsed onto `slow`."""
        off, end = ofwire.MP_HDR.size, len(part)
        if off >= end:
            return
        by_table = self.expected
        if by_table is None:
            by_table = self._build()
        desired, flows, counters = self.desired, self.have.flows, self.have.counters
        counts = _COUNTERS.unpack_from
        empty: dict[bytes, FlowKey] = {}
        while off < end:
            length = (part[off] << 8) | part[off + 1]
            stop = off + length
            d = by_table.get(part[off + 2], empty)
            k = d.get(part[off + 12 : off + 32] + part[off + 48 : stop])
            if k is None and d:
                k = d.get(self._ordered(part, off + 48, stop))
                if k is not None:
                    self.have.reordered += 1
            if k is not None:
                flows[k] = desired[k]
                counters[k] = counts(part, off + 32)
            else:
                slow.append(ofpp.OFPFlowStats.parser(part, off))
            off = stop


#: counters of an entry that never matched a packet (most of a big switch's)
_NO_COUNTS = bytes(16)
#: a long scan gives the GIL away (time.sleep(0)) after this much work, so a request arriving meanwhile is
#: not queued behind a whole dump's loop (CPython hands the GIL over only every 5 ms otherwise)
YIELD_S = 0.002


@dataclass(slots=True)
class CounterScan:
    """One flow-stats dump read for its counters only (Transport.counters): no entry decoded.

    `now`: identity -> the 16 counter bytes (packets, bytes) of every entry that matched something, the
    identity being hash(table, priority, match bytes) (what OpenFlow identifies a flow by); `moved`:
    (cookie, counters at `last` or None, counters now) of the entries whose counters differ from `last`;
    `owners`: the cookie's app and owner-hash bytes (flows.cookie: bytes 1-5 of the 8) of every entry,
    those that never matched included (an owner with any flow left keeps its series); `entries`: how many
    entries the dump held."""

    now: dict[int, bytes] = field(default_factory=dict)
    moved: list[tuple[int, bytes | None, bytes]] = field(default_factory=list)
    owners: set[bytes] = field(default_factory=set)
    entries: int = 0

    def feed(self, part: bytes, last: Mapping[int, bytes]) -> None:
        """One raw flow-stats reply: ofp_flow_stats entries, read by offset (table at 2, priority at 12,
        cookie at 24, packets and bytes at 32, the match from 48: its length at 50)."""
        off, end = ofwire.MP_HDR.size, len(part)
        now, moved, add_owner, no_counts = self.now, self.moved, self.owners.add, _NO_COUNTS
        n = 0
        while off < end:
            stop = off + ((part[off] << 8) | part[off + 1])
            n += 1
            add_owner(part[off + 25 : off + 30])
            counts = part[off + 32 : off + 48]
            if counts != no_counts:
                mend = off + 48 + ((part[off + 50] << 8) | part[off + 51])
                ident = hash(part[off + 2 : off + 3] + part[off + 12 : off + 14] + part[off + 48 : mend])
                now[ident] = counts
                old = last.get(ident)
                if old != counts:
                    moved.append((int.from_bytes(part[off + 24 : off + 32], "big"), old, counts))
            off = stop
        self.entries += n

    def feed_parsed(self, entries: Iterable[Any], last: Mapping[int, bytes]) -> None:
        """Entries os-ken parsed (raw sinks not installed): the same, the match's fields as its identity."""
        for e in entries:
            self.entries += 1
            self.owners.add(e.cookie.to_bytes(8, "big")[1:6])
            counts = _COUNTERS.pack(e.packet_count, e.byte_count)
            if counts == _NO_COUNTS:
                continue
            ident = hash((e.table_id, e.priority, tuple(sorted(e.match.items(), key=repr))))
            self.now[ident] = counts
            old = last.get(ident)
            if old != counts:
                self.moved.append((e.cookie, old, counts))


class Transport:
    """OpenFlow requests to one connected switch (os-ken Datapath `dp`); see the module docstring.

    Thread-safe: the engine's thread sends and dumps, os-ken's thread delivers replies. Once closed
    (the connection died or was replaced), sends return not written and dumps raise SyncError.
    """

    def __init__(
        self, dp: Any, datapath_id: int, encoder: encode.Encoder, registry: CookieRegistry | None = None
    ) -> None:
        self.dp = dp
        self.datapath_id = datapath_id
        self.registry = registry
        self._enc = encoder
        self._lock = threading.Lock()
        self._closed = False
        self._waiters: dict[int, _Waiter] = {}
        self._bundle_range: tuple[int, int] | None = None  # xids of the bundle in flight
        self._bundle_ops: Sequence[Op] = ()
        self._bundle_errors: list[str] = []
        self._xid = _XID_BASE + random.randrange(1 << 24)
        self._bundle_ids = itertools.count(random.randrange(1 << 16))

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def close(self) -> None:
        """The connection is gone (or no longer ours): fail whatever waits for a reply."""
        with self._lock:
            self._closed = True
            for w in self._waiters.values():
                w.broken = True
                w.wake()
            self._waiters.clear()

    def _alloc_xids(self, n: int) -> int:
        """Under the lock: `n` consecutive xids (never wrapping inside the range)."""
        if self._xid + n >= 1 << 32:
            self._xid = _XID_BASE
        start = self._xid
        self._xid += n
        return start

    # --- replies (os-ken's thread) ---------------------------------------------------------------------

    def on_message(self, msg: Any) -> bool:
        """A reply from the switch (barrier, multipart, error, bundle control); True if it is an error."""
        with self._lock:
            xid = msg.xid
            if isinstance(msg, ofpp.OFPErrorMsg):
                self._on_error(xid, msg)
                return True
            w = self._waiters.get(xid)
            if w is None:
                return False
            if w.parts is not None and isinstance(msg, ofpp.OFPFlowStatsReply):
                w.parts.put((xid, msg.flags, list(msg.body)))
                if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                    del self._waiters[xid]
            elif isinstance(
                msg, (ofpp.OFPFlowStatsReply, ofpp.OFPGroupDescStatsReply, ofpp.OFPMeterConfigStatsReply)
            ):
                w.entries.extend(msg.body)
                if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                    del self._waiters[xid]
                    w.done.set()
            elif isinstance(msg, ofpp.OFPAggregateStatsReply):
                w.entries.append(msg.body)
                del self._waiters[xid]
                w.done.set()
            elif isinstance(msg, ofpp.OFPBarrierReply):
                del self._waiters[xid]
                w.done.set()
                if latency.ON:
                    latency.stamp("s.reply", f"{self.datapath_id:x}")
            return False

    def _on_error(self, xid: int, msg: Any) -> None:
        """Under the lock: an error for a message of the bundle in flight names its operation; any other
        one fails the request waiting on that xid."""
        what = ofwire.error_name(msg)
        rng = self._bundle_range
        if rng is not None and rng[0] <= xid <= rng[1]:
            if len(self._bundle_errors) >= MAX_LOGGED_ERRORS:  # a bundle of 50k bad flows: not 50k lines
                self._bundle_errors.append(what)
                return
            i = xid - rng[0] - 1
            if 0 <= i < len(self._bundle_ops):
                op = self._bundle_ops[i]
                detail = f"{what} for {op.command}: {describe(op.item, self.registry).strip()}"
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
            w.wake()
        log.error("dp %016x: OpenFlow error %s (xid %#x)", self.datapath_id, what, xid)

    # --- sending ---------------------------------------------------------------------------------------

    def _delete_body(self, flow: Flow) -> bytes:
        """DELETE_STRICT body restricted to the entry's own cookie (full cookie mask)."""
        return ofwire.COOKIES.pack(flow.cookie, _ALL_COOKIE) + self._enc.flow_body(flow, encode.DELETE)[16:]

    def _message(self, command: str, item: Any) -> tuple[int, bytes]:
        """(message type, body) of an operation on anything but a Flow (and a Flow's subclass)."""
        if isinstance(item, Flow):
            return ofp.OFPT_FLOW_MOD, self._delete_body(item) if command == DELETE else self._enc.flow_body(
                item, command
            )
        if isinstance(item, Group):
            return ofp.OFPT_GROUP_MOD, self._enc.group_body(item, command)
        if isinstance(item, MeterEntry):
            return ofp.OFPT_METER_MOD, encode.meter_mod_body(item, command)
        if isinstance(item, RawFlow) and command == DELETE:
            msg = ofpp.OFPFlowMod(
                encode.DATAPATH_DESC,
                cookie=item.cookie,
                cookie_mask=_ALL_COOKIE,
                table_id=item.table_id,
                command=ofp.OFPFC_DELETE_STRICT,
                priority=item.priority,
                out_port=ofp.OFPP_ANY,
                out_group=ofp.OFPG_ANY,
                match=item.match,
                instructions=[],
            )
            msg.set_xid(0)
            return ofp.OFPT_FLOW_MOD, encode.osken_bytes(msg)[8:]
        if isinstance(item, RawGroup) and command == DELETE:
            return ofp.OFPT_GROUP_MOD, struct.pack("!HBxI", ofp.OFPGC_DELETE, item.type, item.group_id)
        if isinstance(item, ZoneFlush):  # Nicira's NXT_CT_FLUSH_ZONE (os-ken has no class for it)
            return ofp.OFPT_EXPERIMENTER, struct.pack(
                "!II6xH", ofproto_common.NX_EXPERIMENTER_ID, NXT_CT_FLUSH_ZONE, item.zone
            )
        raise ValueError(f"no message for {command} of {item!r}")

    def send(self, ops: Sequence[Op], bundled: bool = True, ahead: Sequence[Op] = ()) -> Sent:
        """Send `ops` as one atomic ordered bundle plus a barrier and wait for it; ok once the barrier
        confirms no error. bundled=False: the same messages unbundled, in order (meter-mods). `ahead`:
        unbundled messages (meter adds the bundle's flows use) written before the bundle in the same write,
        confirmed by the same barrier: OVS applies them in order, so the bundle's flows find them, and an
        error of one fails the send (the bundle's flows that use a refused meter fail its commit)."""
        t0 = time.monotonic()
        dp = self.dp
        n = len(ahead) + len(ops)
        with self._lock:
            if self._closed:
                return Sent(False, False)
            xid = self._alloc_xids(n + 3)
            bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
            barrier_xid = xid + n + 2
            waiter = _Waiter("barrier")
            self._waiters[barrier_xid] = waiter
            self._bundle_range = (xid, xid + n + 1)
            self._bundle_ops = [*ahead, *ops] if ahead else ops
            self._bundle_errors = []
        flags = encode.BUNDLE_FLAGS
        parts: list[bytes] = []
        n_ahead_meter = 0
        for x, (command, item) in enumerate(ahead, xid + 1):
            msg_type, body = self._message(command, item)
            n_ahead_meter += msg_type == ofp.OFPT_METER_MOD
            parts += [struct.pack("!BBHI", ofp.OFP_VERSION, msg_type, 8 + len(body), x), body]
        if bundled:
            parts.append(encode.bundle_ctrl(bundle_id, ofp.ONF_BCT_OPEN_REQUEST, xid, flags))
        pack = ofwire.BUNDLE_ADD.pack
        flow_body, delete_body, message = self._enc.flow_body, self._delete_body, self._message
        x = xid + 1 + len(ahead)
        onf, add = ofproto_common.ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_ADD_MESSAGE
        flow_mod, meter_mod, delete = ofp.OFPT_FLOW_MOD, ofp.OFPT_METER_MOD, DELETE
        n_flow = n_meter = n_other = 0
        sent = True
        # Large writes, but streamed in chunks: the switch validates the first messages of the bundle
        # while the rest are still being encoded.
        with gc_paused():
            for i, (command, item) in enumerate(ops, 1):
                if type(item) is Flow:  # the hot path: tens of thousands of flow adds
                    msg_type = flow_mod
                    n_flow += 1
                    body = flow_body(item, command) if command != delete else delete_body(item)
                else:
                    msg_type, body = message(command, item)
                    if msg_type == flow_mod:
                        n_flow += 1
                    elif msg_type == meter_mod:
                        n_meter += 1
                    elif msg_type == ofp.OFPT_EXPERIMENTER:
                        n_other += 1
                inner = 8 + len(body)
                if bundled:
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
                            msg_type,
                            inner,
                            x,
                        )
                    )
                else:
                    parts.append(struct.pack("!BBHI", ofp.OFP_VERSION, msg_type, inner, x))
                parts.append(body)
                x += 1
                if not i % SEND_CHUNK:
                    sent = sent and dp.send(b"".join(parts))
                    parts = []
            if bundled:
                parts.append(encode.bundle_ctrl(bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, x, flags))
            parts.append(encode.barrier_request(barrier_xid))
            sent = sent and dp.send(b"".join(parts))
        t_sent = time.monotonic() - t0
        if latency.ON:
            latency.stamp("s.written", f"{self.datapath_id:x}/{len(ops)}")
        ok = sent and waiter.done.wait(BARRIER_TIMEOUT + len(ops) / 5000) and not waiter.broken
        if latency.ON:
            latency.stamp("s.acked", f"{self.datapath_id:x}")
        with self._lock:
            errors = tuple(self._bundle_errors)
            self._bundle_range = None
            self._bundle_ops = ()
            self._bundle_errors = []
            self._waiters.pop(barrier_xid, None)
        seconds = time.monotonic() - t0
        counts = (n_flow, len(ops) - n_flow - n_meter - n_other, n_meter + n_ahead_meter)
        if not ok:
            log.warning(
                "dp %016x: no barrier reply for a bundle of %d messages (connection lost?)",
                self.datapath_id,
                len(ops),
            )
            return Sent(False, True, seconds, t_sent, *counts, errors)
        if errors:
            log.error(
                "dp %016x: bundle of %d messages failed (%d errors); will resync",
                self.datapath_id,
                len(ops),
                len(errors),
            )
            return Sent(False, True, seconds, t_sent, *counts, errors)
        log.debug("dp %016x: bundle of %d messages in %.3fs", self.datapath_id, len(ops), seconds)
        return Sent(True, True, seconds, t_sent, *counts)

    # --- dumps -----------------------------------------------------------------------------------------

    def aggregate(self, timeout: float = DUMP_TIMEOUT) -> tuple[int, int, int]:
        """(packets, bytes, flows) summed over every flow of the switch: one aggregate-stats request, a
        24-byte answer (the switch sums its rules; nothing is encoded per flow). Raises SyncError."""
        w = _Waiter("aggregate")
        with self._lock:
            if self._closed:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
            xid = self._alloc_xids(1)
            self._waiters[xid] = w
        req = ofpp.OFPAggregateStatsRequest(
            encode.DATAPATH_DESC, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, ofpp.OFPMatch()
        )
        req.set_xid(xid)
        try:
            self.dp.send(encode.osken_bytes(req))
            if not w.done.wait(timeout) or w.broken or w.errors or not w.entries:
                raise SyncError(
                    f"aggregate stats of {self.datapath_id:016x} failed: "
                    f"{w.errors or ('connection lost' if w.broken else 'timeout')}"
                )
        finally:
            with self._lock:
                self._waiters.pop(xid, None)
        body = w.entries[0]
        return int(body.packet_count), int(body.byte_count), int(body.flow_count)

    def counters(self, last: Mapping[int, bytes], timeout: float = DUMP_TIMEOUT) -> CounterScan:
        """Dump every flow's counters (one flow-stats request of all tables; no groups, no meters) and read
        them by offset as the replies arrive (CounterScan.feed), against `last` (a previous scan's `now`).
        Gives the GIL away every YIELD_S of work. Raises SyncError."""
        w = _Waiter("flows", parts=queue.SimpleQueue())
        with self._lock:
            if self._closed:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
            xid = self._alloc_xids(1)
            self._waiters[xid] = w
            sinks = getattr(self.dp, RAW_SINKS_ATTR, None)
            if sinks is None:
                sinks = {}
                setattr(self.dp, RAW_SINKS_ATTR, sinks)
            sinks[xid] = w.parts.put  # type: ignore[union-attr]
        req = ofpp.OFPFlowStatsRequest(
            encode.DATAPATH_DESC, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, ofpp.OFPMatch()
        )
        req.set_xid(xid)
        deadline = time.monotonic() + timeout
        scan = CounterScan()
        get, more, clock = w.parts.get, ofp.OFPMPF_REPLY_MORE, time.perf_counter  # type: ignore[union-attr]
        try:
            self.dp.send(encode.osken_bytes(req))
            ran = clock()
            while True:
                try:
                    part = get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise SyncError(f"counters of {self.datapath_id:016x}: timeout") from None
                if part is None:
                    if w.broken or w.errors:
                        raise SyncError(
                            f"counters of {self.datapath_id:016x}: {w.errors or 'connection lost'}"
                        )
                    continue
                if type(part) is bytes:
                    flags = ofwire.MP_HDR.unpack_from(part)[5]
                    scan.feed(part, last)
                else:
                    _, flags, body = part
                    scan.feed_parsed(body, last)
                if not flags & more:
                    return scan
                if clock() - ran > YIELD_S:
                    time.sleep(0)  # let a thread waiting for the GIL (an API call) go first
                    ran = clock()
        finally:
            with self._lock:
                sinks.pop(xid, None)
                self._waiters.pop(xid, None)

    def dump(
        self,
        desired: Iterable[Flow] | Mapping[FlowKey, Flow],
        timeout: float = DUMP_TIMEOUT,
        expected: ExpectedIndex | None = None,
    ) -> tuple[Installed, int]:
        """Dump all flows, groups and meters of the switch and decode them; also how many flow entries
        took the slow path (not byte-equal to one of `desired`). `expected`: the index of `desired`, if
        the caller keeps one (else built here on the first entry). Raises SyncError.

        One flow-stats request per DUMP_TABLES entry (one xid each, all in one write); each reply is
        recognised as it arrives (Recognizer), while the next ones are still on their way."""
        dp = self.dp
        n_tables = len(DUMP_TABLES)
        wf, wg, wm = _Waiter("flows", parts=queue.SimpleQueue()), _Waiter("groups"), _Waiter("meters")
        with self._lock:
            if self._closed:
                raise SyncError(f"datapath {self.datapath_id:016x} is not connected")
            xid = self._alloc_xids(n_tables + 2)
            gxid, mxid = xid + n_tables, xid + n_tables + 1
            for i in range(n_tables):
                self._waiters[xid + i] = wf
            self._waiters[gxid], self._waiters[mxid] = wg, wm
            sinks = getattr(dp, RAW_SINKS_ATTR, None)
            if sinks is None:
                sinks = {}
                setattr(dp, RAW_SINKS_ATTR, sinks)
            put = wf.parts.put  # type: ignore[union-attr]
            for i in range(n_tables):
                sinks[xid + i] = put
        reqs = []
        for i, table in enumerate(DUMP_TABLES):
            req = ofpp.OFPFlowStatsRequest(
                encode.DATAPATH_DESC, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, ofpp.OFPMatch()
            )
            req.set_xid(xid + i)
            reqs.append(encode.osken_bytes(req))
        greq = ofpp.OFPGroupDescStatsRequest(encode.DATAPATH_DESC, 0)
        greq.set_xid(gxid)
        mreq = ofpp.OFPMeterConfigStatsRequest(encode.DATAPATH_DESC, 0, ofp.OFPM_ALL)
        mreq.set_xid(mxid)
        deadline = time.monotonic() + timeout
        rec = Recognizer(desired, self._enc, expected)
        have = rec.have
        slow_entries: list[Any] = []
        try:
            dp.send(b"".join(reqs) + encode.osken_bytes(greq) + encode.osken_bytes(mreq))
            pending = set(range(xid, xid + n_tables))
            get, more = wf.parts.get, ofp.OFPMPF_REPLY_MORE  # type: ignore[union-attr]
            clock = time.perf_counter
            ran = clock()
            with gc_paused():  # ~10^5 keys and tuples: no collections of the whole heap in between
                while pending:
                    try:
                        part = get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        raise SyncError(f"dump of {self.datapath_id:016x} failed: timeout") from None
                    if part is None:  # an error or the connection's end woke us
                        if wf.broken or wf.errors:
                            raise SyncError(
                                f"dump of {self.datapath_id:016x} failed: {wf.errors or 'connection lost'}"
                            )
                        continue
                    if type(part) is bytes:
                        _, _, _, x, _, flags = ofwire.MP_HDR.unpack_from(part)
                        rec.feed(part, slow_entries)
                        if clock() - ran > YIELD_S:
                            time.sleep(0)  # a reply is ~0.3 ms of work; the GIL to whoever waits for it
                            ran = clock()
                    else:  # parsed by os-ken (raw sinks not installed)
                        x, flags, body = part
                        slow_entries.extend(body)
                    if not flags & more:
                        pending.discard(x)
            for w in (wg, wm):
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
            with self._lock:
                for i in range(n_tables):
                    sinks.pop(xid + i, None)
                    self._waiters.pop(xid + i, None)
                self._waiters.pop(gxid, None)
                self._waiters.pop(mxid, None)
        slow = len(slow_entries)
        for e in slow_entries:
            try:
                f = decode_flow(e)
                if e.idle_timeout or e.hard_timeout or e.flags:  # never ours: replaced
                    raise DecodeError(
                        f"idle_timeout={e.idle_timeout} hard_timeout={e.hard_timeout} flags={e.flags:#x}"
                    )
            except DecodeError as err:
                if is_ours(e.cookie):
                    log.warning(
                        "dp %016x: our cookie %#x on an entry no Flow describes: %s",
                        self.datapath_id,
                        e.cookie,
                        err,
                    )
                have.raw_flows.append(
                    RawFlow(e.cookie, e.table_id, e.priority, e.match, describe_raw_flow(e))
                )
                continue
            k = FlowKey(f)
            have.flows[k] = f
            have.counters[k] = (e.packet_count, e.byte_count)
        for e in wg.entries:
            try:
                g = decode_group(e)
            except DecodeError:
                have.raw_groups.append(
                    RawGroup(e.group_id, e.type, f"group_id={e.group_id} type={e.type} buckets={e.buckets}")
                )
                continue
            have.groups[g.group_id] = g
        for e in wm.entries:
            try:
                have.meters[e.meter_id] = decode_meter(e)
            except DecodeError:
                have.raw_meters.append(
                    RawMeter(e.meter_id, f"meter={e.meter_id} flags={e.flags:#x} bands={e.bands}")
                )
        return have, slow
