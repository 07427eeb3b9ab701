"""`sdnctl loadbalancer ...` (the grammar of `openstack loadbalancer ...`), hooked into controller/cli.py's
parser by `add_commands`.

    loadbalancer create --vip-subnet-id SUBNET [--vip-address IP] [--name N] | list | show | set | delete [--cascade]
    loadbalancer status show LB                      the tree with operating statuses (-f json: a nested object)
    loadbalancer listener create LB --protocol TCP|UDP --protocol-port N [--default-pool POOL] | list | show | set | delete
    loadbalancer pool create (--loadbalancer LB | --listener L) [--protocol P] --lb-algorithm ROUND_ROBIN|SOURCE_IP | ...
    loadbalancer member create POOL --address IP --protocol-port N [--weight W] [--subnet-id SUBNET] | list POOL |
                        show POOL MEMBER | set POOL MEMBER | delete POOL MEMBER...
    loadbalancer healthmonitor create POOL --type TCP|PING|HTTP --delay S --timeout S --max-retries N
                               [--http-method M] [--url-path /P] [--expected-codes 200,202] | list | show | set | delete

LB, L(ISTENER), POOL and HM are a resource name, an id or a display name; MEMBER is a member name
("pools/P/members/M"), an id, a display name or an address (in POOL).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc
from google.protobuf import json_format

from controller.cli.common import (
    PAGE_SIZE,
    Client,
    command,
    do_delete,
    do_list,
    do_show,
    pair,
    put,
    report,
    update,
)
from controller.cli.format import EXIT_OK, CliError, dump, positive
from proto.sdn.v1 import topology_pb2 as pb

VALIDATE_HELP = "check and print what the switches would get; store and change nothing"


def _name(c: Client, kind: str, ref: str | None) -> str | None:
    """None (option not given), "" (cleared), or the resource name `ref` resolves to."""
    if ref is None:
        return None
    return str(c.resolve(kind, ref).name) if ref else ""


def member_ref(c: Client, pool: str, ref: str) -> str:
    """A member's name from its name, id, display name or address in `pool` (a pool name)."""
    if ref.startswith("pools/"):
        return ref
    members = c.list("member", parent=pool)
    for field in ("name", "display_name", "address"):
        found = [
            m for m in members if getattr(m, field) == (f"{pool}/members/{ref}" if field == "name" else ref)
        ]
        if len(found) == 1:
            return str(found[0].name)
        if found:
            raise CliError(
                "INVALID_ARGUMENT",
                f"member: {ref!r} is ambiguous in {pool}: matches "
                f"{', '.join(m.name for m in found)}; use the member name",
                "AMBIGUOUS_NAME",
            )
    raise CliError("NOT_FOUND", f"member {ref!r} not found in {pool}", "MEMBER_NOT_FOUND")


def _admin(msg: Any, a: argparse.Namespace) -> Any:
    if getattr(a, "admin_state_up", None) is not None:
        msg.admin_state_up = a.admin_state_up
    return msg


# ---------------------------------------------------------------------------------------------- commands


def lb_create(c: Client, a: argparse.Namespace) -> Any:
    lb = _admin(
        pb.LoadBalancer(
            display_name=a.display_name or "",
            description=a.description or "",
            vip_subnet=c.resolve("subnet", a.vip_subnet).name,
            vip_address=a.vip_address or "",
            tenant=a.tenant or "",
        ),
        a,
    )
    return c(
        "CreateLoadBalancer", pb.CreateLoadBalancerRequest(load_balancer=lb, load_balancer_id=a.id or "")
    )


def lb_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.LoadBalancer(name=c.resolve("load_balancer", a.ref).name)
    for field in ("display_name", "description", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "load_balancer", msg, paths)


def listener_create(c: Client, a: argparse.Namespace) -> Any:
    listener = _admin(
        pb.Listener(
            display_name=a.display_name or "",
            load_balancer=c.resolve("load_balancer", a.load_balancer).name,
            protocol=a.protocol,
            protocol_port=a.protocol_port,
            default_pool=_name(c, "pool", a.default_pool) or "",
        ),
        a,
    )
    return c("CreateListener", pb.CreateListenerRequest(listener=listener, listener_id=a.id or ""))


