"""Security groups: stateful allow rules per port, in conntrack zones of their own, with conjunctive matches.

Every VM port located on the chassis has its own conntrack zone (ids.ct_zone: its key's low 16 bits, unique
among the ports bound to the chassis: topology/portkeys.py). An IP packet from
the port is tracked in acl_egress (ct(zone, table=acl_egress)), one to it in acl_ingress. Then, in both
tables:

    HIGH(40)  ARP-less exceptions: DHCP client -> server (egress; DHCPv6 too), server -> client (ingress), IPv6 ND: pass
    HIGH(35)  a port without port security: every tracked packet passes (to the router firewall, commit)
    HIGH(30)  +inv: drop
    HIGH(21)  +rel: pass, skipping the firewall and the commit stage
    HIGH(20)  +est+rpl (a reply of a connection this port's zone committed): pass, likewise
    HIGH(5)   untracked IP (one flow per ethertype for every port: the zone is the low 16 bits of the port's
              key, copied from SRC_PORT / DST_PORT into CT_ZONE), ct(zone=CT_ZONE, nat, table=<this stage>): packets of a
              connection to a load balancer's VIP are DNAT'ed to their member (apps/lb.py), replies get the
              VIP back as source; so the rules see established packets to a VIP with the member's address
    MATCH(0)  the rules, as conjunctions: clause 1 = the port (reg6 / reg7 = its key); then the remote end
              unless it is "any" (ipv4/6 src for ingress, dst for egress = one member address of the remote
              group, or the remote CIDR); then the protocol part if any (ip_proto, one flow per port-range
              piece, or ICMP type/code); the conj_id flow (= the rule's key) matches the conj_id alone and
              passes the packet on
    LOW       anything else tracked: drop (a new connection no rule allows, or an established one in its
              original direction that no rule allows any more: removing a rule cuts its connections too)

A port in several groups gets the union of their rules. Flows grow with ports + members + rules: a
member's address is one flow carrying a conjunction clause for every rule naming its group as remote, a
port is one flow carrying clause 1 of every rule of its groups, a port-range piece one flow for every rule
with it. Units (see apps/compiler.py) are chosen so
that one membership change recompiles one address flow per rule direction and the port's own flows.

Commit: acl_egress_commit / acl_ingress_commit commit +new connections in CT_ZONE (after the router
firewall on the way out, so a connection the firewall refuses is not committed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from apps import ids
from apps.view import View
from flows.actions import CT, NAT, Conjunction, Goto, Move
from flows.flow import Flow
from flows.pipeline import CT_ZONE, DST_PORT, HIGH, LOW, MATCH, SRC_PORT
from flows.ranges import range_masks
from topology.model import Topology, member_values, remote_value, value_version
from topology.records import EGRESS, INGRESS, PROTOCOL_NUMBERS, Port, SecurityGroupRule

IPV4, IPV6 = 0x0800, 0x86DD
ETH = {"IPv4": IPV4, "IPv6": IPV6}
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UDP, TCP, SCTP, ICMP, ICMPV6 = 17, 6, 132, 1, 58


@dataclass(frozen=True)
class Side:
    """One direction of the ACL, seen from the port."""

    direction: str
    stage: str  # where the rules live
    commit_stage: str  # where new connections are committed
    allowed: str  # where an allowed packet goes next
    skip: str  # where replies and related packets go (no firewall, no commit), and committed ones
    port_reg: str  # register holding the port's key
    remote: str  # "src" or "dst": which address is the remote end


SIDES = {
    EGRESS: Side(EGRESS, "acl_egress", "acl_egress_commit", "fw_router_in", "arp_nd", SRC_PORT.field, "dst"),
    INGRESS: Side(
        INGRESS,
        "acl_ingress",
        "acl_ingress_commit",
        "acl_ingress_commit",
        "plugin_to_port",
        DST_PORT.field,
        "src",
    ),
}

OWNER = "security-groups"


def _ct(flags: int, mask: int | None = None) -> tuple[int, int]:
    return (flags, flags if mask is None else mask)


# ---------------------------------------------------------------------------------------------------------
# chassis-wide flows
# ---------------------------------------------------------------------------------------------------------


def chassis_flows() -> list[Flow]:
    """The state handling every port shares (the ("acl", "") unit of each chassis)."""
    c = ids.cookie(ids.SECURITY_GROUP, OWNER)
    out: list[Flow] = []
    for side in SIDES.values():
        for eth in (IPV4, IPV6):
            out += [
                # untracked IP: track it in the port's zone, its key's low 16 bits (ids.ct_zone), copied from
                # the port's register: one flow for every port of the chassis, not one per port
                Flow(
                    side.stage,
                    HIGH(5),
                    match={"eth_type": eth, "ct_state": (0, CT_TRK)},
                    actions=(
                        Move(side.port_reg, CT_ZONE.field, CT_ZONE.n_bits),
                        CT(zone=CT_ZONE.field, nat=NAT(), table=side.stage),
                    ),
                    cookie=c,
                ),
                Flow(
                    side.stage, HIGH(30), match={"eth_type": eth, "ct_state": _ct(CT_TRK | CT_INV)}, cookie=c
                ),
                Flow(
                    side.stage,
                    HIGH(21),
                    match={"eth_type": eth, "ct_state": _ct(CT_TRK | CT_REL)},
                    actions=(Goto(side.skip),),
                    cookie=c,
                ),
                Flow(
                    side.stage,
                    HIGH(20),
                    match={"eth_type": eth, "ct_state": _ct(CT_TRK | CT_EST | CT_RPL)},
                    actions=(Goto(side.skip),),
                    cookie=c,
                ),
                Flow(side.stage, LOW, match={"eth_type": eth, "ct_state": _ct(CT_TRK)}, cookie=c),  # drop
                Flow(
                    side.commit_stage,
                    HIGH,
                    match={"eth_type": eth, "ct_state": _ct(CT_TRK | CT_NEW)},
                    actions=(CT(commit=True, zone=CT_ZONE.field), Goto(side.skip)),
                    cookie=c,
                ),
            ]
        # neighbour discovery never needs a rule (as ARP, which is not IP, never meets conntrack)
        for icmp6_type in (133, 134, 135, 136):
            out.append(
                Flow(
                    side.stage,
                    HIGH(40),
                    match={"eth_type": IPV6, "ip_proto": ICMPV6, "icmpv6_type": icmp6_type},
                    actions=(Goto(side.skip),),
                    cookie=c,
                )
            )
    # DHCP: a port may always ask, and hear the answers (port security stops it from answering)
    out.append(
        Flow(
            "acl_egress",
            HIGH(40),
            match={"eth_type": IPV4, "ip_proto": UDP, "udp_src": 68, "udp_dst": 67},
            actions=(Goto("arp_nd"),),
            cookie=c,
        )
    )
    out.append(
        Flow(
            "acl_ingress",
            HIGH(40),
            match={"eth_type": IPV4, "ip_proto": UDP, "udp_src": 67, "udp_dst": 68},
            actions=(Goto("plugin_to_port"),),
            cookie=c,
        )
    )
    # DHCPv6 requests too (the controller's answers are packet-outs to the port: no ingress rule needed)
    out.append(
        Flow(
            "acl_egress",
            HIGH(40),
            match={"eth_type": IPV6, "ip_proto": UDP, "udp_src": 546, "udp_dst": 547},
            actions=(Goto("arp_nd"),),
            cookie=c,
        )
    )
    return out


# ---------------------------------------------------------------------------------------------------------
# per port: clause 1 of its groups' rules (or, without port security, a pass)
# ---------------------------------------------------------------------------------------------------------


def secured(port: Port) -> bool:
    return port.port_security_enabled


def relevant(topo: Topology, rule: SecurityGroupRule, chassis_id: str) -> bool:
    """The rule's group has a member bound (and up) on this chassis: its rule needs flows here."""
    return chassis_id in topo.group_chassis.get(rule.security_group_id, {})


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    ofport = view.local_ofport(chassis_id, port)
    if ofport is None:
        return []
    topo = view.topo
    c = ids.cookie(ids.SECURITY_GROUP, port.id)
    ids.ct_zone(port.key)  # the shared tracking flows (chassis_flows) take the key's low bits as the zone
    out: list[Flow] = []
    for side in SIDES.values():
        me = {side.port_reg: port.key}
        for eth in (IPV4, IPV6):
            if not secured(port):
                out.append(
                    Flow(
                        side.stage,
                        HIGH(35),
                        match={**me, "eth_type": eth, "ct_state": _ct(CT_TRK)},
                        actions=(Goto(side.allowed),),
                        cookie=c,
                    )
                )
        if not secured(port):
            continue
        rules = sorted(
            {
                r
                for g in port.security_groups
                for r in topo.group_rules_of(g)
                if r.direction == side.direction
            },
            key=lambda r: r.key,
        )
        if rules:
            out.append(
                Flow(
                    side.stage,
                    MATCH,
                    match=me,
                    actions=tuple(Conjunction(r.key, 1, n_clauses(r)) for r in rules),
                    cookie=c,
                )
            )
    return out


