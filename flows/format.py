"""Flows and groups as `ovs-ofctl dump-flows`-shaped text, with stage names next to table numbers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import netaddr

from flows import pipeline
from flows.actions import (
    CT,
    NAT,
    PORT_NAMES,
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
from flows.cookie import CookieRegistry
from flows.flow import Flow, Group, MeterEntry

#: our (os-ken) field names -> the names ovs-ofctl prints
OVS_NAMES = {
    "eth_src": "dl_src",
    "eth_dst": "dl_dst",
    "eth_type": "dl_type",
    "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst",
    "ip_proto": "nw_proto",
    "tcp_src": "tp_src",
    "tcp_dst": "tp_dst",
    "udp_src": "tp_src",
    "udp_dst": "tp_dst",
    "sctp_src": "tp_src",
    "sctp_dst": "tp_dst",
    "icmpv4_type": "icmp_type",
    "icmpv4_code": "icmp_code",
    "icmpv6_type": "icmp_type",
    "icmpv6_code": "icmp_code",
    "tunnel_id": "tun_id",
    "tun_ipv4_src": "tun_src",
    "tun_ipv4_dst": "tun_dst",
    "ipv6_nd_target": "nd_target",
    "ipv6_nd_sll": "nd_sll",
    "ipv6_nd_tll": "nd_tll",
    "vlan_vid": "vlan_tci",
    "ip_dscp": "nw_tos",
}
#: fields ovs-ofctl prints in decimal (the rest of the integers in hex)
_DECIMAL = {
    "in_port",
    "tcp_src",
    "tcp_dst",
    "udp_src",
    "udp_dst",
    "sctp_src",
    "sctp_dst",
    "ip_proto",
    "arp_op",
    "icmpv4_type",
    "icmpv4_code",
    "icmpv6_type",
    "icmpv6_code",
    "nw_ttl",
    "ip_dscp",
    "conj_id",
}
_CT_FLAGS = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")
_SHORTHAND = {
    (0x0800, None): "ip",
    (0x0800, 6): "tcp",
    (0x0800, 17): "udp",
    (0x0800, 1): "icmp",
    (0x0800, 132): "sctp",
    (0x86DD, None): "ipv6",
    (0x86DD, 6): "tcp6",
    (0x86DD, 17): "udp6",
    (0x86DD, 58): "icmp6",
    (0x0806, None): "arp",
}


def table_label(stage: str) -> str:
    """``N(stage)``."""
    return f"{pipeline.table_of(stage)}({stage})"


def ct_state_text(value: int, mask: int | None = None) -> str:
    """A ct_state as OVS writes it: ``+new+trk`` for 0x21, ``-est+trk`` for 0x20/0x22 (the bits under the
    mask, in OVS's order: new est rel rpl inv trk snat dnat); no bit at all reads ``0``."""
    bits = [
        ("+" if value & (1 << i) else "-") + f
        for i, f in enumerate(_CT_FLAGS)
        if (mask if mask is not None else value) & (1 << i)
    ]
    return "".join(bits) or "0"


def _value(name: str, value: Any, mask: Any) -> str:
    if name == "ct_state":
        return ct_state_text(value, mask) if value or mask else ""
    if isinstance(value, int) and name in _DECIMAL:
        return str(value) if mask is None else f"{value}/{mask:#x}"
    if isinstance(value, int):
        return f"{value:#x}" if mask is None else f"{value:#x}/{mask:#x}"
    if mask is None:
        return str(value)
    cidr = _cidr(value, mask)  # a prefix mask reads better as /len
    return cidr if cidr is not None else f"{value}/{mask}"


def _cidr(value: Any, mask: Any) -> str | None:
    """ADDR/LEN for an address under a prefix: a prefix length, or an IPv4 netmask (also in its host-mask
    spelling, 0.0.0.255 for /24); None for any other mask (IPv6 and MAC masks print as value/mask) or an
    address with bits outside the prefix."""
    try:
        addr = netaddr.IPAddress(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    width = 32 if addr.version == 4 else 128
    if isinstance(mask, str) and mask.isascii() and mask.isdigit():
        mask = int(mask)
    if isinstance(mask, int):
        if not 0 <= mask <= width:
            return None
        prefix = mask
    elif addr.version == 4 and isinstance(mask, str):
        try:
            m = int(netaddr.IPAddress(mask, 4))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            return None
        if not (inv := m ^ 0xFFFFFFFF) & (inv + 1):  # ones then zeros: a netmask
            prefix = 32 - inv.bit_length()
        elif not m & (m + 1):  # zeros then ones: a host mask
            prefix = 32 - m.bit_length()
        else:
            return None
    else:
        return None
    if int(addr) & ((1 << (width - prefix)) - 1):
        return None
    return f"{addr}/{prefix}"


def format_match(flow: Flow) -> str:
    """The match part of a dump-flows line (``tcp,metadata=0x5,nw_dst=10.0.0.0/24``)."""
    m = flow.match_dict()
    parts = []
    eth = m.get("eth_type")
    proto = m.get("ip_proto")
    short = _SHORTHAND.get((eth, proto)) if isinstance(eth, int) else None
    if short is None and isinstance(eth, int):
        short = _SHORTHAND.get((eth, None))
        proto = None
    if short:
        parts.append(short)
    for name, value, mask in flow.match:
        if short and (name == "eth_type" or (name == "ip_proto" and proto is not None)):
            continue
        parts.append(f"{OVS_NAMES.get(name, name)}={_value(name, value, mask)}")
    return ",".join(parts)


def _port(port: int) -> str:
    return PORT_NAMES.get(port, str(port))


def _nat(n: NAT) -> str:
    if not n.kind:
        return "nat"
    rng = n.ip_min if ":" not in n.ip_min else f"[{n.ip_min}]"
    if n.ip_max:
        rng += f"-{n.ip_max}" if ":" not in n.ip_max else f"-[{n.ip_max}]"
    if n.port_min is not None:
        rng += f":{n.port_min}" + (f"-{n.port_max}" if n.port_max is not None else "")
    extra = "".join(f",{f}" for f in ("persistent", "random") if getattr(n, f))
    return f"nat({n.kind}={rng}{extra})"


def format_action(a: Action) -> str:
    """One action the way ovs-ofctl writes it (tables as ``N(stage)``)."""
    if isinstance(a, Output):
        return _port(a.port) if a.port in PORT_NAMES else f"output:{a.port}"
    if isinstance(a, SetField):
        v = _value(a.field, a.value, a.mask)
        return f"set_field:{v}->{OVS_NAMES.get(a.field, a.field)}"
    if isinstance(a, Move):
        return (
            f"move:{a.src}[{a.src_ofs}..{a.src_ofs + a.n_bits - 1}]"
            f"->{a.dst}[{a.dst_ofs}..{a.dst_ofs + a.n_bits - 1}]"
        )
    if isinstance(a, GroupAction):
        return f"group:{a.group_id}"
    if isinstance(a, PushVlan):
        return f"push_vlan:{a.ethertype:#x}"
    if isinstance(a, PopVlan):
        return "pop_vlan"
    if isinstance(a, DecTtl):
        return "dec_ttl"
    if isinstance(a, CtClear):
        return "ct_clear"
    if isinstance(a, Resubmit):
        return f"resubmit(,{table_label(a.stage)})"
    if isinstance(a, Goto):
        return f"goto_table:{table_label(a.stage)}"
    if isinstance(a, WriteMetadata):
        return f"write_metadata:{a.value:#x}" + ("" if a.mask == (1 << 64) - 1 else f"/{a.mask:#x}")
    if isinstance(a, Meter):
        return f"meter:{a.meter_id}"
    if isinstance(a, Conjunction):
        return f"conjunction({a.conj_id},{a.clause}/{a.n_clauses})"
    if isinstance(a, Controller):
        reason = {0: "no_match", 1: "action", 2: "invalid_ttl"}.get(a.reason, str(a.reason))
        return f"controller(reason={reason},max_len={a.max_len},id={a.controller_id})"
    if isinstance(a, CT):
        args = ["commit"] if a.commit else []
        if a.force:
            args.append("force")
        args.append(f"zone={a.zone}[0..15]" if isinstance(a.zone, str) else f"zone={a.zone}")
        if a.table is not None:
            args.append(f"table={table_label(a.table)}")
        if a.alg:
            args.append(f"alg={a.alg}")
        if a.nat is not None:
            args.append(_nat(a.nat))
        if a.exec:
            args.append("exec(" + ",".join(format_action(x) for x in a.exec) + ")")
        return "ct(" + ",".join(args) + ")"
    raise TypeError(f"not an action: {a!r}")


def format_actions(actions: Iterable[Action]) -> str:
    """Comma-separated actions, or ``drop``."""
    text = ",".join(format_action(a) for a in actions)
    return text or "drop"


def format_flow(flow: Flow, registry: CookieRegistry | None = None) -> str:
    """`` cookie=0x..., table=N(stage), priority=P,match actions=...`` plus `` # app/owner`` if known."""
    match = format_match(flow)
    line = (
        f" cookie={flow.cookie:#x}, table={table_label(flow.stage)}, "
        f"priority={flow.priority}{',' + match if match else ''} actions={format_actions(flow.actions)}"
    )
    if registry is not None:
        owner = registry.lookup(flow.cookie)
        if owner is not None:
            line += f"  # {owner[0]}/{owner[1]}"
    return line


def format_flows(flows: Iterable[Flow], registry: CookieRegistry | None = None) -> str:
    """Many flows, ordered like dump-flows: by table, then priority high to low."""
    ordered = sorted(flows, key=lambda f: (f.table, -f.priority, format_match(f)))
    return "\n".join(format_flow(f, registry) for f in ordered)


def format_group(group: Group) -> str:
    """`` group_id=N,type=all,bucket=actions=...,bucket=...`` like ovs-ofctl dump-groups."""
    buckets = []
    for b in group.buckets:
        w = f"weight:{b.weight}," if group.type == "select" else ""
        buckets.append(f"bucket={w}actions={format_actions(b.actions)}")
    return f" group_id={group.group_id},type={group.type}," + ",".join(buckets)


def format_meter(meter: MeterEntry) -> str:
    """`` meter=N pktps|kbps [burst] bands=type=drop rate=R [burst_size=B]`` like ovs-ofctl dump-meters."""
    burst = f" burst_size={meter.burst}" if meter.burst else ""
    unit = "kbps" if meter.kbps else "pktps"
    return f" meter={meter.meter_id} {unit}{' burst' if meter.burst else ''} bands=type=drop rate={meter.rate}{burst}"
