"""Hypothesis strategies for Flow and Group values (shared by the flows tests)."""

from __future__ import annotations

import netaddr
from hypothesis import strategies as st

from flows import actions as A
from flows import pipeline
from flows.flow import Bucket, Flow, Group

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
ipv4s = st.integers(0, 2**32 - 1).map(lambda i: ".".join(str((i >> s) & 255) for s in (24, 16, 8, 0)))
ipv6s = st.binary(min_size=16, max_size=16).map(lambda b: str(netaddr.IPAddress(int.from_bytes(b, "big"), 6)))
prefix4 = st.tuples(ipv4s, st.integers(1, 32)).map(lambda t: f"{t[0]}/{t[1]}")


@st.composite
def matches(draw):
    """A match dict that satisfies OpenFlow prerequisites."""
    m = {}
    if draw(st.booleans()):
        m["metadata"] = draw(st.integers(0, pipeline.MAX_DATAPATH_KEY))
    for reg in ("reg6", "reg7"):
        if draw(st.booleans()):
            m[reg] = draw(u32)
    if draw(st.booleans()):
        m["reg10"] = pipeline.flags_match(draw(st.sets(st.sampled_from(pipeline.FLAG_BITS), max_size=2)), ())
    if draw(st.booleans()):
        m["eth_dst"] = draw(macs)
    if draw(st.integers(0, 3)) == 0:
        m["vlan_vid"] = 0x1000 | draw(st.integers(0, 4095))
    layer = draw(st.sampled_from(["none", "ip", "tcp", "arp", "ipv6", "ct"]))
    if layer in ("ip", "tcp", "ct"):
        m["eth_type"] = 0x0800
        if draw(st.booleans()):
            m["ipv4_dst"] = draw(prefix4)
        if draw(st.booleans()):
            m["ipv4_src"] = draw(ipv4s)
    if layer == "tcp":
        m["ip_proto"] = 6
        m["tcp_dst"] = draw(u16)
    if layer == "ct":
        m["ct_state"] = (draw(st.integers(0, 255)), draw(st.integers(1, 255)))
    if layer == "arp":
        m["eth_type"] = 0x0806
        m["arp_tpa"] = draw(ipv4s)
        if draw(st.booleans()):
            m["arp_op"] = draw(st.sampled_from([1, 2]))
    if layer == "ipv6":
        m["eth_type"] = 0x86DD
        m["ipv6_dst"] = draw(ipv6s)
    return m


def set_fields():
    return st.one_of(
        st.builds(A.SetField, st.just("reg7"), u32),
        st.builds(A.SetField, st.just("tunnel_id"), st.integers(0, 2**24 - 1)),
        st.builds(A.SetField, st.just("tun_ipv4_dst"), ipv4s),
        st.builds(A.SetField, st.just("eth_src"), macs),
        st.builds(A.SetField, st.just("eth_dst"), macs),
        st.builds(A.SetField, st.just("vlan_vid"), st.integers(0, 4095).map(lambda v: v | 0x1000)),
        st.builds(A.SetField, st.just("metadata"), st.integers(0, 2**24 - 1)),
        st.builds(A.SetField, st.just("ipv4_dst"), ipv4s),
        st.tuples(st.sampled_from(pipeline.FLAG_BITS)).map(lambda t: A.load("reg10", 1, t[0].bit, t[0].bit)),
        st.tuples(st.integers(0, 15), st.integers(0, 16)).map(
            lambda t: A.load("reg6", t[1] & 0xFFFF, t[0], t[0] + 15)
        ),
    )


def _ip_key(ip: str) -> int:
    return int(__import__("ipaddress").ip_address(ip))


