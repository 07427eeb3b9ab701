"""A dual-stack external gateway by behaviour: IPv6 routed to and from the external network without NAT on the
gateway chassis (redirected there from other chassis), IPv4 SNAT unchanged beside it, neighbour discovery for
the gateway's IPv6 address answered, unknown IPv6 next hops and advertisements to the gateway MAC sent to the
controller; and the API's rules (an IPv4 address always kept, at most one per family)."""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr
import pytest

from apps import arp, nat
from flows.pipeline import NEXT_HOP6
from tests.test_apps_l2 import PATCH, TUN
from tests.test_apps_nat import NatWorld
from topology import errors, ops, ops_security
from topology.records import Port, Router, SecurityGroupRule, Subnet

PHYSNET = "physnet1"
EXT_HOST6 = ("2001:db8:ee::64", "02:ee:00:00:00:64")
EXT_HOST4 = ("172.24.4.100", "02:ee:00:00:00:64")
UPSTREAM6 = ("2001:db8:ee::1", "02:ee:00:00:00:01")
BEYOND6 = "2001:db8:ff::7"


def v6(p: Port) -> str:
    return next(ip for _s, ip in p.fixed_ips if ":" in ip)


def v4(p: Port) -> str:
    return next(ip for _s, ip in p.fixed_ips if ":" not in ip)


def world(gw_v6: bool = True) -> tuple[NatWorld, dict[str, Port]]:
    w = NatWorld()
    w.neighbors = {}
    w.chassis("hv1", "192.0.2.1", [(PHYSNET, "br-prov")])
    w.chassis("hv2", "192.0.2.2", [(PHYSNET, "br-prov")])
    w.network("ext", "admin", "172.24.4.0/24", segment_type="flat", physical_network=PHYSNET, external=True)
    w.network("a", "alice", "10.0.0.0/24")
    for net, cidr in (("ext", "2001:db8:ee::/64"), ("a", "fd00:a::/64")):
        sub = Subnet(
            id=f"{net}-v6", tenant=w.topo.networks[net].tenant, network_id=net, cidr=cidr, ip_version=6
        )
        w.apply(ops.create_subnet(w.topo, sub, False, w.rev + 1, 0.0))
    fixed = (("ext-sub", ""), ("ext-v6", "")) if gw_v6 else ()
    w.apply(
        ops.create_router(
            w.topo, Router(id="r", tenant="alice"), ops.GatewayRequest("ext", fixed_ips=fixed), w.rev + 1, 0.0
        )
    )
    r = w.topo.routers["r"]
    for sid in ("a-sub", "a-v6"):
        w.apply(ops.add_router_interface(w.topo, r, sid, "", f"r-{sid}", w.rev + 1, 0.0))
    p = {}
    for name, chassis, n in (("a1", "hv1", 10), ("a2", "hv2", 20)):
        port = w.port(name, "a", chassis, f"10.0.0.{n}")
        w.apply(
            [
                (
                    "port",
                    name,
                    port,
                    dataclasses.replace(port, fixed_ips=(*port.fixed_ips, ("a-v6", f"fd00:a::{n}"))),
                )
            ]
        )
        p[name] = w.topo.ports[name]
    w.neighbors["ext"] = {EXT_HOST4[0]: EXT_HOST4[1], EXT_HOST6[0]: EXT_HOST6[1]}
    group = next(g.id for g in w.topo.security_groups.values() if g.tenant == "alice")
    rule = SecurityGroupRule(
        id="any-in6", tenant="alice", security_group_id=group, direction="ingress", ethertype="IPv6"
    )
    w.apply(ops_security.create_security_group_rule(w.topo, rule, True, w.rev + 1, 0.0))
    return w, p


def gw(w: NatWorld) -> Port:
    return next(p for p in w.topo.router_ports("r") if p.network_id == "ext")


