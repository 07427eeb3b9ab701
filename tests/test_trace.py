"""Trace, differential trace and explain over flows compiled from a small World (no switches)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from apps.compiler import Compiler
from apps.view import ChassisRuntime
from controller.debug import trace as tr
from controller.debug.explain import explain
from flows.flow import Flow, Group
from tests.test_apps_l2 import BCAST, PATCH, TUN, World, two_tenants
from topology.errors import ApiError
from topology.model import Topology


@dataclass
class FakeEngine:
    """Stands for SwitchSync: dump() returns what the 'switch' holds, with counters."""

    items: set[Any]

    def dump(self, timeout: float) -> Any:
        flows = {i: (7, 700) for i in self.items if isinstance(i, Flow)}
        groups = tuple(i for i in self.items if isinstance(i, Group))
        return type("Dump", (), {"flows": flows, "groups": groups, "undecodable": ()})()


@dataclass
class FakePlane:
    runtime: ChassisRuntime
    engine: FakeEngine


@dataclass
class FakeState:
    topology: Topology
    lock: Any = field(default_factory=threading.RLock)


class FakeDataplane:
    """What trace() reads of controller.dataplane.Dataplane: state, compiler, planes."""

    def __init__(self, w: World) -> None:
        self.state = FakeState(w.topo)
        self.compiler = Compiler()
        for rt in w.runtime.values():
            self.compiler.on_runtime(w.topo, rt)
        self.compiler.rebuild(w.topo)
        self.planes = {
            cid: FakePlane(rt, FakeEngine(set(self.compiler.desired(cid)))) for cid, rt in w.runtime.items()
        }


@pytest.fixture
def world() -> tuple[World, dict[str, Any], FakeDataplane]:
    w, p = two_tenants()
    return w, p, FakeDataplane(w)


def test_trace_across_chassis_reaches_the_destination(world) -> None:  # type: ignore[no-untyped-def]
    w, p, dp = world
    res = tr.trace(dp, port_id="a1", dst_port="a3", headers={"ip_proto": 6, "tcp_dst": 22})
    assert [h.chassis for h in res.hops] == ["hv1", "hv2"]
    hv1, hv2 = res.hops
    assert [s.stage for s in hv1.steps if s.flow][0] == "classify"
    assert [s.stage for s in hv1.steps][-1] == "egress_dispatch"
    assert hv1.outputs[0].kind == "tunnel" and hv1.outputs[0].port == "chassis/hv2"
    assert hv1.outputs[0].ofport == TUN["vxlan"]
    assert hv2.in_port == TUN["vxlan"] and hv2.came_from == "hv1"
    # a3's security groups track the packet in its zone (ct recirculates into acl_ingress), allow it
    # (alice's default group: a1 is a member) and commit the new connection
    stages = [s.stage for s in hv2.steps]
    assert list(dict.fromkeys(stages)) == [
        "classify",
        "l2_lookup",
        "egress_dispatch",
        "acl_ingress",
        "acl_ingress_commit",
        "plugin_to_port",
        "output",
    ]
    assert stages.count("acl_ingress") >= 2, "tracked in a3's zone: ct() recirculates into acl_ingress"
    assert hv2.outputs[0].kind == "vif" and hv2.outputs[0].port == "ports/a3"
    assert res.verdict == "delivered to ports/a3 on hv2"
    # owners name the app and the object; flows are dump-flows lines with stage names
    lookup = next(s for s in hv1.steps if s.stage == "l2_lookup")
    assert lookup.owner == "l2/a3" and "table=60(l2_lookup)" in lookup.flow and "dl_dst=" in lookup.flow
    # headers were filled from the model and carried through the tunnel
    src = res.source
    assert src["port"] == "ports/a1" and src["chassis"] == "hv1" and src["in_port"] == w.ofport(p["a1"])
    assert src["headers"]["eth_src"] == p["a1"].mac and src["headers"]["ipv4_dst"] == "10.0.0.7"
    assert hv2.entry["tunnel_id"] == w.topo.networks["a"].segment_id
    assert hv2.entry["tun_ipv4_src"] == "192.0.2.1"
    assert "metadata" not in hv2.entry and "reg7" not in hv2.entry


def test_to_dict_has_the_shape_the_dashboard_draws(world) -> None:  # type: ignore[no-untyped-def]
    _, _, dp = world
    d = json.loads(json.dumps(tr.trace(dp, port_id="a1", dst_port="a3").to_dict()))
    assert set(d) == {"source", "hops", "verdict"}
    for hop in d["hops"]:
        assert set(hop) == {"chassis", "steps", "outputs"}
        for s in hop["steps"]:
            assert set(s) == {"stage", "table", "flow", "owner", "note", "depth"}
        for o in hop["outputs"]:
            assert set(o) == {"kind", "chassis", "port", "ofport", "headers"}
            assert o["kind"] in {"vif", "tunnel", "physical", "in_port", "controller"}


def test_text_rendering_reads_like_ovn_trace(world) -> None:  # type: ignore[no-untyped-def]
    _, _, dp = world
    text = tr.trace(dp, port_id="a1", dst_port="a3").format()
    assert "== hv1 (in_port=1) ==" in text and "== hv2 (in_port=100, from hv1) ==" in text
    assert "0(classify): cookie=" in text and "[classify/a1]" in text
    assert "-> tunnel to chassis/hv2" in text and text.endswith("Verdict: delivered to ports/a3 on hv2")


def test_local_broadcast_arp_and_drops(world) -> None:  # type: ignore[no-untyped-def]
    w, p, dp = world
    bc = tr.trace(dp, port_id="a1", headers={"eth_dst": BCAST})
    assert {(port, ch) for port, ch in bc.delivered_to} == {("ports/a2", "hv1"), ("ports/a3", "hv2")}
    assert "ports/b1" not in bc.verdict and "ports/b2" not in bc.verdict
    arp = tr.trace(
        dp,
        port_id="a1",
        headers={"eth_dst": BCAST, "arp_op": 1, "arp_tpa": "10.0.0.6", "arp_spa": "10.0.0.5"},
    )
    assert arp.verdict == "back to the source ports/a1 on hv1"
    assert arp.hops[0].outputs[0].headers["arp_sha"] == p["a2"].mac
    # a packet from a port nobody knows: dropped by the classify default
    miss = tr.trace(
        dp, chassis_id="hv1", in_port=999, headers={"eth_src": p["a1"].mac, "eth_dst": p["a2"].mac}
    )
    assert miss.verdict.startswith("dropped at classify by ") and "priority=0" in miss.verdict


def test_vlan_provider_network_goes_to_the_physical_network_and_on_to_the_other_chassis() -> None:
    w = World()
    w.chassis("hv1", "192.0.2.1", mappings=[("physnet1", "br-prov")])
    w.chassis("hv2", "192.0.2.2", mappings=[("physnet1", "br-prov")])
    w.network("v", "admin", "172.16.0.0/24", segment_type="vlan", physical_network="physnet1", segment_id=300)
    w.port("v1", "v", "hv1", "172.16.0.10")
    w.port("v2", "v", "hv2", "172.16.0.11")
    dp = FakeDataplane(w)
    res = tr.trace(dp, port_id="v1", dst_port="v2")
    out = res.hops[0].outputs[0]
    assert (out.kind, out.port, out.ofport) == ("physical", "physnet1", PATCH)
    assert "VLAN 300" in out.describe()
    assert res.hops[1].chassis == "hv2" and res.verdict == "delivered to ports/v2 on hv2"
    ext = tr.trace(dp, port_id="v1", headers={"eth_dst": "02:aa:00:00:00:01"})
    assert ext.verdict == "to physical network physnet1 (VLAN 300) from hv1"


def test_bad_requests_are_api_errors(world) -> None:  # type: ignore[no-untyped-def]
    _, _, dp = world
    with pytest.raises(ApiError) as e:
        tr.trace(dp, port_id="nope", headers={"eth_dst": BCAST})
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(ApiError) as e:
        tr.trace(dp, port_id="a1", headers={"bogus": 1})
    assert e.value.code == "INVALID_ARGUMENT" and "headers[bogus]" in e.value.message
    with pytest.raises(ApiError) as e:
        tr.trace(dp, port_id="a1", headers={})
    assert "eth_dst" in e.value.message
    # an IP of the source's network stands for its port's MAC (as ARP would answer)
    assert (
        tr.trace(dp, port_id="a1", headers={"ipv4_dst": "10.0.0.7"}).verdict == "delivered to ports/a3 on hv2"
    )
    # OVS names and string values are accepted
    res = tr.trace(dp, port_id="a1", headers={"dl_dst": "ff:ff:ff:ff:ff:ff", "dl_type": "0x0800"})
    assert res.source["headers"]["eth_type"] == 0x0800


def test_the_trace_says_what_the_destination_resolved_to(world) -> None:  # type: ignore[no-untyped-def]
    _, p, dp = world
    res = tr.trace(dp, port_id="a1", headers={"ipv4_dst": "10.0.0.7"})
    assert res.source["resolved"] == "ports/a3 (10.0.0.7)" and "Destination: ports/a3" in res.format()
    arp = tr.trace(dp, port_id="a1", dst_port="a2", headers={"eth_dst": BCAST, "eth_type": "0x0806"})
    assert arp.source["headers"]["arp_tpa"] == "10.0.0.6"  # the destination port's address
    assert arp.source["resolved"] == "ARP for 10.0.0.6: ports/a2 has it"
    nobody = tr.trace(dp, port_id="a1", headers={"eth_dst": BCAST, "arp_tpa": "10.0.0.99"})
    assert nobody.source["resolved"] == "ARP for 10.0.0.99: no port of network a has it"
    mac = p["b2"].mac  # a MAC is sent as given; the trace (admins only) names its port
    assert (
        tr.trace(dp, port_id="a1", headers={"eth_dst": mac}).source["resolved"] == f"eth_dst {mac} = ports/b2"
    )
    # an on-link address no port has: ARP for it is not answered, a real VM sends nothing
    with pytest.raises(ApiError) as e:
        tr.trace(dp, port_id="a1", headers={"ipv4_dst": "10.0.0.99"})
    assert e.value.code == "FAILED_PRECONDITION" and "ARP for it is not answered" in e.value.message


def test_diff_trace_finds_a_stage_missing_on_the_switch(world) -> None:  # type: ignore[no-untyped-def]
    w, p, dp = world
    same = tr.diff_trace(dp, port_id="a1", dst_port="a3", switch_trace=False)
    assert not same.diverged and same.installed.verdict == same.desired.verdict
    # someone deletes l2_lookup on hv1 behind the controller's back
    eng = dp.planes["hv1"].engine
    eng.items = {i for i in eng.items if not (isinstance(i, Flow) and i.stage == "l2_lookup")}
    diff = tr.diff_trace(dp, port_id="a1", dst_port="a3", switch_trace=False)
    assert [(d.chassis, d.stage) for d in diff.divergences] == [("hv1", "l2_lookup")]
    d = diff.divergences[0]
    assert "l2/a3" not in d.installed and "dl_dst=" + p["a3"].mac in d.desired and d.installed == ""
    assert diff.desired.verdict == "delivered to ports/a3 on hv2"
    assert diff.installed.verdict == "no flow matched in l2_lookup on hv1"
    assert "DIVERGES on hv1 at 60(l2_lookup)" in diff.format()
    # installed steps carry the switch's counters
    assert "n_packets=7" in diff.installed.hops[0].steps[0].note


def test_ovs_flow_text_is_what_ofproto_trace_takes() -> None:
    pkt = {
        "in_port": 3,
        "eth_src": "fa:16:3e:00:00:01",
        "eth_dst": "fa:16:3e:00:00:02",
        "eth_type": 0x0800,
        "ipv4_src": "10.0.0.5",
        "ipv4_dst": "10.0.0.7",
        "ip_proto": 6,
        "tcp_dst": 22,
        "reg6": 5,
    }
    assert tr.ovs_flow_text(pkt) == (
        "in_port=3,dl_src=fa:16:3e:00:00:01,dl_dst=fa:16:3e:00:00:02,"
        "dl_type=0x800,nw_proto=6,nw_src=10.0.0.5,nw_dst=10.0.0.7,tp_dst=22"
    )
    assert tr.vswitchd_ctl("tcp:192.0.2.1:6640") is None


def test_explain_same_network_and_the_tenant_boundary(world) -> None:  # type: ignore[no-untyped-def]
    w, p, dp = world
    ok = explain(dp, None, "a1", "a3", "tcp", 22)
    assert (
        ok.allowed
        and ok.verdict.startswith("allowed, same network a; securityGroupRules/")
        and ok.confirmed is True
    )
    assert [d.kind for d in ok.deciders] == ["network", "security_group", "security_group"]
    egress, ingress = ok.deciders[1:]
    assert "allows egress tcp/22 to 10.0.0.7" in egress.description
    assert "allows ingress tcp/22 from 10.0.0.5" in ingress.description and "'default'" in ingress.description
    assert ok.trace is not None and ok.trace.verdict == "delivered to ports/a3 on hv2"
    cross = explain(dp, None, "a1", "b2", "tcp", 22)
    assert not cross.allowed and cross.confirmed is True
    assert "networks a and b are not connected" in cross.verdict
    assert any(d.kind == "tenant" and "alice and bob" in d.description for d in cross.deciders)
    # by IP: the source's own network decides (10.0.0.6 is a2 for alice, whatever bob has)
    by_ip = explain(dp, None, "a1", "10.0.0.6", "icmp")
    assert by_ip.allowed and by_ip.destination == "ports/a2"
    nobody = explain(dp, None, "a1", "10.0.0.99", "tcp", 22)
    assert not nobody.allowed and "no port of networks/a has 10.0.0.99" in nobody.verdict
    assert nobody.confirmed is True  # the ARP request is not answered
    outside = explain(dp, None, "a1", "192.168.1.1", "tcp", 22)
    assert not outside.allowed and outside.deciders[0].kind == "route"
    # a tenant cannot ask about another tenant's ports
    with pytest.raises(ApiError) as e:
        explain(dp, None, "a1", "b2", visible=lambda t: t == "alice")
    assert e.value.code == "NOT_FOUND"


def test_explain_follows_router_interfaces_in_the_model(world) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from topology import ops
    from topology.records import OWNER_ROUTER_INTERFACE, Router

    w, p, _ = world
    w.network("c", "alice", "10.1.0.0/24")
    w.port("c1", "c", "hv2", "10.1.0.5")
    w.apply([("router", "r1", None, Router(id="r1", tenant="alice", key=900))])
    for ident, net, ip in (("r1-a", "a", "10.0.0.1"), ("r1-c", "c", "10.1.0.1")):
        port = dataclasses.replace(
            p["a1"], id=ident, network_id=net, mac="", fixed_ips=(), binding_chassis=""
        )
        changes = ops.create_port(w.topo, port, [("", ip)], w.rev + 1, 0.0)
        w.apply(
            [
                (k, i, o, dataclasses.replace(n, device_owner=OWNER_ROUTER_INTERFACE, device_id="r1"))
                for k, i, o, n in changes
            ]
        )
    dp = FakeDataplane(w)
    e = explain(dp, None, "a1", "10.1.0.5", "tcp", 22)
    assert e.allowed and e.destination == "ports/c1", e.format()
    assert any(d.kind == "router" and "routers/r1" in d.description for d in e.deciders)
    by_port = explain(dp, None, "a1", "c1", "tcp", 22)
    assert by_port.allowed and "joined by routers/r1" in by_port.verdict
    nobody = explain(dp, None, "a1", "10.1.0.99", "tcp", 22)
    assert not nobody.allowed and "no port of networks/c has 10.1.0.99" in nobody.verdict
    # b is bob's: no router joins it to alice's networks
    assert not explain(dp, None, "c1", "b1").allowed


def test_a_chassis_whose_compile_is_not_kept_is_compiled_for_the_trace(world) -> None:  # type: ignore[no-untyped-def]
    """Several controllers: hv2 mastered by another one (its compile not kept here): a trace through the
    desired flows crossing into hv2 compiles it for the trace, and answers as with every chassis kept."""
    w, p, dp = world
    want = tr.trace(dp, port_id="a1", dst_port="a3", headers={"ip_proto": 6, "tcp_dst": 22})
    dp.compiler.scope = {"hv1", "hv2"}
    dp.compiler.release("hv2")
    assert "hv2" not in dp.compiler.units
    got = tr.trace(dp, port_id="a1", dst_port="a3", headers={"ip_proto": 6, "tcp_dst": 22})
    assert [h.chassis for h in got.hops] == ["hv1", "hv2"]
    assert [[(s.stage, s.flow) for s in h.steps] for h in got.hops] == [
        [(s.stage, s.flow) for s in h.steps] for h in want.hops
    ]
    assert "hv2" not in dp.compiler.units  # not kept
