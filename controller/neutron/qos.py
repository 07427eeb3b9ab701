"""Neutron's QoS API (/v2.0/qos) over the QoS plug-in's tables: policies, and their bandwidth-limit and
DSCP-marking rules as Neutron's per-type sub-collections of a policy. Served only while the plug-in is loaded
(the kinds are named, not imported: the core does not depend on a plug-in)."""

from __future__ import annotations

from typing import Any

from controller.api.resources import Tables
from controller.neutron.mapping import (
    Attr,
    BadInput,
    Kind,
    View,
    as_str,
    common_attrs,
    computed,
    const,
    ident,
    number,
    text,
)

QOS = "/v2.0/qos"
BANDWIDTH_LIMIT = (("type", "bandwidth_limit"),)
DSCP_MARKING = (("type", "dscp_marking"),)


def _rules_of(v: View, m: Any) -> list[dict[str, Any]]:
    """The policy's rules as Neutron lists them inside a policy."""
    me = ident(m.name)
    with v.tables.state.lock:
        every: list[Any] = list(v.tables.state.topology.table("qos_rule").values())
    rules = [r for r in every if r.policy_id == me]
    out = []
    for r in sorted(rules, key=lambda r: r.id):
        rule: dict[str, Any] = {"id": r.id, "qos_policy_id": me, "type": r.type}
        if r.type == "bandwidth_limit":
            rule.update(max_kbps=r.max_kbps, max_burst_kbps=r.max_burst_kbps, direction=r.direction)
        else:
            rule.update(dscp_mark=r.dscp_mark)
        out.append(rule)
    return out


POLICY = Kind(
    "qos_policy",
    "policy",
    "policies",
    QOS,
    (
        *common_attrs(name=True, description=True),
        computed("rules", _rules_of),
        const("shared", False),
        const("is_default", False),
    ),
)


def _rule_attrs(*own: Any) -> tuple[Any, ...]:
    return (
        *common_attrs(name=False, description=False),
        computed("qos_policy_id", lambda v, m: ident(m.qos_policy)),
        *own,
    )


BANDWIDTH_LIMIT_RULE = Kind(
    "qos_rule",
    "bandwidth_limit_rule",
    "bandwidth_limit_rules",
    QOS,
    _rule_attrs(number("max_kbps"), number("max_burst_kbps"), text("direction")),
    parent="policies",
    parent_kind="qos_policy",
    parent_field="qos_policy",
    fixed=BANDWIDTH_LIMIT,
)

DSCP_MARKING_RULE = Kind(
    "qos_rule",
    "dscp_marking_rule",
    "dscp_marking_rules",
    QOS,
    _rule_attrs(number("dscp_mark")),
    parent="policies",
    parent_kind="qos_policy",
    parent_field="qos_policy",
    fixed=DSCP_MARKING,
)

KINDS = (POLICY, BANDWIDTH_LIMIT_RULE, DSCP_MARKING_RULE)


def qos_policy_id(target: str) -> Attr:
    """`qos_policy_id` of a port or network (`target`): the QoS plug-in's binding "<target>-<id>" (as
    `sdnctl network-qos set-port` names it); null removes it. Written after the port or network itself."""
    collection = {"port": "ports", "network": "networks"}[target]

    def get(v: View, m: Any) -> str | None:
        if "qos_binding" not in v.tables.specs:
            return None
        with v.tables.state.lock:
            binding = v.tables.state.topology.table("qos_binding").get(f"{target}-{ident(m.name)}")
        return None if binding is None else str(getattr(binding, "policy_id", "")) or None

    def after(tables: Tables, record: str, value: Any) -> None:
        spec = tables.specs.get("qos_binding")
        if spec is None:
            raise BadInput("qos_policy_id", "QoS is not available here (the qos plug-in is not loaded)")
        module = spec.pb_module
        name = f"qosBindings/{target}-{record}"
        policy = as_str("qos_policy_id", value)
        with tables.state.lock:
            exists = f"{target}-{record}" in tables.state.topology.table("qos_binding")
        if not policy:
            if exists:
                tables.delete(spec, module.DeleteQosBindingRequest(name=name), None)
            return
        if exists:
            req = module.UpdateQosBindingRequest()
            req.qos_binding.name = name
            req.qos_binding.qos_policy = f"qosPolicies/{policy}"
            req.update_mask.paths.append("qos_policy")
            tables.update(spec, req, None)
            return
        binding = module.QosBinding(qos_policy=f"qosPolicies/{policy}")
        setattr(binding, target, f"{collection}/{record}")
        tables.create(
            spec,
            module.CreateQosBindingRequest(qos_binding=binding, qos_binding_id=f"{target}-{record}"),
            None,
        )

    return Attr("qos_policy_id", get, None, after=after)
