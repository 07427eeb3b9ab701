#!/usr/bin/env python3
"""Controller CPU with the chassis split between controllers (issue 14): one topology on N lab chassis
(real ovsdb-server + ovs-vswitchd each), driven by one controller, then by three sharing the same etcd;
each controller compiles only the chassis it masters. Printed, not pass/fail; needs root.

Per phase, the same commands through the first controller's API: build (networks, subnets, routers, ports
whose VIFs are plugged on the chassis round-robin, up to every port ACTIVE and WaitRealized), churn (ports
created and deleted), then idle. Each controller's CPU time (utime + stime from /proc/PID/stat) and the
part its compiler counted (sdn_compile_cpu_seconds_total: the compiling thread's CPU time; and
sdn_compile_units_total: the owner units it compiled, the work whatever the load) are read before and after
each step. Reported: per controller and summed, and the ratios three ÷ one.

    sudo .venv/bin/python bench/bench_ha_compile.py [--chassis 10] [--ports 600] [--runs 1]
    sudo .venv/bin/python bench/bench_ha_compile.py --quick
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from controller.pki import Pki  # noqa: E402
from controller.southbound.roles import assign  # noqa: E402
from lab import Lab  # noqa: E402
from lab.etcd import EtcdCluster  # noqa: E402
from proto.sdn.v1 import dataplane_pb2 as dpb  # noqa: E402
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import ControllerProcess  # noqa: E402
from tests.e2e import register_chassis  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PORTS_PER_NET = 30


def cpu_s(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def compile_cpu(ctl: ControllerProcess) -> tuple[float, float]:
    """The controller's own count of CPU seconds spent compiling and of owner units compiled."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{ctl.metrics_port}/metrics", timeout=10).read().decode()
    out = []
    for name in ("sdn_compile_cpu_seconds_total", "sdn_compile_units_total"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        out.append(float(m.group(1)) if m else 0.0)
    return out[0], out[1]


def even_ids(chassis: list[str], n: int) -> list[str]:
    """n controller ids the rendezvous hash splits the chassis between as evenly as it can."""
    best: tuple[int, list[str]] = (10**9, [])
    for i in range(300):
        ids = [f"ctl{k}-{i}" for k in range(n)]
        counts = [list(assign(chassis, ids).values()).count(c) for c in ids]
        spread = max(counts) - min(counts)
        if spread < best[0]:
            best = (spread, ids)
        if spread <= 1:
            break
    return best[1]


def plug(lab: Lab, nets: int, per_net: int) -> dict[str, str]:
    """Every port's VIF (an internal port with its iface-id) on a chassis, round-robin; port id -> chassis."""
    chassis = sorted(lab.chassis)
    where: dict[str, list[str]] = {c: [] for c in chassis}
    out = {}
    for n in range(nets):
        for i in range(per_net):
            pid = f"p{n}-{i}"
            ch = chassis[(n * per_net + i) % len(chassis)]
            where[ch].append(pid)
            out[pid] = ch
    for ch, pids in where.items():
        args: list[str] = []
        for k, pid in enumerate(pids):
            name = f"v{k}"
            args += [
                "--may-exist",
                "add-port",
                "br-int",
                name,
                "--",
                "set",
                "Interface",
                name,
                "type=internal",
            ]
            args += [f"external_ids:iface-id={pid}", "--"]
        lab.chassis[ch].vsctl(*args[:-1])
    return out


def clear_switches(lab: Lab) -> None:
    for ch in lab.chassis.values():
        ch.del_controller()
        ch.ofctl("del-flows", "br-int")
        ch.ofctl("-O", "OpenFlow13", "del-groups", "br-int", check=False)


class Phase:
    def __init__(self, lab: Lab, etcd: EtcdCluster, authority: Pki, tmp: Path, ids: list[str], prefix: str):
        self.lab = lab
        self.ctls = {c: ControllerProcess(tmp / c) for c in ids}
        targets = {c: f"ssl:{lab.mgmt_ip}:{p.of_port}" for c, p in self.ctls.items()}
        for c, p in self.ctls.items():
            p.self_check_every_change = False
            p.of_host = lab.mgmt_ip
            p.extra_args = [
                "--switch-target", targets[c], "--pki-dir", str(authority.root), "--datapath-type", "netdev",
                "--store", "etcd", "--etcd-endpoints", etcd.endpoints[0], "--etcd-prefix", prefix,
                "--switch-targets", ",".join(targets.values()), "--controller-id", c,
                "--self-check-interval-s", "0", "--stats-interval-s", "0", "--dashboard-listen", "",
                "--log-level", os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            ]  # fmt: skip
        self.first = ids[0]

    def start(self) -> None:
        for p in self.ctls.values():
            p.start()
        ctl = self.ctls[self.first]
        self.stub = pb_grpc.TopologyServiceStub(grpc.insecure_channel(ctl.endpoint))
        self.dp = dpb_grpc.DataplaneServiceStub(grpc.insecure_channel(ctl.endpoint))
        self.md = (("authorization", f"Bearer {ctl.admin_token()}"),)

    def cpu(self) -> dict[str, tuple[float, float, float]]:
        """Each controller's (process CPU, compile CPU) seconds and owner units compiled so far."""
        return {c: (cpu_s(p.proc.pid), *compile_cpu(p)) for c, p in self.ctls.items() if p.proc is not None}

    def wait_realized(self, timeout: float = 600.0) -> None:
        rev = self.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=self.md).revision
        deadline = time.monotonic() + timeout
        while True:
            got = self.dp.WaitRealized(dpb.WaitRealizedRequest(revision=rev), metadata=self.md, timeout=60)
            if got.realized and len(got.chassis) == len(self.lab.chassis):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not realized: {got}")

    def wait_active(self, n: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ports = self.stub.ListPorts(pb.ListPortsRequest(page_size=10000), metadata=self.md).ports
            active = sum(1 for p in ports if p.status == pb.Port.ACTIVE)
            if active >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{active} of {n} ports active")
            time.sleep(0.5)

    def wait_connected(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.dp.ListChassisStatus(dpb.ListChassisStatusRequest(), metadata=self.md).chassis
            if len(st) == len(self.lab.chassis) and all(s.connected and s.ovsdb_ready for s in st):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"chassis not connected: {st}")
            time.sleep(0.2)

    def stop(self) -> None:
        for p in self.ctls.values():
            p.stop()


def build(ph: Phase, nets: int, per_net: int) -> None:
    s, md = ph.stub, ph.md
    for n in range(nets):
        net = s.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id=f"n{n}"), metadata=md)
        s.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=net.name, cidr=f"10.{n}.0.0/24"), subnet_id=f"s{n}"
            ),
            metadata=md,
        )
    for r in range(nets // 2):
        s.CreateRouter(pb.CreateRouterRequest(router=pb.Router(), router_id=f"r{r}"), metadata=md)
        for n in (2 * r, 2 * r + 1):
            s.AddRouterInterface(
                pb.AddRouterInterfaceRequest(name=f"routers/r{r}", subnet=f"subnets/s{n}"), metadata=md
            )
    for n in range(nets):
        for i in range(per_net):
            s.CreatePort(
                pb.CreatePortRequest(port=pb.Port(network=f"networks/n{n}"), port_id=f"p{n}-{i}"), metadata=md
            )


def churn(ph: Phase, nets: int, count: int) -> None:
    s, md = ph.stub, ph.md
    for k in range(count):
        s.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=f"networks/n{k % nets}"), port_id=f"c{k}"), metadata=md
        )
    for k in range(count):
        s.DeletePort(pb.DeletePortRequest(name=f"ports/c{k}"), metadata=md)


