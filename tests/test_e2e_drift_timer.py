"""The periodic drift check on real switches (no Verify call): one chassis per tick, a switch dumped only
when its aggregate-stats fingerprint moved (controller/debug/drift.py). A flow deleted and one added behind
the controller's back (the flow count moves) are found and repaired by the timer alone; the chassis left
alone is not repaired."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(
        tmp_path_factory.mktemp("e2e-drift-timer"), provider=False, extra_args=["--drift-interval-s", "1"]
    ) as e:
        md = e.md("dt")
        net = e.network(md, "dt-net", "10.91.0.0/24")
        e.plug("hv1", e.port(md, "dt-a", net))
        e.plug("hv2", e.port(md, "dt-b", net))
        e.wait_realized()
        yield e


def test_the_timer_finds_and_repairs_flows_deleted_and_added_behind_our_back(env: Env) -> None:
    a, b = env.vms["dt-a"], env.vms["dt-b"]
    hv1 = env.chassis("hv1")
    time.sleep(2.5)  # the timer's clean checks of both chassis (their fingerprints recorded)
    before = {ln.split(" actions=")[0].split("priority=")[1] for ln in hv1.dump_flows() if "table=60," in ln}
    assert before
    status = env.status()
    hv1.ofctl("del-flows", "br-int", "table=60")
    hv1.ofctl("add-flow", "br-int", "table=33,priority=7,actions=drop")
    deadline = time.monotonic() + 15
    while True:
        lines = hv1.dump_flows()
        now = {ln.split(" actions=")[0].split("priority=")[1] for ln in lines if "table=60," in ln}
        foreign = [ln for ln in lines if "table=33," in ln and "priority=7 " in ln]
        if now == before and not foreign:
            break
        assert time.monotonic() < deadline, ("the timer did not repair hv1", before - now, foreign)
        time.sleep(0.2)
    after = env.status()
    assert after["hv1"].drift_repairs >= status["hv1"].drift_repairs + len(before) + 1
    assert after["hv2"].drift_repairs == status["hv2"].drift_repairs
    assert a.ping(b.ip, count=2)
