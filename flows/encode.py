"""Flow / Group values to OpenFlow 1.3 bytes (with Nicira and ONF bundle extensions).

Two paths that must agree byte for byte (tests check it):

- ``to_osken_*``: builds os-ken parser objects (slow, ~10k/s; the reference, and the fallback for
  anything the struct path does not know);
- ``Encoder``: encodes with ``struct`` directly, caches each distinct Flow's bytes once, and patches
  xid / command / bundle id into cached templates, so a bundle of N changes is one large bytes buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from typing import Any

from os_ken.ofproto import nicira_ext as nx
from os_ken.ofproto import ofproto_common, ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from flows import fields, pipeline
from flows.actions import (
    CT,
    NAT,
    Action,
    Conjunction,
    Controller,
    CtClear,
    DecTtl,
    Goto,
    GroupAction,
    Meter,
    Move,
    Output,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    WriteMetadata,
)
from flows.flow import Flow, Group, MeterEntry

#: semantic commands; flows map them to ADD / MODIFY_STRICT / DELETE_STRICT, groups to ADD/MODIFY/DELETE.
#: Note: an OpenFlow 1.1+ MODIFY never changes a flow's cookie (OVS keeps the old one); to replace a
#: flow whose cookie changed, send ADD with the same table/priority/match: it replaces the entry.
ADD = "add"
MODIFY = "modify"
DELETE = "delete"
COMMANDS = (ADD, MODIFY, DELETE)

_FLOW_CMD = {ADD: ofp.OFPFC_ADD, MODIFY: ofp.OFPFC_MODIFY_STRICT, DELETE: ofp.OFPFC_DELETE_STRICT}
_GROUP_CMD = {ADD: ofp.OFPGC_ADD, MODIFY: ofp.OFPGC_MODIFY, DELETE: ofp.OFPGC_DELETE}
GROUP_TYPE_CODES = {
    "all": ofp.OFPGT_ALL,
    "select": ofp.OFPGT_SELECT,
    "indirect": ofp.OFPGT_INDIRECT,
    "ff": ofp.OFPGT_FF,
}

#: bundle flags: all-or-nothing, applied in order
BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED

DATAPATH_DESC = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)
_NX_IN_PORT = 0xFFF8  # 16-bit OFPP_IN_PORT used by Nicira resubmit
_NAT_SRC, _NAT_DST, _NAT_PERSISTENT, _NAT_RANDOM = 1, 2, 4, 16


class EncodeError(ValueError):
    """A value the encoder cannot put on the wire."""


def _ct_zone(a: CT) -> tuple[str, int]:
    if isinstance(a.zone, str):
        return a.zone, nx.ofs_nbits(0, 15)
    return "", a.zone


def _nat_flags(n: NAT) -> int:
    f = {"": 0, "src": _NAT_SRC, "dst": _NAT_DST}[n.kind]
    return f | (_NAT_PERSISTENT if n.persistent else 0) | (_NAT_RANDOM if n.random else 0)


# ---------------------------------------------------------------------------------------------------------
# Reference path: os-ken objects
# ---------------------------------------------------------------------------------------------------------


def to_osken_action(a: Action) -> Any:
    """The os-ken action object for action value `a`."""
    if isinstance(a, Output):
        return ofpp.OFPActionOutput(a.port, a.max_len)
    if isinstance(a, SetField):
        if a.mask is None:
            return ofpp.OFPActionSetField(**{a.field: a.value})
        return ofpp.NXActionRegLoad2(dst=a.field, value=a.value, mask=a.mask)
    if isinstance(a, Move):
        return ofpp.NXActionRegMove(
            src_field=a.src, dst_field=a.dst, n_bits=a.n_bits, src_ofs=a.src_ofs, dst_ofs=a.dst_ofs
        )
    if isinstance(a, GroupAction):
        return ofpp.OFPActionGroup(a.group_id)
    if isinstance(a, PushVlan):
        return ofpp.OFPActionPushVlan(a.ethertype)
    if isinstance(a, PopVlan):
        return ofpp.OFPActionPopVlan()
    if isinstance(a, DecTtl):
        return ofpp.OFPActionDecNwTtl()
    if isinstance(a, CtClear):
        return ofpp.NXActionCTClear()
    if isinstance(a, Resubmit):
        return ofpp.NXActionResubmitTable(in_port=_NX_IN_PORT, table_id=pipeline.table_of(a.stage))
    if isinstance(a, Conjunction):
        return ofpp.NXActionConjunction(clause=a.clause - 1, n_clauses=a.n_clauses, id_=a.conj_id)
    if isinstance(a, Controller):
        return ofpp.NXActionController(max_len=a.max_len, controller_id=a.controller_id, reason=a.reason)
    if isinstance(a, CT):
        zone_src, zone_ofs_nbits = _ct_zone(a)
        nested = []
        if a.nat is not None:
            n = a.nat
            v6 = ":" in n.ip_min
            nested.append(
                ofpp.NXActionNAT(
                    flags=_nat_flags(n),
                    range_ipv4_min=n.ip_min if not v6 else "",
                    range_ipv4_max=n.ip_max if not v6 else "",
                    range_ipv6_min=n.ip_min if v6 else "",
                    range_ipv6_max=n.ip_max if v6 else "",
                    range_proto_min=n.port_min,
                    range_proto_max=n.port_max,
                )
            )
        nested += [to_osken_action(x) for x in a.exec]
        table = nx.NX_CT_RECIRC_NONE if a.table is None else pipeline.table_of(a.table)
        flags = (nx.NX_CT_F_COMMIT if a.commit else 0) | (nx.NX_CT_F_FORCE if a.force else 0)
        return ofpp.NXActionCT(
            flags=flags,
            zone_src=zone_src,
            zone_ofs_nbits=zone_ofs_nbits,
            recirc_table=table,
            alg=a.alg,
            actions=nested,
        )
    raise EncodeError(f"{a!r} is not an apply-action")


def to_osken_instructions(actions: Sequence[Action]) -> list[Any]:
    """os-ken instruction objects for a Flow's canonical action tuple."""
    out: list[Any] = []
    apply = []
    tail: list[Any] = []
    for a in actions:
        if isinstance(a, Meter):
            out.append(ofpp.OFPInstructionMeter(a.meter_id, ofp.OFPIT_METER))
        elif isinstance(a, WriteMetadata):
            tail.append(ofpp.OFPInstructionWriteMetadata(a.value, a.mask))
        elif isinstance(a, Goto):
            tail.append(ofpp.OFPInstructionGotoTable(pipeline.table_of(a.stage)))
        else:
            apply.append(to_osken_action(a))
    if apply:
        out.append(ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply))
    return out + tail


