"""explain's verdict is the walk through the compiled flows (routers, static routes via VMs that forward,
security groups, NAT, tunnels), and trace sends what a real VM sends: routed destinations go to the gateway's
MAC. Behaviour only: packets walked through flows compiled from Worlds built through topology.ops."""

from __future__ import annotations

import dataclasses
from controller import first_hop
from controller import trace as tr
from controller.explain import explain
from tests.test_apps_l2 import World
from tests.test_apps_l3 import add_router, attach
from tests.test_trace import FakeDataplane
from topology import ops, ops_security
from topology.records import Port


def vm_port(w: World, ident: str, net: str, chassis: str, ip: str, device: str = "",
            security: bool = True, pairs: tuple[tuple[str, str], ...] = ()) -> Port:
    """A port as a Neutron user makes it: in the default group (or with port security off), on `device`."""
    tenant = w.topo.networks[net].tenant
    groups: tuple[str, ...] = ()
    if security:
        group, made = ops_security.ensure_default_group(w.topo, tenant, w.rev + 1, 0.0)
        if made:
            w.apply(made)
        groups = (group,)
    w.apply(ops.create_port(w.topo, Port(id=ident, tenant=tenant, network_id=net, mac="", device_id=device,
                                         binding_chassis=chassis, security_groups=groups,
                                         port_security_enabled=security, allowed_address_pairs=pairs),
                            [("", ip)], w.rev + 1, 0.0))
    rt = w.runtime[chassis]
    w.runtime[chassis] = dataclasses.replace(rt, vifs={**rt.vifs, ident: w.next_ofport})
    w.next_ofport += 1
    return w.topo.ports[ident]


def static_route_world(fw_security: str = "off") -> tuple[World, dict[str, Port]]:
    """The operator's report: r1 joins a1 and a2 and routes 10.3.0.0/24 via fw, a VM with a port on a2 and
    one on a3 (holding a3's gateway address); no router has an interface on a3.

    fw_security: "off" (port security disabled), "pairs" (allowed address pair 0.0.0.0/0), "on" (neither)."""
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    for n in (1, 2, 3):
        w.network(f"a{n}", "alice", f"10.{n}.0.0/24")
    add_router(w, "r1", "alice", routes=[("10.3.0.0/24", "10.2.0.5")])
    attach(w, "r1", "a1")
    attach(w, "r1", "a2")
    on = fw_security != "off"
    pairs = (("0.0.0.0/0", ""),) if fw_security == "pairs" else ()
    p = {"a1-1": vm_port(w, "a1-1", "a1", "hv1", "10.1.0.11"),
         "fw-a2": vm_port(w, "fw-a2", "a2", "hv2", "10.2.0.5", "fw", on, pairs),
         "fw-a3": vm_port(w, "fw-a3", "a3", "hv2", "10.3.0.1", "fw", on, pairs),
         "a3-1": vm_port(w, "a3-1", "a3", "hv1", "10.3.0.11")}
    return w, p


def test_first_hop_is_the_gateway_for_off_subnet_addresses() -> None:
    w, p = static_route_world()
    topo = w.topo
    r = first_hop.route(topo, [p["a1-1"]], "10.3.0.11")
    assert r is not None and not r.on_link and r.next_hop == "10.1.0.1" and r.holder == topo.ports["r1-a1"]
    assert first_hop.route(topo, [p["a1-1"]], "10.1.0.99").on_link  # type: ignore[union-attr]
    # fw's own port holds a3's gateway: a3-1's gateway is fw, and fw's own default route is r1 on a2
    assert first_hop.route(topo, [p["a3-1"]], "10.1.0.11").holder == p["fw-a3"]  # type: ignore[union-attr]
    fw = first_hop.host_ports(topo, p["fw-a3"])
    assert [x.id for x in fw] == ["fw-a3", "fw-a2"]
    back = first_hop.route(topo, fw, "10.1.0.11")
    assert back is not None and back.port == p["fw-a2"] and back.holder == topo.ports["r1-a2"]
    # a host route of the subnet beats the default gateway
    sub = topo.subnets_of("a1")[0]
    w.apply([("subnet", sub.id, sub, dataclasses.replace(sub, host_routes=(("10.3.0.0/24", "10.1.0.77"),)))])
    hr = first_hop.route(topo, [p["a1-1"]], "10.3.0.11")
    assert hr is not None and hr.next_hop == "10.1.0.77" and hr.holder is None


