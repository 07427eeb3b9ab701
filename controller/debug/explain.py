"""Explain: can port X reach Y (a port or an IP) on tcp/22, and what decides it?

The answer comes from the model first: an ordered list of deciders, each a function of the query that
allows, denies, or has nothing to say (port and network state, reachability through the graph of
networks and routers, security groups). The first denial decides; the allowances say why it passes.
Security group rules and router firewall rules are deciders too: the rule that allows (or the group or
policy that has none) is named. The model's answer
is then confirmed by tracing the real packet (headers built from the model) through the compiled flows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import netaddr
import networkx as nx

from apps import acl
from controller.api import convert
from controller.debug import first_hop, pathwalk
from controller.debug.trace import TraceResult
from topology import errors
from topology.model import Topology, member_values, remote_value
from topology.records import (
    EGRESS,
    INGRESS,
    OWNER_FLOATING_IP,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    FirewallRule,
    Port,
    SecurityGroupRule,
)

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "any": None}
#: graph nodes that carry traffic between networks (routers and their interfaces, when they exist)
L3_KINDS = ("network", "router")
_ROUTER_OWNERS = (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY)


@dataclass(frozen=True)
class Decider:
    """One thing that allows or denies the traffic: kind, the object (resource name) and why."""

    kind: str  # port_state, network, router, isolation, tenant, route, address, security_group
    allows: bool
    description: str
    resource: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "allows": self.allows,
            "description": self.description,
            "resource": self.resource,
        }


@dataclass
class Explanation:
    allowed: bool
    verdict: str
    deciders: list[Decider]
    source: str
    destination: str
    protocol: str
    port: int | None
    trace: TraceResult | None = None
    confirmed: bool | None = None  # does the model's reasoning agree with the walk (None: no walk)
    notes: list[str] = field(default_factory=list)
    walk: pathwalk.Walk | None = None

    def to_dict(self, with_trace: bool = True) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "verdict": self.verdict,
            "source": self.source,
            "destination": self.destination,
            "protocol": self.protocol,
            "port": self.port,
            "deciders": [d.to_dict() for d in self.deciders],
            "confirmed": self.confirmed,
            "notes": list(self.notes),
            "trace": self.trace.to_dict() if self.trace is not None and with_trace else None,
        }

    def format(self, with_trace: bool = True) -> str:
        what = self.protocol + (f"/{self.port}" if self.port else "")
        lines = [
            f"{self.source} -> {self.destination} ({what}): {'ALLOWED' if self.allowed else 'DENIED'}",
            f"  {self.verdict}",
        ]
        for d in self.deciders:
            lines.append(
                f"  {'allows' if d.allows else 'DENIES'}  [{d.kind}] {d.description}"
                + (f" ({d.resource})" if d.resource else "")
            )
        for n in self.notes:
            lines.append(f"  note: {n}")
        if self.walk is not None:
            agree = "agrees" if self.confirmed else "DISAGREES (the walk decides)"
            if with_trace:
                lines.append(
                    f"  walked through the flows: {self.walk.verdict}; the model's reasoning {agree}"
                )
                lines += [f"    leg {i}: {leg}" for i, leg in enumerate(self.walk.path(), start=1)]
                if self.trace is not None:
                    lines += ["", self.trace.format()]
            else:
                verdict = "ALLOWED" if self.allowed else "DENIED"
                lines.append(
                    f"  the packet walked through the flows is {verdict}; the model's reasoning {agree}"
                )
        return "\n".join(lines)


@dataclass
class Query:
    """What is asked, resolved against the model. `visible(tenant)` says whether the asker may learn about
    another tenant's objects (an admin may; a tenant sees its own)."""

    topo: Topology
    src: Port
    dst: Port | None
    dst_ip: str | None
    protocol: str
    port: int | None
    visible: Callable[[str], bool]
    via: tuple[str, str] | None = None  # (router, network) an IP outside the source's subnets is routed to

    def port_label(self, p: Port) -> str:
        """The port's name, or for one the asker may not see (another tenant's, reached by its IP address)
        the address only: an answer never names another tenant's objects."""
        if self.visible(p.tenant):
            return convert.name_of("port", p.id)
        return f"{_ipv4(p) or self.dst_ip or 'the address'} (another tenant's port)"

    def net_label(self, ident: str) -> str:
        net = self.topo.networks.get(ident)
        if net is None or net.external or self.visible(net.tenant):
            return _net_name(ident)
        return "another tenant's network"

    def router_label(self, ident: str) -> str:
        router = self.topo.routers.get(ident)
        if router is None or self.visible(router.tenant):
            return f"routers/{ident}"
        return "another tenant's router"

    def resource(self, name: str, tenant: str) -> str:
        """`name` for a Decider's resource if the asker may see its tenant's objects, else nothing."""
        return name if self.visible(tenant) else ""


