"""The QoS plug-in's records: policies, their rules, and bindings of a policy to a port or a network.

Kept by the controller's generic store like the core's records (revisioned, durable, in Watch); an
uninstalled plug-in's records stay in the store untouched (controller/plugins.py reports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

BANDWIDTH_LIMIT = "bandwidth_limit"
DSCP_MARKING = "dscp_marking"
RULE_TYPES = (BANDWIDTH_LIMIT, DSCP_MARKING)
EGRESS = "egress"  # from the VM (Neutron's direction: as seen from the VM)
INGRESS = "ingress"  # to the VM
DIRECTIONS = (EGRESS, INGRESS)
#: Neutron's VALID_DSCP_MARKS: 0, the class selectors, AF11..AF43, EF (46)
VALID_DSCP_MARKS = frozenset(
    {0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56}
)


@dataclass(frozen=True)
class QosPolicy:
    KIND: ClassVar[str] = "qos_policy"
    id: str
    tenant: str
    display_name: str = ""
    description: str = ""
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class QosRule:
    KIND: ClassVar[str] = "qos_rule"
    id: str
    tenant: str
    policy_id: str
    type: str
    direction: str = EGRESS
    max_kbps: int = 0
    max_burst_kbps: int = 0
    dscp_mark: int = 0
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True)
class QosBinding:
    """Neutron's qos_policy_id on a port (`port_id`) or a network (`network_id`): exactly one is set."""

    KIND: ClassVar[str] = "qos_binding"
    id: str
    tenant: str
    policy_id: str
    port_id: str = ""
    network_id: str = ""
    revision: int = 0
    create_time: float = 0.0
    update_time: float = 0.0


RECORDS = (QosPolicy, QosRule, QosBinding)
COLLECTIONS = {"qos_policy": "qosPolicies", "qos_rule": "qosRules", "qos_binding": "qosBindings"}
