"""Security groups by behaviour: walk packets through a chassis's compiled tables, with conntrack."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps import acl
from apps.compiler import Compiler, desired_from_scratch
from flows.flow import Flow
from flows.walker import Switch
from tests.test_apps_l2 import World, eth
from topology.records import EGRESS, INGRESS, Port, SecurityGroup, SecurityGroupRule

TCP, UDP, ICMP = 6, 17, 1


class SgWorld(World):
    """World plus security groups, written as records (the API's validation is tested elsewhere)."""

    def group(self, ident: str, tenant: str = "alice") -> SecurityGroup:
        g = SecurityGroup(id=ident, tenant=tenant, display_name=ident)
        self.apply([("security_group", ident, None, g)])
        return g

    def rule(self, ident: str, group: str, direction: str = INGRESS, **kw) -> SecurityGroupRule:  # type: ignore[no-untyped-def]
        key = self.topo.rule_keys.choose()
        assert key is not None
        r = SecurityGroupRule(
            id=ident,
            tenant=self.topo.security_groups[group].tenant,
            security_group_id=group,
            direction=direction,
            key=key,
            **kw,
        )
        self.apply([("security_group_rule", ident, None, r)])
        return r

    def drop_rule(self, ident: str) -> None:
        self.apply([("security_group_rule", ident, self.topo.sg_rules[ident], None)])

    def set_port(self, ident: str, **fields) -> Port:  # type: ignore[no-untyped-def]
        old = self.topo.ports[ident]
        new = dataclasses.replace(old, **fields)
        self.apply([("port", ident, old, new)])
        return new


def world() -> tuple[SgWorld, dict[str, Port]]:
    """alice's 'web' group (a1, a2: ingress from members, tcp/22 from anywhere, all egress); n1 is in 'lone'
    (egress only); o1 has no port security."""
    w = SgWorld()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("a", "alice", "10.0.0.0/24")
    w.group("web")
    w.group("lone")
    w.rule("web-egress", "web", EGRESS)
    w.rule("web-members", "web", INGRESS, remote_group_id="web")
    w.rule(
        "web-ssh",
        "web",
        INGRESS,
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="0.0.0.0/0",
    )
    w.rule("lone-egress", "lone", EGRESS)
    p = {}
    for name, chassis, ip, groups in (
        ("a1", "hv1", "10.0.0.5", ("web",)),
        ("a2", "hv1", "10.0.0.6", ("web",)),
        ("a3", "hv2", "10.0.0.7", ("web",)),
        ("n1", "hv1", "10.0.0.8", ("lone",)),
        ("o1", "hv1", "10.0.0.9", ()),
    ):
        w.port(name, "a", chassis, ip)
        p[name] = w.set_port(name, security_groups=groups, port_security_enabled=bool(groups))
    return w, p


def ip(src: Port, dst: Port, proto: int = ICMP, **extra):  # type: ignore[no-untyped-def]
    l4 = {"icmpv4_type": 8, "icmpv4_code": 0} if proto == ICMP else {}
    return {
        **eth(src, dst.mac),
        "ipv4_dst": dst.fixed_ips[0][1],
        "ip_proto": proto,
        "nw_ttl": 64,
        **l4,
        **extra,
    }


def send(w: SgWorld, sw: Switch, src: Port, dst: Port, proto: int = ICMP, **extra) -> list[int | str]:  # type: ignore[no-untyped-def]
    return sw.walk({"in_port": w.ofport(src), **ip(src, dst, proto, **extra)}).ports


def reply(w: SgWorld, sw: Switch, src: Port, dst: Port, proto: int = ICMP, **extra) -> list[int | str]:  # type: ignore[no-untyped-def]
    """From src back to dst, as the answer to dst's packet (ICMP echo reply, or swapped ports)."""
    pkt = ip(src, dst, proto, **extra)
    if proto == ICMP:
        pkt["icmpv4_type"] = 0
    return sw.walk({"in_port": w.ofport(src), **pkt}).ports


def test_members_reach_each_other_and_replies_come_back() -> None:
    w, p = world()
    sw = w.switch("hv1")
    assert send(w, sw, p["a1"], p["a2"]) == [w.ofport(p["a2"])]
    assert reply(w, sw, p["a2"], p["a1"]) == [w.ofport(p["a1"])]


def test_a_non_member_cannot_reach_in_but_its_egress_is_open_and_replies_return() -> None:
    w, p = world()
    sw = w.switch("hv1")
    # a2 -> n1: a2's egress is open, n1 allows no ingress at all
    assert send(w, sw, p["a2"], p["n1"]) == []
    sw = w.switch("hv1")  # fresh conntrack (the walker does not tell an echo request from a reply by type)
    res = sw.walk({"in_port": w.ofport(p["n1"]), **ip(p["n1"], p["a2"])})
    assert res.ports == [] and res.dropped_at == "acl_ingress"
    # n1 -> o1 (no port security): n1's egress allows it, o1 takes everything
    assert send(w, sw, p["n1"], p["o1"]) == [w.ofport(p["o1"])]
    assert reply(w, sw, p["o1"], p["n1"]) == [w.ofport(p["n1"])]


def test_tcp_22_from_anywhere_opens_22_and_not_23() -> None:
    w, p = world()
    sw = w.switch("hv1")
    assert send(w, sw, p["n1"], p["a2"], TCP, tcp_src=40000, tcp_dst=22) == [w.ofport(p["a2"])]
    assert send(w, sw, p["n1"], p["a2"], TCP, tcp_src=40001, tcp_dst=23) == []
    assert reply(w, sw, p["a2"], p["n1"], TCP, tcp_src=22, tcp_dst=40000) == [w.ofport(p["n1"])]
    # an answer to a connection nobody opened is not a reply: n1 allows no ingress
    assert reply(w, sw, p["a2"], p["n1"], TCP, tcp_src=22, tcp_dst=40009) == []


def test_port_ranges_udp_and_icmp_rules() -> None:
    w, p = world()
    w.rule("lone-udp", "lone", INGRESS, protocol="udp", port_range_min=1000, port_range_max=1999)
    w.rule("lone-echo", "lone", INGRESS, protocol="icmp", icmp_type=8, icmp_code=0)
    sw = w.switch("hv1")
    for port, ok in ((999, False), (1000, True), (1500, True), (1999, True), (2000, False)):
        got = send(w, sw, p["o1"], p["n1"], UDP, udp_src=5000 + port, udp_dst=port)
        assert (got == [w.ofport(p["n1"])]) is ok, port
    assert send(w, sw, p["o1"], p["n1"]) == [w.ofport(p["n1"])]  # echo request
    assert send(w, sw, p["o1"], p["n1"], ICMP, icmpv4_type=13, icmpv4_code=0) == []  # timestamp: no rule


def test_remote_cidr_rule() -> None:
    w, p = world()
    w.rule("lone-from-9", "lone", INGRESS, remote_ip_prefix="10.0.0.9/32")
    sw = w.switch("hv1")
    assert send(w, sw, p["o1"], p["n1"]) == [w.ofport(p["n1"])]  # 10.0.0.9
    assert send(w, sw, p["a1"], p["n1"]) == []  # 10.0.0.5


def test_removing_a_rule_stops_new_and_established_connections() -> None:
    w, p = world()
    sw = w.switch("hv1")
    assert send(w, sw, p["n1"], p["a2"], TCP, tcp_src=40000, tcp_dst=22) == [w.ofport(p["a2"])]
    w.drop_rule("web-ssh")
    sw2 = w.switch("hv1")
    sw2.conntrack = sw.conntrack  # the switch keeps its connections across a flow change
    assert send(w, sw2, p["n1"], p["a2"], TCP, tcp_src=40000, tcp_dst=22) == []  # established, original dir
    assert send(w, sw2, p["n1"], p["a2"], TCP, tcp_src=40002, tcp_dst=22) == []  # new


def test_tenants_with_the_same_addresses_never_share_conntrack_state() -> None:
    w, p = world()
    w.network("b", "bob", "10.0.0.0/24")
    w.group("bob-lone", "bob")
    w.rule("bob-egress", "bob-lone", EGRESS)
    w.port("b1", "b", "hv1", "10.0.0.8")  # n1's address, in another tenant
    w.port("b2", "b", "hv1", "10.0.0.9")  # o1's address
    b1 = w.set_port("b1", security_groups=("bob-lone",))
    b2 = w.set_port("b2", security_groups=(), port_security_enabled=False)
    sw = w.switch("hv1")
    assert send(w, sw, p["n1"], p["o1"]) == [w.ofport(p["o1"])]  # alice opens 10.0.0.8 -> .9
    # bob's b2 (10.0.0.9) "answering" to b1 (10.0.0.8): not a reply in b1's zone, b1 allows no ingress
    assert reply(w, sw, b2, b1) == []


def test_port_security_disabled_takes_everything() -> None:
    w, p = world()
    sw = w.switch("hv1")
    assert send(w, sw, p["n1"], p["o1"], TCP, tcp_src=1, tcp_dst=9999) == [w.ofport(p["o1"])]


def _conj_flows(flows: list[Flow]) -> int:
    return sum(1 for f in flows if f.stage in ("acl_egress", "acl_ingress"))


def test_flows_grow_with_members_plus_rules_not_their_product() -> None:
    def count(members: int, rules: int) -> int:
        w = SgWorld()
        w.chassis("hv1", "192.0.2.1")
        w.network("a", "alice", "10.0.0.0/16")
        w.group("g")
        for i in range(rules):
            w.rule(
                f"r{i}",
                "g",
                INGRESS,
                protocol="tcp",
                port_range_min=1000 + i,
                port_range_max=1000 + i,
                remote_group_id="g",
            )
        for i in range(members):
            w.port(f"p{i}", "a", "hv1", f"10.0.{i // 200}.{i % 200 + 2}")
            w.set_port(f"p{i}", security_groups=("g",))
        return _conj_flows([i for i in desired_from_scratch(w.topo, w.runtime, "hv1") if isinstance(i, Flow)])

    base = count(10, 1)
    more_members = count(40, 1) - base
    more_rules = count(10, 4) - base
    both = count(40, 4) - base
    assert both == more_members + more_rules  # additive: no members x rules term


def test_one_member_joining_a_500_member_group_changes_a_handful_of_flows() -> None:
    w = SgWorld()
    w.chassis("hv1", "192.0.2.1")
    w.network("a", "alice", "10.0.0.0/16")
    w.group("g")
    for i, proto in enumerate(("tcp", "udp")):
        w.rule(
            f"r{i}", "g", INGRESS, protocol=proto, port_range_min=80, port_range_max=80, remote_group_id="g"
        )
    w.rule("out", "g", EGRESS)
    comp = Compiler()
    for i in range(500):
        w.port(f"p{i}", "a", "hv1", f"10.0.{i // 200}.{i % 200 + 2}")
        w.set_port(f"p{i}", security_groups=("g",))
    comp.runtime = dict(w.runtime)
    comp.rebuild(w.topo)
    w.port("new", "a", "hv1", "10.0.9.9")
    comp.on_changes(w.topo, [("port", "new", None, w.topo.ports["new"])])
    comp.on_runtime(w.topo, w.runtime["hv1"])  # plugged
    before = w.topo.ports["new"]  # in alice's default group, as every port World makes
    old = w.set_port("new", security_groups=())
    comp.on_changes(w.topo, [("port", "new", before, old)])
    assert desired_from_scratch(w.topo, w.runtime, "hv1") == comp.desired("hv1")
    new = w.set_port("new", security_groups=("g",))
    delta = comp.on_changes(w.topo, [("port", "new", old, new)])["hv1"]
    acl_changes = [f for f in delta.add | delta.remove if isinstance(f, Flow) and f.stage.startswith("acl")]
    # the new member's address flow (one per ingress ethertype) and its own clause-1 flows (old and new)
    assert len(acl_changes) <= 6, acl_changes
    assert desired_from_scratch(w.topo, w.runtime, "hv1") == comp.desired("hv1")


# ------------------------------------------------------------------------------------------ incremental


OPS = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "rule+", "rule-", "ip", "bind", "secoff"]),
        st.integers(0, 5),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_incremental_equals_full(ops_: list[tuple[str, int, int]]) -> None:
    w = SgWorld()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("a", "alice", "10.0.0.0/24")
    groups = ["g0", "g1", "g2"]
    for g in groups:
        w.group(g)
    w.rule("seed", "g0", INGRESS, remote_group_id="g1")
    for i in range(6):
        w.port(f"p{i}", "a", "hv1" if i % 2 else "hv2", f"10.0.0.{10 + i}")
    comp = Compiler()
    comp.runtime = dict(w.runtime)
    comp.rebuild(w.topo)
    n_rules = 0
    for op, i, g in ops_:
        port = w.topo.ports[f"p{i}"]
        group = groups[g]
        changes: list = []  # type: ignore[type-arg]
        if op == "join" and group not in port.security_groups:
            new = dataclasses.replace(
                port, security_groups=(*port.security_groups, group), port_security_enabled=True
            )
            changes = [("port", port.id, port, new)]
        elif op == "leave" and port.security_groups:
            new = dataclasses.replace(port, security_groups=port.security_groups[1:])
            changes = [("port", port.id, port, new)]
        elif op == "rule+":
            n_rules += 1
            key = w.topo.rule_keys.choose()
            r = SecurityGroupRule(
                id=f"r{n_rules}",
                tenant="alice",
                security_group_id=group,
                direction=INGRESS if i % 2 else EGRESS,
                key=key or 0,
                protocol="tcp" if i % 3 else "",
                port_range_min=(80 if i % 3 else 0),
                port_range_max=(81 if i % 3 else 0),
                remote_group_id=groups[(g + 1) % 3] if i < 3 else "",
            )
            changes = [("security_group_rule", r.id, None, r)]
        elif op == "rule-" and w.topo.sg_rules:
            rid = sorted(w.topo.sg_rules)[i % len(w.topo.sg_rules)]
            changes = [("security_group_rule", rid, w.topo.sg_rules[rid], None)]
        elif op == "ip":
            sub = port.fixed_ips[0][0]
            new = dataclasses.replace(port, fixed_ips=((sub, f"10.0.0.{100 + i * 3 + g}"),))
            if all(
                not (pp.fixed_ips and pp.fixed_ips[0][1] == new.fixed_ips[0][1])
                for pp in w.topo.ports.values()
            ):
                changes = [("port", port.id, port, new)]
        elif op == "bind":
            new = dataclasses.replace(port, binding_chassis="hv2" if port.binding_chassis == "hv1" else "hv1")
            changes = [("port", port.id, port, new)]
            for rt in w.runtime.values():
                rt.vifs.pop(port.id, None)  # type: ignore[attr-defined]
            w.runtime[new.binding_chassis].vifs[port.id] = 50 + i  # type: ignore[index]
        elif op == "secoff" and port.port_security_enabled:
            new = dataclasses.replace(port, port_security_enabled=False, security_groups=())
            changes = [("port", port.id, port, new)]
        if not changes:
            continue
        w.apply(changes)
        comp.runtime = {k: dataclasses.replace(v, vifs=dict(v.vifs)) for k, v in w.runtime.items()}
        if op == "bind":
            for ch in w.runtime:
                comp.on_runtime(w.topo, comp.runtime[ch])
        comp.on_changes(w.topo, changes)
        for ch in ("hv1", "hv2"):
            assert comp.desired(ch) == desired_from_scratch(w.topo, comp.runtime, ch), (op, i, g)


