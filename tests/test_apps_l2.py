"""The L2 compilers by behaviour: walk packets through one chassis's compiled tables, see where they go."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.compiler import Compiler, desired_from_scratch
from apps.ids import flood_all_group
from apps.view import ChassisRuntime
from flows.flow import Flow, Group
from flows.walker import Switch
from topology import ops, ops_security
from topology.model import Topology
from topology.records import Chassis, Network, Port, Subnet

BCAST = "ff:ff:ff:ff:ff:ff"
TUN = {"vxlan": 100, "gre": 101, "geneve": 102}
PATCH = 200


class World:
    """A topology built through topology.ops (as the API does), plus per-chassis runtime."""

    def __init__(self) -> None:
        self.topo = Topology()
        self.rev = 0
        self.runtime: dict[str, ChassisRuntime] = {}
        self.next_ofport = 1

    def apply(self, changes):  # type: ignore[no-untyped-def]
        self.rev += 1
        self.topo.apply(changes, self.rev)
        return changes

    def chassis(self, name: str, ip: str, mappings=()) -> None:  # type: ignore[no-untyped-def]
        self.apply(
            ops.create_chassis(
                self.topo,
                Chassis(
                    id=name,
                    datapath_id=len(self.topo.chassis) + 1,
                    tunnel_ip=ip,
                    bridge_mappings=tuple(mappings),
                ),
                self.rev + 1,
                0.0,
            )
        )
        self.runtime[name] = ChassisRuntime(name, {}, dict(TUN), {pn: PATCH for pn, _ in mappings})

    def network(self, ident: str, tenant: str, cidr: str, **kw) -> Network:  # type: ignore[no-untyped-def]
        self.apply(ops.create_network(self.topo, Network(id=ident, tenant=tenant, **kw), self.rev + 1, 0.0))
        self.apply(
            ops.create_subnet(
                self.topo,
                Subnet(id=ident + "-sub", tenant=tenant, network_id=ident, cidr=cidr),
                False,
                self.rev + 1,
                0.0,
            )
        )
        return self.topo.networks[ident]

    def port(self, ident: str, net: str, chassis: str, ip: str = "") -> Port:
        """A port in its tenant's default security group (made on first need, as the API does)."""
        reqs = [("", ip)] if ip else []
        tenant = self.topo.networks[net].tenant
        group, made = ops_security.ensure_default_group(self.topo, tenant, self.rev + 1, 0.0)
        if made:
            self.apply(made)
        self.apply(
            ops.create_port(
                self.topo,
                Port(
                    id=ident,
                    tenant=tenant,
                    network_id=net,
                    mac="",
                    binding_chassis=chassis,
                    security_groups=(group,),
                ),
                reqs,
                self.rev + 1,
                0.0,
            )
        )
        rt = self.runtime[chassis]
        self.runtime[chassis] = dataclasses.replace(rt, vifs={**rt.vifs, ident: self.next_ofport})
        self.next_ofport += 1
        return self.topo.ports[ident]

    def switch(self, chassis: str) -> Switch:
        items = desired_from_scratch(self.topo, self.runtime, chassis)
        return Switch([i for i in items if isinstance(i, Flow)], [i for i in items if isinstance(i, Group)])

    def ofport(self, port: Port) -> int:
        return self.runtime[port.binding_chassis].vifs[port.id]


def two_tenants() -> tuple[World, dict[str, Port]]:
    w = World()
    w.chassis("hv1", "192.0.2.1")
    w.chassis("hv2", "192.0.2.2")
    w.network("a", "alice", "10.0.0.0/24")
    w.network("b", "bob", "10.0.0.0/24")  # same CIDR, other tenant
    p = {
        "a1": w.port("a1", "a", "hv1", "10.0.0.5"),
        "a2": w.port("a2", "a", "hv1", "10.0.0.6"),
        "a3": w.port("a3", "a", "hv2", "10.0.0.7"),
        "b1": w.port("b1", "b", "hv1", "10.0.0.5"),  # same IP as a1
        "b2": w.port("b2", "b", "hv1", "10.0.0.6"),
    }
    return w, p


def eth(src: Port, dst_mac: str, **extra) -> dict:  # type: ignore[no-untyped-def,type-arg]
    own = {"ipv4_src": src.fixed_ips[0][1]} if src.fixed_ips else {}  # port security checks it
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": 0x0800, **own, **extra}


def test_known_unicast_goes_to_one_local_port() -> None:
    w, p = two_tenants()
    sw = w.switch("hv1")
    res = sw.walk({"in_port": w.ofport(p["a1"]), **eth(p["a1"], p["a2"].mac)})
    assert res.ports == [w.ofport(p["a2"])]


