"""Write operations of security groups and router firewalls (FWaaS): validation and the changes they make.

Like topology.ops: each function reads the Topology and returns changes without touching it; field paths in
errors are relative to the resource ("remote_ip_prefix", "firewall_rules[1]"). Groups and rules referenced
by id must be the tenant's own: the northbound resolves names (and "default") and checks visibility.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import netaddr

from topology import errors
from topology.model import Change, Topology
from topology.ops import _check_fields, _check_name, _stamp, check_id, named, named_ref
from topology.records import (
    DEFAULT_GROUP_NAME,
    DIRECTIONS,
    EGRESS,
    ETHERTYPES,
    FIREWALL_ACTIONS,
    INGRESS,
    OWNER_ROUTER_INTERFACE,
    PROTOCOL_NUMBERS,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
    Port,
    SecurityGroup,
    SecurityGroupRule,
)

#: the per-tenant budget of security-group flows per chassis when the operator configures none
DEFAULT_FLOW_BUDGET = 20000
#: "securityGroups/default" names the tenant's default group, so no group may have this id
DEFAULT_GROUP_REF = "default"
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
ICMP_PROTOCOLS = ("icmp", "icmpv6")
MAX_DESCRIPTION = 255

# ------------------------------------------------------------------------------------------------ helpers


def _check_description(text: str, field_path: str = "description") -> None:
    if len(text) > MAX_DESCRIPTION:
        raise errors.invalid(field_path, f"longer than {MAX_DESCRIPTION} characters")


def _protocol(value: str, field_path: str = "protocol") -> str:
    """ "" / "any" -> ""; a name of PROTOCOL_NUMBERS; a number 0-255 (a known one as its name)."""
    p = value.strip().lower()
    if p in ("", "any"):
        return ""
    if p in PROTOCOL_NUMBERS:
        return p
    if p.isdigit() and 0 <= int(p) <= 255:
        names = {n: name for name, n in PROTOCOL_NUMBERS.items()}
        return names.get(int(p), str(int(p)))
    raise errors.invalid(
        field_path, f"{value!r} is not a protocol: any, {', '.join(PROTOCOL_NUMBERS)} or a number 0-255"
    )


def _port_range(
    lo: int, hi: int, protocol: str, allowed: Sequence[str], lo_path: str, hi_path: str
) -> tuple[int, int]:
    """(0, 0) = any port; a max alone is refused, a min alone is a single port."""
    if not lo and not hi:
        return 0, 0
    if protocol not in allowed:
        raise errors.invalid(
            lo_path if lo else hi_path,
            f"ports go only with protocol {' or '.join(allowed)} (not {protocol or 'any'!r})",
        )
    if not lo:
        raise errors.invalid(lo_path, "required with " + hi_path.rsplit(".", 1)[-1])
    hi = hi or lo
    for value, path in ((lo, lo_path), (hi, hi_path)):
        if not 1 <= value <= 65535:
            raise errors.invalid(path, f"{value} is not a port 1-65535")
    if lo > hi:
        raise errors.invalid(hi_path, f"{hi} is below {lo_path.rsplit('.', 1)[-1]} {lo}")
    return lo, hi


def _prefix(value: str, version: int, field_path: str) -> str:
    """A CIDR (or bare address: a host) of the IP version, host bits cleared."""
    if not value:
        return ""
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise errors.invalid(field_path, f"{value!r} is not a CIDR") from None
    if net.version != version:
        raise errors.invalid(field_path, f"{value!r} is not an IPv{version} CIDR")
    return str(net.cidr)


def _any_prefix(value: str) -> str:
    """Prefixes that mean the same remote compare equal (no prefix and a /0 both mean any)."""
    return "" if not value or netaddr.IPNetwork(value).prefixlen == 0 else value


def _new_rule_key(topo: Topology, changes: Sequence[Change]) -> int:
    taken = {new.key for _k, _i, _o, new in changes if isinstance(new, SecurityGroupRule)}
    key = topo.rule_keys.choose(taken)
    if key is None:
        raise errors.exhausted("RULE_KEYS_EXHAUSTED", "no free security group rule key")
    return key


def _rule_change(
    topo: Topology, rule: SecurityGroupRule, pending: Sequence[Change], rev: int, now: float
) -> Change:
    rec = dataclasses.replace(rule, key=_new_rule_key(topo, pending))
    return ("security_group_rule", rec.id, None, _stamp(rec, rev, now, True))


def _egress_rules(topo: Topology, group: SecurityGroup, pending: list[Change], rev: int, now: float) -> None:
    """Neutron's rules of a new group: all egress, IPv4 and IPv6."""
    for ethertype in ETHERTYPES:
        rule = SecurityGroupRule(
            id=str(uuid.uuid4()),
            tenant=group.tenant,
            security_group_id=group.id,
            direction=EGRESS,
            ethertype=ethertype,
        )
        pending.append(_rule_change(topo, rule, pending, rev, now))


