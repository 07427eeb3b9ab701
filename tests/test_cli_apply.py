"""`sdnctl apply -f` (YAML and JSON, --plan, --prune, progress) and `sdnctl export` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controller.cli import sdnctl as cli
from tests.conftest import Api
from tests.test_cli import Cli, error_line

ROOT = Path(__file__).resolve().parent.parent

DOC = """
networks:
  - name: web
    display_name: web
subnets:
  - name: web-v4
    network: networks/web
    cidr: 10.0.0.0/24
ports:
  - name: p0
    network: networks/web
    fixed_ips: [{subnet: subnets/web-v4, ip_address: 10.0.0.10}]
  - name: p1
    network: networks/web
"""


@pytest.fixture
def sdnctl(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in ("SDN_ENDPOINT", "SDN_TOKEN", "SDN_TOKEN_FILE", "SDN_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    return Cli(api, capsys)


def test_apply_plan_apply_again_export(sdnctl: Cli, tmp_path: Path) -> None:
    t = sdnctl.api.tenant_token("alice")
    doc = tmp_path / "topology.yaml"
    doc.write_text(DOC)
    plan = sdnctl("apply", "-f", str(doc), "--plan", token=t)
    assert plan.lines[:4] == [
        "  + networks/web    (networks[0])",
        "  + subnets/web-v4  (subnets[0])",
        "  + ports/p0        (ports[0])",
        "  + ports/p1        (ports[1])",
    ]
    assert "Plan: 4 to create, 0 to update, 0 to replace, 0 to delete (revision 1)." in plan.out
    assert sdnctl("network", "list", "-f", "json", token=t).json() == []  # a plan stores nothing
    done = sdnctl("apply", "-f", str(doc), token=t)
    assert "Applied: 4 to create" in done.out
    assert sdnctl("apply", "-f", str(doc), token=t).lines == [
        "No changes: the model already holds the document's 4 objects."
    ]
    changed = yaml.safe_load(DOC)
    changed["networks"][0]["display_name"] = "front"
    del changed["ports"][1]
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    plan = sdnctl("apply", "-f", str(tmp_path / "changed.json"), "--plan", "--prune", token=t)
    assert plan.lines[:3] == [
        "  - ports/p1",
        "  ~ networks/web  (networks[0])",
        '        display_name: "web" -> "front"',
    ]
    sdnctl("apply", "-f", str(tmp_path / "changed.json"), "--prune", token=t)
    assert [p["name"] for p in sdnctl("port", "list", "-f", "json", token=t).json()] == ["ports/p0"]
    # export, then apply the export: nothing to do
    sdnctl("export", "-o", str(tmp_path / "export.yaml"), token=t)
    exported = yaml.safe_load((tmp_path / "export.yaml").read_text())
    assert [p["name"] for p in exported["ports"]] == ["ports/p0"]
    assert exported["ports"][0]["fixed_ips"] == [{"subnet": "subnets/web-v4", "ip_address": "10.0.0.10"}]
    assert "No changes" in sdnctl("apply", "-f", str(tmp_path / "export.yaml"), "--plan", token=t).out
    as_json = sdnctl("export", "--output-format", "json", token=t).json()
    assert as_json == exported


def test_apply_errors_are_one_line(sdnctl: Cli, tmp_path: Path) -> None:
    t = sdnctl.api.tenant_token("alice")
    bad = yaml.safe_load(DOC)
    bad["ports"][1]["mac_address"] = "nope"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = sdnctl("apply", "-f", str(path), token=t, code=4)
    assert "ports[1].mac_address" in error_line(res)
    assert sdnctl("network", "list", "-f", "json", token=t).json() == []
    path.write_text("networks: [unclosed")
    assert "is not valid YAML" in error_line(sdnctl("apply", "-f", str(path), token=t, code=2))
    path.write_text("- just a list")
    assert "a document is a mapping" in error_line(sdnctl("apply", "-f", str(path), token=t, code=2))
    res = sdnctl("apply", "-f", str(tmp_path / "missing.yaml"), token=t, code=2)
    assert "cannot read" in error_line(res)


def test_big_documents_get_a_progress_line(sdnctl: Cli, tmp_path: Path) -> None:
    t = sdnctl.api.tenant_token("alice")
    doc = yaml.safe_load(DOC)
    doc["subnets"][0]["cidr"] = "10.0.0.0/22"
    doc["ports"] = [{"name": f"p{i}", "network": "networks/web"} for i in range(150)]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = sdnctl("apply", "-f", str(path), token=t)
    first, last = res.err.splitlines()
    assert first.startswith(f"{path}: 152 objects (") and first.endswith("applying as one transaction...")
    assert last.startswith("applied: 152 changes in ")


def test_exit_code_of_a_usage_error_matches_the_cli(sdnctl: Cli) -> None:
    assert cli.main(["apply"]) == 2  # -f is required
