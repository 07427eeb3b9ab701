"""Load balancers end to end: real TCP connections to a VIP through real ovs-vswitchd on two chassis, members
running small servers that answer their own name, the controller's health monitor probing them for real."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab import VM
from lab.hosts import ExternalHost
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.e2e import PHYSNET, Env, lab_env

pytestmark = pytest.mark.lab

VIP = "10.140.0.100"
EXT_CIDR = "172.24.4.0/24"
EXT_HOST = "172.24.4.100"
FIP = "172.24.4.60"
WEIGHTS = {"lbm1": 1, "lbm2": 2, "lbm3": 3}
DELAY, TIMEOUT, RETRIES = 1.0, 0.5, 2
#: each member's share of 200 connections must be within this of its weight's share (1/6, 2/6, 3/6): 12
#: points is >= 3.4 standard deviations of a fair 200-draw share, so a correct spread fails ~1 run in 1000
TOLERANCE = 0.12

_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(256); print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(sys.argv[1].encode())
    finally:
        c.close()
"""

_CLIENT = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for i in range(n):
    try:
        c = socket.create_connection((host, port), timeout=3)
        c.settimeout(3)
        got = b""
        while True:
            b = c.recv(100)
            if not b:
                break
            got += b
        c.close()
        out.append(got.decode() or "empty")
    except OSError as e:
        out.append("error:" + type(e).__name__)
