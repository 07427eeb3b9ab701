"""`sdnctl loadbalancer ...` against a real in-process server (the grammar of `openstack loadbalancer ...`)."""

from __future__ import annotations

import json

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


def _lab(sdnctl: Cli) -> str:
    t = sdnctl.api.tenant_token("alice")
    sdnctl("network", "create", "web", "--id", "web", token=t)
    sdnctl(
        "subnet", "create", "web-v4", "--id", "web-v4", "--network", "web", "--cidr", "10.0.0.0/24", token=t
    )
    return t


def test_loadbalancer_commands(sdnctl: Cli) -> None:
    t = _lab(sdnctl)
    lb = sdnctl(
        "-f",
        "json",
        "loadbalancer",
        "create",
        "--name",
        "web",
        "--id",
        "lb1",
        "--vip-subnet-id",
        "web-v4",
        "--vip-address",
        "10.0.0.100",
        token=t,
    ).json()
    assert (lb["name"], lb["vip_address"], lb["operating_status"], lb["tenant"]) == (
        "loadBalancers/lb1",
        "10.0.0.100",
        "ONLINE",
        "alice",
    )
    assert lb["vip_port"].startswith("ports/")
    li = sdnctl(
        "-f",
        "json",
        "loadbalancer",
        "listener",
        "create",
        "web",
        "--name",
        "http",
        "--id",
        "l1",
        "--protocol",
        "tcp",
        "--protocol-port",
        "80",
        token=t,
    ).json()
    assert (li["protocol"], li["protocol_port"], li["load_balancer"]) == ("TCP", 80, "loadBalancers/lb1")
    pool = sdnctl(
        "-f",
        "json",
        "loadbalancer",
        "pool",
        "create",
        "--name",
        "app",
        "--id",
        "p1",
        "--listener",
        "http",
        "--lb-algorithm",
        "ROUND_ROBIN",
        token=t,
    ).json()
    assert (pool["load_balancer"], pool["protocol"]) == ("loadBalancers/lb1", "TCP")
    assert sdnctl(
        "-f", "value", "-c", "default_pool", "loadbalancer", "listener", "show", "http", token=t
    ).lines == ["pools/p1"]
    m1 = sdnctl(
        "-f",
        "json",
        "loadbalancer",
        "member",
        "create",
        "app",
        "--id",
        "m1",
        "--address",
        "10.0.0.11",
        "--protocol-port",
        "8080",
        "--weight",
        "5",
        token=t,
    ).json()
    assert (m1["name"], m1["weight"], m1["operating_status"]) == ("pools/p1/members/m1", 5, "NO_MONITOR")
    sdnctl(
        "loadbalancer",
        "member",
        "create",
        "p1",
        "--name",
        "b",
        "--address",
        "10.0.0.12",
        "--protocol-port",
        "8080",
        "--disable",
        token=t,
    )
    hm = sdnctl(
        "-f",
        "json",
        "loadbalancer",
        "healthmonitor",
        "create",
        "app",
        "--id",
        "h1",
        "--type",
        "http",
        "--delay",
        "5",
        "--timeout",
        "3",
        "--max-retries",
        "3",
        "--url-path",
        "/health",
        "--expected-codes",
        "200-204",
        token=t,
    ).json()
    assert (hm["type"], hm["url_path"], hm["expected_codes"], hm["http_method"]) == (
        "HTTP",
        "/health",
        "200-204",
        "GET",
    )
    members = sdnctl(
        "-f",
        "value",
        "-c",
        "address",
        "-c",
        "operating_status",
        "loadbalancer",
        "member",
        "list",
        "app",
        token=t,
    ).lines
    assert sorted(members) == ["10.0.0.11 ONLINE", "10.0.0.12 OFFLINE"]
    # member by address, display name or id
    assert (
        sdnctl("-f", "value", "-c", "name", "loadbalancer", "member", "show", "app", "10.0.0.12", token=t)
        .lines[0]
        .startswith("pools/p1/members/")
    )
    sdnctl("loadbalancer", "member", "set", "app", "b", "--enable", "--weight", "0", token=t)
    assert sdnctl(
        "-f", "value", "-c", "weight", "loadbalancer", "member", "show", "app", "b", token=t
    ).lines == ["0"]
    sdnctl("loadbalancer", "healthmonitor", "set", "h1", "--delay", "10", token=t)
    assert sdnctl(
        "-f", "value", "-c", "delay", "loadbalancer", "healthmonitor", "show", "h1", token=t
    ).lines == ["10.0"]

    tree = sdnctl("loadbalancer", "status", "show", "web", token=t).lines
    assert tree[0] == "loadBalancers/lb1 (web) ONLINE vip 10.0.0.100"
    assert tree[1] == "  listeners/l1 TCP 80 -> pools/p1"
    assert tree[2] == "  pools/p1 ROUND_ROBIN ONLINE monitor healthMonitors/h1 HTTP"
    assert "    pools/p1/members/m1 10.0.0.11:8080 weight 5 ONLINE" in tree[3:]
    as_json = json.loads(sdnctl("-f", "json", "loadbalancer", "status", "show", "lb1", token=t).out)
    assert sorted(m["weight"] for m in as_json["loadbalancer"]["pools"][0]["members"]) == [0, 5]

    listing = sdnctl("loadbalancer", "list", token=t).lines
    assert listing[0].split()[:2] == ["ID", "Name"] and "10.0.0.100" in listing[1]
    assert sdnctl(
        "-f", "value", "-c", "name", "loadbalancer", "listener", "list", "--loadbalancer", "web", token=t
    ).lines == ["listeners/l1"]
    assert sdnctl("-f", "value", "-c", "name", "loadbalancer", "pool", "list", token=t).lines == ["pools/p1"]
    assert sdnctl(
        "-f", "value", "-c", "name", "loadbalancer", "healthmonitor", "list", "--pool", "app", token=t
    ).lines == ["healthMonitors/h1"]
    sdnctl("loadbalancer", "set", "web", "--name", "www", "--description", "front", token=t)
    assert sdnctl("-f", "value", "-c", "display_name", "loadbalancer", "show", "lb1", token=t).lines == [
        "www"
    ]
    sdnctl("loadbalancer", "pool", "set", "app", "--lb-algorithm", "source_ip", token=t)

    # errors: one line naming the field, with the reason and the exit code
    res = sdnctl(
        "loadbalancer",
        "listener",
        "create",
        "lb1",
        "--protocol",
        "TCP",
        "--protocol-port",
        "80",
        token=t,
        code=5,
    )
    assert error_line(res).startswith("error: ALREADY_EXISTS listener.protocol_port")
    assert error_line(res).endswith("(LISTENER_PORT_IN_USE)")
    res = sdnctl(
        "loadbalancer",
        "member",
        "create",
        "app",
        "--address",
        "10.9.9.9",
        "--protocol-port",
        "80",
        token=t,
        code=4,
    )
    assert error_line(res).endswith("(ADDRESS_OUTSIDE_SUBNET)")
    res = sdnctl(
        "loadbalancer",
        "healthmonitor",
        "create",
        "app",
        "--type",
        "TCP",
        "--delay",
        "1",
        "--timeout",
        "1",
        "--max-retries",
        "1",
        token=t,
        code=5,
    )
    assert error_line(res).endswith("(HEALTH_MONITOR_EXISTS)")
    res = sdnctl("loadbalancer", "delete", "www", token=t, code=5)
    assert error_line(res).endswith("(LOAD_BALANCER_IN_USE)")
    sdnctl("loadbalancer", "member", "delete", "app", "b", token=t)
    assert (
        len(sdnctl("-f", "value", "-c", "name", "loadbalancer", "member", "list", "app", token=t).lines) == 1
    )
    # validate_only changes nothing; then the cascade
    sdnctl("loadbalancer", "delete", "www", "--cascade", "--validate-only", token=t)
    assert sdnctl("-f", "value", "-c", "name", "loadbalancer", "list", token=t).lines == ["loadBalancers/lb1"]
    sdnctl("loadbalancer", "delete", "www", "--cascade", token=t)
    assert sdnctl("loadbalancer", "list", "-f", "value", token=t).lines == []
    assert sdnctl("-f", "value", "-c", "name", "port", "list", token=t).lines == []


