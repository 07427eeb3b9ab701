"""An in-memory multi-table switch: walk a packet through Flows and Groups and see where it goes.

For behavioural unit tests ("a packet from port 1 to MAC B leaves on port 2 and nowhere else") and for
the controller's trace feature. It models OpenFlow 1.3 + the Nicira actions we emit, simply:

- highest priority match wins; two different matching flows at the same priority raise WalkError
  (OVS would pick one arbitrarily: that is a compile bug); a table miss drops;
- conjunction(id, k/n) clause flows set conj_id for flows matching ``conj_id`` when all n clauses match;
- ct() looks the connection up in a tiny conntrack (new / est / rpl per zone, by its original tuple and
  by its reply tuple, which a committed nat changes; a committed connection stays new until a reply passes,
  as in OVS; a translated packet gets +snat / +dnat), applies nat ranges to a new connection (first
  address/port), translates packets of a committed NAT connection when ct() has nat (forwards: as
  committed; replies: back to the original addresses), commits when asked, and continues in its table as
  a separate branch carrying the new ct_state; without a table only the nat applies to the packet going on;
  an ICMPv4 message that cannot open a connection (an echo reply, unlike a request) and matches none is
  +inv and is not committed (as OVS conntrack's valid_new);
- groups: ALL replicates to every bucket, SELECT takes one bucket by a stable hash, INDIRECT/FF the first;
- output to the packet's own in_port is dropped unless the port is IN_PORT (as OVS does).

Packets are dicts of field -> canonical value (os-ken names, see flows.fields), with ``in_port``.
Absent registers, metadata, tunnel_id and ct_state read as 0; other absent fields never match.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flows import fields, pipeline
from flows.actions import (
    CT,
    IN_PORT,
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
from flows.flow import Flow, Group
from flows.format import ct_state_text, format_flow

_ZERO_DEFAULT = (
    {
        "metadata",
        "tunnel_id",
        "ct_state",
        "ct_zone",
        "ct_mark",
        "ct_label",
        "conj_id",
        "vlan_vid",
        "tun_ipv4_src",
        "tun_ipv4_dst",
    }
    | {f"reg{i}" for i in range(16)}
    | {f"xxreg{i}" for i in range(4)}
)
_MAX_DEPTH = 64
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK, CT_SNAT, CT_DNAT = (1 << i for i in range(8))


class WalkError(RuntimeError):
    """The flows are not a well-defined pipeline for this packet (ambiguity, loop)."""


@dataclass(frozen=True)
class Delivery:
    """A copy of the packet leaving on `port` (an int, or "CONTROLLER") with its final headers."""

    port: int | str
    headers: Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    """One table visit: the stage, the flow that matched (None on a miss) and the nesting depth."""

    stage: str
    flow: Flow | None
    depth: int
    note: str = ""


@dataclass
class Result:
    """Everything a walk produced: deliveries, the trace, and where branches ended without output."""

    outputs: list[Delivery] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    drops: list[tuple[str, str]] = field(default_factory=list)
    meters: list[int] = field(default_factory=list)  # meter ids the packet passed, in order

    @property
    def ports(self) -> list[int | str]:
        """Ports the packet left on, in order."""
        return [d.port for d in self.outputs]

    @property
    def dropped(self) -> bool:
        """True if no copy of the packet left the switch."""
        return not self.outputs

    @property
    def dropped_at(self) -> str | None:
        """Stage where the (first) branch ended without output, if the packet was dropped."""
        return self.drops[0][0] if self.dropped and self.drops else None

    def stages(self) -> list[str]:
        """Stage names visited, in order."""
        return [s.stage for s in self.steps]

    def format(self) -> str:
        """ofproto/trace-like text: each table visit with the flow that matched."""
        lines = []
        for s in self.steps:
            pad = "    " * s.depth
            head = f"{pipeline.table_of(s.stage)}({s.stage})"
            if s.flow is not None:
                body = format_flow(s.flow).strip() + (f"  [{s.note}]" if s.note else "")
            else:
                body = s.note or "no match: drop"
            lines.append(f"{pad}{head}: {body}")
        for d in self.outputs:
            lines.append(f"-> output {d.port}")
        if self.dropped:
            lines.append(f"-> dropped at {self.dropped_at}")
        return "\n".join(lines)


def _get_int(pkt: Mapping[str, Any], name: str) -> int | None:
    if name in pkt:
        return fields.to_int(name, pkt[name])
    return 0 if name in _ZERO_DEFAULT else None


def _matches(flow: Flow, pkt: Mapping[str, Any]) -> bool:
    for name, value, mask in flow.match:
        have = _get_int(pkt, name)
        if have is None:
            return False
        want = fields.to_int(name, value)
        if mask is None:
            if have != want:
                return False
        elif have & fields.to_int(name, mask) != want:
            return False
    return True


def _conn_key(pkt: Mapping[str, Any]) -> tuple[Any, ...]:
    sport = pkt.get("tcp_src", pkt.get("udp_src", 0))
    dport = pkt.get("tcp_dst", pkt.get("udp_dst", 0))
    src = pkt.get("ipv4_src", pkt.get("ipv6_src"))
    dst = pkt.get("ipv4_dst", pkt.get("ipv6_dst"))
    return (pkt.get("ip_proto"), src, sport, dst, dport)


#: ICMPv4 types that may start a connection in conntrack: echo, timestamp and information requests
_ICMP_NEW = frozenset({8, 13, 15})


def _valid_new(pkt: Mapping[str, Any]) -> bool:
    """Whether conntrack would take the packet as a new connection (an ICMPv4 reply or error never is)."""
    if pkt.get("ip_proto") != 1 or "ipv4_src" not in pkt or "icmpv4_type" not in pkt:
        return True
    return pkt["icmpv4_type"] in _ICMP_NEW


def _reverse(key: tuple[Any, ...]) -> tuple[Any, ...]:
    proto, src, sport, dst, dport = key
    return (proto, dst, dport, src, sport)


class Switch:
    """A set of Flows and Groups, indexed by stage, that packets can be walked through."""

    def __init__(self, flows: Iterable[Flow], groups: Iterable[Group] = ()) -> None:
        self.tables: dict[str, list[Flow]] = {}
        for f in set(flows):
            self.tables.setdefault(f.stage, []).append(f)
        for fl in self.tables.values():
            fl.sort(key=lambda f: -f.priority)
        self.groups: dict[int, Group] = {}
        for g in groups:
            if g.group_id in self.groups and self.groups[g.group_id] != g:
                raise WalkError(f"two different groups with id {g.group_id}")
            self.groups[g.group_id] = g
        # (zone, tuple as seen in one direction) -> (connection, that direction is the reply)
        self.conntrack: dict[tuple[int, tuple[Any, ...]], tuple[_Conn, bool]] = {}
        self.ct_marks: dict[tuple[int, tuple[Any, ...]], int] = {}  # (zone, original tuple) -> ct_mark
        self.answered: set[tuple[int, tuple[Any, ...]]] = set()  # (zone, original tuple): a reply was seen

    def walk(self, packet: Mapping[str, Any], stage: str = pipeline.FIRST_STAGE) -> Result:
        """Walk `packet` (must hold in_port) from the first stage (or `stage`, e.g. a packet-out that
        resubmits there); returns deliveries and trace."""
        if "in_port" not in packet:
            raise WalkError("packet needs an in_port")
        pkt = {}
        for k, v in packet.items():
            norm = fields.normalize(k, v)
            if norm is None or norm[1] is not None:
                raise WalkError(f"packet field {k}={v!r} must be a plain value")
            pkt[k] = norm[0]
        result = Result()
        self._table(stage, pkt, result, 0)
        return result

    # -- tables ------------------------------------------------------------------------------------------

    def _lookup(self, stage: str, pkt: dict[str, Any]) -> Flow | None:
        flows = self.tables.get(stage, [])
        conj: dict[int, set[int]] = {}
        conj_n: dict[int, int] = {}
        for f in flows:
            if f.actions and all(isinstance(a, Conjunction) for a in f.actions) and _matches(f, pkt):
                for a in f.actions:
                    conj.setdefault(a.conj_id, set()).add(a.clause)  # type: ignore[union-attr]
                    conj_n[a.conj_id] = a.n_clauses  # type: ignore[union-attr]
        done = [cid for cid, clauses in conj.items() if len(clauses) == conj_n[cid]]
        best: Flow | None = None
        for f in flows:
            if best is not None and f.priority < best.priority:
                break
            if f.actions and all(isinstance(a, Conjunction) for a in f.actions):
                continue
            needs_conj = f.match_dict().get("conj_id")
            ok = (
                any(_matches(f, {**pkt, "conj_id": c}) for c in done)
                if needs_conj is not None
                else _matches(f, pkt)
            )
            if not ok:
                continue
            if best is not None:
                if best.actions == f.actions:
                    continue  # e.g. two security-group rules allow the packet: either flow does the same
                raise WalkError(
                    f"ambiguous: two flows at priority {f.priority} in {stage} match:\n"
                    f"{format_flow(best)}\n{format_flow(f)}"
                )
            best = f
        return best

    def _table(self, stage: str, pkt: dict[str, Any], result: Result, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise WalkError(f"more than {_MAX_DEPTH} nested tables: loop through {stage}?")
        flow = self._lookup(stage, pkt)
        result.steps.append(Step(stage, flow, depth))
        if flow is None:
            result.drops.append((stage, "table miss"))
            return
        out_before = len(result.outputs)
        goto = self._actions(flow.actions, stage, pkt, result, depth)
        if goto is not None:
            self._table(goto, pkt, result, depth)
        elif len(result.outputs) == out_before and not any(
            isinstance(a, (Resubmit, GroupAction)) or (isinstance(a, CT) and a.table) for a in flow.actions
        ):
            result.drops.append((stage, "no output"))

    # -- actions -----------------------------------------------------------------------------------------

    def _actions(
        self, actions: Iterable[Action], stage: str, pkt: dict[str, Any], result: Result, depth: int
    ) -> str | None:
        """Apply actions to `pkt` in place; returns the goto stage, if any."""
        goto = None
        for a in actions:
            if isinstance(a, Output):
                port = pkt["in_port"] if a.port == IN_PORT else a.port
                if a.port != IN_PORT and a.port == pkt["in_port"]:
                    result.steps.append(Step(stage, None, depth + 1, f"output:{a.port} is in_port: skipped"))
                    continue
                result.outputs.append(Delivery(port, dict(pkt)))
            elif isinstance(a, Controller):
                result.outputs.append(Delivery("CONTROLLER", dict(pkt)))
            elif isinstance(a, SetField):  # in_port_nxm (NXM_OF_IN_PORT) is in_port, 16 bits wide
                _set(pkt, "in_port" if a.field == "in_port_nxm" else a.field, a.value, a.mask)
            elif isinstance(a, Move):
                src = _get_int(pkt, a.src)
                if src is None:
                    raise WalkError(f"move from absent field {a.src}")
                bits = (src >> a.src_ofs) & ((1 << a.n_bits) - 1)
                mask = ((1 << a.n_bits) - 1) << a.dst_ofs
                _set(pkt, a.dst, fields.from_int(a.dst, bits << a.dst_ofs), fields.from_int(a.dst, mask))
            elif isinstance(a, GroupAction):
                self._group(a.group_id, stage, pkt, result, depth)
            elif isinstance(a, PushVlan):
                pkt["vlan_vid"] = 0x1000
            elif isinstance(a, PopVlan):
                pkt.pop("vlan_vid", None)
            elif isinstance(a, DecTtl):
                ttl = pkt.get("nw_ttl", 64)
                if ttl <= 1:
                    result.steps.append(Step(stage, None, depth + 1, "dec_ttl: TTL expired"))
                    result.drops.append((stage, "ttl expired"))
                    return None
                pkt["nw_ttl"] = ttl - 1
            elif isinstance(a, CtClear):
                for k in ("ct_state", "ct_zone", "ct_mark"):
                    pkt.pop(k, None)
            elif isinstance(a, Resubmit):
                self._table(a.stage, dict(pkt), result, depth + 1)
            elif isinstance(a, Goto):
                goto = a.stage
            elif isinstance(a, WriteMetadata):
                _set(pkt, "metadata", a.value, a.mask)
            elif isinstance(a, CT):
                self._ct(a, stage, pkt, result, depth)
            elif isinstance(a, Meter):
                result.meters.append(a.meter_id)
            elif isinstance(a, Conjunction):
                pass
            else:  # pragma: no cover - Flow construction rejects other values
                raise WalkError(f"cannot apply {a!r}")
        return goto

    def _group(self, group_id: int, stage: str, pkt: dict[str, Any], result: Result, depth: int) -> None:
        group = self.groups.get(group_id)
        if group is None:
            result.steps.append(Step(stage, None, depth + 1, f"group {group_id} missing: drop"))
            result.drops.append((stage, f"group {group_id} missing"))
            return
        buckets = list(group.buckets)
        if group.type == "select" and buckets:
            weights = [b.weight for b in buckets]
            pick = zlib.crc32(repr(_conn_key(pkt)).encode()) % sum(weights)
            for b in buckets:
                if pick < b.weight:
                    buckets = [b]
                    break
                pick -= b.weight
        elif group.type in ("indirect", "ff"):
            buckets = buckets[:1]
        for i, b in enumerate(buckets):
            result.steps.append(Step(stage, None, depth + 1, f"group {group_id} bucket {i}"))
            copy = dict(pkt)
            self._actions(b.actions, stage, copy, result, depth + 1)

    def _ct(self, a: CT, stage: str, pkt: dict[str, Any], result: Result, depth: int) -> None:
        zone = a.zone if isinstance(a.zone, int) else (_get_int(pkt, a.zone) or 0) & 0xFFFF
        key = _conn_key(pkt)
        found = self.conntrack.get((zone, key))
        state = CT_TRK
        invalid = found is None and not _valid_new(pkt)
        if found is not None and found[1]:
            self.answered.add((zone, found[0].orig))
            state |= CT_EST | CT_RPL
        elif found is not None and (zone, found[0].orig) in self.answered:
            state |= CT_EST
        elif invalid:
            state |= CT_INV
        else:  # not committed, or committed but never answered: conntrack still calls it new
            state |= CT_NEW
        ct_pkt = dict(pkt)
        if a.nat is not None:
            if found is not None:
                conn, reply = found
                if conn.nat is not None:
                    _translate(ct_pkt, conn, reply)
                    state |= _nat_flag(conn.nat, reply)
                    if a.table is None:
                        _translate(pkt, conn, reply)
            elif a.commit and not invalid:
                _nat(ct_pkt, a.nat)
                if a.nat.kind and a.nat.ip_min:
                    state |= _nat_flag(a.nat, False)
                if a.table is None:  # without recirculation the translated headers go on in this pipeline
                    _nat(pkt, a.nat)
        if found is not None:
            ct_pkt["ct_mark"] = self.ct_marks.get((zone, found[0].orig), 0)
        else:
            ct_pkt.pop("ct_mark", None)
        if a.commit and not invalid:
            if found is None:
                nat = a.nat if a.nat is not None and a.nat.kind and a.nat.ip_min else None
                conn = _Conn(key, nat)
                self.conntrack[(zone, key)] = (conn, False)
                self.conntrack.setdefault((zone, _reverse(_conn_key(ct_pkt))), (conn, True))
            else:
                conn = found[0]
            for x in a.exec:
                _set(ct_pkt, x.field, x.value, x.mask)
                if x.field == "ct_mark":
                    self.ct_marks[(zone, conn.orig)] = fields.to_int("ct_mark", ct_pkt["ct_mark"])
        ct_pkt["ct_state"] = state
        ct_pkt["ct_zone"] = zone
        note = f"ct(zone={zone}{',commit' if a.commit else ''}) -> ct_state={ct_state_text(state)}"
        result.steps.append(Step(stage, None, depth + 1, note))
        if a.table is not None:
            self._table(a.table, ct_pkt, result, depth + 1)


@dataclass(frozen=True)
class _Conn:
    """A committed connection: its original tuple and the NAT it was committed with."""

    orig: tuple[Any, ...]
    nat: NAT | None


def _nat_flag(nat: NAT, reply: bool) -> int:
    """The ct_state bit conntrack sets on a packet it translated: +snat / +dnat for what changed in it (a
    reply of a DNAT'ed connection has its source changed: +snat)."""
    return CT_DNAT if (nat.kind == "dst") != reply else CT_SNAT


def _translate(pkt: dict[str, Any], conn: _Conn, reply: bool) -> None:
    """NAT of a packet of a committed connection: forwards as committed, replies back to the original."""
    assert conn.nat is not None
    if not reply:
        _nat(pkt, conn.nat)
        return
    _proto, src, sport, dst, dport = conn.orig
    v6 = ":" in str(src)
    if conn.nat.kind == "src":  # the reply goes to the translated source: back to the original one
        side, ip, port = "dst", src, sport
    else:  # the reply comes from the translated destination: from the original one
        side, ip, port = "src", dst, dport
    pkt[f"ipv6_{side}" if v6 else f"ipv4_{side}"] = ip
    if conn.nat.port_min is not None:
        for proto in ("tcp", "udp"):
            if f"{proto}_{side}" in pkt:
                pkt[f"{proto}_{side}"] = port


def _set(pkt: dict[str, Any], name: str, value: Any, mask: Any) -> None:
    if mask is None:
        pkt[name] = value
        return
    old = _get_int(pkt, name) or 0
    m = fields.to_int(name, mask)
    pkt[name] = fields.from_int(name, (old & ~m) | (fields.to_int(name, value) & m))


def _nat(pkt: dict[str, Any], nat: NAT) -> None:
    if not nat.kind or not nat.ip_min:
        return
    v6 = ":" in nat.ip_min
    side = "src" if nat.kind == "src" else "dst"
    pkt[f"ipv6_{side}" if v6 else f"ipv4_{side}"] = nat.ip_min
    if nat.port_min is not None:
        for proto in ("tcp", "udp"):
            if f"{proto}_{side}" in pkt:
                pkt[f"{proto}_{side}"] = nat.port_min
