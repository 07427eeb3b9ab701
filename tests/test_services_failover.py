"""Gateway failover as a service (controller/services/failover.py) with a fake clock and a fake dataplane
(tests/service_host.py): when holds are written to the store and released, what a restart starts from, the
legacy gateways.json. Through the Dataplane and its compile: tests/test_gateway_failover.py."""

from __future__ import annotations

from pathlib import Path

from controller.services.failover import FailoverService
from tests.service_host import Clock, FakeHost
from topology.records import GatewayHold

UP = {"hv1": True, "hv2": True}


def gateway_of_r(host: FakeHost) -> str | None:
    view = host.current_view()
    return view.gateway_of(view.topo.routers["r"])


def test_a_chassis_unhealthy_for_the_hold_time_is_held_in_the_store_and_released_as_late(
    tmp_path: Path,
) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    fo = FailoverService(host, hold_s=2.0, clock=clock, startup_grace_s=10)
    try:
        assert not fo.tick(clock.now, UP) and gateway_of_r(host) == "hv1"
        clock.now += 0.5
        assert not fo.tick(clock.now, {"hv1": False, "hv2": True})
        clock.now += 1.9  # not yet the hold time
        assert not fo.tick(clock.now, {"hv1": False, "hv2": True})
        assert not host.state.topology.gateway_holds
        clock.now += 0.1
        assert fo.tick(clock.now, {"hv1": False, "hv2": True})
        assert set(host.state.topology.gateway_holds) == {"hv1"} and fo.down == {"hv1"}
        assert gateway_of_r(host) == "hv2"
        rev = host.state.revision
        assert not fo.tick(clock.now + 0.1, {"hv1": False, "hv2": True}) and host.state.revision == rev
        clock.now += 1.0  # healthy again: held until healthy for as long
        assert not fo.tick(clock.now, UP)
        clock.now += 1.9
        assert not fo.tick(clock.now, UP) and set(host.state.topology.gateway_holds) == {"hv1"}
        clock.now += 0.1
        assert fo.tick(clock.now, UP)
        assert not host.state.topology.gateway_holds and fo.down == frozenset()
        assert gateway_of_r(host) == "hv1"
    finally:
        host.state.close()


def test_a_chassis_never_seen_healthy_gets_the_startup_grace(tmp_path: Path) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    fo = FailoverService(host, hold_s=2.0, clock=clock, startup_grace_s=10)
    try:
        clock.now += 9.9
        assert not fo.tick(clock.now, {"hv1": False, "hv2": True})
        clock.now += 0.1
        assert fo.tick(clock.now, {"hv1": False, "hv2": True}) and set(host.state.topology.gateway_holds) == {
            "hv1"
        }
    finally:
        host.state.close()


def test_holds_in_the_store_start_held_and_a_deleted_chassis_is_forgotten(tmp_path: Path) -> None:
    host, clock = FakeHost(tmp_path), Clock()
    host.state.write(lambda t, rev, now: [("gateway_hold", "hv1", None, GatewayHold(id="hv1", revision=rev))])
    fo = FailoverService(host, hold_s=2.0, clock=clock)
    try:
        assert fo.down == {"hv1"}
        assert not fo.tick(clock.now, UP)
        clock.now += 2.0
        assert fo.tick(clock.now, UP) and not host.state.topology.gateway_holds
        clock.now += 1.0
        fo.tick(clock.now, {"hv2": False})
        clock.now += 2.0
        assert fo.tick(clock.now, {}) and fo.down == {"hv2"}
        fo.forget("hv2")
        assert fo.down == frozenset()
    finally:
        host.state.close()


def test_the_legacy_gateways_file_is_moved_into_the_store_once(tmp_path: Path) -> None:
    legacy = tmp_path / "gateways.json"
    legacy.write_text('{"down": ["hv2"]}')
    host, clock = FakeHost(tmp_path), Clock()
    fo = FailoverService(host, hold_s=2.0, clock=clock, legacy_file=legacy)
    try:
        assert fo.down == {"hv2"}  # held from the start, before the file is moved
        fo.migrate()
        assert set(host.state.topology.gateway_holds) == {"hv2"} and not legacy.exists()
        rev = host.state.revision
        fo.migrate()  # gone: nothing to do
        assert host.state.revision == rev
        legacy.write_text("not json")
        again = FailoverService(host, hold_s=2.0, clock=clock, legacy_file=legacy)
        assert again.down == {"hv2"}  # the store's
        again.migrate()
        assert not legacy.exists() and set(host.state.topology.gateway_holds) == {"hv2"}
    finally:
        host.state.close()


def test_a_new_master_starts_from_the_stores_holds_and_its_own_observations(tmp_path: Path) -> None:
    """Several controllers: this one masters hv2 only; hv1's master (another controller) holds it down,
    then this one takes hv1 over: nothing moves at the takeover, hv1 is released after the hold time of
    health as this controller saw it, and a chassis it saw healthy all along is not failed over."""
    host, clock = FakeHost(tmp_path), Clock()
    mine = {"hv2"}
    fo = FailoverService(host, hold_s=2.0, clock=clock, startup_grace_s=10)
    fo.scope = lambda ch: ch in mine
    try:
        clock.now += 20.0  # long after the start: no grace left
        assert not fo.tick(clock.now, UP)
        # hv1's master writes its hold (its switch lost that controller); this one sees hv1 healthy
        host.state.write(
            lambda t, rev, now: [("gateway_hold", "hv1", None, GatewayHold(id="hv1", revision=rev))]
        )
        clock.now += 0.5
        assert not fo.tick(clock.now, UP) and fo.down == {"hv1"}  # not ours: as the store says
        rev = host.state.revision
        # hv1 taken over, healthy here for 0.5 s of the 2 s: still held, nothing written
        hv1_back = clock.now
        mine.add("hv1")
        assert not fo.tick(clock.now, UP) and host.state.revision == rev and fo.down == {"hv1"}
        clock.now = hv1_back - 0.5 + 2.0  # healthy (as this controller saw it) for the hold time
        assert fo.tick(clock.now, UP) and not host.state.topology.gateway_holds
        # a chassis healthy all along, taken over: no failover, and none when it was unhealthy only briefly
        mine.discard("hv1")
        clock.now += 1.0
        assert not fo.tick(clock.now, {"hv1": False, "hv2": True})
        clock.now += 1.0
        mine.add("hv1")  # unhealthy for 1 s of the 2 s when taken over
        assert not fo.tick(clock.now, {"hv1": False, "hv2": True}) and not host.state.topology.gateway_holds
        clock.now += 1.0
        assert fo.tick(clock.now, {"hv1": False, "hv2": True}) and set(host.state.topology.gateway_holds) == {
            "hv1"
        }
    finally:
        host.state.close()
