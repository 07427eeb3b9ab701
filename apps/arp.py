"""arp_nd and mac_lookup: ARP requests for any known port address are answered in flows, out the asking
port; the controller never sees them. A port asking about its own address (gratuitous ARP, duplicate
address detection) is not answered: its request goes on like any broadcast.

One flow per address serves ARP answers and routing both: mac_lookup maps (DATAPATH, NEXT_HOP) to the
MAC of the port holding the address, in MAC_LO/MAC_HI. arp_nd puts an ARP request's target in NEXT_HOP and
marks it ARP_ASK; mac_found then builds the reply from the registers (the same flow for every address).
arp_resolve (a routed packet, NEXT_HOP already set) resubmits to mac_lookup, and mac_found sets eth_dst.
A router interface's or a VIP's address is answered to ARP but never resolved for routing (as before:
nothing is routed to them through arp_resolve's port lookup).

IPv6 neighbour discovery takes the same way: arp_nd puts a neighbour solicitation's target in NEXT_HOP6,
mac_lookup finds the MAC (one flow per IPv6 address: the port's fixed IPs and, on a port with one, its
EUI-64 link-local address), mac_found turns the NS into the neighbour advertisement (S and O set; R too
for a router's address, ND_ROUTER) and sends it out the asking port. An NS is never flooded for an
address the model knows. Not answered, and passed on (dhcp, then l2_lookup, which gives a solicited-node
NS only to the ports that may hold addresses the model does not know, apps/l2.py): an NS
from the unspecified address (duplicate address detection: Linux, too, answers it only for an address it
holds, and a port may probe only its own addresses, port_security), a port asking about its own address,
and a target no port holds (it may be an allowed address pair, or a host outside on a provider network).
A routed IPv6 packet resolves NEXT_HOP6 through mac_lookup like IPv4 (no NS is ever sent by a router into a
tenant network; on an external network the controller solicits upstream next hops: apps/nat.py)."""

from __future__ import annotations

import socket
from functools import lru_cache

import netaddr

from apps import ids
from apps.view import View
from flows.actions import IN_PORT, Action, Goto, Move, Output, Resubmit, SetField, load
from flows.cookie import Cookie
from flows.flow import Flow
from flows.pipeline import (
    ARP_ASK,
    FLAGS,
    HIGH,
    LOOKED,
    LOW,
    MAC_HI,
    MAC_LO,
    MATCH,
    ND_ROUTER,
    NEXT_HOP,
    NEXT_HOP6,
    SRC_PORT,
    flags_match,
)
from topology.records import OWNER_ROUTER_INTERFACE, Port

ARP = 0x0806
IPV6 = 0x86DD
ICMPV6 = 58
ND_NS, ND_NA = 135, 136
#: an NA's flag bits (nd_reserved): Router, Solicited, Override
NA_R, NA_S, NA_O = 1 << 31, 1 << 30, 1 << 29
#: nd_options_type of a target link-layer address option
TLL = 2
OWNER = "pipeline"


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    net = view.topo.networks.get(port.network_id)
    if net is None or not view.present(port) or not view.hosts(chassis_id, net.id):
        return []
    return list(_lookup(port, net.key, port.binding_chassis == chassis_id, view.located(port)))


@lru_cache(maxsize=1 << 16)
def _lookup(port: Port, net_key: int, local: bool, routable: bool) -> tuple[Flow, ...]:
    """The same on every chassis (but for `local`): computed once per port version, not per chassis."""
    c = ids.cookie(ids.ARP, port.id)
    mac = _mac_int(port.mac)
    found = (
        load(MAC_LO.field, mac & 0xFFFFFFFF, MAC_LO.start, MAC_LO.end),
        load(MAC_HI.field, mac >> 32, MAC_HI.start, MAC_HI.end),
        Goto("mac_found"),
    )
    # a router interface or a VIP: answered to ARP only (routing resolves them through arp_resolve's flows)
    only_arp = {} if routable else {FLAGS.field: flags_match(set_=[ARP_ASK])}
    out = list(_nd_lookup(port, net_key, local, routable, found))
    for _subnet, ip in port.fixed_ips:
        if ":" in ip:  # IPv6 (the model's addresses are canonical: an IPv4 one has no colon)
            continue
        out.append(
            Flow(
                "mac_lookup",
                MATCH,
                match={"metadata": net_key, NEXT_HOP.field: _v4_int(ip), **only_arp},
                actions=found,
                cookie=c,
            )
        )
        if local:
            out.append(
                Flow(
                    "arp_nd",
                    HIGH,
                    match={
                        "metadata": net_key,
                        "eth_type": ARP,
                        "arp_op": 1,
                        "arp_tpa": ip,
                        SRC_PORT.field: port.key,
                    },
                    actions=(Goto("dhcp"),),
                    cookie=c,
                )
            )
    return tuple(out)


