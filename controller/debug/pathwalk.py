"""Follow a packet from VM to VM through the flows, the way the dataplane carries it: explain's verdict.

A leg is one packet a VM sends: built as the VM builds it (its route: on-link, host route or default
gateway; the next hop's MAC as ARP or neighbour discovery answers it; IPv4 or IPv6), traced through every chassis it reaches
(controller.debug.trace). When a leg delivers the packet to a port that is not its destination but was sent it
as a next hop (eth_dst its MAC, ipv4_dst another address: the next hop of a static route, a VM that
forwards between networks), the walk assumes that VM forwards (ip_forward=1 inside it, which the
controller cannot see, and says so) and continues with the new packet it sends: from its port with its MAC
as source, the TTL minus one, and the next hop of its own route as destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import netaddr

from controller.api import convert
from controller.debug import first_hop
from controller.debug.trace import Hop, TraceResult, trace
from topology.errors import ApiError
from topology.model import Topology
from topology.records import Port

#: legs before the walk gives up (a forwarding loop between VMs)
MAX_LEGS = 8
#: outcomes in which the packet gets where it was sent
PASSES = ("delivered", "answered", "outside")
BROADCAST = "ff:ff:ff:ff:ff:ff"


@dataclass
class Leg:
    """One packet sent by one VM, and its trace."""

    sender: Port
    route: str  # how the sender chose eth_dst, in words
    packet: dict[str, Any]  # the headers it sends
    trace: TraceResult | None = None
    received_on: Port | None = None  # a forwarding VM's port the packet came in on (None: the source)

    @property
    def forwarded(self) -> bool:
        return self.received_on is not None


@dataclass
class Walk:
    """Where the packet ends: `outcome` is delivered (to `reached`), answered (a router answered the ping),
    outside (left through a physical network towards an address no port of ours has), or a reason it stops:
    dropped, no_route, unresolved, ttl, loop, not_sent."""

    legs: list[Leg]
    outcome: str
    verdict: str
    reached: Port | None = None
    assumptions: list[str] = field(default_factory=list)

    @property
    def ended(self) -> Leg | None:
        return self.legs[-1] if self.legs else None

    def merged(self) -> TraceResult | None:
        """All legs as one trace: the hops of every leg, a forwarded leg's first hop saying so."""
        traces = [leg.trace for leg in self.legs if leg.trace is not None]
        if not traces:
            return None
        hops: list[Hop] = []
        for leg in self.legs:
            if leg.trace is None:
                continue
            for i, h in enumerate(leg.trace.hops):
                if i == 0 and leg.forwarded:
                    h.came_from = (
                        f"{convert.name_of('port', leg.sender.id)}: its VM forwards the packet "
                        f"(assumed), a new packet: {leg.route}"
                    )
                hops.append(h)
        return TraceResult(traces[0].source, hops, self.verdict, traces[0].flows)

    def path(self) -> list[str]:
        """Each leg in a line: who sends, how it chose the next hop, the chassis, where it ended."""
        out = []
        for leg in self.legs:
            chassis = " -> ".join(dict.fromkeys(h.chassis for h in leg.trace.hops)) if leg.trace else ""
            who = convert.name_of("port", leg.sender.id)
            fwd = " (forwards, assumed)" if leg.forwarded else ""
            out.append(
                f"{who}{fwd}: {leg.route}; through {chassis or 'nothing'}: "
                f"{leg.trace.verdict if leg.trace else 'not sent'}"
            )
        return out


