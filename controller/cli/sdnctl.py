"""sdnctl: the command-line client of the controller's TopologyService (OpenStack client grammar).

    sdnctl [GLOBAL OPTIONS] RESOURCE ACTION [ARGS] [OPTIONS]

Global options (also accepted after the command): --endpoint HOST:PORT (env SDN_ENDPOINT, default
127.0.0.1:50051), --token TOKEN (env SDN_TOKEN), --token-file PATH (a controller's tokens.json, or its data
directory: the first admin token in it; env SDN_TOKEN_FILE), --profile NAME (env SDN_PROFILE),
--tenant-scope TENANT (env SDN_TENANT_SCOPE), -f/--format table|json|yaml|value|csv, -c/--column COLUMN
(repeatable: a heading such as "Fixed IPs" or a field name such as fixed_ips), --max-width N (env
SDN_MAX_WIDTH), --timeout SECONDS (env SDN_TIMEOUT, default 30); lists also take --long.
The token is taken from --token, else --token-file, else SDN_TOKEN, else SDN_TOKEN_FILE, else the profile's
token, else its token_file.
TLS (an API beyond loopback, or --grpc-tls always): --ca-cert PATH (env SDN_CA_CERT; the controller's
DATA_DIR/pki/ca.crt) verifies the controller and turns TLS on; --client-cert/--client-key PATH (env
SDN_CLIENT_CERT, SDN_CLIENT_KEY; from `sdn-controller pki issue-client NAME`) present a client certificate.

Profiles: SDN_PROFILE_FILE (default ~/.config/sdnctl/profiles.toml) holds [NAME] tables with endpoint,
token, token_file, ca_cert, client_cert, client_key, timeout, tenant_scope, max_width (paths relative to
the file). Options override SDN_* variables, which override the profile.

References (NET, SUBNET, PORT, ROUTER, SG, POLICY, ...), the OpenStack client's rule: a resource name
("networks/x") as given; else an exact id match; else the one display name that matches (several: an
error listing each candidate's id and tenant). A tenant only ever matches what it can see (its own, and
external networks). An admin matches every tenant's, unless --tenant-scope TENANT (or the command's own
--tenant) narrows both the id and the name match to that tenant's resources and external networks.
CHASSIS is "chassis/x" or "x" (chassis have no display name); FIP is "floatingIps/x", "x" or the address.
In `set`, list options (--fixed-ip, --dns-nameserver, ...) replace the whole list; --no-... clears it.
Only the fields given are sent, in an explicit update mask.

Output: table (lists: ID and Name columns and a few more, --long for more; references shown by display
name, "name (id)" when two visible resources share it; show: a Field/Value table, references as
"name (resource name)"), csv (the table's columns, headings first), json and yaml (every field as the
API returns it: proto field names, references as resource names, plus the derived `id`; -c narrows), value
(values only, references as resource names: one line per resource for lists, space-separated, list values
joined by ",", "-" for an empty value unless a single column; for one resource one field per line).
`delete` and `token revoke` print nothing on success. `sdnctl complete [--shell zsh]` prints a completion
script; `sdnctl --version` the version.

Errors are one line on stderr, e.g.
    error: INVALID_ARGUMENT subnet.cidr: '10.0.0.0/33' is not a CIDR (INVALID_FIELD)
(gRPC code, BadRequest field violations or the message, ErrorInfo reason) and these exit codes:
    0 success                 1 other error (INTERNAL, UNKNOWN, unexpected client failure)
    2 usage (bad options, no token, unreadable token file)
    3 NOT_FOUND               4 INVALID_ARGUMENT, OUT_OF_RANGE, ambiguous display name
    5 ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED
    6 RESOURCE_EXHAUSTED      7 UNAUTHENTICATED, PERMISSION_DENIED
    8 cannot reach the controller (UNAVAILABLE) or no answer in time (DEADLINE_EXCEEDED)
    9 wait-realized: the switches did not realize the revision within --wait (progress lines on stderr)
    130 interrupted (Ctrl-C), except `watch`, which Ctrl-C ends normally (0).
Set SDNCTL_DEBUG=1 to get a traceback for unexpected client failures.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2, json_format

from apps.plugin import PLUGIN_API
from controller import plugins
from controller.cli import apply as cli_apply
from controller.cli import completion
from controller.cli import helptext as cli_help
from controller.cli import lb as cli_lb
from controller.cli import security as cli_security
from controller.cli import vpn as cli_vpn
from controller.cli.common import (
    DEFAULT_ENDPOINT,
    PAGE_SIZE,
    REF_HELP,
    Client,
    add_globals,
    apply_settings,
    command,
    credentials,
    do_delete,
    do_list,
    do_show,
    pair,
    put,
    repeated,
    report,
    update,
)
from controller.cli.format import (
    ADDRESS_PAIR,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_REALIZED,
    EXIT_OK,
    EXIT_USAGE,
    FIXED_IP,
    POOL,
    ROUTE,
    CliError,
    Output,
    bridge_mapping,
    chassis_name,
    datapath_id,
    dump,
    event_line,
    positive,
    print_many,
    print_one,
    print_records,
    usage_error,
)
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import debug_pb2 as dbg
from proto.sdn.v1 import topology_pb2 as pb

SEGMENTS: dict[str, Any] = {
    "vxlan": pb.Network.VXLAN,
    "gre": pb.Network.GRE,
    "geneve": pb.Network.GENEVE,
    "vlan": pb.Network.VLAN,
    "flat": pb.Network.FLAT,
}


# ---------------------------------------------------------------------------------------------- helpers


def _fixed_ips(c: Client, specs: list[dict[str, str]], network: str) -> list[pb.FixedIp]:
    return [
        pb.FixedIp(
            subnet=c.resolve("subnet", f["subnet"], network=network).name if "subnet" in f else "",
            ip_address=f.get("ip_address", ""),
        )
        for f in specs
    ]


def _opt(values: list[Any] | None, convert: Callable[[Any], Any]) -> list[Any] | None:
    return None if values is None else [convert(v) for v in values]


# ---------------------------------------------------------------------------------------------- commands


def network_create(c: Client, a: argparse.Namespace) -> Any:
    net = pb.Network(
        display_name=a.display_name,
        segment_type=SEGMENTS.get(a.segment_type or "", 0),
        segment_id=a.segment_id or 0,
        physical_network=a.physical_network or "",
        mtu=a.mtu or 0,
        external=a.external,
        tenant=a.tenant or "",
        description=a.description or "",
        tags=a.tags or [],
        shared=a.shared,
    )
    if a.disable:
        net.admin_state_up = False
    return c("CreateNetwork", pb.CreateNetworkRequest(network=net, network_id=a.id or ""))


def network_set(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.Network(name=c.resolve("network", a.ref).name)
    paths: list[str] = []
    for field in ("display_name", "mtu", "admin_state_up", "external", "description", "tags", "shared"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "network", msg, paths)


def subnet_create(c: Client, a: argparse.Namespace) -> Any:
    sub = pb.Subnet(
        display_name=a.display_name,
        network=c.resolve("network", a.network).name,
        cidr=a.cidr,
        allocation_pools=[pb.AllocationPool(**p) for p in a.allocation_pools or []],
        dns_servers=a.dns_servers or [],
        host_routes=[pb.HostRoute(**r) for r in a.host_routes or []],
        ipv6_ra_mode=a.ipv6_ra_mode or "",
        ipv6_address_mode=a.ipv6_address_mode or "",
    )
    if a.gateway_ip is not None:
        sub.gateway_ip = a.gateway_ip
    if a.enable_dhcp is not None:
        sub.enable_dhcp = a.enable_dhcp
    return c("CreateSubnet", pb.CreateSubnetRequest(subnet=sub, subnet_id=a.id or ""))


def subnet_set(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.Subnet(name=c.resolve("subnet", a.ref).name)
    paths: list[str] = []
    for field in ("display_name", "gateway_ip", "enable_dhcp", "dns_servers"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "allocation_pools", _opt(a.allocation_pools, lambda p: pb.AllocationPool(**p)))
    put(msg, paths, "host_routes", _opt(a.host_routes, lambda r: pb.HostRoute(**r)))
    return update(c, "subnet", msg, paths)


def port_create(c: Client, a: argparse.Namespace) -> Any:
    net = c.resolve("network", a.network).name
    port = pb.Port(
        display_name=a.display_name,
        network=net,
        fixed_ips=_fixed_ips(c, a.fixed_ips or [], net),
        mac_address=a.mac_address or "",
        device_owner=a.device_owner or "",
        device_id=a.device_id or "",
        allowed_address_pairs=[pb.AddressPair(**p) for p in a.allowed_address_pairs or []],
        security_groups=[cli_security.group_ref(c, g) for g in a.security_groups or []],
        binding_chassis=chassis_name(a.binding_chassis or ""),
        tenant=a.tenant or "",
        description=a.description or "",
        tags=a.tags or [],
    )
    if a.admin_state_up is not None:
        port.admin_state_up = a.admin_state_up
    if a.port_security_enabled is not None:
        port.port_security_enabled = a.port_security_enabled
    return c("CreatePort", pb.CreatePortRequest(port=port, port_id=a.id or ""))


def port_set(c: Client, a: argparse.Namespace) -> Any:
    old = c.resolve("port", a.ref)
    msg = pb.Port(name=old.name)
    paths: list[str] = []
    for field in (
        "display_name",
        "device_owner",
        "device_id",
        "admin_state_up",
        "port_security_enabled",
        "description",
        "tags",
    ):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "fixed_ips", None if a.fixed_ips is None else _fixed_ips(c, a.fixed_ips, old.network))
    put(msg, paths, "allowed_address_pairs", _opt(a.allowed_address_pairs, lambda p: pb.AddressPair(**p)))
    put(msg, paths, "security_groups", _opt(a.security_groups, lambda g: cli_security.group_ref(c, g)))
    host = a.binding_chassis
    put(msg, paths, "binding_chassis", None if host is None else chassis_name(host))
    return update(c, "port", msg, paths)


def chassis_create(c: Client, a: argparse.Namespace) -> Any:
    ch = pb.Chassis(
        datapath_id=a.datapath_id or 0,
        tunnel_ip=a.tunnel_ip or "",
        ovsdb_address=a.ovsdb_address or "",
        bridge_mappings=dict(a.bridge_mappings or []),
    )
    return c("CreateChassis", pb.CreateChassisRequest(chassis=ch, chassis_id=a.display_name))


def chassis_set(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.Chassis(name=chassis_name(a.ref))
    paths: list[str] = []
    for field in ("datapath_id", "tunnel_ip", "ovsdb_address"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "bridge_mappings", None if a.bridge_mappings is None else dict(a.bridge_mappings))
    return update(c, "chassis", msg, paths)


def _gateway(
    c: Client, network: str, fixed_ip: list[dict[str, str]] | None, snat: bool | None
) -> pb.ExternalGateway:
    """--external-gateway NET [--fixed-ip ...]... [--enable-snat|--disable-snat]; the external subnet is the
    operator's (tenants cannot look it up), so it is passed on by id or name as given. One --fixed-ip: the
    single-address form (an IPv6 address the gateway has stays); two (an IPv4 and an IPv6 one): dual stack,
    exactly these addresses."""
    gw = pb.ExternalGateway(network=c.resolve("network", network).name)
    for f in fixed_ip or []:
        one = gw.fixed_ip if len(fixed_ip or []) == 1 else gw.fixed_ips.add()
        sub = f.get("subnet", "")
        one.subnet = sub if not sub or "/" in sub else f"subnets/{sub}"
        one.ip_address = f.get("ip_address", "")
    if snat is not None:
        gw.enable_snat = snat
    return gw


def router_create(c: Client, a: argparse.Namespace) -> Any:
    router = pb.Router(display_name=a.display_name, tenant=a.tenant or "")
    if a.disable:
        router.admin_state_up = False
    if a.external_gateway:
        router.external_gateway.CopyFrom(_gateway(c, a.external_gateway, a.fixed_ip, a.enable_snat))
    elif a.fixed_ip or a.enable_snat is not None:
        raise usage_error("--fixed-ip and --enable-snat/--disable-snat go with --external-gateway NET")
    return c("CreateRouter", pb.CreateRouterRequest(router=router, router_id=a.id or ""))


def router_set(c: Client, a: argparse.Namespace) -> Any:
    old = c.resolve("router", a.ref)
    msg = pb.Router(name=old.name)
    paths: list[str] = []
    for field in ("display_name", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "routes", _opt(a.routes, lambda r: pb.HostRoute(**r)))
    if a.external_gateway == "":  # --no-external-gateway: in the mask, unset
        if a.fixed_ip or a.enable_snat is not None:
            raise usage_error("--no-external-gateway takes no --fixed-ip or --enable-snat/--disable-snat")
        paths.append("external_gateway")
    elif a.external_gateway:
        msg.external_gateway.CopyFrom(_gateway(c, a.external_gateway, a.fixed_ip, a.enable_snat))
        paths.append("external_gateway")
    elif a.fixed_ip or a.enable_snat is not None:  # the same gateway network, changed
        if not old.HasField("external_gateway"):
            raise usage_error(f"router {old.name} has no external gateway: give --external-gateway NET")
        snat = old.external_gateway.enable_snat if a.enable_snat is None else a.enable_snat
        gw = _gateway(c, old.external_gateway.network, a.fixed_ip, snat)
        msg.external_gateway.CopyFrom(gw)
        paths.append("external_gateway")
    return update(c, "router", msg, paths)


def router_interface(c: Client, a: argparse.Namespace) -> Any:
    """router add|remove subnet|port ROUTER X"""
    router = c.resolve("router", a.router).name
    target = {a.what: c.resolve(a.what, a.target).name}
    if a.action == "add":
        return c("AddRouterInterface", pb.AddRouterInterfaceRequest(name=router, **target))
    c("RemoveRouterInterface", pb.RemoveRouterInterfaceRequest(name=router, **target))
    return None


def floating_ip_create(c: Client, a: argparse.Namespace) -> Any:
    if a.fixed_ip_address and not a.port:
        raise usage_error("--fixed-ip-address goes with --port")
    fip = pb.FloatingIp(
        floating_network=c.resolve("network", a.network).name,
        floating_ip_address=a.floating_ip_address or "",
        port=c.resolve("port", a.port).name if a.port else "",
        fixed_ip_address=a.fixed_ip_address or "",
        tenant=a.tenant or "",
    )
    return c("CreateFloatingIp", pb.CreateFloatingIpRequest(floating_ip=fip, floating_ip_id=a.id or ""))


def floating_ip_set(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.FloatingIp(name=c.resolve("floating_ip", a.ref).name)
    paths: list[str] = []
    put(msg, paths, "port", c.resolve("port", a.port).name)
    put(msg, paths, "fixed_ip_address", a.fixed_ip_address)
    return update(c, "floating_ip", msg, paths)


def floating_ip_unset(c: Client, a: argparse.Namespace) -> Any:
    if not a.port:
        raise usage_error("nothing to unset: give --port (dissociate)")
    return update(c, "floating_ip", pb.FloatingIp(name=c.resolve("floating_ip", a.ref).name), ["port"])


def token_create(c: Client, a: argparse.Namespace) -> Any:
    return c("CreateToken", pb.CreateTokenRequest(tenant=a.tenant, admin=a.admin))


def token_revoke(c: Client, a: argparse.Namespace) -> None:
    c("RevokeToken", pb.RevokeTokenRequest(token=a.token_value))


def info(c: Client, a: argparse.Namespace) -> Any:
    return c("GetServerInfo", pb.GetServerInfoRequest())


def watch(c: Client, a: argparse.Namespace) -> int:
    stream = c.stub.Watch(pb.WatchRequest(start_revision=a.from_revision), metadata=c.md)
    seen = 0
    try:
        for event in stream:
            sys.stdout.write(event_line(event, a.format) + "\n")
            sys.stdout.flush()
            seen += 1
            if a.max_events and seen >= a.max_events:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()
    return EXIT_OK


def flow_dump(c: Client, a: argparse.Namespace) -> int:
    """A chassis's desired flows, `ovs-ofctl dump-flows` shaped, with stage and owning object."""
    flows: list[str] = []
    groups: list[str] = []
    token = ""
    port = c.resolve("port", a.port).name if a.port else ""
    while True:  # every page
        resp = c.dataplane.DumpFlows(
            dpb.DumpFlowsRequest(
                chassis=chassis_name(a.chassis),
                stage=a.stage or "",
                owner=a.owner or "",
                port=port,
                desired_only=a.desired,
                page_token=token,
            ),
            metadata=c.md,
            timeout=c.timeout,
        )
        flows += resp.flows
        groups += resp.groups
        token = resp.next_page_token
        if not token:
            break
    if a.format in ("json", "yaml"):
        dump({"flows": flows, "groups": groups}, a.format, sys.stdout)
    else:
        for line in [*flows, *groups]:
            print(line)
    return EXIT_OK


PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1}


def flow_trace(c: Client, a: argparse.Namespace) -> int:
    """Where a packet from a port goes, table by table and chassis by chassis (ovn-trace shaped)."""
    headers = dict(a.headers or [])
    if a.eth_dst:
        headers["eth_dst"] = a.eth_dst
    v6 = a.ipv6 or ":" in (a.ip_dst or "")
    if a.ip_dst:
        headers["ipv6_dst" if v6 else "ipv4_dst"] = a.ip_dst
    if v6:
        headers.setdefault("eth_type", "0x86dd")
    if a.proto:
        headers["ip_proto"] = "58" if v6 and a.proto == "icmp" else str(PROTO_NUMBERS[a.proto])
    if a.dst_port_number:
        if a.proto == "icmp":
            raise usage_error("--dst-port-number goes with --proto tcp or udp")
        headers[f"{a.proto or 'tcp'}_dst"] = str(a.dst_port_number)
        headers.setdefault("ip_proto", str(PROTO_NUMBERS[a.proto or "tcp"]))
    if not a.port and not (a.chassis and a.in_port):
        raise usage_error("give --port PORT, or --chassis CHASSIS and --in-port N")
    req = dbg.TraceRequest(
        port=c.resolve("port", a.port).name if a.port else "",
        chassis=chassis_name(a.chassis) if a.chassis else "",
        in_port=a.in_port or 0,
        headers=headers,
        destination_port=c.resolve("port", a.dst_port).name if a.dst_port else "",
        source=dbg.TraceRequest.INSTALLED if a.installed else dbg.TraceRequest.DESIRED,
    )
    resp = (c.debug.DiffTrace if a.diff else c.debug.Trace)(req, metadata=c.md, timeout=c.timeout)
    if a.format in ("json", "yaml"):
        dump(json_format.MessageToDict(resp, preserving_proto_field_name=True), a.format, sys.stdout)
    elif a.format == "value":
        print(resp.installed.verdict if a.diff else resp.verdict)
    else:
        print(resp.text)
    return EXIT_OK


