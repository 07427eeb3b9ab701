"""The router firewall by behaviour: walk packets (with the walker's conntrack) through a chassis's tables.

Two subnets behind one router (tests/test_apps_l3.py's world) plus a second port in subnet a; the
security groups (apps/acl.py) track and commit, and allow everything, so what is filtered is the firewall's.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp

from apps import firewall as firewall_app
from apps import ids
from apps.compiler import Compiler, desired_from_scratch
from apps.view import View
from controller.dataplane import PacketIn
from controller.services import firewall_reject
from flows.cookie import Cookie
from flows.flow import Flow, Group
from flows.walker import Result, Switch
from tests.test_apps_l2 import PATCH, TUN, World
from tests.test_apps_l3 import attach, gw, routed_world
from tests.test_apps_nat import EXT_HOST, GC, add_fip, from_outside, nat_world, out_of_vm
from topology import ops
from topology.records import (
    EGRESS,
    INGRESS,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
    Port,
    SecurityGroup,
    SecurityGroupRule,
)

IPV4 = 0x0800


def open_group(w: World, p: dict[str, Port]) -> None:
    """Every port of `p` in a security group allowing everything both ways (so only the router firewall
    filters; the conntrack is the groups')."""
    w.apply([("security_group", "open", None, SecurityGroup(id="open", tenant="alice"))])
    for direction in (INGRESS, EGRESS):
        key = w.topo.rule_keys.choose()
        assert key is not None
        r = SecurityGroupRule(
            id=f"open-{direction}", tenant="alice", security_group_id="open", direction=direction, key=key
        )
        w.apply([("security_group_rule", r.id, None, r)])
    for name, port in list(p.items()):
        new = dataclasses.replace(port, security_groups=("open",))
        w.apply([("port", port.id, port, new)])
        p[name] = new


def world() -> tuple[World, dict[str, Port]]:
    """tests/test_apps_l3.py's routed world plus a2 in subnet a, all in the open group."""
    w, p = routed_world()
    p["a2"] = w.port("a2", "alice-a", "hv1", "10.1.0.11")
    open_group(w, p)
    return w, p


def switch(w: World, chassis: str) -> Switch:
    items = desired_from_scratch(w.topo, w.runtime, chassis)
    return Switch([i for i in items if isinstance(i, Flow)], [i for i in items if isinstance(i, Group)])


I1, I2 = "alice-r-alice-a", "alice-r-alice-b"


def rule(
    ident: str, action: str = "deny", protocol: str = "tcp", dport: int | tuple[int, int] = 0, **kw: object
) -> FirewallRule:
    lo, hi = dport if isinstance(dport, tuple) else (dport, dport)
    return FirewallRule(
        id=ident,
        tenant="alice",
        action=action,
        protocol=protocol,
        destination_port_min=lo,
        destination_port_max=hi,
        **kw,
    )  # type: ignore[arg-type]


def firewall(
    w: World,
    rules: list[FirewallRule],
    side: str = "egress",
    ports: tuple[str, ...] = (I2,),
    **group_kw: object,
) -> list:  # type: ignore[type-arg]
    """One policy of `rules`, on `side` of a group on `ports`; returns the changes."""
    changes: list = [("firewall_rule", r.id, None, r) for r in rules]  # type: ignore[type-arg]
    policy = FirewallPolicy(id="pol", tenant="alice", rules=tuple(r.id for r in rules))
    changes.append(("firewall_policy", policy.id, None, policy))
    group = FirewallGroup(
        id="fwg", tenant="alice", ports=ports, **{f"{side}_policy_id": policy.id}, **group_kw
    )  # type: ignore[arg-type]
    changes.append(("firewall_group", group.id, None, group))
    return w.apply(changes)


def send(
    sw: Switch,
    w: World,
    src: Port,
    dst_ip: str,
    dst_mac: str,
    proto: int = 6,
    sport: int = 40000,
    dport: int = 22,
) -> Result:
    l4 = {6: "tcp", 17: "udp"}[proto]
    return sw.walk(
        {
            "in_port": w.ofport(src),
            "eth_src": src.mac,
            "eth_dst": dst_mac,
            "eth_type": IPV4,
            "ipv4_src": src.fixed_ips[0][1],
            "ipv4_dst": dst_ip,
            "nw_ttl": 64,
            "ip_proto": proto,
            f"{l4}_src": sport,
            f"{l4}_dst": dport,
        }
    )


def routed(sw: Switch, w: World, src: Port, dst: Port, **kw: int) -> Result:
    """src -> dst through the router (src's gateway MAC)."""
    router_port = gw(w, "alice-r", src.network_id)
    return send(sw, w, src, dst.fixed_ips[0][1], router_port.mac, **kw)


def local(sw: Switch, w: World, src: Port, dst: Port, **kw: int) -> Result:
    return send(sw, w, src, dst.fixed_ips[0][1], dst.mac, **kw)


DENY_22_ALLOW_ALL = [rule("r22", dport=22), rule("any", "allow", protocol="")]


def test_egress_deny_blocks_routed_tcp_22_and_nothing_else() -> None:
    w, p = world()
    firewall(w, DENY_22_ALLOW_ALL, "egress")
    sw = switch(w, "hv1")
    res = routed(sw, w, p["a1"], p["b1"], dport=22)
    assert res.dropped and res.dropped_at == "fw_router_out"
    assert routed(sw, w, p["a1"], p["b1"], dport=80).ports == [w.ofport(p["b1"])]
    # to the other chassis: decided here, where it is routed
    assert routed(sw, w, p["a1"], p["b2"], dport=22).dropped_at == "fw_router_out"
    # inside each subnet nothing changes (no router on the way)
    assert local(sw, w, p["a1"], p["a2"], dport=22).ports == [w.ofport(p["a2"])]
    assert local(sw, w, p["b1"], p["b2"], dport=22).ports != []
    # the other direction leaves through I1, which has no firewall
    assert routed(sw, w, p["b1"], p["a1"], dport=22).ports == [w.ofport(p["a1"])]


def test_ingress_deny_blocks_at_the_sources_interface() -> None:
    w, p = world()
    firewall(w, DENY_22_ALLOW_ALL, "ingress", ports=(I1,))
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], dport=22).dropped_at == "fw_router_in"
    assert routed(sw, w, p["a1"], p["b1"], dport=80).ports == [w.ofport(p["b1"])]
    assert routed(sw, w, p["b1"], p["a1"], dport=22).ports == [w.ofport(p["a1"])]  # enters through I2
    assert local(sw, w, p["a1"], p["a2"], dport=22).ports == [w.ofport(p["a2"])]


