"""The compile self-check finds an incremental state that a full compile disagrees with, names the owners,
counts it and repairs it (the switch engine gets exactly the difference); a clean state is left alone."""

from __future__ import annotations

import logging
import threading

import pytest

from apps.compiler import Delta
from controller.debug.selfcheck import SelfCheck
from tests.test_any_order import AnyOrder


@pytest.fixture
def machine():  # type: ignore[no-untyped-def]
    m = AnyOrder()
    m.build()
    m.create_port("p0", "n0", "", set())
    m.create_port("p1", "n0", "", {"web"})
    m.plug_many({"p0", "p1"}, "hv1")
    m.plug("p2", "hv2")
    m.create_port("p2", "n0", "", set())
    try:
        yield m
    finally:
        m.teardown()


def test_a_clean_compile_is_left_alone(machine) -> None:  # type: ignore[no-untyped-def]
    check = SelfCheck(machine.dp, interval_s=0)
    results = check.run()
    assert [r.chassis for r in results] == ["hv1", "hv2", "hv3"] and all(r.clean for r in results)
    assert all(p.compile_divergences == 0 for p in machine.dp.planes.values())


def test_a_lost_unit_is_found_named_counted_and_repaired(machine, caplog) -> None:  # type: ignore[no-untyped-def]
    dp = machine.dp
    engine = machine.engines[machine.topo.chassis["hv1"].datapath_id]
    with machine.state.lock:
        before = set(engine.desired)
        lost = dp.compiler.units["hv1"].pop(("port", "p1"))  # as if an incremental step had missed it
        dp._push("hv1", Delta(remove=set(lost)), machine.state.revision)  # ... and the switch lost its flows
    assert not lost <= engine.desired
    with caplog.at_level(logging.ERROR, logger="controller.debug.selfcheck"):
        results = SelfCheck(dp, interval_s=0).run(["hv1"])
    (r,) = results
    assert r.owners == ["port:p1"] and len(r.missing) == len(lost) and not r.extra and r.repaired
    assert any("compile divergence on hv1" in rec.message for rec in caplog.records)
    assert dp.planes["hv1"].compile_divergences == 1
    assert engine.desired == before  # the switch got back exactly what was lost
    assert SelfCheck(dp, interval_s=0).run(["hv1"])[0].clean
    machine.incremental_equals_full()


def test_the_full_compile_runs_with_the_model_lock_free(machine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The self-check compiles a copy: while it compiles, another thread takes the model lock and a write
    (a port created, compiled into the live state) completes; the copy is still consistent (clean), and
    the live state still equals a full compile after."""
    from controller.debug import selfcheck

    real, seen = selfcheck.full, []

    def probe(view, chassis_id):  # type: ignore[no-untyped-def]
        def write() -> None:
            ok = machine.state.lock.acquire(timeout=5)
            if ok:
                machine.state.lock.release()
                if not seen:
                    machine.create_port("p9", "n0", "", set())
            seen.append(ok)

        t = threading.Thread(target=write)
        t.start()
        t.join(15)
        assert not t.is_alive()
        return real(view, chassis_id)

    monkeypatch.setattr(selfcheck, "full", probe)
    results = SelfCheck(machine.dp, interval_s=0).run()
    assert seen == [True, True, True] and all(r.clean for r in results), results
    assert "p9" in machine.topo.ports
    machine.incremental_equals_full()
