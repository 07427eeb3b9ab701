"""Helpers of `sdnctl` (controller/cli/sdnctl.py): output (table, JSON, YAML, values, CSV), one-line errors,
option types."""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller.cli.columns import COLUMNS, Column, legacy_columns

# Exit codes (also documented in controller/cli.py).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INVALID = 0, 1, 2, 3, 4
EXIT_CONFLICT, EXIT_EXHAUSTED, EXIT_DENIED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 5, 6, 7, 8, 130
EXIT_NOT_REALIZED = 9  # wait-realized: the switches did not realize the revision within --wait
EXIT_FOR_CODE = {
    "NOT_FOUND": EXIT_NOT_FOUND,
    "INVALID_ARGUMENT": EXIT_INVALID,
    "OUT_OF_RANGE": EXIT_INVALID,
    "ALREADY_EXISTS": EXIT_CONFLICT,
    "FAILED_PRECONDITION": EXIT_CONFLICT,
    "ABORTED": EXIT_CONFLICT,
    "RESOURCE_EXHAUSTED": EXIT_EXHAUSTED,
    "UNAUTHENTICATED": EXIT_DENIED,
    "PERMISSION_DENIED": EXIT_DENIED,
    "UNAVAILABLE": EXIT_UNREACHABLE,
    "DEADLINE_EXCEEDED": EXIT_UNREACHABLE,
}

# Plug-ins' list columns: (proto field, header); the built-in kinds' are in columns.py.
LIST_COLUMNS: dict[str, list[tuple[str, str]]] = {}


