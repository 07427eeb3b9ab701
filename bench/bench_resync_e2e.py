#!/usr/bin/env python3
"""Resync of N unchanged flows against a real ovs-vswitchd, end to end (printed, not pass/fail).

One lab chassis holds N flows shaped like the pipeline's (tests/test_sync.pipeline_flows, installed once by
the engine). Each run then does what a restarted controller does with that switch: a new engine (its own
cold encoder) gets the same desired state while the switch is connected, dumps it over the OpenFlow TLS
connection, recognises every entry, plans, and sends nothing. Timed: the engine's resync (dump request to
plan done: `last_resync_seconds`) and its dump + decode part. `--cold` also empties the encoder's
process-wide per-field and per-action caches before each run, as a fresh process has them.

The yardstick, in the same run, alternated with the resyncs: `ovs-ofctl dump-flows br-int` of the same
flows (ovs-vswitchd producing the same dump, ovs-ofctl formatting it as text; over its management socket,
no TLS). The ratio resync ÷ ofctl says how close the controller is to that floor. Also measured: the
controller process's CPU (all threads) during the resync, and ovs-vswitchd's CPU (/proc) during the resync
and during ofctl's dump: on a loaded machine wall time follows the scheduler, CPU seconds do not.

The engine keeps the expected bytes of its desired flows (transport.ExpectedIndex), built by its sender
thread while it has nothing else to do, as after a restart's first compile, before the switch connects.
So each run first gives the new engine its desired state with the switch held back (the engine is not
yet active for it), waits for that index and reports its build (wall, CPU) and the process's RSS, then
lets the engine attach to the connected switch: the resync is timed from there (attach to plan done).
`--lazy` attaches at once instead: the index is then built inside the resync, as before it was kept.

    .venv/bin/python bench/bench_resync_e2e.py [--flows 100000] [--runs 5] [--cold] [--lazy] [--per-table]
        [--profile-run]

Needs root (real ovs-vswitchd in a lab namespace).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.pki import Pki
from controller.southbound import transport
from controller.southbound.ofapp import ensure_started
from flows import encode
from flows.flow import Flow
from lab import Lab
from tests.test_sync import CHASSIS_DPIDS, Switch, pipeline_flows


def clear_process_caches() -> None:
    """The encoder's process-wide caches, as a freshly started controller has them (empty)."""
    for name in ("_MATCH_TLVS", "_INSTRUCTIONS", "_TLV_PREFIX", "_TABLES"):
        cache = getattr(encode, name, None)
        if isinstance(cache, dict):
            cache.clear()


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib() -> float:
    """This process's resident memory (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stats(xs: list[float]) -> str:
    return f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="empty the encoder's process-wide caches per run")
    ap.add_argument(
        "--lazy",
        action="store_true",
        help="attach the new engine at once: its index is built inside the resync (no head start)",
    )
    ap.add_argument(
        "--per-table",
        action="store_true",
        help="dump with one flow-stats request per table (tables 0-253) instead of one for all tables",
    )
    ap.add_argument(
        "--profile-run",
        action="store_true",
        help="after the runs, one more resync while py-spy records this process (collapsed stacks, /tmp)",
    )
    a = ap.parse_args()
    if a.per_table:
        transport.DUMP_TABLES = tuple(range(254))
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    pki = Pki(Path(tempfile.mkdtemp(prefix="bench-resync-pki-")))
    pki.init()
    app = ensure_started("0.0.0.0", port, tls=pki.ensure_controller([]))
    app.authorize = lambda dpid, chassis: None if CHASSIS_DPIDS.get(chassis) == dpid else "wrong_datapath_id"
    items = pipeline_flows(max(8, int(a.flows / 8.6)))
    n = sum(1 for f in items if isinstance(f, Flow))
    print(f"{n} flows, {len(items) - n} groups; load average {os.getloadavg()[0]:.2f}")
    with Lab(pki=pki) as lab:
        sw = Switch(lab, app, "bench")
        sw.connect()
        eng = app.sync.get(sw.dpid)
        t0 = time.perf_counter()
        eng.replace_desired(items, 1)
        assert eng.wait_realized(1, 600), eng.stats
        print(f"installed in {time.perf_counter() - t0:.2f} s")
        rev = 1
        resync, dump, ofctl, loads, cpu, vsw, ofctl_vsw = [], [], [], [], [], [], []
        idx_wall, idx_cpu, rss = [], [], []
        cpu_last = [0.0]
        vpid = int((sw.ch._ovs.rundir / "ovs-vswitchd.pid").read_text())

        def one_resync() -> None:
            nonlocal rev, eng
            app.sync.reset()
            if a.cold:
                clear_process_caches()
            rev += 1
            if a.lazy:
                eng = app.sync.get(sw.dpid)
                eng.replace_desired(items, rev)
            else:
                app.sync.active = set()  # connected, but the new engine may not talk to it yet
                eng = app.sync.get(sw.dpid)
                eng.replace_desired(items, rev)
                deadline = time.monotonic() + 120
                while eng.stats.index_builds < 1:  # the idle engine builds its index
                    assert time.monotonic() < deadline, eng.stats
                    time.sleep(0.005)
                st = eng.stats
                idx_wall.append(st.last_index_seconds)
                idx_cpu.append(st.last_index_cpu)
                rss.append(rss_mib())
            c0 = time.process_time()  # the resync runs on the engine's thread from here
            if not a.lazy:
                app.sync.set_active(sw.dpid, True)  # the switch "connects": attach, dump, adopt
            assert eng.wait_realized(rev, 600), eng.stats
            cpu_last[0] = time.process_time() - c0
            app.sync.active = None

        for i in range(a.runs):
            v0 = cpu_of(vpid)
            t0 = time.perf_counter()
            out = sw.ch.ofctl("dump-flows", "br-int")
            ofctl.append(time.perf_counter() - t0)
            ofctl_vsw.append(cpu_of(vpid) - v0)
            assert out.count("actions=") == n, out.count("actions=")
            loads.append(os.getloadavg()[0])
            v0 = cpu_of(vpid)
            one_resync()
            vsw.append(cpu_of(vpid) - v0)
            cpu.append(cpu_last[0])
            st = eng.stats
            assert st.resyncs == 1 and st.flow_mods_sent == 0 and st.group_mods_sent == 0, st
            assert st.last_dump_entries == n and st.last_dump_slow == 0 and st.last_dump_reordered == 0, st
            resync.append(st.last_resync_seconds)
            dump.append(st.last_dump_seconds)
            if idx_wall:
                print(
                    f"  run {i + 1}: index built ahead in {idx_wall[-1]:.3f} s ({idx_cpu[-1]:.2f} s CPU); "
                    f"RSS {rss[-1]:.0f} MiB"
                )
            print(
                f"  run {i + 1}: resync {resync[-1]:.3f} s (dump + decode {dump[-1]:.3f} s; controller CPU "
                f"{cpu[-1]:.2f} s, ovs-vswitchd CPU {vsw[-1]:.2f} s), 0 flow-mods; ovs-ofctl dump-flows "
                f"{ofctl[-1]:.3f} s (ovs-vswitchd CPU {ofctl_vsw[-1]:.2f} s); ratio {resync[-1] / ofctl[-1]:.2f}"
            )
        print(
            f"{a.runs} runs{' (cold caches)' if a.cold else ''}{' (per table)' if a.per_table else ''}, load average {min(loads):.2f}-{max(loads):.2f}; "
            f"min / median / max:\n"
            f"  resync (dump request to plan, 0 flow-mods): {stats(resync)} s\n"
            f"  of which dump + decode:                     {stats(dump)} s\n"
            f"  controller CPU (all threads) in the resync: {stats(cpu)} s\n"
            f"  ovs-vswitchd CPU in the resync:             {stats(vsw)} s\n"
            f"  ovs-ofctl dump-flows of the same flows:     {stats(ofctl)} s\n"
            f"  ovs-vswitchd CPU in ovs-ofctl dump-flows:   {stats(ofctl_vsw)} s\n"
            f"  ratio resync / ofctl (per run):             "
            f"{stats([r / o for r, o in zip(resync, ofctl, strict=True)])}\n"
            f"  controller CPU / ovs-vswitchd CPU (per run): "
            f"{stats([c / max(v, 0.01) for c, v in zip(cpu, vsw, strict=True)])}"
        )
        if idx_wall:
            print(
                f"  index built ahead (not in the resync): {stats(idx_wall)} s wall, {stats(idx_cpu)} s CPU; "
                f"process RSS {stats(rss)} MiB"
            )
        if a.profile_run:
            out_svg = Path(tempfile.mkdtemp(prefix="bench-resync-spy-")) / "resync.txt"
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    *("record", "-r", "250", "--threads", "--format", "raw", "-o", str(out_svg)),
                    *("-p", str(os.getpid())),
                ],
            )
            time.sleep(1.0)
            one_resync()
            time.sleep(0.3)
            spy.send_signal(2)
            spy.wait(30)
            print(f"py-spy profile of one resync: {out_svg}")
        app.sync.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
