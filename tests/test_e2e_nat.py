"""SNAT and floating IPs end to end: real packets between VMs behind a router and a host on the external
(provider) network, through the router's gateway chassis (hv1) on real ovs-vswitchd."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf import field_mask_pb2

from lab import VM
from lab.hosts import ExternalHost, Host
from lab.proc import wait_until
from lab.traffic import capture, tcp_transfer
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.e2e import PHYSNET, Env, at_once, lab_env

pytestmark = pytest.mark.lab

EXT_CIDR = "172.24.4.0/24"
EXT_HOST = "172.24.4.100"


@dataclass
class World:
    env: Env
    md: tuple[tuple[str, str], ...]
    ext_host: ExternalHost
    gateway_ip: str
    vm1: VM  # on hv1, the gateway chassis
    vm2: VM  # on hv2: its external traffic is redirected to hv1
    vm2_port: pb.Port


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with lab_env(tmp_path_factory.mktemp("e2e-nat"), extra_args=["--gateway-chassis", "hv1"]) as env:
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
        md = env.md("nat")
        net = env.network(md, "nat-a", "10.130.0.0/24")
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(
                router=pb.Router(display_name="nat-r", external_gateway=pb.ExternalGateway(network=ext.name)),
                router_id="nat-r",
            ),
            metadata=md,
        )
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet="subnets/nat-a-v4"), metadata=md
        )
        r = env.stub.GetRouter(pb.GetRouterRequest(name=r.name), metadata=md)
        gateway_ip = r.external_gateway.fixed_ip.ip_address
        assert gateway_ip, r
        host = env.lab.add_external_host(PHYSNET, "ext", f"{EXT_HOST}/24")
        host.exec("ethtool -K eth0 tx off", check=False)
        # the external host can address the tenant subnet through the router (to show it is refused)
        host.exec(f"ip route add 10.130.0.0/24 via {gateway_ip}")
        env.allow_ingress(md)  # the external host is no member of the VMs' default security group
        vm1 = env.plug("hv1", env.port(md, "nat-v1", net))
        vm2_port = env.port(md, "nat-v2", net)
        vm2 = env.plug("hv2", vm2_port)
        env.wait_realized()
        yield World(env, md, host, gateway_ip, vm1, vm2, vm2_port)


def test_vms_reach_the_external_host_through_snat(world: World) -> None:
    w = world
    # the first packets may be lost while the gateway chassis resolves the external host's MAC
    assert w.vm1.ping(EXT_HOST, count=2, timeout=10), w.env.controller_log()
    with capture("eth0", "icmp", namespace=w.ext_host.namespace) as seen:
        assert w.vm2.ping(EXT_HOST, count=2, timeout=10), w.env.controller_log()
    requests = seen.matching("echo request")
    assert requests and all(f"{w.gateway_ip} > {EXT_HOST}" in ln for ln in requests), seen.lines
    assert not seen.matching("10.130.0."), "a fixed IP leaked onto the external network"
    assert tcp_transfer(w.vm2, w.ext_host, nbytes=256 * 1024), "TCP through SNAT from the other chassis"
    assert tcp_transfer(w.vm1, w.ext_host, port=5002), "TCP through SNAT on the gateway chassis"
    # packets to the controller (unresolved next hops, probe answers) pass the packet-in meter
    assert "pktps" in w.env.chassis("hv1").ofctl("-O", "OpenFlow13", "dump-meters", "br-int")
    assert any("meter:1" in f and "CONTROLLER" in f for f in w.env.ovs_flows("hv1"))


def test_default_route_goes_to_the_external_subnets_gateway(world: World) -> None:
    """Beyond the external subnet: next hop = the external subnet's gateway_ip, found by the controller's
    ARP probe (reg0 of the packet-in, not the packet's destination)."""
    w = world
    sub = w.env.stub.GetSubnet(pb.GetSubnetRequest(name="subnets/public-v4"), metadata=w.env.admin)
    upstream = w.env.lab.add_external_host(PHYSNET, "upstream", f"{sub.gateway_ip}/24")
    upstream.exec("ip addr add 198.51.100.1/32 dev lo")
    with capture("eth0", "icmp", namespace=upstream.namespace) as seen:
        assert w.vm2.ping("198.51.100.1", count=2, timeout=10), w.env.controller_log()
    assert seen.matching(f"{w.gateway_ip} > 198.51.100.1"), seen.lines


def _ttl_of_reply(host: Host, ip: str) -> int:
    """The TTL of the first echo reply from `ip` (a few tries: the first may meet an unresolved neighbour)."""
    out = host.exec(f"ping -n -c 3 -i 0.3 -W 3 {ip}", check=False).stdout
    m = re.search(r"ttl=(\d+)", out)
    assert m, out
    return int(m.group(1))


def _tcp_connects(client: Host, ip: str, port: int) -> bool:
    return client.exec(f"nc -z -n -w 3 {ip} {port}", check=False, timeout=15).returncode == 0


def test_outside_pings_the_gateway_address_and_opens_nothing_else(world: World) -> None:
    """The gateway address answers ping from the external network (the router itself: ttl=64, from the
    gateway MAC, no VM sees it); TCP and UDP to it and any new connection to a fixed IP stay unanswered
    while a VM listening on that port is reachable from inside; a floating IP still reaches its VM."""
    w, env = world, world.env
    assert w.vm1.ping(EXT_HOST, count=1, timeout=10)  # the neighbours are known
    gw_port = env.stub.GetPort(
        pb.GetPortRequest(
            name=env.stub.GetRouter(
                pb.GetRouterRequest(name="routers/nat-r"), metadata=w.md
            ).external_gateway.port
        ),
        metadata=env.admin,
    )
    with (
        capture("eth0", "icmp", namespace=w.vm1.namespace) as at_vm1,
        capture("eth0", "icmp", namespace=w.vm2.namespace) as at_vm2,
        capture("eth0", "icmp", namespace=w.ext_host.namespace) as outside,
    ):
        assert w.ext_host.ping(w.gateway_ip, count=2, timeout=10), env.controller_log()
        assert _ttl_of_reply(w.ext_host, w.gateway_ip) == 64, "the router's own reply, not routed"
    replies = outside.matching(f"{w.gateway_ip} > {EXT_HOST}: ICMP echo reply")
    assert replies and all(f" {gw_port.mac_address} > " in ln for ln in replies), outside.lines
    assert not at_vm1.lines and not at_vm2.lines, "a ping to the gateway address reached a VM"
    assert _ttl_of_reply(w.vm2, w.gateway_ip) == 64, "from inside (hv2, answered there) as well"
    # the VMs listen on TCP 5010 and UDP 5011, reachable from inside
    servers = [
        vm.popen(["timeout", "60", "nc", "-n", *args])
        for vm in (w.vm1, w.vm2)
        for args in (["-l", "-k", "5010"], ["-u", "-l", "5011"])
    ]
    try:
        assert wait_until(lambda: _tcp_connects(w.vm1, w.vm2.ip, 5010), 15), (
            "vm2's server is up (from inside)"
        )
        assert wait_until(lambda: _tcp_connects(w.vm2, w.vm1.ip, 5010), 15), (
            "vm1's server is up (from inside)"
        )
        bpf = "tcp port 5010 or udp port 5011 or udp port 53 or tcp port 22 or icmp"
        with (
            capture("eth0", bpf, namespace=w.vm1.namespace) as at_vm1,
            capture("eth0", bpf, namespace=w.vm2.namespace) as at_vm2,
            capture(
                "eth0",
                f"ip and (src host {w.gateway_ip} or src net 10.130.0.0/24)",
                namespace=w.ext_host.namespace,
            ) as back,
        ):
            # every probe at once, each given its full window (3 s for a TCP connect or a ping reply), so
            # the silence is waited for once, not once per probe
            probes = {
                f"TCP {ip}:{port}": w.ext_host.popen(["nc", "-z", "-n", "-w", "3", ip, str(port)])
                for ip in (w.gateway_ip, w.vm1.ip, w.vm2.ip)
                for port in (5010, 22)
            }
            probes |= {
                f"ping {ip}": w.ext_host.popen(["ping", "-n", "-q", "-c", "1", "-W", "3", ip])
                for ip in (w.vm1.ip, w.vm2.ip)
            }
            udp = [
                w.ext_host.popen(f"echo probe | nc -n -u -w 1 {ip} {port}")
                for ip in (w.gateway_ip, w.vm1.ip, w.vm2.ip)
                for port in (5011, 53)
            ]
            for what, probe in probes.items():
                probe.communicate(timeout=15)
                assert probe.returncode != 0, f"{what} answered from outside"
            for probe in udp:
                probe.communicate(timeout=15)
        assert not at_vm1.lines and not at_vm2.lines, f"reached a VM: {at_vm1.lines} {at_vm2.lines}"
        assert not back.lines, f"answered from inside: {back.lines}"  # no SYN-ACK, RST, port unreachable
    finally:
        for server in servers:
            server.terminate()  # timeout passes it on to nc
            server.communicate(timeout=10)
    # a floating IP still reaches its VM (TCP), and the gateway address still answers only ping
    fip = env.stub.CreateFloatingIp(
        pb.CreateFloatingIpRequest(
            floating_ip=pb.FloatingIp(floating_network="networks/public", port=w.vm2_port.name),
            floating_ip_id="nat-gwping",
        ),
        metadata=w.md,
    )
    try:
        env.wait_realized()
        at_fip = SimpleNamespace(popen=w.vm2.popen, ip=fip.floating_ip_address)
        assert tcp_transfer(w.ext_host, at_fip, port=5012), "TCP to the floating IP"  # type: ignore[arg-type]
        assert w.ext_host.ping(fip.floating_ip_address, count=1, timeout=10)
        assert w.ext_host.ping(w.gateway_ip, count=1, timeout=10)
        assert not _tcp_connects(w.ext_host, w.gateway_ip, 5012)
    finally:
        env.stub.DeleteFloatingIp(pb.DeleteFloatingIpRequest(name=fip.name), metadata=w.md)
        env.wait_realized()


def test_floating_ip_reaches_the_vm_until_dissociated(world: World) -> None:
    w = world
    fip = w.env.stub.CreateFloatingIp(
        pb.CreateFloatingIpRequest(
            floating_ip=pb.FloatingIp(floating_network="networks/public", port=w.vm2_port.name),
            floating_ip_id="nat-f",
        ),
        metadata=w.md,
    )
    w.env.wait_realized()
    addr = fip.floating_ip_address
    with capture("eth0", "icmp", namespace=w.vm2.namespace) as seen:
        assert w.ext_host.ping(addr, count=2, timeout=10), w.env.controller_log()
    assert seen.matching(f"{EXT_HOST} > {w.vm2.ip}: ICMP echo request"), seen.lines
    at_fip = SimpleNamespace(popen=w.vm2.popen, ip=addr)  # the VM's server, addressed by its floating IP
    assert tcp_transfer(w.ext_host, at_fip, port=5003), "TCP to the floating IP"  # type: ignore[arg-type]
    # the VM's own connections leave with its floating IP now
    with capture("eth0", "icmp", namespace=w.ext_host.namespace) as out:
        assert w.vm2.ping(EXT_HOST, count=1, timeout=10)
    assert out.matching(f"{addr} > {EXT_HOST}"), out.lines
    w.env.stub.UpdateFloatingIp(
        pb.UpdateFloatingIpRequest(
            floating_ip=pb.FloatingIp(name=fip.name, port=""),
            update_mask=field_mask_pb2.FieldMask(paths=["port"]),
        ),
        metadata=w.md,
    )
    w.env.wait_realized()
    # the switches confirmed the new tables; their datapath flow caches follow a moment later (a new ping in that
    # moment can still be DNAT'ed by a cached megaflow): let the revalidators finish a round first
    for ch in ("hv1", "hv2"):
        w.env.chassis(ch).appctl("revalidator/wait")
    assert not w.ext_host.ping(addr, count=1, timeout=3), "a dissociated floating IP must not reach the VM"
    assert w.vm2.ping(EXT_HOST, count=1, timeout=10), "SNAT still works"


def _tcp_seen_from(seen: list[str], src: str, dst: str, port: int) -> bool:
    return any(f" {src}." in ln and f"> {dst}.{port}:" in ln for ln in seen)


def test_hairpin_to_floating_ips_of_the_same_router(world: World) -> None:
    """A VM reaches another VM's floating IP through their router, across chassis, from the same or another
    subnet: on the gateway chassis the packet is SNAT'ed (to the source's floating IP, else the gateway
    address) and DNAT'ed to the target, as if it had left and come back; nothing goes onto the physical
    network."""
    w, env = world, world.env
    net_b = env.network(w.md, "nat-b", "10.131.0.0/24")
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name="routers/nat-r", subnet="subnets/nat-b-v4"), metadata=w.md
    )
    vm3 = env.plug("hv2", env.port(w.md, "nat-v3", net_b))
    vm1_port = env.stub.GetPort(pb.GetPortRequest(name="ports/nat-v1"), metadata=w.md)
    f2 = env.stub.CreateFloatingIp(
        pb.CreateFloatingIpRequest(
            floating_ip=pb.FloatingIp(floating_network="networks/public", port=w.vm2_port.name),
            floating_ip_id="nat-hp2",
        ),
        metadata=w.md,
    )
    env.wait_realized()
    fip2 = f2.floating_ip_address
    created = [f2.name]
    try:
        with capture("eth0", f"host {fip2}", namespace=w.ext_host.namespace) as outside:
            # vm1 (the gateway chassis, no floating IP) -> vm2's floating IP (hv2): vm2 sees the gateway address
            with capture("eth0", "icmp or tcp", namespace=w.vm2.namespace) as at_vm2:
                assert w.vm1.ping(fip2, count=2, timeout=10), env.controller_log()
                at_fip2 = SimpleNamespace(popen=w.vm2.popen, ip=fip2)
                assert tcp_transfer(w.vm1, at_fip2, port=5004), "TCP to a floating IP of the same router"  # type: ignore[arg-type]
            assert at_vm2.matching(f"{w.gateway_ip} > {w.vm2.ip}: ICMP echo request"), at_vm2.lines
            assert _tcp_seen_from(at_vm2.lines, w.gateway_ip, w.vm2.ip, 5004), at_vm2.lines
            assert not at_vm2.matching(f"{w.vm1.ip} >"), "the source must be translated"
            # vm3 (another subnet, hv2) -> vm2's floating IP (hv2): through the gateway chassis and back
            with capture("eth0", "icmp", namespace=w.vm2.namespace) as at_vm2:
                assert vm3.ping(fip2, count=2, timeout=10), env.controller_log()
            assert at_vm2.matching(f"{w.gateway_ip} > {w.vm2.ip}: ICMP echo request"), at_vm2.lines
            # vm2 (with its floating IP) -> vm1's floating IP: vm1 sees vm2's floating IP
            f1 = env.stub.CreateFloatingIp(
                pb.CreateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(floating_network="networks/public", port=vm1_port.name),
                    floating_ip_id="nat-hp1",
                ),
                metadata=w.md,
            )
            created.append(f1.name)
            env.wait_realized()
            fip1 = f1.floating_ip_address
            with capture("eth0", "icmp or tcp", namespace=w.vm1.namespace) as at_vm1:
                assert w.vm2.ping(fip1, count=2, timeout=10), env.controller_log()
                at_fip1 = SimpleNamespace(popen=w.vm1.popen, ip=fip1)
                assert tcp_transfer(w.vm2, at_fip1, port=5005), "TCP between two floating IPs"  # type: ignore[arg-type]
            assert at_vm1.matching(f"{fip2} > {w.vm1.ip}: ICMP echo request"), at_vm1.lines
            assert _tcp_seen_from(at_vm1.lines, fip2, w.vm1.ip, 5005), at_vm1.lines
            # and the other way, vm1 now leaving as its own floating IP
            with capture("eth0", "icmp", namespace=w.vm2.namespace) as at_vm2:
                assert w.vm1.ping(fip2, count=1, timeout=10), env.controller_log()
            assert at_vm2.matching(f"{fip1} > {w.vm2.ip}: ICMP echo request"), at_vm2.lines
        # (a new floating IP is announced there by gratuitous ARPs: not hairpin traffic)
        hairpin = [ln for ln in outside.lines if not re.search(r"who-has (\S+) tell \1,", ln)]
        assert not hairpin, f"hairpin traffic reached the physical network: {outside.lines}"
        # the external host still reaches the floating IP (and its replies still leave as the floating IP)
        assert w.ext_host.ping(fip2, count=1, timeout=10), env.controller_log()
    finally:
        for name in created:
            env.stub.DeleteFloatingIp(pb.DeleteFloatingIpRequest(name=name), metadata=w.md)
        env.wait_realized()
    assert not w.vm1.ping(fip2, count=1, timeout=3), "a deleted floating IP is not reached any more"