class CliError(Exception):
    """A failure found by the client itself, reported like a server status."""

    def __init__(self, code: str, message: str, reason: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason
        self.exit_code = exit_code if exit_code is not None else EXIT_FOR_CODE.get(code, EXIT_ERROR)

    def line(self) -> str:
        return f"error: {self.code} {self.message}" + (f" ({self.reason})" if self.reason else "")


def usage_error(message: str) -> CliError:
    return CliError("USAGE", message, exit_code=EXIT_USAGE)


def rpc_error_line(err: grpc.RpcError, endpoint: str, timeout: float | None) -> tuple[str, int]:
    """One line for a failed call (code, field violations or message, ErrorInfo reason) and the exit code."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    name = code.name if code is not None else "UNKNOWN"
    status = None
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    violations: list[tuple[str, str]] = []
    reason = ""
    message = err.details() if hasattr(err, "details") else str(err)
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
    exit_code = EXIT_FOR_CODE.get(name, EXIT_ERROR)
    if status is None and name == "UNAVAILABLE":
        return f"error: cannot reach the controller at {endpoint} ({message or 'unavailable'})", exit_code
    if status is None and name == "DEADLINE_EXCEEDED":
        return f"error: no answer from the controller at {endpoint} within {timeout:g} s", exit_code
    if violations:
        text = "; ".join(f"{f}: {d}" if f else d for f, d in violations)
    else:
        text = message or "(no message)"
    text = " ".join(text.split())  # one line, whatever the server sent
    return f"error: {name} {text}" + (f" ({reason})" if reason else ""), exit_code


# ---------------------------------------------------------------------------------------------- values


def to_dict(msg: Message) -> dict[str, Any]:
    """The resource as JSON-ready data: proto field names, enum names, every field (defaults included)."""
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _kv(d: dict[str, Any], keys: Sequence[tuple[str, str]], label: Label) -> str:
    """{"ip_address": "10.0.0.5", ...} -> "ip-address=10.0.0.5,...", the grammar the options take."""
    return ",".join(f"{name}={label(str(d[key]))}" for key, name in keys if d.get(key))


Label = Callable[[str], str]


def _same(ref: str) -> str:
    return ref


def cell(field: str, value: Any, compact: bool = False, label: Label = _same) -> list[str]:
    """A field's value as display strings, one per list item; `compact` (lists): fixed IPs' addresses only;
    `label` turns a reference ("networks/x") into what a person reads (its display name)."""
    if value is None:
        return [""]
    if field == "segment_type":
        return [str(value).lower().replace("segment_type_unspecified", "")]
    if field in ("create_time", "update_time") and isinstance(value, str) and "." in value:
        return [value.split(".")[0] + "Z"]  # whole seconds; -f json has the full value
    if field == "datapath_id":
        return [f"0x{int(value):016x}" if int(value) else ""]
    if field == "fixed_ips":
        if compact:
            return [f.get("ip_address", "") for f in value]
        return [_kv(f, [("subnet", "subnet"), ("ip_address", "ip-address")], label) for f in value]
    if field == "allocation_pools":
        return [_kv(p, [("start", "start"), ("end", "end")], _same) for p in value]
    if field == "external_gateway":
        address = (value.get("fixed_ip") or {}).get("ip_address", "")
        parts = [
            f"network={label(value.get('network', ''))}",
            f"ip-address={address}" if address else "",
            f"snat={'true' if value.get('enable_snat') else 'false'}",
        ]
        return [",".join(p for p in parts if p)]
    if field == "interfaces":
        if compact:
            return [i.get("ip_address", "") for i in value]
        keys = [("subnet", "subnet"), ("ip_address", "ip-address"), ("port", "port")]
        return [_kv(i, keys, label) for i in value]
    if field in ("host_routes", "routes"):
        return [_kv(r, [("destination", "destination"), ("nexthop", "gateway")], _same) for r in value]
    if field == "allowed_address_pairs":
        return [_kv(p, [("ip_address", "ip-address"), ("mac_address", "mac-address")], _same) for p in value]
    if field == "rules":  # a security group's
        return [rule_text(r, label) for r in value]
    if field == "bridge_mappings":
        return [f"{k}:{v}" for k, v in sorted(value.items())]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list):
        return [
            json.dumps(v, sort_keys=True) if isinstance(v, dict) else _ref(field, v, label) for v in value
        ]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True)]
    return [_ref(field, value, label)]


def _ref(field: str, value: Any, label: Label) -> str:
    text = str(value)
    return label(text) if field != "name" and "/" in text else text


def port_range(lo: int, hi: int) -> str:
    """A rule's destination ports as a person reads them: "any", "22" or "1000:2000"."""
    if not lo and not hi:
        return "any"
    return str(lo) if lo == hi or not hi else f"{lo}:{hi}"


def rule_text(r: dict[str, Any], label: Label = _same) -> str:
    """A security group rule in one line: "ingress IPv4 tcp 22 from 10.0.0.0/8 (securityGroupRules/x)"."""
    what = r.get("protocol") or "any"
    if r.get("port_range_min") or r.get("port_range_max"):
        what += " " + port_range(int(r.get("port_range_min") or 0), int(r.get("port_range_max") or 0))
    if "icmp_type" in r and r.get("icmp_type") is not None:
        what += f" type {r['icmp_type']}" + (
            f" code {r['icmp_code']}" if r.get("icmp_code") is not None else ""
        )
    side = "from" if r.get("direction") == "ingress" else "to"
    remote = r.get("remote_ip_prefix") or (label(r["remote_group"]) if r.get("remote_group") else "any")
    return f"{r.get('direction', '')} {r.get('ethertype', '')} {what} {side} {remote} ({r.get('name', '')})"


def _wrap(text: str, width: int) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def _table(headers: Sequence[str], rows: Iterable[Sequence[list[str]]], max_width: int = 0) -> list[str]:
    """Aligned columns; a cell may hold several lines. With `max_width`, the widest columns are wrapped
    (never narrower than their heading or 8 characters) until a line fits, as far as it can."""
    grid = [[list(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in grid:
        for i, c in enumerate(row):
            widths[i] = max([widths[i], *(len(x) for x in c)])
    floor = [max(len(h), 8) for h in headers]
    while max_width and sum(widths) + 2 * (len(widths) - 1) > max_width:
        i = max(range(len(widths)), key=lambda k: widths[k] - floor[k])
        excess = sum(widths) + 2 * (len(widths) - 1) - max_width
        target = max(floor[i], widths[i] - excess)
        if target >= widths[i]:
            break  # every column at its floor: as narrow as it gets
        widths[i] = target
        for row in grid:
            row[i] = [part for line in row[i] for part in _wrap(line, target)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in grid:
        for k in range(max((len(c) for c in row), default=1) or 1):
            out.append(
                "  ".join(
                    (c[k] if k < len(c) else "").ljust(w) for c, w in zip(row, widths, strict=True)
                ).rstrip()
            )
    return out


@dataclass
class Output:
    """How a command's result is printed: format (-f), columns (-c), --long, --max-width, and the function
    that turns a reference into a display name (the client's lookups; identity when there is none)."""

    fmt: str = "table"
    columns: Sequence[str] = ()
    long: bool = False
    max_width: int = 0
    label: Label = _same


FORMATS = ["table", "json", "yaml", "value", "csv"]


def _derived(kind: str, d: dict[str, Any]) -> dict[str, Any]:
    """The resource's fields plus `id` (and a rule's `port_range`)."""
    out = dict(d)
    if isinstance(d.get("name"), str) and d["name"]:
        out = {"id": d["name"].rsplit("/", 1)[-1], **out}
    if kind == "security_group_rule" or ("port_range_min" in d and "direction" in d):
        out["port_range"] = port_range(int(d.get("port_range_min") or 0), int(d.get("port_range_max") or 0))
    return out


def columns_of(kind: str) -> list[Column]:
    if kind in COLUMNS:
        return COLUMNS[kind]
    if kind in LIST_COLUMNS:
        return legacy_columns(LIST_COLUMNS[kind])
    return [Column("ID", "id"), Column("Name", "display_name")]


def _pick(kind: str, available: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """-c COLUMN...: each a field name or a column heading (case-insensitive), in the order given."""
    by_heading = {c.heading.lower(): c.field for c in columns_of(kind)}
    picked: list[str] = []
    unknown: list[str] = []
    for w in wanted:
        field = w if w in available else by_heading.get(w.lower(), w.lower().replace(" ", "_"))
        (picked if field in available else unknown).append(field if field in available else w)
    if unknown:
        headings = [c.heading for c in columns_of(kind)]
        raise usage_error(
            f"unknown column(s) {', '.join(unknown)}; choose a heading ({', '.join(headings)}) "
            f"or a field ({', '.join(available)})"
        )
    return picked


def _heading(kind: str, field: str) -> str:
    return next((c.heading for c in columns_of(kind) if c.field == field), field)


def dump(data: Any, fmt: str, out: TextIO) -> None:
    """JSON (indented) or YAML."""
    out.write(json.dumps(data, indent=2) + "\n" if fmt == "json" else to_yaml(data))


def print_one(msg: Message, o: Output, out: TextIO, kind: str = "") -> None:
    """show / create / set: a field/value table, a JSON or YAML object, one value per line, or CSV."""
    data = _derived(kind, to_dict(msg))
    fields = (
        [f for f in data if f != "port_range"] if "id" in data else [f.name for f in msg.DESCRIPTOR.fields]
    )
    for f in (f.name for f in msg.DESCRIPTOR.fields):
        if f not in fields:
            fields.append(f)
    picked = _pick(kind, [*fields, *(k for k in data if k not in fields)], o.columns) if o.columns else fields
    if o.fmt in ("json", "yaml"):
        dump({k: data[k] for k in picked if k in data}, o.fmt, out)
        return

    def show(f: str) -> list[str]:  # a reference: "display name (networks/x)"
        return cell(f, data.get(f), label=lambda ref: _both(ref, o.label(ref)))

    if o.fmt == "value":  # for scripts: references as resource names
        for f in picked:
            out.write(" ".join(cell(f, data.get(f))) + "\n")
        return
    if o.fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["Field", "Value"])
        w.writerows([f, "\n".join(show(f))] for f in picked)
        return
    out.write("\n".join(_table(["Field", "Value"], ([[f], show(f)] for f in picked), o.max_width)) + "\n")


def _both(ref: str, label: str) -> str:
    return ref if label == ref or label == ref.rsplit("/", 1)[-1] else f"{label} ({ref})"


def print_many(kind: str, msgs: Sequence[Message], o: Output, out: TextIO) -> None:
    """list: an aligned table, a JSON/YAML array, CSV with a heading row, or one line of values per resource.
    Tables and CSV show references as display names; values show them as resource names, and JSON and YAML
    keep every field as the API gives it (references as resource names) unless -c picks some."""
    rows = [_derived(kind, to_dict(m)) for m in msgs]
    cols = [c for c in columns_of(kind) if o.long or not c.long]
    described = _descriptor_fields(kind) or ([f.name for f in msgs[0].DESCRIPTOR.fields] if msgs else [])
    available = [c.field for c in columns_of(kind)] + [
        f for f in ["id", *described] if f not in {c.field for c in columns_of(kind)}
    ]
    fields = _pick(kind, available, o.columns) if o.columns else [c.field for c in cols]
    if o.fmt in ("json", "yaml"):
        dump([{k: r.get(k) for k in fields} if o.columns else r for r in rows], o.fmt, out)
        return
    label = _same if o.fmt == "value" else o.label  # values are for scripts: references as resource names
    cells = [[cell(f, r.get(f), compact=True, label=label) for f in fields] for r in rows]
    if o.fmt == "value":  # one line per resource; several columns: lists joined by ",", "-" for empty
        for row in cells:
            values = [",".join(c) for c in row]
            out.write((values[0] if len(values) == 1 else " ".join(v or "-" for v in values)) + "\n")
        return
    headings = [_heading(kind, f) for f in fields]
    if o.fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(headings)
        w.writerows([", ".join(c) for c in row] for row in cells)
        return
    lines = _table(headings, ([[", ".join(c)] for c in row] for row in cells), o.max_width)
    out.write("\n".join(lines) + "\n")


def print_records(
    records: Sequence[dict[str, Any]], o: Output, out: TextIO, fields: Sequence[str] = ()
) -> None:
    """A list that is not of resources (chassis status, ...): its keys are the columns."""
    keys = list(fields or (records[0] if records else []))
    picked = _pick("", keys, o.columns) if o.columns else keys
    if o.fmt in ("json", "yaml"):
        dump([{k: r.get(k) for k in picked} for r in records], o.fmt, out)
        return
    cells = [[cell(k, r.get(k), compact=True, label=o.label) for k in picked] for r in records]
    if o.fmt == "value":
        for row in cells:
            out.write(" ".join(",".join(c) or "-" for c in row) + "\n")
    elif o.fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(picked)
        w.writerows([", ".join(c) for c in row] for row in cells)
    else:
        out.write(
            "\n".join(_table(picked, ([[", ".join(c)] for c in row] for row in cells), o.max_width)) + "\n"
        )


def _descriptor_fields(kind: str) -> list[str]:
    from proto.sdn.v1 import topology_pb2 as pb

    message = "".join(part.capitalize() for part in kind.split("_"))  # floating_ip -> FloatingIp
    cls = getattr(pb, message, None)
    return [f.name for f in cls.DESCRIPTOR.fields] if cls is not None else []


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@+-]*")
_YAML_WORDS = {"yes", "no", "true", "false", "null", "on", "off", "y", "n", "~"}


def _scalar(v: Any) -> str:
    if isinstance(v, str) and _PLAIN.fullmatch(v) and v.lower() not in _YAML_WORDS:
        return v
    return json.dumps(v)  # JSON scalars are YAML flow scalars


def to_yaml(data: Any, indent: int = 0) -> str:
    """Block-style YAML of JSON-shaped data (strings plain where unambiguous, else double-quoted)."""
    pad = " " * indent
    if isinstance(data, dict):
        if not data:
            return pad + "{}\n"
        lines = []
        for k, v in data.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_scalar(k)}:\n{to_yaml(v, indent + 2)}")
            else:
                lines.append(f"{pad}{_scalar(k)}: {_flow(v)}\n")
        return "".join(lines)
    if isinstance(data, list):
        if not data:
            return pad + "[]\n"
        lines = []
        for v in data:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                lines.append(f"{pad}- {inner[indent + 2 :]}")
            else:
                lines.append(f"{pad}- {_flow(v)}\n")
        return "".join(lines)
    return pad + _flow(data) + "\n"


def _flow(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)


def event_line(event: Message, fmt: str) -> str:
    """One Watch event: "REVISION TYPE KIND NAME [DISPLAY NAME]", a compact JSON object or a YAML document."""
    if fmt == "json":
        return json.dumps(
            json_format.MessageToDict(event, preserving_proto_field_name=True), separators=(",", ":")
        )
    if fmt == "yaml":  # a stream of YAML documents
        return "---\n" + to_yaml(json_format.MessageToDict(event, preserving_proto_field_name=True)).rstrip()
    kind = event.WhichOneof("resource")  # type: ignore[attr-defined]
    parts = [str(event.revision), type(event).Type.Name(event.type)]  # type: ignore[attr-defined]
    if kind:
        res = getattr(event, kind)
        parts += [kind, res.name]
        if getattr(res, "display_name", ""):
            parts.append(res.display_name if fmt == "value" else f"({res.display_name})")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------- arguments


def chassis_name(ref: str) -> str:
    return ref if not ref or "/" in ref else f"chassis/{ref}"


def group_name(ref: str) -> str:
    return ref if "/" in ref else f"securityGroups/{ref}"


def kv(keys: dict[str, str], required: Sequence[str] = ()) -> Callable[[str], dict[str, str]]:
    """ "a=1,b=2" -> {"a": "1", "b": "2"}; `keys` maps accepted spellings to field names."""

    def parse(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in filter(None, text.split(",")):
            key, eq, value = part.partition("=")
            field = keys.get(key.strip().lower())
            if not eq or field is None or not value.strip():
                raise argparse.ArgumentTypeError(
                    f"{part!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(set(keys)))}"
                )
            out[field] = value.strip()
        missing = [k for k in required if k not in out]
        if missing or not out:
            raise argparse.ArgumentTypeError(f"{text!r}: missing {', '.join(missing) or 'a value'}")
        return out

    return parse


FIXED_IP = kv(
    {"subnet": "subnet", "ip-address": "ip_address", "ip_address": "ip_address", "ip": "ip_address"}
)
ADDRESS_PAIR = kv(
    {
        "ip-address": "ip_address",
        "ip_address": "ip_address",
        "ip": "ip_address",
        "mac-address": "mac_address",
        "mac_address": "mac_address",
        "mac": "mac_address",
    },
    ["ip_address"],
)
POOL = kv({"start": "start", "end": "end"}, ["start", "end"])
ROUTE = kv(
    {"destination": "destination", "gateway": "nexthop", "nexthop": "nexthop"}, ["destination", "nexthop"]
)


def bridge_mapping(text: str) -> tuple[str, str]:
    physnet, _, bridge = text.partition(":")
    if not physnet or not bridge:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PHYSNET:BRIDGE")
    return physnet, bridge


def datapath_id(text: str) -> int:
    """ "0x1a", "00:00:00:00:00:00:00:1a", "000000000000001a" (16 hex digits) or "26"."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t[2:], 16)
        if ":" in t or len(t) == 16 or re.search("[a-f]", t):
            return int(t.replace(":", ""), 16)
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a datapath id (hex or decimal)") from None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value