def from_vm(w: NatWorld, p: Port, dst: str) -> dict[str, Any]:
    six = ":" in dst
    iface = w.topo.ports["r-a-v6" if six else "r-a-sub"]
    return {
        "in_port": w.ofport(p),
        "eth_src": p.mac,
        "eth_dst": iface.mac,
        "eth_type": 0x86DD if six else 0x0800,
        "ipv6_src" if six else "ipv4_src": v6(p) if six else v4(p),
        "ipv6_dst" if six else "ipv4_dst": dst,
        "nw_ttl": 64,
        "ip_proto": 6,
        "tcp_src": 40000,
        "tcp_dst": 80,
    }


def from_outside6(w: NatWorld, dst: str, **kw: Any) -> dict[str, Any]:
    return {
        "in_port": PATCH,
        "eth_src": EXT_HOST6[1],
        "eth_dst": gw(w).mac,
        "eth_type": 0x86DD,
        "ipv6_src": EXT_HOST6[0],
        "ipv6_dst": dst,
        "nw_ttl": 64,
        **(kw or {"ip_proto": 6, "tcp_src": 80, "tcp_dst": 40000}),
    }


def test_the_gateway_holds_both_families_ipv4_first() -> None:
    w, _p = world()
    fixed = gw(w).fixed_ips
    assert [s for s, _a in fixed] == ["ext-sub", "ext-v6"] and ":" in fixed[1][1]


def test_ipv6_leaves_untranslated_on_the_gateway_chassis_and_ipv4_is_still_snated() -> None:
    w, p = world()
    sw = w.switch("hv1")
    res = sw.walk(from_vm(w, p["a1"], EXT_HOST6[0]))
    assert res.ports == [PATCH], res.format()
    h = res.outputs[0].headers
    assert h["ipv6_src"] == "fd00:a::10", "IPv6 is never NATed"
    assert (h["eth_src"], h["eth_dst"], h["nw_ttl"]) == (gw(w).mac, EXT_HOST6[1], 63)
    res4 = sw.walk(from_vm(w, p["a1"], EXT_HOST4[0]))
    assert res4.ports == [PATCH] and res4.outputs[0].headers["ipv4_src"] == v4(gw(w)), res4.format()


def test_another_chassis_redirects_ipv6_and_the_default_route_uses_the_upstream_router() -> None:
    w, p = world()
    res = w.switch("hv2").walk(from_vm(w, p["a2"], BEYOND6))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    assert h["tunnel_id"] == nat.redirect_id(w.topo.routers["r"]) and h["nw_ttl"] == 64
    # unknown upstream router: to the controller, NEXT_HOP6 = the external subnet's IPv6 gateway_ip
    on_gc = {"in_port": TUN["vxlan"], "tunnel_id": h["tunnel_id"]}
    on_gc.update({k: v for k, v in h.items() if k.startswith(("eth", "ipv6", "nw_", "ip_", "tcp"))})
    miss = w.switch("hv1").walk(on_gc)
    assert miss.ports == ["CONTROLLER"], miss.format()
    assert miss.outputs[0].headers[NEXT_HOP6.field] == int(netaddr.IPAddress(UPSTREAM6[0]))
    w.neighbors["ext"][UPSTREAM6[0]] = UPSTREAM6[1]
    out = w.switch("hv1").walk(on_gc)
    assert out.ports == [PATCH], out.format()
    o = out.outputs[0].headers
    assert (o["eth_dst"], o["ipv6_src"], o["ipv6_dst"], o["nw_ttl"]) == (
        UPSTREAM6[1],
        "fd00:a::20",
        BEYOND6,
        63,
    )


def test_ipv6_from_outside_reaches_the_vms_by_their_own_addresses() -> None:
    w, p = world()
    sw = w.switch("hv1")
    res = sw.walk(from_outside6(w, "fd00:a::10"))
    assert res.ports == [w.ofport(p["a1"])], res.format()
    h = res.outputs[0].headers
    assert (h["ipv6_src"], h["eth_dst"], h["nw_ttl"]) == (EXT_HOST6[0], p["a1"].mac, 63)
    far = sw.walk(from_outside6(w, "fd00:a::20"))
    assert far.ports == [TUN["vxlan"]] and far.outputs[0].headers["tun_ipv4_dst"] == "192.0.2.2", far.format()
    # hv2 is not the gateway chassis: the gateway MAC leads nowhere there
    assert w.switch("hv2").walk(from_outside6(w, "fd00:a::20")).ports == []
    # the gateway's own address is not routed back out
    assert sw.walk(from_outside6(w, v6(gw(w)))).ports == []


