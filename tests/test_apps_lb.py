"""Load balancers by behaviour: walk connections to a VIP through a chassis's compiled tables (with conntrack)."""

from __future__ import annotations

import dataclasses
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps import lb as lbapp
from apps.compiler import Compiler, desired_from_scratch
from flows.actions import CONTROLLER
from flows.flow import Flow, Group
from flows.walker import Switch
from tests.test_apps_acl import SgWorld
from tests.test_apps_l2 import PATCH
from topology import ops
from topology.records import (
    ERROR,
    INGRESS,
    OWNER_LOAD_BALANCER,
    FloatingIp,
    HealthMonitor,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    Port,
    Router,
)

PHYSNET = "physnet1"
EXT_HOST = ("172.24.4.100", "02:ee:00:00:00:64")
GC = ("hv1",)
VIP = "10.0.0.100"
TCP = 6


class LbWorld(SgWorld):
    neighbors: dict[str, dict[str, str]]

    def switch(self, chassis: str) -> Switch:
        items = desired_from_scratch(self.topo, self.runtime, chassis, GC, self.neighbors)
        return Switch([i for i in items if isinstance(i, Flow)], [i for i in items if isinstance(i, Group)])

    def put(self, rec):  # type: ignore[no-untyped-def]
        kind = rec.KIND
        old = self.topo.table(kind).get(rec.id)
        return self.apply([(kind, rec.id, old, rec)])

    def drop(self, kind: str, ident: str):  # type: ignore[no-untyped-def]
        return self.apply([(kind, ident, self.topo.table(kind)[ident], None)])

    def member(self, ident: str, **kw):  # type: ignore[no-untyped-def]
        return self.put(dataclasses.replace(self.topo.members[ident], **kw))


def lb_world(
    algorithm: str = "ROUND_ROBIN", weights: tuple[int, int, int] = (1, 2, 3), fip: bool = False
) -> tuple[LbWorld, dict[str, Port]]:
    """Network a (10.0.0.0/24, the VIP's) and b (10.1.0.0/24) joined by router r with a gateway on ext;
    members m1 (hv1), m2 (hv2), m3 (hv1) behind VIP 10.0.0.100:80; clients c1 (a, hv1), c2 (b, hv1)."""
    w = LbWorld()
    w.neighbors = {"ext": {EXT_HOST[0]: EXT_HOST[1]}}
    w.chassis("hv1", "192.0.2.1", [(PHYSNET, "br-prov")])
    w.chassis("hv2", "192.0.2.2", [(PHYSNET, "br-prov")])
    w.network("ext", "admin", "172.24.4.0/24", segment_type="flat", physical_network=PHYSNET, external=True)
    w.network("a", "alice", "10.0.0.0/24")
    w.network("b", "alice", "10.1.0.0/24")
    w.apply(
        ops.create_router(w.topo, Router(id="r", tenant="alice"), ops.GatewayRequest("ext"), w.rev + 1, 0.0)
    )
    for sub, iface in (("a-sub", "r-a"), ("b-sub", "r-b")):
        w.apply(ops.add_router_interface(w.topo, w.topo.routers["r"], sub, "", iface, w.rev + 1, 0.0))
    p = {
        name: w.port(name, net, ch, ip)
        for name, net, ch, ip in (
            ("m1", "a", "hv1", "10.0.0.11"),
            ("m2", "a", "hv2", "10.0.0.12"),
            ("m3", "a", "hv1", "10.0.0.13"),
            ("c1", "a", "hv1", "10.0.0.5"),
            ("c2", "b", "hv1", "10.1.0.5"),
        )
    }
    # members take tcp/8080 from anywhere (clients, the VIP's health probes and hairpin, the outside)
    group = p["m1"].security_groups[0]
    w.rule(
        "http-in",
        group,
        INGRESS,
        protocol="tcp",
        port_range_min=8080,
        port_range_max=8080,
        remote_ip_prefix="0.0.0.0/0",
    )
    # the API makes the VIP port with the load balancer (a reserved owner): here, a port made owned after
    w.apply(
        ops.create_port(
            w.topo,
            Port(id="vip", tenant="alice", network_id="a", mac="", port_security_enabled=False),
            [("", VIP)],
            w.rev + 1,
            0.0,
        )
    )
    if fip:  # associated before the port is the load balancer's (ops refuse other owners' ports)
        w.apply(
            ops.create_floating_ip(
                w.topo,
                FloatingIp(id="f", tenant="alice", network_id="ext", address="172.24.4.50", port_id="vip"),
                "f-port",
                w.rev + 1,
                0.0,
            )
        )
    w.set_port("vip", device_owner=OWNER_LOAD_BALANCER, device_id="lb")
    w.put(LoadBalancer(id="lb", tenant="alice", vip_subnet_id="a-sub", vip_address=VIP, vip_port_id="vip"))
    w.put(Pool(id="pool", tenant="alice", load_balancer_id="lb", lb_algorithm=algorithm))
    w.put(
        Listener(
            id="http",
            tenant="alice",
            load_balancer_id="lb",
            protocol="TCP",
            protocol_port=80,
            default_pool_id="pool",
            key=1,
        )
    )
    for i, weight in enumerate(weights, 1):
        w.put(
            Member(
                id=f"m{i}",
                tenant="alice",
                pool_id="pool",
                address=f"10.0.0.1{i}",
                protocol_port=8080,
                weight=weight,
            )
        )
    return w, {n: w.topo.ports[n] for n in (*p, "vip")}


