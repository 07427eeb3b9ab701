"""IPv6 address configuration of a subnet (Neutron's ipv6_ra_mode / ipv6_address_mode) and the addresses it
implies: EUI-64 interface identifiers from a MAC (RFC 4291 appendix A), the link-local address of a MAC."""

from __future__ import annotations

import netaddr

from topology.records import Subnet

SLAAC, STATEFUL, STATELESS = "slaac", "dhcpv6-stateful", "dhcpv6-stateless"
MODES = (SLAAC, STATEFUL, STATELESS)
#: modes whose ports form their own address (SLAAC) from the prefix and their MAC: a /64 is needed
AUTO_ADDRESS_MODES = (SLAAC, STATELESS)


def is_auto_address(sub: Subnet) -> bool:
    """Ports of the subnet get the EUI-64 address of their MAC (Neutron's is_auto_address_subnet)."""
    return sub.ipv6_address_mode in AUTO_ADDRESS_MODES or sub.ipv6_ra_mode in AUTO_ADDRESS_MODES


def eui64_address(cidr: str, mac: str) -> str:
    """The address a host with `mac` forms by SLAAC in the /64 `cidr`."""
    net = netaddr.IPNetwork(cidr)
    iid = int(netaddr.EUI(mac).ipv6(0))  # the interface identifier, U/L bit flipped, ff:fe in the middle
    return str(netaddr.IPAddress(int(net.network) | iid, 6))


def link_local(mac: str) -> str:
    """fe80::/64 with the MAC's EUI-64 interface identifier (a router interface's RA source address)."""
    return str(netaddr.EUI(mac).ipv6_link_local())


def dhcpv6_mode(sub: Subnet) -> str | None:
    """What DHCPv6 answers on the subnet: STATEFUL (addresses and options), STATELESS (options only) or None.
    enable_dhcp on a v6 subnet without an address mode answers statefully (as Neutron's dnsmasq does)."""
    if sub.ip_version != 6 or not sub.enable_dhcp or sub.ipv6_address_mode == SLAAC:
        return None
    if sub.ipv6_address_mode == STATELESS:
        return STATELESS
    if sub.ipv6_address_mode == "" and sub.ipv6_ra_mode in AUTO_ADDRESS_MODES:
        return STATELESS if sub.ipv6_ra_mode == STATELESS else None
    return STATEFUL
