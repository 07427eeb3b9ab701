"""What the dashboard shows, as JSON-ready dicts, built from the API's answers to the caller (controller/
dashboard/client.py): the API scopes them to the caller's token, so nothing here decides visibility. The
topology is a networkx graph of those answers. No HTTP here (see server.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import netaddr
import networkx as nx

from controller.dashboard.client import Caller
from flows import pipeline
from flows.format import ct_state_text
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import debug_pb2 as dbg
from proto.sdn.v1 import topology_pb2 as pb

#: layers of the topology drawing, top to bottom
LAYERS = ("tenant", "router", "network", "port", "chassis")
PORTS_PER_ROW = 14
BESIDE_GAP = 1.5  # slots between nodes labelled beside themselves (tenants, routers, networks)
MAX_PORT_ROWS = 6
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
BROADCAST = "ff:ff:ff:ff:ff:ff"
SHORT_ID = 12  # ids longer than this are shown as their first 8 characters and "…" next to a name
#: a ct_state as a number, in a trace note or a flow ("ct_state=0x21", "ct_state=0x20/0x22")
_CT_STATE_NUM = re.compile(r"\bct_state=(0x[0-9a-fA-F]+|\d+)(?:/(0x[0-9a-fA-F]+|\d+))?(?![\w+-])")
#: a DumpFlows line: cookie, counters (switch dumps only), table(stage), priority, match, actions, owner
_FLOW_LINE = re.compile(
    r"^cookie=(?P<cookie>0x[0-9a-f]+), (?:n_packets=(?P<packets>\d+), n_bytes=(?P<bytes>\d+), )?"
    r"table=(?P<table>\d+)\((?P<stage>[\w-]+)\), priority=(?P<priority>\d+)(?:,(?P<match>.*?))? "
    r"actions=(?P<actions>.*?)(?:  # (?P<app>[^/\s]+)/(?P<owner>\S+)(?: rev=.*)?)?$"
)


class BadRequest(ValueError):
    """A query the dashboard cannot answer as asked (HTTP 400)."""


class NotFound(LookupError):
    """An object that does not exist or that the caller may not see (HTTP 404)."""


def _id(name: str) -> str:
    """The id of a resource name ("networks/web" -> "web"; "" stays "")."""
    return name.rpartition("/")[2]


def _time(ts: Any) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


def _enum(msg: Any, field: str) -> str:
    value = getattr(msg, field)
    return str(msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name)


# ------------------------------------------------------------------------------------------------ names
# What a person reads: display names, with the id beside a name only where the name alone is ambiguous
# (two tenants' "vm1"); the full id is always in the record (and the page's tooltips).


def short_id(ident: str) -> str:
    return ident if len(ident) <= SHORT_ID else ident[:8] + "…"


def labels(objects: list[tuple[str, str, str]]) -> dict[str, str]:
    """id -> label for objects of one kind given as (id, display name, tenant): the display name where no
    other has it; "name (tenant)" where another tenant's has it too (an admin's two "vm1"); "name (id)"
    (the id shortened) where the tenant has several; the id where there is no display name."""
    names: dict[str, int] = {}
    per_tenant: dict[tuple[str, str], int] = {}
    for _, name, tenant in objects:
        if name:
            names[name] = names.get(name, 0) + 1
            per_tenant[(name, tenant)] = per_tenant.get((name, tenant), 0) + 1
    out = {}
    for ident, name, tenant in objects:
        if not name or name == ident:
            out[ident] = ident
        elif names[name] == 1:
            out[ident] = name
        elif per_tenant[(name, tenant)] == 1 and tenant:
            out[ident] = f"{name} ({tenant})"
        else:
            out[ident] = f"{name} ({short_id(ident)})"
    return out


def _named(objects: list[Any]) -> dict[str, str]:
    """labels() of API resources (name, display_name, tenant)."""
    return labels([(_id(o.name), o.display_name, o.tenant) for o in objects])


def _rule_label(rule: pb.SecurityGroupRule, groups: Mapping[str, str]) -> str:
    """A security group rule the way a person would say it: "web: ingress tcp 22 from 10.0.0.0/8"."""
    proto = rule.protocol or "any"
    if rule.port_range_min:
        hi = rule.port_range_max or rule.port_range_min
        proto += f" {rule.port_range_min}" + (f"-{hi}" if hi != rule.port_range_min else "")
    group = _id(rule.security_group)
    remote = rule.remote_group and _id(rule.remote_group)
    source = rule.remote_ip_prefix or (f"group {groups.get(remote, remote)}" if remote else "")
    side = "from" if rule.direction == "ingress" else "to"
    return f"{groups.get(group, group)}: {rule.direction} {proto}" + (f" {side} {source}" if source else "")


def owner_names(c: Caller, ports: list[pb.Port] | None = None) -> dict[str, str]:
    """Flow owner id -> what to call it (ports, networks, routers, security groups and their rules, router
    firewall groups and rules), as far as the API shows them to the caller; an owner not here (pipeline,
    a load balancer) is shown by its id."""
    out: dict[str, str] = {}

    def listed(method: str, field: str) -> list[Any]:
        try:
            return c.list(method, field)
        except grpc.RpcError as err:  # a kind the caller may not list, or a server without it
            if err.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED):
                return []
            raise

    groups = listed("ListSecurityGroups", "security_groups")
    group_names = _named(groups)
    kinds = [
        ports if ports is not None else listed("ListPorts", "ports"),
        listed("ListNetworks", "networks"),
        listed("ListRouters", "routers"),
        listed("ListFirewallGroups", "firewall_groups"),
        listed("ListFirewallRules", "firewall_rules"),
    ]
    for objects in reversed(kinds):  # ports last: their names win an id that two kinds share
        out.update(_named(objects))
    out.update(group_names)
    for g in groups:
        for r in g.rules:
            out[_id(r.name)] = _rule_label(r, group_names)
    return out


def ct_states(text: str) -> str:
    """`text` with every numeric ct_state written as OVS's flags: "ct_state=0x21" -> "ct_state=+new+trk"."""

    def flags(m: re.Match[str]) -> str:
        value = int(m[1], 0)
        mask = int(m[2], 0) if m[2] is not None else None
        return "ct_state=" + ct_state_text(value, mask)

    return _CT_STATE_NUM.sub(flags, text)


