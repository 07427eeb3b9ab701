"""`sdnctl router ...` and `sdnctl floating ip ...` against a real in-process server (OpenStack grammar)."""

from __future__ import annotations

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


def _external(sdnctl: Cli) -> None:
    sdnctl(
        "network",
        "create",
        "public",
        "--id",
        "public",
        "--segment-type",
        "flat",
        "--physical-network",
        "ext",
        "--external",
    )
    sdnctl(
        "subnet",
        "create",
        "public-v4",
        "--id",
        "public-v4",
        "--network",
        "public",
        "--cidr",
        "203.0.113.0/24",
    )


def test_router_commands(sdnctl: Cli) -> None:
    _external(sdnctl)
    t = sdnctl.api.tenant_token("alice")
    for name, cidr in (("a", "10.1.0.0/24"), ("b", "10.2.0.0/24")):
        sdnctl("network", "create", name, "--id", name, token=t)
        sdnctl(
            "subnet", "create", f"{name}-v4", "--id", f"{name}-v4", "--network", name, "--cidr", cidr, token=t
        )
    r = sdnctl(
        "-f",
        "json",
        "router",
        "create",
        "edge",
        "--id",
        "r1",
        "--external-gateway",
        "public",
        "--fixed-ip",
        "ip-address=203.0.113.10",
        "--disable-snat",
        token=t,
    ).json()
    assert r["name"] == "routers/r1" and r["tenant"] == "alice" and r["display_name"] == "edge"
    gw = r["external_gateway"]
    assert (gw["network"], gw["fixed_ip"]["ip_address"], gw["enable_snat"]) == (
        "networks/public",
        "203.0.113.10",
        False,
    )
    iface = sdnctl("-f", "json", "router", "add", "subnet", "edge", "a-v4", token=t).json()
    assert (iface["subnet"], iface["ip_address"]) == ("subnets/a-v4", "10.1.0.1")
    sdnctl(
        "port",
        "create",
        "b-gw",
        "--id",
        "b-gw",
        "--network",
        "b",
        "--fixed-ip",
        "ip-address=10.2.0.254",
        token=t,
    )
    sdnctl("router", "add", "port", "r1", "b-gw", token=t)
    shown = sdnctl("-f", "json", "router", "show", "edge", token=t).json()
    assert {(i["subnet"], i["ip_address"]) for i in shown["interfaces"]} == {
        ("subnets/a-v4", "10.1.0.1"),
        ("subnets/b-v4", "10.2.0.254"),
    }
    table = sdnctl("router", "show", "r1", token=t).out
    assert "network=networks/public,ip-address=203.0.113.10,snat=false" in table
    assert "subnet=subnets/a-v4,ip-address=10.1.0.1" in table
    listing = sdnctl("router", "list", token=t).lines
    assert listing[0].split()[:2] == ["ID", "Name"] and listing[1].startswith("r1 ")
    assert sdnctl("router", "list", "-f", "value", "-c", "name", token=t).lines == ["routers/r1"]
    upd = sdnctl(
        "-f",
        "json",
        "router",
        "set",
        "r1",
        "--route",
        "destination=0.0.0.0/0,gateway=10.2.0.20",
        "--enable-snat",
        "--name",
        "core",
        token=t,
    ).json()
    assert (
        upd["routes"] == [{"destination": "0.0.0.0/0", "nexthop": "10.2.0.20"}]
        and upd["display_name"] == "core"
    )
    assert upd["external_gateway"]["enable_snat"] is True
    assert upd["external_gateway"]["fixed_ip"]["ip_address"] == "203.0.113.10"  # the same gateway, kept
    # an interface a route needs stays: one error line, the conflict exit code
    res = sdnctl("router", "remove", "port", "r1", "b-gw", token=t, code=5)
    assert (
        error_line(res).startswith("error: FAILED_PRECONDITION ") and "(ROUTER_INTERFACE_IN_USE)" in res.err
    )
    assert sdnctl("-f", "json", "router", "set", "r1", "--no-route", token=t).json().get("routes", []) == []
    sdnctl("router", "remove", "port", "r1", "b-gw", token=t)
    sdnctl("router", "remove", "subnet", "r1", "a-v4", token=t)
    cleared = sdnctl("-f", "json", "router", "set", "r1", "--no-external-gateway", token=t).json()
    assert "external_gateway" not in cleared and cleared["interfaces"] == []
    sdnctl("router", "set", "r1", "--external-gateway", "public", token=t)
    res = sdnctl("router", "create", "bad", "--external-gateway", "a", token=t, code=4)
    assert error_line(res) == (
        "error: INVALID_ARGUMENT router.external_gateway.network: network 'a' is not an "
        "external network (NOT_EXTERNAL_NETWORK)"
    )
    sdnctl("router", "delete", "core", token=t)
    assert sdnctl("router", "list", token=t).lines[1:] == []


