"""Declarative apply through a real gRPC channel: the plan, one transaction (all or nothing, document paths
in refusals), idempotence, prune among applied objects only, tenant scope, the size limit, references by
name within the document and to existing objects, export round trips."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller import demo
from controller.api.apply import DEFAULT_MAX_OBJECTS
from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api, InProcessServer
from tests.test_api import details

CREATE, UPDATE, DELETE, REPLACE = (
    apb.ObjectChange.CREATE,
    apb.ObjectChange.UPDATE,
    apb.ObjectChange.DELETE,
    apb.ObjectChange.REPLACE,
)


def struct(document: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(document)
    return out


def applier(api: Api) -> apb_grpc.ApplyServiceStub:
    return apb_grpc.ApplyServiceStub(api.channel)


def apply(api: Api, md: Any, document: dict[str, Any], **kw: Any) -> apb.ApplyResponse:
    return applier(api).Apply(apb.ApplyRequest(document=struct(document), **kw), metadata=md)


def refused(
    api: Api, md: Any, document: dict[str, Any], **kw: Any
) -> tuple[grpc.StatusCode, list[str], str, str]:
    with pytest.raises(grpc.RpcError) as info:
        apply(api, md, document, **kw)
    code, fields, reason = details(info.value)
    return code, fields, reason, info.value.details()  # type: ignore[attr-defined]


def revision(api: Api, md: Any) -> int:
    return int(api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision)


def names(api: Api, md: Any, method: str, field: str, **kw: Any) -> set[str]:
    request = getattr(pb, f"{method}Request")(page_size=1000, **kw)
    return {x.name for x in getattr(getattr(api.stub, method)(request, metadata=md), field)}


def web(ports: int = 3, cidr: str = "10.0.0.0/24") -> dict[str, Any]:
    """A network, a subnet and `ports` ports (ports listed first: the document's order does not matter)."""
    return {
        "ports": [
            {"name": f"ports/p{i}", "network": "networks/web", "fixed_ips": [{"subnet": "subnets/web-v4"}]}
            for i in range(ports)
        ],
        "networks": [{"name": "web", "display_name": "web"}],
        "subnets": [{"name": "subnets/web-v4", "network": "networks/web", "cidr": cidr}],
    }


@pytest.fixture
def alice(api: Api) -> Any:
    return api.md(api.tenant_token("alice"))


# ---------------------------------------------------------------------------------------------- plan, apply


def test_apply_is_one_revision_and_again_is_an_empty_plan(api: Api, alice: Any) -> None:
    admin = api.admin
    # an external network of the operator's: referred to by name from the tenant's document
    ext = {
        "networks": [{"name": "public", "external": True}],
        "subnets": [{"name": "public-v4", "network": "networks/public", "cidr": "203.0.113.0/24"}],
    }
    apply(api, admin, ext)
    doc = web(4)
    doc["subnets"].append({"name": "db-v4", "network": "networks/web", "cidr": "10.0.1.0/24"})
    doc["security_groups"] = [{"name": "ssh", "display_name": "ssh"}]
    doc["security_group_rules"] = [
        {
            "name": "ssh-in",
            "security_group": "securityGroups/ssh",
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 22,
        }
    ]
    doc["ports"][0]["security_groups"] = ["securityGroups/ssh"]
    doc["routers"] = [
        {
            "name": "r1",
            "external_gateway": {"network": "networks/public"},
            "interfaces": [{"subnet": "subnets/web-v4"}, {"subnet": "subnets/db-v4"}],
            "routes": [{"destination": "192.168.7.0/24", "nexthop": "10.0.1.9"}],
        }
    ]
    doc["floating_ips"] = [{"name": "fip1", "floating_network": "networks/public", "port": "ports/p1"}]
    before = revision(api, alice)
    plan = apply(api, alice, doc, validate_only=True)
    assert revision(api, alice) == before and not plan.applied  # a plan stores nothing
    assert [(c.action, c.name) for c in plan.changes] == [
        (CREATE, "networks/web"),
        (CREATE, "subnets/web-v4"),
        (CREATE, "subnets/db-v4"),
        (CREATE, "securityGroups/ssh"),
        (CREATE, "securityGroupRules/ssh-in"),
        *[(CREATE, f"ports/p{i}") for i in range(4)],
        (CREATE, "routers/r1"),
        (CREATE, "floatingIps/fip1"),
    ]
    router = next(c for c in plan.changes if c.name == "routers/r1")
    assert {f.field for f in router.fields} == {"interfaces[0]", "interfaces[1]", "routes"}
    assert plan.changes[5].path == "ports[0]" and plan.objects == 11
    assert plan.plan.revision == before + 1
    assert names(api, alice, "ListNetworks", "networks") == {"networks/public"}

    done = apply(api, alice, doc)
    assert done.applied and done.revision == before + 1 == revision(api, alice)  # one transaction
    assert [(c.action, c.name) for c in done.changes] == [(c.action, c.name) for c in plan.changes]
    got = api.stub.GetRouter(pb.GetRouterRequest(name="routers/r1"), metadata=alice)
    assert sorted(i.subnet for i in got.interfaces) == ["subnets/db-v4", "subnets/web-v4"]
    assert [(r.destination, r.nexthop) for r in got.routes] == [("192.168.7.0/24", "10.0.1.9")]
    fip = api.stub.GetFloatingIp(pb.GetFloatingIpRequest(name="floatingIps/fip1"), metadata=alice)
    assert fip.port == "ports/p1" and fip.router == "routers/r1"
    port = api.stub.GetPort(pb.GetPortRequest(name="ports/p0"), metadata=alice)
    assert list(port.security_groups) == ["securityGroups/ssh"]

    for validate_only in (True, False):  # the same document again: nothing to do, nothing written
        again = apply(api, alice, doc, validate_only=validate_only)
        assert list(again.changes) == [] and not again.applied and not again.plan.chassis
    assert revision(api, alice) == before + 1


def test_update_plan_names_the_changed_fields(api: Api, alice: Any) -> None:
    doc = web(2)
    apply(api, alice, doc)
    doc["networks"][0]["display_name"] = "frontend"
    doc["networks"][0]["mtu"] = 1400
    doc["ports"][1]["admin_state_up"] = False
    doc["subnets"][0]["dns_servers"] = ["192.0.2.53"]
    plan = apply(api, alice, doc, validate_only=True)
    changed = {
        c.name: {f.field: (json.loads(f.before), json.loads(f.after)) for f in c.fields} for c in plan.changes
    }
    assert {c.action for c in plan.changes} == {UPDATE}
    assert changed["networks/web"]["display_name"] == ("web", "frontend")
    assert changed["networks/web"]["mtu"][1] == 1400
    assert changed["ports/p1"] == {"admin_state_up": (True, False)}
    assert changed["subnets/web-v4"] == {"dns_servers": ([], ["192.0.2.53"])}
    apply(api, alice, doc)
    net = api.stub.GetNetwork(pb.GetNetworkRequest(name="networks/web"), metadata=alice)
    assert (net.display_name, net.mtu) == ("frontend", 1400)
    assert not apply(api, alice, doc).changes
    # an immutable field is refused by its document path; a rule (no Update) is replaced
    doc["subnets"][0]["cidr"] = "10.9.0.0/24"
    code, fields, reason, _ = refused(api, alice, doc)
    assert (code, fields, reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["subnets[0].cidr"],
        "IMMUTABLE_FIELD",
    )


def test_a_rule_without_update_is_replaced(api: Api, alice: Any) -> None:
    doc: dict[str, Any] = {
        "security_groups": [{"name": "g"}],
        "security_group_rules": [
            {"name": "r", "security_group": "securityGroups/g", "direction": "INGRESS", "protocol": "TCP"}
        ],
    }
    apply(api, alice, doc)
    assert not apply(api, alice, doc).changes  # the server's spelling ("ingress") is the same value
    doc["security_group_rules"][0]["port_range_min"] = 443
    out = apply(api, alice, doc)
    assert [(c.action, c.name) for c in out.changes] == [(REPLACE, "securityGroupRules/r")]
    rule = api.stub.GetSecurityGroupRule(
        pb.GetSecurityGroupRuleRequest(name="securityGroupRules/r"), metadata=alice
    )
    assert (rule.port_range_min, rule.port_range_max) == (443, 443)


def test_router_interfaces_follow_the_document(api: Api, alice: Any) -> None:
    doc = web(1)
    doc["subnets"].append({"name": "b", "network": "networks/web", "cidr": "10.0.1.0/24"})
    doc["ports"].append({"name": "itf", "network": "networks/web", "fixed_ips": [{"subnet": "subnets/b"}]})
    doc["routers"] = [{"name": "r", "interfaces": [{"subnet": "subnets/web-v4"}, {"port": "ports/itf"}]}]
    apply(api, alice, doc)
    assert not apply(api, alice, doc).changes
    doc["routers"][0]["interfaces"] = [{"port": "ports/itf"}]
    plan = apply(api, alice, doc)
    assert [(c.name, [f.field for f in c.fields]) for c in plan.changes] == [("routers/r", ["interfaces"])]
    got = api.stub.GetRouter(pb.GetRouterRequest(name="routers/r"), metadata=alice)
    assert [i.subnet for i in got.interfaces] == ["subnets/b"]
    assert not apply(api, alice, doc).changes


def test_load_balancer_in_a_document(api: Api, alice: Any) -> None:
    doc = web(2)
    doc["load_balancers"] = [{"name": "lb", "vip_subnet": "subnets/web-v4"}]
    doc["listeners"] = [{"name": "http", "load_balancer": "loadBalancers/lb", "protocol_port": 80}]
    doc["pools"] = [{"name": "pool", "listener": "listeners/http"}]
    doc["members"] = [
        {"name": f"pools/pool/members/m{i}", "address": f"10.0.0.{10 + i}", "protocol_port": 8080}
        for i in range(2)
    ]
    doc["health_monitors"] = [
        {"name": "hm", "pool": "pools/pool", "type": "TCP", "delay": 2, "timeout": 1, "max_retries": 3}
    ]
    out = apply(api, alice, doc)
    assert len(out.changes) == 4 + 3 + 3
    assert not apply(api, alice, doc).changes
    lbs = pb_grpc.LoadBalancerServiceStub(api.channel)
    listener = lbs.GetListener(pb.GetListenerRequest(name="listeners/http"), metadata=alice)
    assert listener.default_pool == "pools/pool"
    doc["members"][1]["weight"] = 5
    out = apply(api, alice, doc)
    assert [(c.action, c.name) for c in out.changes] == [(UPDATE, "pools/pool/members/m1")]


# ---------------------------------------------------------------------------------------------- all or nothing


def test_a_bad_object_anywhere_refuses_the_whole_document(api: Api, alice: Any) -> None:
    doc = web(600, cidr="10.0.0.0/22")
    doc["ports"][412]["fixed_ips"][0]["ip_address"] = "10.9.9.9"
    before = revision(api, alice)
    code, fields, reason, message = refused(api, alice, doc)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["ports[412].fixed_ips[0].ip_address"])
    assert "ports[412] (ports/p412)" in message
    assert revision(api, alice) == before and not names(api, alice, "ListNetworks", "networks")
    assert not names(api, alice, "ListPorts", "ports")
    # the same for each way of being wrong, each named where the document has it
    cases: list[tuple[str, Any, grpc.StatusCode, str]] = [
        ("colour", "red", grpc.StatusCode.INVALID_ARGUMENT, "ports[7].colour"),
        ("mac_address", "not-a-mac", grpc.StatusCode.INVALID_ARGUMENT, "ports[7].mac_address"),
        ("admin_state_up", "maybe", grpc.StatusCode.INVALID_ARGUMENT, "ports[7]"),
        ("name", "Bad_Name", grpc.StatusCode.INVALID_ARGUMENT, "ports[7].name"),
        ("name", "ports/p3", grpc.StatusCode.INVALID_ARGUMENT, "ports[7].name"),  # twice in the document
        ("network", "networks/nowhere", grpc.StatusCode.NOT_FOUND, "ports[7]"),
    ]
    for key, value, want_code, want_field in cases:
        bad = web(10)
        bad["ports"][7][key] = value
        code, fields, _reason, _ = refused(api, alice, bad)
        assert (code, fields) == (want_code, [want_field]), (key, value)
    code, fields, _reason, _ = refused(api, alice, {"nets": []})
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["nets"])
    assert revision(api, alice) == before


