"""Two API servers (as two controllers) on one etcd: etags across controllers, and Watch on either."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from lab.etcd import EtcdCluster
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api
from topology.etcd_store import EtcdConfig, EtcdStore
from topology.state_etcd import EtcdState


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@contextlib.contextmanager
def controllers(etcd: EtcdCluster, tmp_path: Path) -> Iterator[list[tuple[Api, EtcdState]]]:
    """Controllers A and B: each its own State and server, one etcd prefix, one token file."""
    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    out, cleanup = [], []
    for _ in range(2):
        state = EtcdState(EtcdStore(EtcdConfig(tuple(etcd.endpoints), prefix=prefix)))
        srv = ApiServer(state, TokenFile(tmp_path / "tokens.json"), "127.0.0.1:0", workers=8)
        srv.start()
        endpoint = f"127.0.0.1:{srv.port}"
        channel = grpc.insecure_channel(endpoint)
        api = Api(endpoint, TokenFile(tmp_path / "tokens.json").admin_token(), channel, stub(channel))
        out.append((api, state))
        cleanup.append((channel, srv, state))
    try:
        yield out
    finally:
        for channel, srv, state in cleanup:
            channel.close()
            srv.stop(0)
            state.close()


@pytest.fixture
def two(etcd: EtcdCluster, tmp_path: Path) -> Iterator[tuple[Api, Api]]:
    with controllers(etcd, tmp_path) as pair:
        yield pair[0][0], pair[1][0]


def stub(channel: grpc.Channel) -> pb_grpc.TopologyServiceStub:
    return pb_grpc.TopologyServiceStub(channel)


def seed(api: Api) -> pb.Port:
    api.stub.CreateNetwork(
        pb.CreateNetworkRequest(network=pb.Network(), network_id="net"), metadata=api.admin
    )
    api.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network="networks/net", cidr="10.0.0.0/24"), subnet_id="sub"),
        metadata=api.admin,
    )
    return api.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network="networks/net"), port_id="p1"), metadata=api.admin
    )


def get_on(api: Api, name: str, revision: int) -> pb.Port:
    """Get through a controller once it has `revision` (its watch brings other controllers' writes)."""
    for _ in range(100):
        try:
            port = api.stub.GetPort(pb.GetPortRequest(name=name), metadata=api.admin)
        except grpc.RpcError as err:  # a read answers from the model: not there yet until the watch brings it
            if err.code() is not grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
        else:
            if port.revision >= revision:
                return port
        threading.Event().wait(0.05)
    raise AssertionError(f"{api.endpoint} never reached revision {revision}")


def test_read_modify_write_through_two_controllers_gets_aborted(two: tuple[Api, Api]) -> None:
    a, b = two
    created = seed(a)
    assert created.etag == str(created.revision)
    read_a = get_on(a, "ports/p1", created.revision)
    read_b = get_on(b, "ports/p1", created.revision)
    assert read_a.etag == read_b.etag == created.etag
    upd = pb.Port(name="ports/p1", display_name="from-a", etag=read_a.etag)
    done = a.stub.UpdatePort(pb.UpdatePortRequest(port=upd), metadata=a.admin)
    assert done.display_name == "from-a" and done.etag != read_a.etag
    stale = pb.Port(name="ports/p1", display_name="from-b", etag=read_b.etag)
    with pytest.raises(grpc.RpcError) as info:
        b.stub.UpdatePort(pb.UpdatePortRequest(port=stale), metadata=b.admin)
    assert info.value.code() is grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as info:
        b.stub.DeletePort(pb.DeletePortRequest(name="ports/p1", etag=read_b.etag), metadata=b.admin)
    assert info.value.code() is grpc.StatusCode.ABORTED
    fresh = get_on(b, "ports/p1", done.revision)
    assert fresh.display_name == "from-a" and fresh.etag == done.etag
    b.stub.DeletePort(pb.DeletePortRequest(name="ports/p1", etag=fresh.etag), metadata=b.admin)
    # without an etag an update is unconditional, as before
    seed_port = a.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network="networks/net"), port_id="p2"), metadata=a.admin
    )
    a.stub.UpdatePort(pb.UpdatePortRequest(port=pb.Port(name="ports/p2", display_name="x")), metadata=a.admin)
    assert seed_port.etag


def events(api: Api, start: int, count: int) -> list[tuple[int, int, str]]:
    """(type, revision, name) of the first `count` events of a Watch from `start` through `api`."""
    stream = api.stub.Watch(pb.WatchRequest(start_revision=start), metadata=api.admin, timeout=20)
    out = []
    for ev in stream:
        if ev.type == pb.WatchEvent.SYNCED:
            continue
        which = ev.WhichOneof("resource")
        out.append((ev.type, ev.revision, getattr(ev, which).name if which else ""))
        if len(out) == count:
            stream.cancel()
            break
    return out