# ---------------------------------------------------------------------------------------------------------
# clauses 2 and 3: the remote end and the protocol part, one flow per (side, ethertype, match)
# ---------------------------------------------------------------------------------------------------------
#
# A rule is the conjunction of: the port (clause 1, in the port's unit), the remote end if it is not "any"
# (a member address of the remote group, or the prefix), and the protocol part if it has one (one flow per
# port-range piece, or ICMP type/code, or just the protocol); a rule with neither gets an ethertype clause.
# Clauses with the same match are one flow listing every rule's clause (OpenFlow cannot have two flows with
# one match and priority), so a clause flow is its own unit, keyed by its match. The conj_id flow matches
# nothing else: OVS looks up only one completed conjunction per clause flow, so the allowing must not
# depend on anything but the conjunction.


def clause_unit(direction: str, ethertype: str, kind: str, value: str) -> tuple[str, str]:
    return ("acl_clause", f"{direction}|{ethertype}|{kind}|{value}")


def _version(value: str) -> int:
    return value_version(value)


def protocol_number(protocol: str) -> int | None:
    if not protocol:
        return None
    return int(protocol) if protocol.isdigit() else PROTOCOL_NUMBERS.get(protocol.lower())


def _l4_values(rule: SecurityGroupRule) -> list[str]:
    """The rule's protocol part as clause values: "proto", "proto|field|value/mask" per port-range piece,
    "proto|icmp|type/code"; [] for any protocol."""
    proto = protocol_number(rule.protocol)
    if proto is None:
        return []
    name = {TCP: "tcp", UDP: "udp", SCTP: "sctp"}.get(proto)
    if name and (rule.port_range_min or rule.port_range_max):
        lo, hi = rule.port_range_min or 1, rule.port_range_max or rule.port_range_min
        return [f"{proto}|{name}_dst|{v}/{m}" for v, m in range_masks(lo, hi)]
    if proto in (ICMP, ICMPV6) and rule.icmp_type >= 0:
        return [f"{proto}|icmp|{rule.icmp_type}/{rule.icmp_code}"]
    return [f"{proto}"]


