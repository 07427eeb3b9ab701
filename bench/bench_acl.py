#!/usr/bin/env python3
"""Security group benchmarks (printed, not pass/fail):

1. flows: the security-group flows one chassis holds for a group of N members (all on that chassis) with
   M remote-group rules, as N and M grow, per member; and the additivity residual
   F(N, M) - F(N, 1) - F(n0, M) + F(n0, 1), which is 0 when flows grow with members + rules (a members x
   rules term would make it grow with both).
2. membership change -> realized: through the real controller and a real ovs-vswitchd, the time from a
   CreatePort that joins a group (bound to the chassis) to its flows confirmed on the switch
   (WaitRealized), with a group of 10 members and with one of 500; the ratio of the medians.

    sudo .venv/bin/python bench/bench_acl.py [--samples 40]
    sudo .venv/bin/python bench/bench_acl.py --quick      # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.protobuf import duration_pb2  # noqa: E402

from apps.compiler import desired_from_scratch  # noqa: E402
from apps.view import ChassisRuntime  # noqa: E402
from flows.flow import Flow  # noqa: E402
from proto.sdn.v1 import dataplane_pb2 as dpb  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from topology import ops  # noqa: E402
from topology.model import Topology  # noqa: E402
from topology.records import INGRESS, Chassis, Network, Port, SecurityGroup, SecurityGroupRule, Subnet  # noqa: E402

ACL_STAGES = ("acl_egress", "acl_ingress")


def acl_flows(members: int, rules: int) -> int:
    """Security-group flows on hv1 for `members` plugged ports of one group with `rules` rules (each:
    ingress tcp to its own port from members of the group)."""
    topo = Topology()
    rev = 0

    def apply(changes):  # type: ignore[no-untyped-def]
        nonlocal rev
        rev += 1
        topo.apply(changes, rev)

    apply(ops.create_chassis(topo, Chassis(id="hv1", datapath_id=1, tunnel_ip="192.0.2.1"), rev + 1, 0.0))
    apply(ops.create_network(topo, Network(id="n", tenant="t"), rev + 1, 0.0))
    apply(
        ops.create_subnet(
            topo, Subnet(id="s", tenant="t", network_id="n", cidr="10.0.0.0/16"), False, rev + 1, 0.0
        )
    )
    apply([("security_group", "g", None, SecurityGroup(id="g", tenant="t", display_name="g"))])
    for i in range(rules):
        key = topo.rule_keys.choose()
        apply(
            [
                (
                    "security_group_rule",
                    f"r{i}",
                    None,
                    SecurityGroupRule(
                        id=f"r{i}",
                        tenant="t",
                        security_group_id="g",
                        direction=INGRESS,
                        protocol="tcp",
                        port_range_min=1000 + i,
                        port_range_max=1000 + i,
                        remote_group_id="g",
                        key=key or 0,
                    ),
                )
            ]
        )
    vifs = {}
    for i in range(members):
        changes = ops.create_port(
            topo,
            Port(
                id=f"p{i}", tenant="t", network_id="n", mac="", binding_chassis="hv1", security_groups=("g",)
            ),
            [],
            rev + 1,
            0.0,
        )
        apply(changes)
        vifs[f"p{i}"] = i + 10
    runtime = {"hv1": ChassisRuntime("hv1", vifs, {"vxlan": 1}, {})}
    items = desired_from_scratch(topo, runtime, "hv1")
    return sum(1 for f in items if isinstance(f, Flow) and f.stage in ACL_STAGES)


def flows_table(ns: list[int], ms: list[int]) -> None:
    print("1. security-group flows on one chassis (group of N members there, M remote-group rules)")
    print("   " + "".join(f"{'M=' + str(m):>16}" for m in ms))
    grid = {(n, m): acl_flows(n, m) for n in ns for m in ms}
    for n in ns:
        print(f"   N={n:<5}" + "".join(f"{grid[n, m]:>8} ({grid[n, m] / n:4.1f}/port)" for m in ms))
    n0, m0 = ns[0], ms[0]
    worst = max(abs(grid[n, m] - grid[n, m0] - grid[n0, m] + grid[n0, m0]) for n in ns for m in ms)
    print(
        f"   additivity residual F(N,M) - F(N,{m0}) - F({n0},M) + F({n0},{m0}): max |.| = {worst} "
        "(0: flows grow with members + rules, no members x rules term)"
    )


def membership(samples: int, sizes: list[int]) -> None:
    from tests.e2e import lab_env

    with (
        tempfile.TemporaryDirectory() as tmp,
        lab_env(Path(tmp), chassis=1, provider=False, self_check=False) as env,
    ):
        md = env.md("bench-acl")
        net = env.network(md, "bacl", "10.64.0.0/14")
        anchor = env.plug("hv1", env.port(md, "bacl-anchor", net))  # hv1 hosts the network
        results = {}
        for size in sizes:
            g = env.stub.CreateSecurityGroup(
                pb.CreateSecurityGroupRequest(
                    security_group=pb.SecurityGroup(display_name=f"g{size}"), security_group_id=f"g{size}"
                ),
                metadata=md,
            )
            for proto in ("tcp", "udp"):
                env.stub.CreateSecurityGroupRule(
                    pb.CreateSecurityGroupRuleRequest(
                        security_group_rule=pb.SecurityGroupRule(
                            security_group=g.name,
                            direction="ingress",
                            protocol=proto,
                            port_range_min=80,
                            port_range_max=80,
                            remote_group=g.name,
                        )
                    ),
                    metadata=md,
                )
            for i in range(size):
                env.stub.CreatePort(
                    pb.CreatePortRequest(
                        port=pb.Port(
                            network=net.name, binding_chassis="chassis/hv1", security_groups=[g.name]
                        ),
                        port_id=f"m{size}-{i}",
                    ),
                    metadata=env.admin,
                )
            env.wait_realized(120)
            times = []
            for i in range(samples):
                t0 = time.perf_counter()
                port = env.stub.CreatePort(
                    pb.CreatePortRequest(
                        port=pb.Port(
                            network=net.name, binding_chassis="chassis/hv1", security_groups=[g.name]
                        ),
                        port_id=f"j{size}-{i}",
                    ),
                    metadata=env.admin,
                )
                resp = env.dp.WaitRealized(
                    dpb.WaitRealizedRequest(
                        revision=port.revision, timeout=duration_pb2.Duration(seconds=30)
                    ),
                    metadata=env.admin,
                )
                if not resp.realized:
                    raise RuntimeError(f"revision {port.revision} not realized: {resp}")
                times.append(time.perf_counter() - t0)
            results[size] = times
        del anchor
        print("2. a port joining a group -> its flows realized on the switch (CreatePort + WaitRealized)")
        for size, xs in results.items():
            print(
                f"   group of {size:4d}: median {statistics.median(xs) * 1e3:6.1f} ms  "
                f"max {max(xs) * 1e3:6.1f} ms  ({len(xs)} samples)"
            )
        small, large = min(sizes), max(sizes)
        print(
            f"   ratio median {large}/{small}: "
            f"{statistics.median(results[large]) / statistics.median(results[small]):.2f} (1.0: independent "
            "of the group's size)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="fewer samples and sizes")
    ap.add_argument("--no-lab", action="store_true", help="only the flow counts (no root needed)")
    args = ap.parse_args()
    if args.quick:
        flows_table([10, 50, 200], [1, 4])
        args.samples = 10
    else:
        flows_table([10, 100, 500, 1000], [1, 5, 20])
    if not args.no_lab:
        membership(args.samples, [10, 500])


if __name__ == "__main__":
    main()
