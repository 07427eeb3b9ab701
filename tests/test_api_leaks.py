"""What errors and answers may reveal: capped echoes of huge inputs, no other tenant's object ids in
conflicts or in Explain, and a full disk on CreateToken (a real tmpfs) answered UNAVAILABLE with details,
the token table unchanged in memory and on disk."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller.api.auth import Principal, TokenFile
from controller.api.server import ApiServer
from controller.api.status import ECHO_LIMIT, cap
from controller.debug import explain
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api, InProcessServer
from tests.test_api import make_net, make_port, make_subnet
from tests.test_api_routers import add_iface, external, make_fip, make_router
from topology.state import State

Md = tuple[tuple[str, str], ...]


def status_text(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, str, str]:
    """(code, ErrorInfo reason, message, everything the status says: message, violations, metadata)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "error without google.rpc.Status details"
    parts, reason = [status.message], ""
    for d in status.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            parts += [f"{v.field} {v.description}" for v in br.field_violations]
        elif d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            d.Unpack(ei)
            reason = ei.reason
            parts += [f"{k}={v}" for k, v in ei.metadata.items()]
    return err.code(), reason, status.message, "\n".join(parts)  # type: ignore[attr-defined]


def refused(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str, str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return status_text(info.value)


@pytest.fixture
def alice(api: Api) -> Md:
    return api.md(api.tenant_token("alice"))


@pytest.fixture
def bob(api: Api) -> Md:
    return api.md(api.tenant_token("bob"))


# ---------------------------------------------------------------------------------------------- echoes


def test_cap_cuts_long_words_and_long_messages() -> None:
    assert cap("short 'name' stays") == "short 'name' stays"
    cut = cap("'" + "x" * 5000 + "' is not a CIDR")
    assert cut == "'" + "x" * (ECHO_LIMIT - 1) + "… is not a CIDR"
    assert len(cap("word " * 1000)) == 1024 + 1


def test_an_8kb_name_gets_invalid_argument_with_a_capped_message(api: Api, alice: Md) -> None:
    huge = "a" * 8192
    before = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin).revision
    code, reason, message, _ = refused(
        api.stub.GetNetwork, pb.GetNetworkRequest(name="networks/" + huge), metadata=alice
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NAME_TOO_LONG") and len(message) < 200
    net = make_net(api, alice, "n")
    # a value echoed in the message (an invalid CIDR) is cut to ECHO_LIMIT characters with an ellipsis
    code, reason, message, text = refused(make_subnet, api, alice, net.name, "1" * 8192)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "subnet.cidr" in text
    assert "1" * ECHO_LIMIT not in message and "…" in message and len(text) < 1024
    for kwargs in ({"network_id": huge}, {"network": pb.Network(display_name=huge)}):
        code, _, message, text = refused(
            api.stub.CreateNetwork, pb.CreateNetworkRequest(**kwargs), metadata=alice
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(text) < 1024
    code, _, message, _ = refused(make_port, api, alice, "networks/" + "b" * 100)  # a plausible name: echoed
    assert code == grpc.StatusCode.NOT_FOUND and "b" * 100 in message
    after = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin).revision
    assert after == before + 1  # only the one network was stored


# ---------------------------------------------------------------------------------------------- other tenants


def test_mac_and_ip_in_use_do_not_name_another_tenants_port(api: Api, alice: Md, bob: Md) -> None:
    a_net = make_net(api, alice, "alice-net")
    make_subnet(api, alice, a_net.name, "10.0.0.0/24")
    a_port = make_port(api, alice, a_net.name, "alice-p2")
    b_net = make_net(api, bob, "bob-net")
    make_subnet(api, bob, b_net.name, "10.0.0.0/24")
    code, reason, message, text = refused(make_port, api, bob, b_net.name, mac_address=a_port.mac_address)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "MAC_ADDRESS_IN_USE")
    assert a_port.mac_address in message and "in use" in message
    assert "alice" not in text, text

    # floating IP addresses on the shared external network
    external(api)
    a_fip = make_fip(api, alice, "networks/public", "alice-fip", floating_ip_address="203.0.113.50")
    public_ports = [
        p.name
        for p in api.stub.ListPorts(pb.ListPortsRequest(network="networks/public"), metadata=api.admin).ports
    ]
    assert public_ports
    code, reason, message, text = refused(
        make_fip, api, bob, "networks/public", floating_ip_address=a_fip.floating_ip_address
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IP_ADDRESS_IN_USE")
    assert "203.0.113.50" in message
    for secret in ["alice", *public_ports, *(n.split("/")[-1] for n in public_ports)]:
        assert secret not in text, (secret, text)
    # a router gateway asking for that address: the same answer
    router = pb.Router()
    router.external_gateway.network = "networks/public"
    router.external_gateway.fixed_ip.ip_address = "203.0.113.50"
    code, reason, _, text = refused(
        api.stub.CreateRouter, pb.CreateRouterRequest(router=router), metadata=bob
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IP_ADDRESS_IN_USE") and "alice" not in text
    # nothing of bob's was stored by the refusals
    assert not api.stub.ListPorts(pb.ListPortsRequest(), metadata=bob).ports
    assert not api.stub.ListFloatingIps(pb.ListFloatingIpsRequest(), metadata=bob).floating_ips


def test_explain_does_not_name_another_tenants_objects(server: InProcessServer, alice: Md, bob: Md) -> None:
    api = server.api
    external(api)
    ids: dict[str, list[str]] = {}
    for who, md, cidr in (("alice", alice, "10.1.0.0/24"), ("bob", bob, "10.2.0.0/24")):
        net = make_net(api, md, f"{who}-net")
        sub = make_subnet(api, md, net.name, cidr, f"{who}-sub")
        router = make_router(api, md, f"{who}-router", gateway="networks/public")
        add_iface(api, md, router.name, subnet=sub.name)
        vm = make_port(api, md, net.name, f"{who}-vm")
        ids[who] = [net.name, sub.name, router.name, vm.name]
        if who == "bob":
            fip = make_fip(api, md, "networks/public", "bob-fip", port=vm.name)
            ids[who].append(fip.name)
    bob_public = [
        p.name
        for p in api.stub.ListPorts(pb.ListPortsRequest(network="networks/public"), metadata=api.admin).ports
        if p.tenant != "alice"
    ]
    secrets = {s.split("/")[-1] for s in ids["bob"] + bob_public} | {"bob"}
    topo = server.state.topology
    args = ("alice-vm", fip.floating_ip_address, "tcp", 22)
    as_admin = explain.explain(None, topo, *args, visible=lambda _t: True, with_trace=False)
    assert any(s in json.dumps(as_admin.to_dict()) for s in secrets)  # the admin sees whose address it is
    as_alice = explain.explain(None, topo, *args, visible=Principal("alice", False).can_see, with_trace=False)
    said = json.dumps(as_alice.to_dict()) + as_alice.format()
    assert as_alice.destination == fip.floating_ip_address
    assert as_alice.allowed == as_admin.allowed  # the same verdict, told without the ids
    for s in secrets:
        assert s not in said, (s, said)
    # a port of bob's network reached by its address through no router of alice's: nothing named either
    bob_vm_ip = api.stub.GetPort(pb.GetPortRequest(name="ports/bob-vm"), metadata=bob).fixed_ips[0].ip_address
    other = explain.explain(
        None, topo, "alice-vm", bob_vm_ip, visible=Principal("alice", False).can_see, with_trace=False
    )
    assert not other.allowed and not any(s in json.dumps(other.to_dict()) for s in secrets)


# ---------------------------------------------------------------------------------------------- full disk


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `path` (root only), always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write zeros to `path` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
            except OSError:
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    return path


@pytest.mark.lab  # mounts a tmpfs: needs root (never skipped)
def test_create_token_on_a_full_disk_changes_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", "2m") as data:
        state = State(data / "topology.sqlite")
        tokens = TokenFile(data / "tokens.json")
        srv = ApiServer(state, tokens, "127.0.0.1:0", workers=4)
        srv.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        stub = pb_grpc.TopologyServiceStub(channel)
        admin = Api.md(tokens.admin_token())
        try:
            first = stub.CreateToken(pb.CreateTokenRequest(tenant="alice"), metadata=admin)
            on_disk = (data / "tokens.json").read_bytes()
            in_memory = dict(tokens._tokens)
            filler = fill(data / "filler")
            code, reason, message, text = refused(
                stub.CreateToken, pb.CreateTokenRequest(tenant="bob"), metadata=admin
            )
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert reason == "STORAGE_FULL" and "errno=ENOSPC" in text and "nothing was changed" in message
            assert tokens._tokens == in_memory and (data / "tokens.json").read_bytes() == on_disk
            assert not (data / "tokens.tmp").exists()
            assert tokens.lookup(first.token) == Principal("alice", False)
            # the server still answers, and once there is room again the same call works
            assert stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=admin).admin
            filler.unlink()
            bob = stub.CreateToken(pb.CreateTokenRequest(tenant="bob"), metadata=admin)
            stored = json.loads((data / "tokens.json").read_text())["tokens"]
            assert stored[bob.token]["tenant"] == "bob" and first.token in stored
            assert stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=Api.md(bob.token)).tenant == "bob"
        finally:
            channel.close()
            srv.stop(0)
            state.close()


