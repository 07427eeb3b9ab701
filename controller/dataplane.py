"""The dataplane glue: model writes and chassis facts in, per-switch flow deltas out, port state back.

    State write ──listener (under the model lock)──► Compiler.on_changes ──► SwitchSync.apply (per chassis)
    ChassisAgent (OVSDB) ──on_change──► Compiler.on_runtime ──► SwitchSync.apply; VIF iface-id ──► binding
    SwitchSync ──on_realized──► port status ACTIVE, WaitRealized waiters

Each chassis gets its switch's desired state only once its OVSDB facts (ofports) are known, so a
controller restart never tells a switch to delete flows it merely has not recompiled yet (hitless).
Sequence numbers given to a SwitchSync are ours (`seq`), mapped back to model revisions here: a change of
a chassis's ofports changes its flows without a model revision.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import netaddr

from apps.compiler import Compiler, Delta, Divergence
from apps.view import ChassisRuntime
from controller.api.context import REQUEST
from controller.debug.selfcheck import SelfCheck
from controller.services import announce
from controller.southbound.liveness import GatewayLiveness
from flows.cookie import MAGIC
from topology import binding, ops
from topology.model import Change, Topology
from topology.records import INTERNAL_KINDS, PORT_ACTIVE, PORT_DOWN, Chassis, GatewayHold, Neighbor
from topology.state import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PacketIn:
    """A packet-in for an app's handler (registered in Dataplane.packet_in_apps by the cookie's app id),
    called on the dataplane worker under the model lock: reply with Dataplane.packet_out."""

    chassis_id: str
    datapath_id: int
    data: bytes
    match: dict[str, Any]  # the packet-in's match: in_port, metadata, registers
    topo: Topology
    view: Any  # apps.view.View of the current model


PacketInHandler = Callable[[PacketIn], None]


class Engine(Protocol):
    """What the dataplane needs from a per-switch sync engine (controller.southbound.sync.SwitchSync)."""

    realized_revision: int

    def apply(self, add: Any, remove: Any, revision: int) -> None: ...
    def replace_desired(self, items: Any, revision: int) -> None: ...


class Agent(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def update(self, *, controller_targets: Any = None, bridge_mappings: Any = None) -> None: ...


@dataclass
class ChassisPlane:
    """The dataplane's bookkeeping for one chassis."""

    chassis_id: str
    datapath_id: int
    agent: Agent | None = None
    engine: Engine | None = None
    runtime: ChassisRuntime | None = None
    seq: int = 0
    history: list[tuple[int, int]] = field(default_factory=list)  # (model revision, seq), oldest first
    port_seq: dict[str, int] = field(default_factory=dict)  # port id -> seq of its last flow change
    pending_status: set[str] = field(default_factory=set)  # ports whose ACTIVE/DOWN may have to change
    ovsdb_connected: bool = True  # the OVSDB agent's session is up (its last report said so)
    drift_repairs: int = 0  # flows/groups the drift monitor found wrong on the switch and had repaired
    compile_divergences: int = 0  # self-checks that found the incremental compile != a full compile

    def realized_seq(self) -> int:
        return self.engine.realized_revision if self.engine is not None else 0

    def realized_model_revision(self) -> int:
        """The newest model revision whose flows this chassis's switch has confirmed."""
        realized, out = self.realized_seq(), 0
        for rev, seq in self.history:
            if seq <= realized:
                out = rev
        return out

    def needed_seq(self, revision: int) -> int:
        """The seq that realizes every change of this chassis up to model revision `revision`."""
        needed = 0
        for rev, seq in self.history:
            if rev > revision:
                break
            needed = seq
        return needed


AgentFactory = Callable[[Chassis, Callable[[str, Any], None]], Agent]
EngineFactory = Callable[[int, Callable[[int, int], None]], Engine]


