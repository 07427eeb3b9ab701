"""The dataplane glue: model writes and chassis facts in, per-switch flow deltas out, port state back.

    State write ──listener (under the model lock)──► Compiler.on_changes ──► SwitchSync.apply (per chassis)
    ChassisAgent (OVSDB) ──on_change──► Compiler.on_runtime ──► SwitchSync.apply; VIF iface-id ──► binding
    SwitchSync ──on_realized──► port status ACTIVE, WaitRealized waiters
    OFApp packet-in ──cookie's app──► packet_in_apps handler (controller/services/: neighbours, DHCP...)
    ticker ──► services' timed work (gateway failover, gratuitous ARPs, neighbour expiry)

The services see the dataplane through controller/services/host.py's Host (current_view, runtime_of,
realized_on, packet_out); their state is in the store, so a write of theirs comes back here like any other.

Each chassis gets its switch's desired state only once its OVSDB facts (ofports) are known, so a
controller restart never tells a switch to delete flows it merely has not recompiled yet (hitless).
Sequence numbers given to a SwitchSync are ours (`seq`), mapped back to model revisions here: a change of
a chassis's ofports changes its flows without a model revision.
"""

from __future__ import annotations

import functools
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from apps import ids
from apps.compiler import Compiler, Delta, Divergence
from apps.view import ChassisRuntime, View
from controller import latency
from controller.api.context import REQUEST
from controller.debug.selfcheck import SelfCheck
from controller.services.announce import Announcements
from controller.services.failover import FailoverService
from controller.services.host import PacketIn, PacketInHandler
from controller.services.neighbors import NeighborService
from controller.southbound.status_feed import MAX_PENDING, ChassisReport
from flows.cookie import MAGIC
from topology import binding, ops, portkeys
from topology.model import Change, Topology
from topology.records import INTERNAL_KINDS, PORT_ACTIVE, PORT_DOWN, Chassis
from topology.state import State

log = logging.getLogger(__name__)

__all__ = ["Dataplane", "PacketIn", "PacketInHandler"]  # PacketIn: controller/services/host.py's

#: a new master waits this long at a time for its model to reach the store's revision (it waits on, warning,
#: while it is master); and retries reading that revision after this long when the store does not answer
TAKEOVER_CATCH_UP_S = 5.0
TAKEOVER_RETRY_S = 0.2


