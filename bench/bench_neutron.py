#!/usr/bin/env python3
"""Neutron REST API cost against gRPC, in one process over one store, measured in the same run: median
latency of creating a port and of showing one, one client, REST (HTTP/1.1 keep-alive, JSON) divided by gRPC
(the same Tables method behind both). Rounds alternate REST and gRPC so load drifts hit both.

    .venv/bin/python bench/bench_neutron.py            # 300 calls of each, 3 rounds
    .venv/bin/python bench/bench_neutron.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.api.auth import TokenFile  # noqa: E402
from controller.api.server import ApiServer  # noqa: E402
from controller.neutron.kinds import ALL  # noqa: E402
from controller.neutron.rest import listen  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from topology.state import State  # noqa: E402


def median_ms(fn: Callable[[int], object], n: int) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, rounds = (30, 1) if args.quick else (args.calls, args.rounds)
    tmp = Path(tempfile.mkdtemp(prefix="sdn-bench-neutron-"))
    state = State(tmp / "topology.sqlite")
    tokens = TokenFile(tmp / "tokens.json")
    srv = ApiServer(state, tokens, "127.0.0.1:0")
    srv.start()
    rest = listen(srv.topology, tokens, ALL, "127.0.0.1", 0)
    token = tokens.create("bench", False)
    md = (("authorization", f"Bearer {token}"),)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    stub = pb_grpc.TopologyServiceStub(channel)
    conn = http.client.HTTPConnection("127.0.0.1", rest.port)  # (makes no connection yet)
    headers = {"X-Auth-Token": token, "Content-Type": "application/json"}

    def call(method: str, path: str, body: object = None) -> dict[str, object]:
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status in (200, 201), (resp.status, data)
        answer: dict[str, object] = json.loads(data)
        return answer

    try:
        net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(display_name="b")), metadata=md)
        stub.CreateSubnet(
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/16")), metadata=md
        )
        net_id = net.name.split("/")[1]
        port = stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md)
        port_id = port.name.split("/")[1]
        results: dict[str, list[float]] = {
            k: [] for k in ("create_rest", "create_grpc", "show_rest", "show_grpc")
        }
        for _ in range(rounds):
            results["create_rest"].append(
                median_ms(lambda i: call("POST", "/v2.0/ports", {"port": {"network_id": net_id}}), calls)
            )
            results["create_grpc"].append(
                median_ms(
                    lambda i: stub.CreatePort(
                        pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md
                    ),
                    calls,
                )
            )
            results["show_rest"].append(median_ms(lambda i: call("GET", f"/v2.0/ports/{port_id}"), calls))
            results["show_grpc"].append(
                median_ms(lambda i: stub.GetPort(pb.GetPortRequest(name=port.name), metadata=md), calls)
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"calls per measurement: {calls}, rounds: {rounds} (medians of the rounds' medians)")
        for what in ("create", "show"):
            r, g = med[f"{what}_rest"], med[f"{what}_grpc"]
            print(f"{what} port: REST {r:.2f} ms, gRPC {g:.2f} ms, REST/gRPC = {r / g:.2f}")
    finally:
        conn.close()
        channel.close()
        rest.stop()
        srv.stop(0)
        state.close()


if __name__ == "__main__":
    main()
