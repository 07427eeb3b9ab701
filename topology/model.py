"""The in-memory topology: records by kind, the indices derived from them, and a networkx graph for queries.

Every index (IP and MAC allocations, segment ids, the graph) is derived from the records by `apply`, so the
model after a restart (records loaded from the store) is exactly the model that was acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import netaddr
import networkx as nx

from topology import portkeys
from topology.allocator import RangeAllocator
from topology.records import (
    DEFAULT_GROUP_NAME,
    EP_SUBNET,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    RECORD_TYPES,
    AppliedSet,
    Chassis,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
    FloatingIp,
    GatewayHold,
    HealthMonitor,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Listener,
    LoadBalancer,
    Member,
    Neighbor,
    Network,
    Pool,
    Port,
    Record,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
    VpnEndpointGroup,
    VpnService,
)

# Bytes an overlay adds to a tenant frame on an IPv4 underlay (outer IP 20 + UDP/GRE/Geneve headers),
# the same accounting as Neutron: a 1500-byte underlay leaves 1450 for VXLAN.
OVERLAY_OVERHEAD = {"vxlan": 50, "gre": 42, "geneve": 58, "vlan": 0, "flat": 0}


@dataclass(frozen=True)
class ModelConfig:
    """What the operator configures about allocation (see the README's configuration section)."""

    underlay_mtu: int = 1500
    default_segment_type: str = "vxlan"
    # tunnel type -> ranges of segment ids tenants' networks get
    tunnel_ranges: dict[str, tuple[tuple[int, int], ...]] = field(
        default_factory=lambda: {
            "vxlan": ((1000, 99999),),
            "gre": ((1000, 99999),),
            "geneve": ((1000, 99999),),
        }
    )
    # physical network -> VLAN ranges allocatable there (empty: VLAN ids must be given)
    vlan_ranges: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    mac_prefix: str = "fa:16:3e"  # generated MACs: this OUI + 3 random bytes, as Neutron does

    def default_mtu(self, segment_type: str) -> int:
        return self.underlay_mtu - OVERLAY_OVERHEAD[segment_type]


Change = tuple[str, str, Record | None, Record | None]  # (kind, id, old, new)

#: port keys are 32 bits, their low 16 bits the port's conntrack zone on its chassis (topology/portkeys.py)
MAX_PORT_KEY = portkeys.MAX_PORT_KEY


class Topology:
    """State plus derived indices. Mutated only through `apply`, with changes made by topology.ops."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.revision = 0
        self.networks: dict[str, Network] = {}
        self.subnets: dict[str, Subnet] = {}
        self.ports: dict[str, Port] = {}
        self.chassis: dict[str, Chassis] = {}
        self.routers: dict[str, Router] = {}
        self.floatingips: dict[str, FloatingIp] = {}
        self.security_groups: dict[str, SecurityGroup] = {}
        self.sg_rules: dict[str, SecurityGroupRule] = {}
        self.firewall_rules: dict[str, FirewallRule] = {}
        self.firewall_policies: dict[str, FirewallPolicy] = {}
        self.firewall_groups: dict[str, FirewallGroup] = {}
        self.load_balancers: dict[str, LoadBalancer] = {}
        self.listeners: dict[str, Listener] = {}
        self.pools: dict[str, Pool] = {}
        self.members: dict[str, Member] = {}
        self.health_monitors: dict[str, HealthMonitor] = {}
        self.ike_policies: dict[str, IkePolicy] = {}
        self.ipsec_policies: dict[str, IpsecPolicy] = {}
        self.vpn_services: dict[str, VpnService] = {}
        self.vpn_endpoint_groups: dict[str, VpnEndpointGroup] = {}
        self.ipsec_site_connections: dict[str, IpsecSiteConnection] = {}
        # the controller's own state that decides flows (records.INTERNAL_KINDS)
        self.neighbors: dict[str, Neighbor] = {}
        self.gateway_holds: dict[str, GatewayHold] = {}
        self.applied_sets: dict[str, AppliedSet] = {}  # tenant -> what Apply created for it (prune's marker)
        # plug-ins' kinds (apps/plugin.py): kind -> id -> record; no index, plug-ins derive what they need
        self.extra: dict[str, dict[str, Record]] = {}
        # load balancer id -> its listener / pool ids; pool id -> its member ids, its monitor id
        self.lb_listeners: dict[str, set[str]] = {}
        self.lb_pools: dict[str, set[str]] = {}
        self.pool_members: dict[str, set[str]] = {}
        self.pool_monitor: dict[str, str] = {}
        # security group id -> ids of its rules; -> ids of rules elsewhere naming it as remote group
        self.group_rules: dict[str, set[str]] = {}
        self.remote_rules: dict[str, set[str]] = {}
        # security group id -> its member ports (ports naming it, with port security) / -> chassis -> number of
        # those bound there and up (the chassis where the group's rules need flows)
        self.group_ports: dict[str, set[str]] = {}
        self.group_chassis: dict[str, dict[str, int]] = {}
        # security group id -> [IPv4, IPv6] addresses / CIDRs its members stand for as a remote group
        self.group_values: dict[str, list[int]] = {}
        # a port's addresses as remote-group members see them (fixed IPs, allowed pairs' addresses or CIDRs,
        # normalized by records.remote_value) -> port ids; a rule's remote_ip_prefix (normalized, "" for any)
        # -> ids of rules using it
        self.value_ports: dict[str, set[str]] = {}
        self.prefix_rules: dict[str, set[str]] = {}
        # "direction|ethertype|protocol" (protocol as stored: "" for any) -> ids of rules
        self.proto_rules: dict[str, set[str]] = {}
        # tenant -> id of its default security group
        self.default_groups: dict[str, str] = {}
        # firewall rule id -> the policy listing it; policy id -> firewall groups using it; router interface
        # port id -> its firewall group
        self.rule_policy: dict[str, str] = {}
        self.policy_groups: dict[str, set[str]] = {}
        self.port_firewall: dict[str, str] = {}
        # VPNaaS: router id -> its VPN service (one per router); (kind, id) of a service, policy or endpoint
        # group -> ids of the IPsec site connections using it; subnet id -> endpoint groups listing it
        self.router_vpn: dict[str, str] = {}
        self.vpn_users: dict[tuple[str, str], set[str]] = {}
        self.subnet_epgs: dict[str, set[str]] = {}
        self.graph = nx.Graph()
        self.macs: dict[str, str] = {}  # MAC -> port id
        self.ipam: dict[str, RangeAllocator] = {}  # subnet id -> pools allocator (ints)
        self.ip_owner: dict[str, dict[int, str]] = {}  # subnet id -> address -> port id
        self.segments: dict[tuple[str, str], RangeAllocator] = {}  # (type, physnet) -> allocator
        self.network_subnets: dict[str, set[str]] = {}  # network id -> subnet ids (a network has few)
        # network id -> chassis id -> number of its ports that are up and bound there (for "which chassis
        # host this network" in O(chassis), not O(ports))
        self.bound: dict[str, dict[str, int]] = {}
        # the routed projection of `graph`: ("network", id) - ("router", id) edges, one per network a router has
        # interfaces on (attribute "interfaces": how many). `graph` holds the same through port nodes, but
        # walking it from a network visits every VM port of the network (~300x slower for the compile's
        # "which networks are routed together", see routed_networks)
        self.routed = nx.Graph()
        # dataplane keys (see flows/pipeline.py's register map): datapath keys fit a 24-bit VNI
        self.datapath_keys = RangeAllocator([(1, (1 << 24) - 1)])
        # port keys (unique, 32 bits) and the conntrack zones in their low 16 bits (unique per chassis)
        self.zones = portkeys.PortKeys()
        self.port_keys = self.zones.keys
        # security group rules' keys: their conjunction ids in the dataplane
        self.rule_keys = RangeAllocator([(1, (1 << 31) - 1)])
        # listeners' keys: their select groups' ids (apps/ids.py lb_group)
        self.listener_keys = RangeAllocator([(1, (1 << 28) - 1)])
        # The write in progress may change the model as it goes (an Apply's objects see the ones before them;
        # the flow budget's estimate needs the model as the write leaves it) and hand those changes over
        # instead of taking them back for its caller to apply again: when the caller sets `keeps_trial`
        # (State does, around a write function), such changes are made with `try_changes` and listed in
        # `trial`, in order; the caller then keeps them (`settle`: the write returned the same net changes)
        # or takes them back (`take_back`: it was refused). Without `keeps_trial` a write function takes back
        # what it tried itself, as before.
        self.keeps_trial = False
        self.trial: list[Change] = []

    # ------------------------------------------------------------------------------------------ access

    def table(self, kind: str) -> dict[str, Record]:
        tables = self.__dict__.get("_tables")
        if tables is None:
            tables = self._tables = self._core_tables()
        got = tables.get(kind)
        if got is not None:
            return got
        if kind not in RECORD_TYPES:
            raise KeyError(f"unknown record kind {kind!r}")
        return self.extra.setdefault(kind, {})

    def _core_tables(self) -> dict[str, dict[str, Record]]:
        """The core kinds' tables by kind (built once: `table` is on every write's path)."""
        tables: dict[str, Any] = {
            "network": self.networks,
            "subnet": self.subnets,
            "port": self.ports,
            "chassis": self.chassis,
            "router": self.routers,
            "floating_ip": self.floatingips,
            "security_group": self.security_groups,
            "security_group_rule": self.sg_rules,
            "firewall_rule": self.firewall_rules,
            "firewall_policy": self.firewall_policies,
            "firewall_group": self.firewall_groups,
            "load_balancer": self.load_balancers,
            "listener": self.listeners,
            "pool": self.pools,
            "member": self.members,
            "health_monitor": self.health_monitors,
            "ike_policy": self.ike_policies,
            "ipsec_policy": self.ipsec_policies,
            "vpn_service": self.vpn_services,
            "vpn_endpoint_group": self.vpn_endpoint_groups,
            "ipsec_site_connection": self.ipsec_site_connections,
            "neighbor": self.neighbors,
            "gateway_hold": self.gateway_holds,
            "applied_set": self.applied_sets,
        }
        return tables

    def neighbor_map(self) -> dict[str, dict[str, str]]:
        """Learnt external next hops: network id -> {address: MAC}."""
        out: dict[str, dict[str, str]] = {}
        for n in self.neighbors.values():
            out.setdefault(n.network_id, {})[n.address] = n.mac
        return out

    def all_records(self) -> Iterator[Record]:
        """The API's records (not the controller's internal ones)."""
        yield from self.chassis.values()
        yield from self.networks.values()
        yield from self.routers.values()
        yield from self.subnets.values()
        yield from self.ports.values()
        yield from self.floatingips.values()
        yield from self.security_groups.values()
        yield from self.sg_rules.values()
        yield from self.firewall_rules.values()
        yield from self.firewall_policies.values()
        yield from self.firewall_groups.values()
        yield from self.load_balancers.values()
        yield from self.pools.values()
        yield from self.listeners.values()
        yield from self.members.values()
        yield from self.health_monitors.values()
        yield from self.ike_policies.values()
        yield from self.ipsec_policies.values()
        yield from self.vpn_services.values()
        yield from self.vpn_endpoint_groups.values()
        yield from self.ipsec_site_connections.values()
        for kind in sorted(self.extra):
            yield from self.extra[kind].values()

    # ------------------------------------------------------------------------------------------ queries

    def subnets_of(self, network_id: str) -> list[Subnet]:
        return sorted((self.subnets[i] for i in self.network_subnets.get(network_id, ())), key=lambda s: s.id)

    def ports_of(self, network_id: str) -> list[Port]:
        node = ("network", network_id)
        if node not in self.graph:
            return []
        return sorted((self.ports[i] for k, i in self.graph[node] if k == "port"), key=lambda p: p.id)

    def ports_on_chassis(self, chassis_id: str) -> list[Port]:
        node = ("chassis", chassis_id)
        if node not in self.graph:
            return []
        return sorted((self.ports[i] for k, i in self.graph[node] if k == "port"), key=lambda p: p.id)

    def port_ids_on_chassis(self, chassis_id: str) -> Iterator[str]:
        """The ids of the ports bound to the chassis, unsorted (ports_on_chassis without the sort)."""
        node = ("chassis", chassis_id)
        if node in self.graph:
            yield from (i for k, i in self.graph[node] if k == "port")

    def chassis_hosting(self, network_id: str) -> set[str]:
        """Chassis with at least one port of the network bound to them (where its flows must exist)."""
        return {p.binding_chassis for p in self.ports_of(network_id) if p.binding_chassis}

    def ports_in_security_group(self, group_id: str) -> list[Port]:
        node = ("security_group", group_id)
        if node not in self.graph:
            return []
        return sorted((self.ports[i] for k, i in self.graph[node] if k == "port"), key=lambda p: p.id)

    def group_rules_of(self, group_id: str) -> list[SecurityGroupRule]:
        """The group's rules, by id."""
        return sorted((self.sg_rules[i] for i in self.group_rules.get(group_id, ())), key=lambda r: r.id)

    def rules_naming_remote(self, group_id: str) -> list[SecurityGroupRule]:
        """Rules (of any group) whose remote group is this one, by id."""
        return sorted((self.sg_rules[i] for i in self.remote_rules.get(group_id, ())), key=lambda r: r.id)

    def router_ports(self, router_id: str) -> list[Port]:
        """The router's interface and gateway ports."""
        node = ("router", router_id)
        if node not in self.graph:
            return []
        return sorted((self.ports[i] for k, i in self.graph[node] if k == "port"), key=lambda p: p.id)

    def routers_of(self, network_id: str) -> set[str]:
        """Routers with an interface on the network."""
        try:
            return {ident for _kind, ident in self.routed.neighbors(("network", network_id))}
        except nx.NetworkXError:  # not in the graph: no router interface on it
            return set()

    def routed_networks(self, network_id: str) -> set[str]:
        """The networks joined to this one through routers' interfaces, itself included (its connected
        component in the routed graph; gateway ports do not join networks)."""
        node = ("network", network_id)
        if node not in self.routed:
            return {network_id}
        return {ident for kind, ident in nx.node_connected_component(self.routed, node) if kind == "network"}

    def ports_with_ip_in(self, subnet_id: str) -> list[Port]:
        return sorted(
            {self.ports[pid] for pid in self.ip_owner.get(subnet_id, {}).values()}, key=lambda p: p.id
        )

    def segment_allocator(self, segment_type: str, physnet: str) -> RangeAllocator:
        key = (segment_type, physnet if segment_type == "vlan" else "")
        alloc = self.segments.get(key)
        if alloc is None:
            if segment_type == "vlan":
                ranges = self.config.vlan_ranges.get(physnet, ())
            else:
                ranges = self.config.tunnel_ranges.get(segment_type, ())
            alloc = self.segments[key] = RangeAllocator(ranges)
        return alloc

    # ------------------------------------------------------------------------------------------ mutation

    def apply(self, changes: Iterable[Change], revision: int) -> None:
        """Make the records of `changes` current and update every derived index."""
        for kind, ident, old, new in changes:
            if old is not None:
                self._unindex(old)
                del self.table(kind)[ident]
            if new is not None:
                self.table(kind)[ident] = new
                self._index(new)
        self.revision = revision

    def try_changes(self, changes: list[Change]) -> None:
        """Apply changes of the write in progress, at the model's revision (a reader waiting for the next
        one never sees it reached by a trial), listed in `trial`."""
        self.apply(changes, self.revision)
        self.trial.extend(changes)

    def take_back(self) -> None:
        """Undo every change of `trial`, newest first."""
        if self.trial:
            trial, self.trial = self.trial, []
            self.apply([(k, i, new, old) for k, i, old, new in reversed(trial)], self.revision)

    def settle(self, changes: list[Change]) -> None:
        """Make the model hold `changes` on top of what it held before the write in progress: nothing to do
        when the trial has the same net effect (each record's first old and last new, the very objects),
        else the trial is taken back and `changes` applied (and listed in `trial`)."""
        if self.trial and net_effect(self.trial) == net_effect(changes):
            return
        self.take_back()
        self.try_changes(changes)

    def load(self, records: Iterable[Record], revision: int) -> None:
        """Rebuild from stored records (chassis and networks first, then subnets, then ports; plug-ins' kinds
        last)."""
        order = {
            "chassis": 0,
            "network": 1,
            "router": 2,
            "subnet": 3,
            "security_group": 4,
            "port": 5,
            "floating_ip": 6,
            "security_group_rule": 7,
            "firewall_rule": 8,
            "firewall_policy": 9,
            "firewall_group": 10,
            "load_balancer": 11,
            "pool": 12,
            "listener": 13,
            "member": 14,
            "health_monitor": 15,
            "ike_policy": 16,
            "ipsec_policy": 17,
            "vpn_service": 18,
            "vpn_endpoint_group": 19,
            "ipsec_site_connection": 20,
            "neighbor": 21,
            "gateway_hold": 22,
            "applied_set": 23,
        }
        self.apply(
            ((r.KIND, r.id, None, r) for r in sorted(records, key=lambda r: order.get(r.KIND, len(order)))),
            revision,
        )

    @staticmethod
    def _edges(rec: Record) -> list[tuple[str, str]]:
        """The graph edges a record declares (to the nodes it references)."""
        if isinstance(rec, Subnet):
            return [("network", rec.network_id)]
        if isinstance(rec, Port):
            out = [("network", rec.network_id)]
            if rec.binding_chassis:
                out.append(("chassis", rec.binding_chassis))
            out += [("security_group", sg) for sg in rec.security_groups]
            if rec.device_owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY) and rec.device_id:
                out.append(("router", rec.device_id))
            return out
        if isinstance(rec, FloatingIp):
            out = [("network", rec.network_id)]
            if rec.port_id:
                out.append(("port", rec.port_id))
            return out
        if isinstance(rec, SecurityGroupRule):
            out = [("security_group", rec.security_group_id)]
            if rec.remote_group_id and rec.remote_group_id != rec.security_group_id:
                out.append(("security_group", rec.remote_group_id))
            return out
        if isinstance(rec, FirewallPolicy):
            return [("firewall_rule", r) for r in rec.rules]
        if isinstance(rec, LoadBalancer):
            return [("subnet", rec.vip_subnet_id)] + ([("port", rec.vip_port_id)] if rec.vip_port_id else [])
        if isinstance(rec, Listener):
            return [("load_balancer", rec.load_balancer_id)] + (
                [("pool", rec.default_pool_id)] if rec.default_pool_id else []
            )
        if isinstance(rec, Pool):
            return [("load_balancer", rec.load_balancer_id)]
        if isinstance(rec, Member):
            return [("pool", rec.pool_id)] + ([("subnet", rec.subnet_id)] if rec.subnet_id else [])
        if isinstance(rec, HealthMonitor):
            return [("pool", rec.pool_id)]
        if isinstance(rec, FirewallGroup):
            out = [("port", p) for p in rec.ports]
            out += [("firewall_policy", p) for p in {rec.ingress_policy_id, rec.egress_policy_id} if p]
            return out
        if isinstance(rec, VpnService):
            return [("router", rec.router_id)]
        if isinstance(rec, VpnEndpointGroup):
            return [("subnet", e) for e in rec.endpoints] if rec.type == EP_SUBNET else []
        if isinstance(rec, IpsecSiteConnection):
            return _vpn_refs(rec)
        return []

    def _index(self, rec: Record) -> None:
        g = self.graph
        node = (rec.KIND, rec.id)
        g.add_node(node, tenant=rec.tenant, present=True)
        for other in self._edges(rec):
            g.add_edge(node, other)
        if isinstance(rec, Network):
            if rec.segment_id is not None:
                self.segment_allocator(rec.segment_type, rec.physical_network).add(rec.segment_id)
            self.datapath_keys.add(rec.key)
        elif isinstance(rec, Router):
            self.datapath_keys.add(rec.key)
        elif isinstance(rec, Subnet):
            self.network_subnets.setdefault(rec.network_id, set()).add(rec.id)
            alloc = RangeAllocator(_pool_ranges(rec))
            for addr in self.ip_owner.get(rec.id, ()):
                alloc.add(addr)
            self.ipam[rec.id] = alloc
        elif isinstance(rec, Listener):
            self.lb_listeners.setdefault(rec.load_balancer_id, set()).add(rec.id)
            if rec.key:
                self.listener_keys.add(rec.key)
        elif isinstance(rec, Pool):
            self.lb_pools.setdefault(rec.load_balancer_id, set()).add(rec.id)
        elif isinstance(rec, Member):
            self.pool_members.setdefault(rec.pool_id, set()).add(rec.id)
        elif isinstance(rec, HealthMonitor):
            self.pool_monitor[rec.pool_id] = rec.id
        elif isinstance(rec, SecurityGroup):
            if rec.display_name == DEFAULT_GROUP_NAME:
                self.default_groups.setdefault(rec.tenant, rec.id)
        elif isinstance(rec, SecurityGroupRule):
            self.rule_keys.add(rec.key)
            self.group_rules.setdefault(rec.security_group_id, set()).add(rec.id)
            if rec.remote_group_id:
                self.remote_rules.setdefault(rec.remote_group_id, set()).add(rec.id)
            else:
                self.prefix_rules.setdefault(remote_value(rec.remote_ip_prefix), set()).add(rec.id)
            self.proto_rules.setdefault(f"{rec.direction}|{rec.ethertype}|{rec.protocol}", set()).add(rec.id)
        elif isinstance(rec, FirewallPolicy):
            for r in rec.rules:
                self.rule_policy[r] = rec.id
        elif isinstance(rec, FirewallGroup):
            for p in {rec.ingress_policy_id, rec.egress_policy_id} - {""}:
                self.policy_groups.setdefault(p, set()).add(rec.id)
            for p in rec.ports:
                self.port_firewall[p] = rec.id
        elif isinstance(rec, VpnService):
            self.router_vpn[rec.router_id] = rec.id
        elif isinstance(rec, VpnEndpointGroup):
            if rec.type == EP_SUBNET:
                for e in rec.endpoints:
                    self.subnet_epgs.setdefault(e, set()).add(rec.id)
        elif isinstance(rec, IpsecSiteConnection):
            for ref in _vpn_refs(rec):
                self.vpn_users.setdefault(ref, set()).add(rec.id)
        elif isinstance(rec, Port):
            self.zones.add(rec)
            if rec.port_security_enabled:
                versions = [value_version(v) for v in member_values(rec)]
                for g in rec.security_groups:
                    self.group_ports.setdefault(g, set()).add(rec.id)
                    counts4_6 = self.group_values.setdefault(g, [0, 0])
                    counts4_6[0] += versions.count(4)
                    counts4_6[1] += versions.count(6)
                    if rec.binding_chassis and rec.admin_state_up:
                        counts = self.group_chassis.setdefault(g, {})
                        counts[rec.binding_chassis] = counts.get(rec.binding_chassis, 0) + 1
            for v in member_values(rec):
                self.value_ports.setdefault(v, set()).add(rec.id)
            if rec.binding_chassis and rec.admin_state_up:
                counts = self.bound.setdefault(rec.network_id, {})
                counts[rec.binding_chassis] = counts.get(rec.binding_chassis, 0) + 1
            if rec.device_owner == OWNER_ROUTER_INTERFACE and rec.device_id:
                edge = (("network", rec.network_id), ("router", rec.device_id))
                if self.routed.has_edge(*edge):
                    self.routed.edges[edge]["interfaces"] += 1
                else:
                    self.routed.add_edge(*edge, interfaces=1)
            self.macs[rec.mac] = rec.id
            for sid, address in rec.fixed_ips:
                n = int(netaddr.IPAddress(address))
                self.ip_owner.setdefault(sid, {})[n] = rec.id
                if sid in self.ipam:
                    self.ipam[sid].add(n)

    def _unindex(self, rec: Record) -> None:
        g = self.graph
        node = (rec.KIND, rec.id)
        for other in self._edges(rec):
            if g.has_edge(node, other):
                g.remove_edge(node, other)
            self._drop_if_orphan(other)
        g.nodes[node]["present"] = False
        self._drop_if_orphan(node)  # still referenced (e.g. a chassis being updated): the node stays
        if isinstance(rec, Network):
            if rec.segment_id is not None:
                self.segment_allocator(rec.segment_type, rec.physical_network).remove(rec.segment_id)
            self.datapath_keys.remove(rec.key)
        elif isinstance(rec, Router):
            self.datapath_keys.remove(rec.key)
        elif isinstance(rec, Subnet):
            self.ipam.pop(rec.id, None)
            self.network_subnets.get(rec.network_id, set()).discard(rec.id)
        elif isinstance(rec, Listener):
            _discard(self.lb_listeners, rec.load_balancer_id, rec.id)
            if rec.key:
                self.listener_keys.remove(rec.key)
        elif isinstance(rec, Pool):
            _discard(self.lb_pools, rec.load_balancer_id, rec.id)
        elif isinstance(rec, Member):
            _discard(self.pool_members, rec.pool_id, rec.id)
        elif isinstance(rec, HealthMonitor):
            if self.pool_monitor.get(rec.pool_id) == rec.id:
                del self.pool_monitor[rec.pool_id]
        elif isinstance(rec, SecurityGroup):
            if self.default_groups.get(rec.tenant) == rec.id:
                del self.default_groups[rec.tenant]
        elif isinstance(rec, SecurityGroupRule):
            self.rule_keys.remove(rec.key)
            _discard(self.group_rules, rec.security_group_id, rec.id)
            if rec.remote_group_id:
                _discard(self.remote_rules, rec.remote_group_id, rec.id)
            else:
                _discard(self.prefix_rules, remote_value(rec.remote_ip_prefix), rec.id)
            _discard(self.proto_rules, f"{rec.direction}|{rec.ethertype}|{rec.protocol}", rec.id)
        elif isinstance(rec, FirewallPolicy):
            for r in rec.rules:
                if self.rule_policy.get(r) == rec.id:
                    del self.rule_policy[r]
        elif isinstance(rec, FirewallGroup):
            for p in {rec.ingress_policy_id, rec.egress_policy_id} - {""}:
                _discard(self.policy_groups, p, rec.id)
            for p in rec.ports:
                if self.port_firewall.get(p) == rec.id:
                    del self.port_firewall[p]
        elif isinstance(rec, VpnService):
            if self.router_vpn.get(rec.router_id) == rec.id:
                del self.router_vpn[rec.router_id]
        elif isinstance(rec, VpnEndpointGroup):
            if rec.type == EP_SUBNET:
                for e in rec.endpoints:
                    _discard(self.subnet_epgs, e, rec.id)
        elif isinstance(rec, IpsecSiteConnection):
            for ref in _vpn_refs(rec):
                got = self.vpn_users.get(ref)
                if got is not None:
                    got.discard(rec.id)
                    if not got:
                        del self.vpn_users[ref]
        elif isinstance(rec, Port):
            self.zones.remove(rec)
            if rec.port_security_enabled:
                versions = [value_version(v) for v in member_values(rec)]
                for g in rec.security_groups:
                    _discard(self.group_ports, g, rec.id)
                    counts4_6 = self.group_values[g]
                    counts4_6[0] -= versions.count(4)
                    counts4_6[1] -= versions.count(6)
                    if g not in self.group_ports:
                        del self.group_values[g]
                    if rec.binding_chassis and rec.admin_state_up:
                        counts = self.group_chassis[g]
                        counts[rec.binding_chassis] -= 1
                        if not counts[rec.binding_chassis]:
                            del counts[rec.binding_chassis]
                        if not counts:
                            del self.group_chassis[g]
            for v in member_values(rec):
                _discard(self.value_ports, v, rec.id)
            if rec.binding_chassis and rec.admin_state_up:
                counts = self.bound[rec.network_id]
                counts[rec.binding_chassis] -= 1
                if not counts[rec.binding_chassis]:
                    del counts[rec.binding_chassis]
                if not counts:
                    del self.bound[rec.network_id]
            if rec.device_owner == OWNER_ROUTER_INTERFACE and rec.device_id:
                net, router = ("network", rec.network_id), ("router", rec.device_id)
                data = self.routed.edges[net, router]
                data["interfaces"] -= 1
                if not data["interfaces"]:
                    self.routed.remove_edge(net, router)
                    for node in (net, router):
                        if not self.routed.degree(node):
                            self.routed.remove_node(node)
            if self.macs.get(rec.mac) == rec.id:
                del self.macs[rec.mac]
            for sid, addr in rec.fixed_ips:
                n = int(netaddr.IPAddress(addr))
                owners = self.ip_owner.get(sid, {})
                if owners.get(n) == rec.id:
                    del owners[n]
                if sid in self.ipam:
                    self.ipam[sid].remove(n)

    def _drop_if_orphan(self, node: tuple[str, str]) -> None:
        g = self.graph
        if node in g and g.degree(node) == 0 and not g.nodes[node].get("present"):
            g.remove_node(node)


