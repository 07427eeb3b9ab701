"""IPv6 address configuration end to end, one lab (two chassis): router advertisements from the controller
(asked for with rdisc6 from Debian's ndisc6, which sends a router solicitation and prints the answer) give a
VM with accept_ra its SLAAC address, which is the address the API says its port has, and it pings a VM on
the other chassis with it; DHCPv6 stateful and stateless answered to a real client (dhclient -6 from
Debian's isc-dhcp-client, with a script of ours that only adds the address: it never touches the host's
/etc/resolv.conf); a router solicitation reaches no other VM; a router advertisement a VM forges reaches
no other VM and configures nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import VM
from lab.traffic import capture
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env
from topology import ipv6

pytestmark = pytest.mark.lab

LEASE_S = 600

#: dhclient's script (dhclient gives it an environment of its own: OUT is written in): records the
#: environment per reason, adds the address it was given (nothing else)
SCRIPT = r"""#!/bin/sh
env > "OUT.$reason"
case "$reason" in
  BOUND6|REBOOT6|RENEW6|REBIND6)
    [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface"
    ;;
esac
exit 0
"""

#: sends the frames (hex) given on the command line out eth0
_SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for h in sys.argv[1:]:
    for _ in range(3):
        s.send(bytes.fromhex(h))
"""


@dataclass
class V6:
    env: Env
    md: tuple[tuple[str, str], ...]
    tmp: Path


def _network(env: Env, md, ident: str, n: int, mode: str, dns: tuple[str, ...] = ()) -> pb.Network:  # type: ignore[no-untyped-def]
    """A dual-stack network (10.8n.0.0/24, and 2001:db8:8n::/64 in `mode`) with a router holding the v6
    gateway."""
    net = env.network(md, ident, f"10.8{n}.0.0/24")
    v6cidr = f"2001:db8:8{n}::/64"
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(
                network=net.name,
                cidr=v6cidr,
                ipv6_ra_mode=mode,
                ipv6_address_mode=mode,
                dns_servers=list(dns),
            ),
            subnet_id=ident + "-v6",
        ),
        metadata=md,
    )
    router = env.stub.CreateRouter(
        pb.CreateRouterRequest(router=pb.Router(), router_id=ident + "-r"), metadata=md
    )
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=router.name, subnet=f"subnets/{ident}-v6"), metadata=md
    )
    return net


@pytest.fixture(scope="module")
def v6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V6]:
    for tool in ("dhclient", "rdisc6"):
        assert shutil.which(tool), f"{tool} (isc-dhcp-client, ndisc6) is installed by scripts/setup.sh"
    tmp = tmp_path_factory.mktemp("e2e-v6")
    with lab_env(tmp / "lab", provider=False, extra_args=["--dhcp-lease-s", str(LEASE_S)]) as env:
        yield V6(env, env.md("v6"), tmp)


def address_of(port: pb.Port, prefix: str) -> str:
    return next(f.ip_address for f in port.fixed_ips if f.ip_address.startswith(prefix))


def vm_up(v6: V6, chassis: str, port: pb.Port) -> VM:
    """A VM with its port's IPv4 address only (IPv6: what it learns), accepting router advertisements."""
    vm = v6.env.plug(chassis, port)
    vm.exec("sysctl -qw net.ipv6.conf.eth0.accept_ra=2 net.ipv6.conf.eth0.autoconf=1")
    vm.exec("ip -6 addr flush dev eth0 scope global")
    return vm


def wait_address(vm: VM, address: str, timeout: float = 15.0) -> bool:
    """The address is on eth0 and done with duplicate address detection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = vm.exec("ip -6 addr show dev eth0").stdout
        line = next((ln for ln in out.splitlines() if f"inet6 {address}/" in ln), "")
        if line and "tentative" not in line:
            return True
        time.sleep(0.2)
    return False


def wait_link_local(vm: VM) -> None:
    assert wait_address(vm, ipv6.link_local(vm.mac)), vm.exec("ip -6 addr").stdout


def rdisc6(vm: VM) -> str:
    """Solicit once (retrying: the link-local address may still be tentative); rdisc6's report."""
    res = vm.exec("rdisc6 -r 3 -w 1500 eth0", check=False, timeout=30)
    return res.stdout


