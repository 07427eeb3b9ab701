"""`sdnctl vpn ...` against a real in-process server (the grammar of `openstack vpn ...`): every kind's create /
list / show / set (update) / delete, references by display name, one-line errors with the field, and the
pre-shared key never printed (nor echoed in an error)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.conftest import Api, InProcessServer
from tests.test_api_routers import external
from tests.test_cli import Cli, error_line

PSK = "Cli-Secret-Psk-0815"


@pytest.fixture
def sdnctl(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in ("SDN_ENDPOINT", "SDN_TOKEN", "SDN_TOKEN_FILE", "SDN_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return Cli(api, capsys)


def _lab(sdnctl: Cli) -> str:
    """alice's router r1 (gateway on public) with subnet web-v4 10.0.0.0/24 as an interface."""
    external(sdnctl.api)
    t = sdnctl.api.tenant_token("alice")
    sdnctl("network", "create", "web", "--id", "web", token=t)
    sdnctl(
        "subnet", "create", "web-v4", "--id", "web-v4", "--network", "web", "--cidr", "10.0.0.0/24", token=t
    )
    sdnctl("router", "create", "edge", "--id", "r1", "--external-gateway", "public", token=t)
    sdnctl("router", "add", "subnet", "r1", "web-v4", token=t)
    return t


def _vpn(sdnctl: Cli, t: str) -> None:
    sdnctl("vpn", "ike-policy", "create", "ike", "--id", "ike1", token=t)
    sdnctl("vpn", "ipsec-policy", "create", "esp", "--id", "ipsec1", "--pfs", "group19", token=t)
    sdnctl("vpn", "service", "create", "edge-vpn", "--id", "vpn1", "--router", "edge", token=t)
    sdnctl(
        "vpn",
        "endpoint-group",
        "create",
        "here",
        "--id",
        "local",
        "--type",
        "subnet",
        "--value",
        "web-v4",
        token=t,
    )
    sdnctl(
        "vpn", "endpoint-group", "create", "there", "--id", "peer", "--type", "cidr", "--value", "192.168.0.0/24",
        token=t,
    )  # fmt: skip