def test_replies_pass_a_policy_that_denies_everything_new() -> None:
    w, p = world()
    # nothing new may enter the router from subnet b, nor leave it into subnet a
    firewall(w, [rule("all", protocol="")], "ingress", ports=(I2,))
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], sport=40000, dport=80).ports == [w.ofport(p["b1"])]
    # b1's answer (its zone holds the connection, committed on delivery) is a reply: it passes
    reply = routed(sw, w, p["b1"], p["a1"], sport=80, dport=40000)
    assert reply.ports == [w.ofport(p["a1"])]
    # but b1 cannot open a connection of its own
    assert routed(sw, w, p["b1"], p["a1"], sport=80, dport=40001).dropped_at == "fw_router_in"


def test_replies_pass_an_egress_policy_that_denies_everything_new() -> None:
    w, p = world()
    firewall(w, [rule("all", protocol="")], "egress", ports=(I1,))
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], dport=80).ports == [w.ofport(p["b1"])]
    assert routed(sw, w, p["b1"], p["a1"], sport=80, dport=40000).ports == [w.ofport(p["a1"])]
    assert routed(sw, w, p["b1"], p["a1"], sport=80, dport=40001).dropped_at == "fw_router_out"


def test_rule_order_decides_and_disabled_rules_are_skipped() -> None:
    w, p = world()
    firewall(
        w, [rule("allow22", "allow", dport=22), rule("r22", dport=22), rule("all", protocol="")], "egress"
    )
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], dport=22).ports == [w.ofport(p["b1"])]  # first match: allow
    assert routed(sw, w, p["a1"], p["b1"], dport=80).dropped  # no allow: the deny-all
    w2, p2 = world()
    firewall(w2, [rule("r22", dport=22, enabled=False), rule("any", "allow", protocol="")], "egress")
    assert routed(switch(w2, "hv1"), w2, p2["a1"], p2["b1"], dport=22).ports == [w2.ofport(p2["b1"])]