def walk(
    dataplane: Any,
    source: Port,
    dst_ip: str,
    l4: Mapping[str, Any],
    target: Port | None = None,
    flows: str = "desired",
) -> Walk:
    """Walk a packet from port `source` to `dst_ip` (`l4`: ip_proto and tcp/udp ports, icmp type) through
    the `flows` ("desired" or "installed"), VM by VM. `target`: the port expected to receive it, if any."""
    topo: Topology = dataplane.state.topology
    legs: list[Leg] = []
    assumptions: list[str] = []
    sender, ports = source, [source]
    received_on: Port | None = None
    v = netaddr.IPAddress(dst_ip).version
    fam = f"ipv{v}"
    with dataplane.state.lock:
        src_ip = next((ip for _, ip in source.fixed_ips if netaddr.IPAddress(ip).version == v), None)
    if src_ip is None:
        return Walk(legs, "not_sent", f"{_port(source)} has no IPv{v} address: it sends no IPv{v} packet")
    base: dict[str, Any] = {
        "eth_type": 0x0800 if v == 4 else 0x86DD,
        f"{fam}_src": src_ip,
        f"{fam}_dst": dst_ip,
        "nw_ttl": 64,
        **l4,
    }
    seen: set[str] = set()
    for _ in range(MAX_LEGS):
        with dataplane.state.lock:
            r = first_hop.route(topo, ports, base[f"{fam}_dst"])
        who = _port(sender)
        if r is None:
            return Walk(
                legs,
                "no_route",
                f"{who} has no route to {base[f'{fam}_dst']}: it is on none of its "
                "subnets, which have no gateway or host route for it",
                assumptions=assumptions,
            )
        if r.holder is None:
            how = (
                f"{base[f'{fam}_dst']} is on-link for {_port(r.port)}"
                if r.on_link
                else f"{_port(r.port)} sends {base[f'{fam}_dst']} to its {r.via}"
            )
            return Walk(
                legs,
                "unresolved",
                f"{how}, but no port of networks/{r.port.network_id} has "
                f"{r.next_hop}: {'ARP' if v == 4 else 'neighbour discovery'} for it is not answered, "
                "nothing is sent",
                assumptions=assumptions,
            )
        packet = {**base, "eth_src": r.port.mac, "eth_dst": r.holder.mac}
        leg = Leg(r.port, _route_words(r), packet, received_on=received_on)
        legs.append(leg)
        try:
            leg.trace = trace(dataplane, port_id=r.port.id, headers=packet, source=flows)
        except ApiError as err:
            return Walk(
                legs, "not_sent", f"{_port(r.port)} cannot send it: {err.message}", assumptions=assumptions
            )
        with dataplane.state.lock:
            outcome = _leg_end(topo, leg.trace, base[f"{fam}_dst"], dst_ip)
        if outcome[0] in ("delivered", "answered", "outside"):
            kind, port, words = outcome
            if kind == "delivered" and target is not None and port is not None and port.id != target.id:
                return Walk(
                    legs, "dropped", f"delivered to {_port(port)}, not {_port(target)}", port, assumptions
                )
            return Walk(legs, kind, words, port, assumptions)
        kind, fwd, words = outcome
        if kind != "forward" or fwd is None:
            return Walk(legs, "dropped", words, assumptions=assumptions)
        out = _delivery(leg.trace, fwd)
        ttl = int(out.get("nw_ttl", 64)) - 1
        with dataplane.state.lock:
            host = first_hop.host_ports(topo, fwd)
        if fwd.id in seen:
            return Walk(
                legs,
                "loop",
                f"{_port(fwd)} gets the packet a second time: a forwarding loop",
                assumptions=assumptions,
            )
        seen.add(fwd.id)
        assumptions.append(
            f"{_port(fwd)} is not {out.get(f'{fam}_dst')} but its next hop: assumed its VM "
            f"({'device ' + fwd.device_id if fwd.device_id else 'one port'}) forwards "
            "(ip_forward=1 inside the VM, which the controller cannot see)"
        )
        if ttl <= 0:
            return Walk(legs, "ttl", f"the TTL expires in {_port(fwd)}'s VM", assumptions=assumptions)
        base = {**{k: v for k, v in out.items() if k in _CARRIED}, "nw_ttl": ttl}
        sender, ports, received_on = fwd, host, fwd
    return Walk(legs, "loop", f"more than {MAX_LEGS} VMs forward it: a loop?", assumptions=assumptions)


