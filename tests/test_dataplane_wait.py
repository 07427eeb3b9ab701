"""Dataplane.wait_realized wakes at once when a switch confirms, even if the confirmation lands between its
look at the engines and its wait (a lost notify would cost the wait's 0.2 s poll)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from controller.dataplane import Dataplane
from topology import ops
from topology.records import Chassis
from topology.state import State


class RacingEngine:
    """Realizes everything the moment its revision is first read, and tells the dataplane then: the notify
    comes after wait_realized has looked (and found it not realized) but before it waits."""

    def __init__(self) -> None:
        self.dp: Dataplane | None = None
        self.seq = 0
        self.confirmed = 0
        self.armed = False

    @property
    def realized_revision(self) -> int:
        got = self.confirmed
        if self.armed and self.dp is not None:
            self.armed = False
            self.confirmed = self.seq
            self.dp.notify_realized()
        return got

    def apply(self, add: Any, remove: Any, revision: int) -> None:
        self.seq = revision

    def replace_desired(self, items: Any, revision: int) -> None:
        self.seq = revision

    def forget(self) -> None: ...


class Agent:
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def update(self, **_kw: Any) -> None: ...


def test_a_confirmation_between_the_look_and_the_wait_is_not_missed(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    state.write(
        lambda t, rev, now: ops.create_chassis(
            t,
            Chassis(id="hv1", datapath_id=1, tunnel_ip="192.0.2.1", ovsdb_address="unix:/run/x.sock"),
            rev,
            now,
        )
    )
    engine: Any = RacingEngine()  # realized_revision is a property here (the Protocol has an attribute)
    dp = Dataplane(
        state, engine_factory=lambda _d, _cb: engine, agent_factory=lambda _c, _cb: Agent(), tick_s=0
    )
    engine.dp = dp
    dp.start()
    try:
        dp._on_runtime("hv1", SimpleNamespace(vifs={}, tunnels={}, patches={}))
        revision = state.revision
        assert dp.planes["hv1"].needed_seq(revision) == engine.seq > 0
        for _ in range(5):
            engine.confirmed, engine.armed = 0, True
            t0 = time.monotonic()
            done, report = dp.wait_realized(revision, 5)
            took = time.monotonic() - t0
            assert done and report[0]["realized"], report
            assert took < 0.1, f"woken after {took:.3f} s: the notify was lost and the 0.2 s poll found it"
    finally:
        dp.stop()
        state.close()
