#!/usr/bin/env python3
"""Flows per chassis against OVN's on the same topology (printed, not pass/fail), from the compiler's
desired state (apps.compiler: what the sync engine installs; groups and meters are counted apart).

The topology (issue 22's, recorded here because the earlier comparison did not record its own): N ports in
networks of 50 (one /24 subnet each), a router for each pair of networks (interfaces on both), a security
group per network whose members are its ports, with two ingress rules: tcp 22 from the group itself
(remote group) and tcp 80 from 0.0.0.0/0 (CIDR), beside the egress-any rules a new group gets; every port
bound and plugged, round-robin over C chassis (so every chassis hosts every network: routed networks are
hosted together). OVN 23.03's numbers for it (issue 22): 15.1k OpenFlow flows on each of 2 chassis at
600 ports, 6.6k on each of 10.

    .venv/bin/python bench/bench_flows.py            # (600 ports, 2 chassis) and (600, 10)
    .venv/bin/python bench/bench_flows.py --ports 1200 --chassis 4 --ovn 0
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.compiler import Compiler  # noqa: E402
from bench.bench_selfcheck import build  # noqa: E402
from flows.flow import Flow, Group, MeterEntry  # noqa: E402
from flows.pipeline import stage_at  # noqa: E402
from topology import ops_security  # noqa: E402
from topology.records import INGRESS, SecurityGroupRule  # noqa: E402

#: OVN 23.03 flows per chassis on this topology (issue 22): (ports, chassis) -> flows
OVN = {(600, 2): 15_100, (600, 10): 6_600}


def model(n_ports: int, n_chassis: int):  # type: ignore[no-untyped-def]
    topo, runtime = build(n_ports, n_chassis)
    rev = topo.revision
    for g in sorted(g for g in topo.security_groups if g.startswith("g")):  # the networks' groups
        rev += 1
        rule = SecurityGroupRule(
            id=f"{g}-http",
            tenant="t",
            security_group_id=g,
            direction=INGRESS,
            protocol="tcp",
            port_range_min=80,
            port_range_max=80,
            remote_ip_prefix="0.0.0.0/0",
        )
        topo.apply(ops_security.create_security_group_rule(topo, rule, True, rev, 0.0), rev)
    comp = Compiler()
    for rt in runtime.values():
        comp.on_runtime(topo, rt)
    return topo, runtime, comp


def census(items: frozenset) -> tuple[int, int, int, collections.Counter[str]]:  # type: ignore[type-arg]
    by_stage: collections.Counter[str] = collections.Counter()
    groups = meters = 0
    for it in items:
        if isinstance(it, Flow):
            st = stage_at(it.table)
            by_stage[f"{it.table}({st.name if st else '?'})"] += 1
        elif isinstance(it, Group):
            groups += 1
        elif isinstance(it, MeterEntry):
            meters += 1
    return sum(by_stage.values()), groups, meters, by_stage


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=0)
    ap.add_argument("--chassis", type=int, default=0)
    ap.add_argument("--ovn", type=int, default=-1, help="OVN's flows per chassis to compare with (0: none)")
    a = ap.parse_args()
    cases = [(a.ports, a.chassis)] if a.ports else list(OVN)
    print(f"load average {os.getloadavg()[0]:.2f}")
    for n_ports, n_chassis in cases:
        t0 = time.perf_counter()
        topo, _runtime, comp = model(n_ports, n_chassis)
        per = {ch: census(comp.desired(ch)) for ch in sorted(topo.chassis)}
        flows = [p[0] for p in per.values()]
        mean = sum(flows) / len(flows)
        ovn = a.ovn if a.ovn >= 0 else OVN.get((n_ports, n_chassis), 0)
        print(
            f"\n{n_ports} ports, {n_chassis} chassis ({len(topo.networks)} networks, {len(topo.routers)} "
            f"routers, {len(topo.sg_rules)} rules; compiled in {time.perf_counter() - t0:.1f} s)"
        )
        n, groups, meters, by_stage = per["hv1"]
        print(
            f"  flows per chassis: min {min(flows)} / mean {mean:.0f} / max {max(flows)}; "
            f"hv1 also {groups} groups, {meters} meters"
        )
        if ovn:
            print(
                f"  ratio to OVN 23.03 ({ovn} per chassis): {mean / ovn:.2f}x (mean), {max(flows) / ovn:.2f}x (max)"
            )
        print("  hv1 per stage: " + ", ".join(f"{k} {v}" for k, v in sorted(by_stage.items(), key=_table)))
        hooks = sum(v for k, v in by_stage.items() if k.startswith(("14(", "116(")))
        print(f"  plug-in hook entries (tables 14, 116; no plug-in policy): {hooks} flows")
    return 0


def _table(kv: tuple[str, int]) -> int:
    return int(kv[0].split("(")[0])


if __name__ == "__main__":
    raise SystemExit(main())
