"""Behaviour: walk packets through small compiled pipelines and assert where they go."""

from __future__ import annotations

import pytest

from flows import actions as A
from flows import pipeline as P
from flows.flow import Bucket, Flow, Group
from flows.format import ct_state_text
from flows.walker import CT_EST, CT_NEW, CT_TRK, Switch, WalkError

NET, NET2, ROUTER = 5, 6, 100
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
MAC_C, MAC_D = "02:00:00:00:00:0c", "02:00:00:00:00:0d"
R5, R6 = "02:00:00:00:01:05", "02:00:00:00:01:06"
BCAST = "ff:ff:ff:ff:ff:ff"
TUN_PORT, REMOTE_VTEP = 10, "192.168.0.2"
PORTS = {1: (11, MAC_A, NET), 2: (12, MAC_B, NET), 3: (14, MAC_D, NET2)}  # ofport: (key, mac, net)
FLOOD_ALL, FLOOD_LOCAL = 1, 2
ALLOW_EST, ALLOW_NEW = CT_TRK | CT_EST, CT_TRK | CT_NEW


def passthrough(stage: str, nxt: str) -> Flow:
    return Flow(stage, P.DEFAULT, {}, [A.Goto(nxt)])


def tunnel_out() -> list[A.Action]:
    return [A.SetField("tunnel_id", NET), A.SetField("tun_ipv4_dst", REMOTE_VTEP), A.Output(TUN_PORT)]


