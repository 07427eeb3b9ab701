"""Bounded change history: compaction keeps every object and whole revisions, runs beside writers without
losing any, shrinks the files, and a Watch from a compacted revision is told to re-list (real gRPC
channel)."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller import config
from controller.api import northbound
from controller.debug.metrics import Metrics
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ControllerProcess, InProcessServer
from topology import ops
from topology.history import Compactor, HistoryPolicy
from topology.records import Network, Port, Subnet
from topology.state import State, WriteFn
from topology.store import HistoryCompacted, Store


def _sqlite(state: State) -> Store:
    assert state.sqlite is not None
    return state.sqlite


def seed(state: State) -> None:
    state.write(lambda t, r, n: ops.create_network(t, Network(id="n", tenant="t"), r, n))
    state.write(
        lambda t, r, n: ops.create_subnet(
            t, Subnet(id="s", tenant="t", network_id="n", cidr="10.0.0.0/16"), False, r, n
        )
    )


def create_port(pid: str) -> WriteFn:
    return lambda t, r, now: ops.create_port(t, Port(id=pid, tenant="t", network_id="n", mac=""), [], r, now)


def delete_port(pid: str) -> WriteFn:
    return lambda t, r, now: ops.delete_port(t, t.ports[pid], r, now)


def churn(state: State, prefix: str, n: int, keep_every: int = 0) -> None:
    """n port creates and deletes; every `keep_every`-th port stays."""
    for i in range(n):
        state.write(create_port(f"{prefix}{i}"))
        if not keep_every or i % keep_every:
            state.write(delete_port(f"{prefix}{i}"))


def error_info(err: grpc.RpcError) -> tuple[grpc.StatusCode, dict[str, str], str, list[str], str]:
    """(code, ErrorInfo metadata, reason, field violations, message) of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    meta: dict[str, str] = {}
    reason, fields = "", []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            d.Unpack(ei)
            reason, meta = ei.reason, dict(ei.metadata)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            fields += [v.field for v in br.field_violations]
    return err.code(), meta, reason, fields, status.message  # type: ignore[attr-defined]


