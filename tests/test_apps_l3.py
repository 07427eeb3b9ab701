"""Distributed routing by behaviour: walk packets through one chassis's compiled tables."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.compiler import Compiler, desired_from_scratch
from tests.test_apps_l2 import TUN, World, eth
from topology import ops
from topology.records import OWNER_ROUTER_INTERFACE, Port, Router


def add_router(w: World, ident: str, tenant: str, routes=()) -> Router:  # type: ignore[no-untyped-def]
    key = w.topo.datapath_keys.choose()
    assert key is not None
    router = Router(id=ident, tenant=tenant, key=key, routes=tuple(routes))
    w.apply([("router", ident, None, router)])
    return router


def attach(w: World, router: str, net: str) -> Port:
    """An interface on the network's subnet, holding its gateway address (as the API makes it)."""
    sub = w.topo.subnets_of(net)[0]
    key = w.topo.port_keys.choose()
    mac = f"02:r0:00:00:{len(w.topo.ports) % 256:02x}:01".replace("r0", "a0")
    port = Port(
        id=f"{router}-{net}",
        tenant=sub.tenant,
        network_id=net,
        mac=mac,
        key=key or 0,
        fixed_ips=((sub.id, sub.gateway_ip or ""),),
        device_owner=OWNER_ROUTER_INTERFACE,
        device_id=router,
    )
    w.apply([("port", port.id, None, port)])
    return port


def routed_world() -> tuple[World, dict[str, Port]]:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    for tenant in ("alice", "bob"):  # the same two subnets behind each tenant's own router
        w.network(f"{tenant}-a", tenant, "10.1.0.0/24")
        w.network(f"{tenant}-b", tenant, "10.2.0.0/24")
        add_router(w, f"{tenant}-r", tenant)
        attach(w, f"{tenant}-r", f"{tenant}-a")
        attach(w, f"{tenant}-r", f"{tenant}-b")
    p = {
        "a1": w.port("a1", "alice-a", "hv1", "10.1.0.10"),
        "b1": w.port("b1", "alice-b", "hv1", "10.2.0.10"),
        "b2": w.port("b2", "alice-b", "hv2", "10.2.0.20"),
        "xa": w.port("xa", "bob-a", "hv1", "10.1.0.10"),
        "xb": w.port("xb", "bob-b", "hv1", "10.2.0.10"),
    }
    return w, p


def ip(src: Port, dst_mac: str, dst_ip: str, ttl: int = 64, **extra):  # type: ignore[no-untyped-def]
    return {
        **eth(src, dst_mac),
        "ipv4_src": src.fixed_ips[0][1],
        "ipv4_dst": dst_ip,
        "nw_ttl": ttl,
        "ip_proto": 1,
        **extra,
    }


def gw(w: World, router: str, net: str) -> Port:
    return w.topo.ports[f"{router}-{net}"]


def test_routes_between_subnets_on_one_chassis_with_ttl_minus_one_and_new_macs() -> None:
    w, p = routed_world()
    res = w.switch("hv1").walk(
        {"in_port": w.ofport(p["a1"]), **ip(p["a1"], gw(w, "alice-r", "alice-a").mac, "10.2.0.10")}
    )
    assert res.ports == [w.ofport(p["b1"])]
    out = res.outputs[0].headers
    assert out["nw_ttl"] == 63
    assert out["eth_src"] == gw(w, "alice-r", "alice-b").mac and out["eth_dst"] == p["b1"].mac