def base_flows(acl_ingress: list[Flow] | None = None) -> list[Flow]:
    fl = []
    for ofport, (key, mac, net) in PORTS.items():
        fl += [
            Flow(
                "classify",
                P.MATCH,
                {"in_port": ofport},
                [A.WriteMetadata(net), A.load("reg6", key), A.load("reg5", 1), A.Goto("port_sec_in")],
            ),
            Flow("port_sec_in", P.MATCH, {"reg6": key, "eth_src": mac}, [A.Goto("plugin_from_port")]),
            Flow(
                "l2_lookup",
                P.MATCH,
                {"metadata": net, "eth_dst": mac},
                [A.load("reg7", key), A.Goto("egress_dispatch")],
            ),
            Flow("egress_dispatch", P.MATCH, {"reg7": key}, [A.Goto("acl_ingress")]),
            Flow("output", P.MATCH, {"reg7": key}, [A.Output(ofport)]),
        ]
    from_tunnel = P.flags_match([P.FROM_TUNNEL])
    fl += [
        Flow(
            "classify",
            P.MATCH,
            {"in_port": TUN_PORT, "tunnel_id": NET},
            [
                A.WriteMetadata(NET),
                A.load("reg10", 1, P.FROM_TUNNEL.bit, P.FROM_TUNNEL.bit),
                A.Goto("l2_lookup"),
            ],
        ),
        Flow("classify", P.DEFAULT),  # unknown ports drop
        Flow("port_sec_in", P.DEFAULT),  # spoofed sources drop
        Flow("plugin_from_port", P.DEFAULT, {}, [A.Goto("acl_egress")]),
        Flow("plugin_to_port", P.DEFAULT, {}, [A.Goto("output")]),
        Flow("acl_egress", P.DEFAULT, {}, [A.Goto("arp_nd")]),
        passthrough("arp_nd", "dhcp"),
        passthrough("dhcp", "lb"),
        passthrough("lb", "l2_lookup"),
        Flow(
            "l2_lookup",
            P.MATCH,
            {"metadata": NET, "eth_dst": MAC_C},
            [A.load("reg7", 13), A.Goto("egress_dispatch")],
        ),
        Flow("egress_dispatch", P.MATCH, {"reg7": 13}, tunnel_out()),
        Flow(
            "l2_lookup",
            P.LOW,
            {"metadata": NET, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
            [A.GroupAction(FLOOD_ALL)],
        ),
        Flow(
            "l2_lookup",
            P.LOW(1),
            {"metadata": NET, "reg10": from_tunnel, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
            [A.GroupAction(FLOOD_LOCAL)],
        ),
    ]
    fl += (
        acl_ingress
        if acl_ingress is not None
        else [Flow("acl_ingress", P.DEFAULT, {}, [A.Goto("plugin_to_port")])]
    )
    return fl


def local(key: int) -> Bucket:
    return Bucket((A.load("reg7", key), A.Resubmit("egress_dispatch")))


GROUPS = [
    Group(FLOOD_ALL, "all", (local(11), local(12), Bucket(tuple(tunnel_out())))),
    Group(FLOOD_LOCAL, "all", (local(11), local(12))),
]


def l2_switch(**kw) -> Switch:
    return Switch(base_flows(**kw), GROUPS)


def test_unicast_from_port_1_to_mac_b_leaves_on_port_2_and_nowhere_else():
    r = l2_switch().walk({"in_port": 1, "eth_src": MAC_A, "eth_dst": MAC_B, "eth_type": 0x0800})
    assert r.ports == [2]
    assert r.stages() == [
        "classify",
        "port_sec_in",
        "plugin_from_port",
        "acl_egress",
        "arp_nd",
        "dhcp",
        "lb",
        "l2_lookup",
        "egress_dispatch",
        "acl_ingress",
        "plugin_to_port",
        "output",
    ]
    assert r.outputs[0].headers["metadata"] == NET and r.outputs[0].headers["reg6"] == 11


def test_spoofed_source_mac_is_dropped_at_port_security():
    r = l2_switch().walk({"in_port": 1, "eth_src": MAC_B, "eth_dst": MAC_B})
    assert r.dropped and r.dropped_at == "port_sec_in"


def test_unknown_in_port_is_dropped_at_classify():
    r = l2_switch().walk({"in_port": 99, "eth_src": MAC_A, "eth_dst": MAC_B})
    assert r.dropped and r.dropped_at == "classify"


def test_broadcast_reaches_other_local_port_and_one_tunnel_copy_not_the_sender():
    r = l2_switch().walk({"in_port": 1, "eth_src": MAC_A, "eth_dst": BCAST})
    assert sorted(r.ports) == [2, TUN_PORT]
    tun = next(d for d in r.outputs if d.port == TUN_PORT)
    assert tun.headers["tunnel_id"] == NET and tun.headers["tun_ipv4_dst"] == REMOTE_VTEP


def test_broadcast_from_a_tunnel_goes_to_local_ports_only():
    r = l2_switch().walk({"in_port": TUN_PORT, "tunnel_id": NET, "eth_src": MAC_C, "eth_dst": BCAST})
    assert sorted(r.ports) == [1, 2]


def test_unicast_to_a_remote_mac_is_tunnelled_with_vni_and_remote_endpoint():
    r = l2_switch().walk({"in_port": 2, "eth_src": MAC_B, "eth_dst": MAC_C})
    assert r.ports == [TUN_PORT]
    assert r.outputs[0].headers["tunnel_id"] == NET and r.outputs[0].headers["tun_ipv4_dst"] == REMOTE_VTEP


def test_from_tunnel_to_local_mac_is_delivered():
    r = l2_switch().walk({"in_port": TUN_PORT, "tunnel_id": NET, "eth_src": MAC_C, "eth_dst": MAC_A})
    assert r.ports == [1] and "port_sec_in" not in r.stages()


def stateful_acl() -> list[Flow]:
    """to-port security group: allow established, and new tcp/22 only."""
    return [
        Flow(
            "acl_ingress",
            P.HIGH,
            {"ct_state": (0, CT_TRK), "eth_type": 0x800},
            [A.CT(zone="reg5", table="acl_ingress")],
        ),
        Flow("acl_ingress", P.MATCH, {"ct_state": (ALLOW_EST, ALLOW_EST)}, [A.Goto("plugin_to_port")]),
        Flow(
            "acl_ingress",
            P.MATCH(1),
            {"ct_state": (ALLOW_NEW, ALLOW_NEW), "eth_type": 0x800, "ip_proto": 6, "tcp_dst": 22},
            [A.CT(commit=True, zone="reg5"), A.Goto("plugin_to_port")],
        ),
        Flow("acl_ingress", P.DEFAULT),
    ]


def tcp(src_port: int, dst_port: int, frm: int, to: str, **kw) -> dict:
    ip = {1: "10.0.0.1", 2: "10.0.0.2"}
    src_mac = PORTS[frm][1]
    dst_ip = ip[2] if frm == 1 else ip[1]
    return {
        "in_port": frm,
        "eth_src": src_mac,
        "eth_dst": to,
        "eth_type": 0x800,
        "ip_proto": 6,
        "ipv4_src": ip[frm],
        "ipv4_dst": dst_ip,
        "tcp_src": src_port,
        "tcp_dst": dst_port,
        **kw,
    }


def test_security_group_allows_new_ssh_and_its_replies_but_not_http():
    sw = l2_switch(acl_ingress=stateful_acl())
    assert sw.walk(tcp(40000, 80, 1, MAC_B)).dropped
    r = sw.walk(tcp(40000, 80, 1, MAC_B))
    assert r.dropped_at == "acl_ingress"
    assert sw.walk(tcp(40000, 22, 1, MAC_B)).ports == [2]
    reply = sw.walk(tcp(22, 40000, 2, MAC_A))
    assert reply.ports == [1]
    assert any("ct_state=+est+rpl+trk" in s.note for s in reply.steps)  # trk+est+rpl
    assert sw.walk(tcp(40001, 80, 2, MAC_A)).dropped  # new connection the other way: not allowed


def router_flows() -> list[Flow]:
    ttl_ok = [
        A.DecTtl(),
        A.SetField("eth_src", R6),
        A.SetField("eth_dst", MAC_D),
        A.SetField("metadata", NET2),
        A.load("reg10", 1, P.ROUTED.bit, P.ROUTED.bit),
        A.Goto("snat"),
    ]
    return base_flows() + [
        Flow(
            "l2_lookup", P.MATCH, {"metadata": NET, "eth_dst": R5}, [A.WriteMetadata(ROUTER), A.Goto("dnat")]
        ),
        Flow("dnat", P.DEFAULT, {}, [A.Goto("l3_lookup")]),
        Flow(
            "l3_lookup",
            P.MATCH(24),
            {"metadata": ROUTER, "eth_type": 0x800, "ipv4_dst": "10.0.1.0/24"},
            ttl_ok,
        ),
        Flow("l3_lookup", P.MATCH(0), {"metadata": ROUTER, "eth_type": 0x800}, [A.Controller()]),
        Flow("snat", P.DEFAULT, {}, [A.Resubmit("l2_lookup")]),
        Flow(
            "arp_nd",
            P.MATCH,
            {"metadata": NET, "eth_type": 0x806, "arp_op": 1, "arp_tpa": "10.0.0.254"},
            [
                A.Move("eth_src", "eth_dst", 48),
                A.SetField("eth_src", R5),
                A.SetField("arp_op", 2),
                A.Move("arp_sha", "arp_tha", 48),
                A.SetField("arp_sha", R5),
                A.Move("arp_spa", "arp_tpa", 32),
                A.SetField("arp_spa", "10.0.0.254"),
                A.Output(A.IN_PORT),
            ],
        ),
    ]


def test_routed_packet_crosses_the_router_with_ttl_and_macs_rewritten():
    sw = Switch(router_flows(), GROUPS)
    pkt = {
        "in_port": 1,
        "eth_src": MAC_A,
        "eth_dst": R5,
        "eth_type": 0x800,
        "ipv4_src": "10.0.0.1",
        "ipv4_dst": "10.0.1.3",
        "nw_ttl": 64,
    }
    r = sw.walk(pkt)
    assert r.ports == [3]
    h = r.outputs[0].headers
    assert (h["eth_src"], h["eth_dst"], h["nw_ttl"], h["metadata"]) == (R6, MAC_D, 63, NET2)
    assert h["reg10"] & P.ROUTED.mask
    assert r.stages()[7:] == [
        "l2_lookup",
        "dnat",
        "l3_lookup",
        "snat",
        "l2_lookup",
        "egress_dispatch",
        "acl_ingress",
        "plugin_to_port",
        "output",
    ]
    expired = sw.walk({**pkt, "nw_ttl": 1})
    assert expired.dropped and expired.dropped_at == "l3_lookup"
    no_route = sw.walk({**pkt, "ipv4_dst": "8.8.8.8"})
    assert no_route.ports == ["CONTROLLER"]


def test_arp_for_the_gateway_is_answered_in_flows_out_the_asking_port():
    sw = Switch(router_flows(), GROUPS)
    r = sw.walk(
        {
            "in_port": 1,
            "eth_src": MAC_A,
            "eth_dst": BCAST,
            "eth_type": 0x806,
            "arp_op": 1,
            "arp_sha": MAC_A,
            "arp_spa": "10.0.0.1",
            "arp_tha": "00:00:00:00:00:00",
            "arp_tpa": "10.0.0.254",
        }
    )
    assert r.ports == [1]
    h = r.outputs[0].headers
    assert (h["arp_op"], h["arp_sha"], h["arp_spa"], h["arp_tha"], h["arp_tpa"]) == (
        2,
        R5,
        "10.0.0.254",
        MAC_A,
        "10.0.0.1",
    )
    assert (h["eth_src"], h["eth_dst"]) == (R5, MAC_A)


def test_conjunctive_acl_matches_only_the_cross_product():
    acl = (
        [
            Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "ipv4_src": src}, [A.Conjunction(7, 1, 2)])
            for src in ("10.0.0.1", "10.0.0.9")
        ]
        + [
            Flow(
                "acl_egress",
                P.MATCH,
                {"eth_type": 0x800, "ip_proto": 6, "tcp_dst": port},
                [A.Conjunction(7, 2, 2)],
            )
            for port in (22, 443)
        ]
        + [Flow("acl_egress", P.MATCH, {"conj_id": 7}, [A.Goto("arp_nd")])]
    )
    flows = [f for f in base_flows() if f.stage != "acl_egress"] + acl + [Flow("acl_egress", P.DEFAULT)]
    sw = Switch(flows, GROUPS)
    assert sw.walk(tcp(1000, 443, 1, MAC_B)).ports == [2]
    assert sw.walk(tcp(1000, 80, 1, MAC_B)).dropped_at == "acl_egress"