def syn(w: LbWorld, src: Port, dst_mac: str, sport: int, dst: str = VIP, dport: int = 80, **kw) -> dict:  # type: ignore[type-arg]
    return {
        "in_port": w.ofport(src),
        "eth_src": src.mac,
        "eth_dst": dst_mac,
        "eth_type": 0x0800,
        "ipv4_src": src.fixed_ips[0][1],
        "ipv4_dst": dst,
        "nw_ttl": 64,
        "ip_proto": TCP,
        "tcp_src": sport,
        "tcp_dst": dport,
        **kw,
    }


def landed(w: LbWorld, res) -> str | None:  # type: ignore[no-untyped-def]
    """The member a walked packet was delivered to (by its destination address), None if dropped."""
    if len(res.outputs) != 1 or res.outputs[0].port == "CONTROLLER":
        return None
    addr = res.outputs[0].headers["ipv4_dst"]
    return next(m.id for m in w.topo.members.values() if m.address == addr)


def test_client_in_the_vip_network_spreads_by_weight_and_reaches_the_member() -> None:
    w, p = lb_world()
    sw = w.switch("hv1")
    counts: Counter[str] = Counter()
    for sport in range(20000, 20600):
        res = sw.walk(syn(w, p["c1"], p["vip"].mac, sport))
        m = landed(w, res)
        assert m is not None, res.format()
        out = res.outputs[0]
        assert out.headers["tcp_dst"] == 8080
        assert out.headers["eth_dst"] == p[m].mac
        if m == "m2":  # on hv2: tunnelled there
            assert out.headers["tun_ipv4_dst"] == "192.0.2.2"
        else:
            assert out.port == w.ofport(p[m])
        counts[m] += 1
    for m, share in (("m1", 1 / 6), ("m2", 2 / 6), ("m3", 3 / 6)):
        assert abs(counts[m] / 600 - share) < 0.08, counts


def test_a_connection_keeps_its_member_and_replies_come_from_the_vip() -> None:
    w, p = lb_world(weights=(1, 0, 1))
    sw = w.switch("hv1")
    for sport in range(30000, 30020):
        first = landed(w, sw.walk(syn(w, p["c1"], p["vip"].mac, sport)))
        assert first in ("m1", "m3")
        for _ in range(3):  # established: same member
            assert landed(w, sw.walk(syn(w, p["c1"], p["vip"].mac, sport))) == first
        member = p[first]
        back = sw.walk(
            {
                "in_port": w.ofport(member),
                "eth_src": member.mac,
                "eth_dst": p["c1"].mac,
                "eth_type": 0x0800,
                "ipv4_src": member.fixed_ips[0][1],
                "ipv4_dst": "10.0.0.5",
                "nw_ttl": 64,
                "ip_proto": TCP,
                "tcp_src": 8080,
                "tcp_dst": sport,
            }
        )
        assert back.ports == [w.ofport(p["c1"])], back.format()
        h = back.outputs[0].headers
        assert (h["ipv4_src"], h["tcp_src"]) == (VIP, 80)


def test_routed_client_reaches_members_through_the_router() -> None:
    w, p = lb_world()
    sw = w.switch("hv1")
    rb = w.topo.ports["r-b"]
    seen = set()
    for sport in range(40000, 40100):
        res = sw.walk(syn(w, p["c2"], rb.mac, sport))
        m = landed(w, res)
        assert m is not None, res.format()
        h = res.outputs[0].headers
        assert h["eth_src"] == w.topo.ports["r-a"].mac and h["eth_dst"] == p[m].mac and h["nw_ttl"] == 63
        seen.add(m)
    assert seen == {"m1", "m2", "m3"}
    # the reply, routed back, comes from the VIP
    res = sw.walk(syn(w, p["c2"], rb.mac, 41000))
    m = landed(w, res)
    if m != "m2":
        back = sw.walk(
            {
                "in_port": w.ofport(p[m]),
                "eth_src": p[m].mac,
                "eth_dst": w.topo.ports["r-a"].mac,
                "eth_type": 0x0800,
                "ipv4_src": p[m].fixed_ips[0][1],
                "ipv4_dst": "10.1.0.5",
                "nw_ttl": 64,
                "ip_proto": TCP,
                "tcp_src": 8080,
                "tcp_dst": 41000,
            }
        )
        assert back.ports == [w.ofport(p["c2"])] and back.outputs[0].headers["ipv4_src"] == VIP


