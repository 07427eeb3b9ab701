"""dump-flows-shaped text with stage names."""

from __future__ import annotations

from hypothesis import given, settings

from flows import actions as A
from flows import pipeline as P
from flows.cookie import CookieRegistry
from flows.flow import Bucket, Flow, Group
from flows.format import format_flow, format_flows, format_group
from tests.test_flows_strategies import flows


def test_flow_line_reads_like_ovs_ofctl_with_stage_names():
    f = Flow(
        "acl_egress",
        P.MATCH(2),
        {
            "metadata": 5,
            "eth_type": 0x800,
            "ip_proto": 6,
            "tcp_dst": 22,
            "ipv4_src": "10.0.0.0/24",
            "ct_state": (0x21, 0x23),
        },
        [
            A.CT(
                commit=True,
                zone="reg5",
                table="acl_egress",
                nat=A.NAT("src", "1.2.3.4", "", 1000, 2000),
                exec=(A.SetField("ct_mark", 1),),
            ),
            A.Goto("arp_nd"),
        ],
        cookie=0xC5,
    )
    assert format_flow(f) == (
        " cookie=0xc5, table=20(acl_egress), priority=1002,tcp,ct_state=+new-est+trk,metadata=0x5,"
        "nw_src=10.0.0.0/24,tp_dst=22 actions=ct(commit,zone=reg5[0..15],table=20(acl_egress),"
        "nat(src=1.2.3.4:1000-2000),exec(set_field:0x1->ct_mark)),goto_table:30(arp_nd)"
    )


def test_drop_tunnel_and_owner():
    reg = CookieRegistry()
    reg.register_app(4, "l2")
    c = reg.register(4, "network/blue")
    drop = Flow("classify", P.DEFAULT, cookie=c)
    assert format_flow(drop, reg) == (
        f" cookie={c.value:#x}, table=0(classify), priority=0 actions=drop  # l2/network/blue"
    )
    out = Flow(
        "egress_dispatch",
        P.MATCH,
        {"reg7": 3},
        [A.SetField("tunnel_id", 5), A.SetField("tun_ipv4_dst", "10.9.0.2"), A.Output(7)],
    )
    assert "actions=set_field:0x5->tun_id,set_field:10.9.0.2->tun_dst,output:7" in format_flow(out)
    assert format_flows([out, drop]).splitlines()[0].startswith(" cookie=0xc5")  # table order


def test_group_line():
    g = Group(3, "select", [Bucket((A.Output(1),)), Bucket((A.Resubmit("l2_lookup"),), weight=3)])
    assert format_group(g) == (
        " group_id=3,type=select,bucket=weight:1,actions=output:1,"
        "bucket=weight:3,actions=resubmit(,60(l2_lookup))"
    )


@settings(max_examples=200, deadline=None)
@given(flows())
def test_every_flow_formats_with_its_stage_name(flow):
    line = format_flow(flow)
    assert f"table={flow.table}({flow.stage})" in line and f"priority={flow.priority}" in line
    assert ("actions=drop" in line) == (not flow.actions)


def test_masks_print_as_prefixes_where_they_are_one():
    from flows.format import _value

    assert _value("ipv4_dst", "10.0.0.0", "255.255.255.0") == "10.0.0.0/24"
    assert _value("ipv4_dst", "10.0.0.0", "255.0.255.0") == "10.0.0.0/255.0.255.0"  # not a prefix
    assert _value("ipv4_src", "10.0.0.1", "255.255.255.0") == "10.0.0.1/255.255.255.0"  # bits past the prefix
    assert _value("ipv4_src", "0.0.0.0", "0.0.0.0") == "0.0.0.0/0"
    assert _value("ipv6_dst", "2001:db8::", "ffff:ffff::") == "2001:db8::/ffff:ffff::"
    assert (
        _value("eth_dst", "01:00:00:00:00:00", "01:00:00:00:00:00") == "01:00:00:00:00:00/01:00:00:00:00:00"
    )
    assert A.NAT("src", "2001:DB8::1", "2001:db8:0::1").ip_min == "2001:db8::1"  # one spelling, no range
