"""Router firewall (FWaaS): ordered allow / deny / reject rules on a router's interfaces, both directions.

A firewall group puts an ingress policy (what the router receives on the interface, from its subnet) and
an egress policy (what the router sends out of it, into its subnet) on router interfaces. Routing is
distributed, so each interface's checks are compiled on every chassis hosting its network and run where
the packet is routed: the source VM's chassis east-west, the gateway chassis for floating-IP inbound.

    fw_router_in   (after acl_egress: from a local VM, tracked, not a reply; metadata = the VM's network)
      HIGH(1)   eth_dst = I's MAC, +trk+rpl              -> acl_egress_commit
      HIGH(0)   eth_dst = I's MAC, +trk+rel              -> acl_egress_commit
      MATCH(199 - n)  eth_dst = I's MAC + rule n's fields -> allow: acl_egress_commit; deny: drop;
                                                             reject: packet-in (controller/services/firewall_reject.py)
      LOW       eth_dst = I's MAC, IPv4 / IPv6           -> drop (the policy's end)
    fw_router_out  (after arp_resolve: routed; metadata = the egress network, eth_src = I's MAC)
      the same shape on eth_src, allow -> snat

Stateful: the security-group stages track every IP packet of a VM in its port's zone and commit what
the firewall lets through (acl_egress_commit); replies and related packets skip fw_router_in there and
pass fw_router_out on +rpl / +rel (untracked packets are checked as original-direction ones). Rules do
not match ct_state: every original-direction packet is checked against the current rules, so removing an
allow rule (or adding a deny) also stops established connections.

IPv6 is filtered the same way, by the rules with ip_version 6 (a rule matches packets of its own family
only; protocol "icmp" in an IPv6 rule means ICMPv6, as Neutron's drivers read it), and a firewalled
interface drops the IPv6 packets no rule allows, as it does IPv4. A "reject" rule answers IPv6 too (a TCP
reset, or ICMPv6 administratively prohibited, built by the controller).

Limits: at most MAX_RULES rules per policy (rule n gets priority MATCH(199 - n); later rules are not
compiled, which fails closed: what they would allow hits the policy's drop); a rule with ports but no
tcp/udp/sctp protocol matches nothing. A group whose admin state is down filters as if both its policies were empty (Neutron:
"does not forward packets").
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import netaddr

from apps import ids
from apps.view import View
from flows.actions import Action, Controller, Goto, Meter
from flows.flow import Flow
from flows.pipeline import HIGH, LOW, MATCH
from flows.ranges import port_match
from topology.model import Topology
from topology.records import (
    OWNER_ROUTER_INTERFACE,
    PROTOCOL_NUMBERS,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
)

IPV4, IPV6 = 0x0800, 0x86DD
CT_REL, CT_RPL, CT_TRK = 0x04, 0x08, 0x20
L4_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}
#: rules per policy the dataplane can order (one MATCH priority each)
MAX_RULES = 200

INGRESS, EGRESS = "ingress", "egress"
#: side -> (stage, the interface MAC's field, where an allowed packet goes)
SIDES = {
    INGRESS: ("fw_router_in", "eth_dst", "acl_egress_commit"),
    EGRESS: ("fw_router_out", "eth_src", "snat"),
}


def group_flows(view: View, chassis_id: str, group: FirewallGroup) -> list[Flow]:
    """The group's checks for each of its interfaces whose network this chassis hosts."""
    topo = view.topo
    out: list[Flow] = []
    for pid in group.ports:
        port = topo.ports.get(pid)
        if (
            port is None
            or topo.port_firewall.get(pid) != group.id
            or port.device_owner != OWNER_ROUTER_INTERFACE
            or not view.distributed(port)
            or not view.hosts(chassis_id, port.network_id)
        ):
            continue
        net_key = topo.networks[port.network_id].key
        for side, policy_id in ((INGRESS, group.ingress_policy_id), (EGRESS, group.egress_policy_id)):
            if not policy_id and group.admin_state_up:
                continue  # this side is not filtered
            policy = topo.firewall_policies.get(policy_id) if group.admin_state_up else None
            # a policy id naming nothing (or a group that is down) filters everything: fail closed
            rules = tuple(topo.firewall_rules.get(r) for r in policy.rules) if policy is not None else ()
            out += _side_flows(side, net_key, port.mac, rules, group.id)
    return out


