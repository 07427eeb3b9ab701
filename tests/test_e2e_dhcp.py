"""DHCPv4 end to end: a real Debian DHCP client (busybox udhcpc) in a VM namespace without an address gets
its port's address, gateway, host routes and MTU from the controller; a VM on a DHCP-disabled subnet, or
with a MAC that is not its port's, gets no answer; one VM flooding DHCP discovers is held to its meter's
rate while another VM still gets its lease."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp

from lab import VM
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab

RATE_PPS = 10  # --dhcp-rate-pps: the meter each port's DHCP requests pass
LEASE_S = 600

#: udhcpc's event script: applies what the server said (address, MTU, classless routes or router), and
#: keeps udhcpc's environment per event in $DHCP_OUT for the test
SCRIPT = r"""#!/bin/sh
env > "$DHCP_OUT.$1"
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  renew|bound)
    if [ "$1" = renew ] && ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
      exit 0  # the same lease again: nothing to change (and the neighbour cache stays)
    fi
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" broadcast "$broadcast" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    fi
    ;;
esac
exit 0
"""

#: sends one frame on eth0 as fast as it can for a few seconds; prints how many it sent
FLOOD = r"""
import socket, sys, time
frame = bytes.fromhex(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
n, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(100):
        try:
            s.send(frame)
            n += 1
        except OSError:  # the veth's queue is full: try again
            pass
print(n)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    assert shutil.which("busybox"), "busybox (Debian package busybox) is installed by scripts/setup.sh"
    with lab_env(
        tmp_path_factory.mktemp("e2e-dhcp"),
        provider=False,
        extra_args=["--dhcp-rate-pps", str(RATE_PPS), "--dhcp-lease-s", str(LEASE_S)],
    ) as e:
        yield e


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("udhcpc") / "udhcpc.sh"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return path


def subnet(env: Env, md, ident: str, cidr: str, **kw) -> pb.Network:  # type: ignore[no-untyped-def]
    net = env.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id=ident), metadata=md)
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr=cidr, **kw), subnet_id=ident + "-v4"),
        metadata=md,
    )
    return net


def bare_vm(env: Env, chassis: str, port: pb.Port) -> VM:
    """A VM for `port` whose eth0 has no address, no route, and MTU 1500 (the network's comes by DHCP)."""
    vm = env.plug(chassis, port)
    vm.exec("ip addr flush dev eth0")
    vm.exec("ip route flush dev eth0", check=False)
    vm.exec("ip link set eth0 mtu 1500")
    return vm


def udhcpc(vm: VM, script: Path, tries: int = 3) -> tuple[bool, dict[str, str], float]:
    """Run busybox udhcpc once in the VM: (got a lease, udhcpc's environment at 'bound', seconds)."""
    out = script.parent / f"{vm.name}.env"
    for old in script.parent.glob(f"{vm.name}.env.*"):
        old.unlink()
    t0 = time.monotonic()
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            vm.namespace,
            "env",
            f"DHCP_OUT={out}",
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            str(tries),
            "-T",
            "1",
            "-A",
            "1",
            "-s",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - t0
    bound = script.parent / f"{vm.name}.env.bound"
    if res.returncode != 0 or not bound.exists():
        return False, {}, took
    env = dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)
    return True, env, took


def test_udhcpc_gets_address_gateway_routes_and_mtu(env: Env, script: Path) -> None:
    md = env.md("dhcp")
    net = subnet(
        env,
        md,
        "dhcp-net",
        "10.70.0.0/24",
        dns_servers=["10.70.0.2", "9.9.9.9"],
        host_routes=[pb.HostRoute(destination="192.168.50.0/24", nexthop="10.70.0.254")],
    )
    assert net.mtu == 1450  # VXLAN on a 1500 underlay
    port = env.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="dhcp-vm1"), metadata=md
    )
    ip = port.fixed_ips[0].ip_address
    vm = bare_vm(env, "hv1", port)
    env.wait_realized()
    ok, lease, took = udhcpc(vm, script)
    assert ok, f"no lease after {took:.1f}s\n{env.controller_log()}"
    assert lease["ip"] == ip and lease["mask"] == "24" and lease["router"] == "10.70.0.1"
    assert lease["serverid"] == "10.70.0.1" and lease["lease"] == str(LEASE_S)
    assert lease["dns"].split() == ["10.70.0.2", "9.9.9.9"] and lease["mtu"] == "1450"
    assert lease["staticroutes"].split() == ["192.168.50.0/24", "10.70.0.254", "0.0.0.0/0", "10.70.0.1"]
    # and the VM is configured with it
    assert f"inet {ip}/24" in vm.exec("ip -4 addr show dev eth0").stdout
    assert "mtu 1450" in vm.exec("ip link show dev eth0").stdout
    routes = vm.exec("ip -4 route").stdout
    assert "default via 10.70.0.1 dev eth0" in routes, routes
    assert "192.168.50.0/24 via 10.70.0.254 dev eth0" in routes, routes
    # with its address it talks to another VM of the network, on the other chassis, configured the same way
    other = env.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="dhcp-vm2"), metadata=md
    )
    vm2 = bare_vm(env, "hv2", other)
    env.wait_realized()
    ok, lease2, _ = udhcpc(vm2, script)
    assert ok and lease2["ip"] == other.fixed_ips[0].ip_address
    assert vm.ping(lease2["ip"], count=2)