def test_no_match_is_deny_and_an_empty_group_filters_nothing() -> None:
    w, p = world()
    firewall(w, [rule("allow80", "allow", dport=80)], "egress")
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], dport=80).ports == [w.ofport(p["b1"])]
    assert routed(sw, w, p["a1"], p["b1"], dport=22).dropped_at == "fw_router_out"
    assert routed(sw, w, p["a1"], p["b1"], proto=17, dport=80).dropped_at == "fw_router_out"
    w2, p2 = world()
    g = FirewallGroup(id="fwg", tenant="alice", ports=(I1, I2))
    w2.apply([("firewall_group", g.id, None, g)])
    sw2 = switch(w2, "hv1")
    assert routed(sw2, w2, p2["a1"], p2["b1"], dport=22).ports == [w2.ofport(p2["b1"])]
    assert routed(sw2, w2, p2["b1"], p2["a1"], dport=22).ports == [w2.ofport(p2["a1"])]


def test_ranges_addresses_and_protocols() -> None:
    w, p = world()
    firewall(
        w,
        [
            rule("range", dport=(20, 25), source_ip_address="10.1.0.0/28"),
            rule("udp", protocol="udp", dport=53),
            rule("any", "allow", protocol=""),
        ],
        "egress",
    )
    sw = switch(w, "hv1")
    for port, blocked in ((19, False), (20, True), (23, True), (25, True), (26, False)):
        assert routed(sw, w, p["a1"], p["b1"], dport=port).dropped is blocked, port
    assert routed(sw, w, p["a1"], p["b1"], proto=17, dport=53).dropped
    assert not routed(sw, w, p["a1"], p["b1"], proto=17, dport=54).dropped
    # 10.1.0.11 is outside 10.1.0.0/28? no: inside; a source outside the CIDR is not matched
    w.apply(
        [
            (
                "firewall_rule",
                "range",
                w.topo.firewall_rules["range"],
                dataclasses.replace(w.topo.firewall_rules["range"], source_ip_address="10.1.0.10/32"),
            )
        ]
    )
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], dport=22).dropped
    assert not routed(sw, w, p["a2"], p["b1"], dport=22).dropped


def test_a_policy_holds_max_rules_and_fails_closed_beyond() -> None:
    """Rule n gets priority MATCH(199 - n): 200 rules are ordered in flows; later ones are not compiled,
    so what they would allow is denied by the policy's end."""
    assert firewall_app.MAX_RULES == 200
    for allow_at, passes in ((firewall_app.MAX_RULES - 1, True), (firewall_app.MAX_RULES, False)):
        w, p = world()
        rules = [rule(f"u{i}", protocol="udp", dport=1000 + i) for i in range(allow_at)]
        firewall(w, [*rules, rule("any", "allow", protocol="")], "egress")
        sw = switch(w, "hv1")
        assert routed(sw, w, p["a1"], p["b1"], dport=80).dropped is not passes, allow_at
        assert routed(sw, w, p["a1"], p["b1"], proto=17, dport=1000).dropped  # the first rule: deny


def test_reject_goes_to_the_controller_under_the_firewall_cookie() -> None:
    w, p = world()
    firewall(w, [rule("rej", "reject", dport=22), rule("any", "allow", protocol="")], "ingress", ports=(I1,))
    res = routed(switch(w, "hv1"), w, p["a1"], p["b1"], dport=22)
    assert res.ports == ["CONTROLLER"]
    flow = [s.flow for s in res.steps if s.stage == "fw_router_in" and s.flow is not None][-1]
    assert Cookie.decode(int(flow.cookie)).app == ids.FIREWALL  # type: ignore[arg-type,union-attr]


def test_a_group_that_is_down_forwards_nothing_new() -> None:
    w, p = world()
    firewall(w, DENY_22_ALLOW_ALL, "egress", admin_state_up=False)
    sw = switch(w, "hv1")
    assert routed(sw, w, p["a1"], p["b1"], dport=80).dropped
    assert routed(sw, w, p["b1"], p["a1"], dport=80).dropped_at == "fw_router_in"