def test_weight_zero_admin_down_and_unhealthy_members_get_no_new_connections() -> None:
    w, p = lb_world()
    w.put(HealthMonitor(id="hm", tenant="alice", pool_id="pool", type="TCP"))
    w.member("m1", weight=0)
    w.member("m2", operating_status=ERROR)
    sw = w.switch("hv1")
    got = {landed(w, sw.walk(syn(w, p["c1"], p["vip"].mac, s))) for s in range(100)}
    assert got == {"m3"}
    w.member("m3", admin_state_up=False)
    sw = w.switch("hv1")
    assert {landed(w, sw.walk(syn(w, p["c1"], p["vip"].mac, s))) for s in range(20)} == {None}
    # without an (admin up) monitor ERROR means nothing
    w.put(dataclasses.replace(w.topo.health_monitors["hm"], admin_state_up=False))
    sw = w.switch("hv1")
    assert {landed(w, sw.walk(syn(w, p["c1"], p["vip"].mac, s))) for s in range(50)} == {"m2"}


def test_other_ports_of_the_vip_and_other_tenants_with_the_same_address_are_not_balanced() -> None:
    w, p = lb_world()
    w.network("z", "bob", "10.0.0.0/24")
    z1 = w.port("z1", "z", "hv1", "10.0.0.5")
    w.port("z2", "z", "hv1", VIP)  # bob's own 10.0.0.100
    sw = w.switch("hv1")
    res = sw.walk(syn(w, z1, w.topo.ports["z2"].mac, 5000))
    assert res.ports == [w.ofport(w.topo.ports["z2"])] and res.outputs[0].headers["ipv4_dst"] == VIP
    res = sw.walk(syn(w, p["c1"], p["vip"].mac, 5001, dport=81))
    assert landed(w, res) is None and res.ports in (
        [],
        ["CONTROLLER"],
    )  # the controller drops what is no probe's


def test_arp_for_the_vip_is_answered_on_every_chassis_hosting_its_network() -> None:
    w, p = lb_world()
    for ch in ("hv1", "hv2"):
        sw = w.switch(ch)
        asker = p["c1"] if ch == "hv1" else p["m2"]
        res = sw.walk(
            {
                "in_port": w.ofport(asker),
                "eth_src": asker.mac,
                "eth_dst": "ff:ff:ff:ff:ff:ff",
                "eth_type": 0x0806,
                "arp_op": 1,
                "arp_sha": asker.mac,
                "arp_spa": asker.fixed_ips[0][1],
                "arp_tha": "00:00:00:00:00:00",
                "arp_tpa": VIP,
            }
        )
        assert res.ports == [w.ofport(asker)]
        assert res.outputs[0].headers["arp_sha"] == p["vip"].mac
    w.put(dataclasses.replace(w.topo.load_balancers["lb"], admin_state_up=False))
    sw = w.switch("hv1")
    res = sw.walk(
        {
            "in_port": w.ofport(p["c1"]),
            "eth_src": p["c1"].mac,
            "eth_dst": "ff:ff:ff:ff:ff:ff",
            "eth_type": 0x0806,
            "arp_op": 1,
            "arp_sha": p["c1"].mac,
            "arp_spa": "10.0.0.5",
            "arp_tha": "00:00:00:00:00:00",
            "arp_tpa": VIP,
        }
    )
    assert all(d.headers.get("arp_op") != 2 for d in res.outputs)


def test_source_ip_keeps_a_client_on_one_member() -> None:
    w, p = lb_world("SOURCE_IP")
    sw = w.switch("hv1")
    got = {landed(w, sw.walk(syn(w, p["c1"], p["vip"].mac, s))) for s in range(50000, 50040)}
    assert len(got) == 1 and None not in got
    # clients are shared out by address: over the 64 address slots every member has some, by weight
    slots = Counter(m.id for m in lbapp._slots(lbapp.pool_members(w.topo, w.topo.pools["pool"])))
    assert slots["m1"] < slots["m2"] < slots["m3"] and sum(slots.values()) == 64


