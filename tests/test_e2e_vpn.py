"""VPNaaS end to end: IPsec site-to-site tunnels from tenants' routers to remote sites, with real packets.

One lab: hv1 and hv2 are gateway chassis (in that order) with the provider bridge; the VMs live on hv3, so
their traffic to a remote site is redirected to the gateway chassis, where the router's VPN namespace (charon
with userspace ESP, started by the controller) encrypts it. Each remote site is a namespace on the external
network running its own charon (the test's peer, configured over VICI) with a private host behind it.
Tenants a and b use the same private CIDRs (10.1.0.0/24 here, 10.2.0.0/24 at their sites).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from controller.services.vpn_host import remove_namespaces_of
from lab import VM
from lab.traffic import capture, tcp_transfer
from lab.vpn_site import RemoteSite
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import PHYSNET, Env, lab_env
from topology.records import (
    EP_CIDR,
    EP_SUBNET,
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Record,
    VpnEndpointGroup,
    VpnService,
)
from topology.state import State

pytestmark = pytest.mark.lab

EXT_CIDR = "172.27.4.0/24"
LOCAL_CIDR = "10.1.0.0/24"
REMOTE_CIDR = "10.2.0.0/24"
FAILOVER_S = 2.0
PSK = "s3cret-psk-for-the-test"


@dataclass
class Tenant:
    name: str
    md: tuple[tuple[str, str], ...]
    router_id: str
    gateway_ip: str
    gateway_mac: str
    vm: VM
    site: RemoteSite


@dataclass
class World:
    env: Env
    a: Tenant
    b: Tenant


def _tenant(env: Env, name: str, site_ip: str) -> Tenant:
    md = env.md(name)
    net = env.network(md, f"{name}-net", LOCAL_CIDR)
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(
            router=pb.Router(
                display_name=f"{name}-r", external_gateway=pb.ExternalGateway(network="networks/public")
            ),
            router_id=f"{name}-r",
        ),
        metadata=md,
    )
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{name}-net-v4"), metadata=md
    )
    r = env.stub.GetRouter(pb.GetRouterRequest(name=r.name), metadata=md)
    gw_port = env.stub.GetPort(pb.GetPortRequest(name=r.external_gateway.port), metadata=env.admin)
    env.allow_ingress(md, remote_ip_prefix=REMOTE_CIDR)  # the remote site's hosts are no group members
    vm = env.plug("hv3", env.port(md, f"{name}-vm", net, ip="10.1.0.5"))
    site = RemoteSite(env.lab, PHYSNET, f"site{name}", f"{site_ip}/24", REMOTE_CIDR)
    site.start()
    site.connect(f"to-{name}", r.external_gateway.fixed_ip.ip_address, [REMOTE_CIDR], [LOCAL_CIDR], PSK)
    return Tenant(
        name, md, f"{name}-r", r.external_gateway.fixed_ip.ip_address, gw_port.mac_address, vm, site
    )


def vpn_records(t: Tenant, site_ip: str, psk: str = PSK) -> list[Record]:
    """The tenant's VPN: policies, service, endpoint groups, one connection to its site."""
    n = t.name
    return [
        IkePolicy(id=f"{n}-ike", tenant=n),
        IpsecPolicy(id=f"{n}-esp", tenant=n),
        VpnService(id=f"{n}-vpn", tenant=n, router_id=t.router_id),
        VpnEndpointGroup(id=f"{n}-local", tenant=n, type=EP_SUBNET, endpoints=(f"{n}-net-v4",)),
        VpnEndpointGroup(id=f"{n}-peer", tenant=n, type=EP_CIDR, endpoints=(REMOTE_CIDR,)),
        IpsecSiteConnection(
            id=f"{n}-conn",
            tenant=n,
            vpnservice_id=f"{n}-vpn",
            ikepolicy_id=f"{n}-ike",
            ipsecpolicy_id=f"{n}-esp",
            local_ep_group_id=f"{n}-local",
            peer_ep_group_id=f"{n}-peer",
            peer_address=site_ip,
            peer_id=site_ip,
            psk=psk,
            dpd_interval_s=2,
            dpd_timeout_s=6,
        ),
    ]


