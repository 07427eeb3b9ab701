"""The gRPC TopologyService: authenticate, authorize (tenant scope, admin-only fields), translate to model
writes in topology.ops, and answer in API terms. No flows here: the dataplane follows the store's changes."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from controller import convert
from controller.auth import LastAdminToken, Principal, TokenFile
from controller.context import REQUEST
from controller.flow_budget import budgeted
from controller.status import abort, storage_error, unauthenticated
from controller.streams import StreamLimiter, Ticket, refusal_status, revoked_error
from controller.watch_feed import ChangeFeed, Follower, SharedChanges
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology import errors, ops
from topology import ops_security as sec
from topology.errors import ApiError
from topology.model import Topology
from topology.records import (
    INTERNAL_KINDS,
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
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
WATCH_BATCH_REVISIONS = 500
WATCH_WAIT_S = 0.5  # the longest a Watch waits before it re-checks its client, its token and the server

F = TypeVar("F", bound=Callable[..., Any])


def _unary(method: F) -> F:
    """Authenticate, call with the principal, map ApiError (and storage failures: a full or read-only disk)
    to a gRPC status."""

    @functools.wraps(method)
    def wrapper(self: TopologyService, request: Any, context: grpc.ServicerContext) -> Any:
        token = REQUEST.set(f"{method.__name__} {_request_id(context)}")
        try:
            principal = self.authenticate(context)
            return method(self, request, context, principal)
        except ApiError as err:
            abort(context, err)
        except (OSError, sqlite3.Error) as err:
            log.error("%s: storage failure: %s", method.__name__, err)
            abort(context, storage_error(err))
        finally:
            REQUEST.reset(token)

    return wrapper  # type: ignore[return-value]


def _request_id(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id (echoed back), or a fresh one: flows remember the request that made them."""
    for key, value in context.invocation_metadata():
        if key == "x-request-id" and value:
            rid = str(value)[:64]
            break
    else:
        rid = uuid.uuid4().hex[:12]
    try:
        context.send_initial_metadata((("x-request-id", rid),))
    except ValueError:
        pass  # already sent (not on unary calls)
    return rid


def _visible(p: Principal, rec: Record) -> bool:
    if rec.KIND in INTERNAL_KINDS:  # the controller's own records (neighbours, gateway holds): not API objects
        return False
    if isinstance(rec, Chassis):
        return p.admin
    return p.can_see(rec.tenant) or (isinstance(rec, Network) and rec.external)


def _admin_only(p: Principal, field_path: str, what: str) -> None:
    if not p.admin:
        raise errors.permission_denied(field_path, f"{what} is admin only")


