"""The DHCP responder, pure: requests built with os-ken, answered against a model, every option checked."""

from __future__ import annotations

from typing import Any

import pytest
from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp

from apps.view import View
from controller.dataplane import PacketIn
from controller.services.dhcp import (
    DHCP_INFORM,
    DHCP_NAK,
    DHCP_RELEASE,
    SERVER_ID_NO_GATEWAY,
    SERVER_MAC,
    Responder,
    classless_routes,
)
from tests.test_apps_l2 import World
from topology import ops
from topology.records import Network, Subnet

DISCOVER, REQUEST = dhcp.DHCP_DISCOVER, dhcp.DHCP_REQUEST
OFFER, ACK = dhcp.DHCP_OFFER, dhcp.DHCP_ACK


def world() -> World:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.apply(ops.create_network(w.topo, Network(id="a", tenant="alice"), w.rev + 1, 0.0))
    w.apply(
        ops.create_subnet(
            w.topo,
            Subnet(
                id="a-sub",
                tenant="alice",
                network_id="a",
                cidr="10.0.0.0/24",
                dns_servers=("10.0.0.2", "9.9.9.9"),
                host_routes=(("192.168.0.0/16", "10.0.0.254"), ("172.16.5.0/24", "10.0.0.253")),
            ),
            False,
            w.rev + 1,
            0.0,
        )
    )
    # no gateway, no DHCP
    w.apply(ops.create_network(w.topo, Network(id="n", tenant="alice"), w.rev + 1, 0.0))
    w.apply(
        ops.create_subnet(
            w.topo,
            Subnet(id="n-sub", tenant="alice", network_id="n", cidr="10.5.0.0/16", gateway_ip=""),
            True,
            w.rev + 1,
            0.0,
        )
    )
    w.apply(ops.create_network(w.topo, Network(id="off", tenant="alice"), w.rev + 1, 0.0))
    w.apply(
        ops.create_subnet(
            w.topo,
            Subnet(id="off-sub", tenant="alice", network_id="off", cidr="10.6.0.0/24", enable_dhcp=False),
            False,
            w.rev + 1,
            0.0,
        )
    )
    w.port("vm1", "a", "hv1", "10.0.0.5")
    w.port("vm2", "a", "hv2", "10.0.0.6")
    w.port("nogw", "n", "hv1", "10.5.1.7")
    w.port("off1", "off", "hv1", "10.6.0.5")
    w.apply(ops.update_port(w.topo, w.topo.ports["vm1"], {"display_name": "web-1"}, w.rev + 1, 0.0))
    return w


def build(
    mac: str,
    kind: int,
    *,
    xid: int = 0x1234,
    requested: str | None = None,
    server: str | None = None,
    ciaddr: str = "0.0.0.0",
    flags: int = 0,
) -> bytes:
    opts = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([kind]))]
    if requested:
        opts.append(dhcp.option(dhcp.DHCP_REQUESTED_IP_ADDR_OPT, ipv4_bytes(requested)))
    if server:
        opts.append(dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT, ipv4_bytes(server)))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", mac, 0x0800))
    pkt.add_protocol(ipv4.ipv4(src=ciaddr, dst="255.255.255.255", proto=17))
    pkt.add_protocol(udp.udp(src_port=68, dst_port=67))
    pkt.add_protocol(
        dhcp.dhcp(
            op=dhcp.DHCP_BOOT_REQUEST,
            chaddr=mac,
            xid=xid,
            flags=flags,
            ciaddr=ciaddr,
            hlen=6,
            options=dhcp.options(opts),
        )
    )
    pkt.serialize()
    return bytes(pkt.data)