def test_trace_to_a_port_off_the_subnet_goes_to_the_gateway_mac_and_follows_the_static_route() -> None:
    w, p = static_route_world()
    dp = FakeDataplane(w)
    res = tr.trace(dp, port_id="a1-1", dst_port="a3-1", headers={"ip_proto": 1})
    assert res.source["headers"]["eth_dst"] == w.topo.ports["r1-a1"].mac
    assert res.source["headers"]["ipv4_dst"] == "10.3.0.11"
    assert "default gateway 10.1.0.1" in res.source["first_hop"] and "First hop:" in res.format()
    stages = [s.stage for h in res.hops for s in h.steps if s.flow]
    assert "l3_lookup" in stages and "arp_resolve" in stages
    # r1's static route sends it to fw's port on a2, on hv2 over the tunnel
    assert res.verdict == "delivered to ports/fw-a2 on hv2"
    out = res.hops[-1].outputs[0].headers
    assert out["eth_dst"] == p["fw-a2"].mac and out["ipv4_dst"] == "10.3.0.11" and out["nw_ttl"] == 63
    # by address the same; on-link addresses keep the destination's own MAC
    assert tr.trace(dp, port_id="a1-1", headers={"ipv4_dst": "10.3.0.11"}).verdict == res.verdict
    same = tr.trace(dp, port_id="fw-a3", dst_port="a3-1")
    assert same.source["headers"]["eth_dst"] == p["a3-1"].mac and "first_hop" not in same.source


def test_explain_follows_the_static_route_through_the_forwarding_vm_and_says_the_graph_is_wrong() -> None:
    w, p = static_route_world()
    dp = FakeDataplane(w)
    e = explain(dp, None, "a1-1", "a3-1", "icmp")
    assert e.allowed, e.format()
    assert e.confirmed is False  # the graph alone says no router joins a1 and a3
    assert any("the walk wins" in n and "DENIED" in n for n in e.notes), e.notes
    assert any("ports/fw-a2 is not 10.3.0.11" in n and "assumed" in n for n in e.notes), e.notes
    kinds = [d.kind for d in e.deciders]
    assert "isolation" not in kinds and all(d.allows for d in e.deciders)
    route = next(d for d in e.deciders if d.kind == "route" and "static route" in d.description)
    assert "10.3.0.0/24 via 10.2.0.5 of routers/r1" in route.description
    assert any(d.kind == "next_hop" and d.resource == "ports/fw-a3" for d in e.deciders)
    assert e.walk is not None and [leg.sender.id for leg in e.walk.legs] == ["a1-1", "fw-a3"]
    second = e.walk.legs[1].packet
    assert second["eth_src"] == p["fw-a3"].mac and second["eth_dst"] == p["a3-1"].mac and second["nw_ttl"] == 62
    # the merged trace shows both legs, the forwarded one saying so
    assert e.trace is not None and e.trace.delivered_to[-1][0] == "ports/a3-1"
    assert any("forwards the packet (assumed)" in h.came_from for h in e.trace.hops)
    text = e.format()
    assert "leg 2: ports/fw-a3 (forwards, assumed)" in text and "DISAGREES" in text
    # by address, and the way back (a3-1's gateway is fw itself, whose default route is r1)
    assert explain(dp, None, "a1-1", "10.3.0.11", "icmp").destination == "ports/a3-1"
    back = explain(dp, None, "a3-1", "a1-1", "tcp", 22)
    assert back.allowed and [leg.sender.id for leg in back.walk.legs] == ["a3-1", "fw-a2"]  # type: ignore[union-attr]


def test_a_forwarding_vm_with_port_security_drops_what_it_forwards() -> None:
    w, _ = static_route_world(fw_security="on")
    e = explain(FakeDataplane(w), None, "a1-1", "a3-1", "icmp")
    assert not e.allowed, e.format()
    assert e.walk is not None and [leg.sender.id for leg in e.walk.legs] == ["a1-1", "fw-a3"]
    assert e.walk.verdict.startswith("dropped at port_sec_in"), e.walk.verdict
    assert [(d.kind, d.resource) for d in e.deciders] == [("port_security", "ports/fw-a3")], e.format()
    assert "10.1.0.11 is not one of its addresses" in e.verdict
    # with an allowed address pair 0.0.0.0/0 (what a Neutron user does), it passes
    w, _ = static_route_world(fw_security="pairs")
    ok = explain(FakeDataplane(w), None, "a1-1", "a3-1", "icmp")
    assert ok.allowed, ok.format()


def test_explain_names_what_the_walk_drops_at() -> None:
    w, p = static_route_world()
    # the graph says r1 joins a1 and a2, and the walk agrees: one leg, the model's reasons
    e = explain(FakeDataplane(w), None, "a1-1", "fw-a2", "tcp", 22)
    assert e.allowed and e.confirmed is True and "joined by routers/r1" in e.verdict
    # a static route whose next hop nobody has: the graph still sees no router to a3; the walk drops it
    r = w.topo.routers["r1"]
    w.apply([("router", r.id, r, dataclasses.replace(r, routes=(("10.3.0.0/24", "10.2.0.99"),)))])
    dead = explain(FakeDataplane(w), None, "a1-1", "a3-1", "icmp")
    assert not dead.allowed and dead.walk is not None and dead.walk.outcome == "dropped", dead.format()
    assert "arp_resolve" in dead.walk.verdict
