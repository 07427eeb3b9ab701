"""explain's verdict is the walk through the compiled flows (routers, static routes via VMs that forward,
security groups, NAT, tunnels), and trace sends what a real VM sends: routed destinations go to the gateway's
MAC. Behaviour only: packets walked through flows compiled from Worlds built through topology.ops."""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.compiler import Compiler
from controller.debug import first_hop
from controller.debug import trace as tr
from controller.debug.explain import explain
from tests.test_apps_l2 import World
from tests.test_apps_l3 import add_router, attach
from tests.test_trace import FakeDataplane, FakeEngine, FakePlane, FakeState
from topology import ops, ops_security
from topology.model import Topology
from topology.records import FloatingIp, Port, Router, SecurityGroup, SecurityGroupRule


def vm_port(
    w: World,
    ident: str,
    net: str,
    chassis: str,
    ip: str,
    device: str = "",
    security: bool = True,
    pairs: tuple[tuple[str, str], ...] = (),
) -> Port:
    """A port as a Neutron user makes it: in the default group (or with port security off), on `device`."""
    tenant = w.topo.networks[net].tenant
    groups: tuple[str, ...] = ()
    if security:
        group, made = ops_security.ensure_default_group(w.topo, tenant, w.rev + 1, 0.0)
        if made:
            w.apply(made)
        groups = (group,)
    w.apply(
        ops.create_port(
            w.topo,
            Port(
                id=ident,
                tenant=tenant,
                network_id=net,
                mac="",
                device_id=device,
                binding_chassis=chassis,
                security_groups=groups,
                port_security_enabled=security,
                allowed_address_pairs=pairs,
            ),
            [("", ip)],
            w.rev + 1,
            0.0,
        )
    )
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
    p = {
        "a1-1": vm_port(w, "a1-1", "a1", "hv1", "10.1.0.11"),
        "fw-a2": vm_port(w, "fw-a2", "a2", "hv2", "10.2.0.5", "fw", on, pairs),
        "fw-a3": vm_port(w, "fw-a3", "a3", "hv2", "10.3.0.1", "fw", on, pairs),
        "a3-1": vm_port(w, "a3-1", "a3", "hv1", "10.3.0.11"),
    }
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
    assert res.verdict.startswith("delivered to ports/fw-a2 on hv2; ports/fw-a2 is a next hop, not 10.3.0.11")
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
    assert (second["eth_src"], second["eth_dst"], second["nw_ttl"]) == (p["fw-a3"].mac, p["a3-1"].mac, 62)
    # the merged trace shows both legs, the forwarded one saying so
    assert e.trace is not None and e.trace.delivered_to[-1][0] == "ports/a3-1"
    assert any("forwards the packet (assumed)" in h.came_from for h in e.trace.hops)
    text = e.format()
    assert "leg 2: ports/fw-a3 (forwards, assumed)" in text and "DISAGREES" in text
    # by address, and the way back (a3-1's gateway is fw itself, whose default route is r1)
    assert explain(dp, None, "a1-1", "10.3.0.11", "icmp").destination == "ports/a3-1"
    back = explain(dp, None, "a3-1", "a1-1", "tcp", 22)
    assert back.allowed and back.walk is not None
    assert [leg.sender.id for leg in back.walk.legs] == ["a3-1", "fw-a2"]


def test_a_forwarding_vm_with_port_security_drops_what_it_forwards() -> None:
    w, _ = static_route_world(fw_security="on")
    e = explain(FakeDataplane(w), None, "a1-1", "a3-1", "icmp")
    assert not e.allowed, e.format()
    assert e.walk is not None and [leg.sender.id for leg in e.walk.legs] == ["a1-1", "fw-a3"]
    assert e.walk.verdict.startswith("dropped at port_sec_in"), e.walk.verdict
    denials = [(d.kind, d.resource) for d in e.deciders if not d.allows]
    assert denials == [("port_security", "ports/fw-a3")], e.format()
    assert "10.1.0.11 is not one of its addresses" in e.verdict
    # with an allowed address pair 0.0.0.0/0 (what a Neutron user does), it passes
    w, _ = static_route_world(fw_security="pairs")
    ok = explain(FakeDataplane(w), None, "a1-1", "a3-1", "icmp")
    assert ok.allowed, ok.format()