print(json.dumps(out))
"""


@dataclass
class World:
    env: Env
    lbs: pb_grpc.LoadBalancerServiceStub
    md: tuple[tuple[str, str], ...]
    members: dict[str, VM]
    client: VM
    routed: VM
    ext_host: ExternalHost
    servers: dict[str, object]

    def serve(self, name: str) -> None:
        proc = self.members[name].popen([sys.executable, "-c", _SERVER, name])
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.servers[name] = proc

    def stop(self, name: str) -> None:
        proc = self.servers.pop(name)
        proc.kill()  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]

    def connect(self, host: VM | ExternalHost, n: int, dst: str = VIP, port: int = 80) -> list[str]:
        res = host.exec([sys.executable, "-c", _CLIENT, dst, str(port), str(n)], timeout=n * 4 + 10)
        return json.loads(res.stdout)

    def member(self, name: str) -> pb.Member:
        return self.lbs.GetMember(pb.GetMemberRequest(name=f"pools/rr/members/rr-{name}"), metadata=self.md)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with lab_env(tmp_path_factory.mktemp("e2e-lb"), extra_args=["--gateway-chassis", "hv1"]) as env:
        lbs = pb_grpc.LoadBalancerServiceStub(env.channel)
        ext = env.stub.CreateNetwork(
            pb.CreateNetworkRequest(
                network=pb.Network(
                    segment_type=pb.Network.FLAT,
                    physical_network=PHYSNET,
                    external=True,
                    display_name="public",
                ),
                network_id="public",
            ),
            metadata=env.admin,
        )
        env.stub.CreateSubnet(
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=ext.name, cidr=EXT_CIDR), subnet_id="public-v4"),
            metadata=env.admin,
        )
        md = env.md("lbt")
        net = env.network(md, "lb-a", "10.140.0.0/24")
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(
                router=pb.Router(display_name="lb-r", external_gateway=pb.ExternalGateway(network=ext.name)),
                router_id="lb-r",
            ),
            metadata=md,
        )
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet="subnets/lb-a-v4"), metadata=md
        )
        # members take tcp/8080 from anywhere: clients, the VIP (health probes, hairpin), the outside
        env.stub.CreateSecurityGroup(
            pb.CreateSecurityGroupRequest(
                security_group=pb.SecurityGroup(display_name="web"), security_group_id="web"
            ),
            metadata=md,
        )
        env.stub.CreateSecurityGroupRule(
            pb.CreateSecurityGroupRuleRequest(
                security_group_rule=pb.SecurityGroupRule(
                    security_group="securityGroups/web",
                    direction="ingress",
                    protocol="tcp",
                    port_range_min=8080,
                    port_range_max=8080,
                    remote_ip_prefix="0.0.0.0/0",
                )
            ),
            metadata=md,
        )
        members = {}
        for i, (name, ch) in enumerate((("lbm1", "hv1"), ("lbm2", "hv2"), ("lbm3", "hv1")), 1):
            port = env.stub.CreatePort(
                pb.CreatePortRequest(
                    port=pb.Port(
                        network=net.name,
                        fixed_ips=[pb.FixedIp(ip_address=f"10.140.0.1{i}")],
                        security_groups=["securityGroups/web"],
                    ),
                    port_id=name,
                ),
                metadata=md,
            )
            members[name] = env.plug(ch, port)
        client = env.plug("hv2", env.port(md, "lbc", net, "10.140.0.5"))
        # a client on another subnet, routed to the VIP's
        net_b = env.network(md, "lb-b", "10.141.0.0/24")
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet="subnets/lb-b-v4"), metadata=md
        )
        routed = env.plug("hv1", env.port(md, "lbc-b", net_b, "10.141.0.5"))
        host = env.lab.add_external_host(PHYSNET, "lbext", f"{EXT_HOST}/24")
        host.exec("ethtool -K eth0 tx off", check=False)
        lb = lbs.CreateLoadBalancer(
            pb.CreateLoadBalancerRequest(
                load_balancer=pb.LoadBalancer(vip_subnet="subnets/lb-a-v4", vip_address=VIP),
                load_balancer_id="lb",
            ),
            metadata=md,
        )
        for lid, port, pool, algo in (("http", 80, "rr", "ROUND_ROBIN"), ("sticky", 81, "src", "SOURCE_IP")):
            ls = lbs.CreateListener(
                pb.CreateListenerRequest(
                    listener=pb.Listener(load_balancer=lb.name, protocol="TCP", protocol_port=port),
                    listener_id=lid,
                ),
                metadata=md,
            )
            lbs.CreatePool(
                pb.CreatePoolRequest(
                    pool=pb.Pool(listener=ls.name, protocol="TCP", lb_algorithm=algo), pool_id=pool
                ),
                metadata=md,
            )
            for i, (name, weight) in enumerate(WEIGHTS.items(), 1):
                lbs.CreateMember(
                    pb.CreateMemberRequest(
                        parent=f"pools/{pool}",
                        member=pb.Member(address=f"10.140.0.1{i}", protocol_port=8080, weight=weight),
                        member_id=f"{pool}-{name}",
                    ),
                    metadata=md,
                )
        lbs.CreateHealthMonitor(
            pb.CreateHealthMonitorRequest(
                health_monitor=pb.HealthMonitor(
                    pool="pools/rr", type="TCP", delay=DELAY, timeout=TIMEOUT, max_retries=RETRIES
                ),
                health_monitor_id="hm",
            ),
            metadata=md,
        )
        env.stub.CreateFloatingIp(
            pb.CreateFloatingIpRequest(
                floating_ip=pb.FloatingIp(
                    floating_network=ext.name, floating_ip_address=FIP, port=lb.vip_port
                ),
                floating_ip_id="lb-fip",
            ),
            metadata=md,
        )
        env.wait_realized()
        w = World(env, lbs, md, members, client, routed, host, {})
        for name in members:
            w.serve(name)
        try:
            yield w
        finally:
            for name in list(w.servers):
                w.stop(name)


def wait_status(w: World, name: str, status: str, within: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if w.member(name).operating_status == status:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{name} not {status} within {within} s: {w.member(name)}\n{w.env.controller_log()}")


def test_200_connections_spread_by_weight_and_all_complete(world: World) -> None:
    w = world
    wait_status(w, "lbm2", "ONLINE", 10)
    got = w.connect(w.client, 200)
    counts = Counter(got)
    print("200 connections:", dict(counts))
    assert set(counts) <= set(WEIGHTS), counts  # every connection completed with a member's answer
    total = sum(WEIGHTS.values())
    for name, weight in WEIGHTS.items():
        assert abs(counts[name] / 200 - weight / total) <= TOLERANCE, (counts, w.env.controller_log())


def test_a_client_on_another_subnet_reaches_the_vip_through_the_router(world: World) -> None:
    got = world.connect(world.routed, 30)
    assert set(got) <= set(WEIGHTS) and len(set(got)) >= 2, (Counter(got), world.env.controller_log())


def test_source_ip_keeps_a_client_on_one_member(world: World) -> None:
    got = world.connect(world.client, 20, port=81)
    assert len(set(got)) == 1 and got[0] in WEIGHTS, got


def test_a_stopped_member_leaves_the_rotation_and_comes_back(world: World) -> None:
    w = world
    wait_status(w, "lbm2", "ONLINE", 10)
    w.stop("lbm2")
    took = wait_status(w, "lbm2", "ERROR", DELAY * RETRIES + DELAY + 2)
    print(f"lbm2 ERROR {took:.1f} s after its server stopped")
    pool = w.lbs.GetPool(pb.GetPoolRequest(name="pools/rr"), metadata=w.md)
    assert pool.operating_status == "DEGRADED", pool
    w.env.wait_realized()
    got = w.connect(w.client, 50)
    assert set(got) <= {"lbm1", "lbm3"} and len(got) == 50, (took, Counter(got))
    w.serve("lbm2")
    wait_status(w, "lbm2", "ONLINE", DELAY * RETRIES + DELAY + 2)
    w.env.wait_realized()
    got = w.connect(w.client, 60)
    assert "lbm2" in got and set(got) <= set(WEIGHTS), Counter(got)


def test_a_member_reaching_the_vip_may_land_on_itself_hairpin(world: World) -> None:
    got = world.connect(world.members["lbm3"], 30)
    assert set(got) <= set(WEIGHTS), Counter(got)  # every connection completed, itself included
    assert "lbm3" in got, Counter(got)


def test_the_vip_through_its_floating_ip_from_the_external_host(world: World) -> None:
    got = world.connect(world.ext_host, 30, dst=FIP)
    assert set(got) <= set(WEIGHTS) and len(set(got)) >= 2, (Counter(got), world.env.controller_log())


def test_http_monitor_checks_the_status_line(world: World) -> None:
    """An HTTP monitor on another pool: lbm1 runs a web server on 8081 (200 for /), lbm3 has nothing there."""
    w = world
    w.env.stub.CreateSecurityGroupRule(
        pb.CreateSecurityGroupRuleRequest(
            security_group_rule=pb.SecurityGroupRule(
                security_group="securityGroups/web",
                direction="ingress",
                protocol="tcp",
                port_range_min=8081,
                port_range_max=8081,
                remote_ip_prefix="0.0.0.0/0",
            )
        ),
        metadata=w.md,
    )
    web = w.members["lbm1"].popen([sys.executable, "-m", "http.server", "8081", "--bind", "0.0.0.0"], cwd="/")
    try:
        ls = w.lbs.CreateListener(
            pb.CreateListenerRequest(
                listener=pb.Listener(load_balancer="loadBalancers/lb", protocol="TCP", protocol_port=82),
                listener_id="web",
            ),
            metadata=w.md,
        )
        w.lbs.CreatePool(
            pb.CreatePoolRequest(pool=pb.Pool(listener=ls.name, protocol="TCP"), pool_id="web"), metadata=w.md
        )
        for name, addr in (("lbm1", "10.140.0.11"), ("lbm3", "10.140.0.13")):
            w.lbs.CreateMember(
                pb.CreateMemberRequest(
                    parent="pools/web",
                    member=pb.Member(address=addr, protocol_port=8081),
                    member_id=f"web-{name}",
                ),
                metadata=w.md,
            )
        w.lbs.CreateHealthMonitor(
            pb.CreateHealthMonitorRequest(
                health_monitor=pb.HealthMonitor(
                    pool="pools/web",
                    type="HTTP",
                    delay=DELAY,
                    timeout=TIMEOUT,
                    max_retries=RETRIES,
                    url_path="/",
                    expected_codes="200",
                ),
                health_monitor_id="hm-web",
            ),
            metadata=w.md,
        )
        deadline = time.monotonic() + DELAY * RETRIES + DELAY + 5
        while time.monotonic() < deadline:
            got = {
                n: w.lbs.GetMember(
                    pb.GetMemberRequest(name=f"pools/web/members/web-{n}"), metadata=w.md
                ).operating_status
                for n in ("lbm1", "lbm3")
            }
            if got == {"lbm1": "ONLINE", "lbm3": "ERROR"}:
                break
            time.sleep(0.1)
        assert got == {"lbm1": "ONLINE", "lbm3": "ERROR"}, (got, w.env.controller_log())
        # a client fetching through the VIP always gets lbm1's page
        w.env.wait_realized()
        for _ in range(5):
            fetch = (
                f"import urllib.request; print(urllib.request.urlopen('http://{VIP}:82/', timeout=3).status)"
            )
            res = w.client.exec([sys.executable, "-c", fetch], timeout=10)
            assert res.stdout.strip() == "200"
    finally:
        web.kill()
        web.wait()
