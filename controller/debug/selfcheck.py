"""The self-checking compile: each chassis's incrementally kept desired state against a full compile.

The compiler recompiles only the owner units a change can reach (apps/compiler.py). If that reasoning ever
misses a unit, the switch gets exactly what the controller wants and drift repair sees nothing wrong: only
a compile from scratch can tell. So, periodically (`self_check_interval_s`), on DataplaneService.Verify,
and — in tests — after every change (`self_check_every_change`), each chassis is compiled from scratch
and compared unit by unit. A divergence is logged with the differing flows and their owners, counted
(`sdn_compile_divergence_total{chassis}`, ChassisStatus.compile_divergences, the dashboard) and repaired:
the desired state becomes the full compile and the switch gets the minimal difference.

The periodic and on-demand runs compile outside the model lock: under it they only copy what the compile
reads (the records, the chassis facts, neighbours, gateway holds) and the chassis' kept units — the same
moment of both — then rebuild a model from the copy (once per run) and compile it with the lock free (a full compile of
one chassis of a 10,000-port model took seconds, and held a ListPorts for 264 s under load). Only a
divergence found that way takes the lock again: checked once more on the live model and repaired there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from apps import ids, owners
from apps.compiler import Divergence, divergence, full
from apps.view import View
from controller.periodic import Periodic
from flows.flow import Flow, MeterEntry
from flows.format import format_flow, format_group, format_meter
from topology.model import Topology

log = logging.getLogger(__name__)

#: at most this many differing entries are logged per chassis and check (all are counted and repaired)
LOG_LINES = 50


@dataclass
class CheckResult:
    chassis: str
    missing: list[str] = field(default_factory=list)  # in the full compile, not in the incremental state
    extra: list[str] = field(default_factory=list)  # in the incremental state, not in the full compile
    owners: list[str] = field(default_factory=list)  # the owner units that differ ("port:vm1", ...)
    repaired: bool = False
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.owners)


def _text(item: Any, registry: Any) -> str:
    if isinstance(item, MeterEntry):
        return format_meter(item).strip()
    return (format_flow(item, registry) if isinstance(item, Flow) else format_group(item)).strip()


def _order(item: Any) -> tuple[int, int, int]:
    if isinstance(item, Flow):
        return (0, item.table, -item.priority)
    if isinstance(item, MeterEntry):
        return (2, item.meter_id, 0)
    return (1, item.group_id, 0)


def describe(div: Divergence, topo: Any) -> CheckResult:
    registry = ids.registry_for(owners.model_owners(topo))
    return CheckResult(
        div.chassis,
        missing=[_text(i, registry) for i in sorted(div.missing, key=_order)],
        extra=[_text(i, registry) for i in sorted(div.extra, key=_order)],
        owners=sorted(f"{kind}:{ident}" if ident else kind for kind, ident in div.units),
    )


@dataclass
class Snapshot:
    """What the full compile of some chassis reads, and their kept units, copied under the model lock."""

    config: Any
    records: list[Any]
    revision: int
    view_args: tuple[Any, ...]
    units: dict[str, dict[Any, frozenset[Any]]]
    _topo: Topology | None = None

    @staticmethod
    def take(dp: Any, chassis_ids: list[str]) -> Snapshot:
        """The caller holds the model lock. Copies of references, O(records + units): no compile."""
        topo, c = dp.state.topology, dp.compiler
        records = [
            *topo.all_records(),
            *topo.neighbors.values(),
            *topo.gateway_holds.values(),
            *topo.applied_sets.values(),
        ]
        view_args = (
            dict(c.runtime),
            c.gateway_chassis,
            {k: dict(v) for k, v in c.neighbors.items()},
            c.dhcp_rate_pps,
            c.down,
        )
        units = {ch: dict(c.units.get(ch, {})) for ch in chassis_ids}
        return Snapshot(topo.config, records, topo.revision, view_args, units)

    def check(self, chassis_id: str) -> Divergence:
        """The full compile of the copy against the copied units (no lock needed); the model is rebuilt
        from the copy once for all its chassis."""
        if self._topo is None:
            self._topo = Topology(self.config)
            self._topo.load(self.records, self.revision)
        view = View(self._topo, *self.view_args)
        return divergence(chassis_id, full(view, chassis_id), self.units[chassis_id])


class SelfCheck:
    """Runs the compile self-check on a dataplane: on a timer, on demand, or after every change."""

    def __init__(self, dataplane: Any, interval_s: float = 300.0) -> None:
        self.dataplane = dataplane
        self.interval_s = interval_s
        self.checks = 0  # chassis compared (all runs)
        self.last_seconds = 0.0  # duration of the last full run over every chassis
        self._timer = Periodic("self-check", interval_s, self.run)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def run(self, chassis_ids: list[str] | None = None, repair: bool = True) -> list[CheckResult]:
        """Compare (and repair) the given chassis, or all whose compile this controller keeps (several
        controllers: those it masters). Compiles a copy with the model lock free; holds it to compile the
        live model only when the copy diverged."""
        dp = self.dataplane
        t0 = time.monotonic()
        out = []
        wanted = chassis_ids or [c for c in sorted(dp.planes) if dp.compiler.keeps(c)]
        with dp.state.lock:  # only the copies: writes do not wait for the compiles
            live = [c for c in wanted if c in dp.planes]
            kept = [c for c in live if dp.compiler.keeps(c)]
            snap = Snapshot.take(dp, kept)
        for ch in live:
            t1 = time.monotonic()
            if ch not in kept:
                out.append(CheckResult(ch))
                continue
            if not snap.check(ch):
                self.checks += 1
                out.append(CheckResult(ch, seconds=time.monotonic() - t1))
                continue
            with dp.state.lock:  # a divergence: again on the live model, repaired there
                if ch in dp.planes:
                    out.append(self.check_locked(ch, repair))
        if chassis_ids is None:
            self.last_seconds = time.monotonic() - t0
        return out

    def check_locked(self, chassis_id: str, repair: bool) -> CheckResult:
        """One chassis; the caller holds the model lock."""
        dp = self.dataplane
        t0 = time.monotonic()
        topo = dp.state.topology
        div = dp.compiler.check(topo, chassis_id)
        self.checks += 1
        if not div:
            return CheckResult(chassis_id, seconds=time.monotonic() - t0)
        result = describe(div, topo)
        plane = dp.planes.get(chassis_id)
        if plane is not None:
            plane.compile_divergences += 1
        log.error(
            "compile divergence on %s (incremental != full compile), owners %s: %d missing, %d extra",
            chassis_id,
            ", ".join(result.owners),
            len(result.missing),
            len(result.extra),
        )
        for kind, lines in (("missing", result.missing), ("extra", result.extra)):
            for line in lines[:LOG_LINES]:
                log.error("compile divergence on %s: %s %s", chassis_id, kind, line)
        if repair:
            dp.repair_compile(div)
            result.repaired = True
        result.seconds = time.monotonic() - t0
        return result