def test_routes_to_another_chassis_through_the_destination_networks_tunnel() -> None:
    w, p = routed_world()
    res = w.switch("hv1").walk(
        {"in_port": w.ofport(p["a1"]), **ip(p["a1"], gw(w, "alice-r", "alice-a").mac, "10.2.0.20")}
    )
    assert res.ports == [TUN["vxlan"]]
    h = res.outputs[0].headers
    assert h["tunnel_id"] == w.topo.networks["alice-b"].segment_id and h["tun_ipv4_dst"] == "192.0.2.2"
    assert h["nw_ttl"] == 63 and h["eth_dst"] == p["b2"].mac
    # hv2 hosts alice-b (b2 is there) and delivers it as plain L2
    back = w.switch("hv2").walk(
        {
            "in_port": TUN["vxlan"],
            "tunnel_id": h["tunnel_id"],
            **{k: v for k, v in h.items() if k.startswith(("eth", "ipv4", "nw_", "ip_"))},
        }
    )
    assert back.ports == [w.ofport(p["b2"])]


def test_two_tenants_with_the_same_cidrs_route_only_inside_their_router() -> None:
    w, p = routed_world()
    res = w.switch("hv1").walk(
        {"in_port": w.ofport(p["xa"]), **ip(p["xa"], gw(w, "bob-r", "bob-a").mac, "10.2.0.10")}
    )
    assert res.ports == [w.ofport(p["xb"])]  # bob's 10.2.0.10, never alice's b1
    # alice's packet to bob's router MAC goes nowhere
    res = w.switch("hv1").walk(
        {"in_port": w.ofport(p["a1"]), **ip(p["a1"], gw(w, "bob-r", "bob-a").mac, "10.2.0.10")}
    )
    assert w.ofport(p["xb"]) not in res.ports and w.ofport(p["b1"]) not in res.ports


def test_gateway_answers_arp_and_ping_in_flows() -> None:
    w, p = routed_world()
    g = gw(w, "alice-r", "alice-a")
    sw = w.switch("hv1")
    arp = {
        "in_port": w.ofport(p["a1"]),
        "eth_src": p["a1"].mac,
        "eth_dst": "ff:ff:ff:ff:ff:ff",
        "eth_type": 0x0806,
        "arp_op": 1,
        "arp_spa": "10.1.0.10",
        "arp_tpa": "10.1.0.1",
        "arp_sha": p["a1"].mac,
        "arp_tha": "00:00:00:00:00:00",
    }
    res = sw.walk(arp)
    assert res.ports == [w.ofport(p["a1"])] and res.outputs[0].headers["arp_sha"] == g.mac
    echo = sw.walk(
        {"in_port": w.ofport(p["a1"]), **ip(p["a1"], g.mac, "10.1.0.1", icmpv4_type=8, icmpv4_code=0)}
    )
    assert echo.ports == [w.ofport(p["a1"])]
    h = echo.outputs[0].headers
    assert (h["ipv4_src"], h["ipv4_dst"], h["icmpv4_type"], h["eth_dst"]) == (
        "10.1.0.1",
        "10.1.0.10",
        0,
        p["a1"].mac,
    )


def test_longest_prefix_wins_and_static_routes_apply() -> None:
    w, p = routed_world()
    r = w.topo.routers["alice-r"]
    # 10.2.0.128/25 via b1 (10.2.0.10) beats the connected 10.2.0.0/24; 0/0 via b2
    w.apply(
        [
            (
                "router",
                r.id,
                r,
                dataclasses.replace(r, routes=(("10.2.0.128/25", "10.2.0.10"), ("0.0.0.0/0", "10.2.0.20"))),
            )
        ]
    )
    sw = w.switch("hv1")
    g = gw(w, "alice-r", "alice-a").mac
    to = lambda dst: sw.walk({"in_port": w.ofport(p["a1"]), **ip(p["a1"], g, dst)})
    assert to("10.2.0.200").outputs[0].headers["eth_dst"] == p["b1"].mac  # /25 static route
    assert to("10.2.0.20").outputs[0].headers["eth_dst"] == p["b2"].mac  # connected /24
    assert to("8.8.8.8").outputs[0].headers["eth_dst"] == p["b2"].mac  # default route
    assert to("10.2.0.99").dropped  # connected, nobody there


def test_ttl_expiry_is_not_forwarded() -> None:
    w, p = routed_world()
    res = w.switch("hv1").walk(
        {"in_port": w.ofport(p["a1"]), **ip(p["a1"], gw(w, "alice-r", "alice-a").mac, "10.2.0.10", ttl=1)}
    )
    assert w.ofport(p["b1"]) not in res.ports


