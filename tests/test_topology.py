"""The model without the API: allocation, derived indices, graph queries, reload from the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from topology import ops
from topology.allocator import RangeAllocator
from topology.errors import ApiError
from topology.model import ModelConfig, Topology
from topology.records import Chassis, Network, Port, Subnet
from topology.state import State


def test_allocator_walks_forward_and_reuses_released_numbers() -> None:
    a = RangeAllocator([(10, 12), (20, 21)])
    got = []
    for _ in range(5):
        n = a.choose()
        assert n is not None
        a.add(n)
        got.append(n)
    assert got == [10, 11, 12, 20, 21] and a.choose() is None
    a.remove(11)
    assert a.choose() == 11 and a.choose(exclude={11}) is None
    a.add(11)
    a.remove(99)  # outside the ranges: not offered
    assert a.choose() is None


def test_allocator_skips_numbers_taken_ahead_of_the_cursor() -> None:
    a = RangeAllocator([(1, 5)])
    a.add(2)  # e.g. a requested fixed IP
    a.add(3)
    picks = []
    for _ in range(3):
        n = a.choose()
        assert n is not None
        a.add(n)
        picks.append(n)
    assert picks == [1, 4, 5]


def _write(state: State, fn):  # type: ignore[no-untyped-def]
    return state.write(fn)[1]


def _setup(state: State) -> None:
    _write(state, lambda t, r, n: ops.create_chassis(t, Chassis(id="hv1", datapath_id=1), r, n))
    _write(state, lambda t, r, n: ops.create_chassis(t, Chassis(id="hv2", datapath_id=2), r, n))
    _write(state, lambda t, r, n: ops.create_network(t, Network(id="net", tenant="a"), r, n))
    _write(
        state,
        lambda t, r, n: ops.create_subnet(
            t, Subnet(id="sub", tenant="a", network_id="net", cidr="10.0.0.0/24"), False, r, n
        ),
    )


def test_graph_queries_follow_bindings_and_groups(tmp_path: Path) -> None:
    state = State(tmp_path / "db")
    _setup(state)
    for i, (chassis, groups) in enumerate([("hv1", ("web",)), ("hv1", ("web", "db")), ("", ("db",))]):
        _write(
            state,
            lambda t, r, n, i=i, c=chassis, g=groups: ops.create_port(
                t,
                Port(id=f"p{i}", tenant="a", network_id="net", mac="", binding_chassis=c, security_groups=g),
                [],
                r,
                n,
            ),
        )
    topo = state.topology
    assert topo.chassis_hosting("net") == {"hv1"}
    assert [p.id for p in topo.ports_in_security_group("web")] == ["p0", "p1"]
    assert [p.id for p in topo.ports_on_chassis("hv1")] == ["p0", "p1"]
    # move p1 to hv2 and out of "web"; update a chassis record: bindings survive it
    _write(
        state,
        lambda t, r, n: ops.update_port(
            t, t.ports["p1"], {"binding_chassis": "hv2", "security_groups": ("db",)}, r, n
        ),
    )
    _write(state, lambda t, r, n: ops.update_chassis(t, t.chassis["hv2"], {"tunnel_ip": "192.0.2.2"}, r, n))
    assert topo.chassis_hosting("net") == {"hv1", "hv2"}
    assert [p.id for p in topo.ports_in_security_group("web")] == ["p0"]
    assert [p.id for p in topo.ports_on_chassis("hv2")] == ["p1"]
    _write(state, lambda t, r, n: ops.delete_port(t, t.ports["p0"]))
    assert ("security_group", "web") not in topo.graph  # nothing references it any more
    assert topo.chassis_hosting("net") == {"hv2"}
    state.close()


def test_reload_rebuilds_exactly_the_same_indices(tmp_path: Path) -> None:
    state = State(tmp_path / "db")
    _setup(state)
    for i in range(20):
        _write(
            state,
            lambda t, r, n, i=i: ops.create_port(
                t,
                Port(
                    id=f"p{i}", tenant="a", network_id="net", mac="", binding_chassis="hv1" if i % 2 else ""
                ),
                [],
                r,
                n,
            ),
        )
    for i in range(0, 20, 3):
        _write(state, lambda t, r, n, i=i: ops.delete_port(t, t.ports[f"p{i}"]))
    before = state.topology
    state.close()
    again = State(tmp_path / "db")
    after = again.topology
    assert after.revision == before.revision
    assert after.ports == before.ports and after.subnets == before.subnets and after.chassis == before.chassis
    assert after.macs == before.macs and after.ip_owner == before.ip_owner
    assert set(after.graph.edges) == set(before.graph.edges)
    assert after.ipam["sub"].allocated == before.ipam["sub"].allocated
    # the next allocation after a reload reuses a released address rather than growing
    n = after.ipam["sub"].choose()
    assert n is not None and n not in after.ipam["sub"].allocated
    again.close()


def test_a_failed_commit_refuses_the_write_and_keeps_the_acknowledged_model(tmp_path: Path) -> None:
    state = State(tmp_path / "db")
    _setup(state)
    _write(
        state,
        lambda t, r, n: ops.create_port(t, Port(id="p1", tenant="a", network_id="net", mac=""), [], r, n),
    )
    # corrupt the store behind the model's back: the MAC the next port will be given is already "taken" on disk
    db = sqlite3.connect(tmp_path / "db")
    db.execute("INSERT INTO mac_addresses (mac, port_id) VALUES ('02:00:00:00:00:99', 'ghost')")
    db.commit()
    db.close()
    revision = state.revision
    with pytest.raises(ApiError) as info:
        _write(
            state,
            lambda t, r, n: ops.create_port(
                t, Port(id="p2", tenant="a", network_id="net", mac="02:00:00:00:00:99"), [], r, n
            ),
        )
    assert info.value.code == "UNAVAILABLE" and info.value.reason == "STORE_WRITE_FAILED"
    assert "p2" not in state.topology.ports and state.revision == revision == state.durable_revision
    assert "02:00:00:00:00:99" not in state.topology.macs
    # and the model still works
    _write(
        state,
        lambda t, r, n: ops.create_port(t, Port(id="p3", tenant="a", network_id="net", mac=""), [], r, n),
    )
    state.close()


def test_default_mtu_accounts_for_the_overlay() -> None:
    cfg = ModelConfig(underlay_mtu=1600)
    topo = Topology(cfg)
    mtus = {}
    for stype in ("vxlan", "gre", "geneve"):
        rec = ops.create_network(topo, Network(id=stype, tenant="a", segment_type=stype), 1, 0.0)[0][3]
        assert rec is not None
        mtus[stype] = rec.mtu
    assert mtus == {"vxlan": 1550, "gre": 1558, "geneve": 1542}


def test_update_fixed_ips_keeps_an_address_asked_for_again() -> None:
    topo = Topology()
    topo.apply(ops.create_network(topo, Network(id="n", tenant="a"), 1, 0.0), 1)
    topo.apply(
        ops.create_subnet(
            topo, Subnet(id="s", tenant="a", network_id="n", cidr="10.0.0.0/29"), False, 2, 0.0
        ),
        2,
    )
    topo.apply(ops.create_port(topo, Port(id="p", tenant="a", network_id="n", mac=""), [], 3, 0.0), 3)
    assert topo.ports["p"].fixed_ips == (("s", "10.0.0.2"),)
    # asking again for the subnet (bare) keeps the current address, and adding one allocates a new one
    changes = ops.update_port(topo, topo.ports["p"], {"fixed_ips": [("s", ""), ("s", "")]}, 4, 0.0)
    new = changes[0][3]
    assert new is not None and new.fixed_ips == (("s", "10.0.0.2"), ("s", "10.0.0.3"))


def test_router_ops_keep_keys_and_indices_exact() -> None:
    from topology.records import FloatingIp, Router

    topo = Topology()
    rev = 0

    def apply(changes):  # type: ignore[no-untyped-def]
        nonlocal rev
        rev += 1
        topo.apply(changes, rev)
        return changes

    apply(
        ops.create_network(
            topo,
            Network(id="ext", tenant="op", segment_type="flat", physical_network="e", external=True),
            1,
            0.0,
        )
    )
    apply(
        ops.create_subnet(
            topo, Subnet(id="ext-s", tenant="op", network_id="ext", cidr="203.0.113.0/24"), False, 2, 0.0
        )
    )
    apply(ops.create_network(topo, Network(id="n", tenant="a"), 3, 0.0))
    apply(
        ops.create_subnet(topo, Subnet(id="s", tenant="a", network_id="n", cidr="10.0.0.0/24"), False, 4, 0.0)
    )
    keys = set(topo.datapath_keys.allocated)
    apply(ops.create_router(topo, Router(id="r", tenant="a"), ops.GatewayRequest("ext"), rev + 1, 0.0))
    key = topo.routers["r"].key
    assert key not in keys and key in topo.datapath_keys.allocated
    assert ops.gateway_port(topo, "r") is not None and not topo.routers_of("ext")  # a gateway is no interface
    apply(ops.add_router_interface(topo, topo.routers["r"], "s", "", "rp", rev + 1, 0.0))
    assert topo.routers_of("n") == {"r"} and [a for _p, _s, a in ops.router_interfaces(topo, "r")] == [
        "10.0.0.1"
    ]
    apply(ops.create_port(topo, Port(id="vm", tenant="a", network_id="n", mac=""), [], rev + 1, 0.0))
    apply(
        ops.create_floating_ip(
            topo,
            FloatingIp(id="f", tenant="a", network_id="ext", address="", port_id="vm"),
            "fp",
            rev + 1,
            0.0,
        )
    )
    assert topo.floatingips["f"].router_id == "r" and topo.ports["fp"].fixed_ips == (
        ("ext-s", "203.0.113.3"),
    )
    # deleting the VM's port dissociates the floating IP in the same write
    changes = apply(ops.delete_port(topo, topo.ports["vm"], rev + 1, 0.0))
    assert [c[0] for c in changes] == ["floating_ip", "port"] and topo.floatingips["f"].port_id == ""
    apply(ops.delete_floating_ip(topo, topo.floatingips["f"]))
    assert "fp" not in topo.ports and 0xCB007103 not in topo.ipam["ext-s"].allocated
    apply(ops.delete_router(topo, topo.routers["r"], True, rev + 1, 0.0))
    assert key not in topo.datapath_keys.allocated and not topo.routers_of("n") and not topo.routed
    assert not topo.ports and ("router", "r") not in topo.graph


def test_routed_networks_are_the_routed_graphs_components() -> None:
    """Networks joined through routers' interfaces (a gateway port joins nothing); two interfaces of a router
    on one network are one edge that stays until the second goes."""
    from topology.records import Router

    topo = Topology()
    rev = 0

    def apply(changes):  # type: ignore[no-untyped-def]
        nonlocal rev
        rev += 1
        topo.apply(changes, rev)

    apply(
        ops.create_network(
            topo,
            Network(id="ext", tenant="op", segment_type="flat", physical_network="e", external=True),
            rev + 1,
            0.0,
        )
    )
    apply(
        ops.create_subnet(
            topo,
            Subnet(id="ext-s", tenant="op", network_id="ext", cidr="203.0.113.0/24"),
            False,
            rev + 1,
            0.0,
        )
    )
    for i, n in enumerate("abcd"):
        apply(ops.create_network(topo, Network(id=n, tenant="t"), rev + 1, 0.0))
        for k in (0, 1, 2):
            apply(
                ops.create_subnet(
                    topo,
                    Subnet(id=f"{n}{k}", tenant="t", network_id=n, cidr=f"10.{i}.{k}.0/24"),
                    False,
                    rev + 1,
                    0.0,
                )
            )
    for r in ("r1", "r2"):
        apply(ops.create_router(topo, Router(id=r, tenant="t"), ops.GatewayRequest("ext"), rev + 1, 0.0))
    for r, sub in (("r1", "a0"), ("r1", "b0"), ("r1", "b1"), ("r2", "b2"), ("r2", "c0")):
        apply(ops.add_router_interface(topo, topo.routers[r], sub, "", f"{r}-{sub}", rev + 1, 0.0))
    assert topo.routed_networks("a") == {"a", "b", "c"} == topo.routed_networks("c")
    assert topo.routed_networks("d") == {"d"} and topo.routed_networks("ext") == {"ext"}
    assert topo.routers_of("b") == {"r1", "r2"}
    assert topo.routed.edges[("network", "b"), ("router", "r1")] == {"interfaces": 2}
    apply(ops.remove_router_interface(topo, topo.routers["r1"], "b1", "", rev + 1, 0.0))
    assert topo.routed_networks("a") == {"a", "b", "c"}  # r1 still has b0
    apply(ops.remove_router_interface(topo, topo.routers["r1"], "b0", "", rev + 1, 0.0))
    assert topo.routed_networks("a") == {"a"} and topo.routed_networks("b") == {"b", "c"}
    assert ("router", "r1") in topo.routed and topo.routers_of("a") == {"r1"}