def store_write(env: Env, put: list[Record], delete: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
    """Write VPN records into the controller's store while it is stopped, then restart it (until the VPN API
    lands on this branch)."""
    env.controller.stop()
    state = State(env.controller.data_dir / "topology.sqlite")
    try:

        def fn(t, rev, now):  # type: ignore[no-untyped-def]
            out = []
            for kind, ident in delete:
                old = t.table(kind).get(ident)
                if old is not None:
                    out.append((kind, ident, old, None))
            for r in put:
                old = t.table(r.KIND).get(r.id)
                out.append(
                    (
                        r.KIND,
                        r.id,
                        old,
                        dataclasses.replace(r, revision=rev, create_time=now, update_time=now),
                    )
                )
            return out

        state.write(fn)
    finally:
        state.close()
    env.controller.start()
    env.reconnect()


def conn_status(env: Env, conn_id: str) -> tuple[str, str]:
    state = State(env.controller.data_dir / "topology.sqlite")  # read-only look at the committed model
    try:
        c = state.topology.ipsec_site_connections.get(conn_id)
        return (c.status, c.status_reason) if c is not None else ("", "")
    finally:
        state.close()


def wait_for(cond: Callable[[], object], timeout: float, what: str, env: Env) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} not within {timeout} s\n{env.controller_log()}")
        time.sleep(0.1)
    return time.monotonic() - t0


def outage(ping_output: str) -> float:
    stamps = [
        float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", ping_output, re.MULTILINE)
    ]
    assert len(stamps) > 2, ping_output
    return max(b - a for a, b in itertools.pairwise(stamps))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    args = [
        "--gateway-chassis", "hv1", "--gateway-chassis", "hv2",
        "--gateway-failover-s", str(FAILOVER_S), "--vpn-esp", "userspace",
    ]  # fmt: skip
    netns: list[str] = []

    def vpn_hosts(lab):  # type: ignore[no-untyped-def]
        netns.extend(c.namespace for c in lab.chassis.values())
        return [f"--vpn-netns={c.name}={c.namespace}" for c in lab.chassis.values()]

    try:
        with lab_env(
            tmp_path_factory.mktemp("e2e-vpn"), chassis=3, extra_args=args, lab_args=vpn_hosts
        ) as env:
            ext = env.stub.CreateNetwork(
                pb.CreateNetworkRequest(
                    network=pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET, external=True),
                    network_id="public",
                ),
                metadata=env.admin,
            )
            env.stub.CreateSubnet(
                pb.CreateSubnetRequest(
                    subnet=pb.Subnet(network=ext.name, cidr=EXT_CIDR), subnet_id="public-v4"
                ),
                metadata=env.admin,
            )
            a = _tenant(env, "a", "172.27.4.50")
            b = _tenant(env, "b", "172.27.4.60")
            env.wait_realized()
            yield World(env, a, b)
    finally:
        for ns in netns:  # the controller is killed, not stopped: its VPN namespaces stay behind
            remove_namespaces_of(ns)


def vpn_flows(env: Env, chassis: str) -> list[str]:
    """br-int flows of the VPN app (its cookies' app byte) on a chassis."""
    return [
        f for f in env.ovs_flows(chassis) if re.search(r"cookie=0x[0-9a-f]*?0d[0-9a-f]{4},", f) or "vpn" in f
    ]


def test_tunnel_carries_traffic_both_ways(world: World) -> None:
    """Both tenants' VPNs at once (b's with a wrong pre-shared key): a's tunnel carries ping and TCP both ways,
    its site sees the VM's fixed IP, and the external link carries only IKE / ESP-in-UDP between the two
    gateways."""
    env, a, b = world.env, world.a, world.b
    t0 = time.monotonic()
    store_write(env, vpn_records(a, a.site.gateway.ip) + vpn_records(b, b.site.gateway.ip, psk="not-" + PSK))
    took = wait_for(a.site.up, 20, "tenant a's CHILD_SA at its site", env)
    print(
        f"\ntunnel up {took:.2f} s after the controller restarted ({time.monotonic() - t0:.2f} s with the restart)"
    )
    with (
        capture("eth0", "", namespace=a.site.gateway.namespace) as wire,
        capture("eth0", "icmp or tcp", namespace=a.site.host.namespace) as inside,
    ):
        assert a.vm.ping(a.site.host.ip, count=3, timeout=15), env.controller_log()
        assert a.site.host.ping(a.vm.ip, count=3, timeout=10), env.controller_log()
        assert tcp_transfer(a.vm, a.site.host, port=5001), "TCP VM -> remote host through the tunnel"
        assert tcp_transfer(a.site.host, a.vm, port=5002), "TCP remote host -> VM through the tunnel"
    # the remote host talks with the VM's fixed IP (never the SNAT address)
    assert inside.matching(f"{a.vm.ip} > {a.site.host.ip}: ICMP echo request"), inside.lines
    assert inside.matching(f"{a.vm.ip}.") and not inside.matching(a.gateway_ip), inside.lines
    # the external link: IKE / NAT-T between the gateways (and ARP), never a private address
    ip_lines = [ln for ln in wire.lines if " IPv4" in ln or "ethertype IPv4" in ln]
    assert ip_lines, wire.lines
    pair = {a.gateway_ip, a.site.gateway.ip}
    for ln in ip_lines:
        m = re.search(r"(\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): UDP", ln) or re.search(
            r"(\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): (NONESP-encap|UDP-encap|isakmp)", ln
        )
        assert (
            m is not None and {m.group(1), m.group(3)} == pair and {m.group(2), m.group(4)} <= {"500", "4500"}
        ), ln
    assert not [ln for ln in wire.lines if "10.1.0." in ln or "10.2.0." in ln], (
        "plaintext on the external link"
    )
    wait_for(lambda: conn_status(env, "a-conn")[0] == "ACTIVE", 10, "a-conn ACTIVE", env)


