"""IPv6 forwarding end to end (one lab): real ping6 across a distributed router between two chassis, both
families routed by one router at once, neighbour discovery answered in flows without flooding, the router's
own IPv6 addresses answering echo. VMs get static addresses (`nodad`) and a static default route: this
module does not depend on router advertisements."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest

from lab.hosts import VM
from lab.traffic import capture
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-ipv6"), provider=False) as e:
        yield e


def dual_stack(env: Env, md, ident: str, v4: str, v6: str) -> pb.Network:  # type: ignore[no-untyped-def]
    net = env.network(md, ident, v4)
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(network=net.name, cidr=v6, enable_dhcp=False), subnet_id=ident + "-v6"
        ),
        metadata=md,
    )
    return net


def vm(env: Env, md, chassis: str, ident: str, net: pb.Network) -> tuple[VM, str]:  # type: ignore[no-untyped-def]
    """A VM with an address of each family: the IPv6 one configured statically, default route via the
    router's IPv6 address."""
    n = net.name.split("/")[1]
    port = env.stub.CreatePort(
        pb.CreatePortRequest(
            port=pb.Port(
                network=net.name,
                fixed_ips=[pb.FixedIp(subnet=f"subnets/{n}-v4"), pb.FixedIp(subnet=f"subnets/{n}-v6")],
            ),
            port_id=ident,
        ),
        metadata=md,
    )
    v = env.plug(chassis, port)
    addr = next(f.ip_address for f in port.fixed_ips if ":" in f.ip_address)
    sub = env.stub.GetSubnet(pb.GetSubnetRequest(name=f"subnets/{n}-v6"), metadata=md)
    v.exec(f"ip -6 addr add {addr}/64 dev eth0 nodad && ip -6 route add default via {sub.gateway_ip}")
    return v, addr


def ping6(v: VM, ip: str, count: int = 1, timeout: float = 10.0) -> tuple[bool, int]:
    """(the replies came, the hop limit of the last one)."""
    out = v.exec(
        f"ping -6 -n -c {count} -i 0.2 -w {int(timeout)} {ip}", check=False, timeout=timeout + 5
    ).stdout
    hops = re.findall(r"ttl=(\d+)", out)
    return len(hops) >= count, int(hops[-1]) if hops else 0


_LISTEN6 = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(4); print("ready", flush=True)
while True:
    s.accept()[0].close()
"""
_CONNECT6 = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print("ok")
except ConnectionRefusedError:
    print("refused")
except OSError as err:
    print(type(err).__name__)
"""


def _connect6(v: VM, ip: str, port: int) -> str:
    return v.exec(["python3", "-c", _CONNECT6, ip, str(port)], check=False, timeout=10).stdout.strip()


def router(env: Env, md, ident: str, *subnets: str) -> pb.Router:  # type: ignore[no-untyped-def]
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name=ident), router_id=ident), metadata=md
    )
    for sub in subnets:
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{sub}"), metadata=md
        )
    return r


@pytest.fixture(scope="module")
def world(env: Env) -> dict[str, tuple[VM, str]]:
    md = env.md("six")
    a = dual_stack(env, md, "six-a", "10.161.0.0/24", "fd00:161::/64")
    b = dual_stack(env, md, "six-b", "10.162.0.0/24", "fd00:162::/64")
    router(env, md, "six-r", "six-a-v4", "six-a-v6", "six-b-v4", "six-b-v6")
    vms = {
        "a1": vm(env, md, "hv1", "six-a1", a),
        "a2": vm(env, md, "hv1", "six-a2", a),
        "a3": vm(env, md, "hv2", "six-a3", a),
        "b1": vm(env, md, "hv2", "six-b1", b),
    }
    env.wait_realized()
    return vms


def test_ping6_across_the_router_and_chassis_with_the_hop_limit_decremented(world) -> None:  # type: ignore[no-untyped-def]
    (a1, _), (b1, b1_6) = world["a1"], world["b1"]
    ok, hops = ping6(a1, b1_6, count=2)
    assert ok and hops == 63, f"one router hop: 64 - 1 (got {hops})"
    ok, hops = ping6(a1, "fd00:162::1")
    assert ok and hops == 64, "the router's far interface answers itself, with its own hop limit"
    assert ping6(b1, "fd00:161::1")[0], "and on the other chassis"


