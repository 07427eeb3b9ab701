"""arp_nd: ARP requests for any known port address are answered in flows, out the asking port; the
controller never sees them. A port asking about its own address (gratuitous ARP, duplicate address
detection) is not answered: its request goes on like any broadcast."""

from __future__ import annotations

from functools import lru_cache

import netaddr

from apps import ids
from apps.view import View
from flows.actions import IN_PORT, Goto, Move, Output, SetField
from flows.flow import Flow
from flows.pipeline import HIGH, MATCH, SRC_PORT
from topology.records import Port

ARP = 0x0806
# the parts of a reply that are the same for every address (values: built and checked once)
_TO_ASKER = Move("eth_src", "eth_dst", 48)
_REPLY = SetField("arp_op", 2)
_THA = Move("arp_sha", "arp_tha", 48)
_TPA = Move("arp_spa", "arp_tpa", 32)
_BACK = Output(IN_PORT)


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow]:
    net = view.topo.networks.get(port.network_id)
    if net is None or not view.present(port) or not view.hosts(chassis_id, net.id):
        return []
    return list(_responder(port, net.key, port.binding_chassis == chassis_id))


@lru_cache(maxsize=1 << 16)
def _responder(port: Port, net_key: int, local: bool) -> tuple[Flow, ...]:
    """The same on every chassis (but for `local`): computed once per port version, not per chassis."""
    c = ids.cookie(ids.ARP, port.id)
    out = []
    for _subnet, ip in port.fixed_ips:
        if netaddr.IPAddress(ip).version != 4:
            continue
        match = {"metadata": net_key, "eth_type": ARP, "arp_op": 1, "arp_tpa": ip}
        out.append(
            Flow(
                "arp_nd",
                MATCH,
                match=match,
                cookie=c,
                actions=(
                    _TO_ASKER,
                    SetField("eth_src", port.mac),
                    _REPLY,
                    _THA,
                    _TPA,
                    SetField("arp_sha", port.mac),
                    SetField("arp_spa", ip),
                    _BACK,
                ),
            )
        )
        if local:
            out.append(
                Flow(
                    "arp_nd",
                    HIGH,
                    match={**match, SRC_PORT.field: port.key},
                    actions=(Goto("dhcp"),),
                    cookie=c,
                )
            )
    return tuple(out)
