#!/usr/bin/env python3
"""The compile self-check's cost (printed, not pass/fail): on a model of N ports (default 10,000) over C
chassis (networks of 50 ports, routers joining pairs of networks, a security group per network with a
remote-group rule, every port plugged), for one chassis:

- full: one compile of the chassis from scratch (apps.compiler.full), the baseline;
- check: the self-check of that chassis (a full compile + the comparison with the incremental units);
- ratio check / full, and the time for all chassis (what one periodic self-check run held the model lock
  before it compiled a copy);
- the copy (controller/debug/selfcheck.py Snapshot): taking it (all the model lock is held now) and checking
  it (model rebuilt from the copy, full compile, comparison: with the lock free), each as a ratio to the
  locked check.

    .venv/bin/python bench/bench_selfcheck.py [--ports 10000] [--chassis 10] [--runs 5]
    .venv/bin/python bench/bench_selfcheck.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.compiler import Compiler, full  # noqa: E402
from apps.view import ChassisRuntime  # noqa: E402
from controller.debug.selfcheck import Snapshot  # noqa: E402
from topology import ops, ops_security  # noqa: E402
from topology.model import Change, Topology  # noqa: E402
from topology.records import INGRESS, Chassis, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet  # noqa: E402


def build(n_ports: int, n_chassis: int) -> tuple[Topology, dict[str, ChassisRuntime]]:
    topo = Topology()
    rev = 0

    def apply(changes: list[Change]) -> None:
        nonlocal rev
        rev += 1
        topo.apply(changes, rev)

    chassis = [f"hv{i}" for i in range(1, n_chassis + 1)]
    for i, ch in enumerate(chassis, 1):
        apply(ops.create_chassis(topo, Chassis(id=ch, datapath_id=i, tunnel_ip=f"192.0.2.{i}"), rev + 1, 0.0))
    vifs: dict[str, dict[str, int]] = {ch: {} for ch in chassis}
    per_net = 50
    router = ""
    for n in range((n_ports + per_net - 1) // per_net):
        net, sub, grp = f"n{n}", f"s{n}", f"g{n}"
        apply(ops.create_network(topo, Network(id=net, tenant="t"), rev + 1, 0.0))
        apply(
            ops.create_subnet(
                topo,
                Subnet(id=sub, tenant="t", network_id=net, cidr=f"10.{n // 250}.{n % 250}.0/24"),
                False,
                rev + 1,
                0.0,
            )
        )
        if n % 2 == 0:
            router = f"r{n}"
            apply(ops.create_router(topo, Router(id=router, tenant="t"), None, rev + 1, 0.0))
        apply(ops.add_router_interface(topo, topo.routers[router], sub, "", f"{router}-{net}", rev + 1, 0.0))
        apply(ops_security.create_security_group(topo, SecurityGroup(id=grp, tenant="t"), rev + 1, 0.0))
        apply(
            ops_security.create_security_group_rule(
                topo,
                SecurityGroupRule(
                    id=f"{grp}-ssh",
                    tenant="t",
                    security_group_id=grp,
                    direction=INGRESS,
                    protocol="tcp",
                    port_range_min=22,
                    port_range_max=22,
                    remote_group_id=grp,
                ),
                True,
                rev + 1,
                0.0,
            )
        )
        for j in range(min(per_net, n_ports - n * per_net)):
            pid = f"p{n}-{j}"
            ch = chassis[(n * per_net + j) % n_chassis]
            apply(
                ops.create_port(
                    topo,
                    Port(
                        id=pid, tenant="t", network_id=net, mac="", binding_chassis=ch, security_groups=(grp,)
                    ),
                    [],
                    rev + 1,
                    0.0,
                )
            )
            vifs[ch][pid] = len(vifs[ch]) + 10
    runtime = {ch: ChassisRuntime(ch, vifs[ch], {"vxlan": 1, "gre": 2, "geneve": 3}, {}) for ch in chassis}
    return topo, runtime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--chassis", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.ports, a.chassis, a.runs = 1000, 4, 2
    t0 = time.perf_counter()
    topo, runtime = build(a.ports, a.chassis)
    comp = Compiler()
    for rt in runtime.values():
        comp.on_runtime(topo, rt)
    print(
        f"model: {a.ports} ports, {len(topo.networks)} networks, {len(topo.routers)} routers, {a.chassis} chassis "
        f"(built and compiled in {time.perf_counter() - t0:.1f} s); load average {os.getloadavg()[0]:.2f}"
    )
    ch = "hv1"
    print(f"flows/groups on {ch}: {len(comp.desired(ch))}")
    fulls, checks = [], []
    for _ in range(a.runs):
        s = time.perf_counter()
        full(comp.view(topo), ch)
        fulls.append(time.perf_counter() - s)
        s = time.perf_counter()
        div = comp.check(topo, ch)
        checks.append(time.perf_counter() - s)
        assert not div, div
    s = time.perf_counter()
    for c in runtime:
        comp.check(topo, c)
    every = time.perf_counter() - s
    med_full, med_check = statistics.median(fulls), statistics.median(checks)
    print(
        f"full compile of {ch}: min {min(fulls) * 1e3:.0f} / median {med_full * 1e3:.0f} / max {max(fulls) * 1e3:.0f} ms "
        f"({a.runs} runs)"
    )
    print(
        f"self-check of {ch}:   min {min(checks) * 1e3:.0f} / median {med_check * 1e3:.0f} / max {max(checks) * 1e3:.0f} ms"
    )
    print(f"ratio self-check / full compile (medians): {med_check / med_full:.2f}")
    print(
        f"self-check of all {a.chassis} chassis: {every:.2f} s (the model lock was held that long per periodic run)"
    )
    dp = SimpleNamespace(state=SimpleNamespace(topology=topo), compiler=comp)
    takes, copies = [], []
    for _ in range(a.runs):
        s = time.perf_counter()
        snap = Snapshot.take(dp, [ch])
        takes.append(time.perf_counter() - s)
        s = time.perf_counter()
        div = snap.check(ch)
        copies.append(time.perf_counter() - s)
        assert not div, div
    med_take, med_copy = statistics.median(takes), statistics.median(copies)
    print(
        f"copy taken (model lock held): min {min(takes) * 1e3:.1f} / median {med_take * 1e3:.1f} / "
        f"max {max(takes) * 1e3:.1f} ms; ratio to the locked self-check {med_take / med_check:.4f}"
    )
    print(
        f"copy checked (lock free: rebuild + full compile + compare): min {min(copies) * 1e3:.0f} / median "
        f"{med_copy * 1e3:.0f} / max {max(copies) * 1e3:.0f} ms; CPU ratio (take + check) / locked check "
        f"{(med_take + med_copy) / med_check:.2f}"
    )
    s = time.perf_counter()
    snap = Snapshot.take(dp, sorted(runtime))
    took = time.perf_counter() - s
    for c in sorted(runtime):
        assert not snap.check(c)
    copied = time.perf_counter() - s
    print(
        f"one periodic run over all {a.chassis} chassis from one copy: lock held {took * 1e3:.1f} ms "
        f"(÷ {every:.2f} s before = {took / every:.4f}); CPU {copied:.2f} s (÷ before = {copied / every:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
