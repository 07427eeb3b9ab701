"""The committed stubs are exactly what scripts/gen-proto.sh produces from proto/ with the pinned tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_committed_stubs_match_the_generator(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("*_pb2*", "__pycache__")
    )
    protos = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "proto").rglob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            *protos,
        ],
        cwd=tmp_path,
        check=True,
    )
    fresh = sorted(
        p.relative_to(tmp_path) for p in (tmp_path / "proto").rglob("*") if p.name.endswith(GENERATED)
    )
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "proto").rglob("*") if p.name.endswith(GENERATED))
    assert fresh == committed, "stub files differ from the generator's: run scripts/gen-proto.sh"
    for rel in fresh:
        assert (tmp_path / rel).read_text() == (ROOT / rel).read_text(), (
            f"{rel} is stale: run scripts/gen-proto.sh"
        )


def test_generator_script_uses_the_same_command() -> None:
    script = (ROOT / "scripts" / "gen-proto.sh").read_text()
    assert "--python_out=. --pyi_out=. --grpc_python_out=." in script
