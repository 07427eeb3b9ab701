#!/usr/bin/env python3
"""CreatePort -> WaitRealized at 100k ports against a small deployment, with real switches (needs root;
issue 22). Also: the controller's start-to-serving time, its RSS per 10k ports, ovs-vswitchd's RSS per
chassis, and (py-spy) where the controller's CPU goes per CreatePort at the large size.

Topology (the same shape at both sizes): tenants of 10 networks, networks of 50 ports with a /24 subnet
each, the tenant's default security group on every port (egress any, ingress from the group); network k's
ports pinned alternately to chassis k mod C and k+1 mod C (so each chassis hosts 2/C of the networks and
sees the ports of the other chassis in them as remote); `--plugged` ports per chassis are OVS internal
interfaces (iface-id set), the rest bound but not plugged. The bulk is written straight into the store
with the controller stopped (topology.ops through a State, as the API would, in writes of 2,000 ports),
then the controller is started: the start is timed (API answering, then every chassis realized).

Measured port (each sample): an OVS internal interface with its iface-id is on the chassis beforehand;
CreatePort (admin, pinned to that chassis, in network i mod N: a network the chassis hosts) then
WaitRealized at the create's revision; the wall time of both calls. Rounds of `--samples` at each size;
p50 / p99 per round. One more round at the large size runs under py-spy (not counted in the latencies).

    sudo .venv/bin/python bench/bench_ports100k.py [--ports 100000] [--small 100] [--chassis 4]
                                                   [--samples 100] [--rounds 3] [--plugged 50]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

from proto.sdn.v1 import dataplane_pb2 as dpb  # noqa: E402
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from tests.e2e import Env, lab_env  # noqa: E402
from topology import ops, ops_security  # noqa: E402
from topology.model import Change, Topology  # noqa: E402
from topology.records import Network, Port, Subnet  # noqa: E402
from topology.state import State  # noqa: E402

PER_NETWORK = 50
NETWORKS_PER_TENANT = 10
BATCH = 2000


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")) / 1024


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def chassis_of(k: int, i: int, names: list[str]) -> str:
    return names[(k + i % 2) % len(names)]


# ------------------------------------------------------------------------------------- bulk, in the store


def _batched(topo: Topology, rev: int, now: float, makers: list[Any]) -> list[Change]:
    """Several ops in one write: each one's changes applied to the model tentatively (so the next one sees
    its keys and addresses, as Apply does), all undone before returning (State.write applies them)."""
    log: list[Change] = []
    before = topo.revision
    try:
        for make in makers:
            changes = make(topo, rev, now)
            topo.apply(changes, rev)
            log += changes
    finally:
        topo.apply([(k, i, new, old) for k, i, old, new in reversed(log)], before)
    return log


def grow(data_dir: Path, names: list[str], upto: int) -> float:
    """Ports p0..p{upto-1} (and their networks, subnets, tenants' groups) in the store; seconds taken."""
    t0 = time.perf_counter()
    state = State(data_dir / "topology.sqlite")
    try:
        topo = state.topology
        nets = (upto + PER_NETWORK - 1) // PER_NETWORK
        for lo in range(0, nets, 200):

            def networks(t: Topology, rev: int, now: float, lo: int = lo) -> list[Change]:
                makers: list[Any] = []
                for k in range(lo, min(nets, lo + 200)):
                    if f"n{k}" in t.networks:
                        continue
                    tenant = f"t{k // NETWORKS_PER_TENANT}"
                    sub = Subnet(
                        id=f"s{k}", tenant=tenant, network_id=f"n{k}", cidr=f"10.{k // 256}.{k % 256}.0/24"
                    )
                    makers.append(
                        lambda t, r, n, k=k, tenant=tenant: ops.create_network(
                            t, Network(id=f"n{k}", tenant=tenant), r, n
                        )
                    )
                    makers.append(lambda t, r, n, sub=sub: ops.create_subnet(t, sub, False, r, n))
                    makers.append(
                        lambda t, r, n, tenant=tenant: ops_security.ensure_default_group(t, tenant, r, n)[1]
                    )
                return _batched(t, rev, now, makers)

            state.write(networks)
        have = len(topo.ports)
        for lo in range(have, upto, BATCH):

            def ports(t: Topology, rev: int, now: float, lo: int = lo) -> list[Change]:
                makers: list[Any] = []
                for i in range(lo, min(upto, lo + BATCH)):
                    k = i // PER_NETWORK
                    tenant = f"t{k // NETWORKS_PER_TENANT}"
                    port = Port(
                        id=f"p{i}",
                        tenant=tenant,
                        network_id=f"n{k}",
                        mac="",
                        binding_chassis=chassis_of(k, i, names),
                        security_groups=(t.default_groups[tenant],),
                    )
                    makers.append(
                        lambda t, r, n, port=port, k=k: ops.create_port(t, port, [(f"s{k}", "")], r, n)
                    )
                return _batched(t, rev, now, makers)

            state.write(ports)
    finally:
        state.close()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- the lab


def plug(env: Env, chassis: str, pairs: list[tuple[str, str]]) -> None:
    """OVS internal interfaces (name, iface-id) on `chassis`, in one transaction."""
    args: list[str] = []
    for name, iface in pairs:
        args += ["--", "add-port", "br-int", name, "--", "set", "Interface", name, "type=internal",
                 f"external_ids:iface-id={iface}"]  # fmt: skip
    if args:
        env.chassis(chassis).vsctl(*args[1:])


def reconnect(env: Env) -> None:
    env.channel = grpc.insecure_channel(env.controller.endpoint)
    env.stub = pb_grpc.TopologyServiceStub(env.channel)
    env.dp = dpb_grpc.DataplaneServiceStub(env.channel)


def restart(env: Env) -> dict[str, float]:
    """Stop the controller (SIGTERM) if running, start it: seconds to the API answering, to every chassis
    connected and realized."""
    if env.controller.proc is not None and env.controller.proc.poll() is None:
        env.controller.kill(signal.SIGTERM)
    t0 = time.perf_counter()
    env.controller.start(timeout=900)
    serving = time.perf_counter() - t0
    reconnect(env)
    env.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=env.admin, timeout=600)
    answering = time.perf_counter() - t0
    while True:
        st = env.status()
        if len(st) and all(s.connected for s in st.values()):
            break
        time.sleep(0.1)
    for _ in range(4):  # WaitRealized waits 300 s at most
        resp = env.dp.WaitRealized(
            dpb.WaitRealizedRequest(timeout=duration_pb2.Duration(seconds=300)),
            metadata=env.admin,
            timeout=310,
        )
        if resp.realized:
            break
    assert resp.realized, resp
    return {"serving": serving, "answering": answering, "realized": time.perf_counter() - t0}