def test_floating_ip_commands(sdnctl: Cli) -> None:
    _external(sdnctl)
    t = sdnctl.api.tenant_token("alice")
    sdnctl("network", "create", "a", "--id", "a", token=t)
    sdnctl("subnet", "create", "a-v4", "--id", "a-v4", "--network", "a", "--cidr", "10.1.0.0/24", token=t)
    sdnctl("router", "create", "r", "--id", "r", "--external-gateway", "public", token=t)
    sdnctl("router", "add", "subnet", "r", "a-v4", token=t)
    sdnctl(
        "port", "create", "vm", "--id", "vm", "--network", "a", "--fixed-ip", "ip-address=10.1.0.10", token=t
    )
    fip = sdnctl("-f", "json", "floating", "ip", "create", "public", "--id", "f1", token=t).json()
    assert (
        fip["name"] == "floatingIps/f1" and fip["floating_ip_address"] == "203.0.113.3" and fip["port"] == ""
    )
    assoc = sdnctl("-f", "json", "floating", "ip", "set", "f1", "--port", "vm", token=t).json()
    assert (assoc["port"], assoc["fixed_ip_address"], assoc["router"]) == (
        "ports/vm",
        "10.1.0.10",
        "routers/r",
    )
    # by address, too
    assert sdnctl("floating", "ip", "show", "203.0.113.3", "-f", "value", "-c", "router", token=t).lines == [
        "routers/r"
    ]
    listing = sdnctl("floating", "ip", "list", "--port", "vm", token=t).lines
    assert listing[0].split()[:3] == ["ID", "Floating", "IP"] and "203.0.113.3" in listing[1]
    res = sdnctl("floating", "ip", "create", "public", "--port", "vm", token=t, code=5)
    assert error_line(res).startswith("error: ALREADY_EXISTS floating_ip.fixed_ip_address: ")
    assert error_line(res).endswith("(FIXED_IP_IN_USE)")
    gone = sdnctl("-f", "json", "floating", "ip", "unset", "f1", "--port", token=t).json()
    assert (gone["port"], gone["router"]) == ("", "")
    at_once = sdnctl(
        "-f",
        "json",
        "floating",
        "ip",
        "create",
        "public",
        "--floating-ip-address",
        "203.0.113.50",
        "--port",
        "vm",
        "--fixed-ip-address",
        "10.1.0.10",
        token=t,
    ).json()
    assert at_once["floating_ip_address"] == "203.0.113.50" and at_once["router"] == "routers/r"
    sdnctl("floating", "ip", "delete", "f1", "203.0.113.50", token=t)
    assert sdnctl("floating", "ip", "list", token=t).lines[1:] == []
    # validate_only prints the plan and stores nothing
    res = sdnctl("floating", "ip", "create", "public", "--validate-only", token=t)
    assert "validate only" in res.err
    assert sdnctl("floating", "ip", "list", token=t).lines[1:] == []


def test_router_with_a_dual_stack_gateway(sdnctl: Cli) -> None:
    _external(sdnctl)
    sdnctl(
        "subnet",
        "create",
        "public-v6",
        "--id",
        "public-v6",
        "--network",
        "public",
        "--cidr",
        "2001:db8:113::/64",
    )
    t = sdnctl.api.tenant_token("alice")
    args = ["-f", "json", "router", "create", "edge6", "--id", "r6", "--external-gateway", "public"]
    both = ["--fixed-ip", "subnet=public-v4", "--fixed-ip", "subnet=public-v6"]
    gw = sdnctl(*args, *both, token=t).json()["external_gateway"]
    v4, v6 = (f["ip_address"] for f in gw["fixed_ips"])
    assert (
        v4.startswith("203.0.113.") and v6.startswith("2001:db8:113::") and gw["fixed_ip"]["ip_address"] == v4
    )
    # one --fixed-ip moves the IPv4 address only: the IPv6 one stays
    upd = sdnctl("-f", "json", "router", "set", "r6", "--fixed-ip", "ip-address=203.0.113.77", token=t).json()
    assert [f["ip_address"] for f in upd["external_gateway"]["fixed_ips"]] == ["203.0.113.77", v6]
    # an IPv6 address alone is refused (it would drop the IPv4 one and its SNAT)
    res = sdnctl("router", "set", "r6", "--fixed-ip", "subnet=public-v6", token=t, code=5)
    assert "(IPV6_ONLY_GATEWAY_NOT_SUPPORTED)" in res.err, res.err
