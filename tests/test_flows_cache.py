"""The caches behind fast Flow construction never change a verdict: what fails cold fails warm."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_v1_3 as ofp

from flows import actions as A
from flows import fields
from flows import flow as F
from flows import pipeline as P
from flows.flow import Flow, FlowError
from tests.test_flows_strategies import flows


def cold() -> None:
    F._VALID.clear()
    F._SORTED_NAMES.clear()
    fields._normalize.cache_clear()


def outcome(build):  # type: ignore[no-untyped-def]
    try:
        f = build()
    except FlowError as e:
        return ("error", str(e))
    return ("ok", f, tuple(type(a) for a in f.actions), f.match)


# -- a flow valid (and cached) in one place is still checked in another ------------------------------------


@pytest.mark.parametrize(
    "good, bad, message",
    [
        # targets: the same actions on a stage that may not pass there
        (
            lambda: Flow("l2_lookup", P.MATCH, {}, [A.Goto("egress_dispatch")]),
            lambda: Flow("classify", P.MATCH, {}, [A.Goto("egress_dispatch")]),
            "may not pass to egress_dispatch",
        ),
        (
            lambda: Flow("snat", P.MATCH, {}, [A.Resubmit("l2_lookup")]),
            lambda: Flow("dnat", P.MATCH, {}, [A.Resubmit("l2_lookup")]),
            "may not pass to l2_lookup",
        ),
        (
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800}, [A.CT(table="acl_egress")]),
            lambda: Flow("acl_ingress", P.MATCH, {"eth_type": 0x800}, [A.CT(table="acl_egress")]),
            "may not pass",
        ),
        (
            lambda: Flow("dnat", P.MATCH, {}, [A.Goto("l3_lookup")]),
            lambda: Flow("l3_lookup", P.MATCH, {}, [A.Goto("l3_lookup")]),
            "goes backwards",
        ),
        # the same match on a stage that does not allow its fields
        (
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "ipv4_dst": "10.0.0.1"}),
            lambda: Flow("l2_lookup", P.MATCH, {"eth_type": 0x800, "ipv4_dst": "10.0.0.1"}),
            "does not match on",
        ),
        # match prerequisites: same fields, other values
        (
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "ipv4_dst": "10.0.0.1"}),
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x86DD, "ipv4_dst": "10.0.0.1"}),
            "needs eth_type",
        ),
        (
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "ipv4_dst": "10.0.0.1"}),
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": (0x800, 0xFF00), "ipv4_dst": "10.0.0.1"}),
            "needs",
        ),
        (
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "ip_proto": 6, "tcp_dst": 80}),
            lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "ip_proto": 17, "tcp_dst": 80}),
            "ip_proto=6",
        ),
        # action prerequisites: same actions, a match that does not make them valid
        (
            lambda: Flow("l3_lookup", P.MATCH, {"eth_type": 0x800}, [A.SetField("ipv4_dst", "10.0.0.1")]),
            lambda: Flow("l3_lookup", P.MATCH, {"eth_type": 0x806}, [A.SetField("ipv4_dst", "10.0.0.1")]),
            "set_field of ipv4_dst",
        ),
        (
            lambda: Flow("l3_lookup", P.MATCH, {"eth_type": 0x800}, [A.DecTtl()]),
            lambda: Flow("l3_lookup", P.MATCH, {"eth_type": 0x806}, [A.DecTtl()]),
            "dec_ttl",
        ),
        (
            lambda: Flow(
                "acl_egress", P.HIGH, {"eth_type": 0x800, "ct_state": (0x20, 0x30)}, [A.CT(commit=True)]
            ),
            lambda: Flow(
                "acl_egress", P.HIGH, {"eth_type": 0x800, "ct_state": (0x30, 0x30)}, [A.CT(commit=True)]
            ),
            "\\+inv",
        ),
        (
            lambda: Flow("acl_egress", P.HIGH, {"eth_type": 0x800, "ct_state": (0x30, 0x30)}, [A.CT()]),
            lambda: Flow(
                "acl_egress", P.HIGH, {"eth_type": 0x800, "ct_state": (0x30, 0x30)}, [A.CT(commit=True)]
            ),
            "\\+inv",
        ),
        (
            lambda: Flow(
                "snat", P.MATCH, {"eth_type": 0x800}, [A.CT(commit=True, nat=A.NAT("src", "10.0.0.1"))]
            ),
            lambda: Flow(
                "snat", P.MATCH, {"eth_type": 0x800}, [A.CT(commit=True, nat=A.NAT("src", "fd00::1"))]
            ),
            "nat to",
        ),
        (
            lambda: Flow(
                "acl_egress", P.MATCH, {"eth_type": 0x800, "ip_proto": 6}, [A.CT(commit=True, alg=21)]
            ),
            lambda: Flow(
                "acl_egress", P.MATCH, {"eth_type": 0x800, "ip_proto": 17}, [A.CT(commit=True, alg=21)]
            ),
            "ip_proto=6",
        ),
        (
            lambda: Flow("classify", P.MATCH, {"vlan_vid": 0x1005}, [A.PopVlan()]),
            lambda: Flow("classify", P.MATCH, {"vlan_vid": 0x0005}, [A.PopVlan()]),
            "pop_vlan needs",
        ),
        (
            lambda: Flow("classify", P.MATCH, {"vlan_vid": (0x1000, 0x1000)}, [A.PopVlan()]),
            lambda: Flow("classify", P.MATCH, {"vlan_vid": (0x0000, 0x1000)}, [A.PopVlan()]),
            "pop_vlan needs",
        ),
        (
            lambda: Flow("egress_dispatch", P.MATCH, {}, [A.PushVlan(), A.PopVlan()]),
            lambda: Flow("egress_dispatch", P.MATCH, {}, [A.PopVlan(), A.PushVlan()]),
            "pop_vlan needs",
        ),
        (
            lambda: Flow("arp_nd", P.MATCH, {"eth_type": 0x806}, [A.Move("arp_sha", "arp_tha", 48)]),
            lambda: Flow("arp_nd", P.MATCH, {"eth_type": 0x806}, [A.Move("arp_sha", "ipv6_src", 48)]),
            "move to",
        ),
        # canonical actions: same types, one more instruction / a conjunction mixed in
        (
            lambda: Flow("l2_lookup", P.MATCH, {}, [A.Goto("dnat")]),
            lambda: Flow("l2_lookup", P.MATCH, {}, [A.Goto("dnat"), A.Goto("dnat")]),
            "more than one",
        ),
        (
            lambda: Flow("acl_egress", P.MATCH, {}, [A.Conjunction(1, 1, 2)]),
            lambda: Flow("acl_egress", P.MATCH, {}, [A.Conjunction(1, 1, 2), A.Output(1)]),
            "conjunction",
        ),
        # values whose types differ from the cached one's (1 == 1.0 == True hash alike)
        (
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": (5, 0xFF)}),
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": (5.0, 0xFF)}),
            "bad value",
        ),
        (
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": True}),
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": 1.0}),
            "bad value",
        ),
        (
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": 1}),
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": 1.0}),
            "bad value",
        ),
        # priorities and cookies are checked whatever is cached
        (
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": 1}),
            lambda: Flow("l2_lookup", P.MATCH.base + P.MATCH.width, {"reg7": 1}),
            "no priority band",
        ),
        (
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": 1}, cookie=1),
            lambda: Flow("l2_lookup", P.MATCH, {"reg7": 1}, cookie=1 << 64),
            "64-bit",
        ),
    ],
)
def test_a_flow_cached_as_valid_does_not_make_an_invalid_one_pass(good, bad, message):
    for warm_first in (False, True):
        cold()
        if warm_first:
            for _ in range(2):
                good()  # cached as valid (twice: the second comes from the caches)
        with pytest.raises(FlowError, match=message):
            bad()
        with pytest.raises(FlowError, match=message):
            bad()  # a failure is never cached as anything
        good()


def test_actions_are_put_in_canonical_order_from_the_cache_too():
    build = lambda port: Flow(
        "classify",
        P.MATCH,
        {"in_port": port},
        [A.Goto("port_sec_in"), A.WriteMetadata(5), A.Output(port), A.Meter(1), A.load("reg6", port)],
    )
    cold()
    first = build(1)
    again = build(2)  # from the cache: same shape, other values
    want = [A.Meter, A.Output, A.SetField, A.WriteMetadata, A.Goto]
    assert [type(a) for a in first.actions] == want == [type(a) for a in again.actions]
    assert again.actions[1] == A.Output(2) and again.actions[2] == A.load("reg6", 2)
    cold()
    assert build(2) == again and build(2).actions == again.actions


def test_fast_int_paths_give_what_os_ken_gives():
    rnd = random.Random(7)
    names = [f.name for f in ofp.oxm_types if fields.kind(f.name) == "int"]
    assert {"reg6", "metadata", "ct_state", "vlan_vid", "tunnel_id", "ct_label"} <= set(names)
    slow = fields._normalize.__wrapped__
    for name in names:
        bits = fields.field_size(name) * 8
        top = (1 << bits) - 1
        for _ in range(30):
            v = rnd.choice([0, 1, top, rnd.getrandbits(bits)])
            m = rnd.choice([0, top, 1, 1 << (bits - 1), rnd.getrandbits(bits)])
            assert fields.normalize(name, (v, m)) == slow(name, (v, m)), (name, v, m)
            assert fields.normalize(name, v) == slow(name, v), (name, v)
        for bad in (top + 1, -1, (top + 1, top), (1, top + 1), (-1, 1)):
            with pytest.raises(fields.FieldError):
                fields.normalize(name, bad)


@settings(max_examples=150, deadline=None)
@given(flows(), st.data())
def test_cold_and_warm_caches_give_the_same_verdicts_on_every_stage(flow, data):
    """The flow rebuilt on every stage, and with one match field dropped: same verdict, same value,
    whether the caches are empty or hold everything built so far."""
    match = flow.match_dict()
    variants = [match]
    if match:
        drop = data.draw(st.sampled_from(sorted(match)))
        variants.append({k: v for k, v in match.items() if k != drop})
    builds = [
        lambda s=s, m=m: Flow(s.name, flow.priority, m, flow.actions, flow.cookie)
        for s in P.STAGES
        for m in variants
    ]
    warm = [outcome(b) for b in builds]  # caches fill as we go
    warm_again = [outcome(b) for b in builds]  # all from the caches
    cold_each = []
    for b in builds:
        cold()
        cold_each.append(outcome(b))
    assert warm == warm_again == cold_each
