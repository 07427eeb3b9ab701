"""The gRPC QosService: three resource specs whose standard methods (controller/api/resources.py) are the
whole service. A binding is Neutron's qos_policy_id on a port or network, as a resource of its own so the
core's Port and Network messages know nothing of QoS."""

from __future__ import annotations

from typing import Any

from controller.api import convert
from controller.api.resources import Call, Parent, Resource, Tables, serve
from sdn_qos import ops
from sdn_qos.records import QosBinding, QosPolicy, QosRule
from sdn_qos.v1 import qos_pb2 as pb
from sdn_qos.v1 import qos_pb2_grpc as pb_grpc
from topology.model import Change

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QosService"].full_name


def policy_to_pb(r: QosPolicy) -> pb.QosPolicy:
    return pb.QosPolicy(
        name=convert.name_of(r.KIND, r.id),
        tenant=r.tenant,
        display_name=r.display_name,
        description=r.description,
        revision=r.revision,
        create_time=convert._ts(r.create_time),
        update_time=convert._ts(r.update_time),
        etag=str(r.revision),  # resources.etag (AIP-154)
    )


def rule_to_pb(r: QosRule) -> pb.QosRule:
    return pb.QosRule(
        name=convert.name_of(r.KIND, r.id),
        tenant=r.tenant,
        qos_policy=convert.name_of(QosPolicy.KIND, r.policy_id),
        type=r.type,
        direction=r.direction,
        max_kbps=r.max_kbps,
        max_burst_kbps=r.max_burst_kbps,
        dscp_mark=r.dscp_mark,
        revision=r.revision,
        create_time=convert._ts(r.create_time),
        update_time=convert._ts(r.update_time),
        etag=str(r.revision),  # resources.etag (AIP-154)
    )


def binding_to_pb(r: QosBinding) -> pb.QosBinding:
    return pb.QosBinding(
        name=convert.name_of(r.KIND, r.id),
        tenant=r.tenant,
        qos_policy=convert.name_of(QosPolicy.KIND, r.policy_id),
        port=convert.name_of("port", r.port_id),
        network=convert.name_of("network", r.network_id),
        revision=r.revision,
        create_time=convert._ts(r.create_time),
        update_time=convert._ts(r.update_time),
        etag=str(r.revision),  # resources.etag (AIP-154)
    )


def _create_policy(c: Call, m: pb.QosPolicy) -> list[Change]:
    rec = QosPolicy(
        id=c.new_id(),
        tenant=c.tenant_for(m.tenant, "qos_policy.tenant"),
        display_name=m.display_name,
        description=m.description,
    )
    return ops.create_policy(c.topo, rec, c.rev, c.now)


POLICY = Resource(
    kind="qos_policy",
    plural="QosPolicies",
    to_pb=policy_to_pb,
    create=_create_policy,
    update=lambda c, old, fields: ops.update_policy(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_policy(c.topo, old),
    mutable=frozenset(ops.POLICY_MUTABLE),
    immutable=frozenset({"tenant"}),
    output_only=frozenset({"name", "revision", "create_time", "update_time", "etag"}),
    pb_module=pb,
)


def _create_rule(c: Call, m: pb.QosRule) -> list[Change]:
    policy = c.owned("qos_policy", m.qos_policy, "qos_rule.qos_policy")
    rec = QosRule(
        id=c.new_id(),
        tenant=policy.tenant,
        policy_id=policy.id,
        type=m.type,
        direction=m.direction,
        max_kbps=m.max_kbps,
        max_burst_kbps=m.max_burst_kbps,
        dscp_mark=m.dscp_mark,
    )
    return ops.create_rule(c.topo, rec, c.rev, c.now)


RULE = Resource(
    kind="qos_rule",
    plural="QosRules",
    to_pb=rule_to_pb,
    create=_create_rule,
    update=lambda c, old, fields: ops.update_rule(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: ops.delete_rule(old),
    mutable=frozenset(ops.RULE_MUTABLE),
    immutable=frozenset({"qos_policy", "type", "direction"}),
    output_only=frozenset({"name", "tenant", "revision", "create_time", "update_time", "etag"}),
    parent=Parent("qos_policy", "qos_policy", "policy_id", token_key="policy_id"),
    pb_module=pb,
)


def _create_binding(c: Call, m: pb.QosBinding) -> list[Change]:
    policy = c.get("qos_policy", m.qos_policy, "qos_binding.qos_policy")
    port = c.owned("port", m.port, "qos_binding.port") if m.port else None
    net = c.owned("network", m.network, "qos_binding.network") if m.network else None
    target = port or net
    rec = QosBinding(
        id=c.new_id(),
        tenant=target.tenant if target is not None else c.p.tenant,
        policy_id=policy.id,
        port_id=port.id if port is not None else "",
        network_id=net.id if net is not None else "",
    )
    return ops.create_binding(c.topo, rec, c.rev, c.now)


def _binding_policy(c: Call, m: Any) -> str:
    return str(c.get("qos_policy", m.qos_policy, "qos_binding.qos_policy").id)


BINDING = Resource(
    kind="qos_binding",
    plural="QosBindings",
    to_pb=binding_to_pb,
    create=_create_binding,
    update=lambda c, old, fields: ops.update_binding(c.topo, old, fields["qos_policy"], c.rev, c.now),
    delete=lambda c, old, force: ops.delete_binding(old),
    mutable=frozenset(ops.BINDING_MUTABLE),
    immutable=frozenset({"port", "network"}),
    output_only=frozenset({"name", "tenant", "revision", "create_time", "update_time", "etag"}),
    values={"qos_policy": _binding_policy},
    parent=Parent("qos_policy", "qos_policy", "policy_id", token_key="policy_id"),
    pb_module=pb,
)

SPECS = (POLICY, RULE, BINDING)


class QosService(pb_grpc.QosServiceServicer):
    """Only standard methods: each is Tables' over its spec (installed by `serve` below)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables


serve(QosService, SPECS)


def register(host: Any) -> None:
    """The plug-in's api hook (controller/api/server.py PluginHost)."""
    host.tables.add_specs(SPECS)
    pb_grpc.add_QosServiceServicer_to_server(QosService(host.tables), host.server)
    host.services.append(SERVICE_NAME)
