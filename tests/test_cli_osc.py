"""`sdnctl` as the OpenStack client: output formats parsed back (json, yaml, csv, value), -c by heading or
field, --long, --max-width, --version, shell completion run in a real bash, profiles, help on every option;
names rather than ids (two tenants with the same names); wait-realized's progress and exit codes."""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]

from controller.api.auth import TokenFile
from controller.api.server import ApiServer
from controller.cli import sdnctl as cli
from controller.cli.format import EXIT_NOT_REALIZED
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api
from tests.test_cli import Cli
from topology.state import State

ENV = ("SDN_ENDPOINT", "SDN_TOKEN", "SDN_TOKEN_FILE", "SDN_TIMEOUT", "SDN_PROFILE", "SDN_PROFILE_FILE")


@pytest.fixture
def sdnctl(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in (*ENV, "SDN_TENANT_SCOPE", "SDN_MAX_WIDTH"):
        monkeypatch.delenv(var, raising=False)
    return Cli(api, capsys)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _world(sdnctl: Cli) -> dict[str, str]:
    """alice and bob each have a network "web" with a subnet and a port "vm2"; bob also has a port whose
    id is "vm2" (display name "db")."""
    tokens = {t: sdnctl.api.tenant_token(t) for t in ("alice", "bob")}
    for tenant, cidr in (("alice", "10.1.0.0/24"), ("bob", "10.2.0.0/24")):
        t = tokens[tenant]
        sdnctl("network", "create", "web", token=t)
        sdnctl("subnet", "create", "web-v4", "--network", "web", "--cidr", cidr, token=t)
        sdnctl("port", "create", "vm2", "--network", "web", token=t)
    sdnctl("port", "create", "db", "--id", "vm2", "--network", "web", token=tokens["bob"])
    return tokens


# ---------------------------------------------------------------------------------------------- formats


def test_every_format_parses_back(sdnctl: Cli) -> None:
    t = _world(sdnctl)["alice"]
    as_json = sdnctl("port", "list", "-f", "json", token=t).json()
    as_yaml = yaml.safe_load(sdnctl("port", "list", "-f", "yaml", token=t).out)
    assert as_yaml == as_json and len(as_json) == 1  # every field, references as resource names
    port = as_json[0]
    assert port["network"].startswith("networks/") and port["id"] == port["name"].split("/")[1]

    table = rows(sdnctl("port", "list", "-f", "csv", token=t).out)
    assert list(table[0]) == ["ID", "Name", "Network", "MAC Address", "Fixed IPs", "Status"]
    assert table[0]["Network"] == "web" and table[0]["Name"] == "vm2"  # the network's name, not its id
    assert table[0]["ID"] == port["id"] and table[0]["Fixed IPs"] == port["fixed_ips"][0]["ip_address"]

    shown = yaml.safe_load(sdnctl("port", "show", "vm2", "-f", "yaml", token=t).out)
    assert (
        shown == sdnctl("port", "show", "vm2", "-f", "json", token=t).json() and shown["name"] == port["name"]
    )
    fields = {r["Field"]: r["Value"] for r in rows(sdnctl("port", "show", "vm2", "-f", "csv", token=t).out)}
    assert fields["network"] == f"web ({port['network']})" and fields["id"] == port["id"]
    # value: for scripts, references stay usable as arguments
    assert sdnctl("port", "show", "vm2", "-f", "value", "-c", "network", token=t).lines == [port["network"]]

    # yaml keeps types and odd strings: a bool, a number, an address, an empty list
    net = yaml.safe_load(sdnctl("network", "show", "web", "-f", "yaml", token=t).out)
    assert net["external"] is False and isinstance(net["mtu"], int) and net["tenant"] == "alice"


def test_columns_by_heading_or_field_and_long(sdnctl: Cli) -> None:
    t = _world(sdnctl)["alice"]
    narrow = rows(sdnctl("network", "list", "-f", "csv", token=t).out)
    assert list(narrow[0]) == ["ID", "Name", "Type", "External"]
    wide = rows(sdnctl("network", "list", "--long", "-f", "csv", token=t).out)
    assert {"Tenant", "MTU", "State", "Segment"} <= set(wide[0]) and wide[0]["Tenant"] == "alice"

    by_heading = rows(sdnctl("port", "list", "-f", "csv", "-c", "MAC Address", "-c", "Name", token=t).out)
    assert list(by_heading[0]) == ["MAC Address", "Name"] and by_heading[0]["Name"] == "vm2"
    by_field = sdnctl("port", "list", "-f", "json", "-c", "mac_address", "-c", "Network", token=t).json()
    assert list(by_field[0]) == ["mac_address", "network"] and by_field[0]["network"].startswith("networks/")
    # a field no column shows by default, and the derived id
    assert (
        sdnctl("port", "list", "-f", "value", "-c", "tunnel_key", "-c", "ID", token=t).lines[0].split()[1]
        != ""
    )
    res = sdnctl("port", "list", "-c", "Nope", token=t, code=2)
    assert "unknown column(s) Nope" in res.err and "Fixed IPs" in res.err
    # show: -c by field, or by the list's heading
    assert sdnctl("network", "show", "web", "-f", "json", "-c", "MTU", token=t).json() == {"mtu": 1450}


def test_max_width_wraps_the_widest_column(sdnctl: Cli) -> None:
    t = _world(sdnctl)["alice"]
    wide = sdnctl("port", "list", "--long", token=t).lines
    assert max(len(line) for line in wide) > 140
    narrow = sdnctl("port", "list", "--long", "--max-width", "140", token=t).lines
    assert max(len(line) for line in narrow) <= 140 and len(narrow) > len(wide)
    assert sdnctl("port", "list", "--long", "--max-width", "0", token=t).lines == wide


# ---------------------------------------------------------------------------------------------- names


def test_names_resolve_within_the_callers_tenant(sdnctl: Cli) -> None:
    tokens = _world(sdnctl)
    alice, bob = tokens["alice"], tokens["bob"]
    alice_port = sdnctl("port", "show", "vm2", "-f", "json", token=alice).json()
    assert alice_port["tenant"] == "alice" and alice_port["display_name"] == "vm2"  # not bob's id "vm2"
    # bob: "vm2" is his port's id first (the OpenStack client's rule), then a display name
    assert sdnctl("port", "show", "vm2", "-f", "json", token=bob).json()["display_name"] == "db"

    # the admin sees both "web": an error naming each candidate with its tenant and id
    res = sdnctl("network", "show", "web", code=4)
    nets = {n["tenant"]: n for n in sdnctl("network", "list", "-f", "json").json()}
    for tenant in ("alice", "bob"):
        assert f"{nets[tenant]['id']} (tenant {tenant})" in res.err
    assert "AMBIGUOUS_NAME" in res.err
    # scoped to a tenant: that tenant's; a command's --tenant scopes too
    got = sdnctl("--tenant-scope", "bob", "network", "show", "web", "-f", "json").json()
    assert got["name"] == nets["bob"]["name"]
    made = sdnctl("port", "create", "vm3", "--network", "web", "--tenant", "alice", "-f", "json").json()
    assert made["network"] == nets["alice"]["name"] and made["tenant"] == "alice"
    # an admin scoped to alice never gets bob's port through its id
    scoped = sdnctl("--tenant-scope", "alice", "port", "show", "vm2", "-f", "json").json()
    assert scoped["name"] == alice_port["name"]
    res = sdnctl("--tenant-scope", "alice", "port", "show", "db", code=3)
    assert "not found in tenant 'alice'" in res.err
    # unscoped, the admin's exact id match wins (the documented rule)
    assert sdnctl("port", "show", "vm2", "-f", "json").json()["tenant"] == "bob"

    # tables name references; two visible networks called "web" are told apart by id
    admin_ports = rows(sdnctl("port", "list", "-f", "csv").out)
    assert {r["Network"] for r in admin_ports} == {f"web ({nets[t]['id']})" for t in ("alice", "bob")}
    assert {r["Network"] for r in rows(sdnctl("port", "list", "-f", "csv", token=alice).out)} == {"web"}


# ---------------------------------------------------------------------------------------------- client


def test_version_help_and_grammar(sdnctl: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("sdnctl ")
    missing: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{path} {choice.dest}")
            elif not action.help and action.dest != "help":
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    parser = cli.build_parser()
    walk(parser, "sdnctl")
    import sdn_qos  # the QoS plug-in's commands: checked when it is installed from this tree

    if not Path(sdn_qos.__file__).resolve().is_relative_to(Path(__file__).resolve().parent.parent):
        missing = [m for m in missing if not m.startswith("sdnctl network-qos ")]
    assert missing == []
    assert cli.main(["network", "--help"]) == 0
    text = capsys.readouterr().out
    assert "list networks" in text and "delete networks" in text and "list network\n" not in text


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers after `sdnctl WORDS... <TAB>` (the last word is the one being completed)."""
    words_ = " ".join(f"'{w}'" for w in ("sdnctl", *words))
    program = f'{script}\nCOMP_WORDS=({words_})\nCOMP_CWORD={len(words)}\n_sdnctl\nprintf "%s\\n" "${{COMPREPLY[@]}}"\n'
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()


def test_bash_completion_completes_commands_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["complete"]) == 0
    script = capsys.readouterr().out
    assert "network" in _complete(script, "") and "security" in _complete(script, "")
    assert _complete(script, "sec") == ["security"]
    assert set(_complete(script, "network", "")) >= {"create", "list", "show", "set", "delete"}
    assert "--long" in _complete(script, "network", "list", "--") and "--max-width" in _complete(
        script, "network", "list", "--"
    )
    assert _complete(script, "--endpoint", "x", "security", "group", "ru") == ["rule"]
    assert cli.main(["complete", "--shell", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert "bashcompinit" in zsh and "complete -F _sdnctl sdnctl" in zsh
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-c", zsh], check=True, timeout=30)


def test_profiles(sdnctl: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: Any) -> None:
    (tmp_path / "p").mkdir()
    path = tmp_path / "p" / "profiles.toml"
    path.write_text(
        f'[lab]\nendpoint = "{sdnctl.api.endpoint}"\ntoken_file = "../tokens.json"\ntimeout = 7\n'
        '[far]\nendpoint = "127.0.0.1:1"\ntoken = "x"\ntimeout = 1\n'
    )
    monkeypatch.setenv("SDN_PROFILE_FILE", str(path))

    def run(*argv: str) -> tuple[int, str, str]:
        sdnctl.capsys.readouterr()
        code = cli.main(list(argv))
        out, err = sdnctl.capsys.readouterr()
        return code, out, err

    code, out, _ = run("--profile", "lab", "-f", "value", "-c", "admin", "info")
    assert (code, out) == (0, "true\n")  # the token file relative to the profile file: the admin token
    monkeypatch.setenv("SDN_PROFILE", "far")
    assert run("info")[0] == 8  # unreachable: the profile's endpoint
    monkeypatch.setenv("SDN_ENDPOINT", sdnctl.api.endpoint)  # a variable overrides the profile
    code, _, err = run("info")
    assert code == 7, err  # reached; the profile's token "x" is refused
    assert run("--token", sdnctl.token, "info")[0] == 0  # an option overrides both
    code, _, err = run("--profile", "nope", "info")
    assert code == 2 and "no profile 'nope'" in err and "far, lab" in err
    path.write_text('[bad]\nendpont = "x"\n')
    code, _, err = run("--profile", "bad", "info")
    assert code == 2 and "unknown key(s) endpont" in err


# ---------------------------------------------------------------------------------------------- wait-realized


class SlowDataplane:
    """A dataplane whose one chassis realizes the revision only when released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def wait_realized(self, revision: int, timeout: float) -> tuple[bool, list[dict[str, Any]]]:
        if timeout > 0:
            self.release.wait(timeout)
        done = self.release.is_set()
        row = {
            "chassis": "hv1",
            "connected": done,
            "realized_revision": revision if done else revision - 1,
            "needed_revision": revision,
            "realized": done,
        }
        return done, [row]


def test_wait_realized_progress_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    state = State(tmp_path / "topology.sqlite")
    tokens = TokenFile(tmp_path / "tokens.json")
    dp = SlowDataplane()
    srv = ApiServer(state, tokens, "127.0.0.1:0", workers=8, dataplane=dp)  # type: ignore[arg-type]
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        stub = pb_grpc.TopologyServiceStub(channel)
        stub.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network()), metadata=Api.md(tokens.admin_token())
        )
        base = ["--endpoint", f"127.0.0.1:{srv.port}", f"--token={tokens.admin_token()}", "wait-realized"]
        capsys.readouterr()
        assert cli.main([*base, "--wait", "5"]) == EXIT_NOT_REALIZED == 9
        out, err = capsys.readouterr()
        progress = err.splitlines()
        assert len(progress) >= 2 and all(line.startswith("waiting for revision ") for line in progress)
        assert (
            "0 of 1 chassis done; behind: hv1 at " in progress[0] and "(no switch connection)" in progress[0]
        )
        assert out.splitlines()[0].endswith("NOT realized within 5 s")
        dp.release.set()
        assert cli.main([*base, "--wait", "5", "-f", "json"]) == 0
        out, err = capsys.readouterr()
        assert err == "" and yaml.safe_load(out)["realized"] is True
        assert cli.main(["--endpoint", "127.0.0.1:1", "--token=x", "--timeout", "1", "wait-realized"]) == 8
    finally:
        channel.close()
        srv.stop(0)
        state.close()


