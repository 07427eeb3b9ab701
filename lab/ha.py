"""Several controllers on one etcd cluster, on a lab: what `python -m lab.demo --controllers 3` and
bench/bench_ha.py run (README "Several controllers: OpenFlow roles and failover").

    ha = HaCluster(lab, pki_dir, workdir, controllers=3)   # a 3-member etcd cluster, 3 controller processes
    ha.start()                                             # every controller given every etcd endpoint
    ha.owners()                                            # chassis -> its master's id, as etcd holds it
    result = kill_master(ha, "hv1", vm, "10.0.0.12")       # kill -9 under a ping and a writer: what was lost

Each controller is `run_controller.py` with its own data directory (tokens, lock), OpenFlow and API ports,
its log in DATA/controller.log; they share the CA (`--pki-dir`) and list each other as the switches'
targets (`--switch-targets`). Processes are stopped by the pids this module started.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from controller.southbound.roles import assign
from lab.etcd import EtcdCluster, free_port
from lab.hosts import VM
from lab.lab import Lab
from lab.proc import READY_POLL_OPTIONS
from lab.traffic import Pinger
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from topology.etcd_store import EtcdConfig, EtcdStore

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/sdn/v1/"


class Controller:
    """One controller process of the set, restartable on the same ports and data directory."""

    def __init__(self, controller_id: str, data_dir: Path, of_host: str, args: list[str]) -> None:
        self.controller_id = controller_id
        self.data_dir = data_dir
        self.of_host = of_host
        self.of_port = free_port()
        self.grpc_listen = f"127.0.0.1:{free_port()}"
        self.metrics_port = free_port()  # its own engines' counters (ListChassisStatus shows the master's)
        self.args = args  # more arguments (set before start)
        self.log = data_dir / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None

    @property
    def target(self) -> str:
        return f"ssl:{self.of_host}:{self.of_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "run_controller.py"),
                    "--data-dir",
                    str(self.data_dir),
                    "--grpc-listen",
                    self.grpc_listen,
                    "--openflow-listen",
                    f"{self.of_host}:{self.of_port}",
                    "--switch-target",
                    self.target,
                    "--controller-id",
                    self.controller_id,
                    *self.args,
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        channel = grpc.insecure_channel(self.grpc_listen, options=READY_POLL_OPTIONS)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"controller {self.controller_id} exited: {self.tail()}")
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"controller {self.controller_id} did not start") from None
        finally:
            channel.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def admin_token(self) -> str:
        tokens = json.loads((self.data_dir / "tokens.json").read_text())["tokens"]
        return next(t for t, v in tokens.items() if v["admin"])

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_token()}"),)

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_listen)
        return self._channel

    def topology(self) -> pb_grpc.TopologyServiceStub:
        return pb_grpc.TopologyServiceStub(self.channel())

    def engine_counters(self, chassis: str) -> dict[str, float]:
        """This controller's own engine counters for `chassis` from its /metrics: resyncs, flow-mods and
        group-mods sent (ListChassisStatus answers what the chassis's master published, on every
        controller, so it cannot tell which controller did the work)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        out = {}
        for name in ("sdn_resyncs_total", "sdn_flow_mods_sent_total", "sdn_group_mods_sent_total"):
            m = re.search(rf'^{name}{{chassis="{chassis}"}} (\S+)$', text, re.M)
            out[name] = float(m.group(1)) if m else 0.0
        return out

    def chassis_status(self) -> dict[str, dpb.ChassisStatus]:
        dp = dpb_grpc.DataplaneServiceStub(self.channel())
        got = dp.ListChassisStatus(dpb.ListChassisStatusRequest(), metadata=self.admin, timeout=10)
        return {c.chassis.split("/")[1]: c for c in got.chassis}


def spread_ids(chassis: Iterable[str], controllers: int) -> list[str]:
    """`controllers` ids among ctl-1..ctl-9 (the first such set in order) that the hash gives as many
    different masters as it can: with 2 chassis and 3 controllers, each chassis its own (a demo that kills
    the master of each chassis then kills two controllers, not the same one twice)."""
    chassis = sorted(chassis)
    want = min(len(chassis), controllers)
    pool = [f"ctl-{i}" for i in range(1, max(10, controllers + 1))]
    for ids in itertools.combinations(pool, controllers):
        if len(set(assign(chassis, ids).values())) >= want:
            return list(ids)
    return pool[:controllers]