def test_select_group_load_balances_with_ct_nat_to_one_member():
    members = ("10.0.0.2", "10.0.0.3")
    buckets = [
        Bucket((A.CT(commit=True, zone=7, table="l2_lookup", nat=A.NAT("dst", ip, "", 8080)),))
        for ip in members
    ]
    lb = Flow(
        "lb",
        P.MATCH,
        {"eth_type": 0x800, "ip_proto": 6, "ipv4_dst": "10.0.0.100", "tcp_dst": 80},
        [A.GroupAction(9)],
    )
    sw = Switch(base_flows() + [lb], GROUPS + [Group(9, "select", buckets)])
    seen = set()
    for sport in range(1000, 1040):
        r = sw.walk({**tcp(sport, 80, 1, MAC_B), "ipv4_dst": "10.0.0.100"})
        assert r.ports == [2]
        h = r.outputs[0].headers
        assert h["tcp_dst"] == 8080 and h["ipv4_dst"] in members
        seen.add(h["ipv4_dst"])
    assert seen == set(members)


def test_same_priority_overlap_is_reported_not_guessed():
    flows = base_flows() + [Flow("l2_lookup", P.MATCH, {"eth_dst": MAC_B}, [A.Goto("egress_dispatch")])]
    with pytest.raises(WalkError, match="ambiguous"):
        Switch(flows, GROUPS).walk({"in_port": 1, "eth_src": MAC_A, "eth_dst": MAC_B})


