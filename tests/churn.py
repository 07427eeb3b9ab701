"""A seeded, randomized churn over a 2-chassis lab with steady traffic (tests/test_e2e_churn.py runs a short
one; bench/bench_churn.py a long one with phases and resource reports).

Steady objects (never touched by the churn): network A with VMs s1 (hv1) and s2 (hv2), a router with an
external gateway (on hv1) and A as its interface, a floating IP on s2, an external host. Three pings run all
along: s1 -> s2 (L2 across chassis), s1 -> the external host (SNAT), the external host -> s2's floating IP.

The churn (each step one of these, chosen by a seeded random generator): a port with a VM created and
deleted in either order (VIF first or port first; unplug first or delete first), a port without a VM,
network B attached to and detached from the router, rules added to and removed from a churn security group,
memberships changed, floating IPs associated and dissociated, a load balancer with members created and
deleted. At the end every churn object is deleted: each switch's flows, groups and meters must be exactly
what they were at the start.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from lab import VM
from lab.hosts import ExternalHost
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.e2e import PHYSNET, Env

EXT_CIDR = "172.24.7.0/24"
EXT_HOST = "172.24.7.100"
A_CIDR, B_CIDR = "10.160.0.0/24", "10.161.0.0/24"
TENANT = "churn"
PING_INTERVAL = 0.05


@dataclass
class Pinger:
    """A ping process running until stopped; its transmitted / received counts."""

    name: str
    proc: subprocess.Popen[str]

    def stop(self) -> tuple[int, int]:
        self.proc.send_signal(2)  # SIGINT: ping prints its statistics
        out, _ = self.proc.communicate(timeout=20)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        return int(m.group(1)), int(m.group(2))


def start_ping(name: str, host: VM | ExternalHost, dst: str) -> Pinger:
    return Pinger(name, host.popen(["ping", "-n", "-q", "-i", str(PING_INTERVAL), "-W", "2", dst]))


@dataclass
class Steady:
    env: Env
    md: tuple[tuple[str, str], ...]
    s1: VM
    s2: VM
    ext: ExternalHost
    fip: str
    router: str


def build(env: Env) -> Steady:
    """The steady objects; returns once they are realized and reachable."""
    ext = env.stub.CreateNetwork(
        pb.CreateNetworkRequest(
            network=pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET, external=True),
            network_id="ch-public",
        ),
        metadata=env.admin,
    )
    env.stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=ext.name, cidr=EXT_CIDR), subnet_id="ch-public-v4"),
        metadata=env.admin,
    )
    md = env.md(TENANT)
    net_a = env.network(md, "ch-a", A_CIDR)
    env.network(md, "ch-b", B_CIDR)
    r = env.stub.CreateRouter(
        pb.CreateRouterRequest(
            router=pb.Router(external_gateway=pb.ExternalGateway(network=ext.name)), router_id="ch-r"
        ),
        metadata=md,
    )
    env.stub.AddRouterInterface(
        pb.AddRouterInterfaceRequest(name=r.name, subnet="subnets/ch-a-v4"), metadata=md
    )
    env.allow_ingress(md)  # the external host reaches s2's floating IP
    s1 = env.plug("hv1", env.port(md, "ch-s1", net_a, "10.160.0.11"))
    s2 = env.plug("hv2", env.port(md, "ch-s2", net_a, "10.160.0.12"))
    fip = env.stub.CreateFloatingIp(
        pb.CreateFloatingIpRequest(
            floating_ip=pb.FloatingIp(floating_network=ext.name, port="ports/ch-s2"),
            floating_ip_id="ch-fip-s2",
        ),
        metadata=md,
    )
    host = env.lab.add_external_host(PHYSNET, "chext", f"{EXT_HOST}/24")
    env.stub.CreateSecurityGroup(
        pb.CreateSecurityGroupRequest(
            security_group=pb.SecurityGroup(display_name="churn"), security_group_id="ch-sg"
        ),
        metadata=md,
    )
    env.wait_realized()
    steady = Steady(env, md, s1, s2, host, fip.floating_ip_address, r.name)
    assert s1.ping(s2.ip, count=2, timeout=10)
    assert s1.ping(EXT_HOST, count=2, timeout=10), env.controller_log()
    assert host.ping(steady.fip, count=2, timeout=10), env.controller_log()
    return steady


def snapshot(env: Env) -> dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]]:
    """Per chassis: br-int's flows (without counters), groups and meters (without statistics)."""
    out = {}
    for name, ch in env.lab.chassis.items():
        groups = frozenset(
            ln.strip()
            for ln in ch.ofctl("-O", "OpenFlow13", "dump-groups", "br-int").splitlines()
            if "group_id=" in ln
        )
        meters = frozenset(
            ln.strip()
            for ln in ch.ofctl("-O", "OpenFlow13", "dump-meters", "br-int").splitlines()
            if "meter=" in ln or "type=" in ln
        )
        out[name] = (frozenset(env.ovs_flows(name)), groups, meters)
    return out


