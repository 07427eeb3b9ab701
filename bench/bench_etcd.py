#!/usr/bin/env python3
"""The store on etcd against SQLite, in the same run; several controllers on one etcd; the etcd client choice.

1. CreatePort/s through the gRPC API (an in-process server, C concurrent clients) on the SQLite store (the
   baseline), on a one-member etcd (Debian's etcd-server, its own data dir, fsync on) without group commit
   (one write per txn: what the store did before) and with it, alternating per run; prints each rate and
   the ratios etcd/SQLite (min / median / max over the runs) and the writes per txn. Then two controllers
   on the same etcd, half the clients on each: the rate in all and the conflicts (txns refused because
   the other wrote first; the writes in them are validated again).
2. One controller against three (each a separate process: `--serve`, an EtcdState and an API server, as
   the controller runs them), the same C clients (threads of this process) spread over them round-robin,
   alternating per run: CreatePort/s, the ratio three/one, conflicts and writes given up on (ABORTED).
3. The client: etcd txns/s (one put of 300 bytes each) from T threads through etcd3gw (HTTP/JSON gateway),
   aetcd (asyncio gRPC, its loop on one thread) and synchronous grpcio with aetcd's message classes (what
   topology/etcd_store.py uses).

    .venv/bin/python bench/bench_etcd.py            # 3 runs of 600 creates, 8 clients
    .venv/bin/python bench/bench_etcd.py --quick    # a smoke run
    .venv/bin/python bench/bench_etcd.py --only controllers --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
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
from topology import state_etcd  # noqa: E402
from topology.etcd_store import EtcdConfig, EtcdStore  # noqa: E402
from topology.state import State  # noqa: E402
from topology.state_etcd import EtcdState  # noqa: E402


def mmm(xs: Sequence[float], fmt: str = "{:.0f}") -> str:
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

    def client(k: int) -> int:
        s = servers[k % len(servers)]
        done = 0
        for _ in range(per):
            try:
                s.stub.CreatePort(
                    pb.CreatePortRequest(port=pb.Port(network=f"networks/{net}")), metadata=s.md
                )
                done += 1
            except grpc.RpcError as err:  # ABORTED CONCURRENT_WRITES: counted by the servers, not a rate
                if err.code() is not grpc.StatusCode.ABORTED:
                    raise
        return done

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        done = sum(ex.map(client, range(clients)))
    return done / (time.perf_counter() - t0)


def store_ratio(runs: int, total: int, clients: int) -> None:
    print(f"== CreatePort/s through the API, {clients} clients, {total} creates per run, {runs} runs")
    load0 = os.getloadavg()
    sqlite_r, single_r, group_r, two_r, conflicts = [], [], [], [], []
    r_single, r_group, per_txn = [], [], []
    with tempfile.TemporaryDirectory(prefix="sdn-bench-etcd-") as d, EtcdCluster(Path(d) / "etcd") as etcd:
        endpoints = tuple(etcd.endpoints)
        for run in range(runs):
            tmp = Path(d) / f"run{run}"
            tmp.mkdir()
            s = Server(State(tmp / "topology.sqlite"), tmp)
            seed(s, "n")
            sq = creates_per_s([s], "n", clients, total)
            s.close()
            rates = {}
            for max_batch in (1, 64):  # one write per txn (before group commit), then group commit
                prefix = f"/b{run}-{max_batch}-{uuid.uuid4().hex[:6]}/"
                e = Server(
                    EtcdState(EtcdStore(EtcdConfig(endpoints, prefix=prefix)), max_batch=max_batch), tmp
                )
                seed(e, "n")
                st: EtcdState = e.state  # type: ignore[assignment]
                txns, writes = st.txns, st.txn_writes
                rates[max_batch] = creates_per_s([e], "n", clients, total)
                if max_batch > 1:
                    per_txn.append((st.txn_writes - writes) / max(1, st.txns - txns))
                    e2 = Server(EtcdState(EtcdStore(EtcdConfig(endpoints, prefix=prefix))), tmp)
                    pair: list[EtcdState] = [e.state, e2.state]  # type: ignore[list-item]
                    before = sum(x.conflicts for x in pair)
                    two_r.append(creates_per_s([e, e2], "n", clients, total))
                    conflicts.append(sum(x.conflicts for x in pair) - before)
                    e2.close()
                e.close()
            sqlite_r.append(sq)
            single_r.append(rates[1])
            group_r.append(rates[64])
            r_single.append(rates[1] / sq)
            r_group.append(rates[64] / sq)
            print(
                f"run {run}: sqlite {sq:.0f}/s  etcd one write per txn {rates[1]:.0f}/s "
                f"(ratio {rates[1] / sq:.2f})  etcd group commit {rates[64]:.0f}/s (ratio {rates[64] / sq:.2f}, "
                f"{per_txn[-1]:.1f} writes per txn)  two controllers {two_r[-1]:.0f}/s"
            )
    print(f"sqlite                        min/median/max {mmm(sqlite_r)} CreatePort/s")
    print(f"etcd, one write per txn       min/median/max {mmm(single_r)} CreatePort/s")
    print(f"etcd, group commit            min/median/max {mmm(group_r)} CreatePort/s")
    print(f"etcd/sqlite one write per txn min/median/max {mmm(r_single, '{:.2f}')}")
    print(f"etcd/sqlite group commit      min/median/max {mmm(r_group, '{:.2f}')}")
    print(
        f"group commit / one per txn    min/median/max {mmm([g / o for g, o in zip(group_r, single_r)], '{:.2f}')}"
    )
    print(f"writes per txn (group commit) min/median/max {mmm(per_txn, '{:.1f}')}")
    print(
        f"etcd, two controllers         {mmm(two_r)} CreatePort/s, conflicts (txns retried) {mmm(conflicts)}"
    )
    print(f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")


# ------------------------------------------------------------------------------------------ controllers


def serve(endpoints: str, prefix: str, tokens: str, *flags: str) -> None:
    """--serve: one controller's store and API (an EtcdState and an ApiServer) in this process; prints its
    port, runs until stdin closes, then prints its counters (JSON). --no-yield: never pause for another
    controller's fairness hint."""
    if "--no-yield" in flags:
        state_etcd.YIELD_AFTER = 1 << 30
    state = EtcdState(EtcdStore(EtcdConfig(tuple(endpoints.split(",")), prefix=prefix)))
    srv = ApiServer(state, TokenFile(Path(tokens)), "127.0.0.1:0", workers=32)
    srv.start()
    print(srv.port, flush=True)
    sys.stdin.read()
    srv.stop(0)
    counters = {
        k: getattr(state, k) for k in ("conflicts", "retried", "aborted", "txns", "txn_writes", "yields")
    }
    state.close()
    print(json.dumps(counters), flush=True)


