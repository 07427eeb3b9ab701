"""Pipeline declaration, Flow/Group validation and normalization, cookies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from flows import actions as A
from flows import pipeline as P
from flows.actions import ActionError
from flows.cookie import MAGIC, OWNER_MASK, Cookie, CookieRegistry, is_ours
from flows.flow import Bucket, Flow, FlowError, Group
from tests.test_flows_strategies import flows

# -- the declaration -----------------------------------------------------------------------------------


def test_stage_names_and_numbers_are_unique_and_classify_is_first():
    names = [s.name for s in P.STAGES]
    assert len(set(names)) == len(names) and len({s.table for s in P.STAGES}) == len(names)
    assert P.stage_at(0).name == "classify" == P.FIRST_STAGE
    for want in (
        "classify",
        "port_sec_in",
        "acl_egress",
        "arp_nd",
        "dhcp",
        "lb",
        "l2_lookup",
        "l3_lookup",
        "dnat",
        "snat",
        "egress_dispatch",
        "acl_ingress",
        "output",
    ):
        assert P.stage(want).doc


def test_every_stage_is_reachable_from_classify():
    seen, todo = set(), ["classify"]
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo += P.stage(s).next
    assert seen == {s.name for s in P.STAGES}


def test_bands_do_not_overlap_and_reject_strays():
    spans = sorted((b.base, b.base + b.width) for b in P.BANDS)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert P.MATCH(32) == P.MATCH.base + 32 and P.band_of(P.MATCH(32)) is P.MATCH
    with pytest.raises(ValueError):
        P.MATCH(P.MATCH.width)
    with pytest.raises(ValueError):
        P.band_of(P.MATCH.base - 1)


def test_registers_and_flags():
    assert {r.field for r in P.REGISTERS} == {
        "metadata",
        "reg0",
        "xxreg3",
        "reg5",
        "reg6",
        "reg7",
        "reg8",
        "reg9",
        "reg10",
    }
    assert len({f.bit for f in P.FLAG_BITS}) == len(P.FLAG_BITS)
    assert P.flags_match([P.FROM_TUNNEL], [P.ROUTED]) == (1, 3)
    with pytest.raises(ValueError):
        P.flags_match([P.ROUTED], [P.ROUTED])
    assert P.CT_ZONE.mask == 0xFFFF and P.SRC_PORT.n_bits == 32
    # the IPv6 next hop lives in reg12..reg15, which no other register overlaps
    assert P.NEXT_HOP6.n_bits == 128 and not {"reg12", "reg13", "reg14", "reg15"} & {
        r.field for r in P.REGISTERS
    }


# -- Flow validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Flow("nowhere", P.MATCH), "unknown stage"),
        (lambda: Flow("l2_lookup", 5), "no priority band"),
        (lambda: Flow("l2_lookup", P.MATCH, {"ipv4_dst": "10.0.0.1"}), "does not match on ipv4_dst"),
        (lambda: Flow("acl_egress", P.MATCH, {"ipv4_dst": "10.0.0.1"}), "needs eth_type=0x800"),
        (lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x86DD, "ipv4_dst": "10.0.0.1"}), "needs eth_type"),
        (lambda: Flow("acl_egress", P.MATCH, {"eth_type": 0x800, "tcp_dst": 80}), "needs ip_proto=6"),
        (lambda: Flow("l2_lookup", P.MATCH, {}, [A.Goto("classify")]), "may not pass to classify"),
        (lambda: Flow("acl_egress", P.MATCH, {}, [A.Goto("acl_egress")]), "goes backwards"),
        (lambda: Flow("l2_lookup", P.MATCH, {}, [A.Resubmit("output")]), "may not pass to output"),
        (lambda: Flow("l2_lookup", P.MATCH, {}, [A.CT(table="acl_ingress")]), "may not pass to acl_ingress"),
        (
            lambda: Flow("l2_lookup", P.MATCH, {}, [A.Goto("dnat"), A.Goto("egress_dispatch")]),
            "more than one",
        ),
        (lambda: Flow("l2_lookup", P.MATCH, {"bogus_field": 1}), "unknown match/set field"),
        (lambda: Flow("l2_lookup", P.MATCH, [("reg7", 1), ("reg7", 2)]), "matched twice"),
        (lambda: Flow("l2_lookup", P.MATCH, {"eth_dst": "not-a-mac"}), "bad value"),
        (lambda: Flow("l2_lookup", P.MATCH, {"reg7": 2**32}), "does not fit"),
        (lambda: Flow("l2_lookup", P.MATCH, {}, ["output:1"]), "not an action"),
        (lambda: Flow("acl_egress", P.MATCH, {"reg6": 1}, [A.CT(zone=1)]), "ct\\(\\) needs eth_type"),
        (lambda: Flow("l3_lookup", P.MATCH, {"metadata": 1}, [A.DecTtl()]), "dec_ttl needs"),
        (
            lambda: Flow("l3_lookup", P.MATCH, {}, [A.SetField("ipv4_dst", "10.0.0.1")]),
            "set_field of ipv4_dst",
        ),
        (
            lambda: Flow("arp_nd", P.MATCH, {"eth_type": 0x800}, [A.Move("arp_sha", "arp_tha", 48)]),
            "move from",
        ),
        (
            lambda: Flow(
                "snat", P.MATCH, {"eth_type": 0x86DD}, [A.CT(commit=True, nat=A.NAT("src", "10.0.0.1"))]
            ),
            "nat to",
        ),
        (lambda: Flow("classify", P.MATCH, {"in_port": 1}, [A.PopVlan()]), "pop_vlan needs a VLAN"),
        (lambda: Flow("egress_dispatch", P.MATCH, {}, [A.SetField("vlan_vid", 0x1005)]), "needs a VLAN"),
        (lambda: Flow("egress_dispatch", P.MATCH, {}, [A.PushVlan(), A.PopVlan(), A.PopVlan()]), "pop_vlan"),
        (lambda: Flow("egress_dispatch", P.MATCH, {}, [A.PushVlan()] * 3), "beyond two"),
        (
            lambda: Flow(
                "acl_egress", P.HIGH, {"eth_type": 0x800, "ct_state": (0x30, 0x30)}, [A.CT(commit=True)]
            ),
            "\\+inv",
        ),
        (
            lambda: Flow(
                "acl_egress", P.MATCH, {"eth_type": 0x800, "ip_proto": 17}, [A.CT(commit=True, alg=21)]
            ),
            "ip_proto=6",
        ),
    ],
)
def test_breaking_the_declaration_raises_at_once(build, message):
    with pytest.raises(FlowError, match=message):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: A.Output(A.CONTROLLER),
        lambda: A.Output(-1),
        lambda: A.load("reg6", 1 << 16, 16, 31),
        lambda: A.Move("reg6", "reg7", 33),
        lambda: A.Conjunction(1, 3, 2),
        lambda: A.CT(zone=1 << 16),
        lambda: A.CT(exec=(A.SetField("ct_mark", 1),)),
        lambda: A.CT(commit=True, exec=(A.SetField("reg6", 1),)),
        lambda: A.NAT("src", "not-ip"),
        lambda: A.NAT("", "10.0.0.1"),
        lambda: A.NAT("src", "10.0.0.1", "fd00::1"),
        lambda: A.GroupAction(0xFFFFFFFF),
        lambda: A.SetField("reg6", 1, 0),
        lambda: A.Output(0xFF00),
        lambda: A.Output(A.ANY),
        lambda: A.CT(nat=A.NAT("src", "10.0.0.1")),
        lambda: A.CT(alg=80),
        lambda: A.NAT("src", "10.0.0.9", "10.0.0.1"),
        lambda: A.NAT("src", "0.0.0.0", "0.0.0.9"),
        lambda: A.NAT("dst", "10.0.0.1", "", 9, 8),
    ],
)
def test_impossible_actions_raise(build):
    with pytest.raises(ActionError):
        build()


def test_groups_validate():
    with pytest.raises(FlowError):
        Group(1, "fancy", ())
    with pytest.raises(FlowError):
        Group(1, "indirect", (Bucket((A.Output(1),)), Bucket((A.Output(2),))))
    with pytest.raises(FlowError):
        Bucket((A.Goto("output"),))
    with pytest.raises(FlowError):
        Bucket((A.Resubmit("nowhere"),))
    g = Group(1, "select", [[A.Output(1)], Bucket((A.Output(2),), weight=5)])
    assert [b.weight for b in g.buckets] == [1, 5]


# -- normalization, equality, hashing --------------------------------------------------------------------


def test_equal_flows_are_one_value_whatever_the_spelling():
    a = Flow(
        "acl_egress",
        P.MATCH,
        {
            "reg6": 4,
            "eth_type": 0x800,
            "ipv4_dst": "10.0.0.7/24",
            "eth_dst": "AA:BB:CC:DD:EE:FF",
            "metadata": (9, 2**64 - 1),
        },
        [A.load("reg7", 3), A.Goto("arp_nd")],
    )
    b = Flow(
        "acl_egress",
        P.MATCH.base,
        [
            ("metadata", 9),
            ("eth_dst", "aa:bb:cc:dd:ee:ff"),
            ("ipv4_dst", "10.0.0.0", "255.255.255.0"),
            ("eth_type", 2048),
            ("reg6", 4),
        ],
        (A.Goto("arp_nd"), A.SetField("reg7", 3)),
    )
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.match_dict()["ipv4_dst"] == ("10.0.0.0", "255.255.255.0")
    assert a.match_dict()["metadata"] == 9  # full mask dropped


def test_zero_mask_wildcards_and_field_order_is_canonical():
    f = Flow("l2_lookup", P.MATCH, {"eth_dst": ("01:00:00:00:00:00", "00:00:00:00:00:00"), "reg7": 1})
    assert f.match_dict() == {"reg7": 1}
    g = Flow("l2_lookup", P.MATCH, {"eth_dst": ("03:00:00:00:00:00", "01:00:00:00:00:00"), "reg7": 1})
    assert g.match_dict()["eth_dst"] == ("01:00:00:00:00:00", "01:00:00:00:00:00")


def test_instructions_take_canonical_places():
    f = Flow(
        "classify",
        P.MATCH,
        {"in_port": 1},
        [A.Goto("port_sec_in"), A.WriteMetadata(5), A.Output(2), A.Meter(1), A.load("reg6", 1)],
    )
    assert [type(a) for a in f.actions] == [A.Meter, A.Output, A.SetField, A.WriteMetadata, A.Goto]


def test_flows_diff_as_sets():
    a = Flow("output", P.MATCH, {"reg7": 1}, [A.Output(1)])
    b = Flow("output", P.MATCH, {"reg7": 2}, [A.Output(2)])
    c = Flow("output", P.MATCH, {"reg7": 2}, [A.Output(3)])
    installed, desired = {a, b}, {a, c}
    assert desired - installed == {c} and installed - desired == {b}
    assert b.key() == c.key()  # same OpenFlow identity: a MODIFY_STRICT, not add+delete


@settings(max_examples=200, deadline=None)
@given(flows())
def test_rebuilding_a_flow_from_its_fields_gives_the_same_value(flow):
    again = Flow(flow.stage, flow.priority, flow.match, flow.actions, flow.cookie)
    assert again == flow and hash(again) == hash(flow)


# -- cookies ---------------------------------------------------------------------------------------------


def test_cookie_layout():
    c = Cookie(app=3, owner=0xDEADBEEF, generation=7)
    assert c.value == (MAGIC << 56) | (3 << 48) | (0xDEADBEEF << 16) | 7
    assert Cookie.decode(c.value) == c and is_ours(c.value)
    assert not is_ours(0) and not is_ours(0x1234) and Cookie.decode(MAGIC << 56) is None
    a = Cookie.for_owner(3, "port/1", 1).value
    b = Cookie.for_owner(3, "port/1", 2).value
    assert a & OWNER_MASK == b & OWNER_MASK and a != b
    assert Flow("output", P.DEFAULT, cookie=c).owner == c


def test_registry_maps_cookies_back_to_owners():
    r = CookieRegistry()
    r.register_app(2, "l2")
    c = r.register(2, "network/blue", generation=4)
    assert r.lookup(c.value) == ("l2", "network/blue") and r.knows(c.value)
    assert r.lookup(Cookie.for_owner(2, "network/red").value) is None
    assert r.lookup(0) is None
    r.forget(2, "network/blue")
    assert not r.knows(c.value)
    with pytest.raises(ValueError):
        r.register_app(2, "l3")


def test_conjunction_cannot_mix_with_other_actions():
    with pytest.raises(FlowError, match="conjunction"):
        Flow("acl_egress", P.MATCH, {"reg6": 1}, [A.Conjunction(1, 1, 2), A.Goto("arp_nd")])
    Flow("acl_egress", P.MATCH, {"reg6": 1}, [A.Conjunction(1, 1, 2), A.Conjunction(2, 2, 2)])
