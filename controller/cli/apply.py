"""sdnctl apply -f FILE (YAML or JSON; --plan, --prune) and sdnctl export: whole topologies as documents."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml
from google.protobuf import json_format, struct_pb2

from controller.cli.common import Client, add_globals, command
from controller.cli.format import CliError, usage_error
from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc

#: documents with more objects than this get progress lines on stderr
PROGRESS_AT = 100
_SIGN = {
    apb.ObjectChange.CREATE: "  +",
    apb.ObjectChange.UPDATE: "  ~",
    apb.ObjectChange.DELETE: "  -",
    apb.ObjectChange.REPLACE: "-/+",
}


def load_document(path: str) -> dict[str, Any]:
    """A document from a file ("-": stdin): JSON if it ends in .json, else YAML (which reads JSON too)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise usage_error(f"cannot read {path}: {err.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except ValueError as err:
        raise usage_error(f"{path} is not valid JSON: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot be parsed"
        raise usage_error(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise usage_error(f"{path}: a document is a mapping of collections (networks: [...], ports: [...])")
    return data


def to_struct(document: dict[str, Any], path: str) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    try:
        out.update(document)
    except (ValueError, TypeError) as err:  # a YAML date, a set, ...: not JSON
        raise usage_error(f"{path}: not a JSON-like value: {err}") from None
    return out


def print_changes(response: apb.ApplyResponse, out: TextIO, planned: bool) -> None:
    """terraform plan's shape: + create, ~ update (field: before -> after), - delete, -/+ replace; then the
    flows each chassis would gain and lose (with --plan)."""
    counts = dict.fromkeys(_SIGN, 0)
    width = max((len(c.name) for c in response.changes), default=0)
    for change in response.changes:
        counts[change.action] += 1
        where = f"  ({change.path})" if change.path else ""
        out.write(f"{_SIGN[change.action]} {change.name:<{width}}{where}".rstrip() + "\n")
        for f in change.fields:
            out.write(f"        {f.field}: {f.before} -> {f.after}\n")
    verb = "Plan" if planned else "Applied"
    if not response.changes:
        out.write(f"No changes: the model already holds the document's {response.objects} objects.\n")
    else:
        out.write(
            f"{verb}: {counts[apb.ObjectChange.CREATE]} to create, {counts[apb.ObjectChange.UPDATE]} to update, "
            f"{counts[apb.ObjectChange.REPLACE]} to replace, {counts[apb.ObjectChange.DELETE]} to delete"
            f" (revision {response.revision}).\n"
        )
    if planned and response.HasField("plan"):
        plan = response.plan
        if plan.chassis:
            out.write("Flows:\n")
        for ch in plan.chassis:
            out.write(
                f"  {ch.chassis}: +{ch.flows_added} -{ch.flows_deleted} flows "
                f"({ch.flows_before} -> {ch.flows_after}), +{ch.groups_added} -{ch.groups_deleted} groups\n"
            )
        for reason in plan.cut_reasons:
            out.write(f"  cuts existing traffic: {reason}\n")


def apply(c: Client, a: argparse.Namespace) -> int:
    t0 = time.monotonic()
    document = load_document(a.file)
    struct = to_struct(document, a.file)
    objects = sum(len(v) for v in document.values() if isinstance(v, list))
    progress = objects >= PROGRESS_AT
    if progress:
        size = struct.ByteSize()
        sys.stderr.write(
            f"{a.file}: {objects} objects ({size / 1024:.0f} KiB); "
            f"{'planning' if a.plan else 'applying'} as one transaction...\n"
        )
        sys.stderr.flush()
    stub = apb_grpc.ApplyServiceStub(c.channel)
    request = apb.ApplyRequest(document=struct, validate_only=a.plan, prune=a.prune)
    response = stub.Apply(request, metadata=c.md, timeout=c.timeout)
    print_changes(response, sys.stdout, a.plan)
    if progress:
        what = "planned" if a.plan else ("applied" if response.applied else "nothing to apply")
        sys.stderr.write(f"{what}: {len(response.changes)} changes in {time.monotonic() - t0:.2f} s\n")
    return 0


def export(c: Client, a: argparse.Namespace) -> int:
    stub = apb_grpc.ApplyServiceStub(c.channel)
    response = stub.Export(apb.ExportRequest(tenant=a.tenant), metadata=c.md, timeout=c.timeout)
    document = json_format.MessageToDict(response.document)
    _integral(document)
    if a.output_format == "json":
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = f"# sdnctl export at revision {response.revision}\n" + yaml.safe_dump(
            document, sort_keys=False, default_flow_style=False
        )
    if a.output in ("", "-"):
        sys.stdout.write(text)
    else:
        try:
            Path(a.output).write_text(text)
        except OSError as err:
            raise CliError("INVALID_ARGUMENT", f"cannot write {a.output}: {err.strerror}") from None
    return 0


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: 1450.0 reads better (and the same) as 1450."""
    if isinstance(value, dict):
        for k, v in value.items():
            value[k] = _integral(v)
    elif isinstance(value, list):
        value[:] = [_integral(v) for v in value]
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def add_commands(sub: Any) -> None:
    # -f is the file here (kubectl's grammar): it takes -f from --format, which this command has no use for
    p = sub.add_parser(
        "apply",
        help="make the model hold a topology document (YAML or JSON) in one transaction",
        conflict_handler="resolve",
    )
    add_globals(p)
    p.set_defaults(func=apply, kind="", out="self")
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="the document ('-': stdin)")
    p.add_argument("--plan", action="store_true", help="print the plan only (nothing stored or sent)")
    p.add_argument(
        "--prune",
        action="store_true",
        help="also delete objects an earlier apply created that the document no longer has",
    )
    p = command(sub, "export", export, out="self", help="write your topology as an apply document")
    p.add_argument("-o", "--output", default="", metavar="FILE", help="write it here (default: stdout)")
    p.add_argument("--output-format", choices=("yaml", "json"), default="yaml")
    p.add_argument("--tenant", default="", help="admin: one tenant's objects (default: every tenant's)")
