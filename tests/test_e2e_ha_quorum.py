"""Two controllers on a 3-member etcd cluster (each given all three endpoints), two chassis: etcd losing one
member (writes go on), then its quorum (writes refused UNAVAILABLE with details, reads answer, the masters
step down after lease - margin, the switches keep their flows and forward, never two masters), then the
quorum coming back (writes go on, an API Watch opened before resumes, each chassis has a master again, which
adopts with 0 flow-mods). README "Several controllers: OpenFlow roles and failover"."""

from __future__ import annotations

import datetime
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller.pki import Pki
from lab import VM, Lab
from lab.etcd import EtcdCluster
from lab.traffic import Pinger
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ControllerProcess
from tests.e2e import register_chassis
from tests.test_e2e_ha import CHASSIS, RoleSampler, _ids, _lost, _ping

pytestmark = pytest.mark.lab

LEASE_S = 3.0
MARGIN_S = 1.0


@dataclass
class Quorum:
    lab: Lab
    etcd: EtcdCluster
    ctls: dict[str, ControllerProcess]
    targets: dict[str, str]
    sampler: RoleSampler
    vms: dict[str, VM]

    def stub(self, ctl: str) -> pb_grpc.TopologyServiceStub:
        return pb_grpc.TopologyServiceStub(grpc.insecure_channel(self.ctls[ctl].endpoint))

    def admin(self, ctl: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.ctls[ctl].admin_token()}"),)

    def status(self, ctl: str) -> dict[str, dpb.ChassisStatus]:
        dp = dpb_grpc.DataplaneServiceStub(grpc.insecure_channel(self.ctls[ctl].endpoint))
        resp = dp.ListChassisStatus(dpb.ListChassisStatusRequest(), metadata=self.admin(ctl))
        return {c.chassis.split("/")[1]: c for c in resp.chassis}

    def owner(self, chassis: str) -> str | None:
        target = self.sampler.master(chassis)
        return next((c for c, t in self.targets.items() if t == target), None)

    def wait_masters(self, want: dict[str, str], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while {ch: self.owner(ch) for ch in want} != want:
            assert time.monotonic() < deadline, f"masters {[(c, self.owner(c)) for c in want]} != {want}"
            time.sleep(0.05)

    def write(self, ctl: str, ident: str, timeout: float = 10.0) -> pb.Network:
        """A write that changes no switch's flows: a network without ports."""
        return self.stub(ctl).CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(), network_id=ident),
            metadata=self.admin(ctl),
            timeout=timeout,
        )

    def networks(self, ctl: str) -> set[str]:
        got = self.stub(ctl).ListNetworks(pb.ListNetworksRequest(page_size=1000), metadata=self.admin(ctl))
        return {n.name.split("/")[1] for n in got.networks}

    def flows(self, chassis: str) -> list[str]:
        out = self.lab.chassis[chassis].ofctl("--no-stats", "dump-flows", "br-int")
        return sorted(ln.strip() for ln in out.splitlines() if "actions=" in ln)

    def log(self, ctl: str) -> str:
        return self.ctls[ctl].log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def q(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quorum]:
    tmp = tmp_path_factory.mktemp("e2e-ha-quorum")
    authority = Pki(tmp / "pki")
    authority.init()
    with EtcdCluster(tmp / "etcd", members=3) as etcd, Lab(pki=authority) as lab:
        for name in CHASSIS:
            lab.add_chassis(name)
        a, b = _ids()
        ctls = {a: ControllerProcess(tmp / a), b: ControllerProcess(tmp / b)}
        targets = {c: f"ssl:{lab.mgmt_ip}:{p.of_port}" for c, p in ctls.items()}
        # all three endpoints, in another order for each: they start on different members
        endpoints = {a: etcd.endpoints, b: etcd.endpoints[::-1]}
        for c, p in ctls.items():
            p.of_host = lab.mgmt_ip
            p.extra_args = [
                "--switch-target", targets[c], "--pki-dir", str(authority.root), "--datapath-type", "netdev",
                "--vswitchd-ctl-dir", str(lab.workdir), "--store", "etcd",
                "--etcd-endpoints", ",".join(endpoints[c]), "--switch-targets", ",".join(targets.values()),
                "--controller-id", c, "--ownership-lease-s", str(LEASE_S), "--ownership-margin-s", str(MARGIN_S),
            ]  # fmt: skip
        sampler = RoleSampler(lab)
        env = Quorum(lab, etcd, ctls, targets, sampler, {})
        try:
            ctls[a].start()
            stub, md = env.stub(a), env.admin(a)
            for ch in lab.chassis.values():
                register_chassis(stub, md, ch)
            ctls[b].start()
            net = stub.CreateNetwork(
                pb.CreateNetworkRequest(network=pb.Network(), network_id="q-net"), metadata=md
            )
            stub.CreateSubnet(
                pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.82.0.0/24")), metadata=md
            )
            for i, ch in enumerate(CHASSIS, 1):
                port = stub.CreatePort(
                    pb.CreatePortRequest(port=pb.Port(network=net.name), port_id=f"q-{i}"), metadata=md
                )
                env.vms[ch] = lab.chassis[ch].add_vm(
                    f"q-{i}", port.mac_address, f"{port.fixed_ips[0].ip_address}/24", iface_id=f"q-{i}",
                    mtu=net.mtu,
                )  # fmt: skip
            env.wait_masters({"hv1": a, "hv2": b})
            deadline = time.monotonic() + 20
            while not all(
                stub.GetPort(pb.GetPortRequest(name=f"ports/q-{i}"), metadata=md).status == pb.Port.ACTIVE
                for i in (1, 2)
            ):
                assert time.monotonic() < deadline, env.log(a) + env.log(b)
                time.sleep(0.1)
            # the first packet to a tunnel destination new to OVS can be lost while it resolves it
            assert env.vms["hv1"].ping(env.vms["hv2"].ip, count=1, timeout=10)
            yield env
        finally:
            sampler.stop()
            for p in ctls.values():
                p.stop()
        assert not sampler.violations, f"two masters: {sampler.violations[:5]}"
        for p in ctls.values():
            p.assert_no_divergence()