def test_compaction_by_revisions_keeps_objects_and_whole_revisions(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    seed(state)
    churn(state, "p", 300, keep_every=10)
    objects = sorted(_sqlite(state).iter_objects())
    head = state.revision
    stats = Compactor(_sqlite(state), HistoryPolicy(revisions=50, age_s=0, batch_rows=7)).run_once()
    assert stats.compacted_revision == head - 50 == state.store.compacted_revision
    assert stats.steps > 1 and stats.rows == head - 50  # one change per revision here, in steps of 7 rows
    assert sorted(_sqlite(state).iter_objects()) == objects  # history only: every current object stays
    replay = state.store.changes_since(head - 50, head)
    assert [r for r, *_ in replay] == list(range(head - 49, head + 1))  # no gap after the compacted revision
    with pytest.raises(HistoryCompacted) as info:
        state.store.changes_since(head - 51, head)
    assert info.value.compacted_revision == head - 50
    state.close()
    reopened = State(tmp_path / "topology.sqlite")  # the compacted revision and the objects survive a restart
    assert reopened.store.compacted_revision == head - 50 and reopened.revision == head
    assert sorted(reopened.topology.ports) == sorted(f"p{i}" for i in range(0, 300, 10))
    reopened.close()


def test_compaction_by_age_and_off(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    seed(state)
    churn(state, "old", 20)
    time.sleep(0.05)
    cut = time.time()
    churn(state, "new", 5)
    head = state.revision
    off = Compactor(_sqlite(state), HistoryPolicy(revisions=0, age_s=0))
    assert not off.policy.enabled and off.run_once().rows == 0
    by_age = Compactor(_sqlite(state), HistoryPolicy(revisions=0, age_s=10.0))
    # only the 10 newest writes are younger than 10 s then
    assert by_age.run_once(now=cut + 10.0).compacted_revision == head - 10
    assert by_age.run_once(now=cut + 10.0).rows == 0  # nothing more is due
    state.close()


def test_compactor_beside_writers_loses_nothing(tmp_path: Path) -> None:
    """The background thread compacts in small steps while four writers churn; afterwards the file holds
    every acknowledged object and a gap-free history after the compacted revision."""
    path = tmp_path / "topology.sqlite"
    state = State(path)
    seed(state)
    compactor = Compactor(_sqlite(state), HistoryPolicy(revisions=20, age_s=0, interval_s=0.01, batch_rows=5))
    compactor.start()
    writers = [threading.Thread(target=churn, args=(state, f"w{k}-", 150, 3)) for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    deadline = time.monotonic() + 10
    while state.store.compacted_revision < state.revision - 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    compactor.stop()
    head, compacted = state.revision, state.store.compacted_revision
    assert compacted == head - 20 and compactor.rows_dropped > 0
    expected = sorted(state.topology.ports)
    assert len(expected) == 4 * 50
    assert sorted({r for r, *_ in state.store.changes_since(compacted, head)}) == list(
        range(compacted + 1, head + 1)
    )
    state.close()
    reopened = State(path)
    assert sorted(reopened.topology.ports) == expected and reopened.revision == head
    reopened.close()


def test_files_shrink_after_everything_is_deleted(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    seed(state)
    churn(state, "p", 1500)
    before = state.store.sizes()
    compactor = Compactor(_sqlite(state), HistoryPolicy(revisions=100, age_s=0))
    stats = compactor.run_once()
    assert not stats.wal_truncated  # writes came since the last round (none): the WAL would refill at once
    assert stats.pages_freed > 0 and state.store.sizes()["db"] < before["db"] / 2
    assert compactor.run_once().wal_truncated  # idle since: the WAL file goes
    assert state.store.sizes()["wal"] == 0 < before["wal"]
    state.close()


def test_watch_from_a_compacted_revision_is_out_of_range_and_says_re_list(server: InProcessServer) -> None:
    api, state = server.api, server.state
    seed(state)
    churn(state, "p", 30)
    head = state.revision
    Compactor(_sqlite(state), HistoryPolicy(revisions=10, age_s=0)).run_once()
    compacted = head - 10
    info = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin)
    assert info.compacted_revision == compacted and info.revision == head

    with pytest.raises(grpc.RpcError) as err:
        next(api.stub.Watch(pb.WatchRequest(start_revision=compacted - 1), metadata=api.admin))
    code, meta, reason, fields, message = error_info(err.value)
    assert code == grpc.StatusCode.OUT_OF_RANGE and reason == "REVISION_COMPACTED"
    assert meta == {
        "compacted_revision": str(compacted),
        "start_revision": str(compacted - 1),
        "current_revision": str(head),
    }
    assert fields == ["start_revision"] and "re-list" in message

    # the oldest kept revision still resumes without a gap; a re-list (0) gives the snapshot
    stream = api.stub.Watch(pb.WatchRequest(start_revision=compacted), metadata=api.admin)
    events = [next(stream) for _ in range(11)]
    assert [e.revision for e in events[:10]] == list(range(compacted + 1, head + 1))
    assert events[10].type == pb.WatchEvent.SYNCED and events[10].revision == head
    stream.cancel()
    stream = api.stub.Watch(pb.WatchRequest(start_revision=0), metadata=api.admin)
    snapshot = [next(stream) for _ in range(3)]
    assert [e.type for e in snapshot] == [pb.WatchEvent.EXISTING] * 2 + [pb.WatchEvent.SYNCED]
    assert snapshot[-1].revision == head
    stream.cancel()


def test_watch_replaying_behind_a_compaction_ends_out_of_range_without_a_gap(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream replaying old changes that a compaction overtakes ends with REVISION_COMPACTED, never
    skips."""
    monkeypatch.setattr(northbound, "WATCH_BATCH_REVISIONS", 1)  # one revision per read: the race is wide
    api, state = server.api, server.state
    seed(state)
    churn(state, "p", 1500)
    head = state.revision
    stream = api.stub.Watch(pb.WatchRequest(start_revision=2), metadata=api.admin)
    revisions = [next(stream).revision]
    Compactor(_sqlite(state), HistoryPolicy(revisions=5, age_s=0, batch_rows=10_000)).run_once()
    with pytest.raises(grpc.RpcError) as err:
        for ev in stream:
            revisions.append(ev.revision)
    code, meta, reason, _, _ = error_info(err.value)
    assert code == grpc.StatusCode.OUT_OF_RANGE and reason == "REVISION_COMPACTED"
    assert meta["compacted_revision"] == str(head - 5)
    assert revisions == list(range(3, 3 + len(revisions)))  # what came before the error came without a gap
    assert revisions[-1] < head - 5


def test_config_and_metrics(tmp_path: Path) -> None:
    cfg = config.load(["--history-revisions", "7", "--history-age-s", "0", "--history-interval-s", "0.5"])
    assert cfg.history_policy() == HistoryPolicy(revisions=7, age_s=0.0, interval_s=0.5)
    assert config.Config().history_policy() == HistoryPolicy(revisions=10_000, age_s=3600.0)
    with pytest.raises(SystemExit):
        config.load(["--history-revisions", "-1"])

    state = State(tmp_path / "topology.sqlite")
    seed(state)
    churn(state, "p", 10)
    compactor = Compactor(_sqlite(state), cfg.history_policy())
    compactor.run_once()
    text = Metrics(state, compactor=compactor).exposition().decode()
    assert f"sdn_store_compacted_revision {float(state.revision - 7)}" in text
    assert "sdn_store_compacted_changes_total 15.0" in text  # 22 revisions, one change each, 7 kept
    db = next(line for line in text.splitlines() if line.startswith('sdn_store_size_bytes{file="db"}'))
    assert float(db.split()[-1]) > 0
    state.close()


def test_controller_compacts_in_the_background_with_its_flags(tmp_path: Path) -> None:
    """The real process: --history-revisions and --history-interval-s reach the compactor; the compacted
    revision survives kill -9; metrics show it."""
    ctl = ControllerProcess(tmp_path / "data", ["--history-revisions", "3", "--history-interval-s", "0.1"])
    try:
        ctl.start()
        channel = grpc.insecure_channel(ctl.endpoint)
        stub = pb_grpc.TopologyServiceStub(channel)
        md = (("authorization", f"Bearer {ctl.admin_token()}"),)
        for i in range(8):
            stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id=f"n{i}"), metadata=md)
        deadline = time.monotonic() + 10
        while stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).compacted_revision < 5:
            assert time.monotonic() < deadline, "the background compactor did not run"
            time.sleep(0.05)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/metrics", timeout=10).read()
        assert b"sdn_store_compacted_revision 5.0" in metrics
        channel.close()
        ctl.kill(signal.SIGKILL)
        ctl.start()
        channel = grpc.insecure_channel(ctl.endpoint)
        stub = pb_grpc.TopologyServiceStub(channel)
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md)
        assert (info.revision, info.compacted_revision) == (8, 5)
        assert len(stub.ListNetworks(pb.ListNetworksRequest(), metadata=md).networks) == 8
        with pytest.raises(grpc.RpcError) as err:
            next(stub.Watch(pb.WatchRequest(start_revision=4), metadata=md))
        assert error_info(err.value)[:3] == (
            grpc.StatusCode.OUT_OF_RANGE,
            {"compacted_revision": "5", "start_revision": "4", "current_revision": "8"},
            "REVISION_COMPACTED",
        )
        assert next(stub.Watch(pb.WatchRequest(start_revision=5), metadata=md)).network.name == "networks/n5"
        channel.close()
    finally:
        ctl.stop()


def test_a_store_from_before_compaction_opens_and_compacts(tmp_path: Path) -> None:
    """A file without `changes.ts` or a compacted revision: the column is added, the revision is derived from
    the first change kept, and its undated changes count as older than any dated one."""
    path = tmp_path / "topology.sqlite"
    state = State(path)
    seed(state)
    churn(state, "p", 10, keep_every=2)
    state.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE changes DROP COLUMN ts")
    db.execute("DELETE FROM changes WHERE revision <= 3")  # as the old compact() could have left it
    db.execute("DELETE FROM meta WHERE key='compacted_revision'")
    db.commit()
    db.close()
    state = State(path)
    assert state.store.compacted_revision == 3 and len(state.topology.ports) == 5
    with pytest.raises(HistoryCompacted):
        state.store.changes_since(2, state.revision)  # refused, not a silent gap
    churn(state, "q", 2)
    head = state.revision
    stats = Compactor(_sqlite(state), HistoryPolicy(revisions=0, age_s=60.0)).run_once(now=time.time())
    assert stats.compacted_revision == head - 4  # the undated ones went, the four new ones stay
    state.close()
    reopened = State(path)
    assert len(reopened.topology.ports) == 5 and reopened.revision == head
    reopened.close()
