"""A conntrack zone a port gives up is flushed where it was used: which changes free a zone
(`portkeys.freed`), and the dataplane asking the right chassis's engine to flush it (a real State and
Dataplane; fake switch engines and OVSDB agents). That the engine's flush empties exactly that zone on a
real switch: tests/test_sync.py::test_flush_zones_empties_exactly_those_conntrack_zones_after_the_next_bundle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.dataplane import Dataplane
from tests.test_dataplane_nat import FakeAgent, FakeEngine
from topology import ops, portkeys
from topology.records import OWNER_ROUTER_GATEWAY, Chassis, Network, Port, Router, Subnet
from topology.state import State


def test_which_changes_free_a_zone() -> None:
    vm = Port(
        id="p", tenant="t", network_id="n", mac="02:00:00:00:00:01", key=(3 << 16) | 7, binding_chassis="hv1"
    )
    assert portkeys.freed(None, vm) is None  # created
    assert portkeys.freed(vm, vm) is None  # unchanged
    assert portkeys.freed(vm, replace(vm, display_name="x")) is None
    assert portkeys.freed(vm, None) == ("hv1", 7)  # deleted
    assert portkeys.freed(vm, replace(vm, binding_chassis="hv2")) == ("hv1", 7)  # moved
    assert portkeys.freed(vm, replace(vm, binding_chassis="")) == ("hv1", 7)  # unbound
    assert portkeys.freed(vm, replace(vm, key=(3 << 16) | 9)) == ("hv1", 7)  # re-keyed
    assert portkeys.freed(vm, replace(vm, key=(4 << 16) | 7)) is None  # same zone, other high bits
    unbound = replace(vm, binding_chassis="")
    assert portkeys.freed(unbound, None) is None  # its low bits were no zone
    gw = Port(
        id="g",
        tenant="t",
        network_id="ext",
        mac="02:00:00:00:00:02",
        key=65535,
        device_owner=OWNER_ROUTER_GATEWAY,
    )
    assert portkeys.freed(gw, None) == ("", 65535)  # shared: every chassis
    assert portkeys.freed(gw, replace(gw, display_name="x")) is None


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[State, Dataplane, dict[str, FakeEngine]]]:
    state = State(tmp_path / "topology.sqlite")

    def w(op: Any) -> None:  # one op per write: State applies its changes
        state.write(lambda t, rev, now: op(t, rev, now))

    for i, name in enumerate(("hv1", "hv2"), 1):
        ch = Chassis(id=name, datapath_id=i, tunnel_ip=f"192.0.2.{i}", ovsdb_address="unix:/nonexistent")
        w(lambda t, rev, now, ch=ch: ops.create_chassis(t, ch, rev, now))
    for net, cidr, ext in (("ext", "172.24.4.0/24", True), ("n", "10.0.0.0/24", False)):
        w(
            lambda t, rev, now, n=net, e=ext: ops.create_network(
                t, Network(id=n, tenant="t", external=e), rev, now
            )
        )
        sub = Subnet(id=f"{net}-s", tenant="t", network_id=net, cidr=cidr)
        w(lambda t, rev, now, sub=sub: ops.create_subnet(t, sub, False, rev, now))
    for pid, ch in (("a", "hv1"), ("b", "hv1"), ("c", "hv2")):
        p = Port(id=pid, tenant="t", network_id="n", mac="", binding_chassis=ch)
        w(lambda t, rev, now, p=p: ops.create_port(t, p, [], rev, now))
    w(
        lambda t, rev, now: ops.create_router(
            t, Router(id="r", tenant="t"), ops.GatewayRequest("ext"), rev, now
        )
    )
    engines: dict[str, FakeEngine] = {}
    dp = Dataplane(
        state,
        engine_factory=lambda dpid, _cb: engines.setdefault(f"hv{dpid}", FakeEngine()),
        agent_factory=lambda _ch, _cb: FakeAgent(),
        gateway_chassis=("hv1",),
    )
    dp.start()
    for name in ("hv1", "hv2"):  # their OVSDB facts: the engines are made, the chassis compiled
        dp._on_runtime(name, SimpleNamespace(vifs={}, tunnels={"vxlan": 100}, patches={}))
    try:
        yield state, dp, engines
    finally:
        dp.stop()
        state.close()


def zone(state: State, port_id: str) -> int:
    return portkeys.zone_of(state.topology.ports[port_id].key)


def test_deleting_or_moving_a_port_flushes_its_zone_on_its_old_chassis_only(
    world: tuple[State, Dataplane, dict[str, FakeEngine]],
) -> None:
    state, dp, engines = world
    assert all(engines[c].flushed == [] for c in ("hv1", "hv2"))  # the start frees nothing
    za, zb, zc = zone(state, "a"), zone(state, "b"), zone(state, "c")
    assert za and zb and zc and za != zb
    state.write(lambda t, rev, now: ops.delete_port(t, t.ports["a"], rev, now))
    assert engines["hv1"].flushed == [za] and engines["hv2"].flushed == []
    # b moves to hv2: its zone is flushed on hv1, where it was (it may keep the number on hv2, or get another)
    state.write(lambda t, rev, now: ops.update_port(t, t.ports["b"], {"binding_chassis": "hv2"}, rev, now))
    assert state.topology.ports["b"].binding_chassis == "hv2"
    assert engines["hv1"].flushed == [za, zb] and zone(state, "b") not in engines["hv2"].flushed
    # a name change frees nothing
    state.write(lambda t, rev, now: ops.update_port(t, t.ports["c"], {"display_name": "cc"}, rev, now))
    assert engines["hv1"].flushed == [za, zb] and engines["hv2"].flushed == []


def test_a_gateway_ports_shared_zone_is_flushed_on_every_chassis_when_the_gateway_goes(
    world: tuple[State, Dataplane, dict[str, FakeEngine]],
) -> None:
    state, dp, engines = world
    gw = next(p for p in state.topology.ports.values() if p.device_owner == OWNER_ROUTER_GATEWAY)
    z = portkeys.zone_of(gw.key)
    assert z
    state.write(
        lambda t, rev, now: ops.update_router(t, t.routers["r"], {"external_gateway": None}, rev, now)
    )
    assert engines["hv1"].flushed == [z] and engines["hv2"].flushed == [z]