def dhclient(v6: V6, vm: VM, stateless: bool = False) -> dict[str, str]:
    """dhclient -6 once in the VM: the script's environment of the answer (empty: none)."""
    out = v6.tmp / f"{vm.name}.env"
    script = v6.tmp / f"{vm.name}.sh"
    script.write_text(SCRIPT.replace("OUT", str(out)))
    script.chmod(0o755)
    cmd = [
        "ip", "netns", "exec", vm.namespace,
        "dhclient", "-6", "-1", "-v", "-sf", str(script),
        "-lf", str(v6.tmp / f"{vm.name}.leases"), "-pf", str(v6.tmp / f"{vm.name}.pid"),
        *(["-S"] if stateless else []), "eth0",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    subprocess.run(["pkill", "-F", str(v6.tmp / f"{vm.name}.pid")], check=False, capture_output=True)
    for reason in ("BOUND6", "REBOOT6", "INFORM6", "RENEW6"):  # (an Info-Request answer: RENEW6)
        got = Path(f"{out}.{reason}")
        if got.exists():
            return dict(ln.split("=", 1) for ln in got.read_text().splitlines() if "=" in ln)
    raise AssertionError(
        f"dhclient -6 got nothing: {sorted(p.name for p in v6.tmp.iterdir())} {res.stdout}\n{res.stderr}\n{v6.env.controller_log()[-3000:]}"
    )


def test_slaac_address_from_the_controllers_advertisement_is_the_ports_and_pings_across_chassis(
    v6: V6,
) -> None:
    env, md = v6.env, v6.md
    net = _network(env, md, "slaac", 0, "slaac")
    a_port, b_port = (
        env.stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name), port_id=i), metadata=md)
        for i in ("slaac-a", "slaac-b")
    )
    a_addr, b_addr = address_of(a_port, "2001:db8:80:"), address_of(b_port, "2001:db8:80:")
    assert a_addr == ipv6.eui64_address("2001:db8:80::/64", a_port.mac_address)  # a port of each family
    a, b = vm_up(v6, "hv1", a_port), vm_up(v6, "hv2", b_port)
    env.wait_realized()
    router_mac = next(
        p.mac_address
        for p in env.stub.ListPorts(pb.ListPortsRequest(network=net.name), metadata=md).ports
        if p.device_owner == "network:router_interface"
    )
    for vm in (a, b):
        wait_link_local(vm)
    report = rdisc6(a)
    assert "Prefix                   : 2001:db8:80::/64" in report, report + env.controller_log()[-4000:]
    assert "Autonomous address conf.:          Yes" in report, report
    assert "Stateful address conf.    :           No" in report, report
    assert "MTU                      :         1450 bytes" in report, report
    assert f"from {ipv6.link_local(router_mac)}" in report, report
    assert router_mac.lower() in report.lower(), report  # the source link-layer address
    rdisc6(b)
    assert wait_address(a, a_addr), a.exec("ip -6 addr").stdout
    assert wait_address(b, b_addr), b.exec("ip -6 addr").stdout
    assert a.ping(b_addr, count=2, timeout=10), "ping6 across chassis with the SLAAC addresses"
    assert b.ping(a_addr, count=1, timeout=10)


def test_router_solicitations_and_forged_advertisements_reach_no_other_vm(v6: V6) -> None:
    env, md = v6.env, v6.md
    net = env.stub.GetNetwork(pb.GetNetworkRequest(name="networks/slaac"), metadata=md)
    c_port = env.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="slaac-c"), metadata=md
    )
    c = env.plug("hv1", c_port)  # not soliciting: the advertisement sent when its port turns ACTIVE
    env.wait_realized()
    assert wait_address(c, address_of(c_port, "2001:db8:80:")), c.exec("ip -6 addr").stdout
    a = env.vms["slaac-a"]
    from os_ken.lib.packet import ethernet, icmpv6, packet
    from os_ken.lib.packet import ipv6 as ipv6_pkt

    rogue = packet.Packet()
    rogue.add_protocol(ethernet.ethernet("33:33:00:00:00:01", a.mac, 0x86DD))
    rogue.add_protocol(ipv6_pkt.ipv6(src=ipv6.link_local(a.mac), dst="ff02::1", nxt=58, hop_limit=255))
    rogue.add_protocol(
        icmpv6.icmpv6(
            type_=icmpv6.ND_ROUTER_ADVERT,
            data=icmpv6.nd_router_advert(
                ch_l=64,
                rou_l=1800,
                options=[
                    icmpv6.nd_option_pi(
                        length=4, pl=64, res1=6, val_l=3600, pre_l=3600, prefix="2001:db8:bad::"
                    )
                ],
            ),
        )
    )
    rogue.serialize()
    with capture("eth0", "icmp6 or icmp", namespace=c.namespace) as at_c:
        report = rdisc6(a)  # a solicitation, answered by the controller
        a.exec([sys.executable, "-c", _SEND, bytes(rogue.data).hex()])
        assert a.ping(c.ip, count=1, timeout=10)  # control: the capture sees what does reach c
        time.sleep(0.5)
    assert "2001:db8:80::/64" in report, report
    # (c's own solicitations, and those of the br-int end of its veth, are no business of the pipeline's)
    from_a = [ln for ln in at_c.lines if f" {a.mac} > " in ln]
    assert any("ICMP echo request" in ln for ln in from_a), at_c.lines
    leaked = [ln for ln in from_a if "router solicitation" in ln or "router advertisement" in ln]
    assert not leaked, f"reached another VM: {leaked}"
    assert "2001:db8:bad:" not in c.exec("ip -6 addr show dev eth0").stdout, (
        "no address from a VM's advertisement"
    )


