"""Distributed routing: every chassis hosting a network of a router routes its packets locally.

A packet addressed to a router interface MAC enters the router's own datapath (l2 app), then:
- l3_lookup (DATAPATH = router): longest prefix wins (priority grows with the prefix length; a connected
  subnet beats a static route of the same length): dec_ttl once, eth_src := the egress interface's MAC,
  NEXT_HOP := the destination (connected) or the route's next hop, DATAPATH := the egress network;
  an ICMP echo request to one of the router's own addresses is turned into the reply and routed back,
  leaving with TTL 64 like any packet the router sends itself (apps/echo.py);
- arp_resolve (DATAPATH = egress network): NEXT_HOP -> eth_dst from the model (every port is known), through
  mac_lookup: the same flow per address as ARP answers (apps/arp.py);
- snat (default) resubmits to l2_lookup in the egress network, which delivers like any L2 packet.
Each router is its own datapath, so two tenants' routers with the same CIDRs never mix.

IPv6 is routed the same way (east-west): the router's IPv6 interfaces and IPv6 static routes match ipv6_dst,
the hop limit is decremented, NEXT_HOP6 (xxreg3) carries the next hop to mac_lookup, and an ICMPv6 echo
request to one of the router's IPv6 addresses is answered. Through a dual-stack external gateway IPv6 is
routed to and from the external network untranslated (apps/nat.py).
"""

from __future__ import annotations

import netaddr

from apps import echo, ids, nat, vpn
from apps.view import View
from flows.actions import DecTtl, Goto, Move, Resubmit, SetField, WriteMetadata
from flows.flow import Flow
from flows.pipeline import HIGH, MATCH, NEXT_HOP, NEXT_HOP6, Register
from topology.records import OWNER_ROUTER_INTERFACE, Port, Router

IPV4, IPV6 = 0x0800, 0x86DD


def _interfaces(view: View, router: Router) -> list[tuple[Port, str, netaddr.IPNetwork]]:
    """(port, address, subnet CIDR) of the router's interfaces (both families) whose network is up."""
    out = []
    for port in view.topo.router_ports(router.id):
        if port.device_owner != OWNER_ROUTER_INTERFACE or not view.distributed(port):
            continue
        for subnet_id, ip in port.fixed_ips:
            subnet = view.topo.subnets.get(subnet_id)
            if subnet is not None:
                out.append((port, ip, netaddr.IPNetwork(subnet.cidr)))
    return out


def _family(router: Router, version: int) -> tuple[dict[str, int], str, Register]:
    """(match on the router and the family, destination field, next-hop register) for IPv4 or IPv6."""
    if version == 6:
        return {"metadata": router.key, "eth_type": IPV6}, "ipv6_dst", NEXT_HOP6
    return {"metadata": router.key, "eth_type": IPV4}, "ipv4_dst", NEXT_HOP


def _prio(prefix: netaddr.IPNetwork, connected: int) -> int:
    """Longest prefix first (IPv4 and IPv6 alike), a connected subnet above a route of the same length."""
    return 2 * prefix.prefixlen + connected


def router_flows(view: View, chassis_id: str, router: Router) -> list[Flow]:
    if not router.admin_state_up:
        return []
    interfaces = _interfaces(view, router)
    routes_here = any(view.hosts(chassis_id, port.network_id) for port, _ip, _cidr in interfaces)
    gateway = nat.router_flows(view, chassis_id, router, routes_here)
    gateway += vpn.router_flows(view, chassis_id, router, routes_here)
    if not routes_here:
        return gateway
    c = ids.cookie(ids.L3, router.id)
    out = []
    for port, ip, cidr in interfaces:
        net = view.topo.networks[port.network_id]
        md, dst, nh = _family(router, cidr.version)
        # connected subnet: the destination itself is the next hop
        out.append(
            Flow(
                "l3_lookup",
                MATCH(_prio(cidr, 1)),
                match={**md, dst: str(cidr.cidr)},
                actions=(
                    DecTtl(),
                    SetField("eth_src", port.mac),
                    Move(dst, nh.field, nh.n_bits),
                    WriteMetadata(net.key),
                    Goto("arp_resolve"),
                ),
                cookie=c,
            )
        )
        # ping the router: answer in flows (the router's own reply, routed back)
        out.append(
            Flow(
                "l3_lookup",
                HIGH,
                match={**md, **echo.request(ip)},
                actions=(*echo.reply(ip), Resubmit("l3_lookup")),
                cookie=c,
            )
        )
    for dest, nexthop in router.routes:
        via = next(
            ((port, cidr) for port, _ip, cidr in interfaces if netaddr.IPAddress(nexthop) in cidr), None
        )
        if via is None:
            continue  # its next hop is on no interface (yet): unusable
        port, _cidr = via
        net = view.topo.networks[port.network_id]
        prefix = netaddr.IPNetwork(dest)
        md, dst, nh = _family(router, prefix.version)
        out.append(
            Flow(
                "l3_lookup",
                MATCH(_prio(prefix, 0)),
                match={**md, dst: str(prefix.cidr)},
                actions=(
                    DecTtl(),
                    SetField("eth_src", port.mac),
                    SetField(nh.field, int(netaddr.IPAddress(nexthop))),
                    WriteMetadata(net.key),
                    Goto("arp_resolve"),
                ),
                cookie=c,
            )
        )
    return out + gateway
