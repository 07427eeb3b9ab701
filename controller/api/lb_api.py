"""The gRPC LoadBalancerService (Octavia's shape): load balancers, listeners, pools, members, health monitors,
as resource specs (controller/resources.py) whose standard methods are the whole service. Writes go to
topology.ops_lb. Changes show up in TopologyService.Watch like every other kind.
A member is named under its pool: "pools/{pool}/members/{member}".
"""

from __future__ import annotations

from typing import Any, Protocol

from controller.api import convert
from controller.api.auth import Principal
from controller.api.resources import Call, Parent, Resource, Tables, serve
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology import errors
from topology import ops_lb as lbo
from topology.model import Change, Topology
from topology.records import HealthMonitor, Listener, LoadBalancer, Member, Pool


def _ref_id(kind: str, name: str, field_path: str) -> str:
    return convert.parse_name(kind, name, field_path) if name else ""


def _up(m: Any) -> bool:
    return m.admin_state_up if m.HasField("admin_state_up") else True


# ------------------------------------------------------------------------------------------ load balancers


def _create_lb(c: Call, m: pb.LoadBalancer) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "load_balancer.tenant")
    subnet = convert.parse_name("subnet", m.vip_subnet, "load_balancer.vip_subnet")
    lb = LoadBalancer(
        id=c.new_id(),
        tenant=tenant,
        display_name=m.display_name,
        description=m.description,
        vip_subnet_id=subnet,
        vip_address=m.vip_address.strip(),
        admin_state_up=_up(m),
    )
    return lbo.create_load_balancer(c.topo, lb, c.p.admin, c.rev, c.now)


LOAD_BALANCER = Resource(
    kind="load_balancer",
    plural="LoadBalancers",
    to_pb=convert.load_balancer_to_pb,
    create=_create_lb,
    update=lambda c, old, fields: lbo.update_load_balancer(c.topo, old, fields, c.rev, c.now),
    # cascade (force): its listeners, pools, members and monitors go with it (ops_lb)
    delete=lambda c, old, force: lbo.delete_load_balancer(c.topo, old, force),
    mutable=frozenset(lbo.LOAD_BALANCER_MUTABLE),
    immutable=frozenset({"tenant", "vip_subnet", "vip_address"}),
    output_only=frozenset({"name", "vip_port", "operating_status", "revision", "create_time", "update_time"}),
)

# ------------------------------------------------------------------------------------------ listeners


def _create_listener(c: Call, m: pb.Listener) -> list[Change]:
    pool_id = _ref_id("pool", m.default_pool, "listener.default_pool")
    lb = c.owned("load_balancer", m.load_balancer, "listener.load_balancer")
    rec = Listener(
        id=c.new_id(),
        tenant=lb.tenant,
        load_balancer_id=lb.id,
        protocol=m.protocol,
        protocol_port=m.protocol_port,
        default_pool_id=pool_id,
        display_name=m.display_name,
        admin_state_up=_up(m),
    )
    return lbo.create_listener(c.topo, rec, c.rev, c.now)