def test_kill_9_controller_keeps_north_south_hitless(world: World) -> None:
    """Learned external next hops are kept in the data directory: a restarted controller compiles the same
    flows, sends no flow-mod, and a ping through SNAT loses nothing."""
    w, env = world, world.env
    assert w.vm2.ping(EXT_HOST, count=1, timeout=10)
    before = {ch: env.ovs_flows(ch) for ch in ("hv1", "hv2")}
    pinger = w.vm2.popen(["ping", "-n", "-q", "-i", "0.02", "-c", "200", "-W", "2", EXT_HOST])
    time.sleep(0.5)
    env.controller.kill(signal.SIGKILL)
    time.sleep(0.3)
    env.controller.start()
    env.channel.close()
    env.channel = grpc.insecure_channel(env.controller.endpoint)
    env.stub = pb_grpc.TopologyServiceStub(env.channel)
    env.dp = dpb_grpc.DataplaneServiceStub(env.channel)
    deadline = time.monotonic() + 20
    while True:
        st = env.status()
        if all(s.connected and s.resyncs >= 1 and s.installed_flows > 0 for s in st.values()):
            break
        assert time.monotonic() < deadline, f"switches did not resync: {st}\n{env.controller_log()}"
        time.sleep(0.05)
    out, _ = pinger.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m and int(m.group(1)) == int(m.group(2)), out
    for ch, s in st.items():
        assert s.flow_mods_sent == 0 and s.group_mods_sent == 0, f"{ch} was sent flow-mods: {s}"
        assert env.ovs_flows(ch) == before[ch]


