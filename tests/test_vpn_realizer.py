"""The VPN realization loop (controller/services/vpn.py) with a real store and VPN hosts that record what they
are told: services run on their router's gateway chassis, only where this controller is the master, and
statuses are stored from what the hosts report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from apps.view import View
from apps.vpn import ServicePlan
from controller.services.vpn import VpnRealizer
from controller.services.vpn_host import LocalVpnHost, _netns_names
from tests.test_apps_nat import GC, nat_world
from tests.test_apps_vpn import vpn_records
from topology.records import VPN_ACTIVE, VPN_DOWN, VPN_ERROR, VPN_PENDING_CREATE
from topology.state import State


class RecordingHost:
    """A VpnHost that runs nothing: keeps the plans it was given, reports the statuses it is told to."""

    def __init__(self, chassis_id: str) -> None:
        self.chassis_id = chassis_id
        self.plans: list[ServicePlan] = []
        self.report: dict[str, tuple[str, str]] = {}
        self.closed = False

    def apply(self, plans: Sequence[ServicePlan]) -> None:
        self.plans = list(plans)

    def statuses(self) -> dict[str, tuple[str, str]]:
        return {
            c.id: self.report.get(c.id, (VPN_PENDING_CREATE, "")) for p in self.plans for c in p.connections
        }

    def close(self) -> None:
        self.closed = True


def _state(tmp_path: Path) -> tuple[State, dict]:  # type: ignore[type-arg]
    w, _p = nat_world()
    records = [*w.topo.all_records(), *vpn_records("alice", "r", "a-sub", "172.24.4.100")]
    state = State(tmp_path / "topology.sqlite")
    state.write(lambda t, rev, now: [(r.KIND, r.id, None, r) for r in records])
    return state, dict(w.runtime)


def test_the_service_runs_on_the_gateway_chassis_and_its_status_is_stored(tmp_path: Path) -> None:
    state, runtime = _state(tmp_path)
    hosts = {"hv1": RecordingHost("hv1"), "hv2": RecordingHost("hv2")}
    realizer = VpnRealizer(state, lambda: View(state.topology, runtime, GC), hosts)
    realizer.round()
    assert [p.id for p in hosts["hv1"].plans] == ["svc"] and hosts["hv2"].plans == []
    assert state.topology.ipsec_site_connections["conn"].status == VPN_PENDING_CREATE
    hosts["hv1"].report["conn"] = (VPN_DOWN, "received AUTHENTICATION_FAILED notify error")
    realizer.round()
    conn = state.topology.ipsec_site_connections["conn"]
    assert (conn.status, conn.status_reason) == (VPN_DOWN, "received AUTHENTICATION_FAILED notify error")
    hosts["hv1"].report["conn"] = (VPN_ACTIVE, "")
    rev = state.topology.revision
    realizer.round()
    assert state.topology.ipsec_site_connections["conn"].status == VPN_ACTIVE
    assert state.topology.vpn_services["svc"].status == VPN_ACTIVE  # the service follows its connection
    realizer.round()
    assert state.topology.revision == rev + 1, "an unchanged status is not written again"
    realizer.stop()
    assert all(h.closed for h in hosts.values())
    state.close()


def test_only_the_chassis_master_runs_and_reports(tmp_path: Path) -> None:
    state, runtime = _state(tmp_path)
    hosts = {"hv1": RecordingHost("hv1")}
    mine: set[str] = set()
    realizer = VpnRealizer(state, lambda: View(state.topology, runtime, GC), hosts, owns=lambda c: c in mine)
    realizer.round()
    assert hosts["hv1"].plans == [], "another controller masters hv1: it runs the service there"
    hosts["hv1"].report["conn"] = (VPN_ACTIVE, "")
    rev = state.topology.revision
    realizer.round()
    assert state.topology.revision == rev, "and only it reports"
    mine.add("hv1")  # this controller becomes hv1's master
    realizer.round()
    assert [p.id for p in hosts["hv1"].plans] == ["svc"]
    assert state.topology.ipsec_site_connections["conn"].status == VPN_ACTIVE
    mine.clear()  # and loses it: the service stops here
    realizer.round()
    assert hosts["hv1"].plans == []
    state.close()


def test_a_gateway_chassis_without_a_vpn_host_reports_down(tmp_path: Path) -> None:
    state, runtime = _state(tmp_path)
    realizer = VpnRealizer(state, lambda: View(state.topology, runtime, GC), {})
    realizer.round()
    conn = state.topology.ipsec_site_connections["conn"]
    assert conn.status == VPN_DOWN and "hv1" in conn.status_reason
    state.close()


@pytest.mark.lab  # root: it makes (and removes) a namespace
def test_a_service_that_cannot_be_set_up_is_error_with_the_reason(tmp_path: Path) -> None:
    """A real LocalVpnHost (root) for a chassis namespace that does not exist: the veth cannot be made, the
    half-made namespace is removed, the connection is ERROR with the reason, and the same plan is not tried
    again at every round."""
    state, runtime = _state(tmp_path)
    host = LocalVpnHost("hv1", "no-such-chassis-ns", lambda: "unix:/nonexistent/db.sock", tmp_path / "vpn")
    realizer = VpnRealizer(state, lambda: View(state.topology, runtime, GC), {"hv1": host})
    realizer.round()
    conn = state.topology.ipsec_site_connections["conn"]
    assert conn.status == VPN_ERROR and "no-such-chassis-ns" in conn.status_reason, conn
    assert not [n for n in _netns_names() if n.startswith(host.prefix)], "the half-made namespace is gone"
    failed_at = host.failed["svc"][2]
    realizer.round()
    assert host.failed["svc"][2] == failed_at, "not retried before RETRY_S"
    realizer.stop()
    state.close()
