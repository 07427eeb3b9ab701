"""arp_nd and mac_lookup: ARP requests for any known port address are answered in flows, out the asking
port; the controller never sees them. A port asking about its own address (gratuitous ARP, duplicate
address detection) is not answered: its request goes on like any broadcast.

One flow per address serves ARP answers and routing both: mac_lookup maps (DATAPATH, NEXT_HOP) to the
MAC of the port holding the address, in MAC_LO/MAC_HI. arp_nd puts an ARP request's target in NEXT_HOP and
marks it ARP_ASK; mac_found then builds the reply from the registers (the same flow for every address).
arp_resolve (a routed packet, NEXT_HOP already set) resubmits to mac_lookup, and mac_found sets eth_dst.
A router interface's or a VIP's address is answered to ARP but never resolved for routing (as before:
nothing is routed to them through arp_resolve's port lookup)."""

from __future__ import annotations

from functools import lru_cache

import netaddr

from apps import ids
from apps.view import View
from flows.actions import IN_PORT, Goto, Move, Output, Resubmit, SetField, load
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
    NEXT_HOP,
    SRC_PORT,
    flags_match,
)
from topology.records import Port

ARP = 0x0806
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
    mac = int(netaddr.EUI(port.mac))
    found = (
        load(MAC_LO.field, mac & 0xFFFFFFFF, MAC_LO.start, MAC_LO.end),
        load(MAC_HI.field, mac >> 32, MAC_HI.start, MAC_HI.end),
        Goto("mac_found"),
    )
    # a router interface or a VIP: answered to ARP only (routing resolves them through arp_resolve's flows)
    only_arp = {} if routable else {FLAGS.field: flags_match(set_=[ARP_ASK])}
    out = []
    for _subnet, ip in port.fixed_ips:
        if netaddr.IPAddress(ip).version != 4:
            continue
        out.append(
            Flow(
                "mac_lookup",
                MATCH,
                match={"metadata": net_key, NEXT_HOP.field: int(netaddr.IPAddress(ip)), **only_arp},
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
