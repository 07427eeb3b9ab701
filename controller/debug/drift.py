"""Drift: verify each switch's flows against the desired set, repair only the difference, say what changed.

Periodically (drift_interval_s) and on demand (DataplaneService.Verify), for each chassis whose switch is
connected and whose desired state is fully realized (a change in flight is not drift): dump the switch,
compare by value with the desired flows and groups, log every missing and unexpected entry, and — when
repairing — ask the sync engine for a resync, which adopts what is right and sends one bundle with only
the difference. `ChassisPlane.drift_repairs` counts repaired entries (exported as a metric).

The periodic check is spread over the interval (one chassis per `drift_interval_s / chassis` seconds, not
every switch at once) and dumps a switch only when something could have changed: its fingerprint
(SwitchSync.activity without the packet counters: the switch's flow count, our bundles, resyncs and realized
revision) differs from the one of its last clean check, or that check is FULL_EVERY rounds old. At 10,000
ports a dump is ~40k entries a switch, and dumping 20 switches every 30 s was most of an idle controller's
and switch's CPU. So a flow added or deleted behind our back is found within one interval, a flow changed in
place (same count) within FULL_EVERY intervals — on switches of SKIP_MIN_FLOWS flows or more: smaller ones
are dumped every round; DataplaneService.Verify always dumps.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from apps import ids, owners
from flows.flow import Flow, MeterEntry
from flows.format import format_flow, format_group, format_meter

log = logging.getLogger(__name__)

#: a chassis whose fingerprint has not moved is still dumped every FULL_EVERY-th round (changes in place)
FULL_EVERY = 10
#: a switch with fewer flows is dumped every round anyway (a few ms): skipping is for big tables only, so a
#: flow changed in place on a small switch is still found within one interval
SKIP_MIN_FLOWS = 2000


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
        # chassis -> (fingerprint at its last clean check, periodic rounds skipped since)
        self._clean: dict[str, tuple[Any, int]] = {}
        self.dumped = 0  # periodic checks that dumped a switch
        self.skipped = 0  # periodic checks that did not: nothing had moved
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        """One chassis per tick, round robin: each chassis once per interval, the dumps spread over it."""
        turn = 0
        while True:
            chassis = sorted(self.dataplane.planes)
            if self._stop.wait(self.interval_s / max(1, len(chassis))):
                return
            if not chassis:
                continue
            chassis_id = chassis[turn % len(chassis)]
            turn += 1
            try:
                self.periodic_check(chassis_id)
            except Exception:
                log.exception("drift check of %s failed", chassis_id)

    def periodic_check(self, chassis_id: str) -> DriftReport | None:
        """The timer's check of one chassis: None when skipped (nothing moved since its last clean check)."""
        plane = self.dataplane.planes.get(chassis_id)
        engine = plane.engine if plane is not None else None
        fingerprint = None
        if engine is not None and engine.connected and hasattr(engine, "activity"):
            try:
                fingerprint = engine.activity()[2:]  # (flows, bundles, resyncs, realized): not the counters
            except Exception as err:  # noqa: BLE001 - then dump: check() says what is wrong
                log.debug("drift: no fingerprint of %s: %s", chassis_id, err)
        last = self._clean.get(chassis_id)
        if (
            fingerprint is not None
            and last is not None
            and last[0] == fingerprint
            and fingerprint[0] >= SKIP_MIN_FLOWS
            and last[1] + 1 < FULL_EVERY
        ):
            self._clean[chassis_id] = (fingerprint, last[1] + 1)
            self.skipped += 1
            return None
        self.dumped += 1
        report = self.check(chassis_id, repair=True)
        if report.clean and fingerprint is not None:
            self._clean[chassis_id] = (fingerprint, 0)
        else:
            self._clean.pop(chassis_id, None)
        return report

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
        if not diff.settled:
            report.note = "a change was being installed; not drift"
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