def to_osken_match(flow: Flow) -> Any:
    """os-ken OFPMatch in the Flow's canonical field order."""
    return ofpp.OFPMatch(_ordered_fields=[(n, v if m is None else (v, m)) for n, v, m in flow.match])


def to_osken_flow_mod(flow: Flow, command: str = ADD, xid: int = 0, datapath: Any = DATAPATH_DESC) -> Any:
    """The os-ken OFPFlowMod for `flow` (DELETE: strict, any out_port/group, no instructions)."""
    if command == DELETE:
        msg = ofpp.OFPFlowMod(
            datapath,
            cookie=0,
            cookie_mask=0,
            table_id=flow.table,
            command=ofp.OFPFC_DELETE_STRICT,
            priority=flow.priority,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=to_osken_match(flow),
            instructions=[],
        )
    else:
        msg = ofpp.OFPFlowMod(
            datapath,
            cookie=flow.cookie,
            table_id=flow.table,
            command=_FLOW_CMD[command],
            priority=flow.priority,
            match=to_osken_match(flow),
            instructions=to_osken_instructions(flow.actions),
        )
    msg.set_xid(xid)
    return msg


def to_osken_group_mod(group: Group, command: str = ADD, xid: int = 0, datapath: Any = DATAPATH_DESC) -> Any:
    """The os-ken OFPGroupMod for `group` (DELETE carries no buckets)."""
    buckets = (
        []
        if command == DELETE
        else [
            ofpp.OFPBucket(b.weight, b.watch_port, b.watch_group, [to_osken_action(a) for a in b.actions])
            for b in group.buckets
        ]
    )
    msg = ofpp.OFPGroupMod(
        datapath, _GROUP_CMD[command], GROUP_TYPE_CODES[group.type], group.group_id, buckets
    )
    msg.set_xid(xid)
    return msg