def test_size_limit(server: InProcessServer, api: Api, alice: Any) -> None:
    doc = {"networks": [{"name": f"n{i}"} for i in range(DEFAULT_MAX_OBJECTS + 1)]}
    code, fields, reason, message = refused(api, alice, doc)
    assert (code, fields, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, ["document"], "DOCUMENT_TOO_LARGE")
    assert str(DEFAULT_MAX_OBJECTS) in message
    server.server.apply.max_objects = 5
    code, _fields, reason, message = refused(api, alice, web(5))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DOCUMENT_TOO_LARGE")
    assert "at most 5" in message and "7 objects" in message
    assert apply(api, alice, web(3)).applied


# ---------------------------------------------------------------------------------------------- prune


def test_prune_deletes_only_objects_an_apply_created(api: Api, alice: Any) -> None:
    apply(api, alice, web(3))
    api.stub.CreatePort(  # made by hand on the applied network: never pruned
        pb.CreatePortRequest(port=pb.Port(network="networks/web"), port_id="by-hand"), metadata=alice
    )
    smaller = web(1)
    kept = apply(api, alice, smaller)  # without prune: objects the document leaves out stay
    assert not kept.changes
    assert names(api, alice, "ListPorts", "ports") >= {"ports/p0", "ports/p1", "ports/p2", "ports/by-hand"}
    plan = apply(api, alice, smaller, prune=True, validate_only=True)
    assert [(c.action, c.name, c.path) for c in plan.changes] == [
        (DELETE, "ports/p1", ""),
        (DELETE, "ports/p2", ""),
    ]
    assert apply(api, alice, smaller, prune=True).applied
    assert names(api, alice, "ListPorts", "ports") == {"ports/p0", "ports/by-hand"}
    assert not apply(api, alice, smaller, prune=True).changes
    # pruning the network would take the hand-made port with it: refused, nothing deleted
    code, _fields, reason, message = refused(api, alice, {}, prune=True)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "prune subnets/web-v4" in message, (
        reason,
        message,
    )
    assert names(api, alice, "ListPorts", "ports") == {"ports/p0", "ports/by-hand"}
    api.stub.DeletePort(pb.DeletePortRequest(name="ports/by-hand"), metadata=alice)
    assert apply(api, alice, {}, prune=True).applied
    assert not names(api, alice, "ListNetworks", "networks") and not names(api, alice, "ListPorts", "ports")


