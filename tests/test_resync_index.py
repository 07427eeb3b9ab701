"""The engine's expected-bytes index (transport.ExpectedIndex, kept by sync.SwitchSync): patched with the
keys a delta changed, it is the index a fresh build of the same desired flows gives, whatever the order of
replace_desired, apply and dumps (including a delta or a whole new desired state arriving while an index is
being built for a dump). No switch: the index is what a dump's entries are looked up in
(tests/test_resync_recognize.py shows the lookup; tests/test_sync.py the resync against OVS)."""

from __future__ import annotations

import dataclasses
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.southbound import sync, transport
from controller.southbound.plan import FlowKey
from controller.southbound.transport import ExpectedIndex
from flows import encode
from flows.flow import Flow, FlowError
from tests.test_sync import pipeline_flows


def _pool() -> list[Flow]:
    """Flows and variants of them: the same key with another cookie or another stage-mate's actions
    (same key, other bytes), so deltas replace flows as well as add and remove them."""
    base = [f for f in pipeline_flows(6, ports_per_net=3) if isinstance(f, Flow)]
    out = list(base)
    for i, f in enumerate(base):
        out.append(dataclasses.replace(f, cookie=f.cookie ^ 1))
        mate = next((g for g in base[i + 1 :] if g.stage == f.stage and g.actions != f.actions), None)
        if mate is not None:
            try:
                out.append(dataclasses.replace(f, actions=mate.actions))
            except FlowError:
                pass
    return out


POOL = _pool()
ENC = encode.Encoder()


def fresh(
    desired: dict[FlowKey, Flow],
) -> tuple[dict[int, dict[bytes, FlowKey]], dict[FlowKey, tuple[int, bytes]]]:
    idx = ExpectedIndex.build(desired, ENC)
    return idx.by_table, idx.where


def same(idx: ExpectedIndex, desired: dict[FlowKey, Flow]) -> None:
    by_table, where = fresh(desired)
    assert {t: d for t, d in idx.by_table.items() if d} == by_table
    assert idx.where == where
    for k in idx.where:  # the values name the desired flows
        assert k in desired


indices = st.integers(0, len(POOL) - 1)
ops = st.lists(st.tuples(st.sampled_from(["add", "remove", "patch"]), indices), max_size=40)


def test_the_pool_has_replacements() -> None:
    keys = [FlowKey(f) for f in POOL]
    assert len(set(keys)) < len(keys) // 2  # most keys come with two or three flows


@settings(max_examples=150, deadline=None)
@given(initial=st.sets(indices, max_size=60), steps=ops)
def test_an_index_patched_with_the_changed_keys_equals_a_fresh_build(initial: set[int], steps: list) -> None:
    desired = {}
    for i in sorted(initial):
        desired[FlowKey(POOL[i])] = POOL[i]
    idx = ExpectedIndex.build(desired, ENC)
    touched: set[FlowKey] = set()
    for what, i in steps:
        f = POOL[i]
        k = FlowKey(f)
        if what == "add":
            desired[k] = f
            touched.add(k)
        elif what == "remove":
            desired.pop(k, None)
            touched.add(k)
        else:
            idx.patch(touched, dict(desired), ENC)
            touched = set()
            same(idx, desired)
    idx.patch(touched, dict(desired), ENC)
    same(idx, desired)


def expected_now(eng: sync.SwitchSync) -> tuple[dict[FlowKey, Flow], ExpectedIndex]:
    with eng._index_lock:
        return eng._expected()


