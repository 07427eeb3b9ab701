"""The gRPC TopologyService: the core kinds (networks, subnets, ports, routers, floating IPs, chassis) as
resource specs whose standard methods are controller/resources.py's; security groups and firewalls come from
security_api.py, load balancers and VPNaaS (their own services) from lb_api.py and vpn_api.py. Custom methods (router interfaces,
Watch, tokens) are written out here. Authentication and error mapping are the AuthInterceptor's
(controller/interceptors.py). No flows here: the dataplane follows the store's changes."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2

from apps import plugin
from controller.api import convert, lb_api, security_api, vpn_api
from controller.api.auth import LastAdminToken, Principal, Tokens
from controller.api.interceptors import caller, principal
from controller.api.resources import (
    Call,
    KeepAndFilters,
    Parent,
    Planner,
    Resource,
    Scope,
    Tables,
    admin_only,
    serve,
    visible,
)
from controller.api.status import abort, storage_error
from controller.api.streams import StreamLimiter, Ticket, refusal_status, revoked_error
from controller.api.watch_feed import ChangeFeed, Follower, SharedChanges
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology import errors, ops
from topology import ops_security as sec
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.records import (
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    PROVIDER_TYPES,
    Chassis,
    FloatingIp,
    Network,
    Port,
    Record,
    Router,
    Subnet,
)
from topology.state import State
from topology.store import HistoryCompacted

log = logging.getLogger(__name__)
VERSION = "0.1.0"
WATCH_BATCH_REVISIONS = 500
WATCH_WAIT_S = 0.5  # the longest a Watch waits before it re-checks its client, its token and the server


def _up(m: Any) -> bool:
    return m.admin_state_up if m.HasField("admin_state_up") else True


def _ref(kind: str, name: str, field_path: str) -> str:
    return convert.parse_name(kind, name, field_path) if name else ""


# ------------------------------------------------------------------------------------------ networks


def _create_network(c: Call, m: pb.Network) -> list[Change]:
    stype = convert.SEGMENT_FROM_PB.get(m.segment_type, "") if m.segment_type else ""
    if m.segment_type and not stype:
        raise errors.invalid("network.segment_type", "unknown segment type")
    if stype in PROVIDER_TYPES:
        admin_only(c.p, "network.segment_type", f"a {stype} (provider) network")
    if m.physical_network:
        admin_only(c.p, "network.physical_network", "a physical network")
    if m.segment_id:
        admin_only(c.p, "network.segment_id", "choosing a segment id")
    if m.external:
        admin_only(c.p, "network.external", "an external network")
    if m.shared:
        admin_only(c.p, "network.shared", "a shared network")
    tenant = c.tenant_for(m.tenant, "network.tenant")
    net = Network(
        id=c.new_id(),
        tenant=tenant,
        display_name=m.display_name,
        segment_type=stype,
        segment_id=m.segment_id or None,
        physical_network=m.physical_network,
        mtu=m.mtu,
        admin_state_up=_up(m),
        external=m.external,
        description=m.description,
        tags=tuple(m.tags),
        shared=m.shared,
    )
    return ops.create_network(c.topo, net, c.rev, c.now)


def _external_admin_only(c: Call, old: Network, m: pb.Network, paths: list[str]) -> None:
    if "external" in paths and m.external != old.external:
        admin_only(c.p, "network.external", "the external flag")
    if "shared" in paths and m.shared != old.shared:
        admin_only(c.p, "network.shared", "sharing a network")


NETWORK = Resource(
    kind="network",
    plural="Networks",
    to_pb=convert.network_to_pb,
    create=_create_network,
    update=lambda c, old, fields: ops.update_network(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_network(c.topo, old, force, c.rev, c.now),
    mutable=frozenset(ops.NETWORK_MUTABLE),
    immutable=frozenset({"name", "tenant", "segment_type", "segment_id", "physical_network"}),
    output_only=frozenset({"revision", "create_time", "update_time", "tunnel_key", "status"}),
    values={"tags": lambda c, m: tuple(m.tags)},
    check_paths=_external_admin_only,
)

# ------------------------------------------------------------------------------------------ subnets


def _create_subnet(c: Call, m: pb.Subnet) -> list[Change]:
    net = c.owned("network", m.network, "subnet.network")
    sub = Subnet(
        id=c.new_id(),
        tenant=net.tenant,
        network_id=net.id,
        cidr=m.cidr,
        display_name=m.display_name,
        gateway_ip=m.gateway_ip,
        allocation_pools=tuple((a.start, a.end) for a in m.allocation_pools),
        enable_dhcp=m.enable_dhcp if m.HasField("enable_dhcp") else True,
        dns_servers=tuple(m.dns_servers),
        host_routes=tuple((r.destination, r.nexthop) for r in m.host_routes),
        ipv6_ra_mode=m.ipv6_ra_mode,
        ipv6_address_mode=m.ipv6_address_mode,
    )
    return ops.create_subnet(c.topo, sub, m.HasField("gateway_ip"), c.rev, c.now)


SUBNET = Resource(
    kind="subnet",
    plural="Subnets",
    to_pb=convert.subnet_to_pb,
    create=_create_subnet,
    update=lambda c, old, fields: ops.update_subnet(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_subnet(c.topo, old, force, c.rev, c.now),
    mutable=frozenset(ops.SUBNET_MUTABLE),
    immutable=frozenset({"name", "tenant", "network", "cidr", "ipv6_ra_mode", "ipv6_address_mode"}),
    output_only=frozenset({"ip_version", "revision", "create_time", "update_time"}),
    values={
        "allocation_pools": lambda c, m: tuple((a.start, a.end) for a in m.allocation_pools),
        "dns_servers": lambda c, m: tuple(m.dns_servers),
        "host_routes": lambda c, m: tuple((r.destination, r.nexthop) for r in m.host_routes),
    },
    parent=Parent("network", "network", "network_id"),
)

# ------------------------------------------------------------------------------------------ ports


def _create_port(c: Call, m: pb.Port) -> list[Change]:
    if m.binding_chassis:
        admin_only(c.p, "port.binding_chassis", "binding a port to a chassis")
    ip_requests = convert.fixed_ip_requests(list(m.fixed_ips), "port.fixed_ips")
    groups = convert.group_ids(list(m.security_groups), "port.security_groups")
    chassis = convert.chassis_ref(m.binding_chassis, "port.binding_chassis")
    tenant = c.tenant_for(m.tenant, "port.tenant") if m.tenant else ""
    port_security = m.port_security_enabled if m.HasField("port_security_enabled") else True
    if port_security and not groups:
        groups = [sec.DEFAULT_GROUP_REF]  # Neutron: a port with port security gets the default group
    net = c.get("network", m.network, "port.network")
    if not net.shared:  # a shared network takes any tenant's ports (Neutron's); others only their owner's
        net = c.owned("network", m.network, "port.network")
    ident = c.new_id()
    # a tenant's port on another tenant's shared network is the tenant's own
    owner = tenant or (c.p.tenant if not c.p.can_see(net.tenant) else net.tenant)
    group_ids, made = sec.resolve_groups(c.topo, owner, groups, "security_groups", c.p.admin, c.rev, c.now)
    port = Port(
        id=ident,
        tenant=owner,
        network_id=net.id,
        mac=m.mac_address,
        display_name=m.display_name,
        device_owner=m.device_owner,
        device_id=m.device_id,
        admin_state_up=_up(m),
        port_security_enabled=port_security,
        allowed_address_pairs=tuple((a.ip_address, a.mac_address) for a in m.allowed_address_pairs),
        security_groups=group_ids,
        binding_chassis=chassis,
        description=m.description,
        tags=tuple(m.tags),
    )
    return made + ops.create_port(c.topo, port, ip_requests, c.rev, c.now)


def _binding_admin_only(c: Call, old: Port, m: pb.Port, paths: list[str]) -> None:
    if "binding_chassis" in paths:
        admin_only(c.p, "port.binding_chassis", "binding a port to a chassis")


def _update_port(c: Call, old: Port, fields: dict[str, Any]) -> list[Change]:
    """ "default" among the groups is the port's tenant's default group (made in this write if need be)."""
    made: list[Change] = []
    if "security_groups" in fields:
        fields["security_groups"], made = sec.resolve_groups(
            c.topo, old.tenant, fields["security_groups"], "security_groups", c.p.admin, c.rev, c.now
        )
    return made + ops.update_port(c.topo, old, fields, c.rev, c.now)


def _port_filter(tables: Tables, p: Principal, request: pb.ListPortsRequest) -> KeepAndFilters:
    net = _ref("network", request.network, "network")
    chassis = convert.chassis_ref(request.binding_chassis) if request.binding_chassis else ""
    device = request.device_id

    def keep(r: Port) -> bool:
        return (
            (not net or r.network_id == net)
            and (not device or r.device_id == device)
            and (not chassis or r.binding_chassis == chassis)
        )

    return keep, {"network": net, "device_id": device, "binding_chassis": chassis}


PORT = Resource(
    kind="port",
    plural="Ports",
    to_pb=convert.port_to_pb,
    create=_create_port,
    update=_update_port,
    delete=lambda c, old, force: ops.delete_port(c.topo, old, c.rev, c.now),
    mutable=frozenset(ops.PORT_MUTABLE),
    immutable=frozenset({"name", "tenant", "network", "mac_address"}),
    output_only=frozenset({"status", "revision", "create_time", "update_time", "tunnel_key"}),
    values={
        "fixed_ips": lambda c, m: convert.fixed_ip_requests(list(m.fixed_ips)),
        "allowed_address_pairs": lambda c, m: tuple(
            (a.ip_address, a.mac_address) for a in m.allowed_address_pairs
        ),
        "security_groups": lambda c, m: tuple(convert.group_ids(list(m.security_groups))),
        "binding_chassis": lambda c, m: convert.chassis_ref(m.binding_chassis),
        "tags": lambda c, m: tuple(m.tags),
    },
    check_paths=_binding_admin_only,
    list_filter=_port_filter,
)

# ------------------------------------------------------------------------------------------ routers


def _gateway(c: Call, eg: pb.ExternalGateway) -> ops.GatewayRequest:
    """The external gateway asked for: a visible network (external ones are visible to every tenant)."""
    if not eg.network:
        raise errors.invalid(
            "router.external_gateway.network",
            "required: an external network (leave external_gateway unset for no gateway)",
        )
    net = c.get("network", eg.network, "router.external_gateway.network")
    subnet = _ref("subnet", eg.fixed_ip.subnet, "router.external_gateway.fixed_ip.subnet")
    fixed = tuple(
        (_ref("subnet", f.subnet, f"router.external_gateway.fixed_ips[{i}].subnet"), f.ip_address)
        for i, f in enumerate(eg.fixed_ips)
    )
    return ops.GatewayRequest(
        network_id=net.id,
        subnet_id=subnet,
        ip_address=eg.fixed_ip.ip_address,
        enable_snat=eg.enable_snat if eg.HasField("enable_snat") else True,
        fixed_ips=fixed,
    )


def _create_router(c: Call, m: pb.Router) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "router.tenant")
    ident = c.new_id()
    gateway = _gateway(c, m.external_gateway) if m.HasField("external_gateway") else None
    router = Router(
        id=ident,
        tenant=tenant,
        display_name=m.display_name,
        admin_state_up=_up(m),
        routes=tuple((r.destination, r.nexthop) for r in m.routes),
    )
    return ops.create_router(c.topo, router, gateway, c.rev, c.now)


def _router_pb(tables: Tables, router: Router, changes: Sequence[Change]) -> pb.Router:
    """The router with its interfaces and gateway as `changes` leave them (also for a dry run, whose
    changes are no longer in the model)."""
    with tables.state.lock:
        ports = {port.id: port for port in tables.state.topology.router_ports(router.id)}
    for kind, ident, _old, new in changes:
        if kind == "port":
            ports.pop(ident, None)
            if (
                isinstance(new, Port)
                and new.device_id == router.id
                and new.device_owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY)
            ):
                ports[ident] = new
    return convert.router_to_pb(router, sorted(ports.values(), key=lambda port: port.id))


ROUTER = Resource(
    kind="router",
    plural="Routers",
    to_pb=convert.router_to_pb,
    create=_create_router,
    update=lambda c, old, fields: ops.update_router(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_router(c.topo, old, force, c.rev, c.now),
    mutable=frozenset(ops.ROUTER_MUTABLE),
    immutable=frozenset({"name", "tenant"}),
    output_only=frozenset({"interfaces", "revision", "create_time", "update_time", "tunnel_key"}),
    values={
        "routes": lambda c, m: tuple((r.destination, r.nexthop) for r in m.routes),
        "external_gateway": lambda c, m: (
            _gateway(c, m.external_gateway) if m.HasField("external_gateway") else None
        ),
    },
    show=_router_pb,
)

# ------------------------------------------------------------------------------------------ floating IPs


def _create_floating_ip(c: Call, m: pb.FloatingIp) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "floating_ip.tenant")
    net = c.get("network", m.floating_network, "floating_ip.floating_network")
    ident = c.new_id()
    port = c.owned("port", m.port, "floating_ip.port").id if m.port else ""
    fip = FloatingIp(
        id=ident,
        tenant=tenant,
        network_id=net.id,
        address=m.floating_ip_address,
        port_id=port,
        fixed_ip=m.fixed_ip_address,
    )
    return ops.create_floating_ip(c.topo, fip, str(uuid.uuid4()), c.rev, c.now)


def _fip_filter(tables: Tables, p: Principal, request: pb.ListFloatingIpsRequest) -> KeepAndFilters:
    net = _ref("network", request.floating_network, "floating_network")
    port = _ref("port", request.port, "port")

    def keep(r: FloatingIp) -> bool:
        return (not net or r.network_id == net) and (not port or r.port_id == port)

    return keep, {"floating_network": net, "port": port}


FLOATING_IP = Resource(
    kind="floating_ip",
    plural="FloatingIps",
    to_pb=convert.floating_ip_to_pb,
    create=_create_floating_ip,
    # (re)association: the port must be the caller's; the model checks the router path to it
    update=lambda c, old, fields: ops.update_floating_ip(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_floating_ip(c.topo, old),
    mutable=frozenset(ops.FLOATING_IP_MUTABLE),
    immutable=frozenset({"name", "tenant", "floating_network", "floating_ip_address"}),
    output_only=frozenset({"router", "revision", "create_time", "update_time"}),
    values={"port": lambda c, m: c.owned("port", m.port, "floating_ip.port").id if m.port else ""},
    list_filter=_fip_filter,
)

# ------------------------------------------------------------------------------------------ chassis


def _create_chassis(c: Call, m: pb.Chassis) -> list[Change]:
    if not c.request.chassis_id:
        raise errors.invalid("chassis_id", "required: the chassis's name (usually its hostname)")
    ch = Chassis(
        id=c.new_id(),
        datapath_id=m.datapath_id,
        tunnel_ip=m.tunnel_ip,
        ovsdb_address=m.ovsdb_address,
        bridge_mappings=tuple(sorted(m.bridge_mappings.items())),
    )
    return ops.create_chassis(c.topo, ch, c.rev, c.now)


CHASSIS = Resource(
    kind="chassis",
    plural="Chassis",
    to_pb=convert.chassis_to_pb,
    create=_create_chassis,
    update=lambda c, old, fields: ops.update_chassis(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_chassis(c.topo, old, force, c.rev, c.now),
    mutable=frozenset(ops.CHASSIS_MUTABLE),
    immutable=frozenset({"name"}),
    output_only=frozenset({"revision", "create_time", "update_time"}),
    values={"bridge_mappings": lambda c, m: tuple(sorted(m.bridge_mappings.items()))},
    scope=Scope.ADMIN,
)

SPECS = (NETWORK, SUBNET, PORT, ROUTER, FLOATING_IP, CHASSIS)


class TopologyService(pb_grpc.TopologyServiceServicer):
    """The standard methods of SPECS and security_api.SPECS (installed by `serve` below), router interfaces,
    Watch, server info and tokens."""

    def __init__(
        self,
        state: State,
        tokens: Tokens,
        stopping: Callable[[], bool] = lambda: False,
        flow_budget: int = sec.DEFAULT_FLOW_BUDGET,
        streams: StreamLimiter | None = None,
    ) -> None:
        self.state = state
        self.tokens = tokens
        self._stopping = stopping
        # caps on open Watch streams (the server passes the one shared with its other streaming services)
        self.streams = streams if streams is not None else StreamLimiter()
        self._changes = SharedChanges(state.store)
        self._feed = ChangeFeed(state, self._changes, stopping, batch=WATCH_BATCH_REVISIONS)
        self.tables = Tables(state, [*SPECS, *security_api.SPECS, *lb_api.SPECS, *vpn_api.SPECS], flow_budget)
        #: plug-in name -> the gRPC services its api hook added (controller/api/server.py)
        self.plugin_services: dict[str, list[str]] = {}

    @property
    def flow_budget(self) -> int:
        """Per tenant and chassis, security-group flows a write may leave (0: no budget)."""
        return self.tables.flow_budget

    @flow_budget.setter
    def flow_budget(self, budget: int) -> None:
        self.tables.flow_budget = budget

    @property
    def planner(self) -> Planner | None:
        """Builds the Plan of a validate_only write (set when a dataplane runs; else plans are empty)."""
        return self.tables.planner

    @planner.setter
    def planner(self, planner: Planner | None) -> None:
        self.tables.planner = planner

    # -------------------------------------------------------------------------------------- router interfaces

    def _interface_write(
        self,
        request: Any,
        context: Any,
        op: Callable[[Topology, Router, str, str, int, float], list[Change]],
    ) -> list[Change]:
        which = request.WhichOneof("interface")
        if which is None:
            raise errors.invalid("subnet", "required: a subnet or a port")
        p = principal()
        lookup = self.tables.lookup

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            router = lookup(topo, p, "router", request.name, owned=True)
            subnet = port = ""
            if which == "subnet":
                subnet = lookup(topo, p, "subnet", request.subnet, "subnet", owned=True).id
            else:
                port = lookup(topo, p, "port", request.port, "port", owned=True).id
            return op(topo, router, subnet, port, rev, now)

        return self.tables.write(fn, request, context)

    def AddRouterInterface(self, request: pb.AddRouterInterfaceRequest, context: Any) -> pb.RouterInterface:
        def add(topo: Topology, router: Router, subnet: str, port: str, rev: int, now: float) -> list[Change]:
            return ops.add_router_interface(topo, router, subnet, port, str(uuid.uuid4()), rev, now)

        port = self._interface_write(request, context, add)[0][3]
        assert isinstance(port, Port)
        return _interface_pb(port, port.device_id)

    def RemoveRouterInterface(
        self, request: pb.RemoveRouterInterfaceRequest, context: Any
    ) -> pb.RouterInterface:
        port = self._interface_write(request, context, ops.remove_router_interface)[0][2]
        assert isinstance(port, Port)
        return _interface_pb(port, port.device_id)

    # ------------------------------------------------------------------------------------------ watch

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchEvent]:
        """Check the request, take a stream slot (RESOURCE_EXHAUSTED over a cap), then stream
        until the client goes, the server stops, or the token is revoked (UNAUTHENTICATED TOKEN_REVOKED)."""
        who = caller()  # authenticated by the AuthInterceptor
        p, token = who.principal, who.token
        try:
            if request.start_revision < 0:
                raise errors.invalid("start_revision", "must not be negative")
            # a revision read on another controller sharing the store: this one may not have it yet
            if request.start_revision > self.state.revision and not self.state.catch_up(
                request.start_revision
            ):
                raise ApiError(
                    "OUT_OF_RANGE",
                    "FUTURE_REVISION",
                    f"revision {request.start_revision} is ahead of the store ({self.state.revision})",
                    [("start_revision", "ahead of the store")],
                )
            compacted = self.state.store.compacted_revision
            if request.start_revision and request.start_revision < compacted:
                raise self._compacted(request.start_revision, compacted)
        except ApiError as err:
            abort(context, err)
            return
        except (OSError, sqlite3.Error) as err:
            log.error("Watch: storage failure: %s", err)
            abort(context, storage_error(err))
            return
        try:
            ticket = self.streams.admit(p.tenant, token, "Watch")
        except ApiError as err:
            context.abort_with_status(refusal_status(err, self.streams))
            return
        try:
            yield from self._watch(p, request.start_revision, context, self._valid(ticket, p))
            if ticket.revoked or self.tokens.lookup(token) != p:
                abort(context, revoked_error())
        except HistoryCompacted as gone:  # the stream fell behind a compaction while it replayed
            abort(context, self._compacted(gone.after, gone.compacted_revision))
        except (OSError, sqlite3.Error) as err:
            log.error("Watch: storage failure: %s", err)
            abort(context, storage_error(err))
        finally:
            self.streams.release(ticket)

    def _valid(self, ticket: Ticket, p: Principal) -> Callable[[], bool]:
        """Is the stream's token still the principal's? (Revocation also wakes the stream: see streams.py.)"""
        return lambda: not ticket.revoked and self.tokens.lookup(ticket.token) == p

    def _compacted(self, start: int, compacted: int) -> ApiError:
        """etcd's answer to a watch from a compacted revision, with what the client needs to re-list."""
        return ApiError(
            "OUT_OF_RANGE",
            "REVISION_COMPACTED",
            f"revision {start} is compacted (history is kept after revision {compacted}): "
            "re-list, e.g. Watch with start_revision 0 for a snapshot, then resume from its "
            "revision",
            [("start_revision", f"compacted; the oldest revision to resume from is {compacted}")],
            metadata={
                "compacted_revision": str(compacted),
                "start_revision": str(start),
                "current_revision": str(self.state.durable_revision),
            },
        )

    def _watch(
        self,
        p: Principal,
        start: int,
        context: grpc.ServicerContext,
        valid: Callable[[], bool] = lambda: True,
    ) -> Iterator[pb.WatchEvent]:
        """Snapshot (start 0) or replay from `start`, then follow the store's changes. Ends when the client
        goes, the server stops or `valid()` turns false, each checked at least every WATCH_WAIT_S."""
        cursor = start
        if start == 0:
            with self.state.lock:
                cursor = self.state.revision
                snapshot = [
                    r
                    for r in self.state.topology.all_records()
                    if visible(p, r, self.state.topology.networks)
                ]
            for rec in snapshot:
                if self._watched(rec):
                    yield self._event(pb.WatchEvent.EXISTING, cursor, rec)
            yield pb.WatchEvent(type=pb.WatchEvent.SYNCED, revision=cursor)
        synced = start == 0
        kinds = {
            "CREATED": pb.WatchEvent.CREATED,
            "UPDATED": pb.WatchEvent.UPDATED,
            "DELETED": pb.WatchEvent.DELETED,
        }
        follower = Follower(lambda rec: visible(p, rec, self.state.topology.networks), cursor)
        self._feed.follow(follower)
        try:
            while context.is_active() and not self._stopping() and not self.state.closed and valid():
                head = self.state.durable_revision  # every revision up to head is in the change log
                if head > cursor:
                    upto = min(head, cursor + WATCH_BATCH_REVISIONS)
                    for rev, _kind, op, rec in self._changes.get(cursor, upto):
                        if visible(p, rec, self.state.topology.networks) and self._watched(rec):
                            yield self._event(kinds[op], rev, rec)
                    cursor = upto
                    continue
                if not synced:
                    synced = True
                    yield pb.WatchEvent(type=pb.WatchEvent.SYNCED, revision=cursor)
                # woken by a change it can see (past ones it cannot), a stop or a revocation, or the timeout
                cursor = self._feed.wait(follower, cursor, WATCH_WAIT_S)
        finally:
            self._feed.unfollow(follower)

    def _watched(self, rec: Record) -> bool:
        """A core record, or a plug-in's with an API (its resource spec says how it looks)."""
        return rec.KIND in _WATCH_FIELDS or rec.KIND in self.tables.specs

    def _event(self, kind: int, revision: int, rec: Record) -> pb.WatchEvent:
        ev = pb.WatchEvent(type=kind, revision=revision)  # type: ignore[arg-type]
        if rec.KIND in _WATCH_FIELDS:
            getattr(ev, rec.KIND).CopyFrom(convert.to_pb(rec))
        else:  # a plug-in's record, in its own message type
            packed = any_pb2.Any()
            packed.Pack(self.tables.specs[rec.KIND].to_pb(rec))
            ev.plugin_resource.CopyFrom(packed)
        return ev

    def wake_streams(self) -> None:
        """Every open Watch re-checks its client, token and the server now (stop, revocation)."""
        with self.state.changed:
            self.state.changed.notify_all()
        self._feed.wake_all()

    # ------------------------------------------------------------------------------------------ misc

    def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Any) -> pb.ServerInfo:
        p = principal()
        return pb.ServerInfo(
            version=VERSION,
            revision=self.state.revision,
            tenant=p.tenant,
            admin=p.admin,
            compacted_revision=self.state.store.compacted_revision,
            plugins=[
                pb.PluginInfo(
                    name=x.name,
                    version=x.version,
                    interface_version=x.api_version,
                    app_id=x.app_id,
                    kinds=list(x.kinds),
                    services=self.plugin_services.get(x.name, []),
                    first_meter=x.meters.start if x.meters else 0,
                    meter_count=len(x.meters),
                )
                for x in plugin.loaded()
            ],
            # records kept without their plug-in, per kind: for admins only
            orphan_records=self.state.unknown_kinds() if p.admin else {},
        )

    def CreateToken(self, request: pb.CreateTokenRequest, context: Any) -> pb.Token:
        admin_only(principal(), "", "issuing tokens")
        ops.check_id(request.tenant, "tenant")
        token = self.tokens.create(request.tenant, request.admin)
        return pb.Token(token=token, tenant=request.tenant, admin=request.admin)

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: Any) -> empty_pb2.Empty:
        admin_only(principal(), "", "revoking tokens")
        try:
            revoked = self.tokens.revoke(request.token)
        except LastAdminToken:
            raise errors.failed_precondition(
                "LAST_ADMIN_TOKEN",
                "this is the only admin token; create another admin token before revoking it",
            ) from None
        if not revoked:
            raise errors.not_found("token", request.token[:8] + "…")
        return empty_pb2.Empty()


serve(TopologyService, [*SPECS, *security_api.SPECS])


#: the core kinds a WatchEvent has a field of its own for
_WATCH_FIELDS = frozenset(f.name for f in pb.WatchEvent.DESCRIPTOR.oneofs_by_name["resource"].fields) - {
    "plugin_resource"
}


def _interface_pb(port: Port, router_id: str) -> pb.RouterInterface:
    """An interface as the API shows it: its port's first IPv4 address (by subnet, the only one)."""
    ordered = sorted(port.fixed_ips, key=lambda f: ":" in f[1])  # IPv4 first, stable otherwise
    subnet, address = ordered[0] if ordered else ("", "")
    return convert.router_interface_pb(router_id, port, subnet, address)
