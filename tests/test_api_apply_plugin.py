"""Apply with a plug-in's kinds (the QoS plug-in): they come in through the same resource tables, written
after the core's, refused by their document path, exported and pruned like the core's."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format

from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc
from tests.conftest import Api
from tests.test_api import details
from tests.test_api_apply import apply, names, web

pytestmark = pytest.mark.usefixtures("qos_plugin")


def test_plugin_kinds_in_a_document(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    doc = web(2)
    doc["qos_policies"] = [{"name": "gold", "display_name": "gold"}]
    doc["qos_rules"] = [
        {"name": "gold-bw", "qos_policy": "qosPolicies/gold", "type": "bandwidth_limit", "max_kbps": 10000}
    ]
    doc["qos_bindings"] = [{"name": "p0-gold", "qos_policy": "qosPolicies/gold", "port": "ports/p0"}]
    out = apply(api, md, doc)
    assert [c.name for c in out.changes][-3:] == [
        "qosPolicies/gold",
        "qosRules/gold-bw",
        "qosBindings/p0-gold",
    ]
    assert not apply(api, md, doc).changes
    exported = apb_grpc.ApplyServiceStub(api.channel).Export(apb.ExportRequest(), metadata=md).document
    assert json_format.MessageToDict(exported)["qos_rules"][0]["max_kbps"] == 10000
    assert not apply(api, md, json_format.MessageToDict(exported)).changes
    doc["qos_rules"][0]["max_kbps"] = 20000
    out = apply(api, md, doc)
    assert [(c.name, [f.field for f in c.fields]) for c in out.changes] == [
        ("qosRules/gold-bw", ["max_kbps"])
    ]
    doc["qos_rules"][0]["max_kbps"] = 0
    with pytest.raises(grpc.RpcError) as info:
        apply(api, md, doc)
    code, fields, _reason = details(info.value)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["qos_rules[0].max_kbps"])
    del doc["qos_bindings"], doc["qos_rules"], doc["qos_policies"]
    out = apply(api, md, doc, prune=True)
    assert {c.name for c in out.changes} == {"qosPolicies/gold", "qosRules/gold-bw", "qosBindings/p0-gold"}
    assert names(api, md, "ListPorts", "ports") == {"ports/p0", "ports/p1"}
