#!/usr/bin/env python3
"""CreatePort -> WaitRealized, stage by stage (issue 22), with real switches (needs root).

The small deployment of bench_ports100k.py (`--ports` bulk ports written into the store, networks of 50 pinned
alternately to two of `--chassis` chassis, `--plugged` of them plugged per chassis), then rounds of `--samples`
measured ports: each an OVS internal interface with its iface-id on the chassis beforehand, CreatePort pinned
there, WaitRealized at the create's revision; the wall time of both calls (p50 / p99 per round).

The controller runs with SDN_LATENCY_TRACE set (controller/latency.py): it stamps each stage of the write's way
(API in, authenticated, model written and compiled, pushed to each switch's engine, planned, written to the
socket, barrier reply parsed by os-ken's receive thread and dispatched by its event thread, the engine woken,
realized, the waiter woken, API out) with CLOCK_MONOTONIC, as the bench stamps its calls: the median of each
stage over the samples is printed, the per-switch stages for the switch that realized last.

`--tree DIR` runs another checkout's controller and lab code (e.g. /work/main, to compare before / after in
one command); a tree without controller/latency.py gives the totals only.

    sudo .venv/bin/python bench/bench_latency.py [--ports 100] [--chassis 4] [--samples 100] [--rounds 3]
                                                 [--tree DIR] [--switch-interval S]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent

#: the client-side and API stages, in order: (name, from stamp, to stamp)
API_STAGES = (
    ("client -> CreatePort handler (gRPC in)", "c.create", "api.in:CreatePort"),
    ("authentication", "api.in:CreatePort", "api.authed:CreatePort"),
    ("validation + model write (to the listener)", "api.authed:CreatePort", "dp.write"),
    ("compile", "dp.write", "dp.compiled"),
    ("hand deltas to the engines", "dp.compiled", "dp.written"),
    ("other listeners + store commit (fsync)", "dp.written", "w.committed"),
    ("answer built", "w.committed", "api.handled:CreatePort"),
    ("access log", "api.handled:CreatePort", "api.out:CreatePort"),
    ("CreatePort answer -> client (gRPC out)", "api.out:CreatePort", "c.created"),
    ("client -> WaitRealized handler", "c.created", "api.in:WaitRealized"),
    ("WaitRealized handler (waiting for the switches)", "api.in:WaitRealized", "api.handled:WaitRealized"),
    ("WaitRealized answer -> client", "api.handled:WaitRealized", "c.done"),
)
#: one switch's stages, from its delta handed to its engine
SWITCH_STAGES = (
    ("engine's sender thread wakes", "dp.push", "s.job"),
    ("plan", "s.job", "s.planned"),
    ("encode + queue to os-ken's send thread", "s.planned", "s.written"),
    ("os-ken's send thread writes", "s.written", "of.tx"),
    ("OVS bundle commit + barrier reply, received", "of.tx", "of.rx"),
    ("os-ken event queue -> OFApp thread", "of.rx", "of.event"),
    ("dispatch to the transport", "of.event", "s.reply"),
    ("sender thread wakes on the reply", "s.reply", "s.acked"),
    ("installed set updated", "s.acked", "s.realized"),
    ("on_realized callback reached", "s.realized", "dp.realized"),
)


def load_tree(tree: Path) -> Any:
    """bench_ports100k.py of `tree` (it puts `tree` first on sys.path: the lab and controller come from there)."""
    spec = importlib.util.spec_from_file_location("bench_ports100k", tree / "bench" / "bench_ports100k.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(b: Any, env: Any, names: list[str], nets: int, tag: str, samples: int) -> list[dict[str, int]]:
    from google.protobuf import duration_pb2

    from proto.sdn.v1 import dataplane_pb2 as dpb
    from proto.sdn.v1 import topology_pb2 as pb

    out = []
    for i in range(samples):
        k = (i * 7) % nets
        ch = b.chassis_of(k, 0, names)
        t0 = time.perf_counter_ns()
        port = env.stub.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(network=f"networks/n{k}", binding_chassis=f"chassis/{ch}"),
                port_id=f"m-{tag}-{i}",
            ),
            metadata=env.admin,
        )
        t1 = time.perf_counter_ns()
        resp = env.dp.WaitRealized(
            dpb.WaitRealizedRequest(revision=port.revision, timeout=duration_pb2.Duration(seconds=60)),
            metadata=env.admin,
        )
        t2 = time.perf_counter_ns()
        if not resp.realized:
            raise RuntimeError(f"revision {port.revision} not realized: {resp}")
        out.append({"c.create": t0, "c.created": t1, "c.done": t2, "revision": port.revision})
    return out


def read_trace(path: Path) -> list[tuple[int, str, str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        ns, stage, key = (line.split(" ", 2) + [""])[:3]
        rows.append((int(ns), stage, key))
    rows.sort()
    return rows


def split(sample: dict[str, int], rows: list[tuple[int, str, str]]) -> dict[str, float] | None:
    """The sample's stages (ms) from the stamps inside its window; None when a stamp is missing."""
    lo, hi, rev = sample["c.create"], sample["c.done"], sample["revision"]
    win = [r for r in rows if lo <= r[0] <= hi]
    at: dict[str, int] = {k: v for k, v in sample.items() if k.startswith("c.")}
    for ns, stage, key in win:
        if stage.startswith("api.") and f"{stage}:{key}" not in at:
            at[f"{stage}:{key}"] = ns
        elif stage not in at and (
            (stage == "w.committed" and "dp.written" in at)  # the first commit after the write's listeners
            or (stage in ("dp.write", "dp.compiled", "dp.written") and key == str(rev))
        ):
            at[stage] = ns
    out: dict[str, float] = {}
    for name, a, b in API_STAGES:
        if a not in at or b not in at:
            return None
        out[name] = (at[b] - at[a]) / 1e6
    # each switch given a delta by this revision: its stages; the one realized last decides
    pushes = [
        (ns, key.split("/")) for ns, stage, key in win if stage == "dp.push" and key.endswith(f"/{rev}")
    ]
    last: tuple[int, dict[str, float]] | None = None
    for push_ns, (dpid, seq, _rev) in pushes:
        t = {"dp.push": push_ns}
        prev = push_ns
        for _name, _a, b in SWITCH_STAGES:
            hit = next(
                (
                    ns
                    for ns, stage, key in win
                    if ns >= prev and stage == b and (b == "of.tx" or key.split("/")[0] == dpid)
                    and (b not in ("s.realized", "dp.realized") or int(key.split("/")[1]) >= int(seq))
                ),
                None,
            )  # fmt: skip
            if hit is None:
                break
            t[b] = prev = hit
        else:
            st = {name: (t[b] - t[a]) / 1e6 for name, a, b in SWITCH_STAGES}
            if last is None or t["dp.realized"] > last[0]:
                last = (t["dp.realized"], st)
    if last is None:
        return None
    out.update({f"  {k}": v for k, v in last[1].items()})
    out["  last realized -> WaitRealized woken and answered"] = (
        at["api.handled:WaitRealized"] - last[0]
    ) / 1e6
    out["switches given a delta"] = float(len(pushes))
    out["realized after CreatePort answered (ms, <0: before)"] = (last[0] - at["c.created"]) / 1e6
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=100)
    ap.add_argument("--chassis", type=int, default=4)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plugged", type=int, default=50)
    ap.add_argument("--tree", type=Path, default=HERE, help="the checkout whose controller runs")
    ap.add_argument("--keep-trace", type=Path, help="copy the controller's stamps there")
    ap.add_argument(
        "--switch-interval", type=float, default=0.0, help="the controller's sys.setswitchinterval"
    )
    args = ap.parse_args()
    tree = args.tree.resolve()
    b = load_tree(tree)
    print(f"tree {tree}; load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "latency.trace"
        os.environ["SDN_LATENCY_TRACE"] = str(trace)
        if args.switch_interval:
            os.environ["SDN_SWITCH_INTERVAL"] = str(args.switch_interval)
        with b.lab_env(Path(tmp), chassis=args.chassis, provider=False, tls=False, self_check=False) as env:
            names = sorted(env.lab.chassis)
            env.controller.kill(signal.SIGTERM)
            b.grow(env.controller.data_dir, names, args.ports)
            nets = (args.ports + b.PER_NETWORK - 1) // b.PER_NETWORK
            per: dict[str, list[int]] = collections.defaultdict(list)
            for i in range(args.ports):
                ch = b.chassis_of(i // b.PER_NETWORK, i, names)
                if len(per[ch]) < args.plugged:
                    per[ch].append(i)
            for ch, idx in per.items():
                b.plug(env, ch, [(f"b{i}", f"p{i}") for i in idx])
            b.restart(env)
            samples: list[dict[str, int]] = []
            p50s, p99s = [], []
            for r in range(args.rounds):
                b.plug_samples(env, names, nets, f"r{r}", args.samples, f"mr{r}x")
                time.sleep(1)
                got = measure(b, env, names, nets, f"r{r}", args.samples)
                samples += got
                tot = [(s["c.done"] - s["c.create"]) / 1e6 for s in got]
                p50s.append(pct(tot, 50))
                p99s.append(pct(tot, 99))
                print(
                    f"  round {r}: p50 {p50s[-1]:.2f} ms, p99 {p99s[-1]:.2f} ms (load {os.getloadavg()[0]:.1f})"
                )
        rows = read_trace(trace)
        if args.keep_trace is not None and trace.exists():
            args.keep_trace.write_bytes(trace.read_bytes())
        if args.keep_trace is not None and trace.exists():
            args.keep_trace.write_bytes(trace.read_bytes())
    total = [(s["c.done"] - s["c.create"]) / 1e6 for s in samples]
    print(f"\nload average at the end: {os.getloadavg()}")
    print(
        f"CreatePort -> WaitRealized ({len(samples)} samples, {args.chassis} chassis, {args.ports} bulk ports): "
        f"p50 {pct(total, 50):.2f} ms, p99 {pct(total, 99):.2f} ms; per round p50 "
        f"{' / '.join(f'{x:.2f}' for x in p50s)}, p99 {' / '.join(f'{x:.2f}' for x in p99s)}"
    )
    created = [(s["c.created"] - s["c.create"]) / 1e6 for s in samples]
    print(f"  CreatePort alone: p50 {pct(created, 50):.2f} ms")
    if not rows:
        print("(no stage stamps: this tree has no controller/latency.py)")
        return
    splits = [x for s in samples if (x := split(s, rows)) is not None]
    print(f"\nstages, median over {len(splits)} samples with every stamp (ms):")
    for name in splits[0] if splits else ():
        xs = [x[name] for x in splits]
        print(f"  {name:58s} {statistics.median(xs):7.3f}   (p90 {pct(xs, 90):.3f})")


if __name__ == "__main__":
    main()
