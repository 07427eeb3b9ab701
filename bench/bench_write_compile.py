#!/usr/bin/env python3
"""Where a CreatePort's controller-side CPU goes on a big model, without switches (printed, not pass/fail):
on bench_selfcheck's model (networks of 50, routers joining pairs, a group per network with a
remote-group rule, every port plugged, C chassis), 40 more ports are created one by one bound to hv1, and
for each: the model operation (topology.ops.create_port + apply), the compile (Compiler.on_changes: every
chassis hosting the network), and encoding the added flows (flow-mod bytes). CPU time (the machine is
shared); then a cProfile of the last 20 compiles. The API's own time (validation, the store's commit) and
the bundle round trip to the switches are not in it: bench/bench_dataplane.py measures the whole path.

    .venv/bin/python bench/bench_write_compile.py [--ports 100000] [--chassis 10]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.compiler import Compiler
from bench.bench_selfcheck import build
from flows import encode
from flows.flow import Flow
from topology import ops
from topology.records import Port


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=100_000)
    ap.add_argument("--chassis", type=int, default=10)
    a = ap.parse_args()
    t = time.process_time()
    topo, runtime = build(a.ports, a.chassis)
    comp = Compiler()
    for rt in runtime.values():
        comp.on_runtime(topo, rt)
    comp.rebuild(topo)  # as the dataplane does at start: hosting and group placement known
    print(f"{a.ports} ports, {a.chassis} chassis: built and compiled in {time.process_time() - t:.0f} s CPU")
    rev = topo.revision
    enc = encode.Encoder()
    phases: dict[str, list[float]] = {"model": [], "compile": [], "encode": []}
    prof = cProfile.Profile()
    n_nets = len(topo.networks)
    for i in range(40):
        t0 = time.process_time()
        port = Port(
            id=f"new{i}",
            tenant="t",
            network_id=f"n{i % n_nets}",
            mac="",
            binding_chassis="hv1",
            security_groups=(f"g{i % n_nets}",),
        )
        changes = ops.create_port(topo, port, [], rev + 1, 0.0)
        rev += 1
        topo.apply(changes, rev)
        t1 = time.process_time()
        if i >= 20:
            prof.enable()
        deltas = comp.on_changes(topo, changes)
        t2 = time.process_time()
        for d in deltas.values():
            for item in d.add:
                if isinstance(item, Flow):
                    enc.flow_body(item, encode.ADD)
        t3 = time.process_time()
        if i >= 20:
            prof.disable()
        if i >= 5:  # the first ones warm caches up
            phases["model"].append(t1 - t0)
            phases["compile"].append(t2 - t1)
            phases["encode"].append(t3 - t2)
    print(f"load average {os.getloadavg()[0]:.2f}; per CreatePort (35 samples), CPU:")
    for name, v in phases.items():
        print(f"  {name:8s} median {statistics.median(v) * 1e3:7.2f} ms, max {max(v) * 1e3:7.2f} ms")
    print(f"  chassis recompiled per write: {len(deltas)}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
