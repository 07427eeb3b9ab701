"""A logical trace across chassis, shaped like `ofproto/trace` and `ovn-trace`, and its differential form.

    trace(dataplane, port_id="a1", headers={"eth_dst": ..., "ipv4_dst": ..., "tcp_dst": 22})

walks the packet through the source chassis's flows (flows.walker: the compiled desired flows, or the
flows dumped from the switch now), and follows what leaves it: a tunnel port continues on the chassis
whose tunnel IP is the packet's tun_dst (from its tunnel port, tun_id and headers preserved); a patch port
is the physical network (continued on the chassis that holds the destination MAC, if any); a VIF is a
delivery to a logical port; the source's own port is an answer back to the source (ARP replies).

diff_trace() walks the same packet through desired and installed flows and names, per chassis, the first
stage where they diverge; where the chassis's ovs-vswitchd control socket is reachable (its OVSDB address
is ``unix:DIR/db.sock`` and DIR holds ``ovs-vswitchd[.PID].ctl``, as in the lab) it adds the switch's own
``ofproto/trace`` beside it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netaddr

from apps import ids, owners
from apps.view import ChassisRuntime
from controller.api import convert
from controller.debug import first_hop
from flows import fields, pipeline
from flows.cookie import CookieRegistry
from flows.flow import Flow, Group
from flows.format import OVS_NAMES, format_actions, format_flow
from flows.walker import Result, Switch, WalkError
from topology import errors
from topology.model import Topology
from topology.records import Port

SOURCES = ("desired", "installed")
#: cross-chassis hops before a trace gives up (a flood reaches each hosting chassis once)
MAX_HOPS = 32
#: fields that are switch-local state: they do not travel with a packet to the next chassis
_LOCAL_STATE = (
    {"in_port", "metadata", "ct_state", "ct_zone", "ct_mark", "ct_label", "conj_id"}
    | {f"reg{i}" for i in range(16)}
    | {f"xreg{i}" for i in range(8)}
    | {f"xxreg{i}" for i in range(4)}  # IPv6 routing's next hop (xxreg3): never crosses a tunnel
)
_PROTO_OF = {"tcp": 6, "udp": 17, "sctp": 132, "icmpv4": 1, "icmpv6": 58}
OFPVID_PRESENT = 0x1000
APPCTL_TIMEOUT = 5.0


# ------------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class TraceStep:
    """One table visit (or a note inside one: group bucket, ct, skipped output)."""

    stage: str
    table: int
    flow: str  # the matched flow as a dump-flows line ("" when none matched, or for a note)
    owner: str  # "app/object" that owns the flow ("" if unknown)
    note: str
    depth: int
    actions: str = ""
    matched: Flow | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "table": self.table,
            "flow": self.flow,
            "owner": self.owner,
            "note": self.note,
            "depth": self.depth,
        }


@dataclass(frozen=True)
class TraceOutput:
    """A copy of the packet leaving a chassis.

    kind: vif (port = "ports/ID"), tunnel (port = "chassis/ID" it goes to, or the tunnel IP if no chassis
    has it), physical (port = the physical network), in_port (back out the port it came in: port = that
    logical port, or ""), controller (port = "CONTROLLER").
    """

    kind: str
    chassis: str
    port: str
    ofport: int | None
    headers: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "chassis": self.chassis,
            "port": self.port,
            "ofport": self.ofport,
            "headers": dict(self.headers),
        }

    def describe(self) -> str:
        h = self.headers
        if self.kind == "vif":
            return f"delivered to {self.port} (ofport {self.ofport})"
        if self.kind == "tunnel":
            return (
                f"tunnel to {self.port} (ofport {self.ofport}, tun_id={h.get('tunnel_id', 0):#x}, "
                f"tun_dst={h.get('tun_ipv4_dst', '?')})"
            )
        if self.kind == "physical":
            return f"to physical network {self.port}, {_vlan_text(h)} (ofport {self.ofport})"
        if self.kind == "in_port":
            return f"back to the source {self.port or ''} (IN_PORT {self.ofport})".replace("  ", " ")
        return "to the controller"


@dataclass
class Hop:
    """The packet's walk through one chassis."""

    chassis: str
    in_port: int
    entry: dict[str, Any]  # the packet as it entered (in_port included)
    steps: list[TraceStep] = field(default_factory=list)
    outputs: list[TraceOutput] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)  # why branches ended without output, in words
    error: str = ""  # the flows are not a well-defined pipeline, or not available
    came_from: str = ""  # chassis the packet was tunnelled / bridged from

    def to_dict(self) -> dict[str, Any]:
        return {
            "chassis": self.chassis,
            "steps": [s.to_dict() for s in self.steps],
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class TraceResult:
    """A packet's path through every chassis it reached, and the verdict in words."""

    source: dict[str, Any]
    hops: list[Hop]
    verdict: str
    flows: str = "desired"  # which flows were walked: "desired" or "installed"

    @property
    def delivered_to(self) -> list[tuple[str, str]]:
        """(port name, chassis) of every VIF delivery."""
        return [(o.port, o.chassis) for h in self.hops for o in h.outputs if o.kind == "vif"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": dict(self.source),
            "hops": [h.to_dict() for h in self.hops],
            "verdict": self.verdict,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def format(self) -> str:
        """ovn-trace-like text: per chassis, each table visit with its flow and owner, then what left."""
        src = self.source
        where = f"{src['port']} on " if src.get("port") else ""
        lines = [
            f"Trace ({self.flows} flows): {where}{src.get('chassis', '')} in_port={src.get('in_port')}",
            f"Packet: {ovs_flow_text(src.get('headers', {}))}",
        ]
        if src.get("resolved"):
            lines.append(f"Destination: {src['resolved']}")
        if src.get("first_hop"):
            lines.append(f"First hop: {src['first_hop']}")
        lines.append("")
        for hop in self.hops:
            came = f", from {hop.came_from}" if hop.came_from else ""
            lines.append(f"== {hop.chassis} (in_port={hop.in_port}{came}) ==")
            for s in hop.steps:
                pad = "  " + "    " * s.depth
                head = f"{s.table}({s.stage})"
                if s.flow:
                    owner = f"  [{s.owner}]" if s.owner else ""
                    note = f"  ({s.note})" if s.note else ""
                    lines.append(f"{pad}{head}: {s.flow.strip()}{owner}{note}")
                else:
                    lines.append(f"{pad}{head}: {s.note}")
            for o in hop.outputs:
                lines.append(f"  -> {o.describe()}")
            for d in hop.drops:
                lines.append(f"  -> {d}")
            if hop.error:
                lines.append(f"  !! {hop.error}")
            lines.append("")
        lines.append(f"Verdict: {self.verdict}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ flows


@dataclass(frozen=True)
class ChassisFlows:
    """The flows and groups a trace walks on one chassis, with per-flow counters when dumped."""

    flows: tuple[Flow, ...]
    groups: tuple[Group, ...]
    counters: Mapping[Flow, tuple[int, int]] = field(default_factory=dict)
    undecodable: tuple[str, ...] = ()


FlowSource = Callable[[str], ChassisFlows]


def desired_flows(dataplane: Any) -> FlowSource:
    """What the compiler wants each chassis to hold (a chassis another controller masters, whose compile is
    not kept here: compiled for this trace, not kept)."""

    def get(chassis_id: str) -> ChassisFlows:
        with dataplane.state.lock:
            items = dataplane.compiler.compile_for(dataplane.state.topology, chassis_id)
        return ChassisFlows(
            tuple(i for i in items if isinstance(i, Flow)), tuple(i for i in items if isinstance(i, Group))
        )

    return get


def installed_flows(dataplane: Any, timeout: float = 10.0) -> FlowSource:
    """What each chassis's switch holds now, dumped over OpenFlow through its sync engine (cached for one
    trace: a flood visits a chassis once per copy)."""
    cache: dict[str, ChassisFlows] = {}

    def get(chassis_id: str) -> ChassisFlows:
        if chassis_id not in cache:
            not_master(dataplane, chassis_id)
            plane = dataplane.planes.get(chassis_id)
            engine = getattr(plane, "engine", None)
            if engine is None:
                raise errors.failed_precondition(
                    "NOT_CONNECTED",
                    f"chassis {chassis_id!r} has no switch connection yet: its installed flows are unknown",
                    chassis=chassis_id,
                )
            try:
                cache[chassis_id] = _dump(engine, timeout)
            except Exception as err:  # noqa: BLE001 - a disconnected switch, a timeout: say so
                raise errors.failed_precondition(
                    "DUMP_FAILED", f"chassis {chassis_id!r}: cannot dump its flows: {err}", chassis=chassis_id
                ) from None
        return cache[chassis_id]

    return get


def not_master(dataplane: Any, chassis_id: str) -> None:
    """Several controllers: only a chassis's master talks to its switch; elsewhere say who does."""
    owns = getattr(dataplane, "owns", None)
    if owns is None or owns(chassis_id):
        return
    master = dataplane.master_of(chassis_id)
    raise errors.failed_precondition(
        "NOT_MASTER",
        f"chassis {chassis_id!r} is mastered by controller {master or '(none right now)'}: only it reads "
        "the switch; ask it (what this controller compiles for the chassis: the desired flows)",
        chassis=chassis_id,
        master=master or "",
    )


def _dump(engine: Any, timeout: float) -> ChassisFlows:
    d = engine.dump(timeout)  # SwitchSync.dump(): flows with counters, groups, undecodable entries
    return ChassisFlows(tuple(d.flows), tuple(d.groups), dict(d.flows), tuple(d.undecodable))


# ------------------------------------------------------------------------------------------------ trace


def trace(
    dataplane: Any,
    *,
    port_id: str | None = None,
    chassis_id: str | None = None,
    in_port: int | None = None,
    headers: Mapping[str, str | int] | None = None,
    dst_port: str | None = None,
    source: str = "desired",
) -> TraceResult:
    """Trace a packet from logical port `port_id` (or `chassis_id` + `in_port`) with `headers` (our field
    names: eth_dst, ipv4_dst, ip_proto, tcp_dst...; eth_src, eth_type, ipv4_src, ip_proto are filled in
    from the source port and the fields given; `dst_port` fills eth_dst / ipv4_dst from that port). An
    IPv6 packet (ipv6_* or icmpv6_* fields, or eth_type 0x86dd) gets ipv6_src / ipv6_dst the same way and
    is an ICMPv6 echo request unless told otherwise.

    source="desired" walks the compiled flows, "installed" the flows dumped from the switches now.
    Raises topology.errors.ApiError (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION).
    """
    if source not in SOURCES:
        raise errors.invalid("source", f"must be one of {', '.join(SOURCES)}")
    start = _start(dataplane, port_id, chassis_id, in_port, headers or {}, dst_port)
    flows = desired_flows(dataplane) if source == "desired" else installed_flows(dataplane)
    return _run(dataplane, start, flows, source)


@dataclass
class _Start:
    chassis: str
    in_port: int
    port: str  # logical port id ("" when started from chassis + in_port)
    packet: dict[str, Any]
    first_hop: str = ""  # how the source chose eth_dst, when it is a gateway's MAC
    resolved: str = ""  # what the destination resolved to, in words (and the first hop)

    def source(self) -> dict[str, Any]:
        out = {
            "port": convert.name_of("port", self.port),
            "chassis": self.chassis,
            "in_port": self.in_port,
            "headers": {k: v for k, v in self.packet.items() if k != "in_port"},
        }
        if self.first_hop:
            out["first_hop"] = self.first_hop
        if self.resolved:
            out["resolved"] = self.resolved
        return out


def _start(
    dataplane: Any,
    port_id: str | None,
    chassis_id: str | None,
    in_port: int | None,
    headers: Mapping[str, str | int],
    dst_port: str | None,
) -> _Start:
    with dataplane.state.lock:
        topo: Topology = dataplane.state.topology
        src: Port | None = None
        if port_id:
            src = topo.ports.get(port_id)
            if src is None:
                raise errors.not_found("port", port_id)
            if not src.binding_chassis:
                raise errors.failed_precondition(
                    "PORT_NOT_BOUND", f"port {port_id!r} is not bound to a chassis", port=port_id
                )
            chassis_id = src.binding_chassis
            rt = _runtime(dataplane, chassis_id)
            ofport = rt.vifs.get(port_id)
            if ofport is None:
                raise errors.failed_precondition(
                    "PORT_NOT_PLUGGED",
                    f"port {port_id!r} is bound to {chassis_id!r} but no VIF there has iface-id={port_id}",
                    port=port_id,
                )
            in_port = ofport
        elif chassis_id:
            if chassis_id not in topo.chassis:
                raise errors.not_found("chassis", chassis_id)
            if in_port is None or in_port <= 0:
                raise errors.invalid(
                    "in_port", "required with a chassis (the OpenFlow port the packet enters)"
                )
            src = _port_at(_runtime(dataplane, chassis_id), topo, in_port)
        else:
            raise errors.invalid("port", "give a source port, or a chassis and in_port")
        dst = None
        if dst_port:
            dst = topo.ports.get(dst_port)
            if dst is None:
                raise errors.not_found("port", dst_port)
        elif src is not None and not ({"eth_dst", "dl_dst"} & set(headers)):
            dst = _by_ip(topo, src, headers)  # what ARP in the source's network would answer
        route = None
        if src is not None and not ({"eth_dst", "dl_dst"} & set(headers)):
            headers, route = _via_gateway(topo, src, dst, headers)
        packet = build_headers(headers, src, dst)
        resolved = _resolved(topo, src, dst, packet, route)
    assert chassis_id is not None and in_port is not None
    packet["in_port"] = in_port
    port = src.id if src is not None and port_id else ""
    hop = route.describe() if route is not None else ""
    return _Start(chassis_id, in_port, port, packet, hop, resolved)


def _via_gateway(
    topo: Topology,
    src: Port,
    dst: Port | None,
    headers: Mapping[str, str | int],
) -> tuple[Mapping[str, str | int], first_hop.Route | None]:
    """An IP packet goes where a real VM sends it: on-link to the destination's MAC (what ARP or neighbour
    discovery answers), else to the MAC of its gateway (or host route's next hop), not to the destination's
    own MAC. Returns the headers with that eth_dst, and the route when it is through a next hop (None:
    on-link, or not an IP packet). FAILED_PRECONDITION when the VM has no route, or ARP / neighbour
    discovery for the next hop is not answered."""
    version = _family(headers)
    if version is None:
        return headers, None
    if version == 6:
        dst_ip = headers.get("ipv6_dst") or _ip(dst, 6)
    else:
        dst_ip = headers.get("ipv4_dst", headers.get("nw_dst", headers.get("ip_dst"))) or _ipv4(dst)
    try:
        ip = str(netaddr.IPAddress(str(dst_ip), flags=netaddr.INET_PTON)) if dst_ip else None
    except (netaddr.AddrFormatError, ValueError):
        return headers, None  # build_headers says what is wrong with it
    if ip is None or netaddr.IPAddress(ip).version != version or _ip(src, version) is None:
        return headers, None
    if version == 6 and netaddr.IPAddress(ip).is_multicast():
        return headers, None
    r = first_hop.route(topo, [src], ip)
    if r is None:
        raise errors.failed_precondition(
            "NO_ROUTE",
            f"port {src.id!r} has no route to {ip}: it is on none "
            "of its subnets, and they have no gateway or host route for it",
            port=src.id,
        )
    if r.holder is None and (not r.on_link or dst is None):
        how = (
            f"{ip} is on-link for port {src.id!r}"
            if r.on_link
            else f"port {src.id!r} sends {ip} to its {r.via}"
        )
        raise errors.failed_precondition(
            "NEXT_HOP_UNRESOLVED",
            f"{how}, but no port of network {src.network_id!r} has {r.next_hop}: "
            f"{'ARP' if version == 4 else 'neighbour discovery'} for it is not answered and a real VM "
            "sends nothing",
            port=src.id,
        )
    if r.on_link:
        if dst is None and r.holder is not None:  # an allowed address pair answers ARP for it
            return {**headers, "eth_dst": r.holder.mac}, None
        return headers, None
    assert r.holder is not None
    return {**headers, "eth_dst": r.holder.mac}, r


def _resolved(
    topo: Topology,
    src: Port | None,
    dst: Port | None,
    packet: Mapping[str, Any],
    route: first_hop.Route | None,
) -> str:
    """The destination as the trace resolved it, in words: "ports/b (10.0.0.6)", "10.9.0.5 via default
    gateway 10.0.0.1 = ports/r (fa:16:..)", "ARP for 10.0.0.99: no port of network a has it", "eth_dst
    fa:16:3e:..:02 = ports/b"."""
    if packet.get("eth_type") == 0x0806:
        tpa = str(packet.get("arp_tpa", ""))
        if src is None or not tpa:
            return f"ARP for {tpa or '?'}"
        who = first_hop.holder(topo, src.network_id, tpa) if netaddr.valid_ipv4(tpa) else None
        return f"ARP for {tpa}: " + (
            f"ports/{who.id} has it" if who is not None else f"no port of network {src.network_id} has it"
        )
    ip = packet.get("ipv4_dst", packet.get("ipv6_dst"))
    if dst is not None:
        what = f"ports/{dst.id}" + (f" ({ip})" if ip else "")
    elif route is not None:
        what = str(ip)
    else:
        mac = str(packet.get("eth_dst", ""))
        owner = topo.ports.get(topo.macs.get(mac, ""))
        what = (
            "broadcast"
            if mac == "ff:ff:ff:ff:ff:ff"
            else f"eth_dst {mac} = ports/{owner.id}"
            if owner is not None
            else f"eth_dst {mac}: no port has it"
        )
    if route is not None and route.holder is not None:
        what += f" via {route.via} = ports/{route.holder.id} ({route.holder.mac})"
    return what


def _by_ip(topo: Topology, src: Port, headers: Mapping[str, str | int]) -> Port | None:
    """The port of the source's network that has the packet's ipv4_dst (or ipv6_dst), if any."""
    ip = headers.get("ipv4_dst", headers.get("nw_dst", headers.get("ipv6_dst")))
    try:
        n = int(netaddr.IPAddress(str(ip)))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    for sub in topo.subnets_of(src.network_id):
        pid = topo.ip_owner.get(sub.id, {}).get(n)
        if pid is not None:
            return topo.ports.get(pid)
    return None


def _runtime(dataplane: Any, chassis_id: str) -> ChassisRuntime:
    plane = dataplane.planes.get(chassis_id)
    rt = getattr(plane, "runtime", None)
    if rt is None:
        raise errors.failed_precondition(
            "CHASSIS_NOT_READY",
            f"chassis {chassis_id!r}: its OVSDB facts (ofports) are not known yet",
            chassis=chassis_id,
        )
    return rt  # type: ignore[no-any-return]


def _port_at(rt: ChassisRuntime, topo: Topology, ofport: int) -> Port | None:
    for pid, n in rt.vifs.items():
        if n == ofport:
            return topo.ports.get(pid)
    return None


def _ipv4(port: Port | None) -> str | None:
    return _ip(port, 4)


def _ip(port: Port | None, version: int) -> str | None:
    """The port's first fixed IP of the family."""
    if port is None:
        return None
    return next((ip for _, ip in port.fixed_ips if netaddr.IPAddress(ip).version == version), None)


_V4_TYPES = ("0x0800", "0x800", "2048")
_V6_TYPES = ("0x86dd", "34525")


def _family(headers: Mapping[str, str | int]) -> int | None:
    """4 or 6: the IP family of the packet the headers describe (IPv4 unless said otherwise), None: ARP or
    another EtherType."""
    if any(str(k).startswith("arp_") for k in headers):
        return None
    eth_type = str(headers.get("eth_type", headers.get("dl_type", ""))).lower()
    if eth_type in _V6_TYPES or (
        not eth_type and any(str(k).startswith(("ipv6_", "icmpv6_")) for k in headers)
    ):
        return 6
    if eth_type in (*_V4_TYPES, ""):
        return 4
    return None


_ALIASES = {
    ovs: ours
    for ours, ovs in OVS_NAMES.items()
    if not ovs.startswith("tp_") and ovs != "icmp_type" and ovs != "icmp_code"
} | {"ip_src": "ipv4_src", "ip_dst": "ipv4_dst"}


def build_headers(
    headers: Mapping[str, str | int], src: Port | None = None, dst: Port | None = None
) -> dict[str, Any]:
    """Canonical packet fields from friendly input: OVS names accepted (dl_dst, nw_dst), values as strings
    or ints; eth_src (and ipv4_src) from the source port, eth_dst (and ipv4_dst) from `dst`, eth_type and
    ip_proto from the fields present, ICMP echo by default."""
    pkt: dict[str, Any] = {}
    for raw_name, raw in headers.items():
        name = _ALIASES.get(raw_name, raw_name)
        try:
            kind = fields.kind(name)
        except fields.FieldError:
            raise errors.invalid(
                f"headers[{raw_name}]",
                "unknown field (use names like eth_dst, ipv4_dst, ip_proto, tcp_dst, arp_tpa)",
            ) from None
        value: Any = raw
        if kind == "int" and isinstance(raw, str):
            try:
                value = int(raw, 0)
            except ValueError:
                raise errors.invalid(f"headers[{raw_name}]", f"{raw!r} is not a number") from None
        try:
            norm = fields.normalize(name, value)
        except fields.FieldError as err:
            raise errors.invalid(f"headers[{raw_name}]", str(err)) from None
        if norm is None or norm[1] is not None:
            raise errors.invalid(f"headers[{raw_name}]", "must be a plain value, not masked")
        pkt[name] = norm[0]
    if src is not None:
        pkt.setdefault("eth_src", src.mac)
    if dst is not None:
        pkt.setdefault("eth_dst", dst.mac)
    l4 = {
        "tcp": ("tcp_src", "tcp_dst"),
        "udp": ("udp_src", "udp_dst"),
        "sctp": ("sctp_src", "sctp_dst"),
        "icmpv4": ("icmpv4_type", "icmpv4_code"),
        "icmpv6": ("icmpv6_type", "icmpv6_code"),
    }
    for proto, names in l4.items():
        if any(n in pkt for n in names):
            pkt.setdefault("ip_proto", _PROTO_OF[proto])
    if "eth_type" not in pkt and any(k.startswith(("ipv6_", "icmpv6_")) for k in pkt):
        pkt["eth_type"] = 0x86DD
    if src is not None and "eth_type" not in pkt and not any(k.startswith("arp_") for k in pkt):
        # a port's packet is an ICMP echo unless told otherwise: port security drops a bare frame
        pkt.setdefault("ip_proto", 1)
    if src is not None and pkt.get("eth_type") == 0x86DD:
        pkt.setdefault("ip_proto", 58)  # ICMPv6 echo
    if any(k.startswith("arp_") for k in pkt):
        pkt.setdefault("eth_type", 0x0806)
    if "ip_proto" in pkt or any(k.startswith("ipv4_") for k in pkt):
        pkt.setdefault("eth_type", 0x0800)
    if pkt.get("eth_type") == 0x0806:
        pkt.setdefault("arp_op", 1)
        if "eth_src" in pkt:
            pkt.setdefault("arp_sha", pkt["eth_src"])
        if _ipv4(src) is not None:
            pkt.setdefault("arp_spa", _ipv4(src))
        pkt.setdefault("arp_tha", "00:00:00:00:00:00")
        if _ipv4(dst) is not None:
            pkt.setdefault("arp_tpa", _ipv4(dst))  # an ARP request for the destination port's address
    if pkt.get("eth_type") == 0x0800:
        if _ipv4(src) is not None:
            pkt.setdefault("ipv4_src", _ipv4(src))
        if _ipv4(dst) is not None:
            pkt.setdefault("ipv4_dst", _ipv4(dst))
        pkt.setdefault("nw_ttl", 64)
        if pkt.get("ip_proto") == 1:
            pkt.setdefault("icmpv4_type", 8)
            pkt.setdefault("icmpv4_code", 0)
    if pkt.get("eth_type") == 0x86DD:
        if _ip(src, 6) is not None:
            pkt.setdefault("ipv6_src", _ip(src, 6))
        if _ip(dst, 6) is not None:
            pkt.setdefault("ipv6_dst", _ip(dst, 6))
        pkt.setdefault("nw_ttl", 64)
        if pkt.get("ip_proto") == 58:
            pkt.setdefault("icmpv6_type", 128)
            pkt.setdefault("icmpv6_code", 0)
    if "eth_dst" not in pkt:
        raise errors.invalid("headers[eth_dst]", "required: give eth_dst or a destination port")
    if "eth_src" not in pkt:
        raise errors.invalid("headers[eth_src]", "required when the source is not a logical port")
    return pkt


def _run(dataplane: Any, start: _Start, flows: FlowSource, source: str) -> TraceResult:
    with dataplane.state.lock:
        topo: Topology = dataplane.state.topology
        registry = ids.registry_for(owners.model_owners(topo))
        chassis = dict(topo.chassis)
        ports = dict(topo.ports)
        macs = dict(topo.macs)
        runtimes = {cid: p.runtime for cid, p in dataplane.planes.items() if p.runtime is not None}
    queue: list[tuple[str, dict[str, Any], str]] = [(start.chassis, dict(start.packet), "")]
    seen: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
    hops: list[Hop] = []
    switches: dict[str, tuple[Switch, ChassisFlows] | str] = {}
    while queue and len(hops) < MAX_HOPS:
        cid, packet, came_from = queue.pop(0)
        key = (cid, tuple(sorted(packet.items())))
        if key in seen:
            continue
        seen.add(key)
        hop = Hop(cid, packet["in_port"], dict(packet), came_from=came_from)
        hops.append(hop)
        rt = runtimes.get(cid)
        if cid not in switches:
            try:
                cf = flows(cid)
                switches[cid] = (Switch(cf.flows, cf.groups), cf)
            except WalkError as err:
                switches[cid] = f"the flows of {cid} cannot be walked: {err}"
        got = switches[cid]
        if isinstance(got, str):
            hop.error = got
            continue
        sw, cf = got
        sw.conntrack.clear()
        try:
            res = sw.walk(packet)
        except WalkError as err:
            hop.error = str(err)
            continue
        hop.steps = _steps(res, registry, cf.counters if source == "installed" else None)
        hop.drops = _drops(res, cid)
        for d in res.outputs:
            out, nxt = _classify_output(d.port, dict(d.headers), hop, rt, chassis, ports, macs, runtimes)
            hop.outputs.append(out)
            if nxt is not None:
                queue.append(nxt)
    return TraceResult(start.source(), hops, _verdict(hops, start) + _next_hops(hops, ports), source)


def _next_hops(hops: list[Hop], ports: Mapping[str, Port]) -> str:
    """A delivery to a port that is only the packet's next hop (its MAC, another address) is not the end of
    the path when that VM forwards: say so."""
    out = []
    for h in hops:
        for o in h.outputs:
            p = ports.get(o.port.removeprefix("ports/")) if o.kind == "vif" else None
            ip = o.headers.get("ipv4_dst", o.headers.get("ipv6_dst"))
            if p is not None and ip and o.headers.get("eth_dst") == p.mac and not first_hop.holds(p, str(ip)):
                out.append(
                    f"; {o.port} is a next hop, not {ip}: the packet goes on only if its VM forwards "
                    "it (explain follows it)"
                )
    return "".join(dict.fromkeys(out))


def _steps(
    res: Result,
    registry: CookieRegistry,
    counters: Mapping[Flow, tuple[int, int]] | None,
) -> list[TraceStep]:
    out = []
    for s in res.steps:
        table = pipeline.table_of(s.stage)
        if s.flow is None:
            out.append(TraceStep(s.stage, table, "", "", s.note or "no flow matched: drop", s.depth))
            continue
        owner = registry.lookup(s.flow.cookie)
        note = s.note
        if counters is not None and s.flow in counters:
            n_packets, n_bytes = counters[s.flow]
            note = (note + "; " if note else "") + f"n_packets={n_packets}, n_bytes={n_bytes}"
        out.append(
            TraceStep(
                s.stage,
                table,
                format_flow(s.flow).strip(),
                f"{owner[0]}/{owner[1]}" if owner else "",
                note,
                s.depth,
                format_actions(s.flow.actions),
                s.flow,
            )
        )
    return out


def _drops(res: Result, chassis_id: str) -> list[str]:
    out = []
    for stage, reason in res.drops:
        if reason == "table miss":
            out.append(f"no flow matched in {stage} on {chassis_id}")
            continue
        last = next((s for s in reversed(res.steps) if s.stage == stage), None)
        if reason == "no output" and last is not None and last.note.endswith("is in_port: skipped"):
            out.append(f"the copy for the source's own port is not sent back (hairpin) on {chassis_id}")
            continue
        flow = next((s.flow for s in reversed(res.steps) if s.stage == stage and s.flow is not None), None)
        by = (
            f" by {format_flow(flow).strip()}"
            if flow is not None and reason == "no output"
            else f" ({reason})"
        )
        out.append(f"dropped at {stage}{by} on {chassis_id}")
    return out


def _classify_output(
    port: int | str,
    headers: dict[str, Any],
    hop: Hop,
    rt: ChassisRuntime | None,
    chassis: Mapping[str, Any],
    ports: Mapping[str, Port],
    macs: Mapping[str, str],
    runtimes: Mapping[str, ChassisRuntime],
) -> tuple[TraceOutput, tuple[str, dict[str, Any], str] | None]:
    cid = hop.chassis
    shown = {k: v for k, v in headers.items() if k != "in_port"}
    if port == "CONTROLLER":
        return TraceOutput("controller", cid, "CONTROLLER", None, shown), None
    assert isinstance(port, int)
    vifs = {n: pid for pid, n in (rt.vifs.items() if rt else ())}
    tunnels = {n: t for t, n in (rt.tunnels.items() if rt else ())}
    if port == hop.in_port and port not in tunnels:  # only IN_PORT gets here (the walker drops hairpins)
        name = convert.name_of("port", vifs[port]) if port in vifs else ""
        return TraceOutput("in_port", cid, name, port, shown), None
    if port in vifs:
        return TraceOutput("vif", cid, convert.name_of("port", vifs[port]), port, shown), None
    if port in tunnels:  # IN_PORT on a tunnel too: back through the tunnel to another chassis
        dst_ip = headers.get("tun_ipv4_dst", "")
        remote = next((c for c in chassis.values() if c.tunnel_ip and c.tunnel_ip == dst_ip), None)
        if remote is None or remote.id not in runtimes or tunnels[port] not in runtimes[remote.id].tunnels:
            return TraceOutput("tunnel", cid, str(dst_ip), port, shown), None
        own = chassis.get(cid)
        nxt = _carried(headers)
        nxt["in_port"] = runtimes[remote.id].tunnels[tunnels[port]]
        nxt["tun_ipv4_dst"] = dst_ip
        if own is not None and own.tunnel_ip:
            nxt["tun_ipv4_src"] = own.tunnel_ip
        out = TraceOutput("tunnel", cid, convert.name_of("chassis", remote.id), port, shown)
        return out, (remote.id, nxt, cid)
    patches = {n: pn for pn, n in (rt.patches.items() if rt else ())}
    if port in patches:
        physnet = patches[port]
        out = TraceOutput("physical", cid, physnet, port, shown)
        # on the wire: continue where the destination MAC lives, if that chassis is on the same physnet
        owner = ports.get(macs.get(str(headers.get("eth_dst", "")), ""))
        target = owner.binding_chassis if owner is not None else ""
        trt = runtimes.get(target)
        if target and target != cid and trt is not None and physnet in trt.patches:
            nxt = _carried(headers)
            nxt["in_port"] = trt.patches[physnet]
            return out, (target, nxt, cid)
        return out, None
    return TraceOutput("vif", cid, f"ofport {port}", port, shown), None


def _carried(headers: Mapping[str, Any]) -> dict[str, Any]:
    """What travels to the next chassis: the packet's own headers (and tunnel metadata), no registers."""
    return {k: v for k, v in headers.items() if k not in _LOCAL_STATE}


def _vlan_text(h: Mapping[str, Any]) -> str:
    vid = int(h.get("vlan_vid", 0) or 0)
    return f"VLAN {vid & 0xFFF}" if vid & OFPVID_PRESENT else "untagged"


def _verdict(hops: list[Hop], start: _Start) -> str:
    parts: list[str] = []
    reached = {(h.chassis, h.in_port) for h in hops}
    for h in hops:
        for o in h.outputs:
            if o.kind == "vif":
                parts.append(f"delivered to {o.port} on {o.chassis}")
            elif o.kind == "in_port":
                parts.append(f"back to the source {o.port or f'in_port {o.ofport}'} on {o.chassis}")
            elif o.kind == "controller":
                parts.append(f"sent to the controller from {o.chassis}")
            elif o.kind == "physical":
                if not any(x.came_from == h.chassis and x.chassis != h.chassis for x in hops):
                    parts.append(f"to physical network {o.port} ({_vlan_text(o.headers)}) from {o.chassis}")
            elif o.kind == "tunnel" and not o.port.startswith("chassis/"):
                parts.append(f"tunnelled from {o.chassis} to {o.port}, which is no known chassis")
    if parts:
        flooded = any(s.note.startswith("group ") for h in hops for s in h.steps)
        return ("flooded: " if flooded else "") + "; ".join(dict.fromkeys(parts))
    for h in hops:
        if h.error:
            return f"no verdict on {h.chassis}: {h.error}"
    drops = [d for h in hops for d in h.drops]
    if drops:
        return drops[0]
    del reached
    return "dropped (no output)"


# ------------------------------------------------------------------------------------------------ diff


@dataclass(frozen=True)
class Divergence:
    """Where the installed walk first differs from the desired one on a chassis."""

    chassis: str
    stage: str
    table: int
    desired: str  # the flow desired flows matched ("" none)
    installed: str  # the flow installed flows matched ("" none)
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "chassis": self.chassis,
            "stage": self.stage,
            "table": self.table,
            "desired": self.desired,
            "installed": self.installed,
            "description": self.description,
        }


@dataclass(frozen=True)
class SwitchTrace:
    """The switch's own `ofproto/trace` of the packet that entered a chassis (empty output: unreachable)."""

    chassis: str
    flow: str
    output: str
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"chassis": self.chassis, "flow": self.flow, "output": self.output, "error": self.error}


@dataclass
class DiffTrace:
    desired: TraceResult
    installed: TraceResult
    divergences: list[Divergence]
    switch: list[SwitchTrace]

    @property
    def diverged(self) -> bool:
        return bool(self.divergences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "desired": self.desired.to_dict(),
            "installed": self.installed.to_dict(),
            "divergences": [d.to_dict() for d in self.divergences],
            "switch": [s.to_dict() for s in self.switch],
        }

    def format(self) -> str:
        lines = ["Differential trace: desired flows vs flows installed on the switches", ""]
        if not self.divergences:
            lines.append("No divergence: the installed flows take the packet where the desired flows do.")
        for d in self.divergences:
            lines.append(f"DIVERGES on {d.chassis} at {d.table}({d.stage}): {d.description}")
            lines.append(f"  desired:   {d.desired or '(no flow)'}")
            lines.append(f"  installed: {d.installed or '(no flow)'}")
        lines += [
            "",
            f"desired:   {self.desired.verdict}",
            f"installed: {self.installed.verdict}",
            "",
            "---- desired ----",
            self.desired.format(),
            "",
            "---- installed ----",
            self.installed.format(),
        ]
        for s in self.switch:
            lines += ["", f"---- {s.chassis}: ovs-appctl ofproto/trace br-int '{s.flow}' ----"]
            lines.append(s.output.rstrip() if s.output else f"(not available: {s.error})")
        return "\n".join(lines)


def diff_trace(
    dataplane: Any,
    *,
    port_id: str | None = None,
    chassis_id: str | None = None,
    in_port: int | None = None,
    headers: Mapping[str, str | int] | None = None,
    dst_port: str | None = None,
    switch_trace: bool = True,
) -> DiffTrace:
    """The same packet through desired and installed flows; the first divergence per chassis; and, where
    the chassis's ovs-appctl is reachable, the switch's own ofproto/trace of the packet entering it."""
    start = _start(dataplane, port_id, chassis_id, in_port, headers or {}, dst_port)
    want = _run(dataplane, start, desired_flows(dataplane), "desired")
    have = _run(dataplane, start, installed_flows(dataplane), "installed")
    divergences = compare(want, have)
    traces = []
    if switch_trace:
        with dataplane.state.lock:
            addresses = {c.id: c.ovsdb_address for c in dataplane.state.topology.chassis.values()}
        done = set()
        for hop in [*have.hops, *want.hops]:
            if hop.chassis in done:
                continue
            done.add(hop.chassis)
            traces.append(
                ofproto_trace(
                    hop.chassis,
                    addresses.get(hop.chassis, ""),
                    hop.entry,
                    ctl_dir=getattr(dataplane, "vswitchd_ctl_dir", ""),
                )
            )
    return DiffTrace(want, have, divergences, traces)


def compare(want: TraceResult, have: TraceResult) -> list[Divergence]:
    """Per chassis (hops matched by chassis and entry packet), the first step whose matched flow differs;
    a chassis only one side reaches is a divergence at its first stage."""
    out: list[Divergence] = []
    have_hops = {(h.chassis, _entry_key(h)): h for h in have.hops}
    want_keys = set()
    flagged: set[str] = set()
    unreached: set[str] = set()
    for w in want.hops:
        key = (w.chassis, _entry_key(w))
        want_keys.add(key)
        h = have_hops.get(key)
        if w.chassis in flagged:
            continue
        if h is None:
            if w.came_from in flagged or w.came_from in unreached:
                unreached.add(w.chassis)  # a consequence of the upstream divergence, not one of its own
                continue
            first = w.steps[0] if w.steps else None
            out.append(
                Divergence(
                    w.chassis,
                    first.stage if first else pipeline.FIRST_STAGE,
                    first.table if first else 0,
                    first.flow if first else "",
                    "",
                    f"the desired flows bring the packet to {w.chassis} (from "
                    f"{w.came_from or 'the source'}); the installed flows do not",
                )
            )
            flagged.add(w.chassis)
            continue
        d = _first_difference(w, h)
        if d is not None:
            out.append(d)
            flagged.add(w.chassis)
    for h in have.hops:
        if (h.chassis, _entry_key(h)) not in want_keys and h.chassis not in flagged | unreached:
            if h.came_from in flagged or h.came_from in unreached:
                unreached.add(h.chassis)
                continue
            first = h.steps[0] if h.steps else None
            out.append(
                Divergence(
                    h.chassis,
                    first.stage if first else pipeline.FIRST_STAGE,
                    first.table if first else 0,
                    "",
                    first.flow if first else "",
                    f"the installed flows bring the packet to {h.chassis}; the desired flows do not",
                )
            )
            flagged.add(h.chassis)
    return out


def _entry_key(h: Hop) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(h.entry.items()))