_METER_CMD = {ADD: ofp.OFPMC_ADD, MODIFY: ofp.OFPMC_MODIFY, DELETE: ofp.OFPMC_DELETE}


def to_osken_meter_mod(
    meter: MeterEntry, command: str = ADD, xid: int = 0, datapath: Any = DATAPATH_DESC
) -> Any:
    """The os-ken OFPMeterMod for `meter`: packets/s or kbit/s, one drop band (DELETE carries no band)."""
    flags = (ofp.OFPMF_KBPS if meter.kbps else ofp.OFPMF_PKTPS) | (ofp.OFPMF_BURST if meter.burst else 0)
    bands = [] if command == DELETE else [ofpp.OFPMeterBandDrop(rate=meter.rate, burst_size=meter.burst)]
    msg = ofpp.OFPMeterMod(
        datapath,
        command=_METER_CMD[command],
        flags=0 if command == DELETE else flags,
        meter_id=meter.meter_id,
        bands=bands,
    )
    msg.set_xid(xid)
    return msg


def meter_mod_body(meter: MeterEntry, command: str = ADD) -> bytes:
    """Meter-mod body (after the header), serialized by os-ken (meters are few: no cache, no fast path)."""
    return osken_bytes(to_osken_meter_mod(meter, command))[8:]


def osken_bytes(msg: Any) -> bytes:
    """Serialize an os-ken message object."""
    msg.serialize()
    return bytes(msg.buf)


# ---------------------------------------------------------------------------------------------------------
# Fast path: struct
# ---------------------------------------------------------------------------------------------------------

_HDR = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
_NX_HDR = struct.Struct("!HHIH")  # type, len, experimenter, subtype
_NX_ID = ofproto_common.NX_EXPERIMENTER_ID
_ONF_ID = ofproto_common.ONF_EXPERIMENTER_ID
_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")  # header + experimenter + exp_type + bundle_id, type, flags
_BUNDLE_ADD = struct.Struct("!BBHIIII2xHBBHI")  # outer header+exp+bundle_id+flags, inner header
_VERSION = ofp.OFP_VERSION
_T_EXPERIMENTER = ofp.OFPT_EXPERIMENTER
_T_FLOW_MOD = ofp.OFPT_FLOW_MOD
_T_GROUP_MOD = ofp.OFPT_GROUP_MOD


def _pad8(n: int) -> int:
    return (n + 7) & ~7


@cache
def _oxm_header(name: str, masked: bool) -> tuple[int, int]:
    """(OXM/NXM 32-bit header, value size) for a field; experimenter OXMs are not supported here."""
    n, t = fields.field_info(name)
    if isinstance(n, tuple):
        raise EncodeError(f"experimenter OXM field {name} has no struct encoding")
    size = t.size
    return (n << 9) | (int(masked) << 8) | (size * 2 if masked else size), size


@lru_cache(maxsize=1 << 18)
def _tlv(name: str, value: Any, mask: Any) -> bytes:
    """One OXM TLV (header, value, mask)."""
    header, _ = _oxm_header(name, mask is not None)
    out = struct.pack("!I", header) + fields.value_bytes(name, value)
    if mask is not None:
        out += fields.value_bytes(name, mask)
    return out


