"""dhcp: a port's address configuration requests go to the controller, through a meter of its own: DHCPv4
(controller/services/dhcp.py answers), DHCPv6 (controller/services/dhcp6.py) and IPv6 router solicitations
(controller/services/ra.py answers with the router advertisements of the port's network).

For each port plugged on this chassis (router and floating-IP ports are not clients):

- dhcp, MATCH: from the port (SRC_PORT = its key) with its own MAC -> meter (the port's, apps.ids.dhcp_meter,
  shared by the three) + packet-in; nothing else happens to the request (it is never flooded). UDP 68 -> 67
  if the port has an IPv4 address on a subnet with DHCP enabled; UDP 546 -> 547 if it has an IPv6 address on
  a subnet DHCPv6 answers (topology/ipv6.py dhcpv6_mode); ICMPv6 router solicitation if its network has an
  IPv6 subnet with an ipv6_ra_mode (the controller advertises for the subnet's router there);
- the meter itself (a MeterEntry of the port's unit: the sync engine adds it before the flow that uses it
  and deletes it after), `rate_pps` packets/s with a burst of as many: one VM cannot flood the controller.

Every other DHCP or DHCPv6 request (an unknown MAC, a port without a DHCP subnet) is dropped by LOW flows
per chassis: it gets no answer, and other VMs never see it. A router solicitation on a network without an
ipv6_ra_mode subnet passes (an external router may answer it, as in Neutron's modes left unset). Everything
else passes to lb (the stage default).
"""

from __future__ import annotations

import netaddr

from apps import ids
from apps.view import View
from flows.actions import Controller, Meter
from flows.flow import Flow, MeterEntry
from flows.pipeline import LOW, MATCH, SRC_PORT
from topology import ipv6
from topology.records import Port, Subnet

IPV4, IPV6 = 0x0800, 0x86DD
UDP, ICMPV6 = 17, 58
CLIENT_PORT, SERVER_PORT = 68, 67
DHCPV6_CLIENT_PORT, DHCPV6_SERVER_PORT = 546, 547
ND_ROUTER_SOLICIT = 133
#: packets/s each port may send the controller (config dhcp_rate_pps); the burst is as many packets
DEFAULT_RATE_PPS = 10
_REQUEST = {"eth_type": IPV4, "ip_proto": UDP, "udp_src": CLIENT_PORT, "udp_dst": SERVER_PORT}
_REQUEST6 = {"eth_type": IPV6, "ip_proto": UDP, "udp_src": DHCPV6_CLIENT_PORT, "udp_dst": DHCPV6_SERVER_PORT}
_SOLICIT = {"eth_type": IPV6, "ip_proto": ICMPV6, "icmpv6_type": ND_ROUTER_SOLICIT}


def dhcp_address(view: View, port: Port) -> tuple[Subnet, str] | None:
    """The port's first IPv4 address on a subnet with DHCP enabled, with that subnet (None: no DHCP)."""
    if port.device_owner.startswith("network:"):
        return None  # router interfaces and gateways, floating-IP ports: not DHCP clients
    for subnet_id, ip in port.fixed_ips:
        sub = view.topo.subnets.get(subnet_id)
        if sub is not None and sub.enable_dhcp and sub.ip_version == 4 and netaddr.IPAddress(ip).version == 4:
            return sub, ip
    return None


def dhcpv6_addresses(view: View, port: Port) -> list[tuple[Subnet, str]]:
    """The port's IPv6 addresses on subnets DHCPv6 answers on (stateful or stateless), with the subnets."""
    if port.device_owner.startswith("network:"):
        return []
    out = []
    for subnet_id, ip in port.fixed_ips:
        sub = view.topo.subnets.get(subnet_id)
        if sub is not None and ipv6.dhcpv6_mode(sub) is not None:
            out.append((sub, ip))
    return out


def advertised(view: View, network_id: str) -> bool:
    """Does the controller send router advertisements on the network (an IPv6 subnet with an ipv6_ra_mode)?"""
    return any(s.ip_version == 6 and s.ipv6_ra_mode for s in view.topo.subnets_of(network_id))


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow | MeterEntry]:
    if view.local_ofport(chassis_id, port) is None or port.device_owner.startswith("network:"):
        return []
    wanted = []
    if dhcp_address(view, port) is not None:
        wanted.append(_REQUEST)
    if dhcpv6_addresses(view, port):
        wanted.append(_REQUEST6)
    if advertised(view, port.network_id):
        wanted.append(_SOLICIT)
    if not wanted:
        return []
    meter = ids.dhcp_meter(port.key)
    rate = view.dhcp_rate_pps
    return [
        MeterEntry(meter, rate, rate),
        *(
            Flow(
                "dhcp",
                MATCH,
                match={SRC_PORT.field: port.key, "eth_src": port.mac, **request},
                actions=(Meter(meter), Controller()),
                cookie=ids.cookie(ids.DHCP, port.id),
            )
            for request in wanted
        ),
    ]


def chassis_flows() -> list[Flow]:
    """DHCP and DHCPv6 requests no port flow claimed: dropped (an unknown MAC gets nothing; nothing is
    flooded)."""
    c = ids.cookie(ids.DHCP, "pipeline")
    return [Flow("dhcp", LOW, match=_REQUEST, cookie=c), Flow("dhcp", LOW, match=_REQUEST6, cookie=c)]