def measure(env: Env, names: list[str], nets: int, tag: str, samples: int) -> list[float]:
    out = []
    for i in range(samples):
        k = (i * 7) % nets
        ch = chassis_of(k, 0, names)
        t0 = time.perf_counter()
        port = env.stub.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(network=f"networks/n{k}", binding_chassis=f"chassis/{ch}"),
                port_id=f"m-{tag}-{i}",
            ),
            metadata=env.admin,
        )
        resp = env.dp.WaitRealized(
            dpb.WaitRealizedRequest(revision=port.revision, timeout=duration_pb2.Duration(seconds=60)),
            metadata=env.admin,
        )
        if not resp.realized:
            raise RuntimeError(f"revision {port.revision} not realized: {resp}")
        out.append(time.perf_counter() - t0)
    return out


def plug_samples(env: Env, names: list[str], nets: int, tag: str, samples: int, short: str) -> None:
    per: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for i in range(samples):
        k = (i * 7) % nets
        per[chassis_of(k, 0, names)].append((f"{short}{i}", f"m-{tag}-{i}"))
    for ch, pairs in per.items():
        plug(env, ch, pairs)


# ------------------------------------------------------------------------------------------- profiling

CATEGORIES = (  # first match wins, checked from the innermost frame outwards
    ("encoding", ("flows/encode.py",)),
    ("diff / sync plan", ("southbound/plan.py", "southbound/sync", "southbound/engine")),
    ("OpenFlow send / receive", ("southbound/", "os_ken", "ryu", "ssl.py", "socket")),
    ("compile", ("apps/", "flows/flow.py", "flows/pipeline.py", "flows/actions.py")),
    ("store (SQLite, commit)", ("topology/store.py", "sqlite3")),
    ("model (ops, apply, indices)", ("topology/",)),
    ("API (gRPC servicer, auth, convert)", ("controller/api/", "grpc")),
    ("dataplane glue", ("controller/dataplane.py", "controller/")),
)


