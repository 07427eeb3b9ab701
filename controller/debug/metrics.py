"""Prometheus metrics: one registry, served over HTTP on `metrics_listen`.

Two kinds of values:

- read at scrape time by a custom collector, from the live objects (no copies to keep in step): chassis
  connection state, flows desired vs installed, the sync engines' counters (SyncStats), packet-ins, store
  revision, size on disk and compacted revision, etcd txn conflicts / retried writes / aborts,
  realized-revision lag, drift repairs, and the per-owner flow counters last collected;
- observed where events happen: API requests (a gRPC server interceptor), bundle latency (SwitchSync's
  `on_bundle` hook), store commit latency and writes per commit (State's `on_commit` hook).

Per-owner packet counters: every `stats_interval_s` a FlowCounters thread dumps each connected switch's
flows with their counters (SwitchSync.flow_stats) and rolls them up by the cookie's (app, owner object) —
unless the switch's fingerprint (SwitchSync.activity: one aggregate-stats request, the sums over all its flows,
and our own bundles) is the one of its last dump: then no counter moved and no flow came or went, and the
dump (~40k entries a switch at 10,000 ports, most of an idle controller's and switch's CPU) is skipped. A dump
decodes no entry (SwitchSync.counters, transport.CounterScan: read by offset, only moved entries folded). The
owner is whatever model object an app stamps into its cookies, so per security-group-rule and per
load-balancer-member counters appear without change here once those apps name rules and members as owners.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from apps import ids
from controller import latency
from controller.periodic import pause_after
from controller.southbound.transport import CounterScan
from flows.cookie import Cookie, owner_hash
from flows.flow import Flow, Group

_COUNTS = struct.Struct("!QQ")  # an ofp_flow_stats entry's packet and byte counts

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)

#: (datapath id, reason name) -> packet-ins; see ofapp.PACKET_IN_REASONS
PacketIns = Callable[[], Mapping[tuple[int, str], int]]


class Metrics:
    """The controller's metrics registry, its hooks and collectors, and the HTTP endpoint serving it.

    `state`, `dataplane` and `packet_ins` may be None (an API-only server, tests): their families are then
    exported without samples.
    """

    def __init__(
        self,
        state: Any = None,
        dataplane: Any = None,
        packet_ins: PacketIns | None = None,
        stats_interval_s: float = 0.0,
        compactor: Any = None,
        southbound_rejected: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.state = state
        self.compactor = compactor  # topology.history.Compactor: changes compacted
        self.dataplane = dataplane
        self.packet_ins = packet_ins
        self.streams: Any = None  # controller.api.streams.StreamLimiter of the API server: caps, refusals
        self.southbound_rejected = southbound_rejected  # reason -> refused switch connections (ofapp)
        self.registry = CollectorRegistry()
        r = self.registry
        self.api_requests = Counter(
            "sdn_api_requests",
            "gRPC calls finished, by method and status code",
            ["service", "method", "code"],
            registry=r,
        )
        self.api_duration = Histogram(
            "sdn_api_request_duration_seconds",
            "Latency of unary gRPC calls (streams are not timed)",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.api_streams_started = Counter(
            "sdn_api_streams_started",
            "Streaming gRPC calls started (Watch, reflection)",
            ["service", "method"],
            registry=r,
        )
        self.api_streams_open = Gauge(
            "sdn_api_streams_open", "Streaming gRPC calls in progress", ["service", "method"], registry=r
        )
        self.bundle_duration = Histogram(
            "sdn_bundle_duration_seconds",
            "OpenFlow bundles, from the first byte sent to the barrier reply",
            ["chassis"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bundle_messages = Histogram(
            "sdn_bundle_messages",
            "Flow-mods and group-mods per bundle",
            ["chassis"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "sdn_store_commit_duration_seconds",
            "Store transactions (group commit: one may hold several writes), until durable "
            "(SQLite: the fsync; etcd: the txn's round trip)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_writes = Histogram(
            "sdn_store_commit_writes",
            "Writes per store transaction (group commit batches the writes queued meanwhile)",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.flow_counters = FlowCounters(self)
        self.stats_interval_s = stats_interval_s
        r.register(_ScrapeCollector(self))
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self, listen: str = "", sync: Any = None) -> int:
        """Install the hooks (State.on_commit; `sync`, a SyncManager: on_bundle), start the flow-counter
        poller, and serve /metrics on `listen` ("host:port"; "" = no HTTP). Returns the bound port, 0 if
        none."""
        if self.state is not None:
            self.state.on_commit = self.observe_commit
        if sync is not None:
            sync.on_bundle = self.observe_bundle
        if self.dataplane is not None and self.stats_interval_s > 0:
            self._poller = threading.Thread(target=self._poll, name="metrics-flow-stats", daemon=True)
            self._poller.start()
        if not listen:
            return 0
        host, _, port = listen.rpartition(":")
        self._http, self._http_thread = start_http_server(
            int(port), host.strip("[]") or "0.0.0.0", registry=self.registry
        )
        return int(self._http.server_port)

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        for t in (self._http_thread, self._poller):
            if t is not None:
                t.join(timeout=5)

    def _poll(self) -> None:
        wait = self.stats_interval_s
        while not self._stop.wait(wait):
            t0 = time.monotonic()
            try:
                self.flow_counters.collect_once()
            except Exception:
                log.exception("flow counter collection failed")
            wait = pause_after(self.stats_interval_s, time.monotonic() - t0)  # at most 10% of the time

    def exposition(self) -> bytes:
        """The text format, as /metrics serves it."""
        return generate_latest(self.registry)

    # --- hooks ----------------------------------------------------------------------------------------------

    def interceptor(self) -> ApiMetricsInterceptor:
        return ApiMetricsInterceptor(self)

    def observe_bundle(self, datapath_id: int, seconds: float, n_messages: int, ok: bool) -> None:
        """SwitchSync.on_bundle: one bundle finished (ok: confirmed without error). Failures are counted by
        the engine's SyncStats (sdn_bundles_failed_total); the latency covers both."""
        chassis = self.chassis_of(datapath_id)
        self.bundle_duration.labels(chassis).observe(seconds)
        self.bundle_messages.labels(chassis).observe(n_messages)

    def observe_commit(self, seconds: float, n_writes: int) -> None:
        """State.on_commit: one store transaction became durable."""
        if latency.ON:
            latency.stamp("w.committed", f"{seconds * 1e3:.3f}")
        self.commit_duration.observe(seconds)
        self.commit_writes.observe(n_writes)

    def chassis_of(self, datapath_id: int) -> str:
        for plane in self.planes():
            if plane.datapath_id == datapath_id:
                return str(plane.chassis_id)
        return f"{datapath_id:016x}"

    def planes(self) -> list[Any]:
        if self.dataplane is None:
            return []
        return list(self.dataplane.planes.values())