nats = st.one_of(
    st.just(A.NAT()),
    st.builds(
        lambda kind, a, b, port, extra, p, r: A.NAT(
            kind,
            min(a, b, key=_ip_key),
            max(a, b, key=_ip_key) if extra else "",
            port,
            port + extra if port else None,
            p,
            r,
        ),
        st.sampled_from(["src", "dst"]),
        ipv4s.filter(lambda i: i != "0.0.0.0"),
        ipv4s.filter(lambda i: i != "0.0.0.0"),
        st.one_of(st.none(), st.integers(1, 1000)),
        st.integers(0, 100),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(A.NAT, st.just("dst"), ipv6s.filter(lambda i: i != "::")),
)


def cts(targets):
    return st.builds(
        lambda commit, zone, table, nat, mark: A.CT(
            commit=commit or bool(mark) or bool(nat and nat.kind), zone=zone, table=table, nat=nat, exec=mark
        ),
        st.booleans(),
        st.one_of(u16, st.just("reg5")),
        st.one_of(st.none(), st.sampled_from(sorted(targets))) if targets else st.none(),
        st.one_of(st.none(), nats),
        st.one_of(st.just(()), u32.map(lambda v: (A.SetField("ct_mark", v),))),
    )


def plain_actions(targets=()):
    """Apply-actions (no instructions); resubmit / ct table only to `targets`."""
    choices = [
        st.builds(A.Output, st.one_of(st.integers(1, A.MAX_PORT), st.just(A.IN_PORT))),
        set_fields(),
        st.builds(
            A.Move,
            st.just("reg6"),
            st.just("reg7"),
            st.integers(1, 16),
            st.integers(0, 16),
            st.integers(0, 16),
        ),
        st.builds(A.GroupAction, st.integers(0, 1000)),
        st.just(A.PushVlan()),
        st.just(A.PopVlan()),
        st.just(A.DecTtl()),
        st.just(A.CtClear()),
        st.builds(A.Controller, st.integers(0, 2), u16, u16),
        cts(targets),
    ]
    if targets:
        choices.append(st.builds(A.Resubmit, st.sampled_from(sorted(targets))))
    return st.one_of(*choices)


def _valid_for(match, actions) -> bool:
    """True if the match makes these actions valid (as OVS checks them)."""
    from flows.flow import FlowError, _check_action_prerequisites, normalize_match

    try:
        _check_action_prerequisites(normalize_match(match), tuple(actions))
    except FlowError:
        return False
    return True


@st.composite
def flows(draw):
    """Any Flow we can build: a match, a stage that allows it, actions to its successors."""
    m = draw(matches())
    ok = [s for s in pipeline.STAGES if set(m) <= s.matches]
    s = draw(st.sampled_from(ok))
    band = draw(st.sampled_from(pipeline.BANDS))
    prio = band(draw(st.integers(0, band.width - 1)))
    cookie = draw(st.one_of(st.just(0), st.integers(0, 2**64 - 1)))
    if draw(st.integers(0, 9)) == 0:  # a conjunctive clause flow: conjunction actions only
        conj = draw(
            st.lists(st.builds(A.Conjunction, u32, st.just(1), st.integers(2, 4)), min_size=1, max_size=3)
        )
        return Flow(s.name, prio, m, conj, cookie)
    acts: list = []
    for a in draw(st.lists(plain_actions(s.next), max_size=5)):
        if _valid_for(m, acts + [a]):
            acts.append(a)
    if draw(st.booleans()):
        acts.append(A.Meter(draw(st.integers(1, 100))))
    if draw(st.booleans()):
        acts.append(A.WriteMetadata(draw(st.integers(0, 2**64 - 1)), draw(st.integers(1, 2**64 - 1))))
    forward = sorted(n for n in s.next if pipeline.table_of(n) > s.table)
    if forward and draw(st.booleans()):
        acts.append(A.Goto(draw(st.sampled_from(forward))))
    return Flow(s.name, prio, m, acts, cookie)


@st.composite
def groups(draw):
    gtype = draw(st.sampled_from(["all", "select", "indirect", "ff"]))
    n = 1 if gtype == "indirect" else draw(st.integers(0, 4))
    targets = {"egress_dispatch", "l2_lookup", "output"}
    buckets = [
        Bucket(
            tuple(draw(st.lists(plain_actions(targets), max_size=4))),
            draw(st.integers(0, 10)) if gtype == "select" else 0,
        )
        for _ in range(n)
    ]
    return Group(draw(st.integers(0, 0xFFFFFF00)), gtype, tuple(buckets))


def osken_serializes_right(actions, in_group: bool = False) -> bool:
    """False where os-ken 4.2.2's serializer is known to be wrong (we then check by parsing instead):
    masked reg_load2 of a field wider than 5 bytes (os-ken raises), and a nat() whose body is not
    8-byte aligned when more bytes follow it (os-ken omits the padding; in a group bucket the
    bucket length then disagrees with the message length)."""
    for a in actions:
        if isinstance(a, A.SetField) and a.mask is not None:
            from flows.fields import field_size

            if field_size(a.field) > 5:
                return False
        if isinstance(a, A.CT):
            if not osken_serializes_right(a.exec):
                return False
            if a.nat is not None and (a.exec or in_group):
                n = a.nat
                size = 4 if ":" not in n.ip_min else 16
                opt = (size if n.ip_min else 0) + (size if n.ip_max else 0)
                opt += (2 if n.port_min is not None else 0) + (2 if n.port_max is not None else 0)
                if opt % 8:
                    return False
    return True