def net_effect(changes: Iterable[Change]) -> dict[tuple[str, str], tuple[int, int]]:
    """Each record's (first old, last new) over `changes`, as object identities; records left as they were
    (changed and changed back, created and deleted) are left out."""
    first: dict[tuple[str, str], tuple[Record | None, Record | None]] = {}
    for kind, ident, old, new in changes:
        got = first.get((kind, ident))
        first[(kind, ident)] = (old if got is None else got[0], new)
    return {key: (id(old), id(new)) for key, (old, new) in first.items() if old is not new}


def remote_value(prefix: str) -> str:
    """A remote address or CIDR in one spelling: "" for any (no prefix or a /0), a host route as the bare
    address, otherwise the CIDR with host bits cleared."""
    if not prefix:
        return ""
    net = netaddr.IPNetwork(prefix)
    if net.prefixlen == 0:
        return ""
    if (net.version == 4 and net.prefixlen == 32) or (net.version == 6 and net.prefixlen == 128):
        return str(net.ip)
    return str(net.cidr)


def member_values(port: Port) -> set[str]:
    """The addresses a port stands for as a member of a remote group: fixed IPs and allowed pairs'."""
    if not port.port_security_enabled or not port.security_groups:
        return set()
    out = {a for _s, a in port.fixed_ips}  # stored normalized by topology.ops
    out.update(v for a, _m in port.allowed_address_pairs if (v := remote_value(a)))
    return out


def value_version(value: str) -> int:
    """4 or 6 for a normalized address or CIDR (as member_values / remote_value spell them)."""
    return 6 if ":" in value else 4


def _vpn_refs(conn: IpsecSiteConnection) -> list[tuple[str, str]]:
    """The records a connection uses: (kind, id), without duplicates (both endpoint groups may be one)."""
    refs = [
        ("vpn_service", conn.vpnservice_id),
        ("ike_policy", conn.ikepolicy_id),
        ("ipsec_policy", conn.ipsecpolicy_id),
        ("vpn_endpoint_group", conn.local_ep_group_id),
        ("vpn_endpoint_group", conn.peer_ep_group_id),
    ]
    return list(dict.fromkeys(r for r in refs if r[1]))


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    got = index.get(key)
    if got is not None:
        got.discard(value)
        if not got:
            del index[key]


def _pool_ranges(subnet: Subnet) -> list[tuple[int, int]]:
    return [(int(netaddr.IPAddress(a)), int(netaddr.IPAddress(b))) for a, b in subnet.allocation_pools]
