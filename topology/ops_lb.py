"""Write operations of load balancers (Octavia's shape): validation, the VIP port, cascades, operating statuses.

Like topology.ops: each function reads the Topology and returns changes without touching it; field paths in
errors are relative to the resource ("protocol_port", "vip_address"). The northbound resolves names to ids;
references are checked here (existence, same tenant unless `admin`).

Operating statuses are the controller's: a member's is OFFLINE when it is administratively down, NO_MONITOR in
a pool without a health monitor, else what the monitor last reported (ONLINE, ERROR; a new member starts
ONLINE, as haproxy starts a server up). A pool's and a load balancer's are derived from their members' by
`settle`, which every write here ends with, so they are never stale in the store.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import netaddr

from topology import errors
from topology.model import Change, Topology
from topology.ops import _check_fields, _check_name, _ip, _new_owned_port, _stamp, named, named_ref
from topology.records import (
    DEGRADED,
    ERROR,
    LB_ALGORITHMS,
    LB_PROTOCOLS,
    MONITOR_TYPES,
    NO_MONITOR,
    OFFLINE,
    ONLINE,
    OPERATING_STATUSES,
    OWNER_LOAD_BALANCER,
    HealthMonitor,
    Listener,
    LoadBalancer,
    Member,
    Pool,
    Record,
    Subnet,
)

MAX_DESCRIPTION = 255
MAX_WEIGHT = 256
MAX_RETRIES = 10
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
_CODES_RE = re.compile(r"^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$")
#: the VIP port's request field paths, as the load balancer names them
VIP_PATHS = {
    "fixed_ips[0].ip_address": "vip_address",
    "fixed_ips[0].subnet": "vip_subnet",
    "fixed_ips[0]": "vip_address",
}

LOAD_BALANCER_MUTABLE = {"display_name", "description", "admin_state_up"}
LISTENER_MUTABLE = {"display_name", "default_pool", "admin_state_up"}
POOL_MUTABLE = {"display_name", "lb_algorithm", "admin_state_up"}
MEMBER_MUTABLE = {"display_name", "weight", "admin_state_up"}
MONITOR_MUTABLE = {
    "display_name",
    "delay",
    "timeout",
    "max_retries",
    "http_method",
    "url_path",
    "expected_codes",
    "admin_state_up",
}

# ------------------------------------------------------------------------------------------------ helpers


def _not_found(kind: str, ident: str, field_path: str) -> errors.ApiError:
    err = errors.not_found(kind, ident)
    err.violations = [(field_path, f"{kind.replace('_', ' ')} {ident!r} not found")]
    return err


def _ref(topo: Topology, kind: str, ident: str, tenant: str, admin: bool, field_path: str) -> Any:
    """A referenced record: NOT_FOUND if missing or, unless `admin` (who may use any), another tenant's."""
    rec = topo.table(kind).get(ident)
    if rec is None or (rec.tenant != tenant and not admin):
        raise _not_found(kind, ident, field_path)
    return rec


def _protocol(value: str, field_path: str = "protocol") -> str:
    p = (value or "TCP").strip().upper()
    if p not in LB_PROTOCOLS:
        raise errors.invalid(field_path, f"{value!r} is not a protocol: {' or '.join(LB_PROTOCOLS)}")
    return p


def _port(value: int, field_path: str = "protocol_port") -> int:
    if not 1 <= value <= 65535:
        raise errors.invalid(field_path, f"{value} is not a port 1-65535")
    return value


def _check_description(text: str) -> None:
    if len(text) > MAX_DESCRIPTION:
        raise errors.invalid("description", f"longer than {MAX_DESCRIPTION} characters")


def _updated(old: Any, fields: dict[str, Any], rev: int, now: float) -> Change:
    return (old.KIND, old.id, old, _stamp(dataclasses.replace(old, **fields), rev, now, False))


# ------------------------------------------------------------------------------------------------ statuses