def test_budget_estimate_bounds_the_compiled_flows_and_names_the_biggest_rule() -> None:
    w, _p = world()
    for i in range(30):
        w.port(f"m{i}", "a", "hv1", f"10.0.0.{100 + i}")
        w.set_port(f"m{i}", security_groups=("web",))
    flows = [i for i in desired_from_scratch(w.topo, w.runtime, "hv1") if isinstance(i, Flow)]
    sg_flows = [
        f
        for f in flows
        if f.stage in ("acl_egress", "acl_ingress")
        and f.match_dict().get("conj_id")
        or (
            f.stage in ("acl_egress", "acl_ingress")
            and any(a.__class__.__name__ == "Conjunction" for a in f.actions)
        )
    ]
    est = acl.estimate(w.topo, "alice")
    total, _by_rule = est["hv1"]
    assert total >= len(sg_flows)
    excess = acl.over_budget(w.topo, "alice", 10)
    assert excess is not None and excess.chassis == "hv1" and excess.rule_id == "web-members"
    assert acl.over_budget(w.topo, "alice", total) is None


def test_explain_names_the_rule_that_allows_tcp_22_and_the_groups_that_refuse_23() -> None:
    from controller.debug.explain import explain
    from tests.test_trace import FakeDataplane

    w, _p = world()
    dp = FakeDataplane(w)
    ok = explain(dp, None, "n1", "a2", "tcp", 22)
    assert ok.allowed and ok.confirmed is True
    assert any(d.resource == "securityGroupRules/web-ssh" and d.allows for d in ok.deciders)
    no = explain(dp, None, "n1", "a2", "tcp", 23)
    assert not no.allowed and no.confirmed is True, no.format()
    denial = next(d for d in no.deciders if not d.allows)
    assert denial.kind == "security_group" and "securityGroups/web" in denial.description
    assert "ingress" in denial.description and "tcp/23" in denial.description


