"""Helpers of `sdnctl` (controller/cli.py): output (table, JSON, values), one-line errors, option types."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Exit codes (also documented in controller/cli.py).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INVALID = 0, 1, 2, 3, 4
EXIT_CONFLICT, EXIT_EXHAUSTED, EXIT_DENIED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 5, 6, 7, 8, 130
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

# Columns of `list` tables: (proto field, header).
LIST_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "network": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("tenant", "TENANT"),
        ("segment_type", "TYPE"),
        ("segment_id", "SEGMENT"),
        ("mtu", "MTU"),
        ("admin_state_up", "UP"),
        ("external", "EXTERNAL"),
    ],
    "subnet": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("network", "NETWORK"),
        ("cidr", "CIDR"),
        ("gateway_ip", "GATEWAY"),
        ("enable_dhcp", "DHCP"),
    ],
    "port": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("network", "NETWORK"),
        ("mac_address", "MAC"),
        ("fixed_ips", "FIXED IPS"),
        ("status", "STATUS"),
        ("binding_chassis", "HOST"),
    ],
    "chassis": [
        ("name", "NAME"),
        ("datapath_id", "DATAPATH ID"),
        ("tunnel_ip", "TUNNEL IP"),
        ("ovsdb_address", "OVSDB"),
        ("bridge_mappings", "BRIDGE MAPPINGS"),
    ],
    "router": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("tenant", "TENANT"),
        ("external_gateway", "EXTERNAL GATEWAY"),
        ("interfaces", "INTERFACES"),
        ("admin_state_up", "UP"),
    ],
    "floating_ip": [
        ("name", "NAME"),
        ("floating_ip_address", "FLOATING IP"),
        ("fixed_ip_address", "FIXED IP"),
        ("port", "PORT"),
        ("floating_network", "NETWORK"),
        ("router", "ROUTER"),
    ],
    "security_group": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("tenant", "TENANT"),
        ("description", "DESCRIPTION"),
    ],
    "security_group_rule": [
        ("name", "NAME"),
        ("security_group", "GROUP"),
        ("direction", "DIRECTION"),
        ("ethertype", "ETHERTYPE"),
        ("protocol", "PROTOCOL"),
        ("port_range_min", "PORT MIN"),
        ("port_range_max", "PORT MAX"),
        ("remote_ip_prefix", "REMOTE IP"),
        ("remote_group", "REMOTE GROUP"),
    ],
    "firewall_rule": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("action", "ACTION"),
        ("protocol", "PROTOCOL"),
        ("source_ip_address", "SOURCE"),
        ("destination_ip_address", "DESTINATION"),
        ("destination_port_min", "DST PORT"),
        ("enabled", "ENABLED"),
    ],
    "firewall_policy": [("name", "NAME"), ("display_name", "DISPLAY NAME"), ("firewall_rules", "RULES")],
    "firewall_group": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("ingress_firewall_policy", "INGRESS POLICY"),
        ("egress_firewall_policy", "EGRESS POLICY"),
        ("ports", "PORTS"),
        ("admin_state_up", "UP"),
    ],
    "load_balancer": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("tenant", "TENANT"),
        ("vip_address", "VIP ADDRESS"),
        ("admin_state_up", "UP"),
        ("operating_status", "STATUS"),
    ],
    "listener": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("load_balancer", "LOAD BALANCER"),
        ("protocol", "PROTOCOL"),
        ("protocol_port", "PORT"),
        ("default_pool", "DEFAULT POOL"),
        ("admin_state_up", "UP"),
    ],
    "pool": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("load_balancer", "LOAD BALANCER"),
        ("protocol", "PROTOCOL"),
        ("lb_algorithm", "ALGORITHM"),
        ("admin_state_up", "UP"),
        ("operating_status", "STATUS"),
    ],
    "member": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("address", "ADDRESS"),
        ("protocol_port", "PORT"),
        ("weight", "WEIGHT"),
        ("admin_state_up", "UP"),
        ("operating_status", "STATUS"),
    ],
    "health_monitor": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("pool", "POOL"),
        ("type", "TYPE"),
        ("delay", "DELAY"),
        ("timeout", "TIMEOUT"),
        ("max_retries", "RETRIES"),
        ("admin_state_up", "UP"),
    ],
    "ike_policy": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("ike_version", "IKE"),
        ("encryption_algorithm", "ENCRYPTION"),
        ("auth_algorithm", "AUTH"),
        ("pfs", "PFS"),
        ("lifetime", "LIFETIME"),
    ],
    "ipsec_policy": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("encryption_algorithm", "ENCRYPTION"),
        ("auth_algorithm", "AUTH"),
        ("pfs", "PFS"),
        ("lifetime", "LIFETIME"),
    ],
    "vpn_service": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("router", "ROUTER"),
        ("external_v4_ip", "EXTERNAL IP"),
        ("admin_state_up", "UP"),
        ("status", "STATUS"),
    ],
    "vpn_endpoint_group": [
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("type", "TYPE"),
        ("endpoints", "ENDPOINTS"),
    ],
    "ipsec_site_connection": [  # never the PSK (the API does not return it)
        ("name", "NAME"),
        ("display_name", "DISPLAY NAME"),
        ("peer_address", "PEER"),
        ("vpnservice", "VPN SERVICE"),
        ("admin_state_up", "UP"),
        ("status", "STATUS"),
        ("status_reason", "REASON"),
    ],
}


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


def _kv(d: dict[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    """{"ip_address": "10.0.0.5", ...} -> "ip-address=10.0.0.5,...", the grammar the options take."""
    return ",".join(f"{label}={d[key]}" for key, label in keys if d.get(key))


def cell(field: str, value: Any, compact: bool = False) -> list[str]:
    """A field's value as display strings, one per list item; `compact` (lists): fixed IPs' addresses only."""
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
        return [_kv(f, [("subnet", "subnet"), ("ip_address", "ip-address")]) for f in value]
    if field == "allocation_pools":
        return [_kv(p, [("start", "start"), ("end", "end")]) for p in value]
    if field == "external_gateway":
        address = (value.get("fixed_ip") or {}).get("ip_address", "")
        parts = [
            f"network={value.get('network', '')}",
            f"ip-address={address}" if address else "",
            f"snat={'true' if value.get('enable_snat') else 'false'}",
        ]
        return [",".join(p for p in parts if p)]
    if field == "interfaces":
        if compact:
            return [i.get("ip_address", "") for i in value]
        return [_kv(i, [("subnet", "subnet"), ("ip_address", "ip-address"), ("port", "port")]) for i in value]
    if field in ("host_routes", "routes"):
        return [_kv(r, [("destination", "destination"), ("nexthop", "gateway")]) for r in value]
    if field == "allowed_address_pairs":
        return [_kv(p, [("ip_address", "ip-address"), ("mac_address", "mac-address")]) for p in value]
    if field == "rules":  # a security group's
        return [rule_text(r) for r in value]
    if field == "bridge_mappings":
        return [f"{k}:{v}" for k, v in sorted(value.items())]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list):
        return [json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v) for v in value]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True)]
    return [str(value)]


def rule_text(r: dict[str, Any]) -> str:
    """A security group rule in one line: "ingress IPv4 tcp 22-22 from 10.0.0.0/8 (securityGroupRules/x)"."""
    what = r.get("protocol") or "any"
    if r.get("port_range_min"):
        what += f" {r['port_range_min']}-{r.get('port_range_max', r['port_range_min'])}"
    if "icmp_type" in r and r.get("icmp_type") is not None:
        what += f" type {r['icmp_type']}" + (
            f" code {r['icmp_code']}" if r.get("icmp_code") is not None else ""
        )
    side = "from" if r.get("direction") == "ingress" else "to"
    remote = r.get("remote_ip_prefix") or r.get("remote_group") or "any"
    return f"{r.get('direction', '')} {r.get('ethertype', '')} {what} {side} {remote} ({r.get('name', '')})"


def _table(headers: Sequence[str], rows: Iterable[Sequence[list[str]]]) -> list[str]:
    """Aligned columns; a cell may hold several lines."""
    rows = list(rows)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, c in enumerate(row):
            widths[i] = max([widths[i], *(len(x) for x in c)])
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        for k in range(max((len(c) for c in row), default=1) or 1):
            out.append(
                "  ".join(
                    (c[k] if k < len(c) else "").ljust(w) for c, w in zip(row, widths, strict=True)
                ).rstrip()
            )
    return out


def _pick(fields: list[str], columns: Sequence[str] | None) -> list[str]:
    if not columns:
        return fields
    unknown = [c for c in columns if c not in fields]
    if unknown:
        raise usage_error(f"unknown column(s) {', '.join(unknown)}; choose from {', '.join(fields)}")
    return list(columns)


def print_one(msg: Message, fmt: str, columns: Sequence[str] | None, out: TextIO) -> None:
    """show / create / set: a field/value table, a JSON object, or one value per line."""
    data = to_dict(msg)
    if fmt == "json":
        picked = _pick(list(data), columns) if columns else list(data)
        out.write(json.dumps({k: data[k] for k in picked if k in data}, indent=2) + "\n")
        return
    fields = _pick([f.name for f in msg.DESCRIPTOR.fields], columns)
    if fmt == "value":
        for f in fields:
            out.write(" ".join(cell(f, data.get(f))) + "\n")
        return
    out.write("\n".join(_table(["FIELD", "VALUE"], ([[f], cell(f, data.get(f))] for f in fields))) + "\n")


def print_many(
    kind: str, msgs: Sequence[Message], fmt: str, columns: Sequence[str] | None, out: TextIO
) -> None:
    """list: an aligned table, a JSON array, or one line of space-separated values per resource."""
    rows = [to_dict(m) for m in msgs]
    headers = dict(LIST_COLUMNS[kind])
    all_fields = list(headers) + [f for f in _descriptor_fields(kind) if f not in headers]
    fields = _pick(all_fields, columns) if columns else list(headers)
    if fmt == "json":
        if columns:
            rows = [{k: r.get(k) for k in fields} for r in rows]
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt == "value":  # one line per resource; several columns: lists joined by ",", "-" for empty
        for r in rows:
            values = [",".join(cell(f, r.get(f), compact=True)) for f in fields]
            out.write((values[0] if len(values) == 1 else " ".join(v or "-" for v in values)) + "\n")
        return
    lines = _table(
        [headers.get(f, f.upper()) for f in fields],
        ([[", ".join(cell(f, r.get(f), compact=True))] for f in fields] for r in rows),
    )
    out.write("\n".join(lines) + "\n")


def _descriptor_fields(kind: str) -> list[str]:
    from proto.sdn.v1 import topology_pb2 as pb

    message = "".join(part.capitalize() for part in kind.split("_"))  # floating_ip -> FloatingIp
    return [f.name for f in getattr(pb, message).DESCRIPTOR.fields]


def event_line(event: Message, fmt: str) -> str:
    """One Watch event: "REVISION TYPE KIND NAME [DISPLAY NAME]" or a compact JSON object."""
    if fmt == "json":
        return json.dumps(
            json_format.MessageToDict(event, preserving_proto_field_name=True), separators=(",", ":")
        )
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