def test_one_router_routes_both_families_at_once(world) -> None:  # type: ignore[no-untyped-def]
    (a1, _), (b1, b1_6) = world["a1"], world["b1"]
    v4 = a1.popen(f"ping -n -c 10 -i 0.1 {b1.ip}")
    assert ping6(a1, b1_6, count=5)[0]
    out, _ = v4.communicate(timeout=15)
    assert " 0% packet loss" in out and "ttl=63" in out, out


def test_neighbour_solicitations_are_answered_in_flows_and_never_flooded(world) -> None:  # type: ignore[no-untyped-def]
    (a1, _), (a2, a2_6), (a3, a3_6) = world["a1"], world["a2"], world["a3"]
    nd = "icmp6 and ip6[40] == 135"  # neighbour solicitations
    with (
        capture("eth0", nd, namespace=a3.namespace) as third,
        capture("eth0", nd, namespace=a2.namespace) as owner,
    ):
        a1.exec("ip -6 neigh flush dev eth0")
        assert ping6(a1, a2_6)[0], "a1 reaches a2 on its own subnet"
        assert ping6(a1, a3_6)[0], "and a3 on the other chassis"
        assert ping6(a1, "fd00:161::1")[0], "and the router"
    assert not third.matching(f"who has {a2_6}"), f"a3 saw a solicitation for a2: {third.lines}"
    assert not owner.matching(f"who has {a3_6}"), f"a2 saw a solicitation for a3: {owner.lines}"
    neigh = a1.exec("ip -6 neigh").stdout
    assert re.search(rf"{re.escape(a2_6)} .*lladdr {a2.mac}", neigh), neigh
    assert re.search(rf"{re.escape(a3_6)} .*lladdr {a3.mac}", neigh), neigh
    assert re.search(r"fd00:161::1 .*lladdr \S+ router", neigh), f"the router's answer has R set: {neigh}"


