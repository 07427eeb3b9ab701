"""Flow -> bytes -> os-ken parser -> decode gives back the equal Flow (as a switch would report it)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from flows import actions as A
from flows import pipeline as P
from flows.decode import DecodeError, decode_action, decode_flow
from flows.encode import Encoder
from flows.flow import Flow
from tests.test_flows_strategies import flows


def as_flow_stats(flow: Flow, packets: int = 3, nbytes: int = 300):
    """The ofp_flow_stats entry a switch would send for `flow`, parsed by os-ken."""
    body = Encoder().flow_body(flow)
    match_and_insts = body[40:]  # flow-mod body: 40 fixed bytes, then match + instructions
    head = struct.pack(
        "!HBxIIHHHH4xQQQ",
        48 + len(match_and_insts),
        flow.table,
        12,
        500,
        flow.priority,
        0,
        0,
        0,
        flow.cookie,
        packets,
        nbytes,
    )
    return ofpp.OFPFlowStats.parser(head + match_and_insts, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_round_trip_through_flow_stats(flow):
    stats = as_flow_stats(flow)
    assert stats.packet_count == 3
    assert decode_flow(stats) == flow


EVERY_KIND = [
    A.Output(7),
    A.Output(A.IN_PORT, 0),
    A.SetField("reg7", 4),
    A.load("reg10", 1, 2, 2),
    A.SetField("metadata", 0x1234, 0xFFFF),
    A.SetField("eth_dst", "02:00:00:00:00:09"),
    A.SetField("tun_ipv4_dst", "172.16.0.9"),
    A.SetField("tunnel_id", 99),
    A.SetField("vlan_vid", 0x1064),
    A.SetField("ipv6_dst", "fd00::1"),
    A.Move("eth_src", "eth_dst", 48),
    A.Move("reg6", "reg7", 8, 8, 16),
    A.GroupAction(3),
    A.PushVlan(),
    A.PopVlan(),
    A.DecTtl(),
    A.CtClear(),
    A.Resubmit("l2_lookup"),
    A.Controller(A.REASON_NO_MATCH, 128, 2),
    A.Controller(),
    A.CT(),
    A.CT(commit=True, zone="reg5", table="l2_lookup", force=True, alg=21),
    A.CT(
        commit=True,
        zone=9,
        nat=A.NAT("src", "192.0.2.1", "192.0.2.9", 1024, 65535, persistent=True),
        exec=(A.SetField("ct_mark", 5), A.SetField("ct_label", 7)),
    ),
    A.CT(zone=9, table="l2_lookup", nat=A.NAT()),
    A.CT(commit=True, nat=A.NAT("dst", "fd00::5", "", 443)),
]


@pytest.mark.parametrize("action", EVERY_KIND, ids=repr)
def test_every_action_kind_round_trips(action):
    eth_type = 0x86DD if "fd00" in repr(action) else 0x800
    f = Flow(
        "lb",
        P.MATCH,
        {"metadata": 1, "eth_type": eth_type, "vlan_vid": 0x1005, "ip_proto": 6},
        [A.Meter(2), action, A.WriteMetadata(3, 0xF)],
    )
    assert decode_flow(as_flow_stats(f)) == f


def test_switch_spellings_decode_to_our_canonical_values():
    """OVS may report our actions in other encodings; they decode to the same values."""
    assert decode_action(ofpp.OFPActionOutput(0xFFFFFFFD, 0xFFFF)) == A.Controller()
    assert decode_action(ofpp.NXActionDecTtl()) == A.DecTtl()
    old_load = ofpp.NXActionRegLoad(ofs_nbits=(3 << 6) | 0, dst="reg10", value=1)
    assert decode_action(old_load) == A.load("reg10", 1, 3, 3)
    assert decode_action(ofpp.NXActionRegLoad(ofs_nbits=31, dst="reg7", value=4)) == A.SetField("reg7", 4)
    # OVS 3.1 dumps move with NXM headers (NXM_OF_ETH_SRC), which os-ken names eth_src_nxm
    nxm_move = ofpp.NXActionRegMove(src_field="eth_src_nxm", dst_field="eth_dst_nxm", n_bits=48)
    assert decode_action(nxm_move) == A.Move("eth_src", "eth_dst", 48)
    spa = ofpp.NXActionRegMove(src_field="arp_spa_nxm", dst_field="arp_tpa_nxm", n_bits=32)
    assert decode_action(spa) == A.Move("arp_spa", "arp_tpa", 32)
    # and the ND fields with NXM_NX_ND_TARGET / NXM_NX_ND_TLL, which os-ken names nd_target / nd_tll
    target = ofpp.NXActionRegMove(src_field="nd_target", dst_field="xxreg3", n_bits=128)
    assert decode_action(target) == A.Move("ipv6_nd_target", "xxreg3", 128)
    tll = ofpp.NXActionRegMove(src_field="reg9", dst_field="nd_tll", n_bits=16, dst_ofs=32)
    assert decode_action(tll) == A.Move("reg9", "ipv6_nd_tll", 16, 0, 32)


def test_foreign_entries_raise():
    with pytest.raises(DecodeError):
        decode_action(ofpp.NXActionResubmitTable(in_port=3, table_id=0))
    with pytest.raises(DecodeError):
        decode_action(ofpp.NXActionResubmitTable(table_id=254))  # no stage at 254
    stats = as_flow_stats(Flow("output", P.DEFAULT))
    stats.table_id = 254
    with pytest.raises(DecodeError):
        decode_flow(stats)
    stats = as_flow_stats(Flow("output", P.DEFAULT))
    stats.priority = 7  # outside every band: not compiled by us
    with pytest.raises(DecodeError):
        decode_flow(stats)
    stats = as_flow_stats(Flow("output", P.DEFAULT))
    stats.instructions = [ofpp.OFPInstructionActions(3, [])]  # OFPIT_WRITE_ACTIONS
    with pytest.raises(DecodeError):
        decode_flow(stats)


def test_conjunction_flow_round_trips():
    f = Flow("acl_egress", P.MATCH, {"reg6": 3}, [A.Conjunction(12, 2, 3), A.Conjunction(13, 1, 2)])
    assert decode_flow(as_flow_stats(f)) == f


def test_the_neighbour_advertisement_flows_round_trip() -> None:
    """OVS's nd_reserved / nd_options_type (class 0x1000, registered with os-ken by flows/fields.py), the
    128-bit moves into xxreg3 and the ICMPv6 matches come back from the switch's flow stats as sent."""
    from apps import arp

    nd = [f for f in arp.chassis_flows() if f.stage in ("arp_nd", "mac_found")]
    assert any(a for f in nd for a in f.actions if isinstance(a, A.SetField) and a.field == "nd_reserved")
    for flow in nd:
        assert decode_flow(as_flow_stats(flow)) == flow


def test_a_match_on_xxreg3_reported_as_reg12_to_reg15_folds_back() -> None:
    """OVS 3.1 dumps our xxreg3 (NEXT_HOP6) match as reg12=..,reg13=0,reg14=0,reg15=.. in OpenFlow 1.3."""
    flow = Flow(
        "mac_lookup", P.MATCH(), {"metadata": 5, "xxreg3": (0xFD00 << 112) | 0x10}, (A.Goto("mac_found"),)
    )
    regs = {"reg12": 0xFD000000, "reg13": 0, "reg14": 0, "reg15": 0x10}
    as_ovs = ofpp.OFPFlowStats(
        table_id=flow.table,
        priority=flow.priority,
        cookie=0,
        match=ofpp.OFPMatch(metadata=5, **regs),
        instructions=[ofpp.OFPInstructionGotoTable(P.table_of("mac_found"))],
    )
    assert decode_flow(as_ovs) == flow
