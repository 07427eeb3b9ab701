"""Right in any order: a stateful property test that interleaves API writes of every kind with chassis
events and controller restarts, and after every step asserts that

- each chassis's incrementally compiled desired state == a full compile from scratch (and is what its
  switch engine was handed);
- every port's binding is the fixed point of topology.binding over what the chassis report (a VIF
  plugged before its port, after it, moved, unplugged, re-plugged; a port pinned by an admin);
- a conntrack zone given up on a chassis it compiles is asked to be flushed there, and no zone in use is;
- port keys are unique and every bound VM port's conntrack zone (its key's low 16 bits) is unique on its
  chassis and apart from the gateways' and VIPs' shared zones, the model's zone index matches the records,
  and a restart keeps every key (topology/portkeys.py).

The controller is one of several (owned_only: it compiles only the chassis it masters): chassis are
released to another controller and taken back at any step, and the invariants hold for the ones it masters
(a released chassis keeps no compile here).

Real parts: a State on a real SQLite file (a restart reopens it), the real Dataplane with its worker;
only the switch engines and OVSDB agents are stand-ins (the chassis's OVSDB reports are injected as the
agent would deliver them). Writes go through topology.ops as the API's handlers call them; a write the
model refuses (ApiError) changes nothing, as through the API.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from apps.compiler import desired_from_scratch
from controller.dataplane import Dataplane
from tests.test_dataplane_nat import FakeAgent, FakeEngine
from topology import binding, ops, ops_lb, ops_security, portkeys
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.records import (
    Chassis,
    FirewallGroup,
    FirewallPolicy,
    FirewallRule,
    FloatingIp,
    GatewayHold,
    Listener,
    LoadBalancer,
    Member,
    Network,
    Pool,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from topology.state import State, WriteFn

CHASSIS = ("hv1", "hv2", "hv3")
GATEWAYS = ("hv1", "hv2")
PHYSNET = "physnet1"
TUN = {"vxlan": 900, "gre": 901, "geneve": 902}
PATCH = 950
PORTS = ("p0", "p1", "p2", "p3")
VIF_IDS = (*PORTS, "ghost")  # an iface-id naming no port (yet)
NETS = {
    "n0": ("alice", "10.0.0.0/24"),
    "n1": ("alice", "10.1.0.0/24"),
    "n2": ("alice", "10.2.0.0/24"),
    "nb": ("bob", "10.0.0.0/24"),
}
ROUTED = ("n0", "n1", "n2")  # alice's networks router r may join
GROUPS = ("default", "web")

chassis_st = st.sampled_from(CHASSIS)
port_st = st.sampled_from(PORTS)


class AnyOrder(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="any-order-"))
        self.vifs: dict[str, dict[str, int]] = {ch: {} for ch in CHASSIS}  # what each chassis's OVSDB holds
        self.ofport = 1
        self.engines: dict[int, FakeEngine] = {}
        self.masters = set(CHASSIS)  # the chassis this controller masters (the others: another controller)
        self.state = State(self.tmp / "topology.sqlite")
        self.dp = self._dataplane()
        self.counter = 0
        self.zones_before: set[tuple[str, int]] = set()  # freed_zones_are_flushed: the last step's zones
        self.engine_before: dict[str, Any] = {}
        self.compiled_before: set[str] = set()

    # ------------------------------------------------------------------------------------------ plumbing

    def _dataplane(self) -> Dataplane:
        def engine(dpid: int, _cb: Any) -> FakeEngine:
            self.engines[dpid] = FakeEngine()
            return self.engines[dpid]

        dp = Dataplane(
            self.state,
            engine_factory=engine,
            agent_factory=lambda _ch, _cb: FakeAgent(),
            gateway_chassis=GATEWAYS,
            neighbors_file=self.tmp / "neighbors.json",
            gateways_file=self.tmp / "gateways.json",
            tick_s=0,
            owned_only=True,
        )
        dp.owns = lambda ch: ch in self.masters
        dp.start()
        for ch in sorted(self.masters):  # what its ownership would do as it starts (roles.py)
            dp._take_over(ch, None)
        dp.settle()
        return dp

    def report(self, ch: str) -> None:
        """The chassis's OVSDB agent delivers its ports (as after any change of them, or on connect)."""
        self.dp._on_runtime(
            ch,
            SimpleNamespace(
                vifs=dict(self.vifs[ch]),
                tunnels=dict(TUN),
                patches={PHYSNET: PATCH} if ch in GATEWAYS else {},
                connected=True,
            ),
        )
        self.dp.settle()

    def write(self, fn: Callable[[Topology, int, float], list[Change]]) -> bool:
        try:
            self.state.write(fn)
        except ApiError:
            return False
        finally:
            self.dp.settle()
        return True

    @property
    def topo(self) -> Topology:
        return self.state.topology

    def teardown(self) -> None:
        self.dp.stop()
        self.state.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ setup

    @initialize()
    def build(self) -> None:
        writes: list[WriteFn] = []

        def chassis(i: int, ch: str) -> WriteFn:
            rec = Chassis(
                id=ch,
                datapath_id=i,
                tunnel_ip=f"192.0.2.{i}",
                ovsdb_address="unix:/nonexistent",
                bridge_mappings=((PHYSNET, "br-prov"),) if ch in GATEWAYS else (),
            )
            return lambda t, rev, now: ops.create_chassis(t, rec, rev, now)

        def network(net: Network, sub: Subnet) -> list[WriteFn]:
            return [
                lambda t, rev, now: ops.create_network(t, net, rev, now),
                lambda t, rev, now: ops.create_subnet(t, sub, False, rev, now),
            ]

        def default_group(tenant: str) -> WriteFn:
            return lambda t, rev, now: ops_security.ensure_default_group(t, tenant, rev, now)[1]

        writes += [chassis(i, ch) for i, ch in enumerate(CHASSIS, 1)]
        writes += network(
            Network(id="ext", tenant="admin", segment_type="flat", physical_network=PHYSNET, external=True),
            Subnet(id="ext-sub", tenant="admin", network_id="ext", cidr="172.24.4.0/24"),
        )
        for net, (tenant, cidr) in NETS.items():
            writes += network(
                Network(id=net, tenant=tenant),
                Subnet(id=f"{net}-sub", tenant=tenant, network_id=net, cidr=cidr),
            )
        writes += [default_group(tenant) for tenant in ("alice", "bob")]
        writes.append(
            lambda t, rev, now: ops_security.create_security_group(
                t, SecurityGroup(id="web", tenant="alice"), rev, now
            )
        )
        writes.append(
            lambda t, rev, now: ops.create_router(
                t, Router(id="r", tenant="alice"), ops.GatewayRequest("ext"), rev, now
            )
        )
        for fn in writes:
            self.state.write(fn)
        self.dp.settle()
        for ch in CHASSIS:
            self.report(ch)

    # ------------------------------------------------------------------------------------------ chassis events

    @rule(vif=st.sampled_from(VIF_IDS), ch=chassis_st)
    def plug(self, vif: str, ch: str) -> None:
        """A VM's interface with iface-id `vif` appears on the chassis (whether or not the port exists)."""
        if vif not in self.vifs[ch]:
            self.vifs[ch][vif] = self.ofport
            self.ofport += 1
        self.report(ch)

    @rule(vifs=st.sets(st.sampled_from(VIF_IDS), min_size=2), ch=chassis_st)
    def plug_many(self, vifs: set[str], ch: str) -> None:
        """Several VIFs in one OVSDB update (a hypervisor starting its VMs): their ports bind in one write."""
        for vif in sorted(vifs):
            self.vifs[ch].setdefault(vif, self.ofport)
            self.ofport += 1
        self.report(ch)

    @rule(vif=st.sampled_from(VIF_IDS), ch=chassis_st)
    def unplug(self, vif: str, ch: str) -> None:
        self.vifs[ch].pop(vif, None)
        self.report(ch)

    @rule(vif=st.sampled_from(VIF_IDS), src=chassis_st, dst=chassis_st, unplug_first=st.booleans())
    def move(self, vif: str, src: str, dst: str, unplug_first: bool) -> None:
        """A VM migrates: unplugged at the source and plugged at the destination, in either order."""
        steps = [(src, False), (dst, True)] if unplug_first else [(dst, True), (src, False)]
        for ch, plug in steps:
            if plug:
                self.vifs[ch].setdefault(vif, self.ofport)
                self.ofport += 1
            else:
                self.vifs[ch].pop(vif, None)
            self.report(ch)

    @rule(ch=chassis_st)
    def vswitchd_restart(self, ch: str) -> None:
        """Every VIF comes back with a new ofport."""
        for vif in sorted(self.vifs[ch]):
            self.vifs[ch][vif] = self.ofport
            self.ofport += 1
        self.report(ch)

    @rule(reconnect=st.sets(chassis_st))
    def restart_controller(self, reconnect: set[str]) -> None:
        """The controller restarts: the model is rebuilt from the store; only some chassis report at once
        (the others' OVSDB sessions come back later, through `report_chassis`)."""
        self.dp.stop()
        keys = {p.id: p.key for p in self.topo.ports.values()}
        self.state.close()
        self.state = State(self.tmp / "topology.sqlite")
        # keys, and so conntrack zones, are the records': the same after a restart (no orphaned entries)
        assert {p.id: p.key for p in self.topo.ports.values()} == keys
        self.dp = self._dataplane()
        for ch in sorted(reconnect):
            self.report(ch)

    @rule(ch=chassis_st)
    def report_chassis(self, ch: str) -> None:
        self.report(ch)

    @rule(ch=chassis_st)
    def release_chassis(self, ch: str) -> None:
        """Another controller becomes the chassis's master (a handover or a step-down): its compile goes."""
        self.masters.discard(ch)
        self.dp.chassis_role(ch, False)
        self.dp.settle()

    @rule(ch=chassis_st)
    def take_chassis(self, ch: str) -> None:
        """This controller becomes the chassis's master: compiled in full before its engine starts."""
        if ch not in self.masters:
            self.masters.add(ch)
            self.dp._take_over(ch, None)  # chassis_role's thread, run here
            self.dp.settle()

    # ------------------------------------------------------------------------------------------ ports

    @rule(
        pid=port_st,
        net=st.sampled_from(sorted(NETS)),
        pin=st.sampled_from(("", *CHASSIS)),
        groups=st.sets(st.sampled_from(GROUPS), max_size=2),
    )
    def create_port(self, pid: str, net: str, pin: str, groups: set[str]) -> None:
        tenant = NETS[net][0]

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            gids, made = ops_security.resolve_groups(
                t, tenant, sorted(groups) or ["default"], "security_groups", True, rev, now
            )
            if tenant != "alice":
                gids, made = ops_security.resolve_groups(
                    t, tenant, ["default"], "security_groups", True, rev, now
                )
            ident = ops.new_id(t, "port", pid, "port_id")  # ALREADY_EXISTS, as through the API
            return made + ops.create_port(
                t,
                Port(
                    id=ident, tenant=tenant, network_id=net, mac="", security_groups=gids, binding_chassis=pin
                ),
                [],
                rev,
                now,
            )

        self.write(fn)

    @rule(pid=port_st)
    def delete_port(self, pid: str) -> None:
        self.write(lambda t, rev, now: ops.delete_port(t, t.ports[pid], rev, now) if pid in t.ports else [])

    def _update(self, pid: str, fields: dict[str, Any]) -> None:
        self.write(
            lambda t, rev, now: (
                ops.update_port(t, t.ports[pid], dict(fields), rev, now) if pid in t.ports else []
            )
        )

    @rule(pid=port_st, pin=st.sampled_from(("", *CHASSIS)))
    def pin(self, pid: str, pin: str) -> None:
        """An admin binds the port to a chassis ("" : unpins it; it follows its VIF again)."""
        self._update(pid, {"binding_chassis": pin})

    @rule(pid=port_st, groups=st.sets(st.sampled_from(GROUPS), max_size=2))
    def set_groups(self, pid: str, groups: set[str]) -> None:
        port = self.topo.ports.get(pid)
        if port is None or port.tenant != "alice" or not port.port_security_enabled:
            return
        gids = tuple(sorted(g if g == "web" else self.topo.default_groups.get("alice", g) for g in groups))
        self._update(pid, {"security_groups": gids})

    @rule(pid=port_st)
    def toggle_admin(self, pid: str) -> None:
        port = self.topo.ports.get(pid)
        if port is not None:
            self._update(pid, {"admin_state_up": not port.admin_state_up})

    @rule(pid=port_st)
    def toggle_port_security(self, pid: str) -> None:
        port = self.topo.ports.get(pid)
        if port is None:
            return
        if port.port_security_enabled:
            self._update(
                pid, {"port_security_enabled": False, "security_groups": (), "allowed_address_pairs": ()}
            )
        else:
            default = self.topo.default_groups.get(port.tenant, "")
            self._update(
                pid, {"port_security_enabled": True, "security_groups": (default,) if default else ()}
            )

    @rule(pid=port_st, n=st.integers(50, 60))
    def readdress(self, pid: str, n: int) -> None:
        port = self.topo.ports.get(pid)
        if port is not None and port.fixed_ips:
            sub = port.fixed_ips[0][0]
            prefix = self.topo.subnets[sub].cidr.rsplit(".", 1)[0]
            self._update(pid, {"fixed_ips": ((sub, f"{prefix}.{n}"),)})

    @rule(pid=port_st, net=st.sampled_from(sorted(NETS)))
    def toggle_network(self, pid: str, net: str) -> None:
        old = self.topo.networks[net]
        self.write(
            lambda t, rev, now: ops.update_network(
                t, t.networks[net], {"admin_state_up": not old.admin_state_up}, rev, now
            )
        )

    # ------------------------------------------------------------------------------------------ security groups

    @rule(kind=st.sampled_from(("ssh-from-web", "http-from-cidr", "icmp-from-default", "egress-udp")))
    def add_rule(self, kind: str) -> None:
        self.counter += 1
        rid = f"{kind}-{self.counter}"
        default = self.topo.default_groups.get("alice", "")
        rec = {
            "ssh-from-web": SecurityGroupRule(
                id=rid,
                tenant="alice",
                security_group_id="web",
                protocol="tcp",
                port_range_min=22,
                port_range_max=22,
                remote_group_id="web",
            ),
            "http-from-cidr": SecurityGroupRule(
                id=rid,
                tenant="alice",
                security_group_id="web",
                protocol="tcp",
                port_range_min=80,
                port_range_max=81,
                remote_ip_prefix="10.0.0.0/8",
            ),
            "icmp-from-default": SecurityGroupRule(
                id=rid, tenant="alice", security_group_id="web", protocol="icmp", remote_group_id=default
            ),
            "egress-udp": SecurityGroupRule(
                id=rid,
                tenant="alice",
                security_group_id=default or "web",
                direction="egress",
                protocol="udp",
                port_range_min=53,
                port_range_max=53,
            ),
        }[kind]
        self.write(lambda t, rev, now: ops_security.create_security_group_rule(t, rec, True, rev, now))

    @rule(data=st.data())
    def delete_rule(self, data: st.DataObject) -> None:
        rules = sorted(r for r, rec in self.topo.sg_rules.items() if rec.tenant == "alice")
        if rules:
            rid = data.draw(st.sampled_from(rules))
            self.write(lambda t, rev, now: ops_security.delete_security_group_rule(t.sg_rules[rid]))

    # ------------------------------------------------------------------------------------------ routers, NAT

    @rule(net=st.sampled_from(ROUTED))
    def toggle_interface(self, net: str) -> None:
        sub = f"{net}-sub"
        attached = any(s == sub for _p, s, _a in ops.router_interfaces(self.topo, "r"))
        if attached:
            self.write(lambda t, rev, now: ops.remove_router_interface(t, t.routers["r"], sub, "", rev, now))
        else:
            self.write(
                lambda t, rev, now: ops.add_router_interface(t, t.routers["r"], sub, "", f"r-{net}", rev, now)
            )

    @rule()
    def toggle_gateway(self) -> None:
        router = self.topo.routers["r"]
        gw = None if router.gateway_network_id else ops.GatewayRequest("ext")
        self.write(
            lambda t, rev, now: ops.update_router(t, t.routers["r"], {"external_gateway": gw}, rev, now)
        )

    @rule(pid=port_st, cidr=st.sampled_from(("10.3.0.0/24", "10.4.0.0/16")))
    def toggle_route(self, pid: str, cidr: str) -> None:
        router = self.topo.routers["r"]
        port = self.topo.ports.get(pid)
        kept = tuple(r for r in router.routes if r[0] != cidr)
        if len(kept) != len(router.routes):
            routes = kept
        elif port is not None and port.fixed_ips:
            routes = (*kept, (cidr, port.fixed_ips[0][1]))
        else:
            return
        self.write(lambda t, rev, now: ops.update_router(t, t.routers["r"], {"routes": routes}, rev, now))

    @rule(pid=port_st)
    def floating_ip(self, pid: str) -> None:
        """Associate a floating IP with the port (one per port here), or delete the one it has."""
        fid = f"fip-{pid}"
        if fid in self.topo.floatingips:
            self.write(lambda t, rev, now: ops.delete_floating_ip(t, t.floatingips[fid]))
        elif pid in self.topo.ports:
            self.write(
                lambda t, rev, now: ops.create_floating_ip(
                    t,
                    FloatingIp(id=fid, tenant="alice", network_id="ext", address="", port_id=pid),
                    f"{fid}-port",
                    rev,
                    now,
                )
            )

    @rule(pid=port_st)
    def move_floating_ip(self, pid: str) -> None:
        fips = sorted(self.topo.floatingips)
        if fips and pid in self.topo.ports:
            self.write(
                lambda t, rev, now: ops.update_floating_ip(t, t.floatingips[fips[0]], {"port": pid}, rev, now)
            )

    # ------------------------------------------------------------------------------------------ load balancers

    @rule(net=st.sampled_from(ROUTED))
    def toggle_load_balancer(self, net: str) -> None:
        lb_id = f"lb-{net}"
        if lb_id in self.topo.load_balancers:
            self.write(lambda t, rev, now: ops_lb.delete_load_balancer(t, t.load_balancers[lb_id], True))
            return

        listener = Listener(
            id=f"{lb_id}-l", tenant="alice", load_balancer_id=lb_id, protocol="TCP", protocol_port=80
        )
        if not self.write(
            lambda t, rev, now: ops_lb.create_load_balancer(
                t, LoadBalancer(id=lb_id, tenant="alice", vip_subnet_id=f"{net}-sub"), True, rev, now
            )
        ):
            return
        self.write(lambda t, rev, now: ops_lb.create_listener(t, listener, rev, now))
        self.write(
            lambda t, rev, now: ops_lb.create_pool(
                t,
                Pool(id=f"{lb_id}-pool", tenant="alice", load_balancer_id=lb_id),
                t.listeners.get(listener.id),
                rev,
                now,
            )
        )

    @rule(pid=port_st, net=st.sampled_from(ROUTED))
    def toggle_member(self, pid: str, net: str) -> None:
        pool = f"lb-{net}-pool"
        mid = f"m-{pid}-{net}"
        if mid in self.topo.members:
            self.write(lambda t, rev, now: ops_lb.delete_member(t, t.members[mid], rev, now))
            return
        port = self.topo.ports.get(pid)
        if pool not in self.topo.pools or port is None or not port.fixed_ips:
            return
        sub, addr = port.fixed_ips[0]
        self.write(
            lambda t, rev, now: ops_lb.create_member(
                t,
                Member(id=mid, tenant="alice", pool_id=pool, address=addr, protocol_port=8080, subnet_id=sub),
                True,
                rev,
                now,
            )
        )

    # ------------------------------------------------------------------------------------------ firewall

    @rule()
    def toggle_firewall(self) -> None:
        if "fwg" in self.topo.firewall_groups:
            self.write(lambda t, rev, now: ops_security.delete_firewall_group(t.firewall_groups["fwg"]))
            return
        ifaces = tuple(p.id for p, _s, _a in ops.router_interfaces(self.topo, "r"))
        if not ifaces:
            return

        if "fwr" not in self.topo.firewall_rules:
            self.write(
                lambda t, rev, now: ops_security.create_firewall_rule(
                    t,
                    FirewallRule(
                        id="fwr",
                        tenant="alice",
                        action="deny",
                        protocol="tcp",
                        destination_port_min=23,
                        destination_port_max=23,
                    ),
                    rev,
                    now,
                )
            )
            self.write(
                lambda t, rev, now: ops_security.create_firewall_policy(
                    t, FirewallPolicy(id="fwp", tenant="alice", rules=("fwr",)), rev, now
                )
            )
        self.write(
            lambda t, rev, now: ops_security.create_firewall_group(
                t,
                FirewallGroup(
                    id="fwg",
                    tenant="alice",
                    ingress_policy_id="fwp",
                    egress_policy_id="fwp",
                    ports=ifaces[:1],
                ),
                rev,
                now,
            )
        )

    # ------------------------------------------------------------------------------------------ controller state

    @rule(
        host=st.sampled_from(("172.24.4.100", "172.24.4.101")),
        mac=st.sampled_from(("02:ee:00:00:00:01", "02:ee:00:00:00:02")),
    )
    def learn_neighbor(self, host: str, mac: str) -> None:
        """The gateway chassis's ARP probe is answered (a packet-in in the real controller)."""
        with self.state.lock:
            self.dp.neighbors.learn("ext", host, mac)
        self.dp.settle()

    @rule(ch=st.sampled_from(GATEWAYS))
    def toggle_gateway_hold(self, ch: str) -> None:
        """Gateway failover holds a gateway chassis down (or lets it back up)."""

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            if ch in t.gateway_holds:
                return [("gateway_hold", ch, t.gateway_holds[ch], None)]
            return [("gateway_hold", ch, None, GatewayHold(id=ch, revision=rev))]

        self.write(fn)

    # ------------------------------------------------------------------------------------------ invariants

    @invariant()
    def incremental_equals_full(self) -> None:
        dp = self.dp
        dp.settle()
        assert self.state.listener_errors == 0, "a model listener raised (see the log)"
        with self.state.lock:
            topo = self.topo
            for ch in CHASSIS:
                if ch not in dp.compiler.runtime:
                    continue
                dpid = topo.chassis[ch].datapath_id
                if ch not in self.masters:  # another controller's: nothing kept here
                    assert not dp.compiler.keeps(ch) and ch not in dp.compiler.units, ch
                    assert not self.engines[dpid].desired, ch
                    assert not dp.compiler.check(topo, ch), ch
                    continue
                full = desired_from_scratch(
                    topo, dp.compiler.runtime, ch, GATEWAYS, dp.compiler.neighbors, dp.compiler.down
                )
                have = dp.compiler.desired(ch)
                assert have == full, (
                    ch,
                    sorted(map(str, have - full))[:5],
                    sorted(map(str, full - have))[:5],
                )
                engine = self.engines[dpid]
                assert engine.desired == set(full), ch
                assert not dp.compiler.check(topo, ch), ch

    @invariant()
    def bindings_are_the_fixed_point(self) -> None:
        """For the ports whose chassis (the fixed point's) this controller masters: another controller
        binds the others."""
        with self.state.lock:
            topo = self.topo
            reports = self.dp.reports()

            def ours(port: Port) -> bool:
                return binding.binding(port, reports, topo.chassis) in self.masters

            assert [p for p in binding.stale(topo, reports, topo.ports) if ours(topo.ports[p])] == []
            for port in topo.ports.values():
                if not binding.bindable(port) or not ours(port):
                    continue
                hosts = {ch for ch, vifs in reports.items() if port.id in vifs}
                if port.requested_chassis:
                    assert port.binding_chassis == port.requested_chassis
                elif len(hosts) == 1:
                    assert port.binding_chassis in hosts, (port.id, port.binding_chassis, hosts)

    @invariant()
    def freed_zones_are_flushed(self) -> None:
        """Every conntrack zone given up on a chassis this controller compiles since the last step (a port
        deleted, moved, unbound, re-keyed; a shared zone anywhere) and not held there again was asked to be
        flushed there; no zone held there now was."""
        with self.state.lock:
            topo = self.topo
            now = zones_in_use(topo)
            for ch in CHASSIS:
                if ch not in topo.chassis or not self.dp.compiler.keeps(ch):
                    continue
                plane = self.dp.planes.get(ch)
                engine = plane.engine if plane is not None else None
                if not isinstance(engine, FakeEngine):  # no switch engine (yet) in this controller's life
                    continue
                held = {z for c, z in now if c in (ch, "")}
                freed = {z for c, z in self.zones_before - now if c in (ch, "")} - held
                flushed = set(engine.flushed)
                assert not flushed & held, (ch, flushed & held)
                if engine is self.engine_before.get(ch) and ch in self.compiled_before:
                    assert freed <= flushed, (ch, freed - flushed)
                engine.flushed.clear()
            self.zones_before = now
            self.engine_before = {c: p.engine for c, p in self.dp.planes.items()}
            self.compiled_before = {ch for ch in CHASSIS if self.dp.compiler.keeps(ch)}

    @invariant()
    def zones_unique_per_chassis(self) -> None:
        """Keys unique; a bound VM port's zone (its key's low bits) unique on its chassis and no gateway's or
        VIP's (shared) zone; the model's zone index is what the records say (after undone writes, restarts)."""
        with self.state.lock:
            check_zones(self.topo)