#: zero padding by length (0..7)
_PADS = tuple(bytes(i) for i in range(8))
_MATCH_HDR = struct.Struct("!HH")
_OXM = ofp.OFPMT_OXM

#: bounded value caches shared by every Encoder of the process (cleared when full). Keys are the values
#: themselves (a Flow's match entry tuple, a Flow's action tuple), so a hit is an equal value: it has the
#: same bytes. Most flows of a pipeline share their instructions and many of their match fields.
CACHE_LIMIT = 1 << 17
_MATCH_TLVS: dict[tuple[str, Any, Any], bytes] = {}
_INSTRUCTIONS: dict[tuple[Action, ...], bytes] = {}


#: (field, masked) -> (packed OXM header, field size if an integer field else 0)
_TLV_PREFIX: dict[tuple[str, bool], tuple[bytes, int]] = {}


def _tlv_prefix(name: str, masked: bool) -> tuple[bytes, int]:
    spec = _TLV_PREFIX.get((name, masked))
    if spec is None:
        header, size = _oxm_header(name, masked)
        spec = _TLV_PREFIX[(name, masked)] = (
            struct.pack("!I", header),
            size if fields.kind(name) == "int" else 0,
        )
    return spec


def _entry_tlv(entry: tuple[str, Any, Any]) -> bytes:
    """TLV of one match entry (name, value, mask), through the process-wide cache: what _tlv gives."""
    tlv = _MATCH_TLVS.get(entry)
    if tlv is None:
        name, value, mask = entry
        prefix, size = _tlv_prefix(name, mask is not None)
        if size and type(value) is int and (mask is None or type(mask) is int):
            tlv = prefix + value.to_bytes(size, "big")
            if mask is not None:
                tlv += mask.to_bytes(size, "big")
        else:
            tlv = _tlv(name, value, mask)
        if len(_MATCH_TLVS) >= CACHE_LIMIT:
            _MATCH_TLVS.clear()
        _MATCH_TLVS[entry] = tlv
    return tlv


def _match_bytes(flow: Flow) -> bytes:
    get = _MATCH_TLVS.get
    parts = []
    for entry in flow.match:
        tlv = get(entry)
        if tlv is None:
            tlv = _entry_tlv(entry)
        parts.append(tlv)
    body = b"".join(parts)
    length = 4 + len(body)
    return _MATCH_HDR.pack(_OXM, length) + body + _PADS[-length & 7]


def _nx(subtype: int, body: bytes, min_body: int = 0) -> bytes:
    """A Nicira action: header + body, zero padded (to at least `min_body`) to a multiple of 8."""
    body = body + bytes(max(0, min_body - len(body)))
    length = _pad8(10 + len(body))
    return _NX_HDR.pack(0xFFFF, length, _NX_ID, subtype) + body + bytes(length - 10 - len(body))


def _nat_bytes(n: NAT) -> bytes:
    present = 0
    opt = b""
    v6 = ":" in n.ip_min
    for value, v4bit, v6bit in (
        (n.ip_min, nx.NX_NAT_RANGE_IPV4_MIN, nx.NX_NAT_RANGE_IPV6_MIN),
        (n.ip_max, nx.NX_NAT_RANGE_IPV4_MAX, nx.NX_NAT_RANGE_IPV6_MAX),
    ):
        if value:
            if v6:
                present |= v6bit
                opt += fields.field_info("ipv6_src")[1].from_user(value)
            else:
                present |= v4bit
                opt += fields.field_info("ipv4_src")[1].from_user(value)
    if n.port_min is not None:
        present |= nx.NX_NAT_RANGE_PROTO_MIN
        opt += struct.pack("!H", n.port_min)
    if n.port_max is not None:
        present |= nx.NX_NAT_RANGE_PROTO_MAX
        opt += struct.pack("!H", n.port_max)
    return _nx(nx.NXAST_NAT, struct.pack("!2xHH", _nat_flags(n), present) + opt)