class Remote:
    """A controller process (`serve`) and a client channel to it."""

    def __init__(self, endpoints: list[str], prefix: str, tmp: Path, no_yield: bool = False) -> None:
        tokens = tmp / "tokens.json"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", ",".join(endpoints), prefix, str(tokens)]
            + (["--no-yield"] if no_yield else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.md = (("authorization", f"Bearer {TokenFile(tokens).admin_token()}"),)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.TopologyServiceStub(self.channel)

    def close(self) -> dict[str, int]:
        self.channel.close()
        out, _ = self.proc.communicate("", timeout=30)
        return dict(json.loads(out.strip().splitlines()[-1]))


def controllers(runs: int, total: int, clients: int, n: int = 3) -> None:
    print(
        f"== CreatePort/s, one controller process vs {n}, on one etcd, {clients} clients spread round-robin; "
        f"{n} with the fairness hint (as shipped) and without (--no-yield: no controller ever pauses)"
    )
    load0 = os.getloadavg()
    rates: dict[str, list[float]] = {"one": [], "hint": [], "none": []}
    counts: dict[str, dict[str, list[int]]] = {v: {} for v in ("hint", "none")}
    with tempfile.TemporaryDirectory(prefix="sdn-bench-etcd3-") as d, EtcdCluster(Path(d) / "etcd") as etcd:
        tmp = Path(d)
        TokenFile(tmp / "tokens.json").admin_token()  # created once, shared (as one token file would be)
        for run in range(runs):
            for variant, k in (("one", 1), ("hint", n), ("none", n)):
                prefix = f"/c{run}-{variant}-{uuid.uuid4().hex[:6]}/"
                procs = [Remote(etcd.endpoints, prefix, tmp, no_yield=variant == "none") for _ in range(k)]
                seed(procs[0], "n")  # type: ignore[arg-type]
                for p in procs:  # every controller has the network before the clients start
                    get_network(p)
                rates[variant].append(creates_per_s(procs, "n", clients, total))  # type: ignore[arg-type]
                got = [p.close() for p in procs]
                if variant != "one":
                    for key in ("conflicts", "aborted", "yields"):
                        counts[variant].setdefault(key, []).append(sum(c[key] for c in got))
            print(
                f"run {run}: one {rates['one'][-1]:.0f}/s  {n} with hint {rates['hint'][-1]:.0f}/s "
                f"(conflicts {counts['hint']['conflicts'][-1]}, aborted {counts['hint']['aborted'][-1]}, "
                f"yields {counts['hint']['yields'][-1]})  {n} without {rates['none'][-1]:.0f}/s "
                f"(conflicts {counts['none']['conflicts'][-1]}, aborted {counts['none']['aborted'][-1]})"
            )
    print(f"one controller            min/median/max {mmm(rates['one'])} CreatePort/s")
    for v, label in (("hint", "with the hint"), ("none", "without hint")):
        print(f"{n} controllers, {label:14s} min/median/max {mmm(rates[v])} CreatePort/s")
        ratios = [x / o for x, o in zip(rates[v], rates["one"], strict=True)]
        print(f"{n}/one, {label:14s}      min/median/max {mmm(ratios, '{:.2f}')}")
        c = counts[v]
        print(
            f"  per run: conflicts {mmm(c['conflicts'])}, writes aborted {mmm(c['aborted'])}, "
            f"yields {mmm(c['yields'])} (min/median/max)"
        )
    print(f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")


def get_network(p: Remote) -> None:
    for _ in range(200):
        try:
            p.stub.GetNetwork(pb.GetNetworkRequest(name="networks/n"), metadata=p.md)
            return
        except grpc.RpcError:
            time.sleep(0.02)
    raise RuntimeError("the network never reached a controller")


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
    if len(sys.argv) >= 5 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--creates", type=int, default=600)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--only", choices=("store", "controllers", "client"), help="one part only")
    args = ap.parse_args()
    runs, creates = (1, 80) if args.quick else (args.runs, args.creates)
    if args.only in (None, "store"):
        store_ratio(runs, creates, args.clients)
    if args.only in (None, "controllers"):
        controllers(runs, creates, args.clients)
    if args.only in (None, "client"):
        client_choice(runs, 60 if args.quick else 400)


if __name__ == "__main__":
    main()