def clauses(topo: Topology, rule: SecurityGroupRule) -> list[list[tuple[str, str]]]:
    """The rule's clauses after the port's, each a list of (kind, value) alternatives (a flow each)."""
    out: list[list[tuple[str, str]]] = []
    if rule.remote_group_id or remote_value(rule.remote_ip_prefix):
        out.append([("r", v) for v in sorted(rule_values(topo, rule))])
    l4 = _l4_values(rule)
    if l4:
        out.append([("p", v) for v in l4])
    if not out:
        out.append([("e", "")])
    return out


def n_clauses(rule: SecurityGroupRule) -> int:
    has_remote = bool(rule.remote_group_id or remote_value(rule.remote_ip_prefix))
    return 1 + max(1, int(has_remote) + int(protocol_number(rule.protocol) is not None))


def rule_values(topo: Topology, rule: SecurityGroupRule) -> set[str]:
    """The remote clause's values: the remote group members' addresses of the rule's family, or its prefix
    (empty for a group without members: the rule then matches nothing)."""
    if rule.remote_group_id:
        want = 4 if rule.ethertype == "IPv4" else 6
        return {
            v
            for pid in topo.group_ports.get(rule.remote_group_id, ())
            if (p := topo.ports.get(pid)) is not None
            for v in member_values(p)
            if _version(v) == want
        }
    return {remote_value(rule.remote_ip_prefix)}


