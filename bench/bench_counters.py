#!/usr/bin/env python3
"""The flow counters' work per switch and round, without a switch (issue 22): the raw flow-stats replies of
one chassis at 100k ports (~240k entries, built from the encoder as OVS reports them), read two ways:

- decoded (what FlowCounters did before, 2026-12-07): the resync's Recognizer over the whole dump (its
  expected bytes of every desired flow built first), a Flow -> (packets, bytes) dict, then every entry
  folded, the last round kept as (chassis, flow.key()) -> (packets, bytes) for every flow;
- by offset (transport.CounterScan, now): each entry's counters compared with the last round's, only the
  moved ones folded, the last round kept for the flows that ever matched only (hash -> 16 bytes).

CPU seconds of the process (time.process_time) per round, min / median / max of `--repeat`, first round
(nothing known) and a next one (`--hit` of the entries with traffic, half of those moved); the ratio; and
the memory the last round's table holds (tracemalloc). Prints ratios.

    .venv/bin/python bench/bench_counters.py [--ports 22000] [--hit 0.01] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps import ids  # noqa: E402
from controller.debug.metrics import Metrics  # noqa: E402
from controller.southbound import ofwire  # noqa: E402
from controller.southbound.plan import FlowKey  # noqa: E402
from controller.southbound.transport import CounterScan, Recognizer  # noqa: E402
from flows import encode  # noqa: E402
from flows.cookie import Cookie  # noqa: E402
from flows.flow import Flow  # noqa: E402
from tests.test_resync_recognize import entry  # noqa: E402
from tests.test_sync import pipeline_flows  # noqa: E402

REPLY_BYTES = 65000  # OVS's flow-stats replies are split at ~64 KB


def replies(flows: list[Flow], counts: dict[int, tuple[int, int]]) -> list[bytes]:
    """The dump as raw multipart replies: each flow's entry with counters `counts[i]` (else 0)."""
    out, body, size = [], [], 0
    for i, f in enumerate(flows):
        e = bytearray(entry(f))
        p, b = counts.get(i, (0, 0))
        e[32:48] = p.to_bytes(8, "big") + b.to_bytes(8, "big")
        body.append(bytes(e))
        size += len(e)
        if size > REPLY_BYTES:
            out.append(body)
            body, size = [], 0
    if body:
        out.append(body)
    parts = []
    for n, entries in enumerate(out):
        data = b"".join(entries)
        flags = 1 if n < len(out) - 1 else 0
        parts.append(ofwire.MP_HDR.pack(4, 19, ofwire.MP_HDR.size + len(data), 0, 1, flags) + data)
    return parts


def decoded_round(
    desired: dict[FlowKey, Flow],
    parts: list[bytes],
    last: dict[Any, tuple[int, int]],
    totals: dict[Any, list[int]],
) -> dict[Any, tuple[int, int]]:
    """The fold before (FlowCounters.fold of 2026-12-07, one chassis): Recognizer -> {Flow: counters} ->
    per flow, its key, the owner by cookie, the delta; returns the new last round."""
    rec = Recognizer(desired, encode.Encoder())
    slow: list[Any] = []
    for p in parts:
        rec.feed(p, slow)
    have = rec.have
    stats = {have.flows[k]: v for k, v in have.counters.items()}
    seen: dict[Any, tuple[int, int]] = {}
    owners = set()
    by_cookie: dict[int, Any] = {}
    for flow, (packets, nbytes) in stats.items():
        o = by_cookie.get(flow.cookie, ())
        if o == ():
            c = Cookie.decode(flow.cookie)
            o = by_cookie[flow.cookie] = (
                None if c is None else ("hv1", ids.APP_NAMES.get(c.app, str(c.app)), f"{c.owner:08x}")
            )
        if o is None:
            continue
        key = ("hv1", flow.key())
        owners.add(o)
        old = last.get(key)
        if old is None or packets < old[0] or nbytes < old[1]:
            old = (0, 0)
        tot = totals.setdefault(o, [0, 0])
        tot[0] += packets - old[0]
        tot[1] += nbytes - old[1]
        seen[key] = (packets, nbytes)
    for o in [o for o in totals if o not in owners]:
        del totals[o]
    return seen


def raw_round(fc: Any, parts: list[bytes]) -> None:
    scan = CounterScan()
    last = fc._last.get("hv1", {})
    for p in parts:
        scan.feed(p, last)
    fc.fold("hv1", scan, {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=22_000, help="pipeline_flows ports (~11 flows each)")
    ap.add_argument("--hit", type=float, default=0.01, help="share of entries with traffic")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    flows = [f for f in pipeline_flows(args.ports) if isinstance(f, Flow)]
    desired = {FlowKey(f): f for f in flows}
    rng = random.Random(1)
    hits = rng.sample(range(len(flows)), int(len(flows) * args.hit))
    first_counts = {i: (10, 1000) for i in hits}
    next_counts = {i: ((20, 2000) if n % 2 else (10, 1000)) for n, i in enumerate(hits)}
    first, second = replies(flows, first_counts), replies(flows, next_counts)
    print(f"{len(flows)} entries in {len(first)} replies, {len(hits)} with traffic ({args.hit:.1%})")

    res: dict[str, list[float]] = {k: [] for k in ("dec1", "dec2", "raw1", "raw2")}
    for _ in range(args.repeat):
        last: dict[Any, tuple[int, int]] = {}
        totals: dict[Any, list[int]] = {}
        for key, parts in (("dec1", first), ("dec2", second)):
            t0 = time.process_time()
            last = decoded_round(desired, parts, last, totals)
            res[key].append(time.process_time() - t0)
        fc = Metrics().flow_counters
        for key, parts in (("raw1", first), ("raw2", second)):
            t0 = time.process_time()
            raw_round(fc, parts)
            res[key].append(time.process_time() - t0)
        dec_totals = {k: (v[0], v[1]) for k, v in totals.items() if v[0]}
        assert dec_totals == fc.totals(), "the two folds disagree"

    def row(name: str, key: str) -> float:
        xs = sorted(res[key])
        print(f"  {name:44s} {xs[0]:7.3f} / {statistics.median(xs):7.3f} / {xs[-1]:7.3f}")
        return statistics.median(xs)

    print("CPU s per chassis and round (min / median / max):")
    d1, d2 = row("decoded, first round", "dec1"), row("decoded, next round", "dec2")
    r1, r2 = row("by offset, first round", "raw1"), row("by offset, next round", "raw2")
    print(f"ratio by offset / decoded: first round {r1 / d1:.3f}, next round {r2 / d2:.3f}")

    # memory of the last round's table
    tracemalloc.start()
    a = tracemalloc.take_snapshot()
    kept = decoded_round(desired, second, {}, {})
    b = tracemalloc.take_snapshot()
    dec_mem = sum(s.size_diff for s in b.compare_to(a, "filename"))
    del kept
    fc = Metrics().flow_counters
    a = tracemalloc.take_snapshot()
    raw_round(fc, second)
    b = tracemalloc.take_snapshot()
    raw_mem = sum(s.size_diff for s in b.compare_to(a, "filename"))
    tracemalloc.stop()
    print(
        f"last round kept per chassis: decoded {dec_mem / 2**20:.1f} MB ({len(flows)} entries), by offset "
        f"{raw_mem / 2**20:.2f} MB ({len(fc._last['hv1'])} entries); ratio {raw_mem / max(1, dec_mem):.4f}"
    )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