# ---------------------------------------------------------------------------------------------- errors


def test_errors_name_the_callers_objects_by_name_and_id(sdnctl: Cli) -> None:
    t = _world(sdnctl)["alice"]
    sub = sdnctl("subnet", "show", "web-v4", "-f", "json", token=t).json()
    lb = sdnctl(
        "loadbalancer", "create", "--name", "front", "--vip-subnet-id", "web-v4", "-f", "json", token=t
    ).json()
    res = sdnctl("subnet", "delete", "web-v4", "--force", token=t, code=5)
    assert f"subnet 'web-v4' (id {sub['id']})" in res.err
    assert f"holds the VIP of load balancer 'front' (id {lb['id']})" in res.err
    taken = lb["vip_address"]
    res = sdnctl(
        "port", "create", "x", "--network", "web", "--fixed-ip", f"ip-address={taken}", token=t, code=5
    )
    assert f"{taken} on subnet 'web-v4' (id {sub['id']}) is in use" in res.err
    sg = sdnctl("security", "group", "create", "web-sg", "-f", "json", token=t).json()
    sdnctl("port", "set", "vm2", "--security-group", "web-sg", token=t)
    res = sdnctl("security", "group", "delete", "web-sg", token=t, code=5)
    assert f"security group 'web-sg' (id {sg['id']}) is used by 1 port(s)" in res.err
    vm2 = sdnctl("port", "show", "vm2", "-f", "json", token=t).json()
    assert f"('vm2' (id {vm2['id']}))" in res.err  # the ports using it, by name too


def test_a_message_never_names_another_tenants_object() -> None:
    from topology.ops import named, named_ref
    from topology.records import Network

    mine = Network(id="n1", tenant="alice", display_name="web")
    theirs = Network(id="n2", tenant="bob", display_name="secret-project")
    assert named(mine) == "'web' (id n1)" and named(Network(id="n3", tenant="alice")) == "'n3'"
    table = {"n1": mine, "n2": theirs}
    assert named_ref(table, "n1", "alice") == "'web' (id n1)"
    assert named_ref(table, "n2", "alice") == "'n2'" and named_ref(table, "gone", "alice") == "'gone'"


def test_tables_never_write(sdnctl: Cli) -> None:
    """Naming references reads only: any security group call makes the caller's default group, so a port
    table shows its groups by id (the admin here has none) and the revision stays."""
    _world(sdnctl)
    revision = sdnctl("info", "-f", "value", "-c", "revision").out
    for argv in (["port", "list", "--long"], ["port", "show", "db"], ["network", "list"]):
        sdnctl(*argv)
    assert sdnctl("info", "-f", "value", "-c", "revision").out == revision
