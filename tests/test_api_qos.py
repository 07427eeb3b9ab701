"""The QoS plug-in's gRPC QosService through a real in-process server (the plug-in installed for this module
only): standard methods with paging, FieldMask and tenant scope, errors with their field, and the bindings'
preconditions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from apps import plugin
from controller import plugins
from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from sdn_qos import compile as qc
from sdn_qos import ops as qops
from sdn_qos.plugin import PLUGIN
from sdn_qos.records import QosPolicy, QosRule
from sdn_qos.v1 import qos_pb2 as qpb
from sdn_qos.v1 import qos_pb2_grpc as qpb_grpc
from tests.conftest import Api
from tests.test_api import expect_error, make_net, make_port, make_subnet
from topology.state import State

pytestmark = pytest.mark.usefixtures("qos_plugin")

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION, EXISTS = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS


class Qos:
    """The QosService stub as one caller."""

    def __init__(self, api: Api, md: Any) -> None:
        self.stub = qpb_grpc.QosServiceStub(api.channel)
        self.md = md

    def policy(self, ident: str = "", **kw: Any) -> qpb.QosPolicy:
        return self.stub.CreateQosPolicy(
            qpb.CreateQosPolicyRequest(qos_policy=qpb.QosPolicy(**kw), qos_policy_id=ident), metadata=self.md
        )

    def rule(self, policy: str, ident: str = "", **kw: Any) -> qpb.QosRule:
        return self.stub.CreateQosRule(
            qpb.CreateQosRuleRequest(qos_rule=qpb.QosRule(qos_policy=policy, **kw), qos_rule_id=ident),
            metadata=self.md,
        )

    def bind(self, policy: str, ident: str = "", **kw: Any) -> qpb.QosBinding:
        return self.stub.CreateQosBinding(
            qpb.CreateQosBindingRequest(
                qos_binding=qpb.QosBinding(qos_policy=policy, **kw), qos_binding_id=ident
            ),
            metadata=self.md,
        )

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.md)


def tenant(api: Api, name: str) -> Qos:
    return Qos(api, api.md(api.tenant_token(name)))


def alice_port(api: Api, q: Qos) -> None:
    make_net(api, q.md, "web")
    make_subnet(api, q.md, "networks/web", "10.0.0.0/24", "web-v4")
    make_port(api, q.md, "networks/web", "vm")


def test_policy_crud_with_paging_and_field_mask(api: Api) -> None:
    q = tenant(api, "alice")
    made = [q.policy(f"p{i}", display_name=f"policy {i}", description="d") for i in range(5)]
    assert [p.name for p in made] == [f"qosPolicies/p{i}" for i in range(5)]
    assert made[0].tenant == "alice" and made[0].revision > 0 and made[0].create_time.seconds > 0
    seen, token = [], ""
    while True:
        page = q.call("ListQosPolicies", qpb.ListQosPoliciesRequest(page_size=2, page_token=token))
        assert len(page.qos_policies) <= 2
        seen += [p.name for p in page.qos_policies]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == [p.name for p in made]  # every policy once
    got = q.call(
        "UpdateQosPolicy",
        qpb.UpdateQosPolicyRequest(
            qos_policy=qpb.QosPolicy(name="qosPolicies/p1", display_name="gold", description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
    )
    assert (got.display_name, got.description) == ("gold", "d")  # only the masked field changed
    assert got.revision > made[1].revision
    code, fields, _ = expect_error(
        q.call,
        "UpdateQosPolicy",
        qpb.UpdateQosPolicyRequest(
            qos_policy=qpb.QosPolicy(name="qosPolicies/p1", tenant="bob"),
            update_mask=field_mask_pb2.FieldMask(paths=["tenant"]),
        ),
    )
    assert code == INVALID and fields == ["update_mask"]  # tenant is immutable
    code, fields, reason = expect_error(
        q.call,
        "UpdateQosPolicy",
        qpb.UpdateQosPolicyRequest(
            qos_policy=qpb.QosPolicy(name="qosPolicies/p1", display_name="x", etag=made[1].etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")  # read before the update above
    q.call("DeleteQosPolicy", qpb.DeleteQosPolicyRequest(name="qosPolicies/p4"))
    code, _, _ = expect_error(q.call, "GetQosPolicy", qpb.GetQosPolicyRequest(name="qosPolicies/p4"))
    assert code == NOT_FOUND
    assert expect_error(q.policy, "p0")[0] == EXISTS


def test_rules_are_validated_field_by_field(api: Api) -> None:
    q = tenant(api, "alice")
    p = q.policy("gold").name
    r = q.rule(p, "bw", type="bandwidth_limit", direction="egress", max_kbps=1000, max_burst_kbps=800)
    assert (r.tenant, r.qos_policy, r.max_kbps) == ("alice", p, 1000)
    cases = [
        ({"type": "shaping"}, "type"),
        ({"type": "bandwidth_limit", "direction": "sideways", "max_kbps": 10}, "direction"),
        ({"type": "bandwidth_limit", "direction": "ingress", "max_kbps": 0}, "max_kbps"),
        ({"type": "dscp_marking", "dscp_mark": 7}, "dscp_mark"),
        ({"type": "dscp_marking", "dscp_mark": 26, "max_kbps": 10}, "max_kbps"),
    ]
    for kw, field in cases:
        code, fields, _ = expect_error(q.rule, p, **kw)
        assert (code, fields) == (INVALID, [f"qos_rule.{field}"]), kw
    # a second egress limit in one policy is refused on its direction
    code, fields, _ = expect_error(q.rule, p, type="bandwidth_limit", direction="egress", max_kbps=5)
    assert (code, fields) == (INVALID, ["qos_rule.direction"])
    up = q.call(
        "UpdateQosRule",
        qpb.UpdateQosRuleRequest(
            qos_rule=qpb.QosRule(name=r.name, max_kbps=2000, direction="ingress"),
            update_mask=field_mask_pb2.FieldMask(paths=["max_kbps"]),
        ),
    )
    assert (up.max_kbps, up.direction, up.max_burst_kbps) == (2000, "egress", 800)
    code, fields, _ = expect_error(
        q.call,
        "UpdateQosRule",
        qpb.UpdateQosRuleRequest(
            qos_rule=qpb.QosRule(name=r.name, direction="ingress"),
            update_mask=field_mask_pb2.FieldMask(paths=["direction"]),
        ),
    )
    assert code == INVALID and fields == ["update_mask"]  # direction is immutable
    listed = q.call("ListQosRules", qpb.ListQosRulesRequest(qos_policy=p)).qos_rules
    assert [x.name for x in listed] == [r.name]


def test_a_bound_policy_cannot_be_deleted_until_unbound(api: Api) -> None:
    q = tenant(api, "alice")
    alice_port(api, q)
    p = q.policy("gold").name
    b = q.bind(p, port="ports/vm")
    assert (b.tenant, b.port, b.network) == ("alice", "ports/vm", "")
    code, _, reason = expect_error(q.call, "DeleteQosPolicy", qpb.DeleteQosPolicyRequest(name=p))
    assert code == PRECONDITION, reason
    assert expect_error(q.bind, p, port="ports/vm")[0] == EXISTS  # one binding per port
    code, fields, _ = expect_error(q.bind, p, port="ports/vm", network="networks/web")
    assert (code, fields) == (INVALID, ["qos_binding.port"])  # exactly one of port and network
    assert q.call("GetQosPolicy", qpb.GetQosPolicyRequest(name=p)).name == p
    q.call("DeleteQosBinding", qpb.DeleteQosBindingRequest(name=b.name))
    q.call("DeleteQosPolicy", qpb.DeleteQosPolicyRequest(name=p))
    assert expect_error(q.call, "GetQosPolicy", qpb.GetQosPolicyRequest(name=p))[0] == NOT_FOUND


def test_another_tenants_policy_is_not_found_and_lists_are_scoped(api: Api) -> None:
    alice, bob = tenant(api, "alice"), tenant(api, "bob")
    alice_port(api, alice)
    p = alice.policy("gold").name
    alice.rule(p, type="dscp_marking", dscp_mark=26)
    for method, req in (
        ("GetQosPolicy", qpb.GetQosPolicyRequest(name=p)),
        ("DeleteQosPolicy", qpb.DeleteQosPolicyRequest(name=p)),
        (
            "UpdateQosPolicy",
            qpb.UpdateQosPolicyRequest(
                qos_policy=qpb.QosPolicy(name=p, display_name="mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
        ),
    ):
        assert expect_error(bob.call, method, req)[0] == NOT_FOUND, method
    code, fields, _ = expect_error(bob.rule, p, type="dscp_marking", dscp_mark=10)
    assert (code, fields) == (NOT_FOUND, [])  # as if it did not exist: no field says otherwise
    # bob cannot give alice's port a policy of his either
    bp = bob.policy("silver").name
    assert expect_error(bob.bind, bp, port="ports/vm") == (NOT_FOUND, [], "PORT_NOT_FOUND")
    assert bob.call("ListQosPolicies", qpb.ListQosPoliciesRequest()).qos_policies[0].name == bp
    assert len(bob.call("ListQosPolicies", qpb.ListQosPoliciesRequest()).qos_policies) == 1
    assert bob.call("ListQosRules", qpb.ListQosRulesRequest()).qos_rules == []
    admin = Qos(api, api.admin)
    every = admin.call("ListQosPolicies", qpb.ListQosPoliciesRequest()).qos_policies
    assert sorted(x.name for x in every) == sorted([p, bp])


def watch_until_synced(api: Api, md: Any, start: int = 0) -> list[pb.WatchEvent]:
    """A Watch's events up to its SYNCED (start 0: the snapshot; N: the changes after N)."""
    stream = api.stub.Watch(pb.WatchRequest(start_revision=start), metadata=md, timeout=20)
    out = []
    try:
        for ev in stream:
            if ev.type == pb.WatchEvent.SYNCED:
                return out
            out.append(ev)
    finally:
        stream.cancel()
    raise AssertionError("the stream ended before SYNCED")