def test_explain_names_what_the_walk_drops_at() -> None:
    w, _ = static_route_world()
    # the graph says r1 joins a1 and a2, and the walk agrees: one leg, the model's reasons
    e = explain(FakeDataplane(w), None, "a1-1", "fw-a2", "tcp", 22)
    assert e.allowed and e.confirmed is True and "joined by routers/r1" in e.verdict
    # a static route whose next hop nobody has: the graph still sees no router to a3; the walk drops it
    r = w.topo.routers["r1"]
    w.apply([("router", r.id, r, dataclasses.replace(r, routes=(("10.3.0.0/24", "10.2.0.99"),)))])
    dead = explain(FakeDataplane(w), None, "a1-1", "a3-1", "icmp")
    assert not dead.allowed and dead.walk is not None and dead.walk.outcome == "dropped", dead.format()
    assert "arp_resolve" in dead.walk.verdict
    assert [d.resource for d in dead.deciders if not d.allows] == ["routers/r1"]
    assert (
        "static route 10.3.0.0/24 via 10.2.0.99 of routers/r1" in dead.verdict and "resolve" in dead.verdict
    )
    # nowhere: the router has no route; a tenant is told so without the operator's flows and chassis
    nowhere = explain(FakeDataplane(w), None, "a1-1", "10.9.9.9", "icmp", visible=lambda t: t == "alice")
    assert not nowhere.allowed and "routers/r1 has no route to 10.9.9.9" in nowhere.verdict
    assert "hv1" not in nowhere.format(with_trace=False) and "cookie=" not in nowhere.format(with_trace=False)


# ------------------------------------------------------------------------------------------------ property


PHYSNET = "physnet1"
EXT_HOST = ("172.24.4.100", "02:ee:00:00:00:64")


class GatewayDataplane(FakeDataplane):
    """FakeDataplane with hv1 as the gateway chassis and the external host's MAC learnt (NAT compiles)."""

    def __init__(self, w: World) -> None:
        self.state = FakeState(w.topo)
        self.compiler = Compiler(("hv1",))
        self.compiler.neighbors = {"ext": {EXT_HOST[0]: EXT_HOST[1]}}
        for rt in w.runtime.values():
            self.compiler.on_runtime(w.topo, rt)
        self.compiler.rebuild(w.topo)
        self.planes = {
            cid: FakePlane(rt, FakeEngine(set(self.compiler.desired(cid)))) for cid, rt in w.runtime.items()
        }