def _set_field_bytes(name: str, value: Any) -> bytes:
    """An unmasked OFPAT_SET_FIELD: what action_bytes(SetField(name, value)) gives."""
    tlv = _entry_tlv((name, value, None))
    length = _pad8(4 + len(tlv))
    return struct.pack("!HH", ofp.OFPAT_SET_FIELD, length) + tlv + bytes(length - 4 - len(tlv))


@lru_cache(maxsize=1 << 16)
def action_bytes(a: Action) -> bytes:
    """Wire bytes of one apply-action (cached per distinct action value)."""
    if isinstance(a, Output):
        return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16, a.port, a.max_len)
    if isinstance(a, SetField):
        if a.mask is None:
            tlv = _tlv(a.field, a.value, None)
            length = _pad8(4 + len(tlv))
            return struct.pack("!HH", ofp.OFPAT_SET_FIELD, length) + tlv + bytes(length - 4 - len(tlv))
        return _nx(nx.NXAST_REG_LOAD2, _tlv(a.field, a.value, a.mask), min_body=14)
    if isinstance(a, Move):
        src, _ = _oxm_header(a.src, False)
        dst, _ = _oxm_header(a.dst, False)
        return _nx(nx.NXAST_REG_MOVE, struct.pack("!HHHII", a.n_bits, a.src_ofs, a.dst_ofs, src, dst))
    if isinstance(a, GroupAction):
        return struct.pack("!HHI", ofp.OFPAT_GROUP, 8, a.group_id)
    if isinstance(a, PushVlan):
        return struct.pack("!HHH2x", ofp.OFPAT_PUSH_VLAN, 8, a.ethertype)
    if isinstance(a, PopVlan):
        return struct.pack("!HH4x", ofp.OFPAT_POP_VLAN, 8)
    if isinstance(a, DecTtl):
        return struct.pack("!HH4x", ofp.OFPAT_DEC_NW_TTL, 8)
    if isinstance(a, CtClear):
        return _nx(nx.NXAST_CT_CLEAR, bytes(6))
    if isinstance(a, Resubmit):
        return _nx(nx.NXAST_RESUBMIT_TABLE, struct.pack("!HB3x", _NX_IN_PORT, pipeline.table_of(a.stage)))
    if isinstance(a, Conjunction):
        return _nx(nx.NXAST_CONJUNCTION, struct.pack("!BBI", a.clause - 1, a.n_clauses, a.conj_id))
    if isinstance(a, Controller):
        return _nx(nx.NXAST_CONTROLLER, struct.pack("!HHBx", a.max_len, a.controller_id, a.reason))
    if isinstance(a, CT):
        if isinstance(a.zone, str):
            zone_src = struct.pack("!I", _oxm_header(a.zone, False)[0])
            zone_ofs_nbits = nx.ofs_nbits(0, 15)
        else:
            zone_src, zone_ofs_nbits = bytes(4), a.zone
        nested = (_nat_bytes(a.nat) if a.nat is not None else b"") + b"".join(action_bytes(x) for x in a.exec)
        table = nx.NX_CT_RECIRC_NONE if a.table is None else pipeline.table_of(a.table)
        flags = (nx.NX_CT_F_COMMIT if a.commit else 0) | (nx.NX_CT_F_FORCE if a.force else 0)
        return _nx(
            nx.NXAST_CT, struct.pack("!H4sHB3xH", flags, zone_src, zone_ofs_nbits, table, a.alg) + nested
        )
    raise EncodeError(f"{a!r} is not an apply-action")


def instructions_bytes(actions: Sequence[Action]) -> bytes:
    """Wire bytes of a Flow's instructions (meter, apply-actions, write-metadata, goto), cached per
    distinct action tuple (process-wide, bounded)."""
    if type(actions) is not tuple:
        return _encode_instructions(actions)
    body = _INSTRUCTIONS.get(actions)
    if body is None:
        body = _encode_instructions(actions)
        if len(_INSTRUCTIONS) >= CACHE_LIMIT:
            _INSTRUCTIONS.clear()
        _INSTRUCTIONS[actions] = body
    return body


