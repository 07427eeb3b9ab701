"""Security groups, their rules and router firewalls (FWaaS) as resource specs (controller/resources.py); the
TopologyService serves them. Writes go to topology.ops_security.

"securityGroups/default" names a tenant's default group: the caller's in reads, the owning tenant's where
a group is referenced from something of a tenant (a rule's remote group). Every security-group call of a
tenant that has no default group yet makes it first (Neutron does the same on a tenant's first call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.api import convert
from controller.api.auth import Principal
from controller.api.resources import Call, KeepAndFilters, Resource, Tables
from proto.sdn.v1 import topology_pb2 as pb
from topology import errors
from topology import ops_security as sec
from topology.model import Change, Topology
from topology.records import FirewallGroup, FirewallPolicy, FirewallRule, SecurityGroup, SecurityGroupRule

# ------------------------------------------------------------------------------------------ groups


def ensure_default(tables: Tables, tenant: str, request: Any = None) -> None:
    """Make the tenant's default group if it has none (not in a validate_only dry run)."""
    if getattr(request, "validate_only", False):
        return
    state = tables.state
    with state.lock:
        if tenant in state.topology.default_groups:
            return
    state.write(lambda topo, rev, now: sec.ensure_default_group(topo, tenant, rev, now)[1])


def group_id(topo: Topology, p: Principal, name: str, field_path: str, tenant: str = "") -> str:
    """The id a group name stands for ("default": the tenant's default group)."""
    ident = convert.parse_name("security_group", name, field_path)
    if ident != sec.DEFAULT_GROUP_REF:
        return ident
    gid = topo.default_groups.get(tenant or p.tenant)
    if gid is None:
        raise errors.not_found("security_group", ident)
    return gid


def _group_lookup(
    tables: Tables, topo: Topology, p: Principal, name: str, field_path: str, owned: bool
) -> SecurityGroup:
    gid = group_id(topo, p, name, field_path)
    rec = topo.security_groups.get(gid)
    if rec is None or not p.can_see(rec.tenant):
        raise errors.not_found("security_group", gid)
    return rec


def _group_pb(tables: Tables, group: SecurityGroup, changes: Sequence[Change]) -> pb.SecurityGroup:
    """The group with its rules as the model has them, or as `changes` would leave them (dry runs)."""
    with tables.state.lock:
        rules = {r.id: r for r in tables.state.topology.group_rules_of(group.id)}
    for kind, ident, _old, new in changes:
        if kind == "security_group_rule":
            rules.pop(ident, None)
            if isinstance(new, SecurityGroupRule) and new.security_group_id == group.id:
                rules[ident] = new
    return convert.security_group_to_pb(group, sorted(rules.values(), key=lambda r: r.id))


def _group_before(tables: Tables, p: Principal, request: Any, method: str) -> None:
    if method != "create":  # creating a group makes the default group in the same write
        ensure_default(tables, p.tenant, request)


def _create_group(c: Call, m: pb.SecurityGroup) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "security_group.tenant")
    group = SecurityGroup(
        id=c.new_id(), tenant=tenant, display_name=m.display_name, description=m.description
    )
    return sec.create_security_group(c.topo, group, c.rev, c.now)


SECURITY_GROUP = Resource(
    kind="security_group",
    plural="SecurityGroups",
    to_pb=convert.security_group_to_pb,
    create=_create_group,
    update=lambda c, old, fields: sec.update_security_group(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: sec.delete_security_group(c.topo, old, force, c.p.admin, c.rev, c.now),
    mutable=frozenset(sec.SECURITY_GROUP_MUTABLE),
    immutable=frozenset({"name", "tenant"}),
    output_only=frozenset({"rules", "revision", "create_time", "update_time"}),
    before=_group_before,
    show=_group_pb,
    lookup=_group_lookup,
)

# ------------------------------------------------------------------------------------------ rules


def _rule_before(tables: Tables, p: Principal, request: Any, method: str) -> None:
    if method in ("create", "list"):
        ensure_default(tables, p.tenant, request)


def _create_rule(c: Call, m: pb.SecurityGroupRule) -> list[Change]:
    remote = (
        convert.parse_name("security_group", m.remote_group, "security_group_rule.remote_group")
        if m.remote_group
        else ""
    )
    group = c.owned("security_group", m.security_group, "security_group_rule.security_group")
    rule = SecurityGroupRule(
        id=c.new_id(),
        tenant=group.tenant,
        security_group_id=group.id,
        direction=m.direction.strip().lower(),
        ethertype=m.ethertype.strip(),
        protocol=m.protocol,
        port_range_min=m.port_range_min,
        port_range_max=m.port_range_max,
        icmp_type=m.icmp_type if m.HasField("icmp_type") else -1,
        icmp_code=m.icmp_code if m.HasField("icmp_code") else -1,
        remote_ip_prefix=m.remote_ip_prefix.strip(),
        remote_group_id=remote,
        description=m.description,
    )
    if rule.icmp_type < -1 or rule.icmp_code < -1:
        raise errors.invalid("icmp_type" if rule.icmp_type < -1 else "icmp_code", "must be 0-255")
    return sec.create_security_group_rule(c.topo, rule, c.p.admin, c.rev, c.now)


def _rules_of_group(
    tables: Tables, p: Principal, request: pb.ListSecurityGroupRulesRequest
) -> KeepAndFilters:
    gid = ""
    if request.security_group:
        with tables.state.lock:
            gid = group_id(tables.state.topology, p, request.security_group, "security_group")
    return (lambda r: not gid or r.security_group_id == gid), {"security_group": gid}


SECURITY_GROUP_RULE = Resource(
    kind="security_group_rule",
    plural="SecurityGroupRules",
    to_pb=convert.security_group_rule_to_pb,
    create=_create_rule,
    delete=lambda c, old, force: sec.delete_security_group_rule(old),
    before=_rule_before,
    list_filter=_rules_of_group,
)  # its parent may be "default": a filter of its own

# ------------------------------------------------------------------------------------------ firewall rules


def _create_fw_rule(c: Call, m: pb.FirewallRule) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "firewall_rule.tenant")
    rule = FirewallRule(
        id=c.new_id(),
        tenant=tenant,
        display_name=m.display_name,
        description=m.description,
        action=m.action,
        protocol=m.protocol,
        ip_version=m.ip_version,
        source_ip_address=m.source_ip_address.strip(),
        destination_ip_address=m.destination_ip_address.strip(),
        source_port_min=m.source_port_min,
        source_port_max=m.source_port_max,
        destination_port_min=m.destination_port_min,
        destination_port_max=m.destination_port_max,
        enabled=m.enabled if m.HasField("enabled") else True,
    )
    return sec.create_firewall_rule(c.topo, rule, c.rev, c.now)


