"""Where a port is bound: a pure function of the port and of the VIFs each chassis reports.

A VM's interface on a chassis's br-int carries `external_ids:iface-id=<port id>` (the Neutron/OVN
convention). Whichever comes first, the port through the API or the VIF on the switch, the binding is the
same once both are known:

- an admin's binding_chassis (kept as `requested_chassis`) pins the port: it is bound there whatever any
  chassis reports; a VIF for it elsewhere is ignored (the port stays DOWN until plugged where pinned);
- otherwise the port is bound to the chassis reporting its VIF; while several report it (a VM moving), it
  stays where it is if that chassis is among them, else goes to the first by name;
- no chassis reporting it: it keeps its last binding (an unplugged VIF is a DOWN port, not a move).

The dataplane re-evaluates this when either side changes (a port written, a chassis's VIFs reported) and
writes the difference through the store like any other write, so a restart finds the bindings it left.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Mapping

from topology import ops, portkeys
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.records import Port

log = logging.getLogger(__name__)

#: chassis id -> the port ids its VIFs name (iface-id), as its OVSDB last reported
Reports = Mapping[str, Container[str]]


def bindable(port: Port) -> bool:
    """Ports a VIF can carry: not a router's, floating IP's or load balancer's own port."""
    return port.device_owner not in ops.ROUTER_OWNERS


def binding(port: Port, reports: Reports, chassis: Container[str]) -> str:
    """The chassis the port must be bound to ("" = none), given what each chassis reports."""
    if not bindable(port):
        return port.binding_chassis
    if port.requested_chassis:
        return port.requested_chassis
    hosts = sorted(ch for ch, vifs in reports.items() if port.id in vifs and ch in chassis)
    if not hosts or port.binding_chassis in hosts:
        return port.binding_chassis
    return hosts[0]


def conflicts(port: Port, reports: Reports) -> list[str]:
    """Chassis reporting a VIF for a port pinned elsewhere (logged; the pin wins)."""
    if not port.requested_chassis:
        return []
    return sorted(ch for ch, vifs in reports.items() if port.id in vifs and ch != port.requested_chassis)


def stale(topo: Topology, reports: Reports, port_ids: Iterable[str]) -> list[str]:
    """The ports among `port_ids` whose binding is not what `binding` says (cheap: no write)."""
    out = []
    for pid in port_ids:
        port = topo.ports.get(pid)
        if port is not None and binding(port, reports, topo.chassis) != port.binding_chassis:
            out.append(pid)
    return sorted(out)


def rebind(topo: Topology, reports: Reports, port_ids: Iterable[str], rev: int, now: float) -> list[Change]:
    """The changes that bind `port_ids` where `binding` says (none for those already there)."""
    changes: list[Change] = []
    claims = portkeys.Claims()  # the keys and zones the ports bound here take (applied together)
    for pid in stale(topo, reports, port_ids):
        port = topo.ports[pid]
        try:
            changes += ops.bind_port(topo, port, binding(port, reports, topo.chassis), rev, now, claims)
        except ApiError as err:  # no free zone on that chassis: the port stays where it was (logged)
            log.warning("port %s not bound: %s", pid, err.message)
    return changes
