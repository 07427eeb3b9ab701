"""Load balancers through the gRPC LoadBalancerService: happy paths (the VIP port made and removed with the load
balancer, its address reserved in IPAM), every validation error with its field, cascade delete, validate_only,
Watch events, tenant scope, and the operating-status helpers the health monitor calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api, InProcessServer
from tests.test_api import expect_error, make_net, make_port, make_subnet
from topology import ops_lb
from topology.model import Change
from topology.records import OWNER_LOAD_BALANCER, to_dict
from topology.state import State

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION, EXISTS = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS


class Lb:
    """The LoadBalancerService stub as a tenant."""

    def __init__(self, api: Api, md: Any) -> None:
        self.stub = pb_grpc.LoadBalancerServiceStub(api.channel)
        self.md = md

    def lb(self, ident: str = "", validate_only: bool = False, **kw: Any) -> pb.LoadBalancer:
        return self.stub.CreateLoadBalancer(
            pb.CreateLoadBalancerRequest(
                load_balancer=pb.LoadBalancer(**kw), load_balancer_id=ident, validate_only=validate_only
            ),
            metadata=self.md,
        )

    def listener(self, ident: str = "", **kw: Any) -> pb.Listener:
        kw.setdefault("load_balancer", "loadBalancers/lb1")
        return self.stub.CreateListener(
            pb.CreateListenerRequest(listener=pb.Listener(**kw), listener_id=ident), metadata=self.md
        )

    def pool(self, ident: str = "", **kw: Any) -> pb.Pool:
        return self.stub.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(**kw), pool_id=ident), metadata=self.md)

    def member(self, pool: str = "pools/p1", ident: str = "", **kw: Any) -> pb.Member:
        kw.setdefault("protocol_port", 8080)
        return self.stub.CreateMember(
            pb.CreateMemberRequest(parent=pool, member=pb.Member(**kw), member_id=ident), metadata=self.md
        )

    def monitor(self, ident: str = "", **kw: Any) -> pb.HealthMonitor:
        kw.setdefault("pool", "pools/p1")
        for k, v in (("type", "TCP"), ("delay", 5.0), ("timeout", 3.0), ("max_retries", 3)):
            kw.setdefault(k, v)
        return self.stub.CreateHealthMonitor(
            pb.CreateHealthMonitorRequest(health_monitor=pb.HealthMonitor(**kw), health_monitor_id=ident),
            metadata=self.md,
        )

    def __getattr__(self, method: str) -> Any:
        rpc = getattr(self.stub, method)
        return lambda request: rpc(request, metadata=self.md)


def _alice(api: Api) -> tuple[Any, Lb, pb.Subnet]:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md, "web")
    sub = make_subnet(api, md, net.name, "10.0.0.0/24", "web-v4")
    return md, Lb(api, md), sub


def _tree(lb: Lb) -> Lb:
    """lb1 (VIP 10.0.0.100) with listener l1 (TCP 80) -> pool p1 with member m1 10.0.0.11:8080."""
    lb.lb("lb1", vip_subnet="subnets/web-v4", vip_address="10.0.0.100")
    lb.listener("l1", protocol="TCP", protocol_port=80)
    lb.pool("p1", listener="listeners/l1")
    lb.member(ident="m1", address="10.0.0.11")
    return lb


def _status(lb: Lb) -> tuple[str, str, list[str]]:
    lbr = lb.GetLoadBalancer(pb.GetLoadBalancerRequest(name="loadBalancers/lb1"))
    pool = lb.GetPool(pb.GetPoolRequest(name="pools/p1"))
    members = lb.ListMembers(pb.ListMembersRequest(parent="pools/p1")).members
    return lbr.operating_status, pool.operating_status, [m.operating_status for m in members]


# ---------------------------------------------------------------------------------------------- happy paths


def test_load_balancer_lifecycle_with_its_vip_port(api: Api) -> None:
    md, lb, sub = _alice(api)
    created = lb.lb("lb1", vip_subnet=sub.name, display_name="web", description="front")
    assert (
        created.name,
        created.tenant,
        created.vip_subnet,
        created.operating_status,
        created.admin_state_up,
    ) == ("loadBalancers/lb1", "alice", sub.name, "ONLINE", True)
    assert created.vip_address.startswith("10.0.0.") and created.vip_address != "10.0.0.1"
    port = api.stub.GetPort(pb.GetPortRequest(name=created.vip_port), metadata=md)
    assert (port.device_owner, port.device_id, port.port_security_enabled, port.network) == (
        OWNER_LOAD_BALANCER,
        "lb1",
        False,
        "networks/web",
    )
    assert [(f.subnet, f.ip_address) for f in port.fixed_ips] == [(sub.name, created.vip_address)]
    assert port.mac_address.startswith("fa:16:3e:")
    # the address is taken in IPAM: a port asking for it is refused
    code, fields, reason = expect_error(
        make_port, api, md, "networks/web", fixed_ips=[pb.FixedIp(ip_address=created.vip_address)]
    )
    assert (code, fields, reason) == (EXISTS, ["port.fixed_ips[0].ip_address"], "IP_ADDRESS_IN_USE")
    # a given VIP address
    second = lb.lb("lb2", vip_subnet=sub.name, vip_address="10.0.0.200")
    assert second.vip_address == "10.0.0.200"
    assert lb.GetLoadBalancer(pb.GetLoadBalancerRequest(name="loadBalancers/lb1")) == created
    listed = lb.ListLoadBalancers(pb.ListLoadBalancersRequest()).load_balancers
    assert [x.name for x in listed] == ["loadBalancers/lb1", "loadBalancers/lb2"]
    page = lb.ListLoadBalancers(pb.ListLoadBalancersRequest(page_size=1))
    assert len(page.load_balancers) == 1 and page.next_page_token

    upd = lb.UpdateLoadBalancer(
        pb.UpdateLoadBalancerRequest(
            load_balancer=pb.LoadBalancer(name="loadBalancers/lb1", display_name="www", admin_state_up=False),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "admin_state_up"]),
        )
    )
    assert (upd.display_name, upd.description, upd.admin_state_up, upd.operating_status) == (
        "www",
        "front",
        False,
        "OFFLINE",
    )

    # the VIP port is the load balancer's: clients neither change nor delete it
    code, _, reason = expect_error(
        api.stub.DeletePort, pb.DeletePortRequest(name=created.vip_port), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "PORT_OWNED_BY_LOAD_BALANCER")
    code, fields, reason = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=created.vip_port, device_id="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["device_id"]),
        ),
        metadata=md,
    )
    assert (code, fields, reason) == (PRECONDITION, ["port.device_id"], "PORT_OWNED_BY_LOAD_BALANCER")
    code, fields, reason = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=created.vip_port, admin_state_up=False),
            update_mask=field_mask_pb2.FieldMask(paths=["admin_state_up"]),
        ),
        metadata=md,
    )
    assert (code, fields, reason) == (PRECONDITION, ["port.admin_state_up"], "PORT_OWNED_BY_LOAD_BALANCER")
    code, fields, reason = expect_error(make_port, api, md, "networks/web", device_owner=OWNER_LOAD_BALANCER)
    assert (code, fields, reason) == (INVALID, ["port.device_owner"], "RESERVED_DEVICE_OWNER")
    # nor do the subnet and network go while it holds the VIP, even with force
    code, _, reason = expect_error(
        api.stub.DeleteSubnet, pb.DeleteSubnetRequest(name=sub.name, force=True), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "SUBNET_IN_USE")

    lb.DeleteLoadBalancer(pb.DeleteLoadBalancerRequest(name="loadBalancers/lb1"))
    code, _, reason = expect_error(
        lb.stub.GetLoadBalancer, pb.GetLoadBalancerRequest(name="loadBalancers/lb1"), metadata=md
    )
    assert (code, reason) == (NOT_FOUND, "LOAD_BALANCER_NOT_FOUND")
    code, _, _ = expect_error(api.stub.GetPort, pb.GetPortRequest(name=created.vip_port), metadata=md)
    assert code == NOT_FOUND
    # its address is free again
    assert make_port(api, md, "networks/web", fixed_ips=[pb.FixedIp(ip_address=created.vip_address)]).name


def test_listener_pool_member_monitor_lifecycle(api: Api) -> None:
    md, lb, _sub = _alice(api)
    _tree(lb)
    listener = lb.GetListener(pb.GetListenerRequest(name="listeners/l1"))
    assert (listener.tenant, listener.protocol, listener.protocol_port, listener.default_pool) == (
        "alice",
        "TCP",
        80,
        "pools/p1",
    )
    pool = lb.GetPool(pb.GetPoolRequest(name="pools/p1"))
    assert (pool.load_balancer, pool.protocol, pool.lb_algorithm, pool.operating_status) == (
        "loadBalancers/lb1",
        "TCP",
        "ROUND_ROBIN",
        "ONLINE",
    )
    member = lb.GetMember(pb.GetMemberRequest(name="pools/p1/members/m1"))
    assert (member.address, member.protocol_port, member.weight, member.subnet, member.operating_status) == (
        "10.0.0.11",
        8080,
        1,
        "",
        "NO_MONITOR",
    )
    # a pool named by its load balancer, UDP, SOURCE_IP; a listener using it as default pool
    udp = lb.pool("p2", load_balancer="loadBalancers/lb1", protocol="udp", lb_algorithm="source_ip")
    assert (udp.protocol, udp.lb_algorithm) == ("UDP", "SOURCE_IP")
    dns = lb.listener("l2", protocol="UDP", protocol_port=53, default_pool="pools/p2")
    assert dns.default_pool == "pools/p2"
    assert (
        lb.listener("l3", protocol="UDP", protocol_port=80).protocol == "UDP"
    )  # TCP 80 is taken, UDP 80 not
    assert [
        x.name for x in lb.ListListeners(pb.ListListenersRequest(load_balancer="loadBalancers/lb1")).listeners
    ] == ["listeners/l1", "listeners/l2", "listeners/l3"]
    assert [x.name for x in lb.ListPools(pb.ListPoolsRequest(load_balancer="loadBalancers/lb1")).pools] == [
        "pools/p1",
        "pools/p2",
    ]
    m2 = lb.member(ident="m2", address="10.0.0.12", weight=0, admin_state_up=False, display_name="spare")
    assert (m2.weight, m2.admin_state_up, m2.operating_status) == (0, False, "OFFLINE")
    assert lb.member(ident="m3", address="10.0.0.11", protocol_port=8081).name == "pools/p1/members/m3"
    listed = lb.ListMembers(pb.ListMembersRequest(parent="pools/p1")).members
    assert [m.name for m in listed] == ["pools/p1/members/m1", "pools/p1/members/m2", "pools/p1/members/m3"]

    hm = lb.monitor("h1", type="HTTP", url_path="/health", expected_codes="200-204", http_method="head")
    assert (
        hm.type,
        hm.http_method,
        hm.url_path,
        hm.expected_codes,
        hm.delay,
        hm.timeout,
        hm.max_retries,
    ) == ("HTTP", "HEAD", "/health", "200-204", 5.0, 3.0, 3)
    # under a monitor, members are ONLINE until it reports otherwise (the administratively down one OFFLINE)
    assert _status(lb) == ("ONLINE", "ONLINE", ["ONLINE", "OFFLINE", "ONLINE"])
    hm = lb.UpdateHealthMonitor(
        pb.UpdateHealthMonitorRequest(
            health_monitor=pb.HealthMonitor(name="healthMonitors/h1", delay=10, timeout=10, max_retries=5),
            update_mask=field_mask_pb2.FieldMask(paths=["delay", "timeout", "max_retries"]),
        )
    )
    assert (hm.delay, hm.timeout, hm.max_retries, hm.url_path) == (10.0, 10.0, 5, "/health")
    assert [
        h.name for h in lb.ListHealthMonitors(pb.ListHealthMonitorsRequest(pool="pools/p1")).health_monitors
    ] == ["healthMonitors/h1"]

    m2 = lb.UpdateMember(
        pb.UpdateMemberRequest(
            member=pb.Member(name="pools/p1/members/m2", weight=256, admin_state_up=True),
            update_mask=field_mask_pb2.FieldMask(paths=["weight", "admin_state_up"]),
        )
    )
    assert (m2.weight, m2.admin_state_up, m2.operating_status) == (256, True, "ONLINE")
    p1 = lb.UpdatePool(
        pb.UpdatePoolRequest(
            pool=pb.Pool(name="pools/p1", lb_algorithm="SOURCE_IP"),
            update_mask=field_mask_pb2.FieldMask(paths=["lb_algorithm"]),
        )
    )
    assert p1.lb_algorithm == "SOURCE_IP"
    l1 = lb.UpdateListener(
        pb.UpdateListenerRequest(
            listener=pb.Listener(name="listeners/l1", default_pool=""),
            update_mask=field_mask_pb2.FieldMask(paths=["default_pool"]),
        )
    )
    assert l1.default_pool == ""

    lb.DeleteHealthMonitor(pb.DeleteHealthMonitorRequest(name="healthMonitors/h1"))
    assert _status(lb) == ("ONLINE", "ONLINE", ["NO_MONITOR", "NO_MONITOR", "NO_MONITOR"])
    lb.DeleteMember(pb.DeleteMemberRequest(name="pools/p1/members/m3"))
    lb.DeleteListener(pb.DeleteListenerRequest(name="listeners/l3"))
    lb.DeletePool(pb.DeletePoolRequest(name="pools/p1"))  # no listener uses it now; its members go with it
    assert lb.ListPools(pb.ListPoolsRequest()).pools[0].name == "pools/p2"
    code, _, _ = expect_error(lb.stub.GetMember, pb.GetMemberRequest(name="pools/p1/members/m1"), metadata=md)
    assert code == NOT_FOUND


def test_cascade_delete_in_one_write(server: InProcessServer) -> None:
    api = server.api
    md, lb, _sub = _alice(api)
    _tree(lb)
    lb.monitor("h1")
    code, _, reason = expect_error(
        lb.stub.DeleteLoadBalancer, pb.DeleteLoadBalancerRequest(name="loadBalancers/lb1"), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "LOAD_BALANCER_IN_USE")
    code, _, reason = expect_error(lb.stub.DeletePool, pb.DeletePoolRequest(name="pools/p1"), metadata=md)
    assert (code, reason) == (PRECONDITION, "POOL_IN_USE")
    assert lb.GetPool(pb.GetPoolRequest(name="pools/p1")).name  # refused writes leave everything
    before = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    lb.DeleteLoadBalancer(pb.DeleteLoadBalancerRequest(name="loadBalancers/lb1", force=True))
    assert api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision == before + 1
    topo = server.state.topology
    assert not (topo.load_balancers or topo.listeners or topo.pools or topo.members or topo.health_monitors)
    assert not [p for p in topo.ports.values() if p.device_owner == OWNER_LOAD_BALANCER]
    assert not (topo.lb_listeners or topo.lb_pools or topo.pool_members or topo.pool_monitor)


def test_validate_only_stores_nothing(server: InProcessServer) -> None:
    api = server.api
    md, lb, sub = _alice(api)
    dry = lb.lb("lb1", validate_only=True, vip_subnet=sub.name)
    assert dry.name == "loadBalancers/lb1" and dry.vip_address and dry.vip_port
    assert lb.ListLoadBalancers(pb.ListLoadBalancersRequest()).load_balancers == []
    assert not server.state.topology.ports
    _tree(lb)
    before = {k: to_dict(r) for k, r in server.state.topology.members.items()}
    requests = [
        (
            lb.stub.CreateListener,
            pb.CreateListenerRequest(
                listener=pb.Listener(load_balancer="loadBalancers/lb1", protocol_port=443), validate_only=True
            ),
        ),
        (
            lb.stub.CreatePool,
            pb.CreatePoolRequest(pool=pb.Pool(load_balancer="loadBalancers/lb1"), validate_only=True),
        ),
        (
            lb.stub.CreateMember,
            pb.CreateMemberRequest(
                parent="pools/p1", member=pb.Member(address="10.0.0.12", protocol_port=80), validate_only=True
            ),
        ),
        (
            lb.stub.CreateHealthMonitor,
            pb.CreateHealthMonitorRequest(
                health_monitor=pb.HealthMonitor(
                    pool="pools/p1", type="PING", delay=1, timeout=1, max_retries=1
                ),
                validate_only=True,
            ),
        ),
        (
            lb.stub.UpdateMember,
            pb.UpdateMemberRequest(
                member=pb.Member(name="pools/p1/members/m1", weight=7),
                update_mask=field_mask_pb2.FieldMask(paths=["weight"]),
                validate_only=True,
            ),
        ),
        (
            lb.stub.DeleteLoadBalancer,
            pb.DeleteLoadBalancerRequest(name="loadBalancers/lb1", force=True, validate_only=True),
        ),
    ]
    revision = server.state.revision
    for rpc, request in requests:
        rpc(request, metadata=md)
    assert server.state.revision == revision
    topo = server.state.topology
    assert (len(topo.listeners), len(topo.pools), len(topo.members), len(topo.health_monitors)) == (
        1,
        1,
        1,
        0,
    )
    assert {k: to_dict(r) for k, r in topo.members.items()} == before


# ---------------------------------------------------------------------------------------------- errors


def test_load_balancer_errors(api: Api) -> None:
    md, lb, sub = _alice(api)
    lb.lb("lb1", vip_subnet=sub.name, vip_address="10.0.0.100")
    bob_md = api.md(api.tenant_token("bob"))
    bob_net = make_net(api, bob_md, "bobnet")
    make_subnet(api, bob_md, bob_net.name, "10.1.0.0/24", "bob-v4")
    cases = [
        ({}, "", INVALID, ["load_balancer.vip_subnet"], "INVALID_FIELD"),
        ({"vip_subnet": "networks/web"}, "", INVALID, ["load_balancer.vip_subnet"], "INVALID_FIELD"),
        ({"vip_subnet": "subnets/nope"}, "", NOT_FOUND, ["load_balancer.vip_subnet"], "SUBNET_NOT_FOUND"),
        ({"vip_subnet": "subnets/bob-v4"}, "", NOT_FOUND, ["load_balancer.vip_subnet"], "SUBNET_NOT_FOUND"),
        (
            {"vip_subnet": sub.name, "vip_address": "10.9.0.1"},
            "",
            INVALID,
            ["load_balancer.vip_address"],
            "INVALID_FIELD",
        ),
        (
            {"vip_subnet": sub.name, "vip_address": "nope"},
            "",
            INVALID,
            ["load_balancer.vip_address"],
            "INVALID_FIELD",
        ),
        (
            {"vip_subnet": sub.name, "vip_address": "10.0.0.1"},
            "",
            INVALID,
            ["load_balancer.vip_address"],
            "INVALID_FIELD",
        ),  # the gateway
        (
            {"vip_subnet": sub.name, "vip_address": "10.0.0.100"},
            "",
            EXISTS,
            ["load_balancer.vip_address"],
            "IP_ADDRESS_IN_USE",
        ),
        (
            {"vip_subnet": sub.name, "display_name": "x" * 256},
            "",
            INVALID,
            ["load_balancer.display_name"],
            "INVALID_FIELD",
        ),
        (
            {"vip_subnet": sub.name, "description": "x" * 256},
            "",
            INVALID,
            ["load_balancer.description"],
            "INVALID_FIELD",
        ),
        (
            {"vip_subnet": sub.name, "tenant": "bob"},
            "",
            grpc.StatusCode.PERMISSION_DENIED,
            ["load_balancer.tenant"],
            "ADMIN_ONLY",
        ),
        ({"vip_subnet": sub.name}, "Bad_Id", INVALID, ["load_balancer_id"], "INVALID_FIELD"),
        ({"vip_subnet": sub.name}, "lb1", EXISTS, [], "LOAD_BALANCER_EXISTS"),
    ]
    revision = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    for kwargs, ident, code, fields, reason in cases:
        assert expect_error(lb.lb, ident, **kwargs) == (code, fields, reason), (kwargs, ident)
    assert api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision == revision
    for paths, reason in (
        (["vip_address"], "IMMUTABLE_FIELD"),
        (["operating_status"], "OUTPUT_ONLY_FIELD"),
        (["vip_port"], "OUTPUT_ONLY_FIELD"),
        (["bogus"], "UNKNOWN_FIELD"),
    ):
        got = expect_error(
            lb.stub.UpdateLoadBalancer,
            pb.UpdateLoadBalancerRequest(
                load_balancer=pb.LoadBalancer(
                    name="loadBalancers/lb1", vip_address="10.0.0.9", operating_status="ERROR"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            ),
            metadata=md,
        )
        assert got == (INVALID, ["update_mask"], reason), paths
    # an empty mask ignores the output-only status a client sends: it cannot set it
    same = lb.UpdateLoadBalancer(
        pb.UpdateLoadBalancerRequest(
            load_balancer=pb.LoadBalancer(
                name="loadBalancers/lb1", display_name="w", operating_status="ERROR"
            )
        )
    )
    assert (same.display_name, same.operating_status) == ("w", "ONLINE")
    # another tenant sees nothing
    code, _, _ = expect_error(
        lb.stub.GetLoadBalancer, pb.GetLoadBalancerRequest(name="loadBalancers/lb1"), metadata=bob_md
    )
    assert code == NOT_FOUND
    assert Lb(api, bob_md).ListLoadBalancers(pb.ListLoadBalancersRequest()).load_balancers == []


def test_listener_and_pool_errors(api: Api) -> None:
    md, lb, sub = _alice(api)
    _tree(lb)
    lb.lb("lb2", vip_subnet=sub.name)
    lb.pool("other", load_balancer="loadBalancers/lb2")
    lb.pool("udp", load_balancer="loadBalancers/lb1", protocol="UDP")
    cases: list[tuple[Any, ...]] = [
        (lb.listener, {"load_balancer": ""}, INVALID, ["listener.load_balancer"], "INVALID_FIELD"),
        (
            lb.listener,
            {"load_balancer": "loadBalancers/nope", "protocol_port": 1},
            NOT_FOUND,
            [],
            "LOAD_BALANCER_NOT_FOUND",
        ),
        (
            lb.listener,
            {"protocol": "HTTP", "protocol_port": 81},
            INVALID,
            ["listener.protocol"],
            "INVALID_FIELD",
        ),
        (lb.listener, {"protocol_port": 0}, INVALID, ["listener.protocol_port"], "INVALID_FIELD"),
        (lb.listener, {"protocol_port": 65536}, INVALID, ["listener.protocol_port"], "INVALID_FIELD"),
        (
            lb.listener,
            {"protocol": "tcp", "protocol_port": 80},
            EXISTS,
            ["listener.protocol_port"],
            "LISTENER_PORT_IN_USE",
        ),
        (
            lb.listener,
            {"protocol_port": 81, "default_pool": "pools/other"},
            INVALID,
            ["listener.default_pool"],
            "POOL_OF_ANOTHER_LOAD_BALANCER",
        ),
        (
            lb.listener,
            {"protocol_port": 81, "default_pool": "pools/udp"},
            INVALID,
            ["listener.default_pool"],
            "PROTOCOL_MISMATCH",
        ),
        (
            lb.listener,
            {"protocol_port": 81, "default_pool": "pools/nope"},
            NOT_FOUND,
            ["listener.default_pool"],
            "POOL_NOT_FOUND",
        ),
        (lb.pool, {}, INVALID, ["pool.load_balancer"], "INVALID_FIELD"),
        (
            lb.pool,
            {"load_balancer": "loadBalancers/lb1", "lb_algorithm": "LEAST_CONNECTIONS"},
            INVALID,
            ["pool.lb_algorithm"],
            "INVALID_FIELD",
        ),
        (
            lb.pool,
            {"load_balancer": "loadBalancers/lb1", "protocol": "SCTP"},
            INVALID,
            ["pool.protocol"],
            "INVALID_FIELD",
        ),
        (lb.pool, {"listener": "listeners/l1"}, PRECONDITION, ["pool.listener"], "LISTENER_HAS_DEFAULT_POOL"),
        (lb.pool, {"listener": "listeners/nope"}, NOT_FOUND, [], "LISTENER_NOT_FOUND"),
        (
            lb.pool,
            {"listener": "listeners/l1", "protocol": "UDP"},
            INVALID,
            ["pool.protocol"],
            "PROTOCOL_MISMATCH",
        ),
        (
            lb.pool,
            {"listener": "listeners/l1", "load_balancer": "loadBalancers/lb2"},
            INVALID,
            ["pool.load_balancer"],
            "POOL_OF_ANOTHER_LOAD_BALANCER",
        ),
    ]
    for fn, kwargs, code, fields, reason in cases:
        assert expect_error(fn, **kwargs) == (code, fields, reason), kwargs
    for rpc, request, reason in (
        (
            lb.stub.UpdateListener,
            pb.UpdateListenerRequest(
                listener=pb.Listener(name="listeners/l1", protocol_port=81),
                update_mask=field_mask_pb2.FieldMask(paths=["protocol_port"]),
            ),
            "IMMUTABLE_FIELD",
        ),
        (
            lb.stub.UpdatePool,
            pb.UpdatePoolRequest(
                pool=pb.Pool(name="pools/p1", operating_status="ERROR"),
                update_mask=field_mask_pb2.FieldMask(paths=["operating_status"]),
            ),
            "OUTPUT_ONLY_FIELD",
        ),
        (
            lb.stub.UpdatePool,
            pb.UpdatePoolRequest(
                pool=pb.Pool(name="pools/p1", protocol="UDP"),
                update_mask=field_mask_pb2.FieldMask(paths=["protocol"]),
            ),
            "IMMUTABLE_FIELD",
        ),
    ):
        assert expect_error(rpc, request, metadata=md) == (INVALID, ["update_mask"], reason)
    got = expect_error(
        lb.stub.UpdateListener,
        pb.UpdateListenerRequest(
            listener=pb.Listener(name="listeners/l1", default_pool="pools/udp"),
            update_mask=field_mask_pb2.FieldMask(paths=["default_pool"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, ["listener.default_pool"], "PROTOCOL_MISMATCH")
    got = expect_error(
        lb.stub.UpdatePool,
        pb.UpdatePoolRequest(
            pool=pb.Pool(name="pools/p1", lb_algorithm="RANDOM"),
            update_mask=field_mask_pb2.FieldMask(paths=["lb_algorithm"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, ["pool.lb_algorithm"], "INVALID_FIELD")


def test_member_and_monitor_errors(api: Api) -> None:
    md, lb, _sub = _alice(api)
    _tree(lb)
    other = make_subnet(api, md, "networks/web", "192.168.5.0/24", "db-v4")
    assert lb.member(ident="db", address="192.168.5.9", subnet=other.name).subnet == other.name
    # a member's subnet stays while the member names it
    code, _, reason = expect_error(
        api.stub.DeleteSubnet, pb.DeleteSubnetRequest(name=other.name, force=True), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "SUBNET_IN_USE")
    code, _, reason = expect_error(
        api.stub.DeleteNetwork, pb.DeleteNetworkRequest(name="networks/web", force=True), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "NETWORK_IN_USE")
    member_cases: list[tuple[Any, ...]] = [
        ({"address": ""}, INVALID, ["member.address"], "INVALID_FIELD"),
        ({"address": "10.0.0.300"}, INVALID, ["member.address"], "INVALID_FIELD"),
        (
            {"address": "192.168.5.9"},
            INVALID,
            ["member.address"],
            "ADDRESS_OUTSIDE_SUBNET",
        ),  # not the VIP subnet
        (
            {"address": "10.0.0.9", "subnet": other.name},
            INVALID,
            ["member.address"],
            "ADDRESS_OUTSIDE_SUBNET",
        ),
        ({"address": "10.0.0.9", "subnet": "subnets/nope"}, NOT_FOUND, ["member.subnet"], "SUBNET_NOT_FOUND"),
        ({"address": "10.0.0.9", "subnet": "ports/x"}, INVALID, ["member.subnet"], "INVALID_FIELD"),
        ({"address": "10.0.0.9", "protocol_port": 0}, INVALID, ["member.protocol_port"], "INVALID_FIELD"),
        ({"address": "10.0.0.9", "weight": 257}, INVALID, ["member.weight"], "INVALID_FIELD"),
        ({"address": "10.0.0.11"}, EXISTS, ["member.address"], "MEMBER_EXISTS"),
    ]
    for kwargs, code, fields, reason in member_cases:
        assert expect_error(lb.member, **kwargs) == (code, fields, reason), kwargs
    assert expect_error(lb.member, "pools/nope", address="10.0.0.9")[0] == NOT_FOUND
    assert expect_error(lb.member, "p1", address="10.0.0.9") == (INVALID, ["parent"], "INVALID_FIELD")
    for request, fields, reason in (
        (
            pb.UpdateMemberRequest(
                member=pb.Member(name="pools/p1/members/m1", weight=300),
                update_mask=field_mask_pb2.FieldMask(paths=["weight"]),
            ),
            ["member.weight"],
            "INVALID_FIELD",
        ),
        (
            pb.UpdateMemberRequest(
                member=pb.Member(name="pools/p1/members/m1", address="10.0.0.5"),
                update_mask=field_mask_pb2.FieldMask(paths=["address"]),
            ),
            ["update_mask"],
            "IMMUTABLE_FIELD",
        ),
        (
            pb.UpdateMemberRequest(
                member=pb.Member(name="pools/p1/members/m1", operating_status="ONLINE"),
                update_mask=field_mask_pb2.FieldMask(paths=["operating_status"]),
            ),
            ["update_mask"],
            "OUTPUT_ONLY_FIELD",
        ),
        (
            pb.UpdateMemberRequest(
                member=pb.Member(name="members/m1", weight=2),
                update_mask=field_mask_pb2.FieldMask(paths=["weight"]),
            ),
            ["member.name"],
            "INVALID_FIELD",
        ),
    ):
        assert expect_error(lb.stub.UpdateMember, request, metadata=md) == (INVALID, fields, reason), request
    code, _, _ = expect_error(
        lb.stub.GetMember, pb.GetMemberRequest(name="pools/other/members/m1"), metadata=md
    )
    assert code == NOT_FOUND

    monitor_cases: list[tuple[Any, ...]] = [
        ({"pool": ""}, INVALID, ["health_monitor.pool"], "INVALID_FIELD"),
        ({"pool": "pools/nope"}, NOT_FOUND, [], "POOL_NOT_FOUND"),
        ({"type": "UDP-CONNECT"}, INVALID, ["health_monitor.type"], "INVALID_FIELD"),
        ({"delay": 0}, INVALID, ["health_monitor.delay"], "INVALID_FIELD"),
        ({"timeout": -1}, INVALID, ["health_monitor.timeout"], "INVALID_FIELD"),
        ({"delay": 2, "timeout": 3}, INVALID, ["health_monitor.timeout"], "INVALID_FIELD"),
        ({"max_retries": 0}, INVALID, ["health_monitor.max_retries"], "INVALID_FIELD"),
        ({"max_retries": 11}, INVALID, ["health_monitor.max_retries"], "INVALID_FIELD"),
        ({"url_path": "/x"}, INVALID, ["health_monitor.url_path"], "INVALID_FIELD"),  # TCP type
        ({"type": "HTTP", "url_path": "health"}, INVALID, ["health_monitor.url_path"], "INVALID_FIELD"),
        ({"type": "HTTP", "http_method": "FETCH"}, INVALID, ["health_monitor.http_method"], "INVALID_FIELD"),
        (
            {"type": "HTTP", "expected_codes": "2xx"},
            INVALID,
            ["health_monitor.expected_codes"],
            "INVALID_FIELD",
        ),
        (
            {"type": "HTTP", "expected_codes": "204-200"},
            INVALID,
            ["health_monitor.expected_codes"],
            "INVALID_FIELD",
        ),
        (
            {"type": "HTTP", "expected_codes": "200,999"},
            INVALID,
            ["health_monitor.expected_codes"],
            "INVALID_FIELD",
        ),
    ]
    for kwargs, code, fields, reason in monitor_cases:
        assert expect_error(lb.monitor, **kwargs) == (code, fields, reason), kwargs
    assert lb.monitor("h1", type="HTTP", expected_codes="200,202").expected_codes == "200,202"
    assert expect_error(lb.monitor) == (EXISTS, ["health_monitor.pool"], "HEALTH_MONITOR_EXISTS")
    got = expect_error(
        lb.stub.UpdateHealthMonitor,
        pb.UpdateHealthMonitorRequest(
            health_monitor=pb.HealthMonitor(name="healthMonitors/h1", timeout=9),
            update_mask=field_mask_pb2.FieldMask(paths=["timeout"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, ["health_monitor.timeout"], "INVALID_FIELD")
    got = expect_error(
        lb.stub.UpdateHealthMonitor,
        pb.UpdateHealthMonitorRequest(
            health_monitor=pb.HealthMonitor(name="healthMonitors/h1", type="PING"),
            update_mask=field_mask_pb2.FieldMask(paths=["type"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, ["update_mask"], "IMMUTABLE_FIELD")


def test_watch_streams_load_balancer_kinds(server: InProcessServer) -> None:
    api = server.api
    md, lb, _sub = _alice(api)
    head = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    _tree(lb)
    lb.monitor("h1")
    server.state.write(
        lambda topo, rev, now: ops_lb.set_operating_status(topo, "member", "m1", "ERROR", rev, now)
    )
    stream = api.stub.Watch(pb.WatchRequest(start_revision=head), metadata=md)
    events = []
    for event in stream:
        if event.type == pb.WatchEvent.SYNCED:
            break
        kind = event.WhichOneof("resource")
        events.append(
            (
                event.type,
                kind,
                getattr(event, kind).operating_status if kind in ("load_balancer", "pool", "member") else "",
            )
        )
    stream.cancel()
    created, updated = pb.WatchEvent.CREATED, pb.WatchEvent.UPDATED
    assert events[:2] == [(created, "port", ""), (created, "load_balancer", "ONLINE")]
    assert (created, "listener", "") in events and (created, "pool", "ONLINE") in events
    assert (updated, "listener", "") in events  # its default pool set by CreatePool
    assert (created, "member", "NO_MONITOR") in events and (created, "health_monitor", "") in events
    assert (updated, "member", "ONLINE") in events  # the monitor came
    # the monitor's report: the member ERROR, so the pool (its only member) ERROR and the load balancer too
    assert events[-3:] == [
        (updated, "member", "ERROR"),
        (updated, "pool", "ERROR"),
        (updated, "load_balancer", "ERROR"),
    ]


# ---------------------------------------------------------------------------------------------- statuses


def _write(server: InProcessServer, fn: Any) -> list[Change]:
    return server.state.write(fn)[1]


def test_operating_status_helpers(server: InProcessServer) -> None:
    api = server.api
    _md, lb, _sub = _alice(api)
    _tree(lb)
    lb.member(ident="m2", address="10.0.0.12")
    lb.monitor("h1")
    assert _status(lb) == ("ONLINE", "ONLINE", ["ONLINE", "ONLINE"])

    def report(kind: str, ident: str, status: str) -> list[Change]:
        return _write(
            server, lambda topo, rev, now: ops_lb.set_operating_status(topo, kind, ident, status, rev, now)
        )

    assert [(k, i) for k, i, _o, _n in report("member", "m1", "ERROR")] == [
        ("member", "m1"),
        ("pool", "p1"),
        ("load_balancer", "lb1"),
    ]
    assert _status(lb) == ("DEGRADED", "DEGRADED", ["ERROR", "ONLINE"])
    assert report("member", "m1", "ERROR") == []  # unchanged: no write
    report("member", "m2", "ERROR")
    assert _status(lb) == ("ERROR", "ERROR", ["ERROR", "ERROR"])
    report("member", "m1", "ONLINE")
    report("member", "m2", "ONLINE")
    assert _status(lb) == ("ONLINE", "ONLINE", ["ONLINE", "ONLINE"])
    # an administratively down member is OFFLINE whatever the monitor says, and does not count
    lb.UpdateMember(
        pb.UpdateMemberRequest(
            member=pb.Member(name="pools/p1/members/m2", admin_state_up=False),
            update_mask=field_mask_pb2.FieldMask(paths=["admin_state_up"]),
        )
    )
    assert report("member", "m2", "ERROR") == []
    report("member", "m1", "ERROR")
    assert _status(lb) == ("ERROR", "ERROR", ["ERROR", "OFFLINE"])
    # a pool or load balancer status may be set directly
    assert [(k, i) for k, i, _o, _n in report("pool", "p1", "DEGRADED")] == [("pool", "p1")]
    assert report("pool", "p1", "DEGRADED") == [] and report("member", "gone", "ERROR") == []
    with pytest.raises(ValueError):
        report("listener", "l1", "ONLINE")
    with pytest.raises(ValueError):
        report("member", "m1", "SLEEPY")
    # refresh_statuses re-derives from the members: nothing to do when consistent
    assert [
        (k, i)
        for k, i, _o, _n in _write(
            server, lambda topo, rev, now: ops_lb.refresh_statuses(topo, "lb1", rev, now)
        )
    ] == [("pool", "p1")]
    assert _write(server, lambda topo, rev, now: ops_lb.refresh_statuses(topo, "lb1", rev, now)) == []
    # the load balancer administratively down: it and its pools OFFLINE
    lb.UpdateLoadBalancer(
        pb.UpdateLoadBalancerRequest(
            load_balancer=pb.LoadBalancer(name="loadBalancers/lb1", admin_state_up=False),
            update_mask=field_mask_pb2.FieldMask(paths=["admin_state_up"]),
        )
    )
    assert _status(lb)[:2] == ("OFFLINE", "OFFLINE")


def test_derive_status_rules() -> None:
    assert ops_lb.derive_status(True, ["ONLINE", "ONLINE"]) == "ONLINE"
    assert ops_lb.derive_status(True, ["ONLINE", "ERROR"]) == "DEGRADED"
    assert ops_lb.derive_status(True, ["ERROR", "ERROR", "OFFLINE"]) == "ERROR"
    assert ops_lb.derive_status(True, ["DEGRADED", "ONLINE"]) == "DEGRADED"
    assert ops_lb.derive_status(True, []) == "ONLINE"
    assert ops_lb.derive_status(True, ["NO_MONITOR"]) == "ONLINE"
    assert ops_lb.derive_status(False, ["ONLINE"]) == "OFFLINE"


def test_load_balancers_survive_a_restart(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    srv = ApiServer(state, tokens, "127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    api = Api(f"127.0.0.1:{srv.port}", tokens.admin_token(), channel, pb_grpc.TopologyServiceStub(channel))
    try:
        _md, lb, _sub = _alice(api)
        _tree(lb)
        lb.monitor("h1")
        state.write(
            lambda topo, rev, now: ops_lb.set_operating_status(topo, "member", "m1", "ERROR", rev, now)
        )
        before = {r.id: to_dict(r) for r in state.topology.all_records()}
    finally:
        channel.close()
        srv.stop(0)
        state.close()
    again = State(tmp_path / "topology.sqlite")
    try:
        topo = again.topology
        assert {r.id: to_dict(r) for r in topo.all_records()} == before
        assert (topo.lb_listeners, topo.lb_pools, topo.pool_members, topo.pool_monitor) == (
            {"lb1": {"l1"}},
            {"lb1": {"p1"}},
            {"p1": {"m1"}},
            {"p1": "h1"},
        )
        assert topo.load_balancers["lb1"].operating_status == "ERROR"
    finally:
        again.close()


def test_admin_acts_for_a_tenant(api: Api) -> None:
    md, alice, sub = _alice(api)
    admin = Lb(api, api.admin)
    made = admin.lb("lb1", vip_subnet=sub.name, tenant="alice")
    assert made.tenant == "alice"
    port = api.stub.GetPort(pb.GetPortRequest(name=made.vip_port), metadata=md)
    assert port.tenant == "alice"
    assert [x.name for x in alice.ListLoadBalancers(pb.ListLoadBalancersRequest()).load_balancers] == [
        made.name
    ]
    listener = admin.listener("l1", protocol_port=80)
    assert listener.tenant == "alice"
    assert alice.GetListener(pb.GetListenerRequest(name="listeners/l1")) == listener
    got = expect_error(alice.stub.ListLoadBalancers, pb.ListLoadBalancersRequest(tenant="bob"), metadata=md)
    assert got[0] == grpc.StatusCode.PERMISSION_DENIED


def test_listeners_get_distinct_dataplane_keys_and_free_them(server) -> None:  # type: ignore[no-untyped-def]
    """A listener's select groups are numbered by its key (no hash: no two listeners can share a group)."""
    from apps import ids

    _md, lb, _sub = _alice(server.api)
    lb.lb("lb1", vip_subnet="subnets/web-v4", vip_address="10.0.0.100")
    for i, port in enumerate((80, 443, 8080)):
        lb.listener(f"l{i}", protocol="TCP", protocol_port=port)
    topo = server.state.topology
    keys = {ls.id: ls.key for ls in topo.listeners.values()}
    assert len(keys) == 3 and all(keys.values()) and len(set(keys.values())) == 3
    groups = {ids.lb_group(k, kind) for k in keys.values() for kind in (0, 1)}
    assert len(groups) == 6
    lb.DeleteListener(pb.DeleteListenerRequest(name="listeners/l1"))
    lb.listener("l9", protocol="TCP", protocol_port=9000)
    assert topo.listeners["l9"].key == keys["l1"], "a freed key is reused"