def _first_difference(w: Hop, h: Hop) -> Divergence | None:
    if w.error or h.error:
        if w.error != h.error:
            return Divergence(
                w.chassis,
                pipeline.FIRST_STAGE,
                0,
                "",
                "",
                f"desired: {w.error or 'walks'}; installed: {h.error or 'walks'}",
            )
        return None
    for i in range(max(len(w.steps), len(h.steps))):
        a = w.steps[i] if i < len(w.steps) else None
        b = h.steps[i] if i < len(h.steps) else None
        if (
            a is not None
            and b is not None
            and (a.stage, a.matched, a.note if a.matched is None else "")
            == (b.stage, b.matched, b.note if b.matched is None else "")
        ):
            continue
        s = a or b
        assert s is not None
        da, db = (a.flow if a else ""), (b.flow if b else "")
        if a is not None and b is not None and a.stage != b.stage:
            why = f"desired goes to {a.stage}, installed to {b.stage}"
        elif a is not None and a.matched is not None and (b is None or b.matched is None):
            why = "a desired flow is missing on the switch: no installed flow matched here"
        elif b is not None and b.matched is not None and (a is None or a.matched is None):
            why = "an installed flow matches where no desired flow does"
        else:
            why = "a different flow matched"
        return Divergence(w.chassis, s.stage, s.table, da, db, why)
    if [o.to_dict() for o in w.outputs] != [o.to_dict() for o in h.outputs]:
        return Divergence(
            w.chassis,
            "output",
            pipeline.table_of("output"),
            "",
            "",
            "same flows, different outputs (a group differs)",
        )
    return None