def zones_in_use(topo: Topology) -> set[tuple[str, int]]:
    """(chassis, zone) of every bound VM port and ("", zone) of every shared zone."""
    out: set[tuple[str, int]] = set()
    for p in topo.ports.values():
        z = portkeys.zone_of(p.key)
        if z and portkeys.shared(p):
            out.add(("", z))
        elif z and portkeys.zoned_on(p):
            out.add((portkeys.zoned_on(p), z))
    return out


def check_zones(topo: Topology) -> None:
    ports = list(topo.ports.values())
    keys = [p.key for p in ports]
    assert all(0 < k <= portkeys.MAX_PORT_KEY for k in keys) and len(set(keys)) == len(keys)
    shared = [portkeys.zone_of(p.key) for p in ports if portkeys.shared(p)]
    assert 0 not in shared and len(set(shared)) == len(shared), shared
    per_chassis: dict[str, list[int]] = {}
    for p in ports:
        if portkeys.zoned_on(p):
            per_chassis.setdefault(p.binding_chassis, []).append(portkeys.zone_of(p.key))
    for ch, zones in per_chassis.items():
        assert 0 not in zones and len(set(zones)) == len(zones), (ch, zones)
        assert not set(zones) & set(shared), (ch, zones, shared)
    fresh = portkeys.PortKeys()
    for p in ports:
        fresh.add(p)
    index = topo.zones
    assert (index.keys.allocated, index.shared, index.local, index.local_use) == (
        fresh.keys.allocated,
        fresh.shared,
        fresh.local,
        fresh.local_use,
    )


# ANY_ORDER_EXAMPLES=2000 for a deeper search (bench/ or by hand); CI runs the default
AnyOrder.TestCase.settings = settings(
    max_examples=int(os.environ.get("ANY_ORDER_EXAMPLES", "60")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_any_order = AnyOrder.TestCase


def test_ports_bound_in_one_write_get_their_groups_rules() -> None:
    """The issue's case: VIFs reported in one OVSDB update for ports that already exist unbound bind in one
    write; the group's rules must appear on that chassis although no single port was 'the first member'."""
    m = AnyOrder()
    try:
        m.build()
        m.create_port("p0", "n0", "", set())
        m.create_port("p1", "n0", "", set())
        m.plug_many({"p0", "p1"}, "hv3")
        assert {m.topo.ports[p].binding_chassis for p in ("p0", "p1")} == {"hv3"}
        m.incremental_equals_full()
        m.bindings_are_the_fixed_point()
        m.zones_unique_per_chassis()
    finally:
        m.teardown()