def test_an_ipv6_only_external_gateway_is_refused_and_v4_keeps_its_gateway(env: Env) -> None:
    """Asking for an IPv6 address alone would drop the IPv4 one and its SNAT: refused; both at once (dual stack,
    routed in tests/test_e2e_nat.py) keep the IPv4 address."""
    admin = env.admin
    ext = env.stub.CreateNetwork(
        pb.CreateNetworkRequest(network=pb.Network(external=True), network_id="six-ext"), metadata=admin
    )
    for sub, cidr in (("six-ext-v4", "198.51.161.0/24"), ("six-ext-v6", "2001:db8:161::/64")):
        env.stub.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=ext.name, cidr=cidr, enable_dhcp=False), subnet_id=sub
            ),
            metadata=admin,
        )
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(
            router=pb.Router(external_gateway=pb.ExternalGateway(network=ext.name)), router_id="six-gw"
        ),
        metadata=admin,
    )
    assert r.external_gateway.fixed_ip.ip_address.startswith("198.51.161.")
    with pytest.raises(grpc.RpcError) as err:
        env.stub.UpdateRouter(
            pb.UpdateRouterRequest(
                router=pb.Router(
                    name=r.name,
                    external_gateway=pb.ExternalGateway(
                        network=ext.name, fixed_ip=pb.FixedIp(subnet="subnets/six-ext-v6")
                    ),
                ),
                update_mask={"paths": ["external_gateway"]},
            ),
            metadata=admin,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "IPv4" in (err.value.details() or "")
    got = env.stub.GetRouter(pb.GetRouterRequest(name=r.name), metadata=admin)
    assert got.external_gateway.fixed_ip.ip_address == r.external_gateway.fixed_ip.ip_address
    v4 = r.external_gateway.fixed_ip.ip_address
    both = env.stub.UpdateRouter(
        pb.UpdateRouterRequest(
            router=pb.Router(
                name=r.name,
                external_gateway=pb.ExternalGateway(
                    network=ext.name,
                    fixed_ips=[pb.FixedIp(ip_address=v4), pb.FixedIp(subnet="subnets/six-ext-v6")],
                ),
            ),
            update_mask={"paths": ["external_gateway"]},
        ),
        metadata=admin,
    )
    got_ips = [f.ip_address for f in both.external_gateway.fixed_ips]
    assert got_ips[0] == v4 and got_ips[1].startswith("2001:db8:161::") and len(got_ips) == 2, got_ips


def test_a_router_firewall_rule_with_ip_version_6_is_enforced(env: Env, world) -> None:  # type: ignore[no-untyped-def]
    """Deny ICMPv6 on the egress of six-b's IPv6 interface, allow the rest: ping6 stops, ping (IPv4) goes on;
    made reject, ping6 gets ICMPv6 administratively prohibited from the destination."""
    md = env.md("six")
    (a1, _), (b1, b1_6) = world["a1"], world["b1"]
    rules = [
        {"action": "deny", "protocol": "icmp", "ip_version": 6},
        {"action": "allow", "ip_version": 6},
        {"action": "allow", "ip_version": 4},
    ]
    ids = []
    for i, fields in enumerate(rules):
        env.stub.CreateFirewallRule(
            pb.CreateFirewallRuleRequest(
                firewall_rule=pb.FirewallRule(**fields), firewall_rule_id=f"six-fw{i}"
            ),  # type: ignore[arg-type]
            metadata=md,
        )
        ids.append(f"firewallRules/six-fw{i}")
    pol = env.stub.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(firewall_rules=ids), firewall_policy_id="six-fwp"
        ),
        metadata=md,
    )
    r = env.stub.GetRouter(pb.GetRouterRequest(name="routers/six-r"), metadata=md)
    ports = [i.port for i in r.interfaces if i.subnet in ("subnets/six-b-v4", "subnets/six-b-v6")]
    assert len(ports) == 2, r.interfaces
    group = env.stub.CreateFirewallGroup(
        pb.CreateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(egress_firewall_policy=pol.name, ports=ports),
            firewall_group_id="six-fwg",
        ),
        metadata=md,
    )
    env.wait_realized()
    try:
        assert not ping6(a1, b1_6, timeout=2)[0], "ICMPv6 denied by the IPv6 rule"
        assert a1.ping(b1.ip, count=2), "IPv4 allowed by the IPv4 rule"
        # reject answers IPv6 too: ICMPv6 destination unreachable, administratively prohibited, from b1
        env.stub.UpdateFirewallRule(
            pb.UpdateFirewallRuleRequest(
                firewall_rule=pb.FirewallRule(name=ids[0], action="reject"), update_mask={"paths": ["action"]}
            ),
            metadata=md,
        )
        env.wait_realized()
        out = a1.exec(f"ping -6 -n -c 1 -w 3 {b1_6}", check=False, timeout=8).stdout
        assert f"From {b1_6}" in out and "Administratively prohibited" in out, out
        # and TCP gets a RST from the firewall, though b1 listens: connect() is refused at once
        server = b1.popen(["python3", "-c", _LISTEN6, "22"])
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert _connect6(a1, b1_6, 22) == "ok", "b1 listens, and the IPv6 allow rule lets TCP through"
        env.stub.UpdateFirewallRule(
            pb.UpdateFirewallRuleRequest(
                firewall_rule=pb.FirewallRule(
                    name=ids[0], protocol="tcp", destination_port_min=22, destination_port_max=22
                ),
                update_mask={"paths": ["protocol", "destination_port_min", "destination_port_max"]},
            ),
            metadata=md,
        )
        env.wait_realized()
        try:
            assert _connect6(a1, b1_6, 22) == "refused"
            assert ping6(a1, b1_6)[0], "ICMPv6 is allowed again"
        finally:
            server.kill()
            server.communicate()
    finally:
        env.stub.DeleteFirewallGroup(pb.DeleteFirewallGroupRequest(name=group.name), metadata=md)
        env.wait_realized()
    assert ping6(a1, b1_6)[0], "and back once the group is gone"