def test_vpn_commands(server: InProcessServer, sdnctl: Cli) -> None:
    t = _lab(sdnctl)
    ike = sdnctl(
        "-f", "json", "vpn", "ike-policy", "create", "ike", "--id", "ike1", "--ike-version", "v2",
        "--encryption-algorithm", "AES-256", "--lifetime", "7200", token=t,
    ).json()  # fmt: skip
    assert (ike["name"], ike["encryption_algorithm"], ike["lifetime"], ike["pfs"]) == (
        "ikePolicies/ike1",
        "aes-256",
        7200,
        "group14",
    )
    sdnctl("vpn", "ipsec-policy", "create", "esp", "--id", "ipsec1", "--pfs", "group19", token=t)
    svc = sdnctl(
        "-f", "json", "vpn", "service", "create", "edge-vpn", "--id", "vpn1", "--router", "edge", token=t
    )
    assert svc.json()["router"] == "routers/r1" and svc.json()["status"] == "PENDING_CREATE"
    grp = sdnctl(
        "-f", "json", "vpn", "endpoint-group", "create", "here", "--id", "local", "--type", "subnet",
        "--value", "web-v4", token=t,
    ).json()  # fmt: skip
    assert (grp["type"], grp["endpoints"]) == ("subnet", ["subnets/web-v4"])
    sdnctl(
        "vpn", "endpoint-group", "create", "there", "--id", "peer", "--type", "cidr", "--value", "192.168.0.0/24",
        "--value", "172.16.0.0/12", token=t,
    )  # fmt: skip
    # references by display name; the key given on the command line is never printed back
    for fmt in ("json", "table", "value"):
        if fmt != "json":
            sdnctl("vpn", "ipsec-site-connection", "delete", "hq", token=t)
        res = sdnctl(
            "-f", fmt, "vpn", "ipsec-site-connection", "create", "hq", "--id", "c1", "--vpnservice", "edge-vpn",
            "--ikepolicy", "ike", "--ipsecpolicy", "esp", "--local-endpoint-group", "here",
            "--peer-endpoint-group", "there", "--peer-address", "198.51.100.7", "--psk", PSK, token=t,
        )  # fmt: skip
        assert PSK not in res.out + res.err
    conn = sdnctl("-f", "json", "vpn", "ipsec-site-connection", "show", "hq", token=t).json()
    assert (conn["name"], conn["psk"], conn["psk_set"], conn["peer_id"], conn["status"]) == (
        "ipsecSiteConnections/c1",
        "",
        True,
        "198.51.100.7",
        "PENDING_CREATE",
    )
    assert server.state.topology.ipsec_site_connections["c1"].psk == PSK
    listing = sdnctl("vpn", "ipsec-site-connection", "list", "--vpnservice", "edge-vpn", token=t).lines
    assert listing[0].split()[:2] == ["NAME", "DISPLAY"] and listing[1].startswith("ipsecSiteConnections/c1 ")
    assert "PENDING_CREATE" in listing[1] and PSK not in "\n".join(listing)
    assert sdnctl("vpn", "service", "list", "-f", "value", "-c", "name", token=t).lines == [
        "vpnServices/vpn1"
    ]
    assert sdnctl("vpn", "service", "list", "--router", "r1", "-f", "value", "-c", "name", token=t).lines == [
        "vpnServices/vpn1"
    ]
    assert len(sdnctl("vpn", "ike-policy", "list", token=t).lines) == 2
    assert len(sdnctl("vpn", "ipsec-policy", "list", token=t).lines) == 2
    assert len(sdnctl("vpn", "endpoint-group", "list", token=t).lines) == 3
    # set and its alias update; a new key from a file
    key_file = Path(server.data_dir) / "psk.txt"
    key_file.write_text(PSK + "-new\n")
    upd = sdnctl(
        "-f", "json", "vpn", "ipsec-site-connection", "update", "hq", "--psk-file", str(key_file), "--mtu", "1400",
        "--dpd-interval", "10", "--dpd-timeout", "50", "--dpd-action", "restart", "--disable", token=t,
    )  # fmt: skip
    assert PSK not in upd.out
    got = upd.json()
    assert (got["mtu"], got["dpd_interval"], got["dpd_timeout"], got["dpd_action"], got["status"]) == (
        1400,
        10,
        50,
        "restart",
        "DOWN",
    )
    assert server.state.topology.ipsec_site_connections["c1"].psk == PSK + "-new"
    upd = sdnctl(
        "-f", "json", "vpn", "ipsec-site-connection", "set", "hq", "--peer-address", "198.51.100.9", token=t
    )
    assert (upd.json()["peer_address"], upd.json()["peer_id"]) == ("198.51.100.9", "198.51.100.9")
    pol = sdnctl(
        "-f", "json", "vpn", "ike-policy", "set", "ike", "--pfs", "group21", "--name", "ike-2", token=t
    )
    assert (pol.json()["pfs"], pol.json()["display_name"]) == ("group21", "ike-2")
    pol = sdnctl("-f", "json", "vpn", "ipsec-policy", "update", "esp", "--lifetime", "600", token=t)
    assert pol.json()["lifetime"] == 600
    svc = sdnctl("-f", "json", "vpn", "service", "set", "edge-vpn", "--disable", token=t).json()
    assert (svc["admin_state_up"], svc["status"]) == (False, "DOWN")
    grp = sdnctl("-f", "json", "vpn", "endpoint-group", "set", "there", "--description", "hq", token=t).json()
    assert grp["description"] == "hq"
    # in use: one-line refusals; then everything goes in order
    res = sdnctl("vpn", "ike-policy", "delete", "ike-2", token=t, code=5)
    assert error_line(res).startswith("error: FAILED_PRECONDITION ") and "IKE_POLICY_IN_USE" in error_line(
        res
    )
    sdnctl("vpn", "ipsec-site-connection", "delete", "hq", token=t)
    sdnctl("vpn", "service", "delete", "edge-vpn", token=t)
    sdnctl("vpn", "ike-policy", "delete", "ike-2", token=t)
    sdnctl("vpn", "ipsec-policy", "delete", "esp", token=t)
    sdnctl("vpn", "endpoint-group", "delete", "here", "there", token=t)
    assert sdnctl("vpn", "endpoint-group", "list", "-f", "value", token=t).out == ""


