"""explain and trace against real packets, on the operator's report: a router r1 joins xa1 and xa2 and has a
static route to xa3 (10.83.3.0/24) via fw, a VM (one namespace, ip_forward=1) with a port on xa2 and one on
xa3, holding xa3's gateway address. No router joins xa1 and xa3; packets pass anyway, and explain must say
so. fw's ports get the allowed address pair 0.0.0.0/0 (what a Neutron user does for a VM that forwards)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controller.cli import sdnctl as cli
from lab import VM, netlink
from lab.chassis import INTEGRATION_BRIDGE
from proto.sdn.v1 import debug_pb2 as dbg
from proto.sdn.v1 import debug_pb2_grpc as dbg_grpc
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env
from tests.test_e2e_security_groups import _LISTEN, connect, eventually

pytestmark = pytest.mark.lab

Md = tuple[tuple[str, str], ...]
FORWARD_ANYTHING = [pb.AddressPair(ip_address="0.0.0.0/0")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-explain"), provider=False) as e:
        yield e


@dataclass
class World:
    md: Md
    debug: dbg_grpc.DebugServiceStub
    vms: dict[str, VM]
    fw_ports: dict[str, pb.Port]


def _port(
    env: Env, md: Md, ident: str, net: pb.Network, ip: str, groups: tuple[str, ...] = (), **kw: Any
) -> pb.Port:
    port = pb.Port(
        network=net.name,
        fixed_ips=[pb.FixedIp(ip_address=ip)],
        security_groups=[f"securityGroups/{g}" for g in groups],
        **kw,
    )
    return env.stub.CreatePort(pb.CreatePortRequest(port=port, port_id=ident), metadata=md)


def _second_nic(env: Env, chassis: str, vm: VM, port: pb.Port, ip_cidr: str) -> None:
    """eth1 of an existing VM namespace, plugged into br-int for `port` (a VM with two NICs)."""
    ch = env.chassis(chassis)
    ident = port.name.split("/")[1]
    name = f"vm{env.lab.next_port_number()}-{ident}"[:15]
    netlink.add_veth(
        name,
        "eth1",
        namespace=ch.namespace,
        peer_namespace=vm.namespace,
        mtu=vm.mtu,
        peer_mac=port.mac_address,
    )
    netlink.add_address("eth1", ip_cidr, vm.namespace)
    vm.exec(["ethtool", "-K", "eth1", "tx", "off"])
    ch.vsctl(
        "add-port",
        INTEGRATION_BRIDGE,
        name,
        "--",
        "set",
        "Interface",
        name,
        f"external_ids:iface-id={ident}",
        f"external_ids:attached-mac={port.mac_address}",
    )
    env.wait_active(port.name, chassis)


@pytest.fixture(scope="module")
def world(env: Env) -> Iterator[World]:
    md = env.md("xp")
    nets = {n: env.network(md, f"xa{n}", f"10.83.{n}.0/24") for n in (1, 2, 3)}
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name="xr1"), router_id="xr1"), metadata=md
    )
    for n in (1, 2):
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/xa{n}-v4"), metadata=md
        )
    # ssh-only: a group that lets in tcp/22 from anywhere, nothing else
    env.stub.CreateSecurityGroup(
        pb.CreateSecurityGroupRequest(
            security_group=pb.SecurityGroup(display_name="ssh-only"), security_group_id="ssh-only"
        ),
        metadata=md,
    )
    ssh = pb.SecurityGroupRule(
        security_group="securityGroups/ssh-only",
        direction="ingress",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="0.0.0.0/0",
    )
    env.stub.CreateSecurityGroupRule(pb.CreateSecurityGroupRuleRequest(security_group_rule=ssh), metadata=md)
    fw_a2 = _port(
        env, md, "fw-a2", nets[2], "10.83.2.5", device_id="fw", allowed_address_pairs=FORWARD_ANYTHING
    )
    fw_a3 = _port(
        env, md, "fw-a3", nets[3], "10.83.3.1", device_id="fw", allowed_address_pairs=FORWARD_ANYTHING
    )
    env.stub.UpdateRouter(
        pb.UpdateRouterRequest(
            router=pb.Router(
                name=r.name, routes=[pb.HostRoute(destination="10.83.3.0/24", nexthop="10.83.2.5")]
            ),
            update_mask={"paths": ["routes"]},
        ),
        metadata=md,
    )
    vms = {
        "a1-1": env.plug("hv1", _port(env, md, "a1-1", nets[1], "10.83.1.11")),
        "a3-1": env.plug("hv1", _port(env, md, "a3-1", nets[3], "10.83.3.11")),
        "a3-2": env.plug("hv2", _port(env, md, "a3-2", nets[3], "10.83.3.12", ("ssh-only",))),
        "fw": env.plug("hv2", fw_a2),
    }
    _second_nic(env, "hv2", vms["fw"], fw_a3, "10.83.3.1/24")
    vms["fw"].exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    env.wait_realized()
    servers = [vm.popen([sys.executable, "-c", _LISTEN, "22,80", ""]) for vm in (vms["a3-1"], vms["a3-2"])]
    for srv in servers:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
    yield World(md, dbg_grpc.DebugServiceStub(env.channel), vms, {"fw-a2": fw_a2, "fw-a3": fw_a3})
    for srv in servers:
        srv.kill()
        srv.communicate()


def _explain(w: World, src: str, dst: str, proto: str, port: int = 0) -> dbg.ExplainResponse:
    return w.debug.Explain(
        dbg.ExplainRequest(source_port=f"ports/{src}", destination=dst, protocol=proto, port=port),
        metadata=w.md,
    )


def _real(w: World, src: str, dst_ip: str, proto: str, port: int) -> bool:
    vm = w.vms[src]
    if proto == "icmp":  # one reply within 5 s; Host.ping itself retries a first echo lost to ARP
        return vm.ping(dst_ip, count=1, timeout=5)
    server = next(v for v in w.vms.values() if v.ip == dst_ip)
    return connect(vm, server, port) == "ok"


@pytest.mark.parametrize(
    ("src", "dst", "dst_ip", "proto", "port"),
    [
        ("a1-1", "ports/a3-1", "10.83.3.11", "icmp", 0),  # through r1's static route and fw
        ("a3-1", "ports/a1-1", "10.83.1.11", "icmp", 0),  # back: a3-1's gateway is fw, fw's is r1
        ("a1-1", "10.83.3.11", "10.83.3.11", "tcp", 22),
        ("a1-1", "ports/a3-2", "10.83.3.12", "tcp", 22),  # ssh-only lets tcp/22 in from anywhere
        ("a1-1", "ports/a3-2", "10.83.3.12", "icmp", 0),  # and nothing else
        ("a1-1", "ports/a3-2", "10.83.3.12", "tcp", 80),
        ("a3-1", "10.83.3.12", "10.83.3.12", "tcp", 22),  # same network
    ],
)
def test_explain_verdicts_are_what_real_packets_do(
    env: Env, world: World, src: str, dst: str, dst_ip: str, proto: str, port: int
) -> None:
    e = _explain(world, src, dst, proto, port)
    real = _real(world, src, dst_ip, proto, port)
    if (
        not real and proto != "icmp"
    ):  # a first SYN may race ARP in a VM: a second chance before calling it denied
        real = eventually(lambda: _real(world, src, dst_ip, proto, port), timeout=4)
    assert e.allowed == real, e.text


def test_explain_says_the_graph_is_wrong_and_follows_the_forwarding_vm(
    env: Env, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    e = _explain(world, "a1-1", "ports/a3-1", "icmp")
    assert e.allowed and not e.trace_confirms, e.text
    assert any("the walk wins" in n and "DENIED" in n for n in e.notes), e.notes
    assert any("ports/fw-a2 is not 10.83.3.11" in n and "assumed" in n for n in e.notes), e.notes
    kinds = {d.kind for d in e.deciders}
    assert {"route", "next_hop"} <= kinds and "isolation" not in kinds, e.text
    assert any("static route 10.83.3.0/24 via 10.83.2.5 of routers/xr1" in d.description for d in e.deciders)
    assert world.vms["a1-1"].ping("10.83.3.11", count=2, timeout=3)
    # the admin sees both legs in one trace: the forwarded one says so
    full = world.debug.Explain(
        dbg.ExplainRequest(source_port="ports/a1-1", destination="ports/a3-1", protocol="icmp"),
        metadata=env.admin,
    )
    assert [h.chassis for h in full.trace.hops] == ["hv1", "hv2", "hv2", "hv1"], full.text
    assert "forwards the packet (assumed)" in full.trace.hops[2].from_chassis
    assert full.trace.hops[-1].outputs[0].port == "ports/a3-1"
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert cli.main(["explain", "a1-1", "a3-1", "--proto", "icmp", *base]) == 0
    out = capsys.readouterr().out
    assert "ALLOWED" in out and "leg 2: ports/fw-a3 (forwards, assumed)" in out


def test_trace_to_a_routed_port_starts_with_the_gateway_mac(
    env: Env, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    resp = world.debug.Trace(
        dbg.TraceRequest(port="ports/a1-1", destination_port="ports/a3-1", headers={"ip_proto": "1"}),
        metadata=env.admin,
    )
    iface = next(
        p
        for p in env.stub.ListPorts(pb.ListPortsRequest(), metadata=env.admin).ports
        if p.device_owner == "network:router_interface" and p.network.endswith("/xa1")
    )
    assert resp.headers["eth_dst"] == iface.mac_address, resp.text
    stages = [s.stage for h in resp.hops for s in h.steps if s.flow]
    assert "l3_lookup" in stages and "arp_resolve" in stages
    assert resp.verdict.startswith("delivered to ports/fw-a2 on hv2; ports/fw-a2 is a next hop"), resp.text
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert cli.main(["flow", "trace", "--port", "a1-1", "--dst-port", "a3-1", "--proto", "icmp", *base]) == 0
    out = capsys.readouterr().out
    assert "First hop: ports/a1-1 sends it to its default gateway 10.83.1.1" in out
    assert "Verdict: delivered to ports/fw-a2 on hv2" in out


def test_without_the_address_pair_the_forwarding_vm_is_dropped_and_explain_says_where(
    env: Env, world: World
) -> None:
    md = world.md
    for p in world.fw_ports.values():
        env.stub.UpdatePort(
            pb.UpdatePortRequest(port=pb.Port(name=p.name), update_mask={"paths": ["allowed_address_pairs"]}),
            metadata=md,
        )
    env.wait_realized()
    try:
        e = _explain(world, "a1-1", "ports/a3-1", "icmp")
        assert not e.allowed, e.text
        denials = [(d.kind, d.resource) for d in e.deciders if not d.allows]
        assert denials == [("port_security", "ports/fw-a3")], e.text
        assert not world.vms["a1-1"].ping("10.83.3.11", count=2, timeout=2), "port security drops it for real"
    finally:
        for p in world.fw_ports.values():
            port = pb.Port(name=p.name, allowed_address_pairs=FORWARD_ANYTHING)
            mask = {"paths": ["allowed_address_pairs"]}
            env.stub.UpdatePort(pb.UpdatePortRequest(port=port, update_mask=mask), metadata=md)
        env.wait_realized()
    assert world.vms["a1-1"].ping("10.83.3.11", count=2, timeout=3)