def _v4_int(ip: str) -> int:
    """A canonical dotted-quad IPv4 address as an integer (netaddr's parse costs ~5x more: at 100k ports
    it was a visible share of a chassis's first compile)."""
    return int.from_bytes(socket.inet_aton(ip), "big")


def _mac_int(mac: str) -> int:
    """A MAC address as an integer; the model's "aa:bb:cc:dd:ee:ff" without netaddr's parse."""
    if len(mac) == 17 and mac.count(":") == 5:
        return int(mac.replace(":", ""), 16)
    return int(netaddr.EUI(mac))


def v6_addresses(port: Port) -> list[str]:
    """The IPv6 addresses neighbour discovery answers for a port: its fixed IPs, and its EUI-64 link-local
    address when it has one of those (a router's link-local address is the one router advertisements come
    from)."""
    fixed = [ip for _s, ip in port.fixed_ips if ":" in ip]  # IPv6 (canonical addresses: see _lookup)
    if not fixed:
        return []
    link_local = str(netaddr.EUI(port.mac).ipv6_link_local())
    return list(dict.fromkeys([*fixed, link_local]))


def _nd_lookup(
    port: Port, net_key: int, local: bool, routable: bool, found: tuple[Action, ...]
) -> list[Flow]:
    c = ids.cookie(ids.ARP, port.id)
    router = port.device_owner == OWNER_ROUTER_INTERFACE
    only_ask = {} if routable else {FLAGS.field: flags_match(set_=[ARP_ASK])}
    mark = (load(FLAGS.field, 1, ND_ROUTER.bit, ND_ROUTER.bit),) if router else ()
    out = []
    for ip in v6_addresses(port):
        link_local = netaddr.IPAddress(ip).is_link_local()
        out.append(
            Flow(
                "mac_lookup",
                MATCH,
                match={
                    "metadata": net_key,
                    NEXT_HOP6.field: int(netaddr.IPAddress(ip)),
                    # a link-local address is never a routed packet's next hop (routes use global ones)
                    **(only_ask if not link_local else {FLAGS.field: flags_match(set_=[ARP_ASK])}),
                },
                actions=(*mark, *found),
                cookie=c,
            )
        )
        if local:
            out.append(
                Flow(
                    "arp_nd",
                    HIGH,
                    match={
                        "metadata": net_key,
                        "eth_type": IPV6,
                        "ip_proto": ICMPV6,
                        "icmpv6_type": ND_NS,
                        "ipv6_nd_target": ip,
                        SRC_PORT.field: port.key,
                    },
                    actions=(Goto("dhcp"),),
                    cookie=c,
                )
            )
    return out


def _mac_to(fld: str) -> tuple[Move, Move]:
    """Copy mac_lookup's answer (MAC_LO, MAC_HI) into the 48-bit field `fld`."""
    return (
        Move(MAC_LO.field, fld, 32, MAC_LO.start, 0),
        Move(MAC_HI.field, fld, 16, MAC_HI.start, 32),
    )