class _View:
    """The load-balancer records as the model would hold them after `changes` (nothing is applied)."""

    def __init__(self, topo: Topology, changes: Sequence[Change]) -> None:
        self.topo = topo
        self.over: dict[tuple[str, str], Record | None] = {(k, i): new for k, i, _o, new in changes}

    def get(self, kind: str, ident: str) -> Any:
        if (kind, ident) in self.over:
            return self.over[(kind, ident)]
        return self.topo.table(kind).get(ident)

    def children(self, kind: str, index: dict[str, set[str]], parent_field: str, parent: str) -> list[Any]:
        ids = set(index.get(parent, ()))
        ids |= {i for (k, i), new in self.over.items() if k == kind and new is not None}
        out = [self.get(kind, i) for i in sorted(ids)]
        return [r for r in out if r is not None and getattr(r, parent_field) == parent]

    def monitor(self, pool_id: str) -> HealthMonitor | None:
        for (kind, _i), new in self.over.items():
            if kind == "health_monitor" and isinstance(new, HealthMonitor) and new.pool_id == pool_id:
                return new
        mid = self.topo.pool_monitor.get(pool_id)
        return None if mid is None else self.get("health_monitor", mid)  # type: ignore[no-any-return]


def member_status(member: Member, monitored: bool) -> str:
    """What a member's status must be given its admin state and whether its pool is monitored."""
    if not member.admin_state_up:
        return OFFLINE
    if not monitored:
        return NO_MONITOR
    return member.operating_status if member.operating_status in (ONLINE, ERROR) else ONLINE


def derive_status(up: bool, parts: Iterable[str]) -> str:
    """A pool's status from its enabled members' (or a load balancer's from its enabled pools'): admin down
    -> OFFLINE; every one ERROR -> ERROR; some ERROR or DEGRADED -> DEGRADED; else (NO_MONITOR, none) ONLINE."""
    if not up:
        return OFFLINE
    states = [s for s in parts if s != OFFLINE]
    if states and all(s == ERROR for s in states):
        return ERROR
    if any(s in (ERROR, DEGRADED) for s in states):
        return DEGRADED
    return ONLINE


def settle(
    topo: Topology, changes: list[Change], lb_ids: Iterable[str], rev: int, now: float
) -> list[Change]:
    """`changes` with the operating statuses of everything under the load balancers `lb_ids` made consistent
    (member statuses from admin state and monitor presence; pool and load balancer derived). A record already
    changed gets its status in that change; others get an update change."""
    view = _View(topo, changes)
    out = list(changes)
    pos = {(k, i): n for n, (k, i, _o, new) in enumerate(out) if new is not None}

    def put(rec: Any, status: str) -> Any:
        if rec.operating_status == status:
            return rec
        new = dataclasses.replace(rec, operating_status=status)
        key = (rec.KIND, rec.id)
        if key in pos:
            k, i, old, _ = out[pos[key]]
            out[pos[key]] = (k, i, old, new)
        else:
            pos[key] = len(out)
            out.append((rec.KIND, rec.id, rec, _stamp(new, rev, now, False)))
        return new

    for lb_id in sorted(set(lb_ids)):
        lb = view.get("load_balancer", lb_id)
        if lb is None:
            continue
        pool_states = []
        for pool in view.children("pool", topo.lb_pools, "load_balancer_id", lb_id):
            monitor = view.monitor(pool.id)
            monitored = monitor is not None and monitor.admin_state_up
            states = [
                put(m, member_status(m, monitored)).operating_status
                for m in view.children("member", topo.pool_members, "pool_id", pool.id)
            ]
            pool_up = pool.admin_state_up and lb.admin_state_up
            pool = put(pool, derive_status(pool_up, states if monitored else ()))
            if pool.admin_state_up:
                pool_states.append(pool.operating_status)
        put(lb, derive_status(lb.admin_state_up, pool_states))
    return out


def _lb_of(topo: Topology, kind: str, ident: str) -> str:
    rec: Any = topo.table(kind).get(ident)
    if kind == "member" and rec is not None:
        rec = topo.pools.get(rec.pool_id)
    return rec.load_balancer_id if rec is not None else ""


def set_operating_status(
    topo: Topology, kind: str, ident: str, status: str, rev: int, now: float
) -> list[Change]:
    """The health monitor's report (never a client's): a member's ONLINE / ERROR (its pool's and load
    balancer's statuses follow in the same changes), or a pool's / load balancer's status set directly.
    No changes if nothing changes (or the record is gone); an administratively down member stays OFFLINE."""
    if kind not in ("member", "pool", "load_balancer"):
        raise ValueError(f"no operating status on {kind!r}")
    if status not in OPERATING_STATUSES:
        raise ValueError(f"{status!r} is not an operating status")
    rec: Any = topo.table(kind).get(ident)
    if rec is None:
        return []
    if kind != "member":
        if rec.operating_status == status:
            return []
        return [_updated(rec, {"operating_status": status}, rev, now)]
    monitor = _View(topo, []).monitor(rec.pool_id)
    target = member_status(
        dataclasses.replace(rec, operating_status=status), monitor is not None and monitor.admin_state_up
    )
    changes = (
        [_updated(rec, {"operating_status": target}, rev, now)] if target != rec.operating_status else []
    )
    return settle(topo, changes, [_lb_of(topo, kind, ident)], rev, now)


