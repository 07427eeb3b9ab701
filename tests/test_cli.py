"""`sdnctl` against a real in-process server: every resource's commands, output formats, name resolution,
one-line errors with their exit codes, tenant scoping, watch; and the installed script as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.cli import sdnctl as cli
from tests.conftest import Api, InProcessServer, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


class Cli:
    def __init__(self, api: Api, capsys: pytest.CaptureFixture[str]) -> None:
        self.api, self.capsys = api, capsys
        self.token = api.admin_token

    def __call__(self, *argv: str, token: str | None = None, code: int = 0) -> Result:
        self.capsys.readouterr()
        rc = cli.main(["--endpoint", self.api.endpoint, f"--token={token or self.token}", *argv])
        out, err = self.capsys.readouterr()
        res = Result(rc, out, err)
        assert rc == code, f"sdnctl {' '.join(argv)} -> {rc} (expected {code})\nout: {out}\nerr: {err}"
        if code:
            assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return res


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


def error_line(res: Result) -> str:
    return res.err.strip()


# ---------------------------------------------------------------------------------------------- networks


def test_network_lifecycle(sdnctl: Cli) -> None:
    t = sdnctl.api.tenant_token("alice")
    net = sdnctl(
        "-f", "json", "network", "create", "web", "--id", "web", "--segment-type", "gre", token=t
    ).json()
    assert net["name"] == "networks/web" and net["tenant"] == "alice" and net["segment_type"] == "GRE"
    assert net["admin_state_up"] is True and net["external"] is False and net["mtu"] == 1458

    table = sdnctl("network", "create", "db", "--disable", "--mtu", "1400", token=t).lines
    fields = dict(line.split(None, 1) for line in table[1:] if len(line.split(None, 1)) == 2)
    assert table[0].split() == ["Field", "Value"]
    assert fields["display_name"] == "db" and fields["admin_state_up"] == "false" and fields["mtu"] == "1400"
    assert fields["segment_type"] == "vxlan"

    listing = sdnctl("network", "list", token=t).lines
    assert listing[0].split() == ["ID", "Name", "Type", "External"] and len(listing) == 3
    row = next(line for line in listing if line.startswith("web "))
    assert row.index(" web ") + 1 == listing[0].index("Name")  # aligned under its header
    assert [n["display_name"] for n in sdnctl("network", "list", "-f", "json", token=t).json()] != []
    names = sdnctl("network", "list", "-f", "value", "-c", "display_name", token=t).lines
    assert sorted(names) == ["db", "web"]

    for ref in ("networks/web", "web"):
        assert sdnctl("network", "show", ref, "-f", "json", token=t).json()["name"] == "networks/web"
    assert sdnctl("-f", "value", "-c", "mtu", "network", "show", "db", token=t).out == "1400\n"

    upd = sdnctl(
        "network", "set", "web", "--name", "frontend", "--mtu", "1300", "--disable", "-f", "json", token=t
    ).json()
    assert (upd["display_name"], upd["mtu"], upd["admin_state_up"]) == ("frontend", 1300, False)
    assert sdnctl("network", "set", "frontend", "--enable", "-f", "json", token=t).json()["admin_state_up"]
    res = sdnctl("network", "set", "web", token=t, code=2)
    assert "nothing to set" in res.err

    res = sdnctl("network", "delete", "nope", "frontend", token=t, code=3)  # reports "nope", deletes the rest
    assert error_line(res) == "error: NOT_FOUND network 'nope' not found (NETWORK_NOT_FOUND)"
    assert sdnctl("network", "delete", "db", token=t).out == ""
    assert sdnctl("network", "list", "-f", "json", token=t).json() == []
    res = sdnctl("network", "show", "web", token=t, code=3)
    assert error_line(res) == "error: NOT_FOUND network 'web' not found (NETWORK_NOT_FOUND)"


def test_network_admin_options_and_paging(sdnctl: Cli) -> None:
    ext = sdnctl(
        "-f",
        "json",
        "network",
        "create",
        "public",
        "--segment-type",
        "flat",
        "--physical-network",
        "physnet1",
        "--external",
        "--tenant",
        "ops",
    ).json()
    assert (ext["segment_type"], ext["physical_network"], ext["external"], ext["tenant"]) == (
        "FLAT",
        "physnet1",
        True,
        "ops",
    )
    assert sdnctl("-f", "json", "network", "set", "public", "--no-external").json()["external"] is False
    for i in range(6):
        sdnctl("network", "create", f"n{i}", "--id", f"n{i}")
    assert len(sdnctl("-f", "value", "-c", "name", "network", "list", "--page-size", "2").lines) == 7
    assert len(sdnctl("-f", "value", "network", "list", "--page-size", "2", "--limit", "3").lines) == 3
    assert sdnctl("-f", "value", "-c", "name", "network", "list", "--tenant", "ops").lines == [ext["name"]]


# ---------------------------------------------------------------------------------------------- subnets


def test_subnet_lifecycle(sdnctl: Cli) -> None:
    sdnctl("network", "create", "web", "--id", "web")
    sdnctl("network", "create", "db", "--id", "db")
    sub = sdnctl(
        "-f",
        "json",
        "subnet",
        "create",
        "web-v4",
        "--network",
        "web",
        "--cidr",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.254",
        "--allocation-pool",
        "start=10.0.0.10,end=10.0.0.20",
        "--allocation-pool",
        "start=10.0.0.30,end=10.0.0.40",
        "--dns-nameserver",
        "10.0.0.2",
        "--dns-nameserver",
        "10.0.0.3",
        "--host-route",
        "destination=192.168.0.0/16,gateway=10.0.0.1",
        "--no-dhcp",
        "--id",
        "web-v4",
    ).json()
    assert sub["name"] == "subnets/web-v4" and sub["network"] == "networks/web"
    assert sub["gateway_ip"] == "10.0.0.254" and sub["enable_dhcp"] is False
    assert sub["allocation_pools"] == [
        {"start": "10.0.0.10", "end": "10.0.0.20"},
        {"start": "10.0.0.30", "end": "10.0.0.40"},
    ]
    assert sub["dns_servers"] == ["10.0.0.2", "10.0.0.3"]
    assert sub["host_routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.1"}]
    other = sdnctl(
        "-f",
        "json",
        "subnet",
        "create",
        "db-v4",
        "--network",
        "networks/db",
        "--cidr",
        "10.1.0.0/24",
        "--no-gateway",
    ).json()
    assert other["gateway_ip"] == "" and other["enable_dhcp"] is True

    show = sdnctl("subnet", "show", "web-v4").out
    assert "start=10.0.0.10,end=10.0.0.20\n" in show and "start=10.0.0.30,end=10.0.0.40" in show
    assert "destination=192.168.0.0/16,gateway=10.0.0.1" in show
    by_net = sdnctl("-f", "value", "-c", "name", "subnet", "list", "--network", "web").lines
    assert by_net == ["subnets/web-v4"]
    assert len(sdnctl("subnet", "list").lines) == 3

    upd = sdnctl(
        "-f",
        "json",
        "subnet",
        "set",
        "web-v4",
        "--name",
        "front",
        "--dns-nameserver",
        "9.9.9.9",
        "--no-host-routes",
        "--dhcp",
        "--no-gateway",
        "--no-allocation-pool",
    ).json()
    assert upd["display_name"] == "front" and upd["dns_servers"] == ["9.9.9.9"] and upd["host_routes"] == []
    assert upd["enable_dhcp"] is True and upd["gateway_ip"] == ""
    assert upd["allocation_pools"] == [{"start": "10.0.0.1", "end": "10.0.0.254"}]
    upd = sdnctl(
        "-f",
        "json",
        "subnet",
        "set",
        "front",
        "--gateway",
        "10.0.0.1",
        "--allocation-pool",
        "start=10.0.0.100,end=10.0.0.110",
    ).json()
    assert upd["gateway_ip"] == "10.0.0.1" and upd["allocation_pools"] == [
        {"start": "10.0.0.100", "end": "10.0.0.110"}
    ]

    sdnctl("port", "create", "p", "--network", "web")
    res = sdnctl("subnet", "delete", "front", code=5)
    assert error_line(res).startswith(
        "error: FAILED_PRECONDITION subnet 'front' (id web-v4) has addresses on 1 port"
    )
    assert error_line(res).endswith("(SUBNET_IN_USE)")
    assert sdnctl("subnet", "delete", "front", "--force").out == ""
    assert sdnctl("-f", "value", "-c", "name", "subnet", "list").lines == [other["name"]]


# ---------------------------------------------------------------------------------------------- ports


def test_port_lifecycle(sdnctl: Cli) -> None:
    sdnctl("network", "create", "web", "--id", "web")
    sdnctl("subnet", "create", "web-v4", "--network", "web", "--cidr", "10.0.0.0/24", "--id", "web-v4")
    sdnctl("subnet", "create", "web-v4b", "--network", "web", "--cidr", "10.0.1.0/24", "--id", "web-v4b")
    port = sdnctl(
        "-f",
        "json",
        "port",
        "create",
        "vm1",
        "--network",
        "web",
        "--id",
        "vm1",
        "--fixed-ip",
        "subnet=web-v4,ip-address=10.0.0.10",
        "--mac-address",
        "fa:16:3e:00:00:01",
        "--device-owner",
        "compute:nova",
        "--device-id",
        "vm-1",
        "--allowed-address",
        "ip-address=10.0.0.100",
        "--allowed-address",
        "ip-address=10.0.0.101,mac-address=fa:16:3e:00:00:99",
        "--security-group",
        "default",
    ).json()
    assert port["fixed_ips"] == [{"subnet": "subnets/web-v4", "ip_address": "10.0.0.10"}]
    assert port["mac_address"] == "fa:16:3e:00:00:01" and port["device_id"] == "vm-1"
    assert port["allowed_address_pairs"][1] == {
        "ip_address": "10.0.0.101",
        "mac_address": "fa:16:3e:00:00:99",
    }
    # "default" names the tenant's default group (made on its first need), whose id is its own
    default = sdnctl("-f", "json", "security", "group", "show", "default").json()
    assert default["display_name"] == "default" and default["name"] != "securityGroups/default"
    assert port["security_groups"] == [default["name"]] and port["port_security_enabled"] is True
    p2 = sdnctl(
        "-f",
        "json",
        "port",
        "create",
        "vm2",
        "--network",
        "networks/web",
        "--disable-port-security",
        "--disable",
    ).json()
    assert p2["port_security_enabled"] is False and p2["admin_state_up"] is False
    assert len(p2["fixed_ips"]) == 1

    listing = sdnctl("port", "list", "--network", "web").out
    assert "10.0.0.10" in listing and "fa:16:3e:00:00:01" in listing and "DOWN" in listing
    assert sdnctl("-f", "value", "-c", "name", "port", "list", "--device-id", "vm-1").lines == ["ports/vm1"]
    rows = sdnctl("-f", "value", "-c", "name", "-c", "device_id", "-c", "fixed_ips", "port", "list").lines
    assert "ports/vm1 vm-1 10.0.0.10" in rows and len(rows) == 2
    assert f"{p2['name']} - {p2['fixed_ips'][0]['ip_address']}" in rows
    show = sdnctl("port", "show", "vm1").out
    assert "subnet=subnets/web-v4,ip-address=10.0.0.10" in show and "ip-address=10.0.0.100" in show

    upd = sdnctl(
        "-f",
        "json",
        "port",
        "set",
        "vm1",
        "--name",
        "vm1-eth0",
        "--fixed-ip",
        "subnet=web-v4b,ip-address=10.0.1.5",
        "--no-allowed-address",
        "--no-security-group",
        "--disable",
        "--disable-port-security",
    ).json()
    assert upd["display_name"] == "vm1-eth0" and upd["fixed_ips"] == [
        {"subnet": "subnets/web-v4b", "ip_address": "10.0.1.5"}
    ]
    assert upd["allowed_address_pairs"] == [] and upd["security_groups"] == []
    assert upd["admin_state_up"] is False and upd["port_security_enabled"] is False

    sdnctl("chassis", "create", "hv1", "--datapath-id", "1")
    bound = sdnctl("-f", "json", "port", "set", "vm1-eth0", "--host", "hv1", "--enable").json()
    assert bound["binding_chassis"] == "chassis/hv1" and bound["admin_state_up"] is True
    assert sdnctl("-f", "value", "-c", "name", "port", "list", "--host", "hv1").lines == ["ports/vm1"]
    assert sdnctl("-f", "json", "port", "set", "vm1", "--no-host").json()["binding_chassis"] == ""

    assert sdnctl("port", "delete", "vm1", p2["name"]).out == ""
    assert sdnctl("-f", "json", "port", "list").json() == []


# ---------------------------------------------------------------------------------------------- chassis


def test_chassis_lifecycle(sdnctl: Cli) -> None:
    ch = sdnctl(
        "-f",
        "json",
        "chassis",
        "create",
        "hv1",
        "--datapath-id",
        "0x1a",
        "--tunnel-ip",
        "192.0.2.1",
        "--ovsdb",
        "tcp:192.0.2.1:6640",
        "--bridge-mapping",
        "physnet1:br-ex",
        "--bridge-mapping",
        "physnet2:br-p2",
    ).json()
    assert ch["name"] == "chassis/hv1" and ch["datapath_id"] == "26" and ch["tunnel_ip"] == "192.0.2.1"
    assert ch["bridge_mappings"] == {"physnet1": "br-ex", "physnet2": "br-p2"}
    sdnctl("chassis", "create", "hv2", "--datapath-id", "00:00:00:00:00:00:00:1b")
    show = sdnctl("chassis", "show", "hv1").out
    assert "0x000000000000001a" in show and "physnet1:br-ex" in show
    listing = sdnctl("chassis", "list").lines
    assert (
        listing[0].split()[:2] == ["ID", "Datapath"]
        and len(listing) == 3
        and "0x000000000000001b" in listing[2]
    )

    upd = sdnctl(
        "-f",
        "json",
        "chassis",
        "set",
        "chassis/hv1",
        "--tunnel-ip",
        "192.0.2.9",
        "--no-bridge-mapping",
        "--datapath-id",
        "000000000000002a",
    ).json()
    assert upd["tunnel_ip"] == "192.0.2.9" and upd["bridge_mappings"] == {} and upd["datapath_id"] == "42"

    sdnctl("network", "create", "web", "--id", "web")
    sdnctl("port", "create", "p", "--network", "web", "--host", "hv1", "--id", "p")
    res = sdnctl("chassis", "delete", "hv1", code=5)
    assert error_line(res).startswith("error: FAILED_PRECONDITION")
    assert sdnctl("chassis", "delete", "hv1", "hv2", "--force").out == ""
    assert sdnctl("-f", "json", "port", "show", "p").json()["binding_chassis"] == ""
    assert sdnctl("-f", "json", "chassis", "list").json() == []


# ---------------------------------------------------------------------------------------------- names, errors


def test_display_name_resolution_and_ambiguity(sdnctl: Cli) -> None:
    a = sdnctl("-f", "value", "-c", "name", "network", "create", "web").out.strip()
    b = sdnctl("-f", "value", "-c", "name", "network", "create", "web").out.strip()
    sdnctl("network", "create", "Web Front", "--id", "front")
    res = sdnctl("network", "show", "web", code=4)
    assert error_line(res).startswith("error: INVALID_ARGUMENT network name 'web' is ambiguous")
    for name in (a, b):  # each candidate with its id and tenant
        assert f"{name.split('/')[1]} (tenant admin)" in res.err
    assert res.err.strip().endswith("(AMBIGUOUS_NAME)")
    assert sdnctl("-f", "value", "-c", "name", "network", "show", a).lines == [a]  # the resource name
    assert sdnctl("-f", "value", "-c", "name", "network", "show", a.split("/")[1]).lines == [a]  # bare id
    assert sdnctl("-f", "value", "-c", "name", "network", "show", "Web Front").lines == ["networks/front"]
    res = sdnctl("subnet", "create", "s", "--network", "web", "--cidr", "10.0.0.0/24", code=4)
    assert "ambiguous" in res.err
    res = sdnctl("network", "show", "No Such Net", code=3)
    assert error_line(res) == "error: NOT_FOUND network 'No Such Net' not found (NETWORK_NOT_FOUND)"
    # an id wins over another network's display name
    sdnctl("network", "create", "front")
    assert sdnctl("-f", "value", "-c", "name", "network", "show", "front").lines == ["networks/front"]


def test_one_line_errors_per_class(sdnctl: Cli, api: Api) -> None:
    sdnctl("network", "create", "web", "--id", "web")
    res = sdnctl("subnet", "create", "s", "--network", "web", "--cidr", "10.0.0.0/33", code=4)
    assert (
        error_line(res) == "error: INVALID_ARGUMENT subnet.cidr: '10.0.0.0/33' is not a CIDR (INVALID_FIELD)"
    )
    res = sdnctl("network", "create", "web", "--id", "web", code=5)
    assert error_line(res).startswith("error: ALREADY_EXISTS network 'web' already exists")
    res = sdnctl("network", "create", "x", "--id", "Bad_Id", code=4)
    assert error_line(res).startswith("error: INVALID_ARGUMENT network_id: must be")
    res = sdnctl("network", "delete", "nope", code=3)
    assert "NOT_FOUND" in res.err

    tenant = api.tenant_token("alice")
    res = sdnctl("network", "create", "pub", "--external", token=tenant, code=7)
    assert error_line(res) == (
        "error: PERMISSION_DENIED network.external: an external network is admin only (ADMIN_ONLY)"
    )
    res = sdnctl("chassis", "list", token=tenant, code=7)
    assert error_line(res).startswith("error: PERMISSION_DENIED") and "(ADMIN_ONLY)" in res.err
    res = sdnctl("info", token="not-a-token", code=7)
    assert error_line(res) == "error: UNAUTHENTICATED unknown or revoked token (INVALID_TOKEN)"
    res = sdnctl("watch", "--from-revision", "999999", code=4)
    assert error_line(res).startswith("error: OUT_OF_RANGE start_revision: ahead of the store")

    # usage errors: one line, exit 2, nothing sent
    res = sdnctl("port", "create", "p", "--network", "web", "--fixed-ip", "subnet", code=2)
    assert error_line(res).startswith("error: USAGE sdnctl port create: argument --fixed-ip:")
    res = sdnctl("subnet", "create", "s", "--network", "web", code=2)
    assert "--cidr" in res.err
    res = sdnctl("network", "set", "web", "--enable", "--disable", code=2)
    assert "not allowed with" in res.err
    res = sdnctl("chassis", "create", "hv", "--datapath-id", "zz", code=2)
    assert "not a datapath id" in res.err


def test_unreachable_and_missing_token(sdnctl: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    assert cli.main(["--endpoint", endpoint, "--token", "t", "network", "list"]) == 8
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: cannot reach the controller at {endpoint}")
    assert len(err.splitlines()) == 1
    assert cli.main(["--endpoint", endpoint, "info"]) == 2
    assert capsys.readouterr().err.startswith("error: USAGE no token")
    assert cli.main(["--token-file", "/nonexistent/tokens.json", "info"]) == 2
    assert "cannot read token file" in capsys.readouterr().err


def test_tenant_cannot_see_another_tenants_network(sdnctl: Cli, api: Api) -> None:
    alice, bob = api.tenant_token("alice"), api.tenant_token("bob")
    sdnctl("network", "create", "secret", "--id", "alice-net", token=alice)
    sdnctl("network", "create", "mine", "--id", "bob-net", token=bob)
    for ref in ("alice-net", "networks/alice-net", "secret"):
        res = sdnctl("network", "show", ref, token=bob, code=3)
        assert error_line(res).startswith("error: NOT_FOUND network ") and "(NETWORK_NOT_FOUND)" in res.err
    res = sdnctl("network", "delete", "alice-net", token=bob, code=3)
    assert sdnctl("-f", "value", "-c", "name", "network", "list", token=bob).lines == ["networks/bob-net"]
    res = sdnctl("network", "list", "--tenant", "alice", token=bob, code=7)
    assert "PERMISSION_DENIED tenant:" in res.err
    # the admin sees both, and can filter
    assert sdnctl("-f", "value", "-c", "name", "network", "list", "--tenant", "alice").lines == [
        "networks/alice-net"
    ]


def test_token_and_info(sdnctl: Cli) -> None:
    info = sdnctl("-f", "json", "info").json()
    assert info["tenant"] == "admin" and info["admin"] is True and int(info["revision"]) >= 0
    token = sdnctl("-f", "value", "-c", "token", "token", "create", "--tenant", "carol").out.strip()
    assert len(token) > 20
    who = sdnctl("-f", "value", "-c", "tenant", "-c", "admin", "info", token=token).lines
    assert who == ["carol", "false"]
    admin2 = sdnctl("-f", "json", "token", "create", "--tenant", "ops", "--admin").json()
    assert admin2["admin"] is True and admin2["tenant"] == "ops"
    res = sdnctl("token", "create", "--tenant", "dave", token=token, code=7)
    assert "issuing tokens is admin only" in res.err
    assert sdnctl("token", "revoke", "--", token).out == ""  # "--": a token may start with "-"
    sdnctl("info", token=token, code=7)
    res = sdnctl("token", "revoke", "--", token, code=3)
    assert "NOT_FOUND" in res.err


def test_watch_prints_the_snapshot(sdnctl: Cli) -> None:
    sdnctl("network", "create", "web", "--id", "web")
    sdnctl("subnet", "create", "web-v4", "--network", "web", "--cidr", "10.0.0.0/24", "--id", "web-v4")
    lines = sdnctl("watch", "--max-events", "3").lines
    assert len(lines) == 3
    assert lines[0].split()[1:] == ["EXISTING", "network", "networks/web", "(web)"]
    assert lines[1].split()[1:4] == ["EXISTING", "subnet", "subnets/web-v4"]
    assert lines[2].split()[1:] == ["SYNCED"]
    events = [json.loads(line) for line in sdnctl("-f", "json", "watch", "--max-events", "3").lines]
    assert [e["type"] for e in events] == ["EXISTING", "EXISTING", "SYNCED"]
    assert events[0]["network"]["name"] == "networks/web"
    import yaml  # type: ignore[import-untyped]

    docs = list(yaml.safe_load_all(sdnctl("-f", "yaml", "watch", "--max-events", "3").out))
    assert docs == events  # the same events, as a stream of YAML documents
    rev = events[2]["revision"]
    # replay from an earlier revision: the subnet's creation, then SYNCED
    replay = sdnctl("watch", "--from-revision", str(int(rev) - 1), "--max-events", "2").lines
    assert replay[0].split()[1:4] == ["CREATED", "subnet", "subnets/web-v4"] and replay[1].endswith("SYNCED")


# ---------------------------------------------------------------------------------------------- subprocess


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "sdnctl"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli.sdnctl"]
    return subprocess.run(
        [*cmd, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


def test_installed_script_end_to_end(server: InProcessServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDN_")}
    env |= {"SDN_ENDPOINT": server.api.endpoint, "SDN_TOKEN": server.api.tenant_token("alice")}
    res = _run(["network", "create", "web", "--id", "web", "-f", "json"], env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tenant"] == "alice"
    res = _run(["network", "show", "missing"], env)
    assert res.returncode == 3 and res.stdout == ""
    assert res.stderr == "error: NOT_FOUND network 'missing' not found (NETWORK_NOT_FOUND)\n"
    # an admin on the controller host: the token file instead of a token
    del env["SDN_TOKEN"]
    res = _run(["--token-file", str(server.data_dir), "-f", "value", "-c", "tenant", "network", "list"], env)
    assert res.returncode == 0 and res.stdout == "alice\n", res.stderr
    token_file = str(server.data_dir / "tokens.json")
    res = _run(["--token-file", token_file, "info", "-f", "value", "-c", "admin"], env)
    assert res.returncode == 0 and res.stdout == "true\n", res.stderr
