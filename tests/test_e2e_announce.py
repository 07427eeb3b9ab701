"""Gratuitous ARPs end to end: an address that comes back on a new MAC (a router interface removed and added
again, a load balancer re-created with the same VIP, a floating IP on an address outside hosts remember) is
reachable again within a second by hosts that keep the old MAC in their ARP caches (default sysctls: a
gratuitous ARP request updates an entry Linux has; it creates none)."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lab import VM
from lab.hosts import ExternalHost, Host
from lab.traffic import capture
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.e2e import PHYSNET, Env, lab_env

pytestmark = pytest.mark.lab

NET_A, NET_B = "10.150.0", "10.151.0"
VIP = f"{NET_A}.100"
EXT_PREFIX = "172.26.4"
#: the requirement: reachable again within this long after the API call that brings the address back
REACHABLE_S = 1.0

_SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64); print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"member"); c.close()
"""

_CONNECT = r"""
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 80), timeout=0.3)
    c.settimeout(0.3)
    sys.exit(0 if c.recv(16) == b"member" else 2)
except OSError:
    sys.exit(1)
"""


@dataclass
class World:
    env: Env
    lbs: pb_grpc.LoadBalancerServiceStub
    md: tuple[tuple[str, str], ...]
    a1: VM  # net A on hv1: holds the router interface's and the VIP's MACs in its ARP cache
    a2: VM  # net A on hv2: the load balancer's member (a server on 8080)
    b1: VM  # net B on hv2: reached from a1 through the router
    ext_host: ExternalHost


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with lab_env(tmp_path_factory.mktemp("e2e-announce"), extra_args=["--gateway-chassis", "hv1"]) as env:
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
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=ext.name, cidr=f"{EXT_PREFIX}.0/24"), subnet_id="public-v4"
            ),
            metadata=env.admin,
        )
        md = env.md("garp")
        net_a = env.network(md, "garp-a", f"{NET_A}.0/24")
        net_b = env.network(md, "garp-b", f"{NET_B}.0/24")
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(
                router=pb.Router(
                    display_name="garp-r", external_gateway=pb.ExternalGateway(network=ext.name)
                ),
                router_id="garp-r",
            ),
            metadata=md,
        )
        for sub in ("garp-a-v4", "garp-b-v4"):
            env.stub.AddRouterInterface(
                pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{sub}"), metadata=md
            )
        env.allow_ingress(md)  # the external host is no member of the default security group
        a1 = env.plug("hv1", env.port(md, "garp-a1", net_a, f"{NET_A}.11"))
        a2 = env.plug("hv2", env.port(md, "garp-a2", net_a, f"{NET_A}.12"))
        b1 = env.plug("hv2", env.port(md, "garp-b1", net_b, f"{NET_B}.11"))
        host = env.lab.add_external_host(PHYSNET, "garpext", f"{EXT_PREFIX}.100/24")
        server = a2.popen([sys.executable, "-c", _SERVER])
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        env.wait_realized()
        yield World(env, lbs, md, a1, a2, b1, host)


def _neigh(host: Host, addr: str) -> str:
    """The MAC `host`'s ARP cache holds for `addr` ("" if none)."""
    m = re.search(r"lladdr (\S+)", host.exec(["ip", "neigh", "show", addr]).stdout)
    return m.group(1) if m else ""


def _until(ok: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `ok()` first holds (polled), None if not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if ok():
            return time.monotonic() - start
    return None


def _pings(host: Host, addr: str) -> Callable[[], bool]:
    return lambda: host.exec(["ping", "-n", "-q", "-c", "1", "-W", "0.2", addr], check=False).returncode == 0


def _garps(lines: list[str], addr: str) -> list[str]:
    return [ln for ln in lines if f"who-has {addr} tell {addr}" in ln]


def test_a_re_added_router_interface_is_reachable_at_once(world: World) -> None:
    w, env = world, world.env
    gateway = f"{NET_A}.1"
    assert w.a1.ping(w.b1.ip, count=1, timeout=10), env.controller_log()
    old = _neigh(w.a1, gateway)
    assert old, "a1 knows its gateway's MAC"
    env.stub.RemoveRouterInterface(
        pb.RemoveRouterInterfaceRequest(name="routers/garp-r", subnet="subnets/garp-a-v4"), metadata=w.md
    )
    env.wait_realized()
    with (
        capture("eth0", "arp", namespace=w.a1.namespace) as at_a1,
        capture("eth0", "arp", namespace=w.b1.namespace) as at_b1,
        capture("eth0", "arp", namespace=w.ext_host.namespace) as outside,
    ):
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name="routers/garp-r", subnet="subnets/garp-a-v4"), metadata=w.md
        )
        took = _until(_pings(w.a1, w.b1.ip), 10)
        new = _neigh(w.a1, gateway)
        time.sleep(3.5)  # the later announcements
    assert took is not None and took <= REACHABLE_S, f"reachable after {took} s\n{env.controller_log()}"
    assert new and new != old, (old, new)
    seen = _garps(at_a1.lines, gateway)
    assert len(seen) == 3 and all(new in ln for ln in seen), at_a1.lines
    assert not _garps(at_b1.lines, gateway), "another network's VMs are not told"
    assert not _garps(outside.lines, gateway), "a tenant address is not announced on the external network"


