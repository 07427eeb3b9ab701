"""How many flows one more port costs a chassis: a port bound there (local) and a port bound elsewhere
(remote), in a network with a router and a security group with a remote-group rule and a CIDR rule.

Shared work (port security's drops, conntrack tracking, ARP answers, the hairpin, sending to remote
ports) is one set of flows per chassis; what grows with ports must stay what the numbers below say, so
that per-port flows cannot creep back unnoticed (bench/bench_flows.py compares the totals with OVN's)."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from apps.compiler import Compiler
from apps.view import ChassisRuntime
from flows.flow import Flow
from topology import ops, ops_security
from topology.model import Topology
from topology.records import INGRESS, Chassis, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet

#: flows one more port adds on the chassis it is bound to, by stage: classify (in_port), port security
#: (its own addresses: 3 from the unspecified address, IPv4 + ARP per address, IPv6 + NA for its
#: link-local), its clause of its group's rules (egress, ingress), its address as a remote-group member,
#: arp_nd's "its own address is not answered", mac_lookup, dhcp, l2_lookup, egress_dispatch, output
LOCAL = {
    "classify": 1,
    "port_sec_in": 7,
    "acl_egress": 1,
    "acl_ingress": 2,
    "arp_nd": 1,
    "mac_lookup": 1,
    "dhcp": 1,
    "l2_lookup": 1,
    "egress_dispatch": 1,
    "output": 1,
}
#: flows one more port adds on every other chassis hosting its network: its MAC (l2_lookup), its address
#: (mac_lookup: ARP answers and routing) and its address as a remote-group member (acl_ingress)
REMOTE = {"l2_lookup": 1, "mac_lookup": 1, "acl_ingress": 1}


class World:
    def __init__(self) -> None:
        self.topo = Topology()
        self.rev = 0
        self.vifs: dict[str, dict[str, int]] = {"hv1": {}, "hv2": {}}
        self.comp = Compiler()

    def apply(self, changes):  # type: ignore[no-untyped-def]
        self.rev += 1
        self.topo.apply(changes, self.rev)
        return changes

    def runtime(self, ch: str) -> ChassisRuntime:
        return ChassisRuntime(ch, dict(self.vifs[ch]), {"vxlan": 1, "gre": 2, "geneve": 3}, {})

    def port(self, pid: str, ch: str) -> None:
        t = self.topo
        changes = self.apply(
            ops.create_port(
                t,
                Port(id=pid, tenant="t", network_id="n", mac="", binding_chassis=ch, security_groups=("g",)),
                [],
                self.rev + 1,
                0.0,
            )
        )
        self.comp.on_changes(t, changes)
        self.vifs[ch][pid] = len(self.vifs[ch]) + 10
        self.comp.on_runtime(t, dataclasses.replace(self.runtime(ch)))


def world(n_ports: int) -> World:
    w = World()
    t = w.topo
    for i, ch in enumerate(("hv1", "hv2"), 1):
        w.apply(
            ops.create_chassis(t, Chassis(id=ch, datapath_id=i, tunnel_ip=f"192.0.2.{i}"), w.rev + 1, 0.0)
        )
    for net, cidr in (("n", "10.0.0.0/24"), ("m", "10.0.1.0/24")):
        w.apply(ops.create_network(t, Network(id=net, tenant="t"), w.rev + 1, 0.0))
        sub = Subnet(id=f"{net}-s", tenant="t", network_id=net, cidr=cidr)
        w.apply(ops.create_subnet(t, sub, False, w.rev + 1, 0.0))
    w.apply(ops.create_router(t, Router(id="r", tenant="t"), None, w.rev + 1, 0.0))
    for net in ("n", "m"):
        w.apply(ops.add_router_interface(t, t.routers["r"], f"{net}-s", "", f"r-{net}", w.rev + 1, 0.0))
    w.apply(ops_security.create_security_group(t, SecurityGroup(id="g", tenant="t"), w.rev + 1, 0.0))
    for rid, port, remote in (
        ("ssh", 22, {"remote_group_id": "g"}),
        ("http", 80, {"remote_ip_prefix": "0.0.0.0/0"}),
    ):
        rule = SecurityGroupRule(
            id=rid,
            tenant="t",
            security_group_id="g",
            direction=INGRESS,
            protocol="tcp",
            port_range_min=port,
            port_range_max=port,
            **remote,  # type: ignore[arg-type]
        )
        w.apply(ops_security.create_security_group_rule(t, rule, True, w.rev + 1, 0.0))
    for ch in ("hv1", "hv2"):
        w.comp.on_runtime(t, w.runtime(ch))
    for i in range(n_ports):
        w.port(f"p{i}", ("hv1", "hv2")[i % 2])
    return w


def growth(w: World, pid: str, ch: str) -> dict[str, int]:
    """Flows on hv1 after adding port `pid` bound on `ch`, minus before, by stage."""
    before = w.comp.desired("hv1")
    w.port(pid, ch)
    after = w.comp.desired("hv1")
    assert not w.comp.check(w.topo, "hv1"), "incremental != full"

    def by_stage(items: frozenset) -> collections.Counter[str]:  # type: ignore[type-arg]
        return collections.Counter(i.stage for i in items if isinstance(i, Flow))

    diff = by_stage(after)
    diff.subtract(by_stage(before))
    return {k: v for k, v in diff.items() if v}


@pytest.mark.parametrize("n_ports", [4, 20])
def test_a_local_port_adds_a_fixed_few_flows_whatever_the_network_holds(n_ports: int) -> None:
    w = world(n_ports)
    assert growth(w, "new", "hv1") == LOCAL
    assert sum(LOCAL.values()) == 17


@pytest.mark.parametrize("n_ports", [4, 20])
def test_a_remote_port_adds_three_flows_whatever_the_network_holds(n_ports: int) -> None:
    w = world(n_ports)
    assert growth(w, "new", "hv2") == REMOTE