def test_flows_only_where_the_interfaces_network_is_hosted() -> None:
    w, _p = world()
    firewall(w, DENY_22_ALLOW_ALL, "egress")
    w.network("alice-c", "alice", "10.3.0.0/24")
    w.chassis("hv3", "192.0.2.3")
    w.port("c1", "alice-c", "hv3", "10.3.0.10")  # alice-c is not routed: hv3 hosts nothing of the router
    fw = [
        i
        for i in desired_from_scratch(w.topo, w.runtime, "hv3")
        if isinstance(i, Flow) and Cookie.decode(int(i.cookie)).app == ids.FIREWALL
    ]  # type: ignore[union-attr]
    assert fw == []
    assert any(
        i.stage == "fw_router_out"
        for i in desired_from_scratch(w.topo, w.runtime, "hv2")
        if isinstance(i, Flow)
    )


def test_floating_ip_inbound_meets_the_egress_policy_on_the_gateway_chassis() -> None:
    w, p = nat_world()
    open_group(w, p)
    fip = add_fip(w, "a2")
    firewall(
        w,
        [rule("r22", dport=22), rule("rej", "reject", dport=23), rule("any", "allow", protocol="")],
        "egress",
        ports=("r-a",),
    )
    sw = w.switch("hv1")  # the gateway chassis
    assert sw.walk(from_outside(w, fip.address, sport=5555, dport=22)).dropped_at == "fw_router_out"
    assert sw.walk(from_outside(w, fip.address, sport=5555, dport=80)).ports == [TUN["vxlan"]]
    # reject from outside: to the controller, which has no local VM to answer: it acts as deny
    rej = sw.walk(from_outside(w, fip.address, sport=5555, dport=23))
    assert rej.ports == ["CONTROLLER"]
    frame = _frame(
        w.topo.ports["r-a"].mac,
        p["a2"].mac,
        EXT_HOST[0],
        "10.0.0.20",
        tcp.tcp(src_port=5555, dst_port=23, seq=1, bits=firewall_reject.TCP_SYN, window_size=1),
    )
    pin = PacketIn("hv1", 1, frame, {"in_port": PATCH}, w.topo, View(w.topo, w.runtime, GC))
    assert firewall_reject.build_reply(pin) is None


def test_replies_from_outside_pass_an_egress_policy_that_denies_everything_new() -> None:
    w, p = nat_world()
    open_group(w, p)
    firewall(w, [], "egress", ports=("r-a",))
    sw = w.switch("hv1")
    out = sw.walk(out_of_vm(w, p["a1"], EXT_HOST[0], tcp_src=41000, tcp_dst=80))
    assert out.ports == [PATCH], out.format()
    h = out.outputs[0].headers
    back = sw.walk(from_outside(w, h["ipv4_src"], sport=80, dport=h["tcp_src"]))
    assert back.ports == [w.ofport(p["a1"])], back.format()
    # while a new connection from outside (to a floating IP) is denied
    fip = add_fip(w, "a2")
    assert (
        w.switch("hv1").walk(from_outside(w, fip.address, sport=80, dport=22)).dropped_at == "fw_router_out"
    )


# ------------------------------------------------------------------------------------------ reject replies


def _pin(w: World, src: Port, data: bytes) -> PacketIn:
    return PacketIn("hv1", 1, data, {"in_port": w.ofport(src)}, w.topo, View(w.topo, w.runtime))


def _frame(eth_src: str, eth_dst: str, src_ip: str, dst_ip: str, l4: object, ttl: int = 63) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=eth_dst, src=eth_src, ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=6 if isinstance(l4, tcp.tcp) else 17, ttl=ttl))
    pkt.add_protocol(l4)
    if isinstance(l4, udp.udp):
        pkt.add_protocol(b"hello")
    pkt.serialize()
    return bytes(pkt.data)


