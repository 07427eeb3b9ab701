"""IPv6 address configuration without a switch: subnet modes through the gRPC API (Neutron's refusals, with the
field), IPAM (EUI-64, an address of each family), the dhcp stage's flows walked for router solicitations and
DHCPv6 requests, the router advertisements built, and the DHCPv6 responder's answers."""

from __future__ import annotations

import struct
from typing import Any

import grpc
import netaddr
import pytest
from google.protobuf import field_mask_pb2
from os_ken.lib.packet import dhcp6, ethernet, icmpv6, packet, udp
from os_ken.lib.packet import ipv6 as ipv6_pkt

from apps.view import View
from controller.cli.format import EXIT_INVALID as CLI_INVALID
from controller.services import ra
from controller.services.dhcp6 import Responder6, duid_ll
from tests.conftest import Api
from tests.test_api import expect_error, make_net, make_port, make_subnet
from tests.test_apps_l2 import World
from tests.test_cli import sdnctl  # noqa: F401 - the fixture
from tests.test_neutron_api import error, rest  # noqa: F401 - rest: the fixture
from topology import ipv6, ops
from topology.records import Subnet

# ---------------------------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"cidr": "10.0.0.0/24", "ipv6_ra_mode": "slaac"}, "subnet.ipv6_ra_mode"),  # an IPv4 subnet
        ({"cidr": "10.0.0.0/24", "ipv6_address_mode": "slaac"}, "subnet.ipv6_address_mode"),
        ({"cidr": "2001:db8::/64", "ipv6_ra_mode": "radvd"}, "subnet.ipv6_ra_mode"),  # not a mode
        (
            {"cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"},
            "subnet.ipv6_address_mode",
        ),  # both set, different
        ({"cidr": "2001:db8::/80", "ipv6_address_mode": "slaac"}, "subnet.cidr"),  # EUI-64 needs a /64
        ({"cidr": "2001:db8::/56", "ipv6_ra_mode": "dhcpv6-stateless"}, "subnet.cidr"),
        ({"cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "enable_dhcp": False}, "subnet.enable_dhcp"),
    ],
)
def test_modes_neutron_refuses_name_the_field(api: Api, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    net = make_net(api, api.admin)
    code, fields, _reason = expect_error(make_subnet, api, api.admin, net.name, **kwargs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == [field]
    assert not api.stub.ListSubnets(pb_list(), metadata=api.admin).subnets


def pb_list() -> Any:
    from proto.sdn.v1 import topology_pb2 as pb

    return pb.ListSubnetsRequest()


def test_modes_stored_shown_immutable_and_dhcp_stays_on(api: Api) -> None:
    from proto.sdn.v1 import topology_pb2 as pb

    net = make_net(api, api.admin, "ds")
    v4 = make_subnet(api, api.admin, net.name, "10.1.0.0/24", "ds-v4")
    st = make_subnet(
        api, api.admin, net.name, "2001:db8:1::/64", "ds-st", ipv6_address_mode="dhcpv6-stateful"
    )
    sl = make_subnet(
        api, api.admin, net.name, "2001:db8:2::/64", "ds-sl", ipv6_ra_mode="slaac", ipv6_address_mode="slaac"
    )
    assert (sl.ipv6_ra_mode, sl.ipv6_address_mode) == ("slaac", "slaac") and v4.ipv6_ra_mode == ""
    assert api.stub.GetSubnet(pb.GetSubnetRequest(name=st.name), metadata=api.admin).ipv6_address_mode == (
        "dhcpv6-stateful"
    )
    for path, value in (("ipv6_ra_mode", "dhcpv6-stateless"), ("ipv6_address_mode", "")):
        code, fields, _ = expect_error(
            api.stub.UpdateSubnet,
            pb.UpdateSubnetRequest(
                subnet=pb.Subnet(name=sl.name, **{path: value}),
                update_mask=field_mask_pb2.FieldMask(paths=[path]),
            ),
            metadata=api.admin,
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["update_mask"]  # immutable
    code, fields, _ = expect_error(
        api.stub.UpdateSubnet,
        pb.UpdateSubnetRequest(
            subnet=pb.Subnet(name=sl.name, enable_dhcp=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enable_dhcp"]),
        ),
        metadata=api.admin,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["subnet.enable_dhcp"]
    # a port gets an address of each family: v4, the stateful subnet's next, and its EUI-64 one on SLAAC
    port = make_port(api, api.admin, net.name, "ds-p")
    got = {f.subnet: f.ip_address for f in port.fixed_ips}
    assert got == {
        v4.name: "10.1.0.2",
        st.name: "2001:db8:1::2",
        sl.name: ipv6.eui64_address("2001:db8:2::/64", port.mac_address),
    }
    # on a SLAAC subnet the address is the MAC's: another is refused, with the field
    code, fields, reason = expect_error(
        make_port, api, api.admin, net.name, fixed_ips=[pb.FixedIp(ip_address="2001:db8:2::99")]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["port.fixed_ips[0].ip_address"]
    assert reason == "AUTO_ADDRESS_SUBNET"
    # asked by subnet: the EUI-64 address
    only = make_port(api, api.admin, net.name, "ds-q", fixed_ips=[pb.FixedIp(subnet=sl.name)])
    assert [f.ip_address for f in only.fixed_ips] == [ipv6.eui64_address("2001:db8:2::/64", only.mac_address)]


# ---------------------------------------------------------------------------------------------- IPAM


def world() -> World:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("n", "alice", "10.0.0.0/24")
    return w


def v6_subnet(w: World, ident: str, cidr: str, mode: str, net: str = "n", **kw: Any) -> Subnet:
    w.apply(
        ops.create_subnet(
            w.topo,
            Subnet(
                id=ident,
                tenant="alice",
                network_id=net,
                cidr=cidr,
                ipv6_ra_mode=mode,
                ipv6_address_mode=mode,
                **kw,
            ),
            False,
            w.rev + 1,
            0.0,
        )
    )
    return w.topo.subnets[ident]


def test_ipv4_only_network_unchanged_and_v6_without_modes_allocates_in_order() -> None:
    w = world()
    p = w.port("a", "n", "hv1")
    assert p.fixed_ips == (("n-sub", "10.0.0.2"),)
    v6_subnet(w, "plain", "2001:db8::/64", "")
    q = w.port("b", "n", "hv1")
    assert q.fixed_ips == (("n-sub", "10.0.0.3"), ("plain", "2001:db8::2"))
    assert w.topo.ports["a"].fixed_ips == (("n-sub", "10.0.0.2"),)  # a subnet without SLAAC adds nothing


def test_slaac_subnet_gives_existing_ports_their_eui64_and_takes_it_back() -> None:
    w = world()
    a = w.port("a", "n", "hv1")
    v6_subnet(w, "auto", "2001:db8:5::/64", "slaac")
    eui = ipv6.eui64_address("2001:db8:5::/64", a.mac)
    assert w.topo.ports["a"].fixed_ips == (("n-sub", "10.0.0.2"), ("auto", eui))
    assert netaddr.IPAddress(eui).words[4:] == tuple(netaddr.EUI(a.mac).ipv6(0).words[4:])
    # deleting the subnet takes the addresses back (no force needed, no port deleted)
    w.apply(ops.delete_subnet(w.topo, w.topo.subnets["auto"], False, w.rev + 1, 0.0))
    assert w.topo.ports["a"].fixed_ips == (("n-sub", "10.0.0.2"),)


def test_eui64_and_link_local() -> None:
    assert ipv6.eui64_address("2001:db8:1::/64", "52:54:00:12:34:56") == "2001:db8:1:0:5054:ff:fe12:3456"
    assert ipv6.link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"


# ---------------------------------------------------------------------------------------------- flows


def routed(w: World, mode: str, net: str = "n") -> tuple[Subnet, Any]:
    """A v6 subnet in `mode` on the network, with a router interface on it; (subnet, interface port)."""
    sub = v6_subnet(
        w, f"{net}-v6", f"2001:db8:{len(w.topo.subnets)}::/64", mode, net=net, dns_servers=("2001:db8::53",)
    )
    from topology.records import Router

    w.apply(ops.create_router(w.topo, Router(id=f"r-{net}", tenant="alice"), None, w.rev + 1, 0.0))
    w.apply(
        ops.add_router_interface(w.topo, w.topo.routers[f"r-{net}"], sub.id, "", f"ri-{net}", w.rev + 1, 0.0)
    )
    return sub, w.topo.ports[f"ri-{net}"]


def solicitation(mac: str) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": "33:33:00:00:00:02",
        "eth_type": 0x86DD,
        "ipv6_src": ipv6.link_local(mac),
        "ipv6_dst": "ff02::2",
        "ip_proto": 58,
        "icmpv6_type": 133,
        "icmpv6_code": 0,
    }


def dhcpv6_request(mac: str) -> dict[str, Any]:
    return {
        "eth_src": mac,
        "eth_dst": "33:33:00:01:00:02",
        "eth_type": 0x86DD,
        "ipv6_src": ipv6.link_local(mac),
        "ipv6_dst": "ff02::1:2",
        "ip_proto": 17,
        "udp_src": 546,
        "udp_dst": 547,
    }


def test_router_solicitation_goes_to_the_controller_only_where_the_controller_advertises() -> None:
    w = world()
    w.network("m", "alice", "10.9.0.0/24")  # no ipv6_ra_mode: an external router may answer there
    routed(w, "slaac")
    a, _b = w.port("a", "n", "hv1"), w.port("b", "n", "hv1")
    m1, _m2 = w.port("m1", "m", "hv1"), w.port("m2", "m", "hv1")
    sw = w.switch("hv1")
    res = sw.walk({"in_port": w.ofport(a), **solicitation(a.mac)})
    assert res.ports == ["CONTROLLER"], res.format()  # and nowhere else: not flooded
    res = sw.walk({"in_port": w.ofport(m1), **solicitation(m1.mac)})
    assert "CONTROLLER" not in res.ports and w.ofport(w.topo.ports["m2"]) in res.ports, res.format()


def test_dhcpv6_requests_go_to_the_controller_for_stateful_and_stateless_only() -> None:
    w = world()
    w.network("s", "alice", "10.8.0.0/24")
    w.network("t", "alice", "10.7.0.0/24")
    routed(w, "dhcpv6-stateful", "n")
    routed(w, "slaac", "s")
    routed(w, "dhcpv6-stateless", "t")
    a, s1, t1 = w.port("a", "n", "hv1"), w.port("s1", "s", "hv1"), w.port("t1", "t", "hv1")
    _a2 = w.port("a2", "n", "hv1")
    sw = w.switch("hv1")
    assert sw.walk({"in_port": w.ofport(a), **dhcpv6_request(a.mac)}).ports == ["CONTROLLER"]
    assert sw.walk({"in_port": w.ofport(t1), **dhcpv6_request(t1.mac)}).ports == ["CONTROLLER"]
    res = sw.walk({"in_port": w.ofport(s1), **dhcpv6_request(s1.mac)})  # SLAAC: no DHCPv6, and not flooded
    assert res.dropped and res.dropped_at == "dhcp", res.format()


def test_forged_router_advertisement_from_a_vm_is_dropped() -> None:
    w = world()
    routed(w, "slaac")
    a, _b = w.port("a", "n", "hv1"), w.port("b", "n", "hv1")
    res = w.switch("hv1").walk({"in_port": w.ofport(a), **solicitation(a.mac), "icmpv6_type": 134})
    assert res.dropped and res.dropped_at == "port_sec_in", res.format()


# ---------------------------------------------------------------------------------------------- RA


def parse_ra(data: bytes) -> tuple[Any, Any, tuple[int, int, int], dict[int, bytes]]:
    """(ethernet, ipv6, (hop limit, flags byte, router lifetime), option type -> its bytes), read off the wire
    (os-ken's parser swallows the options after a link-layer address option)."""
    pkt = packet.Packet(data)
    eth, ip6 = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv6_pkt.ipv6)
    icmp = data[54:]
    kind, _code, _csum, hop, flags, lifetime = struct.unpack("!BBHBBH", icmp[:8])
    assert kind == icmpv6.ND_ROUTER_ADVERT
    opts, off = {}, 16
    while off < len(icmp):
        t, n = icmp[off], icmp[off + 1] * 8
        opts[t] = icmp[off : off + n]
        off += n
    return eth, ip6, (hop, flags, lifetime), opts


@pytest.mark.parametrize(
    "mode,m,o,a",
    [("slaac", 0, 0, 1), ("dhcpv6-stateful", 1, 1, 0), ("dhcpv6-stateless", 0, 1, 1)],
)
def test_advertisement_per_mode(mode: str, m: int, o: int, a: int) -> None:
    w = world()
    sub, router_port = routed(w, mode)
    view = View(w.topo, w.runtime)
    [data] = ra.network_advertisements(view, "n")
    eth, ip6, (hop, flags, lifetime), opts = parse_ra(data)
    assert eth.src == router_port.mac and eth.dst == "33:33:00:00:00:01"
    assert ip6.src == ipv6.link_local(router_port.mac) and ip6.dst == "ff02::1" and ip6.hop_limit == 255
    assert (hop, flags, lifetime) == (64, m << 7 | o << 6, ra.ROUTER_LIFETIME_S)
    assert opts[icmpv6.ND_OPTION_SLA][2:8] == netaddr.EUI(router_port.mac).packed
    assert struct.unpack("!BBHI", opts[icmpv6.ND_OPTION_MTU])[3] == w.topo.networks["n"].mtu == 1450
    _t, _n, plen, pflags, valid, preferred, _r, prefix = struct.unpack(
        "!BBBBIII16s", opts[icmpv6.ND_OPTION_PI]
    )
    assert (netaddr.IPAddress(int.from_bytes(prefix, "big"), 6), plen) == (
        netaddr.IPNetwork(sub.cidr).network,
        64,
    )
    assert pflags == (0x80 | a << 6)  # on-link, autonomous per mode
    assert (valid, preferred) == (ra.VALID_LIFETIME_S, ra.PREFERRED_LIFETIME_S)


def test_no_advertisement_without_router_interface_or_mode_and_only_to_the_soliciting_port() -> None:
    w = world()
    v6_subnet(w, "lonely", "2001:db8:9::/64", "slaac")  # ra mode, but no router holds its gateway
    view = View(w.topo, w.runtime)
    assert ra.network_advertisements(view, "n") == []
    w2 = world()
    routed(w2, "slaac")
    a = w2.port("a", "n", "hv1")
    w2.port("b", "n", "hv1")
    rs = packet.Packet()
    rs.add_protocol(ethernet.ethernet("33:33:00:00:00:02", a.mac, 0x86DD))
    rs.add_protocol(ipv6_pkt.ipv6(src=ipv6.link_local(a.mac), dst="ff02::2", nxt=58, hop_limit=255))
    rs.add_protocol(icmpv6.icmpv6(type_=icmpv6.ND_ROUTER_SOLICIT, data=icmpv6.nd_router_solicit()))
    rs.serialize()
    adv = ra.Advertiser()
    view2 = View(w2.topo, w2.runtime)
    out = adv.answer(view2, "hv1", {"in_port": w2.ofport(a), "reg6": a.key}, bytes(rs.data))
    assert [ofport for ofport, _ in out] == [w2.ofport(a)]
    # the same solicitation claimed by another port's key (a spoofed source) gets nothing
    b = w2.topo.ports["b"]
    assert adv.answer(view2, "hv1", {"in_port": w2.ofport(b), "reg6": b.key}, bytes(rs.data)) == []


# ---------------------------------------------------------------------------------------------- DHCPv6


def dhcpv6(mac: str, kind: int, *opts: tuple[int, bytes]) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("33:33:00:01:00:02", mac, 0x86DD))
    pkt.add_protocol(ipv6_pkt.ipv6(src=ipv6.link_local(mac), dst="ff02::1:2", nxt=17, hop_limit=1))
    pkt.add_protocol(udp.udp(src_port=546, dst_port=547))
    options = [dhcp6.option(code, data, len(data)) for code, data in opts]
    pkt.add_protocol(dhcp6.dhcp6(kind, dhcp6.options(options), transaction_id=0xABCDE))
    pkt.serialize()
    return bytes(pkt.data)


def answered(reply: Any) -> tuple[Any, dict[int, bytes]]:
    pkt = packet.Packet(reply.data)
    u = pkt.get_protocol(udp.udp)
    assert (u.src_port, u.dst_port) == (547, 546)
    msg = pkt.get_protocol(dhcp6.dhcp6) or dhcp6.dhcp6.parser(bytes(pkt.protocols[-1]))[0]
    return msg, {o.code: bytes(o.data) for o in msg.options.option_list}


CLIENT = (dhcp6.DHCPV6_OPTION_CLIENTID, b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x01")
IA = (dhcp6.DHCPV6_OPTION_IA_NA, b"\x00\x00\x00\x07" + bytes(8))


def test_dhcpv6_stateful_advertises_and_replies_with_the_ports_address() -> None:
    w = world()
    sub, router_port = routed(w, "dhcpv6-stateful")
    a = w.port("a", "n", "hv1")
    addr = next(ip for s, ip in a.fixed_ips if s == sub.id)
    view = View(w.topo, w.runtime)
    r6 = Responder6(lease_s=600)
    m = {"in_port": w.ofport(a), "reg6": a.key}
    reply = r6.answer(view, "hv1", m, dhcpv6(a.mac, dhcp6.DHCPV6_SOLICIT, CLIENT, IA))
    assert reply is not None and reply.ofport == w.ofport(a)
    msg, opts = answered(reply)
    assert msg.msg_type == dhcp6.DHCPV6_ADVERTISE and msg.transaction_id == 0xABCDE
    assert opts[dhcp6.DHCPV6_OPTION_CLIENTID] == CLIENT[1]
    assert opts[dhcp6.DHCPV6_OPTION_SERVERID] == duid_ll(router_port.mac)
    ia = opts[dhcp6.DHCPV6_OPTION_IA_NA]
    assert ia[:4] == b"\x00\x00\x00\x07" and struct.unpack("!II", ia[4:12]) == (300, 480)
    code, length, packed, preferred, valid = struct.unpack("!HH16sII", ia[12:40])
    assert (code, length, str(netaddr.IPAddress(int.from_bytes(packed, "big"), 6))) == (5, 24, addr)
    assert opts[23] == netaddr.IPAddress("2001:db8::53").packed
    server = (dhcp6.DHCPV6_OPTION_SERVERID, duid_ll(router_port.mac))
    reply = r6.answer(view, "hv1", m, dhcpv6(a.mac, dhcp6.DHCPV6_REQUEST, CLIENT, server, IA))
    assert reply is not None and answered(reply)[0].msg_type == dhcp6.DHCPV6_REPLY
    other = (dhcp6.DHCPV6_OPTION_SERVERID, duid_ll("02:00:00:00:00:99"))
    assert r6.answer(view, "hv1", m, dhcpv6(a.mac, dhcp6.DHCPV6_REQUEST, CLIENT, other, IA)) is None
    # a foreign MAC on the port gets nothing
    assert r6.answer(view, "hv1", m, dhcpv6("02:00:00:00:00:42", dhcp6.DHCPV6_SOLICIT, CLIENT, IA)) is None


def test_dhcpv6_stateless_answers_information_requests_only() -> None:
    w = world()
    routed(w, "dhcpv6-stateless")
    a = w.port("a", "n", "hv1")
    view = View(w.topo, w.runtime)
    r6 = Responder6()
    m = {"in_port": w.ofport(a), "reg6": a.key}
    reply = r6.answer(view, "hv1", m, dhcpv6(a.mac, dhcp6.DHCPV6_INFORMATION_REQUEST, CLIENT))
    assert reply is not None
    msg, opts = answered(reply)
    assert msg.msg_type == dhcp6.DHCPV6_REPLY and dhcp6.DHCPV6_OPTION_IA_NA not in opts
    assert opts[23] == netaddr.IPAddress("2001:db8::53").packed
    assert r6.answer(view, "hv1", m, dhcpv6(a.mac, dhcp6.DHCPV6_SOLICIT, CLIENT, IA)) is None


# ---------------------------------------------------------------------------------------------- Neutron REST


def test_neutron_rest_modes_shown_set_at_create_refused_as_neutron_does(rest: Any) -> None:  # noqa: F811

    net = rest.ok("POST", "/v2.0/networks", {"network": {"name": "ds"}}, "alice", 201)["network"]
    v4 = rest.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.4.0.0/24", "ip_version": 4}},
        "alice",
        201,
    )["subnet"]
    assert v4["ipv6_ra_mode"] is None and v4["ipv6_address_mode"] is None
    body = {"network_id": net["id"], "cidr": "2001:db8:4::/64", "ip_version": 6}
    sub = rest.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {**body, "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}},
        "alice",
        201,
    )["subnet"]
    assert (sub["ipv6_ra_mode"], sub["ipv6_address_mode"]) == ("slaac", "slaac")
    port = rest.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, "alice", 201)["port"]
    assert {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]} == {
        v4["id"]: "10.4.0.2",
        sub["id"]: ipv6.eui64_address("2001:db8:4::/64", port["mac_address"]),
    }
    bad = rest.ok(
        "POST",
        "/v2.0/subnets",
        {
            "subnet": {
                **body,
                "cidr": "2001:db8:5::/64",
                "ipv6_ra_mode": "slaac",
                "ipv6_address_mode": "dhcpv6-stateful",
            }
        },
        "alice",
        400,
    )
    assert error(bad)[0] == "HTTPBadRequest" and "ipv6_address_mode" in error(bad)[1]
    put = rest.ok(
        "PUT", f"/v2.0/subnets/{sub['id']}", {"subnet": {"ipv6_ra_mode": "dhcpv6-stateless"}}, "alice", 400
    )
    assert error(put)[0] == "HTTPBadRequest", put


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_subnet_create_with_modes(sdnctl: Any) -> None:  # noqa: F811
    sdnctl("network", "create", "ds", "--id", "ds")
    sub = sdnctl(
        "-f", "json", "subnet", "create", "ds-v6", "--id", "ds-v6", "--network", "ds", "--cidr", "2001:db8:7::/64",
        "--ipv6-ra-mode", "dhcpv6-stateless", "--ipv6-address-mode", "dhcpv6-stateless",
    ).json()  # fmt: skip
    assert (sub["ipv6_ra_mode"], sub["ipv6_address_mode"]) == ("dhcpv6-stateless", "dhcpv6-stateless")
    assert "ipv6_address_mode  dhcpv6-stateless" in sdnctl("subnet", "show", "ds-v6").out
    res = sdnctl(
        "subnet",
        "create",
        "x",
        "--network",
        "ds",
        "--cidr",
        "10.7.0.0/24",
        "--ipv6-ra-mode",
        "slaac",
        code=CLI_INVALID,
    )
    assert "subnet.ipv6_ra_mode" in res.err and "IPv4" in res.err
    sdnctl(
        "subnet",
        "create",
        "y",
        "--network",
        "ds",
        "--cidr",
        "2001:db8:8::/64",
        "--ipv6-ra-mode",
        "radvd",
        code=2,
    )


def test_periodic_advertisements_go_to_each_plugged_vm_port_of_the_network() -> None:
    import threading

    w = world()
    routed(w, "slaac")
    a, b = w.port("a", "n", "hv1"), w.port("b", "n", "hv2")
    w.network("m", "alice", "10.9.0.0/24")
    w.port("m1", "m", "hv1")  # no advertising subnet on its network: nothing
    sent: list[tuple[int, int]] = []

    class Host:
        state = type("S", (), {"lock": threading.RLock()})()
        packet_out = staticmethod(lambda dpid, data, ofport: sent.append((dpid, ofport)) or True)

        def current_view(self) -> View:
            return View(w.topo, w.runtime)

        def runtime_of(self, chassis_id: str) -> Any:
            return (w.topo.chassis[chassis_id].datapath_id, w.runtime[chassis_id])

    adv = ra.Advertiser(host=Host())  # type: ignore[arg-type]
    adv.tick(100.0)  # the first: everything
    dp = {c: w.topo.chassis[c].datapath_id for c in ("hv1", "hv2")}
    assert sorted(sent) == sorted([(dp["hv1"], w.ofport(a)), (dp["hv2"], w.ofport(b))])
    sent.clear()
    adv.tick(101.0)  # nothing changed, not yet time
    assert sent == []
    # a port turned ACTIVE: its network's ports hear the advertisement at the next tick, not 30 s later
    c = w.port("c", "n", "hv1")
    adv.on_write(w.rev, w.apply(ops.set_port_status(c, "ACTIVE", w.rev + 1, 0.0)))
    adv.on_write(w.rev, w.apply(ops.set_port_status(w.topo.ports["m1"], "ACTIVE", w.rev + 1, 0.0)))
    adv.tick(102.0)
    assert sorted(sent) == sorted(
        [(dp["hv1"], w.ofport(a)), (dp["hv2"], w.ofport(b)), (dp["hv1"], w.ofport(c))]
    )
    sent.clear()
    adv.tick(100.0 + ra.INTERVAL_S)  # and everything again every INTERVAL_S
    assert len(sent) == 3


# ---------------------------------------------------------------------------------------------- Apply


def test_apply_document_with_modes_is_idempotent_and_modes_stay_immutable(api: Api) -> None:
    from proto.sdn.v1 import topology_pb2 as pb
    from tests.test_api_apply import apply, refused

    doc: dict[str, Any] = {
        "ports": [{"name": f"ports/ap{i}", "network": "networks/ap"} for i in range(2)],
        "networks": [{"name": "ap"}],
        "subnets": [
            {"name": "subnets/ap-v4", "network": "networks/ap", "cidr": "10.3.0.0/24"},
            {
                "name": "subnets/ap-v6",
                "network": "networks/ap",
                "cidr": "2001:db8:3::/64",
                "ipv6_ra_mode": "slaac",
                "ipv6_address_mode": "slaac",
            },
        ],
    }
    assert apply(api, api.admin, doc).applied
    for i in range(2):
        port = api.stub.GetPort(pb.GetPortRequest(name=f"ports/ap{i}"), metadata=api.admin)
        assert [f.subnet for f in port.fixed_ips] == ["subnets/ap-v4", "subnets/ap-v6"]
        assert port.fixed_ips[1].ip_address == ipv6.eui64_address("2001:db8:3::/64", port.mac_address)
    again = apply(api, api.admin, doc)
    assert list(again.changes) == [] and not again.applied
    doc["subnets"][1]["ipv6_ra_mode"] = "dhcpv6-stateless"
    doc["subnets"][1]["ipv6_address_mode"] = "dhcpv6-stateless"
    code, fields, _reason, _msg = refused(api, api.admin, doc)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields and fields[0].startswith("subnets[1].ipv6_")
