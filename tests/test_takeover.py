"""A new master's engine talks to the switch only once its model has the store's revision (README "Several
controllers"): a model behind the old master's would rewrite the flows it should adopt."""

from __future__ import annotations

import threading
import time
from pathlib import Path
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
