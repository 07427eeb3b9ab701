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
"""

from __future__ import annotations

import netaddr

from apps import echo, ids, nat, vpn
from apps.view import View
from flows.actions import DecTtl, Goto, Move, Resubmit, SetField, WriteMetadata
from flows.flow import Flow
from flows.pipeline import HIGH, MATCH, NEXT_HOP
from topology.records import OWNER_ROUTER_INTERFACE, Port, Router

IPV4 = 0x0800


def _interfaces(view: View, router: Router) -> list[tuple[Port, str, netaddr.IPNetwork]]:
    """(port, address, subnet CIDR) of the router's IPv4 interfaces whose network is up."""
    out = []
    for port in view.topo.router_ports(router.id):
        if port.device_owner != OWNER_ROUTER_INTERFACE or not view.distributed(port):
            continue
        for subnet_id, ip in port.fixed_ips:
            subnet = view.topo.subnets.get(subnet_id)
            if subnet is not None and subnet.ip_version == 4:
                out.append((port, ip, netaddr.IPNetwork(subnet.cidr)))
    return out


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
    md = {"metadata": router.key, "eth_type": IPV4}
    out = []
    for port, ip, cidr in interfaces:
        net = view.topo.networks[port.network_id]
        # connected subnet: the destination itself is the next hop
        out.append(
            Flow(
                "l3_lookup",
                MATCH(2 * cidr.prefixlen + 1),
                match={**md, "ipv4_dst": str(cidr.cidr)},
                actions=(
                    DecTtl(),
                    SetField("eth_src", port.mac),
                    Move("ipv4_dst", NEXT_HOP.field, 32),
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
        out.append(
            Flow(
                "l3_lookup",
                MATCH(2 * prefix.prefixlen),
                match={**md, "ipv4_dst": str(prefix.cidr)},
                actions=(
                    DecTtl(),
                    SetField("eth_src", port.mac),
                    SetField(NEXT_HOP.field, int(netaddr.IPAddress(nexthop))),
                    WriteMetadata(net.key),
                    Goto("arp_resolve"),
                ),
                cookie=c,
            )
        )
    return out + gateway
