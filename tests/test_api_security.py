"""Security groups, their rules and router firewalls (FWaaS) through the gRPC API: happy paths, every validation
error with its field, the default group, deletion refusals, validate_only, Watch, and the flow budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api, InProcessServer
from tests.test_api import expect_error, make_net, make_port, make_subnet
from topology.records import to_dict
from topology.state import State

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION, EXISTS = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS


def make_group(api: Api, md: Any, ident: str = "", **kw: Any) -> pb.SecurityGroup:
    return api.stub.CreateSecurityGroup(
        pb.CreateSecurityGroupRequest(security_group=pb.SecurityGroup(**kw), security_group_id=ident),
        metadata=md,
    )


def make_rule(
    api: Api, md: Any, group: str, ident: str = "", validate_only: bool = False, **kw: Any
) -> pb.SecurityGroupRule:
    kw.setdefault("direction", "ingress")
    return api.stub.CreateSecurityGroupRule(
        pb.CreateSecurityGroupRuleRequest(
            security_group_rule=pb.SecurityGroupRule(security_group=group, **kw),
            security_group_rule_id=ident,
            validate_only=validate_only,
        ),
        metadata=md,
    )


def rule_shape(r: pb.SecurityGroupRule) -> tuple[str, str, str, str, str]:
    return (r.direction, r.ethertype, r.protocol or "any", r.remote_ip_prefix, r.remote_group)


def _alice(api: Api) -> tuple[Any, pb.Network, pb.Subnet]:
    md = api.md(api.tenant_token("alice"))
    net = make_net(api, md, "web")
    sub = make_subnet(api, md, net.name, "10.0.0.0/24", "web-v4")
    return md, net, sub


# ---------------------------------------------------------------------------------------------- groups


def test_security_group_lifecycle_and_default_group(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    web = make_group(api, md, "web", display_name="web", description="front ends")
    assert (web.name, web.tenant, web.display_name, web.description) == (
        "securityGroups/web",
        "alice",
        "web",
        "front ends",
    )
    # Neutron gives a new group all egress
    assert sorted(rule_shape(r) for r in web.rules) == [
        ("egress", "IPv4", "any", "", ""),
        ("egress", "IPv6", "any", "", ""),
    ]
    # the tenant's first security-group call made its default group: all egress, ingress from itself
    default = api.stub.GetSecurityGroup(
        pb.GetSecurityGroupRequest(name="securityGroups/default"), metadata=md
    )
    assert default.display_name == "default" and default.tenant == "alice"
    assert default.name != "securityGroups/default"
    assert sorted(rule_shape(r) for r in default.rules) == [
        ("egress", "IPv4", "any", "", ""),
        ("egress", "IPv6", "any", "", ""),
        ("ingress", "IPv4", "any", "", default.name),
        ("ingress", "IPv6", "any", "", default.name),
    ]
    assert len({r.conjunction_id for r in [*web.rules, *default.rules]}) == 6
    listed = api.stub.ListSecurityGroups(pb.ListSecurityGroupsRequest(), metadata=md).security_groups
    assert sorted(g.display_name for g in listed) == ["default", "web"]
    assert api.stub.GetSecurityGroup(pb.GetSecurityGroupRequest(name=web.name), metadata=md) == web

    upd = api.stub.UpdateSecurityGroup(
        pb.UpdateSecurityGroupRequest(
            security_group=pb.SecurityGroup(name=web.name, display_name="frontend"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=md,
    )
    assert upd.display_name == "frontend" and upd.description == "front ends" and len(upd.rules) == 2

    # bob sees neither alice's groups nor her default; he gets his own
    bob = api.md(api.tenant_token("bob"))
    code, _, reason = expect_error(
        api.stub.GetSecurityGroup, pb.GetSecurityGroupRequest(name=web.name), metadata=bob
    )
    assert (code, reason) == (NOT_FOUND, "SECURITY_GROUP_NOT_FOUND")
    bob_groups = api.stub.ListSecurityGroups(pb.ListSecurityGroupsRequest(), metadata=bob).security_groups
    assert [(g.display_name, g.tenant) for g in bob_groups] == [("default", "bob")]

    api.stub.DeleteSecurityGroup(pb.DeleteSecurityGroupRequest(name=web.name), metadata=md)
    code, _, _ = expect_error(
        api.stub.GetSecurityGroup, pb.GetSecurityGroupRequest(name=web.name), metadata=md
    )
    assert code == NOT_FOUND
    assert (
        api.stub.ListSecurityGroupRules(
            pb.ListSecurityGroupRulesRequest(security_group=web.name), metadata=md
        ).security_group_rules
        == []
    )


def test_security_group_errors(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    web = make_group(api, md, "web", display_name="web")
    cases = [
        ({"display_name": "default"}, "", INVALID, ["security_group.display_name"], "RESERVED_NAME"),
        ({"display_name": "x" * 256}, "", INVALID, ["security_group.display_name"], "INVALID_FIELD"),
        ({"description": "x" * 256}, "", INVALID, ["security_group.description"], "INVALID_FIELD"),
        ({}, "default", INVALID, ["security_group_id"], "RESERVED_NAME"),
        ({}, "Bad_Id", INVALID, ["security_group_id"], "INVALID_FIELD"),
        ({}, "web", EXISTS, [], "SECURITY_GROUP_EXISTS"),
    ]
    for kwargs, ident, code, fields, reason in cases:
        assert expect_error(make_group, api, md, ident, **kwargs) == (code, fields, reason), (kwargs, ident)
    default = api.stub.GetSecurityGroup(
        pb.GetSecurityGroupRequest(name="securityGroups/default"), metadata=md
    )
    for name, new, reason in (
        (default.name, "other", "DEFAULT_SECURITY_GROUP"),
        (web.name, "default", "RESERVED_NAME"),
    ):
        got = expect_error(
            api.stub.UpdateSecurityGroup,
            pb.UpdateSecurityGroupRequest(
                security_group=pb.SecurityGroup(name=name, display_name=new),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=md,
        )
        assert got == (INVALID, ["security_group.display_name"], reason)
    got = expect_error(
        api.stub.UpdateSecurityGroup,
        pb.UpdateSecurityGroupRequest(
            security_group=pb.SecurityGroup(name=web.name),
            update_mask=field_mask_pb2.FieldMask(paths=["rules"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, ["update_mask"], "OUTPUT_ONLY_FIELD")


def test_security_group_deletion_refusals_and_force(api: Api) -> None:
    md, net, _sub = _alice(api)
    web = make_group(api, md, "web", display_name="web")
    db = make_group(api, md, "db", display_name="db")
    make_rule(api, md, db.name, "db-from-web", protocol="tcp", port_range_min=5432, remote_group=web.name)
    port = make_port(api, md, net.name, "vm1", security_groups=[web.name])
    code, _, reason = expect_error(
        api.stub.DeleteSecurityGroup, pb.DeleteSecurityGroupRequest(name=web.name), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "SECURITY_GROUP_IN_USE")
    api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, security_groups=[db.name]),
            update_mask=field_mask_pb2.FieldMask(paths=["security_groups"]),
        ),
        metadata=md,
    )
    # still named as remote group by db's rule
    code, _, reason = expect_error(
        api.stub.DeleteSecurityGroup, pb.DeleteSecurityGroupRequest(name=web.name), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "SECURITY_GROUP_IN_USE")
    # force: db comes off the port, web's rule naming... here: db is deleted with force; the port keeps none
    api.stub.DeleteSecurityGroup(pb.DeleteSecurityGroupRequest(name=db.name, force=True), metadata=md)
    assert list(api.stub.GetPort(pb.GetPortRequest(name=port.name), metadata=md).security_groups) == []
    api.stub.DeleteSecurityGroup(
        pb.DeleteSecurityGroupRequest(name=web.name), metadata=md
    )  # nothing uses it now
    # force also deletes other groups' rules naming the group
    a, b = make_group(api, md, "a", display_name="a"), make_group(api, md, "b", display_name="b")
    make_rule(api, md, a.name, "a-from-b", remote_group=b.name)
    api.stub.DeleteSecurityGroup(pb.DeleteSecurityGroupRequest(name=b.name, force=True), metadata=md)
    code, _, _ = expect_error(
        api.stub.GetSecurityGroupRule,
        pb.GetSecurityGroupRuleRequest(name="securityGroupRules/a-from-b"),
        metadata=md,
    )
    assert code == NOT_FOUND
    # the tenant cannot delete its default group, even with force; the admin can
    code, _, reason = expect_error(
        api.stub.DeleteSecurityGroup,
        pb.DeleteSecurityGroupRequest(name="securityGroups/default", force=True),
        metadata=md,
    )
    assert (code, reason) == (PRECONDITION, "DEFAULT_SECURITY_GROUP")
    default = api.stub.GetSecurityGroup(
        pb.GetSecurityGroupRequest(name="securityGroups/default"), metadata=md
    )
    api.stub.DeleteSecurityGroup(pb.DeleteSecurityGroupRequest(name=default.name), metadata=api.admin)


# ---------------------------------------------------------------------------------------------- rules


def test_rule_lifecycle_and_normalization(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    web = make_group(api, md, "web", display_name="web")
    ssh = make_rule(
        api,
        md,
        web.name,
        "ssh",
        protocol="TCP",
        port_range_min=22,
        remote_ip_prefix="10.1.2.3/8",
        description="admins",
    )
    assert (ssh.name, ssh.security_group, ssh.tenant) == ("securityGroupRules/ssh", web.name, "alice")
    assert (ssh.protocol, ssh.port_range_min, ssh.port_range_max, ssh.remote_ip_prefix, ssh.ethertype) == (
        "tcp",
        22,
        22,
        "10.0.0.0/8",
        "IPv4",
    )
    assert not ssh.HasField("icmp_type") and ssh.conjunction_id > 0
    ping6 = make_rule(api, md, web.name, ethertype="IPv6", protocol="icmp", icmp_type=128, icmp_code=0)
    assert (ping6.protocol, ping6.icmp_type, ping6.icmp_code) == ("icmpv6", 128, 0)
    num = make_rule(api, md, web.name, protocol="17", port_range_min=1000, port_range_max=2000)
    assert (num.protocol, num.port_range_min, num.port_range_max) == ("udp", 1000, 2000)
    gre = make_rule(
        api, md, web.name, direction="egress", protocol="47", remote_group="securityGroups/default"
    )
    default = api.stub.GetSecurityGroup(
        pb.GetSecurityGroupRequest(name="securityGroups/default"), metadata=md
    )
    assert gre.protocol == "47" and gre.remote_group == default.name
    got = api.stub.GetSecurityGroup(pb.GetSecurityGroupRequest(name=web.name), metadata=md)
    assert {r.name for r in got.rules} >= {ssh.name, ping6.name, num.name, gre.name} and len(got.rules) == 6
    listed = api.stub.ListSecurityGroupRules(
        pb.ListSecurityGroupRulesRequest(security_group=web.name), metadata=md
    )
    assert len(listed.security_group_rules) == 6
    assert api.stub.GetSecurityGroupRule(pb.GetSecurityGroupRuleRequest(name=ssh.name), metadata=md) == ssh
    api.stub.DeleteSecurityGroupRule(pb.DeleteSecurityGroupRuleRequest(name=ssh.name), metadata=md)
    assert len(api.stub.GetSecurityGroup(pb.GetSecurityGroupRequest(name=web.name), metadata=md).rules) == 5
    # the same rule again is fine once the first is gone
    make_rule(api, md, web.name, "ssh", protocol="tcp", port_range_min=22, remote_ip_prefix="10.0.0.0/8")


def test_rule_errors_name_the_field(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    web = make_group(api, md, "web", display_name="web")
    make_rule(api, md, web.name, "ssh", protocol="tcp", port_range_min=22, port_range_max=22)
    bob = api.md(api.tenant_token("bob"))
    bobs = make_group(api, bob, "bobs", display_name="bobs")
    f = "security_group_rule."
    cases: list[tuple[dict[str, Any], grpc.StatusCode, list[str], str]] = [
        ({"direction": ""}, INVALID, [f + "direction"], "INVALID_FIELD"),
        ({"direction": "sideways"}, INVALID, [f + "direction"], "INVALID_FIELD"),
        ({"ethertype": "IPX"}, INVALID, [f + "ethertype"], "INVALID_FIELD"),
        ({"protocol": "foo"}, INVALID, [f + "protocol"], "INVALID_FIELD"),
        ({"protocol": "256"}, INVALID, [f + "protocol"], "INVALID_FIELD"),
        ({"protocol": "icmpv6"}, INVALID, [f + "protocol"], "INVALID_FIELD"),  # on IPv4
        ({"port_range_min": 22}, INVALID, [f + "port_range_min"], "INVALID_FIELD"),  # any protocol
        ({"protocol": "icmp", "port_range_min": 22}, INVALID, [f + "port_range_min"], "INVALID_FIELD"),
        ({"protocol": "tcp", "port_range_max": 22}, INVALID, [f + "port_range_min"], "INVALID_FIELD"),
        ({"protocol": "tcp", "port_range_min": 70000}, INVALID, [f + "port_range_min"], "INVALID_FIELD"),
        (
            {"protocol": "tcp", "port_range_min": 200, "port_range_max": 100},
            INVALID,
            [f + "port_range_max"],
            "INVALID_FIELD",
        ),
        ({"protocol": "tcp", "icmp_type": 8}, INVALID, [f + "icmp_type"], "INVALID_FIELD"),
        ({"icmp_type": 8}, INVALID, [f + "icmp_type"], "INVALID_FIELD"),
        ({"protocol": "icmp", "icmp_code": 0}, INVALID, [f + "icmp_code"], "INVALID_FIELD"),
        ({"protocol": "icmp", "icmp_type": 300}, INVALID, [f + "icmp_type"], "INVALID_FIELD"),
        ({"protocol": "icmp", "icmp_type": -5}, INVALID, [f + "icmp_type"], "INVALID_FIELD"),
        ({"remote_ip_prefix": "10.0.0.0/33"}, INVALID, [f + "remote_ip_prefix"], "INVALID_FIELD"),
        ({"remote_ip_prefix": "2001:db8::/32"}, INVALID, [f + "remote_ip_prefix"], "INVALID_FIELD"),
        (
            {"remote_ip_prefix": "10.0.0.0/8", "remote_group": web.name},
            INVALID,
            [f + "remote_group"],
            "INVALID_FIELD",
        ),
        (
            {"remote_group": "securityGroups/nope"},
            NOT_FOUND,
            [f + "remote_group"],
            "SECURITY_GROUP_NOT_FOUND",
        ),
        ({"remote_group": bobs.name}, NOT_FOUND, [f + "remote_group"], "SECURITY_GROUP_NOT_FOUND"),
        ({"remote_group": "groups/x"}, INVALID, [f + "remote_group"], "INVALID_FIELD"),
        ({"description": "x" * 256}, INVALID, [f + "description"], "INVALID_FIELD"),
        ({"protocol": "6", "port_range_min": 22}, EXISTS, [], "SECURITY_GROUP_RULE_EXISTS"),  # same as "ssh"
    ]
    for kwargs, code, fields, reason in cases:
        got = expect_error(make_rule, api, md, web.name, **kwargs)
        assert got == (code, fields, reason), kwargs
    assert (
        expect_error(make_rule, api, md, web.name, "ssh", protocol="udp")[2] == "SECURITY_GROUP_RULE_EXISTS"
    )
    code, fields, _ = expect_error(make_rule, api, md, "securityGroups/nope")
    assert code == NOT_FOUND
    code, _, reason = expect_error(make_rule, api, md, bobs.name)  # bob's group: not alice's to change
    assert (code, reason) == (NOT_FOUND, "SECURITY_GROUP_NOT_FOUND")
    # the admin may name bob's group but not as remote group of alice's rule
    got = expect_error(make_rule, api, api.admin, web.name, remote_group=bobs.name)
    assert got == (INVALID, [f + "remote_group"], "SECURITY_GROUP_OF_ANOTHER_TENANT")
    # nothing of the refused rules was stored
    rules = api.stub.ListSecurityGroupRules(
        pb.ListSecurityGroupRulesRequest(security_group=web.name), metadata=md
    ).security_group_rules
    assert len(rules) == 3


def test_validate_only_stores_nothing(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    web = make_group(api, md, "web", display_name="web")
    revision = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    rule = make_rule(api, md, web.name, "ssh", validate_only=True, protocol="tcp", port_range_min=22)
    assert rule.name == "securityGroupRules/ssh" and rule.port_range_max == 22
    api.stub.CreateSecurityGroup(
        pb.CreateSecurityGroupRequest(
            security_group=pb.SecurityGroup(display_name="x"), security_group_id="x", validate_only=True
        ),
        metadata=md,
    )
    api.stub.DeleteSecurityGroup(
        pb.DeleteSecurityGroupRequest(name=web.name, validate_only=True), metadata=md
    )
    assert api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision == revision
    assert len(api.stub.GetSecurityGroup(pb.GetSecurityGroupRequest(name=web.name), metadata=md).rules) == 2
    code, _, _ = expect_error(
        api.stub.GetSecurityGroupRule, pb.GetSecurityGroupRuleRequest(name=rule.name), metadata=md
    )
    assert code == NOT_FOUND
    # a refused dry run is refused as the write would be
    code, fields, _ = expect_error(
        make_rule, api, md, web.name, validate_only=True, protocol="tcp", port_range_min=0, port_range_max=9
    )
    assert (code, fields) == (INVALID, ["security_group_rule.port_range_min"])


# ---------------------------------------------------------------------------------------------- ports


def test_ports_get_the_default_group(api: Api) -> None:
    md, net, sub = _alice(api)
    p1 = make_port(api, md, net.name, "p1")
    default = api.stub.GetSecurityGroup(
        pb.GetSecurityGroupRequest(name="securityGroups/default"), metadata=md
    )
    assert list(p1.security_groups) == [default.name] and p1.port_security_enabled
    # without port security: no group; the same default for the next port
    assert list(make_port(api, md, net.name, port_security_enabled=False).security_groups) == []
    assert list(make_port(api, md, net.name).security_groups) == [default.name]
    # "securityGroups/default" in a port is its tenant's, also when the admin writes it
    by_admin = make_port(api, api.admin, net.name, security_groups=["securityGroups/default"])
    assert by_admin.tenant == "alice" and list(by_admin.security_groups) == [default.name]
    # router interfaces get none
    router = api.stub.CreateRouter(pb.CreateRouterRequest(router=pb.Router(), router_id="r1"), metadata=md)
    iface = api.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=router.name, subnet=sub.name), metadata=md
    )
    assert list(api.stub.GetPort(pb.GetPortRequest(name=iface.port), metadata=md).security_groups) == []
    # another tenant's group: NOT_FOUND to a tenant, INVALID_ARGUMENT to the admin, naming the field
    bob = api.md(api.tenant_token("bob"))
    bobs = make_group(api, bob, "bobs", display_name="bobs")
    got = expect_error(make_port, api, md, net.name, security_groups=[default.name, bobs.name])
    assert got == (NOT_FOUND, ["port.security_groups[1]"], "SECURITY_GROUP_NOT_FOUND")
    got = expect_error(make_port, api, api.admin, net.name, security_groups=[bobs.name])
    assert got == (INVALID, ["port.security_groups[0]"], "SECURITY_GROUP_OF_ANOTHER_TENANT")
    got = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=p1.name, security_groups=["securityGroups/nope"]),
            update_mask=field_mask_pb2.FieldMask(paths=["security_groups"]),
        ),
        metadata=md,
    )
    assert got == (NOT_FOUND, ["port.security_groups[0]"], "SECURITY_GROUP_NOT_FOUND")


def test_port_security_off_needs_no_groups_and_no_pairs(api: Api) -> None:
    md, net, _sub = _alice(api)
    port = make_port(api, md, net.name, "p1", allowed_address_pairs=[pb.AddressPair(ip_address="10.0.0.200")])
    mask = field_mask_pb2.FieldMask
    got = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, port_security_enabled=False),
            update_mask=mask(paths=["port_security_enabled"]),
        ),
        metadata=md,
    )
    assert got == (PRECONDITION, [], "PORT_SECURITY_REQUIRED")
    # in one call with the groups and pairs cleared (Neutron allows it)
    off = api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, port_security_enabled=False),
            update_mask=mask(paths=["port_security_enabled", "security_groups", "allowed_address_pairs"]),
        ),
        metadata=md,
    )
    assert (
        not off.port_security_enabled
        and list(off.security_groups) == []
        and list(off.allowed_address_pairs) == []
    )
    on = api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(
                name=port.name, port_security_enabled=True, security_groups=["securityGroups/default"]
            ),
            update_mask=mask(paths=["port_security_enabled", "security_groups"]),
        ),
        metadata=md,
    )
    assert on.port_security_enabled and len(on.security_groups) == 1


# ---------------------------------------------------------------------------------------------- firewalls


def _router_with_interfaces(api: Api, md: Any) -> tuple[pb.RouterInterface, pb.RouterInterface, pb.Port]:
    net = make_net(api, md, "a")
    sa = make_subnet(api, md, net.name, "10.1.0.0/24", "a-v4")
    netb = make_net(api, md, "b")
    sb = make_subnet(api, md, netb.name, "10.2.0.0/24", "b-v4")
    router = api.stub.CreateRouter(pb.CreateRouterRequest(router=pb.Router(), router_id="r1"), metadata=md)
    ia = api.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=router.name, subnet=sa.name), metadata=md
    )
    ib = api.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=router.name, subnet=sb.name), metadata=md
    )
    vm = make_port(api, md, net.name, "vm")
    return ia, ib, vm


def test_firewall_rules_policies_and_groups(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    ia, ib, _vm = _router_with_interfaces(api, md)
    rules = []
    for ident, kw in (
        (
            "web",
            {
                "action": "allow",
                "protocol": "tcp",
                "destination_port_min": 80,
                "destination_ip_address": "10.2.0.0/24",
            },
        ),
        (
            "ssh",
            {
                "action": "ALLOW",
                "protocol": "6",
                "destination_port_min": 22,
                "destination_port_max": 23,
                "source_ip_address": "10.1.0.5",
            },
        ),
        ("rest", {"action": "reject"}),
    ):
        rules.append(
            api.stub.CreateFirewallRule(
                pb.CreateFirewallRuleRequest(
                    firewall_rule=pb.FirewallRule(display_name=ident, **kw), firewall_rule_id=ident
                ),
                metadata=md,
            )
        )
    web, ssh, rest = rules
    assert (
        web.action,
        web.protocol,
        web.destination_port_min,
        web.destination_port_max,
        web.ip_version,
        web.enabled,
    ) == ("allow", "tcp", 80, 80, 4, True)
    assert (ssh.action, ssh.protocol, ssh.source_ip_address) == ("allow", "tcp", "10.1.0.5/32")
    assert rest.action == "reject" and rest.protocol == ""
    policy = api.stub.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(display_name="in", firewall_rules=[ssh.name, web.name]),
            firewall_policy_id="in",
        ),
        metadata=md,
    )
    assert list(policy.firewall_rules) == [ssh.name, web.name]
    reordered = api.stub.UpdateFirewallPolicy(
        pb.UpdateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(
                name=policy.name, firewall_rules=[web.name, ssh.name, rest.name]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["firewall_rules"]),
        ),
        metadata=md,
    )
    assert list(reordered.firewall_rules) == [web.name, ssh.name, rest.name]
    group = api.stub.CreateFirewallGroup(
        pb.CreateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(
                display_name="edge", ingress_firewall_policy=policy.name, ports=[ia.port]
            ),
            firewall_group_id="fwg",
        ),
        metadata=md,
    )
    assert (
        group.ingress_firewall_policy,
        group.egress_firewall_policy,
        list(group.ports),
        group.admin_state_up,
    ) == (policy.name, "", [ia.port], True)
    upd = api.stub.UpdateFirewallGroup(
        pb.UpdateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(
                name=group.name,
                egress_firewall_policy=policy.name,
                ports=[ia.port, ib.port],
                admin_state_up=False,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["egress_firewall_policy", "ports", "admin_state_up"]),
        ),
        metadata=md,
    )
    assert upd.egress_firewall_policy == policy.name and list(upd.ports) == [ia.port, ib.port]
    assert not upd.admin_state_up
    rule_upd = api.stub.UpdateFirewallRule(
        pb.UpdateFirewallRuleRequest(
            firewall_rule=pb.FirewallRule(name=web.name, enabled=False, destination_port_min=8080),
            update_mask=field_mask_pb2.FieldMask(
                paths=["enabled", "destination_port_min", "destination_port_max"]
            ),
        ),
        metadata=md,
    )
    assert (rule_upd.enabled, rule_upd.destination_port_min, rule_upd.destination_port_max) == (
        False,
        8080,
        8080,
    )
    assert [
        r.name for r in api.stub.ListFirewallRules(pb.ListFirewallRulesRequest(), metadata=md).firewall_rules
    ] == [rest.name, ssh.name, web.name]
    assert (
        len(api.stub.ListFirewallPolicies(pb.ListFirewallPoliciesRequest(), metadata=md).firewall_policies)
        == 1
    )
    assert api.stub.GetFirewallGroup(pb.GetFirewallGroupRequest(name=group.name), metadata=md) == upd
    # in use: a rule in a policy, a policy in a group
    code, _, reason = expect_error(
        api.stub.DeleteFirewallRule, pb.DeleteFirewallRuleRequest(name=web.name), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "FIREWALL_RULE_IN_USE")
    code, _, reason = expect_error(
        api.stub.DeleteFirewallPolicy, pb.DeleteFirewallPolicyRequest(name=policy.name), metadata=md
    )
    assert (code, reason) == (PRECONDITION, "FIREWALL_POLICY_IN_USE")
    # removing a router interface takes its port out of the firewall group
    api.stub.RemoveRouterInterface(
        pb.RemoveRouterInterfaceRequest(name="routers/r1", port=ib.port), metadata=md
    )
    assert list(
        api.stub.GetFirewallGroup(pb.GetFirewallGroupRequest(name=group.name), metadata=md).ports
    ) == [ia.port]
    api.stub.DeleteFirewallGroup(pb.DeleteFirewallGroupRequest(name=group.name), metadata=md)
    api.stub.DeleteFirewallPolicy(pb.DeleteFirewallPolicyRequest(name=policy.name), metadata=md)
    for r in rules:
        api.stub.DeleteFirewallRule(pb.DeleteFirewallRuleRequest(name=r.name), metadata=md)
    assert api.stub.ListFirewallRules(pb.ListFirewallRulesRequest(), metadata=md).firewall_rules == []


def test_firewall_errors_name_the_field(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    ia, _ib, vm = _router_with_interfaces(api, md)
    f = "firewall_rule."
    cases: list[tuple[dict[str, Any], list[str], str]] = [
        ({"action": "drop"}, [f + "action"], "INVALID_FIELD"),
        ({"ip_version": 5}, [f + "ip_version"], "INVALID_FIELD"),
        ({"protocol": "gre"}, [f + "protocol"], "INVALID_FIELD"),
        ({"source_ip_address": "10.0.0.0/40"}, [f + "source_ip_address"], "INVALID_FIELD"),
        ({"destination_ip_address": "2001:db8::/64"}, [f + "destination_ip_address"], "INVALID_FIELD"),
        ({"destination_port_min": 80}, [f + "destination_port_min"], "INVALID_FIELD"),  # any protocol
        ({"protocol": "icmp", "source_port_min": 80}, [f + "source_port_min"], "INVALID_FIELD"),
        ({"protocol": "sctp", "destination_port_min": 80}, [f + "destination_port_min"], "INVALID_FIELD"),
        (
            {"protocol": "udp", "destination_port_min": 90, "destination_port_max": 80},
            [f + "destination_port_max"],
            "INVALID_FIELD",
        ),
        ({"protocol": "udp", "source_port_min": 65536}, [f + "source_port_min"], "INVALID_FIELD"),
    ]
    for kwargs, fields, reason in cases:
        got = expect_error(
            api.stub.CreateFirewallRule,
            pb.CreateFirewallRuleRequest(firewall_rule=pb.FirewallRule(**kwargs)),
            metadata=md,
        )
        assert got == (INVALID, fields, reason), kwargs
    r1 = api.stub.CreateFirewallRule(
        pb.CreateFirewallRuleRequest(firewall_rule=pb.FirewallRule(action="allow"), firewall_rule_id="r1"),
        metadata=md,
    )
    got = expect_error(
        api.stub.UpdateFirewallRule,
        pb.UpdateFirewallRuleRequest(
            firewall_rule=pb.FirewallRule(name=r1.name, destination_port_min=80),
            update_mask=field_mask_pb2.FieldMask(paths=["destination_port_min"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, [f + "destination_port_min"], "INVALID_FIELD")  # r1 is any protocol
    api.stub.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(firewall_rules=[r1.name]), firewall_policy_id="p1"
        ),
        metadata=md,
    )
    fp = "firewall_policy."
    for rules, code, fields, reason in (
        (["firewallRules/nope"], NOT_FOUND, [fp + "firewall_rules[0]"], "FIREWALL_RULE_NOT_FOUND"),
        ([r1.name], PRECONDITION, [fp + "firewall_rules[0]"], "FIREWALL_RULE_IN_USE"),  # already in p1
        (["rules/x"], INVALID, [fp + "firewall_rules[0]"], "INVALID_FIELD"),
    ):
        got = expect_error(
            api.stub.CreateFirewallPolicy,
            pb.CreateFirewallPolicyRequest(firewall_policy=pb.FirewallPolicy(firewall_rules=rules)),
            metadata=md,
        )
        assert got == (code, fields, reason), rules
    r2 = api.stub.CreateFirewallRule(
        pb.CreateFirewallRuleRequest(firewall_rule=pb.FirewallRule(), firewall_rule_id="r2"), metadata=md
    )
    got = expect_error(
        api.stub.UpdateFirewallPolicy,
        pb.UpdateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(name="firewallPolicies/p1", firewall_rules=[r2.name, r2.name]),
            update_mask=field_mask_pb2.FieldMask(paths=["firewall_rules"]),
        ),
        metadata=md,
    )
    assert got == (INVALID, [fp + "firewall_rules[1]"], "INVALID_FIELD")
    fg = "firewall_group."
    api.stub.CreateFirewallGroup(
        pb.CreateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(ports=[ia.port]), firewall_group_id="g1"
        ),
        metadata=md,
    )
    bob = api.md(api.tenant_token("bob"))
    bob_policy = api.stub.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(firewall_policy=pb.FirewallPolicy()), metadata=bob
    )
    for kwargs, code, fields, reason in (
        ({"ports": [vm.name]}, INVALID, [fg + "ports[0]"], "NOT_ROUTER_INTERFACE"),
        ({"ports": [ia.port]}, PRECONDITION, [fg + "ports[0]"], "PORT_IN_FIREWALL_GROUP"),
        ({"ports": ["ports/nope"]}, NOT_FOUND, [fg + "ports[0]"], "PORT_NOT_FOUND"),
        (
            {"ingress_firewall_policy": "firewallPolicies/nope"},
            NOT_FOUND,
            [fg + "ingress_firewall_policy"],
            "FIREWALL_POLICY_NOT_FOUND",
        ),
        (
            {"egress_firewall_policy": bob_policy.name},
            NOT_FOUND,
            [fg + "egress_firewall_policy"],
            "FIREWALL_POLICY_NOT_FOUND",
        ),
    ):
        got = expect_error(
            api.stub.CreateFirewallGroup,
            pb.CreateFirewallGroupRequest(firewall_group=pb.FirewallGroup(**kwargs)),
            metadata=md,
        )
        assert got == (code, fields, reason), kwargs
    # bob cannot see or use alice's firewall objects
    code, _, _ = expect_error(api.stub.GetFirewallRule, pb.GetFirewallRuleRequest(name=r1.name), metadata=bob)
    assert code == NOT_FOUND
    assert api.stub.ListFirewallGroups(pb.ListFirewallGroupsRequest(), metadata=bob).firewall_groups == []


# ---------------------------------------------------------------------------------------------- watch


def test_watch_streams_the_new_kinds(api: Api) -> None:
    md = api.md(api.tenant_token("alice"))
    make_net(api, md)
    head = api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md).revision
    make_group(api, md, "web", display_name="web")
    api.stub.CreateFirewallRule(
        pb.CreateFirewallRuleRequest(firewall_rule=pb.FirewallRule(), firewall_rule_id="r1"), metadata=md
    )
    api.stub.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(firewall_rules=["firewallRules/r1"]), firewall_policy_id="p1"
        ),
        metadata=md,
    )
    api.stub.CreateFirewallGroup(
        pb.CreateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(ingress_firewall_policy="firewallPolicies/p1"),
            firewall_group_id="g1",
        ),
        metadata=md,
    )
    stream = api.stub.Watch(pb.WatchRequest(start_revision=head), metadata=md)
    kinds = []
    for event in stream:
        if event.type == pb.WatchEvent.SYNCED:
            break
        kinds.append((event.type, event.WhichOneof("resource")))
    stream.cancel()
    created = pb.WatchEvent.CREATED
    assert kinds == [
        (created, "security_group"),
        *[(created, "security_group_rule")] * 4,  # the default group
        (created, "security_group"),
        *[(created, "security_group_rule")] * 2,
        (created, "firewall_rule"),
        (created, "firewall_policy"),
        (created, "firewall_group"),
    ]
    snapshot = api.stub.Watch(pb.WatchRequest(start_revision=0), metadata=md)
    existing = set()
    for event in snapshot:
        if event.type == pb.WatchEvent.SYNCED:
            break
        existing.add(event.WhichOneof("resource"))
    snapshot.cancel()
    assert existing == {
        "network",
        "security_group",
        "security_group_rule",
        "firewall_rule",
        "firewall_policy",
        "firewall_group",
    }


# ---------------------------------------------------------------------------------------------- flow budget


@pytest.fixture
def budget_server(tmp_path: Path) -> Iterator[InProcessServer]:
    """A server with a flow budget (given as the controller's config gives it); tests move it around the
    tenant's current estimate so that they do not hang on the estimator's exact counts."""
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    srv = ApiServer(state, tokens, "127.0.0.1:0", workers=8, flow_budget=1_000_000)
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    api = Api(f"127.0.0.1:{srv.port}", tokens.admin_token(), channel, pb_grpc.TopologyServiceStub(channel))
    try:
        yield InProcessServer(api, srv, state, tmp_path)
    finally:
        channel.close()
        srv.stop(0)
        state.close()


def _model(state: State) -> tuple[Any, ...]:
    with state.lock:
        return _model_of(state.topology)


def _stored(state: State) -> tuple[Any, ...]:
    records, revision = state.sqlite.load()  # type: ignore[union-attr]
    return revision, sorted((r.KIND, sorted(to_dict(r).items(), key=str)) for r in records)


def test_flow_budget_refuses_the_rule_and_leaves_everything_as_it_was(budget_server: InProcessServer) -> None:
    from apps.acl import estimate

    api, state, service = budget_server.api, budget_server.state, budget_server.server.topology
    assert service.flow_budget == 1_000_000

    def flows() -> int:
        with state.lock:
            return estimate(state.topology, "alice").get("hv1", (0, {}))[0]

    md, net, _sub = _alice(api)
    api.stub.CreateChassis(
        pb.CreateChassisRequest(chassis=pb.Chassis(datapath_id=1), chassis_id="hv1"), metadata=api.admin
    )
    web = make_group(api, md, "web", display_name="web")
    for i in range(10):  # ten members on hv1
        make_port(
            api, api.admin, net.name, f"vm{i}", security_groups=[web.name], binding_chassis="chassis/hv1"
        )
    make_rule(api, md, web.name, "ssh", protocol="tcp", port_range_min=22, remote_ip_prefix="10.0.0.0/8")
    service.flow_budget = budget = flows() + 3  # room for a rule from a CIDR, not for one from ten members
    before, stored = _model(state), _stored(state)
    code, _, reason = expect_error(
        make_rule, api, md, web.name, "ssh-from-web", protocol="tcp", port_range_min=22, remote_group=web.name
    )
    assert (code, reason) == (PRECONDITION, "FLOW_BUDGET_EXCEEDED")
    with pytest.raises(grpc.RpcError) as info:
        make_rule(api, md, web.name, "ssh-from-web", protocol="tcp", port_range_min=22, remote_group=web.name)
    message = info.value.details()
    assert message.startswith("security group rule ssh-from-web of group 'web' would make ~")
    assert f"flows on chassis hv1 (budget {budget}, tenant 'alice')" in message
    assert _model(state) == before and _stored(state) == stored
    # a dry run is refused the same way and changes nothing either
    code, _, reason = expect_error(
        make_rule,
        api,
        md,
        web.name,
        protocol="tcp",
        port_range_min=22,
        remote_group=web.name,
        validate_only=True,
    )
    assert (code, reason) == (PRECONDITION, "FLOW_BUDGET_EXCEEDED")
    assert _model(state) == before
    # under the budget: another port from the same CIDR; the rule key allocator goes on as before
    ok = make_rule(
        api, md, web.name, "https", protocol="tcp", port_range_min=443, remote_ip_prefix="10.0.0.0/8"
    )
    assert ok.conjunction_id not in before[-1] and flows() <= budget
    # membership: with the budget at what the tenant has, an 11th member on hv1 is refused...
    service.flow_budget = flows()
    code, _, reason = expect_error(
        make_port, api, api.admin, net.name, "vm10", security_groups=[web.name], binding_chassis="chassis/hv1"
    )
    assert (code, reason) == (PRECONDITION, "FLOW_BUDGET_EXCEEDED")
    # ...unbound it makes no flows anywhere: accepted; binding it later is refused
    port = make_port(api, api.admin, net.name, "vm10", security_groups=[web.name])
    code, _, reason = expect_error(
        api.stub.UpdatePort,
        pb.UpdatePortRequest(
            port=pb.Port(name=port.name, binding_chassis="chassis/hv1"),
            update_mask=field_mask_pb2.FieldMask(paths=["binding_chassis"]),
        ),
        metadata=api.admin,
    )
    assert (code, reason) == (PRECONDITION, "FLOW_BUDGET_EXCEEDED")
    # under a budget lowered below what the tenant has, what makes things no worse still passes (leaving the
    # group), what adds flows does not
    service.flow_budget = flows() - 1
    api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name="ports/vm0"), update_mask=field_mask_pb2.FieldMask(paths=["security_groups"])
        ),
        metadata=md,
    )
    assert expect_error(make_rule, api, md, web.name, protocol="udp")[2] == "FLOW_BUDGET_EXCEEDED"


def test_flow_budget_option() -> None:
    from controller import config

    assert config.load([]).flow_budget_per_tenant == 20000
    assert config.load(["--flow-budget-per-tenant", "0"]).flow_budget_per_tenant == 0


def test_no_budget_when_zero(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    srv = ApiServer(state, tokens, "127.0.0.1:0", workers=4, flow_budget=0)
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        api = Api(
            f"127.0.0.1:{srv.port}", tokens.admin_token(), channel, pb_grpc.TopologyServiceStub(channel)
        )
        md, net, _sub = _alice(api)
        api.stub.CreateChassis(
            pb.CreateChassisRequest(chassis=pb.Chassis(datapath_id=1), chassis_id="hv1"), metadata=api.admin
        )
        for i in range(12):
            make_port(api, api.admin, net.name, f"vm{i}", binding_chassis="chassis/hv1")
        make_rule(
            api,
            md,
            "securityGroups/default",
            protocol="tcp",
            port_range_min=1,
            port_range_max=65535,
            remote_group="securityGroups/default",
        )
    finally:
        channel.close()
        srv.stop(0)
        state.close()


def test_the_model_reloads_from_the_store(server: InProcessServer) -> None:
    """What a restart loads (records by kind, in load order) gives the same indices as the live model."""
    from topology.model import Topology

    api = server.api
    md = api.md(api.tenant_token("alice"))
    ia, _ib, vm = _router_with_interfaces(api, md)
    web = make_group(api, md, "web", display_name="web")
    make_rule(api, md, web.name, protocol="tcp", port_range_min=80, remote_group="securityGroups/default")
    api.stub.UpdatePort(
        pb.UpdatePortRequest(
            port=pb.Port(name=vm.name, security_groups=[web.name]),
            update_mask=field_mask_pb2.FieldMask(paths=["security_groups"]),
        ),
        metadata=md,
    )
    api.stub.CreateFirewallRule(
        pb.CreateFirewallRuleRequest(firewall_rule=pb.FirewallRule(), firewall_rule_id="r1"), metadata=md
    )
    api.stub.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(firewall_rules=["firewallRules/r1"]), firewall_policy_id="p1"
        ),
        metadata=md,
    )
    api.stub.CreateFirewallGroup(
        pb.CreateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(egress_firewall_policy="firewallPolicies/p1", ports=[ia.port]),
            firewall_group_id="g1",
        ),
        metadata=md,
    )
    records, revision = server.state.sqlite.load()  # type: ignore[union-attr]
    fresh = Topology()
    fresh.load(records, revision)
    live = server.state.topology

    def indices(t: Topology) -> tuple[Any, ...]:
        return (
            _model_of(t),
            dict(t.rule_policy),
            {k: sorted(v) for k, v in t.policy_groups.items()},
            dict(t.port_firewall),
        )

    with server.state.lock:
        assert indices(fresh) == indices(live)


def _model_of(topo: Any) -> tuple[Any, ...]:
    """Every record and every derived index of the model (whatever indices it grows), comparable."""
    from topology.allocator import RangeAllocator

    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return sorted((repr(k), norm(x)) for k, x in v.items())
        if isinstance(v, (set, frozenset)):
            return sorted(map(repr, v))
        if isinstance(v, RangeAllocator):
            return sorted(v.allocated)
        if hasattr(v, "KIND"):
            return sorted(to_dict(v).items(), key=str)
        return repr(v)

    derived = {
        name: norm(value)
        for name, value in sorted(vars(topo).items())
        if isinstance(value, (dict, RangeAllocator))
    }
    return (
        topo.revision,
        derived,
        sorted(topo.graph.nodes(data=True), key=repr),
        sorted(map(sorted, topo.graph.edges)),
        sorted(topo.rule_keys.allocated),
    )