Check = Callable[[Query], list[Decider]]


def _net_name(ident: str) -> str:
    return convert.name_of("network", ident)


def check_port_state(q: Query) -> list[Decider]:
    """Administratively down ports or networks carry nothing; an unbound port is nowhere."""
    out = []
    for role, p in (("source", q.src), ("destination", q.dst)):
        if p is None:
            continue
        net = q.topo.networks.get(p.network_id)
        name = q.port_label(p)
        res = q.resource(convert.name_of("port", p.id), p.tenant)
        if not p.admin_state_up:
            out.append(Decider("port_state", False, f"the {role} port {name} is administratively down", res))
        elif net is not None and not net.admin_state_up:
            label = q.net_label(net.id)
            out.append(
                Decider(
                    "port_state",
                    False,
                    f"the {role}'s network {label} is administratively down",
                    label if label.startswith("networks/") else "",
                )
            )
        elif not p.binding_chassis:
            out.append(
                Decider("port_state", False, f"the {role} port {name} is not bound to any chassis", res)
            )
    return out


def check_reachability(q: Query) -> list[Decider]:
    """Same network: L2. Otherwise a path of routers through the graph must join the networks (isolation
    boundary if none); an IP must be in one of the source network's subnets or routed (none yet)."""
    topo, src = q.topo, q.src
    src_net = src.network_id
    if q.dst is None:
        assert q.dst_ip is not None
        ip = netaddr.IPAddress(q.dst_ip)
        subnets = [s for s in topo.subnets_of(src_net) if ip in netaddr.IPNetwork(s.cidr)]
        out = []
        if q.via is not None:
            router, net = q.via
            rname, nname = q.router_label(router), q.net_label(net)
            out.append(
                Decider(
                    "router",
                    True,
                    f"{q.dst_ip} is routed by {rname} to {nname}",
                    rname if rname.startswith("routers/") else "",
                )
            )
            subnets = [s for s in topo.subnets_of(net) if ip in netaddr.IPNetwork(s.cidr)]
            out.append(
                Decider(
                    "address",
                    False,
                    f"no port of {nname} has {q.dst_ip}",
                    convert.name_of("subnet", subnets[0].id) if nname.startswith("networks/") else "",
                )
            )
            return out
        elsewhere = [
            p
            for sid, owners in topo.ip_owner.items()
            for n, pid in owners.items()
            if n == int(ip)
            and (p := topo.ports.get(pid)) is not None
            and p.network_id != src_net
            and q.visible(p.tenant)
        ]
        if not subnets:
            out.append(
                Decider(
                    "route",
                    False,
                    f"{q.dst_ip} is outside every subnet of {_net_name(src_net)} and no router routes it",
                    _net_name(src_net),
                )
            )
        else:
            out.append(
                Decider(
                    "address",
                    False,
                    f"no port of {_net_name(src_net)} has {q.dst_ip}: ARP for "
                    "it is not answered and nothing receives it",
                    convert.name_of("subnet", subnets[0].id),
                )
            )
        for p in elsewhere:
            out.append(
                Decider(
                    "isolation",
                    False,
                    f"{q.dst_ip} is {convert.name_of('port', p.id)} in "
                    f"{_net_name(p.network_id)}, a separate address space: networks "
                    f"{src_net} and {p.network_id} are not connected",
                    _net_name(p.network_id),
                )
            )
        return out
    dst = q.dst
    if dst.network_id == src_net:
        return [Decider("network", True, f"same network {src_net}", _net_name(src_net))]
    out = []
    routers = _router_path(topo, src_net, dst.network_id)
    dst_net = q.net_label(dst.network_id)
    dst_net_res = dst_net if dst_net.startswith("networks/") else ""
    dst_net = dst_net.removeprefix("networks/")
    if routers is None:
        out.append(
            Decider(
                "isolation",
                False,
                f"networks {src_net} and {dst_net} are not connected: no router joins them",
                dst_net_res,
            )
        )
    else:
        names = ", ".join(q.router_label(r) for r in routers)
        first = q.router_label(routers[0]) if routers else ""
        out.append(
            Decider(
                "router",
                True,
                f"networks {src_net} and {dst_net} are joined by {names}",
                first if first.startswith("routers/") else "",
            )
        )
    if src.tenant != dst.tenant and routers is None:
        other = dst.tenant if q.visible(dst.tenant) else "another tenant"
        out.append(
            Decider(
                "tenant",
                False,
                f"different tenants: {src.tenant} and {other}; a tenant's "
                "networks are isolated from another's",
                "",
            )
        )
    return out