def test_reject_answers_a_syn_with_a_rst_from_the_destination() -> None:
    w, p = world()
    a1, b1 = p["a1"], p["b1"]
    sent: list[tuple[int, bytes, int]] = []
    handle = firewall_reject.handler(lambda dp, data, port: sent.append((dp, data, port)))
    syn = tcp.tcp(src_port=40000, dst_port=22, seq=1000, bits=firewall_reject.TCP_SYN, window_size=1000)
    # as seen in fw_router_out: routed, eth_src = the egress interface, eth_dst = b1
    handle(_pin(w, a1, _frame(gw(w, "alice-r", "alice-b").mac, b1.mac, "10.1.0.10", "10.2.0.10", syn)))
    assert len(sent) == 1 and sent[0][0] == 1 and sent[0][2] == w.ofport(a1)
    out = packet.Packet(sent[0][1])
    e, ip, t = out.get_protocol(ethernet.ethernet), out.get_protocol(ipv4.ipv4), out.get_protocol(tcp.tcp)
    assert (e.src, e.dst) == (gw(w, "alice-r", "alice-a").mac, a1.mac)
    assert (ip.src, ip.dst, t.src_port, t.dst_port) == ("10.2.0.10", "10.1.0.10", 22, 40000)
    assert t.bits == firewall_reject.TCP_RST | firewall_reject.TCP_ACK and (t.seq, t.ack) == (0, 1001)
    # a segment with ACK gets a plain RST with seq = its ack
    ack = tcp.tcp(src_port=40000, dst_port=22, seq=5, ack=777, bits=firewall_reject.TCP_ACK, window_size=1000)
    handle(
        _pin(w, a1, _frame(a1.mac, gw(w, "alice-r", "alice-a").mac, "10.1.0.10", "10.2.0.10", ack, ttl=64))
    )
    t2 = packet.Packet(sent[1][1]).get_protocol(tcp.tcp)
    assert (t2.bits, t2.seq) == (firewall_reject.TCP_RST, 777)


def test_reject_answers_udp_with_port_unreachable_quoting_the_packet() -> None:
    w, p = world()
    a1 = p["a1"]
    sent: list[tuple[int, bytes, int]] = []
    handle = firewall_reject.handler(lambda dp, data, port: sent.append((dp, data, port)))
    frame = _frame(
        a1.mac,
        gw(w, "alice-r", "alice-a").mac,
        "10.1.0.10",
        "10.2.0.10",
        udp.udp(src_port=5000, dst_port=53),
        ttl=64,
    )
    handle(_pin(w, a1, frame))
    out = packet.Packet(sent[0][1])
    ip, ic = out.get_protocol(ipv4.ipv4), out.get_protocol(icmp.icmp)
    assert (ip.src, ip.dst, ic.type, ic.code) == ("10.2.0.10", "10.1.0.10", 3, 3)
    assert ic.data.data == frame[14 : 14 + 20 + 8]
    # never about an ICMP error, and nothing for a packet that did not come from a local VM
    sent.clear()
    bogus = PacketIn("hv1", 1, frame, {"in_port": 4242}, w.topo, View(w.topo, w.runtime))
    handle(bogus)
    assert sent == []