# ------------------------------------------------------------------------------------------------ switch


def ovs_flow_text(packet: Mapping[str, Any]) -> str:
    """The packet as an ovs-ofctl flow (``in_port=1,dl_src=..,dl_dst=..,dl_type=0x0800,nw_dst=..``), the
    argument ofproto/trace takes."""
    # prerequisites first: OVS parses left to right (nw_proto before icmp_type, dl_type before nw_src)
    order = [
        "in_port",
        "tunnel_id",
        "tun_ipv4_src",
        "tun_ipv4_dst",
        "eth_src",
        "eth_dst",
        "vlan_vid",
        "eth_type",
        "ip_proto",
        "ipv4_src",
        "ipv4_dst",
        "ipv6_src",
        "ipv6_dst",
        "nw_ttl",
        "arp_op",
        "arp_spa",
        "arp_tpa",
        "arp_sha",
        "arp_tha",
    ]
    keys = [k for k in order if k in packet] + sorted(k for k in packet if k not in order)
    proto = packet.get("ip_proto")
    parts = []
    for k in keys:
        if k in _LOCAL_STATE - {"in_port"}:
            continue
        v = packet[k]
        name = k if k.startswith("icmpv6_") else OVS_NAMES.get(k, k)  # OVS's icmp_type is ICMPv4 only
        if k in ("tcp_src", "tcp_dst", "udp_src", "udp_dst", "sctp_src", "sctp_dst") and proto is None:
            continue
        if isinstance(v, int) and k in ("eth_type", "tunnel_id", "vlan_vid"):
            parts.append(f"{name}={v:#x}")
        else:
            parts.append(f"{name}={v}")
    return ",".join(parts)