def test_remote_unicast_is_tunnelled_to_the_right_chassis_with_the_segment_id() -> None:
    w, p = two_tenants()
    res = w.switch("hv1").walk({"in_port": w.ofport(p["a1"]), **eth(p["a1"], p["a3"].mac)})
    assert res.ports == [TUN["vxlan"]]
    headers = res.outputs[0].headers
    assert headers["tunnel_id"] == w.topo.networks["a"].segment_id and headers["tun_ipv4_dst"] == "192.0.2.2"
    # and on the far side it is delivered to a3 only
    back = w.switch("hv2").walk(
        {"in_port": TUN["vxlan"], "tunnel_id": headers["tunnel_id"], **eth(p["a1"], p["a3"].mac)}
    )
    assert back.ports == [w.ofport(p["a3"])]


def test_tenants_with_the_same_cidr_are_isolated() -> None:
    w, p = two_tenants()
    sw = w.switch("hv1")
    # a1 addressing bob's MAC reaches nothing of bob's: it floods within alice's network only
    res = sw.walk({"in_port": w.ofport(p["a1"]), **eth(p["a1"], p["b2"].mac)})
    assert w.ofport(p["b2"]) not in res.ports and w.ofport(p["b1"]) not in res.ports
    assert set(res.ports) <= {w.ofport(p["a2"]), TUN["vxlan"]}
    # ARP for 10.0.0.6 from a1 is answered with alice's a2, from b1 with bob's b2
    for asker, owner in ((p["a1"], p["a2"]), (p["b1"], p["b2"])):
        arp = {
            "in_port": w.ofport(asker),
            "eth_src": asker.mac,
            "eth_dst": BCAST,
            "eth_type": 0x0806,
            "arp_op": 1,
            "arp_spa": asker.fixed_ips[0][1],
            "arp_tpa": "10.0.0.6",
            "arp_sha": asker.mac,
            "arp_tha": "00:00:00:00:00:00",
        }
        res = sw.walk(arp)
        assert res.ports == [w.ofport(asker)]  # back out the asking port (IN_PORT), nowhere else
        reply = res.outputs[0].headers
        assert (reply["arp_op"], reply["arp_sha"], reply["eth_src"], reply["eth_dst"], reply["arp_tpa"]) == (
            2,
            owner.mac,
            owner.mac,
            asker.mac,
            asker.fixed_ips[0][1],
        )


def test_broadcast_reaches_every_port_of_its_network_once_and_nothing_else() -> None:
    w, p = two_tenants()
    res = w.switch("hv1").walk({"in_port": w.ofport(p["a1"]), **eth(p["a1"], BCAST)})
    assert sorted(res.ports) == sorted([w.ofport(p["a2"]), TUN["vxlan"]])  # not back to a1, not bob's
    tun = [o for o in res.outputs if o.port == TUN["vxlan"]]
    assert len(tun) == 1 and tun[0].headers["tun_ipv4_dst"] == "192.0.2.2"
    # from the tunnel: local ports only (split horizon)
    seg = w.topo.networks["a"].segment_id
    res = w.switch("hv1").walk({"in_port": TUN["vxlan"], "tunnel_id": seg, **eth(p["a3"], BCAST)})
    assert sorted(res.ports) == sorted([w.ofport(p["a1"]), w.ofport(p["a2"])])


def test_own_address_arp_is_not_answered_but_broadcast() -> None:
    w, p = two_tenants()
    a1 = p["a1"]
    garp = {
        "in_port": w.ofport(a1),
        "eth_src": a1.mac,
        "eth_dst": BCAST,
        "eth_type": 0x0806,
        "arp_op": 1,
        "arp_spa": "10.0.0.5",
        "arp_tpa": "10.0.0.5",
        "arp_sha": a1.mac,
        "arp_tha": "00:00:00:00:00:00",
    }
    res = w.switch("hv1").walk(garp)
    assert w.ofport(a1) not in res.ports and w.ofport(p["a2"]) in res.ports


def test_unknown_source_port_and_unknown_tunnel_key_are_dropped() -> None:
    w, p = two_tenants()
    sw = w.switch("hv1")
    assert sw.walk({"in_port": 999, **eth(p["a1"], p["a2"].mac)}).dropped_at == "classify"
    assert sw.walk({"in_port": TUN["vxlan"], "tunnel_id": 4242, **eth(p["a3"], p["a1"].mac)}).dropped