def refresh_statuses(topo: Topology, lb_id: str, rev: int, now: float) -> list[Change]:
    """The changes making the pools' and the load balancer's statuses follow their members' (none if they
    already do)."""
    return settle(topo, [], [lb_id], rev, now)


# ------------------------------------------------------------------------------------------------ load balancers


def create_load_balancer(topo: Topology, lb: LoadBalancer, admin: bool, rev: int, now: float) -> list[Change]:
    """The load balancer and, in the same write, its VIP port (OWNER_LOAD_BALANCER, no port security, the
    given or an allocated address of the VIP subnet)."""
    _check_name(lb.display_name)
    _check_description(lb.description)
    sub: Subnet = _ref(topo, "subnet", lb.vip_subnet_id, lb.tenant, admin, "vip_subnet")
    if lb.vip_address:
        _ip(lb.vip_address, "vip_address")
    port_id = str(uuid.uuid4())
    port_change = _new_owned_port(
        topo,
        port_id,
        sub.network_id,
        lb.tenant,
        OWNER_LOAD_BALANCER,
        lb.id,
        [(sub.id, lb.vip_address)],
        VIP_PATHS,
        rev,
        now,
    )
    port = port_change[3]
    assert port is not None
    address = next(a for s, a in port.fixed_ips if s == sub.id)  # type: ignore[union-attr]
    rec = dataclasses.replace(lb, vip_address=address, vip_port_id=port_id, operating_status=ONLINE)
    return settle(
        topo, [port_change, ("load_balancer", lb.id, None, _stamp(rec, rev, now, True))], [lb.id], rev, now
    )


