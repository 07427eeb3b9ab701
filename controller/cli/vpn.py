"""`sdnctl vpn ...` (the grammar of `openstack vpn ...`, with this CLI's words: create / list / show / set (or
update) / delete), hooked into controller/cli/sdnctl.py's parser by `add_commands`.

    vpn ike-policy create NAME [--ike-version v1|v2] [--encryption-algorithm A] [--auth-algorithm A] [--pfs G]
                              [--lifetime SECONDS] | list | show P | set P ... | delete P...
    vpn ipsec-policy create NAME [--encryption-algorithm A] [--auth-algorithm A] [--pfs G] [--lifetime SECONDS]
                              | list | show | set | delete
    vpn service create NAME --router ROUTER [--disable] | list [--router ROUTER] | show | set | delete
    vpn endpoint-group create NAME --type subnet|cidr --value V [--value V...] | list | show | set | delete
    vpn ipsec-site-connection create NAME --vpnservice S --ikepolicy P --ipsecpolicy P
                              --local-endpoint-group G --peer-endpoint-group G --peer-address IP
                              (--psk KEY | --psk-file PATH) [--peer-id ID] [--local-id ID] [--mtu N]
                              [--dpd-action A] [--dpd-interval S] [--dpd-timeout S] [--initiator I]
                              | list [--vpnservice S] | show | set | delete

References are a resource name ("vpnServices/x"), an id, or a display name; endpoint group values of type subnet
are subnet references, of type cidr CIDRs. The pre-shared key is never printed: the API does not return it (psk is
empty, psk_set says one is stored). --psk-file reads it from a file ("-": standard input), keeping it out of the
shell's history and the process list.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controller.cli.common import (
    PAGE_SIZE,
    Client,
    command,
    do_delete,
    do_list,
    do_show,
    pair,
    put,
    update,
)
from controller.cli.format import positive, usage_error
from proto.sdn.v1 import topology_pb2 as pb

VALIDATE_HELP = "check and print what the switches would get; store and change nothing"
ENCRYPTION = "aes-128 (default), aes-192, aes-256, aes-128-ctr, ..., aes-128-gcm-16, aes-256-gcm-16"
PFS = "group14 (default), group15, group16, group19, group20, group21"


def _lower(text: str) -> str:
    return text.strip().lower()


def _psk(a: argparse.Namespace) -> str | None:
    """The key from --psk or --psk-file (its first line, without the line end), None if neither."""
    if getattr(a, "psk_file", None) is None:
        return getattr(a, "psk", None)
    try:
        if a.psk_file == "-":
            text = sys.stdin.readline()
        else:
            with open(a.psk_file, encoding="utf-8") as f:
                text = f.readline()
    except OSError as e:
        raise usage_error(f"cannot read the PSK file: {e.strerror}") from None
    return text.rstrip("\r\n")


# ---------------------------------------------------------------------------------------------- policies

_POLICY_FIELDS = ("encryption_algorithm", "auth_algorithm", "pfs", "lifetime")


def ike_create(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.IkePolicy(display_name=a.display_name, description=a.description or "", tenant=a.tenant or "")
    for field in ("ike_version", "phase1_negotiation_mode", *_POLICY_FIELDS):
        if getattr(a, field) is not None:
            setattr(msg, field, getattr(a, field))
    return c("CreateIkePolicy", pb.CreateIkePolicyRequest(ike_policy=msg, ike_policy_id=a.id or ""))


def ike_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.IkePolicy(name=c.resolve("ike_policy", a.ref).name)
    for field in ("display_name", "description", "ike_version", "phase1_negotiation_mode", *_POLICY_FIELDS):
        put(msg, paths, field, getattr(a, field))
    return update(c, "ike_policy", msg, paths)


def ipsec_create(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.IpsecPolicy(display_name=a.display_name, description=a.description or "", tenant=a.tenant or "")
    for field in ("transform_protocol", "encapsulation_mode", *_POLICY_FIELDS):
        if getattr(a, field) is not None:
            setattr(msg, field, getattr(a, field))
    return c("CreateIpsecPolicy", pb.CreateIpsecPolicyRequest(ipsec_policy=msg, ipsec_policy_id=a.id or ""))


def ipsec_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.IpsecPolicy(name=c.resolve("ipsec_policy", a.ref).name)
    for field in ("display_name", "description", "transform_protocol", "encapsulation_mode", *_POLICY_FIELDS):
        put(msg, paths, field, getattr(a, field))
    return update(c, "ipsec_policy", msg, paths)


# ---------------------------------------------------------------------------------------------- services, groups


def service_create(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.VpnService(
        display_name=a.display_name,
        description=a.description or "",
        tenant=a.tenant or "",
        router=c.resolve("router", a.router).name,
    )
    if a.admin_state_up is not None:
        msg.admin_state_up = a.admin_state_up
    return c("CreateVpnService", pb.CreateVpnServiceRequest(vpn_service=msg, vpn_service_id=a.id or ""))


def service_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.VpnService(name=c.resolve("vpn_service", a.ref).name)
    for field in ("display_name", "description", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "vpn_service", msg, paths)


def group_create(c: Client, a: argparse.Namespace) -> Any:
    values = a.values or []
    if a.type == "subnet":
        values = [c.resolve("subnet", v).name for v in values]
    msg = pb.VpnEndpointGroup(
        display_name=a.display_name,
        description=a.description or "",
        tenant=a.tenant or "",
        type=a.type,
        endpoints=values,
    )
    return c(
        "CreateVpnEndpointGroup",
        pb.CreateVpnEndpointGroupRequest(vpn_endpoint_group=msg, vpn_endpoint_group_id=a.id or ""),
    )


def group_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.VpnEndpointGroup(name=c.resolve("vpn_endpoint_group", a.ref).name)
    for field in ("display_name", "description"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "vpn_endpoint_group", msg, paths)


# ---------------------------------------------------------------------------------------------- connections

_CONN_SCALARS = ("peer_address", "peer_id", "local_id", "mtu", "dpd_action", "dpd_interval", "dpd_timeout")


def conn_create(c: Client, a: argparse.Namespace) -> Any:
    psk = _psk(a)
    if psk is None:
        raise usage_error("a pre-shared key is required: --psk KEY or --psk-file PATH")
    msg = pb.IpsecSiteConnection(
        display_name=a.display_name,
        description=a.description or "",
        vpnservice=c.resolve("vpn_service", a.vpnservice).name,
        ikepolicy=c.resolve("ike_policy", a.ikepolicy).name,
        ipsecpolicy=c.resolve("ipsec_policy", a.ipsecpolicy).name,
        local_ep_group=c.resolve("vpn_endpoint_group", a.local_ep_group).name,
        peer_ep_group=c.resolve("vpn_endpoint_group", a.peer_ep_group).name,
        psk=psk,
    )
    for field in (*_CONN_SCALARS, "initiator", "admin_state_up"):
        if getattr(a, field) is not None:
            setattr(msg, field, getattr(a, field))
    return c(
        "CreateIpsecSiteConnection",
        pb.CreateIpsecSiteConnectionRequest(ipsec_site_connection=msg, ipsec_site_connection_id=a.id or ""),
    )


def conn_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.IpsecSiteConnection(name=c.resolve("ipsec_site_connection", a.ref).name)
    for field in ("display_name", "description", *_CONN_SCALARS, "initiator", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "psk", _psk(a))
    for field in ("local_ep_group", "peer_ep_group"):
        ref = getattr(a, field)
        put(msg, paths, field, None if ref is None else c.resolve("vpn_endpoint_group", ref).name)
    return update(c, "ipsec_site_connection", msg, paths)


# ---------------------------------------------------------------------------------------------- parser


def _filtered(kind: str, dest: str, field: str) -> Any:
    """A list command filtered by the resource named by option `dest` (resolved to its name)."""

    def run(c: Client, a: argparse.Namespace) -> list[Any]:
        ref = getattr(a, dest)
        if not ref:
            return do_list(c, a)
        filters = {"tenant": a.tenant} if a.tenant else {}
        filters[field] = c.resolve(kind, ref).name
        return c.list(a.kind, limit=a.limit or 0, page_size=a.page_size or PAGE_SIZE, **filters)

    return run


def _crud(sub: Any, kind: str, what: str, ref: str, create: Any, set_: Any) -> tuple[Any, Any, Any, Any]:
    """create NAME / list / show REF / set (update) REF / delete REF... of one kind."""
    pc = command(sub, "create", create, kind, help=f"create a {what}")
    pc.add_argument("display_name", metavar="NAME", nargs="?", default="", help="display name")
    pc.add_argument("--id", help="client-chosen id ([a-z0-9-], at most 63)")
    pl = command(sub, "list", do_list, kind, out="many", help=f"list {what}s")
    pl.add_argument("--limit", type=positive, help="at most N (default: every page)")
    pl.add_argument("--page-size", type=positive, help=f"items per request (default {PAGE_SIZE})")
    pl.add_argument("--tenant", help="only this tenant's (admin)")
    command(sub, "show", do_show, kind, help=f"show a {what}").add_argument("ref", metavar=ref)
    ps = command(sub, "set", set_, kind, aliases=["update"], help=f"change a {what}")
    ps.add_argument("ref", metavar=ref)
    ps.add_argument("--name", dest="display_name", help="new display name")
    pd = command(sub, "delete", do_delete, kind, out="none", help=f"delete {what}s")
    pd.add_argument("refs", metavar=ref, nargs="+")
    if kind != "ipsec_site_connection":
        pc.add_argument("--tenant", help="owner (admin: create for another tenant)")
    for p in (pc, ps):
        p.add_argument("--description", help="free text")
    for p in (pc, ps, pd):
        p.add_argument("--validate-only", action="store_true", help=VALIDATE_HELP)
    return pc, pl, ps, pd


def _policy_options(p: Any) -> None:
    p.add_argument("--encryption-algorithm", type=_lower, metavar="A", help=ENCRYPTION)
    p.add_argument(
        "--auth-algorithm", type=_lower, metavar="A", help="sha256 (default), sha1, sha384, sha512"
    )
    p.add_argument("--pfs", type=_lower, metavar="GROUP", help=PFS)
    p.add_argument("--lifetime", type=positive, metavar="SECONDS", help="60-86400 (default 3600)")


def add_commands(sub: Any) -> None:
    """`vpn ...` under the top-level command parser `sub`."""
    top = sub.add_parser(
        "vpn",
        help="VPNaaS commands (vpn ike-policy|ipsec-policy|service|endpoint-group|ipsec-site-connection ACTION)",
    )
    kinds = top.add_subparsers(dest="vpn", metavar="RESOURCE", required=True)

    def actions(name: str, help: str) -> Any:
        return kinds.add_parser(name, help=help).add_subparsers(
            dest="action", metavar="ACTION", required=True
        )

    ike = actions("ike-policy", "IKE policies: phase 1 (the IKE SA)")
    pc, _pl, ps, _pd = _crud(ike, "ike_policy", "IKE policy", "IKE_POLICY", ike_create, ike_set)
    for p in (pc, ps):
        p.add_argument("--ike-version", type=_lower, choices=["v1", "v2"], help="default v2")
        p.add_argument("--phase1-negotiation-mode", type=_lower, metavar="MODE", help="main (the only one)")
        _policy_options(p)

    ipsec = actions("ipsec-policy", "IPsec policies: phase 2 (the ESP tunnel)")
    pc, _pl, ps, _pd = _crud(ipsec, "ipsec_policy", "IPsec policy", "IPSEC_POLICY", ipsec_create, ipsec_set)
    for p in (pc, ps):
        p.add_argument("--transform-protocol", type=_lower, metavar="P", help="esp (the only one)")
        p.add_argument("--encapsulation-mode", type=_lower, metavar="M", help="tunnel (the only one)")
        _policy_options(p)

    services = actions("service", "VPN services: a router with an external gateway")
    pc, pl, ps, _pd = _crud(services, "vpn_service", "VPN service", "SERVICE", service_create, service_set)
    pc.add_argument("--router", required=True, metavar="ROUTER")
    for p in (pc, ps):
        pair(p, "admin_state_up", "--enable", "--disable")
    pl.add_argument("--router", dest="router_ref", metavar="ROUTER", help="only this router's")
    pl.set_defaults(func=_filtered("router", "router_ref", "router"))

    groups = actions("endpoint-group", "endpoint groups: local subnets or peer CIDRs")
    pc, _pl, _ps, _pd = _crud(
        groups, "vpn_endpoint_group", "endpoint group", "GROUP", group_create, group_set
    )
    pc.add_argument("--type", required=True, type=_lower, choices=["subnet", "cidr"])
    pc.add_argument(
        "--value",
        dest="values",
        action="append",
        required=True,
        metavar="V",
        help="a subnet (type subnet) or a CIDR (type cidr) (repeatable)",
    )

    conns = actions("ipsec-site-connection", "IPsec site connections: tunnels to peer gateways")
    pc, pl, ps, _pd = _crud(
        conns, "ipsec_site_connection", "IPsec site connection", "CONNECTION", conn_create, conn_set
    )
    for option, dest, metavar in (
        ("--vpnservice", "vpnservice", "SERVICE"),
        ("--ikepolicy", "ikepolicy", "IKE_POLICY"),
        ("--ipsecpolicy", "ipsecpolicy", "IPSEC_POLICY"),
    ):
        pc.add_argument(option, dest=dest, required=True, metavar=metavar)
    for p in (pc, ps):
        required = p is pc
        p.add_argument("--local-endpoint-group", dest="local_ep_group", required=required, metavar="GROUP")
        p.add_argument("--peer-endpoint-group", dest="peer_ep_group", required=required, metavar="GROUP")
        p.add_argument("--peer-address", required=required, metavar="IP")
        p.add_argument("--peer-id", metavar="ID", help="the peer's IKE identity (default: its address)")
        p.add_argument("--local-id", metavar="ID", help="ours (default: the router's gateway address)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--psk", metavar="KEY", help="the pre-shared key (write-only: never shown)")
        g.add_argument(
            "--psk-file", metavar="PATH", help="read the key from the file's first line ('-': stdin)"
        )
        p.add_argument("--mtu", type=positive, metavar="N", help="68-65535 (default 1500)")
        p.add_argument(
            "--dpd-action", type=_lower, choices=["hold", "clear", "restart", "disabled"], help="default hold"
        )
        p.add_argument("--dpd-interval", type=positive, metavar="SECONDS", help="default 30")
        p.add_argument("--dpd-timeout", type=positive, metavar="SECONDS", help="default 120 (> interval)")
        p.add_argument(
            "--initiator",
            type=_lower,
            choices=["bi-directional", "response-only"],
            help="default bi-directional",
        )
        pair(p, "admin_state_up", "--enable", "--disable")
    pl.add_argument("--vpnservice", dest="service_ref", metavar="SERVICE", help="only this service's")
    pl.set_defaults(func=_filtered("vpn_service", "service_ref", "vpnservice"))