def qos_events(events: list[pb.WatchEvent]) -> list[tuple[int, str, str]]:
    """(event type, message type, resource name) of the events carrying a plug-in's resource."""
    out: list[tuple[int, str, str]] = []
    for ev in events:
        if ev.WhichOneof("resource") == "plugin_resource":
            type_name = ev.plugin_resource.TypeName()
            msg: qpb.QosPolicy | qpb.QosRule = (
                qpb.QosPolicy() if type_name == "sdn.qos.v1.QosPolicy" else qpb.QosRule()
            )
            assert ev.plugin_resource.Unpack(msg)
            out.append((int(ev.type), type_name, msg.name))
    return out


def test_watch_carries_plugin_records_as_any_scoped_to_the_tenant(api: Api) -> None:
    alice, bob = tenant(api, "alice"), tenant(api, "bob")
    p = alice.policy("gold").name
    start = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin).revision
    r = alice.rule(p, "mark", type="dscp_marking", dscp_mark=26)
    alice.call("DeleteQosRule", qpb.DeleteQosRuleRequest(name=r.name))
    assert qos_events(watch_until_synced(api, alice.md)) == [
        (pb.WatchEvent.EXISTING, "sdn.qos.v1.QosPolicy", p)
    ]
    assert qos_events(watch_until_synced(api, alice.md, start)) == [
        (pb.WatchEvent.CREATED, "sdn.qos.v1.QosRule", r.name),
        (pb.WatchEvent.DELETED, "sdn.qos.v1.QosRule", r.name),
    ]
    assert qos_events(watch_until_synced(api, bob.md)) == []
    assert qos_events(watch_until_synced(api, bob.md, start)) == []


