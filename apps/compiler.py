"""Which flows each chassis wants, kept per owner unit, recompiled only where a change can reach.

A chassis's desired state is the union of units: ("pipeline", "") for the stage defaults, ("network", id)
for a network's classify/replication flows and groups, ("port", id) for a port's ARP, lookup, dispatch
and delivery flows. A change marks the units it can affect (on the chassis that host the network before
or after it); only those are recompiled, and their difference is what the switch is sent. Changes to a
chassis record, or to a chassis's tunnel/patch ports, recompile that chassis (or all) in full: rare.

`full()` computes a chassis from scratch; the property test checks incremental == full.

Several controllers (README "Several controllers"): a controller keeps the compile of the chassis it is
master of only (`scope`; None = every chassis, one controller). `take` compiles a chassis in full when it
becomes ours, `release` drops it; changes recompile only chassis in scope (the hosting sets, which say
where a change reaches, are kept for all). `compile_for` compiles any chassis once without keeping it
(debug tools asked about a chassis another controller masters).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from apps import (
    acl,
    arp,
    classify,
    defaults,
    dhcp,
    egress,
    firewall,
    l2,
    l3,
    lb,
    nat,
    plugin,
    port_security,
    vpn,
)
from apps.view import ChassisRuntime, View
from flows.flow import Flow, Group, MeterEntry
from topology.model import Change, Topology
from topology.records import OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Port

Item = Flow | Group | MeterEntry
#: kinds whose changes reach many units at once (rare): a write with one recompiles every chassis in full;
#: neighbours and gateway holds are read through Compiler.neighbors / .down, which the dataplane keeps
#: equal to the model's (Dataplane._sync_internal)
REBUILD_KINDS = ("chassis", "router", "floating_ip", "neighbor", "gateway_hold")
Unit = tuple[str, str]
PIPELINE: Unit = ("pipeline", "")


def compile_unit(view: View, chassis_id: str, unit: Unit) -> frozenset[Item]:
    kind, ident = unit
    if plugin.is_plugin_unit(kind):  # a plug-in's unit (apps/plugin.py checks what it compiled)
        return plugin.compile_unit(view, chassis_id, unit)
    if kind == "pipeline":
        if chassis_id not in view.topo.chassis:
            return frozenset()
        return frozenset(
            [
                *defaults.chassis_flows(),
                *dhcp.chassis_flows(),
                *port_security.chassis_flows(),
                *arp.chassis_flows(),
                *egress.chassis_flows(),
            ]
        )
    if kind == "router":
        router = view.topo.routers.get(ident)
        return frozenset(l3.router_flows(view, chassis_id, router)) if router is not None else frozenset()
    if kind == "network":
        net = view.topo.networks.get(ident)
        if net is None or not net.admin_state_up:
            return frozenset()
        return frozenset(
            [
                *classify.network_flows(view, chassis_id, net),
                *l2.network_flows(view, chassis_id, net),
                *egress.network_flows(view, chassis_id, net),
                *nat.network_flows(view, chassis_id, net),
            ]
        )
    if kind == "acl":
        return frozenset(acl.chassis_flows()) if chassis_id in view.topo.chassis else frozenset()
    if kind == "acl_clause":
        return frozenset(acl.clause_flows(view, chassis_id, ident))
    if kind == "sg_rule":
        rule = view.topo.sg_rules.get(ident)
        return frozenset(acl.rule_flows(view, chassis_id, rule)) if rule is not None else frozenset()
    if kind == lb.UNIT:
        rec = view.topo.load_balancers.get(ident)
        return frozenset(lb.lb_flows(view, chassis_id, rec)) if rec is not None else frozenset()
    if kind == firewall.UNIT:
        group = view.topo.firewall_groups.get(ident)
        return frozenset(firewall.group_flows(view, chassis_id, group)) if group is not None else frozenset()
    port = view.topo.ports.get(ident)
    if port is None:
        return frozenset()
    return frozenset(
        [
            *classify.port_flows(view, chassis_id, port),
            *arp.port_flows(view, chassis_id, port),
            *acl.port_flows(view, chassis_id, port),
            *l2.port_flows(view, chassis_id, port),
            *egress.port_flows(view, chassis_id, port),
            *port_security.port_flows(view, chassis_id, port),
            *dhcp.port_flows(view, chassis_id, port),
        ]
    )


def all_units(topo: Topology) -> list[Unit]:
    return [
        PIPELINE,
        *(("network", n) for n in topo.networks),
        *(("router", r) for r in topo.routers),
        *(("port", p) for p in topo.ports),
        *((firewall.UNIT, g) for g in topo.firewall_groups),
        *acl.all_units(topo),
        *lb.all_units(topo),
        *plugin.all_units(topo),
    ]


def divergence(
    chassis_id: str, want: Mapping[Unit, frozenset[Item]], have: Mapping[Unit, frozenset[Item]]
) -> Divergence:
    """A full compile's units (`want`) against the kept ones (`have`)."""
    out = Divergence(chassis_id)
    for unit in set(want) | set(have):
        new, old = want.get(unit, frozenset()), have.get(unit, frozenset())
        if new != old:
            out.units.add(unit)
            out.missing |= new - old
            out.extra |= old - new
    moved = out.missing & out.extra  # an item kept under another unit is no divergence of the switch
    out.missing -= moved
    out.extra -= moved
    out.full = dict(want)
    return out


