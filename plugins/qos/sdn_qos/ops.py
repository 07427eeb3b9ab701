"""Validated QoS model writes: each returns the changes (kind, id, old, new) of one write, or raises an
ApiError naming the refused field relative to the resource ("max_kbps"), as topology/ops*.py do."""

from __future__ import annotations

import dataclasses
from typing import Any

from sdn_qos import model
from sdn_qos.records import (
    BANDWIDTH_LIMIT,
    DIRECTIONS,
    DSCP_MARKING,
    EGRESS,
    RULE_TYPES,
    VALID_DSCP_MARKS,
    QosBinding,
    QosPolicy,
    QosRule,
)
from topology import errors
from topology.model import Change, Topology

MAX_NAME = 255
MAX_KBPS = (1 << 32) - 1
POLICY_MUTABLE = {"display_name", "description"}
RULE_MUTABLE = {"max_kbps", "max_burst_kbps", "dscp_mark"}
BINDING_MUTABLE = {"qos_policy"}


def _ch(old: Any, new: Any) -> Change:
    """One change of a plug-in record (Record, the core's union, does not name the plug-in's classes)."""
    rec = new if new is not None else old
    return (rec.KIND, rec.id, old, new)


def _stamp(rec: Any, rev: int, now: float, created: bool) -> Any:
    if created:
        return dataclasses.replace(rec, revision=rev, create_time=now, update_time=now)
    return dataclasses.replace(rec, revision=rev, update_time=now)


def _name(value: str, path: str) -> None:
    if len(value) > MAX_NAME:
        raise errors.invalid(path, f"longer than {MAX_NAME} characters")


# ------------------------------------------------------------------------------------------------ policies


def create_policy(topo: Topology, rec: QosPolicy, rev: int, now: float) -> list[Change]:
    _name(rec.display_name, "display_name")
    _name(rec.description, "description")
    return [_ch(None, _stamp(rec, rev, now, True))]


def update_policy(
    topo: Topology, old: QosPolicy, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    for path in ("display_name", "description"):
        if path in fields:
            _name(fields[path], path)
    return [_ch(old, _stamp(dataclasses.replace(old, **fields), rev, now, False))]


def delete_policy(topo: Topology, old: QosPolicy) -> list[Change]:
    """Refused while a port or network uses it (Neutron: 409 QosPolicyInUse); its rules go with it."""
    used = model.bindings_of(topo, old.id)
    if used:
        raise errors.failed_precondition(
            "QOS_POLICY_IN_USE",
            f"qos policy {old.id!r} is bound to {len(used)} port(s) or network(s) (binding {used[0].id!r})",
            binding=used[0].id,
        )
    out: list[Change] = [_ch(r, None) for r in model.rules_of(topo, old.id)]
    return [*out, _ch(old, None)]


# ------------------------------------------------------------------------------------------------ rules


def _check_rule(rec: QosRule) -> None:
    if rec.type == BANDWIDTH_LIMIT:
        if rec.direction not in DIRECTIONS:
            raise errors.invalid("direction", f"must be one of {', '.join(DIRECTIONS)}")
        if not 0 < rec.max_kbps <= MAX_KBPS:
            raise errors.invalid("max_kbps", f"must be 1..{MAX_KBPS} kbit/s")
        if not 0 <= rec.max_burst_kbps <= MAX_KBPS:
            raise errors.invalid("max_burst_kbps", f"must be 0..{MAX_KBPS} kbit (0: 80% of max_kbps)")
        if rec.dscp_mark:
            raise errors.invalid("dscp_mark", "only for dscp_marking rules")
    else:
        if rec.direction != EGRESS:
            raise errors.invalid("direction", "dscp_marking rules are egress only (packets the VM sends)")
        if rec.dscp_mark not in VALID_DSCP_MARKS:
            raise errors.invalid("dscp_mark", f"must be one of {sorted(VALID_DSCP_MARKS)}")
        if rec.max_kbps or rec.max_burst_kbps:
            raise errors.invalid("max_kbps", "only for bandwidth_limit rules")


def create_rule(topo: Topology, rec: QosRule, rev: int, now: float) -> list[Change]:
    """One rule of a type per direction and policy (Neutron refuses a second: here INVALID_ARGUMENT)."""
    if rec.type not in RULE_TYPES:
        raise errors.invalid("type", f"must be one of {', '.join(RULE_TYPES)}")
    rec = dataclasses.replace(rec, direction=rec.direction or EGRESS)
    _check_rule(rec)
    for other in model.rules_of(topo, rec.policy_id):
        if (other.type, other.direction) == (rec.type, rec.direction):
            raise errors.invalid(
                "type" if rec.type == DSCP_MARKING else "direction",
                f"policy {rec.policy_id!r} already has a {rec.type} rule for {rec.direction} ({other.id!r})",
                reason="DUPLICATE_RULE",
            )
    return [_ch(None, _stamp(rec, rev, now, True))]


def update_rule(topo: Topology, old: QosRule, fields: dict[str, Any], rev: int, now: float) -> list[Change]:
    new = dataclasses.replace(old, **fields)
    _check_rule(new)
    return [_ch(old, _stamp(new, rev, now, False))]


def delete_rule(old: QosRule) -> list[Change]:
    return [_ch(old, None)]


# ------------------------------------------------------------------------------------------------ bindings


def create_binding(topo: Topology, rec: QosBinding, rev: int, now: float) -> list[Change]:
    """A port or a network (exactly one) gets the policy; one binding per port or network."""
    if bool(rec.port_id) == bool(rec.network_id):
        raise errors.invalid("port", "exactly one of port and network is required")
    other = model.binding_for(topo, port_id=rec.port_id, network_id=rec.network_id)
    if other is not None:
        what = "port" if rec.port_id else "network"
        raise errors.already_exists(
            "qos_binding",
            other.id,
            reason="QOS_BINDING_EXISTS",
            message=f"{what} {rec.port_id or rec.network_id!r} already has a qos policy (binding {other.id!r})",
        )
    return [_ch(None, _stamp(rec, rev, now, True))]


def update_binding(topo: Topology, old: QosBinding, policy_id: str, rev: int, now: float) -> list[Change]:
    new = dataclasses.replace(old, policy_id=policy_id)
    return [_ch(old, _stamp(new, rev, now, False))]


def delete_binding(old: QosBinding) -> list[Change]:
    return [_ch(old, None)]
