#!/usr/bin/env python3
"""Churn soak (printed, not pass/fail; needs root): the seeded churn of tests/churn.py over a 2-chassis lab
with three steady pings, in phases separated by a SIGTERM restart of the controller, a kill -9, and a
restart of hv2's ovs-vswitchd. Per phase: churn steps, ping loss of each steady ping, and the controller's
RSS, open fds, threads and store size (topology.sqlite + WAL). At the end every churn object is deleted and
each switch's flows, groups and meters are compared with the start, then a restart must send nothing.

    sudo .venv/bin/python bench/bench_churn.py [--phase-s 120] [--seed 7]
    sudo .venv/bin/python bench/bench_churn.py --quick
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.churn import EXT_HOST, Churn, build, run, snapshot, start_ping  # noqa: E402
from tests.e2e import Env, lab_env  # noqa: E402


def resources(env: Env) -> str:
    proc = env.controller.proc
    assert proc is not None
    pid = proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")) // 1024
    threads = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Threads:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    data = env.controller.data_dir
    store = sum(p.stat().st_size for p in data.glob("topology.sqlite*")) // 1024
    return f"RSS {rss} MB, {fds} fds, {threads} threads, store {store} KB"


def phase(env: Env, churn: Churn, name: str, seconds: float) -> None:
    steady = churn.steady
    pingers = [
        start_ping("l2", steady.s1, steady.s2.ip),
        start_ping("snat", steady.s1, EXT_HOST),
        start_ping("fip", steady.ext, steady.fip),
    ]
    t0 = time.monotonic()
    steps = run(churn, seconds)
    took = time.monotonic() - t0
    loss = []
    for p in pingers:
        sent, received = p.stop()
        loss.append(f"{p.name} {sent - received}/{sent}")
    print(
        f"{name:<28} {steps:5d} steps ({steps / took:4.1f}/s)  lost: {', '.join(loss)}  |  {resources(env)}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase-s", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.phase_s = 10.0
    print(f"churn soak: seed {a.seed}, {a.phase_s:.0f} s per phase, load average {os.getloadavg()[0]:.2f}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        lab_env(Path(tmp), extra_args=["--gateway-chassis", "hv1"], self_check=False) as env,
    ):
        steady = build(env)
        before = snapshot(env)
        churn = Churn(steady, random.Random(a.seed))
        print(f"{'start':<28} {'':>25}  |  {resources(env)}")
        phase(env, churn, "churn", a.phase_s)
        env.restart_controller(sig=signal.SIGTERM)
        phase(env, churn, "churn after SIGTERM restart", a.phase_s)
        env.restart_controller(sig=signal.SIGKILL)
        phase(env, churn, "churn after kill -9", a.phase_s)
        env.chassis("hv2").restart_vswitchd()
        phase(env, churn, "churn after vswitchd restart", a.phase_s)
        churn.clear()
        env.wait_realized()
        after = snapshot(env)
        same = all(after[ch] == before[ch] for ch in before)
        print(
            f"after deleting every churn object: flows/groups/meters as at the start: {same}  |  {resources(env)}"
        )
        status = env.restart_controller()
        mods = {ch: (st.flow_mods_sent, st.group_mods_sent) for ch, st in status.items()}
        print(f"restart afterwards: (flow-mods, group-mods) sent per chassis {mods}")
        print(f"operations: {churn.counts}")
        return 0 if same and all(m == (0, 0) for m in mods.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