def test_security_group_rules_per_family_on_one_port(env: Env) -> None:
    """A port whose only group lets in ICMPv6 (from anywhere) and no IPv4: from a VM of the same network
    (not in that group), ping6 reaches it and ping (IPv4) does not."""
    md = env.md("sixsg")
    net = dual_stack(env, md, "sixsg-a", "10.163.0.0/24", "fd00:163::/64")
    env.stub.CreateSecurityGroup(
        pb.CreateSecurityGroupRequest(
            security_group=pb.SecurityGroup(display_name="v6ping"), security_group_id="v6ping"
        ),
        metadata=md,
    )
    env.stub.CreateSecurityGroupRule(
        pb.CreateSecurityGroupRuleRequest(
            security_group_rule=pb.SecurityGroupRule(
                security_group="securityGroups/v6ping", direction="ingress", ethertype="IPv6", protocol="icmp"
            )
        ),
        metadata=md,
    )
    client, _ = vm(env, md, "hv1", "sixsg-c", net)
    port = env.stub.CreatePort(
        pb.CreatePortRequest(
            port=pb.Port(
                network=net.name,
                security_groups=["securityGroups/v6ping"],
                fixed_ips=[pb.FixedIp(subnet="subnets/sixsg-a-v4"), pb.FixedIp(subnet="subnets/sixsg-a-v6")],
            ),
            port_id="sixsg-s",
        ),
        metadata=md,
    )
    server = env.plug("hv2", port)
    server_6 = next(f.ip_address for f in port.fixed_ips if ":" in f.ip_address)
    server.exec(f"ip -6 addr add {server_6}/64 dev eth0 nodad")
    env.wait_realized()
    assert ping6(client, server_6)[0], "the IPv6 rule lets ICMPv6 in"
    assert not client.ping(server.ip, count=1, timeout=2), "no IPv4 rule: IPv4 ICMP stays out"


def test_an_ipv6_static_route_sends_to_its_next_hop(env: Env, world) -> None:  # type: ignore[no-untyped-def]
    """fd00:999::/64 via b1: a ping to fd00:999::1 arrives at b1 (its MAC, hop limit 63)."""
    md = env.md("six")
    (a1, _), (b1, b1_6) = world["a1"], world["b1"]
    env.stub.UpdateRouter(
        pb.UpdateRouterRequest(
            router=pb.Router(
                name="routers/six-r", routes=[pb.HostRoute(destination="fd00:999::/64", nexthop=b1_6)]
            ),
            update_mask={"paths": ["routes"]},
        ),
        metadata=md,
    )
    env.wait_realized()
    # echo requests with hop limit 63 (ip6[7]): routed once
    with capture("eth0", "icmp6 and ip6[40] == 128 and ip6[7] == 63", namespace=b1.namespace) as at_b1:
        a1.exec("ping -6 -n -c 2 -i 0.2 -W 1 fd00:999::1", check=False)
    assert at_b1.matching("fd00:999::1: ICMP6, echo request"), at_b1.lines
    assert all(b1.mac in line for line in at_b1.lines), at_b1.lines


def test_a_restarted_controller_adopts_the_ipv6_flows_without_a_flow_mod(env: Env, world) -> None:  # type: ignore[no-untyped-def]
    """OVS reports the IPv6 flows in its own spellings (xxreg3 as reg12..reg15, NXM_NX_ND_TARGET moves,
    nd_reserved): a controller killed with -9 reads them back as the flows it compiles, and sends nothing."""
    before = {ch: env.ovs_flows(ch) for ch in ("hv1", "hv2")}
    status = env.restart_controller()
    for ch, s in status.items():
        assert s.flow_mods_sent == 0 and s.group_mods_sent == 0, f"{ch} was sent flow-mods: {s}"
        assert env.ovs_flows(ch) == before[ch]
    (a1, _), (_b1, b1_6) = world["a1"], world["b1"]
    a1.exec("ip -6 neigh flush dev eth0")
    assert ping6(a1, b1_6)[0]