#: what a forwarding VM keeps of the packet it forwards (L3 and up; it builds a new Ethernet header)
_CARRIED = (
    "eth_type",
    "ipv4_src",
    "ipv4_dst",
    "ipv6_src",
    "ipv6_dst",
    "ip_proto",
    "tcp_src",
    "tcp_dst",
    "udp_src",
    "udp_dst",
    "icmpv4_type",
    "icmpv4_code",
    "icmpv6_type",
    "icmpv6_code",
)


def _port(p: Port) -> str:
    return convert.name_of("port", p.id)


def _route_words(r: first_hop.Route) -> str:
    if r.on_link:
        return f"{r.next_hop} is on-link: to {_port(r.holder)}" if r.holder else f"{r.next_hop} is on-link"
    if r.holder is None:
        return f"to its {r.via}, which no port has"
    owner = r.holder.device_owner
    of = (
        f" ({owner.removeprefix('network:')} of {'routers/' if owner.startswith('network:router') else ''}"
        f"{r.holder.device_id})"
        if owner and r.holder.device_id
        else ""
    )
    return f"to its {r.via} = {_port(r.holder)}{of}"


def _delivery(res: TraceResult, port: Port) -> Mapping[str, Any]:
    name = _port(port)
    return next(o.headers for h in res.hops for o in h.outputs if o.kind == "vif" and o.port == name)


def _leg_end(
    topo: Topology,
    res: TraceResult,
    leg_dst: str,
    dst_ip: str,
) -> tuple[str, Port | None, str]:
    """How one leg ends: (delivered | answered | outside | forward | dropped, the port, words)."""
    forward: Port | None = None
    ignored = []
    for h in res.hops:
        for o in h.outputs:
            echo_reply = (o.headers.get("ipv4_src") == leg_dst and o.headers.get("icmpv4_type") == 0) or (
                o.headers.get("ipv6_src") == leg_dst and o.headers.get("icmpv6_type") == 129
            )
            if o.kind == "in_port" and echo_reply:
                return "answered", None, f"{leg_dst} answers the echo request in flows (a router's address)"
            if o.kind != "vif":
                continue
            p = topo.ports.get(o.port.removeprefix("ports/"))
            if p is None:
                continue
            eth_dst = str(o.headers.get("eth_dst", "")).lower()
            if eth_dst not in (p.mac.lower(), BROADCAST):
                ignored.append(o.port)  # a flooded copy to someone else's MAC: its NIC drops it
                continue
            ip = str(o.headers.get("ipv4_dst", o.headers.get("ipv6_dst", "")))
            if ip and first_hop.holds(p, ip):
                return "delivered", p, f"delivered to {o.port} on {o.chassis}"
            if eth_dst == p.mac.lower() and forward is None:
                forward = p
    if forward is not None:
        return "forward", forward, f"to next hop {_port(forward)}"
    leaves = [
        o
        for h in res.hops
        for o in h.outputs
        if o.kind == "physical"
        and not any(x.came_from == h.chassis and x.chassis != h.chassis for x in res.hops)
    ]
    if leaves and not _ours(topo, dst_ip):
        o = leaves[0]
        src = o.headers.get("ipv4_src", o.headers.get("ipv6_src"))
        nat = f", source {src}" if src else ""
        return (
            "outside",
            None,
            (
                f"leaves through physical network {o.port} from {o.chassis}{nat} towards "
                f"{dst_ip}, which no port here has: beyond it, nothing is modelled"
            ),
        )
    why = res.verdict
    if ignored:
        why = (
            f"flooded to {', '.join(dict.fromkeys(ignored))}, which drop a frame for another MAC; "
            f"nobody receives it ({res.verdict})"
        )
    return "dropped", None, why


def _ours(topo: Topology, ip: str) -> bool:
    """Does some port (a VM's or a floating IP's) have this address?"""
    n = int(netaddr.IPAddress(ip))
    return any(n in owners for owners in topo.ip_owner.values())