def test_hairpin_a_member_reaching_the_vip_lands_on_itself() -> None:
    w, p = lb_world(weights=(1, 0, 0))
    sw = w.switch("hv1")
    m1 = p["m1"]
    for sport in (33000, 33001):
        res = sw.walk(syn(w, m1, p["vip"].mac, sport))
        assert res.ports == [w.ofport(m1)], res.format()
        h = res.outputs[0].headers
        assert (h["ipv4_src"], h["ipv4_dst"], h["tcp_dst"]) == (VIP, "10.0.0.11", 8080)
        assert h["eth_src"] == p["vip"].mac and h["eth_dst"] == m1.mac
        nat_sport = h["tcp_src"]
        # the server in m1 answers the VIP: back to m1's client socket, from VIP:80
        back = sw.walk(
            {
                "in_port": w.ofport(m1),
                "eth_src": m1.mac,
                "eth_dst": p["vip"].mac,
                "eth_type": 0x0800,
                "ipv4_src": "10.0.0.11",
                "ipv4_dst": VIP,
                "nw_ttl": 64,
                "ip_proto": TCP,
                "tcp_src": 8080,
                "tcp_dst": nat_sport,
            }
        )
        assert back.ports == [w.ofport(m1)], back.format()
        h = back.outputs[0].headers
        assert (h["ipv4_src"], h["tcp_src"], h["ipv4_dst"], h["tcp_dst"]) == (VIP, 80, "10.0.0.11", sport)
        # and the connection goes on (established, both ways)
        assert sw.walk(syn(w, m1, p["vip"].mac, sport)).ports == [w.ofport(m1)]


def test_health_probe_injected_at_egress_dispatch_and_its_answer_reaches_the_controller() -> None:
    w, p = lb_world()
    sw = w.switch("hv1")
    m1, vip = p["m1"], p["vip"]
    probe = {
        "in_port": CONTROLLER,
        "metadata": w.topo.networks["a"].key,
        "reg7": m1.key,
        "eth_src": vip.mac,
        "eth_dst": m1.mac,
        "eth_type": 0x0800,
        "ipv4_src": VIP,
        "ipv4_dst": "10.0.0.11",
        "nw_ttl": 64,
        "ip_proto": TCP,
        "tcp_src": 61000,
        "tcp_dst": 8080,
    }
    assert sw.walk(probe, stage="egress_dispatch").ports == [w.ofport(m1)]
    answer = sw.walk(
        {
            "in_port": w.ofport(m1),
            "eth_src": m1.mac,
            "eth_dst": vip.mac,
            "eth_type": 0x0800,
            "ipv4_src": "10.0.0.11",
            "ipv4_dst": VIP,
            "nw_ttl": 64,
            "ip_proto": TCP,
            "tcp_src": 8080,
            "tcp_dst": 61000,
        }
    )
    assert answer.ports == ["CONTROLLER"], answer.format()


