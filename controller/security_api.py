"""The security group and router firewall (FWaaS) methods of the TopologyService: the service's methods call
these (northbound.py keeps authentication, error mapping and the shared plumbing), writes go to
topology.ops_security.

"securityGroups/default" names a tenant's default group: the caller's in reads, the owning tenant's where
a group is referenced from something of a tenant (a rule's remote group). Every security-group call of a
tenant that has no default group yet makes it first (Neutron does the same on a tenant's first call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import empty_pb2

from controller import convert
from controller.auth import Principal
from proto.sdn.v1 import topology_pb2 as pb
from topology import errors
from topology import ops_security as sec
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.ops import new_id
from topology.records import FirewallGroup, FirewallPolicy, FirewallRule, SecurityGroup, SecurityGroupRule

WriteFn = Callable[[Topology, int, float], list[Change]]


class SecurityApi:
    def __init__(self, svc: Any) -> None:
        self.svc = svc  # the TopologyService
        self.state = svc.state

    # ------------------------------------------------------------------------------------------ plumbing

    def ensure_default(self, tenant: str, request: Any = None) -> None:
        """Make the tenant's default group if it has none (not in a validate_only dry run)."""
        if getattr(request, "validate_only", False):
            return
        with self.state.lock:
            if tenant in self.state.topology.default_groups:
                return
        self.state.write(lambda topo, rev, now: sec.ensure_default_group(topo, tenant, rev, now)[1])

    def group_id(self, topo: Topology, p: Principal, name: str, field_path: str, tenant: str = "") -> str:
        ident = convert.parse_name("security_group", name, field_path)
        if ident != sec.DEFAULT_GROUP_REF:
            return ident
        gid = topo.default_groups.get(tenant or p.tenant)
        if gid is None:
            raise errors.not_found("security_group", ident)
        return gid

    def _group(self, topo: Topology, p: Principal, name: str, field_path: str = "name",
               owned: bool = False) -> SecurityGroup:
        gid = self.group_id(topo, p, name, field_path)
        get = self.svc._owned if owned else self.svc._get
        return get(topo, p, "security_group", convert.name_of("security_group", gid), field_path)  # type: ignore[no-any-return]

    def _group_pb(self, group: SecurityGroup, changes: list[Change] | None = None) -> pb.SecurityGroup:
        """The group with its rules as the model has them, or as `changes` would leave them (dry runs)."""
        with self.state.lock:
            rules = {r.id: r for r in self.state.topology.group_rules_of(group.id)}
        for kind, ident, _old, new in changes or ():
            if kind == "security_group_rule":
                rules.pop(ident, None)
                if isinstance(new, SecurityGroupRule) and new.security_group_id == group.id:
                    rules[ident] = new
        return convert.security_group_to_pb(group, sorted(rules.values(), key=lambda r: r.id))

    def _write(self, fn: WriteFn, prefix: str, kind: str, request: Any, context: Any) -> tuple[Any, list[Change]]:
        """A write answering with the last record of `kind` it creates or changes."""
        try:
            _, changes = self.svc._write(fn, request, context)
        except ApiError as err:
            raise _prefixed(err, prefix) from None
        rec = next((new for k, _i, _old, new in reversed(changes) if k == kind and new is not None), None)
        if rec is None:
            raise errors.invalid("update_mask", "nothing to update")
        return rec, changes

    def _delete(self, fn: WriteFn, request: Any, context: Any) -> empty_pb2.Empty:
        self.svc._write(fn, request, context)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------------------------------ groups

    def create_group(self, request: pb.CreateSecurityGroupRequest, context: Any, p: Principal) -> pb.SecurityGroup:
        m = request.security_group
        tenant = self.svc._tenant_for(p, m.tenant, "security_group.tenant")

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            ident = new_id(topo, "security_group", request.security_group_id, "security_group_id")
            group = SecurityGroup(id=ident, tenant=tenant, display_name=m.display_name, description=m.description)
            return sec.create_security_group(topo, group, rev, now)

        def last_group(changes: list[Change]) -> SecurityGroup:
            return next(new for k, _i, _o, new in reversed(changes)  # type: ignore[return-value]
                        if k == "security_group" and new is not None)

        try:
            _, changes = self.svc._write(fn, request, context)
        except ApiError as err:
            raise _prefixed(err, "security_group.") from None
        return self._group_pb(last_group(changes), changes)

    def get_group(self, request: pb.GetSecurityGroupRequest, context: Any, p: Principal) -> pb.SecurityGroup:
        self.ensure_default(p.tenant)
        with self.state.lock:
            group = self._group(self.state.topology, p, request.name)
        return self._group_pb(group)

    def list_groups(self, request: pb.ListSecurityGroupsRequest, context: Any,
                    p: Principal) -> pb.ListSecurityGroupsResponse:
        self.ensure_default(p.tenant)
        page, token = self.svc._list("security_group", p, request, lambda r: True, {})
        return pb.ListSecurityGroupsResponse(security_groups=[self._group_pb(g) for g in page],
                                             next_page_token=token)

    def update_group(self, request: pb.UpdateSecurityGroupRequest, context: Any, p: Principal) -> pb.SecurityGroup:
        m = request.security_group
        self.ensure_default(p.tenant, request)

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._group(topo, p, m.name, "security_group.name", owned=True)
            paths = self.svc._mask(m, request.update_mask, convert.security_group_to_pb(old),
                                   sec.SECURITY_GROUP_OUTPUT, sec.SECURITY_GROUP_MUTABLE)
            fields = {path: getattr(m, path) if path in sec.SECURITY_GROUP_MUTABLE else None for path in paths}
            return sec.update_security_group(topo, old, fields, rev, now)

        rec, changes = self._write(fn, "security_group.", "security_group", request, context)
        return self._group_pb(rec, changes)

    def delete_group(self, request: pb.DeleteSecurityGroupRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        self.ensure_default(p.tenant, request)

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self._group(topo, p, request.name, owned=True)
            return sec.delete_security_group(topo, old, request.force, p.admin, rev, now)

        return self._delete(fn, request, context)

    # ------------------------------------------------------------------------------------------ rules

    def create_rule(self, request: pb.CreateSecurityGroupRuleRequest, context: Any,
                    p: Principal) -> pb.SecurityGroupRule:
        m = request.security_group_rule
        self.ensure_default(p.tenant, request)
        remote = (convert.parse_name("security_group", m.remote_group, "security_group_rule.remote_group")
                  if m.remote_group else "")

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            group = self._group(topo, p, m.security_group, "security_group_rule.security_group", owned=True)
            ident = new_id(topo, "security_group_rule", request.security_group_rule_id, "security_group_rule_id")
            rule = SecurityGroupRule(
                id=ident, tenant=group.tenant, security_group_id=group.id, direction=m.direction.strip().lower(),
                ethertype=m.ethertype.strip(), protocol=m.protocol, port_range_min=m.port_range_min,
                port_range_max=m.port_range_max, icmp_type=m.icmp_type if m.HasField("icmp_type") else -1,
                icmp_code=m.icmp_code if m.HasField("icmp_code") else -1, remote_ip_prefix=m.remote_ip_prefix.strip(),
                remote_group_id=remote, description=m.description)
            if rule.icmp_type < -1 or rule.icmp_code < -1:
                raise errors.invalid("icmp_type" if rule.icmp_type < -1 else "icmp_code", "must be 0-255")
            return sec.create_security_group_rule(topo, rule, p.admin, rev, now)

        rec, _ = self._write(fn, "security_group_rule.", "security_group_rule", request, context)
        return convert.security_group_rule_to_pb(rec)

    def get_rule(self, request: pb.GetSecurityGroupRuleRequest, context: Any, p: Principal) -> pb.SecurityGroupRule:
        with self.state.lock:
            return convert.security_group_rule_to_pb(
                self.svc._get(self.state.topology, p, "security_group_rule", request.name))

    def list_rules(self, request: pb.ListSecurityGroupRulesRequest, context: Any,
                   p: Principal) -> pb.ListSecurityGroupRulesResponse:
        self.ensure_default(p.tenant)
        gid = ""
        if request.security_group:
            with self.state.lock:
                gid = self.group_id(self.state.topology, p, request.security_group, "security_group")
        page, token = self.svc._list("security_group_rule", p, request,
                                     lambda r: not gid or r.security_group_id == gid, {"security_group": gid})
        return pb.ListSecurityGroupRulesResponse(
            security_group_rules=[convert.security_group_rule_to_pb(r) for r in page], next_page_token=token)

    def delete_rule(self, request: pb.DeleteSecurityGroupRuleRequest, context: Any, p: Principal) -> empty_pb2.Empty:
        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            return sec.delete_security_group_rule(self.svc._owned(topo, p, "security_group_rule", request.name))

        return self._delete(fn, request, context)

    # ------------------------------------------------------------------------------------------ firewall rules

    @staticmethod
    def _fw_rule(m: pb.FirewallRule, **base: Any) -> dict[str, Any]:
        return dict(base, display_name=m.display_name, description=m.description, action=m.action,
                    protocol=m.protocol, ip_version=m.ip_version, source_ip_address=m.source_ip_address.strip(),
                    destination_ip_address=m.destination_ip_address.strip(), source_port_min=m.source_port_min,
                    source_port_max=m.source_port_max, destination_port_min=m.destination_port_min,
                    destination_port_max=m.destination_port_max)

    def create_fw_rule(self, request: pb.CreateFirewallRuleRequest, context: Any, p: Principal) -> pb.FirewallRule:
        m = request.firewall_rule
        tenant = self.svc._tenant_for(p, m.tenant, "firewall_rule.tenant")

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            ident = new_id(topo, "firewall_rule", request.firewall_rule_id, "firewall_rule_id")
            rule = FirewallRule(**self._fw_rule(m, id=ident, tenant=tenant),
                                enabled=m.enabled if m.HasField("enabled") else True)
            return sec.create_firewall_rule(topo, rule, rev, now)

        rec, _ = self._write(fn, "firewall_rule.", "firewall_rule", request, context)
        return convert.firewall_rule_to_pb(rec)

    def update_fw_rule(self, request: pb.UpdateFirewallRuleRequest, context: Any, p: Principal) -> pb.FirewallRule:
        m = request.firewall_rule

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self.svc._owned(topo, p, "firewall_rule", m.name, "firewall_rule.name")
            paths = self.svc._mask(m, request.update_mask, convert.firewall_rule_to_pb(old),
                                   sec.FIREWALL_RULE_OUTPUT, sec.FIREWALL_RULE_MUTABLE)
            values = self._fw_rule(m, enabled=m.enabled)
            fields = {path: values[path] if path in sec.FIREWALL_RULE_MUTABLE else None for path in paths}
            return sec.update_firewall_rule(topo, old, fields, rev, now)

        rec, _ = self._write(fn, "firewall_rule.", "firewall_rule", request, context)
        return convert.firewall_rule_to_pb(rec)

    # ------------------------------------------------------------------------------------------ policies

    def _rule_ids(self, names: list[str], field_path: str) -> tuple[str, ...]:
        return tuple(convert.parse_name("firewall_rule", n, f"{field_path}[{i}]") for i, n in enumerate(names))

    def create_policy(self, request: pb.CreateFirewallPolicyRequest, context: Any,
                      p: Principal) -> pb.FirewallPolicy:
        m = request.firewall_policy
        tenant = self.svc._tenant_for(p, m.tenant, "firewall_policy.tenant")
        rules = self._rule_ids(list(m.firewall_rules), "firewall_policy.firewall_rules")

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            ident = new_id(topo, "firewall_policy", request.firewall_policy_id, "firewall_policy_id")
            policy = FirewallPolicy(id=ident, tenant=tenant, display_name=m.display_name, description=m.description,
                                    rules=rules)
            return sec.create_firewall_policy(topo, policy, rev, now)

        rec, _ = self._write(fn, "firewall_policy.", "firewall_policy", request, context)
        return convert.firewall_policy_to_pb(rec)

    def update_policy(self, request: pb.UpdateFirewallPolicyRequest, context: Any,
                      p: Principal) -> pb.FirewallPolicy:
        m = request.firewall_policy

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self.svc._owned(topo, p, "firewall_policy", m.name, "firewall_policy.name")
            paths = self.svc._mask(m, request.update_mask, convert.firewall_policy_to_pb(old),
                                   sec.FIREWALL_POLICY_OUTPUT, sec.FIREWALL_POLICY_MUTABLE)
            conv: dict[str, Callable[[], Any]] = {
                "display_name": lambda: m.display_name, "description": lambda: m.description,
                "firewall_rules": lambda: self._rule_ids(list(m.firewall_rules), "firewall_policy.firewall_rules")}
            fields = {path: conv[path]() if path in conv else None for path in paths}
            return sec.update_firewall_policy(topo, old, fields, rev, now)

        rec, _ = self._write(fn, "firewall_policy.", "firewall_policy", request, context)
        return convert.firewall_policy_to_pb(rec)

    # ------------------------------------------------------------------------------------------ firewall groups

    def _fw_group_refs(self, m: pb.FirewallGroup) -> dict[str, Any]:
        def policy(name: str, path: str) -> str:
            return convert.parse_name("firewall_policy", name, f"firewall_group.{path}") if name else ""

        return {"ingress_firewall_policy": policy(m.ingress_firewall_policy, "ingress_firewall_policy"),
                "egress_firewall_policy": policy(m.egress_firewall_policy, "egress_firewall_policy"),
                "ports": tuple(convert.parse_name("port", n, f"firewall_group.ports[{i}]")
                               for i, n in enumerate(m.ports))}

    def create_fw_group(self, request: pb.CreateFirewallGroupRequest, context: Any,
                        p: Principal) -> pb.FirewallGroup:
        m = request.firewall_group
        tenant = self.svc._tenant_for(p, m.tenant, "firewall_group.tenant")
        refs = self._fw_group_refs(m)

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            ident = new_id(topo, "firewall_group", request.firewall_group_id, "firewall_group_id")
            group = FirewallGroup(id=ident, tenant=tenant, display_name=m.display_name, description=m.description,
                                  ingress_policy_id=refs["ingress_firewall_policy"],
                                  egress_policy_id=refs["egress_firewall_policy"], ports=refs["ports"],
                                  admin_state_up=m.admin_state_up if m.HasField("admin_state_up") else True)
            return sec.create_firewall_group(topo, group, rev, now)

        rec, _ = self._write(fn, "firewall_group.", "firewall_group", request, context)
        return convert.firewall_group_to_pb(rec)

    def update_fw_group(self, request: pb.UpdateFirewallGroupRequest, context: Any,
                        p: Principal) -> pb.FirewallGroup:
        m = request.firewall_group

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            old = self.svc._owned(topo, p, "firewall_group", m.name, "firewall_group.name")
            paths = self.svc._mask(m, request.update_mask, convert.firewall_group_to_pb(old),
                                   sec.FIREWALL_GROUP_OUTPUT, sec.FIREWALL_GROUP_MUTABLE)
            values = dict(self._fw_group_refs(m), display_name=m.display_name, description=m.description,
                          admin_state_up=m.admin_state_up)
            fields = {path: values[path] if path in sec.FIREWALL_GROUP_MUTABLE else None for path in paths}
            return sec.update_firewall_group(topo, old, fields, rev, now)

        rec, _ = self._write(fn, "firewall_group.", "firewall_group", request, context)
        return convert.firewall_group_to_pb(rec)

    # ------------------------------------------------------------------------------------------ the rest

    def get(self, kind: str, name: str, p: Principal) -> Any:
        with self.state.lock:
            return convert.to_pb(self.svc._get(self.state.topology, p, kind, name))

    def list(self, kind: str, request: Any, p: Principal) -> tuple[list[Any], str]:
        page, token = self.svc._list(kind, p, request, lambda r: True, {})
        return [convert.to_pb(r) for r in page], token

    def delete(self, kind: str, request: Any, context: Any, p: Principal) -> empty_pb2.Empty:
        deleters: dict[str, Callable[[Topology, Any], list[Change]]] = {
            "firewall_rule": sec.delete_firewall_rule, "firewall_policy": sec.delete_firewall_policy,
            "firewall_group": lambda _topo, old: sec.delete_firewall_group(old)}

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            return deleters[kind](topo, self.svc._owned(topo, p, kind, request.name))

        return self._delete(fn, request, context)


def _prefixed(err: ApiError, prefix: str) -> ApiError:
    from controller.northbound import _prefixed as prefixed

    return prefixed(err, prefix)