def _logged(ctl: ControllerProcess, text: str, after: float) -> float | None:
    """The wall-clock time of the first log line of `ctl` containing `text` at or after `after`."""
    for line in ctl.log.read_text(errors="replace").splitlines():
        if text in line:
            try:
                at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if at >= after - 0.01:
                return at
    return None


def _reason(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return str(info.reason)
    return ""


def test_etcd_losing_one_member_of_three_writes_go_on(q: Quorum) -> None:
    a, b = list(q.ctls)
    leader = q.etcd.leader()
    # a follower, the first endpoint of one of the controllers (its client moves on to the next)
    victim = 2 if leader == 0 else 0
    pinger = _ping(q.vms["hv1"], q.vms["hv2"].ip, 300)
    q.etcd.members[victim].kill()
    try:
        refused = []
        for i in range(10):
            for ctl in (a, b):
                try:
                    q.write(ctl, f"one-{ctl}-{i}")
                except grpc.RpcError as err:
                    refused.append(f"{ctl}: {err.code().name} {err.details()}")
        assert not refused, refused
        assert {ch: q.owner(ch) for ch in CHASSIS} == {"hv1": a, "hv2": b}
    finally:
        q.etcd.members[victim].start()
        q.etcd.members[victim].wait_healthy()
    sent, received = _lost(pinger)
    assert received == sent, f"lost {sent - received} of {sent}"
    assert not q.sampler.violations


def test_etcd_losing_its_quorum_then_getting_it_back(q: Quorum) -> None:
    a, b = list(q.ctls)
    q.wait_masters({"hv1": a, "hv2": b})
    before_flows = {ch: q.flows(ch) for ch in CHASSIS}
    before = {ch: q.status(q.owner(ch) or "")[ch] for ch in CHASSIS}
    revision = q.stub(b).GetServerInfo(pb.GetServerInfoRequest(), metadata=q.admin(b)).revision
    # an API Watch on b, opened before: it must go on after the quorum is back
    events: queue.Queue[pb.WatchEvent] = queue.Queue()
    watch = q.stub(b).Watch(pb.WatchRequest(start_revision=revision), metadata=q.admin(b))

    def read_watch() -> None:
        try:
            for ev in watch:
                events.put(ev)
        except grpc.RpcError:
            pass

    threading.Thread(target=read_watch, daemon=True).start()
    # a 10 ms ping across chassis for the whole outage, ended after it
    pinger = Pinger(q.vms["hv1"], q.vms["hv2"].ip)
    time.sleep(0.5)
    lost, lost_wall = time.monotonic(), time.time()
    down = [m for i, m in enumerate(q.etcd.members) if i != 1]  # the survivor: the middle one
    for m in down:
        m.kill()

    # writes: UNAVAILABLE STORE_UNAVAILABLE with etcd's answer. The first may meet the survivor before it
    # knows it lost the leader (it holds the request: the outcome is unknown, and such a write can indeed
    # commit when the quorum returns); once it knows, at once and surely not applied
    refused: dict[str, bool] = {}  # network id -> "may be applied"
    for i, ctl in enumerate((a, b, a)):
        if i == 2:
            deadline = time.monotonic() + 5
            while q.etcd.members[1].status().leader:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        t = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            q.write(ctl, f"refused-{i}", timeout=30)
        took = time.monotonic() - t
        err = info.value
        assert err.code() is grpc.StatusCode.UNAVAILABLE and _reason(err) == "STORE_UNAVAILABLE", err
        maybe = "may or may not be applied" in err.details()
        assert maybe or ("not applied" in err.details() and "no leader" in err.details()), err.details()
        if i == 2:
            assert not maybe and took < 1.0, (took, err.details())
        refused[f"refused-{i}"] = maybe
        print(f"\nwrite through {ctl} without quorum: refused after {took:.2f} s: {err.details()[:200]}")
    # reads answer from each controller's model
    for ctl in (a, b):
        ports = q.stub(ctl).ListPorts(pb.ListPortsRequest(page_size=1000), metadata=q.admin(ctl)).ports
        assert {"ports/q-1", "ports/q-2"} <= {p.name for p in ports}
        assert q.stub(ctl).GetPort(pb.GetPortRequest(name="ports/q-1"), metadata=q.admin(ctl)).status == (
            pb.Port.ACTIVE
        )
    # the masters step down once their lease may be gone (lease - margin after their last keepalive)
    for ctl in (a, b):
        deadline = time.monotonic() + LEASE_S + 5
        while (stepped := _logged(q.ctls[ctl], "stepping down from", lost_wall)) is None:
            assert time.monotonic() < deadline, q.log(ctl)
            time.sleep(0.1)
        # due lease - margin after the last keepalive etcd granted (<= the loss): before the lease can end
        assert stepped - lost_wall < LEASE_S, (ctl, stepped - lost_wall)
        print(f"{ctl} stepped down {stepped - lost_wall:.2f} s after etcd lost its quorum")
    # ... and the switches see no master (the role column is refreshed a few seconds late), keep every flow
    deadline = time.monotonic() + 15
    while any(q.sampler.master(ch) is not None for ch in CHASSIS):
        assert time.monotonic() < deadline, [q.sampler.read(ch) for ch in CHASSIS]
        time.sleep(0.1)
    for ch in CHASSIS:
        assert q.flows(ch) == before_flows[ch]
    assert q.vms["hv2"].ping(q.vms["hv1"].ip, count=3, timeout=5)  # both ways, no master anywhere
    headless = time.monotonic() - lost

    # the quorum comes back (one of the two): writes go on, the Watch resumes, one master per chassis
    back, back_wall = time.monotonic(), time.time()
    q.etcd.members[0].start()
    q.etcd.members[0].wait_healthy()
    deadline = time.monotonic() + 20
    acked = None
    while acked is None:
        try:
            acked = q.write(a, "after-quorum")
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, err
            time.sleep(0.2)
    writable = time.monotonic() - back
    q.wait_masters({"hv1": a, "hv2": b})
    for ch in CHASSIS:
        ctl = a if ch == "hv1" else b
        took = _logged(q.ctls[ctl], f"chassis {ch}: master", back_wall)
        assert took is not None, q.log(ctl)
        # the same generation: etcd's new leader extended the lease, the owner key is the one it had
        gens = re.findall(rf"chassis {ch}: master \(generation (\d+)\)", q.ctls[ctl].log.read_text())
        assert len(gens) >= 2 and gens[-1] == gens[-2], gens
        deadline = time.monotonic() + 10
        while (st := q.status(ctl)[ch]).resyncs <= before[ch].resyncs:  # it adopted the switch again
            assert time.monotonic() < deadline, (st, q.log(ctl))
            time.sleep(0.1)
        assert st.flow_mods_sent == before[ch].flow_mods_sent, (st, q.log(ctl))  # ... sending nothing
        assert st.group_mods_sent == before[ch].group_mods_sent, st
        assert q.flows(ch) == before_flows[ch]
        print(f"chassis {ch}: master again {took - back_wall:.2f} s after the quorum came back (0 flow-mods)")
    deadline = time.monotonic() + 15
    seen: list[str] = []
    while "after-quorum" not in seen:
        try:
            ev = events.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"Watch on {b} did not resume: {seen}") from None
        if ev.HasField("network"):
            seen.append(ev.network.name.split("/")[1])
    for ctl in (a, b):
        have = q.networks(ctl)
        assert "after-quorum" in have
        # a write refused as not applied is not there (one whose outcome was unknown may be)
        assert not {n for n, maybe in refused.items() if not maybe} & have, (refused, have)
    q.etcd.members[2].start()
    q.etcd.members[2].wait_healthy()
    watch.cancel()
    pings = pinger.stop()
    sent = pings.sent
    where = pings.lost_at({"quorum lost": lost_wall, "back": back_wall})
    assert pings.received == sent and sent > 300, f"lost {sent - pings.received} of {sent} pings: {where}"
    assert not q.sampler.violations
    print(
        f"no quorum for {headless:.1f} s: {sent} pings, 0 lost; writes again {writable:.2f} s after the "
        "quorum came back"
    )