class Engine(Protocol):
    """What the dataplane needs from a per-switch sync engine (controller.southbound.sync.SwitchSync)."""

    realized_revision: int

    def apply(self, add: Any, remove: Any, revision: int) -> None: ...
    def replace_desired(self, items: Any, revision: int) -> None: ...
    def forget(self) -> None: ...


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
        owned_only: bool = False,
    ) -> None:
        self.state = state
        self.packet_ins = packet_ins
        self.compiler = Compiler(gateway_chassis, dhcp_rate_pps)
        # several controllers: compile only the chassis this one masters (taken in chassis_role); one
        # controller compiles every chassis
        self.compiler.scope = set() if owned_only else None
        self.clock = clock
        # gateway failover: is a switch connected (OpenFlow)? None: the dataplane cannot tell (always yes)
        self.connected = connected if connected is not None else (lambda _dpid: True)
        self._tick_s = tick_s
        self._ticker_stop = threading.Event()
        # sends a packet out a port of a switch: (datapath id, bytes, ofport) -> sent (attached by main)
        self.packet_out: Callable[[int, bytes, int], bool] | None = None
        self.vswitchd_ctl_dir = ""  # co-located chassis' ovs-vswitchd control sockets (trace.vswitchd_ctl)
        # app id (apps.ids) -> handler of packet-ins from flows that app compiled (DHCP, firewall reject...)
        self.packet_in_apps: dict[int, PacketInHandler] = {}
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
        self._realized_gen = 0  # notify_realized calls so far (under `realized`): no wake-up is lost
        self._frozen: set[int] = set()  # datapaths whose first realization froze the heap (gc.freeze)
        # why each unit's flows are what they are: (chassis, unit) -> (model revision, request)
        self.provenance: dict[tuple[str, tuple[str, str]], tuple[int, str]] = {}
        self.selfcheck = SelfCheck(self, self_check_interval_s)
        self.self_check_every_change = self_check_every_change
        # the services whose state decides flows or that send packets themselves (controller/services/;
        # the legacy JSON files are earlier versions' state, moved into the store at start)
        self.failover = FailoverService(self, gateway_failover_s, clock, startup_grace_s, gateways_file)
        self.compiler.down = self.failover.down
        self.neighbors = NeighborService(self, neighbor_ttl_s, clock, neighbors_file)
        self.packet_in_apps[ids.NAT] = self.neighbors.on_packet_in  # ARP replies and misses of apps/nat.py
        self.announcements = Announcements(self, clock)  # gratuitous ARPs for addresses that appear or move
        # several controllers (controller/southbound/roles.py): is this controller the chassis's master? Only
        # the master pushes its flows, answers its packet-ins, sends out of it, writes its ports' bindings
        # and statuses and judges its gateway health. One controller: every chassis (the default).
        self.owns: Callable[[str], bool] = lambda _chassis_id: True
        self.failover.scope = lambda chassis_id: self.owns(chassis_id)
        # several controllers: what each chassis's master publishes of it (StatusFeed, attached by main):
        # the status and realization of chassis mastered elsewhere. None: every chassis is ours
        self.status_feed: Any = None
        # several controllers: which controller masters a chassis (None: unknown or one controller)
        self.master_of: Callable[[str], str | None] = lambda _chassis_id: None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.neighbors.migrate()
        self.failover.migrate()
        with self.state.lock:
            topo = self.state.topology
            self._sync_internal(topo)
            self.neighbors.reset(self.clock())
            self.compiler.rebuild(topo)
            for ch in topo.chassis.values():
                self._add_chassis(ch)
            self.state.add_listener(self._on_write)
            self.announcements.reset()
            self.state.add_listener(self.announcements.on_write)
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
        self.failover.forget(chassis_id)
        if plane is not None and plane.agent is not None:
            self._work.put(plane.agent.stop)

    # ------------------------------------------------------------------------------------------ inputs

    def _on_write(self, revision: int, changes: list[Change]) -> None:
        """State listener, called under the model lock after each applied write."""
        if latency.ON:
            latency.stamp("dp.write", revision)
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
        if latency.ON:
            latency.stamp("dp.compiled", revision)
        why = REQUEST.get() or "controller"
        for chassis_id, delta in deltas.items():
            for unit in delta.units:
                self.provenance[(chassis_id, unit)] = (revision, why)
            self._push(chassis_id, delta, revision)
        self._flush_freed_zones(topo, changes)
        # a port written after its VIF was plugged (or re-created, or unpinned) binds now, not at the next
        # OVSDB report of its chassis
        self._rebind(
            topo, [ident for kind, ident, _old, new in changes if kind == "port" and new is not None]
        )
        self._after_change()
        self._wake_feed()  # our compiled revision moved
        if latency.ON:
            latency.stamp("dp.written", revision)

    def _flush_freed_zones(self, topo: Topology, changes: list[Change]) -> None:
        """Under the model lock, after the write's deltas were handed to the engines: each conntrack zone a
        port gave up (deleted, moved, unbound, re-keyed) is flushed on the chassis where it was used, once the
        bundle removing its flows is confirmed, unless another port holds it there again already. So a port
        that gets the zone later (with the same address, maybe) inherits no connection state."""
        zones = topo.zones
        for kind, _ident, old, new in changes:
            if kind != "port":
                continue
            gone = portkeys.freed(old, new)  # type: ignore[arg-type]
            if gone is None:
                continue
            chassis_id, z = gone
            for cid in [chassis_id] if chassis_id else list(self.planes):
                plane = self.planes.get(cid)
                flush = getattr(plane.engine, "flush_zones", None) if plane is not None else None
                if (
                    flush is None
                    or not self.compiler.keeps(cid)  # another controller's chassis: its master flushes
                    or z in zones.shared
                    or z in zones.local.get(cid, ())
                ):
                    continue
                flush([z])

    def _wake_feed(self) -> None:
        if self.status_feed is not None:
            self.status_feed.wake()

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
        self._wake_feed()
        self._work.put(functools.partial(self._update_statuses, chassis_id))

    def _after_change(self) -> None:
        """Tests: the self-check after every change (the caller holds the model lock)."""
        if self.self_check_every_change:
            for chassis_id in sorted(self.planes):
                if self.compiler.keeps(chassis_id):
                    self.selfcheck.check_locked(chassis_id, repair=True)

    def repair_compile(self, div: Divergence) -> None:
        """Make a chassis's desired state its full compile (the self-check found them apart); the caller
        holds the model lock."""
        delta = self.compiler.repair(div)
        for unit in delta.units:
            self.provenance[(div.chassis, unit)] = (self.state.revision, "compile self-check repair")
        self._push(div.chassis, delta, self.state.revision)

    def _make_engine(self, plane: ChassisPlane) -> None:
        plane.engine = self._engine_factory(plane.datapath_id, self._on_realized)
        if self.compiler.keeps(plane.chassis_id):
            self._hand_desired(plane, "first contact")

    def _hand_desired(self, plane: ChassisPlane, why: str) -> None:
        """Give the chassis's engine its whole desired state (first contact, or a chassis taken over)."""
        assert plane.engine is not None
        plane.seq += 1
        desired = self.compiler.desired(plane.chassis_id)
        plane.history.append((self.state.revision, plane.seq))
        plane.port_seq = {pid: plane.seq for pid in self._port_owners(plane.chassis_id)}
        plane.pending_status = self._status_candidates(self.state.topology, plane)
        plane.engine.replace_desired(desired, plane.seq)
        log.info(
            "chassis %s: %d desired flows/groups handed to its switch (%s)",
            plane.chassis_id,
            len(desired),
            why,
        )

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

    def chassis_role(self, chassis_id: str, master: bool, activate: Callable[[], bool] | None = None) -> None:
        """Roles: this controller became (or stopped being) the chassis's master. A model behind the
        store's would differ from the one the previous master's flows came from: once the model has every
        write the store holds now, the chassis is compiled in full (owned_only: only a master keeps a
        chassis's compile) and handed to its engine, then `activate` starts the engine (it adopts what the
        switch holds: nothing sent when nothing changed; False: the role is gone meanwhile). Statuses and
        bindings of the chassis's ports are this controller's to write from then on. Waits on a thread of
        its own (a store read, maybe a wait for the watch). Stepping down drops the chassis's compile."""
        if master:
            threading.Thread(
                target=self._take_over,
                args=(chassis_id, activate),
                name=f"takeover-{chassis_id}",
                daemon=True,
            ).start()
        else:
            self._release(chassis_id)

    def _take_over(self, chassis_id: str, activate: Callable[[], bool] | None) -> None:
        while True:
            if not self.owns(chassis_id) or self._ticker_stop.is_set():
                return  # stepped down (or stopping) before the model caught up
            try:
                head = self.state.head()
            except Exception as err:  # noqa: BLE001 - the store unreachable: read again (or lose the chassis)
                log.warning("chassis %s: cannot read the store's revision to take over: %s", chassis_id, err)
                time.sleep(TAKEOVER_RETRY_S)
                continue
            if self.state.catch_up(head, TAKEOVER_CATCH_UP_S):
                break
            log.warning(
                "chassis %s: the model (revision %d) has not reached the store's %d yet: not pushing",
                chassis_id,
                self.state.revision,
                head,
            )
        self._compile_taken(chassis_id)
        if not self.owns(chassis_id) or (activate is not None and not activate()):
            self._release(chassis_id)  # the role is gone meanwhile (activate checks it again, with the
            return  # role requests' lock): its compile goes with it
        self._work.put(functools.partial(self._took_over, chassis_id))

    def _compile_taken(self, chassis_id: str) -> None:
        """A chassis taken over: compile it in full (owned_only) and hand its engine the result, before the
        engine talks to the switch. Nothing to do when its compile is kept already (one controller), or
        before its OVSDB facts are known (its first report compiles it: _on_runtime)."""
        if self.compiler.scope is None:
            return
        with self.state.lock:
            if not self.owns(chassis_id) or self.compiler.keeps(chassis_id):
                return
            t0 = time.monotonic()
            delta = self.compiler.take(self.state.topology, chassis_id)
            plane = self.planes.get(chassis_id)
            if plane is None or plane.engine is None:
                return
            for unit in delta.units:
                self.provenance[(chassis_id, unit)] = (self.state.revision, f"takeover of {chassis_id}")
            self._hand_desired(plane, f"taken over, compiled in {time.monotonic() - t0:.2f} s")
        self._wake_feed()

    def _release(self, chassis_id: str) -> None:
        """No longer this chassis's master (owned_only): drop its compile and its engine's desired state
        (memory); its statuses and realization are the new master's to tell (PREFIX/status/ in etcd)."""
        if self.compiler.scope is None:
            return
        with self.state.lock:
            if self.owns(chassis_id) or chassis_id not in self.compiler.scope:
                return  # a newer mastership already (its takeover keeps the compile), or nothing kept
            self.compiler.release(chassis_id)
            self.provenance = {k: v for k, v in self.provenance.items() if k[0] != chassis_id}
            plane = self.planes.get(chassis_id)
            if plane is not None:
                plane.history.clear()
                plane.port_seq.clear()
                plane.pending_status.clear()
                if plane.engine is not None:
                    plane.engine.forget()
        log.info("chassis %s: its compile dropped (another controller masters it)", chassis_id)
        self._wake_feed()

    def _took_over(self, chassis_id: str) -> None:
        with self.state.lock:
            plane = self.planes.get(chassis_id)
            if plane is None or plane.runtime is None:
                return
            topo = self.state.topology
            plane.pending_status |= self._status_candidates(topo, plane)
            # every port whose binding is now ours to write (its VIF here, or pinned here): the previous
            # master may have been gone when it changed
            self._rebind(topo, list(topo.ports))
        self._update_statuses(chassis_id)

    @staticmethod
    def _status_candidates(topo: Topology, plane: ChassisPlane) -> set[str]:
        """The ports bound to the chassis whose status may have to change after its whole desired state was
        handed over (first contact, takeover): the plugged ones (ACTIVE once realized, DOWN if admin down)
        and those not DOWN (ACTIVE before, maybe unplugged since). A bound port neither plugged nor ACTIVE
        has nothing to change: at 100k ports most of a chassis's ~25k, which _update_statuses would
        otherwise walk (sorted, under the model lock) after every resync. One unsorted pass reading a field."""
        ports, chassis_id = topo.ports, plane.chassis_id
        vifs = plane.runtime.vifs if plane.runtime is not None else {}
        out = {pid for pid in vifs if (p := ports.get(pid)) is not None and p.binding_chassis == chassis_id}
        out.update(pid for pid in topo.port_ids_on_chassis(chassis_id) if ports[pid].status != PORT_DOWN)
        return out

    def _push(self, chassis_id: str, delta: Delta, revision: int) -> None:
        plane = self.planes.get(chassis_id)
        if plane is None or plane.engine is None or not delta:
            return
        plane.seq += 1
        plane.history.append((revision, plane.seq))
        realized = plane.realized_seq()
        while len(plane.history) > 1 and plane.history[1][1] <= realized:
            plane.history.pop(0)  # keep one realized entry: it answers "realized up to which revision"
        vifs = plane.runtime.vifs if plane.runtime is not None else {}
        ports = self.state.topology.ports
        for kind, ident in delta.units:
            if kind == "port":
                plane.port_seq[ident] = plane.seq
                # only a port plugged here or not DOWN can change status (as _status_candidates): a write
                # touching a security group's ports (remote-group rules: every port of the group) would
                # otherwise make each realization walk them all, under the model lock
                if ident in vifs or ((p := ports.get(ident)) is not None and p.status != PORT_DOWN):
                    plane.pending_status.add(ident)
        plane.engine.apply(delta.add, delta.remove, plane.seq)
        if latency.ON:
            latency.stamp("dp.push", f"{plane.datapath_id:x}/{plane.seq}/{revision}")

    def reports(self) -> dict[str, Mapping[str, int]]:
        """Each chassis's VIFs (port id -> ofport) as its OVSDB last reported them (chassis not heard from:
        none). The runtime's own mappings, not copies: a port write asks this, whatever the number of VIFs."""
        return {ch: p.runtime.vifs for ch, p in self.planes.items() if p.runtime is not None}

    def _rebind(self, topo: Topology, port_ids: Iterable[str], warn: bool = False) -> None:
        """Bind the ports among `port_ids` whose binding is not what topology.binding says: a write of its
        own, queued (we are under the model lock, inside a write or a chassis report). `warn`: log a VIF
        reported for a port pinned elsewhere (once per report, not on every write of the port)."""
        reports = self.reports()
        todo = [
            pid
            for pid in binding.stale(topo, reports, port_ids)
            if self.owns(binding.binding(topo.ports[pid], reports, topo.chassis))  # its new chassis's master
        ]
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

    def _sync_internal(self, topo: Topology) -> None:
        """The compiler reads learnt neighbours and held gateways from these copies of the model's records."""
        self.compiler.neighbors = topo.neighbor_map()
        self.compiler.down = frozenset(topo.gateway_holds)

    # ------------------------------------------------------------------------------------------ packet-ins

    def on_packet_in(self, dpid: int, data: bytes, match: dict[str, Any], cookie: int = 0) -> None:
        """OFApp callback (os-ken's thread): handled on the dataplane worker (handle_packet_in)."""
        self._work.put(functools.partial(self.handle_packet_in, dpid, data, match, cookie))

    def handle_packet_in(self, dpid: int, data: bytes, match: dict[str, Any], cookie: int = 0) -> None:
        """A packet-in goes to the handler registered in `packet_in_apps` for the app its flow's cookie
        names (neighbours for NAT, DHCP, firewall rejects, health monitors), under the model lock."""
        app = (cookie >> 48) & 0xFF if (cookie >> 56) == MAGIC else 0
        handler = self.packet_in_apps.get(app)
        if handler is None:
            log.debug("packet-in from datapath %016x with cookie %#x: no app handles it", dpid, cookie)
            return
        with self.state.lock:
            plane = next((p for p in self.planes.values() if p.datapath_id == dpid), None)
            if plane is None or plane.runtime is None or not self.owns(plane.chassis_id):
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

    # ------------------------------------------------------------------------------------------ services' host

    def current_view(self) -> View:
        """controller/services/host.py Host: the compilers' view of the current model."""
        return self.compiler.view(self.state.topology)

    def runtime_of(self, chassis_id: str) -> tuple[int, ChassisRuntime] | None:
        """controller/services/host.py Host: (datapath id, OVSDB facts) of a chassis whose facts are known."""
        plane = self.planes.get(chassis_id)
        if plane is None or plane.runtime is None or not self.owns(chassis_id):
            return None
        return plane.datapath_id, plane.runtime

    def realized_on(self, chassis_id: str, revision: int) -> bool:
        """controller/services/host.py Host: has the chassis's switch realized model revision `revision`?"""
        plane = self.planes.get(chassis_id)
        if plane is None or plane.engine is None or plane.runtime is None:
            return False
        return revision <= 0 or plane.realized_seq() >= plane.needed_seq(revision)

    # ------------------------------------------------------------------------------------------ timers

    def _run_ticker(self) -> None:
        while not self._ticker_stop.wait(self._tick_s):
            self._work.put(self.tick)

    def tick(self) -> None:
        """Timed work (the ticker queues it on the worker): gateway failover, gratuitous ARPs, neighbour
        expiry."""
        with self.state.lock:
            now = self.clock()
            if self.failover.tick(now, self._gateway_health()):
                self.announcements.gateways_moved(now)
            self.announcements.send(now)
            self.neighbors.tick(now)

    def _gateway_health(self) -> dict[str, bool]:
        """Each gateway chassis with a plane: healthy while its switch is connected (OpenFlow) and its
        OVSDB facts are known (the agent's session is up). Several controllers: every one's, also those
        another controller masters (their history is there when this one takes them over; only the
        master's judgement is written: FailoverService.scope)."""
        return {
            ch_id: plane.runtime is not None and plane.ovsdb_connected and self.connected(plane.datapath_id)
            for ch_id in self.compiler.gateway_chassis
            if (plane := self.planes.get(ch_id)) is not None
        }

    def _announce_realized(self) -> None:
        """A switch confirmed flows: announcements waiting for them go now, not at the next tick."""
        with self.state.lock:
            self.announcements.send(self.clock())

    # ------------------------------------------------------------------------------------------ realized

    def _on_realized(self, datapath_id: int, seq: int) -> None:
        if latency.ON:
            latency.stamp("dp.realized", f"{datapath_id:x}/{seq}")
        if datapath_id not in self._frozen:
            # a switch's first confirmed state: its compile and engine state (at 100k ports ~1M objects per
            # chassis) are long-lived; moved out of the cyclic GC's reach (as main does after the store's
            # load) so a full collection later does not walk them for seconds, stalling every thread
            self._frozen.add(datapath_id)
            gc.freeze()
        self.notify_realized()
        self._wake_feed()
        for plane in list(self.planes.values()):
            if plane.datapath_id == datapath_id:
                self._work.put(functools.partial(self._update_statuses, plane.chassis_id))
        if self.announcements.pending:
            self._work.put(self._announce_realized)

    def notify_realized(self) -> None:
        """Wake WaitRealized waiters (a switch confirmed a bundle, or another controller's report changed)."""
        with self.realized:
            self._realized_gen += 1
            self.realized.notify_all()

    def report(self, plane: ChassisPlane, controller: str = "") -> ChassisReport:
        """What this controller knows of a chassis it masters (ListChassisStatus; StatusFeed publishes it);
        the caller holds the model lock."""
        eng: Any = plane.engine
        stats = getattr(eng, "stats", None)
        realized = plane.realized_seq()
        count = getattr(eng, "installed_count", None)
        return ChassisReport(
            controller=controller,
            connected=bool(getattr(eng, "connected", False)),
            ovsdb_ready=plane.runtime is not None,
            ready=eng is not None and self.compiler.keeps(plane.chassis_id),
            realized_revision=plane.realized_model_revision(),
            pending=tuple(rev for rev, seq in plane.history if seq > realized)[:MAX_PENDING],
            desired_flows=self.compiler.desired_count(plane.chassis_id),
            installed_flows=count() if count is not None else 0,
            flow_mods_sent=getattr(stats, "flow_mods_sent", 0),
            group_mods_sent=getattr(stats, "group_mods_sent", 0),
            bundles_sent=getattr(stats, "bundles_sent", 0),
            resyncs=getattr(stats, "resyncs", 0),
            packet_ins=self.packet_ins(plane.datapath_id),
            drift_repairs=plane.drift_repairs,
            compile_divergences=plane.compile_divergences,
        )

    def status_snapshot(self, controller: str) -> tuple[int, dict[str, ChassisReport]]:
        """StatusFeed: (the model revision every change up to which is compiled, a report of each chassis
        this controller masters), from one look under the model lock."""
        with self.state.lock:
            reports = {
                ch: self.report(plane, controller) for ch, plane in self.planes.items() if self.owns(ch)
            }
            return self.state.revision, reports

    def chassis_report(self, chassis_id: str) -> ChassisReport | None:
        """A chassis's report: ours if we master it, else what its master published (None: nothing known);
        the caller holds the model lock."""
        plane = self.planes.get(chassis_id)
        if plane is not None and (self.owns(chassis_id) or self.status_feed is None):
            return self.report(plane)
        if self.status_feed is None:
            return None
        got = self.status_feed.report(chassis_id)
        return None if got is None else got[0]

    def _update_statuses(self, chassis_id: str) -> None:
        """Ports bound here: ACTIVE once plugged and their flows are realized, DOWN when unplugged. A port
        leaves the pending set only once its status is written: on etcd a write that met another
        controller's is decided again (fn runs more than once), so fn changes nothing but its answer."""
        settled: dict[str, int | None] = {}  # port -> its port_seq when decided

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            settled.clear()
            plane = self.planes.get(chassis_id)
            if plane is None or plane.runtime is None or not self.owns(chassis_id):
                return []
            realized = plane.realized_seq()
            changes: list[Change] = []
            for pid in sorted(plane.pending_status):
                port = t.ports.get(pid)
                if port is None or port.binding_chassis != chassis_id:
                    settled[pid] = plane.port_seq.get(pid)  # deleted, or another chassis's to report
                    continue
                plugged = port.id in plane.runtime.vifs and port.admin_state_up
                if plugged and plane.port_seq.get(port.id, realized + 1) <= realized:
                    want = PORT_ACTIVE
                elif not plugged:
                    want = PORT_DOWN
                else:
                    continue  # flows not confirmed yet: look again at the next realization
                settled[pid] = plane.port_seq.get(pid)
                changes += ops.set_port_status(port, want, rev, now)
            return changes

        self.state.write(fn)
        with self.state.lock:
            plane = self.planes.get(chassis_id)
            if plane is not None:
                for pid, seq in settled.items():
                    if plane.port_seq.get(pid) == seq:  # no newer flow change of the port meanwhile
                        plane.pending_status.discard(pid)

    def wait_realized(self, revision: int, timeout: float) -> tuple[bool, list[dict[str, Any]]]:
        """Block until every chassis with a switch engine has realized `revision` (or timeout). Several
        controllers: a chassis mastered elsewhere is judged from what its master publishes (StatusFeed),
        one this controller masters once its own model has `revision` too."""
        deadline = time.monotonic() + timeout
        while True:
            # a switch confirming between the look below and the wait after it must not be missed (it would
            # cost the wait's 0.2 s): the wait is skipped if any notify_realized came since this read
            with self.realized:
                gen = self._realized_gen
            with self.state.lock:
                report = []
                caught_up = self.status_feed is None or self.state.revision >= revision
                for plane in sorted(self.planes.values(), key=lambda p: p.chassis_id):
                    if not self.owns(plane.chassis_id):
                        if self.status_feed is not None:
                            report.append(self._remote_realization(plane.chassis_id, revision))
                        continue  # one controller: not reached (it masters every chassis)
                    needed = plane.needed_seq(revision)
                    realized = plane.realized_seq()
                    # mid-takeover (not compiled yet) a chassis is not ready: the switch holds the previous
                    # master's flows, not yet adopted
                    ready = plane.engine is not None and self.compiler.keeps(plane.chassis_id)
                    report.append(
                        {
                            "chassis": plane.chassis_id,
                            "connected": ready,
                            "realized_revision": plane.realized_model_revision(),
                            "needed_revision": max((r for r, s in plane.history if s <= needed), default=0),
                            "realized": ready and realized >= needed and caught_up,
                        }
                    )
            if latency.ON:
                latency.stamp("wr.check", f"{revision}/{sum(r['realized'] for r in report)}/{len(report)}")
            if all(r["realized"] for r in report):
                return True, report
            left = deadline - time.monotonic()
            if left <= 0:
                return False, report
            with self.realized:
                if self._realized_gen == gen:
                    self.realized.wait(min(left, 0.2))

    def _remote_realization(self, chassis_id: str, revision: int) -> dict[str, Any]:
        """WaitRealized's line for a chassis another controller masters, from its published report."""
        got = self.status_feed.report(chassis_id)
        if got is None:  # no master (yet), or its report not read yet
            return {
                "chassis": chassis_id,
                "connected": False,
                "realized_revision": 0,
                "needed_revision": 0,
                "realized": False,
            }
        rep, compiled = got
        return {
            "chassis": chassis_id,
            "connected": rep.ready,
            "realized_revision": rep.realized_revision,
            "needed_revision": rep.needed(revision),
            "realized": rep.realized(revision, compiled),
        }
