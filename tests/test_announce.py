"""Gratuitous ARPs from the controller (controller/announce.py) with an injected clock: a real State and
Dataplane, fake switch engines and OVSDB agents; what leaves by packet-out, where and when (the lab test is
tests/test_e2e_announce.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from os_ken.lib.packet import arp, ethernet, packet

from controller.dataplane import Dataplane
from controller.services.announce import Announcer, Claim, Pending
from tests.test_dataplane_nat import PATCH, gateway
from tests.test_gateway_failover import Clock, make
from topology import ops
from topology.records import FloatingIp, Port
from topology.state import State

VM_OFPORT = 5  # the VM "vm" of network "a" is plugged on hv2 (datapath 2)


def announced(sent: list[Any]) -> list[tuple[int, int, str, str]]:
    """(datapath, ofport, address, MAC) of every gratuitous ARP request sent, oldest first."""
    out = []
    for dpid, data, port in sent:
        pkt = packet.Packet(data)
        a, eth = pkt.get_protocol(arp.arp), pkt.get_protocol(ethernet.ethernet)
        if a is not None and a.opcode == arp.ARP_REQUEST and a.src_ip == a.dst_ip:
            assert eth.dst == "ff:ff:ff:ff:ff:ff" and eth.src == a.src_mac
            out.append((dpid, port, a.src_ip, a.src_mac))
    return out


def realize(dp: Dataplane) -> None:
    for plane in dp.planes.values():
        assert plane.engine is not None
        plane.engine.realized_revision = plane.seq  # type: ignore[misc]


def write(state: State, fn: Any) -> None:
    state.write(lambda t, rev, now: fn(t, rev, now))


def test_a_re_added_router_interface_is_announced_to_the_networks_vms_after_its_flows(tmp_path: Path) -> None:
    clock = Clock()
    dp, sent, _engines = make(tmp_path, clock, {1, 2})
    try:
        dp.tick()
        assert not sent, "a start announces nothing"
        old = dp.state.topology.ports["r-a"]
        write(
            dp.state,
            lambda t, rev, now: ops.remove_router_interface(t, t.routers["r"], "a-sub", "", rev, now),
        )
        write(
            dp.state,
            lambda t, rev, now: ops.add_router_interface(t, t.routers["r"], "a-sub", "", "r-a2", rev, now),
        )
        new = dp.state.topology.ports["r-a2"]
        assert new.mac != old.mac and new.fixed_ips == old.fixed_ips
        dp.tick()
        assert not announced(sent), "not before the chassis's switch has the new flows"
        realize(dp)
        dp.tick()
        addr = new.fixed_ips[0][1]
        assert announced(sent) == [(2, VM_OFPORT, addr, new.mac)], "to the network's VM, from its chassis"
        clock.now += 1.0
        dp.tick()
        clock.now += 2.0
        dp.tick()
        clock.now += 10.0
        dp.tick()
        assert announced(sent) == [(2, VM_OFPORT, addr, new.mac)] * 3
        assert all(port != PATCH for _d, port, _a, _m in announced(sent)), "never onto the physical network"
    finally:
        dp.stop()
        dp.state.close()


def test_a_new_floating_ip_is_announced_from_the_gateway_chassis_only(tmp_path: Path) -> None:
    clock = Clock()
    dp, sent, _engines = make(tmp_path, clock, {1, 2})
    try:
        dp.tick()
        realize(dp)
        write(
            dp.state,
            lambda t, rev, now: ops.create_floating_ip(
                t,
                FloatingIp(id="f", tenant="alice", network_id="ext", address="172.24.4.50", port_id="vm"),
                "f-port",
                rev,
                now,
            ),
        )
        realize(dp)
        dp.tick()
        gw = gateway(dp)
        assert announced(sent) == [(1, PATCH, "172.24.4.50", gw.mac)], (
            "hv1 (the gateway chassis), out its patch"
        )
        # a VM port that comes and goes changes nothing announced
        write(
            dp.state,
            lambda t, rev, now: ops.create_port(
                t, Port(id="vm2", tenant="alice", network_id="a", mac="", binding_chassis="hv2"), [], rev, now
            ),
        )
        realize(dp)
        clock.now += 5.0
        dp.tick()
        clock.now += 5.0
        dp.tick()
        assert len(announced(sent)) == 3 and all(s[2] == "172.24.4.50" for s in announced(sent))
    finally:
        dp.stop()
        dp.state.close()


def test_announcements_beyond_a_chassis_rate_wait_for_it() -> None:
    ann = Announcer(delays_s=(0.0,), rate_pps=10.0)
    claims = [Claim("a", f"10.0.0.{i}", "fa:16:3e:00:00:01") for i in range(1, 5)]
    ann.current = {(c.network_id, c.address): c for c in claims}
    ann.pending = [Pending(0.0, c, "hv1", 0) for c in claims]
    ready = lambda _ch, _rev: True
    first = ann.due(0.0, ready, lambda _p: 4)  # 4 packets each (4 VM ports); a burst of 10
    assert len(first) == 2 and len(ann.pending) == 2
    assert ann.due(0.1, ready, lambda _p: 4) == []  # 2 + 1 tokens
    assert len(ann.due(0.2, ready, lambda _p: 4)) == 1  # 4 tokens
    assert len(ann.due(1.0, ready, lambda _p: 4)) == 1
    # another chassis has a rate of its own; a claim that changed meanwhile is not announced any more
    ann.pending = [Pending(1.0, claims[0], "hv2", 0), Pending(1.0, claims[1], "hv2", 0)]
    ann.current[("a", claims[1].address)] = Claim("a", claims[1].address, "fa:16:3e:00:00:02")
    assert [p.claim for p in ann.due(1.0, ready, lambda _p: 4)] == [claims[0]] and not ann.pending