def _router_path(topo: Topology, a: str, b: str) -> list[str] | None:
    """Routers on a shortest path from network `a` to network `b` through router interfaces (the graph's
    network - port - router edges); None if no path."""
    g = topo.graph
    keep = [
        n
        for n in g
        if n[0] in L3_KINDS
        or (n[0] == "port" and n[1] in topo.ports and topo.ports[n[1]].device_owner in _ROUTER_OWNERS)
    ]
    sub = g.subgraph(keep)
    na, nb = ("network", a), ("network", b)
    if na not in sub or nb not in sub:
        return None
    try:
        path = nx.shortest_path(sub, na, nb)
    except nx.NetworkXNoPath:
        return None
    return [ident for kind, ident in path if kind == "router"]


def _ip_of(p: Port | None, fallback: str | None = None, version: int = 4) -> str | None:
    """The port's address of the family (IPv4 unless the question is about an IPv6 address)."""
    own = next((ip for _, ip in p.fixed_ips if netaddr.IPAddress(ip).version == version), None) if p else None
    return own or fallback


def _version(q: Query) -> int:
    """The family the question is about: IPv6 when asked about an IPv6 address (or about a port that has
    IPv6 addresses only, both ends), else IPv4."""
    if q.dst_ip:
        return 6 if ":" in q.dst_ip else 4
    only6 = q.dst is not None and _ipv4(q.dst) is None and _ip_of(q.dst, None, 6) is not None
    return 6 if only6 and _ipv4(q.src) is None else 4


def _sg_rule_allows(
    topo: Topology,
    rule: SecurityGroupRule,
    protocol: str,
    port: int | None,
    remote_ip: str | None,
    version: int = 4,
) -> bool:
    """Does this allow rule let traffic of the family, `protocol`/`port` with the far end at `remote_ip` pass?
    Only rules of the family count (ethertype IPv4 / IPv6); icmp in an IPv6 question is ICMPv6."""
    if rule.ethertype != f"IPv{version}":
        return False
    want = PROTOCOLS[protocol]
    if version == 6 and want == 1:
        want = 58
    have = acl.protocol_number(rule.protocol)
    if have is not None and have != want:
        return False
    if rule.port_range_min and (
        port is None or not rule.port_range_min <= port <= (rule.port_range_max or rule.port_range_min)
    ):
        return False
    if have in (1, 58) and rule.icmp_type >= 0 and rule.icmp_type != (8 if have == 1 else 128):
        return False  # explain asks about echo requests for icmp
    if rule.remote_group_id:
        members = topo.group_ports.get(rule.remote_group_id, set())
        return remote_ip is not None and any(
            remote_ip in member_values(topo.ports[m])
            or any(
                netaddr.IPAddress(remote_ip) in netaddr.IPNetwork(v)
                for v in member_values(topo.ports[m])
                if "/" in v
            )
            for m in members
            if m in topo.ports
        )
    prefix = remote_value(rule.remote_ip_prefix)
    return not prefix or (remote_ip is not None and netaddr.IPAddress(remote_ip) in netaddr.IPNetwork(prefix))


def _sg_side(q: Query, port: Port, direction: str, remote_ip: str | None) -> list[Decider]:
    topo = q.topo
    name = q.port_label(port)
    role = "destination" if direction == INGRESS else "source"
    if not q.visible(port.tenant):
        return _sg_side_hidden(q, port, direction, remote_ip, name)
    if not port.port_security_enabled:
        return [
            Decider(
                "security_group",
                True,
                f"the {role} port {name} has port security disabled: no security group filters it",
                name,
            )
        ]
    what = q.protocol + (f"/{q.port}" if q.port else "")
    if not port.security_groups:
        return [
            Decider(
                "security_group",
                False,
                f"the {role} port {name} has port security but no security "
                f"group: nothing may {'reach' if direction == INGRESS else 'leave'} it",
                name,
            )
        ]
    for g in port.security_groups:
        for rule in topo.group_rules_of(g):
            if rule.direction == direction and _sg_rule_allows(
                topo, rule, q.protocol, q.port, remote_ip, _version(q)
            ):
                gname = topo.security_groups[g].display_name if g in topo.security_groups else g
                return [
                    Decider(
                        "security_group",
                        True,
                        f"securityGroupRules/{rule.id} of security group {gname!r} allows {direction} "
                        f"{what} {'from' if direction == INGRESS else 'to'} {remote_ip or 'it'}",
                        f"securityGroupRules/{rule.id}",
                    )
                ]
    groups = ", ".join(f"securityGroups/{g}" for g in port.security_groups)
    return [
        Decider(
            "security_group",
            False,
            f"no {direction} rule of {name}'s security groups ({groups}) "
            f"allows {what} {'from' if direction == INGRESS else 'to'} {remote_ip or 'it'}",
            f"securityGroups/{port.security_groups[0]}",
        )
    ]