# ------------------------------------------------------------------------------------------------ groups


def ensure_default_group(
    topo: Topology, tenant: str, rev: int, now: float, pending: Sequence[Change] = ()
) -> tuple[str, list[Change]]:
    """The tenant's default group id, and the changes creating it (with Neutron's four rules: all egress;
    ingress from members of the group itself) if it does not exist yet."""
    gid = topo.default_groups.get(tenant)
    if gid is not None:
        return gid, []
    for kind, ident, _old, new in pending:  # made earlier in the same write
        if (
            kind == "security_group"
            and isinstance(new, SecurityGroup)
            and new.tenant == tenant
            and new.display_name == DEFAULT_GROUP_NAME
        ):
            return ident, []
    group = SecurityGroup(
        id=str(uuid.uuid4()),
        tenant=tenant,
        display_name=DEFAULT_GROUP_NAME,
        description="Default security group",
    )
    made: list[Change] = [*pending, ("security_group", group.id, None, _stamp(group, rev, now, True))]
    _egress_rules(topo, group, made, rev, now)
    for ethertype in ETHERTYPES:
        rule = SecurityGroupRule(
            id=str(uuid.uuid4()),
            tenant=tenant,
            security_group_id=group.id,
            direction=INGRESS,
            ethertype=ethertype,
            remote_group_id=group.id,
        )
        made.append(_rule_change(topo, rule, made, rev, now))
    return group.id, made[len(pending) :]


def resolve_groups(
    topo: Topology,
    tenant: str,
    ids: Sequence[str],
    field_path: str,
    admin: bool,
    rev: int,
    now: float,
    pending: Sequence[Change] = (),
) -> tuple[tuple[str, ...], list[Change]]:
    """Group ids as a port of `tenant` may use them ("default": the tenant's default group, made if need
    be), and the changes making the default group. Another tenant's group is NOT_FOUND to a tenant (it
    cannot see it) and INVALID_ARGUMENT to an admin."""
    out: list[str] = []
    changes: list[Change] = []
    for i, gid in enumerate(ids):
        if gid == DEFAULT_GROUP_REF:
            gid, made = ensure_default_group(topo, tenant, rev, now, [*pending, *changes])
            changes += made
        else:
            check_id(gid, f"{field_path}[{i}]")
            check_group(topo, tenant, gid, f"{field_path}[{i}]", admin)
        out.append(gid)
    return tuple(dict.fromkeys(out)), changes


def check_group(topo: Topology, tenant: str, gid: str, field_path: str, admin: bool) -> SecurityGroup:
    group = topo.security_groups.get(gid)
    if group is None or (group.tenant != tenant and not admin):
        err = errors.not_found("security_group", gid)
        err.violations = [(field_path, f"security group {gid!r} not found")]
        raise err
    if group.tenant != tenant:
        raise errors.invalid(
            field_path,
            f"security group {gid!r} belongs to tenant {group.tenant!r}, not {tenant!r}",
            reason="SECURITY_GROUP_OF_ANOTHER_TENANT",
        )
    return group