def test_prune_leaves_objects_adopted_by_an_apply(api: Api, alice: Any) -> None:
    """An object made by hand and later named in a document is updated by it, but not marked: dropping it
    from the document (with prune) leaves it."""
    api.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="web"), metadata=alice)
    apply(api, alice, {"networks": [{"name": "web", "display_name": "adopted"}]})
    assert not apply(api, alice, {}, prune=True).changes
    assert names(api, alice, "ListNetworks", "networks") == {"networks/web"}


# ---------------------------------------------------------------------------------------------- tenants


def test_tenant_scope(api: Api, alice: Any) -> None:
    bob = api.md(api.tenant_token("bob"))
    apply(api, alice, web(2))
    # bob can neither change nor refer to alice's objects by name
    code, fields, _reason, _ = refused(api, bob, {"networks": [{"name": "web", "display_name": "mine"}]})
    assert (code, fields) == (grpc.StatusCode.NOT_FOUND, ["networks[0]"])
    doc = {"ports": [{"name": "sneak", "network": "networks/web"}]}
    code, fields, _reason, _ = refused(api, bob, doc)
    assert (code, fields) == (grpc.StatusCode.NOT_FOUND, ["ports[0]"])
    code, fields, _reason, _ = refused(api, bob, {"networks": [{"name": "b", "tenant": "alice"}]})
    assert (code, fields) == (grpc.StatusCode.PERMISSION_DENIED, ["networks[0].tenant"])
    # bob's prune does not reach alice's applied objects
    apply(api, bob, {"networks": [{"name": "bobnet"}]})
    assert apply(api, bob, {}, prune=True).applied
    assert names(api, alice, "ListPorts", "ports") == {"ports/p0", "ports/p1"}
    # an admin applies for several tenants; its prune covers the tenants its document names
    admin_doc = {
        "networks": [{"name": "a2", "tenant": "alice"}, {"name": "b2", "tenant": "bob"}],
    }
    apply(api, api.admin, admin_doc)
    a2 = api.stub.GetNetwork(pb.GetNetworkRequest(name="networks/a2"), metadata=alice)
    b2 = api.stub.GetNetwork(pb.GetNetworkRequest(name="networks/b2"), metadata=bob)
    assert (a2.tenant, b2.tenant) == ("alice", "bob")
    # the tenants admin_doc names are alice and bob: alice's applied objects it lacks (her web and its
    # ports) are pruned; bob's bobnet is gone already
    out = apply(api, api.admin, admin_doc, prune=True)
    assert {c.name for c in out.changes if c.action == DELETE} == {
        "networks/web",
        "subnets/web-v4",
        "ports/p0",
        "ports/p1",
    }
    assert names(api, alice, "ListNetworks", "networks") == {"networks/a2"}
    # a document naming only alice's tenant leaves bob's b2
    out = apply(api, api.admin, {"networks": [{"name": "a2", "tenant": "alice"}]}, prune=True)
    assert not out.changes
    assert names(api, bob, "ListNetworks", "networks") == {"networks/b2"}