def _sg_side_hidden(q: Query, port: Port, direction: str, remote_ip: str | None, name: str) -> list[Decider]:
    """Another tenant's port: whether its security groups let the traffic in, not which group or rule."""
    what = q.protocol + (f"/{q.port}" if q.port else "")
    allows = not port.port_security_enabled or any(
        rule.direction == direction
        and _sg_rule_allows(q.topo, rule, q.protocol, q.port, remote_ip, _version(q))
        for g in port.security_groups
        for rule in q.topo.group_rules_of(g)
    )
    verb = "allow" if allows else "do not allow"
    return [
        Decider(
            "security_group",
            allows,
            f"the security groups of {name} {verb} {direction} {what} from {remote_ip or 'it'}",
            "",
        )
    ]


def check_security_groups(q: Query) -> list[Decider]:
    """The source's egress rules must allow the packet to the destination address, the destination's
    ingress rules must allow it from the source address (a reply of an allowed connection always passes)."""
    if q.protocol == "any":
        return []
    v = _version(q)
    out = _sg_side(q, q.src, EGRESS, _ip_of(q.dst, q.dst_ip, v))
    if q.dst is not None:
        out += _sg_side(q, q.dst, INGRESS, _ip_of(q.src, None, v))
    return out


def _fw_rule_matches(
    rule: FirewallRule, protocol: str, port: int | None, src: str | None, dst: str | None, version: int = 4
) -> bool:
    """As apps/firewall.py compiles it: a rule of the question's family only, icmp in an IPv6 rule is ICMPv6."""
    if not rule.enabled or rule.ip_version != version:
        return False
    have = acl.protocol_number(rule.protocol)
    want = PROTOCOLS[protocol]
    if version == 6:
        have, want = (58 if have == 1 else have), (58 if want == 1 else want)
    if have is not None and have != want:
        return False
    for cidr, ip in ((rule.source_ip_address, src), (rule.destination_ip_address, dst)):
        if cidr and (ip is None or netaddr.IPAddress(ip) not in netaddr.IPNetwork(cidr)):
            return False
    if rule.source_port_min:
        return False  # explain's client port is arbitrary: a rule on source ports is not what decides
    return not rule.destination_port_min or (
        port is not None
        and rule.destination_port_min <= port <= (rule.destination_port_max or rule.destination_port_min)
    )


def check_firewall(q: Query) -> list[Decider]:
    """Routed traffic crosses the router interface on the source's network (its ingress policy) and the
    one on the destination's (its egress policy): the first matching rule of each decides, none denies."""
    topo = q.topo
    if q.dst is None or q.dst.network_id == q.src.network_id or q.protocol == "any":
        return []
    routers = _router_path(topo, q.src.network_id, q.dst.network_id)
    if not routers:
        return []
    router = routers[0]
    v = _version(q)
    src_ip, dst_ip = _ip_of(q.src, None, v), _ip_of(q.dst, q.dst_ip, v)
    out = []
    for net, side in ((q.src.network_id, "ingress"), (q.dst.network_id, "egress")):
        ifaces = [
            p
            for p in topo.router_ports(router)
            if p.network_id == net and p.device_owner == OWNER_ROUTER_INTERFACE
        ]
        # the interface of the question's family (a dual-stack subnet pair may have one port per family)
        iface = next((p for p in ifaces if _ip_of(p, None, v) is not None), ifaces[0] if ifaces else None)
        group = topo.firewall_groups.get(topo.port_firewall.get(iface.id, "")) if iface is not None else None
        if iface is None or group is None:
            continue
        if not q.visible(group.tenant):  # another tenant's router: its verdict, not its rules
            hidden = _firewall_hidden(q, group, side, src_ip, dst_ip)
            out += [hidden] if hidden is not None else []
            continue
        if not group.admin_state_up:
            out.append(
                Decider(
                    "firewall",
                    False,
                    f"firewallGroups/{group.id} on {convert.name_of('port', iface.id)} "
                    "is administratively down: it forwards nothing new",
                    f"firewallGroups/{group.id}",
                )
            )
            continue
        policy_id = group.ingress_policy_id if side == "ingress" else group.egress_policy_id
        policy = topo.firewall_policies.get(policy_id)
        if policy is None:
            continue
        where = f"the {side} policy firewallPolicies/{policy.id} of firewallGroups/{group.id} on {convert.name_of('port', iface.id)}"
        for rid in policy.rules:
            rule = topo.firewall_rules.get(rid)
            if rule is not None and _fw_rule_matches(rule, q.protocol, q.port, src_ip, dst_ip, v):
                out.append(
                    Decider(
                        "firewall",
                        rule.action == "allow",
                        f"firewallRules/{rule.id} ({rule.action}) is the first rule of {where} that matches",
                        f"firewallRules/{rule.id}",
                    )
                )
                break
        else:
            out.append(
                Decider(
                    "firewall",
                    False,
                    f"no rule of {where} matches: the policy denies",
                    f"firewallPolicies/{policy.id}",
                )
            )
    return out


