"""The store on etcd: several States (as several controllers would) on real etcd servers started here."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lab.etcd import EtcdCluster, ServerTls
from topology import errors, ops
from topology.errors import ApiError
from topology.etcd_store import EtcdConfig, EtcdStore
from topology.model import Change, Topology
from topology.records import Network, Port, Subnet
from topology.state import WriteFn
from topology.state_etcd import EtcdState
from topology.store import HistoryCompacted


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def open_state(endpoints: list[str], prefix: str) -> EtcdState:
    return EtcdState(EtcdStore(EtcdConfig(tuple(endpoints), prefix=prefix, timeout_s=2.0)))


@pytest.fixture
def pair(etcd: EtcdCluster) -> Iterator[tuple[EtcdState, EtcdState]]:
    """Two controllers' States on one etcd, under a prefix of this test's own."""
    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    a = open_state(etcd.endpoints, prefix)
    b = open_state(etcd.endpoints, prefix)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def seed(state: EtcdState) -> None:
    state.write(lambda t, r, n: ops.create_network(t, Network(id="net", tenant="t"), r, n))
    sub = Subnet(id="sub", tenant="t", network_id="net", cidr="10.0.0.0/24")
    state.write(lambda t, r, n: ops.create_subnet(t, sub, False, r, n))


def create_port(state: EtcdState, pid: str) -> tuple[int, list[Change]]:
    return state.write(
        lambda t, r, n: ops.create_port(t, Port(id=pid, tenant="t", network_id="net", mac=""), [], r, n)
    )


def model(state: EtcdState) -> dict[tuple[str, str], object]:
    with state.lock:
        return {(r.KIND, r.id): r for r in state.topology.all_records()}


def test_a_write_on_one_controller_is_in_the_others_model_at_the_same_revision(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    a, b = pair
    seed(a)
    rev, changes = create_port(a, "p1")
    assert b.sync() == rev == a.revision
    assert model(a) == model(b)
    port = b.topology.ports["p1"]
    assert port.revision == rev  # the etag: the key's mod revision, the same on every controller
    assert changes[0][3] == port


def test_concurrent_port_creates_on_both_never_share_an_ip_or_mac(pair: tuple[EtcdState, EtcdState]) -> None:
    a, b = pair
    seed(a)
    b.sync()
    errors: list[BaseException] = []

    def creator(state: EtcdState, name: str) -> None:
        for i in range(15):
            try:
                create_port(state, f"{name}-{i}")
            except BaseException as err:  # noqa: BLE001 (reported below)
                errors.append(err)

    threads = [threading.Thread(target=creator, args=(s, f"{s is a}{k}")) for s in (a, b) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    head = a.sync()
    assert b.sync() == head
    assert model(a) == model(b)
    ports = [p for p in a.topology.ports.values()]
    assert len(ports) == 90
    assert len({p.mac for p in ports}) == 90
    assert len({ip for p in ports for ip in p.fixed_ips}) == 90
    assert a.conflicts + b.conflicts > 0  # they did race


def test_read_modify_write_race_gives_one_aborted(pair: tuple[EtcdState, EtcdState]) -> None:
    a, b = pair
    seed(a)
    create_port(a, "p1")
    b.sync()
    etag = a.topology.ports["p1"].revision
    assert b.topology.ports["p1"].revision == etag

    def rename(name: str):  # type: ignore[no-untyped-def]
        def fn(t: Topology, r: int, n: float) -> list[Change]:
            old = t.ports["p1"]
            if old.revision != etag:
                raise ApiError("ABORTED", "ETAG_MISMATCH", "changed since read")
            return ops.update_port(t, old, {"display_name": name}, r, n)

        return fn

    gate = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def go(state: EtcdState, name: str) -> None:
        gate.wait()
        try:
            outcome[name] = state.write(rename(name))[0]
        except ApiError as err:
            outcome[name] = err.code

    threads = [threading.Thread(target=go, args=(s, n)) for s, n in ((a, "from-a"), (b, "from-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(str(v) for v in outcome.values()).count("ABORTED") == 1, outcome
    winner = next(n for n, v in outcome.items() if v != "ABORTED")
    a.sync()
    b.sync()
    assert a.topology.ports["p1"].display_name == b.topology.ports["p1"].display_name == winner


def test_change_stream_is_the_same_on_both_and_resumes_across(pair: tuple[EtcdState, EtcdState]) -> None:
    a, b = pair
    seed(a)
    start = a.revision
    for i in range(5):
        create_port(a if i % 2 else b, f"p{i}")
    a.write(lambda t, r, n: ops.delete_port(t, t.ports["p3"], r, n))
    head = a.sync()
    assert b.sync() == head
    rows_a = a.store.changes_since(start, head)
    rows_b = b.store.changes_since(start, head)
    assert rows_a == rows_b
    assert [op for _r, _k, op, _rec in rows_a] == ["CREATED"] * 5 + ["DELETED"]
    # the same rows from etcd's history (what a controller that did not see them live reads)
    assert a.etcd.changes_since(start, head) == rows_a
    mid = rows_a[2][0]  # a revision read on A, resumed from on B
    assert b.store.changes_since(mid, head) == [r for r in rows_a if r[0] > mid]
    assert b.etcd.changes_since(mid, head) == [r for r in rows_a if r[0] > mid]


def test_compacted_history_is_told(etcd: EtcdCluster, pair: tuple[EtcdState, EtcdState]) -> None:
    a, _b = pair
    seed(a)
    old = a.revision
    create_port(a, "p1")
    create_port(a, "p2")
    from aetcd.rpc import rpc_pb2 as rpc
    from aetcd.rpc import rpc_pb2_grpc as rpc_grpc

    with grpc.insecure_channel(etcd.endpoints[0].split("//")[1]) as ch:
        rpc_grpc.KVStub(ch).Compact(rpc.CompactionRequest(revision=a.revision, physical=True))
    with pytest.raises(HistoryCompacted):
        a.etcd.changes_since(old, a.revision)


def test_a_third_controller_starts_from_what_etcd_holds(
    etcd: EtcdCluster, pair: tuple[EtcdState, EtcdState]
) -> None:
    a, _b = pair
    seed(a)
    create_port(a, "p1")
    c = open_state(etcd.endpoints, a.etcd.config.prefix)
    try:
        assert c.revision == a.revision
        assert model(c) == model(a)
    finally:
        c.close()


def test_etcd_down_writes_unavailable_reads_answer_then_writes_go_on(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path) as cluster:
        a = open_state(cluster.endpoints, "/sdn/v1/")
        b = open_state(cluster.endpoints, "/sdn/v1/")
        try:
            seed(a)
            create_port(a, "p1")
            b.sync()
            cluster.members[0].kill()
            with pytest.raises(ApiError) as info:
                create_port(a, "p2")
            assert info.value.code == "UNAVAILABLE" and info.value.reason == "STORE_UNAVAILABLE"
            assert cluster.endpoints[0].split("//")[1] in info.value.message  # which endpoint failed
            assert "p1" in a.topology.ports and "p1" in b.topology.ports  # reads answer from the model
            cluster.members[0].start()
            cluster.members[0].wait_healthy()
            rev = _retry(lambda: create_port(a, "p2"))[0]
            assert b.catch_up(rev, timeout=10)  # B's watch came back too
            assert model(a) == model(b)
        finally:
            a.close()
            b.close()


def test_three_member_cluster_losing_one_keeps_accepting_writes(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path, members=3) as cluster:
        a = open_state(cluster.endpoints, "/sdn/v1/")
        b = open_state(cluster.endpoints[::-1], "/sdn/v1/")
        try:
            seed(a)
            cluster.members[0].kill()  # the member A talks to
            revs = [_retry(lambda i=i: create_port(a, f"p{i}"))[0] for i in range(3)]
            revs += [_retry(lambda i=i: create_port(b, f"q{i}"))[0] for i in range(3)]
            assert revs == sorted(revs)
            assert a.catch_up(max(revs), 10) and b.catch_up(max(revs), 10)
            assert model(a) == model(b)
        finally:
            a.close()
            b.close()


def test_three_member_cluster_losing_its_quorum_refuses_writes_at_once_then_takes_them_again(
    tmp_path: Path,
) -> None:
    with EtcdCluster(tmp_path, members=3) as cluster:
        a = open_state(cluster.endpoints, "/sdn/v1/")
        try:
            seed(a)
            create_port(a, "p1")
            cluster.members[0].kill()
            cluster.members[2].kill()
            deadline = time.monotonic() + 10
            while cluster.members[1].status().leader:  # the survivor notices it has no leader
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for i in range(3):  # refused at once, not after the request's timeout (5 s, 3 tries)
                t = time.monotonic()
                with pytest.raises(ApiError) as info:
                    create_port(a, f"refused-{i}")
                assert time.monotonic() - t < 1.0
                err = info.value
                assert err.code == "UNAVAILABLE" and err.reason == "STORE_UNAVAILABLE"
                assert "no leader" in err.message and "was not applied" in err.message, err.message
            assert "p1" in a.topology.ports  # reads answer from the model
            cluster.members[0].start()
            cluster.members[0].wait_healthy()
            rev = _retry(lambda: create_port(a, "p2"))[0]
            assert a.catch_up(rev, timeout=10)
            assert "p2" in a.topology.ports and not {"refused-0", "refused-1", "refused-2"} & set(
                a.topology.ports
            )
        finally:
            a.close()


def _retry(fn, seconds: float = 15.0):  # type: ignore[no-untyped-def]
    """`fn` until it stops answering UNAVAILABLE (an etcd member coming back, a leader election)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except ApiError as err:
            if err.code != "UNAVAILABLE" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_records_round_trip_with_their_etag(pair: tuple[EtcdState, EtcdState]) -> None:
    a, b = pair
    seed(a)
    _rev, changes = create_port(a, "p1")
    b.sync()
    assert dataclasses.asdict(b.topology.ports["p1"]) == dataclasses.asdict(a.topology.ports["p1"])


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    from controller.pki import Pki

    authority = Pki(tmp_path / "pki")
    authority.init()
    server = authority.ensure_controller(["127.0.0.1"])  # server and client usages, SAN 127.0.0.1
    client = authority.issue_client("controller-a")
    tls = ServerTls(server.cert, server.key, server.ca)
    with EtcdCluster(tmp_path / "etcd", tls=tls) as cluster:
        assert cluster.endpoints[0].startswith("https://")
        cfg = EtcdConfig(
            tuple(cluster.endpoints),
            ca_file=str(client.ca),
            cert_file=str(client.cert),
            key_file=str(client.key),
        )
        state = EtcdState(EtcdStore(cfg))
        try:
            seed(state)
            rev, _ = create_port(state, "p1")
            assert state.sync() == rev
        finally:
            state.close()
        # without a client certificate etcd refuses the connection
        with pytest.raises(OSError):
            EtcdState(EtcdStore(dataclasses.replace(cfg, cert_file="", key_file="", timeout_s=1.0)))