# ---------------------------------------------------------------------------------------------- export


def test_export_round_trip_of_the_demo_topology(server: InProcessServer, api: Api) -> None:
    demo.seed(api.endpoint, api.admin_token, server.data_dir)
    tokens = json.loads((server.data_dir / "demo-tokens.json").read_text())
    ex = applier(api)
    for tenant in demo.TENANTS:
        md = api.md(tokens[tenant])
        exported = ex.Export(apb.ExportRequest(), metadata=md)
        document = json_format.MessageToDict(exported.document)
        extra = (
            {f"ports/{demo.DB_VM[0]}"} if tenant == demo.DUAL_TENANT else set()
        )  # alice's dual-stack db VM
        assert {p["name"] for p in document["ports"]} == {
            f"ports/{tenant}-vm1",
            f"ports/{tenant}-vm2",
            *extra,
        }
        assert "tenant" not in document["networks"][0]
        response = ex.Apply(apb.ApplyRequest(document=exported.document, validate_only=True), metadata=md)
        assert list(response.changes) == []
    everything = ex.Export(apb.ExportRequest(), metadata=api.admin)
    assert not ex.Apply(apb.ApplyRequest(document=everything.document), metadata=api.admin).changes
    code, _f, _r = _error(
        lambda: ex.Export(apb.ExportRequest(tenant="bob"), metadata=api.md(tokens["alice"]))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_export_applied_to_an_empty_model_makes_the_same_topology(
    server: InProcessServer, api: Api, alice: Any, tmp_path: Path
) -> None:
    doc = web(3)
    doc["routers"] = [{"name": "r", "interfaces": [{"subnet": "subnets/web-v4"}]}]
    apply(api, alice, doc)
    exported = applier(api).Export(apb.ExportRequest(), metadata=alice).document
    document = json_format.MessageToDict(exported)
    # a second controller, empty: the export builds the same objects with the same addresses
    from controller.api.auth import TokenFile
    from controller.api.server import ApiServer
    from topology.state import State

    state = State(tmp_path / "other.sqlite")
    tokens = TokenFile(tmp_path / "other-tokens.json")
    other = ApiServer(state, tokens, "127.0.0.1:0", workers=4)
    other.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{other.port}")
    try:
        stub = pb_grpc.TopologyServiceStub(channel)
        admin = Api.md(tokens.admin_token())
        md = Api.md(stub.CreateToken(pb.CreateTokenRequest(tenant="alice"), metadata=admin).token)
        again = apb_grpc.ApplyServiceStub(channel)
        assert again.Apply(apb.ApplyRequest(document=exported), metadata=md).applied
        assert not again.Apply(apb.ApplyRequest(document=exported), metadata=md).changes
        copy = json_format.MessageToDict(again.Export(apb.ExportRequest(), metadata=md).document)
        assert _without_ids(copy) == _without_ids(document)
    finally:
        channel.close()
        other.stop(0)
        state.close()


def _without_ids(document: dict[str, Any]) -> str:
    """The document with the default security group's generated id (and what names it) made constant."""
    text = json.dumps(document, sort_keys=True)
    for group in document.get("security_groups", []):
        if group.get("display_name") == "default":
            text = text.replace(group["name"], "securityGroups/DEFAULT")
    for rule in document.get("security_group_rules", []):
        text = text.replace(rule["name"], "securityGroupRules/RULE")
    return text


def _error(fn: Any) -> tuple[grpc.StatusCode, list[str], str]:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return details(info.value)


def test_violations_carry_the_document_path_in_bad_request(api: Api, alice: Any) -> None:
    bad = web(2)
    bad["subnets"][0]["cidr"] = "10.0.0.0/33"
    with pytest.raises(grpc.RpcError) as info:
        apply(api, alice, bad)
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    br = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)).Unpack(br)
    assert [v.field for v in br.field_violations] == ["subnets[0].cidr"]


