"""arp_nd: ARP requests for any known port address are answered in flows, out the asking port; the
controller never sees them. A port asking about its own address (gratuitous ARP, duplicate address
detection) is not answered: its request goes on like any broadcast."""

from __future__ import annotations

import netaddr

from apps import ids
from apps.view import View
from flows.actions import IN_PORT, Goto, Move, Output, SetField
from flows.flow import Flow
from flows.pipeline import HIGH, MATCH, SRC_PORT
from topology.records import Port

ARP = 0x0806


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    net = view.topo.networks.get(port.network_id)
    if net is None or not view.located(port) or not view.hosts(chassis_id, net.id):
        return []
    c = ids.cookie(ids.ARP, port.id)
    out = []
    for _subnet, ip in port.fixed_ips:
        if netaddr.IPAddress(ip).version != 4:
            continue
        match = {"metadata": net.key, "eth_type": ARP, "arp_op": 1, "arp_tpa": ip}
        out.append(Flow("arp_nd", MATCH, match=match, cookie=c, actions=(
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", port.mac),
            SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48),
            Move("arp_spa", "arp_tpa", 32),
            SetField("arp_sha", port.mac),
            SetField("arp_spa", ip),
            Output(IN_PORT),
        )))
        if port.binding_chassis == chassis_id:
            out.append(Flow("arp_nd", HIGH, match={**match, SRC_PORT.field: port.key},
                            actions=(Goto("dhcp"),), cookie=c))
    return out