def test_vlan_provider_network_tags_towards_the_physical_network() -> None:
    w = World()
    w.chassis("hv1", "192.0.2.1", mappings=[("physnet1", "br-prov")])
    w.network("v", "admin", "172.16.0.0/24", segment_type="vlan", physical_network="physnet1", segment_id=300)
    v1 = w.port("v1", "v", "hv1", "172.16.0.10")
    v2 = w.port("v2", "v", "hv1", "172.16.0.11")
    sw = w.switch("hv1")
    out = sw.walk({"in_port": w.ofport(v1), **eth(v1, "02:aa:00:00:00:01")})  # an external host's MAC
    assert out.ports == [PATCH] and out.outputs[0].headers["vlan_vid"] == 0x1000 | 300
    bc = sw.walk({"in_port": w.ofport(v1), **eth(v1, BCAST)})
    assert sorted(bc.ports) == sorted([PATCH, w.ofport(v2)])
    inbound = sw.walk({"in_port": PATCH, "vlan_vid": 0x1000 | 300, **eth(v2, v1.mac)})
    assert inbound.ports == [w.ofport(v1)]
    assert inbound.outputs[0].headers.get("vlan_vid", 0) == 0  # the tag was popped
    assert sw.walk({"in_port": PATCH, "vlan_vid": 0x1000 | 301, **eth(v2, v1.mac)}).dropped
    # what came from the physical network is never sent back to it
    assert PATCH not in sw.walk({"in_port": PATCH, "vlan_vid": 0x1000 | 300, **eth(v2, BCAST)}).ports


def test_chassis_without_ports_of_a_network_gets_none_of_its_flows() -> None:
    w, p = two_tenants()
    items = desired_from_scratch(w.topo, w.runtime, "hv2")
    bob_key = w.topo.networks["b"].key
    assert not any(isinstance(i, Group) and i.group_id == flood_all_group(bob_key) for i in items)
    assert not any(isinstance(i, Flow) and ("metadata", bob_key, None) in i.match for i in items)


def test_deleting_a_port_removes_exactly_its_flows() -> None:
    w, p = two_tenants()
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    before = comp.desired("hv1")
    changes = w.apply(ops.delete_port(w.topo, w.topo.ports["a2"]))
    delta = comp.on_changes(w.topo, changes)["hv1"]
    from flows.cookie import owner_hash

    a2_ip = p["a2"].fixed_ips[0][1]
    # a2 also leaves alice's default group: the flow standing for its address as a remote-group member
    # loses alice's rule (bob's b2 has the same address: the flow stays, with bob's rule only)
    member = {
        i
        for i in delta.remove | delta.add
        if isinstance(i, Flow) and i.stage == "acl_ingress" and i.match_dict().get("ipv4_src") == a2_ip
    }
    assert len(member) == 2
    removed_owners = {i.owner.owner for i in delta.remove - member if isinstance(i, Flow) and i.owner}
    assert removed_owners == {owner_hash("a2")} and delta.remove <= before
    # the only other additions: network a's flood groups without a2's bucket (their flows are unchanged)
    assert all(isinstance(i, Group) for i in delta.add - member)


# --------------------------------------------------------------------------------------- incremental == full

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "delete", "move", "admin", "plug", "unplug", "net"]),
        st.integers(0, 7),
        st.sampled_from(["hv1", "hv2", "hv3"]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_incremental_compile_equals_full_compile(actions) -> None:  # type: ignore[no-untyped-def]
    w = World()
    for i, ch in enumerate(["hv1", "hv2", "hv3"]):
        w.chassis(ch, f"192.0.2.{i + 1}")
    w.network("a", "alice", "10.0.0.0/24")
    w.network("b", "bob", "10.0.0.0/24", segment_type="gre")
    comp = Compiler()
    for rt in w.runtime.values():
        comp.on_runtime(w.topo, rt)
    comp.rebuild(w.topo)
    for step, (op, n, ch) in enumerate(actions):
        pid = f"p{n}"
        port = w.topo.ports.get(pid)
        changes = []
        if op == "add" and port is None:
            w.port(pid, "a" if n % 2 else "b", ch)
            changes = [("port", pid, None, w.topo.ports[pid])]
            comp.on_runtime(w.topo, w.runtime[ch])
        elif op == "delete" and port is not None:
            changes = w.apply(ops.delete_port(w.topo, port))
        elif op == "move" and port is not None:
            changes = w.apply(ops.update_port(w.topo, port, {"binding_chassis": ch}, w.rev + 1, 0.0))
        elif op == "admin" and port is not None:
            changes = w.apply(
                ops.update_port(w.topo, port, {"admin_state_up": not port.admin_state_up}, w.rev + 1, 0.0)
            )
        elif op in ("plug", "unplug"):
            rt = w.runtime[ch]
            vifs = dict(rt.vifs)
            if op == "plug":
                vifs[pid] = 50 + n
            else:
                vifs.pop(pid, None)
            w.runtime[ch] = dataclasses.replace(rt, vifs=vifs)
            comp.on_runtime(w.topo, w.runtime[ch])
        elif op == "net":
            net = w.topo.networks["a"]
            changes = w.apply(
                ops.update_network(w.topo, net, {"admin_state_up": not net.admin_state_up}, w.rev + 1, 0.0)
            )
        if changes:
            comp.on_changes(w.topo, changes)
        for c in ("hv1", "hv2", "hv3"):
            assert comp.desired(c) == desired_from_scratch(w.topo, w.runtime, c), (step, op, n, ch, c)
