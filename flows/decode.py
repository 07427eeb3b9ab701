"""os-ken flow entries (flow-stats replies, parsed flow-mods) back into Flow / Group values.

Sync reads what a switch holds, decodes it, and compares by value with what it wants. Anything we
never emit (write-actions, unknown tables, resubmit to a port) raises DecodeError: such a flow is
not ours, whatever its cookie says.
"""

from __future__ import annotations

from typing import Any

from os_ken.ofproto import nicira_ext as nx
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from flows import pipeline
from flows.actions import (
    CONTROLLER,
    CT,
    NAT,
    REASON_ACTION,
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
    load,
)
from flows.encode import GROUP_TYPE_CODES
from flows.flow import Bucket, Flow, FlowError, Group, MeterEntry

_GROUP_TYPES = {v: k for k, v in GROUP_TYPE_CODES.items()}
_NX_IN_PORT = 0xFFF8


class DecodeError(ValueError):
    """A switch entry that no Flow value describes."""


def _stage_name(table_id: int) -> str:
    st = pipeline.stage_at(table_id)
    if st is None:
        raise DecodeError(f"table {table_id} is no declared stage")
    return st.name


#: os-ken's names of NXM headers whose OXM name differs by more than the ``_nxm`` suffix
_NXM_NAMES = {"nd_target": "ipv6_nd_target", "nd_sll": "ipv6_nd_sll", "nd_tll": "ipv6_nd_tll"}


def _field(name: str) -> str:
    """Our (OXM) name for a field os-ken parsed from an NXM header: OVS reports reg_move / reg_load
    with NXM_OF_ETH_SRC-style headers, which os-ken names ``eth_src_nxm`` (and NXM_NX_ND_TARGET
    ``nd_target``)."""
    name = name.removesuffix("_nxm")
    return _NXM_NAMES.get(name, name)


def _nat(a: Any) -> NAT:
    kind = "src" if a.flags & 1 else "dst" if a.flags & 2 else ""
    ip_min = a.range_ipv4_min or a.range_ipv6_min or ""
    ip_max = a.range_ipv4_max or a.range_ipv6_max or ""
    return NAT(
        kind,
        ip_min,
        ip_max,
        a.range_proto_min,
        a.range_proto_max,
        persistent=bool(a.flags & 4),
        random=bool(a.flags & 16),
    )


def decode_action(a: Any) -> Action:
    """Our action value for one os-ken action object."""
    if isinstance(a, ofpp.OFPActionOutput):
        if a.port == CONTROLLER:  # OVS reports controller(reason=action,id=0) as output:CONTROLLER
            return Controller(REASON_ACTION, a.max_len, 0)
        return Output(a.port, a.max_len)
    if isinstance(a, ofpp.OFPActionSetField):
        if isinstance(a.value, tuple):
            return SetField(a.key, a.value[0], a.value[1])
        return SetField(a.key, a.value)
    if isinstance(a, ofpp.NXActionRegLoad2):
        return SetField(_field(a.dst), a.value, a.mask)
    if isinstance(a, ofpp.NXActionRegLoad):
        start, n_bits = a.ofs_nbits >> 6, (a.ofs_nbits & 0x3F) + 1
        return load(_field(a.dst), a.value, start, start + n_bits - 1)
    if isinstance(a, ofpp.NXActionRegMove):
        return Move(_field(a.src_field), _field(a.dst_field), a.n_bits, a.src_ofs, a.dst_ofs)
    if isinstance(a, ofpp.OFPActionGroup):
        return GroupAction(a.group_id)
    if isinstance(a, ofpp.OFPActionPushVlan):
        return PushVlan(a.ethertype)
    if isinstance(a, ofpp.OFPActionPopVlan):
        return PopVlan()
    if isinstance(a, (ofpp.OFPActionDecNwTtl, ofpp.NXActionDecTtl)):
        return DecTtl()
    if isinstance(a, ofpp.NXActionCTClear):
        return CtClear()
    if isinstance(a, ofpp.NXActionResubmitTable):
        if a.in_port != _NX_IN_PORT:
            raise DecodeError(f"resubmit with in_port {a.in_port} is not ours")
        return Resubmit(_stage_name(a.table_id))
    if isinstance(a, ofpp.NXActionConjunction):
        return Conjunction(a.id, a.clause + 1, a.n_clauses)
    if isinstance(a, ofpp.NXActionController):
        return Controller(a.reason, a.max_len, a.controller_id)
    if isinstance(a, ofpp.NXActionCT):
        if a.zone_src:
            if a.zone_ofs_nbits != nx.ofs_nbits(0, 15):
                raise DecodeError(f"ct zone from {a.zone_src} bits {a.zone_ofs_nbits:#x} is not ours")
            zone: int | str = _field(a.zone_src)
        else:
            zone = a.zone_ofs_nbits
        nat = None
        exec_: list[SetField] = []
        for x in a.actions:
            if isinstance(x, ofpp.NXActionNAT):
                nat = _nat(x)
            else:
                d = decode_action(x)
                if not isinstance(d, SetField):
                    raise DecodeError(f"ct exec action {x!r} is not ours")
                exec_.append(d)
        table = None if a.recirc_table == nx.NX_CT_RECIRC_NONE else _stage_name(a.recirc_table)
        return CT(
            commit=bool(a.flags & nx.NX_CT_F_COMMIT),
            zone=zone,
            table=table,
            nat=nat,
            exec=tuple(exec_),
            force=bool(a.flags & nx.NX_CT_F_FORCE),
            alg=a.alg,
        )
    raise DecodeError(f"action {type(a).__name__} is not one we emit")


