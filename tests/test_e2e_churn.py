"""A bounded, seeded churn with steady pings (see tests/churn.py): every switch ends exactly as it started
(flows, groups, meters), a restart afterwards sends nothing, and the steady traffic barely notices."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.churn import EXT_HOST, Churn, build, run, snapshot, start_ping
from tests.e2e import lab_env

pytestmark = pytest.mark.lab

SEED = int(os.environ.get("CHURN_SEED", "11"))
# per half (~200 steps, every kind of step); the controller is killed in between
SECONDS = float(os.environ.get("CHURN_SECONDS", "15"))
MAX_LOSS = 0.005  # of each steady ping's packets: 0 measured once the lab's vswitchd keeps its own routes (BENCHMARKS.md)


def test_churn_ends_exactly_where_it_started(tmp_path: Path) -> None:
    with lab_env(tmp_path, extra_args=["--gateway-chassis", "hv1"]) as env:
        steady = build(env)
        before = snapshot(env)
        pingers = [
            start_ping("l2", steady.s1, steady.s2.ip),
            start_ping("snat", steady.s1, EXT_HOST),
            start_ping("fip", steady.ext, steady.fip),
        ]
        churn = Churn(steady, random.Random(SEED))
        try:
            steps = run(churn, SECONDS)
            env.restart_controller()  # kill -9 in the middle of the churn
            steps += run(churn, SECONDS)
            churn.clear()
            env.wait_realized()
        finally:
            results = {p.name: p.stop() for p in pingers}
        assert steps > 20, churn.counts
        assert set(churn.counts) == {name for name, _ in Churn.OPS}, churn.counts  # every kind of step ran
        after = snapshot(env)
        for ch in before:
            for what, b, a in zip(("flows", "groups", "meters"), before[ch], after[ch]):
                assert a == b, (
                    f"{ch} {what} differ after the churn (seed {SEED}, {churn.counts}):\n"
                    f"  missing: {sorted(b - a)[:10]}\n  extra: {sorted(a - b)[:10]}"
                )
        status = env.restart_controller()
        for ch, st in status.items():
            assert st.flow_mods_sent == 0 and st.group_mods_sent == 0, f"{ch} was sent changes: {st}"
        for name, (sent, received) in results.items():
            assert sent > 100, (name, sent)
            assert sent - received <= MAX_LOSS * sent, (
                f"{name}: {sent - received} of {sent} lost ({churn.counts})"
            )
