"""dhcp: a port's DHCPv4 requests go to the controller (controller/services/dhcp.py answers), through a meter of its own.

For each port plugged on this chassis with an IPv4 address on a subnet with DHCP enabled:

- dhcp, MATCH: from the port (SRC_PORT = its key) with its own MAC, UDP 68 -> 67 -> meter (the port's,
  apps.ids.dhcp_meter) + packet-in; nothing else happens to the request (it is never flooded);
- the meter itself (a MeterEntry of the port's unit: the sync engine adds it before the flow that uses it
  and deletes it after), `rate_pps` packets/s with a burst of as many: one VM cannot flood the controller.

Every other DHCP request (an unknown MAC, a port without a DHCP subnet) is dropped by one LOW flow per
chassis: it gets no answer, and other VMs never see it. Everything else passes to lb (the stage default).
"""

from __future__ import annotations

import netaddr

from apps import ids
from apps.view import View
from flows.actions import Controller, Meter
from flows.flow import Flow, MeterEntry
from flows.pipeline import LOW, MATCH, SRC_PORT
from topology.records import Port, Subnet

IPV4 = 0x0800
UDP = 17
CLIENT_PORT, SERVER_PORT = 68, 67
#: packets/s each port may send the controller (config dhcp_rate_pps); the burst is as many packets
DEFAULT_RATE_PPS = 10
_REQUEST = {"eth_type": IPV4, "ip_proto": UDP, "udp_src": CLIENT_PORT, "udp_dst": SERVER_PORT}


def dhcp_address(view: View, port: Port) -> tuple[Subnet, str] | None:
    """The port's first IPv4 address on a subnet with DHCP enabled, with that subnet (None: no DHCP)."""
    if port.device_owner.startswith("network:"):
        return None  # router interfaces and gateways, floating-IP ports: not DHCP clients
    for subnet_id, ip in port.fixed_ips:
        sub = view.topo.subnets.get(subnet_id)
        if sub is not None and sub.enable_dhcp and sub.ip_version == 4 and netaddr.IPAddress(ip).version == 4:
            return sub, ip
    return None


def port_flows(view: View, chassis_id: str, port: Port) -> list[Flow | MeterEntry]:
    if view.local_ofport(chassis_id, port) is None or dhcp_address(view, port) is None:
        return []
    meter = ids.dhcp_meter(port.key)
    rate = view.dhcp_rate_pps
    return [
        MeterEntry(meter, rate, rate),
        Flow(
            "dhcp",
            MATCH,
            match={SRC_PORT.field: port.key, "eth_src": port.mac, **_REQUEST},
            actions=(Meter(meter), Controller()),
            cookie=ids.cookie(ids.DHCP, port.id),
        ),
    ]


def chassis_flows() -> list[Flow]:
    """DHCP requests no port flow claimed: dropped (an unknown MAC gets nothing; nothing is flooded)."""
    return [Flow("dhcp", LOW, match=_REQUEST, cookie=ids.cookie(ids.DHCP, "pipeline"))]
