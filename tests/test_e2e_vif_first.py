"""VIF first, port second (how OVN's users often build): every VM's interface is on br-int with its
iface-id before its logical port exists; then networks, a router with a gateway, security groups, ports,
a floating IP and a load balancer are created through the API. Everything that should be reachable is,
nothing else is; the incremental flows equal what a controller restart (a full compile) installs; and a
controller restart between the plug and the port's creation changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab import VM
from lab.hosts import ExternalHost
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.e2e import PHYSNET, Env, lab_env
from tests.test_e2e_security_groups import _LISTEN, connect

pytestmark = pytest.mark.lab

EXT_CIDR = "172.24.6.0/24"
EXT_HOST = "172.24.6.100"
VIP = "10.150.0.100"
# name -> (chassis, network, address, MAC): the "hypervisor" plugs these before the API knows the ports
VMS = {
    "vf-w1": ("hv1", "vf-web", "10.150.0.11", "fa:16:3e:00:50:11"),
    "vf-w2": ("hv1", "vf-web", "10.150.0.12", "fa:16:3e:00:50:12"),
    "vf-w3": ("hv2", "vf-web", "10.150.0.13", "fa:16:3e:00:50:13"),
    "vf-d1": ("hv2", "vf-db", "10.151.0.21", "fa:16:3e:00:51:21"),
}
CIDRS = {"vf-web": "10.150.0.0/24", "vf-db": "10.151.0.0/24"}


@dataclass
class World:
    env: Env
    md: tuple[tuple[str, str], ...]
    vms: dict[str, VM]
    ext: ExternalHost
    fip: str
    gateway_ip: str


def _plug_first(env: Env) -> dict[str, VM]:
    vms = {}
    for name, (ch, net, ip, mac) in VMS.items():
        vms[name] = env.chassis(ch).add_vm(
            name, mac, f"{ip}/24", iface_id=name, mtu=1450, gateway=CIDRS[net].replace("0/24", "1")
        )
        env.vms[name] = vms[name]
    return vms


def _rule(env: Env, md, group: str, port: int, **remote: str) -> None:  # type: ignore[no-untyped-def]
    env.stub.CreateSecurityGroupRule(
        pb.CreateSecurityGroupRuleRequest(
            security_group_rule=pb.SecurityGroupRule(
                security_group=f"securityGroups/{group}",
                direction="ingress",
                protocol="tcp",
                port_range_min=port,
                port_range_max=port,
                **remote,
            )
        ),
        metadata=md,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with lab_env(tmp_path_factory.mktemp("e2e-vif-first"), extra_args=["--gateway-chassis", "hv1"]) as env:
        vms = _plug_first(env)
        ext_host = env.lab.add_external_host(PHYSNET, "vfext", f"{EXT_HOST}/24")
        ext_host.exec("ethtool -K eth0 tx off", check=False)
        # now the API, as a tenant would use it
        ext = env.stub.CreateNetwork(
            pb.CreateNetworkRequest(
                network=pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET, external=True),
                network_id="vf-public",
            ),
            metadata=env.admin,
        )
        env.stub.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=ext.name, cidr=EXT_CIDR), subnet_id="vf-public-v4"
            ),
            metadata=env.admin,
        )
        md = env.md("viffirst")
        nets = {name: env.network(md, name, cidr) for name, cidr in CIDRS.items()}
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(
                router=pb.Router(external_gateway=pb.ExternalGateway(network=ext.name)), router_id="vf-r"
            ),
            metadata=md,
        )
        for name in CIDRS:
            env.stub.AddRouterInterface(
                pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{name}-v4"), metadata=md
            )
        for group in ("vf-websg", "vf-dbsg"):
            env.stub.CreateSecurityGroup(
                pb.CreateSecurityGroupRequest(
                    security_group=pb.SecurityGroup(display_name=group), security_group_id=group
                ),
                metadata=md,
            )
        _rule(env, md, "vf-websg", 22, remote_group="securityGroups/vf-websg")  # ssh among web servers
        _rule(env, md, "vf-websg", 8080, remote_ip_prefix="0.0.0.0/0")  # the service, from anywhere
        _rule(env, md, "vf-dbsg", 5432, remote_ip_prefix=CIDRS["vf-web"])  # the database, from the web tier
        for name, (_ch, net, ip, mac) in VMS.items():
            group = "vf-dbsg" if net == "vf-db" else "vf-websg"
            env.stub.CreatePort(
                pb.CreatePortRequest(
                    port=pb.Port(
                        network=nets[net].name,
                        mac_address=mac,
                        fixed_ips=[pb.FixedIp(ip_address=ip)],
                        security_groups=[f"securityGroups/{group}"],
                    ),
                    port_id=name,
                ),
                metadata=md,
            )
        fip = env.stub.CreateFloatingIp(
            pb.CreateFloatingIpRequest(
                floating_ip=pb.FloatingIp(floating_network=ext.name, port="ports/vf-w3"),
                floating_ip_id="vf-fip",
            ),
            metadata=md,
        )
        lbs = pb_grpc.LoadBalancerServiceStub(env.channel)
        lb = lbs.CreateLoadBalancer(
            pb.CreateLoadBalancerRequest(
                load_balancer=pb.LoadBalancer(vip_subnet="subnets/vf-web-v4", vip_address=VIP),
                load_balancer_id="vf-lb",
            ),
            metadata=md,
        )
        ls = lbs.CreateListener(
            pb.CreateListenerRequest(
                listener=pb.Listener(load_balancer=lb.name, protocol="TCP", protocol_port=80),
                listener_id="vf-http",
            ),
            metadata=md,
        )
        lbs.CreatePool(
            pb.CreatePoolRequest(pool=pb.Pool(listener=ls.name, protocol="TCP"), pool_id="vf-pool"),
            metadata=md,
        )
        for member in ("vf-w2", "vf-w3"):
            lbs.CreateMember(
                pb.CreateMemberRequest(
                    parent="pools/vf-pool",
                    member=pb.Member(address=VMS[member][2], protocol_port=8080),
                    member_id=member,
                ),
                metadata=md,
            )
        for name, (ch, *_rest) in VMS.items():
            env.wait_active(f"ports/{name}", ch)
        env.wait_realized()
        gateway_ip = env.stub.GetRouter(
            pb.GetRouterRequest(name=r.name), metadata=md
        ).external_gateway.fixed_ip.ip_address
        ext_host.exec(f"ip route add 10.150.0.0/16 via {gateway_ip}")  # to show fixed IPs stay unreachable
        servers = [vm.popen([sys.executable, "-c", _LISTEN, "22,23,8080,5432", ""]) for vm in vms.values()]
        for proc in servers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        try:
            yield World(env, md, vms, ext_host, fip.floating_ip_address, gateway_ip)
        finally:
            for proc in servers:
                proc.kill()
                proc.wait()


def test_every_vif_plugged_first_binds_and_turns_active(world: World) -> None:
    for name, (ch, *_rest) in VMS.items():
        port = world.env.stub.GetPort(pb.GetPortRequest(name=f"ports/{name}"), metadata=world.md)
        assert port.binding_chassis == f"chassis/{ch}" and port.status == pb.Port.ACTIVE, port


def test_security_groups_on_and_across_chassis(world: World) -> None:
    v = world.vms
    assert connect(v["vf-w1"], v["vf-w2"], 22) == "ok"  # same chassis, remote group
    assert connect(v["vf-w1"], v["vf-w3"], 22) == "ok"  # across chassis, remote group
    assert connect(v["vf-w3"], v["vf-w1"], 22) == "ok"
    assert connect(v["vf-w1"], v["vf-w2"], 23) == "timeout"  # no rule
    assert connect(v["vf-w1"], v["vf-w3"], 23) == "timeout"


def test_routing_with_a_cidr_rule_and_a_remote_group(world: World) -> None:
    v = world.vms
    assert connect(v["vf-w1"], v["vf-d1"], 5432) == "ok"  # routed, allowed by the CIDR rule
    assert connect(v["vf-w2"], v["vf-d1"], 5432) == "ok"
    assert connect(v["vf-w1"], v["vf-d1"], 22) == "timeout"  # routed, no rule
    assert connect(v["vf-d1"], v["vf-w1"], 22) == "timeout"  # not a member of the web group
    assert connect(v["vf-d1"], v["vf-w3"], 8080) == "ok"  # routed back the other way, 0.0.0.0/0


def test_snat_and_the_floating_ip(world: World) -> None:
    v, ext = world.vms, world.ext
    assert v["vf-w1"].ping(EXT_HOST, count=2, timeout=10), world.env.controller_log()
    assert v["vf-d1"].ping(EXT_HOST, count=2, timeout=10)
    at_fip = type("At", (), {"ip": world.fip})()
    assert connect(ext, at_fip, 8080) == "ok", world.env.controller_log()  # type: ignore[arg-type]
    assert connect(ext, at_fip, 22) == "timeout"  # type: ignore[arg-type]  # ssh only among web servers
    # new connections from outside to a fixed IP stay refused
    assert connect(ext, v["vf-w1"], 8080) != "ok"
    assert connect(ext, v["vf-w3"], 8080) != "ok"


def test_the_load_balancer_vip(world: World) -> None:
    at_vip = type("At", (), {"ip": VIP})()
    v = world.vms
    assert connect(v["vf-w1"], at_vip, 80) == "ok"  # type: ignore[arg-type]
    assert connect(v["vf-d1"], at_vip, 80) == "ok"  # type: ignore[arg-type]  # routed to the VIP
    assert connect(v["vf-w1"], at_vip, 81) != "ok"  # type: ignore[arg-type]  # no listener


def test_the_incremental_flows_are_what_a_full_compile_installs(world: World) -> None:
    """After building everything VIF-first, a controller restart (a compile from scratch) finds every switch
    exactly as it wants it: not one flow-mod or group-mod is sent."""
    env = world.env
    before = {ch: env.ovs_flows(ch) for ch in ("hv1", "hv2")}
    status = env.restart_controller()
    for ch, st in status.items():
        assert st.flow_mods_sent == 0 and st.group_mods_sent == 0, f"{ch} was sent changes: {st}"
        assert env.ovs_flows(ch) == before[ch]
    assert connect(world.vms["vf-w1"], world.vms["vf-w3"], 22) == "ok"


def test_a_controller_restart_between_plug_and_port(world: World) -> None:
    """The VIF is plugged while the controller is down; its port is created after the restart."""
    env, md = world.env, world.md
    env.controller.kill()
    late = env.chassis("hv2").add_vm(
        "vf-w4", "fa:16:3e:00:50:14", "10.150.0.14/24", iface_id="vf-w4", mtu=1450, gateway="10.150.0.1"
    )
    env.vms["vf-w4"] = late
    env.controller.start()
    env.reconnect()
    env.stub.CreatePort(
        pb.CreatePortRequest(
            port=pb.Port(
                network="networks/vf-web",
                mac_address="fa:16:3e:00:50:14",
                fixed_ips=[pb.FixedIp(ip_address="10.150.0.14")],
                security_groups=["securityGroups/vf-websg"],
            ),
            port_id="vf-w4",
        ),
        metadata=md,
    )
    env.wait_active("ports/vf-w4", "hv2")
    env.wait_realized()
    server = late.popen([sys.executable, "-c", _LISTEN, "22", ""])
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert connect(world.vms["vf-w1"], late, 22) == "ok"  # across chassis, remote group
        assert connect(world.vms["vf-d1"], late, 22) == "timeout"
    finally:
        server.kill()
        server.wait()
