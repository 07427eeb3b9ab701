"""What the dashboard shows, as JSON-ready dicts: pure reads of the model and the dataplane, scoped to a
principal with the northbound's visibility rules. No HTTP here (see server.py)."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping
from typing import Any

import netaddr

from apps import ids, owners
from controller.api.auth import Principal
from controller.api.resources import visible as _visible
from controller.debug import first_hop
from flows import pipeline
from flows.flow import Flow, Group
from flows.format import format_actions, format_group, format_match
from topology.errors import ApiError
from topology.model import Topology
from topology.records import Chassis, Network, Port, Record, to_dict
from topology.state import State

log = logging.getLogger(__name__)

#: layers of the topology drawing, top to bottom
LAYERS = ("tenant", "router", "network", "port", "chassis")
#: names a per-flow counter source may have on a SwitchSync (engine) or on the Dataplane (per chassis);
#: the first one present is used. Expected to return {Flow (or anything with .key()): (packets, bytes)}.
COUNTER_METHODS = ("flow_stats", "flow_counters", "counters")
PORTS_PER_ROW = 14
BESIDE_GAP = 1.5  # slots between nodes labelled beside themselves (tenants, routers, networks)
MAX_PORT_ROWS = 6
COUNTER_TIMEOUT_S = 3.0  # a live dump for the counters; the view shows "—" if the switch does not answer
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
BROADCAST = "ff:ff:ff:ff:ff:ff"


class BadRequest(ValueError):
    """A query the dashboard cannot answer as asked (HTTP 400)."""


class NotFound(LookupError):
    """An object that does not exist or that the principal may not see (HTTP 404)."""


# ------------------------------------------------------------------------------------------------ topology


def _label(rec: Record) -> str:
    if isinstance(rec, Port):
        ips = [a for _, a in rec.fixed_ips]
        return f"{rec.display_name or rec.id}" + (f" {ips[0]}" if ips else "")
    if isinstance(rec, Network):
        return rec.display_name or rec.id
    return rec.id


def _details(rec: Any, topo: Any, p: Principal) -> dict[str, Any]:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in to_dict(rec).items()}
    if isinstance(rec, Network):
        d["subnets"] = [
            {"id": s.id, "cidr": s.cidr, "gateway_ip": s.gateway_ip, "enable_dhcp": s.enable_dhcp}
            for s in topo.subnets_of(rec.id)
            if _visible(p, s)
        ]
        d["ports"] = len([x for x in topo.ports_of(rec.id) if _visible(p, x)])
    if isinstance(rec, Port):
        d["fixed_ips"] = [{"subnet": s, "ip_address": a} for s, a in rec.fixed_ips]
        d["allowed_address_pairs"] = [
            {"ip_address": a, "mac_address": m} for a, m in rec.allowed_address_pairs
        ]
    if isinstance(rec, Chassis):
        d["bridge_mappings"] = {k: v for k, v in rec.bridge_mappings}
        d["ports"] = len(topo.ports_on_chassis(rec.id))
    return d


def topology(state: State, p: Principal, dataplane: Any = None) -> dict[str, Any]:
    """Nodes (tenants, routers, networks, ports, chassis) with a layered layout in [0, 1]², and edges
    tenant–network, tenant–router, router–network, network–port, port–chassis; only what `p` may see
    (chassis: admins)."""
    with state.lock:
        topo = state.topology
        revision = state.revision
        networks = sorted(
            (n for n in topo.networks.values() if _visible(p, n)), key=lambda n: (n.tenant, n.id)
        )
        ports = [x for x in topo.ports.values() if _visible(p, x)]
        chassis = sorted((c for c in topo.chassis.values() if _visible(p, c)), key=lambda c: c.id)
        routers: list[Any] = sorted(
            (r for r in getattr(topo, "routers", {}).values() if _visible(p, r)),
            key=lambda r: (r.tenant, r.id),
        )
        records: list[Any] = [*networks, *ports, *chassis, *routers]
        details = {f"{r.KIND}:{r.id}": _details(r, topo, p) for r in records}
        subnets = sum(1 for s in topo.subnets.values() if _visible(p, s))
        # router id -> networks it has an interface on (its neighbours in the model's routed graph; the
        # gateway network is added below)
        router_nets: dict[str, set[str]] = {
            r.id: {ident for _kind, ident in topo.routed.adj.get(("router", r.id), ())} for r in routers
        }
    status = chassis_status(dataplane) if dataplane is not None and p.admin else {}
    tenants = sorted({r.tenant for r in (*networks, *ports, *routers) if r.tenant and p.can_see(r.tenant)})
    net_order = {n.id: i for i, n in enumerate(networks)}
    ports.sort(key=lambda x: (net_order.get(x.network_id, 1 << 30), _natural(x.id)))

    # layered layout in slots: ports evenly, each network over its ports, each router over its networks,
    # each tenant over its networks and routers, each chassis under the ports bound to it; a layer keeps
    # its order and one slot between nodes. Not a networkx layout: multipartite_layout spaces each layer by
    # index alone (a network would not sit over its ports) and the spring layouts move between refreshes
    # many ports: zig-zag them over PORT_ROWS sub-rows so the drawing stays about as wide as a screen
    port_rows = min(MAX_PORT_ROWS, max(1, -(-len(ports) // PORTS_PER_ROW)))
    port_slot = {x.id: float(i // port_rows) for i, x in enumerate(ports)}
    port_row = {x.id: i % port_rows for i, x in enumerate(ports)}
    net_ports: dict[str, list[float]] = {}
    for x in ports:
        net_ports.setdefault(x.network_id, []).append(port_slot[x.id])
    net_slot = dict(
        zip(
            [n.id for n in networks],
            _place([_mean(net_ports.get(n.id)) for n in networks], BESIDE_GAP),
            strict=True,
        )
    )
    linked = {
        r.id: [net_slot[n] for n in router_nets[r.id] | {r.gateway_network_id} if n in net_slot]
        for r in routers
    }
    routers.sort(key=lambda r: (_mean(linked[r.id]) or 0.0, r.id))
    router_slot = dict(
        zip([r.id for r in routers], _place([_mean(linked[r.id]) for r in routers], BESIDE_GAP), strict=True)
    )
    tenant_slot = dict(
        zip(
            tenants,
            _place(
                [
                    _mean(
                        [net_slot[n.id] for n in networks if n.tenant == t]
                        + [router_slot[r.id] for r in routers if r.tenant == t]
                    )
                    for t in tenants
                ],
                BESIDE_GAP,
            ),
            strict=True,
        )
    )
    bound = {c.id: [port_slot[x.id] for x in ports if x.binding_chassis == c.id] for c in chassis}
    chassis.sort(key=lambda c: (_mean(bound[c.id]) if bound[c.id] else float(len(ports)), c.id))
    chassis_slot = dict(
        zip([c.id for c in chassis], _place([_mean(bound[c.id]) for c in chassis], 1.2), strict=True)
    )
    width = 1 + max(
        [
            0.0,
            *port_slot.values(),
            *net_slot.values(),
            *tenant_slot.values(),
            *chassis_slot.values(),
            *router_slot.values(),
        ]
    )
    # rows that can hold something: routers once there are some, chassis for admins
    layers = [k for k in LAYERS if (k != "router" or routers) and (k != "chassis" or p.admin)]
    nodes: list[dict[str, Any]] = []

    def add(kind: str, ident: str, label: str, slot: float, **extra: Any) -> None:
        nodes.append(
            {
                "id": f"{kind}:{ident}",
                "kind": kind,
                "name": ident,
                "label": label,
                "x": (slot + 0.5) / width,
                "y": layers.index(kind) / (len(layers) - 1),
                **extra,
            }
        )

    for t in tenants:
        add(
            "tenant",
            t,
            t,
            tenant_slot[t],
            details={
                "tenant": t,
                "networks": sum(n.tenant == t for n in networks),
                "routers": sum(r.tenant == t for r in routers),
                "ports": sum(x.tenant == t for x in ports),
            },
        )
    for r in routers:
        add(
            "router",
            r.id,
            r.display_name or r.id,
            router_slot[r.id],
            tenant=r.tenant,
            details={**details[f"router:{r.id}"], "interfaces": sorted(router_nets[r.id])},
        )
    for n in networks:
        add("network", n.id, _label(n), net_slot[n.id], tenant=n.tenant, details=details[f"network:{n.id}"])
    for x in ports:
        add(
            "port",
            x.id,
            _label(x),
            port_slot[x.id],
            tenant=x.tenant,
            status=x.status,
            row=port_row[x.id],
            details=details[f"port:{x.id}"],
        )
    for c in chassis:
        st = status.get(c.id, {})
        add(
            "chassis",
            c.id,
            c.id,
            chassis_slot[c.id],
            connected=st.get("connected", False),
            details={**details[f"chassis:{c.id}"], **st},
        )
    ids_ = {n["id"] for n in nodes}
    edges = []
    for n in networks:
        if f"tenant:{n.tenant}" in ids_:
            edges.append({"source": f"tenant:{n.tenant}", "target": f"network:{n.id}", "kind": "owns"})
    for r in routers:
        if f"tenant:{r.tenant}" in ids_:
            edges.append({"source": f"tenant:{r.tenant}", "target": f"router:{r.id}", "kind": "owns"})
        for net_id in sorted(router_nets[r.id]):
            if f"network:{net_id}" in ids_:
                edges.append({"source": f"router:{r.id}", "target": f"network:{net_id}", "kind": "routes"})
        if r.gateway_network_id and f"network:{r.gateway_network_id}" in ids_:
            edges.append(
                {"source": f"router:{r.id}", "target": f"network:{r.gateway_network_id}", "kind": "gateway"}
            )
    for x in ports:
        if f"network:{x.network_id}" in ids_:
            edges.append({"source": f"network:{x.network_id}", "target": f"port:{x.id}", "kind": "attached"})
        if x.binding_chassis and f"chassis:{x.binding_chassis}" in ids_:
            edges.append(
                {"source": f"port:{x.id}", "target": f"chassis:{x.binding_chassis}", "kind": "bound"}
            )
    return {
        "revision": revision,
        "nodes": nodes,
        "edges": edges,
        "slots": width,
        "layers": layers,
        "port_rows": port_rows,
        "counts": {
            "tenants": len(tenants),
            "routers": len(routers),
            "networks": len(networks),
            "subnets": subnets,
            "ports": len(ports),
            "chassis": len(chassis),
        },
    }


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key where vm2 comes before vm10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def _place(desired: list[float | None], gap: float = 1.0) -> list[float]:
    """Slots for one layer, in order: as near the desired slot as the spacing allows (None: next)."""
    out: list[float] = []
    for d in desired:
        lo = out[-1] + gap if out else 0.0
        out.append(max(lo, d) if d is not None else lo)
    return out


# ------------------------------------------------------------------------------------------------ chassis


def chassis_status(dataplane: Any) -> dict[str, dict[str, Any]]:
    """Per chassis: switch connected, OVSDB facts known, realized revision, desired / installed flows."""
    out = {}
    for plane in list(dataplane.planes.values()):
        eng = plane.engine
        out[plane.chassis_id] = {
            "connected": bool(getattr(eng, "connected", False)),
            "ovsdb_ready": plane.runtime is not None,
            "realized_revision": plane.realized_model_revision(),
            "desired_flows": len(dataplane.compiler.desired(plane.chassis_id)),
            "installed_flows": len(eng.installed()) if eng is not None else 0,
            "drift_repairs": plane.drift_repairs,
            "compile_divergences": plane.compile_divergences,  # the self-check found incremental != full
        }
    return out


def chassis_list(state: State, dataplane: Any) -> list[dict[str, Any]]:
    status = chassis_status(dataplane) if dataplane is not None else {}
    with state.lock:
        chassis = sorted(state.topology.chassis.values(), key=lambda c: c.id)
    return [
        {
            "id": c.id,
            "tunnel_ip": c.tunnel_ip,
            "datapath_id": f"{c.datapath_id:#x}",
            **status.get(c.id, {"connected": False}),
        }
        for c in chassis
    ]


def _counter_source(dataplane: Any, chassis_id: str, engine: Any) -> tuple[str, Any] | None:
    """(name, callable returning the counters) of the first per-flow stats method found, or None."""
    for name in COUNTER_METHODS:
        fn = getattr(engine, name, None)
        if callable(fn):
            if "timeout" in inspect.signature(fn).parameters:
                return f"SwitchSync.{name}", lambda fn=fn: fn(timeout=COUNTER_TIMEOUT_S)
            return f"SwitchSync.{name}", fn
        fn = getattr(dataplane, name, None)
        if callable(fn):
            return f"Dataplane.{name}", lambda fn=fn: fn(chassis_id)
    return None


def _normalize_counters(raw: Any) -> dict[Any, tuple[int, int]]:
    """{flow key (stage, priority, match): (packets, bytes)} from whatever shape the source returns."""
    out: dict[Any, tuple[int, int]] = {}
    if not isinstance(raw, Mapping):
        return out
    for k, v in raw.items():
        key = k.key() if hasattr(k, "key") and callable(k.key) else getattr(k, "key", k)
        if isinstance(v, tuple | list) and len(v) >= 2:
            out[key] = (int(v[0]), int(v[1]))
        else:
            pk = getattr(v, "packets", getattr(v, "n_packets", getattr(v, "packet_count", None)))
            by = getattr(v, "bytes", getattr(v, "n_bytes", getattr(v, "byte_count", None)))
            if pk is not None and by is not None:
                out[key] = (int(pk), int(by))
    return out


def flow_tables(state: State, dataplane: Any, chassis_id: str) -> dict[str, Any]:
    """One chassis's flows by stage (in pipeline order): installed ∪ desired, each with its priority, match,
    actions, owner, state (installed / pending = desired not yet installed / stale = installed, not desired)
    and counters where a per-flow stats source exists (else None: shown as "—")."""
    with state.lock:
        topo = state.topology
        if chassis_id not in topo.chassis:
            raise NotFound(f"chassis {chassis_id!r}")
        registry = ids.registry_for(owners.model_owners(topo))
        plane = dataplane.planes.get(chassis_id)
        desired = dataplane.compiler.desired(chassis_id)
    engine = plane.engine if plane is not None else None
    installed = engine.installed() if engine is not None else frozenset()
    counters: dict[Any, tuple[int, int]] = {}
    connected = bool(getattr(engine, "connected", False))
    source = _counter_source(dataplane, chassis_id, engine) if connected else None
    counter_note = (
        "no per-flow counter source in this build: counters show —"
        if connected
        else "switch not connected: counters show —"
    )
    if source is not None:
        try:
            counters = _normalize_counters(source[1]())
            counter_note = f"counters from the switch ({source[0]})"
        except Exception as err:  # noqa: BLE001 - a dump that fails (switch away) must not break the view
            log.warning("flow counters of %s: %s", chassis_id, err)
            counter_note = f"counters unavailable: {err}"
    want = {i for i in desired if isinstance(i, Flow)}
    have = {i for i in installed if isinstance(i, Flow)}
    stages: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pipeline.STAGES}
    for f in sorted(want | have, key=lambda f: (f.table, -f.priority, format_match(f))):
        owner = registry.lookup(f.cookie)
        c = counters.get(f.key())
        stages[f.stage].append(
            {
                "priority": f.priority,
                "match": format_match(f) or "(any)",
                "actions": format_actions(f.actions),
                "cookie": f"{f.cookie:#x}",
                "app": owner[0] if owner else "",
                "owner": owner[1] if owner else "",
                "state": "installed" if f in have and f in want else "pending" if f in want else "stale",
                "packets": c[0] if c else None,
                "bytes": c[1] if c else None,
            }
        )
    groups = sorted({i for i in (*desired, *installed) if isinstance(i, Group)}, key=lambda g: g.group_id)
    return {
        "chassis": chassis_id,
        "connected": connected,
        "counters": bool(counters),
        "counter_note": counter_note,
        "desired": len(want),
        "installed": len(have),
        "stages": [
            {"name": s.name, "table": s.table, "doc": s.doc, "flows": stages[s.name]} for s in pipeline.STAGES
        ],
        "groups": [format_group(g).strip() for g in groups],
    }


# ------------------------------------------------------------------------------------------------ trace


def _ipv4(rec: Port) -> str:
    for _, addr in rec.fixed_ips:
        if netaddr.IPAddress(addr).version == 4:
            return addr
    return ""


def trace_headers(state: State, p: Principal, form: Mapping[str, str]) -> tuple[str, dict[str, Any], str]:
    """(source port id, packet headers, what the destination was resolved to) from the trace form:
    src = port id; dst = port id, MAC or IPv4 address; proto = icmp|tcp|udp|arp; dport = L4 port."""
    src_id = (form.get("src") or "").strip()
    dst = (form.get("dst") or "").strip()
    proto = (form.get("proto") or "icmp").strip().lower()
    if not src_id:
        raise BadRequest("choose a source port")
    if not dst:
        raise BadRequest("give a destination: a port, a MAC or an IPv4 address")
    if proto not in ("icmp", "tcp", "udp", "arp"):
        raise BadRequest(f"protocol {proto!r}: one of icmp, tcp, udp, arp")
    dport = 0
    if proto in ("tcp", "udp"):
        try:
            dport = int(form.get("dport") or 80)
        except ValueError:
            raise BadRequest("destination port must be a number") from None
        if not 0 < dport < 65536:
            raise BadRequest("destination port must be 1..65535")
    with state.lock:
        topo = state.topology
        src = topo.ports.get(src_id)
        if src is None or not _visible(p, src):
            raise NotFound(f"port {src_id!r}")
        src_ip = _ipv4(src)
        dst_mac, dst_ip, resolved = "", "", ""
        port = topo.ports.get(dst)
        if port is not None and _visible(p, port):
            dst_mac, dst_ip, resolved = port.mac, _ipv4(port), f"port {port.id}"
        elif _MAC.match(dst):
            dst_mac = dst.lower()
            owner = topo.ports.get(topo.macs.get(dst_mac, ""))
            dst_ip = _ipv4(owner) if owner is not None and _visible(p, owner) else ""
            resolved = f"MAC {dst_mac}" + (
                f" (port {owner.id})" if owner is not None and _visible(p, owner) else ""
            )
        else:
            try:
                dst_ip = str(netaddr.IPAddress(dst, 4))
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise BadRequest(f"destination {dst!r} is not a port, a MAC or an IPv4 address") from None
            # the port of the source's network holding that address (same L2 segment), if any
            owner = next(
                (x for x in topo.ports_of(src.network_id) if dst_ip in (a for _, a in x.fixed_ips)), None
            )
            if owner is not None:
                dst_mac, resolved = owner.mac, f"IP {dst_ip} = port {owner.id}"
            else:
                dst_mac, resolved = BROADCAST, f"IP {dst_ip}: no port of network {src.network_id} has it"
        by_mac = not (port is not None and _visible(p, port)) and bool(_MAC.match(dst))
        if proto != "arp" and src_ip and dst_ip and not by_mac:
            dst_mac, resolved = _first_hop(topo, src, dst_ip, dst_mac, resolved)
    headers: dict[str, Any] = {"eth_src": src.mac, "eth_dst": dst_mac}
    if proto == "arp":
        headers.update(
            {
                "eth_dst": BROADCAST,
                "eth_type": 0x0806,
                "arp_op": 1,
                "arp_sha": src.mac,
                "arp_spa": src_ip or "0.0.0.0",
                "arp_tha": "00:00:00:00:00:00",
                "arp_tpa": dst_ip or "0.0.0.0",
            }
        )
        return src_id, headers, resolved
    headers["eth_type"] = 0x0800
    if src_ip:
        headers["ipv4_src"] = src_ip
    if dst_ip:
        headers["ipv4_dst"] = dst_ip
    if proto == "icmp":
        headers.update({"ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0})
    elif proto == "tcp":
        headers.update({"ip_proto": 6, "tcp_src": 40000, "tcp_dst": dport})
    else:
        headers.update({"ip_proto": 17, "udp_src": 40000, "udp_dst": dport})
    return src_id, headers, resolved


def _first_hop(topo: Topology, src: Port, dst_ip: str, dst_mac: str, resolved: str) -> tuple[str, str]:
    """A destination off the source's subnets is sent where a real VM sends it: its gateway's MAC."""
    r = first_hop.route(topo, [src], dst_ip)
    if r is None:
        raise BadRequest(
            f"{src.id} has no route to {dst_ip}: none of its subnets holds it and they have no "
            "gateway or host route for it"
        )
    if r.on_link:
        return dst_mac, resolved
    if r.holder is None:
        raise BadRequest(
            f"{src.id} sends {dst_ip} to its {r.via}, but no port of network {src.network_id} "
            f"has {r.next_hop}: ARP for it is not answered, a real VM sends nothing"
        )
    return r.holder.mac, f"{resolved}; via {r.via} = port {r.holder.id}"


def trace(state: State, dataplane: Any, p: Principal, form: Mapping[str, str]) -> dict[str, Any]:
    """Run controller.debug.trace.trace for the form's packet through the desired (compiled) or installed (dumped
    now) flows; {"available": False, ...} when that module is not there."""
    src_id, headers, resolved = trace_headers(state, p, form)
    request = {"src": src_id, "dst": form.get("dst", ""), "resolved": resolved, "headers": headers}
    try:
        from controller.debug import trace as trace_mod  # built separately; optional until it lands
    except ImportError as err:
        return {
            "available": False,
            "request": request,
            "message": f"trace not available in this build (controller/trace.py: {err})",
        }
    source = (form.get("flows") or "desired").strip()
    if source not in ("desired", "installed"):
        raise BadRequest("flows: desired (compiled) or installed (dumped from the switches now)")
    request["flows"] = source
    try:
        result = trace_mod.trace(dataplane, port_id=src_id, headers=headers, source=source)
    except ApiError as err:
        raise BadRequest(f"cannot trace: {err.message}") from None
    return {"available": True, "request": request, **result.to_dict()}


def trace_choices(state: State, p: Principal) -> list[dict[str, Any]]:
    """Ports the trace form offers (id, network, MAC, IPv4), visible to `p`."""
    with state.lock:
        ports = sorted((x for x in state.topology.ports.values() if _visible(p, x)), key=lambda x: x.id)
        return [
            {
                "id": x.id,
                "network": x.network_id,
                "mac": x.mac,
                "ip": _ipv4(x),
                "tenant": x.tenant,
                "chassis": x.binding_chassis,
            }
            for x in ports
        ]


__all__ = [
    "BadRequest",
    "NotFound",
    "chassis_list",
    "flow_tables",
    "topology",
    "trace",
    "trace_choices",
    "trace_headers",
]
