"""Helpers for end-to-end tests: a lab of real OVS chassis driven by a real controller process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2

from controller.pki import Pki
from lab import VM, Lab
from lab.chassis import Chassis as LabChassis
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ControllerProcess, free_port

T = TypeVar("T")

PHYSNET = "physnet1"
PROVIDER_BRIDGE = "br-prov"


@dataclass
class Env:
    """A lab with chassis registered in a running controller, and API stubs to drive it."""

    lab: Lab
    controller: ControllerProcess
    channel: grpc.Channel
    stub: pb_grpc.TopologyServiceStub
    dp: dpb_grpc.DataplaneServiceStub
    admin: tuple[tuple[str, str], ...]
    vms: dict[str, VM] = field(default_factory=dict)

    def md(self, tenant: str) -> tuple[tuple[str, str], ...]:
        token = self.stub.CreateToken(pb.CreateTokenRequest(tenant=tenant), metadata=self.admin).token
        return (("authorization", f"Bearer {token}"),)

    def chassis(self, name: str) -> LabChassis:
        return self.lab.chassis[name]

    def network(self, md, ident: str, cidr: str, **kw) -> pb.Network:  # type: ignore[no-untyped-def]
        net = self.stub.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(**kw), network_id=ident), metadata=md
        )
        self.stub.CreateSubnet(
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr=cidr), subnet_id=ident + "-v4"),
            metadata=md,
        )
        return net

    def port(self, md, ident: str, net: pb.Network, ip: str = "") -> pb.Port:  # type: ignore[no-untyped-def]
        fixed = [pb.FixedIp(ip_address=ip)] if ip else []
        return self.stub.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network=net.name, fixed_ips=fixed), port_id=ident), metadata=md
        )

    def allow_ingress(self, md, protocol: str = "", remote_ip_prefix: str = "0.0.0.0/0") -> None:  # type: ignore[no-untyped-def]
        """Let traffic from anywhere into the ports of the caller's default security group (which lets in
        only its own members): for tests whose traffic comes from outside the tenant (an external host)."""
        try:
            self.stub.CreateSecurityGroupRule(
                pb.CreateSecurityGroupRuleRequest(
                    security_group_rule=pb.SecurityGroupRule(
                        security_group="securityGroups/default",
                        direction="ingress",
                        protocol=protocol,
                        remote_ip_prefix=remote_ip_prefix,
                    )
                ),
                metadata=md,
            )
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise

    def plug(self, chassis: str, port: pb.Port, wait: bool = True) -> VM:
        """Start a VM namespace on `chassis` for logical port `port` (iface-id = its id)."""
        ident = port.name.split("/")[1]
        net = self.stub.GetNetwork(pb.GetNetworkRequest(name=port.network), metadata=self.admin)
        sub = self.stub.GetSubnet(pb.GetSubnetRequest(name=port.fixed_ips[0].subnet), metadata=self.admin)
        prefix = sub.cidr.split("/")[1]
        vm = self.chassis(chassis).add_vm(
            ident,
            port.mac_address,
            f"{port.fixed_ips[0].ip_address}/{prefix}",
            iface_id=ident,
            mtu=net.mtu,
            gateway=sub.gateway_ip or None,
        )
        self.vms[ident] = vm
        if wait:
            self.wait_active(port.name, chassis)
        return vm

    def unplug(self, chassis: str, ident: str) -> None:
        self.chassis(chassis).remove_vm(self.vms.pop(ident))

    def wait_active(self, port_name: str, chassis: str, timeout: float = 20.0) -> pb.Port:
        deadline = time.monotonic() + timeout
        while True:
            port = self.stub.GetPort(pb.GetPortRequest(name=port_name), metadata=self.admin)
            if port.status == pb.Port.ACTIVE and port.binding_chassis == f"chassis/{chassis}":
                return port
            if time.monotonic() > deadline:
                raise AssertionError(f"{port_name} not ACTIVE on {chassis}: {port}\n{self.controller_log()}")
            time.sleep(0.05)

    def wait_realized(self, timeout: float = 20.0) -> None:
        resp = self.dp.WaitRealized(
            dpb.WaitRealizedRequest(timeout=duration_pb2.Duration(seconds=int(timeout))),
            metadata=self.admin,
            timeout=timeout + 5,
        )
        assert resp.realized, resp
        # the switches confirmed their new tables; their datapath flow caches follow a moment later, and a
        # packet in that moment may still take a cached megaflow: assertions start after a revalidator round
        for ch in self.lab.chassis.values():
            ch.appctl("--timeout=5", "revalidator/wait", check=False)

    def restart_controller(self, sig: int = 9, timeout: float = 20.0) -> dict[str, dpb.ChassisStatus]:
        """Kill the controller (SIGKILL by default), start it again on the same data directory, and
        reconnect (see `reconnect`)."""
        self.controller.kill(sig)
        self.controller.start()
        return self.reconnect(timeout)

    def reconnect(self, timeout: float = 20.0) -> dict[str, dpb.ChassisStatus]:
        """After the controller (re)started: new stubs, then wait until every switch has resynced and every
        change is realized; returns the chassis statuses then."""
        self.channel.close()
        self.channel = grpc.insecure_channel(self.controller.endpoint)
        self.stub = pb_grpc.TopologyServiceStub(self.channel)
        self.dp = dpb_grpc.DataplaneServiceStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if all(s.connected and s.ovsdb_ready and s.resyncs >= 1 for s in st.values()):
                self.wait_realized()
                return self.status()
            if time.monotonic() > deadline:
                raise AssertionError(f"switches did not resync: {st}\n{self.controller_log()}")
            time.sleep(0.1)

    def controller_log(self) -> str:
        return self.controller.log.read_text()[-4000:]

    def ovs_flows(self, chassis: str) -> set[str]:
        """br-int's flows without counters: comparable across dumps."""
        out = set()
        for line in self.chassis(chassis).dump_flows():
            parts = [
                p
                for p in line.strip().split(", ")
                if not p.startswith(("duration=", "n_packets=", "n_bytes=", "idle_age=", "hard_age="))
            ]
            out.add(", ".join(parts))
        return out

    def status(self) -> dict[str, dpb.ChassisStatus]:
        resp = self.dp.ListChassisStatus(dpb.ListChassisStatusRequest(), metadata=self.admin)
        return {c.chassis.split("/")[1]: c for c in resp.chassis}


