"""App ids (the cookie's app byte) and group-id allocation, in one place."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from apps import plugin
from flows.cookie import Cookie, CookieRegistry

DEFAULTS = 1
CLASSIFY = 2
L2 = 3
ARP = 4
EGRESS = 5
L3 = 6
NAT = 7
SECURITY_GROUP = 8
PORT_SECURITY = 9
FIREWALL = 10
DHCP = 11
LB = 12
VPN = 13

APP_NAMES = {
    DEFAULTS: "defaults",
    CLASSIFY: "classify",
    L2: "l2",
    ARP: "arp",
    EGRESS: "egress",
    L3: "l3",
    NAT: "nat",
    SECURITY_GROUP: "security_group",
    PORT_SECURITY: "port_security",
    FIREWALL: "firewall",
    DHCP: "dhcp",
    LB: "lb",
    VPN: "vpn",
}


def ct_zone(port_key: int) -> int:
    """The conntrack zone of a port on its chassis (both directions of its security groups and the router
    firewall checks made there), and of a router on its gateway chassis (its gateway port's zone) or a load
    balancer's hairpin (its VIP port's): the key's low 16 bits (topology/portkeys.py), unique among the VM
    ports bound to one chassis, and apart from every gateway's and VIP's zone on every chassis, so no two
    ports there, or a port and a router, share conntrack state, whatever addresses their tenants use."""
    zone = port_key & 0xFFFF
    if not 0 < port_key <= 0xFFFFFFFF or not zone:
        raise ValueError(f"port key {port_key:#x} holds no conntrack zone (low 16 bits 1..65535)")
    return zone


#: the meter every flow sending packets to the controller goes through (installed by the OpenFlow app on
#: each switch's connection): packets per second, the excess dropped in the switch
PACKET_IN_METER = 1
PACKET_IN_RATE_PPS = 100


#: per-port DHCP meters: DHCP_METER_BASE + the port's zone (unique on its chassis, as meters are per switch;
#: zones < 2**16, so ids 65537..131071: clear of the packet-in meter, and inside the 262144 meters OVS 3.1's
#: userspace datapath holds)
DHCP_METER_BASE = 1 << 16


def dhcp_meter(port_key: int) -> int:
    """The meter a port's DHCP requests pass on their way to the controller (on the port's chassis)."""
    try:
        return DHCP_METER_BASE + ct_zone(port_key)
    except ValueError:
        raise ValueError(f"port key {port_key:#x} has no DHCP meter (its zone is 0)") from None


@lru_cache(maxsize=1 << 18)
def cookie(app: int, owner_id: str) -> Cookie:
    """The cookie of an app's flows for an owner (a value: one object per (app, owner) while cached; its
    hash and checks cost ~2 us, paid per flow of every port on every chassis's compile otherwise)."""
    return Cookie.for_owner(app, owner_id)


def flood_all_group(network_key: int) -> int:
    """Replicates to local ports, each remote chassis hosting the network, or the physical uplink."""
    return network_key * 2


def flood_local_group(network_key: int) -> int:
    """Replicates to local ports only: for packets that came in from a tunnel or the physical network."""
    return network_key * 2 + 1


#: neighbour-solicitation groups: above the flood groups (< 2**25), below the load balancers' (2**30)
ND_GROUP_BASE = 1 << 26


def nd_group(network_key: int, local: bool) -> int:
    """Replicates an unanswered solicited-node NS to the ports that may hold an address the model does not
    know (local: to local ones only, for what came in from a tunnel or the physical network)."""
    return ND_GROUP_BASE + network_key * 2 + (1 if local else 0)


#: load-balancer select groups live above every flood group (network keys < 2**24, flood ids < 2**25)
LB_GROUP_BASE = 1 << 30


def lb_group(listener_key: int, kind: int) -> int:
    """A listener's select group (kind 0: VM clients, 1: through a floating IP of the VIP), from its key (unique,
    < 2**28, allocated by the model): no two listeners share a group."""
    if kind not in (0, 1):
        raise ValueError(f"load-balancer group kind {kind} is not 0 or 1")
    if not 0 < listener_key < 1 << 28:
        raise ValueError(f"listener key {listener_key} outside 1..2**28-1")
    return LB_GROUP_BASE | (kind << 28) | listener_key


def registry_for(owner_ids: Iterable[str]) -> CookieRegistry:
    """A cookie registry naming every app and the given owners (model object ids), for dumps and traces.
    Two owners whose 32-bit hashes collide keep the first name (the cookie cannot tell them apart)."""
    reg = CookieRegistry()
    names = {**APP_NAMES, **plugin.app_names()}
    for app, name in names.items():
        reg.register_app(app, name)
    for owner in ("pipeline", *owner_ids):
        for app in names:
            try:
                reg.register(app, owner)
            except ValueError:
                pass
    return reg