@dataclass
class Churn:
    """The churn's own objects and its random choices."""

    steady: Steady
    rng: random.Random
    ports: dict[str, str] = field(default_factory=dict)  # churn port id -> chassis its VM is on ("" : none)
    rules: list[str] = field(default_factory=list)
    fips: dict[str, str] = field(default_factory=dict)  # floating IP id -> port id ("" : dissociated)
    lb: bool = False
    b_attached: bool = False
    n: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    addrs: dict[str, str] = field(default_factory=dict)  # churn port id -> the address it was given

    def _addr(self, net: str) -> str | None:
        """A free address for a port made with a chosen address (its VIF may be plugged before the port);
        None when all 150 of the network's churn addresses are in use."""
        prefix = "10.160.0." if net == "ch-a" else "10.161.0."
        taken = set(self.addrs.values())
        return next(
            (f"{prefix}{i}" for i in self.rng.sample(range(100, 250), 150) if f"{prefix}{i}" not in taken),
            None,
        )

    @property
    def env(self) -> Env:
        return self.steady.env

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return self.steady.md

    # ------------------------------------------------------------------------------------------ operations

    def vm_port(self) -> None:
        """A port with a VM: VIF first or port first."""
        self.n += 1
        pid = f"ch-p{self.n}"
        net = self.rng.choice(["ch-a", "ch-b"]) if self.b_attached else "ch-a"
        ch = self.rng.choice(["hv1", "hv2"])
        mac = f"fa:16:3e:77:{self.n // 256 % 256:02x}:{self.n % 256:02x}"
        ip = self._addr(net)
        if ip is None:
            return self.delete_port()
        self.addrs[pid] = ip
        vif_first = self.rng.random() < 0.5
        if vif_first:
            self._plug(pid, ch, mac, ip, net)
        self.env.stub.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(
                    network=f"networks/{net}",
                    mac_address=mac,
                    fixed_ips=[pb.FixedIp(ip_address=ip)],
                    security_groups=self._groups(),
                ),
                port_id=pid,
            ),
            metadata=self.md,
        )
        if not vif_first:
            self._plug(pid, ch, mac, ip, net)
        self.ports[pid] = ch

    def _plug(self, pid: str, ch: str, mac: str, ip: str, net: str) -> None:
        gw = (A_CIDR if net == "ch-a" else B_CIDR).replace("0/24", "1")
        self.env.vms[pid] = self.env.chassis(ch).add_vm(
            pid, mac, f"{ip}/24", iface_id=pid, mtu=1450, gateway=gw
        )

    def bare_port(self) -> None:
        self.n += 1
        pid = f"ch-p{self.n}"
        ip = self._addr("ch-a")  # chosen, not allocated: IPAM would hand out what a VIF-first port wants
        if ip is None:
            return self.delete_port()
        self.addrs[pid] = ip
        self.env.stub.CreatePort(
            pb.CreatePortRequest(
                port=pb.Port(
                    network="networks/ch-a",
                    fixed_ips=[pb.FixedIp(ip_address=ip)],
                    security_groups=self._groups(),
                ),
                port_id=pid,
            ),
            metadata=self.md,
        )
        self.ports[pid] = ""

    def _groups(self) -> list[str]:
        return self.rng.choice(
            [
                ["securityGroups/default"],
                ["securityGroups/ch-sg"],
                ["securityGroups/default", "securityGroups/ch-sg"],
            ]
        )

    def delete_port(self) -> None:
        if not self.ports:
            return self.vm_port()
        pid = self.rng.choice(sorted(self.ports))
        ch = self.ports.pop(pid)
        self.addrs.pop(pid, None)
        for fid in [f for f, p in self.fips.items() if p == pid]:
            self.fips[fid] = ""  # deleting a port dissociates its floating IPs
        unplug_first = self.rng.random() < 0.5
        if ch and unplug_first:
            self.env.unplug(ch, pid)
        self.env.stub.DeletePort(pb.DeletePortRequest(name=f"ports/{pid}"), metadata=self.md)
        if ch and not unplug_first:
            self.env.unplug(ch, pid)
        return None

    def toggle_b(self) -> None:
        if self.b_attached and any(self._net_of(p) == "ch-b" for p in self.ports):
            return self.delete_port()
        if self.b_attached:
            self.env.stub.RemoveRouterInterface(
                pb.RemoveRouterInterfaceRequest(name=self.steady.router, subnet="subnets/ch-b-v4"),
                metadata=self.md,
            )
        else:
            self.env.stub.AddRouterInterface(
                pb.AddRouterInterfaceRequest(name=self.steady.router, subnet="subnets/ch-b-v4"),
                metadata=self.md,
            )
        self.b_attached = not self.b_attached
        return None

    def _net_of(self, pid: str) -> str:
        return self.env.stub.GetPort(pb.GetPortRequest(name=f"ports/{pid}"), metadata=self.md).network.split(
            "/"
        )[1]

    def rule(self) -> None:
        if self.rules and self.rng.random() < 0.5:
            name = self.rules.pop(self.rng.randrange(len(self.rules)))
            self.env.stub.DeleteSecurityGroupRule(
                pb.DeleteSecurityGroupRuleRequest(name=name), metadata=self.md
            )
            return
        port = self.rng.randrange(1000, 1100)
        remote: dict[str, Any] = self.rng.choice(
            [{"remote_group": "securityGroups/ch-sg"}, {"remote_ip_prefix": "10.160.0.0/24"}, {}]
        )
        try:
            rule = self.env.stub.CreateSecurityGroupRule(
                pb.CreateSecurityGroupRuleRequest(
                    security_group_rule=pb.SecurityGroupRule(
                        security_group="securityGroups/ch-sg",
                        direction="ingress",
                        protocol="tcp",
                        port_range_min=port,
                        port_range_max=port,
                        **remote,
                    )
                ),
                metadata=self.md,
            )
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return
        self.rules.append(rule.name)

    def membership(self) -> None:
        if not self.ports:
            return self.bare_port()
        pid = self.rng.choice(sorted(self.ports))
        self.env.stub.UpdatePort(
            pb.UpdatePortRequest(
                port=pb.Port(name=f"ports/{pid}", security_groups=self._groups()),
                update_mask=field_mask_pb2.FieldMask(paths=["security_groups"]),
            ),
            metadata=self.md,
        )
        return None

    def floating_ip(self) -> None:
        on_a = [p for p in self.ports if self._net_of(p) == "ch-a"]
        free = [f for f, p in self.fips.items() if not p]
        if free and on_a and self.rng.random() < 0.5:
            fid, pid = self.rng.choice(free), self.rng.choice(on_a)
            if pid in self.fips.values():
                return
            self.env.stub.UpdateFloatingIp(
                pb.UpdateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(name=f"floatingIps/{fid}", port=f"ports/{pid}"),
                    update_mask=field_mask_pb2.FieldMask(paths=["port"]),
                ),
                metadata=self.md,
            )
            self.fips[fid] = pid
        elif self.fips and self.rng.random() < 0.5:
            fid = self.rng.choice(sorted(self.fips))
            if self.fips[fid]:
                self.env.stub.UpdateFloatingIp(
                    pb.UpdateFloatingIpRequest(
                        floating_ip=pb.FloatingIp(name=f"floatingIps/{fid}", port=""),
                        update_mask=field_mask_pb2.FieldMask(paths=["port"]),
                    ),
                    metadata=self.md,
                )
                self.fips[fid] = ""
            else:
                self.env.stub.DeleteFloatingIp(
                    pb.DeleteFloatingIpRequest(name=f"floatingIps/{fid}"), metadata=self.md
                )
                del self.fips[fid]
        else:
            self.n += 1
            fid = f"ch-f{self.n}"
            self.env.stub.CreateFloatingIp(
                pb.CreateFloatingIpRequest(
                    floating_ip=pb.FloatingIp(floating_network="networks/ch-public"), floating_ip_id=fid
                ),
                metadata=self.md,
            )
            self.fips[fid] = ""

    def load_balancer(self) -> None:
        lbs = pb_grpc.LoadBalancerServiceStub(self.env.channel)
        if self.lb:
            lbs.DeleteLoadBalancer(
                pb.DeleteLoadBalancerRequest(name="loadBalancers/ch-lb", force=True), metadata=self.md
            )
            self.lb = False
            return
        lb = lbs.CreateLoadBalancer(
            pb.CreateLoadBalancerRequest(
                load_balancer=pb.LoadBalancer(vip_subnet="subnets/ch-a-v4", vip_address="10.160.0.250"),
                load_balancer_id="ch-lb",
            ),
            metadata=self.md,
        )
        ls = lbs.CreateListener(
            pb.CreateListenerRequest(
                listener=pb.Listener(load_balancer=lb.name, protocol="TCP", protocol_port=80),
                listener_id="ch-http",
            ),
            metadata=self.md,
        )
        lbs.CreatePool(
            pb.CreatePoolRequest(pool=pb.Pool(listener=ls.name, protocol="TCP"), pool_id="ch-pool"),
            metadata=self.md,
        )
        for i, ip in enumerate(("10.160.0.11", "10.160.0.12")):
            lbs.CreateMember(
                pb.CreateMemberRequest(
                    parent="pools/ch-pool",
                    member=pb.Member(address=ip, protocol_port=8080),
                    member_id=f"ch-m{i}",
                ),
                metadata=self.md,
            )
        self.lb = True

    OPS: tuple[tuple[str, float], ...] = (
        ("vm_port", 3),
        ("delete_port", 3),
        ("bare_port", 1),
        ("toggle_b", 1),
        ("rule", 2),
        ("membership", 2),
        ("floating_ip", 2),
        ("load_balancer", 1),
    )

    def step(self) -> str:
        names, weights = zip(*self.OPS)
        name = self.rng.choices(names, weights=weights)[0]
        op: Callable[[], None] = getattr(self, name)
        op()
        self.counts[name] = self.counts.get(name, 0) + 1
        return name

    def clear(self) -> None:
        """Delete every churn object: the model is the steady one again."""
        while self.ports:
            self.delete_port()
        for fid in sorted(self.fips):
            self.env.stub.DeleteFloatingIp(
                pb.DeleteFloatingIpRequest(name=f"floatingIps/{fid}"), metadata=self.md
            )
        self.fips.clear()
        for name in self.rules:
            self.env.stub.DeleteSecurityGroupRule(
                pb.DeleteSecurityGroupRuleRequest(name=name), metadata=self.md
            )
        self.rules.clear()
        if self.lb:
            self.load_balancer()
        if self.b_attached:
            self.toggle_b()


def run(churn: Churn, seconds: float, on_step: Callable[[int, str], None] | None = None) -> int:
    """Churn for `seconds`; returns the number of steps."""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        name = churn.step()
        if on_step is not None:
            on_step(i, name)
        i += 1
    return i
