"""Distributed routing end to end: real packets between subnets through routers on real ovs-vswitchd."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from lab.traffic import capture, tcp_transfer
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-l3"), provider=False) as e:
        yield e


def router(env: Env, md, ident: str, *nets: str) -> pb.Router:  # type: ignore[no-untyped-def]
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name=ident), router_id=ident), metadata=md
    )
    for net in nets:
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{net}-v4"), metadata=md
        )
    return r


def ttl_of_reply(vm, ip: str) -> int:  # type: ignore[no-untyped-def]
    out = vm.exec(f"ping -n -c 1 -W 2 {ip}", check=False).stdout
    m = re.search(r"ttl=(\d+)", out)
    assert m, out
    return int(m.group(1))


def test_routing_between_subnets_on_one_and_two_chassis(env: Env) -> None:
    md = env.md("rt")
    a = env.network(md, "rt-a", "10.101.0.0/24")
    b = env.network(md, "rt-b", "10.102.0.0/24")
    router(env, md, "rt-r", "rt-a", "rt-b")
    va = env.plug("hv1", env.port(md, "rt-va", a))
    vb_local = env.plug("hv1", env.port(md, "rt-vb1", b))
    vb_remote = env.plug("hv2", env.port(md, "rt-vb2", b))
    env.wait_realized()
    assert va.ping("10.101.0.1", count=2), "the gateway answers ping (in flows)"
    assert va.ping(vb_local.ip, count=2) and va.ping(vb_remote.ip, count=2)
    assert vb_remote.ping(va.ip, count=2)
    assert ttl_of_reply(va, vb_local.ip) == 63, "one router hop: TTL 64 - 1"
    assert ttl_of_reply(va, vb_remote.ip) == 63
    assert tcp_transfer(va, vb_remote, nbytes=256 * 1024), "TCP across the router and across chassis"
    assert tcp_transfer(vb_local, va)


def test_the_router_answers_its_own_addresses_with_ttl_64(env: Env) -> None:
    """As a Linux router: its echo replies leave with 64, on-link or from the interface on the other subnet,
    on the pinger's own chassis; routed packets still lose one."""
    md = env.md("rttl")
    a = env.network(md, "rttl-a", "10.103.0.0/24")
    b = env.network(md, "rttl-b", "10.104.0.0/24")
    router(env, md, "rttl-r", "rttl-a", "rttl-b")
    va = env.plug("hv1", env.port(md, "rttl-va", a))
    vb = env.plug("hv2", env.port(md, "rttl-vb", b))
    env.wait_realized()
    assert va.ping("10.103.0.1", count=1, timeout=10) and vb.ping("10.103.0.1", count=1, timeout=10)
    with capture("eth0", "icmp", namespace=vb.namespace) as at_vb:
        assert ttl_of_reply(va, "10.103.0.1") == 64, "the interface on the pinger's subnet"
        assert ttl_of_reply(va, "10.104.0.1") == 64, "the interface on the other subnet: no decrement either"
    assert not at_vb.lines, f"the router's own addresses are answered by the router: {at_vb.lines}"
    assert ttl_of_reply(vb, "10.103.0.1") == 64, "answered on hv2 as well"
    assert ttl_of_reply(vb, "10.104.0.1") == 64
    with capture("eth0", "icmp", namespace=vb.namespace) as at_vb:
        # 63: the VM's own reply (64) routed once; a reply from the router itself would arrive with 64
        assert ttl_of_reply(va, vb.ip) == 63, "a routed packet still loses one"
    # the request reached the VM (its reply may still be in tcpdump's buffer when the capture stops)
    assert at_vb.matching(f"{va.ip} > {vb.ip}: ICMP echo request"), at_vb.lines


def test_two_tenants_with_identical_cidrs_behind_their_own_routers(env: Env) -> None:
    vms = {}
    for tenant in ("ra", "rb"):
        md = env.md(tenant)
        a = env.network(md, f"{tenant}-a", "10.110.0.0/24")
        b = env.network(md, f"{tenant}-b", "10.111.0.0/24")
        router(env, md, f"{tenant}-r", f"{tenant}-a", f"{tenant}-b")
        vms[f"{tenant}-a"] = env.plug("hv1", env.port(md, f"{tenant}-va", a, "10.110.0.10"))
        vms[f"{tenant}-b"] = env.plug("hv2", env.port(md, f"{tenant}-vb", b, "10.111.0.10"))
    env.wait_realized()
    victim = vms["rb-b"]
    with capture("eth0", "icmp", namespace=victim.namespace) as seen:
        assert vms["ra-a"].ping("10.111.0.10", count=3)  # reaches ra's own 10.111.0.10
    assert not seen.lines, f"rb's VM saw ra's packets: {seen.lines}"
    neigh = vms["ra-a"].exec("ip neigh").stdout
    assert vms["rb-a"].mac not in neigh
    assert vms["rb-a"].ping("10.111.0.10", count=2)


def test_detaching_an_interface_cuts_that_subnet_only(env: Env) -> None:
    md = env.md("dt")
    nets = {x: env.network(md, f"dt-{x}", f"10.12{i}.0.0/24") for i, x in enumerate("abc")}
    r = router(env, md, "dt-r", "dt-a", "dt-b", "dt-c")
    vm = {x: env.plug("hv1" if x != "c" else "hv2", env.port(md, f"dt-v{x}", nets[x])) for x in "abc"}
    c2 = env.plug("hv2", env.port(md, "dt-vc2", nets["c"]))
    env.wait_realized()
    assert vm["a"].ping(vm["c"].ip, count=1) and vm["a"].ping(vm["b"].ip, count=1)
    env.stub.RemoveRouterInterface(
        pb.RemoveRouterInterfaceRequest(name=r.name, subnet="subnets/dt-c-v4"), metadata=md
    )
    env.wait_realized()
    assert not vm["a"].ping(vm["c"].ip, count=1, timeout=2), "routing to the detached subnet must stop"
    assert vm["a"].ping(vm["b"].ip, count=2), "the other subnets still route"
    assert vm["c"].ping(c2.ip, count=2), "inside the detached subnet L2 still works"