def test_floating_ip_on_the_vip_is_balanced_on_the_gateway_chassis() -> None:
    w, p = lb_world(fip=True)
    sw = w.switch("hv1")
    gw = next(q for q in w.topo.router_ports("r") if q.network_id == "ext")
    seen = Counter()
    for sport in range(100):
        res = sw.walk(
            {
                "in_port": PATCH,
                "eth_src": EXT_HOST[1],
                "eth_dst": gw.mac,
                "eth_type": 0x0800,
                "ipv4_src": EXT_HOST[0],
                "ipv4_dst": "172.24.4.50",
                "nw_ttl": 64,
                "ip_proto": TCP,
                "tcp_src": 10000 + sport,
                "tcp_dst": 80,
            }
        )
        m = landed(w, res)
        assert m is not None, res.format()
        seen[m] += 1
        if m != "m2" and sport < 5:  # reply from a member on the gateway chassis leaves as the floating IP
            back = sw.walk(
                {
                    "in_port": w.ofport(p[m]),
                    "eth_src": p[m].mac,
                    "eth_dst": w.topo.ports["r-a"].mac,
                    "eth_type": 0x0800,
                    "ipv4_src": p[m].fixed_ips[0][1],
                    "ipv4_dst": EXT_HOST[0],
                    "nw_ttl": 64,
                    "ip_proto": TCP,
                    "tcp_src": 8080,
                    "tcp_dst": 10000 + sport,
                }
            )
            assert back.ports == [PATCH], back.format()
            h = back.outputs[0].headers
            assert (h["ipv4_src"], h["tcp_src"]) == ("172.24.4.50", 80)
    assert set(seen) == {"m1", "m2", "m3"}


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "weight",
                "admin",
                "error",
                "online",
                "delete",
                "add",
                "move",
                "lb",
                "listener",
                "monitor",
                "algo",
            ]
        ),
        st.integers(1, 3),
        st.sampled_from(["hv1", "hv2"]),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_incremental_equals_full(actions) -> None:  # type: ignore[no-untyped-def]
    w, _p = lb_world()
    comp = Compiler(GC)
    comp.neighbors = w.neighbors
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    for op, i, ch in actions:
        mid = f"m{i}"
        m = w.topo.members.get(mid)
        changes = []
        if op == "weight" and m is not None:
            changes = w.member(mid, weight=(m.weight + 1) % 3)
        elif op == "admin" and m is not None:
            changes = w.member(mid, admin_state_up=not m.admin_state_up)
        elif op in ("error", "online") and m is not None:
            changes = w.member(mid, operating_status=ERROR if op == "error" else "ONLINE")
        elif op == "delete" and m is not None:
            changes = w.drop("member", mid)
        elif op == "add" and m is None:
            changes = w.put(
                Member(id=mid, tenant="alice", pool_id="pool", address=f"10.0.0.1{i}", protocol_port=8080)
            )
        elif op == "move":
            port = w.topo.ports[mid]
            changes = w.apply(ops.update_port(w.topo, port, {"binding_chassis": ch}, w.rev + 1, 0.0))
        elif op == "lb":
            rec = w.topo.load_balancers["lb"]
            changes = w.put(dataclasses.replace(rec, admin_state_up=not rec.admin_state_up))
        elif op == "listener":
            if "udp" in w.topo.listeners:
                changes = w.drop("listener", "udp")
            else:
                changes = w.put(
                    Listener(
                        id="udp",
                        tenant="alice",
                        load_balancer_id="lb",
                        protocol="UDP",
                        protocol_port=53,
                        default_pool_id="pool",
                        key=2,
                    )
                )
        elif op == "monitor":
            if "hm" in w.topo.health_monitors:
                changes = w.drop("health_monitor", "hm")
            else:
                changes = w.put(HealthMonitor(id="hm", tenant="alice", pool_id="pool"))
        elif op == "algo":
            pool = w.topo.pools["pool"]
            algo = "SOURCE_IP" if pool.lb_algorithm == "ROUND_ROBIN" else "ROUND_ROBIN"
            changes = w.put(dataclasses.replace(pool, lb_algorithm=algo))
        if changes:
            comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c, GC, w.neighbors), (
                op,
                i,
                ch,
                c,
            )


def test_a_member_on_another_subnet_is_reached_through_the_router_and_its_probe_answers_come_back() -> None:
    w, p = lb_world(weights=(0, 0, 0))
    b1 = w.port("b1", "b", "hv1", "10.1.0.20")
    w.put(
        Member(
            id="mb",
            tenant="alice",
            pool_id="pool",
            address="10.1.0.20",
            protocol_port=8080,
            subnet_id="b-sub",
        )
    )
    sw = w.switch("hv1")
    for sport in (1, 2, 3):
        res = sw.walk(syn(w, p["c1"], p["vip"].mac, 44000 + sport))
        assert res.ports == [w.ofport(b1)], res.format()
        h = res.outputs[0].headers
        assert (h["ipv4_dst"], h["tcp_dst"], h["eth_dst"], h["nw_ttl"]) == ("10.1.0.20", 8080, b1.mac, 63)
    # the reply is routed back and comes from the VIP
    back = sw.walk(
        {
            "in_port": w.ofport(b1),
            "eth_src": b1.mac,
            "eth_dst": w.topo.ports["r-b"].mac,
            "eth_type": 0x0800,
            "ipv4_src": "10.1.0.20",
            "ipv4_dst": "10.0.0.5",
            "nw_ttl": 64,
            "ip_proto": TCP,
            "tcp_src": 8080,
            "tcp_dst": 44001,
        }
    )
    assert back.ports == [w.ofport(p["c1"])] and back.outputs[0].headers["ipv4_src"] == VIP, back.format()
    # a health probe's answer to the VIP is routed into the VIP's network and reaches the controller
    answer = sw.walk(
        {
            "in_port": w.ofport(b1),
            "eth_src": b1.mac,
            "eth_dst": w.topo.ports["r-b"].mac,
            "eth_type": 0x0800,
            "ipv4_src": "10.1.0.20",
            "ipv4_dst": VIP,
            "nw_ttl": 64,
            "ip_proto": TCP,
            "tcp_src": 8080,
            "tcp_dst": 61001,
        }
    )
    assert answer.ports == ["CONTROLLER"], answer.format()
