"""Questions the compile and the API ask of the model about QoS (pure; the records live in Topology.extra)."""

from __future__ import annotations

from typing import cast

from sdn_qos.records import QosBinding, QosPolicy, QosRule
from topology.model import Topology


def policies(topo: Topology) -> dict[str, QosPolicy]:
    return cast(dict[str, QosPolicy], topo.table(QosPolicy.KIND))


def rules(topo: Topology) -> dict[str, QosRule]:
    return cast(dict[str, QosRule], topo.table(QosRule.KIND))


def bindings(topo: Topology) -> dict[str, QosBinding]:
    return cast(dict[str, QosBinding], topo.table(QosBinding.KIND))


def rules_of(topo: Topology, policy_id: str) -> list[QosRule]:
    return sorted((r for r in rules(topo).values() if r.policy_id == policy_id), key=lambda r: r.id)


def bindings_of(topo: Topology, policy_id: str) -> list[QosBinding]:
    return sorted((b for b in bindings(topo).values() if b.policy_id == policy_id), key=lambda b: b.id)


def binding_for(topo: Topology, port_id: str = "", network_id: str = "") -> QosBinding | None:
    for b in bindings(topo).values():
        if (port_id and b.port_id == port_id) or (network_id and b.network_id == network_id):
            return b
    return None


def policy_of_port(topo: Topology, port_id: str) -> str:
    """The policy that applies to a port: its own binding's, else its network's ("" for none)."""
    port = topo.ports.get(port_id)
    if port is None:
        return ""
    own = binding_for(topo, port_id=port_id)
    if own is not None:
        return own.policy_id
    net = binding_for(topo, network_id=port.network_id)
    return net.policy_id if net is not None else ""


def ports_of_policy(topo: Topology, policy_id: str) -> set[str]:
    """The ports a policy applies to (through their own binding or their network's)."""
    out: set[str] = set()
    for b in bindings_of(topo, policy_id):
        if b.port_id:
            out.add(b.port_id)
        else:
            out.update(p.id for p in topo.ports_of(b.network_id))
    return {p for p in out if policy_of_port(topo, p) == policy_id}
