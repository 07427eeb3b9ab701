"""What the compilers read: the model plus each chassis's runtime facts (ofports), behind cached queries.

A View is built for one compile pass and never mutated by apps; apps are pure functions of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from topology.model import Topology
from topology.records import (
    OVERLAY_TYPES,
    OWNER_LOAD_BALANCER,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    Chassis,
    Network,
    Port,
    Router,
)

#: learned MAC bindings of external next hops: network id -> ((IPv4 address, MAC), ...)
Neighbors = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class ChassisRuntime:
    """Facts a chassis's OVSDB reports: where things are plugged on its br-int."""

    chassis_id: str
    vifs: Mapping[str, int] = field(default_factory=dict)  # logical port id -> ofport
    tunnels: Mapping[str, int] = field(default_factory=dict)  # tunnel type -> ofport
    patches: Mapping[str, int] = field(default_factory=dict)  # physical network -> ofport of patch port


class View:
    def __init__(
        self,
        topo: Topology,
        runtime: Mapping[str, ChassisRuntime],
        gateway_chassis: tuple[str, ...] = (),
        neighbors: Neighbors | None = None,
        dhcp_rate_pps: int = 10,
        down: frozenset[str] = frozenset(),
    ) -> None:
        self.topo = topo
        # gateway chassis the controller holds for failed (a runtime fact, like the ofports): skipped by
        # gateway_of, so their routers go to the next candidate (controller/services/failover.py decides)
        self.down = frozenset(down)
        self.dhcp_rate_pps = dhcp_rate_pps  # each port's DHCP meter (apps/dhcp.py)
        self.runtime = runtime
        self.gateway_chassis = tuple(gateway_chassis)
        self.neighbors: Neighbors = neighbors if neighbors is not None else {}
        self._hosting: dict[str, frozenset[str]] = {}
        self._component: dict[str, frozenset[str]] = {}
        self._routers: dict[str, tuple[str, ...]] = {}  # network -> routers with an interface on it
        self._local: dict[tuple[str, str], list[Port]] = {}  # (chassis, network) -> its plugged ports there
        self._gateways: dict[str, frozenset[str]] | None = None  # network id -> gateway chassis routing it

    # ------------------------------------------------------------------------------------------ gateways

    def gateway_port(self, router: Router) -> Port | None:
        """The router's port on its external network (holds the gateway address and MAC)."""
        return next(
            (
                p
                for p in self.topo.router_ports(router.id)
                if p.device_owner == OWNER_ROUTER_GATEWAY and p.network_id == router.gateway_network_id
            ),
            None,
        )

    def gateway_of(self, router: Router) -> str | None:
        """The router's gateway chassis: the first configured gateway chassis that is not down and has a
        bridge mapping for the external network's physical network, or the first with such a mapping when
        all of them are down (None: no gateway, or nowhere to put it)."""
        if not router.gateway_network_id or not router.admin_state_up:
            return None
        net = self.topo.networks.get(router.gateway_network_id)
        if net is None or not net.admin_state_up or net.segment_type in OVERLAY_TYPES:
            return None
        able = [
            ch_id
            for ch_id in self.gateway_chassis
            if (ch := self.topo.chassis.get(ch_id)) is not None
            and ch.tunnel_ip
            and any(pn == net.physical_network for pn, _br in ch.bridge_mappings)
        ]
        # every candidate down: the router stays on the preferred one (nothing better to do, nothing churns)
        return next((ch_id for ch_id in able if ch_id not in self.down), able[0] if able else None)

    def is_gateway_for(self, chassis_id: str, network_id: str) -> bool:
        """This chassis is the gateway chassis of a router whose external network this is."""
        return any(
            r.gateway_network_id == network_id and self.gateway_of(r) == chassis_id
            for r in self.topo.routers.values()
        )

    def _gateway_hosting(self) -> dict[str, frozenset[str]]:
        """Networks a gateway chassis must host: the external network and the router's routed component."""
        if self._gateways is None:
            got: dict[str, set[str]] = {}
            for router in self.topo.routers.values():
                gc = self.gateway_of(router)
                if gc is None:
                    continue
                got.setdefault(router.gateway_network_id, set()).add(gc)
                for p in self.topo.router_ports(router.id):
                    if p.device_owner == OWNER_ROUTER_INTERFACE:
                        for n in self.component(p.network_id):
                            got.setdefault(n, set()).add(gc)
            self._gateways = {n: frozenset(c) for n, c in got.items()}
        return self._gateways

    def chassis(self, chassis_id: str) -> Chassis | None:
        return self.topo.chassis.get(chassis_id)

    def rt(self, chassis_id: str) -> ChassisRuntime:
        return self.runtime.get(chassis_id) or ChassisRuntime(chassis_id)

    def located(self, port: Port) -> bool:
        """A port takes part in the dataplane: up, on an up network, bound to a known chassis."""
        net = self.topo.networks.get(port.network_id)
        return (
            port.admin_state_up
            and net is not None
            and net.admin_state_up
            and port.binding_chassis in self.topo.chassis
        )

    def distributed(self, port: Port) -> bool:
        """A router interface: present on every chassis that hosts its network (routing is local)."""
        if port.device_owner != OWNER_ROUTER_INTERFACE:
            return False
        router = self.topo.routers.get(port.device_id)
        net = self.topo.networks.get(port.network_id)
        return (
            router is not None
            and router.admin_state_up
            and port.admin_state_up
            and net is not None
            and net.admin_state_up
        )

    def vip(self, port: Port) -> bool:
        """An up load balancer's VIP port: present on every chassis hosting its network (ARP for the VIP is
        answered there), never located (no ofport, never a delivery target)."""
        if port.device_owner != OWNER_LOAD_BALANCER or not port.admin_state_up:
            return False
        lb = self.topo.load_balancers.get(port.device_id)
        net = self.topo.networks.get(port.network_id)
        return (
            lb is not None
            and lb.admin_state_up
            and lb.vip_port_id == port.id
            and net is not None
            and net.admin_state_up
        )

    def present(self, port: Port) -> bool:
        """Known to the dataplane: located on a chassis, a distributed router interface, or a VIP."""
        return self.located(port) or self.distributed(port) or self.vip(port)

    def component(self, network_id: str) -> frozenset[str]:
        """The networks joined to this one through routers' interfaces (itself included): a chassis that
        routes from one of them must be able to deliver into all of them. Cached for every network of the
        component at once (the model's routed graph answers it, Topology.routed_networks)."""
        got = self._component.get(network_id)
        if got is None:
            got = frozenset(self.topo.routed_networks(network_id))
            for n in got:
                self._component[n] = got
        return got

    def routers_here(self, chassis_id: str, network_id: str) -> tuple[str, ...]:
        """Routers with an interface on the network, if this chassis hosts it (sorted; asked once per port,
        cached per network)."""
        if not self.hosts(chassis_id, network_id):
            return ()
        got = self._routers.get(network_id)
        if got is None:
            got = self._routers[network_id] = tuple(sorted(self.topo.routers_of(network_id)))
        return got

    def hosting(self, network_id: str) -> frozenset[str]:
        """Chassis that need the network's flows: those with a located port of it, or of a network
        routed to it (distributed routing delivers from the source chassis)."""
        got = self._hosting.get(network_id)
        if got is None:
            net = self.topo.networks.get(network_id)
            if net is None or not net.admin_state_up:
                got = frozenset()
            else:
                got = frozenset(
                    c
                    for n in self.component(network_id)
                    if (m := self.topo.networks.get(n)) is not None and m.admin_state_up
                    for c in self.topo.bound.get(n, {})
                    if c in self.topo.chassis
                )
                got |= self._gateway_hosting().get(network_id, frozenset())
            self._hosting[network_id] = got
        return got

    def local_ports(self, chassis_id: str, network_id: str) -> list[Port]:
        """The network's ports plugged on this chassis, by id (cached per view). From the network's ports,
        not the chassis's VIFs: a write recompiles a few networks, and indexing every VIF of every chassis
        it touches cost O(ports) per write (87% of a CreatePort's compile at 20k ports)."""
        key = (chassis_id, network_id)
        got = self._local.get(key)
        if got is None:
            vifs = self.rt(chassis_id).vifs
            got = self._local[key] = [
                p
                for p in self.topo.ports_of(network_id)  # sorted by id
                if p.id in vifs and self.local_ofport(chassis_id, p) is not None
            ]
        return got

    def hosts(self, chassis_id: str, network_id: str) -> bool:
        return chassis_id in self.hosting(network_id)

    def local_ofport(self, chassis_id: str, port: Port) -> int | None:
        """The port's ofport if it is located on this chassis and plugged."""
        if port.binding_chassis != chassis_id or not self.located(port):
            return None
        return self.rt(chassis_id).vifs.get(port.id)

    def uplink(self, chassis_id: str, net: Network) -> int | None:
        """br-int's ofport towards the network's segment: its tunnel port, or the patch to its physnet."""
        rt = self.rt(chassis_id)
        if net.segment_type in OVERLAY_TYPES:
            return rt.tunnels.get(net.segment_type)
        return rt.patches.get(net.physical_network)