def _check_group_name(name: str, is_default: bool) -> None:
    _check_name(name)
    if name == DEFAULT_GROUP_NAME and not is_default:
        raise errors.invalid(
            "display_name",
            f"{DEFAULT_GROUP_NAME!r} is the name of the tenant's default group",
            reason="RESERVED_NAME",
        )
    if is_default and name != DEFAULT_GROUP_NAME:
        raise errors.invalid(
            "display_name", "the default group keeps its name", reason="DEFAULT_SECURITY_GROUP"
        )


def create_security_group(topo: Topology, group: SecurityGroup, rev: int, now: float) -> list[Change]:
    """The tenant's default group first if it has none yet, then the group, then its two egress rules
    (Neutron gives every new group all egress)."""
    if group.id == DEFAULT_GROUP_REF:
        raise errors.invalid(
            "security_group_id",
            f"{DEFAULT_GROUP_REF!r} is reserved: securityGroups/default names the tenant's default group",
            reason="RESERVED_NAME",
        )
    _check_group_name(group.display_name, False)
    _check_description(group.description)
    _gid, changes = ensure_default_group(topo, group.tenant, rev, now)
    changes.append(("security_group", group.id, None, _stamp(group, rev, now, True)))
    _egress_rules(topo, group, changes, rev, now)
    return changes


SECURITY_GROUP_MUTABLE = {"display_name", "description"}


def update_security_group(
    topo: Topology, old: SecurityGroup, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, SECURITY_GROUP_MUTABLE)
    is_default = topo.default_groups.get(old.tenant) == old.id
    if "display_name" in fields:
        _check_group_name(fields["display_name"], is_default)
    if "description" in fields:
        _check_description(fields["description"])
    new = dataclasses.replace(old, **fields)
    return [("security_group", old.id, old, _stamp(new, rev, now, False))]


def delete_security_group(
    topo: Topology, old: SecurityGroup, force: bool, admin: bool, rev: int, now: float
) -> list[Change]:
    """Refused while ports use it or other groups' rules name it as remote group, unless `force`: then it
    is taken off those ports and those rules go. Its own rules go with it. Only an admin deletes a
    tenant's default group (Neutron)."""
    if topo.default_groups.get(old.tenant) == old.id and not admin:
        raise errors.failed_precondition(
            "DEFAULT_SECURITY_GROUP",
            f"security group {named(old)} is the tenant's default group; it cannot be deleted",
            security_group=old.id,
        )
    ports = topo.ports_in_security_group(old.id)
    remote = [r for r in topo.rules_naming_remote(old.id) if r.security_group_id != old.id]
    if (ports or remote) and not force:
        raise errors.failed_precondition(
            "SECURITY_GROUP_IN_USE",
            f"security group {named(old)} is used by {len(ports)} port(s)"
            f"{' (' + ', '.join(named_ref(topo.ports, p.id, old.tenant) for p in ports[:5]) + ')' if ports else ''}"
            " and named as remote group by "
            f"{len(remote)} rule(s) of other groups; detach it first or use force",
            security_group=old.id,
        )
    changes: list[Change] = []
    for p in ports:
        new = dataclasses.replace(p, security_groups=tuple(g for g in p.security_groups if g != old.id))
        changes.append(("port", p.id, p, _stamp(new, rev, now, False)))
    changes += [("security_group_rule", r.id, r, None) for r in remote]
    changes += [("security_group_rule", r.id, r, None) for r in topo.group_rules_of(old.id)]
    changes.append(("security_group", old.id, old, None))
    return changes


# ------------------------------------------------------------------------------------------------ rules


def _rule_identity(r: SecurityGroupRule) -> tuple[Any, ...]:
    return (
        r.security_group_id,
        r.direction,
        r.ethertype,
        r.protocol,
        r.port_range_min,
        r.port_range_max,
        r.icmp_type,
        r.icmp_code,
        _any_prefix(r.remote_ip_prefix),
        r.remote_group_id,
    )