def test_echo_to_the_gateways_ipv6_address_from_outside_is_answered() -> None:
    w, _p = world()
    res = w.switch("hv1").walk(from_outside6(w, v6(gw(w)), ip_proto=58, icmpv6_type=128, icmpv6_code=0))
    assert res.ports == [PATCH], res.format()
    h = res.outputs[0].headers
    assert (h["ipv6_src"], h["ipv6_dst"], h["icmpv6_type"], h["eth_dst"]) == (
        v6(gw(w)),
        EXT_HOST6[0],
        129,
        EXT_HOST6[1],
    )


def _ns(w: NatWorld, target: str, source: str = EXT_HOST6[0]) -> dict[str, Any]:
    low = int(netaddr.IPAddress(target)) & 0xFFFFFF
    group = netaddr.IPAddress(0xFF020000000000000000000000000000 | 0x1FF000000 | low, 6)
    return {
        "in_port": PATCH,
        "eth_src": EXT_HOST6[1],
        "eth_dst": "33:33:" + ":".join(f"{b:02x}" for b in group.packed[-4:]),
        "eth_type": 0x86DD,
        "ipv6_src": source,
        "ipv6_dst": str(group),
        "nw_ttl": 255,
        "ip_proto": 58,
        "icmpv6_type": 135,
        "icmpv6_code": 0,
        "ipv6_nd_target": target,
        "ipv6_nd_sll": EXT_HOST6[1],
    }


def test_neighbour_solicitation_for_the_gateway_address_is_answered_on_the_gateway_chassis() -> None:
    w, _p = world()
    g = gw(w)
    res = w.switch("hv1").walk(_ns(w, v6(g)))
    assert res.ports == [PATCH], res.format()
    h = res.outputs[0].headers
    assert (h["icmpv6_type"], h["ipv6_src"], h["ipv6_dst"], h["eth_src"], h["eth_dst"]) == (
        136,
        v6(g),
        EXT_HOST6[0],
        g.mac,
        EXT_HOST6[1],
    )
    assert h["ipv6_nd_tll"] == g.mac and h["nd_reserved"] == arp.NA_R | arp.NA_S | arp.NA_O
    # duplicate address detection is no question to answer; hv2 answers nothing
    for hv, source in (("hv1", "::"), ("hv2", EXT_HOST6[0])):
        got = w.switch(hv).walk(_ns(w, v6(g), source=source))
        assert all(o.headers["icmpv6_type"] == 135 for o in got.outputs), got.format()


def test_an_advertisement_to_the_gateway_mac_goes_to_the_controller() -> None:
    w, _p = world()
    na = {**from_outside6(w, v6(gw(w)), ip_proto=58, icmpv6_type=136, icmpv6_code=0)}
    na.update(ipv6_nd_target=UPSTREAM6[0], ipv6_nd_tll=UPSTREAM6[1], nw_ttl=255)
    assert w.switch("hv1").walk(na).ports == ["CONTROLLER"]


def test_without_an_ipv6_gateway_address_nothing_ipv6_leaves() -> None:
    w, p = world(gw_v6=False)
    assert [":" in a for _s, a in gw(w).fixed_ips] == [False]
    assert w.switch("hv1").walk(from_vm(w, p["a1"], EXT_HOST6[0])).ports == []
    assert w.switch("hv1").walk(from_outside6(w, "fd00:a::10")).ports == []
    got = w.switch("hv1").walk(_ns(w, "2001:db8:ee::2"))
    assert all(o.headers["icmpv6_type"] == 135 for o in got.outputs), got.format()


def _update(w: NatWorld, **kw: Any) -> None:
    w.apply(
        ops.update_router(
            w.topo, w.topo.routers["r"], {"external_gateway": ops.GatewayRequest("ext", **kw)}, w.rev + 1, 0.0
        )
    )