_OUTPUT = struct.Struct("!HHIH6x")
_T_OUTPUT = ofp.OFPAT_OUTPUT


def _encode_instructions(actions: Sequence[Action]) -> bytes:
    """Wire bytes of a Flow's instructions, not cached."""
    head = b""
    apply: list[bytes] = []
    tail = b""
    for a in actions:
        if type(a) is Output:  # the most common action, cheaper packed than looked up
            apply.append(_OUTPUT.pack(_T_OUTPUT, 16, a.port, a.max_len))
        elif type(a) is SetField and a.mask is None:
            apply.append(_set_field_bytes(a.field, a.value))
        elif isinstance(a, Meter):
            head = struct.pack("!HHI", ofp.OFPIT_METER, 8, a.meter_id)
        elif isinstance(a, WriteMetadata):
            tail = struct.pack("!HH4xQQ", ofp.OFPIT_WRITE_METADATA, 24, a.value, a.mask) + tail
        elif isinstance(a, Goto):
            tail += struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, _table(a.stage))
        else:
            apply.append(action_bytes(a))
    if apply:
        body = b"".join(apply)
        head += struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(body)) + body
    return head + tail


_TABLES: dict[str, int] = {}


def _table(stage: str) -> int:
    t = _TABLES.get(stage)
    if t is None:
        t = _TABLES[stage] = pipeline.table_of(stage)
    return t


_NO_BUFFER = ofp.OFP_NO_BUFFER


def flow_mod_body(flow: Flow, command: str = ADD) -> bytes:
    """A flow-mod without its 8-byte header (struct path; the flow-mod itself is not cached here)."""
    match = _match_bytes(flow)
    table = _TABLES.get(flow.stage)
    if table is None:
        table = _table(flow.stage)
    if command == DELETE:
        return (
            _FLOW_MOD.pack(
                0,
                0,
                table,
                ofp.OFPFC_DELETE_STRICT,
                0,
                0,
                flow.priority,
                _NO_BUFFER,
                ofp.OFPP_ANY,
                ofp.OFPG_ANY,
                0,
            )
            + match
        )
    actions = flow.actions
    instructions = _INSTRUCTIONS.get(actions)
    if instructions is None:
        instructions = instructions_bytes(actions)
    return (
        _FLOW_MOD.pack(flow.cookie, 0, table, _FLOW_CMD[command], 0, 0, flow.priority, _NO_BUFFER, 0, 0, 0)
        + match
        + instructions
    )


def stats_key(flow: Flow) -> tuple[Any, ...]:
    """What controller/southbound/ofwire.canonical_key gives for this flow's ADD body (table, priority,
    cookie, its match TLVs sorted, its instructions), built from the per-field and per-action caches without
    assembling the body: a resync recognises a dump's entries by it. EncodeError for shapes without a
    struct encoding (the caller falls back to the body)."""
    get = _MATCH_TLVS.get
    tlvs = []
    for entry in flow.match:
        tlv = get(entry)
        if tlv is None:
            tlv = _entry_tlv(entry)
        tlvs.append(tlv)
    tlvs.sort()
    table = _TABLES.get(flow.stage)
    if table is None:
        table = _table(flow.stage)
    actions = flow.actions
    instructions = _INSTRUCTIONS.get(actions)
    if instructions is None:
        instructions = instructions_bytes(actions)
    return (table, flow.priority, flow.cookie, b"".join(tlvs), instructions)


def flow_instructions(flow: Flow) -> bytes:
    """A flow's instructions as the flow-mod carries them, from the per-action cache."""
    instructions = _INSTRUCTIONS.get(flow.actions)
    if instructions is None:
        instructions = instructions_bytes(flow.actions)
    return instructions