def test_dhcpv6_stateful_gives_the_ports_address_and_dns(v6: V6) -> None:
    env, md = v6.env, v6.md
    net = _network(env, md, "dhst", 1, "dhcpv6-stateful", dns=("2001:db8:81::53",))
    port = env.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="dhst-a"), metadata=md
    )
    address = address_of(port, "2001:db8:81:")
    vm = vm_up(v6, "hv2", port)
    env.wait_realized()
    wait_link_local(vm)
    report = rdisc6(vm)
    assert "Stateful address conf.    :          Yes" in report, report
    assert "Autonomous address conf.:           No" in report, report
    lease = dhclient(v6, vm)
    assert lease["new_ip6_address"] == address, lease
    assert lease.get("new_dhcp6_name_servers", "").split() == ["2001:db8:81::53"], lease
    assert wait_address(vm, address)


def test_dhcpv6_stateless_gives_options_and_slaac_the_address(v6: V6) -> None:
    env, md = v6.env, v6.md
    net = _network(env, md, "dhsl", 2, "dhcpv6-stateless", dns=("2001:db8:82::53",))
    port = env.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="dhsl-a"), metadata=md
    )
    address = address_of(port, "2001:db8:82:")
    assert address == ipv6.eui64_address("2001:db8:82::/64", port.mac_address)
    vm = vm_up(v6, "hv1", port)
    env.wait_realized()
    wait_link_local(vm)
    report = rdisc6(vm)
    assert "Stateful other conf.      :          Yes" in report, report
    assert "Autonomous address conf.:          Yes" in report, report
    assert wait_address(vm, address)
    info = dhclient(v6, vm, stateless=True)
    assert info.get("new_dhcp6_name_servers", "").split() == ["2001:db8:82::53"], info
    assert "new_ip6_address" not in info or not info["new_ip6_address"]


def test_slaac_addresses_and_the_advertised_default_route_carry_ping6_across_the_router(v6: V6) -> None:
    """Routing and address configuration together: two SLAAC networks on one router, VMs on two chassis
    learn their addresses and their default route (the router's link-local address, which neighbour
    discovery answers in flows) from the advertisements alone, and ping6 each other across the router."""
    env, md = v6.env, v6.md
    far = env.network(md, "slaac-far", "10.89.0.0/24")
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(
            subnet=pb.Subnet(
                network=far.name, cidr="2001:db8:89::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac"
            ),
            subnet_id="slaac-far-v6",
        ),
        metadata=md,
    )
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name="routers/slaac-r", subnet="subnets/slaac-far-v6"), metadata=md
    )
    d_port = env.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network=far.name), port_id="slaac-d"), metadata=md
    )
    d = vm_up(v6, "hv2", d_port)
    env.wait_realized()
    wait_link_local(d)
    rdisc6(d)
    d_addr = address_of(d_port, "2001:db8:89:")
    assert wait_address(d, d_addr), d.exec("ip -6 addr").stdout
    a = env.vms["slaac-a"]
    a_addr = next(
        f.ip_address
        for f in env.stub.GetPort(pb.GetPortRequest(name="ports/slaac-a"), metadata=md).fixed_ips
        if f.ip_address.startswith("2001:db8:80:")
    )
    for vm in (a, d):  # the default route came from the advertisement: via the router's link-local address
        route = vm.exec("ip -6 route show default").stdout
        assert "via fe80::" in route and "proto ra" in route, route
    assert a.ping(d_addr, count=2, timeout=10), "ping6 across the router with SLAAC addresses and RA routes"
    assert d.ping(a_addr, count=1, timeout=10)