@st.composite
def topologies(draw: st.DrawFn) -> tuple[World, list[Port], list[str]]:
    """Networks (alice's, one of bob's with an overlapping CIDR), routers joining some of alice's, maybe an
    external gateway, a VM forwarding between two networks with a static route to it, security groups
    (default and an ssh group), floating IPs. Returns the world, the VMs, and addresses to ask about."""
    w = World()
    for i in (1, 2):
        w.chassis(f"hv{i}", f"192.0.2.{i}", mappings=[(PHYSNET, "br-prov")])
    w.network("ext", "admin", "172.24.4.0/24", segment_type="flat", physical_network=PHYSNET, external=True)
    n = draw(st.integers(2, 4))
    nets = [f"n{i}" for i in range(1, n + 1)]
    for i, net in enumerate(nets, start=1):
        w.network(net, "alice", f"10.{i}.0.0/24")
    w.network("bob", "bob", "10.1.0.0/24")
    routed = {net: draw(st.sampled_from(["", "r1", "r1", "r2"])) for net in nets}
    gateway = draw(st.sampled_from([True, True, False]))
    for r in ("r1", "r2"):
        gw = ops.GatewayRequest("ext") if r == "r1" and gateway else None
        w.apply(ops.create_router(w.topo, Router(id=r, tenant="alice"), gw, w.rev + 1, 0.0))
        for net in nets:
            if routed[net] == r:
                w.apply(
                    ops.add_router_interface(
                        w.topo, w.topo.routers[r], f"{net}-sub", "", f"{r}-{net}", w.rev + 1, 0.0
                    )
                )
    w.apply(
        ops_security.create_security_group(w.topo, SecurityGroup(id="ssh", tenant="alice"), w.rev + 1, 0.0)
    )
    w.apply(
        ops_security.create_security_group_rule(
            w.topo,
            SecurityGroupRule(
                id="ssh-in",
                tenant="alice",
                security_group_id="ssh",
                direction="ingress",
                protocol="tcp",
                port_range_min=22,
                port_range_max=22,
                remote_ip_prefix="0.0.0.0/0",
            ),
            False,
            w.rev + 1,
            0.0,
        )
    )
    default, _ = ops_security.ensure_default_group(w.topo, "alice", w.rev + 1, 0.0)
    group_sets = [(default,), (default,), ("ssh",), (default, "ssh")]
    vms: list[Port] = []
    for net in [*nets, "bob"]:
        for k in range(draw(st.integers(1, 2))):
            chassis = draw(st.sampled_from(["hv1", "hv2"]))
            third = nets.index(net) + 1 if net in nets else 1
            port = vm_port(w, f"{net}-vm{k}", net, chassis, f"10.{third}.0.{11 + k}")
            if net != "bob":
                groups = draw(st.sampled_from(group_sets))
                w.apply(ops.update_port(w.topo, port, {"security_groups": groups}, w.rev + 1, 0.0))
            vms.append(w.topo.ports[port.id])
    asks = [EXT_HOST[0], "10.1.0.99"]
    with_routers = [net for net in nets if routed[net]]
    if draw(st.booleans()) and with_routers:  # a VM forwarding between x (routed by r) and y; r's route
        x = draw(st.sampled_from(with_routers))
        y = draw(st.sampled_from([net for net in nets if net != x]))
        xi, yi = nets.index(x) + 1, nets.index(y) + 1
        security = draw(st.sampled_from(["off", "pairs", "on"]))
        pairs = (("0.0.0.0/0", ""),) if security == "pairs" else ()
        on = security != "off"
        y_ip = f"10.{yi}.0.5" if routed[y] else f"10.{yi}.0.1"  # holds y's gateway if no router does
        vm_port(w, "fw-x", x, draw(st.sampled_from(["hv1", "hv2"])), f"10.{xi}.0.5", "fw", on, pairs)
        vm_port(w, "fw-y", y, draw(st.sampled_from(["hv1", "hv2"])), y_ip, "fw", on, pairs)
        rr = w.topo.routers[routed[x]]
        route = (f"10.{yi}.0.0/24", f"10.{xi}.0.5")
        w.apply([("router", rr.id, rr, dataclasses.replace(rr, routes=(route,)))])
    if gateway and draw(st.booleans()):
        owners = [p for p in vms if routed.get(p.network_id) == "r1"]
        if owners:
            fip = draw(st.sampled_from(owners))
            w.apply(
                ops.create_floating_ip(
                    w.topo,
                    FloatingIp(
                        id="fip", tenant="alice", network_id="ext", address="172.24.4.50", port_id=fip.id
                    ),
                    "fip-port",
                    w.rev + 1,
                    0.0,
                )
            )
            asks.append("172.24.4.50")
    return w, vms, asks


def _vm_route(topo: Topology, ports: list[Port], ip: str) -> tuple[Port, str] | None:
    """Independently of controller.debug.first_hop: (egress port, next hop's MAC) as Linux picks them for VMs
    with one subnet per port: on-link first, else the first port's gateway that is not itself."""
    addr = netaddr.IPAddress(ip)
    for p in ports:
        sid, _own = p.fixed_ips[0]
        if addr in netaddr.IPNetwork(topo.subnets[sid].cidr):
            return p, _mac_of(topo, p.network_id, ip)
    for p in ports:
        sid, own = p.fixed_ips[0]
        gw = topo.subnets[sid].gateway_ip
        if gw and gw != own:
            return p, _mac_of(topo, p.network_id, gw)
    return None