def ipv4_bytes(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


def ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


class Answered:
    def __init__(self, data: bytes) -> None:
        pkt = packet.Packet(data)
        self.eth = pkt.get_protocol(ethernet.ethernet)
        self.ip = pkt.get_protocol(ipv4.ipv4)
        self.udp = pkt.get_protocol(udp.udp)
        self.dhcp = pkt.get_protocol(dhcp.dhcp)
        self.opts = {o.tag: bytes(o.value) for o in self.dhcp.options.option_list}

    @property
    def type(self) -> int:
        return self.opts[dhcp.DHCP_MESSAGE_TYPE_OPT][0]

    def u32(self, tag: int) -> int:
        return int.from_bytes(self.opts[tag], "big")


def ask(w: World, port_id: str, data: bytes, chassis: str = "hv1", **match: Any) -> Answered | None:
    port = w.topo.ports[port_id]
    m = {"in_port": w.ofport(port), "reg6": port.key, **match}
    reply = Responder(lease_s=3600).answer(View(w.topo, w.runtime), chassis, m, data)
    if reply is None:
        return None
    assert reply.ofport == w.ofport(port) and reply.port_id == port_id
    return Answered(reply.data)


def test_discover_gets_an_offer_with_every_option() -> None:
    w = world()
    vm1 = w.topo.ports["vm1"]
    a = ask(w, "vm1", build(vm1.mac, DISCOVER, xid=0xCAFE))
    assert a is not None and a.type == OFFER
    assert a.dhcp.op == dhcp.DHCP_BOOT_REPLY and a.dhcp.xid == 0xCAFE and a.dhcp.chaddr == vm1.mac
    assert a.dhcp.yiaddr == "10.0.0.5" and a.dhcp.siaddr == "10.0.0.1"
    assert (a.udp.src_port, a.udp.dst_port) == (67, 68)
    assert (
        a.ip.src == "10.0.0.1" and a.ip.dst == "10.0.0.5"
    )  # unicast to the offered address (no broadcast flag)
    assert a.eth.dst == vm1.mac and a.eth.src == SERVER_MAC  # no router holds the gateway address
    assert ip(a.opts[1]) == "255.255.255.0"
    assert ip(a.opts[3]) == "10.0.0.1"
    assert a.opts[6] == ipv4_bytes("10.0.0.2") + ipv4_bytes("9.9.9.9")
    assert int.from_bytes(a.opts[26], "big") == w.topo.networks["a"].mtu == 1450  # VXLAN
    assert ip(a.opts[28]) == "10.0.0.255"
    assert a.u32(51) == 3600 and a.u32(58) == 1800 and a.u32(59) == 3150
    assert ip(a.opts[54]) == "10.0.0.1"
    # RFC 3442: the host routes and, since option 3 is then ignored, the default route via the gateway
    assert a.opts[121] == bytes([16, 192, 168, 10, 0, 0, 254, 24, 172, 16, 5, 10, 0, 0, 253, 0, 10, 0, 0, 1])
    assert a.opts[12] == b"web-1"


def test_request_for_the_ports_address_is_acked_and_another_is_naked() -> None:
    w = world()
    vm1 = w.topo.ports["vm1"]
    a = ask(w, "vm1", build(vm1.mac, REQUEST, requested="10.0.0.5", server="10.0.0.1", flags=0x8000))
    assert a is not None and a.type == ACK and a.dhcp.yiaddr == "10.0.0.5"
    assert (
        a.ip.dst == "255.255.255.255" and a.eth.dst == "ff:ff:ff:ff:ff:ff"
    )  # the client asked for broadcast
    assert a.u32(51) == 3600 and 121 in a.opts and 26 in a.opts
    nak = ask(w, "vm1", build(vm1.mac, REQUEST, requested="10.0.0.99"))
    assert nak is not None and nak.type == DHCP_NAK and nak.dhcp.yiaddr == "0.0.0.0"
    assert 51 not in nak.opts and 1 not in nak.opts and ip(nak.opts[54]) == "10.0.0.1"
    # renewal: unicast from the configured address (ciaddr), answered by unicast
    renew = ask(w, "vm1", build(vm1.mac, REQUEST, ciaddr="10.0.0.5"))
    assert renew is not None and renew.type == ACK and renew.ip.dst == "10.0.0.5"
    # a request for another server's offer: silence
    assert ask(w, "vm1", build(vm1.mac, REQUEST, requested="10.0.0.5", server="10.0.0.77")) is None


def test_inform_release_decline() -> None:
    w = world()
    vm1 = w.topo.ports["vm1"]
    a = ask(w, "vm1", build(vm1.mac, DHCP_INFORM, ciaddr="10.0.0.5"))
    assert a is not None and a.type == ACK and a.dhcp.yiaddr == "0.0.0.0" and a.dhcp.ciaddr == "10.0.0.5"
    assert 51 not in a.opts and ip(a.opts[3]) == "10.0.0.1"
    assert ask(w, "vm1", build(vm1.mac, DHCP_RELEASE, ciaddr="10.0.0.5")) is None
    assert ask(w, "vm1", build(vm1.mac, 4, requested="10.0.0.5")) is None


def test_subnet_without_gateway() -> None:
    w = world()
    p = w.topo.ports["nogw"]
    a = ask(w, "nogw", build(p.mac, DISCOVER))
    assert a is not None and a.type == OFFER and a.dhcp.yiaddr == "10.5.1.7"
    assert 3 not in a.opts and 121 not in a.opts and 6 not in a.opts
    assert ip(a.opts[54]) == SERVER_ID_NO_GATEWAY and a.ip.src == SERVER_ID_NO_GATEWAY
    assert ip(a.opts[1]) == "255.255.0.0" and ip(a.opts[28]) == "10.5.255.255"


@pytest.mark.parametrize(
    "case", ["wrong_mac", "wrong_chaddr", "other_chassis", "dhcp_off", "wrong_in_port", "unknown_key"]
)
def test_nobody_else_gets_an_answer(case: str) -> None:
    w = world()
    vm1 = w.topo.ports["vm1"]
    if case == "wrong_mac":
        assert ask(w, "vm1", build("02:00:00:00:99:99", DISCOVER)) is None
    elif case == "wrong_chaddr":
        data = build(vm1.mac, DISCOVER)
        pkt = packet.Packet(data)
        d = pkt.get_protocol(dhcp.dhcp)
        d.chaddr = "02:00:00:00:99:99"
        out = packet.Packet()
        for proto in pkt.protocols:
            out.add_protocol(proto)
        out.serialize()
        assert ask(w, "vm1", bytes(out.data)) is None
    elif case == "other_chassis":  # vm2 lives on hv2: hv1 does not answer for it
        vm2 = w.topo.ports["vm2"]
        reply = Responder().answer(
            View(w.topo, w.runtime), "hv1", {"in_port": 2, "reg6": vm2.key}, build(vm2.mac, DISCOVER)
        )
        assert reply is None
    elif case == "dhcp_off":
        off = w.topo.ports["off1"]
        assert ask(w, "off1", build(off.mac, DISCOVER)) is None
    elif case == "wrong_in_port":
        assert ask(w, "vm1", build(vm1.mac, DISCOVER), in_port=999) is None
    else:
        assert ask(w, "vm1", build(vm1.mac, DISCOVER), reg6=65000) is None


def test_handler_sends_out_the_ports_ofport() -> None:
    w = world()
    vm1 = w.topo.ports["vm1"]
    sent: list[tuple[int, bytes, int]] = []
    r = Responder(send=lambda dpid, data, port: sent.append((dpid, data, port)))
    r(
        PacketIn(
            "hv1",
            7,
            build(vm1.mac, DISCOVER),
            {"in_port": w.ofport(vm1), "reg6": vm1.key},
            w.topo,
            View(w.topo, w.runtime),
        )
    )
    assert len(sent) == 1 and sent[0][0] == 7 and sent[0][2] == w.ofport(vm1)
    assert Answered(sent[0][1]).type == OFFER
    assert r.counts["DISCOVER"] == 1 and r.counts["sent_OFFER"] == 1


def test_classless_routes_encoding() -> None:
    # RFC 3442's examples: 0/0 -> 1 byte width, 10.0.0.0/8 -> 2 bytes, 10.17.0.0/16 -> 3, 10.27.129.0/24 -> 4
    assert classless_routes([("0.0.0.0/0", "10.0.0.1")]) == bytes([0, 10, 0, 0, 1])
    assert classless_routes([("10.0.0.0/8", "1.2.3.4")]) == bytes([8, 10, 1, 2, 3, 4])
    assert classless_routes([("10.27.129.0/24", "1.2.3.4")]) == bytes([24, 10, 27, 129, 1, 2, 3, 4])
    assert classless_routes([("10.229.0.128/25", "1.2.3.4")]) == bytes([25, 10, 229, 0, 128, 1, 2, 3, 4])


def test_server_mac_is_the_router_interfaces_where_a_router_holds_the_gateway() -> None:
    from topology.records import Router

    w = world()
    vm1 = w.topo.ports["vm1"]
    w.apply(ops.create_router(w.topo, Router(id="r1", tenant="alice"), None, w.rev + 1, 0.0))
    w.apply(ops.add_router_interface(w.topo, w.topo.routers["r1"], "a-sub", "", "r1-if", w.rev + 1, 0.0))
    iface = w.topo.ports["r1-if"]
    a = ask(w, "vm1", build(vm1.mac, DISCOVER))
    assert (
        a is not None and a.eth.src == iface.mac and a.ip.src == "10.0.0.1" and ip(a.opts[54]) == "10.0.0.1"
    )
    # the interface itself is no DHCP client
    assert (
        Responder().answer(View(w.topo, w.runtime), "hv1", {"in_port": 99}, build(iface.mac, DISCOVER))
        is None
    )