def _firewall_hidden(
    q: Query,
    group: Any,
    side: str,
    src_ip: str | None,
    dst_ip: str | None,
) -> Decider | None:
    """Another tenant's router firewall: what check_firewall would decide, without naming its rules."""
    topo = q.topo
    if not group.admin_state_up:
        return Decider("firewall", False, "another tenant's router firewall is administratively down", "")
    policy = topo.firewall_policies.get(
        group.ingress_policy_id if side == "ingress" else group.egress_policy_id
    )
    if policy is None:
        return None
    rule = next(
        (
            r
            for rid in policy.rules
            if (r := topo.firewall_rules.get(rid)) is not None
            and _fw_rule_matches(r, q.protocol, q.port, src_ip, dst_ip, _version(q))
        ),
        None,
    )
    allows = rule is not None and rule.action == "allow"
    return Decider(
        "firewall",
        allows,
        f"another tenant's router firewall ({side}) {'allows' if allows else 'denies'} it",
        "",
    )


#: in order; the first denial decides
CHECKS: tuple[Check, ...] = (check_port_state, check_reachability, check_security_groups, check_firewall)


def explain(
    dataplane: Any,
    topology: Topology | None,
    source_port: str,
    destination: str,
    protocol: str = "tcp",
    port: int | None = None,
    visible: Callable[[str], bool] = lambda _tenant: True,
    with_trace: bool = True,
) -> Explanation:
    """Allowed or denied, and what decides it, for traffic from logical port `source_port` to
    `destination` (a port id or an IP address) on `protocol` ("tcp", "udp", "icmp", "any") and `port`.

    The verdict is the walk's (controller.debug.pathwalk: the packet a real VM sends, followed through the
    compiled flows hop by hop, through routers, static routes, VMs that forward, NAT and tunnels); the
    model's deciders name the reasons, and where their reasoning disagrees with the walk, the explanation
    says so and the walk wins. Without a dataplane (or with_trace=False) only the model answers.

    `topology` defaults to the dataplane's model (read under its lock). Raises ApiError for unknown ports,
    bad IPs or protocols; the caller authorizes (a tenant may ask about its own ports only).
    """
    if protocol not in PROTOCOLS:
        raise errors.invalid("protocol", f"must be one of {', '.join(PROTOCOLS)}")
    if port is not None and not (protocol in ("tcp", "udp") and 0 < port < 65536):
        raise errors.invalid("port", "a port number (1..65535) goes with tcp or udp only")
    lock = dataplane.state.lock if dataplane is not None else _NoLock()
    with lock:
        topo = topology if topology is not None else dataplane.state.topology
        q = _query(topo, source_port, destination, protocol, port, visible)
        deciders = [d for check in CHECKS for d in check(q)]
    dst_name = (
        convert.name_of("port", q.dst.id) if q.dst is not None and visible(q.dst.tenant) else str(q.dst_ip)
    )
    exp = Explanation(
        not any(not d.allows for d in deciders),
        "",
        deciders,
        convert.name_of("port", q.src.id),
        dst_name,
        protocol,
        port,
    )
    exp.verdict = _verdict(exp.allowed, deciders)
    if with_trace and dataplane is not None:
        _walk(dataplane, q, exp)
    return exp


def _verdict(allowed: bool, deciders: list[Decider]) -> str:
    if allowed:
        reasons = [d.description for d in deciders if d.allows]
        return "allowed, " + ("; ".join(dict.fromkeys(reasons)) if reasons else "nothing stops it")
    return "denied: " + "; ".join(dict.fromkeys(d.description for d in deciders if not d.allows))


