"""The first connection from an external host to a floating IP, while the gateway chassis does not know the
host's MAC yet: the reply that makes the controller probe for it is lost, the connection must not be.

Each test uses a new external host (a new address on the external network), so the gateway chassis has never
resolved it: its first reply goes to the controller (arp_resolve misses) before snat sees it, and conntrack
keeps the connection's DNAT entry new (unanswered) until a reply passes."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab import VM
from lab.hosts import ExternalHost
from lab.traffic import capture
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import PHYSNET, Env, lab_env

pytestmark = pytest.mark.lab

EXT_PREFIX = "172.25.4"


@dataclass
class World:
    env: Env
    vms: dict[str, VM]  # vm1 on hv1 (the gateway chassis), vm2 on hv2 (its replies are redirected to hv1)
    fips: dict[str, str]  # VM name -> its floating IP


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with lab_env(tmp_path_factory.mktemp("e2e-first"), extra_args=["--gateway-chassis", "hv1"]) as env:
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
        md = env.md("first")
        net = env.network(md, "first-a", "10.140.0.0/24")
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(
                router=pb.Router(
                    display_name="first-r", external_gateway=pb.ExternalGateway(network=ext.name)
                ),
                router_id="first-r",
            ),
            metadata=md,
        )
        env.stub.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name=r.name, subnet="subnets/first-a-v4"), metadata=md
        )
        env.allow_ingress(md)  # the external hosts are no members of the VMs' default security group
        vms, fips = {}, {}
        for name, chassis in (("vm1", "hv1"), ("vm2", "hv2")):
            port = env.port(md, f"first-{name}", net)
            vms[name] = env.plug(chassis, port)
            fips[name] = env.stub.CreateFloatingIp(
                pb.CreateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(floating_network="networks/public", port=port.name),
                    floating_ip_id=f"first-f-{name}",
                ),
                metadata=md,
            ).floating_ip_address
        env.wait_realized()
        yield World(env, vms, fips)


def _new_host(w: World, index: int) -> ExternalHost:
    """An external host the gateway chassis has never resolved."""
    return w.env.lab.add_external_host(PHYSNET, f"first-x{index}", f"{EXT_PREFIX}.{index}/24")


@pytest.mark.parametrize(("target", "index"), [("vm1", 101), ("vm2", 102)])
def test_one_ping_process_to_a_floating_ip_gets_its_answers(world: World, target: str, index: int) -> None:
    """One ping process (one ICMP id: one conntrack connection) from a host the gateway chassis does not know:
    the first reply may be lost (the controller probes for the host meanwhile), the later ones must arrive."""
    w = world
    host, vm, fip = _new_host(w, index), w.vms[target], w.fips[target]
    with capture("eth0", "icmp", namespace=host.namespace) as outside:
        out = host.exec(
            ["ping", "-n", "-q", "-c", "10", "-i", "0.2", "-W", "2", fip], check=False, timeout=30
        ).stdout
    m = re.search(r"(\d+) received", out)
    received = int(m.group(1)) if m else 0
    assert received >= 9, (
        f"{out}\n{w.env.chassis('hv1').appctl('dpctl/dump-conntrack')}\n{w.env.controller_log()}"
    )
    replies = outside.matching("echo reply")
    assert replies and all(f"{fip} > {host.ip}" in ln for ln in replies), outside.lines
    assert not outside.matching(vm.ip), "the fixed IP leaked onto the external network"


_SERVER = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
srv.settimeout(float(sys.argv[2]))
print("ready", flush=True)
c, _ = srv.accept()
c.settimeout(float(sys.argv[2]))
c.sendall(c.recv(64).upper())
c.close()
"""

_SYN_RETRY = r"""
import sys, time
from scapy.all import IP, TCP, AsyncSniffer, conf, send
conf.verb = 0
fip, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sniffer = AsyncSniffer(iface="eth0", filter=f"tcp and src host {fip} and src port {port}")
sniffer.start()
time.sleep(0.5)
syn = IP(dst=fip) / TCP(sport=sport, dport=port, flags="S", seq=1000)
send(syn)  # its SYN-ACK is lost: the gateway chassis does not know us yet
time.sleep(0.3)
send(syn)  # the retry: the same ports, the same conntrack connection
time.sleep(2.0)
sniffer.stop()
print(sum(1 for p in sniffer.results if TCP in p and p[TCP].flags == "SA"))
"""


@pytest.mark.parametrize(("target", "index"), [("vm1", 103), ("vm2", 104)])
def test_a_tcp_client_retrying_its_syn_gets_an_answer_from_a_floating_ip(
    world: World, target: str, index: int
) -> None:
    """The first SYN's SYN-ACK is lost while the gateway chassis resolves the client; the client's SYN sent
    again on the same ports must reach the server, whose SYN-ACK then comes back. The server does not
    retransmit its SYN-ACK on its own (tcp_synack_retries=0): that retransmission, a reply, would pass once
    the client is resolved and establish the connection whatever became of the retried SYN."""
    w = world
    host, vm, fip = _new_host(w, index), w.vms[target], w.fips[target]
    port, sport = 5201, 40000 + index
    default = vm.exec(["sysctl", "-n", "net.ipv4.tcp_synack_retries"]).stdout.strip()
    vm.exec(["sysctl", "-qw", "net.ipv4.tcp_synack_retries=0"])
    srv = vm.popen([sys.executable, "-c", _SERVER, str(port), "10"])
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        with capture("eth0", "tcp", namespace=vm.namespace) as at_vm:
            res = host.exec([sys.executable, "-c", _SYN_RETRY, fip, str(port), str(sport)], timeout=30)
    finally:
        vm.exec(["sysctl", "-qw", f"net.ipv4.tcp_synack_retries={default}"])
        srv.kill()
        srv.communicate()
    syns = [ln for ln in at_vm.lines if "Flags [S]" in ln]
    assert len(syns) == 2 and all(f"{host.ip}.{sport} > {vm.ip}.{port}" in ln for ln in syns), at_vm.lines
    assert int(res.stdout.strip()) >= 1, f"no SYN-ACK came back\n{at_vm.lines}"


_UDP_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(0.3)
got = 0
for i in range(int(sys.argv[4])):
    s.sendto(b"ping %d" % i, (sys.argv[1], int(sys.argv[2])))
    try:
        got += s.recv(64) == b"PING %d" % i
    except socket.timeout:
        pass
print(got)
"""

_UDP_SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.5)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(64)
    except socket.timeout:
        continue
    s.sendto(data.upper(), peer)
"""


@pytest.mark.parametrize(("target", "index"), [("vm1", 105), ("vm2", 106)])
def test_a_udp_client_on_one_port_gets_answers_from_a_floating_ip(
    world: World, target: str, index: int
) -> None:
    """UDP from one source port (one conntrack connection, new until answered, like a ping's)."""
    w = world
    host, vm, fip = _new_host(w, index), w.vms[target], w.fips[target]
    srv = vm.popen([sys.executable, "-c", _UDP_SERVER, "5301", "15"])
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        res = host.exec(
            [sys.executable, "-c", _UDP_CLIENT, fip, "5301", str(41000 + index), "10"], timeout=20
        )
    finally:
        srv.kill()
        srv.communicate()
    assert int(res.stdout.strip()) >= 9, (
        f"{res.stdout}\n{w.env.chassis('hv1').appctl('dpctl/dump-conntrack')}"
    )
