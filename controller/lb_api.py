"""The gRPC LoadBalancerService (Octavia's shape): load balancers, listeners, pools, members, health monitors.

Authentication, tenant scope, pagination, FieldMask handling and validate_only are the TopologyService's
(northbound.py); writes go to topology.ops_lb. Changes show up in TopologyService.Watch like every other kind.
A member is named under its pool: "pools/{pool}/members/{member}".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2

from controller import convert
from controller.auth import Principal
from controller.northbound import TopologyService, _unary
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology import errors
from topology import ops_lb as lbo
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.ops import new_id
from topology.records import HealthMonitor, Listener, LoadBalancer, Member, Pool

WriteFn = Callable[[Topology, int, float], list[Change]]
#: field paths that name the request, not the resource (left unprefixed in errors)
_REQUEST_LEVEL = ("update_mask", "parent", "load_balancer_id", "listener_id", "pool_id", "member_id",
                  "health_monitor_id", "load_balancer.", "listener.", "pool.", "member.", "health_monitor.")


def _prefixed(err: ApiError, prefix: str) -> ApiError:
    err.violations = [(f if not f or f.startswith(_REQUEST_LEVEL) else prefix + f, d) for f, d in err.violations]
    return err


class LoadBalancerService(pb_grpc.LoadBalancerServiceServicer):
    def __init__(self, svc: TopologyService) -> None:
        self.svc = svc
        self.state = svc.state

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        return self.svc.authenticate(context)

    # ------------------------------------------------------------------------------------------ plumbing

    def _write(self, fn: WriteFn, kind: str, ident: Callable[[], str], request: Any, context: Any) -> Any:
        """A write answering with the record `ident()` names, as the write left it."""
        try:
            _, changes = self.svc._write(fn, request, context)
        except ApiError as err:
            raise _prefixed(err, kind + ".") from None
        rec = next((new for k, i, _old, new in reversed(changes) if k == kind and i == ident()), None)
        if rec is None:
            raise errors.invalid("update_mask", "nothing to update")
        return convert.to_pb(rec)

    def _delete(self, fn: WriteFn, request: Any, context: Any) -> empty_pb2.Empty:
        self.svc._write(fn, request, context)
        return empty_pb2.Empty()

    def _owned(self, topo: Topology, p: Principal, kind: str, name: str, field_path: str = "name") -> Any:
        if kind == "member":
            return self._member(topo, p, name, field_path)
        return self.svc._owned(topo, p, kind, name, field_path)

    def _member(self, topo: Topology, p: Principal, name: str, field_path: str = "name") -> Member:
        pool_id, ident = convert.parse_member_name(name, field_path)
        rec = topo.members.get(ident)
        if rec is None or rec.pool_id != pool_id or not p.can_see(rec.tenant):
            raise errors.not_found("member", ident)
        return rec

    def _fields(self, m: Any, request: Any, current: Any, output: set[str], mutable: set[str],
                conv: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        """Record fields to change: the mask's paths (immutable and output-only ones kept so that they are
        refused by name), values converted by `conv` (default: the message field)."""
        paths = self.svc._mask(m, request.update_mask, current, output, mutable)
        return {path: (conv[path]() if path in conv else getattr(m, path)) if path in mutable else None
                for path in paths}

    def _get(self, kind: str, name: str, p: Principal) -> Any:
        with self.state.lock:
            return convert.to_pb(self._owned(self.state.topology, p, kind, name) if kind == "member" else
                                 self.svc._get(self.state.topology, p, kind, name))

    def _list(self, kind: str, request: Any, p: Principal, parent_field: str = "", parent: str = "") -> Any:
        page, token = self.svc._list(kind, p, request,
                                     lambda r: not parent or getattr(r, parent_field) == parent,
                                     {parent_field: parent} if parent_field else {})
        return [convert.to_pb(r) for r in page], token

    def _ref_id(self, kind: str, name: str, field_path: str) -> str:
        return convert.parse_name(kind, name, field_path) if name else ""

    # ------------------------------------------------------------------------------------------ load balancers

    @_unary
    def CreateLoadBalancer(self, request: pb.CreateLoadBalancerRequest, context: Any,
                           p: Principal) -> pb.LoadBalancer:
        m = request.load_balancer
        tenant = self.svc._tenant_for(p, m.tenant, "load_balancer.tenant")
        subnet = convert.parse_name("subnet", m.vip_subnet, "load_balancer.vip_subnet")
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            made["id"] = new_id(topo, "load_balancer", request.load_balancer_id, "load_balancer_id")
            lb = LoadBalancer(id=made["id"], tenant=tenant, display_name=m.display_name, description=m.description,
                              vip_subnet_id=subnet, vip_address=m.vip_address.strip(),
                              admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True)
            return lbo.create_load_balancer(topo, lb, p.admin, rev, now)

        return self._write(fn, "load_balancer", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def GetLoadBalancer(self, request: pb.GetLoadBalancerRequest, context: Any, p: Principal) -> pb.LoadBalancer:
        return self._get("load_balancer", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListLoadBalancers(self, request: pb.ListLoadBalancersRequest, context: Any,
                          p: Principal) -> pb.ListLoadBalancersResponse:
        items, token = self._list("load_balancer", request, p)
        return pb.ListLoadBalancersResponse(load_balancers=items, next_page_token=token)

    @_unary
    def UpdateLoadBalancer(self, request: pb.UpdateLoadBalancerRequest, context: Any,
                           p: Principal) -> pb.LoadBalancer:
        m = request.load_balancer
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._owned(topo, p, "load_balancer", m.name, "load_balancer.name")
            made["id"] = old.id
            fields = self._fields(m, request, convert.to_pb(old), lbo.LOAD_BALANCER_OUTPUT,
                                  lbo.LOAD_BALANCER_MUTABLE, {})
            return lbo.update_load_balancer(topo, old, fields, rev, now)

        return self._write(fn, "load_balancer", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def DeleteLoadBalancer(self, request: pb.DeleteLoadBalancerRequest, context: Any,
                           p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            return lbo.delete_load_balancer(topo, self._owned(topo, p, "load_balancer", request.name),
                                            request.force)

        return self._delete(fn, request, context)

    # ------------------------------------------------------------------------------------------ listeners

    @_unary
    def CreateListener(self, request: pb.CreateListenerRequest, context: Any, p: Principal) -> pb.Listener:
        m = request.listener
        pool_id = self._ref_id("pool", m.default_pool, "listener.default_pool")
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            lb = self._owned(topo, p, "load_balancer", m.load_balancer, "listener.load_balancer")
            made["id"] = new_id(topo, "listener", request.listener_id, "listener_id")
            rec = Listener(id=made["id"], tenant=lb.tenant, load_balancer_id=lb.id, protocol=m.protocol,
                           protocol_port=m.protocol_port, default_pool_id=pool_id, display_name=m.display_name,
                           admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True)
            return lbo.create_listener(topo, rec, rev, now)

        return self._write(fn, "listener", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def GetListener(self, request: pb.GetListenerRequest, context: Any, p: Principal) -> pb.Listener:
        return self._get("listener", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListListeners(self, request: pb.ListListenersRequest, context: Any, p: Principal) -> pb.ListListenersResponse:
        lb_id = self._ref_id("load_balancer", request.load_balancer, "load_balancer")
        items, token = self._list("listener", request, p, "load_balancer_id", lb_id)
        return pb.ListListenersResponse(listeners=items, next_page_token=token)

    @_unary
    def UpdateListener(self, request: pb.UpdateListenerRequest, context: Any, p: Principal) -> pb.Listener:
        m = request.listener
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._owned(topo, p, "listener", m.name, "listener.name")
            made["id"] = old.id
            fields = self._fields(m, request, convert.to_pb(old), lbo.LISTENER_OUTPUT, lbo.LISTENER_MUTABLE,
                                  {"default_pool": lambda: self._ref_id("pool", m.default_pool, "default_pool")})
            return lbo.update_listener(topo, old, fields, rev, now)

        return self._write(fn, "listener", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def DeleteListener(self, request: pb.DeleteListenerRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        return self._delete(lambda topo, rev, now: lbo.delete_listener(
            self._owned(topo, p, "listener", request.name)), request, context)

    # ------------------------------------------------------------------------------------------ pools

    @_unary
    def CreatePool(self, request: pb.CreatePoolRequest, context: Any, p: Principal) -> pb.Pool:
        m = request.pool
        if not m.load_balancer and not m.listener:
            raise errors.invalid("pool.load_balancer", "required: a load balancer or a listener")
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            listener = self._owned(topo, p, "listener", m.listener, "pool.listener") if m.listener else None
            if m.load_balancer:
                lb = self._owned(topo, p, "load_balancer", m.load_balancer, "pool.load_balancer")
            else:
                assert listener is not None  # one of them is required (checked above)
                lb = topo.load_balancers[listener.load_balancer_id]
            made["id"] = new_id(topo, "pool", request.pool_id, "pool_id")
            rec = Pool(id=made["id"], tenant=lb.tenant, load_balancer_id=lb.id, protocol=m.protocol,
                       lb_algorithm=m.lb_algorithm, display_name=m.display_name,
                       admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True)
            return lbo.create_pool(topo, rec, listener, rev, now)

        return self._write(fn, "pool", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def GetPool(self, request: pb.GetPoolRequest, context: Any, p: Principal) -> pb.Pool:
        return self._get("pool", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListPools(self, request: pb.ListPoolsRequest, context: Any, p: Principal) -> pb.ListPoolsResponse:
        lb_id = self._ref_id("load_balancer", request.load_balancer, "load_balancer")
        items, token = self._list("pool", request, p, "load_balancer_id", lb_id)
        return pb.ListPoolsResponse(pools=items, next_page_token=token)

    @_unary
    def UpdatePool(self, request: pb.UpdatePoolRequest, context: Any, p: Principal) -> pb.Pool:
        m = request.pool
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._owned(topo, p, "pool", m.name, "pool.name")
            made["id"] = old.id
            fields = self._fields(m, request, convert.to_pb(old), lbo.POOL_OUTPUT, lbo.POOL_MUTABLE, {})
            return lbo.update_pool(topo, old, fields, rev, now)

        return self._write(fn, "pool", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def DeletePool(self, request: pb.DeletePoolRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        return self._delete(lambda topo, rev, now: lbo.delete_pool(
            topo, self._owned(topo, p, "pool", request.name), rev, now), request, context)

    # ------------------------------------------------------------------------------------------ members

    @_unary
    def CreateMember(self, request: pb.CreateMemberRequest, context: Any, p: Principal) -> pb.Member:
        m = request.member
        subnet = self._ref_id("subnet", m.subnet, "member.subnet")
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            pool = self._owned(topo, p, "pool", request.parent, "parent")
            made["id"] = new_id(topo, "member", request.member_id, "member_id")
            rec = Member(id=made["id"], tenant=pool.tenant, pool_id=pool.id, address=m.address.strip(),
                         protocol_port=m.protocol_port, subnet_id=subnet, display_name=m.display_name,
                         weight=m.weight if m.HasField("weight") else 1,
                         admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True)
            return lbo.create_member(topo, rec, p.admin, rev, now)

        return self._write(fn, "member", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def GetMember(self, request: pb.GetMemberRequest, context: Any, p: Principal) -> pb.Member:
        return self._get("member", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListMembers(self, request: pb.ListMembersRequest, context: Any, p: Principal) -> pb.ListMembersResponse:
        with self.state.lock:
            pool = self.svc._get(self.state.topology, p, "pool", request.parent, "parent")
        items, token = self._list("member", request, p, "pool_id", pool.id)
        return pb.ListMembersResponse(members=items, next_page_token=token)

    @_unary
    def UpdateMember(self, request: pb.UpdateMemberRequest, context: Any, p: Principal) -> pb.Member:
        m = request.member
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._member(topo, p, m.name, "member.name")
            made["id"] = old.id
            fields = self._fields(m, request, convert.to_pb(old), lbo.MEMBER_OUTPUT, lbo.MEMBER_MUTABLE, {})
            return lbo.update_member(topo, old, fields, rev, now)

        return self._write(fn, "member", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def DeleteMember(self, request: pb.DeleteMemberRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        return self._delete(lambda topo, rev, now: lbo.delete_member(
            topo, self._member(topo, p, request.name), rev, now), request, context)

    # ------------------------------------------------------------------------------------------ health monitors

    @_unary
    def CreateHealthMonitor(self, request: pb.CreateHealthMonitorRequest, context: Any,
                            p: Principal) -> pb.HealthMonitor:
        m = request.health_monitor
        given = {fd.name for fd, _v in m.ListFields()}
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            pool = self._owned(topo, p, "pool", m.pool, "health_monitor.pool")
            made["id"] = new_id(topo, "health_monitor", request.health_monitor_id, "health_monitor_id")
            rec = HealthMonitor(id=made["id"], tenant=pool.tenant, pool_id=pool.id, type=m.type, delay=m.delay,
                                timeout=m.timeout, max_retries=m.max_retries, http_method=m.http_method,
                                url_path=m.url_path, expected_codes=m.expected_codes, display_name=m.display_name,
                                admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True)
            return lbo.create_health_monitor(topo, rec, given, rev, now)

        return self._write(fn, "health_monitor", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def GetHealthMonitor(self, request: pb.GetHealthMonitorRequest, context: Any, p: Principal) -> pb.HealthMonitor:
        return self._get("health_monitor", request.name, p)  # type: ignore[no-any-return]

    @_unary
    def ListHealthMonitors(self, request: pb.ListHealthMonitorsRequest, context: Any,
                           p: Principal) -> pb.ListHealthMonitorsResponse:
        pool_id = self._ref_id("pool", request.pool, "pool")
        items, token = self._list("health_monitor", request, p, "pool_id", pool_id)
        return pb.ListHealthMonitorsResponse(health_monitors=items, next_page_token=token)

    @_unary
    def UpdateHealthMonitor(self, request: pb.UpdateHealthMonitorRequest, context: Any,
                            p: Principal) -> pb.HealthMonitor:
        m = request.health_monitor
        made: dict[str, str] = {}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._owned(topo, p, "health_monitor", m.name, "health_monitor.name")
            made["id"] = old.id
            fields = self._fields(m, request, convert.to_pb(old), lbo.MONITOR_OUTPUT, lbo.MONITOR_MUTABLE, {})
            return lbo.update_health_monitor(topo, old, fields, rev, now)

        return self._write(fn, "health_monitor", lambda: made["id"], request, context)  # type: ignore[no-any-return]

    @_unary
    def DeleteHealthMonitor(self, request: pb.DeleteHealthMonitorRequest, context: Any,
                            p: Principal) -> empty_pb2.Empty:
        return self._delete(lambda topo, rev, now: lbo.delete_health_monitor(
            topo, self._owned(topo, p, "health_monitor", request.name), rev, now), request, context)