def test_resubmit_loops_are_caught():
    flows = [
        Flow("classify", P.DEFAULT, {}, [A.Goto("l2_lookup")]),
        Flow("l2_lookup", P.DEFAULT, {}, [A.Goto("dnat")]),
        Flow("dnat", P.DEFAULT, {}, [A.Goto("l3_lookup")]),
        Flow("l3_lookup", P.DEFAULT, {}, [A.Goto("snat")]),
        Flow("snat", P.DEFAULT, {}, [A.Resubmit("l2_lookup")]),
    ]
    with pytest.raises(WalkError, match="loop"):
        Switch(flows).walk({"in_port": 1})


def test_trace_reads_like_ofproto_trace_with_stage_names():
    text = l2_switch().walk({"in_port": 1, "eth_src": MAC_A, "eth_dst": MAC_B}).format()
    assert "0(classify): cookie=0x0, table=0(classify), priority=1000,in_port=1" in text
    assert "120(output)" in text and text.endswith("-> output 2")


def test_provider_vlan_network_tags_on_the_way_out_and_untags_on_the_way_in():
    phys, vid = 20, 100
    flows = base_flows() + [
        Flow(
            "l2_lookup",
            P.MATCH,
            {"metadata": NET, "eth_dst": "02:00:00:00:00:ee"},
            [A.load("reg7", 30), A.Goto("egress_dispatch")],
        ),
        Flow(
            "egress_dispatch",
            P.MATCH,
            {"reg7": 30},
            [A.PushVlan(), A.SetField("vlan_vid", 0x1000 | vid), A.Output(phys)],
        ),
        Flow(
            "classify",
            P.MATCH,
            {"in_port": phys, "vlan_vid": 0x1000 | vid},
            [A.PopVlan(), A.WriteMetadata(NET), A.Goto("l2_lookup")],
        ),
    ]
    sw = Switch(flows, GROUPS)
    out = sw.walk({"in_port": 1, "eth_src": MAC_A, "eth_dst": "02:00:00:00:00:ee"})
    assert out.ports == [phys] and out.outputs[0].headers["vlan_vid"] == 0x1000 | vid
    back = sw.walk(
        {"in_port": phys, "vlan_vid": 0x1000 | vid, "eth_src": "02:00:00:00:00:ee", "eth_dst": MAC_A}
    )
    assert back.ports == [1] and "vlan_vid" not in back.outputs[0].headers
    other_vlan = sw.walk({"in_port": phys, "vlan_vid": 0x1000 | 7, "eth_dst": MAC_A})
    assert other_vlan.dropped_at == "classify"