def _create_lb(w: World, ident: str) -> None:
    lb = w.lbs.CreateLoadBalancer(
        pb.CreateLoadBalancerRequest(
            load_balancer=pb.LoadBalancer(vip_subnet="subnets/garp-a-v4", vip_address=VIP),
            load_balancer_id=ident,
        ),
        metadata=w.md,
    )
    ls = w.lbs.CreateListener(
        pb.CreateListenerRequest(
            listener=pb.Listener(load_balancer=lb.name, protocol="TCP", protocol_port=80),
            listener_id=f"{ident}-l",
        ),
        metadata=w.md,
    )
    w.lbs.CreatePool(
        pb.CreatePoolRequest(
            pool=pb.Pool(listener=ls.name, protocol="TCP", lb_algorithm="ROUND_ROBIN"), pool_id=f"{ident}-p"
        ),
        metadata=w.md,
    )
    w.lbs.CreateMember(
        pb.CreateMemberRequest(
            parent=f"pools/{ident}-p",
            member=pb.Member(address=w.a2.ip, protocol_port=8080),
            member_id=f"{ident}-m",
        ),
        metadata=w.md,
    )


def test_a_re_created_vip_is_reachable_at_once(world: World) -> None:
    w, env = world, world.env

    def connects() -> bool:
        return w.a1.exec([sys.executable, "-c", _CONNECT, VIP], check=False).returncode == 0

    _create_lb(w, "garp-lb1")
    env.wait_realized()
    assert _until(connects, 10) is not None, env.controller_log()
    old = _neigh(w.a1, VIP)
    assert old, "a1 knows the VIP's MAC"
    w.lbs.DeleteLoadBalancer(
        pb.DeleteLoadBalancerRequest(name="loadBalancers/garp-lb1", force=True), metadata=w.md
    )
    env.wait_realized()
    assert not connects(), "a deleted load balancer answers no more"
    with (
        capture("eth0", "arp", namespace=w.a1.namespace) as at_a1,
        capture("eth0", "arp", namespace=w.b1.namespace) as at_b1,
    ):
        _create_lb(w, "garp-lb2")  # the VIP (a new port: a new MAC) comes with the first of its four calls
        took = _until(connects, 10)  # from the last call (only then has the VIP a member)
        new = _neigh(w.a1, VIP)
        time.sleep(3.5)
    assert took is not None and took <= REACHABLE_S, f"reachable after {took} s\n{env.controller_log()}"
    assert new and new != old, (old, new)
    seen = _garps(at_a1.lines, VIP)
    assert len(seen) == 3 and all(new in ln for ln in seen), at_a1.lines
    assert not _garps(at_b1.lines, VIP), "another network's VMs are not told"


def test_a_new_floating_ip_is_announced_on_the_external_network(world: World) -> None:
    """An outside host that remembers another MAC for the address (a floating IP reused after it lived
    elsewhere) reaches it at once: the gateway chassis announces it out its patch port."""
    w, env = world, world.env
    addr = f"{EXT_PREFIX}.77"
    w.ext_host.exec(
        ["ip", "neigh", "replace", addr, "lladdr", "02:00:00:00:77:77", "dev", "eth0", "nud", "stale"]
    )
    with (
        capture("eth0", "arp", namespace=w.ext_host.namespace) as outside,
        capture("eth0", "arp", namespace=w.a1.namespace) as at_a1,
    ):
        env.stub.CreateFloatingIp(
            pb.CreateFloatingIpRequest(
                floating_ip=pb.FloatingIp(
                    floating_network="networks/public", floating_ip_address=addr, port="ports/garp-a1"
                ),
                floating_ip_id="garp-f",
            ),
            metadata=w.md,
        )
        took = _until(_pings(w.ext_host, addr), 10)
        time.sleep(3.5)
    assert took is not None and took <= REACHABLE_S, f"reachable after {took} s\n{env.controller_log()}"
    gw_mac = _neigh(w.ext_host, addr)
    seen = _garps(outside.lines, addr)
    assert len(seen) == 3 and all(gw_mac in ln for ln in seen), outside.lines
    assert not _garps(at_a1.lines, addr), "an external address is not announced to the tenant's VMs"