FIREWALL_RULE = Resource(
    kind="firewall_rule",
    plural="FirewallRules",
    to_pb=convert.firewall_rule_to_pb,
    create=_create_fw_rule,
    update=lambda c, old, fields: sec.update_firewall_rule(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: sec.delete_firewall_rule(c.topo, old),
    mutable=frozenset(sec.FIREWALL_RULE_MUTABLE),
    immutable=frozenset({"name", "tenant"}),
    output_only=frozenset({"revision", "create_time", "update_time"}),
    values={
        "source_ip_address": lambda c, m: m.source_ip_address.strip(),
        "destination_ip_address": lambda c, m: m.destination_ip_address.strip(),
    },
)

# ------------------------------------------------------------------------------------------ policies


def _rule_ids(names: Sequence[str], field_path: str) -> tuple[str, ...]:
    return tuple(convert.parse_name("firewall_rule", n, f"{field_path}[{i}]") for i, n in enumerate(names))


def _create_policy(c: Call, m: pb.FirewallPolicy) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "firewall_policy.tenant")
    rules = _rule_ids(m.firewall_rules, "firewall_policy.firewall_rules")
    policy = FirewallPolicy(
        id=c.new_id(), tenant=tenant, display_name=m.display_name, description=m.description, rules=rules
    )
    return sec.create_firewall_policy(c.topo, policy, c.rev, c.now)


FIREWALL_POLICY = Resource(
    kind="firewall_policy",
    plural="FirewallPolicies",
    to_pb=convert.firewall_policy_to_pb,
    create=_create_policy,
    update=lambda c, old, fields: sec.update_firewall_policy(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: sec.delete_firewall_policy(c.topo, old),
    mutable=frozenset(sec.FIREWALL_POLICY_MUTABLE),
    immutable=frozenset({"name", "tenant"}),
    output_only=frozenset({"revision", "create_time", "update_time"}),
    values={"firewall_rules": lambda c, m: _rule_ids(m.firewall_rules, "firewall_policy.firewall_rules")},
)

# ------------------------------------------------------------------------------------------ firewall groups


def _policy_ref(name: str, path: str) -> str:
    return convert.parse_name("firewall_policy", name, f"firewall_group.{path}") if name else ""


def _port_refs(m: pb.FirewallGroup) -> tuple[str, ...]:
    return tuple(convert.parse_name("port", n, f"firewall_group.ports[{i}]") for i, n in enumerate(m.ports))


def _create_fw_group(c: Call, m: pb.FirewallGroup) -> list[Change]:
    tenant = c.tenant_for(m.tenant, "firewall_group.tenant")
    ingress = _policy_ref(m.ingress_firewall_policy, "ingress_firewall_policy")
    egress = _policy_ref(m.egress_firewall_policy, "egress_firewall_policy")
    ports = _port_refs(m)
    group = FirewallGroup(
        id=c.new_id(),
        tenant=tenant,
        display_name=m.display_name,
        description=m.description,
        ingress_policy_id=ingress,
        egress_policy_id=egress,
        ports=ports,
        admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True,
    )
    return sec.create_firewall_group(c.topo, group, c.rev, c.now)


FIREWALL_GROUP = Resource(
    kind="firewall_group",
    plural="FirewallGroups",
    to_pb=convert.firewall_group_to_pb,
    create=_create_fw_group,
    update=lambda c, old, fields: sec.update_firewall_group(c.topo, old, fields, c.rev, c.now),
    delete=lambda c, old, force: sec.delete_firewall_group(old),
    mutable=frozenset(sec.FIREWALL_GROUP_MUTABLE),
    immutable=frozenset({"name", "tenant"}),
    output_only=frozenset({"revision", "create_time", "update_time"}),
    values={
        "ingress_firewall_policy": lambda c, m: _policy_ref(
            m.ingress_firewall_policy, "ingress_firewall_policy"
        ),
        "egress_firewall_policy": lambda c, m: _policy_ref(
            m.egress_firewall_policy, "egress_firewall_policy"
        ),
        "ports": lambda c, m: _port_refs(m),
    },
)

SPECS = (SECURITY_GROUP, SECURITY_GROUP_RULE, FIREWALL_RULE, FIREWALL_POLICY, FIREWALL_GROUP)
