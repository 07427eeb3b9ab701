"""The store on etcd: several States (as several controllers would) on real etcd servers started here."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ------------------------------------------------------------------------------------------ group commit


class Gate:
    """Holds one controller's write rounds: a write whose validation waits for `release` (the leader's
    round is stuck in it, under the model lock), so the writes started meanwhile all queue, and the next
    round takes them as one batch."""

    def __init__(self, state: EtcdState) -> None:
        self.state = state
        self.go = threading.Event()
        self.inside = threading.Event()

        def fn(t: Topology, r: int, n: float) -> list[Change]:
            self.inside.set()
            assert self.go.wait(10)
            return []

        self.thread = threading.Thread(target=state.write, args=(fn,))
        self.thread.start()
        assert self.inside.wait(10)

    def queue(self, fns: list[WriteFn]) -> tuple[list[threading.Thread], dict[int, object]]:
        """Start a writer per fn; wait until all are queued behind the gate. Results by index: (revision,
        changes) or the exception."""
        out: dict[int, object] = {}

        def run(i: int, fn: WriteFn) -> None:
            try:
                out[i] = self.state.write(fn)
            except Exception as err:  # noqa: BLE001 (asserted by the caller)
                out[i] = err

        threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(self.state._writes) < len(fns):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        return threads, out

    def release(self, threads: list[threading.Thread]) -> None:
        self.go.set()
        self.thread.join(10)
        for t in threads:
            t.join(20)
            assert not t.is_alive()


def port_fn(pid: str, mac: str = "") -> WriteFn:
    def fn(t: Topology, r: int, n: float) -> list[Change]:
        if pid in t.ports:  # as the API checks
            raise errors.already_exists("port", pid)
        return ops.create_port(t, Port(id=pid, tenant="t", network_id="net", mac=mac), [], r, n)

    return fn


def test_concurrent_writes_on_one_controller_commit_as_one_txn_at_one_revision(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """Writes queued together are one txn: one etcd revision they share, their changes in the order they
    were validated, the same in the committing controller's change log, the other's (from its watch) and
    etcd's history; a Watch resuming from the revision before gets all of them, from it none."""
    a, b = pair
    seed(a)
    b.sync()
    start = a.revision
    txns = a.txns
    gate = Gate(a)
    threads, out = gate.queue([port_fn(f"p{i}") for i in range(6)])
    gate.release(threads)
    assert all(isinstance(v, tuple) for v in out.values()), out
    revisions = {v[0] for v in out.values()}  # type: ignore[index]
    assert len(revisions) == 1 and a.txns == txns + 1  # one txn, one revision
    (rev,) = revisions
    for v in out.values():
        (_kind, pid, _old, new) = v[1][0]  # type: ignore[index]
        assert new.revision == rev == a.topology.ports[pid].revision  # the etag: the batch's revision
    assert b.sync() == rev == a.revision
    assert model(a) == model(b)
    rows = a.store.changes_since(start, rev)
    assert [r[0] for r in rows] == [rev] * 6
    assert sorted(r[3].id for r in rows) == [f"p{i}" for i in range(6)]
    assert b.store.changes_since(start, rev) == rows == a.etcd.changes_since(start, rev)
    assert a.store.changes_since(rev, rev) == [] == b.etcd.changes_since(rev, rev)
    ports = list(a.topology.ports.values())
    assert len({p.mac for p in ports}) == 6 and len({ip for p in ports for ip in p.fixed_ips}) == 6


