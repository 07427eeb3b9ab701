#!/usr/bin/env python3
"""Store size under steady churn: N writes (port and network creates and deletes through topology.ops and
State, as the API makes them; 500 ports stay alive) on a real SQLite file, once without compaction (the
baseline) and once with the background Compactor at the default policy, in the same run. Prints the database
and WAL size every N/10 writes, the final ratio, write latency (p50/p99/max) in both, the longest a write's
commit waited for the write lock (with one writer only the compactor can hold it: the stall it caused), the
longest the compactor held the lock in one step, and what a plain TRUNCATE checkpoint of the baseline's WAL
would have held it.

    .venv/bin/python bench/bench_store.py               # 100k writes, 3 runs
    .venv/bin/python bench/bench_store.py --quick       # 10k writes, 1 run, a smaller history (smoke)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from topology import ops  # noqa: E402
from topology.history import Compactor, HistoryPolicy  # noqa: E402
from topology.records import Network, Port, Subnet  # noqa: E402
from topology.state import State  # noqa: E402
from topology.store import Store  # noqa: E402

LIVE_PORTS = 500


@dataclass
class Run:
    label: str
    samples: list[tuple[int, int, int, int]] = field(default_factory=list)  # (writes, db, wal, history rows)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    longest_hold_s: float = 0.0
    longest_wait_s: float = 0.0  # the longest a write's commit waited for the write lock
    rounds: int = 0
    truncate_all_s: float = 0.0  # baseline: a TRUNCATE checkpoint of the whole WAL under the lock
    loadavg: tuple[float, float] = (0.0, 0.0)

    def pct(self, q: float) -> float:
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))]


def _sqlite(state: State) -> Store:
    assert state.sqlite is not None
    return state.sqlite


def churn(state: State, writes: int, every: int, run: Run) -> None:
    """Each step of 4 writes: create port i, delete port i-LIVE_PORTS, create network, delete it."""

    def timed(fn) -> None:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        state.write(fn)
        run.latencies.append(time.perf_counter() - t0)
        if len(run.latencies) % every == 0:
            sizes = _sqlite(state).sizes()
            run.samples.append((len(run.latencies), sizes["db"], sizes["wal"], _sqlite(state).history_rows()))

    timed(lambda t, r, n: ops.create_network(t, Network(id="base", tenant="t"), r, n))
    subnet = Subnet(id="s", tenant="t", network_id="base", cidr="10.0.0.0/16")
    timed(lambda t, r, n: ops.create_subnet(t, subnet, False, r, n))
    i = 0
    while len(run.latencies) < writes:
        pid, old, net = f"p{i}", f"p{i - LIVE_PORTS}", f"n{i}"
        timed(
            lambda t, r, n, pid=pid: ops.create_port(
                t, Port(id=pid, tenant="t", network_id="base", mac=""), [], r, n
            )
        )
        if i >= LIVE_PORTS:
            timed(lambda t, r, n, old=old: ops.delete_port(t, t.ports[old], r, n))
        timed(lambda t, r, n, net=net: ops.create_network(t, Network(id=net, tenant="t"), r, n))
        timed(lambda t, r, n, net=net: ops.delete_network(t, t.networks[net], False, r, n))
        i += 1


def one(label: str, writes: int, policy: HistoryPolicy | None) -> Run:
    tmp = Path(tempfile.mkdtemp(prefix="sdn-bench-store-"))
    state = State(tmp / "topology.sqlite")
    run = Run(label)
    compactor = Compactor(_sqlite(state), policy) if policy is not None else None
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if compactor is not None:
        compactor.start()
    churn(state, writes, max(1, writes // 10), run)
    run.seconds = time.perf_counter() - t0
    run.longest_wait_s = _sqlite(state).longest_write_wait
    if compactor is not None:
        compactor.stop()
        run.longest_hold_s = _sqlite(state).longest_maintenance_hold
    else:
        run.truncate_all_s = _sqlite(state).checkpoint_truncate_locked()
    run.loadavg = (load0, os.getloadavg()[0])
    state.close()
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return run


def wal_growth_cost(rounds: int, writes: int = 400) -> tuple[list[float], list[float]]:
    """Median write latency of `writes` writes after the WAL file was truncated (it grows again) and after
    a checkpoint that leaves it at its size (it is rewound and reused), alternating `rounds` times."""
    tmp = Path(tempfile.mkdtemp(prefix="sdn-bench-wal-"))
    state = State(tmp / "topology.sqlite")
    run = Run("wal")
    churn(state, 2 * writes, 10**9, run)  # the WAL is at its auto-checkpoint size now
    grown: list[float] = []
    reused: list[float] = []
    for k in range(rounds):
        for truncate, out in ((True, grown), (False, reused)):
            if truncate:
                _sqlite(state).checkpoint_truncate_locked()
            else:
                _sqlite(state).checkpoint(truncate=False)
            start = len(run.latencies)
            churn_more(state, writes, f"w{k}{int(truncate)}-", run)
            out.append(statistics.median(run.latencies[start:]))
    state.close()
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return grown, reused


def churn_more(state: State, writes: int, prefix: str, run: Run) -> None:
    """`writes` more writes: network creates and deletes."""
    for i in range(writes // 2):
        net = f"{prefix}{i}"
        for fn in (
            lambda t, r, n, net=net: ops.create_network(t, Network(id=net, tenant="t"), r, n),
            lambda t, r, n, net=net: ops.delete_network(t, t.networks[net], False, r, n),
        ):
            t0 = time.perf_counter()
            state.write(fn)
            run.latencies.append(time.perf_counter() - t0)


def end_kib(run: Run) -> float:
    """Database + WAL at the last sample."""
    return (run.samples[-1][1] + run.samples[-1][2]) / 1024


def show(run: Run) -> None:
    print(
        f"  {run.label}: {len(run.latencies)} writes in {run.seconds:.1f} s "
        f"({len(run.latencies) / run.seconds:.0f}/s), "
        f"load average {run.loadavg[0]:.2f} -> {run.loadavg[1]:.2f}"
    )
    print("    writes      db KiB   WAL KiB   history rows")
    for n, db, wal, rows in run.samples:
        print(f"    {n:>7}  {db / 1024:>9.0f} {wal / 1024:>9.0f} {rows:>12}")
    print(
        f"    write latency p50 {run.pct(0.5) * 1e3:.2f} ms, p99 {run.pct(0.99) * 1e3:.2f} ms, "
        f"max {max(run.latencies) * 1e3:.1f} ms"
    )
    print(f"    longest wait of a commit for the write lock: {run.longest_wait_s * 1e3:.1f} ms")
    if run.longest_hold_s:
        print(f"    longest compactor step holding the write lock: {run.longest_hold_s * 1e3:.1f} ms")
    if run.truncate_all_s:
        print(f"    TRUNCATE checkpoint of this WAL under the write lock: {run.truncate_all_s * 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k writes, 1 run, 1000 revisions kept (smoke)")
    ap.add_argument("--writes", type=int, help="writes per run (default 100000; quick 10000)")
    ap.add_argument("--runs", type=int, help="runs of each (default 3; quick 1)")
    ap.add_argument(
        "--wal-truncate",
        choices=["idle", "always", "never"],
        default="idle",
        help="when a round truncates the WAL file (default idle, as the controller)",
    )
    ap.add_argument("--no-vacuum", action="store_true", help="keep free pages on the freelist")
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="baseline first, then compaction (default: both at once in two processes)",
    )
    args = ap.parse_args()
    writes = args.writes or (10_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)
    policy = replace(
        HistoryPolicy(revisions=1000, interval_s=0.5) if args.quick else HistoryPolicy(),
        wal_truncate=args.wal_truncate,
        vacuum=not args.no_vacuum,
    )
    print(f"{writes} writes per run, {runs} run(s); compaction policy {policy}")
    results: list[tuple[Run, Run]] = []
    for k in range(runs):
        print(f"run {k + 1}", flush=True)
        if args.sequential:
            base = one("baseline (no compaction)", writes, None)
            comp = one("with compaction", writes, policy)
        else:  # side by side, one process each: machine load from elsewhere hits both alike
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
                fb = pool.submit(one, "baseline (no compaction)", writes, None)
                fc = pool.submit(one, "with compaction", writes, policy)
                base, comp = fb.result(), fc.result()
        show(base)
        show(comp)
        sys.stdout.flush()
        results.append((base, comp))
    growth = wal_growth_cost(5 if args.quick else 10)

    def summary(name: str, values: list[float], fmt: str) -> None:
        print(
            f"  {name}: min {fmt.format(min(values))}, median {fmt.format(statistics.median(values))}, "
            f"max {fmt.format(max(values))}"
        )

    print(f"summary over {runs} run(s)")
    summary("baseline db+WAL at the end, KiB", [end_kib(b) for b, _ in results], "{:.0f}")
    summary("compacted db+WAL at the end, KiB", [end_kib(c) for _, c in results], "{:.0f}")
    summary("compacted ÷ baseline size", [end_kib(c) / end_kib(b) for b, c in results], "{:.3f}")
    half = [c.samples[len(c.samples) // 2] for _, c in results]
    summary(
        "compacted: growth from mid-run to the end, KiB",
        [end_kib(c) - (h[1] + h[2]) / 1024 for (_, c), h in zip(results, half, strict=True)],
        "{:+.0f}",
    )
    summary(
        "writes/s with ÷ without compaction",
        [(len(c.latencies) / c.seconds) / (len(b.latencies) / b.seconds) for b, c in results],
        "{:.2f}",
    )
    summary(
        "max write latency without compaction, ms", [max(b.latencies) * 1e3 for b, _ in results], "{:.1f}"
    )
    summary("max write latency with compaction, ms", [max(c.latencies) * 1e3 for _, c in results], "{:.1f}")
    summary("p99 write latency with ÷ without", [c.pct(0.99) / b.pct(0.99) for b, c in results], "{:.2f}")
    summary(
        "longest wait of a commit for the write lock without compaction, ms",
        [b.longest_wait_s * 1e3 for b, _ in results],
        "{:.1f}",
    )
    summary(
        "longest wait of a commit for the write lock with compaction (the stall it caused), ms",
        [c.longest_wait_s * 1e3 for _, c in results],
        "{:.1f}",
    )
    summary(
        "longest compactor step holding the write lock, ms",
        [c.longest_hold_s * 1e3 for _, c in results],
        "{:.1f}",
    )
    summary(
        "median write after a WAL TRUNCATE (the file grows again), ms", [g * 1e3 for g in growth[0]], "{:.2f}"
    )
    summary(
        "median write after a PASSIVE checkpoint (the WAL is reused), ms",
        [g * 1e3 for g in growth[1]],
        "{:.2f}",
    )
    summary(
        "TRUNCATE of the baseline's whole WAL under the lock, ms",
        [b.truncate_all_s * 1e3 for b, _ in results],
        "{:.1f}",
    )


if __name__ == "__main__":
    main()