def register_chassis(stub: pb_grpc.TopologyServiceStub, admin, ch: LabChassis) -> None:  # type: ignore[no-untyped-def]
    stub.CreateChassis(
        pb.CreateChassisRequest(
            chassis=pb.Chassis(
                datapath_id=ch.datapath_id,
                tunnel_ip=ch.tunnel_ip,
                ovsdb_address=ch.ovsdb_remote,
                bridge_mappings={PHYSNET: PROVIDER_BRIDGE} if PROVIDER_BRIDGE in ch.provider_bridges else {},
            ),
            chassis_id=ch.name,
        ),
        metadata=admin,
    )


def start_controller(
    lab: Lab,
    data_dir: Path,
    of_port: int | None = None,
    extra_args: list[str] | None = None,
    self_check: bool = True,
) -> ControllerProcess:
    """The controller on `data_dir`, its OpenFlow listener on the lab's management address. Over TLS with the
    lab's CA when the lab has one (lab_env's labs do), else plaintext (--insecure-openflow)."""
    ctl = ControllerProcess(data_dir)
    ctl.self_check_every_change = self_check
    if of_port is not None:
        ctl.of_port = of_port
    if lab.pki is not None:
        security = ["--switch-target", f"ssl:{lab.mgmt_ip}:{ctl.of_port}", "--pki-dir", str(lab.pki.root)]
    else:
        security = ["--switch-target", f"tcp:{lab.mgmt_ip}:{ctl.of_port}", "--insecure-openflow"]
    # the chassis's ovs-vswitchd control sockets, in <workdir>/<chassis>/, for diff traces' ofproto/trace
    ctl.extra_args = [
        *security,
        "--datapath-type",
        "netdev",
        "--vswitchd-ctl-dir",
        str(lab.workdir),
        *(extra_args or []),
    ]
    ctl.of_host = lab.mgmt_ip
    ctl.start()
    return ctl


@contextmanager
def lab_env(
    tmp: Path,
    chassis: int = 2,
    provider: bool = True,
    extra_args: list[str] | None = None,
    tls: bool = True,
    self_check: bool = True,
    lab_args: Callable[[Lab], list[str]] | None = None,
) -> Iterator[Env]:
    """`lab_args`: more controller arguments that name the lab's parts (chassis namespaces), made once they exist.
    `tls=False`: plaintext OpenFlow (--insecure-openflow) and OVSDB on the unix socket, no certificates.
    `self_check=False` (benchmarks): no compile self-check after every change (it is a full compile each)."""
    authority = (
        Pki(tmp / "data" / "pki") if tls else None
    )  # the controller's CA first: chassis get certificates
    if authority is not None:
        authority.init()
    with Lab(pki=authority) as lab:
        if provider:
            lab.add_provider_network(PHYSNET)
        for i in range(1, chassis + 1):
            ch = lab.add_chassis(f"hv{i}")
            if provider:
                ch.add_provider_bridge(PROVIDER_BRIDGE, PHYSNET)
        args = [*(extra_args or []), *(lab_args(lab) if lab_args is not None else [])]
        ctl = start_controller(lab, tmp / "data", extra_args=args, self_check=self_check)
        channel = grpc.insecure_channel(ctl.endpoint)
        try:
            stub = pb_grpc.TopologyServiceStub(channel)
            admin = (("authorization", f"Bearer {ctl.admin_token()}"),)
            for ch in lab.chassis.values():
                register_chassis(stub, admin, ch)
            env = Env(lab, ctl, channel, stub, dpb_grpc.DataplaneServiceStub(channel), admin)
            env.wait_realized()
            yield env
        finally:
            channel.close()
            ctl.stop()
        ctl.assert_no_divergence()  # the self-check ran after every change (restarts share the log)


def at_once(*checks: Callable[[], T]) -> list[T]:
    """Run probes side by side and return their results in order: checks that something does NOT arrive
    each wait out their own window, so together they cost one window instead of one each."""
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        return [f.result() for f in [pool.submit(c) for c in checks]]


__all__ = ["Env", "at_once", "free_port", "lab_env", "start_controller"]