def vswitchd_ctl(ovsdb_address: str, chassis_id: str = "", ctl_dir: str = "") -> Path | None:
    """The chassis's ovs-vswitchd control socket, when its OVSDB is a local unix socket next to it, or, for
    a chassis on this machine reached over ssl: (the lab), in `ctl_dir`/<chassis id>/ (option vswitchd_ctl_dir)."""
    if ovsdb_address.startswith("unix:"):
        rundir = Path(ovsdb_address[len("unix:") :]).parent
    elif ctl_dir and chassis_id and "/" not in chassis_id and chassis_id not in (".", ".."):
        rundir = Path(ctl_dir) / chassis_id
    else:
        return None
    if not rundir.is_dir():
        return None
    found = sorted(rundir.glob("ovs-vswitchd.*.ctl")) + sorted(rundir.glob("ovs-vswitchd.ctl"))
    return next((p for p in found if p.is_socket()), None)


def ofproto_trace(
    chassis_id: str, ovsdb_address: str, packet: Mapping[str, Any], bridge: str = "br-int", ctl_dir: str = ""
) -> SwitchTrace:
    """`ovs-appctl -t CTL ofproto/trace br-int FLOW` on the chassis, if its control socket is reachable."""
    flow = ovs_flow_text(packet)
    ctl = vswitchd_ctl(ovsdb_address, chassis_id, ctl_dir)
    if ctl is None:
        return SwitchTrace(
            chassis_id, flow, "", f"no ovs-vswitchd control socket reachable for {ovsdb_address!r}"
        )
    try:
        proc = subprocess.run(
            ["ovs-appctl", "-t", str(ctl), "ofproto/trace", bridge, flow],
            capture_output=True,
            text=True,
            timeout=APPCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return SwitchTrace(chassis_id, flow, "", f"ovs-appctl failed: {err}")
    if proc.returncode != 0:
        return SwitchTrace(
            chassis_id, flow, proc.stdout, f"ovs-appctl exit {proc.returncode}: {proc.stderr.strip()}"
        )
    return SwitchTrace(chassis_id, flow, proc.stdout)