# ------------------------------------------------------------------------------------------------ records
# The API's answers in the shape the page reads (the model's field names: network_id, mac, key...).


def network_dict(n: pb.Network) -> dict[str, Any]:
    return {
        "id": _id(n.name),
        "tenant": n.tenant,
        "display_name": n.display_name,
        "segment_type": _enum(n, "segment_type").lower(),
        "segment_id": n.segment_id if n.segment_type != pb.Network.FLAT else None,
        "physical_network": n.physical_network,
        "mtu": n.mtu,
        "admin_state_up": n.admin_state_up,
        "external": n.external,
        "key": n.tunnel_key,
        "revision": n.revision,
        "create_time": _time(n.create_time),
        "update_time": _time(n.update_time),
    }


def port_dict(x: pb.Port) -> dict[str, Any]:
    return {
        "id": _id(x.name),
        "tenant": x.tenant,
        "network_id": _id(x.network),
        "mac": x.mac_address,
        "fixed_ips": [{"subnet": _id(f.subnet), "ip_address": f.ip_address} for f in x.fixed_ips],
        "display_name": x.display_name,
        "device_owner": x.device_owner,
        "device_id": x.device_id,
        "admin_state_up": x.admin_state_up,
        "port_security_enabled": x.port_security_enabled,
        "allowed_address_pairs": [
            {"ip_address": a.ip_address, "mac_address": a.mac_address} for a in x.allowed_address_pairs
        ],
        "security_groups": [_id(s) for s in x.security_groups],
        "binding_chassis": _id(x.binding_chassis),
        "status": _enum(x, "status"),
        "key": x.tunnel_key,
        "revision": x.revision,
        "create_time": _time(x.create_time),
        "update_time": _time(x.update_time),
    }


