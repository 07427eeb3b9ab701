"""Deployment files: the example configuration lists every option with its real default, the systemd unit
is valid, pyproject states ranges (exact versions live in constraints.txt), and starting the controller
with a Python that lacks its packages gives a hint, not a traceback."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from controller.config import Config, load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "etc" / "controller.toml"
UNIT = ROOT / "contrib" / "sdn-controller.service"
OPTION = re.compile(r"^# ([a-z_]+) = (.+)$")


def _commented_options() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in EXAMPLE.read_text().splitlines():
        m = OPTION.match(line)
        if m:
            found.setdefault(m.group(1), []).append(m.group(2))
    return found


def test_example_config_lists_every_option_once() -> None:
    found = _commented_options()
    names = {f.name for f in dataclasses.fields(Config)}
    assert sorted(names - set(found)) == [], "options missing from etc/controller.toml"
    assert sorted(set(found) - names) == [], "etc/controller.toml names options that do not exist"
    assert {k: v for k, v in found.items() if len(v) > 1} == {}, "an option listed twice"


def test_example_config_uncommented_gives_the_defaults(tmp_path: Path) -> None:
    """Uncommenting every option line gives a file the controller loads to exactly its defaults: the values
    the example shows are the real defaults, in valid TOML."""
    doc = "\n".join(f"{k} = {v[0]}" for k, v in _commented_options().items())
    assert tomllib.loads(doc)  # valid TOML
    path = tmp_path / "controller.toml"
    path.write_text(doc)
    assert load(["--config", str(path)]) == Config()


def test_example_config_loads_as_shipped() -> None:
    assert load(["--config", str(EXAMPLE)]) == Config()


def test_examples_in_the_config_are_valid(tmp_path: Path) -> None:
    """The `# e.g.` lines (etcd endpoints, switch targets) load as written."""
    lines = [ln[len("# e.g. ") :] for ln in EXAMPLE.read_text().splitlines() if ln.startswith("# e.g. ")]
    assert lines
    path = tmp_path / "controller.toml"
    path.write_text("\n".join(lines))
    cfg = load(["--config", str(path)])
    assert len(cfg.etcd_endpoints) == 3 and len(cfg.switch_targets) == 3


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit (with ExecStart pointing at this checkout's venv, as the unit
    assumes /opt/sdn-controller), and its offline security score stays in systemd's 'OK' band."""
    unit = tmp_path / "sdn-controller.service"
    text = UNIT.read_text().replace("/opt/sdn-controller/.venv", str(ROOT / ".venv"))
    unit.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        check=False,
        capture_output=True,
        text=True,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    assert m, sec.stdout[-500:]
    assert float(m.group(1)) < 2.0, sec.stdout[-2000:]


def test_runtime_dependencies_are_ranges_pinned_in_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exact = [d for d in project["dependencies"] if "==" in d]
    assert exact == [], "runtime dependencies state ranges; exact pins belong in constraints.txt"
    pins = {
        ln.split("==")[0].lower().replace("_", "-")
        for ln in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in ln and not ln.startswith("#")
    }
    for dep in project["dependencies"]:
        name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_run_controller_without_the_venv_gives_a_hint(tmp_path: Path) -> None:
    """A Python without the project's packages (-I -S: no site-packages) gets one clear hint and exit 2."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "run_controller.py"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    assert "missing Python package" in out.stderr and "scripts/setup.sh" in out.stderr


def test_start_prints_no_third_party_warnings(tmp_path: Path) -> None:
    """Importing the controller (os-ken, eventlet, dnspython, grpc) prints nothing on stderr."""
    out = subprocess.run(
        [sys.executable, "-c", "import controller.main, controller.cli"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