def test_server_info_lists_the_loaded_plugins(api: Api) -> None:
    for md in (api.admin, api.md(api.tenant_token("alice"))):
        info = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md)
        assert [(x.name, x.interface_version, x.app_id) for x in info.plugins] == [
            ("qos", plugin.PLUGIN_API, qc.APP_ID)
        ]
        assert info.plugins[0].version == PLUGIN.version
        assert list(info.plugins[0].kinds) == ["qos_policy", "qos_rule", "qos_binding"]
        assert list(info.plugins[0].services) == ["sdn.qos.v1.QosService"]
        first, count = info.plugins[0].first_meter, info.plugins[0].meter_count
        assert range(first, first + count) == qc.METERS
        assert dict(info.orphan_records) == {}


def test_records_of_an_uninstalled_plugin_are_kept_reported_and_not_served(tmp_path: Path) -> None:
    path = tmp_path / "topology.sqlite"
    state = State(path)
    state.write(
        lambda topo, rev, now: qops.create_policy(topo, QosPolicy(id="gold", tenant="alice"), rev, now)
    )
    state.write(
        lambda topo, rev, now: qops.create_rule(
            topo,
            QosRule(id="r1", tenant="alice", policy_id="gold", type="dscp_marking", dscp_mark=26),
            rev,
            now,
        )
    )
    state.close()
    plugins.uninstall(PLUGIN)
    try:
        state = State(path)
        srv = ApiServer(state, TokenFile(tmp_path / "tokens.json"), "127.0.0.1:0", workers=4)
        srv.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        try:
            endpoint = f"127.0.0.1:{srv.port}"
            api = Api(endpoint, srv.tokens.admin_token(), channel, pb_grpc.TopologyServiceStub(channel))
            info = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin)
            assert list(info.plugins) == [] and dict(info.orphan_records) == {"qos_policy": 1, "qos_rule": 1}
            alice = api.md(api.tenant_token("alice"))
            assert (
                dict(api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=alice).orphan_records) == {}
            )
            assert watch_until_synced(api, api.admin) == []  # not served, not even to an admin
            with pytest.raises(grpc.RpcError) as e:
                qpb_grpc.QosServiceStub(channel).ListQosPolicies(qpb.ListQosPoliciesRequest(), metadata=alice)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            channel.close()
            srv.stop(0)
            state.close()
    finally:
        assert plugins.install([PLUGIN]).loaded == [PLUGIN]
    state = State(path)  # installed again: the records are served as they were
    try:
        assert sorted(state.topology.extra["qos_rule"]) == ["r1"]
        assert state.topology.extra["qos_policy"]["gold"].tenant == "alice"
    finally:
        state.close()
