"""port_sec_in: anti-spoofing for a port plugged on this chassis with port security enabled.

A frame from the port (SRC_PORT) goes on to acl_egress only if its eth_src is the port's MAC or an allowed
address pair's, and its source address is one that MAC may use:

- IPv4: ipv4_src one of the port's fixed IPs (its own MAC) or a pair's address / CIDR (with the pair's
  MAC); a DHCP client's discover/request from 0.0.0.0 (udp 68 -> 67);
- ARP: arp_sha = eth_src and arp_spa as for IPv4; ARP probes (request, arp_spa 0.0.0.0) too;
- IPv6: ipv6_src one of the MAC's IPv6 addresses or its EUI-64 link-local address; duplicate address
  detection (neighbour solicitation) from ::; a neighbour advertisement only for a target that is one of
  those addresses (receivers act on the target, not on the source).

Whatever the addresses, a VM never acts as a DHCP server (udp source port 67, DHCPv6 547) or a router
(router advertisements, redirects), and never sends VLAN-tagged frames: dropped at HIGH. Anything else
from the port drops (LOW), so the stage's DEFAULT pass-through only serves ports without port security.
Those drops are the same for every port: classify marks a secured port's packets (PORT_SECURED) and one
set of flows per chassis matches the mark (chassis_flows); only what the port may send is per port.

Priorities inside MATCH and HIGH grow with the prefix length of the source (or ND target), as in
longest-prefix routing, so an address that is both a fixed IP and inside a pair's CIDR matches one flow.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import netaddr

from apps import ids
from apps.view import View
from flows.actions import Goto
from flows.flow import Flow
from flows.pipeline import FLAGS, HIGH, LOW, MATCH, PORT_SECURED, SRC_PORT, flags_match
from topology.records import Port

IPV4, ARP, IPV6 = 0x0800, 0x0806, 0x86DD
UDP, ICMPV6 = 17, 58
DHCP_SERVER, DHCP_CLIENT, DHCPV6_SERVER = 67, 68, 547
ND_RA, ND_NS, ND_NA, ND_REDIRECT = 134, 135, 136, 137
VLAN_PRESENT = 0x1000
#: above every prefix length (IPv4 32, IPv6 128): the fixed-shape exceptions from the unspecified address
_UNSPECIFIED = 129
#: above the neighbour advertisements allowed at HIGH(1 + prefix length)
_TAGGED = 130
_PASS = (Goto("plugin_from_port"),)
OWNER = "pipeline"


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    if not port.port_security_enabled or view.local_ofport(chassis_id, port) is None:
        return []  # no flows: the stage's DEFAULT pass-through
    return list(_flows(port.id, port.key, port.mac, port.fixed_ips, port.allowed_address_pairs))


def chassis_flows() -> list[Flow]:
    """What every port with port security may never send, and the drop of whatever its own flows do not
    allow: shared by all of them (classify marks their packets PORT_SECURED), not one set per port."""
    c = ids.cookie(ids.PORT_SECURITY, OWNER)
    mark = {FLAGS.field: flags_match(set_=[PORT_SECURED])}
    return [
        Flow("port_sec_in", LOW, match=mark, cookie=c),  # no actions: everything not allowed drops
        # never a DHCP server or an IPv6 router, whatever its addresses
        Flow(
            "port_sec_in",
            HIGH,
            cookie=c,
            match={**mark, "eth_type": IPV4, "ip_proto": UDP, "udp_src": DHCP_SERVER},
        ),
        Flow(
            "port_sec_in",
            HIGH,
            cookie=c,
            match={**mark, "eth_type": IPV6, "ip_proto": UDP, "udp_src": DHCPV6_SERVER},
        ),
        # (OVS refuses a masked ICMP type: one flow each) neighbour advertisements only as allowed per port
        *(
            Flow(
                "port_sec_in",
                HIGH,
                cookie=c,
                match={**mark, "eth_type": IPV6, "ip_proto": ICMPV6, "icmpv6_type": t},
            )
            for t in (ND_RA, ND_REDIRECT, ND_NA)
        ),
        # a VLAN tag would smuggle the frame past every check here (they match whatever the tag)
        Flow(
            "port_sec_in", HIGH(_TAGGED), cookie=c, match={**mark, "vlan_vid": (VLAN_PRESENT, VLAN_PRESENT)}
        ),
    ]


def allowed_sources(
    mac: str, fixed_ips: Iterable[tuple[str, str]], pairs: Iterable[tuple[str, str]]
) -> dict[str, set[netaddr.IPNetwork]]:
    """Each MAC the port may send from -> the source networks (/32, /128 or a pair's CIDR) it may use."""
    out: dict[str, set[netaddr.IPNetwork]] = {mac: {netaddr.IPNetwork(ip) for _subnet, ip in fixed_ips}}
    for cidr, pair_mac in pairs:
        out.setdefault(pair_mac.lower(), set()).add(netaddr.IPNetwork(cidr).cidr)
    for m, nets in out.items():
        nets.add(netaddr.IPNetwork(str(netaddr.EUI(m).ipv6_link_local())))
    return out


def _masked(net: netaddr.IPNetwork) -> str | tuple[str, str]:
    return (
        str(net.ip)
        if net.prefixlen == (32 if net.version == 4 else 128)
        else (str(net.network), str(net.netmask))
    )


@lru_cache(maxsize=1 << 16)
def _flows(
    port_id: str,
    key: int,
    mac: str,
    fixed_ips: tuple[tuple[str, str], ...],
    pairs: tuple[tuple[str, str], ...],
) -> tuple[Flow, ...]:
    """Computed once per port version (the port's chassis asks again on every compile of the port)."""
    c = ids.cookie(ids.PORT_SECURITY, port_id)
    src = {SRC_PORT.field: key}
    out: list[Flow] = []
    for mac_, nets in sorted(allowed_sources(mac, fixed_ips, pairs).items()):
        l2 = {**src, "eth_src": mac_}
        out += [
            Flow(
                "port_sec_in",
                MATCH(_UNSPECIFIED),
                actions=_PASS,
                cookie=c,
                match={
                    **l2,
                    "eth_type": IPV4,
                    "ipv4_src": "0.0.0.0",
                    "ip_proto": UDP,
                    "udp_src": DHCP_CLIENT,
                    "udp_dst": DHCP_SERVER,
                },
            ),
            Flow(
                "port_sec_in",
                MATCH(_UNSPECIFIED),
                actions=_PASS,
                cookie=c,
                match={**l2, "eth_type": ARP, "arp_op": 1, "arp_sha": mac_, "arp_spa": "0.0.0.0"},
            ),
            Flow(
                "port_sec_in",
                MATCH(_UNSPECIFIED),
                actions=_PASS,
                cookie=c,
                match={**l2, "eth_type": IPV6, "ipv6_src": "::", "ip_proto": ICMPV6, "icmpv6_type": ND_NS},
            ),
        ]
        for net in sorted(nets, key=lambda n: (n.version, n.value, n.prefixlen)):
            prio = MATCH(net.prefixlen)
            if net.version == 4:
                out += [
                    Flow(
                        "port_sec_in",
                        prio,
                        actions=_PASS,
                        cookie=c,
                        match={**l2, "eth_type": IPV4, "ipv4_src": _masked(net)},
                    ),
                    Flow(
                        "port_sec_in",
                        prio,
                        actions=_PASS,
                        cookie=c,
                        match={**l2, "eth_type": ARP, "arp_sha": mac_, "arp_spa": _masked(net)},
                    ),
                ]
            else:
                out += [
                    Flow(
                        "port_sec_in",
                        prio,
                        actions=_PASS,
                        cookie=c,
                        match={**l2, "eth_type": IPV6, "ipv6_src": _masked(net)},
                    ),
                    Flow(
                        "port_sec_in",
                        HIGH(1 + net.prefixlen),
                        actions=_PASS,
                        cookie=c,
                        match={
                            **l2,
                            "eth_type": IPV6,
                            "ip_proto": ICMPV6,
                            "icmpv6_type": ND_NA,
                            "ipv6_nd_target": _masked(net),
                        },
                    ),
                ]
    return tuple(out)