# --- scrape-time values -------------------------------------------------------------------------------------


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


#: SyncStats field -> exported counter (sdn_..._total) and help
SYNC_COUNTERS = {
    "flow_mods_sent": ("sdn_flow_mods_sent", "Flow-mods sent to the switch (inside bundles)"),
    "group_mods_sent": ("sdn_group_mods_sent", "Group-mods sent to the switch (inside bundles)"),
    "meter_mods_sent": ("sdn_meter_mods_sent", "Meter-mods sent to the switch (before / after bundles)"),
    "bundles_sent": ("sdn_bundles_sent", "OpenFlow bundles sent"),
    "bundles_failed": ("sdn_bundles_failed", "Bundles or resyncs that were rejected or not confirmed"),
    "resyncs": ("sdn_resyncs", "Full reconciliations (dump, adopt, repair) of the switch"),
    "errors": ("sdn_openflow_errors", "OpenFlow error messages received from the switch"),
}


class _ScrapeCollector(Collector):
    """Values read from the live controller at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # families are produced at scrape time; no name clashes to check with the rest

    def collect(self) -> Iterable[Metric]:
        m = self.m
        of_up = _gauge(
            "sdn_chassis_openflow_connected",
            "1 if the chassis's br-int is connected over OpenFlow",
            ["chassis"],
        )
        ovsdb = _gauge(
            "sdn_chassis_ovsdb_ready", "1 once the chassis's OVSDB facts (ofports) are known", ["chassis"]
        )
        desired = _gauge("sdn_flows_desired", "Flows the compiler wants on the chassis", ["chassis"])
        installed = _gauge(
            "sdn_flows_installed", "Flows confirmed on the switch (last bundle or dump)", ["chassis"]
        )
        gdesired = _gauge("sdn_groups_desired", "Groups the compiler wants on the chassis", ["chassis"])
        ginstalled = _gauge("sdn_groups_installed", "Groups confirmed on the switch", ["chassis"])
        realized = _gauge(
            "sdn_chassis_realized_revision",
            "Newest store revision whose flows the chassis's switch has confirmed",
            ["chassis"],
        )
        lag = _gauge(
            "sdn_chassis_realized_revision_lag",
            "Store revision minus the chassis's realized revision; 0 when every change handed to "
            "the switch is confirmed (revisions that do not touch a chassis are no lag)",
            ["chassis"],
        )
        drift = _counter(
            "sdn_drift_repairs", "Flow and group entries repaired after drift was found", ["chassis"]
        )
        divergence = _counter(
            "sdn_compile_divergence",
            "Compile self-checks that found the incremental "
            "desired state != a full compile (each one repaired)",
            ["chassis"],
        )
        sync = {f: _counter(name, doc, ["chassis"]) for f, (name, doc) in SYNC_COUNTERS.items()}
        compile_cpu = _counter(
            "sdn_compile_cpu_seconds",
            "CPU time spent compiling the chassis this controller keeps the compile of (several "
            "controllers: those it masters); self-checks and debug compiles not counted",
            [],
        )
        compile_units = _counter(
            "sdn_compile_units",
            "Owner units (a port's, a network's, a rule's... flows) compiled for the chassis this "
            "controller compiles: the compile's work, whatever the machine's load",
            [],
        )
        if m.dataplane is not None:
            compile_cpu.add_metric([], float(getattr(m.dataplane.compiler, "cpu_s", 0.0)))
            compile_units.add_metric([], int(getattr(m.dataplane.compiler, "units_compiled", 0)))
        revision = _gauge("sdn_store_revision", "Revision of the topology store (bumps on every write)", [])
        size = _gauge(
            "sdn_store_size_bytes", "Bytes on disk of the store's database file and its WAL", ["file"]
        )
        compacted = _gauge(
            "sdn_store_compacted_revision",
            "Changes up to this revision are compacted: the oldest revision a Watch can resume from",
            [],
        )
        dropped = _counter("sdn_store_compacted_changes", "Change-log rows compacted since start", [])
        # etcd (several controllers): optimistic txns refused because another controller wrote first
        txn_conflicts = _counter(
            "sdn_store_txn_conflicts",
            "etcd txns refused because another controller wrote first (their writes are validated again)",
            [],
        )
        txn_retried = _counter(
            "sdn_store_txn_retried_writes", "Writes validated again after their txn met a conflict", []
        )
        txn_aborted = _counter(
            "sdn_store_txn_aborted",
            "Writes given up on after max tries of conflicts (answered ABORTED CONCURRENT_WRITES)",
            [],
        )
        pins = _counter("sdn_packet_ins", "Packet-ins received, by OpenFlow reason", ["chassis", "reason"])
        s_limit = _gauge(
            "sdn_api_streams_limit",
            "Caps on open API streams: scope server (max_streams) and tenant (max_streams_per_tenant)",
            ["scope"],
        )
        s_admitted = _gauge("sdn_api_streams_admitted", "API streams holding a slot under the caps", [])
        s_refused = _counter(
            "sdn_api_streams_refused",
            "API streams refused over a cap "
            "(RESOURCE_EXHAUSTED), by reason TOO_MANY_STREAMS or TENANT_STREAM_LIMIT",
            ["method", "reason"],
        )
        s_revoked = _counter(
            "sdn_api_streams_revoked", "API streams ended because their token was revoked", []
        )
        if m.streams is not None:
            s_limit.add_metric(["server"], m.streams.max_total)
            s_limit.add_metric(["tenant"], m.streams.max_per_tenant)
            s_admitted.add_metric([], m.streams.total)
            for (method, reason), n in sorted(m.streams.refused.items()):
                s_refused.add_metric([method, reason], n)
            s_revoked.add_metric([], m.streams.revoked_streams)
        refused = _counter(
            "sdn_southbound_rejected",
            "Switch connections refused: tls_handshake (no or a "
            "foreign certificate, plaintext), unknown_chassis, wrong_datapath_id (the certificate's "
            "chassis has another), datapath_in_use (claimed from another identity)",
            ["reason"],
        )

        state, dp = m.state, m.dataplane
        store_rev = int(state.revision) if state is not None else 0
        if state is not None:
            revision.add_metric([], store_rev)
            for name, n in state.store.sizes().items():
                size.add_metric([name], n)
            compacted.add_metric([], state.store.compacted_revision)
            if hasattr(state, "conflicts"):  # the etcd store's (SQLite's writes never conflict)
                txn_conflicts.add_metric([], state.conflicts)
                txn_retried.add_metric([], state.retried)
                txn_aborted.add_metric([], state.aborted)
        if m.compactor is not None:
            dropped.add_metric([], m.compactor.rows_dropped)
        rows = []
        if dp is not None:
            # the compiler's units and the planes' histories change under the model lock
            lock = state.lock if state is not None else _NoLock()
            with lock:
                for plane in m.planes():
                    items = dp.compiler.desired(plane.chassis_id)
                    n_groups = sum(1 for i in items if isinstance(i, Group))
                    n_flows = sum(1 for i in items if isinstance(i, Flow))  # meters are neither
                    eng = plane.engine
                    done = eng is not None and plane.realized_seq() >= plane.seq
                    rrev = plane.realized_model_revision()
                    rows.append(
                        (plane, eng, n_flows, n_groups, rrev, 0 if done else max(0, store_rev - rrev))
                    )
        for plane, eng, n_flows, n_groups, rrev, behind in rows:
            c = [str(plane.chassis_id)]
            of_up.add_metric(c, 1 if eng is not None and getattr(eng, "connected", False) else 0)
            ovsdb.add_metric(c, 1 if plane.runtime is not None else 0)
            desired.add_metric(c, n_flows)
            gdesired.add_metric(c, n_groups)
            have = eng.installed() if eng is not None and hasattr(eng, "installed") else frozenset()
            n_inst_groups = sum(1 for i in have if isinstance(i, Group))
            installed.add_metric(c, sum(1 for i in have if isinstance(i, Flow)))
            ginstalled.add_metric(c, n_inst_groups)
            realized.add_metric(c, rrev)
            lag.add_metric(c, behind)
            drift.add_metric(c, int(getattr(plane, "drift_repairs", 0)))
            divergence.add_metric(c, int(getattr(plane, "compile_divergences", 0)))
            stats = getattr(eng, "stats", None)
            for f, fam in sync.items():
                fam.add_metric(c, int(getattr(stats, f, 0)))
        if m.packet_ins is not None:
            for (dpid, reason), n in sorted(dict(m.packet_ins()).items()):
                pins.add_metric([m.chassis_of(dpid), reason], n)
        if m.southbound_rejected is not None:
            for reason, n in sorted(m.southbound_rejected().items()):
                refused.add_metric([reason], n)
        yield from (
            of_up,
            ovsdb,
            desired,
            installed,
            gdesired,
            ginstalled,
            *sync.values(),
            compile_cpu,
            compile_units,
            pins,
            revision,
            size,
            compacted,
            dropped,
            txn_conflicts,
            txn_retried,
            txn_aborted,
            realized,
            lag,
            drift,
            divergence,
            s_limit,
            s_admitted,
            s_refused,
            s_revoked,
            refused,
        )
        yield from m.flow_counters.families()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- per-owner flow counters --------------------------------------------------------------------------------


Owner = tuple[str, str, str]  # (chassis, app name, owner id)


class FlowCounters:
    """Packet and byte counters of the installed flows, rolled up per (chassis, app, owner object).

    Kept monotonic across flow churn: each round adds, per flow (table, priority, match), what its counters
    grew since the last round (a counter that went down was reset by a re-add: its whole value is new).
    An owner's series appears once its flows have matched a packet (idle objects cost no series: a scrape
    spends ~20 us per sample) and disappears once it has no flows on that chassis anymore.

    A round decodes no entry (SwitchSync.counters: each entry's table, priority, match bytes, cookie and
    counters read by offset, transport.CounterScan); only the entries whose counters moved since the last
    round are folded, and the last round is kept per chassis for the flows that ever matched a packet only,
    as a hash of the flow's identity -> its 16 counter bytes (a flow never hit has nothing to remember).
    """

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self._lock = threading.Lock()
        # chassis -> hash(flow identity) -> its (packets, bytes) as 16 bytes at the last round, flows whose
        # counters are not 0 only
        self._last: dict[str, dict[int, bytes]] = {}
        self._totals: dict[Owner, list[Any]] = {}  # -> [packets, bytes, cookie bytes 1-5 (app, owner hash)]
        self._names: tuple[int, dict[int, str]] | None = None  # (store revision, owner hash -> id)
        # chassis -> (its switch's activity fingerprint, store revision) when it was last dumped
        self._seen: dict[str, tuple[Any, int]] = {}
        self.rounds = 0
        self.dumps = 0  # switches dumped (all rounds)
        self.skipped = 0  # switches not dumped: nothing moved since their last dump
        self.entries = 0  # flow entries read (all rounds)
        self.moved = 0  # of which folded: their counters had moved

    def collect_once(self, timeout: float = 10.0) -> None:
        """Dump every connected switch's flow counters now and fold them in."""
        names = self._owner_names()
        rev = self._names[0] if self._names is not None else 0
        for plane in self.m.planes():
            eng = plane.engine
            chassis = str(plane.chassis_id)
            if eng is None or not getattr(eng, "connected", False):
                continue
            if not getattr(eng, "realized_revision", 1):
                continue  # its first reconcile is still under way (the start): count once our flows are in
            raw = callable(getattr(eng, "counters", None))
            if not raw and not hasattr(eng, "flow_stats"):
                continue
            try:
                # the fingerprint before the dump: what moves after it shows in the next round's
                seen = (eng.activity(timeout), rev) if hasattr(eng, "activity") else None
                if seen is not None and self._seen.get(chassis) == seen:
                    self.skipped += 1
                    continue
                last = self._last.get(chassis, {})
                scan = eng.counters(last, timeout) if raw else scan_flows(eng.flow_stats(timeout), last)
            except Exception as err:  # noqa: BLE001 - a switch that went away: next round
                log.debug("chassis %s: no flow counters: %s", chassis, err)
                self._seen.pop(chassis, None)
                continue
            self.dumps += 1
            self.fold(chassis, scan, names)
            if seen is not None:
                self._seen[chassis] = seen
        with self._lock:
            live = {str(p.chassis_id) for p in self.m.planes()}
            for chassis in [c for c in self._seen if c not in live]:
                del self._seen[chassis]
            for owner in [k for k in self._totals if k[0] not in live]:
                del self._totals[owner]
            for chassis in [c for c in self._last if c not in live]:
                del self._last[chassis]
            self.rounds += 1

    def fold(self, chassis: str, scan: CounterScan, names: Mapping[int, str]) -> None:
        """Add one dump of `chassis` (a CounterScan against this chassis's last one) to the per-owner
        totals; `names` maps owner hashes to model object ids (an unknown owner is labelled with its hash in
        hex)."""
        by_cookie: dict[int, Owner | None] = {}  # many flows share a cookie
        unpack = _COUNTS.unpack
        with self._lock:
            totals = self._totals
            for cookie, old, new in scan.moved:
                o: Any = by_cookie.get(cookie, ())
                if o == ():
                    c = Cookie.decode(cookie)
                    o = by_cookie[cookie] = (
                        None
                        if c is None
                        else (
                            chassis,
                            ids.APP_NAMES.get(c.app, str(c.app)),
                            names.get(c.owner, f"{c.owner:08x}"),
                        )
                    )
                if o is None:
                    continue  # not ours: sync sweeps it
                packets, nbytes = unpack(new)
                lp, lb = (0, 0) if old is None else unpack(old)
                if packets < lp or nbytes < lb:
                    lp = lb = 0
                tot = totals.get(o)
                if tot is None:
                    tot = totals[o] = [0, 0, cookie.to_bytes(8, "big")[1:6]]
                tot[0] += packets - lp
                tot[1] += nbytes - lb
            self._last[chassis] = scan.now
            present = scan.owners
            for o in [o for o, t in totals.items() if o[0] == chassis and t[2] not in present]:
                del totals[o]
            self.entries += scan.entries
            self.moved += len(scan.moved)

    def totals(self) -> dict[Owner, tuple[int, int]]:
        with self._lock:
            return {k: (int(v[0]), int(v[1])) for k, v in self._totals.items()}

    def families(self) -> Iterator[Metric]:
        labels = ["chassis", "app", "owner"]
        packets = _counter(
            "sdn_flow_packets",
            "Packets matched by the installed flows of an owner object "
            "(from flow stats, every stats_interval_s)",
            labels,
        )
        nbytes = _counter("sdn_flow_bytes", "Bytes matched by the installed flows of an owner object", labels)
        for (chassis, app, owner), (p, b) in sorted(self.totals().items()):
            if not p:
                continue
            packets.add_metric([chassis, app, owner], p)
            nbytes.add_metric([chassis, app, owner], b)
        yield packets
        yield nbytes

    def _owner_names(self) -> dict[int, str]:
        """Owner hash -> id of every model object and compiled unit (what apps stamp into cookies, as
        apps.ids.registry_for names them: "pipeline" first, then the first id of a colliding hash); rebuilt
        when the store revision moves."""
        state = self.m.state
        rev = int(state.revision) if state is not None else 0
        cached = self._names
        if cached is not None and cached[0] == rev:
            return cached[1]
        owners: set[str] = set()
        if state is not None:
            with state.lock:
                owners.update(r.id for r in state.topology.all_records())
                if self.m.dataplane is not None:
                    for units in self.m.dataplane.compiler.units.values():
                        owners.update(str(u[1]) for u in units)
        names: dict[int, str] = {}
        for owner in ("pipeline", *sorted(owners)):
            names.setdefault(owner_hash(owner), owner)
        self._names = (rev, names)
        return names