def explain(c: Client, a: argparse.Namespace) -> int:
    """Can SRC reach DST (a port or an IP) on PROTO/PORT, and what decides it."""
    src = c.resolve("port", a.src).name
    dst = a.dst
    if not re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:.]*", dst):
        dst = c.resolve("port", dst).name
    resp = c.debug.Explain(
        dbg.ExplainRequest(source_port=src, destination=dst, protocol=a.proto, port=a.port or 0),
        metadata=c.md,
        timeout=c.timeout,
    )
    if a.format in ("json", "yaml"):
        data = json_format.MessageToDict(
            resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        dump(data, a.format, sys.stdout)
    elif a.format == "value":
        print("allowed" if resp.allowed else "denied")
    else:
        print(resp.text)
    return EXIT_OK


STATUS_FIELDS = [
    "chassis",
    "connected",
    "ovsdb_ready",
    "realized_revision",
    "desired_flows",
    "installed_flows",
    "flow_mods_sent",
    "resyncs",
    "packet_ins",
    "drift_repairs",
    "compile_divergences",
]


def chassis_status(c: Client, a: argparse.Namespace) -> int:
    resp = c.dataplane.ListChassisStatus(dpb.ListChassisStatusRequest(), metadata=c.md, timeout=c.timeout)
    rows = [{k: getattr(s, k) for k in STATUS_FIELDS} for s in resp.chassis]
    print_records(rows, a.view, sys.stdout, STATUS_FIELDS)
    return EXIT_OK


def wait_realized(c: Client, a: argparse.Namespace) -> int:
    """Wait for the switches to realize a revision: a progress line on stderr every couple of seconds, the
    result on stdout; exit 0 realized, EXIT_NOT_REALIZED (9) not realized within --wait."""
    deadline = time.monotonic() + a.wait
    revision = a.revision
    while True:
        left = max(0.0, deadline - time.monotonic())
        step = min(left, PROGRESS_EVERY_S)
        req = dpb.WaitRealizedRequest(
            revision=revision, timeout=duration_pb2.Duration(seconds=int(step), nanos=int(step % 1 * 1e9))
        )
        resp = c.dataplane.WaitRealized(req, metadata=c.md, timeout=step + c.timeout)
        revision = resp.revision
        left = deadline - time.monotonic()
        if resp.realized or left <= 0:
            break
        behind = [ch for ch in resp.chassis if not ch.realized]
        detail = (
            f": {len(resp.chassis) - len(behind)} of {len(resp.chassis)} chassis done; behind: "
            + ", ".join(
                f"{ch.chassis.rsplit('/', 1)[-1]} at {ch.realized_revision}"
                + ("" if ch.connected else " (no switch connection)")
                for ch in behind[:5]
            )
            + (f" and {len(behind) - 5} more" if len(behind) > 5 else "")
            if resp.chassis
            else ""
        )
        sys.stderr.write(f"waiting for revision {revision}{detail} ({left:.0f} s left)\n")
        sys.stderr.flush()
    if a.format in ("json", "yaml"):
        dump(
            json_format.MessageToDict(
                resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            ),
            a.format,
            sys.stdout,
        )
    else:
        print(
            f"revision {resp.revision}: {'realized' if resp.realized else f'NOT realized within {a.wait:g} s'}"
        )
        for ch in resp.chassis:
            print(
                f"  {ch.chassis}: realized {ch.realized_revision}, needs {ch.needed_revision}"
                f"{'' if ch.connected else ' (no switch connection)'}"
            )
    return EXIT_OK if resp.realized else EXIT_NOT_REALIZED


PROGRESS_EVERY_S = 2.0


# ---------------------------------------------------------------------------------------------- parser


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    return name.strip(), value.strip()


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: USAGE {self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


PLURAL = {"chassis": "chassis"}


def _resource(
    sub: Any, kind: str, create: Callable[..., Any], set_: Callable[..., Any], ref: str
) -> tuple[Any, Any, Any]:
    many = PLURAL.get(kind, f"{kind}s")
    rs = sub.add_parser(kind, help=f"{kind} commands: create, list, show, set, delete").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    pc = command(rs, "create", create, kind, help=f"create a {kind}")
    pc.add_argument(
        "display_name",
        metavar="NAME",
        help="display name" if kind != "chassis" else "its id (the hostname, usually)",
    )
    if kind != "chassis":
        pc.add_argument("--id", help="client-chosen id ([a-z0-9-], at most 63)")
    pl = command(rs, "list", do_list, kind, out="many", help=f"list {many}")
    pl.add_argument("--limit", type=positive, help="at most N (default: every page)")
    pl.add_argument("--page-size", type=positive, help=f"items per request (default {PAGE_SIZE})")
    if kind != "chassis":
        pl.add_argument("--tenant", help="only this tenant's (admin)")
    command(rs, "show", do_show, kind, help=f"show a {kind}").add_argument(
        "ref", metavar=ref, help=f"the {kind}: {REF_HELP}"
    )
    ps = command(rs, "set", set_, kind, help=f"change a {kind}")
    ps.add_argument("ref", metavar=ref, help=f"the {kind}: {REF_HELP}")
    if kind != "chassis":
        ps.add_argument("--name", dest="display_name", help="new display name")
    pd = command(rs, "delete", do_delete, kind, out="none", help=f"delete {many}")
    pd.add_argument("refs", metavar=ref, nargs="+", help=f"the {many}: {REF_HELP}")
    for p in (pc, ps, pd):
        p.add_argument(
            "--validate-only",
            action="store_true",
            help="check and print what the switches would get; store and change nothing",
        )
    if kind != "port":
        pd.add_argument(
            "--force",
            action="store_true",
            help={
                "network": "also delete its subnets and ports",
                "subnet": "also delete the ports using it",
                "chassis": "also unbind its ports",
                "router": "also remove its interfaces and dissociate the floating IPs it translates",
            }[kind],
        )
    return pc, pl, ps


SHARE_HELP = "admin: every tenant sees the network and may attach ports to it (Neutron's shared network)"


def _labels(pc: Any, pl: Any, ps: Any, kind: str) -> None:
    """--description and --tag on create and set (set: --tag replaces the tags, --no-tag clears them), and
    list --tag (only those having every tag given)."""
    for p in (pc, ps):
        p.add_argument("--description", help="free text (at most 255 characters)")
        repeated(
            p,
            "--tag",
            "tags",
            "--no-tag" if p is ps else None,
            "TAG",
            help="a tag (1-60 characters, no ',')" + ("; replaces the tags" if p is ps else ""),
        )
    pl.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="TAG",
        help=f"only {kind}s having this tag (repeatable: every one)",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="sdnctl",
        description="Command-line client of the SDN controller's topology API.",
        epilog="Exit codes: 0 ok, 1 other, 2 usage, 3 not found, 4 invalid argument, 5 conflict, "
        "6 exhausted, 7 auth, 8 unreachable, 9 not realized (wait-realized), 130 interrupted.",
    )
    add_globals(parser)
    parser.add_argument(
        "--version", action="version", version=f"sdnctl {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="resource", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "complete",
        help='print a shell completion script (bash: eval "$(sdnctl complete)" in ~/.bashrc)',
    )
    p.add_argument("--shell", choices=["bash", "zsh"], default="bash", help="for this shell (default bash)")
    p.set_defaults(func=complete, kind="", out="self")

    pc, pl, ps = _resource(sub, "network", network_create, network_set, "NET")
    pc.add_argument("--segment-type", choices=list(SEGMENTS))
    pc.add_argument("--segment-id", type=positive, help="VNI / GRE key / VLAN id (admin)")
    pc.add_argument("--physical-network", help="for vlan and flat networks (admin)")
    pc.add_argument("--mtu", type=positive)
    pc.add_argument("--external", action="store_true", help="usable as an external gateway network (admin)")
    pc.add_argument("--disable", action="store_true", help="administratively down")
    pc.add_argument("--tenant", help="owner (admin: create for another tenant)")
    ps.add_argument("--mtu", type=positive)
    pair(ps, "admin_state_up", "--enable", "--disable")
    pair(ps, "external", "--external", "--no-external")
    pc.add_argument("--share", dest="shared", action="store_true", help=SHARE_HELP)
    pair(ps, "shared", "--share", "--no-share")
    _labels(pc, pl, ps, "network")

    pc, pl, ps = _resource(sub, "subnet", subnet_create, subnet_set, "SUBNET")
    pc.add_argument("--network", required=True, metavar="NET")
    pc.add_argument("--cidr", required=True)
    pl.add_argument("--network", metavar="NET")
    for p in (pc, ps):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--gateway", dest="gateway_ip", default=None, metavar="IP")
        g.add_argument("--no-gateway", dest="gateway_ip", action="store_const", const="")
        repeated(
            p,
            "--allocation-pool",
            "allocation_pools",
            "--no-allocation-pool" if p is ps else None,
            "start=IP,end=IP",
            POOL,
        )
        repeated(p, "--dns-nameserver", "dns_servers", "--no-dns-nameservers" if p is ps else None, "IP")
        repeated(
            p,
            "--host-route",
            "host_routes",
            "--no-host-routes" if p is ps else None,
            "destination=CIDR,gateway=IP",
            ROUTE,
        )
    pc.add_argument("--no-dhcp", dest="enable_dhcp", action="store_const", const=False, default=None)
    pair(ps, "enable_dhcp", "--dhcp", "--no-dhcp")
    v6modes = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")  # the server checks them too
    pc.add_argument("--ipv6-ra-mode", choices=v6modes, help="router advertisements of the subnet's router")
    pc.add_argument("--ipv6-address-mode", choices=v6modes, help="how the subnet's ports get IPv6 addresses")

    pc, pl, ps = _resource(sub, "port", port_create, port_set, "PORT")
    _labels(pc, pl, ps, "port")
    pc.add_argument("--network", required=True, metavar="NET")
    pc.add_argument("--mac-address", metavar="MAC")
    pc.add_argument("--tenant", help="owner (admin)")
    pl.add_argument("--network", metavar="NET")
    pl.add_argument("--device-id", metavar="D")
    pl.add_argument("--host", metavar="CHASSIS")
    for p in (pc, ps):
        clear = p is ps
        repeated(
            p,
            "--fixed-ip",
            "fixed_ips",
            "--no-fixed-ip" if clear else None,
            "subnet=SUBNET,ip-address=IP",
            FIXED_IP,
        )
        repeated(
            p,
            "--allowed-address",
            "allowed_address_pairs",
            "--no-allowed-address" if clear else None,
            "ip-address=IP[,mac-address=MAC]",
            ADDRESS_PAIR,
        )
        repeated(p, "--security-group", "security_groups", "--no-security-group" if clear else None, "SG")
        p.add_argument("--device-owner", metavar="S")
        p.add_argument("--device-id", metavar="S")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--host", dest="binding_chassis", metavar="CHASSIS", help="bind to a chassis (admin)")
        if clear:
            g.add_argument("--no-host", dest="binding_chassis", action="store_const", const="", help="unbind")
        pair(p, "admin_state_up", "--enable", "--disable")
        pair(p, "port_security_enabled", "--enable-port-security", "--disable-port-security")

    pc, pl, ps = _resource(sub, "chassis", chassis_create, chassis_set, "CHASSIS")
    for p in (pc, ps):
        p.add_argument("--datapath-id", type=datapath_id, metavar="HEX|INT")
        p.add_argument("--tunnel-ip", metavar="IP")
        p.add_argument(
            "--ovsdb",
            dest="ovsdb_address",
            metavar="ADDR",
            help='e.g. "ssl:192.0.2.5:6640" (tcp: only with insecure_ovsdb)',
        )
        repeated(
            p,
            "--bridge-mapping",
            "bridge_mappings",
            "--no-bridge-mapping" if p is ps else None,
            "PHYSNET:BRIDGE",
            bridge_mapping,
        )

    pc, pl, ps = _resource(sub, "router", router_create, router_set, "ROUTER")
    pc.add_argument("--tenant", help="owner (admin: create for another tenant)")
    pc.add_argument("--disable", action="store_true", help="administratively down")
    pair(ps, "admin_state_up", "--enable", "--disable")
    for p in (pc, ps):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--external-gateway", metavar="NET", help="an external network")
        if p is ps:
            g.add_argument(
                "--no-external-gateway",
                dest="external_gateway",
                action="store_const",
                const="",
                help="remove the external gateway",
            )
        p.add_argument(
            "--fixed-ip",
            type=FIXED_IP,
            action="append",
            metavar="subnet=SUBNET,ip-address=IP",
            help="the gateway's address on the external network (default: an IPv4 one, allocated); repeat it "
            "for dual stack (an IPv4 and an IPv6 address: IPv6 is routed without NAT)",
        )
        pair(p, "enable_snat", "--enable-snat", "--disable-snat")
    repeated(
        ps,
        "--route",
        "routes",
        "--no-route",
        "destination=CIDR,gateway=IP",
        ROUTE,
        help="static route; replaces the list",
    )
    router_actions = next(
        a for a in sub.choices["router"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    for action, out, verb in (
        ("add", "one", "add an interface to"),
        ("remove", "none", "remove an interface from"),
    ):
        what = router_actions.add_parser(action, help=f"{verb} a router").add_subparsers(
            dest="what", metavar="subnet|port", required=True
        )
        for target, helptext in (
            ("subnet", "by subnet (the router takes its gateway address)"),
            ("port", "by an unused port (the router takes its address)"),
        ):
            p = command(what, target, router_interface, out=out, help=helptext)
            p.add_argument("router", metavar="ROUTER")
            p.add_argument("target", metavar=target.upper())
            p.add_argument(
                "--validate-only",
                action="store_true",
                help="check and print what the switches would get; store and change nothing",
            )

    cli_security.add_commands(sub)
    cli_lb.add_commands(sub)
    cli_vpn.add_commands(sub)
    cli_apply.add_commands(sub)
    # their CLI hooks only: nothing is registered in this process (sdnctl compiles nothing)
    for plugin in plugins.discover(os.environ.get("SDN_DISABLED_PLUGINS", "").split(",")).loaded:
        if plugin.cli is not None and plugin.api_version == PLUGIN_API:
            plugin.cli(sub)  # a plug-in's commands (apps/plugin.py: the same grammar, its own service)
    fip = sub.add_parser("floating", help="floating IP commands (floating ip ACTION)").add_subparsers(
        dest="floating", metavar="ip", required=True
    )
    fs = fip.add_parser("ip", help="floating IP commands").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = command(fs, "create", floating_ip_create, "floating_ip", help="allocate a floating IP")
    p.add_argument("network", metavar="EXTNET", help="the external network")
    p.add_argument("--id", help="client-chosen id ([a-z0-9-], at most 63)")
    p.add_argument("--floating-ip-address", metavar="IP", help="default: allocated")
    p.add_argument("--port", metavar="PORT", help="associate at once")
    p.add_argument(
        "--fixed-ip-address", metavar="IP", help="which of the port's addresses (default: its only IPv4)"
    )
    p.add_argument("--tenant", help="owner (admin)")
    fip_writes = [p]
    p = command(fs, "list", do_list, "floating_ip", out="many", help="list floating IPs")
    p.add_argument("--limit", type=positive, help="at most N (default: every page)")
    p.add_argument("--page-size", type=positive, help=f"items per request (default {PAGE_SIZE})")
    p.add_argument("--tenant", help="only this tenant's (admin)")
    p.add_argument("--network", metavar="EXTNET")
    p.add_argument("--port", dest="port_ref", metavar="PORT")
    command(fs, "show", do_show, "floating_ip", help="show a floating IP").add_argument(
        "ref", metavar="FIP", help="id, name or address"
    )
    p = command(fs, "set", floating_ip_set, "floating_ip", help="associate with a port")
    p.add_argument("ref", metavar="FIP")
    p.add_argument("--port", required=True, metavar="PORT")
    p.add_argument("--fixed-ip-address", metavar="IP")
    fip_writes.append(p)
    p = command(fs, "unset", floating_ip_unset, "floating_ip", help="dissociate (--port)")
    p.add_argument("ref", metavar="FIP")
    p.add_argument("--port", action="store_true", help="dissociate from its port")
    fip_writes.append(p)
    p = command(fs, "delete", do_delete, "floating_ip", out="none", help="release floating IPs")
    p.add_argument("refs", metavar="FIP", nargs="+")
    fip_writes.append(p)
    for p in fip_writes:
        p.add_argument(
            "--validate-only",
            action="store_true",
            help="check and print what the switches would get; store and change nothing",
        )

    chassis_actions = next(
        a for a in sub.choices["chassis"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    command(
        chassis_actions,
        "status",
        chassis_status,
        out="self",
        help="OpenFlow/OVSDB state, realized revision and flow counts of every chassis (admin)",
    )
    fs = sub.add_parser(
        "flow", help="look at the flows the controller wants on a chassis (admin)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(fs, "dump", flow_dump, out="self", help="dump-flows lines with stage and owner")
    p.add_argument("chassis", metavar="CHASSIS")
    p.add_argument("--stage", help="only this stage, e.g. l2_lookup")
    p.add_argument(
        "--owner", "--object", dest="owner", help="only flows of this object id (a port or network id)"
    )
    p.add_argument("--port", help="only flows owned by or matching on this port")
    p.add_argument(
        "--desired",
        action="store_true",
        help="what the controller wants (no counters) instead of what the switch holds",
    )
    p = command(
        fs,
        "trace",
        flow_trace,
        out="self",
        help="a packet's path through the flows, chassis by chassis (admin)",
    )
    p.add_argument("--port", metavar="PORT", help="the source logical port")
    p.add_argument("--chassis", metavar="CHASSIS", help="or a chassis and --in-port")
    p.add_argument("--in-port", type=positive, metavar="OFPORT")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dst-port", metavar="PORT", help="to this port (its MAC, and its IP for IP packets)")
    g.add_argument("--eth-dst", metavar="MAC")
    p.add_argument("--ip-dst", metavar="IP", help="an IPv4 or IPv6 destination address")
    p.add_argument(
        "-6", "--ipv6", action="store_true", help="an IPv6 packet (with --dst-port: to its IPv6 address)"
    )
    p.add_argument("--proto", choices=list(PROTO_NUMBERS), help="icmp is ICMPv6 in an IPv6 packet")
    p.add_argument("--dst-port-number", type=positive, metavar="N", help="tcp/udp destination port")
    p.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header,
        metavar="FIELD=VALUE",
        help="any other packet field, e.g. arp_tpa=10.0.0.5 (repeatable)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--installed", action="store_true", help="walk the flows installed on the switches now")
    g.add_argument(
        "--diff",
        action="store_true",
        help="desired vs installed flows: where they diverge, with the switch's ofproto/trace",
    )
    p = command(
        sub, "explain", explain, out="self", help="can SRC reach DST (a port or an IP), and what decides it"
    )
    p.add_argument("src", metavar="SRC", help="source port")
    p.add_argument("dst", metavar="DST", help="destination port or IP address")
    p.add_argument("--proto", default="tcp", choices=["tcp", "udp", "icmp", "any"])
    p.add_argument("--port", type=positive, metavar="N", help="tcp/udp destination port")
    p = command(
        sub,
        "wait-realized",
        wait_realized,
        out="self",
        help="wait until the switches realize a revision (default: the current one)",
        description="Wait until every switch has realized the revision. While waiting, a progress line "
        "goes to stderr every 2 s (admins: which chassis are behind, at which revision). Exit codes: 0 "
        "realized; 9 not realized within --wait; 7 auth; 8 controller unreachable; 1 other errors.",
    )
    p.add_argument(
        "--revision", type=positive, default=0, metavar="N", help="the revision (default: the current one)"
    )
    p.add_argument(
        "--wait", type=float, default=10.0, metavar="SECONDS", help="give up after this long (default 10)"
    )

    ts = sub.add_parser("token", help="issue and revoke tokens (admin)").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = command(ts, "create", token_create, help="issue a token")
    p.add_argument("--tenant", required=True)
    p.add_argument("--admin", action="store_true")
    command(ts, "revoke", token_revoke, out="none", help="revoke a token").add_argument(
        "token_value", metavar="TOKEN", help="the token (write `-- TOKEN` if it starts with '-')"
    )
    command(sub, "info", info, help="who am I, server version and revision")
    p = command(sub, "watch", watch, out="self", help="print changes as they happen (until Ctrl-C)")
    p.add_argument(
        "--from-revision",
        type=positive,
        default=0,
        metavar="N",
        help="replay changes after revision N (default: a snapshot of everything first)",
    )
    p.add_argument("--max-events", type=positive, default=0, metavar="N", help="stop after N events")
    cli_help.fill(parser)
    return parser


# ---------------------------------------------------------------------------------------------- main


def version() -> str:
    try:
        return importlib.metadata.version("sdn-controller")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def complete(args: argparse.Namespace) -> int:
    sys.stdout.write(completion.script(build_parser(), args.shell))
    return EXIT_OK


def _token(a: argparse.Namespace) -> str:
    """--token, --token-file, SDN_TOKEN, SDN_TOKEN_FILE, then the profile's token, then its token_file."""
    profile = getattr(a, "profile_settings", {})
    if getattr(a, "token", None):
        return str(a.token)
    path = getattr(a, "token_file", None)
    if not path and os.environ.get("SDN_TOKEN"):
        return os.environ["SDN_TOKEN"]
    path = path or os.environ.get("SDN_TOKEN_FILE")
    if not path and profile.get("token"):
        return str(profile["token"])
    path = path or profile.get("token_file")
    if not path:
        raise usage_error("no token: give --token, --token-file, set SDN_TOKEN or use a --profile with one")
    p = Path(path)
    p = p / "tokens.json" if p.is_dir() else p
    try:
        tokens = json.loads(p.read_text())["tokens"]
        return next(t for t, v in tokens.items() if v.get("admin"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise usage_error(f"cannot read token file {p}: {err}") from None
    except StopIteration:
        raise usage_error(f"no admin token in {p}") from None


def _number(args: argparse.Namespace, key: str, convert: Callable[[Any], Any], default: Any) -> Any:
    value = getattr(args, key, None)
    if value in (None, ""):
        return default
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise usage_error(f"{key.replace('_', '-')} {value!r} is not a number") from None


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    endpoint = DEFAULT_ENDPOINT
    client: Client | None = None
    try:
        apply_settings(args)
        endpoint = getattr(args, "endpoint", None) or DEFAULT_ENDPOINT
        timeout = _number(args, "timeout", float, 30.0)
        terminal = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
        args.format = getattr(args, "format", "table")
        if args.func is complete:
            return complete(args)
        client = Client(endpoint, _token(args), timeout, credentials(args))
        client.validate_only = bool(getattr(args, "validate_only", False))
        client.scope = str(getattr(args, "tenant_scope", None) or getattr(args, "tenant", None) or "")
        client.command_kind = str(getattr(args, "kind", "") or "")
        args.view = Output(
            fmt=args.format,
            columns=getattr(args, "columns", None) or (),
            long=bool(getattr(args, "long", False)),
            max_width=_number(args, "max_width", int, terminal),
            label=client.label,
        )
        result = args.func(client, args)
        if args.out == "one":
            print_one(result, args.view, sys.stdout, args.kind)
        elif args.out == "many":
            print_many(args.kind, result, args.view, sys.stdout)
        elif args.out in ("none", "self") and isinstance(result, int):
            return result
        sys.stdout.flush()
        return EXIT_OK
    except (grpc.RpcError, CliError) as err:
        return report(err, endpoint, getattr(client, "timeout", None))
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as err:  # never a traceback, unless asked for
        if os.environ.get("SDNCTL_DEBUG"):
            raise
        sys.stderr.write(f"error: INTERNAL unexpected client failure: {type(err).__name__}: {err}\n")
        return EXIT_ERROR
    finally:
        if client is not None:
            client.channel.close()


if __name__ == "__main__":
    sys.exit(main())
