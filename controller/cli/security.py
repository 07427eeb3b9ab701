"""`sdnctl security group ...` and `sdnctl firewall group ...` (OpenStack client grammar), hooked into
controller/cli.py's parser by `add_commands`.

    security group create|list|show|set|delete
    security group rule create SG --ingress|--egress [--ethertype IPv4|IPv6] [--protocol P] [--dst-port N[:M]]
                                  [--icmp-type N [--icmp-code N]] [--remote-ip CIDR | --remote-group SG]
    security group rule list [SG] | show RULE | delete RULE...
    firewall group rule create|list|show|set|delete      (--action allow|deny|reject, --source-port N[:M], ...)
    firewall group policy create|list|show|set|delete    (--firewall-rule R, repeatable, in order)
    firewall group create|list|show|set|delete           (--ingress-firewall-policy P, --port PORT, ...)

SG is a resource name, an id, a display name, or "default" (the tenant's default group).
"""

from __future__ import annotations

import argparse
from typing import Any

from controller.cli.common import (
    PAGE_SIZE,
    Client,
    command,
    do_delete,
    do_list,
    do_show,
    pair,
    put,
    repeated,
    update,
)
from controller.cli.format import group_name, positive, usage_error
from proto.sdn.v1 import topology_pb2 as pb


def port_range(text: str) -> tuple[int, int]:
    """ "22" -> (22, 22); "1000:2000" -> (1000, 2000)."""
    lo, sep, hi = text.partition(":")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PORT or MIN:MAX") from None
    return a, b


def group_ref(c: Client, ref: str) -> str:
    """A security group's resource name; "default" stays the server's to resolve (the tenant whose thing
    refers to it owns the default group meant)."""
    if ref == "default" or "/" in ref:
        return group_name(ref)
    return str(c.resolve("security_group", ref).name)


def _rule_name(ref: str) -> str:
    return ref if "/" in ref else f"securityGroupRules/{ref}"


# ---------------------------------------------------------------------------------------------- security groups


def sg_create(c: Client, a: argparse.Namespace) -> Any:
    group = pb.SecurityGroup(
        display_name=a.display_name, description=a.description or "", tenant=a.tenant or ""
    )
    return c(
        "CreateSecurityGroup",
        pb.CreateSecurityGroupRequest(security_group=group, security_group_id=a.id or ""),
    )


def sg_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.SecurityGroup(name=group_ref(c, a.ref))
    for field in ("display_name", "description"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "security_group", msg, paths)


def sg_show(c: Client, a: argparse.Namespace) -> Any:
    return c("GetSecurityGroup", pb.GetSecurityGroupRequest(name=group_ref(c, a.ref)))


def rule_create(c: Client, a: argparse.Namespace) -> Any:
    if a.icmp_code is not None and a.icmp_type is None:
        raise usage_error("--icmp-code needs --icmp-type")
    rule = pb.SecurityGroupRule(
        security_group=group_ref(c, a.group),
        direction=a.direction,
        ethertype=a.ethertype or "",
        protocol=a.protocol or "",
        remote_ip_prefix=a.remote_ip or "",
        remote_group=group_ref(c, a.remote_group) if a.remote_group else "",
        description=a.description or "",
    )
    if a.dst_port:
        rule.port_range_min, rule.port_range_max = a.dst_port
    if a.icmp_type is not None:
        rule.icmp_type = a.icmp_type
    if a.icmp_code is not None:
        rule.icmp_code = a.icmp_code
    return c(
        "CreateSecurityGroupRule",
        pb.CreateSecurityGroupRuleRequest(security_group_rule=rule, security_group_rule_id=a.id or ""),
    )


def rule_list(c: Client, a: argparse.Namespace) -> list[Any]:
    filters = {"security_group": group_ref(c, a.group)} if a.group else {}
    if a.tenant:
        filters["tenant"] = a.tenant
    return c.list("security_group_rule", limit=a.limit or 0, page_size=a.page_size or PAGE_SIZE, **filters)


def rule_show(c: Client, a: argparse.Namespace) -> Any:
    return c("GetSecurityGroupRule", pb.GetSecurityGroupRuleRequest(name=_rule_name(a.ref)))


def rule_delete(c: Client, a: argparse.Namespace) -> int:
    a.refs = [_rule_name(r) for r in a.refs]
    return do_delete(c, a)


# ---------------------------------------------------------------------------------------------- firewalls


