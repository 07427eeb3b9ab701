#!/usr/bin/env python3
"""A whole topology at once, with real switches (needs root): N chassis (real ovs-vswitchd in namespaces),
M ports as OVS internal interfaces with an iface-id (no VM namespace each), plugged before the topology
exists; then the topology (networks of 50 ports, a subnet each, one router with an interface on each) is
built either by ONE Apply or by one call per object from 8 clients. Reported per way: time until converged
(every port ACTIVE and WaitRealized), the controller's CPU seconds and RSS, the switches' CPU seconds (all
ovs-vswitchd together), flows per chassis. Each way runs
in a fresh lab and controller; rounds alternate the two ways.

    sudo .venv/bin/python bench/bench_scale.py [--chassis 2] [--ports 600] [--rounds 2] [--clients 8]
        [--ways apply,calls] [--profile DIR] [--idle S]

`--profile DIR`: py-spy samples the controller (100/s, all threads, idle ones left out) from the first call
until converged; DIR/<way>-<round>.txt gets the collapsed stacks, and the top functions by own and by
inclusive samples are printed.

`--idle S`: after converging, S seconds more with nothing changing (after `--settle` seconds, default 5): the controller's and
the switches' CPU seconds per minute of idle, i.e. the periodic work (flow-counter polling, drift checks,
self-checks) at their configured intervals.
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
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from google.protobuf import duration_pb2, struct_pb2  # noqa: E402

from proto.sdn.v1 import apply_pb2 as apb  # noqa: E402
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc  # noqa: E402
from proto.sdn.v1 import dataplane_pb2 as dpb  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from tests.e2e import Env, lab_env  # noqa: E402

PER_NETWORK = 50
TICKS = os.sysconf("SC_CLK_TCK")


def document(ports: int) -> dict[str, Any]:
    nets = (ports + PER_NETWORK - 1) // PER_NETWORK
    return {
        "networks": [{"name": f"n{k}"} for k in range(nets)],
        "subnets": [{"name": f"s{k}", "network": f"networks/n{k}", "cidr": f"10.{k}.0.0/24"} for k in range(nets)],
        "ports": [
            {"name": f"p{i}", "network": f"networks/n{i // PER_NETWORK}",
             "fixed_ips": [{"subnet": f"subnets/s{i // PER_NETWORK}"}]}
            for i in range(ports)
        ],
        "routers": [{"name": "r", "interfaces": [{"subnet": f"subnets/s{k}"} for k in range(nets)]}],
    }  # fmt: skip


def plug_all(env: Env, ports: int) -> None:
    """Port p{i} as an internal interface on chassis i mod N, iface-id set: bound once its port exists."""
    names = sorted(env.lab.chassis)
    for c, name in enumerate(names):
        args: list[str] = []
        for i in range(c, ports, len(names)):
            args += ["--", "add-port", "br-int", f"sp{i}", "--", "set", "Interface", f"sp{i}", "type=internal",
                     f"external_ids:iface-id=p{i}"]  # fmt: skip
        if args:
            env.chassis(name).vsctl(*args[1:])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")) / 1024


def converged(env: Env, md: Any, ports: int, t0: float, timeout: float = 600.0) -> tuple[float, float]:
    """Seconds from t0 until every port is ACTIVE, and until the switches then realized the model."""
    while True:
        active, token = 0, ""
        while True:
            resp = env.stub.ListPorts(pb.ListPortsRequest(page_size=1000, page_token=token), metadata=md)
            active += sum(1 for p in resp.ports if p.status == pb.Port.ACTIVE and not p.device_owner)
            token = resp.next_page_token
            if not token:
                break
        if active >= ports:
            break
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{active}/{ports} ports ACTIVE after {timeout} s")
        time.sleep(0.05 if ports <= 1000 else 0.5)  # a 10k-port listing is ten pages: poll it less often
    active_at = time.monotonic() - t0
    resp = env.dp.WaitRealized(
        dpb.WaitRealizedRequest(timeout=duration_pb2.Duration(seconds=120)), metadata=env.admin, timeout=130
    )
    assert resp.realized, resp
    return active_at, time.monotonic() - t0


def by_apply(env: Env, md: Any, doc: dict[str, Any]) -> None:
    request = apb.ApplyRequest(document=struct_pb2.Struct())
    request.document.update(doc)
    done = apb_grpc.ApplyServiceStub(env.channel).Apply(request, metadata=md, timeout=300)
    assert done.applied


def by_calls(env: Env, md: Any, doc: dict[str, Any], clients: int) -> None:
    """One call per object, `clients` threads per phase (networks, subnets, router and interfaces, ports)."""

    def parallel(items: list[Any], call: Any) -> None:
        lock = threading.Lock()
        it = iter(items)
        errors: list[grpc.RpcError] = []

        def worker() -> None:
            channel = grpc.insecure_channel(env.controller.endpoint)
            stub = pb_grpc.TopologyServiceStub(channel)
            try:
                while True:
                    with lock:
                        item = next(it, None)
                    if item is None:
                        return
                    call(stub, item)
            except grpc.RpcError as err:  # reported after the join
                errors.append(err)
            finally:
                channel.close()

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    parallel(
        doc["networks"],
        lambda s, n: s.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(), network_id=n["name"]), metadata=md
        ),
    )
    parallel(
        doc["subnets"],
        lambda s, x: s.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=x["network"], cidr=x["cidr"]), subnet_id=x["name"]
            ),
            metadata=md,
        ),
    )
    env.stub.CreateRouter(pb.CreateRouterRequest(router=pb.Router(), router_id="r"), metadata=md)
    parallel(
        doc["routers"][0]["interfaces"],
        lambda s, i: s.AddRouterInterface(
            pb.AddRouterInterfaceRequest(name="routers/r", subnet=i["subnet"]), metadata=md
        ),
    )
    parallel(
        doc["ports"],
        lambda s, p: s.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(
                    network=p["network"], fixed_ips=[pb.FixedIp(subnet=p["fixed_ips"][0]["subnet"])]
                ),
                port_id=p["name"],
            ),
            metadata=md,
        ),
    )


def summarize_profile(path: Path, top: int = 25) -> None:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, num = line.rpartition(" ")
        if not stack:
            continue
        count = int(num)
        frames = [f.split(" (")[0] + " " + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] if " (" in f else f
                  for f in stack.split(";")[1:]]  # fmt: skip
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"profile {path.name}: {total} samples")
    for title, counter in (("own", own), ("inclusive", incl)):
        print(f"  top by {title}:")
        for name, n in counter.most_common(top):
            print(f"    {100 * n / max(total, 1):5.1f}%  {name}")


def one(
    way: str,
    chassis: int,
    ports: int,
    clients: int,
    profile: Path | None = None,
    timeout: float = 600.0,
    idle: float = 0.0,
    extra_args: list[str] | None = None,
    settle: float = 5.0,
) -> dict[str, Any]:
    doc = document(ports)
    objects = sum(len(v) for v in doc.values()) + len(doc["routers"][0]["interfaces"])
    with tempfile.TemporaryDirectory() as tmp, lab_env(Path(tmp), chassis=chassis, provider=False, extra_args=extra_args,
                                                      self_check=False) as env:  # fmt: skip
        md = env.md("scale")
        plug_all(env, ports)
        env.wait_realized()
        assert env.controller.proc is not None
        pid = env.controller.proc.pid
        switches = [p for p in (ch.vswitchd_pid() for ch in env.lab.chassis.values()) if p is not None]
        cpu0 = cpu_s(pid)
        ovs0 = sum(cpu_s(p) for p in switches)
        spy = None
        if profile is not None:
            py_spy = Path(sys.executable).parent / "py-spy"
            spy = subprocess.Popen(
                [str(py_spy), "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--nonblocking",
                 "--output", str(profile), "--threads"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)  # py-spy attached
        t0 = time.monotonic()
        if way == "apply":
            by_apply(env, md, doc)
        else:
            by_calls(env, md, doc, clients)
        written = time.monotonic() - t0
        active, took = converged(env, md, ports, t0, timeout)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        cpu = cpu_s(pid) - cpu0
        ovs = sum(cpu_s(p) for p in switches) - ovs0
        status = env.status()
        flows = {name: st.installed_flows for name, st in sorted(status.items())}
        idle_cpu = idle_ovs = 0.0
        if idle > 0:
            time.sleep(settle)  # what converging left running (status writes, the last bundles) settles
            c0, o0 = cpu_s(pid), sum(cpu_s(p) for p in switches)
            time.sleep(idle)
            idle_cpu = (cpu_s(pid) - c0) * 60.0 / idle
            idle_ovs = (sum(cpu_s(p) for p in switches) - o0) * 60.0 / idle
        return {
            "idle_cpu": idle_cpu,
            "idle_ovs": idle_ovs,
            "way": way,
            "calls": 1 if way == "apply" else objects,
            "written": written,
            "active": active,
            "converged": took,
            "cpu": cpu,
            "ovs": ovs,
            "rss": rss_mb(pid),
            "flows": flows,
        }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chassis", type=int, default=2)
    ap.add_argument("--ports", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ways", default="apply,calls", help="which ways to measure (comma-separated)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for convergence")
    ap.add_argument("--profile", type=Path, help="directory for py-spy profiles of the controller")
    ap.add_argument("--idle", type=float, default=0.0, help="seconds of idle after converging to measure")
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds after converging before the idle window"
    )
    ap.add_argument(
        "--controller-arg", action="append", default=[], help="one more controller argument (repeatable)"
    )
    a = ap.parse_args()
    print(
        f"scale: {a.chassis} chassis, {a.ports} ports ({PER_NETWORK} per network, one router), "
        f"{a.rounds} rounds, load average {os.getloadavg()[0]:.2f}"
        + (f", controller arguments {' '.join(a.controller_arg)}" if a.controller_arg else ""),
        flush=True,
    )
    ways = [w for w in ("apply", "calls") if w in a.ways.split(",")]
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    for r in range(a.rounds):
        for way in ways if r % 2 == 0 else ways[::-1]:
            prof = None
            if a.profile is not None:
                a.profile.mkdir(parents=True, exist_ok=True)
                prof = a.profile / f"{way}-{r + 1}.txt"
            res = one(way, a.chassis, a.ports, a.clients, prof, a.timeout, a.idle, a.controller_arg, a.settle)
            results[way].append(res)
            flows = ", ".join(f"{k} {v}" for k, v in res["flows"].items())
            print(
                f"round {r + 1} {way:<5} {res['calls']:4d} calls: written {res['written']:6.2f} s, "
                f"all ACTIVE {res['active']:6.2f} s, converged {res['converged']:6.2f} s, "
                f"controller CPU {res['cpu']:6.2f} s, ovs-vswitchd CPU {res['ovs']:6.2f} s, RSS {res['rss']:.0f} MB, "
                f"flows: {flows}  (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            if a.idle > 0:
                print(
                    f"  idle {a.idle:.0f} s: controller CPU {res['idle_cpu']:.2f} s per minute, "
                    f"ovs-vswitchd CPU (all) {res['idle_ovs']:.2f} s per minute (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
            if prof is not None and prof.exists():
                summarize_profile(prof)
    if a.idle > 0:
        for w, rs in results.items():
            for k, what in (("idle_cpu", "controller"), ("idle_ovs", "ovs-vswitchd")):
                v = sorted(x[k] for x in rs)
                print(
                    f"{w}: idle {what} CPU s per minute min / median / max: "
                    f"{v[0]:.2f} / {statistics.median(v):.2f} / {v[-1]:.2f}"
                )
    med = {w: statistics.median(x["converged"] for x in rs) for w, rs in results.items()}
    cpu = {w: statistics.median(x["cpu"] for x in rs) for w, rs in results.items()}
    if len(ways) < 2:
        print(f"median converged: {ways[0]} {med[ways[0]]:.2f} s, CPU {cpu[ways[0]]:.2f} s")
        return 0
    print(
        f"median converged: apply {med['apply']:.2f} s, calls ({a.clients} clients) {med['calls']:.2f} s, "
        f"apply / calls = {med['apply'] / med['calls']:.2f}; CPU apply / calls = {cpu['apply'] / cpu['calls']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