def _walk(dataplane: Any, q: Query, exp: Explanation) -> None:
    """Walk the packet through the flows; the walk decides, the model's deciders name why."""
    dst_ip = q.dst_ip or _ip_of(q.dst, None, _version(q))
    if dst_ip is None:
        exp.notes.append(
            "no walk: the destination port has no address of the source's family (IPv4, or IPv6 for ports "
            "with IPv6 only); the verdict is the model's reasoning"
        )
        return
    v6 = netaddr.IPAddress(dst_ip).version == 6
    if dst_ip in {ip for _, ip in q.src.fixed_ips}:  # the VM's own stack delivers it, nothing is sent
        name = convert.name_of("port", q.src.id)
        itself = q.dst is None or q.dst.id == q.src.id
        why = (
            f"{dst_ip} is the source's own address: its own IP stack delivers it, nothing crosses the network"
        )
        if not itself:
            why += f", and {exp.destination} (the same address elsewhere) is never reached"
        exp.confirmed = exp.allowed == itself
        if not exp.confirmed:
            exp.notes.insert(0, _disagree(exp.allowed, exp.verdict, itself))
        exp.allowed, exp.deciders = itself, [Decider("network", itself, why, name)]
        exp.verdict = _verdict(itself, exp.deciders)
        return
    l4: dict[str, Any] = {"ip_proto": PROTOCOLS[q.protocol] or 1}
    if q.protocol in ("icmp", "any"):
        if v6:
            l4 = {"ip_proto": 58, "icmpv6_type": 128, "icmpv6_code": 0}
        else:
            l4.update({"icmpv4_type": 8, "icmpv4_code": 0})
        if q.protocol == "any":
            exp.notes.append(f"'any' is walked as an ICMP{'v6' if v6 else ''} echo request")
    elif q.port is not None:
        l4.update({f"{q.protocol}_src": 40000, f"{q.protocol}_dst": q.port})
    target = q.dst
    if target is not None and target.device_owner.startswith("network:"):  # a router's, a floating IP's...
        fip = q.topo.floatingips.get(target.device_id) if target.device_owner == OWNER_FLOATING_IP else None
        target = q.topo.ports.get(fip.port_id) if fip is not None and fip.port_id else None
    w = pathwalk.walk(dataplane, q.src, dst_ip, l4, target)
    exp.walk = w
    exp.trace = w.merged()
    allowed = w.outcome in pathwalk.PASSES
    model = exp.allowed
    exp.confirmed = allowed == model
    if w.reached is not None and (q.dst is None or q.dst != target) and q.visible(w.reached.tenant):
        exp.destination = convert.name_of("port", w.reached.id)
    exp.notes += [_hide(q, a) for a in w.assumptions]
    crossed = any(
        s.stage == "l3_lookup" and s.matched is not None
        for leg in w.legs
        if leg.trace is not None
        for h in leg.trace.hops
        for s in h.steps
    )
    unrouted = any(d.kind in ("isolation", "route") and not d.allows for d in exp.deciders)
    if (
        exp.confirmed
        and len(w.legs) <= 1
        and not w.assumptions
        and w.outcome != "answered"
        and not (crossed and unrouted)
    ):
        return  # the model's reasons, confirmed by the flows
    with dataplane.state.lock:
        path = _path_deciders(q, w)  # for a drop: how far it got, then why it stops
        walked = path if allowed else [d for d in path if d.allows] + _drop_deciders(q, w)
    if allowed:
        kept = [d for d in exp.deciders if d.allows and d.kind in ("security_group", "firewall", "network")]
    else:
        kept = [d for d in exp.deciders if not d.allows and d.kind == "port_state"]
    if not exp.confirmed:
        exp.notes.insert(0, _disagree(model, exp.verdict, allowed))
    exp.allowed = allowed
    walked = [
        dataclasses.replace(d, description=_hide(q, d.description), resource=_hide(q, d.resource))
        for d in walked
    ]
    exp.deciders = walked + [d for d in kept if d not in walked]
    exp.verdict = _verdict(allowed, exp.deciders)


def _disagree(model: bool, reasoning: str, walked: bool) -> str:
    said, walk = ("ALLOWED" if model else "DENIED"), ("ALLOWED" if walked else "DENIED")
    return (
        f"the model's reasoning over the graph of routers and interfaces says {said} ({reasoning}); the "
        f"packet walked through the flows is {walk}: the walk wins"
    )


def _hide(q: Query, text: str) -> str:
    """Names of ports the asker may not see, replaced (a tenant learns nothing of another's ports); for a
    tenant, also the flows and chassis a trace names (the operator's)."""
    for p in q.topo.ports.values():
        if not q.visible(p.tenant) and f"ports/{p.id}" in text:
            text = text.replace(f"ports/{p.id}", "a port of another tenant")
    if not q.visible(""):
        text = re.sub(r" by cookie=.*?(?= on | from |$)", "", text)
        for cid in q.topo.chassis:
            text = re.sub(rf" (on|from) {re.escape(cid)}\b", "", text)
    return text