def test_clearing_the_gateway_cuts_north_south_and_removes_its_flows(world: World) -> None:
    w = world
    r = w.env.stub.GetRouter(pb.GetRouterRequest(name="routers/nat-r"), metadata=w.md)
    gw_port = w.env.stub.GetPort(pb.GetPortRequest(name=r.external_gateway.port), metadata=w.env.admin)
    assert any(gw_port.mac_address in f for f in w.env.ovs_flows("hv1"))
    w.env.stub.UpdateRouter(
        pb.UpdateRouterRequest(
            router=pb.Router(name=r.name), update_mask=field_mask_pb2.FieldMask(paths=["external_gateway"])
        ),
        metadata=w.md,
    )
    w.env.wait_realized()
    assert at_once(
        lambda: w.vm2.ping(EXT_HOST, count=1, timeout=3), lambda: w.vm1.ping(EXT_HOST, count=1, timeout=3)
    ) == [False, False]
    for ch in ("hv1", "hv2"):
        assert not any(gw_port.mac_address in f or w.gateway_ip in f for f in w.env.ovs_flows(ch)), ch
    assert w.vm1.ping(w.vm2.ip, count=2), "inside the subnet nothing changed"


def test_dual_stack_gateway_routes_ipv6_untranslated_and_keeps_ipv4_snat(world: World) -> None:
    """A router whose gateway holds an IPv4 and an IPv6 address: a VM on the other chassis pings6 the external
    host, which sees the VM's own IPv6 source (no NAT; the host's address learnt by the controller's neighbour
    solicitation), while the VM's IPv4 ping arrives SNAT'ed to the gateway's IPv4 address. Removing the IPv6
    address and adding it back keeps the IPv4 address and its SNAT."""
    w, env = world, world.env
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(network="networks/public", cidr="2001:db8:e4::/64", enable_dhcp=False),
            subnet_id="public-v6",
        ),
        metadata=env.admin,
    )
    net = env.network(w.md, "nat-d", "10.131.0.0/24")
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(network=net.name, cidr="fd00:131::/64", enable_dhcp=False), subnet_id="nat-d-v6"
        ),
        metadata=w.md,
    )
    both = [pb.FixedIp(subnet="subnets/public-v4"), pb.FixedIp(subnet="subnets/public-v6")]
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(
            router=pb.Router(external_gateway=pb.ExternalGateway(network="networks/public", fixed_ips=both)),
            router_id="nat-r6",
        ),
        metadata=w.md,
    )
    for sub in ("nat-d-v4", "nat-d-v6"):
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{sub}"), metadata=w.md
        )
    gw4, gw6 = (f.ip_address for f in r.external_gateway.fixed_ips)
    assert "." in gw4 and ":" in gw6 and r.external_gateway.fixed_ip.ip_address == gw4, r.external_gateway
    port = env.stub.CreatePort(
        pb.CreatePortRequest(
            port=pb.Port(
                network=net.name,
                fixed_ips=[pb.FixedIp(subnet="subnets/nat-d-v4"), pb.FixedIp(subnet="subnets/nat-d-v6")],
            ),
            port_id="nat-d1",
        ),
        metadata=w.md,
    )
    vm = env.plug("hv2", port)
    vm6 = next(f.ip_address for f in port.fixed_ips if ":" in f.ip_address)
    vm.exec(f"ip -6 addr add {vm6}/64 dev eth0 nodad && ip -6 route add default via fd00:131::1")
    host6 = "2001:db8:e4::100"
    w.ext_host.exec(f"ip -6 addr add {host6}/64 dev eth0 nodad && ip -6 route add fd00:131::/64 via {gw6}")
    env.wait_realized()

    def ping6_seen() -> list[str]:
        with capture("eth0", "icmp6 and ip6[40] == 128", namespace=w.ext_host.namespace) as seen:
            # the first may be lost while the controller solicits the external host's MAC
            out = vm.exec(f"ping -6 -n -c 3 -i 0.3 -w 10 {host6}", check=False, timeout=15).stdout
            assert re.search(r"[1-9]\d* received", out), out + env.controller_log()
        return seen.lines

    def ping4_source() -> None:
        with capture("eth0", "icmp", namespace=w.ext_host.namespace) as seen:
            assert vm.ping(EXT_HOST, count=2, timeout=10), env.controller_log()
        assert seen.matching(f"{gw4} > {EXT_HOST}") and not seen.matching("10.131.0."), seen.lines

    lines = ping6_seen()
    assert any(f"{vm6} > {host6}" in line for line in lines), f"the VM's own IPv6 source, no NAT: {lines}"
    ping4_source()
    assert w.ext_host.exec(f"ping -6 -n -c 1 -w 5 {gw6}", check=False).returncode == 0, "the gateway answers"
    # beyond the external subnet: the default route's next hop is the external IPv6 subnet's gateway_ip (the
    # packet-in's NEXT_HOP6, not its destination), solicited by the controller like the on-link host
    upstream = env.lab.add_external_host(PHYSNET, "upstream6", "172.24.4.206/24")
    upstream.exec(
        "ip -6 addr add 2001:db8:e4::1/64 dev eth0 nodad && ip -6 addr add 2001:db8:ff::1/128 dev lo"
    )
    upstream.exec(f"ip -6 route add fd00:131::/64 via {gw6}")
    out = vm.exec("ping -6 -n -c 3 -i 0.3 -w 10 2001:db8:ff::1", check=False, timeout=15).stdout
    assert re.search(r"[1-9]\d* received", out), out + env.controller_log()
    assert "neighbour solicitation for 2001:db8:e4::1 " in env.controller_log()

    def set_gateway(fixed: list[pb.FixedIp]) -> pb.Router:
        return env.stub.UpdateRouter(
            pb.UpdateRouterRequest(
                router=pb.Router(
                    name=r.name,
                    external_gateway=pb.ExternalGateway(network="networks/public", fixed_ips=fixed),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["external_gateway"]),
            ),
            metadata=w.md,
        )

    got = set_gateway([pb.FixedIp(ip_address=gw4)])
    assert [f.ip_address for f in got.external_gateway.fixed_ips] == [gw4]
    env.wait_realized()
    assert vm.exec(f"ping -6 -n -c 1 -w 2 {host6}", check=False).returncode != 0, (
        "no IPv6 gateway: no way out"
    )
    ping4_source()
    got = set_gateway([pb.FixedIp(ip_address=gw4), pb.FixedIp(ip_address=gw6)])
    assert [f.ip_address for f in got.external_gateway.fixed_ips] == [gw4, gw6]
    env.wait_realized()
    assert any(f"{vm6} > {host6}" in line for line in ping6_seen())
    ping4_source()