def listener_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.Listener(name=c.resolve("listener", a.ref).name)
    for field in ("display_name", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    put(msg, paths, "default_pool", _name(c, "pool", a.default_pool))
    return update(c, "listener", msg, paths)


def pool_create(c: Client, a: argparse.Namespace) -> Any:
    pool = _admin(
        pb.Pool(
            display_name=a.display_name or "",
            load_balancer=_name(c, "load_balancer", a.loadbalancer) or "",
            listener=_name(c, "listener", a.listener) or "",
            protocol=a.protocol or "",
            lb_algorithm=a.lb_algorithm,
        ),
        a,
    )
    return c("CreatePool", pb.CreatePoolRequest(pool=pool, pool_id=a.id or ""))


def pool_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.Pool(name=c.resolve("pool", a.ref).name)
    for field in ("display_name", "lb_algorithm", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "pool", msg, paths)


def member_create(c: Client, a: argparse.Namespace) -> Any:
    member = _admin(
        pb.Member(
            display_name=a.display_name or "",
            address=a.address,
            protocol_port=a.protocol_port,
            subnet=_name(c, "subnet", a.subnet) or "",
        ),
        a,
    )
    if a.weight is not None:
        member.weight = a.weight
    return c(
        "CreateMember",
        pb.CreateMemberRequest(parent=c.resolve("pool", a.pool).name, member=member, member_id=a.id or ""),
    )


def member_list(c: Client, a: argparse.Namespace) -> list[Any]:
    return c.list(
        "member",
        limit=a.limit or 0,
        page_size=a.page_size or PAGE_SIZE,
        parent=c.resolve("pool", a.pool).name,
    )


def member_show(c: Client, a: argparse.Namespace) -> Any:
    return c("GetMember", pb.GetMemberRequest(name=member_ref(c, c.resolve("pool", a.pool).name, a.ref)))


def member_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.Member(name=member_ref(c, c.resolve("pool", a.pool).name, a.ref))
    for field in ("display_name", "weight", "admin_state_up"):
        put(msg, paths, field, getattr(a, field))
    return update(c, "member", msg, paths)


def member_delete(c: Client, a: argparse.Namespace) -> int:
    """Like do_delete: each failure on its own line, the last one's exit code."""
    status = EXIT_OK
    for ref in a.refs:
        try:
            c("DeleteMember", pb.DeleteMemberRequest(name=member_ref(c, c.resolve("pool", a.pool).name, ref)))
        except (grpc.RpcError, CliError) as err:
            status = report(err, c.endpoint, c.timeout)
    return status


_HM_FIELDS = {
    "display_name": "display_name",
    "delay": "delay",
    "timeout": "hm_timeout",
    "max_retries": "max_retries",
    "http_method": "http_method",
    "url_path": "url_path",
    "expected_codes": "expected_codes",
    "admin_state_up": "admin_state_up",
}  # field -> option dest


def hm_create(c: Client, a: argparse.Namespace) -> Any:
    hm = pb.HealthMonitor(pool=c.resolve("pool", a.pool).name, type=a.type)
    for field, dest in _HM_FIELDS.items():
        if getattr(a, dest, None) is not None:
            setattr(hm, field, getattr(a, dest))
    return c(
        "CreateHealthMonitor", pb.CreateHealthMonitorRequest(health_monitor=hm, health_monitor_id=a.id or "")
    )


def hm_set(c: Client, a: argparse.Namespace) -> Any:
    paths: list[str] = []
    msg = pb.HealthMonitor(name=c.resolve("health_monitor", a.ref).name)
    for field, dest in _HM_FIELDS.items():
        put(msg, paths, field, getattr(a, dest))
    return update(c, "health_monitor", msg, paths)


def status_show(c: Client, a: argparse.Namespace) -> int:
    """The load balancer's tree: listeners, pools with their health monitor and members, operating statuses."""
    lb = c.resolve("load_balancer", a.ref)
    listeners = c.list("listener", load_balancer=lb.name)
    pools = c.list("pool", load_balancer=lb.name)
    tree: dict[str, Any] = {
        "name": lb.name,
        "display_name": lb.display_name,
        "vip_address": lb.vip_address,
        "operating_status": lb.operating_status,
        "listeners": [
            {
                "name": x.name,
                "protocol": x.protocol,
                "protocol_port": x.protocol_port,
                "default_pool": x.default_pool,
            }
            for x in listeners
        ],
        "pools": [],
    }
    for pool in pools:
        monitors = c.list("health_monitor", pool=pool.name)
        members = c.list("member", parent=pool.name)
        tree["pools"].append(
            {
                "name": pool.name,
                "lb_algorithm": pool.lb_algorithm,
                "operating_status": pool.operating_status,
                "health_monitor": json_format.MessageToDict(monitors[0], preserving_proto_field_name=True)
                if monitors
                else None,
                "members": [
                    {
                        "name": m.name,
                        "address": m.address,
                        "protocol_port": m.protocol_port,
                        "weight": m.weight,
                        "admin_state_up": m.admin_state_up,
                        "operating_status": m.operating_status,
                    }
                    for m in members
                ],
            }
        )
    if a.format in ("json", "yaml"):
        dump({"loadbalancer": tree}, a.format, sys.stdout)
        return EXIT_OK
    label = f" ({lb.display_name})" if lb.display_name else ""
    lines = [f"{lb.name}{label} {lb.operating_status} vip {lb.vip_address}"]
    for x in listeners:
        lines.append(f"  {x.name} {x.protocol} {x.protocol_port} -> {x.default_pool or '-'}")
    for pool, node in zip(pools, tree["pools"]):
        hm = node["health_monitor"]
        lines.append(
            f"  {pool.name} {pool.lb_algorithm} {pool.operating_status}"
            + (f" monitor {hm['name']} {hm['type']}" if hm else " (no health monitor)")
        )
        for m in node["members"]:
            down = "" if m["admin_state_up"] else " (disabled)"
            lines.append(
                f"    {m['name']} {m['address']}:{m['protocol_port']} weight {m['weight']} "
                f"{m['operating_status']}{down}"
            )
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser


def _crud(
    sub: Any, kind: str, what: str, ref: str, create: Any, set_: Any, parent: str = ""
) -> tuple[Any, Any, Any, Any]:
    """create / list / show REF / set REF / delete REF... of one kind (the Octavia client's grammar: --name).
    A health monitor's create and set take their own --timeout (the global one then goes before the command)."""
    resolve = {"conflict_handler": "resolve"} if kind == "health_monitor" else {}
    pc = command(sub, "create", create, kind, help=f"create a {what}", **resolve)
    if parent:
        pc.add_argument(parent.lower(), metavar=parent)
    pc.add_argument("--name", dest="display_name", help="display name")
    pc.add_argument("--id", help="client-chosen id ([a-z0-9-], at most 63)")
    pl = command(sub, "list", do_list, kind, out="many", help=f"list {what}s")
    pl.add_argument("--limit", type=positive, help="at most N (default: every page)")
    pl.add_argument("--page-size", type=positive, help=f"items per request (default {PAGE_SIZE})")
    pl.add_argument("--tenant", help="only this tenant's (admin)")
    command(sub, "show", do_show, kind, help=f"show a {what}").add_argument("ref", metavar=ref)
    ps = command(sub, "set", set_, kind, help=f"change a {what}", **resolve)
    ps.add_argument("ref", metavar=ref)
    ps.add_argument("--name", dest="display_name", help="new display name")
    pd = command(sub, "delete", do_delete, kind, out="none", help=f"delete {what}s")
    pd.add_argument("refs", metavar=ref, nargs="+")
    for p in (pc, ps):
        pair(p, "admin_state_up", "--enable", "--disable")
    for p in (pc, ps, pd):
        p.add_argument("--validate-only", action="store_true", help=VALIDATE_HELP)
    return pc, pl, ps, pd


def _upper(text: str) -> str:
    return text.upper()


def add_commands(sub: Any) -> None:
    """`loadbalancer ...` under the top-level command parser `sub`."""
    top = sub.add_parser(
        "loadbalancer",
        help="load balancer commands (loadbalancer [listener|pool|member|healthmonitor|status] ACTION)",
    )
    lbs = top.add_subparsers(dest="action", metavar="ACTION", required=True)
    pc, _pl, ps, pd = _crud(lbs, "load_balancer", "load balancer", "LB", lb_create, lb_set)
    pc.add_argument("--vip-subnet-id", dest="vip_subnet", required=True, metavar="SUBNET")
    pc.add_argument("--vip-address", metavar="IP", help="default: allocated from the subnet")
    pc.add_argument("--tenant", help="owner (admin: create for another tenant)")
    for p in (pc, ps):
        p.add_argument("--description", help="free text")
    pd.add_argument(
        "--cascade",
        "--force",
        dest="force",
        action="store_true",
        help="also delete its listeners, pools, members and health monitors",
    )
    status = lbs.add_parser("status", help="operating statuses").add_subparsers(
        dest="status_action", metavar="show", required=True
    )
    command(
        status,
        "show",
        status_show,
        "load_balancer",
        out="self",
        help="the load balancer's tree with operating statuses",
    ).add_argument("ref", metavar="LB")

    listeners = lbs.add_parser("listener", help="listeners: protocol and port").add_subparsers(
        dest="listener_action", metavar="ACTION", required=True
    )
    pc, pl, ps, _pd = _crud(
        listeners, "listener", "listener", "LISTENER", listener_create, listener_set, parent="LOAD_BALANCER"
    )
    pc.add_argument("--protocol", required=True, type=_upper, choices=["TCP", "UDP"])
    pc.add_argument("--protocol-port", required=True, type=positive, metavar="PORT")
    pc.add_argument("--default-pool", metavar="POOL")
    g = ps.add_mutually_exclusive_group()
    g.add_argument("--default-pool", metavar="POOL")
    g.add_argument("--no-default-pool", dest="default_pool", action="store_const", const="")
    pl.add_argument("--loadbalancer", dest="load_balancer_ref", metavar="LB")
    pl.set_defaults(func=_filtered("load_balancer", "load_balancer_ref", "load_balancer"))

    pools = lbs.add_parser("pool", help="pools: members and the algorithm").add_subparsers(
        dest="pool_action", metavar="ACTION", required=True
    )
    pc, pl, ps, _pd = _crud(pools, "pool", "pool", "POOL", pool_create, pool_set)
    g = pc.add_mutually_exclusive_group(required=True)
    g.add_argument("--loadbalancer", metavar="LB")
    g.add_argument("--listener", metavar="LISTENER", help="the pool becomes its default pool")
    pc.add_argument("--protocol", type=_upper, choices=["TCP", "UDP"], help="default: the listener's, or TCP")
    for p in (pc, ps):
        p.add_argument("--lb-algorithm", type=_upper, choices=["ROUND_ROBIN", "SOURCE_IP"], required=p is pc)
    pl.add_argument("--loadbalancer", dest="load_balancer_ref", metavar="LB")
    pl.set_defaults(func=_filtered("load_balancer", "load_balancer_ref", "load_balancer"))

    members = lbs.add_parser("member", help="pool members").add_subparsers(
        dest="member_action", metavar="ACTION", required=True
    )
    pc = command(members, "create", member_create, "member", help="add a member to a pool")
    pc.add_argument("pool", metavar="POOL")
    pc.add_argument("--name", dest="display_name")
    pc.add_argument("--id", help="client-chosen id")
    pc.add_argument("--address", required=True, metavar="IP")
    pc.add_argument("--protocol-port", required=True, type=positive, metavar="PORT")
    pc.add_argument("--subnet-id", dest="subnet", metavar="SUBNET", help="default: the VIP's subnet")
    pl = command(members, "list", member_list, "member", out="many", help="list a pool's members")
    pl.add_argument("pool", metavar="POOL")
    pl.add_argument("--limit", type=positive)
    pl.add_argument("--page-size", type=positive)
    p = command(members, "show", member_show, "member", help="show a member")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("ref", metavar="MEMBER")
    ps = command(members, "set", member_set, "member", help="change a member")
    ps.add_argument("pool", metavar="POOL")
    ps.add_argument("ref", metavar="MEMBER")
    ps.add_argument("--name", dest="display_name")
    pd = command(members, "delete", member_delete, "member", out="none", help="remove members")
    pd.add_argument("pool", metavar="POOL")
    pd.add_argument("refs", metavar="MEMBER", nargs="+")
    for p in (pc, ps):
        p.add_argument("--weight", type=int, metavar="0-256")
        pair(p, "admin_state_up", "--enable", "--disable")
    for p in (pc, ps, pd):
        p.add_argument("--validate-only", action="store_true", help=VALIDATE_HELP)

    monitors = lbs.add_parser("healthmonitor", help="health monitors of pools").add_subparsers(
        dest="hm_action", metavar="ACTION", required=True
    )
    pc, pl, ps, _pd = _crud(
        monitors, "health_monitor", "health monitor", "HM", hm_create, hm_set, parent="POOL"
    )
    pc.add_argument("--type", required=True, type=_upper, choices=["TCP", "PING", "HTTP"])
    for p in (pc, ps):
        p.add_argument("--delay", type=float, required=p is pc, metavar="SECONDS")
        p.add_argument(
            "--timeout",
            dest="hm_timeout",
            type=float,
            required=p is pc,
            metavar="SECONDS",
            help="a probe's (at most --delay); the call timeout goes before the command",
        )
        p.add_argument("--max-retries", type=int, required=p is pc, metavar="1-10")
        p.add_argument("--http-method", type=_upper, metavar="M", help="HTTP only (default GET)")
        p.add_argument("--url-path", metavar="/PATH", help="HTTP only (default /)")
        p.add_argument("--expected-codes", metavar="CODES", help='HTTP only: "200", "200,202", "200-204"')
    pl.add_argument("--pool", dest="pool_ref", metavar="POOL")
    pl.set_defaults(func=_filtered("pool", "pool_ref", "pool"))


def _filtered(kind: str, dest: str, field: str) -> Any:
    """A list command filtered by the resource named by option `dest` (resolved to its name)."""

    def run(c: Client, a: argparse.Namespace) -> list[Any]:
        filters = {"tenant": a.tenant} if a.tenant else {}
        ref = getattr(a, dest)
        if ref:
            filters[field] = c.resolve(kind, ref).name
        return c.list(a.kind, limit=a.limit or 0, page_size=a.page_size or PAGE_SIZE, **filters)

    return run