def test_watch_is_the_same_on_both_and_resumes_from_a_revision_read_on_the_other(
    two: tuple[Api, Api],
) -> None:
    a, b = two
    seed(a)
    start = a.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=a.admin).revision
    for i, api in enumerate((a, b, a, b)):
        api.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network="networks/net"), port_id=f"q{i}"), metadata=api.admin
        )
    a.stub.DeletePort(pb.DeletePortRequest(name="ports/q0"), metadata=a.admin)
    on_a = events(a, start, 5)
    on_b = events(b, start, 5)
    assert on_a == on_b
    assert [n for _t, _r, n in on_a] == ["ports/q0", "ports/q1", "ports/q2", "ports/q3", "ports/q0"]
    mid = on_a[1][1]  # read on A, resumed from on B
    assert events(b, mid, 3) == on_a[2:]
    # a revision B may not have applied yet: it waits for it instead of answering FUTURE_REVISION
    last = a.stub.CreatePort(
        pb.CreatePortRequest(port=pb.Port(network="networks/net"), port_id="q9"), metadata=a.admin
    ).revision
    assert events(b, last - 1, 1)[0][1] == last


def test_two_controller_processes_share_the_model(etcd: EtcdCluster, tmp_path: Path) -> None:
    """run_controller.py with store = "etcd": a write through one is read through the other."""
    from tests.conftest import ControllerProcess

    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    args = ["--store", "etcd", "--etcd-endpoints", ",".join(etcd.endpoints), "--etcd-prefix", prefix]
    procs = [ControllerProcess(tmp_path / name, args) for name in ("a", "b")]
    try:
        for p in procs:
            p.start()
        apis = []
        for p in procs:
            channel = p.channel()
            apis.append(Api(p.endpoint, p.admin_token(), channel, stub(channel)))
        a, b = apis
        created = seed(a)
        assert get_on(b, "ports/p1", created.revision).mac_address == created.mac_address
        info = b.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=b.admin)
        assert info.revision >= created.revision
        assert not (tmp_path / "a" / "topology.sqlite").exists()  # the model is in etcd only
        for api in apis:
            api.channel.close()
    finally:
        for p in procs:
            p.stop()


def test_etags_on_the_sqlite_store_too(api: Api) -> None:
    """The etag check is in the write, whichever the store: a stale one is ABORTED with the current one."""
    created = seed(api)
    first = api.stub.UpdatePort(
        pb.UpdatePortRequest(port=pb.Port(name="ports/p1", display_name="one", etag=created.etag)),
        metadata=api.admin,
    )
    with pytest.raises(grpc.RpcError) as info:
        api.stub.UpdatePort(
            pb.UpdatePortRequest(port=pb.Port(name="ports/p1", display_name="two", etag=created.etag)),
            metadata=api.admin,
        )
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert first.etag in (info.value.details() or "")
    api.stub.DeletePort(pb.DeletePortRequest(name="ports/p1", etag=first.etag), metadata=api.admin)


def test_a_batch_is_one_revision_in_watch_on_both_and_a_resume_never_splits_it(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    """CreatePorts queued behind a held write round on A commit as one txn: every controller's Watch shows
    them at one revision, each port once; resuming from the revision before shows them all, from that
    revision none of them; each answer names that revision."""
    from tests.test_state_etcd import Gate

    with controllers(etcd, tmp_path) as [(a, state_a), (b, _state_b)]:
        seed(a)
        start = a.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=a.admin).revision
        gate = Gate(state_a)
        answers: dict[int, pb.Port] = {}

        def create(i: int) -> None:
            answers[i] = a.stub.CreatePort(
                pb.CreatePortRequest(port=pb.Port(network="networks/net"), port_id=f"b{i}"), metadata=a.admin
            )

        threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = threading.Event()
        for _ in range(400):  # the 4 calls reached the store's queue
            if len(state_a._writes) == 4:
                break
            deadline.wait(0.01)
        gate.release(threads)
        revs = {p.revision for p in answers.values()}
        assert len(revs) == 1 and len(answers) == 4
        (rev,) = revs
        assert all(p.etag for p in answers.values())
        after = a.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network="networks/net"), port_id="later"), metadata=a.admin
        )
        on_a, on_b = events(a, start, 5), events(b, start, 5)
        assert on_a == on_b
        assert [r for _t, r, _n in on_a] == [rev] * 4 + [after.revision]
        assert sorted(n for _t, _r, n in on_a[:4]) == [f"ports/b{i}" for i in range(4)]
        assert events(b, rev - 1, 5)[:4] == on_a[:4]  # nothing of the revision is left out
        assert events(b, rev, 1) == on_a[4:]  # nor shown again