def group_mod_body(group: Group, command: str = ADD) -> bytes:
    """A group-mod without its 8-byte header."""
    parts = [struct.pack("!HBxI", _GROUP_CMD[command], GROUP_TYPE_CODES[group.type], group.group_id)]
    if command != DELETE:
        for b in group.buckets:
            acts = b"".join(action_bytes(a) for a in b.actions)
            parts.append(struct.pack("!HHII4x", 16 + len(acts), b.weight, b.watch_port, b.watch_group) + acts)
    return b"".join(parts)


def _with_header(msg_type: int, body: bytes, xid: int) -> bytes:
    return _HDR.pack(_VERSION, msg_type, 8 + len(body), xid) + body


class Encoder:
    """Caches each distinct Flow's / Group's encoded body once and builds messages and bundles from it.

    Pure: holds only the cache. Not thread-safe (one per sender).
    """

    def __init__(self) -> None:
        self._flows: dict[str, dict[Flow, bytes]] = {c: {} for c in COMMANDS}
        self._groups: dict[str, dict[Group, bytes]] = {c: {} for c in COMMANDS}

    def __len__(self) -> int:
        return sum(len(c) for c in self._flows.values()) + sum(len(c) for c in self._groups.values())

    def clear(self) -> None:
        """Drop every cached encoding."""
        for c in self._flows.values():
            c.clear()
        for g in self._groups.values():
            g.clear()

    def discard(self, item: Flow | Group) -> None:
        """Forget the cached encodings of one flow or group (e.g. after it was deleted for good)."""
        caches = self._flows if isinstance(item, Flow) else self._groups
        for c in caches.values():
            c.pop(item, None)  # type: ignore[arg-type]

    def flow_body(self, flow: Flow, command: str = ADD) -> bytes:
        """Cached flow-mod body (everything after the header)."""
        cache = self._flows[command]
        body = cache.get(flow)
        if body is None:
            if command == MODIFY and flow in self._flows[ADD]:
                add = self._flows[ADD][flow]
                body = add[:17] + bytes((ofp.OFPFC_MODIFY_STRICT,)) + add[18:]
            else:
                try:
                    body = flow_mod_body(flow, command)
                except EncodeError:  # shapes without a struct encoding: os-ken's serializer
                    body = osken_bytes(to_osken_flow_mod(flow, command))[8:]
            cache[flow] = body
        return body

    def group_body(self, group: Group, command: str = ADD) -> bytes:
        """Cached group-mod body."""
        cache = self._groups[command]
        body = cache.get(group)
        if body is None:
            body = cache[group] = group_mod_body(group, command)
        return body

    def body(self, item: Flow | Group, command: str = ADD) -> tuple[int, bytes]:
        """(OpenFlow message type, cached body) for a flow or group change."""
        if isinstance(item, Flow):
            return _T_FLOW_MOD, self.flow_body(item, command)
        if isinstance(item, Group):
            return _T_GROUP_MOD, self.group_body(item, command)
        raise EncodeError(f"cannot encode {item!r}")

    def flow_mod(self, flow: Flow, command: str = ADD, xid: int = 0) -> bytes:
        """One complete flow-mod message."""
        return _with_header(_T_FLOW_MOD, self.flow_body(flow, command), xid)

    def group_mod(self, group: Group, command: str = ADD, xid: int = 0) -> bytes:
        """One complete group-mod message."""
        return _with_header(_T_GROUP_MOD, self.group_body(group, command), xid)

    def messages(self, ops: Iterable[tuple[str, Flow | Group]], xid: int = 0) -> tuple[bytes, int]:
        """Plain (unbundled) messages for (command, item) ops, xids counting up from `xid`.

        Returns (buffer, next free xid).
        """
        parts: list[bytes] = []
        pack = _HDR.pack
        for command, item in ops:
            msg_type, body = self.body(item, command)
            parts.append(pack(_VERSION, msg_type, 8 + len(body), xid))
            parts.append(body)
            xid = (xid + 1) & 0xFFFFFFFF
        return b"".join(parts), xid

    def bundle(
        self, ops: Iterable[tuple[str, Flow | Group]], bundle_id: int, xid: int = 0, flags: int = BUNDLE_FLAGS
    ) -> tuple[bytes, int]:
        """One buffer: bundle OPEN, one ADD_MESSAGE per (command, item), COMMIT.

        xids: OPEN gets `xid`, op i gets xid+1+i (so an error names the op), COMMIT the next one.
        Returns (buffer, next free xid).
        """
        parts = [bundle_ctrl(bundle_id, ofp.ONF_BCT_OPEN_REQUEST, xid, flags)]
        xid = (xid + 1) & 0xFFFFFFFF
        pack = _BUNDLE_ADD.pack
        for command, item in ops:
            msg_type, body = self.body(item, command)
            inner = 8 + len(body)
            parts.append(
                pack(
                    _VERSION,
                    _T_EXPERIMENTER,
                    24 + inner,
                    xid,
                    _ONF_ID,
                    ofp.ONF_ET_BUNDLE_ADD_MESSAGE,
                    bundle_id,
                    flags,
                    _VERSION,
                    msg_type,
                    inner,
                    xid,
                )
            )
            parts.append(body)
            xid = (xid + 1) & 0xFFFFFFFF
        parts.append(bundle_ctrl(bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, xid, flags))
        return b"".join(parts), (xid + 1) & 0xFFFFFFFF


