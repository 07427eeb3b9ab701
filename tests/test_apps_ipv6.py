"""IPv6 forwarding by behaviour: neighbour discovery answered in flows, distributed IPv6 routing (dual stack,
overlapping tenants, static routes, echo to the router), walked through one chassis's compiled tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr

from apps import arp
from apps.compiler import Compiler, desired_from_scratch
from controller.debug.explain import explain
from tests.test_apps_l2 import TUN, World
from topology import ops
from topology.records import FirewallGroup, FirewallPolicy, FirewallRule, Port, Router, Subnet

NA_R, NA_S, NA_O = arp.NA_R, arp.NA_S, arp.NA_O


def dual_stack_world() -> tuple[World, dict[str, Port]]:
    """Two tenants with the same two dual-stack subnets behind their own router; alice on two chassis."""
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    for tenant in ("alice", "bob"):
        for n, (v4, v6) in {"a": ("10.1.0.0/24", "fd00:1::/64"), "b": ("10.2.0.0/24", "fd00:2::/64")}.items():
            net = f"{tenant}-{n}"
            w.network(net, tenant, v4)
            sub = Subnet(id=net + "-v6", tenant=tenant, network_id=net, cidr=v6, ip_version=6)
            w.apply(ops.create_subnet(w.topo, sub, False, w.rev + 1, 0.0))
        key = w.topo.datapath_keys.choose()
        assert key is not None
        router = Router(id=f"{tenant}-r", tenant=tenant, key=key)
        w.apply([("router", router.id, None, router)])
        for net in (f"{tenant}-a", f"{tenant}-b"):
            for sub_id in (net + "-sub", net + "-v6"):
                w.apply(
                    ops.add_router_interface(
                        w.topo, w.topo.routers[router.id], sub_id, "", f"{router.id}-{sub_id}", w.rev + 1, 0.0
                    )
                )
    p = {
        "a1": port(w, "a1", "alice-a", "hv1", "10.1.0.10", "fd00:1::10"),
        "a2": port(w, "a2", "alice-a", "hv1", "10.1.0.11", "fd00:1::11"),
        "a3": port(w, "a3", "alice-a", "hv1", "10.1.0.12", "fd00:1::12"),
        "b1": port(w, "b1", "alice-b", "hv1", "10.2.0.10", "fd00:2::10"),
        "b2": port(w, "b2", "alice-b", "hv2", "10.2.0.20", "fd00:2::20"),
        "xa": port(w, "xa", "bob-a", "hv1", "10.1.0.10", "fd00:1::10"),
        "xb": port(w, "xb", "bob-b", "hv1", "10.2.0.10", "fd00:2::10"),
    }
    return w, p


def port(w: World, ident: str, net: str, chassis: str, v4: str, v6: str) -> Port:
    p = w.port(ident, net, chassis, v4)
    new = dataclasses.replace(p, fixed_ips=(*p.fixed_ips, (net + "-v6", v6)))
    w.apply([("port", p.id, p, new)])
    return w.topo.ports[ident]


def iface(w: World, router: str, subnet: str) -> Port:
    return w.topo.ports[f"{router}-{subnet}"]


def v6(p: Port) -> str:
    return next(ip for _s, ip in p.fixed_ips if ":" in ip)


def solicited_node(target: str) -> tuple[str, str]:
    low = int(netaddr.IPAddress(target)) & 0xFFFFFF
    group = netaddr.IPAddress((0xFF020000000000000000000000000000 | 0x1FF000000) | low, 6)
    mac = "33:33:" + ":".join(f"{b:02x}" for b in group.packed[-4:])
    return str(group), mac


def ns(w: World, src: Port, target: str, source: str | None = None) -> dict[str, Any]:
    """A neighbour solicitation from `src` (from `source`, default its IPv6 address) for `target`."""
    group, mac = solicited_node(target)
    pkt = {
        "in_port": w.ofport(src),
        "eth_src": src.mac,
        "eth_dst": mac,
        "eth_type": 0x86DD,
        "ipv6_src": v6(src) if source is None else source,
        "ipv6_dst": group,
        "nw_ttl": 255,
        "ip_proto": 58,
        "icmpv6_type": 135,
        "icmpv6_code": 0,
        "ipv6_nd_target": target,
    }
    if pkt["ipv6_src"] != "::":
        pkt["ipv6_nd_sll"] = src.mac
    return pkt


def ip6(w: World, src: Port, dst_mac: str, dst: str, hops: int = 64, **extra: Any) -> dict[str, Any]:
    return {
        "in_port": w.ofport(src),
        "eth_src": src.mac,
        "eth_dst": dst_mac,
        "eth_type": 0x86DD,
        "ipv6_src": v6(src),
        "ipv6_dst": dst,
        "nw_ttl": hops,
        **(extra or {"ip_proto": 17, "udp_src": 5000, "udp_dst": 5001}),
    }


def test_a_solicitation_for_a_ports_address_is_answered_in_flows_and_not_flooded() -> None:
    w, p = dual_stack_world()
    res = w.switch("hv1").walk(ns(w, p["a1"], v6(p["a2"])))
    assert res.ports == [w.ofport(p["a1"])]  # only the asker: a2, a3 and the tunnels see nothing
    h = res.outputs[0].headers
    assert h["icmpv6_type"] == 136 and h["nd_reserved"] == NA_S | NA_O and h["nd_options_type"] == 2
    assert (h["eth_src"], h["ipv6_nd_tll"], h["eth_dst"]) == (p["a2"].mac, p["a2"].mac, p["a1"].mac)
    assert (h["ipv6_src"], h["ipv6_dst"]) == (v6(p["a2"]), v6(p["a1"]))
    # a port on another chassis is answered the same way, here
    assert w.switch("hv1").walk(ns(w, p["b1"], v6(p["b2"]))).ports == [w.ofport(p["b1"])]


def test_the_routers_addresses_are_answered_with_the_router_flag() -> None:
    w, p = dual_stack_world()
    g = iface(w, "alice-r", "alice-a-v6")
    for target in ("fd00:1::1", str(netaddr.EUI(g.mac).ipv6_link_local())):
        res = w.switch("hv1").walk(ns(w, p["a1"], target))
        assert res.ports == [w.ofport(p["a1"])], target
        h = res.outputs[0].headers
        assert (
            h["nd_reserved"] == NA_R | NA_S | NA_O and h["ipv6_nd_tll"] == g.mac and h["ipv6_src"] == target
        )


def test_duplicate_address_detection_and_unknown_targets_are_not_answered() -> None:
    w, p = dual_stack_world()
    sw = w.switch("hv1")
    # a port probing its own address (from ::): nobody answers for it, and no other VM port gets the probe
    # (their addresses are the model's: none listens to that group for an address it would defend); it
    # goes on to the other chassis hosting the network, as multicast did
    dad = sw.walk(ns(w, p["a1"], v6(p["a1"]), source="::"))
    assert dad.ports == [TUN["vxlan"]], dad
    assert all(d.headers["icmpv6_type"] == 135 for d in dad.outputs)
    # an address no port holds: not answered either, and not flooded to the VMs
    unknown = sw.walk(ns(w, p["a1"], "fd00:1::99"))
    assert unknown.ports == [TUN["vxlan"]], unknown
    # tenants never answer for each other: bob's fd00:1::11 does not exist
    assert all(d.headers["icmpv6_type"] == 135 for d in sw.walk(ns(w, p["xa"], "fd00:1::11")).outputs)
    # a port that may hold addresses the model does not know (an IPv6 address pair, port security off) gets
    # them, on its chassis and coming in from the tunnel; others (a2 on hv1, the router) still do not
    pair = dataclasses.replace(p["a3"], allowed_address_pairs=(("fd00:1::99", p["a3"].mac),))
    w.apply([("port", pair.id, p["a3"], pair)])
    sw = w.switch("hv1")
    for probe in (ns(w, p["a1"], "fd00:1::99"), ns(w, p["a1"], v6(p["a1"]), source="::")):
        assert sorted(sw.walk(probe).ports) == sorted([w.ofport(p["a3"]), TUN["vxlan"]]), probe
    off = dataclasses.replace(p["b1"], port_security_enabled=False, security_groups=())
    w.apply([("port", off.id, p["b1"], off)])
    got = w.switch("hv1").walk(ns(w, p["xb"], "fd00:2::99"))
    assert got.ports == [], got  # bob's network: alice's b1 is not on it, and bob has nobody on hv2
    assert w.ofport(p["b1"]) not in w.switch("hv1").walk(ns(w, p["a1"], "fd00:1::98")).ports


def test_ipv6_is_routed_across_chassis_with_hop_limit_minus_one_and_new_macs() -> None:
    w, p = dual_stack_world()
    g = iface(w, "alice-r", "alice-a-v6")
    res = w.switch("hv1").walk(ip6(w, p["a1"], g.mac, v6(p["b2"])))
    assert res.ports == [TUN["vxlan"]]
    h = res.outputs[0].headers
    assert h["tun_ipv4_dst"] == "192.0.2.2" and h["tunnel_id"] == w.topo.networks["alice-b"].segment_id
    assert h["nw_ttl"] == 63 and h["eth_dst"] == p["b2"].mac
    assert h["eth_src"] == iface(w, "alice-r", "alice-b-v6").mac
    back = w.switch("hv2").walk(
        {"in_port": TUN["vxlan"], **{k: v for k, v in h.items() if k not in ("in_port", "reg10")}}
    )
    assert back.ports == [w.ofport(p["b2"])]
    # on one chassis too; hop limit 1 is not forwarded
    assert w.switch("hv1").walk(ip6(w, p["a1"], g.mac, v6(p["b1"]))).ports == [w.ofport(p["b1"])]
    assert w.switch("hv1").walk(ip6(w, p["a1"], g.mac, v6(p["b1"]), hops=1)).dropped


def test_both_families_are_routed_by_one_router_at_once() -> None:
    w, p = dual_stack_world()
    sw = w.switch("hv1")
    v4 = {
        "in_port": w.ofport(p["a1"]),
        "eth_src": p["a1"].mac,
        "eth_dst": iface(w, "alice-r", "alice-a-sub").mac,
        "eth_type": 0x0800,
        "ipv4_src": "10.1.0.10",
        "ipv4_dst": "10.2.0.10",
        "nw_ttl": 64,
        "ip_proto": 1,
    }
    assert sw.walk(v4).ports == [w.ofport(p["b1"])]
    # an IPv6 packet may enter by the router's IPv4 interface MAC too (one router, one routing table)
    assert sw.walk(ip6(w, p["a1"], v4["eth_dst"], v6(p["b1"]))).ports == [w.ofport(p["b1"])]


def test_overlapping_tenants_route_only_inside_their_router() -> None:
    w, p = dual_stack_world()
    sw = w.switch("hv1")
    res = sw.walk(ip6(w, p["xa"], iface(w, "bob-r", "bob-a-v6").mac, "fd00:2::10"))
    assert res.ports == [w.ofport(p["xb"])]
    res = sw.walk(ip6(w, p["a1"], iface(w, "bob-r", "bob-a-v6").mac, "fd00:2::10"))
    assert w.ofport(p["xb"]) not in res.ports and w.ofport(p["b1"]) not in res.ports


def test_echo_to_the_routers_ipv6_address_is_answered() -> None:
    w, p = dual_stack_world()
    g = iface(w, "alice-r", "alice-a-v6")
    for dst in ("fd00:1::1", "fd00:2::1"):  # its own interface, and the far one
        res = w.switch("hv1").walk(ip6(w, p["a1"], g.mac, dst, ip_proto=58, icmpv6_type=128, icmpv6_code=0))
        assert res.ports == [w.ofport(p["a1"])], dst
        h = res.outputs[0].headers
        assert (h["ipv6_src"], h["ipv6_dst"], h["icmpv6_type"]) == (dst, v6(p["a1"]), 129)
        assert h["nw_ttl"] == 64 and h["eth_dst"] == p["a1"].mac


def test_ipv6_static_routes_longest_prefix_first() -> None:
    w, p = dual_stack_world()
    r = w.topo.routers["alice-r"]
    routes = (("fd00:2::80/121", "fd00:2::10"), ("::/0", "fd00:2::20"), ("10.9.0.0/16", "10.2.0.10"))
    w.apply(ops.update_router(w.topo, r, {"routes": routes}, w.rev + 1, 0.0))
    sw = w.switch("hv1")
    g = iface(w, "alice-r", "alice-a-v6").mac
    to = lambda dst: sw.walk(ip6(w, p["a1"], g, dst)).outputs[0].headers["eth_dst"]
    assert to("fd00:2::90") == p["b1"].mac  # /121 route beats the connected /64
    assert to("fd00:2::20") == p["b2"].mac  # connected
    assert to("2001:db8::1") == p["b2"].mac  # default route
    assert sw.walk(ip6(w, p["a1"], g, "fd00:2::7")).dropped  # connected, nobody there


def test_router_firewall_filters_ipv6_by_its_ip_version_6_rules_and_explain_says_so() -> None:
    w, p = dual_stack_world()
    i4, i6 = "alice-r-alice-b-sub", "alice-r-alice-b-v6"  # alice-b's two interface ports, one per family
    rules = [
        FirewallRule(
            id="udp6",
            tenant="alice",
            action="allow",
            protocol="udp",
            ip_version=6,
            destination_port_min=53,
            destination_port_max=53,
        ),
        FirewallRule(id="icmp6", tenant="alice", action="deny", protocol="icmp", ip_version=6),
        FirewallRule(id="any4", tenant="alice", action="allow", ip_version=4),
    ]
    w.apply([("firewall_rule", r.id, None, r) for r in rules])
    w.apply(
        [
            (
                "firewall_policy",
                "pol",
                None,
                FirewallPolicy(id="pol", tenant="alice", rules=("udp6", "icmp6", "any4")),
            )
        ]
    )
    w.apply(
        [
            (
                "firewall_group",
                "fwg",
                None,
                FirewallGroup(id="fwg", tenant="alice", ports=(i4, i6), egress_policy_id="pol"),
            )
        ]
    )
    sw = w.switch("hv1")
    g6 = iface(w, "alice-r", "alice-a-v6").mac
    assert sw.walk(ip6(w, p["a1"], g6, v6(p["b1"]), ip_proto=17, udp_src=5000, udp_dst=53)).ports == [
        w.ofport(p["b1"])
    ]
    assert sw.walk(
        ip6(w, p["a1"], g6, v6(p["b1"]), ip_proto=17, udp_src=5000, udp_dst=54)
    ).dropped  # policy's end
    echo = ip6(w, p["a1"], g6, v6(p["b1"]), ip_proto=58, icmpv6_type=128, icmpv6_code=0)
    assert sw.walk(echo).dropped  # "icmp" in an IPv6 rule is ICMPv6: denied
    v4 = {
        "in_port": w.ofport(p["a1"]),
        "eth_src": p["a1"].mac,
        "eth_dst": iface(w, "alice-r", "alice-a-sub").mac,
        "eth_type": 0x0800,
        "ipv4_src": "10.1.0.10",
        "ipv4_dst": "10.2.0.10",
        "nw_ttl": 64,
        "ip_proto": 1,
        "icmpv4_type": 8,
        "icmpv4_code": 0,
    }
    assert sw.walk(v4).ports == [w.ofport(p["b1"])]  # the IPv4 rule lets IPv4 ICMP through
    # Explain (the model's reasoning): an IPv6 address is judged by the IPv6 rules
    e6 = explain(None, w.topo, "a1", v6(p["b1"]), "icmp", with_trace=False)
    assert not e6.allowed and any("firewallRules/icmp6" in d.resource for d in e6.deciders), e6.verdict
    e4 = explain(None, w.topo, "a1", "10.2.0.10", "icmp", with_trace=False)
    assert e4.allowed, e4.verdict
    assert explain(None, w.topo, "a1", v6(p["b1"]), "udp", 53, with_trace=False).allowed


def test_incremental_compile_equals_full_as_ipv6_pieces_come_and_go() -> None:
    """Every order matters less than every step: after each change (an IPv6 address added to / removed from a
    port, an IPv6 interface detached and attached again, IPv6 routes set, a port moved), the incremental
    compile equals a full one on both chassis."""
    w, p = dual_stack_world()
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)

    def check(changes: list) -> None:  # type: ignore[type-arg]
        comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c), (changes, c)

    a2 = w.topo.ports["a2"]
    check(w.apply([("port", "a2", a2, dataclasses.replace(a2, fixed_ips=a2.fixed_ips[:1]))]))
    a2 = w.topo.ports["a2"]
    check(
        w.apply(
            [
                (
                    "port",
                    "a2",
                    a2,
                    dataclasses.replace(a2, fixed_ips=(*a2.fixed_ips, ("alice-a-v6", "fd00:1::77"))),
                )
            ]
        )
    )
    r = w.topo.routers["alice-r"]
    check(w.apply(ops.update_router(w.topo, r, {"routes": (("fd00:9::/64", "fd00:2::20"),)}, w.rev + 1, 0.0)))
    iface6 = w.topo.ports["alice-r-alice-b-v6"]
    check(w.apply([("port", iface6.id, iface6, None)]))
    before = set(w.topo.ports)
    w.apply(
        ops.add_router_interface(w.topo, w.topo.routers["alice-r"], "alice-b-v6", "", "again", w.rev + 1, 0.0)
    )
    new = (set(w.topo.ports) - before).pop()
    check([("port", new, None, w.topo.ports[new]), ("router", "alice-r", r, w.topo.routers["alice-r"])])
    b2 = w.topo.ports["b2"]
    check(w.apply(ops.update_port(w.topo, b2, {"binding_chassis": "hv1"}, w.rev + 1, 0.0)))


def test_an_ipv6_reject_rule_answers_with_a_rst_or_administratively_prohibited() -> None:
    """A reject rule with ip_version 6 sends the packet to the controller (as for IPv4), which answers TCP
    with a RST and anything else with ICMPv6 destination unreachable code 1, from the destination."""
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet, tcp, udp

    from apps import ids
    from apps.view import View
    from controller.dataplane import PacketIn
    from controller.services import firewall_reject
    from flows.cookie import Cookie

    w, p = dual_stack_world()
    rule = FirewallRule(id="rej6", tenant="alice", action="reject", ip_version=6)
    w.apply([("firewall_rule", rule.id, None, rule)])
    w.apply([("firewall_policy", "pol", None, FirewallPolicy(id="pol", tenant="alice", rules=("rej6",)))])
    ports = ("alice-r-alice-b-sub", "alice-r-alice-b-v6")
    group = FirewallGroup(id="fwg", tenant="alice", ports=ports, egress_policy_id="pol")
    w.apply([("firewall_group", "fwg", None, group)])
    a1, g6 = p["a1"], iface(w, "alice-r", "alice-a-v6").mac
    res = w.switch("hv1").walk(ip6(w, a1, g6, v6(p["b1"]), ip_proto=6, tcp_src=40000, tcp_dst=22))
    assert res.ports == ["CONTROLLER"], res
    flow = [s.flow for s in res.steps if s.stage == "fw_router_out" and s.flow is not None][-1]
    assert Cookie.decode(int(flow.cookie)).app == ids.FIREWALL  # type: ignore[arg-type,union-attr]

    def frame(l4: object, nxt: int) -> bytes:
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(dst=g6, src=a1.mac, ethertype=0x86DD))
        pkt.add_protocol(ipv6.ipv6(src=v6(a1), dst=v6(p["b1"]), nxt=nxt, hop_limit=64))
        pkt.add_protocol(l4)
        if nxt == 17:
            pkt.add_protocol(b"hello")
        pkt.serialize()
        return bytes(pkt.data)

    sent: list[tuple[int, bytes, int]] = []
    handle = firewall_reject.handler(lambda dp, data, port: sent.append((dp, data, port)))

    def pin(data: bytes) -> PacketIn:
        return PacketIn("hv1", 1, data, {"in_port": w.ofport(a1)}, w.topo, View(w.topo, w.runtime))

    syn = tcp.tcp(src_port=40000, dst_port=22, seq=1000, bits=firewall_reject.TCP_SYN, window_size=1000)
    handle(pin(frame(syn, 6)))
    out = packet.Packet(sent[0][1])
    e, ip, t = out.get_protocol(ethernet.ethernet), out.get_protocol(ipv6.ipv6), out.get_protocol(tcp.tcp)
    assert sent[0][2] == w.ofport(a1) and (e.src, e.dst, e.ethertype) == (g6, a1.mac, 0x86DD)
    assert (ip.src, ip.dst, t.src_port, t.dst_port) == (v6(p["b1"]), v6(a1), 22, 40000)
    assert t.bits == firewall_reject.TCP_RST | firewall_reject.TCP_ACK and (t.seq, t.ack) == (0, 1001)
    u = frame(udp.udp(src_port=5000, dst_port=53), 17)
    handle(pin(u))
    ic = packet.Packet(sent[1][1]).get_protocol(icmpv6.icmpv6)
    assert (ic.type_, ic.code) == (1, 1) and ic.data == bytes(4) + u[14:]
    # never about an ICMPv6 error
    err = icmpv6.icmpv6(type_=1, code=4, data=bytes(4) + u[14:])
    handle(pin(frame(err, 58)))
    assert len(sent) == 2


def test_trace_and_explain_walk_ipv6_packets_through_the_flows() -> None:
    """trace builds the IPv6 packet a VM sends (ICMPv6 echo by default, to its gateway's MAC when routed) and
    walks it across chassis; Explain to an IPv6 address walks the flows and agrees with them, firewall rules of
    ip_version 6 included; echo to the router's IPv6 address is answered in flows."""
    from controller.debug import trace as tr
    from tests.test_trace import FakeDataplane

    w, p = dual_stack_world()
    dp = FakeDataplane(w)
    g6 = iface(w, "alice-r", "alice-a-v6")
    res = tr.trace(dp, port_id="a1", headers={"ipv6_dst": v6(p["b2"])})
    assert res.hops[0].entry["eth_dst"] == g6.mac and res.hops[0].entry["icmpv6_type"] == 128, res.hops[
        0
    ].entry
    assert [h.chassis for h in res.hops] == ["hv1", "hv2"], res.verdict
    out = res.hops[-1].outputs[0]
    assert out.port == "ports/b2" and out.headers["nw_ttl"] == 63 and out.headers["ipv6_src"] == v6(p["a1"])
    # a destination port and eth_type 0x86dd: TCP to its IPv6 address; on-link goes straight to its MAC
    same = tr.trace(dp, port_id="a1", dst_port="a2", headers={"eth_type": "0x86dd", "tcp_dst": "22"})
    assert same.hops[0].entry["ipv6_dst"] == v6(p["a2"]) and same.hops[0].entry["eth_dst"] == p["a2"].mac
    assert same.verdict.startswith("delivered to ports/a2"), same.verdict
    ll = str(netaddr.EUI(p["a2"].mac).ipv6_link_local())  # on-link whatever the subnets: to its MAC
    to_ll = tr.trace(dp, port_id="a1", headers={"ipv6_dst": ll, "ip_proto": "17", "udp_dst": "53"})
    assert to_ll.hops[0].entry["eth_dst"] == p["a2"].mac and to_ll.delivered_to == [("ports/a2", "hv1")]
    e = explain(dp, w.topo, "a1", v6(p["b2"]), "tcp", 22)
    assert e.allowed and e.confirmed and e.trace is not None, e.verdict
    assert not any("no walk" in n for n in e.notes), e.notes
    echo = explain(dp, w.topo, "a1", "fd00:2::1", "icmp")
    assert echo.allowed and echo.walk is not None and echo.walk.outcome == "answered", echo.verdict
    rule = FirewallRule(id="icmp6", tenant="alice", action="deny", protocol="icmp", ip_version=6)
    w.apply([("firewall_rule", rule.id, None, rule)])
    w.apply([("firewall_policy", "pol", None, FirewallPolicy(id="pol", tenant="alice", rules=("icmp6",)))])
    group = FirewallGroup(id="fwg", tenant="alice", ports=("alice-r-alice-b-v6",), egress_policy_id="pol")
    w.apply([("firewall_group", "fwg", None, group)])
    dp = FakeDataplane(w)
    denied = explain(dp, w.topo, "a1", v6(p["b2"]), "icmp")
    assert not denied.allowed and denied.confirmed, denied.verdict
    assert denied.walk is not None and denied.walk.outcome == "dropped", denied.walk
    assert any("firewallRules/icmp6" in d.resource for d in denied.deciders), denied.deciders


def test_explain_between_ipv6_only_ports_walks_ipv6() -> None:
    """Asked about a port, Explain walks IPv4 unless both ports have IPv6 addresses only: then IPv6."""
    from tests.test_trace import FakeDataplane

    w, p = dual_stack_world()
    for ident, net, chassis, a4, a6 in (
        ("c1", "alice-a", "hv1", "10.1.0.30", "fd00:1::30"),
        ("d1", "alice-b", "hv2", "10.2.0.30", "fd00:2::30"),
    ):
        old = port(w, ident, net, chassis, a4, a6)
        only6 = dataclasses.replace(old, fixed_ips=tuple(f for f in old.fixed_ips if ":" in f[1]))
        w.apply([("port", ident, old, only6)])
    e = explain(FakeDataplane(w), w.topo, "c1", "d1", "icmp")
    assert e.allowed and e.confirmed and not any("no walk" in n for n in e.notes), (e.verdict, e.notes)
    assert e.walk is not None and e.walk.reached is not None and e.walk.reached.id == "d1", e.walk
    assert e.walk.legs[0].packet["ipv6_dst"] == "fd00:2::30" and e.walk.legs[0].packet["icmpv6_type"] == 128
    assert explain(FakeDataplane(w), w.topo, "a1", "b2", "icmp").walk.legs[0].packet["eth_type"] == 0x0800  # type: ignore[union-attr]