def full(view: View, chassis_id: str) -> dict[Unit, frozenset[Item]]:
    """Every non-empty unit of a chassis, from scratch. A chassis whose OVSDB facts are not known yet has
    no desired state (its switch is not programmed before them)."""
    out: dict[Unit, frozenset[Item]] = {}
    if chassis_id not in view.runtime:
        return out
    for unit in all_units(view.topo):
        items = compile_unit(view, chassis_id, unit)
        if items:
            out[unit] = items
    return out


@dataclass
class Delta:
    add: set[Item] = field(default_factory=set)
    remove: set[Item] = field(default_factory=set)
    units: set[Unit] = field(default_factory=set)  # the units whose items changed

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


@dataclass
class Divergence:
    """What the incremental compile of a chassis holds that a full compile does not, and the reverse."""

    chassis: str
    missing: set[Item] = field(default_factory=set)  # in the full compile only
    extra: set[Item] = field(default_factory=set)  # in the incremental state only
    units: set[Unit] = field(default_factory=set)  # the owner units that differ
    full: dict[Unit, frozenset[Item]] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(self.units)


class Compiler:
    """Holds each chassis's compiled units and the hosting sets they were compiled with."""

    def __init__(
        self, gateway_chassis: Iterable[str] = (), dhcp_rate_pps: int = dhcp.DEFAULT_RATE_PPS
    ) -> None:
        self.units: dict[str, dict[Unit, frozenset[Item]]] = {}
        self.hosting: dict[str, frozenset[str]] = {}
        # security group -> chassis where it had a bound member when last compiled (its rules' flows are there)
        self.group_where: dict[str, frozenset[str]] = {}
        self.runtime: dict[str, ChassisRuntime] = {}
        self.gateway_chassis = tuple(gateway_chassis)
        self.dhcp_rate_pps = dhcp_rate_pps
        # learned MAC bindings of external next hops: network id -> {IPv4 address: MAC}
        self.neighbors: dict[str, dict[str, str]] = {}
        # gateway chassis held for failed (runtime liveness, set by the dataplane; a change is a rebuild)
        self.down: frozenset[str] = frozenset()
        # the chassis whose compile is kept (several controllers: those this one masters); None = all
        self.scope: set[str] | None = None
        # CPU seconds (of the compiling thread) spent compiling kept chassis' units (sdn_compile_cpu_seconds)
        self.cpu_s = 0.0
        self.units_compiled = 0  # owner units compiled for kept chassis (sdn_compile_units): work, not time

    def keeps(self, chassis_id: str) -> bool:
        """Is this chassis's compile kept here (and so incrementally updated)?"""
        return self.scope is None or chassis_id in self.scope

    def view(self, topo: Topology) -> View:
        return View(topo, self.runtime, self.gateway_chassis, self.neighbors, self.dhcp_rate_pps, self.down)

    def desired_count(self, chassis_id: str) -> int:
        """How many flows, groups and meters the chassis's kept compile holds (an item in two units twice)."""
        return sum(len(items) for items in self.units.get(chassis_id, {}).values())

    def desired(self, chassis_id: str) -> frozenset[Item]:
        return frozenset(item for items in self.units.get(chassis_id, {}).values() for item in items)

    # ------------------------------------------------------------------------------------------ entry points

    def rebuild(self, topo: Topology) -> dict[str, Delta]:
        """Recompile every chassis from scratch (start-up, chassis record changes)."""
        view = self.view(topo)
        self.hosting = {n: view.hosting(n) for n in topo.networks}
        self.group_where = {g: frozenset(where) for g, where in topo.group_chassis.items() if where}
        deltas = {}
        for ch in set(topo.chassis) | set(self.units):
            deltas[ch] = self._recompile(view, ch, all_units(topo) + list(self.units.get(ch, {})))
        return deltas

    def on_changes(self, topo: Topology, changes: Iterable[Change]) -> dict[str, Delta]:
        """Recompile what a model write can reach; returns the per-chassis difference."""
        changes = [c for c in changes if not _flow_neutral(c)]
        if not changes:
            return {}
        # chassis records and router topology (routers, their interfaces) change what many units look
        # like at once; they are rare: recompile everything
        if any(kind in REBUILD_KINDS or _routerish(old) or _routerish(new) for kind, _i, old, new in changes):
            return self.rebuild(topo)
        view = self.view(topo)
        nets: set[str] = set()
        ports: set[str] = set()
        sg = acl.Dirty()
        fw: set[str] = set()  # firewall groups whose rules, policies or interfaces changed
        lbs: set[str] = set()  # load balancers whose listeners, pools, members or networks changed
        plugged: set[Unit] = set()  # plug-ins' units the changes reach
        vpn_routers: set[str] = set()  # routers whose VPN flows the changes reach (in their router unit)
        for change in changes:
            plugged |= plugin.dirty_units(topo, change)
            vpn_routers |= vpn.changed_routers(topo, change)
        for kind, ident, old, new in changes:
            if kind in lb.KINDS:
                lbs |= lb.changed_lbs(topo, kind, old, new)
                if kind == "load_balancer":  # the VIP port's ARP answer follows the load balancer's state
                    ports.update(r.vip_port_id for r in (old, new) if r is not None)  # type: ignore[union-attr]
            if kind.startswith("firewall_"):
                fw |= firewall.changed_groups(topo, kind, old, new)
            if kind == "port":
                ports.add(ident)
                nets.update(r.network_id for r in (old, new) if r is not None)  # type: ignore[union-attr]
                acl.on_port_change(topo, old, new, sg)  # type: ignore[arg-type]
            elif kind == "security_group_rule":
                acl.on_rule_change(topo, old, new, sg)  # type: ignore[arg-type]
            elif kind == "network":
                nets.add(ident)
                ports.update(p.id for p in topo.ports_of(ident))
            elif kind == "subnet":  # DHCP options, enable_dhcp: what the network's ports get
                for rec in (old, new):
                    if rec is not None:
                        ports.update(p.id for p in topo.ports_of(rec.network_id))  # type: ignore[union-attr]
        # distributed routing: a chassis hosting one network of a routed component hosts them all
        nets = set().union(*(view.component(n) for n in nets)) if nets else set()
        lbs |= lb.lbs_near(view, nets)  # members' ports and the VIP port live in these networks
        dirty: dict[str, set[Unit]] = {}
        for n in nets:
            before = self.hosting.get(n, frozenset())
            after = view.hosting(n)
            if after:
                self.hosting[n] = after
            else:
                self.hosting.pop(n, None)
            for ch in before | after:
                dirty.setdefault(ch, set()).add(("network", n))
                dirty[ch].update(("router", r) for r in topo.routers_of(n))
                dirty[ch].update((firewall.UNIT, g) for g in firewall.groups_on(topo, n))
            # a chassis that starts or stops hosting the network needs (or drops) all of its ports' flows
            for ch in before ^ after:
                dirty[ch].update(("port", p.id) for p in topo.ports_of(n))
                dirty[ch].update(u for u in self.units.get(ch, {}) if u[0] == "port" and u[1] in ports)
        for g in sg.groups:
            now = frozenset(topo.group_chassis.get(g, {}))
            before = self.group_where.get(g, frozenset())
            if now != before:
                acl.on_relevance_change(topo, g, now ^ before, sg)
            if now:
                self.group_where[g] = now
            else:
                self.group_where.pop(g, None)
        ports |= sg.ports
        for unit, where in sg.units.items():
            for ch in where | {ch for ch, units in self.units.items() if unit in units}:
                dirty.setdefault(ch, set()).add(unit)
        for g in fw:
            unit = (firewall.UNIT, g)
            for ch in firewall.group_chassis(view, g) | {
                ch for ch, units in self.units.items() if unit in units
            }:
                dirty.setdefault(ch, set()).add(unit)
        for lb_id in lbs:
            unit = (lb.UNIT, lb_id)
            rec = topo.load_balancers.get(lb_id)
            vport = topo.ports.get(rec.vip_port_id) if rec is not None else None
            where = set(view.hosting(vport.network_id)) if vport is not None else set()
            for ch in where | {ch for ch, units in self.units.items() if unit in units}:
                dirty.setdefault(ch, set()).add(unit)
        for rid in vpn_routers:  # the router's own unit: on every chassis that routes it or may be its GC
            unit = ("router", rid)
            for ch in set(self.runtime) | {ch for ch, units in self.units.items() if unit in units}:
                dirty.setdefault(ch, set()).add(unit)
        # a plug-in unit may live on any chassis (its compile says where): recompiled on each that has runtime
        for unit in plugged:
            for ch in set(self.runtime) | {ch for ch, units in self.units.items() if unit in units}:
                dirty.setdefault(ch, set()).add(unit)
        for pid in ports:
            port = topo.ports.get(pid)
            net_id = port.network_id if port else None
            targets = set(self.hosting.get(net_id, frozenset())) if net_id else set()
            targets |= {ch for ch, units in self.units.items() if ("port", pid) in units}
            for ch in targets:
                dirty.setdefault(ch, set()).add(("port", pid))
        return {ch: self._recompile(view, ch, units) for ch, units in dirty.items()}

    def on_runtime(self, topo: Topology, runtime: ChassisRuntime) -> Delta:
        """A chassis's OVSDB facts changed (VIF plugged, tunnel port ofport learned...)."""
        old = self.runtime.get(runtime.chassis_id)
        self.runtime[runtime.chassis_id] = runtime
        ch = runtime.chassis_id
        view = self.view(topo)
        if old is None or old.tunnels != runtime.tunnels or old.patches != runtime.patches:
            return self._recompile(view, ch, all_units(topo) + list(self.units.get(ch, {})))
        units: set[Unit] = set()
        for pid in set(old.vifs) ^ set(runtime.vifs) | {
            p for p in runtime.vifs if old.vifs.get(p) != runtime.vifs[p]
        }:
            rid = vpn.router_of_iface(topo, pid)  # a VPN namespace's port: its router's VPN flows
            if rid is not None:
                units.add(("router", rid))
            port = topo.ports.get(pid)
            if port is not None:
                units |= {("port", pid), ("network", port.network_id)}
                # plug-ins see a VIF plugged or moved as a change of its port (its ofport is in the view)
                units |= plugin.dirty_units(topo, ("port", pid, port, port))
        return self._recompile(view, ch, units)

    def plan(self, topo: Topology, changes: Iterable[Change]) -> dict[str, Delta]:
        """What on_changes would do, without keeping it (validate_only): the compiler is left as it was."""
        saved_units = {ch: dict(units) for ch, units in self.units.items()}
        saved_hosting, saved_groups = dict(self.hosting), dict(self.group_where)
        try:
            return {ch: d for ch, d in self.on_changes(topo, changes).items() if d}
        finally:
            self.units, self.hosting, self.group_where = saved_units, saved_hosting, saved_groups

    def check(self, topo: Topology, chassis_id: str) -> Divergence:
        """The self-check: this chassis's incremental units against a full compile from scratch (a chassis
        whose compile is not kept here has nothing to check)."""
        if not self.keeps(chassis_id):
            return Divergence(chassis_id)
        return divergence(chassis_id, full(self.view(topo), chassis_id), self.units.get(chassis_id, {}))

    def repair(self, div: Divergence) -> Delta:
        """Replace the chassis's units with the full compile `check` made; the switch gets the difference."""
        current = self.units.setdefault(div.chassis, {})
        for unit in div.units:
            if unit in div.full:
                current[unit] = div.full[unit]
            else:
                current.pop(unit, None)
        return Delta(set(div.missing), set(div.extra), set(div.units))

    def forget(self, chassis_id: str) -> None:
        self.units.pop(chassis_id, None)
        self.runtime.pop(chassis_id, None)

    def take(self, topo: Topology, chassis_id: str) -> Delta:
        """Keep this chassis's compile from now on: compiled in full now (nothing if its runtime facts are
        not known yet: on_runtime compiles it when they arrive). Its delta is everything."""
        if self.scope is None or chassis_id in self.scope:
            return Delta()
        self.scope.add(chassis_id)
        return self._recompile(self.view(topo), chassis_id, all_units(topo))

    def release(self, chassis_id: str) -> None:
        """Stop keeping this chassis's compile (another controller masters it): its units are dropped."""
        if self.scope is not None:
            self.scope.discard(chassis_id)
            self.units.pop(chassis_id, None)

    def compile_for(self, topo: Topology, chassis_id: str) -> frozenset[Item]:
        """The chassis's desired state: the kept compile, or (a chassis not in scope) a full compile made
        for this call and not kept."""
        if self.keeps(chassis_id):
            return self.desired(chassis_id)
        return frozenset(item for items in full(self.view(topo), chassis_id).values() for item in items)

    # ------------------------------------------------------------------------------------------ internals

    def _recompile(self, view: View, chassis_id: str, units: Iterable[Unit]) -> Delta:
        delta = Delta()
        if chassis_id not in view.runtime or not self.keeps(chassis_id):
            return delta  # compiled in full when its runtime facts arrive (on_runtime), or when taken
        t0 = time.thread_time()
        current = self.units.setdefault(chassis_id, {})
        units = set(units)
        self.units_compiled += len(units)
        for unit in units:
            new = compile_unit(view, chassis_id, unit)
            old = current.get(unit, frozenset())
            if new == old:
                continue
            delta.add |= new - old
            delta.remove |= old - new
            delta.units.add(unit)
            if new:
                current[unit] = new
            else:
                current.pop(unit, None)
        if not current and chassis_id not in view.topo.chassis:
            self.units.pop(chassis_id, None)
        # an item that merely moved between units is neither added nor removed
        both = delta.add & delta.remove
        delta.add -= both
        delta.remove -= both
        self.cpu_s += time.thread_time() - t0
        return delta


def _flow_neutral(change: Change) -> bool:
    """A port update that changes only its status (ACTIVE/DOWN: what the switch confirmed, written back)
    and its revision and time: no flow reads them, and there is one such write per port per realization."""
    kind, _ident, old, new = change
    if kind != "port" or not isinstance(old, Port) or not isinstance(new, Port):
        return False
    return (
        dataclasses.replace(old, status=new.status, revision=new.revision, update_time=new.update_time) == new
    )


def _routerish(rec: object) -> bool:
    return getattr(rec, "device_owner", "") in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY)


def desired_from_scratch(
    topo: Topology,
    runtime: Mapping[str, ChassisRuntime],
    chassis_id: str,
    gateway_chassis: Iterable[str] = (),
    neighbors: Mapping[str, Mapping[str, str]] | None = None,
    down: frozenset[str] = frozenset(),
) -> frozenset[Item]:
    view = View(topo, runtime, tuple(gateway_chassis), neighbors, down=down)
    return frozenset(item for items in full(view, chassis_id).values() for item in items)
