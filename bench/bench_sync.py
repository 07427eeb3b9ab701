"""Bulk programming through SwitchSync vs `ovs-ofctl --bundle add-flows`, on one lab chassis.

1. ~50k flows shaped like the pipeline's (tests/test_sync.pipeline_flows) go through SwitchSync.replace_desired
   on an empty br-int, timed until the barrier confirms them (realized_revision).
2. The same flows, dumped from the switch in ovs-ofctl syntax, are deleted and re-added with
   `ovs-ofctl --bundle add-flows` (groups installed first, untimed): the baseline.
3. A fresh engine with the same desired state reconnects: resync time and flow-mods sent (goal: 0).

Prints flows/s and the ratio (wall time is never pass/fail). Needs root (real ovs-vswitchd).
Run: .venv/bin/python bench/bench_sync.py [n_flows]

`--cold-runs N`: only steps 1 and 2 (the cold-process install and ovs-ofctl right after it, same lab), each run
in a fresh Python process, N runs; prints each ratio and min / median / max.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.pki import Pki
from controller.southbound.ofapp import ensure_started
from flows.flow import Flow
from lab import Lab
from tests.test_sync import CHASSIS_DPIDS, Switch, pipeline_flows

ROUNDS = 3


def build(n_flows: int) -> list:
    n_ports = max(8, int(n_flows / 8.6))
    items = pipeline_flows(n_ports)
    return items


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children (ovs-ofctl)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cold_runs(runs: int, target: int) -> None:
    """`runs` fresh processes, each: cold install then ovs-ofctl; the ratios' spread."""
    ratios, installs, ofctls = [], [], []
    for r in range(runs):
        load = os.getloadavg()[0]
        out = subprocess.run(
            [sys.executable, __file__, str(target), "--cold-only"], capture_output=True, text=True, check=True
        ).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("COLD "))
        _, t_sync, t_ofctl, prep, send, cpu_sync, ovs_sync, cpu_ofctl, ovs_ofctl = line.split()
        ratios.append(float(t_ofctl) / float(t_sync))
        installs.append(float(t_sync))
        ofctls.append(float(t_ofctl))
        print(
            f"run {r + 1}: cold install {float(t_sync):.3f} s (before the bundle {float(prep):.3f} s, "
            f"encode+write {float(send):.3f} s), ovs-ofctl --bundle {float(t_ofctl):.3f} s, "
            f"ratio {ratios[-1]:.2f} (load {load:.2f}); CPU: bench process {float(cpu_sync):.3f} s + "
            f"vswitchd {float(ovs_sync):.3f} s, against ovs-ofctl {float(cpu_ofctl):.3f} s + vswitchd "
            f"{float(ovs_ofctl):.3f} s",
            flush=True,
        )
    for name, xs in (
        ("ratio ofctl / cold install", ratios),
        ("cold install s", installs),
        ("ofctl s", ofctls),
    ):
        print(f"{name}: min {min(xs):.3f} median {statistics.median(xs):.3f} max {max(xs):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n_flows", type=int, nargs="?", default=50_000)
    ap.add_argument("--cold-runs", type=int, default=0, help="only the cold install, in N fresh processes")
    ap.add_argument("--cold-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    target = a.n_flows
    if a.cold_runs:
        cold_runs(a.cold_runs, target)
        return
    cold_only = a.cold_only
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    # the switches connect over TLS with their chassis certificates, as in tests/test_sync.py
    pki = Pki(Path(tempfile.mkdtemp(prefix="bench-sync-pki-")))
    pki.init()
    app = ensure_started("0.0.0.0", port, tls=pki.ensure_controller([]))
    app.authorize = lambda dpid, chassis: None if CHASSIS_DPIDS.get(chassis) == dpid else "wrong_datapath_id"
    items = build(target)
    flows = [f for f in items if isinstance(f, Flow)]
    n = len(flows)
    print(f"{n} flows, {len(items) - n} groups")
    with Lab(pki=pki) as lab:
        sw = Switch(lab, app, "bench")
        sw.connect()
        ch = sw.ch

        # 1. SwitchSync, cold encoder cache
        eng = app.sync.get(sw.dpid)
        vswitchd = ch.vswitchd_pid()
        assert vswitchd is not None
        ovs0, cpu0 = proc_cpu(vswitchd), time.process_time()
        t0 = time.perf_counter()
        eng.replace_desired(items, 1)
        assert eng.wait_realized(1, 300), eng.stats
        t_sync = time.perf_counter() - t0
        cpu_sync, ovs_sync = time.process_time() - cpu0, proc_cpu(vswitchd) - ovs0
        assert len(ch.dump_flows()) == n
        print(
            f"SwitchSync install (cold process): {t_sync:7.3f} s  {n / t_sync:9.0f} flows/s  "
            f"({eng.stats.bundles_sent} bundle, {eng.stats.flow_mods_sent} flow-mods; encode+write "
            f"{eng.stats.last_send_seconds:.3f} s, bundle to barrier {eng.stats.last_bundle_seconds:.3f} s)"
        )

        # 2. baseline: the same flows as ovs-ofctl text, one bundle
        workdir = lab.workdir
        flow_file = workdir / "flows.txt"
        group_file = workdir / "groups.txt"
        flow_file.write_text("\n".join(ch.dump_flows()) + "\n")
        groups = [ln.strip() for ln in ch.ofctl("dump-groups", "br-int").splitlines() if "group_id=" in ln]
        group_file.write_text("\n".join(groups) + "\n")
        app.sync.reset()  # the engine must not fight the baseline
        sw.disconnect()
        ch.ofctl("del-flows", "br-int")
        ch.ofctl("del-groups", "br-int")
        ch.ofctl("--bundle", "add-groups", "br-int", str(group_file))
        ovs0, child0 = proc_cpu(vswitchd), children_cpu()
        t0 = time.perf_counter()
        ch.ofctl("--bundle", "add-flows", "br-int", str(flow_file))
        t_ofctl = time.perf_counter() - t0
        cpu_ofctl, ovs_ofctl = children_cpu() - child0, proc_cpu(vswitchd) - ovs0
        assert len(ch.dump_flows()) == n
        print(f"ovs-ofctl --bundle:        {t_ofctl:7.3f} s  {n / t_ofctl:9.0f} flows/s")
        print(f"ratio SwitchSync / ovs-ofctl --bundle (flows/s): {t_ofctl / t_sync:.2f}")
        if cold_only:
            prep = t_sync - eng.stats.last_bundle_seconds
            print(
                f"COLD {t_sync:.4f} {t_ofctl:.4f} {prep:.4f} {eng.stats.last_send_seconds:.4f} "
                f"{cpu_sync:.4f} {ovs_sync:.4f} {cpu_ofctl:.4f} {ovs_ofctl:.4f}"
            )
            app.sync.reset()
            return

        # 2b. the same pair alternated a few times (this 2-vCPU machine is noisy): new engine in a warm
        #     process (its encoder cache cold) vs ovs-ofctl, medians
        syncs, ofctls = [], []
        for rnd in range(ROUNDS):
            ch.ofctl("del-flows", "br-int")
            ch.ofctl("del-groups", "br-int")
            sw.reconnect()
            eng = app.sync.get(sw.dpid)
            t0 = time.perf_counter()
            eng.replace_desired(items, 1)
            assert eng.wait_realized(1, 300), eng.stats
            syncs.append(time.perf_counter() - t0)
            app.sync.reset()
            sw.disconnect()
            ch.ofctl("del-flows", "br-int")
            ch.ofctl("del-groups", "br-int")
            ch.ofctl("--bundle", "add-groups", "br-int", str(group_file))
            t0 = time.perf_counter()
            ch.ofctl("--bundle", "add-flows", "br-int", str(flow_file))
            ofctls.append(time.perf_counter() - t0)
            print(f"  round {rnd + 1}: SwitchSync {syncs[-1]:.3f} s, ovs-ofctl --bundle {ofctls[-1]:.3f} s")
        ms, mo = statistics.median(syncs), statistics.median(ofctls)
        print(
            f"median of {ROUNDS}: SwitchSync {n / ms:9.0f} flows/s, ovs-ofctl --bundle {n / mo:9.0f} flows/s, "
            f"ratio {mo / ms:.2f}"
        )

        # 3. again through a new engine (its own cold encoder cache; the process's per-field and per-action
        #    caches are warm, as for every switch after the first)
        ch.ofctl("del-flows", "br-int")
        ch.ofctl("del-groups", "br-int")
        sw.reconnect()
        eng = app.sync.get(sw.dpid)
        t0 = time.perf_counter()
        eng.replace_desired(items, 1)
        assert eng.wait_realized(1, 300), eng.stats
        t_second = time.perf_counter() - t0
        print(
            f"new engine, warm process:  {t_second:7.3f} s  {n / t_second:9.0f} flows/s  "
            f"(ratio to ovs-ofctl --bundle {t_ofctl / t_second:.2f})"
        )
        t0 = time.perf_counter()
        ch.restart_vswitchd()
        t_restart = time.perf_counter() - t0
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while not (eng.stats.resyncs >= 2 and eng.stats.last_resync_flow_mods == n):
            assert time.monotonic() < deadline, eng.stats
            time.sleep(0.01)
        assert eng.wait_realized(1, 120)
        t_back = time.perf_counter() - t0
        print(
            f"vswitchd restart ({t_restart:.2f} s) -> flows back {t_back:7.3f} s later "
            f"(reconnect + dump + {eng.stats.last_resync_flow_mods} flow-mods from the engine's warm cache; "
            f"ratio to ovs-ofctl --bundle {t_ofctl / t_back:.2f})"
        )

        # 4. resync with nothing changed: fresh engine, same desired, reconnect
        app.sync.reset()
        eng = app.sync.get(sw.dpid)
        eng.replace_desired(items, 2)
        assert eng.wait_realized(2, 120)
        first = eng.stats
        t0 = time.perf_counter()
        sw.reconnect()
        deadline = time.monotonic() + 120
        while eng.stats.resyncs < 2:
            assert time.monotonic() < deadline, eng.stats
            time.sleep(0.01)
        t_resync = time.perf_counter() - t0
        st = eng.stats
        print(
            f"resync, nothing changed (new engine, cold encoder): {first.last_resync_seconds:7.3f} s "
            f"dump+diff, {first.last_resync_flow_mods} flow-mods"
        )
        print(
            f"resync after reconnect (warm):  {st.last_resync_seconds:7.3f} s dump+diff "
            f"({t_resync:.3f} s incl. reconnect; dump+decode {st.last_dump_seconds:.3f} s, "
            f"{st.last_dump_slow} of {st.last_dump_entries} entries decoded the slow way), "
            f"{st.last_resync_flow_mods} flow-mods, {st.flow_mods_sent} flow-mods in total"
        )
        diff = eng.verify()
        print(
            f"verify(): {len(diff.missing)} missing, {len(diff.unexpected)} unexpected, "
            f"{len(diff.undecodable)} undecodable"
        )
        app.sync.reset()


if __name__ == "__main__":
    main()