def _page(items: list[Record], page_size: int, page_token: str, filters: dict[str, str],
          ) -> tuple[list[Record], str]:
    """Keyset pagination by id; the token binds the filters so a token cannot be replayed on another query."""
    if page_size < 0:
        raise errors.invalid("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
    after = ""
    if page_token:
        try:
            tok = json.loads(base64.urlsafe_b64decode(page_token.encode()))
            after, fp = tok["after"], tok["f"]
        except (ValueError, KeyError, TypeError):
            raise errors.invalid("page_token", "not a token this server issued") from None
        if fp != fingerprint:
            raise errors.invalid("page_token", "was issued for a different query")
    ordered = sorted((r for r in items if r.id > after), key=lambda r: r.id)
    page = ordered[:size]
    token = ""
    if len(ordered) > size:
        token = base64.urlsafe_b64encode(json.dumps({"after": page[-1].id, "f": fingerprint}).encode()).decode()
    return page, token


class TopologyService(pb_grpc.TopologyServiceServicer):
    def __init__(self, state: State, tokens: TokenFile, stopping: Callable[[], bool] = lambda: False,
                 flow_budget: int = sec.DEFAULT_FLOW_BUDGET, streams: StreamLimiter | None = None) -> None:
        from controller.security_api import SecurityApi

        self.state = state
        self.tokens = tokens
        self._stopping = stopping
        # caps on open Watch streams (the server passes the one shared with its other streaming services)
        self.streams = streams if streams is not None else StreamLimiter()
        self._changes = SharedChanges(state.store)
        self._feed = ChangeFeed(state, self._changes, stopping, batch=WATCH_BATCH_REVISIONS)
        self.flow_budget = flow_budget  # per tenant and chassis, security-group flows (0: none)
        self.security = SecurityApi(self)
        # builds the Plan of a validate_only write (set when a dataplane runs; else plans are empty)
        self.planner: Callable[[int, list[ops.Change]], pb.Plan] | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        return self._authenticate(context)[0]

    def _authenticate(self, context: grpc.ServicerContext) -> tuple[Principal, str]:
        """The caller's principal and bearer token."""
        for key, value in context.invocation_metadata():
            if key == "authorization":
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise unauthenticated("authorization must be 'Bearer <token>'")
                principal = self.tokens.lookup(token.strip())
                if principal is None:
                    raise unauthenticated("unknown or revoked token")
                return principal, token.strip()
        raise unauthenticated("missing 'authorization: Bearer <token>' metadata")

    def _get(self, topo: Topology, p: Principal, kind: str, name: str, field_path: str = "name") -> Any:
        ident = convert.parse_name(kind, name, field_path)
        rec = topo.table(kind).get(ident)
        if kind == "chassis" and not p.admin:
            raise errors.permission_denied(field_path, "chassis are admin only")
        if rec is None or not _visible(p, rec):
            raise errors.not_found(kind, ident)
        return rec

    def _owned(self, topo: Topology, p: Principal, kind: str, name: str, field_path: str = "name") -> Any:
        rec = self._get(topo, p, kind, name, field_path)
        if not p.can_see(rec.tenant):
            raise errors.permission_denied(field_path, f"{kind} {rec.id!r} belongs to the operator; "
                                                       "tenants may only read it")
        return rec

    def _write(self, fn: Callable[[Topology, int, float], list[ops.Change]], request: Any = None,
               context: Any = None) -> tuple[int, list[ops.Change]]:
        """A write, or with request.validate_only (AIP-163) a dry run whose Plan goes in the trailer. Either
        is refused when it takes a tenant's security-group flows over the flow budget."""
        fn = budgeted(fn, self.flow_budget)
        if request is None or not getattr(request, "validate_only", False):
            return self.state.write(fn)
        revision, changes, plan = self.state.dry_run(fn, self.planner)
        if context is not None:
            plan = plan if plan is not None else pb.Plan(revision=revision)
            context.set_trailing_metadata((("sdn-plan-bin", plan.SerializeToString()),))
        return revision, changes

    def _list(self, kind: str, p: Principal, request: Any, keep: Callable[[Any], bool],
              filters: dict[str, str]) -> tuple[list[Record], str]:
        if request.tenant and not p.admin and request.tenant != p.tenant:
            raise errors.permission_denied("tenant", "filtering by another tenant is admin only")
        with self.state.lock:
            items = [r for r in self.state.topology.table(kind).values()
                     if _visible(p, r) and (not request.tenant or r.tenant == request.tenant) and keep(r)]
        return _page(items, request.page_size, request.page_token, {"tenant": request.tenant, **filters})

    @staticmethod
    def _mask(msg: Any, update_mask: Any, current: Any, output_only: set[str], mutable: set[str]) -> list[str]:
        """Explicit paths as given ("*" = every mutable field); an empty mask = every populated field,
        ignoring output-only fields and immutable fields whose value is unchanged (AIP-134)."""
        if update_mask.paths:
            paths = list(update_mask.paths)
            return sorted(mutable) if "*" in paths else paths
        paths = []
        for fd, value in msg.ListFields():
            if fd.name == "name" or fd.name in output_only:
                continue
            if fd.name not in mutable and value == getattr(current, fd.name):
                continue
            paths.append(fd.name)
        return paths

    # ------------------------------------------------------------------------------------------ networks

    @_unary
    def CreateNetwork(self, request: pb.CreateNetworkRequest, context: Any, p: Principal) -> pb.Network:
        m = request.network
        stype = convert.SEGMENT_FROM_PB.get(m.segment_type, "") if m.segment_type else ""
        if m.segment_type and not stype:
            raise errors.invalid("network.segment_type", "unknown segment type")
        if stype in PROVIDER_TYPES:
            _admin_only(p, "network.segment_type", f"a {stype} (provider) network")
        if m.physical_network:
            _admin_only(p, "network.physical_network", "a physical network")
        if m.segment_id:
            _admin_only(p, "network.segment_id", "choosing a segment id")
        if m.external:
            _admin_only(p, "network.external", "an external network")
        tenant = self._tenant_for(p, m.tenant, "network.tenant")

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            ident = ops.new_id(topo, "network", request.network_id, "network_id")
            net = Network(id=ident, tenant=tenant, display_name=m.display_name, segment_type=stype,
                          segment_id=m.segment_id or None, physical_network=m.physical_network, mtu=m.mtu,
                          admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True,
                          external=m.external)
            return ops.create_network(topo, net, rev, now)

        return convert.network_to_pb(self._created(fn, "network.", request, context))  # type: ignore[arg-type]

    def _tenant_for(self, p: Principal, requested: str, field_path: str) -> str:
        if requested and requested != p.tenant:
            _admin_only(p, field_path, "acting for another tenant")
            ops.check_id(requested, field_path)
            return requested
        return p.tenant

    def _created(self, fn: Callable[[Topology, int, float], list[ops.Change]], prefix: str,
                 request: Any = None, context: Any = None) -> Record:
        try:
            _, changes = self._write(fn, request, context)
        except ApiError as err:
            raise _prefixed(err, prefix) from None
        rec = changes[-1][3]
        assert rec is not None
        return rec

    @_unary
    def GetNetwork(self, request: pb.GetNetworkRequest, context: Any, p: Principal) -> pb.Network:
        with self.state.lock:
            return convert.network_to_pb(self._get(self.state.topology, p, "network", request.name))

    @_unary
    def ListNetworks(self, request: pb.ListNetworksRequest, context: Any, p: Principal) -> pb.ListNetworksResponse:
        page, token = self._list("network", p, request, lambda r: True, {})
        return pb.ListNetworksResponse(networks=[convert.network_to_pb(r) for r in page],  # type: ignore[arg-type]
                                       next_page_token=token)

    @_unary
    def UpdateNetwork(self, request: pb.UpdateNetworkRequest, context: Any, p: Principal) -> pb.Network:
        m = request.network

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            old = self._owned(topo, p, "network", m.name, "network.name")
            paths = self._mask(m, request.update_mask, convert.network_to_pb(old), ops.NETWORK_OUTPUT,
                               ops.NETWORK_MUTABLE)
            if "external" in paths and m.external != old.external:
                _admin_only(p, "network.external", "the external flag")
            fields = {path: getattr(m, path) if path in ops.NETWORK_MUTABLE else None for path in paths}
            return ops.update_network(topo, old, fields, rev, now)

        return convert.network_to_pb(self._updated(fn, "network.", request, context))  # type: ignore[arg-type]

    def _updated(self, fn: Callable[[Topology, int, float], list[ops.Change]], prefix: str,
                 request: Any = None, context: Any = None) -> Record:
        try:
            _, changes = self._write(fn, request, context)
        except ApiError as err:
            raise _prefixed(err, prefix) from None
        if not changes:
            raise errors.invalid("update_mask", "nothing to update")
        rec = changes[-1][3]
        assert rec is not None
        return rec

    @_unary
    def DeleteNetwork(self, request: pb.DeleteNetworkRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            return ops.delete_network(topo, self._owned(topo, p, "network", request.name), request.force, rev, now)

        self._write(fn, request, context)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------------------------------ subnets

    @_unary
    def CreateSubnet(self, request: pb.CreateSubnetRequest, context: Any, p: Principal) -> pb.Subnet:
        m = request.subnet

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            net = self._owned(topo, p, "network", m.network, "subnet.network")
            ident = ops.new_id(topo, "subnet", request.subnet_id, "subnet_id")
            sub = Subnet(id=ident, tenant=net.tenant, network_id=net.id, cidr=m.cidr, display_name=m.display_name,
                         gateway_ip=m.gateway_ip,
                         allocation_pools=tuple((a.start, a.end) for a in m.allocation_pools),
                         enable_dhcp=m.enable_dhcp if m.HasField("enable_dhcp") else True,
                         dns_servers=tuple(m.dns_servers),
                         host_routes=tuple((r.destination, r.nexthop) for r in m.host_routes))
            return ops.create_subnet(topo, sub, m.HasField("gateway_ip"), rev, now)

        return convert.subnet_to_pb(self._created(fn, "subnet.", request, context))  # type: ignore[arg-type]

    @_unary
    def GetSubnet(self, request: pb.GetSubnetRequest, context: Any, p: Principal) -> pb.Subnet:
        with self.state.lock:
            return convert.subnet_to_pb(self._get(self.state.topology, p, "subnet", request.name))

    @_unary
    def ListSubnets(self, request: pb.ListSubnetsRequest, context: Any, p: Principal) -> pb.ListSubnetsResponse:
        net = convert.parse_name("network", request.network, "network") if request.network else ""
        page, token = self._list("subnet", p, request, lambda r: not net or r.network_id == net, {"network": net})
        return pb.ListSubnetsResponse(subnets=[convert.subnet_to_pb(r) for r in page],  # type: ignore[arg-type]
                                      next_page_token=token)

    @_unary
    def UpdateSubnet(self, request: pb.UpdateSubnetRequest, context: Any, p: Principal) -> pb.Subnet:
        m = request.subnet

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            old = self._owned(topo, p, "subnet", m.name, "subnet.name")
            paths = self._mask(m, request.update_mask, convert.subnet_to_pb(old), ops.SUBNET_OUTPUT,
                               ops.SUBNET_MUTABLE)
            conv: dict[str, Callable[[], Any]] = {
                "display_name": lambda: m.display_name,
                "gateway_ip": lambda: m.gateway_ip,
                "allocation_pools": lambda: tuple((a.start, a.end) for a in m.allocation_pools),
                "enable_dhcp": lambda: m.enable_dhcp,
                "dns_servers": lambda: tuple(m.dns_servers),
                "host_routes": lambda: tuple((r.destination, r.nexthop) for r in m.host_routes),
            }
            fields = {path: conv[path]() if path in conv else None for path in paths}
            return ops.update_subnet(topo, old, fields, rev, now)

        return convert.subnet_to_pb(self._updated(fn, "subnet.", request, context))  # type: ignore[arg-type]

    @_unary
    def DeleteSubnet(self, request: pb.DeleteSubnetRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            return ops.delete_subnet(topo, self._owned(topo, p, "subnet", request.name), request.force, rev, now)

        self._write(fn, request, context)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------------------------------ ports

    @_unary
    def CreatePort(self, request: pb.CreatePortRequest, context: Any, p: Principal) -> pb.Port:
        m = request.port
        if m.binding_chassis:
            _admin_only(p, "port.binding_chassis", "binding a port to a chassis")
        ip_requests = convert.fixed_ip_requests(list(m.fixed_ips), "port.fixed_ips")
        groups = convert.group_ids(list(m.security_groups), "port.security_groups")
        chassis = convert.chassis_ref(m.binding_chassis, "port.binding_chassis")
        tenant = self._tenant_for(p, m.tenant, "port.tenant") if m.tenant else ""
        port_security = m.port_security_enabled if m.HasField("port_security_enabled") else True
        if port_security and not groups:
            groups = [sec.DEFAULT_GROUP_REF]  # Neutron: a port with port security gets the default group

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            net = self._owned(topo, p, "network", m.network, "port.network")
            ident = ops.new_id(topo, "port", request.port_id, "port_id")
            owner = tenant or net.tenant
            group_ids, made = sec.resolve_groups(topo, owner, groups, "security_groups", p.admin, rev, now)
            port = Port(id=ident, tenant=owner, network_id=net.id, mac=m.mac_address,
                        display_name=m.display_name, device_owner=m.device_owner, device_id=m.device_id,
                        admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True,
                        port_security_enabled=port_security,
                        allowed_address_pairs=tuple((a.ip_address, a.mac_address)
                                                    for a in m.allowed_address_pairs),
                        security_groups=group_ids, binding_chassis=chassis)
            return made + ops.create_port(topo, port, ip_requests, rev, now)

        return convert.port_to_pb(self._created(fn, "port.", request, context))  # type: ignore[arg-type]

    @_unary
    def GetPort(self, request: pb.GetPortRequest, context: Any, p: Principal) -> pb.Port:
        with self.state.lock:
            return convert.port_to_pb(self._get(self.state.topology, p, "port", request.name))

    @_unary
    def ListPorts(self, request: pb.ListPortsRequest, context: Any, p: Principal) -> pb.ListPortsResponse:
        net = convert.parse_name("network", request.network, "network") if request.network else ""
        chassis = convert.chassis_ref(request.binding_chassis) if request.binding_chassis else ""

        def keep(r: Port) -> bool:
            return ((not net or r.network_id == net) and (not request.device_id or r.device_id == request.device_id)
                    and (not chassis or r.binding_chassis == chassis))

        page, token = self._list("port", p, request, keep, {"network": net, "device_id": request.device_id,
                                                              "binding_chassis": chassis})
        return pb.ListPortsResponse(ports=[convert.port_to_pb(r) for r in page],  # type: ignore[arg-type]
                                    next_page_token=token)

    @_unary
    def UpdatePort(self, request: pb.UpdatePortRequest, context: Any, p: Principal) -> pb.Port:
        m = request.port

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            old = self._owned(topo, p, "port", m.name, "port.name")
            paths = self._mask(m, request.update_mask, convert.port_to_pb(old), ops.PORT_OUTPUT, ops.PORT_MUTABLE)
            if "binding_chassis" in paths:
                _admin_only(p, "port.binding_chassis", "binding a port to a chassis")
            conv: dict[str, Callable[[], Any]] = {
                "fixed_ips": lambda: convert.fixed_ip_requests(list(m.fixed_ips)),
                "allowed_address_pairs": lambda: tuple((a.ip_address, a.mac_address)
                                                       for a in m.allowed_address_pairs),
                "security_groups": lambda: tuple(convert.group_ids(list(m.security_groups))),
                "binding_chassis": lambda: convert.chassis_ref(m.binding_chassis),
            }
            fields = {path: (conv[path]() if path in conv else getattr(m, path))
                      if path in ops.PORT_MUTABLE else None for path in paths}
            made: list[ops.Change] = []
            if "security_groups" in fields:
                fields["security_groups"], made = sec.resolve_groups(topo, old.tenant, fields["security_groups"],
                                                                     "security_groups", p.admin, rev, now)
            return made + ops.update_port(topo, old, fields, rev, now)

        return convert.port_to_pb(self._updated(fn, "port.", request, context))  # type: ignore[arg-type]

    @_unary
    def DeletePort(self, request: pb.DeletePortRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            return ops.delete_port(topo, self._owned(topo, p, "port", request.name), rev, now)

        self._write(fn, request, context)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------------------------------ routers

    def _gateway(self, topo: Topology, p: Principal, eg: pb.ExternalGateway) -> ops.GatewayRequest:
        """The external gateway asked for: a visible network (external ones are visible to every tenant)."""
        if not eg.network:
            raise errors.invalid("router.external_gateway.network", "required: an external network (leave "
                                 "external_gateway unset for no gateway)")
        net = self._get(topo, p, "network", eg.network, "router.external_gateway.network")
        subnet = (convert.parse_name("subnet", eg.fixed_ip.subnet, "router.external_gateway.fixed_ip.subnet")
                  if eg.fixed_ip.subnet else "")
        return ops.GatewayRequest(network_id=net.id, subnet_id=subnet, ip_address=eg.fixed_ip.ip_address,
                                  enable_snat=eg.enable_snat if eg.HasField("enable_snat") else True)

    def _router_pb(self, router: Router, changes: list[ops.Change]) -> pb.Router:
        """The router with its interfaces and gateway as `changes` leave them (also for a dry run, whose
        changes are no longer in the model)."""
        with self.state.lock:
            ports = {port.id: port for port in self.state.topology.router_ports(router.id)}
        for kind, ident, _old, new in changes:
            if kind == "port":
                ports.pop(ident, None)
                if (isinstance(new, Port) and new.device_id == router.id
                        and new.device_owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY)):
                    ports[ident] = new
        return convert.router_to_pb(router, sorted(ports.values(), key=lambda port: port.id))

    def _changed(self, fn: Callable[[Topology, int, float], list[ops.Change]], prefix: str, kind: str,
                 request: Any, context: Any) -> tuple[Any, list[ops.Change]]:
        """A write whose answer is the record of `kind` it creates or changes (not necessarily the last)."""
        try:
            _, changes = self._write(fn, request, context)
        except ApiError as err:
            raise _prefixed(err, prefix) from None
        rec = next((new for k, _i, _old, new in changes if k == kind and new is not None), None)
        if rec is None:
            raise errors.invalid("update_mask", "nothing to update")
        return rec, changes

    @_unary
    def CreateRouter(self, request: pb.CreateRouterRequest, context: Any, p: Principal) -> pb.Router:
        m = request.router
        tenant = self._tenant_for(p, m.tenant, "router.tenant")

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            ident = ops.new_id(topo, "router", request.router_id, "router_id")
            gateway = self._gateway(topo, p, m.external_gateway) if m.HasField("external_gateway") else None
            router = Router(id=ident, tenant=tenant, display_name=m.display_name,
                            admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True,
                            routes=tuple((r.destination, r.nexthop) for r in m.routes))
            return ops.create_router(topo, router, gateway, rev, now)

        rec, changes = self._changed(fn, "router.", "router", request, context)
        return self._router_pb(rec, changes)

    @_unary
    def GetRouter(self, request: pb.GetRouterRequest, context: Any, p: Principal) -> pb.Router:
        with self.state.lock:
            topo = self.state.topology
            rec = self._get(topo, p, "router", request.name)
            return convert.router_to_pb(rec, topo.router_ports(rec.id))

    @_unary
    def ListRouters(self, request: pb.ListRoutersRequest, context: Any, p: Principal) -> pb.ListRoutersResponse:
        page, token = self._list("router", p, request, lambda r: True, {})
        with self.state.lock:
            topo = self.state.topology
            routers = [convert.router_to_pb(r, topo.router_ports(r.id)) for r in page]  # type: ignore[arg-type]
        return pb.ListRoutersResponse(routers=routers, next_page_token=token)

    @_unary
    def UpdateRouter(self, request: pb.UpdateRouterRequest, context: Any, p: Principal) -> pb.Router:
        m = request.router

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            old = self._owned(topo, p, "router", m.name, "router.name")
            paths = self._mask(m, request.update_mask, convert.router_to_pb(old, topo.router_ports(old.id)),
                               ops.ROUTER_OUTPUT, ops.ROUTER_MUTABLE)
            conv: dict[str, Callable[[], Any]] = {
                "display_name": lambda: m.display_name,
                "admin_state_up": lambda: m.admin_state_up,
                "routes": lambda: tuple((r.destination, r.nexthop) for r in m.routes),
                "external_gateway": lambda: (self._gateway(topo, p, m.external_gateway)
                                             if m.HasField("external_gateway") else None),
            }
            fields = {path: conv[path]() if path in conv else None for path in paths}
            return ops.update_router(topo, old, fields, rev, now)

        rec, changes = self._changed(fn, "router.", "router", request, context)
        return self._router_pb(rec, changes)

    @_unary
    def DeleteRouter(self, request: pb.DeleteRouterRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            return ops.delete_router(topo, self._owned(topo, p, "router", request.name), request.force, rev, now)

        self._write(fn, request, context)
        return empty_pb2.Empty()

    @_unary
    def AddRouterInterface(self, request: pb.AddRouterInterfaceRequest, context: Any,
                           p: Principal) -> pb.RouterInterface:
        which = request.WhichOneof("interface")
        if which is None:
            raise errors.invalid("subnet", "required: a subnet or a port")

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            router = self._owned(topo, p, "router", request.name)
            subnet = self._owned(topo, p, "subnet", request.subnet, "subnet").id if which == "subnet" else ""
            port = self._owned(topo, p, "port", request.port, "port").id if which == "port" else ""
            return ops.add_router_interface(topo, router, subnet, port, str(uuid.uuid4()), rev, now)

        _, changes = self._write(fn, request, context)
        port = changes[0][3]
        assert isinstance(port, Port)
        return _interface_pb(port, port.device_id)

    @_unary
    def RemoveRouterInterface(self, request: pb.RemoveRouterInterfaceRequest, context: Any,
                              p: Principal) -> pb.RouterInterface:
        which = request.WhichOneof("interface")
        if which is None:
            raise errors.invalid("subnet", "required: a subnet or a port")

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            router = self._owned(topo, p, "router", request.name)
            subnet = self._owned(topo, p, "subnet", request.subnet, "subnet").id if which == "subnet" else ""
            port = self._owned(topo, p, "port", request.port, "port").id if which == "port" else ""
            return ops.remove_router_interface(topo, router, subnet, port, rev, now)

        _, changes = self._write(fn, request, context)
        port = changes[0][2]
        assert isinstance(port, Port)
        return _interface_pb(port, port.device_id)

    # ------------------------------------------------------------------------------------------ floating IPs

    @_unary
    def CreateFloatingIp(self, request: pb.CreateFloatingIpRequest, context: Any, p: Principal) -> pb.FloatingIp:
        m = request.floating_ip
        tenant = self._tenant_for(p, m.tenant, "floating_ip.tenant")

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            net = self._get(topo, p, "network", m.floating_network, "floating_ip.floating_network")
            ident = ops.new_id(topo, "floating_ip", request.floating_ip_id, "floating_ip_id")
            port = self._owned(topo, p, "port", m.port, "floating_ip.port").id if m.port else ""
            fip = FloatingIp(id=ident, tenant=tenant, network_id=net.id, address=m.floating_ip_address,
                             port_id=port, fixed_ip=m.fixed_ip_address)
            return ops.create_floating_ip(topo, fip, str(uuid.uuid4()), rev, now)

        rec, _ = self._changed(fn, "floating_ip.", "floating_ip", request, context)
        return convert.floating_ip_to_pb(rec)

    @_unary
    def GetFloatingIp(self, request: pb.GetFloatingIpRequest, context: Any, p: Principal) -> pb.FloatingIp:
        with self.state.lock:
            return convert.floating_ip_to_pb(self._get(self.state.topology, p, "floating_ip", request.name))

    @_unary
    def ListFloatingIps(self, request: pb.ListFloatingIpsRequest, context: Any,
                        p: Principal) -> pb.ListFloatingIpsResponse:
        net = (convert.parse_name("network", request.floating_network, "floating_network")
               if request.floating_network else "")
        port = convert.parse_name("port", request.port, "port") if request.port else ""

        def keep(r: FloatingIp) -> bool:
            return (not net or r.network_id == net) and (not port or r.port_id == port)

        page, token = self._list("floating_ip", p, request, keep, {"floating_network": net, "port": port})
        return pb.ListFloatingIpsResponse(floating_ips=[convert.floating_ip_to_pb(r) for r in page],  # type: ignore[arg-type]
                                          next_page_token=token)

    @_unary
    def UpdateFloatingIp(self, request: pb.UpdateFloatingIpRequest, context: Any, p: Principal) -> pb.FloatingIp:
        m = request.floating_ip

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            old = self._owned(topo, p, "floating_ip", m.name, "floating_ip.name")
            paths = self._mask(m, request.update_mask, convert.floating_ip_to_pb(old), ops.FLOATING_IP_OUTPUT,
                               ops.FLOATING_IP_MUTABLE)
            conv: dict[str, Callable[[], Any]] = {
                "port": lambda: self._owned(topo, p, "port", m.port, "floating_ip.port").id if m.port else "",
                "fixed_ip_address": lambda: m.fixed_ip_address,
            }
            fields = {path: conv[path]() if path in conv else None for path in paths}
            return ops.update_floating_ip(topo, old, fields, rev, now)

        rec, _ = self._changed(fn, "floating_ip.", "floating_ip", request, context)
        return convert.floating_ip_to_pb(rec)

    @_unary
    def DeleteFloatingIp(self, request: pb.DeleteFloatingIpRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            return ops.delete_floating_ip(topo, self._owned(topo, p, "floating_ip", request.name))

        self._write(fn, request, context)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------------------------------ security groups
    # (controller/security_api.py)

    @_unary
    def CreateSecurityGroup(self, request: pb.CreateSecurityGroupRequest, context: Any,
                            p: Principal) -> pb.SecurityGroup:
        return self.security.create_group(request, context, p)

    @_unary
    def GetSecurityGroup(self, request: pb.GetSecurityGroupRequest, context: Any, p: Principal) -> pb.SecurityGroup:
        return self.security.get_group(request, context, p)

    @_unary
    def ListSecurityGroups(self, request: pb.ListSecurityGroupsRequest, context: Any,
                           p: Principal) -> pb.ListSecurityGroupsResponse:
        return self.security.list_groups(request, context, p)

    @_unary
    def UpdateSecurityGroup(self, request: pb.UpdateSecurityGroupRequest, context: Any,
                            p: Principal) -> pb.SecurityGroup:
        return self.security.update_group(request, context, p)

    @_unary
    def DeleteSecurityGroup(self, request: pb.DeleteSecurityGroupRequest, context: Any,
                            p: Principal) -> empty_pb2.Empty:
        return self.security.delete_group(request, context, p)

    @_unary
    def CreateSecurityGroupRule(self, request: pb.CreateSecurityGroupRuleRequest, context: Any,
                                p: Principal) -> pb.SecurityGroupRule:
        return self.security.create_rule(request, context, p)

    @_unary
    def GetSecurityGroupRule(self, request: pb.GetSecurityGroupRuleRequest, context: Any,
                             p: Principal) -> pb.SecurityGroupRule:
        return self.security.get_rule(request, context, p)

    @_unary
    def ListSecurityGroupRules(self, request: pb.ListSecurityGroupRulesRequest, context: Any,
                               p: Principal) -> pb.ListSecurityGroupRulesResponse:
        return self.security.list_rules(request, context, p)

    @_unary
    def DeleteSecurityGroupRule(self, request: pb.DeleteSecurityGroupRuleRequest, context: Any,
                                p: Principal) -> empty_pb2.Empty:
        return self.security.delete_rule(request, context, p)

    # ------------------------------------------------------------------------------------------ router firewalls

    @_unary
    def CreateFirewallRule(self, request: pb.CreateFirewallRuleRequest, context: Any, p: Principal) -> pb.FirewallRule:
        return self.security.create_fw_rule(request, context, p)

    @_unary
    def GetFirewallRule(self, request: pb.GetFirewallRuleRequest, context: Any, p: Principal) -> pb.FirewallRule:
        return self.security.get("firewall_rule", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListFirewallRules(self, request: pb.ListFirewallRulesRequest, context: Any,
                          p: Principal) -> pb.ListFirewallRulesResponse:
        items, token = self.security.list("firewall_rule", request, p)
        return pb.ListFirewallRulesResponse(firewall_rules=items, next_page_token=token)

    @_unary
    def UpdateFirewallRule(self, request: pb.UpdateFirewallRuleRequest, context: Any, p: Principal) -> pb.FirewallRule:
        return self.security.update_fw_rule(request, context, p)

    @_unary
    def DeleteFirewallRule(self, request: pb.DeleteFirewallRuleRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        return self.security.delete("firewall_rule", request, context, p)

    @_unary
    def CreateFirewallPolicy(self, request: pb.CreateFirewallPolicyRequest, context: Any,
                             p: Principal) -> pb.FirewallPolicy:
        return self.security.create_policy(request, context, p)

    @_unary
    def GetFirewallPolicy(self, request: pb.GetFirewallPolicyRequest, context: Any, p: Principal) -> pb.FirewallPolicy:
        return self.security.get("firewall_policy", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListFirewallPolicies(self, request: pb.ListFirewallPoliciesRequest, context: Any,
                             p: Principal) -> pb.ListFirewallPoliciesResponse:
        items, token = self.security.list("firewall_policy", request, p)
        return pb.ListFirewallPoliciesResponse(firewall_policies=items, next_page_token=token)

    @_unary
    def UpdateFirewallPolicy(self, request: pb.UpdateFirewallPolicyRequest, context: Any,
                             p: Principal) -> pb.FirewallPolicy:
        return self.security.update_policy(request, context, p)

    @_unary
    def DeleteFirewallPolicy(self, request: pb.DeleteFirewallPolicyRequest, context: Any,
                             p: Principal) -> empty_pb2.Empty:
        return self.security.delete("firewall_policy", request, context, p)

    @_unary
    def CreateFirewallGroup(self, request: pb.CreateFirewallGroupRequest, context: Any,
                            p: Principal) -> pb.FirewallGroup:
        return self.security.create_fw_group(request, context, p)

    @_unary
    def GetFirewallGroup(self, request: pb.GetFirewallGroupRequest, context: Any, p: Principal) -> pb.FirewallGroup:
        return self.security.get("firewall_group", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListFirewallGroups(self, request: pb.ListFirewallGroupsRequest, context: Any,
                           p: Principal) -> pb.ListFirewallGroupsResponse:
        items, token = self.security.list("firewall_group", request, p)
        return pb.ListFirewallGroupsResponse(firewall_groups=items, next_page_token=token)

    @_unary
    def UpdateFirewallGroup(self, request: pb.UpdateFirewallGroupRequest, context: Any,
                            p: Principal) -> pb.FirewallGroup:
        return self.security.update_fw_group(request, context, p)

    @_unary
    def DeleteFirewallGroup(self, request: pb.DeleteFirewallGroupRequest, context: Any,
                            p: Principal) -> empty_pb2.Empty:
        return self.security.delete("firewall_group", request, context, p)

    # ------------------------------------------------------------------------------------------ chassis

    @_unary
    def CreateChassis(self, request: pb.CreateChassisRequest, context: Any, p: Principal) -> pb.Chassis:
        _admin_only(p, "", "chassis")
        m = request.chassis
        if not request.chassis_id:
            raise errors.invalid("chassis_id", "required: the chassis's name (usually its hostname)")

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            ident = ops.new_id(topo, "chassis", request.chassis_id, "chassis_id")
            ch = Chassis(id=ident, datapath_id=m.datapath_id, tunnel_ip=m.tunnel_ip,
                         ovsdb_address=m.ovsdb_address, bridge_mappings=tuple(sorted(m.bridge_mappings.items())))
            return ops.create_chassis(topo, ch, rev, now)

        return convert.chassis_to_pb(self._created(fn, "chassis.", request, context))  # type: ignore[arg-type]

    @_unary
    def GetChassis(self, request: pb.GetChassisRequest, context: Any, p: Principal) -> pb.Chassis:
        with self.state.lock:
            return convert.chassis_to_pb(self._get(self.state.topology, p, "chassis", request.name))

    @_unary
    def ListChassis(self, request: pb.ListChassisRequest, context: Any, p: Principal) -> pb.ListChassisResponse:
        _admin_only(p, "", "chassis")
        with self.state.lock:
            items: list[Record] = list(self.state.topology.chassis.values())
        page, token = _page(items, request.page_size, request.page_token, {})
        return pb.ListChassisResponse(chassis=[convert.chassis_to_pb(r) for r in page],  # type: ignore[arg-type]
                                      next_page_token=token)

    @_unary
    def UpdateChassis(self, request: pb.UpdateChassisRequest, context: Any, p: Principal) -> pb.Chassis:
        m = request.chassis

        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            old = self._get(topo, p, "chassis", m.name, "chassis.name")
            paths = self._mask(m, request.update_mask, convert.chassis_to_pb(old), ops.CHASSIS_OUTPUT,
                               ops.CHASSIS_MUTABLE)
            fields = {path: (tuple(sorted(m.bridge_mappings.items())) if path == "bridge_mappings"
                             else getattr(m, path)) if path in ops.CHASSIS_MUTABLE else None for path in paths}
            return ops.update_chassis(topo, old, fields, rev, now)

        return convert.chassis_to_pb(self._updated(fn, "chassis.", request, context))  # type: ignore[arg-type]

    @_unary
    def DeleteChassis(self, request: pb.DeleteChassisRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[ops.Change]:
            return ops.delete_chassis(topo, self._get(topo, p, "chassis", request.name), request.force, rev, now)

        self._write(fn, request, context)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------------------------------ watch

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchEvent]:
        """Authenticate, check the request, take a stream slot (RESOURCE_EXHAUSTED over a cap), then stream
        until the client goes, the server stops, or the token is revoked (UNAUTHENTICATED TOKEN_REVOKED)."""
        try:
            p, token = self._authenticate(context)
            if request.start_revision < 0:
                raise errors.invalid("start_revision", "must not be negative")
            if request.start_revision > self.state.revision:
                raise ApiError("OUT_OF_RANGE", "FUTURE_REVISION",
                               f"revision {request.start_revision} is ahead of the store "
                               f"({self.state.revision})", [("start_revision", "ahead of the store")])
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
        return ApiError("OUT_OF_RANGE", "REVISION_COMPACTED",
                        f"revision {start} is compacted (history is kept after revision {compacted}): "
                        "re-list, e.g. Watch with start_revision 0 for a snapshot, then resume from its "
                        "revision",
                        [("start_revision", f"compacted; the oldest revision to resume from is {compacted}")],
                        metadata={"compacted_revision": str(compacted), "start_revision": str(start),
                                  "current_revision": str(self.state.durable_revision)})

    def _watch(self, p: Principal, start: int, context: grpc.ServicerContext,
               valid: Callable[[], bool] = lambda: True) -> Iterator[pb.WatchEvent]:
        """Snapshot (start 0) or replay from `start`, then follow the store's changes. Ends when the client
        goes, the server stops or `valid()` turns false, each checked at least every WATCH_WAIT_S."""
        cursor = start
        if start == 0:
            with self.state.lock:
                cursor = self.state.revision
                snapshot = [r for r in self.state.topology.all_records() if _visible(p, r)]
            for rec in snapshot:
                yield _event(pb.WatchEvent.EXISTING, cursor, rec)
            yield pb.WatchEvent(type=pb.WatchEvent.SYNCED, revision=cursor)
        synced = start == 0
        kinds = {"CREATED": pb.WatchEvent.CREATED, "UPDATED": pb.WatchEvent.UPDATED,
                 "DELETED": pb.WatchEvent.DELETED}
        follower = Follower(lambda rec: _visible(p, rec), cursor)
        self._feed.follow(follower)
        try:
            while context.is_active() and not self._stopping() and not self.state.closed and valid():
                head = self.state.durable_revision  # every revision up to head is in the change log
                if head > cursor:
                    upto = min(head, cursor + WATCH_BATCH_REVISIONS)
                    for rev, _kind, op, rec in self._changes.get(cursor, upto):
                        if _visible(p, rec):
                            yield _event(kinds[op], rev, rec)
                    cursor = upto
                    continue
                if not synced:
                    synced = True
                    yield pb.WatchEvent(type=pb.WatchEvent.SYNCED, revision=cursor)
                # woken by a change it can see (past ones it cannot), a stop or a revocation, or the timeout
                cursor = self._feed.wait(follower, cursor, WATCH_WAIT_S)
        finally:
            self._feed.unfollow(follower)

    def wake_streams(self) -> None:
        """Every open Watch re-checks its client, token and the server now (stop, revocation)."""
        with self.state.changed:
            self.state.changed.notify_all()
        self._feed.wake_all()

    # ------------------------------------------------------------------------------------------ misc

    @_unary
    def GetServerInfo(self, request: pb.GetServerInfoRequest, context: Any, p: Principal) -> pb.ServerInfo:
        return pb.ServerInfo(version=VERSION, revision=self.state.revision, tenant=p.tenant, admin=p.admin,
                             compacted_revision=self.state.store.compacted_revision)

    @_unary
    def CreateToken(self, request: pb.CreateTokenRequest, context: Any, p: Principal) -> pb.Token:
        _admin_only(p, "", "issuing tokens")
        ops.check_id(request.tenant, "tenant")
        token = self.tokens.create(request.tenant, request.admin)
        return pb.Token(token=token, tenant=request.tenant, admin=request.admin)

    @_unary
    def RevokeToken(self, request: pb.RevokeTokenRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        _admin_only(p, "", "revoking tokens")
        try:
            revoked = self.tokens.revoke(request.token)
        except LastAdminToken:
            raise errors.failed_precondition("LAST_ADMIN_TOKEN", "this is the only admin token; create "
                                             "another admin token before revoking it") from None
        if not revoked:
            raise errors.not_found("token", request.token[:8] + "…")
        return empty_pb2.Empty()


def _event(kind: int, revision: int, rec: Record) -> pb.WatchEvent:
    ev = pb.WatchEvent(type=kind, revision=revision)  # type: ignore[arg-type]
    getattr(ev, rec.KIND).CopyFrom(convert.to_pb(rec))
    return ev


_REQUEST_LEVEL = ("update_mask", "network_id", "subnet_id", "port_id", "chassis_id", "router_id", "floating_ip_id",
                  "security_group_id", "security_group_rule_id", "firewall_rule_id", "firewall_policy_id",
                  "firewall_group_id", "network.", "subnet.", "port.", "chassis.", "router.", "floating_ip.",
                  "security_group.", "security_group_rule.", "firewall_rule.", "firewall_policy.", "firewall_group.")


def _interface_pb(port: Port, router_id: str) -> pb.RouterInterface:
    """An interface as the API shows it: its port's first IPv4 address (by subnet, the only one)."""
    ordered = sorted(port.fixed_ips, key=lambda f: ":" in f[1])  # IPv4 first, stable otherwise
    subnet, address = ordered[0] if ordered else ("", "")
    return convert.router_interface_pb(router_id, port, subnet, address)


def _prefixed(err: ApiError, prefix: str) -> ApiError:
    """Model errors name fields relative to the resource; the API names them from the request."""
    err.violations = [(f if not f or f.startswith(_REQUEST_LEVEL) else prefix + f, d) for f, d in err.violations]
    return err