def _mac_of(topo: Topology, net: str, ip: str) -> str:
    return next(
        (p.mac for p in topo.ports.values() if p.network_id == net and ip in (a for _, a in p.fixed_ips)), ""
    )


def walker_verdict(
    dp: FakeDataplane, topo: Topology, src: Port, dst_ip: str, l4: dict[str, Any], target: Port | None
) -> bool:
    """The walker trace, leg by leg: does a packet from `src` to `dst_ip` get there (VMs that are sent a
    packet for someone else forward it)?"""
    if dst_ip == src.fixed_ips[0][1]:
        return target is None or target.id == src.id  # its own stack answers
    ports, base = (
        [src],
        {"eth_type": 0x0800, "ipv4_src": src.fixed_ips[0][1], "ipv4_dst": dst_ip, "nw_ttl": 64, **l4},
    )
    for _ in range(8):
        hop = _vm_route(topo, ports, base["ipv4_dst"])
        if hop is None or not hop[1]:
            return False
        res = tr.trace(dp, port_id=hop[0].id, headers={**base, "eth_src": hop[0].mac, "eth_dst": hop[1]})
        outs = [o for h in res.hops for o in h.outputs]
        fwd = None
        for o in outs:
            p = topo.ports.get(o.port.removeprefix("ports/"))
            if o.kind != "vif" or p is None or o.headers.get("eth_dst") != p.mac:
                continue
            if o.headers.get("ipv4_dst") in {a for _, a in p.fixed_ips}:
                return target is None or p.id == target.id
            fwd = fwd or (p, o.headers)
        if fwd is None:
            ours = any(int(netaddr.IPAddress(dst_ip)) in owners for owners in topo.ip_owner.values())
            return any(o.kind == "physical" for o in outs) and not ours
        p, h = fwd
        if int(h["nw_ttl"]) <= 1:
            return False
        ports = [
            p,
            *(x for x in topo.ports.values() if x.device_id == p.device_id and x.id != p.id and p.device_id),
        ]
        base = {
            **{k: h[k] for k in base if k in h and k not in ("eth_src", "eth_dst")},
            "nw_ttl": int(h["nw_ttl"]) - 1,
        }
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(topologies(), st.data())
def test_explain_agrees_with_the_walker_trace_on_random_topologies(world: Any, data: st.DataObject) -> None:
    w, vms, asks = world
    dp = GatewayDataplane(w)
    sources = [p for p in vms if p.tenant == "alice"]
    for _ in range(6):
        src = data.draw(st.sampled_from(sources))
        dst = data.draw(
            st.sampled_from([*(p for p in vms if p != src), *asks, *(f"ip:{p.id}" for p in vms if p != src)])
        )
        proto = data.draw(st.sampled_from(["icmp", "tcp", "udp"]))
        port = data.draw(st.sampled_from([22, 80])) if proto != "icmp" else None
        target: Port | None = None
        if isinstance(dst, Port):
            target, dst_ip, ask = dst, dst.fixed_ips[0][1], dst.id
        elif dst.startswith("ip:"):
            dst_ip = ask = w.topo.ports[dst[3:]].fixed_ips[0][1]
        else:
            dst_ip = ask = dst
        l4: dict[str, Any] = {"ip_proto": {"icmp": 1, "tcp": 6, "udp": 17}[proto]}
        if proto == "icmp":
            l4 |= {"icmpv4_type": 8, "icmpv4_code": 0}
        else:
            l4 |= {f"{proto}_src": 40000, f"{proto}_dst": port}
        e = explain(dp, None, src.id, ask, proto, port)
        want = walker_verdict(dp, w.topo, src, dst_ip, l4, target)
        assert e.allowed == want, (src.id, ask, proto, port, e.format())
        if e.confirmed is False:
            assert any("the walk wins" in n for n in e.notes), e.format()
        if e.allowed and target is not None and target != src:
            assert e.trace is not None and f"ports/{target.id}" in (x for x, _ in e.trace.delivered_to)
