"""The periodic drift check: one chassis per tick, and a switch dumped only when its fingerprint moved since
its last clean check (or that check is FULL_EVERY rounds old); drift found is still repaired. The switch is a
fake engine here (the fingerprint against a real ovs-vswitchd: tests/test_sync.py; drift found and repaired
on real switches: tests/test_e2e_debug.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from apps import ids
from controller.debug.drift import FULL_EVERY, SKIP_MIN_FLOWS, DriftMonitor
from controller.southbound.sync import Diff
from flows import pipeline as P
from flows.actions import Goto
from flows.flow import Flow
from topology.state import State


class FakeEngine:
    def __init__(self) -> None:
        self.connected = True
        self.revision = self.realized_revision = 3
        self.fingerprint: tuple[int, ...] = (0, 0, 10_000, 1, 1, 3)
        self.diff = Diff(frozenset(), frozenset())
        self.verifies = 0
        self.resyncs = 0

    def activity(self, timeout: float = 0) -> tuple[int, ...]:
        return self.fingerprint

    def verify(self, timeout: float = 0) -> Diff:
        self.verifies += 1
        return self.diff

    def request_resync(self) -> None:
        self.resyncs += 1
        self.diff = Diff(frozenset(), frozenset())


@pytest.fixture
def mon(tmp_path: Path) -> Iterator[tuple[DriftMonitor, dict[str, FakeEngine]]]:
    state = State(tmp_path / "topology.sqlite")
    engines = {c: FakeEngine() for c in ("hv1", "hv2", "hv3")}
    planes = {c: SimpleNamespace(chassis_id=c, engine=e, drift_repairs=0) for c, e in engines.items()}
    try:
        yield DriftMonitor(SimpleNamespace(planes=planes, state=state), 0.0), engines
    finally:
        state.close()


def test_unmoved_switches_are_skipped_until_full_every(
    mon: tuple[DriftMonitor, dict[str, FakeEngine]],
) -> None:
    m, engines = mon
    eng = engines["hv1"]
    assert m.periodic_check("hv1") is not None and eng.verifies == 1  # first: always dumped
    for _ in range(FULL_EVERY - 1):
        assert m.periodic_check("hv1") is None  # nothing moved
    assert eng.verifies == 1
    assert m.periodic_check("hv1") is not None and eng.verifies == 2  # FULL_EVERY rounds: dumped again
    assert m.periodic_check("hv1") is None
    # the flow count moved (a flow added or deleted behind our back), the packet counters alone do not count
    eng.fingerprint = (99, 9900, 10_000, 1, 1, 3)
    assert m.periodic_check("hv1") is None
    eng.fingerprint = (99, 9900, 9_999, 1, 1, 3)
    assert m.periodic_check("hv1") is not None and eng.verifies == 3
    eng.fingerprint = (99, 9900, 9_999, 2, 1, 4)  # a bundle of ours
    assert m.periodic_check("hv1") is not None and eng.verifies == 4
    assert (m.dumped, m.skipped) == (4, FULL_EVERY + 1)


def test_small_switches_are_dumped_every_round(mon: tuple[DriftMonitor, dict[str, FakeEngine]]) -> None:
    """Below SKIP_MIN_FLOWS a dump costs milliseconds: a flow changed in place is found within one interval."""
    m, engines = mon
    eng = engines["hv1"]
    eng.fingerprint = (0, 0, SKIP_MIN_FLOWS - 1, 1, 1, 3)
    for i in range(3):
        assert m.periodic_check("hv1") is not None and eng.verifies == i + 1
    assert m.skipped == 0


def test_drift_found_is_repaired_and_checked_again_next_round(
    mon: tuple[DriftMonitor, dict[str, FakeEngine]],
) -> None:
    m, engines = mon
    eng = engines["hv2"]
    foreign = Flow("classify", P.MATCH, {"in_port": 7}, [Goto("port_sec_in")], ids.cookie(ids.CLASSIFY, "x"))
    eng.fingerprint = (0, 0, 10_001, 1, 1, 3)
    eng.diff = Diff(frozenset(), frozenset([foreign]))
    report = m.periodic_check("hv2")
    assert report is not None and report.repaired and len(report.unexpected) == 1 and eng.resyncs == 1
    assert m.dataplane.planes["hv2"].drift_repairs == 1
    # not clean: the next round dumps although the fingerprint is the same
    report = m.periodic_check("hv2")
    assert report is not None and report.clean and eng.verifies == 2
    assert m.periodic_check("hv2") is None


def test_a_change_in_flight_is_not_a_clean_check(mon: tuple[DriftMonitor, dict[str, FakeEngine]]) -> None:
    m, engines = mon
    eng = engines["hv3"]
    eng.revision = 4  # desired moved, not realized yet
    report = m.periodic_check("hv3")
    assert report is not None and not report.checked and eng.verifies == 0
    eng.realized_revision = 4
    assert m.periodic_check("hv3") is not None and eng.verifies == 1  # dumped: the last one was not clean


def test_the_timer_checks_one_chassis_per_tick_round_robin(
    mon: tuple[DriftMonitor, dict[str, FakeEngine]], monkeypatch: pytest.MonkeyPatch
) -> None:
    m, _ = mon
    seen: list[tuple[str, float]] = []
    done = threading.Event()

    def record(chassis_id: str) -> Any:
        seen.append((chassis_id, time.monotonic()))
        if len(seen) == 6:
            done.set()
        return None

    monkeypatch.setattr(m, "periodic_check", record)
    m.interval_s = 0.3  # three chassis: one every 0.1 s
    m.start()
    try:
        assert done.wait(10)
    finally:
        m.stop()
    assert [c for c, _ in seen[:6]] == ["hv1", "hv2", "hv3", "hv1", "hv2", "hv3"]
    gaps = [b - a for (_, a), (_, b) in zip(seen, seen[1:6], strict=False)]
    assert min(gaps) >= 0.09, gaps  # spread over the interval, not all at once