def bundle_ctrl(bundle_id: int, ctrl_type: int, xid: int, flags: int = BUNDLE_FLAGS) -> bytes:
    """An ONF bundle control message (OPEN / CLOSE / COMMIT / DISCARD request)."""
    return _BUNDLE_CTRL.pack(
        _VERSION, _T_EXPERIMENTER, 24, xid, _ONF_ID, ofp.ONF_ET_BUNDLE_CONTROL, bundle_id, ctrl_type, flags
    )


def delete_by_cookie(cookie: int, cookie_mask: int, xid: int = 0) -> bytes:
    """Non-strict DELETE of every flow in every table whose cookie matches under `cookie_mask`
    (e.g. all flows of one owner: flows.cookie.OWNER_MASK)."""
    body = _FLOW_MOD.pack(
        cookie,
        cookie_mask,
        ofp.OFPTT_ALL,
        ofp.OFPFC_DELETE,
        0,
        0,
        0,
        ofp.OFP_NO_BUFFER,
        ofp.OFPP_ANY,
        ofp.OFPG_ANY,
        0,
    ) + struct.pack("!HH4x", ofp.OFPMT_OXM, 4)
    return _with_header(_T_FLOW_MOD, body, xid)


def flow_stats_request(xid: int = 0, cookie: int = 0, cookie_mask: int = 0) -> bytes:
    """OFPMP_FLOW request for all tables (optionally only cookies matching under `cookie_mask`)."""
    body = struct.pack(
        "!HH4xB3xII4xQQHH4x",
        ofp.OFPMP_FLOW,
        0,
        ofp.OFPTT_ALL,
        ofp.OFPP_ANY,
        ofp.OFPG_ANY,
        cookie,
        cookie_mask,
        ofp.OFPMT_OXM,
        4,
    )
    return _with_header(ofp.OFPT_MULTIPART_REQUEST, body, xid)


def group_desc_request(xid: int = 0) -> bytes:
    """OFPMP_GROUP_DESC request (every group with its buckets)."""
    return _with_header(ofp.OFPT_MULTIPART_REQUEST, struct.pack("!HH4x", ofp.OFPMP_GROUP_DESC, 0), xid)


def barrier_request(xid: int) -> bytes:
    """An OFPT_BARRIER_REQUEST."""
    return _HDR.pack(_VERSION, ofp.OFPT_BARRIER_REQUEST, 8, xid)
