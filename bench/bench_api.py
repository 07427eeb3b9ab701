#!/usr/bin/env python3
"""API benchmark: CreatePort requests/s through the real controller process divided by a no-op unary call
(GetServerInfo: same server, same auth, same channel) measured in the same run; plus IPAM allocation time
with 100 and with 10,000 ports in one subnet.

    .venv/bin/python bench/bench_api.py            # full run
    .venv/bin/python bench/bench_api.py --quick    # a smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from topology import ops  # noqa: E402
from topology.model import Topology  # noqa: E402
from topology.records import Network, Port, Subnet  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rate(call, clients: int, per_client: int) -> float:  # type: ignore[no-untyped-def]
    """Calls/s with `clients` threads each making `per_client` sequential calls on its own channel."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def worker() -> None:
        fn = call()
        barrier.wait()
        try:
            for _ in range(per_client):
                fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return clients * per_client / elapsed


def api_ratio(calls: int, clients: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sdn-bench-"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_controller.py"), "--data-dir", str(tmp),
                             "--grpc-listen", f"127.0.0.1:{port}", "--openflow-listen", f"127.0.0.1:{free_port()}",
                             "--dashboard-listen", "", "--metrics-listen", "", "--log-level", "WARNING"], cwd=ROOT)
    try:
        endpoint = f"127.0.0.1:{port}"
        grpc.channel_ready_future(grpc.insecure_channel(endpoint)).result(timeout=30)
        tokens = json.loads((tmp / "tokens.json").read_text())["tokens"]
        md = (("authorization", "Bearer " + next(iter(tokens))),)
        stub = pb_grpc.TopologyServiceStub(grpc.insecure_channel(endpoint))
        net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network()), metadata=md)
        stub.CreateSubnet(pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/16")),
                          metadata=md)

        def noop():  # type: ignore[no-untyped-def]
            s = pb_grpc.TopologyServiceStub(grpc.insecure_channel(endpoint))
            return lambda: s.GetServerInfo(pb.GetServerInfoRequest(), metadata=md)

        def create():  # type: ignore[no-untyped-def]
            s = pb_grpc.TopologyServiceStub(grpc.insecure_channel(endpoint))
            return lambda: s.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md)

        per_client = max(1, calls // clients)
        rate(noop, clients, max(1, per_client // 5))  # warm-up
        noop_rates, create_rates = [], []
        for _ in range(3):  # interleaved, so drift on the machine hits both alike
            noop_rates.append(rate(noop, clients, per_client))
            create_rates.append(rate(create, clients, per_client))
        n, c = statistics.median(noop_rates), statistics.median(create_rates)
        print(f"api: {clients} clients, {per_client} calls each, median of 3 rounds")
        print(f"  GetServerInfo (no-op)  {n:8.0f} req/s")
        print(f"  CreatePort             {c:8.0f} req/s  (durable: SQLite WAL, synchronous=FULL)")
        print(f"  ratio CreatePort/no-op {c / n:8.2f}   (goal >= 0.5)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def ipam_timing(counts: list[int], samples: int) -> None:
    """Time to choose + commit one address in a /16 already holding N ports (in memory, no disk)."""
    print("ipam: one allocation in 10.0.0.0/16 with N ports already allocated")
    for n in counts:
        topo = Topology()
        topo.apply(ops.create_network(topo, Network(id="n", tenant="t"), 1, 0.0), 1)
        topo.apply(ops.create_subnet(topo, Subnet(id="s", tenant="t", network_id="n", cidr="10.0.0.0/16"),
                                     False, 2, 0.0), 2)
        rev = 3
        for i in range(n):
            topo.apply(ops.create_port(topo, Port(id=f"p{i}", tenant="t", network_id="n", mac=""), [], rev, 0.0), rev)
            rev += 1
        # free a few addresses behind the cursor, as deletions do
        for i in range(0, n, max(1, n // 10)):
            topo.apply(ops.delete_port(topo, topo.ports[f"p{i}"]), rev)
            rev += 1
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            changes = ops.create_port(topo, Port(id=f"x{i}", tenant="t", network_id="n", mac=""), [], rev, 0.0)
            topo.apply(changes, rev)
            times.append(time.perf_counter() - t0)
            rev += 1
        print(f"  N={n:6d}: median {statistics.median(times) * 1e6:7.1f} us, "
              f"max {max(times) * 1e6:7.1f} us over {samples} allocations")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    ipam_timing([100, 10_000] if not args.quick else [100, 1000], 200 if not args.quick else 20)
    api_ratio(400 if args.quick else 4000, args.clients)


if __name__ == "__main__":
    main()
