#!/usr/bin/env python3
"""Dataplane benchmarks through the real controller process and real ovs-vswitchd chassis (needs root):

1. incremental: CreatePort (bound to a chassis) -> its flows confirmed on the switches (WaitRealized),
   p50 and p99, with 100 and with 10,000 ports already there; goal: p99 at 10k <= 1.5 x p99 at 100.
2. restart: kill -9 the controller holding those flows and start it again: time until every switch is
   resynced, and flow-mods sent (goal: 0).

    .venv/bin/python bench/bench_dataplane.py [--large 10000] [--samples 200]
    .venv/bin/python bench/bench_dataplane.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

from proto.sdn.v1 import dataplane_pb2 as dpb  # noqa: E402
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from tests.e2e import Env, lab_env  # noqa: E402


def fill(env: Env, net: pb.Network, count: int, start: int, chassis: str) -> None:
    """`count` ports bound to `chassis` (not plugged: their flows on the other chassis are what matters)."""
    lock = threading.Lock()
    it = iter(range(start, start + count))

    def worker() -> None:
        ch = grpc.insecure_channel(env.controller.endpoint)
        stub = pb_grpc.TopologyServiceStub(ch)
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            stub.CreatePort(
                pb.CreatePortRequest(
                    port=pb.Port(network=net.name, binding_chassis=f"chassis/{chassis}"), port_id=f"fill-{i}"
                ),
                metadata=env.admin,
            )
        ch.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(env: Env, net: pb.Network, samples: int, tag: str) -> list[float]:
    out = []
    for i in range(samples):
        t0 = time.perf_counter()
        port = env.stub.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(network=net.name, binding_chassis="chassis/hv2"), port_id=f"m-{tag}-{i}"
            ),
            metadata=env.admin,
        )
        resp = env.dp.WaitRealized(
            dpb.WaitRealizedRequest(revision=port.revision, timeout=duration_pb2.Duration(seconds=30)),
            metadata=env.admin,
        )
        if not resp.realized:
            raise RuntimeError(f"revision {port.revision} not realized: {resp}")
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="--large 1000 --samples 30")
    args = ap.parse_args()
    if args.quick:
        args.large, args.samples = 1000, 30
    with tempfile.TemporaryDirectory() as tmp, lab_env(Path(tmp), provider=False, self_check=False) as env:
        net = env.network(env.admin, "bench", "10.128.0.0/9")
        env.plug(
            "hv1", env.port(env.admin, "anchor", net)
        )  # hv1 hosts the network: it gets every port's flows
        env.wait_realized(120)
        fill(env, net, args.small, 0, "hv2")
        env.wait_realized(120)
        small = measure(env, net, args.samples, "small")
        t0 = time.perf_counter()
        fill(env, net, args.large - args.small, args.small, "hv2")
        env.wait_realized(290)
        fill_s = time.perf_counter() - t0
        large = measure(env, net, args.samples, "large")
        flows = env.status()["hv1"].installed_flows
        print(f"incremental: CreatePort -> flows realized on the switches ({args.samples} samples each)")
        for _name, xs, n in (("small", small, args.small), ("large", large, args.large)):
            print(
                f"  {n:6d} ports: p50 {pct(xs, 50) * 1e3:6.1f} ms  p99 {pct(xs, 99) * 1e3:6.1f} ms  "
                f"mean {statistics.mean(xs) * 1e3:6.1f} ms"
            )
        print(f"  ratio p99 large/small: {pct(large, 99) / pct(small, 99):.2f}   (goal <= 1.5)")
        print(f"  (filling {args.large - args.small} ports took {fill_s:.1f} s; hv1 holds {flows} flows)")

        before = env.ovs_flows("hv1")
        env.controller.kill(signal.SIGKILL)
        t0 = time.perf_counter()
        env.controller.start()
        env.channel = grpc.insecure_channel(env.controller.endpoint)
        env.stub = pb_grpc.TopologyServiceStub(env.channel)
        env.dp = dpb_grpc.DataplaneServiceStub(env.channel)
        while True:
            st = env.status()
            if all(s.connected and s.resyncs >= 1 and s.installed_flows > 0 for s in st.values()):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        mods = sum(s.flow_mods_sent + s.group_mods_sent for s in st.values())
        same = env.ovs_flows("hv1") == before
        print(
            f"restart: kill -9 and start with {st['hv1'].installed_flows} flows on hv1: resynced in "
            f"{elapsed:.2f} s (process start included), flow/group-mods sent: {mods} (goal 0), "
            f"switch flows unchanged: {same}"
        )


if __name__ == "__main__":
    main()