# ---------------------------------------------------------------------------------------------- etcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from lab.etcd import EtcdCluster

    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def test_one_apply_is_one_etcd_transaction_seen_by_another_controller(etcd: Any, tmp_path: Path) -> None:
    from controller.api.auth import TokenFile
    from controller.api.server import ApiServer
    from topology.etcd_store import EtcdConfig, EtcdStore
    from topology.state_etcd import EtcdState

    prefix = f"/apply-{uuid.uuid4().hex[:8]}/"
    apis, cleanup, md = [], [], None
    try:
        for _ in range(2):  # the second reads the token file once the first has issued alice's token
            state = EtcdState(EtcdStore(EtcdConfig(tuple(etcd.endpoints), prefix=prefix)))
            srv = ApiServer(state, TokenFile(tmp_path / "tokens.json"), "127.0.0.1:0", workers=8)
            srv.start()
            channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
            cleanup.append((channel, srv, state))
            admin = TokenFile(tmp_path / "tokens.json").admin_token()
            apis.append(Api(f"127.0.0.1:{srv.port}", admin, channel, pb_grpc.TopologyServiceStub(channel)))
            md = md or apis[0].md(apis[0].tenant_token("alice"))
        a, b = apis
        apply(a, md, {"networks": [{"name": "first"}]})  # etcd's head key exists from here on
        head = revision(a, md)
        done = apply(a, md, web(300, cidr="10.0.0.0/23"))
        # 300 ports, a network, a subnet, the default group and its rules, the applied set: one etcd txn (a
        # txn moves etcd's revision by one, whatever it holds)
        assert done.applied and done.revision == head + 1 == cleanup[0][2].etcd.head()
        deadline = time.monotonic() + 10
        while revision(b, md) < done.revision:
            assert time.monotonic() < deadline, "the other controller never saw the apply"
            time.sleep(0.05)
        assert len(names(b, md, "ListPorts", "ports")) == 300
        # the other controller plans against the same model: nothing to do; prune works through it too
        assert not apply(b, md, web(300, cidr="10.0.0.0/23")).changes
        out = apply(b, md, web(299, cidr="10.0.0.0/23"), prune=True)
        assert [(c.action, c.name) for c in out.changes] == [
            (DELETE, "ports/p299"),
            (DELETE, "networks/first"),
        ]
    finally:
        for channel, srv, state in cleanup:
            channel.close()
            srv.stop(0)
            state.close()


def test_readme_shows_the_demo_document() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("<!-- demo-apply-document -->\n```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == demo.document()


def test_a_dual_stack_gateway_applies_and_again_is_an_empty_plan(api: Api, alice: Any) -> None:
    ext = {
        "networks": [{"name": "public", "external": True}],
        "subnets": [
            {"name": "public-v4", "network": "networks/public", "cidr": "203.0.113.0/24"},
            {"name": "public-v6", "network": "networks/public", "cidr": "2001:db8:113::/64"},
        ],
    }
    apply(api, api.admin, ext)
    both = [{"subnet": "subnets/public-v4"}, {"subnet": "subnets/public-v6"}]
    doc = {"routers": [{"name": "r6", "external_gateway": {"network": "networks/public", "fixed_ips": both}}]}
    apply(api, alice, doc)
    got = api.stub.GetRouter(pb.GetRouterRequest(name="routers/r6"), metadata=alice)
    assert [f.subnet for f in got.external_gateway.fixed_ips] == ["subnets/public-v4", "subnets/public-v6"]
    assert not apply(api, alice, doc).changes
