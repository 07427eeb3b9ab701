#!/usr/bin/env python3
"""The store on etcd against SQLite, in the same run, and the etcd client choice.

1. CreatePort/s through the gRPC API (an in-process server, C concurrent clients) on the SQLite store (the
   baseline) and on a one-member etcd (Debian's etcd-server, its own data dir, fsync on), alternating per
   run; prints each rate and the ratio etcd/SQLite (min / median / max over the runs). Then two controllers
   on the same etcd, half the clients on each: the rate in all and the write conflicts (retries).
2. The client: etcd txns/s (one put of 300 bytes each) from T threads through etcd3gw (HTTP/JSON gateway),
   aetcd (asyncio gRPC, its loop on one thread) and synchronous grpcio with aetcd's message classes (what
   topology/etcd_store.py uses).

    .venv/bin/python bench/bench_etcd.py            # 3 runs of 600 creates, 8 clients
    .venv/bin/python bench/bench_etcd.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from controller.api.auth import TokenFile  # noqa: E402
from controller.api.server import ApiServer  # noqa: E402
from lab.etcd import EtcdCluster  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from topology.etcd_store import EtcdConfig, EtcdStore  # noqa: E402
from topology.state import State  # noqa: E402
from topology.state_etcd import EtcdState  # noqa: E402


def mmm(xs: list[float], fmt: str = "{:.0f}") -> str:
    return "/".join(fmt.format(v) for v in (min(xs), statistics.median(xs), max(xs)))


class Server:
    def __init__(self, state: State, tmp: Path) -> None:
        self.state = state
        tokens = TokenFile(tmp / "tokens.json")
        self.srv = ApiServer(state, tokens, "127.0.0.1:0", workers=32)
        self.srv.start()
        self.md = (("authorization", f"Bearer {tokens.admin_token()}"),)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.srv.port}")
        self.stub = pb_grpc.TopologyServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.srv.stop(0)
        self.state.close()


def seed(s: Server, net: str) -> None:
    s.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id=net), metadata=s.md)
    s.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=f"networks/{net}", cidr="10.0.0.0/16")), metadata=s.md
    )


def creates_per_s(servers: list[Server], net: str, clients: int, total: int) -> float:
    """`total` CreatePorts on `net` from `clients` threads spread over `servers`."""
    per = total // clients

    def client(k: int) -> None:
        s = servers[k % len(servers)]
        for _ in range(per):
            s.stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=f"networks/{net}")), metadata=s.md)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(client, range(clients)))
    return per * clients / (time.perf_counter() - t0)


def store_ratio(runs: int, total: int, clients: int) -> None:
    print(f"== CreatePort/s through the API, {clients} clients, {total} creates per run, {runs} runs")
    load0 = os.getloadavg()
    sqlite_r, etcd_r, ratios, two_r, conflicts = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="sdn-bench-etcd-") as d, EtcdCluster(Path(d) / "etcd") as etcd:
        endpoints = tuple(etcd.endpoints)
        for run in range(runs):
            tmp = Path(d) / f"run{run}"
            tmp.mkdir()
            s = Server(State(tmp / "topology.sqlite"), tmp)
            seed(s, "n")
            sq = creates_per_s([s], "n", clients, total)
            s.close()
            prefix = f"/b{run}-{uuid.uuid4().hex[:6]}/"
            e = Server(EtcdState(EtcdStore(EtcdConfig(endpoints, prefix=prefix))), tmp)
            seed(e, "n")
            et = creates_per_s([e], "n", clients, total)
            e2 = Server(EtcdState(EtcdStore(EtcdConfig(endpoints, prefix=prefix))), tmp)
            before = [x.state.conflicts for x in (e, e2)]  # type: ignore[attr-defined]
            two = creates_per_s([e, e2], "n", clients, total)
            conflicts.append(sum(x.state.conflicts for x in (e, e2)) - sum(before))  # type: ignore[attr-defined]
            e2.close()
            e.close()
            sqlite_r.append(sq)
            etcd_r.append(et)
            ratios.append(et / sq)
            two_r.append(two)
            print(
                f"run {run}: sqlite {sq:.0f}/s  etcd {et:.0f}/s  ratio {et / sq:.2f}  two controllers {two:.0f}/s"
            )
    print(f"sqlite      min/median/max {mmm(sqlite_r)} CreatePort/s")
    print(f"etcd        min/median/max {mmm(etcd_r)} CreatePort/s")
    print(f"etcd/sqlite min/median/max {mmm(ratios, '{:.2f}')}")
    print(f"etcd, two controllers      {mmm(two_r)} CreatePort/s, conflicts (retried) {mmm(conflicts)}")
    print(f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")


def client_choice(runs: int, n: int) -> None:
    import aetcd
    import etcd3gw
    from aetcd.rpc import rpc_pb2 as rpc
    from aetcd.rpc import rpc_pb2_grpc as rpc_grpc

    print(f"== etcd client: txn/s (one 300-byte put each), {n} txns, {runs} runs")
    value = b"x" * 300
    with tempfile.TemporaryDirectory(prefix="sdn-bench-etcdc-") as d, EtcdCluster(Path(d)) as etcd:
        port = etcd.members[0].client_port
        gw = etcd3gw.Etcd3Client(host="127.0.0.1", port=port, api_path="/v3/")

        def via_gateway(i: int) -> None:
            put = {
                "key": base64.b64encode(f"/c/{i}".encode()).decode(),
                "value": base64.b64encode(value).decode(),
            }
            gw.post(gw.get_url("/kv/txn"), json={"success": [{"request_put": put}]})

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        ac = aetcd.Client(host="127.0.0.1", port=port)
        asyncio.run_coroutine_threadsafe(ac.connect(), loop).result()

        def via_aetcd(i: int) -> None:
            op = ac.transactions.put(f"/c/{i}".encode(), value)
            asyncio.run_coroutine_threadsafe(
                ac.transaction(compare=[], success=[op], failure=[]), loop
            ).result()

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        kv = rpc_grpc.KVStub(channel)

        def via_grpc(i: int) -> None:
            put = rpc.RequestOp(request_put=rpc.PutRequest(key=f"/c/{i}".encode(), value=value))
            kv.Txn(rpc.TxnRequest(success=[put]), timeout=5)

        clients: dict[str, Callable[[int], None]] = {
            "etcd3gw (HTTP/JSON)": via_gateway,
            "aetcd (asyncio)": via_aetcd,
            "grpcio sync (chosen)": via_grpc,
        }
        for threads in (1, 8):
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(runs):
                for name, fn in clients.items():
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(threads) as ex:
                        list(ex.map(fn, range(n)))
                    rates[name].append(n / (time.perf_counter() - t0))
            for name, xs in rates.items():
                print(f"{threads} thread(s)  {name:22s} min/median/max {mmm(xs)} txn/s")
        channel.close()
        asyncio.run_coroutine_threadsafe(ac.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
    print(f"load average after {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--creates", type=int, default=600)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    runs, creates = (1, 80) if args.quick else (args.runs, args.creates)
    store_ratio(runs, creates, args.clients)
    client_choice(runs, 60 if args.quick else 400)


if __name__ == "__main__":
    main()