# ------------------------------------------------------------------------------------------ incremental


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "toggle",
                    "action",
                    "reorder",
                    "ports",
                    "policy",
                    "group",
                    "move",
                    "detach",
                    "attach",
                    "delete_rule",
                ]
            ),
            st.sampled_from(["hv1", "hv2"]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_incremental_equals_full_with_firewalls(actions) -> None:  # type: ignore[no-untyped-def]
    w, _p = world()
    firewall(
        w,
        [rule("r22", dport=22), rule("r80", "reject", dport=80), rule("any", "allow", protocol="")],
        "egress",
    )
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    for op, ch in actions:
        t = w.topo
        g = t.firewall_groups.get("fwg")
        pol = t.firewall_policies["pol"]
        changes: list = []  # type: ignore[type-arg]
        if op == "toggle" and "r22" in t.firewall_rules:
            r = t.firewall_rules["r22"]
            changes = [("firewall_rule", r.id, r, dataclasses.replace(r, enabled=not r.enabled))]
        elif op == "action":
            r = t.firewall_rules["r80"]
            changes = [
                (
                    "firewall_rule",
                    r.id,
                    r,
                    dataclasses.replace(
                        r, action={"reject": "allow", "allow": "deny", "deny": "reject"}[r.action]
                    ),
                )
            ]
        elif op == "reorder":
            changes = [("firewall_policy", pol.id, pol, dataclasses.replace(pol, rules=pol.rules[::-1]))]
        elif op == "ports" and g is not None:
            ports = tuple(x for x in (I1, I2) if x in t.ports and x not in g.ports) or ()
            changes = [("firewall_group", g.id, g, dataclasses.replace(g, ports=ports))]
        elif op == "policy" and g is not None:
            swap = {"ingress_policy_id": g.egress_policy_id, "egress_policy_id": g.ingress_policy_id}
            changes = [("firewall_group", g.id, g, dataclasses.replace(g, **swap))]
        elif op == "group":
            if g is not None:
                changes = [("firewall_group", g.id, g, None)]
            else:
                new = FirewallGroup(id="fwg", tenant="alice", ports=(I2,), ingress_policy_id="pol")
                changes = [("firewall_group", new.id, None, new)]
        elif op == "move" and "b2" in t.ports:
            changes = ops.update_port(t, t.ports["b2"], {"binding_chassis": ch}, w.rev + 1, 0.0)
        elif op == "detach" and I2 in t.ports:
            changes = [("port", I2, t.ports[I2], None)]
        elif op == "attach" and I2 not in t.ports:
            attach(w, "alice-r", "alice-b")
            changes = [("port", I2, None, w.topo.ports[I2])]
            w.rev -= 1  # attach applied it already
        elif op == "delete_rule" and "r22" in t.firewall_rules:
            changes = [
                (
                    "firewall_policy",
                    pol.id,
                    pol,
                    dataclasses.replace(pol, rules=tuple(x for x in pol.rules if x != "r22")),
                ),
                ("firewall_rule", "r22", t.firewall_rules["r22"], None),
            ]
        if not changes:
            continue
        if op != "attach":
            w.apply(changes)
        else:
            w.rev += 1
        comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c), (op, ch, c)


def test_explain_names_the_deciding_firewall_rule_and_an_admin_down_group() -> None:
    from controller.debug.explain import explain
    from tests.test_trace import FakeDataplane

    w, p = world()
    firewall(w, DENY_22_ALLOW_ALL, "egress")
    no = explain(FakeDataplane(w), None, "a1", "b1", "tcp", 22)
    assert not no.allowed and no.confirmed is True, no.format()
    fw = [d for d in no.deciders if d.kind == "firewall"]
    assert [(d.allows, d.resource) for d in fw] == [(False, "firewallRules/r22")]
    ok = explain(FakeDataplane(w), None, "a1", "b1", "tcp", 80)
    assert ok.allowed and ok.confirmed is True
    assert [d.resource for d in ok.deciders if d.kind == "firewall"] == ["firewallRules/any"]
    old = w.topo.firewall_groups["fwg"]
    w.apply([("firewall_group", "fwg", old, dataclasses.replace(old, admin_state_up=False))])
    down = explain(FakeDataplane(w), None, "a1", "b1", "tcp", 80)
    assert not down.allowed and down.confirmed is True, down.format()
    assert any(d.kind == "firewall" and "administratively down" in d.description for d in down.deciders)


def test_a_policy_orders_at_most_as_many_rules_as_the_dataplane_can() -> None:
    from topology import ops_security
    from topology.errors import ApiError

    w, _p = world()
    rules = [rule(f"r{i}", dport=1000 + i) for i in range(firewall_app.MAX_RULES + 1)]
    w.apply([("firewall_rule", r.id, None, r) for r in rules])
    try:
        ops_security.create_firewall_policy(
            w.topo, FirewallPolicy(id="big", tenant="alice", rules=tuple(r.id for r in rules)), 99, 0.0
        )
    except ApiError as err:
        assert err.violations and err.violations[0][0] == "firewall_rules"
    else:
        raise AssertionError("a policy longer than the dataplane can order was accepted")
    ops_security.create_firewall_policy(
        w.topo, FirewallPolicy(id="ok", tenant="alice", rules=tuple(r.id for r in rules[:-1])), 99, 0.0
    )