def test_trace_and_explain_walk_ipv6_and_agree_with_the_switch_and_real_packets(  # type: ignore[no-untyped-def]
    env: Env, world, capsys: pytest.CaptureFixture[str]
) -> None:
    """Explain to an IPv6 address walks the flows and says what ping6 does; the differential trace of an
    ICMPv6 echo finds the switch holding what the controller wants, and the switch's own ofproto/trace of the
    same IPv6 packet delivers it (hv2's datapath actions output it); `sdnctl flow trace --ip-dst` of a v6
    address walks it too."""
    from controller.cli import sdnctl as cli
    from proto.sdn.v1 import debug_pb2 as dbg
    from proto.sdn.v1 import debug_pb2_grpc as dbg_grpc

    debug = dbg_grpc.DebugServiceStub(env.channel)
    md = env.md("six")
    (a1, _), (_b1, b1_6), (_a2, a2_6) = world["a1"], world["b1"], world["a2"]
    for dst in (b1_6, a2_6, "fd00:162::1"):  # across the router, on-link, the router's own address
        e = debug.Explain(
            dbg.ExplainRequest(source_port="ports/six-a1", destination=dst, protocol="icmp"), metadata=md
        )
        assert "walked through the flows is ALLOWED" in e.text and not any("no walk" in n for n in e.notes), (
            e.text
        )
        assert e.allowed and ping6(a1, dst, timeout=3)[0], e.text
        # (the router's address: the model's reasoning says its port is bound nowhere; the walk wins)
        assert e.trace_confirms or dst == "fd00:162::1", e.text
    req = dbg.TraceRequest(port="ports/six-a1", headers={"ipv6_dst": b1_6})
    diff = debug.DiffTrace(req, metadata=env.admin)
    assert not diff.divergences and diff.installed.verdict.startswith("delivered to ports/six-b1"), diff.text
    assert {s.chassis for s in diff.switch_traces} == {"hv1", "hv2"}, diff.text
    assert not [s.error for s in diff.switch_traces if s.error], diff.text  # OVS parses the IPv6 packet
    hv2 = next(s for s in diff.switch_traces if s.chassis == "hv2")
    assert not hv2.error and "ipv6_dst=" in hv2.flow, hv2
    actions = hv2.output.rsplit("Datapath actions:", 1)[-1].strip()
    assert actions and actions != "drop", hv2.output
    base = ["--endpoint", env.controller.endpoint, f"--token-file={env.controller.data_dir}"]
    assert cli.main(["flow", "trace", "--port", "six-a1", "--ip-dst", b1_6, "--proto", "icmp", *base]) == 0
    out = capsys.readouterr().out
    assert "Verdict: delivered to ports/six-b1 on hv2" in out, out


def test_a_solicitation_nobody_answers_reaches_only_ports_that_may_hold_the_address(env: Env, world) -> None:  # type: ignore[no-untyped-def]
    """a1 asks for fd00:161::99, which no port has: neither a2 (same chassis) nor a3 (the other) sees the
    solicitation. Given to a3 as an allowed address pair (and configured in its VM), a3 gets the next
    solicitation and answers it itself (the flows do not answer for pairs): ping6 works."""
    md = env.md("six")
    (a1, _), (a2, _), (a3, _) = world["a1"], world["a2"], world["a3"]
    unknown = "fd00:161::99"
    nd = "icmp6 and ip6[40] == 135"
    with (
        capture("eth0", nd, namespace=a2.namespace) as second,
        capture("eth0", nd, namespace=a3.namespace) as third,
    ):
        assert not ping6(a1, unknown, timeout=2)[0]
    assert not second.matching(f"who has {unknown}"), second.lines
    assert not third.matching(f"who has {unknown}"), third.lines
    port = env.stub.GetPort(pb.GetPortRequest(name="ports/six-a3"), metadata=md)
    env.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, allowed_address_pairs=[pb.AddressPair(ip_address=unknown)]),
            update_mask={"paths": ["allowed_address_pairs"]},
        ),
        metadata=md,
    )
    a3.exec(f"ip -6 addr add {unknown}/64 dev eth0 nodad")
    env.wait_realized()
    try:
        a1.exec("ip -6 neigh flush dev eth0")
        with capture("eth0", nd, namespace=a2.namespace) as second:
            assert ping6(a1, unknown)[0], "a3 got the solicitation for its pair's address and answered"
        assert not second.matching(f"who has {unknown}"), second.lines
    finally:
        a3.exec(f"ip -6 addr del {unknown}/64 dev eth0")
        env.stub.UpdatePort(
            pb.UpdatePortRequest(
                port=pb.Port(name=port.name), update_mask={"paths": ["allowed_address_pairs"]}
            ),
            metadata=md,
        )
        env.wait_realized()
