"""The generic layer alone (controller/api/resources.py, controller/api/interceptors.py): a toy spec over the network
table, its standard methods called as the AuthInterceptor runs them, without a gRPC server."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from controller.api import convert
from controller.api.auth import Principal
from controller.api.context import REQUEST
from controller.api.interceptors import CALLER, AuthInterceptor, Caller, guard, principal
from controller.api.resources import Call, Parent, Resource, Scope, Tables, mask, serve
from proto.sdn.v1 import topology_pb2 as pb
from topology import errors, ops
from topology.model import Change
from topology.records import Network, Subnet
from topology.state import State

ADMIN = Principal("admin", True)
ALICE = Principal("alice", False)
BOB = Principal("bob", False)


class Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class Ctx:
    def __init__(self) -> None:
        self.initial: Any = None
        self.trailing: Any = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("x-request-id", "req-1")]

    def send_initial_metadata(self, md: Any) -> None:
        self.initial = md

    def set_trailing_metadata(self, md: Any) -> None:
        self.trailing = md

    def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status)


def _create(c: Call, m: pb.Network) -> list[Change]:
    net = Network(
        id=c.new_id(),
        tenant=c.tenant_for(m.tenant, "network.tenant"),
        display_name=m.display_name,
        external=m.external,
    )
    return ops.create_network(c.topo, net, c.rev, c.now)


def _update(c: Call, old: Network, fields: dict[str, Any]) -> list[Change]:
    assert set(fields) <= {"display_name"}  # the mask was checked
    new = dataclasses.replace(old, display_name=fields.get("display_name", old.display_name), revision=c.rev)
    return [] if new.display_name == old.display_name else [("network", old.id, old, new)]


TOY = Resource(
    kind="network",
    plural="Networks",
    to_pb=convert.network_to_pb,
    create=_create,
    update=_update,
    delete=lambda c, old, force: ops.delete_network(c.topo, old, force, c.rev, c.now),
    mutable=frozenset({"display_name"}),
    immutable=frozenset({"name", "tenant"}),
    output_only=frozenset({"revision", "tunnel_key", "create_time", "update_time"}),
)


@pytest.fixture
def tables(tmp_path: Path) -> Iterator[Tables]:
    state = State(tmp_path / "topology.sqlite")
    try:
        yield Tables(state, [TOY])
    finally:
        state.close()


def run(p: Principal, method: Any, request: Any, ctx: Ctx | None = None) -> Any:
    """`method(request, ctx)` as the AuthInterceptor runs it for `p`."""
    return guard("Toy", lambda _ctx: Caller(p, "token"), method)(request, ctx or Ctx())


def create(t: Tables, p: Principal, ident: str = "", **fields: Any) -> Any:
    req = pb.CreateNetworkRequest(network=pb.Network(**fields), network_id=ident)
    return run(p, lambda r, c: t.create(TOY, r, c), req)


def update(t: Tables, p: Principal, net: pb.Network, paths: list[str] | None = None) -> Any:
    req = pb.UpdateNetworkRequest(network=net, update_mask=field_mask_pb2.FieldMask(paths=paths or []))
    return run(p, lambda r, c: t.update(TOY, r, c), req)


def listed(t: Tables, p: Principal, **request: Any) -> Any:
    return run(p, lambda r, c: t.list(TOY, r, c), pb.ListNetworksRequest(**request))


@contextlib.contextmanager
def calling_as(p: Principal) -> Iterator[None]:
    """CALLER set for a direct call (to see the ApiError itself, before the interceptor maps it)."""
    token = CALLER.set(Caller(p, ""))
    try:
        yield
    finally:
        CALLER.reset(token)


def refusal(fn: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as e:
        fn()
    return e.value.status.code, e.value.status.details


def test_create_with_a_client_id_then_get(tables: Tables) -> None:
    made = create(tables, ALICE, "n1", display_name="one")
    assert made.name == "networks/n1" and made.tenant == "alice" and made.display_name == "one"
    got = run(ALICE, lambda r, c: tables.get(TOY, r, c), pb.GetNetworkRequest(name="networks/n1"))
    assert got == made
    code, details = refusal(lambda: create(tables, ALICE, "n1"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "'n1'" in details
    code, details = refusal(lambda: create(tables, ALICE, "Not An Id"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("network_id:")  # request level


def test_model_field_paths_are_named_from_the_request(tables: Tables) -> None:
    code, _ = refusal(lambda: create(tables, ALICE, display_name="x" * 300))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # the message is the model's; the violation's field is under the request's field
    with calling_as(ALICE), pytest.raises(errors.ApiError) as e:
        tables.create(TOY, pb.CreateNetworkRequest(network=pb.Network(display_name="x" * 300)), Ctx())
    assert e.value.violations[0][0] == "network.display_name"


def test_validate_only_changes_nothing_and_plans(tables: Tables) -> None:
    before = tables.state.revision
    ctx = Ctx()
    req = pb.CreateNetworkRequest(
        network=pb.Network(display_name="dry"), network_id="dry", validate_only=True
    )
    made = run(ALICE, lambda r, c: tables.create(TOY, r, c), req, ctx)
    assert made.name == "networks/dry" and made.revision == before + 1
    assert tables.state.revision == before and "dry" not in tables.state.topology.networks
    (_, rid), (key, value) = ctx.trailing
    assert rid == "req-1"  # the request id comes back in the trailing metadata too
    assert key == "sdn-plan-bin" and pb.Plan.FromString(value).revision == before + 1
    assert ctx.initial == (("x-request-id", "req-1"),)  # the request id is echoed


def test_list_pages_by_id_and_binds_the_token_to_the_query(tables: Tables) -> None:
    for i in range(5):
        create(tables, ALICE, f"n{i}")
    create(tables, BOB, "b0")
    names: list[str] = []
    token = ""
    while True:
        page = listed(tables, ALICE, page_size=2, page_token=token)
        assert len(page.networks) <= 2
        names += [n.name for n in page.networks]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"networks/n{i}" for i in range(5)]  # bob's is not alice's to see
    first = listed(tables, ADMIN, page_size=2)
    assert [n.name for n in first.networks] == ["networks/b0", "networks/n0"]
    code, details = refusal(
        lambda: listed(tables, ADMIN, page_size=2, tenant="alice", page_token=first.next_page_token)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "different query" in details
    code, _ = refusal(lambda: listed(tables, ADMIN, page_token="garbage"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = refusal(lambda: listed(tables, ADMIN, page_size=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [n.name for n in listed(tables, ADMIN, tenant="bob").networks] == ["networks/b0"]


def test_tenant_scope(tables: Tables) -> None:
    create(tables, ALICE, "mine")
    create(tables, ADMIN, "ext", external=True)
    code, _ = refusal(
        lambda: run(BOB, lambda r, c: tables.get(TOY, r, c), pb.GetNetworkRequest(name="networks/mine"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = refusal(lambda: listed(tables, BOB, tenant="alice"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = refusal(lambda: create(tables, BOB, tenant="alice"))  # acting for another tenant
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # the operator's external network: every tenant reads it, none changes it
    assert [n.name for n in listed(tables, BOB).networks] == ["networks/ext"]
    code, details = refusal(lambda: update(tables, BOB, pb.Network(name="networks/ext", display_name="x")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "belongs to the operator" in details
    code, _ = refusal(
        lambda: run(BOB, lambda r, c: tables.delete(TOY, r, c), pb.DeleteNetworkRequest(name="networks/ext"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    run(ALICE, lambda r, c: tables.delete(TOY, r, c), pb.DeleteNetworkRequest(name="networks/mine"))
    assert "mine" not in tables.state.topology.networks


def test_admin_scope(tables: Tables) -> None:
    admin_only = dataclasses.replace(TOY, scope=Scope.ADMIN)
    code, details = refusal(
        lambda: run(ALICE, lambda r, c: tables.list(admin_only, r, c), pb.ListNetworksRequest())
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and details == "network is admin only"
    assert run(ADMIN, lambda r, c: tables.list(admin_only, r, c), pb.ListNetworksRequest()).networks == []


def test_field_mask(tables: Tables) -> None:
    create(tables, ALICE, "n", display_name="a")
    net = pb.Network(name="networks/n", display_name="b", tenant="alice")
    # an empty mask: the populated fields; an immutable one left as it is is no change
    assert update(tables, ALICE, net).display_name == "b"
    for paths, answer in (
        (["display_name", "mtu"], "update_mask: unknown field 'mtu'"),
        (["tenant"], "update_mask: 'tenant' is immutable"),
        (["revision", "display_name"], "update_mask: 'revision' is output only"),
    ):
        net = pb.Network(name="networks/n", display_name="c")
        code, details = refusal(lambda net=net, paths=paths: update(tables, ALICE, net, paths))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details == answer
    with calling_as(ALICE), pytest.raises(errors.ApiError) as e:
        only_tenant = field_mask_pb2.FieldMask(paths=["tenant"])
        request = pb.UpdateNetworkRequest(network=pb.Network(name="networks/n"), update_mask=only_tenant)
        tables.update(TOY, request, Ctx())
    assert e.value.reason == "IMMUTABLE_FIELD"
    assert e.value.violations == [("update_mask", "'tenant' is immutable")]  # the request's field
    # an empty mask: an immutable field sent as it is is no change, a changed one is refused
    same_tenant = pb.Network(name="networks/n", tenant="alice", display_name="c")
    assert update(tables, ALICE, same_tenant).display_name == "c"
    code, details = refusal(lambda: update(tables, ALICE, pb.Network(name="networks/n", tenant="bob")))
    assert details == "update_mask: 'tenant' is immutable"
    assert update(tables, ALICE, pb.Network(name="networks/n", display_name="d"), ["*"]).display_name == "d"
    code, details = refusal(
        lambda: update(tables, ALICE, pb.Network(name="networks/n", display_name="d"), ["display_name"])
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nothing to update" in details
    current = convert.network_to_pb(tables.state.topology.networks["n"])
    assert mask(
        pb.Network(name="networks/n", tenant="alice", revision=9, display_name="e"),
        field_mask_pb2.FieldMask(),
        current,
        TOY.output_only,
        TOY.mutable,
    ) == ["display_name"]


def test_principal_is_the_callers_only_during_the_call() -> None:
    seen: list[Principal] = []
    run(ALICE, lambda r, c: seen.append(principal()), None)
    assert seen == [ALICE]
    with pytest.raises(RuntimeError):
        principal()


def test_serve_installs_the_standard_methods() -> None:
    class Service:
        def __init__(self, tables: Any) -> None:
            self.tables = tables

    no_update = dataclasses.replace(TOY, kind="floating_ip", plural="FloatingIps", update=None)
    serve(Service, [TOY, no_update])
    assert {
        "CreateNetwork",
        "GetNetwork",
        "ListNetworks",
        "UpdateNetwork",
        "DeleteNetwork",
        "CreateFloatingIp",
        "ListFloatingIps",
    } <= set(vars(Service))
    assert "UpdateFloatingIp" not in vars(Service) and no_update.list_field == "floating_ips"


def _toy_subnet(c: Call, m: pb.Subnet) -> list[Change]:
    net = c.owned("network", m.network, "subnet.network")
    sub = Subnet(id=c.new_id(), tenant=net.tenant, network_id=net.id, cidr=m.cidr)
    return ops.create_subnet(c.topo, sub, False, c.rev, c.now)


def test_a_parent_filters_lists(tables: Tables) -> None:
    optional = Resource(
        kind="subnet",
        plural="Subnets",
        to_pb=convert.subnet_to_pb,
        create=_toy_subnet,
        delete=lambda c, old, force: [],
        parent=Parent("network", "network", "network_id"),
    )
    required = dataclasses.replace(optional, parent=Parent("network", "network", "network_id", required=True))
    for net in ("a", "b"):
        create(tables, ALICE, net)
        for i in range(2):
            subnet = pb.Subnet(network=f"networks/{net}", cidr=f"10.{i}.0.0/24")
            request = pb.CreateSubnetRequest(subnet=subnet, subnet_id=f"{net}{i}")
            run(ALICE, lambda r, c: tables.create(optional, r, c), request)
    create(tables, BOB, "hidden")

    def names(spec: Resource, network: str) -> list[str]:
        page = run(ALICE, lambda r, c: tables.list(spec, r, c), pb.ListSubnetsRequest(network=network))
        return [s.name for s in page.subnets]

    assert names(optional, "networks/b") == ["subnets/b0", "subnets/b1"]
    assert names(optional, "") == ["subnets/a0", "subnets/a1", "subnets/b0", "subnets/b1"]
    assert names(optional, "networks/hidden") == []  # without `required`, only a filter
    assert names(required, "networks/a") == ["subnets/a0", "subnets/a1"]
    code, details = refusal(lambda: names(required, "networks/hidden"))
    assert code == grpc.StatusCode.NOT_FOUND and "'hidden'" in details
    code, details = refusal(lambda: names(required, ""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("network: required")
    first = run(
        ALICE,
        lambda r, c: tables.list(optional, r, c),
        pb.ListSubnetsRequest(network="networks/a", page_size=1),
    )
    code, details = refusal(
        lambda: run(
            ALICE,
            lambda r, c: tables.list(optional, r, c),
            pb.ListSubnetsRequest(network="networks/b", page_size=1, page_token=first.next_page_token),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "different query" in details


class Tokens:
    def lookup(self, token: str) -> Principal | None:
        return {"a": ALICE}.get(token)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method


class TokenCtx(Ctx):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}"), ("x-request-id", "req-1")]


def test_the_auth_interceptor_sets_the_caller_for_the_services_it_guards() -> None:
    seen: list[tuple[Principal, str]] = []

    def unary(request: Any, context: Any) -> str:
        seen.append((principal(), REQUEST.get()))
        return "ok"

    def stream(request: Any, context: Any) -> Iterator[Principal]:
        yield principal()
        yield principal()

    auth = AuthInterceptor(Tokens(), frozenset({"sdn.v1.TopologyService"}))  # type: ignore[arg-type]
    guarded = auth.intercept_service(
        lambda d: grpc.unary_unary_rpc_method_handler(unary), Details("/sdn.v1.TopologyService/GetServerInfo")
    )
    assert guarded.unary_unary(None, TokenCtx("a")) == "ok"
    assert seen == [(ALICE, "GetServerInfo req-1")] and CALLER.get() is None and REQUEST.get() == ""
    code, details = refusal(lambda: guarded.unary_unary(None, TokenCtx("b")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and details == "unknown or revoked token"
    watch = auth.intercept_service(
        lambda d: grpc.unary_stream_rpc_method_handler(stream), Details("/sdn.v1.TopologyService/Watch")
    )
    assert list(watch.unary_stream(None, TokenCtx("a"))) == [ALICE, ALICE] and CALLER.get() is None
    code, _ = refusal(lambda: list(watch.unary_stream(None, TokenCtx("b"))))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    handler = grpc.unary_unary_rpc_method_handler(unary)  # another service (health): not authenticated here
    assert auth.intercept_service(lambda d: handler, Details("/grpc.health.v1.Health/Check")) is handler