def _path_deciders(q: Query, w: pathwalk.Walk) -> list[Decider]:
    """What carried the packet, leg by leg: the sender's route, routers and their static routes, VMs that
    forward it (and their security groups), NAT."""
    topo = q.topo
    out: list[Decider] = []
    for leg in w.legs:
        name = _hide(q, convert.name_of("port", leg.sender.id))
        src, dst = _addr(leg.packet, "src"), _addr(leg.packet, "dst")
        if leg.received_on is not None:
            out += _relay(_sg_side(q, leg.received_on, INGRESS, src))
            out.append(
                Decider("next_hop", True, f"{name}'s VM forwards it (assumed): {_hide(q, leg.route)}", name)
            )
            out += _relay(_sg_side(q, leg.sender, EGRESS, dst))
        elif "on-link" not in leg.route:
            out.append(Decider("route", True, f"{name} sends it {_hide(q, leg.route)}", name))
        answered = False
        for h in leg.trace.hops if leg.trace is not None else ():
            for s in h.steps:
                app, _, obj = s.owner.partition("/")
                if s.stage == "l3_lookup" and app == "l3" and s.matched is not None and obj in topo.routers:
                    match = s.matched.match_dict()
                    if match.get("icmpv4_type") == 8 or match.get("icmpv6_type") == 128:  # answered in flows
                        out.append(
                            Decider(
                                "router",
                                True,
                                f"routers/{obj} answers the echo request to its address {dst}",
                                f"routers/{obj}",
                            )
                        )
                        answered = True
                    elif not answered:
                        out.append(_route_decider(q, obj, match.get("ipv4_dst", match.get("ipv6_dst")), dst))
                elif (
                    s.stage in ("snat", "dnat")
                    and s.matched is not None
                    and any(getattr(a, "nat", None) is not None for a in s.matched.actions)
                ):
                    what = "source" if s.stage == "snat" else "destination"
                    out.append(
                        Decider("nat", True, f"{what} NAT in {s.stage} on {h.chassis} ({s.owner})", s.owner)
                    )
    last = w.ended
    if w.reached is not None and q.dst is None and last is not None:
        out += _sg_side(q, w.reached, INGRESS, _addr(last.packet, "src"))
    return list(dict.fromkeys(out))


def _relay(deciders: list[Decider]) -> list[Decider]:
    """Security-group deciders of a forwarding VM's ports: it receives and sends, it is neither end."""
    return [
        dataclasses.replace(
            d,
            description=d.description.replace("the destination port", "the next hop's port").replace(
                "the source port", "the forwarding port"
            ),
        )
        for d in deciders
    ]


def _route_decider(q: Query, router_id: str, prefix: Any, dst_ip: str) -> Decider:
    """The router's route that matched: a static route (named) or a connected subnet."""
    router = q.topo.routers[router_id]
    cidr = ""
    if prefix is not None:
        cidr = str(netaddr.IPNetwork("/".join(prefix) if isinstance(prefix, tuple) else str(prefix)).cidr)
    for dest, nexthop in router.routes:
        if cidr and str(netaddr.IPNetwork(dest).cidr) == cidr:
            return Decider(
                "route",
                True,
                f"static route {dest} via {nexthop} of routers/{router_id} routes {dst_ip}",
                f"routers/{router_id}",
            )
    return Decider(
        "router",
        True,
        f"routers/{router_id} routes {dst_ip} to its connected subnet {cidr}",
        f"routers/{router_id}",
    )


#: the kind of reason a drop in each stage has
_STAGE_KIND = {
    "classify": "port_state",
    "port_sec_in": "port_security",
    "acl_egress": "security_group",
    "acl_egress_commit": "security_group",
    "acl_ingress": "security_group",
    "acl_ingress_commit": "security_group",
    "fw_router_in": "firewall",
    "fw_router_out": "firewall",
    "l3_lookup": "route",
    "arp_resolve": "address",
    "l2_lookup": "network",
}