def test_wrong_psk_is_down_with_a_reason_and_carries_nothing(world: World) -> None:
    env, b = world.env, world.b
    wait_for(lambda: conn_status(env, "b-conn")[0] == "DOWN", 20, "b-conn DOWN", env)
    status, reason = conn_status(env, "b-conn")
    print(f"\nwrong PSK: {status} ({reason})")
    assert "AUTHENTICATION_FAILED" in reason or "MAC mismatched" in reason, reason
    assert not b.site.up()
    with capture("eth0", "icmp", namespace=b.site.host.namespace) as inside:
        assert not b.vm.ping(b.site.host.ip, count=1, timeout=3)
    assert not inside.lines, inside.lines


def test_two_tenants_with_the_same_cidrs_never_mix(world: World) -> None:
    """b's key fixed: both tunnels up; each VM (both 10.1.0.5) reaches its own site's host (both 10.2.0.10)
    only."""
    env, a, b = world.env, world.a, world.b
    store_write(env, vpn_records(b, b.site.gateway.ip))
    wait_for(lambda: a.site.up() and b.site.up(), 20, "both tunnels", env)
    for me, other in ((a, b), (b, a)):
        with (
            capture("eth0", "icmp", namespace=me.site.host.namespace) as mine,
            capture("eth0", "icmp", namespace=other.site.host.namespace) as theirs,
        ):
            assert me.vm.ping(me.site.host.ip, count=3, timeout=15), (me.name, env.controller_log())
        assert mine.matching("echo request"), mine.lines
        assert not theirs.lines, (me.name, theirs.lines)
    wait_for(lambda: conn_status(env, "b-conn") == ("ACTIVE", ""), 10, "b-conn ACTIVE", env)


def test_deleting_the_connection_cuts_the_tunnel_and_its_flows(world: World) -> None:
    env, a, b = world.env, world.a, world.b
    assert any("nw_dst=10.2.0.0/24" in f for f in env.ovs_flows("hv3"))
    store_write(env, [], delete=[("ipsec_site_connection", "a-conn")])
    wait_for(lambda: not a.site.up(), 15, "a's site without its CHILD_SA", env)
    with capture("eth0", "icmp", namespace=a.site.host.namespace) as inside:
        assert not a.vm.ping(a.site.host.ip, count=1, timeout=3)
    assert not inside.lines
    a_key = {f.split("metadata=")[1].split(",")[0] for f in env.ovs_flows("hv1") if "10.2.0.0/24" in f}
    assert len(a_key) == 1, a_key  # only b's router routes the peer CIDR now
    assert b.vm.ping(b.site.host.ip, count=2, timeout=10), "b's tunnel is untouched"


def test_gateway_failover_brings_the_tunnel_back(world: World) -> None:
    env, b = world.env, world.b
    assert b.vm.ping(b.site.host.ip, count=2, timeout=10)
    pinger = b.vm.popen(["ping", "-n", "-D", "-i", "0.1", "-W", "1", "-w", "20", b.site.host.ip])
    time.sleep(1.0)
    t0 = time.monotonic()
    env.chassis("hv1").kill_vswitchd()
    try:
        wait_for(lambda: any("nw_dst=10.2.0.0/24" in f and "output" in f for f in env.ovs_flows("hv2")), 20,
                 "b's VPN flows on hv2", env)  # fmt: skip
        wait_for(lambda: b.vm.ping(b.site.host.ip, count=1, timeout=1), 30, "the tunnel back", env)
        time.monotonic() - t0
        out, _ = pinger.communicate(timeout=40)
    finally:
        env.chassis("hv1").start_vswitchd()
    lost = outage(out)
    print(
        f"\nfailover: tunnel back {time.monotonic() - t0:.2f} s after hv1's vswitchd died; longest gap {lost:.2f} s"
    )
    assert lost < 25, out
