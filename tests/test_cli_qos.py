"""`sdnctl network-qos ...` (the QoS plug-in's CLI hook, found through its entry point) against a real
in-process server with the plug-in installed for this module."""

from __future__ import annotations

import json

import pytest

from apps import plugin
from controller import plugins
from controller.cli import sdnctl as cli
from sdn_qos.plugin import PLUGIN
from tests.conftest import Api
from tests.test_cli import Cli, error_line
from topology import records

pytestmark = pytest.mark.usefixtures("qos_plugin")


@pytest.fixture
def sdnctl(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in ("SDN_ENDPOINT", "SDN_TOKEN", "SDN_TOKEN_FILE", "SDN_TIMEOUT", "SDN_DISABLED_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return Cli(api, capsys)


def objects(out: str) -> list[dict[str, object]]:
    """A list printed with -f json."""
    return list(json.loads(out))


def test_policy_rules_and_port_binding(sdnctl: Cli) -> None:
    t = sdnctl.api.tenant_token("alice")
    sdnctl("network", "create", "web", "--id", "web", token=t)
    sdnctl(
        "subnet", "create", "web-v4", "--id", "web-v4", "--network", "web", "--cidr", "10.0.0.0/24", token=t
    )
    sdnctl("port", "create", "vm", "--id", "vm", "--network", "web", token=t)

    pol = sdnctl(
        "network-qos", "policy", "create", "--id", "gold", "--name", "Gold", "-f", "json", token=t
    ).json()
    assert (pol["name"], pol["display_name"], pol["tenant"]) == ("qosPolicies/gold", "Gold", "alice")
    bw = sdnctl(
        "network-qos", "rule", "create", "gold", "--type", "bandwidth-limit", "--max-kbps", "1000", "--ingress",
        "-f", "json", token=t,
    ).json()  # fmt: skip
    assert (bw["type"], bw["direction"], bw["max_kbps"], bw["qos_policy"]) == (
        "bandwidth_limit",
        "ingress",
        1000,
        "qosPolicies/gold",
    )
    sdnctl("network-qos", "rule", "create", "gold", "--type", "dscp-marking", "--dscp-mark", "26", token=t)
    rules = objects(sdnctl("network-qos", "rule", "list", "gold", "-f", "json", token=t).out)
    assert sorted((r["type"], r.get("dscp_mark", 0)) for r in rules) == [
        ("bandwidth_limit", 0),
        ("dscp_marking", 26),
    ]

    bound = sdnctl("network-qos", "policy", "set-port", "vm", "gold", "-f", "json", token=t).json()
    assert (bound["port"], bound["qos_policy"]) == ("ports/vm", "qosPolicies/gold")
    table = sdnctl("network-qos", "rule", "list", "gold", "-f", "csv", token=t).out.splitlines()
    assert table[0] == "ID,Type,Direction,Max Kbps,Max Burst Kbits,DSCP Mark" and len(table) == 3
    res = sdnctl("network-qos", "policy", "delete", "gold", token=t, code=5)  # FAILED_PRECONDITION
    assert error_line(res).startswith("error: FAILED_PRECONDITION") and "(QOS_POLICY_IN_USE)" in error_line(
        res
    )
    assert [
        p["name"] for p in objects(sdnctl("network-qos", "policy", "list", "-f", "json", token=t).out)
    ] == ["qosPolicies/gold"]
    sdnctl("network-qos", "policy", "unset-port", "vm", token=t)
    sdnctl("network-qos", "policy", "delete", "gold", token=t)
    assert sdnctl("network-qos", "policy", "list", "-f", "json", token=t).json() == []
    sdnctl("network-qos", "policy", "show", "gold", token=t, code=3)


def test_invalid_rules_name_their_option_and_another_tenant_sees_nothing(sdnctl: Cli) -> None:
    t = sdnctl.api.tenant_token("alice")
    sdnctl("network-qos", "policy", "create", "--id", "gold", token=t)
    res = sdnctl(
        "network-qos", "rule", "create", "gold", "--type", "dscp-marking", "--dscp-mark", "7", token=t, code=4
    )
    assert "dscp_mark" in error_line(res)
    res = sdnctl(
        "network-qos",
        "rule",
        "create",
        "gold",
        "--type",
        "bandwidth-limit",
        "--max-kbps",
        "0",
        token=t,
        code=4,
    )
    assert "max_kbps" in error_line(res)
    bob = sdnctl.api.tenant_token("bob")
    sdnctl("network-qos", "policy", "show", "gold", token=bob, code=3)
    sdnctl("network-qos", "policy", "delete", "gold", token=bob, code=3)
    assert sdnctl("network-qos", "policy", "list", "-f", "value", token=bob).out == ""


def test_sdnctl_takes_the_cli_hook_without_installing_the_plugin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """sdnctl compiles nothing: building its parser registers no plug-in in the process; a disabled plug-in
    has no commands."""
    plugins.uninstall(PLUGIN)
    try:
        assert cli.main(["network-qos", "--help"]) == 0
        assert "policy|rule" in capsys.readouterr().out
        monkeypatch.setenv("SDN_DISABLED_PLUGINS", "qos")
        assert cli.main(["network-qos", "policy", "list"]) == 2
        assert "invalid choice: 'network-qos'" in capsys.readouterr().err
        assert plugin.loaded() == [] and "qos_policy" not in records.RECORD_TYPES
    finally:
        assert plugins.install([PLUGIN]).loaded == [PLUGIN]
