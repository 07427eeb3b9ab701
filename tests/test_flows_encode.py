"""The struct encoder agrees byte for byte with os-ken's serializer; bundles and caching."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_parser as op
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from flows import actions as A
from flows import pipeline as P
from flows.decode import decode_flow, decode_group
from flows.encode import (
    ADD,
    COMMANDS,
    DATAPATH_DESC,
    DELETE,
    MODIFY,
    Encoder,
    barrier_request,
    delete_by_cookie,
    flow_stats_request,
    group_desc_request,
    osken_bytes,
    to_osken_flow_mod,
    to_osken_group_mod,
)
from flows.flow import Bucket, Flow, Group
from tests.test_flows_strategies import flows, groups, osken_serializes_right

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(buf: bytes):
    return op.msg(DATAPATH_DESC, *op.header(buf), buf)


def parse_group_mod(buf: bytes):
    """A group-mod's body re-framed as the group-desc entry a switch would report, parsed by os-ken."""
    _, gtype, gid = struct.unpack_from("!HBxI", buf, 8)
    buckets = buf[16:]
    return ofpp.OFPGroupDescStats.parser(struct.pack("!HBxI", 8 + len(buckets), gtype, gid) + buckets, 0)


def split(buf: bytes) -> list[bytes]:
    out = []
    while buf:
        (length,) = struct.unpack_from("!H", buf, 2)
        out.append(buf[:length])
        buf = buf[length:]
    return out


EXAMPLES = [
    Flow(
        "l2_lookup",
        P.MATCH,
        {"metadata": 5, "eth_dst": "AA:BB:CC:00:00:01"},
        [A.load("reg7", 3), A.Goto("egress_dispatch")],
        cookie=0xC501000000010000,
    ),
    Flow(
        "classify",
        P.MATCH,
        {"in_port": 1},
        [A.Meter(3), A.WriteMetadata(5), A.load("reg6", 1), A.load("reg10", 1, 3, 3), A.Goto("port_sec_in")],
    ),
    Flow(
        "egress_dispatch",
        P.MATCH,
        {"reg7": 9, "metadata": 77},
        [A.SetField("tunnel_id", 77), A.SetField("tun_ipv4_dst", "192.168.0.2"), A.Output(3)],
    ),
    Flow(
        "acl_egress",
        P.HIGH,
        {"eth_type": 0x800, "ip_proto": 6, "tcp_dst": 22, "ct_state": (0x21, 0x21)},
        [A.CT(commit=True, zone="reg5", table="arp_nd", exec=(A.SetField("ct_mark", 1),))],
    ),
    Flow(
        "l3_lookup",
        P.MATCH(24),
        {"metadata": 9, "eth_type": 0x800, "ipv4_dst": "10.1.0.0/16"},
        [
            A.DecTtl(),
            A.Move("ipv4_dst", "reg0", 32),
            A.SetField("eth_src", "00:00:00:00:00:01"),
            A.Resubmit("snat"),
        ],
    ),
    Flow(
        "arp_nd",
        P.HIGH,
        {"eth_type": 0x806, "arp_op": 1},
        [
            A.Controller(),
            A.PushVlan(),
            A.SetField("vlan_vid", 0x1005),
            A.PopVlan(),
            A.GroupAction(7),
            A.CtClear(),
            A.Output(A.IN_PORT),
        ],
    ),
    Flow(
        "lb",
        P.MATCH,
        {"eth_type": 0x800, "ipv4_dst": "10.0.0.10"},
        [A.CT(commit=True, zone=7, table="l2_lookup", nat=A.NAT("dst", "10.0.0.5", "", 80))],
    ),
    Flow(
        "acl_egress",
        P.MATCH,
        {"eth_type": 0x800, "ipv4_src": "10.0.0.0/8"},
        [A.Conjunction(5, 1, 2), A.Conjunction(6, 2, 3)],
    ),
    Flow("output", P.DEFAULT),
]


@pytest.mark.parametrize("flow", EXAMPLES, ids=lambda f: f.stage)
@pytest.mark.parametrize("command", COMMANDS)
def test_examples_match_osken_bytes(flow, command):
    assert Encoder().flow_mod(flow, command, xid=17) == osken_bytes(to_osken_flow_mod(flow, command, 17))


@SETTINGS
@given(flows())
def test_struct_path_equals_osken_or_parses_back(flow):
    enc = Encoder()
    for command in COMMANDS:
        ours = enc.flow_mod(flow, command, xid=3)
        if osken_serializes_right(flow.actions):
            assert ours == osken_bytes(to_osken_flow_mod(flow, command, 3))
        msg = parse(ours)
        assert msg.xid == 3 and msg.table_id == flow.table and msg.priority == flow.priority
        assert (
            msg.command
            == {ADD: ofp.OFPFC_ADD, MODIFY: ofp.OFPFC_MODIFY_STRICT, DELETE: ofp.OFPFC_DELETE_STRICT}[command]
        )
        if command != DELETE:
            assert decode_flow(msg) == flow