LISTENER = Resource(
    kind="listener",
    plural="Listeners",
    to_pb=convert.listener_to_pb,
    create=_create_listener,
    update=lambda c, old, fields: lbo.update_listener(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: lbo.delete_listener(old),
    mutable=frozenset(lbo.LISTENER_MUTABLE),
    immutable=frozenset({"load_balancer", "protocol", "protocol_port"}),
    output_only=frozenset({"name", "tenant", "revision", "create_time", "update_time"}),
    values={"default_pool": lambda c, m: _ref_id("pool", m.default_pool, "default_pool")},
    parent=Parent("load_balancer", "load_balancer", "load_balancer_id", token_key="load_balancer_id"),
)

# ------------------------------------------------------------------------------------------ pools


def _create_pool(c: Call, m: pb.Pool) -> list[Change]:
    if not m.load_balancer and not m.listener:
        raise errors.invalid("pool.load_balancer", "required: a load balancer or a listener")
    listener = c.owned("listener", m.listener, "pool.listener") if m.listener else None
    if m.load_balancer:
        lb = c.owned("load_balancer", m.load_balancer, "pool.load_balancer")
    else:
        assert listener is not None  # one of them is required (checked above)
        lb = c.topo.load_balancers[listener.load_balancer_id]
    rec = Pool(
        id=c.new_id(),
        tenant=lb.tenant,
        load_balancer_id=lb.id,
        protocol=m.protocol,
        lb_algorithm=m.lb_algorithm,
        display_name=m.display_name,
        admin_state_up=_up(m),
    )
    return lbo.create_pool(c.topo, rec, listener, c.rev, c.now)


POOL = Resource(
    kind="pool",
    plural="Pools",
    to_pb=convert.pool_to_pb,
    create=_create_pool,
    update=lambda c, old, fields: lbo.update_pool(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: lbo.delete_pool(c.topo, old, c.rev, c.now),
    mutable=frozenset(lbo.POOL_MUTABLE),
    immutable=frozenset({"load_balancer", "listener", "protocol"}),
    output_only=frozenset({"name", "tenant", "operating_status", "revision", "create_time", "update_time"}),
    parent=Parent("load_balancer", "load_balancer", "load_balancer_id", token_key="load_balancer_id"),
)

# ------------------------------------------------------------------------------------------ members


def _member_lookup(
    tables: Tables, topo: Topology, p: Principal, name: str, field_path: str, owned: bool
) -> Member:
    """ "pools/{pool}/members/{member}": the member must be in that pool (and the caller's)."""
    pool_id, ident = convert.parse_member_name(name, field_path)
    rec = topo.members.get(ident)
    if rec is None or rec.pool_id != pool_id or not p.can_see(rec.tenant):
        raise errors.not_found("member", ident)
    return rec


def _create_member(c: Call, m: pb.Member) -> list[Change]:
    subnet = _ref_id("subnet", m.subnet, "member.subnet")
    pool = c.owned("pool", c.request.parent, "parent")
    rec = Member(
        id=c.new_id(),
        tenant=pool.tenant,
        pool_id=pool.id,
        address=m.address.strip(),
        protocol_port=m.protocol_port,
        subnet_id=subnet,
        display_name=m.display_name,
        weight=m.weight if m.HasField("weight") else 1,
        admin_state_up=_up(m),
    )
    return lbo.create_member(c.topo, rec, c.p.admin, c.rev, c.now)


MEMBER = Resource(
    kind="member",
    plural="Members",
    to_pb=convert.member_to_pb,
    create=_create_member,
    update=lambda c, old, fields: lbo.update_member(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: lbo.delete_member(c.topo, old, c.rev, c.now),
    mutable=frozenset(lbo.MEMBER_MUTABLE),
    immutable=frozenset({"address", "protocol_port", "subnet"}),
    output_only=frozenset({"name", "tenant", "operating_status", "revision", "create_time", "update_time"}),
    lookup=_member_lookup,
    parent=Parent("pool", "parent", "pool_id", token_key="pool_id", required=True),
)

# ------------------------------------------------------------------------------------------ health monitors


def _create_monitor(c: Call, m: pb.HealthMonitor) -> list[Change]:
    given = {fd.name for fd, _v in m.ListFields()}
    pool = c.owned("pool", m.pool, "health_monitor.pool")
    rec = HealthMonitor(
        id=c.new_id(),
        tenant=pool.tenant,
        pool_id=pool.id,
        type=m.type,
        delay=m.delay,
        timeout=m.timeout,
        max_retries=m.max_retries,
        http_method=m.http_method,
        url_path=m.url_path,
        expected_codes=m.expected_codes,
        display_name=m.display_name,
        admin_state_up=_up(m),
    )
    return lbo.create_health_monitor(c.topo, rec, given, c.rev, c.now)


HEALTH_MONITOR = Resource(
    kind="health_monitor",
    plural="HealthMonitors",
    to_pb=convert.health_monitor_to_pb,
    create=_create_monitor,
    update=lambda c, old, fields: lbo.update_health_monitor(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: lbo.delete_health_monitor(c.topo, old, c.rev, c.now),
    mutable=frozenset(lbo.MONITOR_MUTABLE),
    immutable=frozenset({"pool", "type"}),
    output_only=frozenset({"name", "tenant", "revision", "create_time", "update_time"}),
    parent=Parent("pool", "pool", "pool_id", token_key="pool_id"),
)

SPECS = (LOAD_BALANCER, LISTENER, POOL, MEMBER, HEALTH_MONITOR)


class HasTables(Protocol):
    tables: Tables


class LoadBalancerService(pb_grpc.LoadBalancerServiceServicer):
    """Only standard methods: each is Tables' over its spec (installed by `serve` below)."""

    def __init__(self, topology: HasTables) -> None:
        self.tables = topology.tables  # the TopologyService's: one store, one set of specs


serve(LoadBalancerService, SPECS)