def test_snat_without_recirculation_rewrites_the_source():
    flows = [f for f in router_flows() if f.stage != "snat"] + [
        Flow(
            "snat",
            P.MATCH,
            {"metadata": NET2, "eth_type": 0x800, "ipv4_src": "10.0.0.0/24"},
            [A.CT(commit=True, zone=200, nat=A.NAT("src", "203.0.113.5")), A.Resubmit("l2_lookup")],
        ),
        Flow("snat", P.DEFAULT, {}, [A.Resubmit("l2_lookup")]),
    ]
    r = Switch(flows, GROUPS).walk(
        {
            "in_port": 1,
            "eth_src": MAC_A,
            "eth_dst": R5,
            "eth_type": 0x800,
            "ipv4_src": "10.0.0.1",
            "ipv4_dst": "10.0.1.3",
        }
    )
    assert r.ports == [3] and r.outputs[0].headers["ipv4_src"] == "203.0.113.5"


def test_an_icmp_echo_reply_opens_no_connection_but_answers_a_request():
    """As OVS conntrack: an echo reply matching no connection is +inv and commit keeps nothing of it; the reply to
    a committed echo request is +est+rpl."""
    sw = Switch(
        [
            Flow("dnat", P.MATCH, {"ct_state": (0, CT_TRK), "eth_type": 0x800}, [A.CT(zone=1, table="dnat")]),
            Flow(
                "dnat",
                P.MATCH,
                {"ct_state": (CT_TRK, CT_TRK), "eth_type": 0x800},
                [A.CT(commit=True, zone=1), A.Output(2)],
            ),
        ]
    )
    walk = lambda pkt: sw.walk(pkt, stage="dnat")
    echo = {
        "in_port": 1,
        "eth_type": 0x800,
        "ipv4_src": "10.0.0.1",
        "ipv4_dst": "10.0.0.2",
        "ip_proto": 1,
        "icmpv4_code": 0,
    }
    for _ in range(2):
        unsolicited = walk({**echo, "icmpv4_type": 0})
        assert any("ct_state=+inv+trk" in s.note for s in unsolicited.steps), unsolicited.format()  # trk+inv
    assert any("ct_state=+new+trk" in s.note for s in walk({**echo, "icmpv4_type": 8}).steps)  # trk+new
    reply = walk({**echo, "ipv4_src": "10.0.0.2", "ipv4_dst": "10.0.0.1", "icmpv4_type": 0})
    assert any("ct_state=+est+rpl+trk" in s.note for s in reply.steps), reply.format()  # trk+est+rpl