@SETTINGS
@given(groups())
def test_group_mods_equal_osken(group):
    enc = Encoder()
    for command in COMMANDS:
        ours = enc.group_mod(group, command, xid=9)
        if all(osken_serializes_right(b.actions, in_group=True) for b in group.buckets):
            assert ours == osken_bytes(to_osken_group_mod(group, command, 9))
        if command != DELETE:
            assert decode_group(parse_group_mod(ours)) == group


def test_masked_wide_load_is_well_formed():
    """os-ken cannot serialize a masked 64-bit load; ours pads to 8 and parses back."""
    f = Flow("l3_lookup", P.MATCH, {}, [A.SetField("metadata", 0x12, 0xFF), A.Output(1)])
    msg = parse(Encoder().flow_mod(f))
    assert decode_flow(msg) == f
    assert all(a.len % 8 == 0 for a in msg.instructions[0].actions)


def test_delete_is_strict_and_matches_any_out_port():
    f = EXAMPLES[0]
    msg = parse(Encoder().flow_mod(f, DELETE))
    assert msg.command == ofp.OFPFC_DELETE_STRICT
    assert (msg.out_port, msg.out_group) == (ofp.OFPP_ANY, ofp.OFPG_ANY)
    assert msg.instructions == [] and msg.priority == f.priority and dict(msg.match.items()) == f.match_dict()


def test_cache_encodes_each_flow_once(monkeypatch):
    import flows.encode as E

    calls = []
    real = E.flow_mod_body
    monkeypatch.setattr(E, "flow_mod_body", lambda f, c=ADD: calls.append(f) or real(f, c))
    enc = Encoder()
    f = EXAMPLES[1]
    same = Flow(f.stage, f.priority, f.match, f.actions, f.cookie)
    a = enc.flow_mod(f, xid=1)
    b = enc.flow_mod(same, xid=2)
    m = enc.flow_mod(f, MODIFY, xid=3)
    assert len(calls) == 1  # MODIFY is patched from the cached ADD
    assert a[8:] == b[8:] and a[4:8] != b[4:8]
    assert m == osken_bytes(to_osken_flow_mod(f, MODIFY, 3))
    enc.discard(f)
    enc.flow_mod(f)
    assert len(calls) == 2


def test_bundle_buffer_is_open_adds_commit_with_consecutive_xids():
    g = Group(
        5,
        "all",
        [
            Bucket([A.load("reg7", 2), A.Resubmit("egress_dispatch")]),
            Bucket([A.SetField("tunnel_id", 5), A.SetField("tun_ipv4_dst", "10.9.0.2"), A.Output(4)]),
        ],
    )
    ops = [(ADD, g)] + [(ADD, f) for f in EXAMPLES] + [(MODIFY, EXAMPLES[0]), (DELETE, EXAMPLES[2])]
    buf, next_xid = Encoder().bundle(ops, bundle_id=42, xid=100)
    msgs = [parse(m) for m in split(buf)]
    assert len(msgs) == len(ops) + 2 and next_xid == 100 + len(ops) + 2
    assert isinstance(msgs[0], ofpp.ONFBundleCtrlMsg) and msgs[0].type == ofp.ONF_BCT_OPEN_REQUEST
    assert isinstance(msgs[-1], ofpp.ONFBundleCtrlMsg) and msgs[-1].type == ofp.ONF_BCT_COMMIT_REQUEST
    assert [m.xid for m in msgs] == list(range(100, 100 + len(msgs)))
    for m in (msgs[0], msgs[-1]):
        assert m.bundle_id == 42 and m.flags == ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    # os-ken cannot parse ADD_MESSAGE; check its fields and compare bytes with its serializer below
    assert all(m.exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE for m in msgs[1:-1])
    # each ADD_MESSAGE wraps exactly the stand-alone message with the same xid (as os-ken builds it)
    enc = Encoder()
    for i, (command, item) in enumerate(ops):
        raw = split(buf)[i + 1]
        xid = 101 + i
        is_flow = isinstance(item, Flow)
        inner = enc.flow_mod(item, command, xid) if is_flow else enc.group_mod(item, command, xid)
        inner_obj = (
            to_osken_flow_mod(item, command, xid)
            if isinstance(item, Flow)
            else to_osken_group_mod(item, command, xid)
        )
        add = ofpp.ONFBundleAddMsg(DATAPATH_DESC, 42, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED, inner_obj, [])
        add.set_xid(xid)
        assert raw == osken_bytes(add)
        assert raw[24:] == inner
    ctrl = ofpp.ONFBundleCtrlMsg(
        DATAPATH_DESC, 42, ofp.ONF_BCT_OPEN_REQUEST, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED, []
    )
    ctrl.set_xid(100)
    assert split(buf)[0] == osken_bytes(ctrl)