def test_no_answer_without_dhcp_or_for_a_foreign_mac(env: Env, script: Path) -> None:
    md = env.md("nodhcp")
    off = subnet(env, md, "nodhcp-net", "10.71.0.0/24", enable_dhcp=False)
    vm = bare_vm(
        env,
        "hv1",
        env.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=off.name), port_id="nodhcp-vm"), metadata=md
        ),
    )
    on = subnet(env, md, "spoof-net", "10.72.0.0/24")
    spoof = bare_vm(
        env,
        "hv1",
        env.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=on.name), port_id="spoof-vm"), metadata=md
        ),
    )
    spoof.exec("ip link set eth0 address 02:00:00:77:77:77")
    env.wait_realized()
    for who in (vm, spoof):
        ok, _, took = udhcpc(who, script, tries=2)
        assert not ok, f"{who.name} got a lease"
        assert took < 10
        assert "inet " not in who.exec("ip -4 addr show dev eth0").stdout


def meter_stats(env: Env, chassis: str, meter_id: int) -> tuple[int, int]:
    """(packets that entered the meter, packets its band dropped)."""
    out = env.chassis(chassis).ofctl("-O", "OpenFlow13", "meter-stats", "br-int", f"meter={meter_id}")
    entered = int(re.search(r"packet_in_count:(\d+)", out).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"0: packet_count:(\d+)", out).group(1))  # type: ignore[union-attr]
    return entered, dropped


def packet_ins(env: Env, chassis: str) -> float:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{env.controller.metrics_port}/metrics", timeout=10
    ).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("sdn_packet_ins_total{") and f'chassis="{chassis}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def discover(mac: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", mac, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src="0.0.0.0", dst="255.255.255.255", proto=17))
    pkt.add_protocol(udp.udp(src_port=68, dst_port=67))
    pkt.add_protocol(
        dhcp.dhcp(
            op=dhcp.DHCP_BOOT_REQUEST,
            chaddr=mac,
            xid=0x5EED,
            hlen=6,
            options=dhcp.options([dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([dhcp.DHCP_DISCOVER]))]),
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def test_a_flood_is_held_to_the_meter_and_others_still_get_leases(env: Env, script: Path) -> None:
    md = env.md("flood")
    net = subnet(env, md, "flood-net", "10.73.0.0/24")
    flooder = bare_vm(
        env,
        "hv1",
        env.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="flooder"), metadata=md
        ),
    )
    victim = bare_vm(
        env,
        "hv1",
        env.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="victim"), metadata=md
        ),
    )
    env.wait_realized()
    # the flooder's meter: named by its DHCP flow on the switch
    line = next(
        ln for ln in env.chassis("hv1").dump_flows() if f"dl_src={flooder.mac}" in ln and "meter:" in ln
    )
    meter_id = int(re.search(r"meter:(\d+)", line).group(1))  # type: ignore[union-attr]
    entered0, dropped0 = meter_stats(env, "hv1", meter_id)
    pins0 = packet_ins(env, "hv1")
    seconds = 4.0
    t0 = time.monotonic()
    flood = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            flooder.namespace,
            sys.executable,
            "-c",
            FLOOD,
            discover(flooder.mac).hex(),
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        ok, lease, took = udhcpc(victim, script)
        assert ok, f"the victim got no lease during the flood ({took:.1f}s)\n{env.controller_log()}"
        assert lease["ip"] and lease["serverid"] == "10.73.0.1"
    finally:
        sent = int(flood.communicate(timeout=30)[0].strip() or 0)
    elapsed = time.monotonic() - t0
    time.sleep(0.5)  # the last packet-ins reach the controller
    entered, dropped = meter_stats(env, "hv1", meter_id)
    entered, dropped = entered - entered0, dropped - dropped0
    passed = entered - dropped
    bound = RATE_PPS * (elapsed + 1) + RATE_PPS  # rate over the flood, plus one burst
    # the flood reached the meter (the switch itself drops part of it: a userspace datapath has its limits) ...
    assert entered > 20 * bound, f"the flood was too slow to mean anything: {entered} of {sent} frames"
    assert passed <= bound, f"{passed} packets passed the meter in {elapsed:.1f}s (rate {RATE_PPS}/s)"
    # ... and the controller saw no more than the meter let through (plus the victim's own requests)
    pins = packet_ins(env, "hv1") - pins0
    print(
        f"flood: {sent} frames sent in {elapsed:.1f}s, {entered} reached the meter, {passed} passed, "
        f"{pins:.0f} packet-ins"
    )
    assert pins <= bound + 10, f"{pins} packet-ins from hv1 during the flood"