class HaCluster:
    """An etcd cluster of `etcd_members` and `controllers` controllers sharing it, for the chassis of `lab`."""

    def __init__(
        self,
        lab: Lab,
        pki_dir: Path,
        workdir: Path,
        controllers: int = 3,
        etcd_members: int = 3,
        lease_s: float = 3.0,
        args: list[str] | None = None,
    ) -> None:
        self.lab = lab
        self.workdir = workdir
        self.etcd = EtcdCluster(workdir / "etcd", members=etcd_members)
        self.controllers = {
            cid: Controller(cid, workdir / cid, lab.mgmt_ip, [])
            for cid in spread_ids(lab.chassis, controllers)
        }
        targets = ",".join(c.target for c in self.controllers.values())
        endpoints = self.etcd.endpoints
        for i, ctl in enumerate(self.controllers.values()):
            mine = endpoints[i % len(endpoints) :] + endpoints[: i % len(endpoints)]  # each starts elsewhere
            ctl.args = [
                "--store", "etcd", "--etcd-endpoints", ",".join(mine), "--switch-targets", targets,
                "--pki-dir", str(pki_dir), "--datapath-type", "netdev", "--vswitchd-ctl-dir", str(lab.workdir),
                "--ownership-lease-s", str(lease_s), "--metrics-listen", f"127.0.0.1:{ctl.metrics_port}",
                "--dashboard-listen", "", "--neutron-listen", "",
                *(args or []),
            ]  # fmt: skip
        self._store: EtcdStore | None = None

    def start(self) -> HaCluster:
        self.etcd.start()
        for ctl in self.controllers.values():
            ctl.start()
        self._store = EtcdStore(EtcdConfig(tuple(self.etcd.endpoints), PREFIX, timeout_s=1.0))
        return self

    def close(self) -> None:
        for ctl in self.controllers.values():
            ctl.stop()
        if self._store is not None:
            self._store.close()
        self.etcd.stop()

    @property
    def first(self) -> Controller:
        return next(iter(self.controllers.values()))

    def owners(self) -> dict[str, str]:
        """chassis id -> the controller id holding its owner key in etcd (its master)."""
        assert self._store is not None
        _rev, kvs = self._store.range_prefix(f"{PREFIX}ha/owner/".encode())
        return {key.decode().rpartition("/")[2]: value.decode() for key, value, _created in kvs}

    def live(self) -> list[str]:
        return [c for c, ctl in self.controllers.items() if ctl.running]

    def wait_settled(self, timeout: float = 30.0) -> dict[str, str]:
        """Until every chassis has the master the hash gives it among the running controllers."""
        want = assign(self.lab.chassis, self.live())
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.owners()
            except OSError:
                got = {}
            if got == want:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"masters {got}, want {want}")
            time.sleep(0.05)


@dataclass
class KillResult:
    """What one kill -9 of a chassis's master cost."""

    chassis: str
    killed: str
    new_master: str = ""
    takeover_s: float = float("nan")  # kill -> the new master's owner key in etcd (it claims the switch then)
    adopted_s: float = float("nan")  # kill -> the new master's engine has adopted the switch
    flow_mods: int = -1  # flow-mods + group-mods the new master sent on taking over (0: adopted as is)
    pings_sent: int = 0
    pings_received: int = 0
    writes_acked: list[str] = field(default_factory=list)
    writes_refused: list[str] = field(default_factory=list)
    writes_lost: list[str] = field(default_factory=list)
    note: str = ""  # what the new master logged about the chassis, when it did not adopt it in time

    @property
    def lossless(self) -> bool:
        return (
            bool(self.new_master)
            and self.pings_sent > 0
            and self.pings_received == self.pings_sent
            and not self.writes_lost
            and self.flow_mods == 0
        )

    def line(self) -> str:
        return (
            f"kill -9 of {self.killed} (master of {self.chassis}): {self.new_master or 'NO NEW MASTER'} master "
            f"after {self.takeover_s:.2f} s, adopted the switch after {self.adopted_s:.2f} s with "
            f"{self.flow_mods} flow/group-mods; pings lost {self.pings_sent - self.pings_received} of "
            f"{self.pings_sent}; writes acknowledged {len(self.writes_acked)}, lost {len(self.writes_lost)}, "
            f"refused {len(self.writes_refused)}"
        )