def rule_clause_units(topo: Topology, rule: SecurityGroupRule) -> set[tuple[str, str]]:
    return {
        clause_unit(rule.direction, rule.ethertype, kind, value)
        for alternatives in clauses(topo, rule)
        for kind, value in alternatives
    }


def rules_for_clause(
    topo: Topology, direction: str, ethertype: str, kind: str, value: str
) -> list[tuple[SecurityGroupRule, int]]:
    """(rule, clause number) of the rules of this side and ethertype with a clause of this match."""
    cands: set[str] = set()
    if kind == "r":
        cands.update(topo.prefix_rules.get(value, ()))
        for pid in topo.value_ports.get(value, ()):
            port = topo.ports.get(pid)
            if port is not None and port.port_security_enabled:
                for g in port.security_groups:
                    cands.update(topo.remote_rules.get(g, ()))
    elif kind == "p":
        proto = int(value.split("|", 1)[0])
        names = {n: name for name, n in PROTOCOL_NUMBERS.items()}
        for spelled in {str(proto), names.get(proto, str(proto))}:
            cands.update(topo.proto_rules.get(f"{direction}|{ethertype}|{spelled}", ()))
    else:
        cands.update(topo.proto_rules.get(f"{direction}|{ethertype}|", ()))
    out = []
    for rid in cands:
        rule = topo.sg_rules.get(rid)
        if rule is None or rule.direction != direction or rule.ethertype != ethertype:
            continue
        has_remote = bool(rule.remote_group_id or remote_value(rule.remote_ip_prefix))
        if kind == "r" and has_remote:
            out.append((rule, 2))  # found through its prefix or a member holding the address
        elif kind == "p" and value in _l4_values(rule):
            out.append((rule, 2 + int(has_remote)))
        elif kind == "e" and not has_remote and protocol_number(rule.protocol) is None:
            out.append((rule, 2))
    return sorted(out, key=lambda rc: rc[0].key)


def _clause_match(direction: str, ethertype: str, kind: str, value: str) -> dict[str, object]:
    eth = ETH[ethertype]
    match: dict[str, object] = {"eth_type": eth}
    if kind == "r":
        match[f"{'ipv4' if eth == IPV4 else 'ipv6'}_{SIDES[direction].remote}"] = value
    elif kind == "p":
        parts = value.split("|")
        match["ip_proto"] = int(parts[0])
        if len(parts) == 3:
            field_, vm = parts[1], parts[2]
            v, m = (int(x) for x in vm.split("/"))
            if field_ == "icmp":
                fam = "icmpv4" if int(parts[0]) == ICMP else "icmpv6"
                match[f"{fam}_type"] = v
                if m >= 0:
                    match[f"{fam}_code"] = m
            else:
                match[field_] = v if m == 0xFFFF else (v, m)
    return match


def clause_flows(view: View, chassis_id: str, ident: str) -> list[Flow]:
    direction, ethertype, kind, value = ident.split("|", 3)
    if kind == "r" and _version(value) != (4 if ethertype == "IPv4" else 6):
        return []
    topo = view.topo
    conj = [
        Conjunction(rule.key, i, n_clauses(rule))
        for rule, i in rules_for_clause(topo, direction, ethertype, kind, value)
        if relevant(topo, rule, chassis_id)
    ]
    if not conj:
        return []
    return [
        Flow(
            SIDES[direction].stage,
            MATCH,
            match=_clause_match(direction, ethertype, kind, value),
            actions=tuple(conj),
            cookie=ids.cookie(ids.SECURITY_GROUP, f"clause:{ident}"),
        )
    ]


# ---------------------------------------------------------------------------------------------------------
# the conjunction's result: pass
# ---------------------------------------------------------------------------------------------------------


