"""VPNaaS end to end: IPsec site-to-site tunnels from tenants' routers to remote sites, with real packets.

One lab: hv1 and hv2 are gateway chassis (in that order) with the provider bridge; the VMs live on hv3, so
their traffic to a remote site is redirected to the gateway chassis, where the router's VPN namespace (charon
with userspace ESP, started by the controller) encrypts it. Each remote site is a namespace on the external
network running its own charon (the test's peer, configured over VICI) with a private host behind it.
Tenants a and b use the same private CIDRs (10.1.0.0/24 here, 10.2.0.0/24 at their sites).
"""

from __future__ import annotations

import itertools
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from google.protobuf import field_mask_pb2

from lab.traffic import capture, tcp_transfer
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env
from tests.e2e_vpn import (
    PSK,
    Tenant,
    conn_status,
    create_vpn,
    make_tenant,
    public_network,
    vpn_hosts,
    vpn_stub,
)

pytestmark = pytest.mark.lab

EXT_CIDR = "172.27.4.0/24"
FAILOVER_S = 2.0


@dataclass
class World:
    env: Env
    a: Tenant
    b: Tenant


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
    tmp = tmp_path_factory.mktemp("e2e-vpn")
    hosts, cleanup = vpn_hosts(tmp / "data")
    try:
        with lab_env(tmp, chassis=3, extra_args=args, lab_args=hosts) as env:
            public_network(env, EXT_CIDR)
            a = make_tenant(env, "a", "172.27.4.50")
            b = make_tenant(env, "b", "172.27.4.60")
            env.wait_realized()
            yield World(env, a, b)
    finally:
        cleanup()  # the controller is killed, not stopped: its VPN namespaces stay behind


def peer_routes(env: Env, chassis: str) -> set[str]:
    """The metadata (router keys) of the flows routing the remote CIDR on a chassis."""
    return {
        f.split("metadata=")[1].split(",")[0]
        for f in env.ovs_flows(chassis)
        if "nw_dst=10.2.0.0/24" in f and "metadata=" in f
    }


def vpn_entry(env: Env, t: Tenant) -> list[str]:
    """hv1's flows delivering IKE / NAT-T to a tenant's VPN namespace."""
    return [f for f in env.ovs_flows("hv1") if f"nw_dst={t.gateway_ip}" in f and "tp_dst=4500" in f]


def test_tunnel_carries_traffic_both_ways(world: World) -> None:
    """Both tenants' VPNs at once (b's with a wrong pre-shared key): a's tunnel carries ping and TCP both ways,
    its site sees the VM's fixed IP, and the external link carries only IKE / ESP-in-UDP between the two
    gateways."""
    env, a, b = world.env, world.a, world.b
    create_vpn(env, a)
    took = wait_for(a.site.up, 20, "tenant a's CHILD_SA at its site", env)
    print(f"\ntunnel up {took:.2f} s after CreateIpsecSiteConnection returned")
    create_vpn(env, b, psk="not-" + PSK)
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
    vpn_stub(env).UpdateIpsecSiteConnection(
        pb.UpdateIpsecSiteConnectionRequest(
            ipsec_site_connection=pb.IpsecSiteConnection(name="ipsecSiteConnections/b-conn", psk=PSK),
            update_mask=field_mask_pb2.FieldMask(paths=["psk"]),
        ),
        metadata=b.md,
    )
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
    before = {ch: peer_routes(env, ch) for ch in ("hv1", "hv3")}
    assert len(before["hv3"]) == 2 and before["hv1"] == before["hv3"], before  # a's and b's routers
    assert vpn_entry(env, a) and vpn_entry(env, b)
    vpn_stub(env).DeleteIpsecSiteConnection(
        pb.DeleteIpsecSiteConnectionRequest(name="ipsecSiteConnections/a-conn"), metadata=a.md
    )
    env.wait_realized()
    wait_for(lambda: not a.site.up(), 15, "a's site without its CHILD_SA", env)
    with capture("eth0", "icmp", namespace=a.site.host.namespace) as inside:
        assert not a.vm.ping(a.site.host.ip, count=1, timeout=3)
    assert not inside.lines
    # a's routes of the peer CIDR and its namespace's entry are gone, on the gateway chassis and elsewhere
    after = {ch: peer_routes(env, ch) for ch in ("hv1", "hv3")}
    assert len(after["hv3"]) == 1 and after["hv1"] == after["hv3"] and after["hv3"] < before["hv3"], after
    assert not vpn_entry(env, a) and vpn_entry(env, b)
    assert b.vm.ping(b.site.host.ip, count=2, timeout=10), "b's tunnel is untouched"


def test_a_controller_killed_and_restarted_keeps_the_tunnel(world: World) -> None:
    """kill -9 of the controller under a 20/s ping through b's tunnel: the restarted controller adopts the VPN
    namespace and its charon (the same SA at the site), the ping loses nothing noticeable."""
    env, b = world.env, world.b
    assert b.vm.ping(b.site.host.ip, count=2, timeout=10)
    before = {c["spi-in"] for c in b.site.child_sas() if c.get("state") == "INSTALLED"}
    pinger = b.vm.popen(["ping", "-n", "-D", "-i", "0.05", "-W", "1", "-w", "60", b.site.host.ip])
    try:
        time.sleep(1.0)
        env.restart_controller()
        wait_for(
            lambda: conn_status(env, "b-conn") == ("ACTIVE", ""), 15, "b-conn ACTIVE after the restart", env
        )
        time.sleep(2.0)  # the restarted controller's VPN rounds have run
    finally:
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
    lost = outage(out)
    after = {c["spi-in"] for c in b.site.child_sas() if c.get("state") == "INSTALLED"}
    print(f"\ncontroller kill -9 and restart: longest gap between echo replies {lost:.2f} s")
    assert before and after == before, (before, after)
    assert lost < 1.0, out
    assert "adopted" in env.controller.log.read_text(), "the restarted controller adopted the namespace"


def test_gateway_failover_brings_the_tunnel_back(world: World) -> None:
    env, b = world.env, world.b
    assert b.vm.ping(b.site.host.ip, count=2, timeout=10)
    pinger = b.vm.popen(["ping", "-n", "-D", "-i", "0.1", "-W", "1", "-w", "60", b.site.host.ip])
    time.sleep(1.0)
    t0 = time.monotonic()
    env.chassis("hv1").kill_vswitchd()
    try:
        moved = wait_for(lambda: any("nw_dst=10.2.0.0/24" in f and "output" in f for f in env.ovs_flows("hv2")),
                         30, "b's VPN flows on hv2", env)  # fmt: skip
        wait_for(lambda: b.vm.ping(b.site.host.ip, count=1, timeout=1), 30, "the tunnel back", env)
        back = time.monotonic() - t0
        time.sleep(1.0)
    finally:
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
        env.chassis("hv1").start_vswitchd()
    lost = outage(out)
    print(
        f"\nfailover: b's VPN flows on hv2 {moved:.2f} s and the tunnel back {back:.2f} s after hv1's vswitchd "
        f"died; longest gap between echo replies {lost:.2f} s"
    )
    print(
        "\n".join(ln for ln in env.controller_log().splitlines() if "vpn" in ln.lower() or "failover" in ln)
    )
    assert lost < FAILOVER_S + 15, out
    assert b.site.up()