def test_vpn_errors_name_the_field_and_never_echo_the_key(sdnctl: Cli) -> None:
    t = _lab(sdnctl)
    _vpn(sdnctl, t)
    base = [
        "vpn", "ipsec-site-connection", "create", "hq", "--vpnservice", "vpn1", "--ikepolicy", "ike1",
        "--ipsecpolicy", "ipsec1", "--local-endpoint-group", "local", "--peer-endpoint-group", "peer",
    ]  # fmt: skip
    res = sdnctl(*base, "--peer-address", "198.51.100.7", "--psk", "", token=t, code=4)
    assert error_line(res).startswith("error: INVALID_ARGUMENT ipsec_site_connection.psk: required")
    res = sdnctl(*base, "--peer-address", "gw.example.com", "--psk", PSK, token=t, code=4)
    assert "ipsec_site_connection.peer_address" in error_line(res) and PSK not in res.err
    res = sdnctl(*base, "--peer-address", "198.51.100.7", "--psk", PSK, "--mtu", "60", token=t, code=4)
    assert "ipsec_site_connection.mtu" in error_line(res) and PSK not in res.err
    res = sdnctl(*base, "--peer-address", "198.51.100.7", token=t, code=2)
    assert "pre-shared key is required" in error_line(res)
    res = sdnctl("vpn", "ike-policy", "create", "weak", "--encryption-algorithm", "3des", token=t, code=4)
    assert "ike_policy.encryption_algorithm: 3des is refused" in error_line(res)
    res = sdnctl("vpn", "ipsec-policy", "create", "weak", "--pfs", "group5", token=t, code=4)
    assert "ipsec_policy.pfs" in error_line(res)
    sdnctl("router", "create", "bare", "--id", "bare", token=t)
    res = sdnctl("vpn", "service", "create", "x", "--router", "bare", token=t, code=5)
    assert "vpn_service.router" in error_line(res) and "ROUTER_NO_GATEWAY" in error_line(res)
    res = sdnctl(
        "vpn", "endpoint-group", "create", "x", "--type", "cidr", "--value", "10.0.0.0/33", token=t, code=4
    )
    assert "vpn_endpoint_group.endpoints[0]" in error_line(res)
    res = sdnctl("vpn", "service", "show", "nope", token=t, code=3)
    assert error_line(res).startswith("error: NOT_FOUND")
    # another tenant sees none of it
    bob = sdnctl.api.tenant_token("bob")
    assert sdnctl("vpn", "ike-policy", "list", "-f", "value", token=bob).out == ""
    sdnctl("vpn", "ike-policy", "show", "ike1", token=bob, code=3)


def test_psk_from_stdin(server: InProcessServer, sdnctl: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _lab(sdnctl)
    _vpn(sdnctl, t)
    monkeypatch.setattr("sys.stdin", io.StringIO(PSK + "\n"))
    res = sdnctl(
        "vpn", "ipsec-site-connection", "create", "hq", "--id", "c1", "--vpnservice", "vpn1", "--ikepolicy", "ike1",
        "--ipsecpolicy", "ipsec1", "--local-endpoint-group", "local", "--peer-endpoint-group", "peer",
        "--peer-address", "198.51.100.7", "--psk-file", "-", token=t,
    )  # fmt: skip
    assert PSK not in res.out and server.state.topology.ipsec_site_connections["c1"].psk == PSK