def test_a_batch_mixing_deletes_and_creates_reads_the_same_on_every_controller(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """The txn's operations are the changes in order (a delete between puts): etcd's watch gives another
    controller the same order, so both apply (and index) the revision alike: the freed MAC is taken again
    in the same revision."""
    a, b = pair
    seed(a)
    create_port(a, "old")
    mac = a.topology.ports["old"].mac
    b.sync()
    start = a.revision
    gate = Gate(a)
    threads, out = gate.queue(
        [
            port_fn("x1"),
            lambda t, r, n: ops.delete_port(t, t.ports["old"], r, n),
            port_fn("new", mac=mac),  # validated after the delete: the MAC is free
        ]
    )
    gate.release(threads)
    assert all(isinstance(v, tuple) for v in out.values()), out
    rev = a.revision
    assert {v[0] for v in out.values()} == {rev}  # type: ignore[index]
    assert b.sync() == rev
    rows = a.store.changes_since(start, rev)
    assert [(r[2], r[3].id) for r in rows] == [("CREATED", "x1"), ("DELETED", "old"), ("CREATED", "new")]
    assert b.store.changes_since(start, rev) == rows == b.etcd.changes_since(start, rev)
    assert model(a) == model(b)
    assert a.topology.macs[mac] == b.topology.macs[mac] == "new"


def test_a_record_changed_twice_goes_in_two_txns_and_refusals_count_the_batch(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """Two updates of one port are never in one txn (one state per revision: the etag names what its
    write returned); a create refused because an earlier write of the batch took its id is refused."""
    a, b = pair
    seed(a)
    create_port(a, "p1")

    def rename(name: str) -> WriteFn:
        return lambda t, r, n: ops.update_port(t, t.ports["p1"], {"display_name": name}, r, n)

    gate = Gate(a)
    threads, out = gate.queue([rename("one"), port_fn("dup"), rename("two"), port_fn("dup")])
    gate.release(threads)
    r1, r2 = out[0], out[2]
    assert isinstance(r1, tuple) and isinstance(r2, tuple)
    assert r1[0] != r2[0]
    assert r1[1][0][3].display_name == "one" and r1[1][0][3].revision == r1[0]
    assert r2[1][0][3].display_name == "two" and r2[1][0][3].revision == r2[0]
    # the threads queue in any order: whichever create came first is in the first txn, the other refused
    created, refused = (out[1], out[3]) if isinstance(out[1], tuple) else (out[3], out[1])
    assert isinstance(created, tuple) and created[0] == min(r1[0], r2[0])
    assert isinstance(refused, ApiError) and refused.code == "ALREADY_EXISTS"
    final = a.topology.ports["p1"]
    assert final.display_name == ("two" if r2[0] > r1[0] else "one") and final.revision == max(r1[0], r2[0])
    b.sync()
    assert model(a) == model(b)


def test_a_conflicting_batch_acknowledges_nothing_and_leaves_the_model_then_retries(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """B writes while A's batch is being validated: A's txn is refused; nothing of it reached A's model or
    its listeners; every write of it is validated again on the model with B's write (the port B took is
    refused), then committed."""
    a, b = pair
    seed(a)
    b.sync()
    seen: list[tuple[int, list[str]]] = []
    a.add_listener(lambda rev, changes: seen.append((rev, [i for _k, i, _o, _n in changes])))
    conflicts = a.conflicts
    b_write = threading.Event()

    def create_with_b_first(t: Topology, r: int, n: float) -> list[Change]:
        if not b_write.is_set():  # the first validation: B commits before A's txn goes
            b_write.set()
            create_port(b, "taken")
        return ops.create_port(t, Port(id="mine", tenant="t", network_id="net", mac=""), [], r, n)

    gate = Gate(a)
    threads, out = gate.queue([port_fn("q1"), create_with_b_first, port_fn("taken"), port_fn("q2")])
    gate.release(threads)
    assert a.conflicts == conflicts + 1
    assert isinstance(out[2], ApiError) and out[2].code == "ALREADY_EXISTS", out
    oks = [out[i] for i in (0, 1, 3)]
    assert all(isinstance(v, tuple) for v in oks), out
    rev_b = b.topology.ports["taken"].revision
    assert {v[0] for v in oks} == {a.revision} and a.revision > rev_b  # type: ignore[index]
    # A's listeners saw B's write, then A's batch once: never the refused txn
    assert seen[0] == (rev_b, ["taken"]) and seen[1][0] == a.revision and len(seen) == 2
    assert sorted(seen[1][1]) == ["mine", "q1", "q2"]
    assert b.sync() == a.revision and model(a) == model(b)


def test_a_failed_batch_answers_each_write_unavailable_and_leaves_the_model(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path) as cluster:
        a = open_state(cluster.endpoints, "/sdn/v1/")
        try:
            seed(a)
            before = model(a)
            rev = a.revision
            seen: list[int] = []
            a.add_listener(lambda r, c: seen.append(r))
            gate = Gate(a)
            threads, out = gate.queue([port_fn(f"p{i}") for i in range(4)])
            cluster.members[0].kill()
            gate.release(threads)
            assert all(isinstance(v, ApiError) and v.code == "UNAVAILABLE" for v in out.values()), out
            assert model(a) == before and a.revision == rev and seen == []
            cluster.members[0].start()
            cluster.members[0].wait_healthy()
            _retry(lambda: create_port(a, "after"))
            assert set(a.topology.ports) == {"after"}
        finally:
            a.close()


def test_a_batch_too_large_for_etcd_is_committed_one_write_per_txn(tmp_path: Path) -> None:
    """etcd refuses a txn of more than --max-txn-ops operations (its default, 128): a batch bounded
    higher than etcd is refused whole, and its writes go again one per txn."""
    with EtcdCluster(tmp_path, max_txn_ops=128) as cluster:
        a = open_state(cluster.endpoints, "/sdn/v1/")
        b = open_state(cluster.endpoints, "/sdn/v1/")
        try:
            seed(a)
            a.max_batch_ops = a.max_batch = 1000
            txns = a.txns
            gate = Gate(a)
            threads, out = gate.queue([port_fn(f"p{i}") for i in range(140)])
            gate.release(threads)
            assert all(isinstance(v, tuple) for v in out.values()), out
            assert a.txns - txns == 140
            assert len({v[0] for v in out.values()}) == 140  # type: ignore[index]
            # bounded within etcd's: batches of 60 writes (one op each), none refused
            a.max_batch_ops, a.max_batch = 60, 1000
            txns = a.txns
            gate = Gate(a)
            threads, out = gate.queue([port_fn(f"q{i}") for i in range(100)])
            gate.release(threads)
            assert all(isinstance(v, tuple) for v in out.values()), [
                v for v in out.values() if not isinstance(v, tuple)
            ]
            assert a.txns - txns == 2
            b.sync()
            assert model(a) == model(b)
            # one write larger than etcd allows: refused as such, naming the bound; nothing changed
            before = model(a)
            with pytest.raises(ApiError) as info:
                a.write(lambda t, r, n: ops.delete_network(t, t.networks["net"], True, r, n))
            assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "STORE_REFUSED"
            assert "--max-txn-ops" in info.value.message
            assert model(a) == before
        finally:
            a.close()
            b.close()


def test_a_write_from_under_the_model_lock_goes_alone_and_catches_up_itself(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """A packet-in handler writes holding the model lock: it must not queue behind a leader waiting for
    that lock, and on a conflict it cannot wait for the watch thread (which needs the lock): it reads
    the other controller's write from etcd itself."""
    a, b = pair
    seed(a)
    b.sync()
    with a.lock:
        create_port(b, "from-b")  # A's watch cannot apply it while the lock is held
        t0 = time.monotonic()
        rev, _ = create_port(a, "from-a")
        assert time.monotonic() - t0 < 2.0  # not the catch-up timeout
        assert "from-b" in a.topology.ports and rev > b.topology.ports["from-b"].revision
    assert b.sync() == rev and model(a) == model(b)


def test_conflicts_retries_aborts_and_batches_are_exported_as_metrics(
    pair: tuple[EtcdState, EtcdState],
) -> None:
    """sdn_store_txn_{conflicts,retried_writes,aborted}_total count what happened on this controller;
    sdn_store_commit_duration_seconds and sdn_store_commit_writes observe each etcd txn."""
    from prometheus_client.parser import text_string_to_metric_families

    from controller.debug.metrics import Metrics

    a, b = pair
    metrics = Metrics(a)
    metrics.start()
    seed(a)
    b.sync()

    def scrape() -> dict[str, float]:
        return {
            s.name: s.value
            for fam in text_string_to_metric_families(metrics.exposition().decode())
            for s in fam.samples
            if s.name.startswith("sdn_store_")
        }

    before = scrape()
    assert before["sdn_store_txn_conflicts_total"] == 0 and before["sdn_store_txn_aborted_total"] == 0
    n = 0

    def beaten(pid: str) -> WriteFn:
        """B commits while A validates: A's txn meets a conflict (once, or on every try)."""

        def fn(t: Topology, r: int, now: float) -> list[Change]:
            nonlocal n
            if n < tries_b:
                n += 1
                create_port(b, f"b{n}")
            return port_fn(pid)(t, r, now)

        return fn

    tries_b = 1
    create_port(a, "warm")
    gate = Gate(a)
    threads, out = gate.queue([beaten("x"), port_fn("y")])
    gate.release(threads)
    assert all(isinstance(v, tuple) for v in out.values()), out
    mid = scrape()
    assert mid["sdn_store_txn_conflicts_total"] == 1 == a.conflicts
    assert mid["sdn_store_txn_retried_writes_total"] == 2 == a.retried  # both writes of the batch
    # the txns that committed: the seed's two, "warm", the batch (two writes): 4 commits, 5 writes
    assert mid["sdn_store_commit_duration_seconds_count"] == 4
    assert mid["sdn_store_commit_writes_sum"] == 5 and mid["sdn_store_commit_writes_count"] == 4
    a.max_attempts, n, tries_b = 3, 0, 100
    with pytest.raises(ApiError) as info:
        a.write(beaten("z"))
    assert info.value.code == "ABORTED" and info.value.reason == "CONCURRENT_WRITES"
    after = scrape()
    assert after["sdn_store_txn_aborted_total"] == 1 == a.aborted
    assert after["sdn_store_txn_conflicts_total"] == 4 and after["sdn_store_txn_retried_writes_total"] == 5
    assert "z" not in a.topology.ports
    metrics.stop()


def test_a_controller_that_keeps_losing_is_let_go_first(
    pair: tuple[EtcdState, EtcdState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's txn loses twice to B: its refused txns leave a hint in etcd (contend/<A>, tries 2); B's next
    commit reads it and B pauses before its following round (a yield); A's commit clears the hint. The
    hint never decides anything: the head compare does."""
    from topology import state_etcd

    a, b = pair
    seed(a)
    b.sync()
    n = 0

    def beaten(t: Topology, r: int, now: float) -> list[Change]:
        nonlocal n
        if n < 2:
            n += 1
            create_port(b, f"b{n}")  # B commits while A validates: A's txn loses
        return port_fn("a1")(t, r, now)

    a.write(beaten)
    assert a.conflicts == 2 and n == 2
    # A committed on its third try: its hint is gone, and B, committing before that, was told
    key = a.etcd.contend_prefix + a.ident.encode()
    assert a.etcd.range_prefix(key)[1] == []
    # B read A's hint at tries 1 at most (A's second refusal came after B's last commit): below
    # YIELD_AFTER, no yield; and a commit now finds no hint
    assert b.yields == 0
    yields = b.yields
    create_port(b, "b3")
    assert b.yields == yields
    # a hint left by a loser (tries 2, fresh): each commit that reads it makes the next round wait
    claim = json.dumps({"tries": state_etcd.YIELD_AFTER, "ts": time.time()}).encode()
    a.etcd.put_leased(a.etcd.contend_prefix + b"someone", claim, 0)
    monkeypatch.setattr(state_etcd, "YIELD_S", 0.5)  # long enough to tell from a round trip
    t0 = time.monotonic()
    create_port(b, "b4")  # acknowledged at once; B's next round waits until YIELD_S after this commit
    assert time.monotonic() - t0 < 0.4
    assert b.yields == yields + 1
    assert a.etcd.delete_if(a.etcd.contend_prefix + b"someone", claim)
    create_port(b, "b5")  # its round started after the pause; the hint is gone
    assert time.monotonic() - t0 >= 0.5
    assert b.yields == yields + 1
    create_port(b, "b6")
    assert b.yields == yields + 1
    # a stale hint (a loser gone for more than YIELD_FRESH_S) or one of a single loss: no yield
    for tries, age in ((state_etcd.YIELD_AFTER, state_etcd.YIELD_FRESH_S + 1), (1, 0)):
        claim = json.dumps({"tries": tries, "ts": time.time() - age}).encode()
        a.etcd.put_leased(a.etcd.contend_prefix + b"someone", claim, 0)
        create_port(b, f"b-{tries}")
        assert b.yields == yields + 1


def test_listeners_of_a_batch_see_each_callers_request(pair: tuple[EtcdState, EtcdState]) -> None:
    """Flow provenance reads the API's request from a context variable while the listeners run: with group
    commit the leader's thread tells them of other callers' writes, so it sets each request, joined."""
    from controller.api.context import REQUEST

    a, _b = pair
    seed(a)
    seen: list[tuple[int, str]] = []
    a.add_listener(lambda rev, changes: seen.append((rev, REQUEST.get())))

    gate = Gate(a)
    out: dict[int, object] = {}

    def run(i: int) -> None:
        REQUEST.set(f"CreatePort r{i}")
        out[i] = a.write(port_fn(f"p{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    while len(a._writes) < 3:
        time.sleep(0.005)
    gate.release(threads)
    rev = a.revision
    assert {v[0] for v in out.values()} == {rev}  # type: ignore[index]
    ((r, why),) = [s for s in seen if s[0] == rev]
    assert sorted(why.split("; ")) == ["CreatePort r0", "CreatePort r1", "CreatePort r2"]
    REQUEST.set("CreatePort alone")
    rev, _ = create_port(a, "p9")
    assert seen[-1] == (rev, "CreatePort alone")


# ------------------------------------------------------------------------------------------ interleavings

NETS = ("n0", "n1")
PIDS = ("p0", "p1", "p2", "p3")


def random_write(kind: str, target: str, net: str) -> WriteFn:
    """A write as the API makes it (existence checked on the model, refused NOT_FOUND / ALREADY_EXISTS)."""

    def fn(t: Topology, r: int, n: float) -> list[Change]:
        if kind == "create_net":
            if net in t.networks:
                raise errors.already_exists("network", net)
            return ops.create_network(t, Network(id=net, tenant="t"), r, n)
        if kind == "delete_net":
            if net not in t.networks:
                raise errors.not_found("network", net)
            return ops.delete_network(t, t.networks[net], False, r, n)
        if kind == "create_port":
            if target in t.ports:
                raise errors.already_exists("port", target)
            if net not in t.networks:
                raise errors.not_found("network", net)
            return ops.create_port(t, Port(id=target, tenant="t", network_id=net, mac=""), [], r, n)
        if target not in t.ports:
            raise errors.not_found("port", target)
        if kind == "rename_port":
            return ops.update_port(t, t.ports[target], {"display_name": f"{net}-{r}"}, r, n)
        return ops.delete_port(t, t.ports[target], r, n)

    return fn


WRITES = st.tuples(
    st.sampled_from(["create_net", "delete_net", "create_port", "rename_port", "delete_port"]),
    st.sampled_from(PIDS),
    st.sampled_from(NETS),
    st.booleans(),  # through A or B
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(writes=st.lists(WRITES, min_size=2, max_size=10))
def test_any_interleaving_of_batches_on_two_controllers_is_one_serial_history(
    etcd: EtcdCluster, writes: list[tuple[str, str, str, bool]]
) -> None:
    """Writes through two controllers at once, each batching what queued behind a held round: whatever
    commits, both models end equal; the change log (on either, and etcd's) replayed from the start gives
    that model; every acknowledged write's records are in the log at the revision it was told, exactly as
    returned; no port is left on a network that is gone; MACs and port keys stay unique."""
    prefix = f"/h-{uuid.uuid4().hex[:8]}/"
    a = open_state(etcd.endpoints, prefix)
    b = open_state(etcd.endpoints, prefix)
    try:
        for kind, pid, net in (
            ("create_net", "", "n0"),
            ("create_net", "", "n1"),
            ("create_port", "p0", "n0"),
            ("create_port", "p1", "n1"),
        ):
            a.write(random_write(kind, pid, net))
        b.sync()
        start = a.revision
        initial = model(a)
        gates = [Gate(a), Gate(b)]
        results: dict[int, object] = {}
        threads = []
        for state, gate in ((a, gates[0]), (b, gates[1])):
            mine = [(i, w) for i, w in enumerate(writes) if w[3] == (state is a)]
            ts, out = gate.queue([random_write(k, pid, net) for _i, (k, pid, net, _on_a) in mine])
            threads.append((gate, ts, out, [i for i, _ in mine]))
        for gate, _ts, _out, _idx in threads:
            gate.go.set()
        for gate, ts, out, idx in threads:
            gate.release(ts)
            results.update({idx[j]: v for j, v in out.items()})
        for v in results.values():
            assert isinstance(v, tuple) or (
                isinstance(v, ApiError) and v.code in ("NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION")
            ), v
        head = a.sync()
        if os.environ.get("SDN_TEST_STATS"):
            print(
                "conflicts",
                a.conflicts + b.conflicts,
                "txns",
                a.txns + b.txns,
                "writes in them",
                a.txn_writes + b.txn_writes,
                "acknowledged",
                sum(isinstance(v, tuple) for v in results.values()),
                "of",
                len(results),
            )
        assert b.sync() == head
        final = model(a)
        assert final == model(b)
        rows = a.store.changes_since(start, head)
        assert rows == b.store.changes_since(start, head) == b.etcd.changes_since(start, head)
        replay = dict(initial)
        for _rev, kind, op, rec in rows:
            if op == "DELETED":
                del replay[(kind, rec.id)]
            else:
                replay[(kind, rec.id)] = rec
        assert replay == final
        logged = {(rev, kind, rec.id): rec for rev, kind, op, rec in rows if op != "DELETED"}
        for v in results.values():
            if isinstance(v, tuple):
                rev, changes = v
                for kind, ident, _old, new in changes:
                    if new is not None:
                        assert logged[(rev, kind, ident)] == new
        ports = [r for (k, _), r in final.items() if k == "port"]
        assert all(("network", p.network_id) in final for p in ports)  # type: ignore[attr-defined]
        assert len({p.mac for p in ports}) == len(ports)  # type: ignore[attr-defined]
        assert len({p.key for p in ports}) == len(ports)  # type: ignore[attr-defined]
    finally:
        a.close()
        b.close()


def test_a_bug_in_a_batch_reaches_only_its_caller_or_leaves_the_model_as_it_was(
    pair: tuple[EtcdState, EtcdState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write function raising something else than a refusal: its caller gets it, the batch's other writes
    commit. A failure after some writes were applied tentatively (a record etcd cannot be given): every
    write of the round gets it and the model is as before the round."""
    from topology import state_etcd

    a, b = pair
    seed(a)

    def broken(t: Topology, r: int, n: float) -> list[Change]:
        raise RuntimeError("bug")

    gate = Gate(a)
    threads, out = gate.queue([port_fn("ok1"), broken, port_fn("ok2")])
    gate.release(threads)
    assert isinstance(out[1], RuntimeError)
    assert isinstance(out[0], tuple) and isinstance(out[2], tuple) and out[0][0] == out[2][0]
    before, rev = model(a), a.revision
    real = state_etcd._json

    def unencodable(rec):  # type: ignore[no-untyped-def]
        if rec.id == "bad":
            raise ValueError("cannot encode")
        return real(rec)

    monkeypatch.setattr(state_etcd, "_json", unencodable)
    gate = Gate(a)
    threads, out = gate.queue([port_fn("x1"), port_fn("bad"), port_fn("x2")])
    gate.release(threads)
    assert any(isinstance(v, ValueError) for v in out.values()), out
    assert model(a) == before and a.revision == rev
    monkeypatch.setattr(state_etcd, "_json", real)
    for pid in ("x1", "bad", "x2"):  # whatever each got, the model and etcd agree
        if pid not in a.topology.ports:
            create_port(a, pid)
    assert b.sync() == a.revision and model(a) == model(b)


def _make_chassis(ch: object, t: Topology, r: int, n: float) -> list[Change]:
    return ops.create_chassis(t, ch, r, n)  # type: ignore[arg-type]


def _make_port(port: Port, t: Topology, r: int, n: float) -> list[Change]:
    return ops.create_port(t, port, [], r, n)


def _vif_on_hv1(pid: str, t: Topology, r: int, n: float) -> list[Change]:
    from topology import binding

    return binding.rebind(t, {"hv1": {pid}}, [pid], r, n)


def test_concurrent_binds_on_both_never_share_a_zone_on_a_chassis(pair: tuple[EtcdState, EtcdState]) -> None:
    """Ports created and bound on both controllers at once, on the same chassis: every zone is still unique per
    chassis (each write chose at etcd's head), and both models agree on keys and zones."""
    from tests.test_any_order import check_zones
    from topology.records import Chassis

    a, b = pair
    seed(a)
    for i, ch in enumerate(("hv1", "hv2")):
        a.write(functools.partial(_make_chassis, Chassis(id=ch, datapath_id=i + 1)))
    b.sync()
    failed: list[BaseException] = []

    def worker(state: EtcdState, name: str) -> None:
        for i in range(10):
            pid = f"{name}-{i}"
            try:
                pin = "hv1" if i % 2 else ""
                port = Port(id=pid, tenant="t", network_id="net", mac="", binding_chassis=pin)
                state.write(functools.partial(_make_port, port))
                if not pin:  # its VIF shows up on hv1: the dataplane's binding write
                    state.write(functools.partial(_vif_on_hv1, pid))
            except BaseException as err:  # noqa: BLE001 (reported below)
                failed.append(err)

    threads = [threading.Thread(target=worker, args=(s, f"{s is a}{k}")) for s in (a, b) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed
    assert b.sync() == a.sync()
    assert model(a) == model(b)
    assert sum(p.binding_chassis == "hv1" for p in a.topology.ports.values()) == 40
    for state in (a, b):
        with state.lock:
            check_zones(state.topology)