def test_a_refusal_on_a_lagging_model_is_decided_again_at_etcds_head(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """Create through A, at once update through B: B's model may not have it yet, but B's answer is not
    NOT_FOUND: a refused write is decided once more after B caught up with etcd."""
    a, b = pair
    seed(a)

    def rename(pid: str) -> WriteFn:
        def fn(t: Topology, r: int, n: float) -> list[Change]:
            if pid not in t.ports:  # as the API's lookup answers
                raise errors.not_found("port", pid)
            return ops.update_port(t, t.ports[pid], {"display_name": "b"}, r, n)

        return fn

    for i in range(20):
        create_port(a, f"p{i}")
        b.write(rename(f"p{i}"))
    b.sync()
    assert all(p.display_name == "b" for p in b.topology.ports.values())


def test_an_uninstalled_plugins_records_stay_in_etcd_counted_and_out_of_the_model(etcd: EtcdCluster) -> None:
    """Records of a kind no loaded code knows (a plug-in taken out) are kept, counted at load, and left out
    of the model and of the watch, on a controller that starts without the plug-in and on one running."""
    from controller import plugins
    from sdn_qos.ops import create_policy
    from sdn_qos.plugin import PLUGIN
    from sdn_qos.records import QosPolicy

    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    a = open_state(etcd.endpoints, prefix)
    try:
        seed(a)
        plugins.install([PLUGIN])
        try:
            a.write(lambda t, r, n: create_policy(t, QosPolicy(id="gold", tenant="t"), r, n))
        finally:
            plugins.uninstall(PLUGIN)
        b = open_state(etcd.endpoints, prefix)  # starts without the plug-in
        try:
            assert b.unknown_kinds() == {"qos_policy": 1}
            assert "qos_policy" not in {k for k, _ in model(b)}
            plugins.install([PLUGIN])
            try:  # a writes another while b runs without knowing the kind: b's watch passes over it
                a.write(lambda t, r, n: create_policy(t, QosPolicy(id="silver", tenant="t"), r, n))
            finally:
                plugins.uninstall(PLUGIN)
            rev, _ = create_port(a, "after")
            deadline = time.monotonic() + 10
            while b.revision < rev:
                assert time.monotonic() < deadline, (b.revision, rev)
                time.sleep(0.05)
            assert ("port", "after") in model(b) and b.listener_errors == 0
        finally:
            b.close()
    finally:
        a.close()
