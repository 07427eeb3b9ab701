"""Tokens shared by the controllers of one etcd (controller/api/auth_etcd.py), on a real etcd: a token made
or revoked through one controller holds on the others; each controller's own admin token works on every
one; a revocation ends streams everywhere and survives restarts; only hashes are stored."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from controller.api.auth import LastAdminToken, TokenFile
from controller.api.auth_etcd import EtcdTokens
from controller.api.server import ApiServer
from lab.etcd import EtcdCluster
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology.etcd_store import EtcdConfig, EtcdStore
from topology.state_etcd import EtcdState


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def until(cond: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("not within the timeout")
        time.sleep(0.01)


class Node:
    """One controller's token table: its own data directory (tokens.json), the shared etcd prefix."""

    def __init__(self, etcd: EtcdCluster, prefix: str, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.store = EtcdStore(EtcdConfig(tuple(etcd.endpoints), prefix=prefix))
        self.local = TokenFile(data / "tokens.json")
        self.tokens = EtcdTokens(self.store, self.local)

    def close(self) -> None:
        self.tokens.stop()
        self.store.close()


@pytest.fixture
def nodes(etcd: EtcdCluster, tmp_path: Path) -> Iterator[Callable[[str], Node]]:
    prefix = f"/tok-{uuid.uuid4().hex[:8]}/"
    made: list[Node] = []

    def make(name: str) -> Node:
        node = Node(etcd, prefix, tmp_path / name)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def test_tokens_hold_on_every_controller(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("a"), nodes("b")
    # each controller's own first admin token (in its tokens.json) works on the other
    assert b.tokens.lookup(a.local.admin_token()) is not None
    until(lambda: a.tokens.lookup(b.local.admin_token()) is not None)
    alice = a.tokens.create("alice", False)
    until(lambda: b.tokens.lookup(alice) is not None)
    p = b.tokens.lookup(alice)
    assert p is not None and (p.tenant, p.admin) == ("alice", False)
    assert b.tokens.lookup("sdn_" + "x" * 43) is None


def test_only_hashes_are_stored(nodes: Callable[[str], Node]) -> None:
    a = nodes("a")
    secret = a.tokens.create("alice", False)
    _, kvs = a.store.range_prefix(a.store.prefix)
    stored = b"".join(k + v for k, v, _ in kvs)
    assert secret.encode() not in stored and a.local.admin_token().encode() not in stored
    assert len(kvs) == 2


def test_revocation_reaches_every_controller_and_survives_restart(
    nodes: Callable[[str], Node], etcd: EtcdCluster, tmp_path: Path
) -> None:
    a, b = nodes("a"), nodes("b")
    alice = a.tokens.create("alice", False)
    until(lambda: b.tokens.lookup(alice) is not None)
    ended: list[str] = []
    b.tokens.on_revoke(ended.append)  # b has seen alice's token (a stream of it would be open there)
    assert a.tokens.revoke(alice)
    assert a.tokens.lookup(alice) is None
    until(lambda: b.tokens.lookup(alice) is None, timeout=1.0)  # within a second on the other controller
    until(lambda: ended == [alice], timeout=1.0)  # b's streams of the token are told
    assert not a.tokens.revoke(alice)  # already revoked: unknown
    # a's own admin token revoked through b; a restarts with it still in its tokens.json: it stays revoked
    a_admin = a.local.admin_token()
    until(lambda: b.tokens.lookup(a_admin) is not None)
    assert b.tokens.revoke(a_admin)
    a.close()
    again = Node(etcd, a.store.config.prefix, tmp_path / "a")
    try:
        assert again.tokens.lookup(a_admin) is None
        assert again.tokens.lookup(b.local.admin_token()) is not None
    finally:
        again.close()


def test_the_last_admin_token_of_the_deployment_is_kept(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("a"), nodes("b")
    until(lambda: a.tokens.lookup(b.local.admin_token()) is not None)
    assert a.tokens.revoke(a.local.admin_token())  # b's admin token is left
    until(lambda: b.tokens.lookup(a.local.admin_token()) is None)
    with pytest.raises(LastAdminToken):
        b.tokens.revoke(b.local.admin_token())


def test_a_token_made_on_one_api_server_calls_the_other(
    nodes: Callable[[str], Node], etcd: EtcdCluster
) -> None:
    """Through real gRPC: CreateToken on controller A, then calls (and a Watch) on controller B; RevokeToken on
    A ends B's open Watch with UNAUTHENTICATED within a second."""
    a, b = nodes("a"), nodes("b")
    servers, channels, states = [], [], []
    for node in (a, b):
        state = EtcdState(EtcdStore(EtcdConfig(tuple(etcd.endpoints), prefix=node.store.config.prefix)))
        srv = ApiServer(state, node.tokens, "127.0.0.1:0", workers=4)
        srv.start()
        servers.append(srv)
        states.append(state)
        channels.append(grpc.insecure_channel(f"127.0.0.1:{srv.port}"))
    try:
        sa, sb = (pb_grpc.TopologyServiceStub(c) for c in channels)
        admin = (("authorization", f"Bearer {a.local.admin_token()}"),)
        token = sa.CreateToken(pb.CreateTokenRequest(tenant="alice"), metadata=admin).token
        md = (("authorization", f"Bearer {token}"),)
        until(lambda: b.tokens.lookup(token) is not None)
        sb.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(display_name="n")), metadata=md)
        stream = sb.Watch(pb.WatchRequest(), metadata=md)
        got: list[object] = []

        def read() -> None:
            try:
                for ev in stream:
                    got.append(ev)
            except grpc.RpcError as err:
                got.append(err.code())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.3)
        started = time.monotonic()
        sa.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=admin)
        reader.join(timeout=3)
        assert not reader.is_alive() and got[-1] is grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - started < 1.5
        with pytest.raises(grpc.RpcError) as info:
            sb.ListNetworks(pb.ListNetworksRequest(), metadata=md)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    finally:
        for c in channels:
            c.close()
        for srv in servers:
            srv.stop(0)
        for state in states:
            state.close()
