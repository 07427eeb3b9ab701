"""Neutron's QoS API over the QoS plug-in (loaded for this module): policies, bandwidth-limit and
DSCP-marking rules as a policy's per-type sub-collections, and a port's or network's qos_policy_id as the
plug-in's binding, through plain HTTP and the real `openstack` command."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.test_neutron_api import Rest, check_renders, error, rest, tenant_net  # noqa: F401  (rest: the fixture)
from tests.test_neutron_clients import osc

pytestmark = pytest.mark.usefixtures("qos_plugin")


def test_policies_rules_and_bindings(rest: Rest, api: Api) -> None:  # noqa: F811
    aliases = {e["alias"] for e in rest.ok("GET", "/v2.0/extensions")["extensions"]}
    assert {"qos", "qos-bw-limit-direction"} <= aliases
    check_renders(rest)  # the QoS mappings too
    pol = rest.ok(
        "POST", "/v2.0/qos/policies", {"policy": {"name": "gold", "description": "g"}}, "alice", 201
    )
    pid = pol["policy"]["id"]
    bw = rest.ok(
        "POST", f"/v2.0/qos/policies/{pid}/bandwidth_limit_rules",
        {"bandwidth_limit_rule": {"max_kbps": 1000, "max_burst_kbps": 800, "direction": "ingress"}}, "alice", 201,
    )["bandwidth_limit_rule"]  # fmt: skip
    assert (bw["max_kbps"], bw["max_burst_kbps"], bw["direction"], bw["qos_policy_id"]) == (
        1000,
        800,
        "ingress",
        pid,
    )
    dscp = rest.ok(
        "POST", f"/v2.0/qos/policies/{pid}/dscp_marking_rules", {"dscp_marking_rule": {"dscp_mark": 26}}, "alice", 201
    )["dscp_marking_rule"]  # fmt: skip
    # each sub-collection holds its own type only
    listed = rest.ok("GET", f"/v2.0/qos/policies/{pid}/bandwidth_limit_rules", token="alice")[
        "bandwidth_limit_rules"
    ]
    assert [r["id"] for r in listed] == [bw["id"]]
    status, answer = rest.call(
        "GET", f"/v2.0/qos/policies/{pid}/bandwidth_limit_rules/{dscp['id']}", token="alice"
    )
    assert status == 404 and error(answer)[0] == "QosRuleNotFound"
    status, answer = rest.call(
        "DELETE", f"/v2.0/qos/policies/{pid}/bandwidth_limit_rules/{dscp['id']}", token="alice"
    )
    assert status == 404
    status, answer = rest.call(
        "POST",
        f"/v2.0/qos/policies/{pid}/dscp_marking_rules",
        {"dscp_marking_rule": {"dscp_mark": 27}},
        "alice",
    )
    assert status == 400 and "dscp_mark" in error(answer)[1]
    shown = rest.ok("GET", f"/v2.0/qos/policies/{pid}", token="alice")["policy"]
    assert {r["type"] for r in shown["rules"]} == {"bandwidth_limit", "dscp_marking"}
    updated = rest.ok(
        "PUT", f"/v2.0/qos/policies/{pid}/bandwidth_limit_rules/{bw['id']}",
        {"bandwidth_limit_rule": {"max_kbps": 2000}}, "alice",
    )["bandwidth_limit_rule"]  # fmt: skip
    assert updated["max_kbps"] == 2000
    status, answer = rest.call("GET", f"/v2.0/qos/policies/{pid}", token="bob")
    assert status == 404 and error(answer)[0] == "QosPolicyNotFound"
    # a port's qos_policy_id is the plug-in's binding port-<id>
    net, _ = tenant_net(rest, "alice", "a", "10.0.0.0/24")
    port = rest.ok("POST", "/v2.0/ports", {"port": {"network_id": net, "qos_policy_id": pid}}, "alice", 201)[
        "port"
    ]
    assert port["qos_policy_id"] == pid
    binding = rest.server.server.wsgi_app.tables.state.topology.table("qos_binding")[f"port-{port['id']}"]
    assert binding.policy_id == pid and binding.port_id == port["id"]
    off = rest.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"qos_policy_id": None}}, "alice")["port"]
    assert off["qos_policy_id"] is None
    on = rest.ok("PUT", f"/v2.0/networks/{net}", {"network": {"qos_policy_id": pid}}, "alice")["network"]
    assert on["qos_policy_id"] == pid
    status, answer = rest.call(
        "PUT", f"/v2.0/ports/{port['id']}", {"port": {"qos_policy_id": "nope"}}, "alice"
    )
    assert status == 404 and error(answer)[0] == "QosPolicyNotFound"
    status, answer = rest.call("DELETE", f"/v2.0/qos/policies/{pid}", token="alice")
    assert status == 409, answer  # the network still uses it
    # a POST whose qos_policy_id names no policy of the caller's fails whole: no port is left behind
    before = {p["id"] for p in rest.ok("GET", "/v2.0/ports", None, "alice")["ports"]}
    for policy in ("nope", pid):
        who = "bob" if policy == pid else "alice"  # bob may not see alice's policy
        bob_net = net if who == "alice" else tenant_net(rest, "bob", "b", "10.1.0.0/24")[0]
        status, answer = rest.call(
            "POST", "/v2.0/ports", {"port": {"network_id": bob_net, "qos_policy_id": policy}}, who
        )
        assert status == 404 and error(answer)[0] == "QosPolicyNotFound", answer
        assert not rest.ok("GET", "/v2.0/ports", None, "bob")["ports"]
    assert {p["id"] for p in rest.ok("GET", "/v2.0/ports", None, "alice")["ports"]} == before


def test_openstack_cli_qos(rest: Rest) -> None:  # noqa: F811
    osc(rest, "alice", "network", "qos", "policy", "create", "silver")
    rule = osc(rest, "alice", "network", "qos", "rule", "create", "--type", "bandwidth-limit", "--max-kbps", "1000",
               "--max-burst-kbits", "800", "--egress", "silver")  # fmt: skip
    assert (rule["max_kbps"], rule["direction"]) == (1000, "egress")
    osc(
        rest,
        "alice",
        "network",
        "qos",
        "rule",
        "create",
        "--type",
        "dscp-marking",
        "--dscp-mark",
        "26",
        "silver",
    )
    rules: Any = osc(rest, "alice", "network", "qos", "rule", "list", "silver")
    assert sorted(r["Type"] for r in rules) == ["bandwidth_limit", "dscp_marking"]
    tenant_net(rest, "alice", "web", "10.0.0.0/24")
    port = osc(rest, "alice", "port", "create", "--network", "web", "--qos-policy", "silver", "vm1")
    assert port["qos_policy_id"] == osc(rest, "alice", "network", "qos", "policy", "show", "silver")["id"]
