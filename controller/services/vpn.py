"""VPNaaS realization: each VPN service runs on its router's gateway chassis, reported from charon.

A thread compares, every `interval_s`, the model's plans (apps/vpn.py `plan`: where each service runs and
what its connections are) with what each VPN host runs (controller/services/vpn_host.py), for the chassis
this controller is master of (several controllers: only the chassis's master runs and reports); a gateway
chassis failover moves the plan, so the service stops on the old chassis and starts on the new one. Each
round it also reads the hosts' connection statuses (charon's SAs and the failures it logged) and stores the
ones that changed (topology/ops_vpn.py set_vpn_status).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from apps import vpn
from apps.view import View
from controller.services.host import internal_write
from controller.services.vpn_host import VpnHost
from topology.model import Change, Topology
from topology.ops_vpn import set_vpn_status
from topology.records import VPN_DOWN
from topology.state import State

log = logging.getLogger(__name__)


class VpnRealizer:
    def __init__(
        self,
        state: State,
        view: Callable[[], View],
        hosts: Mapping[str, VpnHost],
        owns: Callable[[str], bool] = lambda _c: True,
        interval_s: float = 0.5,
    ) -> None:
        self.state = state
        self.view = view  # the compilers' view of the current model (called under the model lock)
        self.hosts = dict(hosts)
        self.owns = owns
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vpn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for host in self.hosts.values():
            try:
                host.close()
            except Exception:
                log.exception("%s: close failed", host)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.round()
            except Exception:
                log.exception("VPN round failed")

    def round(self) -> None:
        """Converge every host on its plans, then store the statuses that changed."""
        with self.state.lock:
            view = self.view()
            plans = [p for s in view.topo.vpn_services.values() if (p := vpn.plan(view, s)) is not None]
        by_chassis: dict[str, list[vpn.ServicePlan]] = {ch: [] for ch in self.hosts}
        reports: dict[str, tuple[str, str]] = {}
        for p in plans:
            if not self.owns(p.chassis_id):
                continue  # another controller's chassis: its master runs and reports the service
            if p.chassis_id in by_chassis:
                by_chassis[p.chassis_id].append(p)
            else:
                for c in p.connections:
                    reports[c.id] = (VPN_DOWN, f"no VPN host for gateway chassis {p.chassis_id}")
        placed = {c.id for p in plans for c in p.connections}
        # hosts with services to run first: after a failover the new chassis starts before the old one stops
        for ch in sorted(self.hosts, key=lambda c: not (by_chassis[c] and self.owns(c))):
            host = self.hosts[ch]
            # a chassis we no longer master: stop what runs there (its new master starts it)
            host.apply(by_chassis[ch] if self.owns(ch) else [])
            reports.update((cid, st) for cid, st in host.statuses().items() if cid in placed)
        if reports:
            self._store(reports)

    def _store(self, reports: Mapping[str, tuple[str, str]]) -> None:
        with self.state.lock:
            topo = self.state.topology
            changed = {
                cid: st
                for cid, st in reports.items()
                if (c := topo.ipsec_site_connections.get(cid)) is not None
                and (c.status, c.status_reason) != st
            }
        if not changed:
            return

        # one write per connection: statuses change rarely, and each write's service status follows from the
        # model as the earlier writes left it
        for cid, (status, reason) in sorted(changed.items()):
            log.info("IPsec site connection %s: %s %s", cid, status, reason)
            internal_write(self.state, _status_write(cid, status, reason), "vpn status")


def _status_write(cid: str, status: str, reason: str) -> Callable[[Topology, int, float], list[Change]]:
    return lambda t, rev, now: set_vpn_status(t, cid, status, reason, rev, now)