@lru_cache(maxsize=1 << 12)
def _side_flows(
    side: str, net_key: int, mac: str, rules: tuple[FirewallRule | None, ...], group_id: str
) -> tuple[Flow, ...]:
    stage, mac_field, allowed = SIDES[side]
    base = {"metadata": net_key, mac_field: mac}
    c = ids.cookie(ids.FIREWALL, group_id)
    out = []
    for eth_type in (IPV4, IPV6):
        fam = {**base, "eth_type": eth_type}
        out += [
            Flow(
                stage,
                HIGH(1),
                match={**fam, "ct_state": (CT_TRK | CT_RPL, CT_TRK | CT_RPL)},
                actions=(Goto(allowed),),
                cookie=c,
            ),
            Flow(
                stage,
                HIGH(0),
                match={**fam, "ct_state": (CT_TRK | CT_REL, CT_TRK | CT_REL)},
                actions=(Goto(allowed),),
                cookie=c,
            ),
            Flow(stage, LOW, match=fam, cookie=c),
        ]  # the policy's end: drop
    for n, rule in enumerate(rules[:MAX_RULES]):
        if rule is None or not rule.enabled:
            continue
        acts: tuple[Action, ...] = {
            "allow": (Goto(allowed),),
            "deny": (),
            "reject": (Meter(ids.PACKET_IN_METER), Controller()),  # controller/services/firewall_reject.py
        }[rule.action]
        rc = ids.cookie(ids.FIREWALL, rule.id)
        out += [
            Flow(stage, MATCH(MAX_RULES - 1 - n), match={**base, **m}, actions=acts, cookie=rc)
            for m in rule_matches(rule)
        ]
    return tuple(out)


def protocol_number(protocol: str) -> int | None:
    """None for any protocol, else the IP protocol number of a name or decimal text."""
    if not protocol:
        return None
    return int(protocol) if protocol.isdigit() else PROTOCOL_NUMBERS[protocol.lower()]


def _cidr(address: str, version: int) -> str | None:
    """A rule's address as a match value of its family ("" -> None: any); raises for the other family."""
    if not address:
        return None
    net = netaddr.IPNetwork(address)
    if net.version != version:
        raise ValueError(address)
    return str(net.cidr)


def _ports(lo: int, hi: int) -> list[int | tuple[int, int]]:
    if lo and not hi:
        hi = lo
    return port_match(lo, hi)


def rule_matches(rule: FirewallRule) -> list[dict[str, object]]:
    """The rule's fields as matches of its family (eth_type included), one per (source port piece,
    destination port piece); [] when the rule can match no packet (an address of the other family, icmpv6 in
    an IPv4 rule, ports without tcp/udp/sctp)."""
    v = rule.ip_version
    if v not in (4, 6):
        return []
    try:
        proto = protocol_number(rule.protocol)
        src, dst = _cidr(rule.source_ip_address, v), _cidr(rule.destination_ip_address, v)
    except (ValueError, KeyError, netaddr.AddrFormatError):
        return []
    if v == 4 and proto == 58:
        return []
    if v == 6 and proto == 1:
        proto = 58  # "icmp" in an IPv6 rule: ICMPv6
    fam = "ipv4" if v == 4 else "ipv6"
    base: dict[str, object] = {"eth_type": IPV4 if v == 4 else IPV6}
    if proto is not None:
        base["ip_proto"] = proto
    if src is not None:
        base[f"{fam}_src"] = src
    if dst is not None:
        base[f"{fam}_dst"] = dst
    sports = _ports(rule.source_port_min, rule.source_port_max)
    dports = _ports(rule.destination_port_min, rule.destination_port_max)
    if not sports and not dports:
        return [base]
    l4 = L4_NAMES.get(proto) if proto is not None else None
    if l4 is None:
        return []
    out = []
    src_pieces: list[int | tuple[int, int] | None] = [*sports] or [None]
    dst_pieces: list[int | tuple[int, int] | None] = [*dports] or [None]
    for sp, dp in itertools.product(src_pieces, dst_pieces):
        m = dict(base)
        if sp is not None:
            m[f"{l4}_src"] = sp
        if dp is not None:
            m[f"{l4}_dst"] = dp
        out.append(m)
    return out


# ---------------------------------------------------------------------------------------------------------
# units (apps/compiler.py): ("firewall_group", id) on the chassis hosting its interfaces' networks
# ---------------------------------------------------------------------------------------------------------

UNIT = "firewall_group"


def groups_on(topo: Topology, network_id: str) -> set[str]:
    """Firewall groups with an interface on the network (their flows follow its hosting chassis)."""
    return {
        g
        for r in topo.routers_of(network_id)
        for p in topo.router_ports(r)
        if p.network_id == network_id and (g := topo.port_firewall.get(p.id))
    }


def changed_groups(topo: Topology, kind: str, old: object, new: object) -> set[str]:
    """Groups whose flows a change of a firewall rule, policy or group can alter."""
    if kind == "firewall_group":
        return {r.id for r in (old, new) if isinstance(r, FirewallGroup)}
    policies: set[str] = set()
    if kind == "firewall_policy":
        policies = {r.id for r in (old, new) if isinstance(r, FirewallPolicy)}
    elif kind == "firewall_rule":
        policies = {
            p for r in (old, new) if isinstance(r, FirewallRule) and (p := topo.rule_policy.get(r.id))
        }
    return {g for p in policies for g in topo.policy_groups.get(p, ())}


def group_chassis(view: View, group_id: str) -> set[str]:
    """Chassis hosting a network of one of the group's interfaces (where its flows belong now)."""
    group = view.topo.firewall_groups.get(group_id)
    if group is None:
        return set()
    return {
        ch
        for pid in group.ports
        if (p := view.topo.ports.get(pid)) is not None
        for ch in view.hosting(p.network_id)
    }