def router_dict(r: pb.Router) -> dict[str, Any]:
    gateway = r.external_gateway if r.HasField("external_gateway") else None
    return {
        "id": _id(r.name),
        "tenant": r.tenant,
        "display_name": r.display_name,
        "admin_state_up": r.admin_state_up,
        "gateway_network_id": _id(gateway.network) if gateway is not None else "",
        "enable_snat": gateway.enable_snat if gateway is not None else True,
        "routes": [[h.destination, h.nexthop] for h in r.routes],
        "key": r.tunnel_key,
        "revision": r.revision,
        "create_time": _time(r.create_time),
        "update_time": _time(r.update_time),
    }


def chassis_dict(c: pb.Chassis) -> dict[str, Any]:
    return {
        "id": _id(c.name),
        "datapath_id": c.datapath_id,
        "tunnel_ip": c.tunnel_ip,
        "ovsdb_address": c.ovsdb_address,
        "bridge_mappings": dict(sorted(c.bridge_mappings.items())),
        "revision": c.revision,
        "create_time": _time(c.create_time),
        "update_time": _time(c.update_time),
    }


def _ipv4(port: pb.Port) -> str:
    for f in port.fixed_ips:
        if f.ip_address and netaddr.IPAddress(f.ip_address).version == 4:
            return f.ip_address
    return ""


def whoami(c: Caller) -> dict[str, Any]:
    info = c.topology("GetServerInfo", pb.GetServerInfoRequest())
    dataplane = info.admin and chassis_status(c) is not None
    return {
        "tenant": info.tenant,
        "admin": info.admin,
        "revision": info.revision,
        "features": {"flows": dataplane, "trace": dataplane},
    }


# ------------------------------------------------------------------------------------------------ topology


def graph(c: Caller, admin: bool) -> tuple[nx.MultiDiGraph, int, int]:
    """(graph, revision, subnets seen) of what the API shows the caller: a node per tenant, router, network,
    port and (admins) chassis, keyed "kind:id" with the record as `details`; edges tenant -owns-> network
    and router, router -routes/gateway-> network, network -attached-> port, port -bound-> chassis."""
    revision = c.topology("GetServerInfo", pb.GetServerInfoRequest()).revision
    networks = c.list("ListNetworks", "networks")
    subnets = c.list("ListSubnets", "subnets")
    ports = c.list("ListPorts", "ports")
    routers = c.list("ListRouters", "routers")
    chassis = c.list("ListChassis", "chassis") if admin else []
    status = (chassis_status(c) or {}) if admin else {}
    g = nx.MultiDiGraph()
    named = {"network": _named(networks), "router": _named(routers), "port": _named(ports)}
    owners = [*networks, *routers, *ports]
    for t in sorted({o.tenant for o in owners if o.tenant}):
        g.add_node(f"tenant:{t}", kind="tenant", name=t, label=t)
    for r in routers:
        d = router_dict(r)
        d["interfaces"] = sorted({_id(i.network) for i in r.interfaces})
        g.add_node(
            f"router:{d['id']}", kind="router", name=d["id"], label=named["router"][d["id"]], details=d
        )
    by_net: dict[str, list[dict[str, Any]]] = {}
    for s in subnets:
        by_net.setdefault(_id(s.network), []).append(
            {
                "id": _id(s.name),
                "cidr": s.cidr,
                "gateway_ip": s.gateway_ip,
                "enable_dhcp": s.enable_dhcp if s.HasField("enable_dhcp") else True,
            }
        )
    for n in networks:
        d = {**network_dict(n), "subnets": by_net.get(_id(n.name), [])}
        g.add_node(
            f"network:{d['id']}", kind="network", name=d["id"], label=named["network"][d["id"]], details=d
        )
    for x in ports:
        d = port_dict(x)
        label = named["port"][d["id"]]
        g.add_node(f"port:{d['id']}", kind="port", name=d["id"], label=label, status=d["status"], details=d)
    for ch in chassis:
        d = chassis_dict(ch)
        st = status.get(d["id"], {})
        g.add_node(
            f"chassis:{d['id']}",
            kind="chassis",
            name=d["id"],
            label=d["id"],
            connected=st.get("connected", False),
            details={**d, **st},
        )

    def link(source: str, target: str, kind: str) -> None:
        if source in g and target in g:  # an end the caller may not see is not drawn
            g.add_edge(source, target, key=kind, kind=kind)

    for node, data in list(g.nodes(data=True)):
        d = data.get("details", {})
        if data["kind"] in ("network", "router", "port"):
            data["tenant"] = d["tenant"]
        if data["kind"] in ("network", "router"):
            link(f"tenant:{d['tenant']}", node, "owns")
        if data["kind"] == "router":
            for net in d["interfaces"]:
                link(node, f"network:{net}", "routes")
            if d["gateway_network_id"]:
                link(node, f"network:{d['gateway_network_id']}", "gateway")
        if data["kind"] == "port":
            link(f"network:{d['network_id']}", node, "attached")
            if d["binding_chassis"]:
                link(node, f"chassis:{d['binding_chassis']}", "bound")
    for node, data in g.nodes(data=True):
        if data["kind"] == "network":
            data["details"]["ports"] = len(_neighbours(g, node, "attached"))
        if data["kind"] == "chassis":
            data["details"]["ports"] = sum(1 for _ in _in(g, node, "bound"))
    return g, revision, len(subnets)