def _fw_rule_fields(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in (
        "display_name",
        "description",
        "action",
        "protocol",
        "ip_version",
        "source_ip_address",
        "destination_ip_address",
        "enabled",
    ):
        value = getattr(a, field, None)
        if value is not None:
            out[field] = value
    for side in ("source", "destination"):
        ports = getattr(a, f"{side}_port")
        if ports is not None:
            out[f"{side}_port_min"], out[f"{side}_port_max"] = ports
    return out


def fw_rule_create(c: Client, a: argparse.Namespace) -> Any:
    rule = pb.FirewallRule(tenant=a.tenant or "", **_fw_rule_fields(a))
    return c(
        "CreateFirewallRule", pb.CreateFirewallRuleRequest(firewall_rule=rule, firewall_rule_id=a.id or "")
    )


def fw_rule_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.FirewallRule(name=c.resolve("firewall_rule", a.ref).name)
    for field, value in _fw_rule_fields(a).items():
        put(msg, paths, field, value)
    return update(c, "firewall_rule", msg, paths)


def _rules(c: Client, refs: list[str] | None) -> list[str] | None:
    return None if refs is None else [c.resolve("firewall_rule", r).name for r in refs]


def fw_policy_create(c: Client, a: argparse.Namespace) -> Any:
    policy = pb.FirewallPolicy(
        display_name=a.display_name,
        description=a.description or "",
        firewall_rules=_rules(c, a.firewall_rules) or [],
        tenant=a.tenant or "",
    )
    return c(
        "CreateFirewallPolicy",
        pb.CreateFirewallPolicyRequest(firewall_policy=policy, firewall_policy_id=a.id or ""),
    )


def fw_policy_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.FirewallPolicy(name=c.resolve("firewall_policy", a.ref).name)
    for field in ("display_name", "description"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "firewall_rules", _rules(c, a.firewall_rules))
    return update(c, "firewall_policy", msg, paths)


def _policy(c: Client, ref: str | None) -> str | None:
    if ref is None:
        return None
    return c.resolve("firewall_policy", ref).name if ref else ""


def fw_group_create(c: Client, a: argparse.Namespace) -> Any:
    group = pb.FirewallGroup(
        display_name=a.display_name,
        description=a.description or "",
        tenant=a.tenant or "",
        ingress_firewall_policy=_policy(c, a.ingress_firewall_policy) or "",
        egress_firewall_policy=_policy(c, a.egress_firewall_policy) or "",
        ports=[c.resolve("port", p).name for p in a.ports or []],
    )
    if a.admin_state_up is not None:
        group.admin_state_up = a.admin_state_up
    return c(
        "CreateFirewallGroup",
        pb.CreateFirewallGroupRequest(firewall_group=group, firewall_group_id=a.id or ""),
    )


def fw_group_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.FirewallGroup(name=c.resolve("firewall_group", a.ref).name)
    for field in ("display_name", "description", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "ingress_firewall_policy", _policy(c, a.ingress_firewall_policy))
    put(msg, paths, "egress_firewall_policy", _policy(c, a.egress_firewall_policy))
    put(msg, paths, "ports", None if a.ports is None else [c.resolve("port", p).name for p in a.ports])
    return update(c, "firewall_group", msg, paths)


# ---------------------------------------------------------------------------------------------- parser


def _validate_only(*parsers: Any) -> None:
    for p in parsers:
        p.add_argument(
            "--validate-only",
            action="store_true",
            help="check and print what the switches would get; store and change nothing",
        )


def _crud(
    sub: Any, kind: str, what: str, ref: str, create: Any, set_: Any, show: Any = do_show, force: str = ""
) -> tuple[Any, Any, Any, Any]:
    """create NAME / list / show REF / set REF / delete REF... of one kind."""
    pc = command(sub, "create", create, kind, help=f"create a {what}")
    pc.add_argument(
        "display_name",
        metavar="NAME",
        nargs="?" if kind == "firewall_rule" else None,
        default="",
        help="display name",
    )
    pc.add_argument("--id", help="client-chosen id ([a-z0-9-], at most 63)")
    pc.add_argument("--tenant", help="owner (admin: create for another tenant)")
    pl = command(sub, "list", do_list, kind, out="many", help=f"list {what}s")
    pl.add_argument("--limit", type=positive, help="at most N (default: every page)")
    pl.add_argument("--page-size", type=positive, help=f"items per request (default {PAGE_SIZE})")
    pl.add_argument("--tenant", help="only this tenant's (admin)")
    command(sub, "show", show, kind, help=f"show a {what}").add_argument("ref", metavar=ref)
    ps = command(sub, "set", set_, kind, help=f"change a {what}")
    ps.add_argument("ref", metavar=ref)
    ps.add_argument("--name", dest="display_name", help="new display name")
    pd = command(sub, "delete", do_delete, kind, out="none", help=f"delete {what}s")
    pd.add_argument("refs", metavar=ref, nargs="+")
    if force:
        pd.add_argument("--force", action="store_true", help=force)
    for p in (pc, ps):
        p.add_argument("--description", help="free text")
    _validate_only(pc, ps, pd)
    return pc, pl, ps, pd


def _actions(parser: Any, dest: str) -> Any:
    return parser.add_subparsers(dest=dest, metavar="ACTION", required=True)


def add_commands(sub: Any) -> None:
    """`security group ...` and `firewall group ...` under the top-level command parser `sub`."""
    security = sub.add_parser("security", help="security group commands (security group [rule] ACTION)")
    sg = _actions(
        security.add_subparsers(dest="security", metavar="group", required=True).add_parser(
            "group", help="security groups: allow rules on ports"
        ),
        "action",
    )
    _crud(
        sg,
        "security_group",
        "security group",
        "SG",
        sg_create,
        sg_set,
        show=sg_show,
        force="also take it off the ports using it and delete other groups' rules naming it",
    )
    rules = _actions(sg.add_parser("rule", help="security group rules"), "rule_action")
    p = command(rules, "create", rule_create, "security_group_rule", help="add a rule to a group")
    p.add_argument("group", metavar="SG")
    p.add_argument("--id", help="client-chosen id")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--ingress",
        dest="direction",
        action="store_const",
        const="ingress",
        default="ingress",
        help="traffic to the group's ports (default)",
    )
    g.add_argument(
        "--egress",
        dest="direction",
        action="store_const",
        const="egress",
        help="traffic from the group's ports",
    )
    p.add_argument("--ethertype", choices=["IPv4", "IPv6"], help="default IPv4")
    p.add_argument(
        "--protocol", metavar="P", help="any, tcp, udp, sctp, icmp, icmpv6 or a number (default any)"
    )
    p.add_argument("--dst-port", type=port_range, metavar="PORT[:MAX]", help="tcp/udp/sctp destination ports")
    p.add_argument("--icmp-type", type=positive, metavar="N")
    p.add_argument("--icmp-code", type=positive, metavar="N")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--remote-ip", metavar="CIDR", help="from/to these addresses")
    g.add_argument("--remote-group", metavar="SG", help="from/to the members of this group")
    p.add_argument("--description")
    _validate_only(p)
    p = command(rules, "list", rule_list, "security_group_rule", out="many", help="list rules")
    p.add_argument("group", metavar="SG", nargs="?", help="only this group's")
    p.add_argument("--limit", type=positive)
    p.add_argument("--page-size", type=positive)
    p.add_argument("--tenant", help="only this tenant's (admin)")
    command(rules, "show", rule_show, "security_group_rule", help="show a rule").add_argument(
        "ref", metavar="RULE"
    )
    p = command(rules, "delete", rule_delete, "security_group_rule", out="none", help="delete rules")
    p.add_argument("refs", metavar="RULE", nargs="+")
    _validate_only(p)

    firewall = sub.add_parser(
        "firewall", help="router firewall commands (firewall group [rule|policy] ACTION)"
    )
    fg = _actions(
        firewall.add_subparsers(dest="firewall", metavar="group", required=True).add_parser(
            "group", help="firewall groups: policies on router interfaces"
        ),
        "action",
    )
    pc, _pl, ps, _pd = _crud(fg, "firewall_group", "firewall group", "FWG", fw_group_create, fw_group_set)
    for p in (pc, ps):
        clear = p is ps
        for side in ("ingress", "egress"):
            g = p.add_mutually_exclusive_group()
            g.add_argument(f"--{side}-firewall-policy", metavar="POLICY", help=f"filters {side} traffic")
            if clear:
                g.add_argument(
                    f"--no-{side}-firewall-policy",
                    dest=f"{side}_firewall_policy",
                    action="store_const",
                    const="",
                    help=f"no {side} filtering",
                )
        repeated(
            p,
            "--port",
            "ports",
            "--no-port" if clear else None,
            "PORT",
            help="a router interface port" + ("; replaces the list" if clear else ""),
        )
        pair(p, "admin_state_up", "--enable", "--disable")

    rules = _actions(fg.add_parser("rule", help="firewall rules"), "rule_action")
    pc, _pl, ps, _pd = _crud(rules, "firewall_rule", "firewall rule", "RULE", fw_rule_create, fw_rule_set)
    for p in (pc, ps):
        p.add_argument("--action", choices=["allow", "deny", "reject"], help="default deny")
        p.add_argument("--protocol", metavar="P", help="any, tcp, udp, icmp or a number")
        p.add_argument("--ip-version", type=int, choices=[4, 6])
        p.add_argument("--source-ip-address", metavar="CIDR")
        p.add_argument("--destination-ip-address", metavar="CIDR")
        p.add_argument("--source-port", type=port_range, metavar="PORT[:MAX]")
        p.add_argument("--destination-port", type=port_range, metavar="PORT[:MAX]")
        pair(p, "enabled", "--enable-rule", "--disable-rule")

    policies = _actions(fg.add_parser("policy", help="firewall policies: ordered rules"), "policy_action")
    pc, _pl, ps, _pd = _crud(
        policies, "firewall_policy", "firewall policy", "POLICY", fw_policy_create, fw_policy_set
    )
    repeated(pc, "--firewall-rule", "firewall_rules", None, "RULE", help="in order")
    repeated(
        ps,
        "--firewall-rule",
        "firewall_rules",
        "--no-firewall-rule",
        "RULE",
        help="in order; replaces the list",
    )