def test_pool_by_loadbalancer_and_usage_errors(sdnctl: Cli) -> None:
    t = _lab(sdnctl)
    sdnctl("loadbalancer", "create", "--id", "lb1", "--vip-subnet-id", "web-v4", token=t)
    pool = sdnctl(
        "-f",
        "json",
        "loadbalancer",
        "pool",
        "create",
        "--loadbalancer",
        "lb1",
        "--protocol",
        "udp",
        "--lb-algorithm",
        "SOURCE_IP",
        token=t,
    ).json()
    assert (pool["protocol"], pool["lb_algorithm"]) == ("UDP", "SOURCE_IP")
    sdnctl(
        "loadbalancer",
        "listener",
        "create",
        "lb1",
        "--protocol",
        "UDP",
        "--protocol-port",
        "53",
        "--default-pool",
        pool["name"],
        token=t,
    )
    # usage errors are the parser's (exit 2)
    sdnctl("loadbalancer", "pool", "create", "--lb-algorithm", "ROUND_ROBIN", token=t, code=2)
    sdnctl(
        "loadbalancer",
        "listener",
        "create",
        "lb1",
        "--protocol",
        "HTTP",
        "--protocol-port",
        "80",
        token=t,
        code=2,
    )
    sdnctl("loadbalancer", "create", "--name", "x", token=t, code=2)
    res = sdnctl("loadbalancer", "member", "show", pool["name"], "nope", token=t, code=3)
    assert error_line(res).endswith("(MEMBER_NOT_FOUND)")