def _neighbours(g: nx.MultiDiGraph, node: str, *kinds: str) -> list[str]:
    """Targets of `node`'s edges of those kinds, in insertion order."""
    return list(dict.fromkeys(t for _, t, k in g.out_edges(node, keys=True) if k in kinds))


def _in(g: nx.MultiDiGraph, node: str, kind: str) -> Iterator[str]:
    return (s for s, _, k in g.in_edges(node, keys=True) if k == kind)


def _of_kind(g: nx.MultiDiGraph, kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n, d) for n, d in g.nodes(data=True) if d["kind"] == kind]


def topology(c: Caller, admin: bool) -> dict[str, Any]:
    """Nodes (tenants, routers, networks, ports, chassis) with a layered layout in [0, 1]², and the graph's
    edges; only what the API shows the caller (chassis: admins)."""
    g, revision, subnets = graph(c, admin)
    networks = sorted(_of_kind(g, "network"), key=lambda n: (n[1]["tenant"], n[1]["name"]))
    routers = _of_kind(g, "router")
    tenants = sorted(d["name"] for _, d in _of_kind(g, "tenant"))
    net_order = {n: i for i, (n, _) in enumerate(networks)}
    ports = sorted(
        _of_kind(g, "port"),
        key=lambda x: (
            min((net_order.get(s, 1 << 30) for s in _in(g, x[0], "attached")), default=1 << 30),
            _natural(x[1]["name"]),
        ),
    )
    chassis = _of_kind(g, "chassis")

    # layered layout in slots: ports evenly, each network over its ports, each router over its networks,
    # each tenant over its networks and routers, each chassis under the ports bound to it; a layer keeps
    # its order and one slot between nodes. Not a networkx layout: multipartite_layout spaces each layer by
    # index alone (a network would not sit over its ports) and the spring layouts move between refreshes
    # many ports: zig-zag them over PORT_ROWS sub-rows so the drawing stays about as wide as a screen
    port_rows = min(MAX_PORT_ROWS, max(1, -(-len(ports) // PORTS_PER_ROW)))
    slot: dict[str, float] = {x: float(i // port_rows) for i, (x, _) in enumerate(ports)}
    port_row = {x: i % port_rows for i, (x, _) in enumerate(ports)}
    for n, s in zip(
        [n for n, _ in networks],
        _place([_mean([slot[x] for x in _neighbours(g, n, "attached")]) for n, _ in networks], BESIDE_GAP),
        strict=True,
    ):
        slot[n] = s
    linked = {r: [slot[n] for n in _neighbours(g, r, "routes", "gateway")] for r, _ in routers}
    routers.sort(key=lambda r: (_mean(linked[r[0]]) or 0.0, r[1]["name"]))
    for r, s in zip(
        [r for r, _ in routers], _place([_mean(linked[r]) for r, _ in routers], BESIDE_GAP), strict=True
    ):
        slot[r] = s
    for t, s in zip(
        tenants,
        _place(
            [_mean([slot[x] for x in _neighbours(g, f"tenant:{t}", "owns")]) for t in tenants], BESIDE_GAP
        ),
        strict=True,
    ):
        slot[f"tenant:{t}"] = s
    bound = {ch: [slot[x] for x in _in(g, ch, "bound")] for ch, _ in chassis}
    chassis.sort(key=lambda ch: (_mean(bound[ch[0]]) if bound[ch[0]] else float(len(ports)), ch[1]["name"]))
    for ch, s in zip(
        [ch for ch, _ in chassis], _place([_mean(bound[ch]) for ch, _ in chassis], 1.2), strict=True
    ):
        slot[ch] = s
    width = 1 + max([0.0, *slot.values()])
    # rows that can hold something: routers once there are some, chassis for admins
    layers = [k for k in LAYERS if (k != "router" or routers) and (k != "chassis" or admin)]
    nodes: list[dict[str, Any]] = []
    ordered = [*(f"tenant:{t}" for t in tenants), *(r for r, _ in routers), *(n for n, _ in networks)]
    ordered += [*(x for x, _ in ports), *(ch for ch, _ in chassis)]
    for node in ordered:
        data = dict(g.nodes[node])
        kind = data["kind"]
        if kind == "tenant":
            owned = _neighbours(g, node, "owns")
            data["details"] = {
                "tenant": data["name"],
                "networks": sum(x.startswith("network:") for x in owned),
                "routers": sum(x.startswith("router:") for x in owned),
                "ports": sum(1 for x, d in ports if d["tenant"] == data["name"]),
            }
        if kind == "port":
            data["row"] = port_row[node]
        nodes.append(
            {
                "id": node,
                **data,
                "x": (slot[node] + 0.5) / width,
                "y": layers.index(kind) / (len(layers) - 1),
            }
        )
    edges = [{"source": s, "target": t, "kind": k} for s, t, k in g.edges(keys=True)]
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


def chassis_status(c: Caller) -> dict[str, dict[str, Any]] | None:
    """Per chassis: switch connected, OVSDB facts known, realized revision, desired / installed flows (the
    API's ListChassisStatus); None when the controller runs without a dataplane."""
    try:
        resp = c.dataplane("ListChassisStatus", dpb.ListChassisStatusRequest())
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise
    return {
        _id(s.chassis): {
            "connected": s.connected,
            "ovsdb_ready": s.ovsdb_ready,
            "realized_revision": s.realized_revision,
            "desired_flows": s.desired_flows,
            "installed_flows": s.installed_flows,
            "drift_repairs": s.drift_repairs,
            "compile_divergences": s.compile_divergences,  # the self-check found incremental != full
        }
        for s in resp.chassis
    }


def chassis_list(c: Caller) -> list[dict[str, Any]]:
    status = chassis_status(c) or {}
    chassis = sorted((chassis_dict(x) for x in c.list("ListChassis", "chassis")), key=lambda x: x["id"])
    return [
        {
            "id": x["id"],
            "tunnel_ip": x["tunnel_ip"],
            "datapath_id": f"{x['datapath_id']:#x}",
            **status.get(x["id"], {"connected": False}),
        }
        for x in chassis
    ]


@dataclass(frozen=True)
class FlowLine:
    """A DumpFlows line taken apart: what the flow table view shows of it."""

    cookie: str
    table: int
    stage: str
    priority: int
    match: str
    actions: str
    app: str
    owner: str
    packets: int | None
    bytes: int | None

    @property
    def key(self) -> tuple[str, int, int, str, str]:
        """The flow itself, without its counters: equal in the desired set and on the switch."""
        return (self.cookie, self.table, self.priority, self.match, self.actions)


def parse_flow(line: str) -> FlowLine:
    m = _FLOW_LINE.match(line.strip())
    if m is None:
        raise ValueError(f"not a dump-flows line: {line!r}")
    return FlowLine(
        cookie=m["cookie"],
        table=int(m["table"]),
        stage=m["stage"],
        priority=int(m["priority"]),
        match=m["match"] or "",
        actions=m["actions"],
        app=m["app"] or "",
        owner=m["owner"] or "",
        packets=int(m["packets"]) if m["packets"] is not None else None,
        bytes=int(m["bytes"]) if m["bytes"] is not None else None,
    )


def _dump(c: Caller, chassis_id: str, desired_only: bool) -> tuple[list[FlowLine], list[str]]:
    """Every page of DumpFlows: (flows, groups)."""
    flows: list[FlowLine] = []
    groups: list[str] = []
    token = ""
    while True:
        resp = c.dataplane(
            "DumpFlows",
            dpb.DumpFlowsRequest(
                chassis=f"chassis/{chassis_id}", desired_only=desired_only, page_size=10000, page_token=token
            ),
        )
        flows.extend(parse_flow(line) for line in resp.flows)
        groups.extend(resp.groups)
        token = resp.next_page_token
        if not token:
            return flows, groups


def flow_tables(c: Caller, chassis_id: str) -> dict[str, Any]:
    """One chassis's flows by stage (in pipeline order): the desired ones (DumpFlows desired_only) and the
    switch's now (DumpFlows), each with its priority, match, actions, owner, state (installed / pending =
    desired not on the switch / stale = on the switch, not desired) and the switch's counters ("—" when
    the switch is not connected)."""
    if not _ID.match(chassis_id):
        raise NotFound(f"chassis {chassis_id!r}")
    desired, groups = _dump(c, chassis_id, desired_only=True)
    try:
        installed, _ = _dump(c, chassis_id, desired_only=False)
        connected, counter_note = True, "counters from the switch (DumpFlows)"
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        installed, connected, counter_note = [], False, "switch not connected: counters show —"
    want = {f.key: f for f in desired}
    have = {f.key: f for f in installed}
    stages: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pipeline.STAGES}
    for key in sorted(want.keys() | have.keys(), key=lambda k: (k[1], -k[2], k[3])):
        f = have.get(key) or want[key]
        stages.setdefault(f.stage, []).append(
            {
                "priority": f.priority,
                "match": f.match or "(any)",
                "actions": f.actions,
                "cookie": f.cookie,
                "app": f.app,
                "owner": f.owner,
                "state": "installed"
                if key in have and key in want
                else "pending"
                if key in want
                else "stale",
                "packets": f.packets,
                "bytes": f.bytes,
            }
        )
    return {
        "chassis": chassis_id,
        "connected": connected,
        "counters": bool(have),
        "counter_note": counter_note,
        "desired": len(want),
        "installed": len(have),
        "stages": [
            {"name": s.name, "table": s.table, "doc": s.doc, "flows": stages[s.name]} for s in pipeline.STAGES
        ],
        "groups": groups,
        "owners": owner_names(c),
    }


# ------------------------------------------------------------------------------------------------ trace


_PROTOCOLS: dict[str, dict[str, str]] = {
    "icmp": {"ip_proto": "1"},
    "tcp": {"ip_proto": "6", "tcp_src": "40000"},
    "udp": {"ip_proto": "17", "udp_src": "40000"},
    "arp": {"eth_dst": BROADCAST, "eth_type": "0x0806"},
}


def trace_request(form: Mapping[str, str]) -> dbg.TraceRequest:
    """The trace form as the API's TraceRequest: src = port id; dst = port id (destination_port), MAC
    (eth_dst, sent as given) or IPv4 address (ipv4_dst, or arp_tpa: the server picks eth_dst as the source's
    VM would); proto = icmp|tcp|udp|arp; dport = L4 port; flows = desired|installed. Only the form's shape
    is checked here: which ports exist, and may be seen, is the API's answer to the Trace."""
    src = (form.get("src") or "").strip()
    dst = (form.get("dst") or "").strip()
    proto = (form.get("proto") or "icmp").strip().lower()
    flows = (form.get("flows") or "desired").strip()
    if not src:
        raise BadRequest("choose a source port")
    if not dst:
        raise BadRequest("give a destination: a port, a MAC or an IPv4 address")
    if proto not in _PROTOCOLS:
        raise BadRequest(f"protocol {proto!r}: one of {', '.join(_PROTOCOLS)}")
    if flows not in ("desired", "installed"):
        raise BadRequest("flows: desired (compiled) or installed (dumped from the switches now)")
    headers = dict(_PROTOCOLS[proto])
    if proto in ("tcp", "udp"):
        try:
            dport = int(form.get("dport") or 80)
        except ValueError:
            raise BadRequest("destination port must be a number") from None
        if not 0 < dport < 65536:
            raise BadRequest("destination port must be 1..65535")
        headers[f"{proto}_dst"] = str(dport)
    request = dbg.TraceRequest(
        port=f"ports/{src}",
        source=dbg.TraceRequest.INSTALLED if flows == "installed" else dbg.TraceRequest.DESIRED,
    )
    if _MAC.match(dst):
        if proto == "arp":
            raise BadRequest("ARP asks for an address: give a port or an IPv4 address")
        headers["eth_dst"] = dst.lower()
    elif netaddr.valid_ipv4(dst, netaddr.INET_PTON):
        headers["arp_tpa" if proto == "arp" else "ipv4_dst"] = dst
    elif _ID.match(dst):
        request.destination_port = f"ports/{dst}"
    else:
        raise BadRequest(f"destination {dst!r} is not a port, a MAC or an IPv4 address")
    request.headers.update(headers)
    return request


def step_kind(flow: str, note: str) -> str:
    """How the page draws a trace step: "flow" (a flow matched), "ct" (conntrack, maybe recirculating:
    no flow of its own, no error), "note" (a group bucket, an output to the in_port skipped) or "drop"
    (a table miss, an expired TTL, a missing group: the packet ends there)."""
    if flow:
        return "flow"
    if note.startswith("ct("):
        return "ct"
    if not note or re.search(r"\b(drop|miss|expired)\b", note):
        return "drop"
    return "note"


def _trace_dict(r: dbg.TraceResponse) -> dict[str, Any]:
    """The API's TraceResponse in the shape the page draws (controller.debug.trace.TraceResult.to_dict), a
    kind per step (step_kind) and ct_state in OVS's flags."""
    return {
        "source": {
            "port": r.source_port,
            "chassis": r.source_chassis,
            "in_port": r.source_in_port,
            "headers": dict(r.headers),
        },
        "hops": [
            {
                "chassis": h.chassis,
                "steps": [
                    {
                        "stage": s.stage,
                        "table": s.table,
                        "flow": ct_states(s.flow),
                        "owner": s.owner,
                        "note": ct_states(s.note),
                        "depth": s.depth,
                        "kind": step_kind(s.flow, s.note),
                    }
                    for s in h.steps
                ],
                "outputs": [
                    {
                        "kind": o.kind,
                        "chassis": o.chassis,
                        "port": o.port,
                        "ofport": o.ofport or None,
                        "headers": dict(o.headers),
                    }
                    for o in h.outputs
                ],
            }
            for h in r.hops
        ],
        "verdict": r.verdict,
    }


def destination(form: Mapping[str, str], ports: list[pb.Port]) -> str:
    """The form's destination, a port given by name made its id: a port of the source port's tenant whose
    id it is, else whose display name it is (two such: BadRequest naming them); anything else (a MAC, an
    address, another tenant's port id, no port at all) as given, for the API to answer. Another tenant's
    port is never picked by its name: an admin's "vm2" from alice's vm1 is alice's vm2."""
    src = (form.get("src") or "").strip()
    dst = (form.get("dst") or "").strip()
    if not dst or _MAC.match(dst) or netaddr.valid_ipv4(dst, netaddr.INET_PTON):
        return dst
    source = next((x for x in ports if _id(x.name) == src), None)
    if source is None:
        return dst
    mine = [x for x in ports if x.tenant == source.tenant]
    if any(_id(x.name) == dst for x in mine):
        return dst
    named = [x for x in mine if x.display_name == dst]
    if len(named) > 1:
        which = ", ".join(
            f"{_id(x.name)} (network {_id(x.network)}, {_ipv4(x) or x.mac_address})" for x in named
        )
        raise BadRequest(
            f"{len(named)} ports of tenant {source.tenant} are named {dst!r}: {which}; give its id"
        )
    return _id(named[0].name) if named else dst


def trace(c: Caller, form: Mapping[str, str]) -> dict[str, Any]:
    """The API's Trace of the form's packet through the desired (compiled) or installed (dumped now) flows,
    with what the server resolved the destination to (its first hop) and the packet it traced. The
    destination may be a port's display name (destination())."""
    ports = c.list("ListPorts", "ports")
    dst = destination(form, ports)
    request = trace_request({**form, "dst": dst})
    try:
        result = c.debug("Trace", request)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(err.details() or "not found") from None
        if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            raise BadRequest(f"cannot trace: {err.details()}") from None
        raise
    asked = {
        "src": _id(request.port),
        "dst": (form.get("dst") or "").strip(),
        "dst_port": _id(request.destination_port),
        "resolved": result.resolved,
        "headers": dict(result.headers),
        "flows": "installed" if request.source == dbg.TraceRequest.INSTALLED else "desired",
    }
    return {"available": True, "request": asked, **_trace_dict(result), "names": owner_names(c, ports)}


def trace_choices(c: Caller) -> list[dict[str, Any]]:
    """Ports the trace form offers, as the API shows them to the caller: id, display name, label (labels()),
    choice (what the form's list says: "vm1 — alice/web"), network (id and label), tenant, MAC, IPv4,
    chassis; by tenant, network and name."""
    ports = c.list("ListPorts", "ports")
    networks = c.list("ListNetworks", "networks")
    port_label = _named(ports)
    net_label = _named(networks)
    # within its tenant (the form says the tenant): "vm1", or "vm1 (id)" if the tenant has two
    in_tenant: dict[str, str] = {}
    for tenant in {o.tenant for o in [*ports, *networks]}:
        in_tenant.update(labels([(_id(o.name), o.display_name, "") for o in ports if o.tenant == tenant]))
        in_tenant.update(labels([(_id(o.name), o.display_name, "") for o in networks if o.tenant == tenant]))
    out = [
        {
            "id": _id(x.name),
            "name": x.display_name,
            "label": port_label[_id(x.name)],
            "choice": f"{in_tenant[_id(x.name)]} — {x.tenant}/{in_tenant.get(_id(x.network), _id(x.network))}",
            "network": _id(x.network),
            "network_label": net_label.get(_id(x.network), _id(x.network)),
            "mac": x.mac_address,
            "ip": _ipv4(x),
            "tenant": x.tenant,
            "chassis": _id(x.binding_chassis),
        }
        for x in ports
    ]
    return sorted(out, key=lambda p: (p["tenant"], p["network_label"], _natural(p["label"]), p["id"]))


__all__ = [
    "BadRequest",
    "NotFound",
    "chassis_list",
    "ct_states",
    "destination",
    "labels",
    "owner_names",
    "step_kind",
    "flow_tables",
    "graph",
    "topology",
    "trace",
    "trace_choices",
    "trace_request",
    "whoami",
]