def test_conjunction_results_match_the_conjunction_alone() -> None:
    """OVS looks up one completed conjunction per clause flow: if its conj_id flow could still fail on another
    field, a packet that another completed rule allows would drop. So conj_id flows match nothing else, and
    the protocol part is a clause (this is the e2e case: icmp from anywhere + udp/53 from one address)."""
    w, p = world()
    w.rule(
        "lone-udp",
        "lone",
        INGRESS,
        protocol="udp",
        port_range_min=53,
        port_range_max=53,
        remote_ip_prefix="10.0.0.9/32",
    )
    w.rule("lone-echo", "lone", INGRESS, protocol="icmp", icmp_type=8, icmp_code=0)
    flows = [i for i in desired_from_scratch(w.topo, w.runtime, "hv1") if isinstance(i, Flow)]
    results = [f for f in flows if "conj_id" in f.match_dict()]
    assert results and all(set(f.match_dict()) == {"conj_id"} for f in results)
    sw = w.switch("hv1")
    assert send(w, sw, p["o1"], p["n1"]) == [w.ofport(p["n1"])]
    assert send(w, sw, p["o1"], p["n1"], UDP, udp_src=5353, udp_dst=53) == [w.ofport(p["n1"])]
    assert send(w, sw, p["o1"], p["n1"], UDP, udp_src=5353, udp_dst=54) == []


