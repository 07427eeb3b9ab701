"""What `sdnctl`'s command modules share (controller/cli/sdnctl.py, security.py, lb.py, vpn.py): the API client,
the generic show/list/delete commands, update masks, the global options and command registration.

Below the command modules (each imports this, none imports another's), so cli.py can register their
subcommands without an import cycle.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from controller.cli.format import EXIT_OK, CliError, chassis_name, rpc_error_line, usage_error
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import debug_pb2_grpc as dbg_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

DEFAULT_ENDPOINT = "127.0.0.1:50051"
ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
COLLECTION = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "chassis": "chassis",
    "router": "routers",
    "floating_ip": "floatingIps",
    "security_group": "securityGroups",
    "security_group_rule": "securityGroupRules",
    "firewall_rule": "firewallRules",
    "firewall_policy": "firewallPolicies",
    "firewall_group": "firewallGroups",
    "load_balancer": "loadBalancers",
    "listener": "listeners",
    "pool": "pools",
    "member": "members",
    "health_monitor": "healthMonitors",
    "ike_policy": "ikePolicies",
    "ipsec_policy": "ipsecPolicies",
    "vpn_service": "vpnServices",
    "vpn_endpoint_group": "vpnEndpointGroups",
    "ipsec_site_connection": "ipsecSiteConnections",
}
# the RPC name part, the List method (default List<part>s) and the List response field of each kind
METHOD = {
    "network": "Network",
    "subnet": "Subnet",
    "port": "Port",
    "chassis": "Chassis",
    "router": "Router",
    "floating_ip": "FloatingIp",
    "security_group": "SecurityGroup",
    "security_group_rule": "SecurityGroupRule",
    "firewall_rule": "FirewallRule",
    "firewall_policy": "FirewallPolicy",
    "firewall_group": "FirewallGroup",
    "load_balancer": "LoadBalancer",
    "listener": "Listener",
    "pool": "Pool",
    "member": "Member",
    "health_monitor": "HealthMonitor",
    "ike_policy": "IkePolicy",
    "ipsec_policy": "IpsecPolicy",
    "vpn_service": "VpnService",
    "vpn_endpoint_group": "VpnEndpointGroup",
    "ipsec_site_connection": "IpsecSiteConnection",
}
LIST_METHOD = {
    "chassis": "ListChassis",
    "firewall_policy": "ListFirewallPolicies",
    "ike_policy": "ListIkePolicies",
    "ipsec_policy": "ListIpsecPolicies",
}
LIST_FIELD = {
    "floating_ip": "floating_ips",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
    "firewall_rule": "firewall_rules",
    "firewall_policy": "firewall_policies",
    "firewall_group": "firewall_groups",
    "load_balancer": "load_balancers",
    "health_monitor": "health_monitors",
    "ike_policy": "ike_policies",
    "ipsec_policy": "ipsec_policies",
    "vpn_service": "vpn_services",
    "vpn_endpoint_group": "vpn_endpoint_groups",
    "ipsec_site_connection": "ipsec_site_connections",
}
PAGE_SIZE = 1000


class Client:
    def __init__(
        self, endpoint: str, token: str, timeout: float, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.endpoint, self.timeout = endpoint, timeout
        self.channel = (
            grpc.secure_channel(endpoint, credentials)
            if credentials is not None
            else grpc.insecure_channel(endpoint)
        )
        self.stub = pb_grpc.TopologyServiceStub(self.channel)
        self.dataplane = dpb_grpc.DataplaneServiceStub(self.channel)
        self.debug = dbg_grpc.DebugServiceStub(self.channel)
        self.lb = pb_grpc.LoadBalancerServiceStub(self.channel)
        self.vpn = pb_grpc.VpnaasServiceStub(self.channel)
        self.md = (("authorization", f"Bearer {token}"),)

    validate_only = False  # set from --validate-only: writes become dry runs that print their plan

    def __call__(self, method: str, request: Any) -> Any:
        rpc = getattr(self.stub, method, None) or getattr(self.lb, method, None) or getattr(self.vpn, method)
        if not (self.validate_only and hasattr(request, "validate_only")):
            return rpc(request, metadata=self.md, timeout=self.timeout)
        request.validate_only = True
        response, call = rpc.with_call(request, metadata=self.md, timeout=self.timeout)
        raw = dict(call.trailing_metadata() or ()).get("sdn-plan-bin")
        if raw is not None:
            print_plan(pb.Plan.FromString(raw), sys.stderr)
        return response

    def list(self, kind: str, *, limit: int = 0, page_size: int = PAGE_SIZE, **filters: str) -> list[Any]:
        """Every page (or the first `limit` items)."""
        cap = METHOD[kind]
        method = LIST_METHOD.get(kind, f"List{cap}s")
        request_cls = getattr(pb, f"{method}Request")
        items: list[Any] = []
        token = ""
        while True:
            size = min(page_size, limit - len(items)) if limit else page_size
            resp = self(method, request_cls(page_size=size, page_token=token, **filters))
            items.extend(getattr(resp, LIST_FIELD.get(kind, COLLECTION[kind])))
            token = resp.next_page_token
            if not token or (limit and len(items) >= limit):
                return items[:limit] if limit else items

    def get(self, kind: str, name: str) -> Any:
        cap = METHOD[kind]
        return self(f"Get{cap}", getattr(pb, f"Get{cap}Request")(name=name))

    def resolve(self, kind: str, ref: str, **filters: str) -> Any:
        """The resource a reference names: resource name, bare id, or (unambiguous) display name (for a
        floating IP: its address)."""
        coll = COLLECTION[kind]
        if "/" in ref or kind == "chassis":
            return self.get(kind, ref if "/" in ref else f"{coll}/{ref}")
        missing: grpc.RpcError | None = None
        if ID_RE.match(ref):
            try:
                return self.get(kind, f"{coll}/{ref}")
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                missing = err
        label = "floating_ip_address" if kind == "floating_ip" else "display_name"
        if kind == "security_group_rule":  # rules have no display name
            matches = []
        else:
            matches = [m for m in self.list(kind, **filters) if getattr(m, label) == ref]  # type: ignore[arg-type]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CliError(
                "INVALID_ARGUMENT",
                f"{kind}: display name {ref!r} is ambiguous: matches "
                f"{', '.join(m.name for m in matches)}; use the resource name",
                "AMBIGUOUS_NAME",
            )
        if missing is not None:
            raise missing
        raise CliError("NOT_FOUND", f"{kind} {ref!r} not found", f"{kind.upper()}_NOT_FOUND")


def put(msg: Any, paths: list[str], field: str, value: Any) -> None:
    """Set `field` of `msg` (scalar, repeated or map) when the option was given, and name it in the mask."""
    if value is None:
        return
    target: Any = getattr(msg, field) if isinstance(value, (list, dict)) else None
    if isinstance(value, dict):
        target.clear()
        target.update(value)
    elif isinstance(value, list):
        del target[:]
        target.extend(value)
    else:
        setattr(msg, field, value)
    paths.append(field)


def update(c: Client, kind: str, msg: Any, paths: list[str]) -> Any:
    if not paths:
        raise usage_error(f"nothing to set: give at least one option (see sdnctl {kind} set --help)")
    cap = METHOD[kind]
    request = getattr(pb, f"Update{cap}Request")(**{kind: msg})
    request.update_mask.paths.extend(paths)
    return c(f"Update{cap}", request)


def do_show(c: Client, a: argparse.Namespace) -> Any:
    return c.resolve(a.kind, a.ref)


def do_list(c: Client, a: argparse.Namespace) -> list[Any]:
    filters = {}
    if getattr(a, "tenant", None):
        filters["tenant"] = a.tenant
    if getattr(a, "network", None):
        filters["floating_network" if a.kind == "floating_ip" else "network"] = c.resolve(
            "network", a.network
        ).name
    if getattr(a, "port_ref", None):
        filters["port"] = c.resolve("port", a.port_ref).name
    if getattr(a, "device_id", None):
        filters["device_id"] = a.device_id
    if getattr(a, "host", None):
        filters["binding_chassis"] = chassis_name(a.host)
    return c.list(a.kind, limit=a.limit or 0, page_size=a.page_size or PAGE_SIZE, **filters)


def do_delete(c: Client, a: argparse.Namespace) -> int:
    """Delete each; report each failure on its own line; exit with the last failure's code."""
    cap, status = METHOD[a.kind], EXIT_OK
    for ref in a.refs:
        try:
            name = chassis_name(ref) if a.kind == "chassis" else c.resolve(a.kind, ref).name
            request = getattr(pb, f"Delete{cap}Request")(name=name)
            if getattr(a, "force", False):
                request.force = True
            c(f"Delete{cap}", request)
        except (grpc.RpcError, CliError) as err:
            status = report(err, c.endpoint, c.timeout)
    return status


