"""Gateway chassis failover and neighbour expiry in the controller, with an injected clock: a real State and
Dataplane, fake switch engines and OVSDB agents (the lab test is tests/test_e2e_gateway_failover.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import netaddr
from os_ken.lib.packet import arp, ethernet, packet

from controller.dataplane import Dataplane
from controller.southbound.liveness import GatewayLiveness
from flows.actions import SetField
from flows.flow import Flow
from tests.test_dataplane_nat import (
    EXT_HOST,
    PATCH,
    TUN,
    FakeAgent,
    FakeEngine,
    build,
    gateway,
    nat_packet_in,
)
from topology.state import State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_holds_down_after_the_hold_time_and_up_again_after_as_long() -> None:
    lv = GatewayLiveness(hold_s=3, start=0, startup_grace_s=10)
    lv.observe("hv1", True, 0.5)
    lv.observe("hv2", False, 0.5)  # never seen healthy: the startup grace applies
    assert not lv.update(5) and lv.down == frozenset()
    assert lv.update(10) and lv.down == {"hv2"}
    lv.observe("hv1", False, 11)
    assert not lv.update(13.9) and lv.down == {"hv2"}
    lv.observe("hv1", True, 12)  # a blip shorter than the hold time moves nothing
    lv.observe("hv1", False, 12.5)
    assert not lv.update(15) and lv.down == {"hv2"}
    assert lv.update(15.5) and lv.down == {"hv1", "hv2"}
    lv.observe("hv1", True, 20)
    assert not lv.update(22.9)
    assert lv.update(23) and lv.down == {"hv2"}


def test_liveness_starts_from_the_persisted_down_set() -> None:
    lv = GatewayLiveness(hold_s=3, start=0, down=frozenset({"hv1"}))
    lv.observe("hv1", True, 0.1)
    assert not lv.update(1) and lv.down == {"hv1"}
    assert lv.update(3.1) and lv.down == frozenset()


def make(
    tmp: Path, clock: Clock, up: set[int], ttl: float = 600.0
) -> tuple[Dataplane, list[Any], dict[int, FakeEngine]]:
    state = State(tmp / "topology.sqlite")
    if not state.topology.routers:
        build(state)
    engines: dict[int, FakeEngine] = {}

    def engine(dpid: int, _cb: Any) -> FakeEngine:
        engines[dpid] = FakeEngine()
        return engines[dpid]

    dp = Dataplane(
        state,
        engine_factory=engine,
        agent_factory=lambda _ch, _cb: FakeAgent(),
        gateway_chassis=("hv1", "hv2"),
        neighbors_file=tmp / "neighbors.json",
        gateways_file=tmp / "gateways.json",
        connected=lambda dpid: dpid in up,
        gateway_failover_s=2.0,
        neighbor_ttl_s=ttl,
        clock=clock,
        tick_s=0,
        startup_grace_s=10,
    )
    sent: list[Any] = []
    dp.packet_out = lambda dpid, data, port: sent.append((dpid, data, port)) or True
    dp.start()
    for name, vifs in (("hv1", {}), ("hv2", {"vm": 5})):
        dp._on_runtime(
            name,
            SimpleNamespace(vifs=vifs, tunnels={"vxlan": TUN}, patches={"physnet1": PATCH}, connected=True),
        )
    return dp, sent, engines


def has_gateway(engine: FakeEngine, mac: str) -> bool:
    return any(
        isinstance(f, Flow) and f.stage == "l2_lookup" and f.match_dict().get("eth_dst") == mac
        for f in engine.desired
    )


def redirect_target(engine: FakeEngine) -> set[str]:
    return {
        a.value
        for f in engine.desired
        if isinstance(f, Flow) and f.stage == "l3_lookup"
        for a in f.actions
        if isinstance(a, SetField) and a.field == "tun_ipv4_dst"
    }


def garps(sent: list[Any]) -> list[tuple[int, str, str]]:
    out = []
    for dpid, data, port in sent:
        a = packet.Packet(data).get_protocol(arp.arp)
        if a is not None and a.src_ip == a.dst_ip:
            out.append((dpid, a.src_ip, a.src_mac))
            assert port == PATCH
    return out


def test_a_disconnected_gateway_chassis_loses_its_routers_and_gets_them_back(tmp_path: Path) -> None:
    clock, up = Clock(), {1, 2}
    dp, sent, engines = make(tmp_path, clock, up)
    try:
        gw = gateway(dp)
        dp.tick()
        assert has_gateway(engines[1], gw.mac) and not has_gateway(engines[2], gw.mac)
        up.discard(1)  # hv1's switch goes away (seen at the next tick)
        dp.tick()
        clock.now += 1.9
        dp.tick()
        assert has_gateway(engines[1], gw.mac) and not sent, "within the hold time nothing moves"
        clock.now += 0.2
        dp.tick()
        assert has_gateway(engines[2], gw.mac) and not has_gateway(engines[1], gw.mac)
        assert dp.compiler.down == {"hv1"}
        assert garps(sent) == [(2, gw.fixed_ips[0][1], gw.mac)], "announced from hv2 at once"
        clock.now += 1.0
        dp.tick()
        clock.now += 2.0
        dp.tick()
        assert len(garps(sent)) == 3
        # a restart meanwhile keeps the router on hv2 (the down set is kept)
        dp.stop()
        dp.state.close()
        dp, sent, engines = make(tmp_path, clock, up)
        dp.tick()
        assert has_gateway(engines[2], gw.mac) and not has_gateway(engines[1], gw.mac)
        up.add(1)  # back: after the hold time the router returns to the preferred chassis
        clock.now += 0.1
        dp.tick()
        clock.now += 1.0
        dp.tick()
        assert has_gateway(engines[2], gw.mac)
        clock.now += 1.1
        dp.tick()
        assert has_gateway(engines[1], gw.mac) and not has_gateway(engines[2], gw.mac)
        assert garps(sent) and all(d == 1 for d, _ip, _mac in garps(sent))
    finally:
        dp.stop()
        dp.state.close()


def test_a_restarted_controller_moves_nothing_while_switches_reconnect(tmp_path: Path) -> None:
    clock, up = Clock(), set()
    dp, _sent, engines = make(tmp_path, clock, up)
    try:
        gw = gateway(dp)
        clock.now += 9.0  # not connected yet, within the startup grace
        dp.tick()
        assert has_gateway(engines[1], gw.mac) and dp.compiler.down == frozenset()
        up |= {1, 2}
        clock.now += 5.0
        dp.tick()
        assert has_gateway(engines[1], gw.mac) and dp.compiler.down == frozenset()
    finally:
        dp.stop()
        dp.state.close()


def test_other_chassis_redirect_to_the_new_gateway(tmp_path: Path) -> None:
    clock, up = Clock(), {1, 2}
    dp, _sent, engines = make(tmp_path, clock, up)
    try:
        dp.tick()
        # hv2 redirects to hv1 now; once hv1 is down hv2 is the gateway itself (no redirect left)
        assert redirect_target(engines[2]) == {"192.0.2.1"}
        up.discard(1)
        dp.tick()
        clock.now += 2.1
        dp.tick()
        assert redirect_target(engines[2]) == set()
    finally:
        dp.stop()
        dp.state.close()


def reply(gw: Any, mac: str) -> bytes:
    rep = packet.Packet()
    rep.add_protocol(ethernet.ethernet(gw.mac, mac, 0x0806))
    rep.add_protocol(
        arp.arp(
            opcode=arp.ARP_REPLY, src_mac=mac, src_ip=EXT_HOST[0], dst_mac=gw.mac, dst_ip=gw.fixed_ips[0][1]
        )
    )
    rep.serialize()
    return bytes(rep.data)


def resolved(engine: FakeEngine, ext_key: int) -> dict[int, str]:
    return {
        f.match_dict()["reg0"]: next(
            a.value for a in f.actions if isinstance(a, SetField) and a.field == "eth_dst"
        )
        for f in engine.desired
        if isinstance(f, Flow)
        and f.stage == "arp_resolve"
        and "reg0" in f.match_dict()
        and f.match_dict()["metadata"] == ext_key
    }


def probes(sent: list[Any]) -> list[str]:
    return [
        a.dst_ip
        for _d, data, _p in sent
        if (a := packet.Packet(data).get_protocol(arp.arp)) is not None and a.src_ip != a.dst_ip
    ]


def test_neighbours_expire_unless_a_reprobe_is_answered(tmp_path: Path) -> None:
    clock, up = Clock(), {1, 2}
    dp, sent, engines = make(tmp_path, clock, up, ttl=60)
    try:
        gw = gateway(dp)
        ext_key = dp.state.topology.networks["ext"].key
        hop = int(netaddr.IPAddress(EXT_HOST[0]))
        nat_packet_in(dp, 1, reply(gw, EXT_HOST[1]), {})
        assert resolved(engines[1], ext_key).get(hop) == EXT_HOST[1]
        clock.now += 59
        dp.tick()
        assert probes(sent) == []
        clock.now += 1.5  # stale: probed (broadcast, from the gateway chassis), still used meanwhile
        dp.tick()
        assert probes(sent) == [EXT_HOST[0]] and sent[-1][0] == 1
        # the answer comes from a new MAC: it replaces the old one and the age starts again
        nat_packet_in(dp, 1, reply(gw, "02:ee:00:00:00:99"), {})
        assert resolved(engines[1], ext_key).get(hop) == "02:ee:00:00:00:99"
        clock.now += 30
        dp.tick()
        assert len(probes(sent)) == 1
        clock.now += 31  # stale again, and nobody answers: probed once a second, then removed
        for _ in range(3):
            dp.tick()
            assert resolved(engines[1], ext_key).get(hop) == "02:ee:00:00:00:99"
            clock.now += 1.01
        dp.tick()
        assert len(probes(sent)) == 4
        assert hop not in resolved(engines[1], ext_key)
        assert not dp.state.topology.neighbors  # removed from the store too
    finally:
        dp.stop()
        dp.state.close()


def test_with_every_gateway_chassis_down_the_router_stays_on_the_preferred_one(tmp_path: Path) -> None:
    clock, up = Clock(), {1, 2}
    dp, sent, engines = make(tmp_path, clock, up)
    try:
        gw = gateway(dp)
        dp.tick()
        up.clear()
        dp.tick()
        clock.now += 2.1
        dp.tick()
        assert dp.compiler.down == {"hv1", "hv2"}
        assert has_gateway(engines[1], gw.mac) and not has_gateway(engines[2], gw.mac) and not garps(sent)
    finally:
        dp.stop()
        dp.state.close()