def test_plain_messages_and_barrier():
    buf, nxt = Encoder().messages([(ADD, f) for f in EXAMPLES], xid=7)
    parts = split(buf)
    assert nxt == 7 + len(EXAMPLES)
    assert [decode_flow(parse(p)) for p in parts] == EXAMPLES
    req = ofpp.OFPBarrierRequest(DATAPATH_DESC)
    req.set_xid(9)
    assert barrier_request(9) == osken_bytes(req)


def test_sync_helpers_equal_osken():
    def xid(msg, x):
        msg.set_xid(x)
        return osken_bytes(msg)

    dp = DATAPATH_DESC
    assert delete_by_cookie(0xC5AB, 0xFFFF, 4) == xid(
        ofpp.OFPFlowMod(
            dp,
            cookie=0xC5AB,
            cookie_mask=0xFFFF,
            table_id=ofp.OFPTT_ALL,
            command=ofp.OFPFC_DELETE,
            priority=0,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=ofpp.OFPMatch(),
        ),
        4,
    )
    assert flow_stats_request(5, 0xC5 << 56, 0xFF << 56) == xid(
        ofpp.OFPFlowStatsRequest(
            dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0xC5 << 56, 0xFF << 56, ofpp.OFPMatch()
        ),
        5,
    )
    assert group_desc_request(6) == xid(ofpp.OFPGroupDescStatsRequest(dp, 0), 6)


def test_fields_without_a_struct_encoding_fall_back_to_osken():
    """tcp_flags is an ONF experimenter OXM: the struct path declines it and os-ken encodes it."""
    f = Flow("output", P.MATCH, {"reg7": 1}, [A.SetField("tcp_flags", 2), A.Output(1)])
    assert Encoder().flow_mod(f, xid=1) == osken_bytes(to_osken_flow_mod(f, ADD, 1))
    assert decode_flow(parse(Encoder().flow_mod(f))) == f


def _clear_value_caches():
    import flows.encode as E

    E._MATCH_TLVS.clear()
    E._INSTRUCTIONS.clear()
    E._TLV_PREFIX.clear()
    E._tlv.cache_clear()
    E.action_bytes.cache_clear()


@SETTINGS
@given(st.lists(flows(), min_size=2, max_size=12))
def test_value_caches_give_each_flow_its_own_bytes(batch):
    """The process-wide TLV / instruction caches: bytes with warm caches (filled by other flows sharing
    fields and actions) equal bytes computed from empty caches, flow by flow, for every command."""
    warm = Encoder()
    got = {(i, c): warm.flow_mod(f, c, xid=i) for i, f in enumerate(batch + EXAMPLES) for c in COMMANDS}
    for (i, c), buf in got.items():
        _clear_value_caches()
        f = (batch + EXAMPLES)[i]
        assert buf == Encoder().flow_mod(f, c, xid=i)
        if osken_serializes_right(f.actions):
            assert buf == osken_bytes(to_osken_flow_mod(f, c, i))


def test_instruction_cache_is_keyed_by_value():
    """Flows sharing actions by value share cached instruction bytes; different actions never do."""
    import flows.encode as E

    _clear_value_caches()
    a = Flow("output", P.MATCH, {"reg7": 1}, [A.Output(1)])
    b = Flow("output", P.MATCH, {"reg7": 2}, [A.Output(1)])
    c = Flow("output", P.MATCH, {"reg7": 3}, [A.Output(2)])
    enc = Encoder()
    for f in (a, b, c):
        assert enc.flow_mod(f, xid=1) == osken_bytes(to_osken_flow_mod(f, ADD, 1))
    assert len(E._INSTRUCTIONS) == 2 and E._INSTRUCTIONS[a.actions] is E._INSTRUCTIONS[b.actions]
    assert E._INSTRUCTIONS[c.actions] != E._INSTRUCTIONS[a.actions]
    E.CACHE_LIMIT, old = 1, E.CACHE_LIMIT
    _clear_value_caches()
    try:  # a full cache is emptied, not wrong
        for f in (a, b, c, a):
            assert Encoder().flow_mod(f, xid=1) == osken_bytes(to_osken_flow_mod(f, ADD, 1))
        assert len(E._INSTRUCTIONS) == 1 and len(E._MATCH_TLVS) == 1
    finally:
        E.CACHE_LIMIT = old