def print_plan(plan: Any, out: Any) -> None:
    """What a validate_only write would do, per chassis."""
    out.write(
        f"validate only: nothing stored or sent; as revision {plan.revision} it would change "
        f"{len(plan.chassis)} chassis\n"
    )
    for ch in plan.chassis:
        out.write(
            f"  {ch.chassis}: +{ch.flows_added} -{ch.flows_deleted} flows "
            f"({ch.flows_before} -> {ch.flows_after}), +{ch.groups_added} -{ch.groups_deleted} groups\n"
        )
        for line in ch.sample_added:
            out.write(f"    + {line}\n")
        for line in ch.sample_deleted:
            out.write(f"    - {line}\n")
    if plan.cuts_connections:
        for reason in plan.cut_reasons:
            out.write(f"  cuts existing traffic: {reason}\n")


def report(err: grpc.RpcError | CliError, endpoint: str, timeout: float | None) -> int:
    if isinstance(err, CliError):
        line, code = err.line(), err.exit_code
    else:
        line, code = rpc_error_line(err, endpoint, timeout)
    sys.stderr.write(line + "\n")
    return code


def add_globals(p: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS  # set after the command too, without the subparser's defaults undoing it
    g = p.add_argument_group("global options")
    g.add_argument(
        "--endpoint", default=s, help=f"HOST:PORT of the API (env SDN_ENDPOINT, default {DEFAULT_ENDPOINT})"
    )
    g.add_argument(
        "--token", default=s, help="bearer token (env SDN_TOKEN); write --token=VALUE if it starts with '-'"
    )
    g.add_argument(
        "--token-file",
        default=s,
        metavar="PATH",
        help="use the first admin token of a controller's tokens.json (or data directory)",
    )
    g.add_argument(
        "-f", "--format", default=s, choices=["table", "json", "value"], help="output (default table)"
    )
    g.add_argument(
        "-c",
        "--column",
        dest="columns",
        action="append",
        default=s,
        metavar="FIELD",
        help="only this field (repeatable; proto field names)",
    )
    g.add_argument("--timeout", type=float, default=s, help="seconds per call (env SDN_TIMEOUT, default 30)")
    g.add_argument(
        "--ca-cert",
        default=s,
        metavar="PATH",
        help="TLS: the controller's CA certificate, DATA_DIR/pki/ca.crt (env SDN_CA_CERT)",
    )
    g.add_argument(
        "--client-cert", default=s, metavar="PATH", help="TLS client certificate (env SDN_CLIENT_CERT)"
    )
    g.add_argument("--client-key", default=s, metavar="PATH", help="its private key (env SDN_CLIENT_KEY)")


def credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS channel credentials when a CA is given (option or environment), else None (plaintext)."""

    def opt(name: str, env: str) -> str:
        return str(getattr(args, name, None) or os.environ.get(env) or "")

    ca, cert, key = (
        opt("ca_cert", "SDN_CA_CERT"),
        opt("client_cert", "SDN_CLIENT_CERT"),
        opt("client_key", "SDN_CLIENT_KEY"),
    )
    if not ca:
        if cert or key:
            raise usage_error("--client-cert/--client-key need --ca-cert (TLS)")
        return None
    if bool(cert) != bool(key):
        raise usage_error("--client-cert and --client-key go together")
    try:
        return grpc.ssl_channel_credentials(
            Path(ca).read_bytes(),
            Path(key).read_bytes() if key else None,
            Path(cert).read_bytes() if cert else None,
        )
    except OSError as e:
        raise usage_error(f"cannot read TLS file: {e}") from None


def pair(p: argparse.ArgumentParser, dest: str, on: str, off: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(on, dest=dest, action="store_const", const=True, default=None)
    g.add_argument(off, dest=dest, action="store_const", const=False)


def repeated(
    p: argparse.ArgumentParser,
    flag: str,
    dest: str,
    clear: str | None,
    metavar: str,
    type: Callable[[str], Any] = str,
    help: str = "",
) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        flag,
        dest=dest,
        action="append",
        type=type,
        default=None,
        metavar=metavar,
        help=(help + " (repeatable)").strip(),
    )
    if clear:
        g.add_argument(clear, dest=dest, action="store_const", const=[], help="clear the list")


def command(
    sub: Any, name: str, func: Callable[..., Any], kind: str = "", out: str = "one", **kw: Any
) -> Any:
    p = sub.add_parser(name, **kw)
    add_globals(p)
    p.set_defaults(func=func, kind=kind, out=out)
    return p