@pytest.mark.lab  # mounts a tmpfs: needs root (never skipped)
def test_token_calls_on_a_read_only_disk_fail_precondition_and_change_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", "2m") as data:
        state = State(tmp_path / "topology.sqlite")  # an open store would keep the mount writable
        tokens = TokenFile(data / "tokens.json")
        srv = ApiServer(state, tokens, "127.0.0.1:0", workers=4)
        srv.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        stub = pb_grpc.TopologyServiceStub(channel)
        admin = Api.md(tokens.admin_token())
        try:
            alice = stub.CreateToken(pb.CreateTokenRequest(tenant="alice"), metadata=admin)
            on_disk = (data / "tokens.json").read_bytes()
            subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
            for call, request in (
                (stub.CreateToken, pb.CreateTokenRequest(tenant="bob")),
                (stub.RevokeToken, pb.RevokeTokenRequest(token=alice.token)),
            ):
                code, reason, _, text = refused(call, request, metadata=admin)
                assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STORAGE_READ_ONLY"), text
                assert "errno=EROFS" in text and str(data) not in text
            assert (data / "tokens.json").read_bytes() == on_disk
            assert (
                stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=Api.md(alice.token)).tenant == "alice"
            )
        finally:
            channel.close()
            srv.stop(0)
            state.close()