def summarize(raw: Path) -> tuple[dict[str, int], list[tuple[str, int]], int]:
    """py-spy's raw (collapsed) stacks: samples per category (innermost known frame), top leaf functions."""
    cats: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] += count
        cat = "other"
        for frame in reversed(frames):
            hit = next((c for c, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if hit is not None:
                cat = hit
                break
        cats[cat] += count
    return dict(cats), leaves.most_common(15), total


def profiled_round(env: Env, names: list[str], nets: int, samples: int, out: Path) -> Path | None:
    spy = ROOT / ".venv" / "bin" / "py-spy"
    if not spy.exists():
        print("py-spy not installed in .venv: no profile (pip install py-spy)")
        return None
    plug_samples(env, names, nets, "prof", samples, "mp")
    time.sleep(1)
    assert env.controller.proc is not None
    raw = out / "pyspy.raw"
    proc = subprocess.Popen(
        [
            str(spy),
            "record",
            "-p",
            str(env.controller.proc.pid),
            "-f",
            "raw",
            "-o",
            str(raw),
            "-r",
            "250",
            "--gil",
            "--nonblocking",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    t0 = time.perf_counter()
    measure(env, names, nets, "prof", samples)
    took = time.perf_counter() - t0
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    print(f"  profiled round: {samples} CreatePort -> realized in {took:.1f} s under py-spy")
    return raw if raw.exists() else None


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--chassis", type=int, default=4)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plugged", type=int, default=50, help="bulk ports plugged per chassis")
    ap.add_argument("--profile-samples", type=int, default=100)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        lab_env(Path(tmp), chassis=args.chassis, provider=False, tls=False, self_check=False) as env,
    ):
        names = sorted(env.lab.chassis)
        data = env.controller.data_dir
        env.controller.kill(signal.SIGTERM)
        results: dict[int, dict[str, Any]] = {}
        plugged: set[int] = set()
        for size, tag in ((args.small, "s"), (args.ports, "l")):
            grow_s = grow(data, names, size)
            nets = (size + PER_NETWORK - 1) // PER_NETWORK
            # the bulk's plugged ports: the first `plugged` of each chassis
            per: dict[str, list[int]] = collections.defaultdict(list)
            for i in range(size):
                ch = chassis_of(i // PER_NETWORK, i, names)
                if len(per[ch]) < args.plugged:
                    per[ch].append(i)
            for ch, idx in per.items():
                plug(env, ch, [(f"b{i}", f"p{i}") for i in idx if i not in plugged])
                plugged.update(idx)
            starts = [restart(env)]
            rss_loaded = rss_mb(env.controller.proc.pid)  # type: ignore[union-attr]
            rounds = []
            for r in range(args.rounds):
                plug_samples(env, names, nets, f"{tag}{r}", args.samples, f"m{tag}{r}x")
                time.sleep(1)
                rounds.append(measure(env, names, nets, f"{tag}{r}", args.samples))
                print(
                    f"  {size} ports, round {r}: p50 {pct(rounds[-1], 50) * 1e3:.1f} ms, "
                    f"p99 {pct(rounds[-1], 99) * 1e3:.1f} ms (load {os.getloadavg()[0]:.1f})"
                )
            st = env.status()
            results[size] = {
                "grow_s": grow_s,
                "start": starts[0],
                "rss": rss_loaded,
                "rss_after": rss_mb(env.controller.proc.pid),  # type: ignore[union-attr]
                "vswitchd": {ch: rss_mb(env.chassis(ch).vswitchd_pid() or 0) for ch in names},
                "flows": {ch: st[ch].installed_flows for ch in names},
                "rounds": rounds,
            }
            print(
                f"{size} ports: built in {grow_s:.1f} s; start: API {starts[0]['serving']:.2f} s, "
                f"realized {starts[0]['realized']:.2f} s; controller RSS {rss_loaded:.0f} MB; "
                f"flows per chassis {results[size]['flows']}; vswitchd RSS MB {results[size]['vswitchd']}"
            )
        raw = profiled_round(
            env, names, (args.ports + PER_NETWORK - 1) // PER_NETWORK, args.profile_samples, Path(tmp)
        )
        print(f"\nload average at the end: {os.getloadavg()}")
        small, large = results[args.small], results[args.ports]
        print("\nCreatePort -> WaitRealized, per round (ms): p50 / p99")
        for size in (args.small, args.ports):
            rs = results[size]["rounds"]
            p50s = sorted(pct(r, 50) * 1e3 for r in rs)
            p99s = sorted(pct(r, 99) * 1e3 for r in rs)
            print(
                f"  {size:7d} ports: p50 min/median/max {p50s[0]:.1f} / {statistics.median(p50s):.1f} / "
                f"{p50s[-1]:.1f}   p99 {p99s[0]:.1f} / {statistics.median(p99s):.1f} / {p99s[-1]:.1f}"
            )
        all_s = [x for r in small["rounds"] for x in r]
        all_l = [x for r in large["rounds"] for x in r]
        print(
            f"  all rounds pooled: p50 {pct(all_s, 50) * 1e3:.1f} -> {pct(all_l, 50) * 1e3:.1f} ms "
            f"(ratio {pct(all_l, 50) / pct(all_s, 50):.2f}), p99 {pct(all_s, 99) * 1e3:.1f} -> "
            f"{pct(all_l, 99) * 1e3:.1f} ms (ratio {pct(all_l, 99) / pct(all_s, 99):.2f}; goal <= 1.5, p50 <= 5 ms)"
        )
        per10k = (large["rss"] - small["rss"]) / ((args.ports - args.small) / 10_000)
        print(
            f"controller RSS: {small['rss']:.0f} MB at {args.small} ports, {large['rss']:.0f} MB at {args.ports} "
            f"(after the rounds {large['rss_after']:.0f} MB): {per10k:.1f} MB per 10k ports"
        )
        print(f"ovs-vswitchd RSS per chassis (MB): small {small['vswitchd']}, large {large['vswitchd']}")
        print(f"flows per chassis: small {small['flows']}, large {large['flows']}")
        for size in (args.small, args.ports):
            s = results[size]["start"]
            print(
                f"start at {size} ports: API serving {s['serving']:.2f} s, answering {s['answering']:.2f} s, "
                f"every chassis realized {s['realized']:.2f} s"
            )
        if raw is not None:
            cats, leaves, total = summarize(raw)
            print(f"\npy-spy at {args.ports} ports ({total} samples holding the GIL, 250/s):")
            for cat, n in sorted(cats.items(), key=lambda kv: -kv[1]):
                print(f"  {cat:36s} {100 * n / total:5.1f}%")
            print("  top leaf functions:")
            for fn, n in leaves:
                print(f"    {100 * n / total:5.1f}%  {fn}")
            keep = Path("/tmp/ports100k-pyspy.raw")
            keep.write_bytes(raw.read_bytes())
            print(f"  (the raw stacks: {keep})")


if __name__ == "__main__":
    main()