def rule_flows(view: View, chassis_id: str, rule: SecurityGroupRule) -> list[Flow]:
    if not relevant(view.topo, rule, chassis_id):
        return []
    return [_rule_flow(rule)]


@lru_cache(maxsize=1 << 14)
def _rule_flow(rule: SecurityGroupRule) -> Flow:
    side = SIDES[rule.direction]
    return Flow(
        side.stage,
        MATCH,
        match={"conj_id": rule.key},
        actions=(Goto(side.allowed),),
        cookie=ids.cookie(ids.SECURITY_GROUP, rule.id),
    )


# ---------------------------------------------------------------------------------------------------------
# units: which to recompile when the model changes
# ---------------------------------------------------------------------------------------------------------


def all_units(topo: Topology) -> list[tuple[str, str]]:
    """Every security-group unit the model can have flows for (the port units are the compiler's)."""
    out: set[tuple[str, str]] = {("acl", "")}
    for rule in topo.sg_rules.values():
        out.add(("sg_rule", rule.id))
        out |= rule_clause_units(topo, rule)
    return sorted(out)


@dataclass
class Dirty:
    """What a change touches: ports whose units to recompile (where they are hosted), and security-group
    units with the chassis where they may now be needed (besides those holding them already)."""

    ports: set[str] = field(default_factory=set)
    units: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)  # groups whose bound members may have changed chassis

    def add(self, units: Iterable[tuple[str, str]], chassis: Iterable[str]) -> None:
        chassis = set(chassis)
        for u in units:
            self.units.setdefault(u, set()).update(chassis)


def rule_units(topo: Topology, rule: SecurityGroupRule) -> set[tuple[str, str]]:
    return {("sg_rule", rule.id)} | rule_clause_units(topo, rule)


def on_rule_change(
    topo: Topology, old: SecurityGroupRule | None, new: SecurityGroupRule | None, dirty: Dirty
) -> None:
    """A rule created or deleted: its group's ports (clause 1), its other clauses, its result flow."""
    for rule in (old, new):
        if rule is None:
            continue
        dirty.ports.update(topo.group_ports.get(rule.security_group_id, ()))
        dirty.add(rule_units(topo, rule), topo.group_chassis.get(rule.security_group_id, {}))


def on_port_change(topo: Topology, old: Port | None, new: Port | None, dirty: Dirty) -> None:
    """A port's groups, addresses, security or binding changed: the address flows of rules naming its groups
    as remote, and, where its groups gain or lose their first / last member on a chassis, their rules."""
    before_vals = member_values(old) if old is not None else set()
    after_vals = member_values(new) if new is not None else set()
    groups_before = set(old.security_groups) if old is not None and old.port_security_enabled else set()
    groups_after = set(new.security_groups) if new is not None and new.port_security_enabled else set()
    if before_vals != after_vals or groups_before != groups_after:
        for g in groups_before | groups_after:
            for rid in topo.remote_rules.get(g, ()):
                rule = topo.sg_rules[rid]
                want = 4 if rule.ethertype == "IPv4" else 6
                dirty.add(
                    (
                        clause_unit(rule.direction, rule.ethertype, "r", v)
                        for v in before_vals | after_vals
                        if _version(v) == want
                    ),
                    topo.group_chassis.get(rule.security_group_id, {}),
                )
    # a group's rules exist on a chassis while a member is bound there: the compiler compares where each
    # touched group was relevant when it last compiled with where it is now (several ports may move in one
    # write, so the model's counts alone cannot say whether this port was the first or the last)
    dirty.groups |= groups_before | groups_after


def on_relevance_change(topo: Topology, group_id: str, chassis: Iterable[str], dirty: Dirty) -> None:
    """The group gained its first or lost its last bound member on `chassis`: its rules' units there."""
    chassis = set(chassis)
    for rid in topo.group_rules.get(group_id, ()):
        dirty.add(rule_units(topo, topo.sg_rules[rid]), chassis)


# ---------------------------------------------------------------------------------------------------------
# flow budget
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetExcess:
    chassis: str
    rule_id: str  # the rule with the largest share of the tenant's flows on that chassis
    flows: int
    budget: int


