"""Port security end to end: frames a VM forges (built with scapy, sent from inside the VM) never reach
another VM; the same frames with the VM's real addresses do, an allowed address pair works, and with
port_security_enabled=false the forged frames get through.

Every VM is a port of one tenant (its default security group lets members talk), and the forged frames
carry sources the groups would admit (the sender's own address, or another member's), so what stops them
is port security alone — the test with port security off shows they would otherwise arrive.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import netaddr
import pytest
from google.protobuf import field_mask_pb2
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_RA, ICMPv6NDOptDstLLAddr, ICMPv6NDOptPrefixInfo, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from apps import port_security
from lab import VM
from lab.traffic import Capture, capture
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env
from tests.test_flows_ovs import Switch

pytestmark = pytest.mark.lab

BCAST = "ff:ff:ff:ff:ff:ff"
FORGED_MAC = "02:de:ad:be:ef:01"
PAIR_IP = "10.61.0.200"
# sendp inside the VM's namespace: frames come in as hex, each sent three times
_SEND = """
import sys
from scapy.all import Ether, conf, sendp
conf.verb = 0
sendp([Ether(bytes.fromhex(h)) for h in sys.argv[2:]], iface=sys.argv[1], count=3, inter=0.02)
"""


@dataclass
class Lab:
    env: Env
    md: tuple[tuple[str, str], ...]
    net: pb.Network
    target: VM  # on hv2: the captures run here (its frames come through the tunnel)
    bystander: VM  # on hv1: the VM whose address is impersonated


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab_env(tmp_path_factory.mktemp("e2e-port-security"), provider=False) as env:
        md = env.md("ps")
        net = env.network(md, "ps-net", "10.61.0.0/24")
        target = env.plug("hv2", env.port(md, "ps-target", net, "10.61.0.10"))
        bystander = env.plug("hv1", env.port(md, "ps-bystander", net, "10.61.0.11"))
        yield Lab(env, md, net, target, bystander)


def vm(lab: Lab, ident: str, ip: str) -> tuple[VM, pb.Port]:
    """A VM on hv1 that can reach the target (a ping both ways: ARP and the tunnel are warm)."""
    port = lab.env.port(lab.md, ident, lab.net, ip)
    v = lab.env.plug("hv1", port)
    lab.env.wait_realized()
    assert v.ping(lab.target.ip, count=2) and lab.target.ping(v.ip, count=1)
    return v, port


def send(v: VM, *frames: Packet) -> None:
    v.exec([sys.executable, "-c", _SEND, "eth0", *(bytes(f).hex() for f in frames)], timeout=60)


def sent_and_seen(sender: VM, frames: list[Packet], *watchers: VM) -> list[Capture]:
    """Send `frames` from `sender` while tcpdump (UDP and ARP) runs on each watcher; their captures."""
    with ExitStack() as stack:
        caps = [stack.enter_context(capture("eth0", "udp or arp", namespace=w.namespace)) for w in watchers]
        send(sender, *frames)
        time.sleep(1.0)  # in flight through the tunnel
    return caps


def udp(v: VM, dst: VM, port: int, src_mac: str | None = None, src_ip: str | None = None) -> Packet:
    return (
        Ether(src=src_mac or v.mac, dst=dst.mac)
        / IP(src=src_ip or v.ip, dst=dst.ip)
        / UDP(sport=port, dport=port)
        / Raw(b"port-security")
    )


def garp(v: VM, claimed_ip: str, sha: str | None = None) -> Packet:
    """A gratuitous ARP reply, broadcast: "claimed_ip is at (sha or my MAC)"."""
    return Ether(src=v.mac, dst=BCAST) / ARP(
        op=2, hwsrc=sha or v.mac, psrc=claimed_ip, hwdst=BCAST, pdst=claimed_ip
    )


def update_port(lab: Lab, port: pb.Port, paths: list[str], **fields: object) -> None:
    lab.env.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, **fields), update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
        metadata=lab.md,
    )
    lab.env.wait_realized()


def test_forged_mac_ip_and_gratuitous_arp_are_dropped_the_real_ones_pass(lab: Lab) -> None:
    a, _ = vm(lab, "ps-a", "10.61.0.20")
    t, c = lab.target, lab.bystander
    frames = [
        udp(a, t, 40000),  # control: its real MAC and address
        garp(a, a.ip),  # control: its own gratuitous ARP
        udp(a, t, 40001, src_mac=FORGED_MAC),  # a MAC that is not its own
        udp(a, t, 40002, src_ip=c.ip),  # another member's address
        udp(a, t, 40003, src_mac=c.mac, src_ip=c.ip),  # another VM's MAC and address
        garp(a, c.ip),  # "the bystander's address is at my MAC"
        garp(a, t.ip),  # ... and the target's own
        garp(a, a.ip, sha=FORGED_MAC),  # its address, at a MAC that is not its own
    ]
    at_t, at_c = sent_and_seen(a, frames, t, c)
    assert at_t.matching(".40000 > "), f"the control frame must arrive: {at_t.lines}"
    assert at_t.matching(f"Reply {a.ip} is-at {a.mac}"), at_t.lines
    assert at_c.matching(f"Reply {a.ip} is-at {a.mac}"), at_c.lines  # broadcast on the same chassis too
    for cap in (at_t, at_c):
        leaked = [
            ln
            for ln in cap.lines
            if any(
                s in ln
                for s in (
                    ".40001 ",
                    ".40002 ",
                    ".40003 ",
                    FORGED_MAC,
                    f"Reply {c.ip} is-at",
                    f"Reply {t.ip} is-at",
                )
            )
        ]
        assert not leaked, f"forged frames arrived: {leaked}"
    # the bystander's and the target's neighbour entries still point at the right MACs
    assert a.ping(t.ip, count=1) and t.ping(c.ip, count=1)
    assert c.mac in t.exec(f"ip neigh show {c.ip}").stdout


def test_a_vm_cannot_answer_dhcp(lab: Lab) -> None:
    a, _ = vm(lab, "ps-d", "10.61.0.21")
    t = lab.target
    offer = BOOTP(
        op=2, yiaddr="10.61.0.99", siaddr=a.ip, chaddr=bytes.fromhex(t.mac.replace(":", ""))
    ) / DHCP(options=[("message-type", "offer"), ("server_id", a.ip), ("router", a.ip), "end"])
    frames = [
        Ether(src=a.mac, dst=t.mac) / IP(src=a.ip, dst=t.ip) / UDP(sport=1067, dport=68) / Raw(b"ctl"),
        Ether(src=a.mac, dst=t.mac) / IP(src=a.ip, dst=t.ip) / UDP(sport=67, dport=68) / offer,
        Ether(src=a.mac, dst=BCAST) / IP(src=a.ip, dst="255.255.255.255") / UDP(sport=67, dport=68) / offer,
    ]
    (at_t,) = sent_and_seen(a, frames, t)
    assert at_t.matching(f"{a.ip}.1067 > {t.ip}.68"), f"the control frame must arrive: {at_t.lines}"
    assert not at_t.matching(f"{a.ip}.67 > "), f"a DHCP offer from a VM arrived: {at_t.lines}"


def link_local(v: VM) -> str:
    return str(netaddr.EUI(v.mac).ipv6_link_local())


def advert(v: VM, target: str) -> Packet:
    """An unsolicited neighbour advertisement to all nodes: "target is at my MAC"."""
    return (
        Ether(src=v.mac, dst="33:33:00:00:00:01")
        / IPv6(src=link_local(v), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=target, R=0, S=0, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=v.mac)
    )


def test_ipv6_only_own_neighbour_advertisements_and_no_router_advertisements(lab: Lab) -> None:
    a, _ = vm(lab, "ps-6", "10.61.0.24")
    t, c = lab.target, lab.bystander
    ra = (
        Ether(src=a.mac, dst="33:33:00:00:00:01")
        / IPv6(src=link_local(a), dst="ff02::1", hlim=255)
        / ICMPv6ND_RA()
        / ICMPv6NDOptPrefixInfo(prefix="2001:db8:66::", prefixlen=64)
    )
    frames = [
        advert(a, link_local(a)),  # control: its own address
        advert(a, link_local(t)),
        advert(a, link_local(c)),
        advert(a, "2001:db8::10"),
        ra,
    ]
    with capture("eth0", "icmp6", namespace=t.namespace) as at_t:
        send(a, *frames)
        time.sleep(1.0)
    assert at_t.matching(f"tgt is {link_local(a)}"), f"the control advertisement must arrive: {at_t.lines}"
    leaked = [
        ln
        for ln in at_t.lines
        if "router advertisement" in ln
        or any(f"tgt is {x}" in ln for x in (link_local(t), link_local(c), "2001:db8::10"))
    ]
    assert not leaked, f"forged advertisements arrived: {leaked}"
    assert "2001:db8:66:" not in t.exec("ip -6 addr show dev eth0").stdout, "no address from a VM's prefix"


def test_an_allowed_address_pair_passes(lab: Lab) -> None:
    p, port = vm(lab, "ps-p", "10.61.0.22")
    t = lab.target
    p.exec(f"ip addr add {PAIR_IP}/32 dev eth0")  # the VM takes a second address (a VIP, say)
    # without the pair the VM cannot use it: its ARP replies and echo replies from it are dropped
    t.exec("ip neigh flush all")
    assert not t.ping(PAIR_IP, count=1, timeout=3), "an address that is not the port's must not work"
    update_port(
        lab, port, ["allowed_address_pairs"], allowed_address_pairs=[pb.AddressPair(ip_address=PAIR_IP)]
    )
    t.exec("ip neigh flush all")
    assert t.ping(PAIR_IP, count=2, timeout=10), "the allowed pair's address must work"
    assert p.mac in t.exec(f"ip neigh show {PAIR_IP}").stdout
    # and a frame sent from it with scapy arrives too (source = the pair's address, the port's MAC)
    (at_t,) = sent_and_seen(p, [udp(p, t, 40020, src_ip=PAIR_IP)], t)
    assert at_t.matching(f"{PAIR_IP}.40020 > {t.ip}.40020"), at_t.lines
    # taking the pair away takes the address away again
    update_port(lab, port, ["allowed_address_pairs"], allowed_address_pairs=[])
    t.exec("ip neigh flush all")
    assert not t.ping(PAIR_IP, count=1, timeout=3)


def test_port_security_disabled_lets_forged_frames_through(lab: Lab) -> None:
    x, port = vm(lab, "ps-x", "10.61.0.23")
    t, c = lab.target, lab.bystander
    forged = [udp(x, t, 40010, src_mac=FORGED_MAC, src_ip=c.ip), udp(x, t, 40011, src_ip=c.ip), garp(x, c.ip)]
    (before,) = sent_and_seen(x, forged, t)
    assert not [ln for ln in before.lines if ".40010 " in ln or ".40011 " in ln or f"Reply {c.ip}" in ln], (
        before.lines
    )
    # security groups need port security: both go (Neutron's rule)
    update_port(
        lab,
        port,
        ["port_security_enabled", "security_groups"],
        port_security_enabled=False,
        security_groups=[],
    )
    (after,) = sent_and_seen(x, forged, t)
    assert after.matching(f"{FORGED_MAC} > {t.mac}"), after.lines
    assert after.matching(f"{c.ip}.40010 > {t.ip}.40010") and after.matching(
        f"{c.ip}.40011 > {t.ip}.40011"
    ), after.lines
    assert after.matching(f"Reply {c.ip} is-at {x.mac}"), after.lines


def test_every_port_security_flow_shape_installs_in_ovs(tmp_path: Path) -> None:
    """Own and pair MACs, IPv4 and IPv6 addresses and CIDRs (masked nw_src, arp_spa, ipv6_src, nd_target):
    one bundle into a real ovs-vswitchd, no error, and the dump decodes back to the same flows."""
    flows = list(
        port_security._flows(
            "ps-shapes",
            7,
            "fa:16:3e:00:00:01",
            (("v4", "10.0.0.5"), ("v6", "2001:db8::5")),
            (
                ("10.0.1.0/24", "fa:16:3e:00:00:01"),
                ("10.0.0.100", "02:00:00:00:00:aa"),
                ("2001:db8:1::/64", "02:00:00:00:00:aa"),
                ("0.0.0.0/0", "02:00:00:00:00:bb"),
            ),
        )
    )
    sw = Switch(tmp_path)
    try:
        assert sw.install(flows) == []
        got, _ = sw.dump()
        assert set(got) == set(flows)
    finally:
        sw.close()