def chassis_flows() -> list[Flow]:
    """The shared part: ask mac_lookup, build the answer, and what happens when nobody has the address."""
    c = ids.cookie(ids.ARP, OWNER)
    ask = flags_match(set_=[ARP_ASK])
    routed = flags_match(clear=[ARP_ASK])
    return [
        Flow(
            "arp_nd",
            MATCH,
            match={"eth_type": ARP, "arp_op": 1},
            actions=(
                Move("arp_tpa", NEXT_HOP.field, 32),
                load(FLAGS.field, 1, ARP_ASK.bit, ARP_ASK.bit),
                Goto("mac_lookup"),
            ),
            cookie=c,
        ),
        # a neighbour solicitation (not duplicate address detection): its target into NEXT_HOP6
        Flow(
            "arp_nd",
            MATCH,
            match={"eth_type": IPV6, "ip_proto": ICMPV6, "icmpv6_type": ND_NS, "icmpv6_code": 0},
            actions=(
                Move("ipv6_nd_target", NEXT_HOP6.field, 128),
                load(FLAGS.field, 1, ARP_ASK.bit, ARP_ASK.bit),
                Goto("mac_lookup"),
            ),
            cookie=c,
        ),
        Flow(
            "arp_nd",
            MATCH(1),
            match={"eth_type": IPV6, "ipv6_src": "::", "ip_proto": ICMPV6, "icmpv6_type": ND_NS},
            actions=(Goto("dhcp"),),
            cookie=c,
        ),
        # nobody has it: the request goes on like any broadcast; a routed packet to arp_resolve's own flows
        Flow(
            "mac_lookup",
            LOW,
            match={FLAGS.field: ask},
            actions=(load(FLAGS.field, 0, ARP_ASK.bit, ARP_ASK.bit), Goto("dhcp")),
            cookie=c,
        ),
        Flow(
            "mac_lookup",
            LOW,
            match={FLAGS.field: routed},
            actions=(load(FLAGS.field, 1, LOOKED.bit, LOOKED.bit), Goto("arp_resolve")),
            cookie=c,
        ),
        # the reply: to the asker, from the answer's MAC, out the port it came in by
        Flow(
            "mac_found",
            MATCH,
            match={FLAGS.field: ask, "eth_type": ARP},
            actions=(
                Move("eth_src", "eth_dst", 48),
                *_mac_to("eth_src"),
                SetField("arp_op", 2),
                Move("arp_sha", "arp_tha", 48),
                Move("arp_spa", "arp_tpa", 32),
                Move("eth_src", "arp_sha", 48),
                Move(NEXT_HOP.field, "arp_spa", 32),
                Output(IN_PORT),
            ),
            cookie=c,
        ),
        *_nd_answer(c, ask),
        Flow(
            "mac_found",
            MATCH,
            match={FLAGS.field: routed},
            actions=(*_mac_to("eth_dst"), Goto("fw_router_out")),
            cookie=c,
        ),
        # a routed packet: a port's address is looked up once (below the learned neighbours, VIPs and the
        # router's own addresses at MATCH, above a gateway's ask-the-controller at LOW)
        Flow(
            "arp_resolve",
            LOW(50),
            match={FLAGS.field: flags_match(clear=[LOOKED])},
            actions=(Resubmit("mac_lookup"),),
            cookie=c,
        ),
    ]


def _nd_answer(c: Cookie, ask: tuple[int, int]) -> list[Flow]:
    """mac_found for an NS: first pass turns it into the NA (addresses swapped, the target's MAC as eth_src,
    type 136, R/S/O, the option's type made TLL), second pass (the packet is an NA now, which OVS requires
    before it sets nd_tll) writes the MAC into the option and sends it out the asking port."""
    icmp = {"eth_type": IPV6, "ip_proto": ICMPV6}
    first = []
    for router in (False, True):
        flags = flags_match(
            set_=[ARP_ASK, ND_ROUTER] if router else [ARP_ASK], clear=[] if router else [ND_ROUTER]
        )
        first.append(
            Flow(
                "mac_found",
                MATCH,
                match={FLAGS.field: flags, **icmp, "icmpv6_type": ND_NS},
                actions=(
                    Move("eth_src", "eth_dst", 48),
                    *_mac_to("eth_src"),
                    Move("ipv6_src", "ipv6_dst", 128),
                    Move("ipv6_nd_target", "ipv6_src", 128),
                    SetField("icmpv6_type", ND_NA),
                    SetField("nd_reserved", (NA_R if router else 0) | NA_S | NA_O),
                    SetField("nd_options_type", TLL),
                    Resubmit("mac_found"),
                ),
                cookie=c,
            )
        )
    return [
        *first,
        Flow(
            "mac_found",
            MATCH,
            match={FLAGS.field: ask, **icmp, "icmpv6_type": ND_NA},
            actions=(*_mac_to("ipv6_nd_tll"), Output(IN_PORT)),
            cookie=c,
        ),
    ]