def run_phase(
    lab: Lab,
    etcd: EtcdCluster,
    authority: Pki,
    tmp: Path,
    ids: list[str],
    prefix: str,
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    clear_switches(lab)
    ph = Phase(lab, etcd, authority, tmp / prefix.strip("/"), ids, prefix)
    nets = args.ports // PORTS_PER_NET
    try:
        ph.start()
        for ch in lab.chassis.values():
            register_chassis(ph.stub, ph.md, ch)
        ph.wait_connected()
        print("  chassis connected", flush=True)
        time.sleep(2.0)  # every controller has its chassis (ownership rounds) and is idle
        out: dict[str, dict[str, float]] = {}
        c0 = ph.cpu()
        t0 = time.monotonic()
        build(ph, nets, PORTS_PER_NET)
        print("  built", flush=True)
        ph.wait_active(nets * PORTS_PER_NET)
        print("  ports active", flush=True)
        ph.wait_realized()
        c1 = ph.cpu()
        t1 = time.monotonic()
        churn(ph, nets, args.churn)
        ph.wait_realized()
        c2 = ph.cpu()
        t2 = time.monotonic()
        time.sleep(args.idle_s)
        c3 = ph.cpu()
        for c in ids:
            out[c] = {
                "build": c1[c][0] - c0[c][0],
                "churn": c2[c][0] - c1[c][0],
                "idle": c3[c][0] - c2[c][0],
                "build compile": c1[c][1] - c0[c][1],
                "churn compile": c2[c][1] - c1[c][1],
                "build units": c1[c][2] - c0[c][2],
                "churn units": c2[c][2] - c1[c][2],
            }
        print(
            f"  {len(ids)} controller(s): build {t1 - t0:.1f} s wall, churn {t2 - t1:.1f} s wall; "
            + "; ".join(f"{c}: " + ", ".join(f"{k} {v:.1f}" for k, v in d.items()) for c, d in out.items()),
            flush=True,
        )
        return out
    finally:
        ph.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chassis", type=int, default=10)
    ap.add_argument("--ports", type=int, default=600)
    ap.add_argument("--churn", type=int, default=100, help="ports created then deleted after the build")
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.chassis, args.ports, args.churn, args.idle_s = 3, 60, 10, 2.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-ha-"))
    authority = Pki(tmp / "pki")
    authority.init()
    names = [f"hv{i}" for i in range(1, args.chassis + 1)]
    three = even_ids(names, 3)
    split = {c: sorted(ch for ch, o in assign(names, three).items() if o == c) for c in three}
    print(
        f"{args.chassis} chassis, {args.ports} ports, 3 controllers' split: {[len(v) for v in split.values()]}"
    )
    results: list[tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]] = []
    with EtcdCluster(tmp / "etcd") as etcd, Lab(pki=authority) as lab:
        for ch in names:
            lab.add_chassis(ch)
        plug(lab, args.ports // PORTS_PER_NET, PORTS_PER_NET)
        for run in range(args.runs):
            one = run_phase(lab, etcd, authority, tmp, ["solo"], f"/bench-{run}-one/", args)
            many = run_phase(lab, etcd, authority, tmp, three, f"/bench-{run}-three/", args)
            results.append((one, many))
    for step in ("build", "build compile", "build units", "churn", "churn compile", "churn units", "idle"):
        for one, many in results:
            single = one["solo"][step]
            per = [many[c][step] for c in three]
            what, f = ("units", "{:.0f}") if "units" in step else ("s CPU", "{:.1f}")
            print(
                f"{step}: one controller {f.format(single)} {what}; three: "
                + " / ".join(f.format(v) for v in per)
                + f" (sum {f.format(sum(per))}) {what}; sum ÷ one {sum(per) / max(single, 1e-9):.2f}, "
                f"each ÷ one {' / '.join(f'{v / max(single, 1e-9):.2f}' for v in per)}"
            )


if __name__ == "__main__":
    main()