def test_a_trace_names_the_security_group_rule_and_clauses_that_let_a_packet_in() -> None:
    from controller.debug import trace as tr
    from tests.test_trace import FakeDataplane

    w, _p = world()
    res = tr.trace(FakeDataplane(w), port_id="n1", dst_port="a2", headers={"ip_proto": 6, "tcp_dst": 22})
    assert res.verdict == "delivered to ports/a2 on hv1"
    owners = [s.owner for h in res.hops for s in h.steps if s.stage == "acl_ingress" and s.owner]
    assert "security_group/web-ssh" in owners, owners


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 9),
            st.sampled_from([("web",), ("lone",), ("web", "lone"), ()]),
            st.sampled_from(["hv1", "hv2", ""]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_port_write_never_adds_more_than_its_growth_bound(writes) -> None:  # type: ignore[no-untyped-def]
    """The flow budget skips the exact check when the busiest chassis plus this bound fits: it must bound."""
    w, _p = world()
    w.rule(
        "lone-from-web",
        "lone",
        INGRESS,
        remote_group_id="web",
        protocol="tcp",
        port_range_min=1000,
        port_range_max=1999,
    )
    for i in range(10):
        w.port(f"x{i}", "a", "hv1", f"10.0.0.{50 + i}")
    for i, groups, chassis in writes:
        old = w.topo.ports[f"x{i}"]
        new = dataclasses.replace(
            old, security_groups=groups, port_security_enabled=bool(groups), binding_chassis=chassis
        )
        before = acl.estimate(w.topo, "alice")
        bound = acl.port_growth_bound(w.topo, new)
        w.apply([("port", old.id, old, new)])
        after = acl.estimate(w.topo, "alice")
        for ch, (total, _by_rule) in after.items():
            assert total - before.get(ch, (0, {}))[0] <= bound, (ch, groups, chassis)