def update_load_balancer(
    topo: Topology, old: LoadBalancer, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, LOAD_BALANCER_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    if "description" in fields:
        _check_description(fields["description"])
    return settle(topo, [_updated(old, fields, rev, now)], [old.id], rev, now)


def delete_load_balancer(topo: Topology, old: LoadBalancer, force: bool) -> list[Change]:
    """Refused while it has listeners or pools, unless `force`: then everything under it goes in this write
    (Octavia's cascade). The VIP port goes with it."""
    listeners = sorted(topo.lb_listeners.get(old.id, ()))
    pools = sorted(topo.lb_pools.get(old.id, ()))
    if (listeners or pools) and not force:
        raise errors.failed_precondition(
            "LOAD_BALANCER_IN_USE",
            f"load balancer {named(old)} has {len(listeners)} listener(s) and {len(pools)} "
            "pool(s); delete them first or use force (cascade)",
            load_balancer=old.id,
        )
    changes: list[Change] = [("listener", i, topo.listeners[i], None) for i in listeners]
    for pid in pools:
        changes += _pool_contents(topo, pid)
        changes.append(("pool", pid, topo.pools[pid], None))
    changes.append(("load_balancer", old.id, old, None))
    port = topo.ports.get(old.vip_port_id)
    if port is not None:
        changes.append(("port", port.id, port, None))
    return changes


# ------------------------------------------------------------------------------------------------ listeners


def _check_default_pool(topo: Topology, listener: Listener, pending: Sequence[Change] = ()) -> None:
    if not listener.default_pool_id:
        return
    pool = _View(topo, pending).get("pool", listener.default_pool_id)
    if pool is None or pool.tenant != listener.tenant:
        raise _not_found("pool", listener.default_pool_id, "default_pool")
    if pool.load_balancer_id != listener.load_balancer_id:
        raise errors.invalid(
            "default_pool",
            f"pool {named(pool)} belongs to load balancer "
            f"{named_ref(topo.load_balancers, pool.load_balancer_id, pool.tenant)}, "
            f"not {named_ref(topo.load_balancers, listener.load_balancer_id, pool.tenant)}",
            reason="POOL_OF_ANOTHER_LOAD_BALANCER",
        )
    if pool.protocol != listener.protocol:
        raise errors.invalid(
            "default_pool",
            f"pool {named(pool)} is {pool.protocol}, the listener {listener.protocol}",
            reason="PROTOCOL_MISMATCH",
        )


def create_listener(topo: Topology, listener: Listener, rev: int, now: float) -> list[Change]:
    """`listener.load_balancer_id` must be an existing load balancer (the northbound checked its tenant)."""
    _check_name(listener.display_name)
    rec = dataclasses.replace(
        listener, protocol=_protocol(listener.protocol), protocol_port=_port(listener.protocol_port)
    )
    for other_id in sorted(topo.lb_listeners.get(rec.load_balancer_id, ())):
        other = topo.listeners[other_id]
        if (other.protocol, other.protocol_port) == (rec.protocol, rec.protocol_port):
            err = errors.already_exists(
                "listener",
                other.id,
                reason="LISTENER_PORT_IN_USE",
                message=f"load balancer {named_ref(topo.load_balancers, rec.load_balancer_id, rec.tenant)} "
                f"already listens on {rec.protocol} {rec.protocol_port} (listener {named(other)})",
            )
            err.violations = [("protocol_port", f"{rec.protocol} {rec.protocol_port} is in use")]
            raise err
    _check_default_pool(topo, rec)
    key = topo.listener_keys.choose()
    if key is None:
        raise errors.exhausted("LISTENER_KEYS_EXHAUSTED", "no free listener key")
    rec = dataclasses.replace(rec, key=key)
    return [("listener", rec.id, None, _stamp(rec, rev, now, True))]


def update_listener(
    topo: Topology, old: Listener, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, LISTENER_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    if "default_pool" in fields:
        fields["default_pool_id"] = fields.pop("default_pool")
    change = _updated(old, fields, rev, now)
    assert isinstance(change[3], Listener)
    _check_default_pool(topo, change[3])
    return [change]


def delete_listener(old: Listener) -> list[Change]:
    return [("listener", old.id, old, None)]


# ------------------------------------------------------------------------------------------------ pools


def create_pool(topo: Topology, pool: Pool, listener: Listener | None, rev: int, now: float) -> list[Change]:
    """With `listener` (the northbound checked its tenant), the pool becomes its default pool in the same write;
    the pool is on the listener's load balancer and of its protocol."""
    _check_name(pool.display_name)
    protocol = _protocol(pool.protocol or (listener.protocol if listener else ""))
    algorithm = (pool.lb_algorithm or "ROUND_ROBIN").strip().upper()
    if algorithm not in LB_ALGORITHMS:
        raise errors.invalid("lb_algorithm", f"{pool.lb_algorithm!r} is not {' or '.join(LB_ALGORITHMS)}")
    rec = dataclasses.replace(pool, protocol=protocol, lb_algorithm=algorithm, operating_status=ONLINE)
    changes: list[Change] = []
    if listener is not None:
        if rec.load_balancer_id != listener.load_balancer_id:
            raise errors.invalid(
                "load_balancer",
                f"listener {named(listener)} is on load balancer "
                f"{named_ref(topo.load_balancers, listener.load_balancer_id, listener.tenant)}",
                reason="POOL_OF_ANOTHER_LOAD_BALANCER",
            )
        if listener.protocol != protocol:
            raise errors.invalid(
                "protocol",
                f"{protocol} differs from listener {named(listener)}'s {listener.protocol}",
                reason="PROTOCOL_MISMATCH",
            )
        if listener.default_pool_id:
            err = errors.failed_precondition(
                "LISTENER_HAS_DEFAULT_POOL",
                f"listener {named(listener)} already has default pool "
                f"{named_ref(topo.pools, listener.default_pool_id, listener.tenant)}",
                listener=listener.id,
            )
            err.violations = [("listener", f"has default pool {listener.default_pool_id!r}")]
            raise err
    changes.append(("pool", rec.id, None, _stamp(rec, rev, now, True)))
    if listener is not None:
        changes.append(_updated(listener, {"default_pool_id": rec.id}, rev, now))
    return settle(topo, changes, [rec.load_balancer_id], rev, now)


def update_pool(topo: Topology, old: Pool, fields: dict[str, Any], rev: int, now: float) -> list[Change]:
    _check_fields(fields, POOL_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    if "lb_algorithm" in fields:
        fields["lb_algorithm"] = fields["lb_algorithm"].strip().upper()
        if fields["lb_algorithm"] not in LB_ALGORITHMS:
            raise errors.invalid(
                "lb_algorithm", f"{fields['lb_algorithm']!r} is not {' or '.join(LB_ALGORITHMS)}"
            )
    return settle(topo, [_updated(old, fields, rev, now)], [old.load_balancer_id], rev, now)


def _pool_contents(topo: Topology, pool_id: str) -> list[Change]:
    changes: list[Change] = []
    mid = topo.pool_monitor.get(pool_id)
    if mid is not None:
        changes.append(("health_monitor", mid, topo.health_monitors[mid], None))
    changes += [("member", i, topo.members[i], None) for i in sorted(topo.pool_members.get(pool_id, ()))]
    return changes


def delete_pool(topo: Topology, old: Pool, rev: int, now: float) -> list[Change]:
    """Refused while a listener sends to it; its members and monitor go with it."""
    users = sorted(
        i
        for i in topo.lb_listeners.get(old.load_balancer_id, ())
        if topo.listeners[i].default_pool_id == old.id
    )
    if users:
        raise errors.failed_precondition(
            "POOL_IN_USE",
            f"pool {named(old)} is the default pool of listener(s) {', '.join(users)}; change their "
            "default_pool first",
            pool=old.id,
            listener=users[0],
        )
    changes = [*_pool_contents(topo, old.id), ("pool", old.id, old, None)]
    return settle(topo, changes, [old.load_balancer_id], rev, now)


# ------------------------------------------------------------------------------------------------ members


def _check_weight(weight: int) -> int:
    if not 0 <= weight <= MAX_WEIGHT:
        raise errors.invalid("weight", f"{weight} is not a weight 0-{MAX_WEIGHT}")
    return weight


def create_member(topo: Topology, member: Member, admin: bool, rev: int, now: float) -> list[Change]:
    """`member.pool_id` must be an existing pool (the northbound checked its tenant); the address must be in the
    member's subnet, or the VIP subnet when it names none."""
    _check_name(member.display_name)
    addr = _ip(member.address, "address")
    _port(member.protocol_port)
    _check_weight(member.weight)
    pool = topo.pools[member.pool_id]
    if member.subnet_id:
        sub: Subnet = _ref(topo, "subnet", member.subnet_id, member.tenant, admin, "subnet")
    else:
        sub = topo.subnets[topo.load_balancers[pool.load_balancer_id].vip_subnet_id]
    if addr not in netaddr.IPNetwork(sub.cidr):
        field_path = "address"
        raise errors.invalid(
            field_path,
            f"{member.address} is outside subnet {named_ref(topo.subnets, sub.id, member.tenant)} ({sub.cidr})"
            + ("" if member.subnet_id else ": name the member's subnet"),
            reason="ADDRESS_OUTSIDE_SUBNET",
        )
    address = str(addr)
    for other_id in sorted(topo.pool_members.get(pool.id, ())):
        other = topo.members[other_id]
        if (other.address, other.protocol_port) == (address, member.protocol_port):
            err = errors.already_exists(
                "member",
                other.id,
                reason="MEMBER_EXISTS",
                message=f"pool {named(pool)} already has {address}:{member.protocol_port} "
                f"(member {named(other)})",
            )
            err.violations = [("address", f"{address}:{member.protocol_port} is already a member")]
            raise err
    rec = dataclasses.replace(member, address=address, subnet_id=member.subnet_id, operating_status=ONLINE)
    return settle(
        topo, [("member", rec.id, None, _stamp(rec, rev, now, True))], [pool.load_balancer_id], rev, now
    )


def update_member(topo: Topology, old: Member, fields: dict[str, Any], rev: int, now: float) -> list[Change]:
    _check_fields(fields, MEMBER_MUTABLE)
    if "display_name" in fields:
        _check_name(fields["display_name"])
    if "weight" in fields:
        _check_weight(fields["weight"])
    if fields.get("admin_state_up") and not old.admin_state_up:
        fields["operating_status"] = ONLINE  # back in: the monitor's next results decide
    return settle(topo, [_updated(old, fields, rev, now)], [_lb_of(topo, "member", old.id)], rev, now)


def delete_member(topo: Topology, old: Member, rev: int, now: float) -> list[Change]:
    return settle(topo, [("member", old.id, old, None)], [_lb_of(topo, "member", old.id)], rev, now)


# ------------------------------------------------------------------------------------------------ health monitors


def _check_monitor(mon: HealthMonitor, given: set[str]) -> HealthMonitor:
    """Checked and normalized; `given` are the HTTP fields the request set (refused on other types)."""
    _check_name(mon.display_name)
    for name in ("delay", "timeout"):
        value = getattr(mon, name)
        if not math.isfinite(value) or value <= 0:
            raise errors.invalid(name, f"{value} is not a positive number of seconds")
    if mon.timeout > mon.delay:
        raise errors.invalid("timeout", f"{mon.timeout} s is longer than the delay ({mon.delay} s)")
    if not 1 <= mon.max_retries <= MAX_RETRIES:
        raise errors.invalid("max_retries", f"{mon.max_retries} is not 1-{MAX_RETRIES}")
    if mon.type != "HTTP":
        extra = sorted(given & {"http_method", "url_path", "expected_codes"})
        if extra:
            raise errors.invalid(extra[0], f"only with type HTTP (not {mon.type})")
        return dataclasses.replace(mon, http_method="", url_path="", expected_codes="")
    method = (mon.http_method or "GET").strip().upper()
    if method not in HTTP_METHODS:
        raise errors.invalid("http_method", f"{mon.http_method!r} is not one of {', '.join(HTTP_METHODS)}")
    path = mon.url_path or "/"
    if not path.startswith("/") or any(c.isspace() for c in path) or len(path) > 2048:
        raise errors.invalid("url_path", f"{path!r} is not a path starting with '/' (no spaces)")
    codes = (mon.expected_codes or "200").replace(" ", "")
    if not _CODES_RE.match(codes):
        raise errors.invalid("expected_codes", f"{mon.expected_codes!r} is not like 200, 200,202 or 200-204")
    for part in codes.split(","):
        lo, _, hi = part.partition("-")
        if not 100 <= int(lo) <= int(hi or lo) <= 599:
            raise errors.invalid("expected_codes", f"{part!r} is not an HTTP status (range) within 100-599")
    return dataclasses.replace(mon, http_method=method, url_path=path, expected_codes=codes)


def create_health_monitor(
    topo: Topology, mon: HealthMonitor, given: set[str], rev: int, now: float
) -> list[Change]:
    """`mon.pool_id` must be an existing pool (the northbound checked its tenant); one monitor per pool."""
    mon_type = (mon.type or "").strip().upper()
    if mon_type not in MONITOR_TYPES:
        raise errors.invalid("type", f"{mon.type!r} is not a monitor type: {', '.join(MONITOR_TYPES)}")
    existing = topo.pool_monitor.get(mon.pool_id)
    if existing is not None:
        err = errors.already_exists(
            "health_monitor",
            existing,
            reason="HEALTH_MONITOR_EXISTS",
            message=f"pool {named_ref(topo.pools, mon.pool_id, mon.tenant)} already has health monitor "
            f"{named_ref(topo.health_monitors, existing, mon.tenant)}",
        )
        err.violations = [("pool", f"has health monitor {existing!r}")]
        raise err
    rec = _check_monitor(dataclasses.replace(mon, type=mon_type), given)
    return settle(
        topo,
        [("health_monitor", rec.id, None, _stamp(rec, rev, now, True))],
        [topo.pools[rec.pool_id].load_balancer_id],
        rev,
        now,
    )


def update_health_monitor(
    topo: Topology, old: HealthMonitor, fields: dict[str, Any], rev: int, now: float
) -> list[Change]:
    _check_fields(fields, MONITOR_MUTABLE)
    new = _check_monitor(dataclasses.replace(old, **fields), set(fields))
    return settle(
        topo,
        [("health_monitor", old.id, old, _stamp(new, rev, now, False))],
        [topo.pools[old.pool_id].load_balancer_id],
        rev,
        now,
    )


def delete_health_monitor(topo: Topology, old: HealthMonitor, rev: int, now: float) -> list[Change]:
    """Its pool's members go back to NO_MONITOR."""
    return settle(
        topo, [("health_monitor", old.id, old, None)], [topo.pools[old.pool_id].load_balancer_id], rev, now
    )
