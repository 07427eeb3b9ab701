"""The self-checking compile: each chassis's incrementally kept desired state against a full compile.

The compiler recompiles only the owner units a change can reach (apps/compiler.py). If that reasoning ever
misses a unit, the switch gets exactly what the controller wants and drift repair sees nothing wrong: only
a compile from scratch can tell. So, periodically (`self_check_interval_s`), on DataplaneService.Verify,
and — in tests — after every change (`self_check_every_change`), each chassis is compiled from scratch
and compared unit by unit. A divergence is logged with the differing flows and their owners, counted
(`sdn_compile_divergence_total{chassis}`, ChassisStatus.compile_divergences, the dashboard) and repaired:
the desired state becomes the full compile and the switch gets the minimal difference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from apps import ids, owners
from apps.compiler import Divergence
from controller.periodic import Periodic
from flows.flow import Flow, MeterEntry
from flows.format import format_flow, format_group, format_meter

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
        controllers: those it masters); holds the model lock while it compiles one."""
        dp = self.dataplane
        t0 = time.monotonic()
        out = []
        for ch in chassis_ids or [c for c in sorted(dp.planes) if dp.compiler.keeps(c)]:
            with dp.state.lock:  # per chassis: writes wait for one chassis's compile at most
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
