"""Drift: verify each switch's flows against the desired set, repair only the difference, say what changed.

Periodically (drift_interval_s) and on demand (DataplaneService.Verify), for each chassis whose switch is
connected and whose desired state is fully realized (a change in flight is not drift): dump the switch,
compare by value with the desired flows and groups, log every missing and unexpected entry, and — when
repairing — ask the sync engine for a resync, which adopts what is right and sends one bundle with only
the difference. `ChassisPlane.drift_repairs` counts repaired entries (exported as a metric).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from apps import ids, owners
from controller.periodic import Periodic
from flows.flow import Flow, MeterEntry
from flows.format import format_flow, format_group, format_meter

log = logging.getLogger(__name__)


@dataclass
class DriftReport:
    chassis: str
    checked: bool = False  # False: not connected, or a change was in flight (try again)
    missing: list[str] = field(default_factory=list)  # desired, not on the switch
    unexpected: list[str] = field(default_factory=list)  # on the switch, not desired
    undecodable: list[str] = field(default_factory=list)  # on the switch, no Flow value describes it
    repaired: bool = False
    note: str = ""

    @property
    def clean(self) -> bool:
        return self.checked and not (self.missing or self.unexpected or self.undecodable)


def _text(item: Any, registry: Any) -> str:
    if isinstance(item, MeterEntry):
        return format_meter(item).strip()
    return (format_flow(item, registry) if isinstance(item, Flow) else format_group(item)).strip()


class DriftMonitor:
    def __init__(self, dataplane: Any, interval_s: float) -> None:
        self.dataplane = dataplane
        self.interval_s = interval_s
        self._timer = Periodic("drift", interval_s, self._round)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _round(self) -> None:
        for chassis_id in sorted(self.dataplane.planes):
            try:
                self.check(chassis_id, repair=True)
            except Exception:
                log.exception("drift check of %s failed", chassis_id)

    def check(self, chassis_id: str, repair: bool, timeout: float = 30.0) -> DriftReport:
        report = DriftReport(chassis_id)
        plane = self.dataplane.planes.get(chassis_id)
        engine = plane.engine if plane is not None else None
        if engine is None or not engine.connected:
            report.note = "switch not connected or OVSDB facts not known yet"
            return report
        if engine.realized_revision < engine.revision:
            report.note = "a change is being installed; not drift"
            return report
        diff = engine.verify(timeout)
        if engine.realized_revision < engine.revision:
            report.note = "a change was installed during the check; not drift"
            return report
        report.checked = True
        if diff.clean:
            return report
        # which object owns each entry, for the log lines: the model's owners, read under the model lock (a
        # write changes its indexes in place), and only when there is drift (O(model) per chassis)
        with self.dataplane.state.lock:
            registry = ids.registry_for(owners.model_owners(self.dataplane.state.topology))
        order = lambda i: (
            (0, i.table, -i.priority)
            if isinstance(i, Flow)
            else (2, i.meter_id, 0)
            if isinstance(i, MeterEntry)
            else (1, i.group_id, 0)
        )
        report.missing = [_text(i, registry) for i in sorted(diff.missing, key=order)]
        report.unexpected = [_text(i, registry) for i in sorted(diff.unexpected, key=order)]
        report.undecodable = list(diff.undecodable)
        if report.clean:
            return report
        for kind, lines in (
            ("missing", report.missing),
            ("unexpected", report.unexpected),
            ("undecodable", report.undecodable),
        ):
            for line in lines:
                log.warning("drift on %s: %s %s", chassis_id, kind, line)
        if repair:
            engine.request_resync()
            plane.drift_repairs += len(report.missing) + len(report.unexpected) + len(report.undecodable)
            report.repaired = True
            log.warning(
                "drift on %s: repairing %d missing, %d unexpected, %d undecodable entries",
                chassis_id,
                len(report.missing),
                len(report.unexpected),
                len(report.undecodable),
            )
        return report

    def wait_repaired(self, chassis_id: str, timeout: float) -> bool:
        """After a repair: True once a fresh check is clean."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.check(chassis_id, repair=False).clean:
                return True
            time.sleep(0.1)
        return False