def test_adding_and_removing_the_ipv6_address_keeps_the_ipv4_address_and_snat() -> None:
    w, p = world(gw_v6=False)
    before = v4(gw(w))
    _update(w, fixed_ips=(("", before), ("ext-v6", "")))
    assert v4(gw(w)) == before and len(gw(w).fixed_ips) == 2
    # the single-address form moves nothing but the IPv4 address it names: the IPv6 one stays
    _update(w, subnet_id="ext-sub")
    assert v4(gw(w)) == before and len(gw(w).fixed_ips) == 2
    _update(w, fixed_ips=(("ext-sub", ""),))
    assert gw(w).fixed_ips == (("ext-sub", before),)
    res = w.switch("hv1").walk(from_vm(w, p["a1"], EXT_HOST4[0]))
    assert res.ports == [PATCH] and res.outputs[0].headers["ipv4_src"] == before


@pytest.mark.parametrize(
    ("kw", "code", "reason"),
    [
        ({"fixed_ips": (("ext-v6", ""),)}, "FAILED_PRECONDITION", "IPV6_ONLY_GATEWAY_NOT_SUPPORTED"),
        ({"subnet_id": "ext-v6"}, "FAILED_PRECONDITION", "IPV6_ONLY_GATEWAY_NOT_SUPPORTED"),
        ({"ip_address": "2001:db8:ee::9"}, "FAILED_PRECONDITION", "IPV6_ONLY_GATEWAY_NOT_SUPPORTED"),
        ({"fixed_ips": (("ext-sub", ""), ("", "172.24.4.9"))}, "INVALID_ARGUMENT", ""),
        ({"fixed_ips": (("ext-sub", ""), ("", ""))}, "INVALID_ARGUMENT", ""),
        ({"fixed_ips": (("ext-sub", ""),), "ip_address": "172.24.4.9"}, "INVALID_ARGUMENT", ""),
        ({"fixed_ips": (("ext-sub", ""), ("", "2001:db8:99::5"))}, "INVALID_ARGUMENT", ""),
        ({"fixed_ips": (("ext-sub", ""), ("ext-v6", "2001:db8:ee::1"))}, "INVALID_ARGUMENT", ""),
    ],
)
def test_a_gateway_without_ipv4_or_with_two_of_a_family_is_refused(
    kw: dict[str, Any], code: str, reason: str
) -> None:
    for existing in (False, True):
        w, _p = world(gw_v6=False)
        before = gw(w).fixed_ips
        with pytest.raises(errors.ApiError) as err:
            if existing:
                _update(w, **kw)
            else:
                ops.create_router(
                    w.topo, Router(id="r2", tenant="alice"), ops.GatewayRequest("ext", **kw), 99, 0.0
                )
        assert err.value.code == code and reason in err.value.reason, err.value
        if code == "INVALID_ARGUMENT" and len(kw.get("fixed_ips", ())) == 2 and not kw.get("ip_address"):
            assert [f for f, _d in err.value.violations][0].startswith("external_gateway.fixed_ips[1]"), (
                err.value
            )
        assert gw(w).fixed_ips == before


def test_a_vpn_service_on_a_dual_stack_router_refuses_an_ipv6_peer() -> None:
    """The gateway's IPv6 address shows as the service's external_v6_ip, but tunnels end at its IPv4 address:
    an IPv6 peer is FAILED_PRECONDITION naming it (not accepted and left unrealized)."""
    from topology import ops_vpn
    from topology.records import VpnService

    w, _p = world()
    w.apply(
        ops_vpn.create_vpn_service(w.topo, VpnService(id="v", tenant="alice", router_id="r"), w.rev + 1, 0.0)
    )
    svc = w.topo.vpn_services["v"]
    assert (svc.external_v4_ip, svc.external_v6_ip) == (v4(gw(w)), v6(gw(w)))
    with pytest.raises(errors.ApiError) as err:
        ops_vpn._peer_address("2001:db8:ee::99", svc)
    assert (err.value.code, err.value.reason) == ("FAILED_PRECONDITION", "IPV6_VPN_PEER_NOT_SUPPORTED")
    assert ops_vpn._peer_address("172.24.4.99", svc) == "172.24.4.99"
