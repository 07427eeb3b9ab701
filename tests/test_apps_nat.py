"""SNAT and floating IPs by behaviour: walk packets through the gateway chassis's and another chassis's tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps import ids, nat
from apps.compiler import Compiler, desired_from_scratch
from controller import config
from flows.flow import Flow, Group
from flows.walker import Result, Switch
from tests.test_apps_l2 import PATCH, TUN, World
from topology import ops, ops_security
from topology.records import FloatingIp, Port, Router, SecurityGroupRule

PHYSNET = "physnet1"
EXT_HOST = ("172.24.4.100", "02:ee:00:00:00:64")
GC = ("hv1",)


class NatWorld(World):
    neighbors: dict[str, dict[str, str]]

    def switch(self, chassis: str) -> Switch:
        items = desired_from_scratch(self.topo, self.runtime, chassis, GC, self.neighbors)
        return Switch([i for i in items if isinstance(i, Flow)], [i for i in items if isinstance(i, Group)])


def nat_world(snat: bool = True) -> tuple[NatWorld, dict[str, Port]]:
    w = NatWorld()
    w.neighbors = {}
    w.chassis("hv1", "192.0.2.1", [(PHYSNET, "br-prov")])
    w.chassis("hv2", "192.0.2.2", [(PHYSNET, "br-prov")])
    w.network("ext", "admin", "172.24.4.0/24", segment_type="flat", physical_network=PHYSNET, external=True)
    w.network("a", "alice", "10.0.0.0/24")
    w.apply(
        ops.create_router(
            w.topo,
            Router(id="r", tenant="alice"),
            ops.GatewayRequest("ext", enable_snat=snat),
            w.rev + 1,
            0.0,
        )
    )
    r = w.topo.routers["r"]
    w.apply(ops.add_router_interface(w.topo, r, "a-sub", "", "r-a", w.rev + 1, 0.0))
    p = {"a1": w.port("a1", "a", "hv1", "10.0.0.10"), "a2": w.port("a2", "a", "hv2", "10.0.0.20")}
    w.neighbors["ext"] = {EXT_HOST[0]: EXT_HOST[1]}
    return w, p


def gw_port(w: World) -> Port:
    return next(p for p in w.topo.router_ports("r") if p.network_id == "ext")


def add_fip(w: World, port: str, address: str = "172.24.4.50", fid: str = "f") -> FloatingIp:
    w.apply(
        ops.create_floating_ip(
            w.topo,
            FloatingIp(id=fid, tenant="alice", network_id="ext", address=address, port_id=port),
            f"{fid}-port",
            w.rev + 1,
            0.0,
        )
    )
    return w.topo.floatingips[fid]


def out_of_vm(w: World, p: Port, dst: str, **l4) -> dict:  # type: ignore[type-arg]
    iface = w.topo.ports["r-a"]
    return {
        "in_port": w.ofport(p),
        "eth_src": p.mac,
        "eth_dst": iface.mac,
        "eth_type": 0x0800,
        "ipv4_src": p.fixed_ips[0][1],
        "ipv4_dst": dst,
        "nw_ttl": 64,
        "ip_proto": 6,
        "tcp_src": 40000,
        "tcp_dst": 80,
        **l4,
    }


def from_outside(w: World, dst: str, sport: int = 80, dport: int = 40000) -> dict:  # type: ignore[type-arg]
    return {
        "in_port": PATCH,
        "eth_src": EXT_HOST[1],
        "eth_dst": gw_port(w).mac,
        "eth_type": 0x0800,
        "ipv4_src": EXT_HOST[0],
        "ipv4_dst": dst,
        "nw_ttl": 64,
        "ip_proto": 6,
        "tcp_src": sport,
        "tcp_dst": dport,
    }


def test_snat_on_the_gateway_chassis_and_the_reply_comes_back() -> None:
    w, p = nat_world()
    sw = w.switch("hv1")
    res = sw.walk(out_of_vm(w, p["a1"], EXT_HOST[0]))
    assert res.ports == [PATCH], res.format()
    h = res.outputs[0].headers
    gw = gw_port(w)
    assert h["ipv4_src"] == gw.fixed_ips[0][1] and h["eth_src"] == gw.mac and h["eth_dst"] == EXT_HOST[1]
    assert h["nw_ttl"] == 63
    # the reply, addressed to the gateway address, is un-NATed back to the VM
    back = sw.walk(from_outside(w, gw.fixed_ips[0][1]))
    assert back.ports == [w.ofport(p["a1"])], back.format()
    b = back.outputs[0].headers
    assert (b["eth_dst"], b["ipv4_dst"], b["ipv4_src"]) == (p["a1"].mac, "10.0.0.10", EXT_HOST[0])
    # a new connection from outside to the gateway address is not a reply: dropped
    assert sw.walk(from_outside(w, gw.fixed_ips[0][1], sport=81)).ports == []


def test_without_snat_connections_leave_with_their_fixed_address_and_replies_come_back() -> None:
    w, p = nat_world(snat=False)
    sw = w.switch("hv1")
    res = sw.walk(out_of_vm(w, p["a1"], EXT_HOST[0]))
    assert res.ports == [PATCH] and res.outputs[0].headers["ipv4_src"] == "10.0.0.10", res.format()
    back = sw.walk(from_outside(w, "10.0.0.10"))
    assert back.ports == [w.ofport(p["a1"])], back.format()
    assert sw.walk(from_outside(w, "10.0.0.10", sport=81)).ports == []  # not a reply: dropped


def test_another_chassis_redirects_to_the_gateway_chassis_without_ttl_change() -> None:
    w, p = nat_world()
    res = w.switch("hv2").walk(out_of_vm(w, p["a2"], "8.8.8.8"))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    r = w.topo.routers["r"]
    assert h["tunnel_id"] == nat.redirect_id(r) and h["tun_ipv4_dst"] == "192.0.2.1" and h["nw_ttl"] == 64
    # the gateway chassis takes it in router context and routes it out via the external gateway_ip
    w.neighbors["ext"]["172.24.4.1"] = "02:ee:00:00:00:01"
    on_gc = w.switch("hv1").walk(
        {
            "in_port": TUN["vxlan"],
            "tunnel_id": h["tunnel_id"],
            **{k: v for k, v in h.items() if k.startswith(("eth", "ipv4", "nw_", "ip_", "tcp"))},
        }
    )
    assert on_gc.ports == [PATCH], on_gc.format()
    o = on_gc.outputs[0].headers
    assert (
        o["eth_dst"] == "02:ee:00:00:00:01"
        and o["nw_ttl"] == 63
        and o["ipv4_src"] == gw_port(w).fixed_ips[0][1]
    )


def test_unknown_external_next_hop_goes_to_the_controller() -> None:
    w, p = nat_world()
    w.neighbors.clear()
    res = w.switch("hv1").walk(out_of_vm(w, p["a1"], EXT_HOST[0]))
    assert res.ports == ["CONTROLLER"]
    assert res.outputs[0].headers["reg0"] == int(netaddr.IPAddress(EXT_HOST[0]))  # the next hop to probe for


def test_new_connections_from_outside_to_the_gateway_or_a_fixed_ip_are_dropped() -> None:
    w, p = nat_world()
    sw = w.switch("hv1")
    assert sw.walk(from_outside(w, gw_port(w).fixed_ips[0][1])).ports == []
    assert sw.walk(from_outside(w, p["a1"].fixed_ips[0][1], sport=5555, dport=22)).ports == []
    assert w.switch("hv2").walk(from_outside(w, p["a1"].fixed_ips[0][1])).ports == []  # hv2 has no gateway


def test_floating_ip_dnat_to_a_vm_on_another_chassis_and_the_reply_is_translated() -> None:
    w, p = nat_world()
    fip = add_fip(w, "a2")
    sw = w.switch("hv1")
    res = sw.walk(from_outside(w, fip.address, sport=5555, dport=22))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    assert h["ipv4_dst"] == "10.0.0.20" and h["ipv4_src"] == EXT_HOST[0] and h["eth_dst"] == p["a2"].mac
    assert h["tunnel_id"] == w.topo.networks["a"].segment_id and h["tun_ipv4_dst"] == "192.0.2.2"
    # the VM's reply leaves through the gateway chassis translated back to the floating IP
    reply = {
        "eth_src": p["a2"].mac,
        "eth_dst": w.topo.ports["r-a"].mac,
        "eth_type": 0x0800,
        "nw_ttl": 64,
        "ipv4_src": "10.0.0.20",
        "ipv4_dst": EXT_HOST[0],
        "ip_proto": 6,
        "tcp_src": 22,
        "tcp_dst": 5555,
    }
    red0 = w.switch("hv2").walk({"in_port": w.ofport(p["a2"]), **reply}).outputs[0].headers
    assert red0["tunnel_id"] == nat.redirect_id(w.topo.routers["r"])
    back = sw.walk(
        {
            "in_port": TUN["vxlan"],
            "tunnel_id": red0["tunnel_id"],
            **{k: v for k, v in red0.items() if k.startswith(("eth", "ipv4", "nw_", "ip_", "tcp"))},
        }
    )
    assert back.ports == [PATCH], back.format()
    assert (back.outputs[0].headers["ipv4_src"], back.outputs[0].headers["ipv4_dst"]) == (
        fip.address,
        EXT_HOST[0],
    )
    # the VM's new outbound connection leaves with the floating IP as its source
    out = sw.walk(out_of_vm(w, p["a1"], EXT_HOST[0]))
    assert out.outputs[0].headers["ipv4_src"] == gw_port(w).fixed_ips[0][1]  # a1 has no FIP: SNAT
    red = w.switch("hv2").walk(out_of_vm(w, p["a2"], EXT_HOST[0], tcp_src=41000)).outputs[0].headers
    on_gc = sw.walk(
        {
            "in_port": TUN["vxlan"],
            "tunnel_id": red["tunnel_id"],
            **{k: v for k, v in red.items() if k.startswith(("eth", "ipv4", "nw_", "ip_", "tcp"))},
        }
    )
    assert on_gc.ports == [PATCH] and on_gc.outputs[0].headers["ipv4_src"] == fip.address


def allow_ingress(w: World) -> None:
    """An ingress rule from anywhere in alice's default group: hairpinned packets come from the router's external
    addresses, which the default group (ingress from its members only) refuses, as it refuses outside traffic."""
    group = next(g.id for g in w.topo.security_groups.values() if g.tenant == "alice")
    w.apply(
        ops_security.create_security_group_rule(
            w.topo,
            SecurityGroupRule(
                id="any-in",
                tenant="alice",
                security_group_id=group,
                direction="ingress",
                ethertype="IPv4",
                remote_ip_prefix="0.0.0.0/0",
            ),
            True,
            w.rev + 1,
            0.0,
        )
    )


def _arrive(sw: Switch, h: Mapping[str, Any]) -> Result:
    """Walk a packet that left another chassis by a tunnel into `sw`."""
    return sw.walk(
        {
            "in_port": TUN["vxlan"],
            "tunnel_id": h["tunnel_id"],
            **{k: v for k, v in h.items() if k.startswith(("eth", "ipv4", "nw_", "ip_", "tcp", "icmp"))},
        }
    )


def _reply(w: World, port: Port, iface: str, h: Mapping[str, Any]) -> dict[str, Any]:
    """What `port` answers to the delivered packet `h` (TCP), sent to its router interface `iface`."""
    return {
        "in_port": w.ofport(port),
        "eth_src": port.mac,
        "eth_dst": w.topo.ports[iface].mac,
        "eth_type": 0x0800,
        "nw_ttl": 64,
        "ipv4_src": h["ipv4_dst"],
        "ipv4_dst": h["ipv4_src"],
        "ip_proto": 6,
        "tcp_src": h["tcp_dst"],
        "tcp_dst": h["tcp_src"],
    }


def test_hairpin_to_a_floating_ip_of_the_same_router() -> None:
    """A VM reaches another VM's floating IP through their router: on the gateway chassis the packet is SNAT'ed
    (the source's floating IP, else the gateway address) and DNAT'ed to the target as if it had left and come
    back; the reply is un-NAT'ed the same way back; nothing goes to the physical network or the controller."""
    w, p = nat_world()
    w.network("b", "alice", "10.0.1.0/24")
    w.apply(ops.add_router_interface(w.topo, w.topo.routers["r"], "b-sub", "", "r-b", w.rev + 1, 0.0))
    b1 = w.port("b1", "b", "hv2", "10.0.1.10")
    f2 = add_fip(w, "a2", "172.24.4.50", "f2")
    allow_ingress(w)
    gw = gw_port(w).fixed_ips[0][1]
    hv1, hv2 = w.switch("hv1"), w.switch("hv2")
    seg_a, seg_b = w.topo.networks["a"].segment_id, w.topo.networks["b"].segment_id
    # a1 (on the gateway chassis, no floating IP) -> f2 (a2, on hv2): a2 sees the gateway address
    res = hv1.walk(out_of_vm(w, p["a1"], f2.address))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    assert (h["ipv4_src"], h["ipv4_dst"], h["eth_dst"]) == (gw, "10.0.0.20", p["a2"].mac), res.format()
    assert (h["tunnel_id"], h["tun_ipv4_dst"], h["nw_ttl"]) == (seg_a, "192.0.2.2", 62)
    at_a2 = _arrive(hv2, h)
    assert at_a2.ports == [w.ofport(p["a2"])], at_a2.format()
    # its reply goes to the gateway chassis (redirect) and back to a1 from the floating IP
    red = hv2.walk(_reply(w, p["a2"], "r-a", at_a2.outputs[0].headers))
    assert red.ports == [TUN["vxlan"]] and red.outputs[0].headers["tunnel_id"] == nat.redirect_id(
        w.topo.routers["r"]
    )
    back = _arrive(hv1, red.outputs[0].headers)
    assert back.ports == [w.ofport(p["a1"])], back.format()
    b = back.outputs[0].headers
    assert (b["ipv4_src"], b["ipv4_dst"], b["tcp_src"], b["tcp_dst"]) == (f2.address, "10.0.0.10", 80, 40000)
    # b1 (another subnet, hv2) -> f2 (a2, hv2): through the gateway chassis, back out of the tunnel it came in by
    red = hv2.walk({**out_of_vm(w, b1, f2.address, tcp_src=40001), "eth_dst": w.topo.ports["r-b"].mac})
    assert red.ports == [TUN["vxlan"]], red.format()
    there = _arrive(hv1, red.outputs[0].headers)
    assert there.ports == [TUN["vxlan"]], there.format()
    t = there.outputs[0].headers
    assert (t["ipv4_src"], t["ipv4_dst"], t["tunnel_id"], t["tun_ipv4_dst"]) == (
        gw,
        "10.0.0.20",
        seg_a,
        "192.0.2.2",
    )
    at_a2 = _arrive(hv2, t)
    assert at_a2.ports == [w.ofport(p["a2"])], at_a2.format()
    red = hv2.walk(_reply(w, p["a2"], "r-a", at_a2.outputs[0].headers))
    back = _arrive(hv1, red.outputs[0].headers)
    assert back.ports == [TUN["vxlan"]], back.format()
    bh = back.outputs[0].headers
    assert (bh["ipv4_src"], bh["ipv4_dst"], bh["tunnel_id"]) == (f2.address, "10.0.1.10", seg_b)
    assert _arrive(hv2, bh).ports == [w.ofport(b1)]
    # a1 with a floating IP of its own: a2 sees that one; and a2 -> f1: a1 sees f2
    f1 = add_fip(w, "a1", "172.24.4.51", "f1")
    hv1, hv2 = w.switch("hv1"), w.switch("hv2")
    res = hv1.walk(out_of_vm(w, p["a1"], f2.address, tcp_src=40002))
    assert res.ports == [TUN["vxlan"]] and res.outputs[0].headers["ipv4_src"] == f1.address, res.format()
    red = hv2.walk(out_of_vm(w, p["a2"], f1.address, tcp_src=40003))
    there = _arrive(hv1, red.outputs[0].headers)
    assert there.ports == [w.ofport(p["a1"])], there.format()
    t = there.outputs[0].headers
    assert (t["ipv4_src"], t["ipv4_dst"]) == (f2.address, "10.0.0.10")
    back = hv1.walk(_reply(w, p["a1"], "r-a", t))
    assert back.ports == [TUN["vxlan"]], back.format()
    bh = back.outputs[0].headers
    assert (bh["ipv4_src"], bh["ipv4_dst"], bh["tcp_src"], bh["tcp_dst"]) == (
        f1.address,
        "10.0.0.20",
        80,
        40003,
    )
    assert _arrive(hv2, bh).ports == [w.ofport(p["a2"])]
    # a VM reaching its own floating IP comes back to itself, from it
    own = hv1.walk(out_of_vm(w, p["a1"], f1.address, tcp_src=40004))
    assert own.ports == [w.ofport(p["a1"])], own.format()
    assert (own.outputs[0].headers["ipv4_src"], own.outputs[0].headers["ipv4_dst"]) == (
        f1.address,
        "10.0.0.10",
    )


def test_hairpin_without_snat_leaves_as_the_gateway_address() -> None:
    """Without enable_snat a VM without a floating IP still reaches a floating IP of its router: the hairpin is
    SNAT'ed to the gateway address (untranslated, the target would answer the fixed IP directly)."""
    w, p = nat_world(snat=False)
    f2 = add_fip(w, "a2", "172.24.4.50", "f2")
    allow_ingress(w)
    hv1, hv2 = w.switch("hv1"), w.switch("hv2")
    res = hv1.walk(out_of_vm(w, p["a1"], f2.address))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    assert (h["ipv4_src"], h["ipv4_dst"]) == (gw_port(w).fixed_ips[0][1], "10.0.0.20")
    at_a2 = _arrive(hv2, h)
    red = hv2.walk(_reply(w, p["a2"], "r-a", at_a2.outputs[0].headers))
    back = _arrive(hv1, red.outputs[0].headers)
    assert back.ports == [w.ofport(p["a1"])], back.format()
    assert back.outputs[0].headers["ipv4_src"] == f2.address
    # other connections still leave untranslated
    out = hv1.walk(out_of_vm(w, p["a1"], EXT_HOST[0]))
    assert out.ports == [PATCH] and out.outputs[0].headers["ipv4_src"] == "10.0.0.10", out.format()


def test_hairpin_to_a_floating_ip_of_another_router_with_the_same_gateway_chassis() -> None:
    """Two routers on the same external network and gateway chassis: a VM behind one reaches a floating IP of
    the other, SNAT'ed by its own router (zone) and DNAT'ed by the other's, as across the physical network."""
    w, p = nat_world()
    allow_ingress(w)
    w.network("c", "alice", "10.0.2.0/24")
    w.apply(
        ops.create_router(w.topo, Router(id="r2", tenant="alice"), ops.GatewayRequest("ext"), w.rev + 1, 0.0)
    )
    w.apply(ops.add_router_interface(w.topo, w.topo.routers["r2"], "c-sub", "", "r2-c", w.rev + 1, 0.0))
    c1 = w.port("c1", "c", "hv2", "10.0.2.10")
    fc = add_fip(w, "c1", "172.24.4.60", "fc")
    hv1, hv2 = w.switch("hv1"), w.switch("hv2")
    res = hv1.walk(out_of_vm(w, p["a1"], fc.address))
    assert res.ports == [TUN["vxlan"]], res.format()
    h = res.outputs[0].headers
    assert (h["ipv4_src"], h["ipv4_dst"]) == (gw_port(w).fixed_ips[0][1], "10.0.2.10")
    at_c1 = _arrive(hv2, h)
    assert at_c1.ports == [w.ofport(c1)], at_c1.format()
    red = hv2.walk(_reply(w, c1, "r2-c", at_c1.outputs[0].headers))
    back = _arrive(hv1, red.outputs[0].headers)
    assert back.ports == [w.ofport(p["a1"])], back.format()
    assert (back.outputs[0].headers["ipv4_src"], back.outputs[0].headers["ipv4_dst"]) == (
        fc.address,
        "10.0.0.10",
    )


def test_gateway_chassis_answers_arp_for_the_gateway_and_floating_ips_only() -> None:
    w, _p = nat_world()
    fip = add_fip(w, "a1")
    sw = w.switch("hv1")
    gw = gw_port(w)
    for addr in (gw.fixed_ips[0][1], fip.address):
        res = sw.walk(
            {
                "in_port": PATCH,
                "eth_src": EXT_HOST[1],
                "eth_dst": "ff:ff:ff:ff:ff:ff",
                "eth_type": 0x0806,
                "arp_op": 1,
                "arp_spa": EXT_HOST[0],
                "arp_tpa": addr,
                "arp_sha": EXT_HOST[1],
                "arp_tha": "00:00:00:00:00:00",
            }
        )
        assert res.ports == [PATCH] and res.outputs[0].headers["arp_sha"] == gw.mac, res.format()
    assert (
        w.switch("hv2")
        .walk(
            {
                "in_port": PATCH,
                "eth_src": EXT_HOST[1],
                "eth_dst": "ff:ff:ff:ff:ff:ff",
                "eth_type": 0x0806,
                "arp_op": 1,
                "arp_spa": EXT_HOST[0],
                "arp_tpa": fip.address,
                "arp_sha": EXT_HOST[1],
                "arp_tha": "00:00:00:00:00:00",
            }
        )
        .ports
        == []
    )


def test_without_gateway_chassis_nothing_leaves() -> None:
    w, p = nat_world()
    items = desired_from_scratch(w.topo, w.runtime, "hv1", (), w.neighbors)
    sw = Switch([i for i in items if isinstance(i, Flow)], [i for i in items if isinstance(i, Group)])
    assert sw.walk(out_of_vm(w, p["a1"], EXT_HOST[0])).ports == []


def test_clearing_the_gateway_removes_exactly_its_flows() -> None:
    w, p = nat_world()
    r = w.topo.routers["r"]
    comp = Compiler(GC)
    comp.neighbors = w.neighbors
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    with_gw = {c: comp.desired(c) for c in ("hv1", "hv2")}
    fip = add_fip(w, "a2")
    comp.on_changes(
        w.topo, [("port", "f-port", None, w.topo.ports["f-port"]), ("floating_ip", "f", None, fip)]
    )
    assert comp.desired("hv1") != with_gw["hv1"]
    comp.on_changes(w.topo, w.apply(ops.delete_floating_ip(w.topo, fip)))
    assert {c: comp.desired(c) for c in ("hv1", "hv2")} == with_gw
    comp.on_changes(w.topo, w.apply(ops.update_router(w.topo, r, {"external_gateway": None}, w.rev + 1, 0.0)))
    for c in ("hv1", "hv2"):
        left = comp.desired(c)
        assert left == desired_from_scratch(w.topo, w.runtime, c, GC, w.neighbors)
        owners = {f.owner.app for f in left if isinstance(f, Flow) and f.owner is not None}
        assert ids.NAT not in owners, "no nat flows without a gateway"
        assert not any(
            isinstance(f, Flow) and f.match_dict().get("metadata") == w.topo.networks["ext"].key for f in left
        ), "the external network is not hosted any more"
    # hv2 is left with exactly what a router without a gateway compiles to
    sw = w.switch("hv2")
    assert sw.walk(out_of_vm(w, p["a2"], "8.8.8.8")).ports == []


def test_gateway_chassis_option_from_toml_and_repeatable_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert config.load([]).gateway_chassis == []
    assert config.load(["--gateway-chassis", "hv1", "--gateway-chassis", "hv2"]).gateway_chassis == [
        "hv1",
        "hv2",
    ]
    toml = tmp_path / "c.toml"
    toml.write_text('gateway_chassis = ["gw1"]\n')
    assert config.load(["--config", str(toml)]).gateway_chassis == ["gw1"]
    assert config.load(["--config", str(toml), "--gateway-chassis", "gw2"]).gateway_chassis == ["gw2"]
    with pytest.raises(SystemExit):
        config.load(["--vxlan-ranges", f"1000:{nat.REDIRECT_BASE}"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["move", "delete", "fip", "unfip", "learn"]),
            st.sampled_from(["a1", "a2"]),
            st.sampled_from(["hv1", "hv2"]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_incremental_equals_full_with_gateways(actions) -> None:  # type: ignore[no-untyped-def]
    w, _p = nat_world()
    comp = Compiler(GC)
    comp.neighbors = w.neighbors
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    n = 0
    for op, pid, ch in actions:
        port = w.topo.ports.get(pid)
        changes = []
        if op == "move" and port is not None:
            changes = w.apply(ops.update_port(w.topo, port, {"binding_chassis": ch}, w.rev + 1, 0.0))
        elif op == "delete" and port is not None:
            fips = [f for f in w.topo.floatingips.values() if f.port_id == pid]
            changes = w.apply(
                [
                    *(
                        (
                            "floating_ip",
                            f.id,
                            f,
                            FloatingIp(**{**f.__dict__, "port_id": "", "fixed_ip": "", "router_id": ""}),
                        )
                        for f in fips
                    ),
                    *ops.delete_port(w.topo, port),
                ]
            )
        elif op == "fip" and port is not None and "f" not in w.topo.floatingips:
            before = w.rev
            add_fip(w, pid)
            changes = [
                ("port", "f-port", None, w.topo.ports["f-port"]),
                ("floating_ip", "f", None, w.topo.floatingips["f"]),
            ]
            assert w.rev == before + 1
        elif op == "unfip" and "f" in w.topo.floatingips:
            changes = w.apply(
                ops.update_floating_ip(w.topo, w.topo.floatingips["f"], {"port": ""}, w.rev + 1, 0.0)
            )
        elif op == "learn":
            n += 1
            w.neighbors["ext"][f"172.24.4.{200 + n}"] = f"02:ee:00:00:01:{n:02x}"
            comp.rebuild(w.topo)
        if changes:
            comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c, GC, w.neighbors), (
                op,
                pid,
                ch,
                c,
            )


def ping_from_outside(w: World, dst: str, ttl: int = 64, icmp_type: int = 8) -> dict:  # type: ignore[type-arg]
    return {
        "in_port": PATCH,
        "eth_src": EXT_HOST[1],
        "eth_dst": gw_port(w).mac,
        "eth_type": 0x0800,
        "ipv4_src": EXT_HOST[0],
        "ipv4_dst": dst,
        "nw_ttl": ttl,
        "ip_proto": 1,
        "icmpv4_type": icmp_type,
        "icmpv4_code": 0,
    }


def ping_from_vm(w: World, p: Port, dst: str) -> dict:  # type: ignore[type-arg]
    pkt = {**out_of_vm(w, p, dst), "ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0}
    del pkt["tcp_src"], pkt["tcp_dst"]
    return pkt


def test_the_gateway_address_answers_ping_from_outside_and_nothing_else_new_gets_in() -> None:
    """An echo request from the external network to the gateway address is answered on the gateway chassis, by
    the router itself (TTL 64, out the patch port it came in by); TCP, UDP and pings to anything else but a
    floating IP stay dropped, and SNAT'ed pings of the VMs still get their replies."""
    w, p = nat_world()
    fip = add_fip(w, "a2")
    gw = gw_port(w)
    gw_ip = gw.fixed_ips[0][1]
    sw = w.switch("hv1")
    for ttl in (64, 1):
        res = sw.walk(ping_from_outside(w, gw_ip, ttl))
        assert res.ports == [PATCH], res.format()
        h = res.outputs[0].headers
        assert (h["ipv4_src"], h["ipv4_dst"], h["icmpv4_type"], h["nw_ttl"]) == (gw_ip, EXT_HOST[0], 0, 64)
        assert (h["eth_src"], h["eth_dst"]) == (gw.mac, EXT_HOST[1])
    assert w.switch("hv2").walk(ping_from_outside(w, gw_ip)).ports == []  # only the gateway chassis has it
    # nothing else new from outside: TCP / UDP to the gateway address, a ping to a fixed IP or the router's
    # interface, an unsolicited echo reply
    assert sw.walk(from_outside(w, gw_ip, sport=5555, dport=22)).ports == []
    udp = {**ping_from_outside(w, gw_ip), "ip_proto": 17, "udp_src": 5555, "udp_dst": 53}
    del udp["icmpv4_type"], udp["icmpv4_code"]
    assert sw.walk(udp).ports == []
    assert sw.walk(ping_from_outside(w, "10.0.0.10")).ports == []
    assert sw.walk(ping_from_outside(w, "10.0.0.1")).ports == []
    assert sw.walk(ping_from_outside(w, gw_ip, icmp_type=0)).ports == []
    assert sw.walk(from_outside(w, "10.0.0.10", sport=5555, dport=22)).ports == []
    # a ping to the floating IP still reaches its VM (on hv2), DNAT'ed
    res = sw.walk(ping_from_outside(w, fip.address))
    assert res.ports == [TUN["vxlan"]], res.format()
    assert (res.outputs[0].headers["ipv4_dst"], res.outputs[0].headers["icmpv4_type"]) == ("10.0.0.20", 8)
    # a VM's ping out is SNAT'ed to the gateway address and its reply comes back to it, not answered
    out = sw.walk(ping_from_vm(w, p["a1"], EXT_HOST[0]))
    assert out.ports == [PATCH] and out.outputs[0].headers["ipv4_src"] == gw_ip, out.format()
    back = sw.walk(ping_from_outside(w, gw_ip, icmp_type=0))
    assert back.ports == [w.ofport(p["a1"])], back.format()
    assert (back.outputs[0].headers["ipv4_dst"], back.outputs[0].headers["icmpv4_type"]) == ("10.0.0.10", 0)


def test_a_vm_pinging_another_routers_gateway_address_gets_the_reply_through_its_own_router() -> None:
    """r2's gateway address seen from a VM behind r (same external network and gateway chassis): r2 answers with
    64, r (a further hop) routes the reply back with 63, un-SNAT'ed; and the VM's own gateway address gives 64."""
    w, p = nat_world()
    w.apply(
        ops.create_router(w.topo, Router(id="r2", tenant="alice"), ops.GatewayRequest("ext"), w.rev + 1, 0.0)
    )
    gw2 = next(q for q in w.topo.router_ports("r2") if q.network_id == "ext").fixed_ips[0][1]
    own = gw_port(w).fixed_ips[0][1]
    sw = w.switch("hv1")
    for addr, ttl in ((gw2, 63), (own, 64)):
        res = sw.walk(ping_from_vm(w, p["a1"], addr))
        assert res.ports == [w.ofport(p["a1"])], res.format()
        h = res.outputs[0].headers
        assert (h["ipv4_src"], h["ipv4_dst"], h["icmpv4_type"], h["nw_ttl"]) == (addr, "10.0.0.10", 0, ttl)


def test_a_retried_first_packet_to_a_floating_ip_still_reaches_the_vm() -> None:
    """The first packet's reply can be lost on the gateway chassis (its external next hop unknown yet: it goes to
    the controller before snat sees it): the connection stays new in conntrack, its DNAT committed. A retry on
    the same ports (the next echo request of one ping, a TCP SYN retransmission) comes out of ct(nat) already
    translated and still new: it must go on to the VM, and the next reply must leave as the floating IP."""
    w, p = nat_world()
    allow_ingress(w)
    fip = add_fip(w, "a1")
    w.neighbors["ext"] = {}
    sw = w.switch("hv1")
    first = sw.walk(from_outside(w, fip.address, sport=5555, dport=22))
    assert first.ports == [w.ofport(p["a1"])], first.format()
    reply = {
        "in_port": w.ofport(p["a1"]),
        "eth_src": p["a1"].mac,
        "eth_dst": w.topo.ports["r-a"].mac,
        "eth_type": 0x0800,
        "nw_ttl": 64,
        "ipv4_src": "10.0.0.10",
        "ipv4_dst": EXT_HOST[0],
        "ip_proto": 6,
        "tcp_src": 22,
        "tcp_dst": 5555,
    }
    lost = sw.walk(reply)
    assert lost.ports == ["CONTROLLER"], lost.format()  # the next hop is unknown: the reply is lost
    # the controller learns the next hop; the switch (and its conntrack) stays the same
    w.neighbors["ext"] = {EXT_HOST[0]: EXT_HOST[1]}
    learnt = w.switch("hv1")
    learnt.conntrack, learnt.answered = sw.conntrack, sw.answered
    again = learnt.walk(from_outside(w, fip.address, sport=5555, dport=22))
    assert again.ports == [w.ofport(p["a1"])], again.format()
    assert again.outputs[0].headers["ipv4_dst"] == "10.0.0.10"
    back = learnt.walk(reply)
    assert back.ports == [PATCH], back.format()
    assert (back.outputs[0].headers["ipv4_src"], back.outputs[0].headers["ipv4_dst"]) == (
        fip.address,
        EXT_HOST[0],
    )
    # a connection to the fixed IP that was never DNAT'ed is still refused
    assert learnt.walk(from_outside(w, "10.0.0.10", sport=5556, dport=22)).ports == []