def estimate(topo: Topology, tenant: str) -> dict[str, tuple[int, dict[str, int]]]:
    """Per chassis: (flows the tenant's security group rules and memberships make there, share per rule id).

    Follows what the compiler emits on a chassis where a group has a member: per member there one clause-1
    flow per direction its groups have rules for; per rule its result flows (one per port-range piece);
    per remote end (a remote group's member addresses of the rule's ethertype, or one prefix) per side, its
    clause-2 flows, counted once and charged to the first rule naming it. The tracking flows are shared
    by every port (chassis_flows) and not counted. O(groups x chassis + rules), whatever the sizes."""
    per_chassis: dict[str, tuple[int, dict[str, int]]] = {}
    seen: dict[str, set[tuple[str, str, str]]] = {}
    for g in sorted(topo.security_groups.values(), key=lambda g: g.id):
        if g.tenant != tenant:
            continue
        counts = topo.group_chassis.get(g.id, {})
        if not counts:
            continue
        rules = sorted((topo.sg_rules[rid] for rid in topo.group_rules.get(g.id, ())), key=lambda r: r.id)
        directions = {r.direction for r in rules}
        for ch, n_members in counts.items():
            total, by_rule = per_chassis.get(ch, (0, {}))
            total += n_members * len(directions)
            remotes = seen.setdefault(ch, set())
            for r in rules:
                share = 1 + (
                    len(_l4_values(r)) or int(not (r.remote_group_id or remote_value(r.remote_ip_prefix)))
                )
                remote = (
                    r.remote_group_id or "prefix:" + remote_value(r.remote_ip_prefix),
                    r.direction,
                    r.ethertype,
                )
                if remote not in remotes:
                    remotes.add(remote)
                    share += (
                        topo.group_values.get(r.remote_group_id, [0, 0])[r.ethertype == "IPv6"]
                        if r.remote_group_id
                        else 1
                    )
                by_rule[r.id] = by_rule.get(r.id, 0) + share
                total += share
            per_chassis[ch] = (total, by_rule)
    return per_chassis


def rule_share(topo: Topology, rule: SecurityGroupRule) -> int:
    """What estimate() charges a rule on a chassis where it is relevant, at most (its result flow, its
    protocol clauses, its remote end's flows)."""
    remote = (
        topo.group_values.get(rule.remote_group_id, [0, 0])[rule.ethertype == "IPv6"]
        if rule.remote_group_id
        else 1
    )
    return 1 + max(len(_l4_values(rule)), 1) + remote


def port_growth_bound(topo: Topology, port: Port) -> int:
    """An upper bound of what writing `port` (as it will be) can add to estimate() on any one chassis: its
    addresses in the remote clauses of rules naming its groups, and where it is bound and up its clause-1
    flows and its groups' rules if it is their first member on that chassis (estimate() counts a group's
    rules once per chassis with members). Cheap: lets the flow budget skip the exact check."""
    if not port.port_security_enabled:
        return 0
    n_values = len(member_values(port))
    placed = bool(port.binding_chassis and port.admin_state_up)  # else no flows of its own anywhere
    bound = 0
    for g in port.security_groups:
        bound += n_values * len(topo.remote_rules.get(g, ()))
        if placed:
            bound += 2
            if not topo.group_chassis.get(g, {}).get(port.binding_chassis):  # its group's first member there
                bound += sum(rule_share(topo, topo.sg_rules[r]) for r in topo.group_rules.get(g, ()))
    return bound


def over_budget(topo: Topology, tenant: str, budget: int) -> BudgetExcess | None:
    """The first chassis (by name) where the tenant's security-group flows would exceed `budget`, naming
    the rule with the largest share there; None when within (or budget <= 0: no budget)."""
    if budget <= 0:
        return None
    for ch, (total, by_rule) in sorted(estimate(topo, tenant).items()):
        if total > budget:
            rule_id = max(sorted(by_rule), key=lambda r: by_rule[r]) if by_rule else ""
            return BudgetExcess(ch, rule_id, total, budget)
    return None
