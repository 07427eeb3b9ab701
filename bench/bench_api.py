#!/usr/bin/env python3
"""API benchmark: CreatePort requests/s through the real controller process divided by a no-op unary call
(GetServerInfo: same server, same auth, same channel) measured in the same run; plus IPAM allocation time
with 100 and with 10,000 ports in one subnet; plus fairness: unary p50/p99 (admin GetServerInfo, admin and
tenant CreateNetwork, and CreateNetwork by a tenant whose own 25 streams see it) with 0 and with 200 Watch
streams open (8 tenants x 25), as a ratio.

    .venv/bin/python bench/bench_api.py            # full run
    .venv/bin/python bench/bench_api.py --quick    # a smoke run (CI)
    .venv/bin/python bench/bench_api.py --streams-only --rounds 5   # only the fairness part
    .venv/bin/python bench/bench_api.py --api-only --profile out.txt  # the ratio, py-spy on the server
                                                                      # during one more CreatePort round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


def start_controller(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run_controller.py"),
            "--data-dir",
            str(tmp),
            "--grpc-listen",
            f"127.0.0.1:{port}",
            "--openflow-listen",
            f"127.0.0.1:{free_port()}",
            "--dashboard-listen",
            "",
            "--neutron-listen",
            "",
            "--metrics-listen",
            "",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
    )


def profile_round(
    pid: int, out: Path, seconds: float, run: Callable[[], object], extra: tuple[str, ...] = ()
) -> None:
    """py-spy (a dev tool, not a dependency: `pip install py-spy`) samples the server, every thread, while
    `run` makes calls; writes its raw collapsed stacks to `out`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    rec = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", "200"]
        + ["--duration", str(int(seconds)), "--nonblocking", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attached
    deadline = time.monotonic() + seconds - 1.5
    while time.monotonic() < deadline:
        run()
    rec.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (every thread) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_ratio(calls: int, clients: int, profile: Path | None = None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sdn-bench-"))
    port = free_port()
    proc = start_controller(tmp, port)
    try:
        endpoint = f"127.0.0.1:{port}"
        grpc.channel_ready_future(grpc.insecure_channel(endpoint)).result(timeout=30)
        tokens = json.loads((tmp / "tokens.json").read_text())["tokens"]
        md = (("authorization", "Bearer " + next(iter(tokens))),)
        stub = pb_grpc.TopologyServiceStub(grpc.insecure_channel(endpoint))
        net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network()), metadata=md)
        stub.CreateSubnet(
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/16")), metadata=md
        )

        def noop():  # type: ignore[no-untyped-def]
            s = pb_grpc.TopologyServiceStub(grpc.insecure_channel(endpoint))
            return lambda: s.GetServerInfo(pb.GetServerInfoRequest(), metadata=md)

        def create():  # type: ignore[no-untyped-def]
            s = pb_grpc.TopologyServiceStub(grpc.insecure_channel(endpoint))
            return lambda: s.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md)

        per_client = max(1, calls // clients)
        rate(noop, clients, max(1, per_client // 5))  # warm-up
        noop_rates, create_rates = [], []
        cpu = {"noop": [0.0, 0.0], "create": [0.0, 0.0]}  # server, client CPU seconds over the rounds

        def measured(kind: str, call) -> float:  # type: ignore[no-untyped-def]
            s0, c0 = cpu_seconds(proc.pid), time.process_time()
            r = rate(call, clients, per_client)
            cpu[kind][0] += cpu_seconds(proc.pid) - s0
            cpu[kind][1] += time.process_time() - c0
            return r

        for _ in range(3):  # interleaved, so drift on the machine hits both alike
            noop_rates.append(measured("noop", noop))
            create_rates.append(measured("create", create))
        n, c = statistics.median(noop_rates), statistics.median(create_rates)
        print(f"api: {clients} clients, {per_client} calls each, median of 3 rounds")
        print(f"  GetServerInfo (no-op)  {n:8.0f} req/s")
        print(f"  CreatePort             {c:8.0f} req/s  (durable: SQLite WAL, synchronous=FULL)")
        print(f"  ratio CreatePort/no-op {c / n:8.2f}   (goal >= 0.5)")
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(
            f"  rounds: no-op {' '.join(f'{x:.0f}' for x in noop_rates)}; "
            f"CreatePort {' '.join(f'{x:.0f}' for x in create_rates)}; load average {load}"
        )
        done = 3 * clients * per_client
        for kind, label in (("noop", "no-op"), ("create", "CreatePort")):
            server, client = (x / done * 1e3 for x in cpu[kind])
            print(f"  CPU per call, {label:10s}: server {server:.3f} ms, this client {client:.3f} ms")
        if profile is not None:
            gil = profile.with_name(profile.stem + ".gil" + profile.suffix)
            profile_round(proc.pid, profile, 12.0, lambda: rate(create, clients, per_client))
            profile_round(proc.pid, gil, 12.0, lambda: rate(create, clients, per_client), ("--gil",))
            print(f"  py-spy of the server during CreatePort rounds (raw stacks): every thread {profile}")
            print(f"  only the thread holding the GIL (Python CPU): {gil}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def stream_fairness(n_streams: int, calls: int, rounds: int) -> None:
    """Unary latency (sequential calls on one channel) with no stream open, then with `n_streams` Watch
    streams open (tenants of 25 streams each, one channel per tenant), alternately, `rounds` times."""
    tmp = Path(tempfile.mkdtemp(prefix="sdn-bench-"))
    port = free_port()
    proc = start_controller(tmp, port)
    channels: list[grpc.Channel] = []
    try:
        endpoint = f"127.0.0.1:{port}"
        grpc.channel_ready_future(grpc.insecure_channel(endpoint)).result(timeout=30)
        tokens = json.loads((tmp / "tokens.json").read_text())["tokens"]
        admin = (("authorization", "Bearer " + next(iter(tokens))),)
        ch = grpc.insecure_channel(endpoint)
        channels.append(ch)
        stub = pb_grpc.TopologyServiceStub(ch)
        per_tenant = 25
        tenants = [
            stub.CreateToken(pb.CreateTokenRequest(tenant=f"w{i}"), metadata=admin).token
            for i in range((n_streams + per_tenant - 1) // per_tenant)
        ]
        writer = (
            (
                "authorization",
                "Bearer " + stub.CreateToken(pb.CreateTokenRequest(tenant="writer"), metadata=admin).token,
            ),
        )
        seq = [0]

        def create(md: tuple[tuple[str, str], ...]) -> None:
            seq[0] += 1
            stub.CreateNetwork(
                pb.CreateNetworkRequest(network=pb.Network(), network_id=f"b{seq[0]}"),
                metadata=md,
                timeout=10,
            )

        probes = {
            "GetServerInfo (admin)": lambda: stub.GetServerInfo(
                pb.GetServerInfoRequest(), metadata=admin, timeout=10
            ),
            "CreateNetwork (admin)": lambda: create(admin),
            "CreateNetwork (tenant)": lambda: create(writer),
            # a tenant whose own 25 streams each get the event: the streams that can see a write do wake
            "CreateNetwork (watched)": lambda: create((("authorization", "Bearer " + tenants[0]),)),
        }
        for fn in probes.values():  # warm-up
            for _ in range(10):
                fn()

        def measure() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {}
            for name, fn in probes.items():
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                out[name] = times
            return out

        def open_streams() -> list[object]:
            streams = []
            for i in range(n_streams):
                if i % per_tenant == 0:
                    c = grpc.insecure_channel(endpoint)
                    channels.append(c)
                    s = pb_grpc.TopologyServiceStub(c)
                md = (("authorization", "Bearer " + tenants[i // per_tenant]),)
                it = s.Watch(pb.WatchRequest(), metadata=md)
                for ev in it:
                    if ev.type == pb.WatchEvent.SYNCED:
                        break
                streams.append(it)
            return streams

        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(rounds):
            for name, times in measure().items():
                results.setdefault((name, 0), []).append((statistics.median(times), percentile(times, 99)))
            streams = open_streams()
            for name, times in measure().items():
                results.setdefault((name, n_streams), []).append(
                    (statistics.median(times), percentile(times, 99))
                )
            for it in streams:
                it.cancel()  # type: ignore[attr-defined]
            time.sleep(1.0)  # the server notices the cancels (Watch re-checks its client every 0.5 s)

        def mmm(xs: list[float]) -> str:
            return f"{min(xs) * 1e3:5.1f} / {statistics.median(xs) * 1e3:5.1f} / {max(xs) * 1e3:5.1f}"

        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(
            f"fairness: {calls} sequential calls per method and round, {rounds} rounds, "
            f"ms as min / median / max over rounds; load average {load}"
        )
        for name in probes:
            base, loaded = results[(name, 0)], results[(name, n_streams)]
            p99_0 = statistics.median(p for _, p in base)
            p99_n = statistics.median(p for _, p in loaded)
            print(
                f"  {name:24s}   0 streams: p50 {mmm([m for m, _ in base])}  p99 {mmm([p for _, p in base])}"
            )
            print(
                f"  {'':24s} {n_streams:3d} streams: p50 {mmm([m for m, _ in loaded])}  "
                f"p99 {mmm([p for _, p in loaded])}  p99 ratio {p99_n / p99_0:.2f} (goal: p99 < 100 ms)"
            )
    finally:
        for c in channels:
            c.close()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def ipam_timing(counts: list[int], samples: int) -> None:
    """Time to choose + commit one address in a /16 already holding N ports (in memory, no disk)."""
    print("ipam: one allocation in 10.0.0.0/16 with N ports already allocated")
    for n in counts:
        topo = Topology()
        topo.apply(ops.create_network(topo, Network(id="n", tenant="t"), 1, 0.0), 1)
        topo.apply(
            ops.create_subnet(
                topo, Subnet(id="s", tenant="t", network_id="n", cidr="10.0.0.0/16"), False, 2, 0.0
            ),
            2,
        )
        rev = 3
        for i in range(n):
            topo.apply(
                ops.create_port(topo, Port(id=f"p{i}", tenant="t", network_id="n", mac=""), [], rev, 0.0), rev
            )
            rev += 1
        # free a few addresses behind the cursor, as deletions do
        for i in range(0, n, max(1, n // 10)):
            topo.apply(ops.delete_port(topo, topo.ports[f"p{i}"]), rev)
            rev += 1
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            changes = ops.create_port(
                topo, Port(id=f"x{i}", tenant="t", network_id="n", mac=""), [], rev, 0.0
            )
            topo.apply(changes, rev)
            times.append(time.perf_counter() - t0)
            rev += 1
        print(
            f"  N={n:6d}: median {statistics.median(times) * 1e6:7.1f} us, "
            f"max {max(times) * 1e6:7.1f} us over {samples} allocations"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--streams", type=int, default=200, help="Watch streams open in the fairness part")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the fairness part")
    ap.add_argument("--streams-only", action="store_true", help="only the fairness part")
    ap.add_argument("--api-only", action="store_true", help="only the CreatePort / no-op ratio")
    ap.add_argument(
        "--profile", type=Path, help="py-spy the server during CreatePort: raw stacks to this file"
    )
    args = ap.parse_args()
    if not args.streams_only:
        if not args.api_only:
            ipam_timing([100, 10_000] if not args.quick else [100, 1000], 200 if not args.quick else 20)
        api_ratio(400 if args.quick else 4000, args.clients, args.profile)
    if args.api_only:
        return
    stream_fairness(
        args.streams if not args.quick else min(args.streams, 50),
        50 if args.quick else 200,
        1 if args.quick else args.rounds,
    )


if __name__ == "__main__":
    main()