engine_ops = st.lists(
    st.one_of(
        st.tuples(st.just("replace"), st.sets(indices, max_size=40)),
        st.tuples(st.just("apply"), st.sets(indices, max_size=8), st.sets(indices, max_size=8)),
        st.tuples(st.just("dump")),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=engine_ops)
def test_the_engines_index_is_that_of_its_desired_flows_after_any_order_of_changes(steps: list) -> None:
    """replace_desired / apply / a dump's snapshot in any order, with the engine's sender thread building
    the index whenever it is idle meanwhile: every dump's index is a fresh build of that dump's snapshot."""
    eng = sync.SwitchSync(0xA1)
    try:
        for rev, step in enumerate(steps, 1):
            if step[0] == "replace":
                eng.replace_desired([POOL[i] for i in sorted(step[1])], rev)
            elif step[0] == "apply":
                eng.apply([POOL[i] for i in sorted(step[1])], [POOL[i] for i in sorted(step[2])], rev)
            else:
                desired, idx = expected_now(eng)
                with eng._lock:
                    assert desired == eng._desired
                same(idx, desired)
        desired, idx = expected_now(eng)
        same(idx, desired)
    finally:
        eng.close()


def _engine_with(flows: list[Flow]) -> sync.SwitchSync:
    eng = sync.SwitchSync(0xA2)
    eng.replace_desired(flows, 1)
    deadline = time.monotonic() + 10
    while eng.stats.index_builds < 1:  # not connected: the idle sender thread builds it
        assert time.monotonic() < deadline, "the idle engine built no index"
        time.sleep(0.01)
    return eng


def test_an_idle_engine_builds_the_index_before_any_switch_connects_and_a_dump_only_patches_it() -> None:
    eng = _engine_with(POOL[:30])
    try:
        assert not eng.connected and eng.stats.index_builds == 1
        assert eng.stats.last_index_cpu >= 0 and eng.stats.last_index_seconds > 0
        eng.apply([POOL[40]], [POOL[3]], 2)
        desired, idx = expected_now(eng)
        same(idx, desired)
        assert FlowKey(POOL[40]) in idx.where and FlowKey(POOL[3]) not in desired
        assert eng.stats.index_builds == 1  # patched, not rebuilt
    finally:
        eng.close()


def test_a_delta_arriving_while_the_index_is_built_is_patched_in_by_the_next_dump(monkeypatch) -> None:
    eng = _engine_with(POOL[:30])
    real = ExpectedIndex.build
    try:
        eng.replace_desired(POOL[:30], 2)  # the next index is built by the dump below (or the idle thread)
        with eng._index_lock:  # hold off the idle thread until the hook is in
            eng._index = None

            def build(desired, enc):  # the desired state changes between the snapshot and the install
                eng.apply([POOL[45]], [POOL[0]], 3)
                return real(desired, enc)

            monkeypatch.setattr(ExpectedIndex, "build", build)
            desired, idx = eng._expected()
            monkeypatch.setattr(ExpectedIndex, "build", real)
            same(idx, desired)  # the index of its own snapshot
            assert FlowKey(POOL[45]) not in desired
        desired, idx = expected_now(eng)
        same(idx, desired)
        assert FlowKey(POOL[45]) in desired and FlowKey(POOL[0]) not in desired
    finally:
        eng.close()


def test_replace_desired_while_the_index_is_built_is_not_overwritten_by_the_old_index(monkeypatch) -> None:
    eng = _engine_with(POOL[:30])
    real = ExpectedIndex.build
    try:
        with eng._index_lock:
            eng._index = None

            def build(desired, enc):
                eng.replace_desired(POOL[30:60], 5)
                return real(desired, enc)

            monkeypatch.setattr(ExpectedIndex, "build", build)
            desired, idx = eng._expected()
            monkeypatch.setattr(ExpectedIndex, "build", real)
            same(idx, desired)  # serves the dump that took that snapshot...
            assert eng._index is None  # ...and is not kept: it is not the new desired state's
        desired, idx = expected_now(eng)
        assert desired == {FlowKey(f): f for f in POOL[30:60]}
        same(idx, desired)
    finally:
        eng.close()


def test_forget_drops_the_index() -> None:
    eng = _engine_with(POOL[:30])
    try:
        eng.forget()
        with eng._lock:
            assert eng._index is None and not eng._index_tracked and not eng._index_dirty
        time.sleep(0.05)  # an engine that forgot its desired state builds nothing
        assert eng.stats.index_builds == 1
    finally:
        eng.close()


def test_a_dump_uses_the_index_it_is_given(monkeypatch) -> None:
    """Transport.dump hands the engine's index to the Recognizer, which then builds nothing."""
    calls = []
    monkeypatch.setattr(ExpectedIndex, "build", classmethod(lambda cls, d, e: calls.append(1) or cls()))
    idx = ExpectedIndex()
    rec = transport.Recognizer({}, ENC, idx)
    assert rec.expected is idx.by_table and not calls
