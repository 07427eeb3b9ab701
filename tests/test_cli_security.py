"""`sdnctl security group ...`, `sdnctl firewall group ...` and ports' security options against a real
in-process server (OpenStack grammar)."""

from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import Api
from tests.test_cli import Cli, error_line


@pytest.fixture
def sdnctl(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in (
        "SDN_ENDPOINT",
        "SDN_TOKEN",
        "SDN_TOKEN_FILE",
        "SDN_TIMEOUT",
        "SDN_PROFILE",
        "SDN_TENANT_SCOPE",
    ):
        monkeypatch.delenv(var, raising=False)
    return Cli(api, capsys)


def test_security_group_commands(sdnctl: Cli) -> None:
    t = sdnctl.api.tenant_token("alice")
    web = sdnctl(
        "-f", "json", "security", "group", "create", "web", "--id", "web", "--description", "front", token=t
    ).json()
    assert (web["name"], web["tenant"], web["description"], len(web["rules"])) == (
        "securityGroups/web",
        "alice",
        "front",
        2,
    )
    listing = sdnctl("security", "group", "list", token=t).lines
    assert listing[0].split()[:2] == ["ID", "Name"] and len(listing) == 3  # web and default
    assert sdnctl(
        "-f", "value", "-c", "display_name", "security", "group", "show", "default", token=t
    ).lines == ["default"]
    ssh = sdnctl(
        "-f",
        "json",
        "security",
        "group",
        "rule",
        "create",
        "web",
        "--id",
        "ssh",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "--remote-ip",
        "10.0.0.0/8",
        token=t,
    ).json()
    assert (
        ssh["direction"],
        ssh["protocol"],
        ssh["port_range_min"],
        ssh["port_range_max"],
        ssh["remote_ip_prefix"],
    ) == ("ingress", "tcp", 22, 22, "10.0.0.0/8")
    rng = sdnctl(
        "-f",
        "json",
        "security",
        "group",
        "rule",
        "create",
        "web",
        "--egress",
        "--protocol",
        "udp",
        "--dst-port",
        "1000:2000",
        "--ethertype",
        "IPv6",
        token=t,
    ).json()
    assert (rng["direction"], rng["ethertype"], rng["port_range_min"], rng["port_range_max"]) == (
        "egress",
        "IPv6",
        1000,
        2000,
    )
    ping = sdnctl(
        "-f",
        "json",
        "security",
        "group",
        "rule",
        "create",
        "web",
        "--protocol",
        "icmp",
        "--icmp-type",
        "8",
        "--icmp-code",
        "0",
        "--remote-group",
        "default",
        token=t,
    ).json()
    default = sdnctl("-f", "json", "security", "group", "show", "default", token=t).json()
    assert (ping["icmp_type"], ping["icmp_code"], ping["remote_group"]) == (8, 0, default["name"])
    shown = sdnctl("security", "group", "show", "web", token=t).out
    assert "ingress IPv4 tcp 22 from 10.0.0.0/8 (securityGroupRules/ssh)" in shown
    assert f"ingress IPv4 icmp type 8 code 0 from default ({default['name']})" in shown
    table = sdnctl("-f", "csv", "security", "group", "rule", "list", "web", token=t).out
    by_id = {r["ID"]: r for r in csv.DictReader(io.StringIO(table))}
    assert by_id["ssh"]["Port Range"] == "22" and by_id["ssh"]["Security Group"] == "web"
    assert by_id[rng["name"].split("/")[1]]["Port Range"] == "1000:2000"
    assert by_id[ping["name"].split("/")[1]]["Port Range"] == "any"  # no "PORT MIN 0 / PORT MAX 0"
    assert by_id[ping["name"].split("/")[1]]["Remote Security Group"] == "default"
    rules = sdnctl("-f", "value", "-c", "name", "security", "group", "rule", "list", "web", token=t).lines
    assert "securityGroupRules/ssh" in rules and len(rules) == 5
    assert sdnctl(
        "-f", "value", "-c", "protocol", "security", "group", "rule", "show", "ssh", token=t
    ).lines == ["tcp"]
    # errors: one line, the field, the reason, the exit code
    res = sdnctl(
        "security",
        "group",
        "rule",
        "create",
        "web",
        "--protocol",
        "icmp",
        "--dst-port",
        "22",
        token=t,
        code=4,
    )
    assert error_line(res).startswith(
        "error: INVALID_ARGUMENT security_group_rule.port_range_min: ports go only"
    )
    res = sdnctl(
        "security",
        "group",
        "rule",
        "create",
        "web",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "--remote-ip",
        "10.1.0.0/8",
        token=t,
        code=5,
    )
    assert error_line(res).endswith("(SECURITY_GROUP_RULE_EXISTS)")
    assert sdnctl("security", "group", "rule", "create", "web", "--dst-port", "x", token=t, code=2)
    sdnctl(
        "-f", "json", "security", "group", "set", "web", "--name", "frontend", "--description", "", token=t
    )
    assert sdnctl(
        "-f", "value", "-c", "display_name", "security", "group", "show", "frontend", token=t
    ).lines == ["frontend"]
    # in use by a port: refused, then force
    sdnctl("network", "create", "n", "--id", "n", token=t)
    sdnctl("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24", token=t)
    port = sdnctl(
        "-f",
        "json",
        "port",
        "create",
        "vm1",
        "--network",
        "n",
        "--security-group",
        "frontend",
        "--security-group",
        "default",
        token=t,
    ).json()
    assert port["security_groups"] == ["securityGroups/web", default["name"]]
    res = sdnctl("security", "group", "delete", "frontend", token=t, code=5)
    assert error_line(res).endswith("(SECURITY_GROUP_IN_USE)")
    sdnctl("security", "group", "delete", "frontend", "--validate-only", "--force", token=t)
    sdnctl("security", "group", "delete", "frontend", "--force", token=t)
    assert sdnctl("-f", "json", "port", "show", "vm1", token=t).json()["security_groups"] == [default["name"]]
    res = sdnctl("security", "group", "delete", "default", token=t, code=5)
    assert error_line(res).endswith("(DEFAULT_SECURITY_GROUP)")
    sdnctl("security", "group", "rule", "delete", "ssh", token=t, code=3)  # went with its group
    assert sdnctl("-f", "value", "-c", "name", "security", "group", "rule", "list", token=t).lines != []


def test_port_security_options(sdnctl: Cli) -> None:
    t = sdnctl.api.tenant_token("alice")
    sdnctl("network", "create", "n", "--id", "n", token=t)
    sdnctl("subnet", "create", "s", "--network", "n", "--cidr", "10.0.0.0/24", token=t)
    default = sdnctl("-f", "json", "security", "group", "show", "default", token=t).json()["name"]
    p = sdnctl(
        "-f",
        "json",
        "port",
        "create",
        "vm1",
        "--network",
        "n",
        "--allowed-address",
        "ip-address=10.0.0.9",
        token=t,
    ).json()
    assert p["security_groups"] == [default] and p["port_security_enabled"] is True
    res = sdnctl("port", "set", "vm1", "--disable-port-security", token=t, code=5)
    assert error_line(res).endswith("(PORT_SECURITY_REQUIRED)")
    off = sdnctl(
        "-f",
        "json",
        "port",
        "set",
        "vm1",
        "--disable-port-security",
        "--no-security-group",
        "--no-allowed-address",
        token=t,
    ).json()
    assert (off["port_security_enabled"], off["security_groups"], off["allowed_address_pairs"]) == (
        False,
        [],
        [],
    )
    on = sdnctl(
        "-f", "json", "port", "set", "vm1", "--enable-port-security", "--security-group", "default", token=t
    ).json()
    assert on["security_groups"] == [default]
    bare = sdnctl(
        "-f", "json", "port", "create", "vm2", "--network", "n", "--disable-port-security", token=t
    ).json()
    assert bare["security_groups"] == []


def test_firewall_group_commands(sdnctl: Cli) -> None:
    t = sdnctl.api.tenant_token("alice")
    for name, cidr in (("a", "10.1.0.0/24"), ("b", "10.2.0.0/24")):
        sdnctl("network", "create", name, "--id", name, token=t)
        sdnctl(
            "subnet", "create", f"{name}-v4", "--id", f"{name}-v4", "--network", name, "--cidr", cidr, token=t
        )
    sdnctl("router", "create", "r", "--id", "r", token=t)
    ia = sdnctl("-f", "json", "router", "add", "subnet", "r", "a-v4", token=t).json()["port"]
    ib = sdnctl("-f", "json", "router", "add", "subnet", "r", "b-v4", token=t).json()["port"]
    web = sdnctl(
        "-f",
        "json",
        "firewall",
        "group",
        "rule",
        "create",
        "web",
        "--id",
        "web",
        "--action",
        "allow",
        "--protocol",
        "tcp",
        "--destination-port",
        "80:81",
        "--destination-ip-address",
        "10.2.0.0/24",
        token=t,
    ).json()
    assert (web["action"], web["destination_port_min"], web["destination_port_max"], web["enabled"]) == (
        "allow",
        80,
        81,
        True,
    )
    sdnctl("firewall", "group", "rule", "create", "--id", "rest", "--action", "reject", token=t)
    res = sdnctl(
        "firewall",
        "group",
        "rule",
        "create",
        "bad",
        "--protocol",
        "icmp",
        "--source-port",
        "5",
        token=t,
        code=4,
    )
    assert error_line(res).startswith("error: INVALID_ARGUMENT firewall_rule.source_port_min: ")
    off = sdnctl("-f", "json", "firewall", "group", "rule", "set", "web", "--disable-rule", token=t).json()
    assert off["enabled"] is False
    policy = sdnctl(
        "-f",
        "json",
        "firewall",
        "group",
        "policy",
        "create",
        "in",
        "--id",
        "in",
        "--firewall-rule",
        "web",
        "--firewall-rule",
        "rest",
        token=t,
    ).json()
    assert policy["firewall_rules"] == ["firewallRules/web", "firewallRules/rest"]
    again = sdnctl(
        "-f",
        "json",
        "firewall",
        "group",
        "policy",
        "set",
        "in",
        "--firewall-rule",
        "rest",
        "--firewall-rule",
        "web",
        token=t,
    ).json()
    assert again["firewall_rules"] == ["firewallRules/rest", "firewallRules/web"]
    group = sdnctl(
        "-f",
        "json",
        "firewall",
        "group",
        "create",
        "edge",
        "--id",
        "edge",
        "--ingress-firewall-policy",
        "in",
        "--port",
        ia,
        token=t,
    ).json()
    assert (group["ingress_firewall_policy"], group["egress_firewall_policy"], group["ports"]) == (
        "firewallPolicies/in",
        "",
        [ia],
    )
    upd = sdnctl(
        "-f",
        "json",
        "firewall",
        "group",
        "set",
        "edge",
        "--egress-firewall-policy",
        "in",
        "--no-ingress-firewall-policy",
        "--port",
        ia,
        "--port",
        ib,
        "--disable",
        token=t,
    ).json()
    assert (
        upd["ingress_firewall_policy"],
        upd["egress_firewall_policy"],
        upd["ports"],
        upd["admin_state_up"],
    ) == ("", "firewallPolicies/in", [ia, ib], False)
    listing = sdnctl("firewall", "group", "list", token=t).lines
    assert listing[0].split()[:2] == ["ID", "Name"] and listing[1].startswith("edge ")
    assert sdnctl("-f", "value", "-c", "name", "firewall", "group", "policy", "list", token=t).lines == [
        "firewallPolicies/in"
    ]
    assert len(sdnctl("-f", "value", "-c", "name", "firewall", "group", "rule", "list", token=t).lines) == 2
    res = sdnctl("firewall", "group", "policy", "delete", "in", token=t, code=5)
    assert error_line(res).endswith("(FIREWALL_POLICY_IN_USE)")
    res = sdnctl(
        "firewall", "group", "create", "x", "--port", "a", token=t, code=3
    )  # "a" is a network, no port
    sdnctl("firewall", "group", "delete", "edge", token=t)
    sdnctl("firewall", "group", "policy", "delete", "in", token=t)
    sdnctl("firewall", "group", "rule", "delete", "web", "rest", token=t)
    assert sdnctl("firewall", "group", "rule", "list", token=t).lines[1:] == []