def create_security_group_rule(
    topo: Topology, rule: SecurityGroupRule, admin: bool, rev: int, now: float
) -> list[Change]:
    """`rule.security_group_id` is an existing group of `rule.tenant` (the northbound checked);
    `rule.remote_group_id` may be "default" (the tenant's default group)."""
    if rule.direction not in DIRECTIONS:
        raise errors.invalid(
            "direction",
            f"required: {' or '.join(DIRECTIONS)}"
            if not rule.direction
            else f"{rule.direction!r} is not {' or '.join(DIRECTIONS)}",
        )
    ethertype = {e.lower(): e for e in ETHERTYPES}.get((rule.ethertype or "IPv4").lower())
    if ethertype is None:
        raise errors.invalid("ethertype", f"{rule.ethertype!r} is not {' or '.join(ETHERTYPES)}")
    version = 6 if ethertype == "IPv6" else 4
    protocol = _protocol(rule.protocol)
    if protocol == "icmp" and version == 6:
        protocol = "icmpv6"  # Neutron accepts icmp on IPv6 rules and means ICMPv6
    if protocol == "icmpv6" and version == 4:
        raise errors.invalid("protocol", "icmpv6 needs ethertype IPv6")
    lo, hi = _port_range(
        rule.port_range_min, rule.port_range_max, protocol, PORT_PROTOCOLS, "port_range_min", "port_range_max"
    )
    icmp_type, icmp_code = rule.icmp_type, rule.icmp_code
    if icmp_type >= 0 or icmp_code >= 0:
        if protocol not in ICMP_PROTOCOLS:
            raise errors.invalid(
                "icmp_type" if icmp_type >= 0 else "icmp_code",
                f"goes only with protocol icmp or icmpv6 (not {protocol or 'any'!r})",
            )
        if icmp_code >= 0 and icmp_type < 0:
            raise errors.invalid("icmp_code", "needs icmp_type")
        for value, path in ((icmp_type, "icmp_type"), (icmp_code, "icmp_code")):
            if value > 255:
                raise errors.invalid(path, f"{value} is not 0-255")
    if rule.remote_ip_prefix and rule.remote_group_id:
        raise errors.invalid("remote_group", "give remote_ip_prefix or remote_group, not both")
    prefix = _prefix(rule.remote_ip_prefix, version, "remote_ip_prefix")
    changes: list[Change] = []
    remote = rule.remote_group_id
    if remote == DEFAULT_GROUP_REF:
        remote, changes = ensure_default_group(topo, rule.tenant, rev, now)
    elif remote:
        check_id(remote, "remote_group")
        check_group(topo, rule.tenant, remote, "remote_group", admin)
    _check_description(rule.description)
    new = dataclasses.replace(
        rule,
        direction=rule.direction,
        ethertype=ethertype,
        protocol=protocol,
        port_range_min=lo,
        port_range_max=hi,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        remote_ip_prefix=prefix,
        remote_group_id=remote,
    )
    ident = _rule_identity(new)
    for other in topo.group_rules_of(new.security_group_id):
        if _rule_identity(other) == ident:
            err = errors.already_exists(
                "security_group_rule",
                other.id,
                reason="SECURITY_GROUP_RULE_EXISTS",
                message=f"security group {named_ref(topo.security_groups, new.security_group_id, new.tenant)} "
                f"already has this rule ({other.id!r})",
            )
            raise err
    changes.append(_rule_change(topo, new, changes, rev, now))
    return changes