def _drop_deciders(q: Query, w: pathwalk.Walk) -> list[Decider]:
    """Why the walk stops: the stage that dropped it, named by the model (the security group, firewall
    rule, port security or route there)."""
    leg = w.ended
    if leg is None or leg.trace is None or w.outcome != "dropped":
        kind = {
            "no_route": "route",
            "unresolved": "address",
            "ttl": "route",
            "loop": "route",
            "not_sent": "port_state",
        }.get(w.outcome, "isolation")
        return [Decider(kind, False, _hide(q, w.verdict), "")]
    m = re.search(r"(?:dropped at|no flow matched in) (\w+)", w.verdict)
    stage = m.group(1) if m else ""
    kind = _STAGE_KIND.get(stage, "dataplane")
    sender = leg.sender
    name = _hide(q, convert.name_of("port", sender.id))
    if kind == "port_security":
        return [
            Decider(
                "port_security",
                False,
                f"port security of {name} drops it: "
                f"{_addr(leg.packet, 'src')} is not one of its addresses or allowed address pairs",
                name,
            )
        ]
    if kind == "security_group" and stage.startswith("acl_egress"):
        found = [d for d in _sg_side(q, sender, EGRESS, _addr(leg.packet, "dst")) if not d.allows]
        if found:
            return found
    if kind == "security_group" and stage.startswith("acl_ingress"):
        receiver = _receiver(q, w)
        if receiver is not None:
            found = [d for d in _sg_side(q, receiver, INGRESS, _addr(leg.packet, "src")) if not d.allows]
            if found:
                return found
    if kind in ("address", "route"):
        routed = [
            d
            for d in _path_deciders(q, pathwalk.Walk([leg], "dropped", ""))
            if d.kind in ("route", "router") and d.resource.startswith("routers/")
        ]
        if routed and kind == "address":
            why = (
                f"{routed[-1].description}, but no port has that next hop's address: the router cannot "
                "resolve it"
            )
            return [dataclasses.replace(routed[-1], allows=False, description=why)]
        if kind == "route":
            gw = q.topo.ports.get(q.topo.macs.get(str(leg.packet.get("eth_dst")), ""))
            router = "the router"
            if gw is not None and gw.device_owner == OWNER_ROUTER_INTERFACE:
                router = f"routers/{gw.device_id}"
            return [
                Decider(
                    "route",
                    False,
                    f"{router} has no route to {_addr(leg.packet, 'dst')} (no "
                    "connected subnet, static route or external gateway covers it)",
                    router if router.startswith("routers/") else "",
                )
            ]
    if kind == "firewall":
        found = [d for d in check_firewall(q) if not d.allows]
        if found:
            return found
    return [Decider(kind, False, _hide(q, w.verdict), "")]


def _receiver(q: Query, w: pathwalk.Walk) -> Port | None:
    """The port a dropped leg was heading for: the destination, or the holder of its address."""
    leg = w.ended
    assert leg is not None
    ip = _addr(leg.packet, "dst")
    if q.dst is not None and ip in {a for _, a in q.dst.fixed_ips}:
        return q.dst
    hosts = {h.chassis for h in leg.trace.hops} if leg.trace is not None else set()
    return next(
        (
            p
            for p in q.topo.ports.values()
            if p.binding_chassis in hosts
            and first_hop.holds(p, ip)
            and not p.device_owner.startswith("network:")
        ),
        None,
    )


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _query(
    topo: Topology,
    source_port: str,
    destination: str,
    protocol: str,
    port: int | None,
    visible: Callable[[str], bool],
) -> Query:
    src = topo.ports.get(source_port)
    if src is None or not visible(src.tenant):
        raise errors.not_found("port", source_port)
    dst: Port | None = None
    dst_ip: str | None = None
    try:
        dst_ip = str(netaddr.IPAddress(destination, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        dst_ip = None
    if dst_ip is None:
        ident = destination.removeprefix("ports/")
        dst = topo.ports.get(ident)
        if dst is None or not visible(dst.tenant):
            raise errors.not_found("port", ident)
    via = None
    if dst_ip is not None:
        # an address of the source's own network, or of a network a router joins it to, is that port
        ip = netaddr.IPAddress(dst_ip)
        nets = [src.network_id]
        if not any(ip in netaddr.IPNetwork(s.cidr) for s in topo.subnets_of(src.network_id)):
            via = _routed(topo, src.network_id, ip)
            nets = [via[1]] if via is not None else []
        for net in nets:
            for s in topo.subnets_of(net):
                pid = topo.ip_owner.get(s.id, {}).get(int(ip))
                if pid is not None and pid in topo.ports:
                    dst = topo.ports[pid]
                    break
    return Query(topo, src, dst, dst_ip, protocol, port, visible, via)


def _routed(topo: Topology, network_id: str, ip: netaddr.IPAddress) -> tuple[str, str] | None:
    """(router, network) for an address outside the network's subnets that one of its routers has an
    interface subnet for."""
    routers_of = getattr(topo, "routers_of", None)
    if routers_of is None:
        return None
    for router in sorted(routers_of(network_id)):
        for p in topo.router_ports(router):
            if p.network_id != network_id and any(
                ip in netaddr.IPNetwork(s.cidr) for s in topo.subnets_of(p.network_id)
            ):
                return router, p.network_id
    return None


def _ipv4(p: Port) -> str | None:
    return next((ip for _, ip in p.fixed_ips if netaddr.IPAddress(ip).version == 4), None)


def _addr(packet: Mapping[str, Any], side: str) -> str:
    """The packet's IPv4 or IPv6 source / destination address."""
    return str(packet.get(f"ipv4_{side}", packet.get(f"ipv6_{side}")))
