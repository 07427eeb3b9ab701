"""A new master's engine talks to the switch only once its model has the store's revision (README "Several
controllers"): a model behind the old master's would rewrite the flows it should adopt."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from controller.dataplane import Dataplane
from topology.state import State


class BehindState(State):
    """The store is at `store_rev`; the model reaches it when `arrived` is set (the watch delivering it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.store_rev = 7
        self.arrived = threading.Event()
        self.unreachable = 0  # head() fails this many times first

    def head(self) -> int:
        if self.unreachable:
            self.unreachable -= 1
            raise OSError("etcd did not answer in time")
        return self.store_rev

    def catch_up(self, revision: int, timeout: float = 5.0) -> bool:
        return self.arrived.wait(min(timeout, 0.05)) and revision <= self.store_rev


def _dataplane(tmp: Path) -> tuple[Dataplane, BehindState]:
    state = BehindState(tmp / "topology.sqlite")
    dp = Dataplane(
        state,
        engine_factory=lambda _dpid, _cb: None,  # type: ignore[arg-type,return-value]
        agent_factory=lambda _ch, _cb: None,  # type: ignore[arg-type,return-value]
        tick_s=0,
    )
    return dp, state


def _wait(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_engine_starts_only_once_the_model_has_the_stores_revision(tmp_path: Path) -> None:
    dp, state = _dataplane(tmp_path)
    state.unreachable = 2
    activated: list[str] = []
    dp.owns = lambda _ch: True
    dp.chassis_role("hv1", True, activate=lambda: activated.append("hv1") or True)
    time.sleep(0.6)  # the store unreachable twice, then the model behind it: not yet
    assert activated == [] and state.unreachable == 0
    state.arrived.set()
    assert _wait(lambda: activated == ["hv1"])


def test_no_engine_when_stepped_down_before_catching_up(tmp_path: Path) -> None:
    dp, state = _dataplane(tmp_path)
    master = {"hv1": True}
    activated: list[str] = []
    dp.owns = lambda ch: master.get(ch, False)
    dp.chassis_role("hv1", True, activate=lambda: activated.append("hv1") or True)
    time.sleep(0.2)
    master["hv1"] = False
    state.arrived.set()
    time.sleep(0.3)
    assert activated == []
    assert not [t for t in threading.enumerate() if t.name == "takeover-hv1"]


class RetryingState(State):
    """Every write's fn runs once more, its first answer thrown away: what etcd's compare does when another
    controller wrote first (topology/state_etcd.py decides the write again on the newer model)."""

    def write(self, fn: Any) -> Any:
        with self.lock:
            fn(self.topology, self.topology.revision + 1, 0.0)
        return super().write(fn)


def test_a_port_status_decided_twice_is_still_written(tmp_path: Path) -> None:
    from tests.test_dataplane_nat import FakeAgent, FakeEngine
    from topology import ops
    from topology.records import PORT_ACTIVE, Chassis, Network, Port, Subnet

    state = RetryingState(tmp_path / "topology.sqlite")
    engines: dict[int, FakeEngine] = {}

    def engine(dpid: int, _cb: Any) -> FakeEngine:
        engines[dpid] = FakeEngine()
        return engines[dpid]

    for fn in (
        lambda t, rev, now: ops.create_chassis(
            t, Chassis(id="hv1", datapath_id=1, tunnel_ip="192.0.2.1", ovsdb_address="unix:/x"), rev, now
        ),
        lambda t, rev, now: ops.create_network(t, Network(id="n", tenant="t"), rev, now),
        lambda t, rev, now: ops.create_subnet(
            t, Subnet(id="s", tenant="t", network_id="n", cidr="10.0.0.0/24"), False, rev, now
        ),
        lambda t, rev, now: ops.create_port(
            t, Port(id="p", tenant="t", network_id="n", mac=""), [], rev, now
        ),
    ):
        state.write(fn)
    dp = Dataplane(state, engine_factory=engine, agent_factory=lambda _ch, _cb: FakeAgent(), tick_s=0)  # type: ignore[arg-type]
    dp.start()
    try:
        dp._on_runtime("hv1", SimpleNamespace(vifs={"p": 5}, tunnels={"vxlan": 900}, patches={}))
        dp.settle()
        assert state.topology.ports["p"].binding_chassis == "hv1"
        engines[1].realized_revision = 10**6  # the switch confirmed everything
        dp._on_realized(1, 10**6)
        dp.settle()
        assert state.topology.ports["p"].status == PORT_ACTIVE
    finally:
        dp.stop()
        state.close()


def test_after_first_contact_only_plugged_and_active_ports_wait_for_a_status(tmp_path: Path) -> None:
    """A chassis's whole desired state handed over (first contact): the ports whose status may change are
    the plugged ones and those not DOWN, not every port bound there (at 100k ports ~25k per chassis,
    walked under the model lock after every resync); the plugged port becomes ACTIVE, the ACTIVE one no
    longer plugged DOWN, the bound unplugged DOWN ones stay as they are."""
    from tests.test_dataplane_nat import FakeAgent, FakeEngine
    from topology import ops
    from topology.records import PORT_ACTIVE, PORT_DOWN, Chassis, Network, Port, Subnet

    state = State(tmp_path / "topology.sqlite")
    engines: dict[int, FakeEngine] = {}

    def engine(dpid: int, _cb: Any) -> FakeEngine:
        engines[dpid] = FakeEngine()
        return engines[dpid]

    def port(pid: str) -> Any:
        return lambda t, rev, now: ops.create_port(
            t,
            Port(id=pid, tenant="t", network_id="n", mac="", requested_chassis="hv1", binding_chassis="hv1"),
            [],
            rev,
            now,
        )

    for fn in (
        lambda t, rev, now: ops.create_chassis(
            t, Chassis(id="hv1", datapath_id=1, tunnel_ip="192.0.2.1", ovsdb_address="unix:/x"), rev, now
        ),
        lambda t, rev, now: ops.create_network(t, Network(id="n", tenant="t"), rev, now),
        lambda t, rev, now: ops.create_subnet(
            t, Subnet(id="s", tenant="t", network_id="n", cidr="10.0.0.0/24"), False, rev, now
        ),
        *(port(f"idle{i}") for i in range(20)),
        port("plugged"),
        port("was-active"),
        lambda t, rev, now: ops.set_port_status(t.ports["was-active"], PORT_ACTIVE, rev, now),
    ):
        state.write(fn)
    assert {p.binding_chassis for p in state.topology.ports.values()} == {"hv1"}
    dp = Dataplane(state, engine_factory=engine, agent_factory=lambda _ch, _cb: FakeAgent(), tick_s=0)  # type: ignore[arg-type]
    dp.start()
    try:
        with state.lock:  # the worker may not run the status update before we look
            dp._on_runtime("hv1", SimpleNamespace(vifs={"plugged": 5}, tunnels={"vxlan": 900}, patches={}))
            assert dp.planes["hv1"].pending_status == {"plugged", "was-active"}
        dp.settle()
        engines[1].realized_revision = 10**6  # the switch confirmed everything
        dp._on_realized(1, 10**6)
        dp.settle()
        ports = state.topology.ports
        assert ports["plugged"].status == PORT_ACTIVE
        assert ports["was-active"].status == PORT_DOWN
        assert {ports[f"idle{i}"].status for i in range(20)} == {PORT_DOWN}
        assert dp.planes["hv1"].pending_status == set()
        from apps.compiler import Delta

        # a change of every port's flows (a security group's remote-group rule): only the plugged one waits
        units = {("port", pid) for pid in ports}
        with state.lock:
            dp._push("hv1", Delta(add={object()}, units=units), state.revision)  # type: ignore[arg-type]
            assert dp.planes["hv1"].pending_status == {"plugged"}
    finally:
        dp.stop()
        state.close()