def test_a_committed_connection_stays_new_until_answered_and_translated_packets_carry_the_nat_flag():
    """As OVS's conntrack: a second packet before any reply is +new (already translated: +dnat); the reply
    is +est+rpl (its source un-DNAT'ed: +snat); the originator's packets are +est from then on."""
    from flows.walker import CT_DNAT, CT_RPL, CT_SNAT

    flows = [
        Flow("classify", P.MATCH, {"in_port": 1}, [A.Goto("l2_lookup")]),
        Flow("classify", P.MATCH, {"in_port": 2}, [A.Goto("l2_lookup")]),
        Flow("l2_lookup", P.MATCH, {}, [A.Goto("dnat")]),
        Flow(
            "dnat",
            P.MATCH(1),
            {"eth_type": 0x800, "ct_state": (0, CT_TRK)},
            [A.CT(zone=9, nat=A.NAT(), table="dnat")],
        ),
        Flow(
            "dnat",
            P.MATCH(2),
            {"eth_type": 0x800, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW), "ipv4_dst": "203.0.113.5"},
            [A.CT(commit=True, zone=9, nat=A.NAT("dst", "10.0.0.5"), table="l3_lookup")],
        ),
        Flow("dnat", P.MATCH(0), {"eth_type": 0x800, "ct_state": (CT_TRK, CT_TRK)}, [A.Goto("l3_lookup")]),
        Flow("l3_lookup", P.MATCH, {}, [A.Output(7)]),
    ]
    sw = Switch(flows)
    fwd = {
        "in_port": 1,
        "eth_type": 0x800,
        "ipv4_src": "198.51.100.1",
        "ipv4_dst": "203.0.113.5",
        "ip_proto": 6,
        "tcp_src": 4000,
        "tcp_dst": 80,
    }
    rpl = {
        "in_port": 2,
        "eth_type": 0x800,
        "ipv4_src": "10.0.0.5",
        "ipv4_dst": "198.51.100.1",
        "ip_proto": 6,
        "tcp_src": 80,
        "tcp_dst": 4000,
    }

    def states(pkt: dict) -> list[int]:  # type: ignore[type-arg]
        """The ct_states the walk's notes show (in OVS's flags, "+new+trk"), as numbers."""
        res = sw.walk(pkt)
        assert res.ports == [7], res.format()
        by_text = {ct_state_text(v): v for v in range(256)}
        return [by_text[st.note.split("ct_state=")[1]] for st in res.steps if "ct_state=" in st.note]

    assert states(fwd) == [CT_TRK | CT_NEW, CT_TRK | CT_NEW | CT_DNAT]  # looked up, then committed with DNAT
    assert states(fwd) == [
        CT_TRK | CT_NEW | CT_DNAT
    ]  # no reply yet: still new, already translated by ct(nat)
    assert states(rpl) == [CT_TRK | CT_EST | CT_RPL | CT_SNAT]
    assert states(fwd) == [CT_TRK | CT_EST | CT_DNAT]