def decode_instructions(instructions: list[Any]) -> list[Action]:
    """Our canonical action list for os-ken instruction objects."""
    out: list[Action] = []
    for inst in instructions:
        if isinstance(inst, ofpp.OFPInstructionActions):
            if inst.type != ofp.OFPIT_APPLY_ACTIONS:
                raise DecodeError("write/clear-actions instructions are not ours")
            out += [decode_action(a) for a in inst.actions]
        elif isinstance(inst, ofpp.OFPInstructionGotoTable):
            out.append(Goto(_stage_name(inst.table_id)))
        elif isinstance(inst, ofpp.OFPInstructionWriteMetadata):
            out.append(WriteMetadata(inst.metadata, inst.metadata_mask))
        elif isinstance(inst, ofpp.OFPInstructionMeter):
            out.append(Meter(inst.meter_id))
        else:
            raise DecodeError(f"instruction {type(inst).__name__} is not one we emit")
    return out


_XXREG3_PARTS = ("reg12", "reg13", "reg14", "reg15")  # most significant first


def _fold_xxreg3(match: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """OVS reports a match on xxreg3 (NEXT_HOP6) as matches on reg12..reg15 in OpenFlow 1.3 (and leaves out a
    part it does not match): fold them back into the one 128-bit field our flows use (no flow of ours matches
    reg12..reg15 on their own: flows/pipeline.py's register map)."""
    parts = {name: value for name, value in match if name in _XXREG3_PARTS}
    if not parts:
        return match
    value = mask = 0
    for i, name in enumerate(_XXREG3_PARTS):
        shift = 32 * (3 - i)
        if name not in parts:
            continue
        v = parts[name]
        v, m = v if isinstance(v, tuple) else (v, 0xFFFFFFFF)
        value |= v << shift
        mask |= m << shift
    full = (1 << 128) - 1
    rest = [(name, v) for name, v in match if name not in _XXREG3_PARTS]
    return [*rest, ("xxreg3", value if mask == full else (value, mask))]


def decode_flow(entry: Any) -> Flow:
    """The Flow for an os-ken OFPFlowStats (or parsed OFPFlowMod): table_id, priority, cookie, match,
    instructions. Raises DecodeError if no Flow value describes it."""
    stage = _stage_name(entry.table_id)
    match = _fold_xxreg3(list(entry.match.items()))
    try:
        return Flow(stage, entry.priority, match, decode_instructions(entry.instructions), entry.cookie)
    except (FlowError, ValueError) as e:
        if isinstance(e, DecodeError):
            raise
        raise DecodeError(f"entry in {stage} breaks the declaration: {e}") from None


def decode_group(entry: Any) -> Group:
    """The Group for an os-ken OFPGroupDescStats (or parsed OFPGroupMod)."""
    try:
        gtype = _GROUP_TYPES[entry.type]
    except KeyError:
        raise DecodeError(f"unknown group type {entry.type}") from None
    buckets = tuple(
        Bucket(tuple(decode_action(a) for a in b.actions), b.weight, b.watch_port, b.watch_group)
        for b in entry.buckets
    )
    try:
        return Group(entry.group_id, gtype, buckets)
    except (FlowError, ValueError) as e:
        raise DecodeError(f"group {entry.group_id}: {e}") from None


def decode_meter(entry: Any) -> MeterEntry:
    """The MeterEntry for an os-ken OFPMeterConfigStats (or parsed OFPMeterMod): packets/s or kbit/s, one
    drop band; anything else (both units or none, several bands, DSCP remarking) is no MeterEntry."""
    kbps = bool(entry.flags & ofp.OFPMF_KBPS)
    if kbps == bool(entry.flags & ofp.OFPMF_PKTPS):
        raise DecodeError(f"meter {entry.meter_id}: not in packets/s or kbit/s (flags {entry.flags:#x})")
    if len(entry.bands) != 1 or not isinstance(entry.bands[0], ofpp.OFPMeterBandDrop):
        raise DecodeError(f"meter {entry.meter_id}: not one drop band ({entry.bands})")
    band = entry.bands[0]
    burst = band.burst_size if entry.flags & ofp.OFPMF_BURST else 0
    try:
        return MeterEntry(entry.meter_id, band.rate, burst, kbps)
    except FlowError as e:
        raise DecodeError(str(e)) from None
