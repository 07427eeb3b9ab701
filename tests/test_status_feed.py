"""What a chassis's master publishes for the other controllers (controller/southbound/status_feed.py), on a
real etcd: read back through the watch by another feed, coalesced, gone with the lease; and the
realization rule a non-master applies to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from controller.southbound.status_feed import ChassisReport, StatusFeed
from lab.etcd import EtcdCluster
from topology.etcd_store import EtcdConfig, EtcdStore


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd-status")) as cluster:
        yield cluster


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Master:
    """A controller's side: its snapshot (compiled revision, reports) changed by the test."""

    def __init__(self, etcd: EtcdCluster, prefix: str, name: str) -> None:
        self.store = EtcdStore(EtcdConfig(tuple(etcd.endpoints), prefix=prefix))
        self.lease: int | None = self.store.lease_grant(3)
        self.compiled = 0
        self.reports: dict[str, ChassisReport] = {}
        self.lock = threading.Lock()
        self.feed = StatusFeed(self.store, name, self.snapshot, lambda: self.lease, min_interval_s=0.05)

    def snapshot(self) -> tuple[int, dict[str, ChassisReport]]:
        with self.lock:
            return self.compiled, dict(self.reports)

    def set(self, compiled: int, **reports: ChassisReport) -> None:
        with self.lock:
            self.compiled = compiled
            self.reports = dict(reports)
        self.feed.wake()


def test_reports_reach_the_other_controller_coalesced_and_go_with_the_lease(etcd: EtcdCluster) -> None:
    prefix = "/t-status-1/"
    a = Master(etcd, prefix, "a")
    b = Master(etcd, prefix, "b")
    a.feed.start()
    b.feed.start()
    try:
        rep = ChassisReport("a", connected=True, ovsdb_ready=True, ready=True, realized_revision=5)
        a.set(7, hv1=rep)
        assert _wait(lambda: b.feed.report("hv1") == (rep, 7))
        # 200 changes in a burst: a handful of txns, and the last state wins
        before = a.feed.writes
        for i in range(200):
            a.set(8 + i, hv1=ChassisReport("a", connected=True, ready=True, realized_revision=8 + i))
            time.sleep(0.001)
        last = ChassisReport("a", connected=True, ready=True, realized_revision=207)
        assert _wait(lambda: b.feed.report("hv1") == (last, 207))
        assert a.feed.writes - before < 50, a.feed.writes - before
        # nothing changes: nothing written (the refresh only looks)
        quiet = a.feed.writes
        time.sleep(1.3)
        assert a.feed.writes == quiet
        # a chassis no longer mastered: its key goes
        a.set(208)
        assert _wait(lambda: b.feed.report("hv1") is None)
        # the lease ends (a controller dead): its keys go with it
        a.set(209, hv2=ChassisReport("a", ready=True))
        assert _wait(lambda: b.feed.report("hv2") is not None)
        assert a.lease is not None
        a.store.lease_revoke(a.lease)
        assert _wait(lambda: b.feed.report("hv2") is None and "a" not in b.feed.compiled)
        # a new lease: written again in full
        a.lease = a.store.lease_grant(3)
        a.feed.wake()
        assert _wait(lambda: b.feed.report("hv2") == (ChassisReport("a", ready=True), 209))
    finally:
        for m in (a, b):
            m.feed.stop()
            m.store.close()


def test_a_reader_started_late_reads_what_is_there(etcd: EtcdCluster) -> None:
    prefix = "/t-status-2/"
    a = Master(etcd, prefix, "a")
    a.feed.start()
    a.set(3, hv1=ChassisReport("a", ready=True, realized_revision=3))
    assert _wait(lambda: a.feed.report("hv1") is not None)
    late = Master(etcd, prefix, "late")
    late.feed.start()
    try:
        assert _wait(
            lambda: late.feed.report("hv1") == (ChassisReport("a", ready=True, realized_revision=3), 3)
        )
    finally:
        for m in (a, late):
            m.feed.stop()
            m.store.close()


def test_realized_as_a_non_master_judges_it() -> None:
    rep = ChassisReport("a", connected=True, ready=True, realized_revision=10, pending=(12, 15))
    assert rep.realized(10, compiled=20)  # every change up to 10 confirmed
    assert rep.realized(11, compiled=20)  # 11 did not touch the chassis
    assert not rep.realized(12, compiled=20)  # 12 did, not confirmed yet
    assert not rep.realized(16, compiled=20)
    assert not rep.realized(21, compiled=20)  # the master has not compiled 21: it may touch the chassis
    assert rep.needed(11) == 10 and rep.needed(13) == 12 and rep.needed(9) == 0
    assert not ChassisReport("a", ready=False).realized(1, compiled=5)  # mid-takeover, or no OVSDB facts
    assert ChassisReport("a", ready=True).realized(0, compiled=0)
    raw = rep.to_json()
    assert ChassisReport.from_json(raw) == rep
    assert ChassisReport.from_json(raw[:-1] + b',"newer_field":1}') == rep  # a newer controller's report