def delete_security_group_rule(old: SecurityGroupRule) -> list[Change]:
    return [("security_group_rule", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ firewall rules


def _check_firewall_rule(rule: FirewallRule) -> FirewallRule:
    _check_name(rule.display_name)
    _check_description(rule.description)
    action = rule.action.strip().lower() or "deny"
    if action not in FIREWALL_ACTIONS:
        raise errors.invalid("action", f"{rule.action!r} is not {', '.join(FIREWALL_ACTIONS)}")
    version = rule.ip_version or 4
    if version not in (4, 6):
        raise errors.invalid("ip_version", f"{rule.ip_version} is not 4 or 6")
    protocol = _protocol(rule.protocol)
    if protocol == "icmp" and version == 6:
        protocol = "icmpv6"
    if protocol == "icmpv6" and version == 4:
        raise errors.invalid("protocol", "icmpv6 needs ip_version 6")
    src = _prefix(rule.source_ip_address, version, "source_ip_address")
    dst = _prefix(rule.destination_ip_address, version, "destination_ip_address")
    sp = _port_range(
        rule.source_port_min,
        rule.source_port_max,
        protocol,
        ("tcp", "udp"),
        "source_port_min",
        "source_port_max",
    )
    dp = _port_range(
        rule.destination_port_min,
        rule.destination_port_max,
        protocol,
        ("tcp", "udp"),
        "destination_port_min",
        "destination_port_max",
    )
    return dataclasses.replace(
        rule,
        action=action,
        ip_version=version,
        protocol=protocol,
        source_ip_address=src,
        destination_ip_address=dst,
        source_port_min=sp[0],
        source_port_max=sp[1],
        destination_port_min=dp[0],
        destination_port_max=dp[1],
    )


def create_firewall_rule(topo: Topology, rule: FirewallRule, rev: int, now: float) -> list[Change]:
    rec = _check_firewall_rule(rule)
    return [("firewall_rule", rec.id, None, _stamp(rec, rev, now, True))]


FIREWALL_RULE_MUTABLE = {
    "display_name",
    "description",
    "action",
    "protocol",
    "ip_version",
    "source_ip_address",
    "destination_ip_address",
    "source_port_min",
    "source_port_max",
    "destination_port_min",
    "destination_port_max",
    "enabled",
}


def update_firewall_rule(
    topo: Topology, old: FirewallRule, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """The rule as changed is checked whole (a new protocol may no longer allow its ports)."""
    _check_fields(fields, FIREWALL_RULE_MUTABLE)
    new = _check_firewall_rule(dataclasses.replace(old, **fields))
    return [("firewall_rule", old.id, old, _stamp(new, rev, now, False))]


def delete_firewall_rule(topo: Topology, old: FirewallRule) -> list[Change]:
    policy = topo.rule_policy.get(old.id)
    if policy is not None:
        raise errors.failed_precondition(
            "FIREWALL_RULE_IN_USE",
            f"firewall rule {named(old)} is in policy "
            f"{named_ref(topo.firewall_policies, policy, old.tenant)}; remove it from the policy first",
            firewall_rule=old.id,
            firewall_policy=policy,
        )
    return [("firewall_rule", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ policies


#: rules a policy may order: the dataplane gives each its own priority (apps/firewall.py MAX_RULES)
MAX_POLICY_RULES = 200


def _check_policy_rules(topo: Topology, tenant: str, policy_id: str, rules: Sequence[str]) -> tuple[str, ...]:
    if len(rules) > MAX_POLICY_RULES:
        raise errors.invalid(
            "firewall_rules", f"{len(rules)} rules: a policy orders at most {MAX_POLICY_RULES}"
        )
    seen: dict[str, int] = {}
    for i, rid in enumerate(rules):
        path = f"firewall_rules[{i}]"
        rule = topo.firewall_rules.get(rid)
        if rule is None or rule.tenant != tenant:
            err = errors.not_found("firewall_rule", rid)
            err.violations = [(path, f"firewall rule {rid!r} not found")]
            raise err
        if rid in seen:
            raise errors.invalid(path, f"repeats firewall_rules[{seen[rid]}]")
        seen[rid] = i
        other = topo.rule_policy.get(rid)
        if other is not None and other != policy_id:
            err = errors.failed_precondition(
                "FIREWALL_RULE_IN_USE",
                f"firewall rule {named(rule)} is already in policy "
                f"{named_ref(topo.firewall_policies, other, tenant)} (a rule is in at most one policy)",
                firewall_rule=rid,
                firewall_policy=other,
            )
            err.violations = [(path, f"in policy {other!r}")]
            raise err
    return tuple(rules)


def create_firewall_policy(topo: Topology, policy: FirewallPolicy, rev: int, now: float) -> list[Change]:
    _check_name(policy.display_name)
    _check_description(policy.description)
    rec = dataclasses.replace(policy, rules=_check_policy_rules(topo, policy.tenant, policy.id, policy.rules))
    return [("firewall_policy", rec.id, None, _stamp(rec, rev, now, True))]


FIREWALL_POLICY_MUTABLE = {"display_name", "description", "firewall_rules"}


def update_firewall_policy(
    topo: Topology, old: FirewallPolicy, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """`fields["firewall_rules"]`: the whole ordered list of rule ids."""
    _check_fields(fields, FIREWALL_POLICY_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    if "description" in fields:
        _check_description(fields["description"])
    if "firewall_rules" in fields:
        fields["rules"] = _check_policy_rules(topo, old.tenant, old.id, fields.pop("firewall_rules"))
    new = dataclasses.replace(old, **fields)
    return [("firewall_policy", old.id, old, _stamp(new, rev, now, False))]


def delete_firewall_policy(topo: Topology, old: FirewallPolicy) -> list[Change]:
    groups = sorted(topo.policy_groups.get(old.id, ()))
    if groups:
        raise errors.failed_precondition(
            "FIREWALL_POLICY_IN_USE",
            f"firewall policy {named(old)} is used by firewall group(s) "
            f"{', '.join(named_ref(topo.firewall_groups, g, old.tenant) for g in groups)}",
            firewall_policy=old.id,
        )
    return [("firewall_policy", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ groups


def _check_firewall_group(topo: Topology, group: FirewallGroup) -> FirewallGroup:
    _check_name(group.display_name)
    _check_description(group.description)
    for pid, path in (
        (group.ingress_policy_id, "ingress_firewall_policy"),
        (group.egress_policy_id, "egress_firewall_policy"),
    ):
        policy = topo.firewall_policies.get(pid) if pid else None
        if pid and (policy is None or policy.tenant != group.tenant):
            err = errors.not_found("firewall_policy", pid)
            err.violations = [(path, f"firewall policy {pid!r} not found")]
            raise err
    seen: dict[str, int] = {}
    for i, port_id in enumerate(group.ports):
        path = f"ports[{i}]"
        port: Port | None = topo.ports.get(port_id)
        if port is None or port.tenant != group.tenant:
            err = errors.not_found("port", port_id)
            err.violations = [(path, f"port {port_id!r} not found")]
            raise err
        if port.device_owner != OWNER_ROUTER_INTERFACE:
            raise errors.invalid(
                path,
                f"port {named(port)} is not a router interface (device_owner {OWNER_ROUTER_INTERFACE!r})",
                reason="NOT_ROUTER_INTERFACE",
            )
        if port_id in seen:
            raise errors.invalid(path, f"repeats ports[{seen[port_id]}]")
        seen[port_id] = i
        other = topo.port_firewall.get(port_id)
        if other is not None and other != group.id:
            err = errors.failed_precondition(
                "PORT_IN_FIREWALL_GROUP",
                f"port {named(port)} is already in firewall group "
                f"{named_ref(topo.firewall_groups, other, group.tenant)} (a port is in at most one)",
                port=port_id,
                firewall_group=other,
            )
            err.violations = [(path, f"in firewall group {other!r}")]
            raise err
    return group


def create_firewall_group(topo: Topology, group: FirewallGroup, rev: int, now: float) -> list[Change]:
    rec = _check_firewall_group(topo, group)
    return [("firewall_group", rec.id, None, _stamp(rec, rev, now, True))]


FIREWALL_GROUP_MUTABLE = {
    "display_name",
    "description",
    "ingress_firewall_policy",
    "egress_firewall_policy",
    "ports",
    "admin_state_up",
}
_GROUP_FIELDS = {"ingress_firewall_policy": "ingress_policy_id", "egress_firewall_policy": "egress_policy_id"}


def update_firewall_group(
    topo: Topology, old: FirewallGroup, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    """`fields` by API name; policies as ids ("" = unfiltered), ports as the whole list of ids."""
    _check_fields(fields, FIREWALL_GROUP_MUTABLE)
    values: dict[str, Any] = {
        _GROUP_FIELDS.get(k, k): (tuple(v) if k == "ports" else v) for k, v in fields.items()
    }
    new = _check_firewall_group(topo, dataclasses.replace(old, **values))
    return [("firewall_group", old.id, old, _stamp(new, rev, now, False))]


def delete_firewall_group(old: FirewallGroup) -> list[Change]:
    return [("firewall_group", old.id, old, None)]