def test_renewal_is_unicast_to_the_router_holding_the_gateway(env: Env, script: Path) -> None:
    """With a router on the subnet the server's MAC is the router interface's: a renewing client (unicast to
    the server identifier, ARP answered by the router's flows) is answered too."""
    md = env.md("renew")
    net = subnet(env, md, "renew-net", "10.74.0.0/24")
    router = env.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(display_name="renew-r"), router_id="renew-r"), metadata=md
    )
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=router.name, subnet="subnets/renew-net-v4"), metadata=md
    )
    gw_port = next(
        p
        for p in env.stub.ListPorts(pb.ListPortsRequest(), metadata=md).ports
        if p.device_owner == "network:router_interface" and p.network == net.name
    )
    vm = bare_vm(
        env,
        "hv1",
        env.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="renew-vm"), metadata=md
        ),
    )
    env.wait_realized()
    out = script.parent / f"{vm.name}.env"
    client = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            vm.namespace,
            "env",
            f"DHCP_OUT={out}",
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-t",
            "3",
            "-T",
            "1",
            "-s",
            str(script),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bound = Path(f"{out}.bound")
        deadline = time.monotonic() + 15
        while not bound.exists():
            assert time.monotonic() < deadline, f"no lease\n{env.controller_log()}"
            time.sleep(0.1)
        time.sleep(0.2)  # the script has applied the address
        lease = dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)
        assert lease["serverid"] == "10.74.0.1" and lease["router"] == "10.74.0.1"
        client.send_signal(10)  # SIGUSR1: renew now (a unicast REQUEST from the leased address)
        renewed = Path(f"{out}.renew")
        deadline = time.monotonic() + 10
        while not renewed.exists():
            assert time.monotonic() < deadline, f"no answer to the renewal\n{env.controller_log()}"
            time.sleep(0.1)
        # the VM resolved the server identifier to the router interface's MAC to renew
        assert gw_port.mac_address in vm.exec("ip neigh show 10.74.0.1").stdout
    finally:
        client.kill()
        client.wait(timeout=10)


def metric(env: Env, name: str, chassis: str) -> float:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{env.controller.metrics_port}/metrics", timeout=10
    ).read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith(name + "{") and f'chassis="{chassis}"' in line
    )


def test_a_controller_restart_re_adds_no_meter_and_still_answers(env: Env, script: Path) -> None:
    """Last in this module: it restarts the controller (kill -9) under the other tests' ports."""
    import grpc

    from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
    from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

    before = env.chassis("hv1").ofctl("-O", "OpenFlow13", "dump-meters", "br-int")
    assert before.count("meter=") >= 4  # the packet-in meter and the DHCP ports' meters
    env.controller.kill()
    env.controller.start()
    env.channel.close()
    env.channel = grpc.insecure_channel(env.controller.endpoint)
    env.stub = pb_grpc.TopologyServiceStub(env.channel)
    env.dp = dpb_grpc.DataplaneServiceStub(env.channel)
    deadline = time.monotonic() + 30
    while not all(s.connected and s.resyncs >= 1 for s in env.status().values()):
        assert time.monotonic() < deadline, env.controller_log()
        time.sleep(0.1)
    env.wait_realized()
    for ch in ("hv1", "hv2"):
        assert metric(env, "sdn_meter_mods_sent_total", ch) == 0, env.controller_log()
        assert metric(env, "sdn_flow_mods_sent_total", ch) == 0, env.controller_log()
    assert env.chassis("hv1").ofctl("-O", "OpenFlow13", "dump-meters", "br-int") == before
    vm = env.vms["dhcp-vm1"]
    vm.exec("ip addr flush dev eth0")
    ok, lease, _ = udhcpc(vm, script)
    assert ok and lease["serverid"] == "10.70.0.1", env.controller_log()