def test_a_chassis_hosting_one_routed_network_gets_the_others() -> None:
    w, p = routed_world()
    items = desired_from_scratch(w.topo, w.runtime, "hv2")  # hv2 has only b2 (alice-b)
    keys = {f.match_dict().get("metadata") for f in items if hasattr(f, "match")}
    assert w.topo.networks["alice-a"].key in keys and w.topo.routers["alice-r"].key in keys
    assert w.topo.networks["bob-a"].key not in keys


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["move", "delete", "detach", "attach"]),
            st.sampled_from(["a1", "b1", "b2"]),
            st.sampled_from(["hv1", "hv2"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_incremental_equals_full_with_routers(actions) -> None:  # type: ignore[no-untyped-def]
    w, p = routed_world()
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    for op, pid, ch in actions:
        port = w.topo.ports.get(pid)
        changes = []
        if op == "move" and port is not None:
            changes = w.apply(ops.update_port(w.topo, port, {"binding_chassis": ch}, w.rev + 1, 0.0))
        elif op == "delete" and port is not None:
            changes = w.apply(ops.delete_port(w.topo, port))
        elif op == "detach" and "alice-r-alice-b" in w.topo.ports:
            iface = w.topo.ports["alice-r-alice-b"]
            changes = w.apply([("port", iface.id, iface, None)])
        elif op == "attach" and "alice-r-alice-b" not in w.topo.ports:
            before = set(w.topo.ports)
            attach(w, "alice-r", "alice-b")
            new = (set(w.topo.ports) - before).pop()
            changes = [("port", new, None, w.topo.ports[new])]
        if changes:
            comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c), (op, pid, ch, c)


def echo(src: Port, dst_mac: str, dst_ip: str, ttl: int = 64) -> dict:  # type: ignore[type-arg]
    return ip(src, dst_mac, dst_ip, ttl, icmpv4_type=8, icmpv4_code=0)


def test_router_echo_replies_leave_with_the_routers_own_ttl() -> None:
    """The router answers as a host sending its own packet: TTL 64, whatever the request's TTL, whichever of its
    interface addresses is pinged (a Linux router does not decrement its own replies)."""
    w, p = routed_world()
    ga, gb = gw(w, "alice-r", "alice-a"), gw(w, "alice-r", "alice-b")
    sw = w.switch("hv1")
    for addr in ("10.1.0.1", "10.2.0.1"):  # on-link, and the interface on the other subnet
        for ttl in (64, 200, 1):  # a request to the router itself is not forwarded: TTL 1 is answered too
            res = sw.walk({"in_port": w.ofport(p["a1"]), **echo(p["a1"], ga.mac, addr, ttl)})
            assert res.ports == [w.ofport(p["a1"])], res.format()
            h = res.outputs[0].headers
            assert (h["ipv4_src"], h["ipv4_dst"], h["icmpv4_type"]) == (addr, "10.1.0.10", 0)
            assert h["nw_ttl"] == 64, (addr, ttl, res.format())
            assert (h["eth_src"], h["eth_dst"]) == (ga.mac, p["a1"].mac)
    # answered on the pinger's own chassis (distributed): b2 on hv2 pings the interface on alice-a
    res = w.switch("hv2").walk({"in_port": w.ofport(p["b2"]), **echo(p["b2"], gb.mac, "10.1.0.1")})
    assert res.ports == [w.ofport(p["b2"])], res.format()
    assert (res.outputs[0].headers["nw_ttl"], res.outputs[0].headers["ipv4_src"]) == (64, "10.1.0.1")
    # routed traffic is still decremented once
    assert (
        sw.walk({"in_port": w.ofport(p["a1"]), **echo(p["a1"], ga.mac, "10.2.0.10")})
        .outputs[0]
        .headers["nw_ttl"]
        == 63
    )