class Dataplane:
    def __init__(
        self,
        state: State,
        engine_factory: EngineFactory,
        agent_factory: AgentFactory,
        packet_ins: Callable[[int], int] = lambda _dpid: 0,
        gateway_chassis: tuple[str, ...] = (),
        neighbors_file: Path | None = None,
        dhcp_rate_pps: int = 10,
        connected: Callable[[int], bool] | None = None,
        gateway_failover_s: float = 3.0,
        neighbor_ttl_s: float = 600.0,
        gateways_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.25,
        startup_grace_s: float = 10.0,
        self_check_interval_s: float = 0.0,
        self_check_every_change: bool = False,
    ) -> None:
        self.state = state
        self.packet_ins = packet_ins
        self.compiler = Compiler(gateway_chassis, dhcp_rate_pps)
        self.clock = clock
        # gateway failover: is a switch connected (OpenFlow)? None: the dataplane cannot tell (always yes)
        self.connected = connected if connected is not None else (lambda _dpid: True)
        self.gateways_file = gateways_file  # the JSON file earlier versions kept holds in (migrated at start)
        held = frozenset(state.topology.gateway_holds) | self._load_down()
        self.liveness = GatewayLiveness(gateway_failover_s, clock(), startup_grace_s, held)
        self.compiler.down = self.liveness.down
        self.announcer = announce.Announcer()  # gratuitous ARPs for addresses that appear or move
        # neighbour expiry: (network, address) -> when last confirmed by an ARP reply / first re-probed
        self.neighbor_ttl_s = neighbor_ttl_s
        self._confirmed: dict[tuple[str, str], float] = {}
        self._reprobing: dict[tuple[str, str], float] = {}
        self._tick_s = tick_s
        self._ticker_stop = threading.Event()
        # sends a packet out a port of a switch: (datapath id, bytes, ofport) -> sent (attached by main)
        self.packet_out: Callable[[int, bytes, int], bool] | None = None
        self.vswitchd_ctl_dir = ""  # co-located chassis' ovs-vswitchd control sockets (trace.vswitchd_ctl)
        # app id (apps.ids) -> handler of packet-ins from flows that app compiled (DHCP, firewall reject...)
        self.packet_in_apps: dict[int, PacketInHandler] = {}
        self._probed: dict[tuple[str, str, str], float] = {}  # (chassis, network, address) -> last probe
        # the JSON file earlier versions kept learnt next hops in (migrated into the store at start)
        self.neighbors_file = neighbors_file
        self.planes: dict[str, ChassisPlane] = {}
        self._engine_factory = engine_factory
        self.drift: Any = None  # controller.debug.drift.DriftMonitor, attached by main
        self.health: Any = (
            None  # controller.services.health.HealthService (load-balancer monitors), attached by main
        )
        self._agent_factory = agent_factory
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run_worker, name="dataplane", daemon=True)
        self.realized = threading.Condition(threading.Lock())
        # why each unit's flows are what they are: (chassis, unit) -> (model revision, request)
        self.provenance: dict[tuple[str, tuple[str, str]], tuple[int, str]] = {}
        self.selfcheck = SelfCheck(self, self_check_interval_s)
        self.self_check_every_change = self_check_every_change

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._migrate_files()
        with self.state.lock:
            topo = self.state.topology
            self._sync_internal(topo)
            now = self.clock()  # ages are not kept: a stored binding counts as confirmed at start
            self._confirmed = {(n, ip): now for n, m in self.compiler.neighbors.items() for ip in m}
            self.compiler.rebuild(topo)
            for ch in topo.chassis.values():
                self._add_chassis(ch)
            self.state.add_listener(self._on_write)
            self.announcer.reset(self.compiler.view(topo))  # a start announces nothing: nothing moved
            self.state.add_listener(self._announce_on_write)
        self._worker.start()
        self.selfcheck.start()
        if self._tick_s > 0:
            threading.Thread(target=self._run_ticker, name="dataplane-ticker", daemon=True).start()

    def stop(self) -> None:
        self.selfcheck.stop()
        self._ticker_stop.set()
        self._work.put(None)
        self._worker.join(timeout=10)
        for plane in list(self.planes.values()):
            if plane.agent is not None:
                plane.agent.stop()

    def _run_worker(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                self._work.task_done()
                return
            try:
                job()
            except Exception:
                log.exception("dataplane job failed")
            finally:
                self._work.task_done()

    def settle(self) -> None:
        """Wait until the worker has run every queued job (and the jobs they queued): bindings, statuses."""
        self._work.join()

    # ------------------------------------------------------------------------------------------ chassis

    def _add_chassis(self, ch: Chassis) -> None:
        plane = ChassisPlane(ch.id, ch.datapath_id)
        self.planes[ch.id] = plane
        if ch.ovsdb_address:
            plane.agent = self._agent_factory(ch, self._on_runtime)
            self._work.put(plane.agent.start)
        else:
            log.warning("chassis %s has no OVSDB address: it gets no flows until it has one", ch.id)

    def _remove_chassis(self, chassis_id: str) -> None:
        plane = self.planes.pop(chassis_id, None)
        self.provenance = {k: v for k, v in self.provenance.items() if k[0] != chassis_id}
        self.compiler.forget(chassis_id)
        self.liveness.forget(chassis_id)
        if plane is not None and plane.agent is not None:
            self._work.put(plane.agent.stop)

    # ------------------------------------------------------------------------------------------ inputs

    def _on_write(self, revision: int, changes: list[Change]) -> None:
        """State listener, called under the model lock after each applied write."""
        topo = self.state.topology
        for kind, ident, old, new in changes:
            if kind != "chassis":
                continue
            if new is None:
                self._remove_chassis(ident)
            elif old is None:
                self._add_chassis(new)  # type: ignore[arg-type]
            elif (old.datapath_id, old.ovsdb_address) != (new.datapath_id, new.ovsdb_address):  # type: ignore[union-attr]
                self._remove_chassis(ident)
                self._add_chassis(new)  # type: ignore[arg-type]
            elif old.bridge_mappings != new.bridge_mappings:  # type: ignore[union-attr]
                plane = self.planes.get(ident)
                if plane is not None and plane.agent is not None:
                    mappings = dict(new.bridge_mappings)  # type: ignore[union-attr]
                    self._work.put(functools.partial(plane.agent.update, bridge_mappings=mappings))
        if any(kind in INTERNAL_KINDS for kind, _i, _o, _n in changes):
            self._sync_internal(topo)
        deltas = self.compiler.on_changes(topo, changes)
        why = REQUEST.get() or "controller"
        for chassis_id, delta in deltas.items():
            for unit in delta.units:
                self.provenance[(chassis_id, unit)] = (revision, why)
            self._push(chassis_id, delta, revision)
        # a port written after its VIF was plugged (or re-created, or unpinned) binds now, not at the next
        # OVSDB report of its chassis
        self._rebind(
            topo, [ident for kind, ident, _old, new in changes if kind == "port" and new is not None]
        )
        self._after_change()

    def _on_runtime(self, chassis_id: str, ports: Any) -> None:
        """ChassisAgent callback (its thread): the chassis's ofports, as ChassisPorts."""
        runtime = ChassisRuntime(chassis_id, dict(ports.vifs), dict(ports.tunnels), dict(ports.patches))
        with self.state.lock:
            plane = self.planes.get(chassis_id)
            if plane is None:
                return
            plane.ovsdb_connected = bool(getattr(ports, "connected", True))
            topo = self.state.topology
            delta = self.compiler.on_runtime(topo, runtime)
            first = plane.runtime is None
            old_runtime = plane.runtime
            if plane.runtime is not None:
                old = plane.runtime.vifs
                plane.pending_status |= {p for p in set(old) ^ set(runtime.vifs) if p in topo.ports}
            plane.runtime = runtime
            why = f"ovsdb {chassis_id}: {'first contact' if first else 'ports changed'}"
            for unit in self.compiler.units.get(chassis_id, {}) if first else delta.units:
                self.provenance[(chassis_id, unit)] = (self.state.revision, why)
            if first:
                self._make_engine(plane)
            else:
                self._push(chassis_id, delta, self.state.revision)
            old_vifs = set() if first or old_runtime is None else set(old_runtime.vifs)
            self._rebind(topo, set(runtime.vifs) ^ old_vifs, warn=True)
            self._after_change()
        self._work.put(functools.partial(self._update_statuses, chassis_id))

    def _after_change(self) -> None:
        """Tests: the self-check after every change (the caller holds the model lock)."""
        if self.self_check_every_change:
            for chassis_id in sorted(self.planes):
                self.selfcheck.check_locked(chassis_id, repair=True)

    def repair_compile(self, div: Divergence) -> None:
        """Make a chassis's desired state its full compile (the self-check found them apart); the caller
        holds the model lock."""
        delta = self.compiler.repair(div)
        for unit in delta.units:
            self.provenance[(div.chassis, unit)] = (self.state.revision, "compile self-check repair")
        self._push(div.chassis, delta, self.state.revision)

    def _make_engine(self, plane: ChassisPlane) -> None:
        plane.seq += 1
        plane.engine = self._engine_factory(plane.datapath_id, self._on_realized)
        desired = self.compiler.desired(plane.chassis_id)
        plane.history.append((self.state.revision, plane.seq))
        plane.port_seq = {pid: plane.seq for pid in self._port_owners(plane.chassis_id)}
        plane.pending_status = {p.id for p in self.state.topology.ports_on_chassis(plane.chassis_id)}
        plane.engine.replace_desired(desired, plane.seq)
        log.info("chassis %s: %d desired flows/groups handed to its switch", plane.chassis_id, len(desired))

    def why(self, chassis_id: str, owner_id: str) -> tuple[int, str] | None:
        """(revision, request) that last changed the flows `owner_id` (a port, network or "pipeline") owns."""
        for kind in ("port", "network", "pipeline"):
            unit = (kind, "" if kind == "pipeline" else owner_id)
            if kind == "pipeline" and owner_id != "pipeline":
                continue
            got = self.provenance.get((chassis_id, unit))
            if got is not None:
                return got
        return None

    def _port_owners(self, chassis_id: str) -> list[str]:
        return [u[1] for u in self.compiler.units.get(chassis_id, {}) if u[0] == "port"]

    def _push(self, chassis_id: str, delta: Delta, revision: int) -> None:
        plane = self.planes.get(chassis_id)
        if plane is None or plane.engine is None or not delta:
            return
        plane.seq += 1
        plane.history.append((revision, plane.seq))
        realized = plane.realized_seq()
        while len(plane.history) > 1 and plane.history[1][1] <= realized:
            plane.history.pop(0)  # keep one realized entry: it answers "realized up to which revision"
        for kind, ident in delta.units:
            if kind == "port":
                plane.port_seq[ident] = plane.seq
                plane.pending_status.add(ident)
        plane.engine.apply(delta.add, delta.remove, plane.seq)

    def reports(self) -> dict[str, Mapping[str, int]]:
        """Each chassis's VIFs (port id -> ofport) as its OVSDB last reported them (chassis not heard from:
        none). The runtime's own mappings, not copies: a port write asks this, whatever the number of VIFs."""
        return {ch: p.runtime.vifs for ch, p in self.planes.items() if p.runtime is not None}

    def _rebind(self, topo: Topology, port_ids: Iterable[str], warn: bool = False) -> None:
        """Bind the ports among `port_ids` whose binding is not what topology.binding says: a write of its
        own, queued (we are under the model lock, inside a write or a chassis report). `warn`: log a VIF
        reported for a port pinned elsewhere (once per report, not on every write of the port)."""
        reports = self.reports()
        todo = binding.stale(topo, reports, port_ids)
        for pid in port_ids if warn else ():
            port = topo.ports.get(pid)
            if port is not None and (elsewhere := binding.conflicts(port, reports)):
                log.warning(
                    "port %s is pinned to chassis %s; its VIF on %s is ignored",
                    pid,
                    port.requested_chassis,
                    ", ".join(elsewhere),
                )
        if not todo:
            return

        def bind() -> None:
            def fn(t: Topology, rev: int, now: float) -> list[Change]:
                return binding.rebind(t, self.reports(), todo, rev, now)

            _rev, changes = self.state.write(fn)
            for _k, pid, old, new in changes:
                log.info(
                    "port %s bound to chassis %s (was %s)",
                    pid,
                    new.binding_chassis or "-",  # type: ignore[union-attr]
                    old.binding_chassis or "-",  # type: ignore[union-attr]
                )

        self._work.put(bind)

    # ------------------------------------------------------------------------------------------ neighbours

    #: at most one ARP probe per (chassis, external network, address) per this many seconds
    PROBE_INTERVAL_S = 1.0

    def on_packet_in(self, dpid: int, data: bytes, match: dict[str, Any], cookie: int = 0) -> None:
        """OFApp callback (os-ken's thread): handled on the dataplane worker. A packet-in whose flow's cookie
        names an app registered in `packet_in_apps` goes to that app's handler; the rest are the NAT
        app's (neighbour learning and probes)."""
        app = (cookie >> 48) & 0xFF if (cookie >> 56) == MAGIC else 0
        handler = self.packet_in_apps.get(app)
        if handler is not None:
            self._work.put(functools.partial(self._app_packet_in, handler, dpid, data, match))
        else:
            self._work.put(functools.partial(self._packet_in, dpid, data, match))

    def _app_packet_in(self, handler: PacketInHandler, dpid: int, data: bytes, match: dict[str, Any]) -> None:
        with self.state.lock:
            plane = next((p for p in self.planes.values() if p.datapath_id == dpid), None)
            if plane is None or plane.runtime is None:
                return
            try:
                handler(
                    PacketIn(
                        plane.chassis_id,
                        dpid,
                        data,
                        match,
                        self.state.topology,
                        self.compiler.view(self.state.topology),
                    )
                )
            except Exception:
                log.exception("packet-in handler failed on chassis %s", plane.chassis_id)

    def _packet_in(self, dpid: int, data: bytes, match: dict[str, Any]) -> None:
        """An ARP reply to a router's gateway MAC teaches a binding; a routed packet whose external next hop
        is unknown makes the controller probe for it."""
        from os_ken.lib.packet import arp, ethernet, ipv4, packet

        try:
            pkt = packet.Packet(data)
        except Exception:  # noqa: BLE001 - a packet we cannot parse is not ours to handle
            return
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None:
            return
        with self.state.lock:
            topo = self.state.topology
            plane = next((p for p in self.planes.values() if p.datapath_id == dpid), None)
            if plane is None or plane.runtime is None:
                return
            view = self.compiler.view(topo)
            gateways = [
                (r, gwp)
                for r in topo.routers.values()
                if view.gateway_of(r) == plane.chassis_id and (gwp := view.gateway_port(r)) is not None
            ]
            a = pkt.get_protocol(arp.arp)
            if a is not None:
                if a.opcode == arp.ARP_REPLY:
                    for router, gwp in gateways:
                        if gwp.mac == eth.dst:
                            self._learn(topo, router.gateway_network_id, a.src_ip, a.src_mac)
                            break
                return
            ip = pkt.get_protocol(ipv4.ipv4)
            if ip is None:
                return
            net = next((n for n in topo.networks.values() if n.key == match.get("metadata")), None)
            if net is None:
                return
            reg0 = match.get("reg0")
            nexthop = str(netaddr.IPAddress(reg0)) if isinstance(reg0, int) and reg0 else ip.dst
            self._probe(plane, net, nexthop, [gwp for r, gwp in gateways if r.gateway_network_id == net.id])

    def _learn(self, topo: Topology, network_id: str, ip: str, mac: str) -> None:
        """An ARP reply to a gateway's probe: the address's MAC, written to the store if it is news (the
        write recompiles, see _on_write)."""
        self._confirmed[(network_id, ip)] = self.clock()
        self._reprobing.pop((network_id, ip), None)
        ident = f"{network_id}|{ip}"
        old = topo.neighbors.get(ident)
        if old is not None and old.mac == mac:
            return

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            before = t.neighbors.get(ident)
            if before is not None and before.mac == mac:
                return []
            new = Neighbor(
                id=ident,
                network_id=network_id,
                address=ip,
                mac=mac,
                revision=rev,
                create_time=before.create_time if before is not None else now,
                update_time=now,
            )
            return [("neighbor", ident, before, new)]

        self._internal_write(fn, "neighbour learnt")
        log.info("external network %s: %s is at %s", network_id, ip, mac)

    def _sync_internal(self, topo: Topology) -> None:
        """The compiler reads learnt neighbours and held gateways from these copies of the model's records."""
        self.compiler.neighbors = topo.neighbor_map()
        self.compiler.down = frozenset(topo.gateway_holds)

    def _internal_write(self, fn: Callable[[Topology, int, float], list[Change]], why: str) -> None:
        """A write of the controller's own state (neighbours, gateway holds), named in flow provenance."""
        token = REQUEST.set(why)
        try:
            self.state.write(fn)
        except Exception:
            log.exception("could not store %s", why)
        finally:
            REQUEST.reset(token)

    def _migrate_files(self) -> None:
        """Earlier versions kept learnt neighbours and gateway holds in JSON files beside the store: move
        them into it once, then remove the files."""
        if self.neighbors_file is not None and self.neighbors_file.exists():
            try:
                data = json.loads(self.neighbors_file.read_text())
                found = [(str(n), str(ip), str(mac)) for n, m in data.items() for ip, mac in m.items()]
            except (OSError, ValueError, AttributeError):
                found = []
                log.warning("%s unreadable: external next hops are learnt again", self.neighbors_file)

            def fn(t: Topology, rev: int, now: float) -> list[Change]:
                return [
                    (
                        "neighbor",
                        f"{n}|{ip}",
                        None,
                        Neighbor(
                            id=f"{n}|{ip}",
                            network_id=n,
                            address=ip,
                            mac=mac,
                            revision=rev,
                            create_time=now,
                            update_time=now,
                        ),
                    )
                    for n, ip, mac in found
                    if f"{n}|{ip}" not in t.neighbors and n in t.networks
                ]

            self._internal_write(fn, "neighbours migrated from " + self.neighbors_file.name)
            self.neighbors_file.unlink(missing_ok=True)
        if self.gateways_file is not None and self.gateways_file.exists():
            held = self._load_down()
            self._internal_write(
                lambda t, rev, now: [
                    (
                        "gateway_hold",
                        c,
                        None,
                        GatewayHold(id=c, revision=rev, create_time=now, update_time=now),
                    )
                    for c in sorted(held)
                    if c not in t.gateway_holds
                ],
                "gateway holds migrated",
            )
            self.gateways_file.unlink(missing_ok=True)

    def _probe(self, plane: ChassisPlane, net: Any, nexthop: str, gw_ports: list[Any]) -> None:
        """ARP request for `nexthop` from a gateway port's MAC and address, out the chassis's patch port."""
        key = (plane.chassis_id, net.id, nexthop)
        now = self.clock()
        if now - self._probed.get(key, -1e9) < self.PROBE_INTERVAL_S or self.packet_out is None:
            return
        if len(self._probed) > 4096:  # forget old probes: the table must not grow with every address tried
            self._probed = {k: t for k, t in self._probed.items() if now - t < self.PROBE_INTERVAL_S}
        assert plane.runtime is not None
        patch = plane.runtime.patches.get(net.physical_network)
        target = netaddr.IPAddress(nexthop)
        for gwp in gw_ports:
            src = next(
                (
                    ip
                    for sid, ip in gwp.fixed_ips
                    if (sub := self.state.topology.subnets.get(sid)) is not None
                    and target in netaddr.IPNetwork(sub.cidr)
                ),
                None,
            )
            if src is None or patch is None:
                continue
            self._probed[key] = now
            self.packet_out(plane.datapath_id, _arp_request(net, gwp.mac, src, nexthop), patch)
            log.info("chassis %s: ARP probe for %s on %s", plane.chassis_id, nexthop, net.id)
            return

    # ------------------------------------------------------------------------------------------ timers

    #: a binding re-probed this long without an answer is removed (probes go once a second meanwhile)
    NEIGHBOR_PROBE_WAIT_S = 3.0

    def _run_ticker(self) -> None:
        while not self._ticker_stop.wait(self._tick_s):
            self._work.put(self.tick)

    def tick(self) -> None:
        """Timed work (the ticker queues it on the worker): gateway liveness, gratuitous ARPs, neighbour
        expiry."""
        with self.state.lock:
            now = self.clock()
            self._gateway_liveness(now)
            self._send_announcements(now)
            self._age_neighbors(now)

    def _healthy(self, plane: ChassisPlane) -> bool:
        return plane.runtime is not None and plane.ovsdb_connected and self.connected(plane.datapath_id)

    def _gateway_liveness(self, now: float) -> None:
        """Observe each gateway chassis; when the down set changes, recompile (routers move to the next
        candidate, or back to a preferred one) and announce the moved routers' addresses."""
        for ch_id in self.compiler.gateway_chassis:
            plane = self.planes.get(ch_id)
            if plane is not None:
                self.liveness.observe(ch_id, self._healthy(plane), now)
        if not self.liveness.update(now):
            return
        topo = self.state.topology
        before = {r.id: self.compiler.view(topo).gateway_of(r) for r in topo.routers.values()}
        log.warning("gateway chassis held down: %s", ", ".join(sorted(self.liveness.down)) or "none")
        down = self.liveness.down

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            changes: list[Change] = [
                ("gateway_hold", c, t.gateway_holds[c], None) for c in sorted(set(t.gateway_holds) - down)
            ]
            return changes + [
                ("gateway_hold", c, None, GatewayHold(id=c, revision=rev, create_time=now, update_time=now))
                for c in sorted(down - set(t.gateway_holds))
            ]

        self._internal_write(fn, "gateway failover")  # the write moves the routers (_on_write recompiles)
        topo = self.state.topology
        view = self.compiler.view(topo)
        for r in topo.routers.values():
            gc = view.gateway_of(r)
            if gc != before.get(r.id):
                log.warning("router %s: gateway chassis %s -> %s", r.id, before.get(r.id), gc)
        # the moved routers' gateway addresses and floating IPs, from their new gateway chassis, at once
        self.announcer.update(view, now, 0)

    # ------------------------------------------------------------------------------------------ announcements

    def _announce_on_write(self, revision: int, changes: list[Change]) -> None:
        """State listener (after _on_write): router interfaces, gateways, floating IPs and VIPs that appeared,
        changed MAC or moved are announced (controller/announce.py) once this revision's flows are realized."""
        if any(announce.may_change(c) for c in changes):
            moved = self.announcer.update(self.compiler.view(self.state.topology), self.clock(), revision)
            if moved:
                log.info("to announce: %s", ", ".join(f"{c.address} at {c.mac}" for c in moved))

    def _send_announcements(self, now: float) -> None:
        """Send the due gratuitous ARPs (requests, sender = target = the address, from the claiming MAC):
        a gateway chassis's out its patch port (the physical network's switches and hosts learn where the
        address is), a distributed claim's out each local VM port of its network (VMs replace a stale MAC)."""
        if not self.announcer.pending:
            return
        if self.packet_out is None:
            self.announcer.pending.clear()
            return
        topo = self.state.topology
        view = self.compiler.view(topo)
        out: dict[int, list[tuple[int, bytes]]] = {}

        def targets(p: announce.Pending) -> list[tuple[int, bytes]]:
            got = out.get(id(p))
            if got is None:
                got = out[id(p)] = self._announce_targets(view, p)
            return got

        for p in self.announcer.due(now, self._realized_for_announce, lambda p: len(targets(p))):
            plane = self.planes[p.chassis]
            for ofport, data in targets(p):
                self.packet_out(plane.datapath_id, data, ofport)
            if targets(p):
                log.info(
                    "chassis %s: gratuitous ARP for %s at %s (%d ports)",
                    p.chassis,
                    p.claim.address,
                    p.claim.mac,
                    len(targets(p)),
                )

    def _announce_realized(self) -> None:
        """A switch confirmed flows: announcements waiting for them go now, not at the next tick."""
        with self.state.lock:
            self._send_announcements(self.clock())

    def _realized_for_announce(self, chassis_id: str, revision: int) -> bool:
        plane = self.planes.get(chassis_id)
        if plane is None or plane.engine is None or plane.runtime is None:
            return False
        return revision <= 0 or plane.realized_seq() >= plane.needed_seq(revision)

    def _announce_targets(self, view: Any, p: announce.Pending) -> list[tuple[int, bytes]]:
        """(ofport, packet) of one announcement on its chassis."""
        plane = self.planes.get(p.chassis)
        net = view.topo.networks.get(p.claim.network_id)
        if plane is None or plane.runtime is None or net is None:
            return []
        if p.claim.chassis is not None:
            patch = plane.runtime.patches.get(net.physical_network)
            data = announce.garp(p.claim.mac, p.claim.address, announce.uplink_vlan(net))
            return [] if patch is None else [(patch, data)]
        data = announce.garp(p.claim.mac, p.claim.address)
        return [
            (ofport, data)
            for port in view.local_ports(p.chassis, net.id)
            if (ofport := view.local_ofport(p.chassis, port)) is not None
        ]

    def _age_neighbors(self, now: float) -> None:
        """A binding not confirmed for neighbor_ttl_s is probed again (once a second); still unanswered
        after NEIGHBOR_PROBE_WAIT_S it is removed (the next packet to it misses and is probed afresh)."""
        if self.neighbor_ttl_s <= 0:
            return
        topo = self.state.topology
        view = None
        removed: list[str] = []
        for net_id, known in sorted(topo.neighbor_map().items()):
            for ip in sorted(known):
                key = (net_id, ip)
                confirmed = self._confirmed.setdefault(key, now)
                if now - confirmed < self.neighbor_ttl_s:
                    continue
                started = self._reprobing.setdefault(key, now)
                if now - started >= self.NEIGHBOR_PROBE_WAIT_S:
                    self._confirmed.pop(key, None)
                    self._reprobing.pop(key, None)
                    removed.append(f"{net_id}|{ip}")
                    log.info("external network %s: %s expired (no answer to its probes)", net_id, ip)
                    continue
                net = topo.networks.get(net_id)
                if net is None:
                    continue
                view = view or self.compiler.view(topo)
                for router in sorted(topo.routers.values(), key=lambda r: r.id):
                    gc = view.gateway_of(router) if router.gateway_network_id == net_id else None
                    plane = self.planes.get(gc) if gc is not None else None
                    gwp = view.gateway_port(router)
                    if plane is not None and plane.runtime is not None and gwp is not None:
                        self._probe(plane, net, ip, [gwp])
                        break
        if removed:
            self._internal_write(
                lambda t, _rev, _now: [
                    ("neighbor", i, t.neighbors[i], None) for i in removed if i in t.neighbors
                ],
                "neighbour expired",
            )

    def _load_down(self) -> frozenset[str]:
        if self.gateways_file is None or not self.gateways_file.exists():
            return frozenset()
        try:
            return frozenset(str(c) for c in json.loads(self.gateways_file.read_text()).get("down", []))
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("%s unreadable: every gateway chassis starts up", self.gateways_file)
            return frozenset()

    # ------------------------------------------------------------------------------------------ realized

    def _on_realized(self, datapath_id: int, seq: int) -> None:
        with self.realized:
            self.realized.notify_all()
        for plane in list(self.planes.values()):
            if plane.datapath_id == datapath_id:
                self._work.put(functools.partial(self._update_statuses, plane.chassis_id))
        if self.announcer.pending:
            self._work.put(self._announce_realized)

    def _update_statuses(self, chassis_id: str) -> None:
        """Ports bound here: ACTIVE once plugged and their flows are realized, DOWN when unplugged."""

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            plane = self.planes.get(chassis_id)
            if plane is None or plane.runtime is None:
                return []
            realized = plane.realized_seq()
            changes: list[Change] = []
            for pid in sorted(plane.pending_status):
                port = t.ports.get(pid)
                if port is None or port.binding_chassis != chassis_id:
                    plane.pending_status.discard(pid)  # deleted, or another chassis's to report
                    continue
                plugged = port.id in plane.runtime.vifs and port.admin_state_up
                if plugged and plane.port_seq.get(port.id, realized + 1) <= realized:
                    want = PORT_ACTIVE
                elif not plugged:
                    want = PORT_DOWN
                else:
                    continue  # flows not confirmed yet: look again at the next realization
                plane.pending_status.discard(pid)
                changes += ops.set_port_status(port, want, rev, now)
            return changes

        self.state.write(fn)

    def wait_realized(self, revision: int, timeout: float) -> tuple[bool, list[dict[str, Any]]]:
        """Block until every chassis with a switch engine has realized `revision` (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.state.lock:
                report = []
                for plane in sorted(self.planes.values(), key=lambda p: p.chassis_id):
                    needed = plane.needed_seq(revision)
                    realized = plane.realized_seq()
                    report.append(
                        {
                            "chassis": plane.chassis_id,
                            "connected": plane.engine is not None,
                            "realized_revision": plane.realized_model_revision(),
                            "needed_revision": max((r for r, s in plane.history if s <= needed), default=0),
                            "realized": plane.engine is not None and realized >= needed,
                        }
                    )
            if all(r["realized"] for r in report):
                return True, report
            left = deadline - time.monotonic()
            if left <= 0:
                return False, report
            with self.realized:
                self.realized.wait(min(left, 0.2))


def _arp_request(net: Any, src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    """A broadcast ARP request on an external network (802.1q-tagged on a VLAN one); src_ip == dst_ip makes
    it gratuitous."""
    from os_ken.lib.packet import arp, ethernet, packet, vlan

    pkt = packet.Packet()
    if net.segment_type == "vlan":
        pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src_mac, 0x8100))
        pkt.add_protocol(vlan.vlan(vid=net.segment_id, ethertype=0x0806))
    else:
        pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src_mac, 0x0806))
    pkt.add_protocol(
        arp.arp(
            opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip, dst_mac="00:00:00:00:00:00", dst_ip=dst_ip
        )
    )
    pkt.serialize()
    return bytes(pkt.data)