class _Writer(threading.Thread):
    """Creates networks (writes that change no switch's flows) through `controllers` in turn, every 20 ms."""

    def __init__(self, controllers: list[Controller], tag: str) -> None:
        super().__init__(daemon=True)
        self.controllers = controllers
        self.tag = tag
        self.acked: list[str] = []
        self.refused: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            ctl = self.controllers[i % len(self.controllers)]
            ident = f"{self.tag}-{i}"
            i += 1
            try:
                ctl.topology().CreateNetwork(
                    pb.CreateNetworkRequest(network=pb.Network(), network_id=ident),
                    metadata=ctl.admin,
                    timeout=10,
                )
                self.acked.append(ident)
            except grpc.RpcError as err:
                self.refused.append(f"{ident} via {ctl.controller_id}: {err.code().name}")
            self.done.wait(0.02)


def network_ids(ctl: Controller) -> set[str]:
    """Every network id `ctl` lists (page after page: a page holds at most 1000)."""
    ids: set[str] = set()
    token = ""
    while True:
        got = ctl.topology().ListNetworks(
            pb.ListNetworksRequest(page_size=1000, page_token=token), metadata=ctl.admin, timeout=10
        )
        ids |= {n.name.split("/")[1] for n in got.networks}
        token = got.next_page_token
        if not token:
            return ids


def kill_master(
    ha: HaCluster, chassis: str, vm: VM, dst_ip: str, writes: bool = True, timeout: float = 20.0
) -> KillResult:
    """Kill -9 the master of `chassis` while `vm` pings `dst_ip` every 10 ms and (if `writes`) a thread writes
    through the other controllers; wait for a new master to adopt the switch; report what was lost. The
    killed controller stays down (restart it with `ha.controllers[id].start()`)."""
    owners = ha.owners()
    killed = owners[chassis]
    result = KillResult(chassis, killed)
    others = [c for cid, c in ha.controllers.items() if cid != killed and c.running]
    before = {c.controller_id: c.engine_counters(chassis) for c in others}
    writer = _Writer(others, f"w-{chassis}-{int(time.time() * 1000)}") if writes else None
    pinger = Pinger(vm, dst_ip)
    try:
        if writer is not None:
            writer.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        ha.controllers[killed].kill(signal.SIGKILL)
        deadline = t0 + timeout
        while not result.new_master:
            try:
                now = ha.owners().get(chassis)
            except OSError:
                now = None
            if now is not None and now != killed:
                result.new_master, result.takeover_s = now, time.monotonic() - t0
            elif time.monotonic() > deadline:
                break
            else:
                time.sleep(0.02)
        if result.new_master:
            new = ha.controllers[result.new_master]
            while True:
                st = new.chassis_status()[chassis]
                own = new.engine_counters(chassis)
                was = before[new.controller_id]
                if own["sdn_resyncs_total"] > was["sdn_resyncs_total"] and st.connected:
                    result.adopted_s = time.monotonic() - t0
                    result.flow_mods = int(
                        own["sdn_flow_mods_sent_total"]
                        - was["sdn_flow_mods_sent_total"]
                        + own["sdn_group_mods_sent_total"]
                        - was["sdn_group_mods_sent_total"]
                    )
                    break
                if time.monotonic() > deadline:
                    lines = [ln for ln in new.tail(200000).splitlines() if chassis in ln or "Traceback" in ln]
                    result.note = f"{new.controller_id} did not adopt {chassis} ({st}):\n" + "\n".join(
                        lines[-30:]
                    )
                    break
                time.sleep(0.05)
        time.sleep(1.0)  # the ping and the writes go on past the takeover
    finally:
        pings = pinger.stop()
        if writer is not None:
            writer.done.set()
            writer.join(timeout=30)
    result.pings_sent, result.pings_received = pings.sent, pings.received
    if writer is not None:
        result.writes_acked, result.writes_refused = writer.acked, writer.refused
        # every acknowledged write is in the survivors' model (each catches up from etcd's watch: a moment)
        deadline = time.monotonic() + 10
        for survivor in others:
            while True:
                have = network_ids(survivor)
                missing = [w for w in writer.acked if w not in have]
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            result.writes_lost = sorted(set(result.writes_lost) | set(missing))
    return result