def scan_flows(stats: Mapping[Flow, tuple[int, int]], last: Mapping[int, bytes]) -> CounterScan:
    """A CounterScan of decoded flows and their counters (an engine without SwitchSync.counters: the same
    fold, the flow's key() as its identity)."""
    scan = CounterScan()
    for flow, (packets, nbytes) in stats.items():
        scan.entries += 1
        cookie = int(flow.cookie)
        scan.owners.add(cookie.to_bytes(8, "big")[1:6])
        counts = _COUNTS.pack(packets, nbytes)
        if not packets and not nbytes:
            continue
        ident = hash(flow.key())
        scan.now[ident] = counts
        old = last.get(ident)
        if old != counts:
            scan.moved.append((cookie, old, counts))
    return scan


# --- gRPC ---------------------------------------------------------------------------------------------------


def _split(full_method: str) -> tuple[str, str]:
    """ "/sdn.v1.TopologyService/CreatePort" -> ("sdn.v1.TopologyService", "CreatePort")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _code(context: Any, default: grpc.StatusCode) -> str:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpcio had no ServicerContext.code()
        code = None
    if code is None:
        return default.name
    return str(getattr(code, "name", code))


class ApiMetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts every call by method and final status code; times unary calls. A streaming call (Watch,
    reflection) is counted when it starts (sdn_api_streams_started_total, sdn_api_streams_open) and when it
    ends (sdn_api_requests_total with its code; CANCELLED if the client went away)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        m = self.m
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: Any) -> Any:
                t0 = time.perf_counter()
                code = "UNKNOWN"
                try:
                    resp = inner(request, context)
                    code = _code(context, grpc.StatusCode.OK)
                    return resp
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    m.api_duration.labels(service, method).observe(time.perf_counter() - t0)
                    m.api_requests.labels(service, method, code).inc()

            return handler._replace(unary_unary=unary)

        def streaming(inner: Callable[[Any, Any], Any], stream_out: bool) -> Callable[[Any, Any], Any]:
            if not stream_out:

                def call(request: Any, context: Any) -> Any:
                    m.api_streams_started.labels(service, method).inc()
                    m.api_streams_open.labels(service, method).inc()
                    code = "UNKNOWN"
                    try:
                        resp = inner(request, context)
                        code = _code(context, grpc.StatusCode.OK)
                        return resp
                    except BaseException:
                        code = _code(context, grpc.StatusCode.UNKNOWN)
                        raise
                    finally:
                        m.api_streams_open.labels(service, method).dec()
                        m.api_requests.labels(service, method, code).inc()

                return call

            def gen(request: Any, context: Any) -> Iterator[Any]:
                m.api_streams_started.labels(service, method).inc()
                m.api_streams_open.labels(service, method).inc()
                code = "UNKNOWN"
                try:
                    yield from inner(request, context)
                    # a stream that ends because its client went away (Watch checks is_active) was cancelled
                    ended = grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED
                    code = _code(context, ended)
                except GeneratorExit:
                    code = grpc.StatusCode.CANCELLED.name
                    raise
                except BaseException:
                    code = _code(context, grpc.StatusCode.UNKNOWN)
                    raise
                finally:
                    m.api_streams_open.labels(service, method).dec()
                    m.api_requests.labels(service, method, code).inc()

            return gen

        if handler.unary_stream is not None:
            return handler._replace(unary_stream=streaming(handler.unary_stream, True))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=streaming(handler.stream_unary, False))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=streaming(handler.stream_stream, True))
        return handler
