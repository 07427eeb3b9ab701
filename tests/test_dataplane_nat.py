"""The controller's part of north-south: ARP probes for unresolved external next hops (packet-in ->
packet-out, rate-limited), learning the answers (-> arp_resolve flows on the gateway chassis), keeping them
across a restart. A real State and Dataplane; fake switch engines and OVSDB agents."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import netaddr
from os_ken.lib.packet import arp, ethernet, ipv4, packet

from apps import ids
from controller.dataplane import Dataplane
from flows.actions import SetField
from flows.flow import Flow
from flows.pipeline import MATCH
from topology import ops
from topology.records import Chassis, Network, Port, Router, Subnet
from topology.state import State

PATCH, TUN = 200, 100
EXT_HOST = ("172.24.4.100", "02:ee:00:00:00:64")
NAT_COOKIE = int(ids.cookie(ids.NAT, "ext"))  # the cookie of the NAT app's flows sending to the controller


def nat_packet_in(dp: Dataplane, dpid: int, data: bytes, match: dict[str, Any]) -> None:
    """A packet-in of a NAT app's flow, as the worker handles it (the neighbour service's)."""
    dp.handle_packet_in(dpid, data, match, NAT_COOKIE)


class FakeEngine:
    def __init__(self) -> None:
        self.realized_revision = 0
        self.desired: set[Any] = set()
        self.flushed: list[int] = []  # conntrack zones asked to be flushed

    def apply(self, add: Any, remove: Any, revision: int) -> None:
        self.desired = (self.desired - set(remove)) | set(add)

    def replace_desired(self, items: Any, revision: int) -> None:
        self.desired = set(items)

    def forget(self) -> None:
        self.desired = set()

    def flush_zones(self, zones: Any) -> None:
        self.flushed += list(zones)


class FakeAgent:
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def update(self, **_kw: Any) -> None: ...


def build(state: State) -> None:
    def fn(t, rev, now):  # type: ignore[no-untyped-def]
        changes = []
        for i, name in enumerate(("hv1", "hv2"), 1):
            c = ops.create_chassis(
                t,
                Chassis(
                    id=name,
                    datapath_id=i,
                    tunnel_ip=f"192.0.2.{i}",
                    ovsdb_address="unix:/nonexistent",
                    bridge_mappings=(("physnet1", "br-prov"),),
                ),
                rev,
                now,
            )
            t.apply(c, rev)
            changes += c
        for net, cidr, kw in (
            (
                "ext",
                "172.24.4.0/24",
                {"segment_type": "flat", "physical_network": "physnet1", "external": True},
            ),
            ("a", "10.0.0.0/24", {}),
        ):
            c = ops.create_network(t, Network(id=net, tenant="alice", **kw), rev, now)
            t.apply(c, rev)
            c2 = ops.create_subnet(
                t, Subnet(id=f"{net}-sub", tenant="alice", network_id=net, cidr=cidr), False, rev, now
            )
            t.apply(c2, rev)
            changes += c + c2
        c = ops.create_router(t, Router(id="r", tenant="alice"), ops.GatewayRequest("ext"), rev, now)
        t.apply(c, rev)
        c2 = ops.add_router_interface(t, t.routers["r"], "a-sub", "", "r-a", rev, now)
        t.apply(c2, rev)
        c3 = ops.create_port(
            t, Port(id="vm", tenant="alice", network_id="a", mac="", binding_chassis="hv2"), [], rev, now
        )
        t.apply(c3, rev)
        return changes + c + c2 + c3

    state.write(fn)


def dataplane(tmp: Path) -> tuple[Dataplane, list[tuple[int, bytes, int]], dict[int, FakeEngine]]:
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
        gateway_chassis=("hv1",),
        neighbors_file=tmp / "neighbors.json",
    )
    sent: list[tuple[int, bytes, int]] = []
    dp.packet_out = lambda dpid, data, port: sent.append((dpid, data, port)) or True
    dp.start()
    for name, vifs in (("hv1", {}), ("hv2", {"vm": 5})):
        dp._on_runtime(name, SimpleNamespace(vifs=vifs, tunnels={"vxlan": TUN}, patches={"physnet1": PATCH}))
    return dp, sent, engines


def gateway(dp: Dataplane) -> Port:
    return next(p for p in dp.state.topology.router_ports("r") if p.network_id == "ext")


def arp_resolve_flows(engine: FakeEngine, ext_key: int) -> dict[int, str]:
    """NEXT_HOP -> MAC of the external network's learnt arp_resolve flows (not the router's own addresses,
    which resolve to its gateway MAC one priority above, for hairpin)."""
    return {
        f.match_dict()["reg0"]: next(
            a.value for a in f.actions if isinstance(a, SetField) and a.field == "eth_dst"
        )
        for f in engine.desired
        if isinstance(f, Flow)
        and f.stage == "arp_resolve"
        and f.priority == MATCH()
        and "reg0" in f.match_dict()
        and f.match_dict()["metadata"] == ext_key
    }


def test_a_miss_is_probed_once_per_second_and_the_answer_becomes_a_flow_that_survives_a_restart(
    tmp_path: Path,
) -> None:
    dp, sent, engines = dataplane(tmp_path)
    try:
        topo = dp.state.topology
        gw = gateway(dp)
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet("00:00:00:00:00:00", gw.mac, 0x0800))
        pkt.add_protocol(ipv4.ipv4(src="172.24.4.2", dst="8.8.8.8", proto=1))
        pkt.serialize()
        ext_key = topo.networks["ext"].key
        match = {"metadata": ext_key, "reg0": int(netaddr.IPAddress(EXT_HOST[0]))}
        nat_packet_in(dp, 1, bytes(pkt.data), match)
        nat_packet_in(dp, 1, bytes(pkt.data), match)  # within the probe interval: no second probe
        assert len(sent) == 1
        dpid, data, port = sent[0]
        req = packet.Packet(data).get_protocol(arp.arp)
        assert (dpid, port) == (1, PATCH)
        assert (req.opcode, req.src_mac, req.src_ip, req.dst_ip) == (
            arp.ARP_REQUEST,
            gw.mac,
            gw.fixed_ips[0][1],
            EXT_HOST[0],
        )
        nat_packet_in(dp, 2, bytes(pkt.data), match)
        assert len(sent) == 1  # hv2 is no gateway
        # the answer, to the gateway MAC: learnt, compiled into hv1's arp_resolve, saved
        rep = packet.Packet()
        rep.add_protocol(ethernet.ethernet(gw.mac, EXT_HOST[1], 0x0806))
        rep.add_protocol(
            arp.arp(
                opcode=arp.ARP_REPLY,
                src_mac=EXT_HOST[1],
                src_ip=EXT_HOST[0],
                dst_mac=gw.mac,
                dst_ip=gw.fixed_ips[0][1],
            )
        )
        rep.serialize()
        nat_packet_in(dp, 1, bytes(rep.data), {})
        want = {int(netaddr.IPAddress(EXT_HOST[0])): EXT_HOST[1]}
        assert arp_resolve_flows(engines[1], ext_key) == want
        assert arp_resolve_flows(engines[2], ext_key) == {}
        assert [(n.network_id, n.address, n.mac) for n in dp.state.topology.neighbors.values()] == [
            ("ext", EXT_HOST[0], EXT_HOST[1])
        ]  # in the store: revisioned, kept across restarts
    finally:
        dp.stop()
        dp.state.close()
    again, _sent, engines2 = dataplane(tmp_path)
    try:
        assert arp_resolve_flows(engines2[1], ext_key) == want
    finally:
        again.stop()
        again.state.close()


def test_neighbours_and_gateway_holds_of_the_old_json_files_move_into_the_store(tmp_path: Path) -> None:
    """Earlier versions kept them in neighbors.json and gateways.json beside the store."""
    (tmp_path / "neighbors.json").write_text(
        json.dumps({"ext": {EXT_HOST[0]: EXT_HOST[1]}, "gone": {"10.9.9.9": "02:00:00:00:00:09"}})
    )
    (tmp_path / "gateways.json").write_text('{"down": ["hv2"]}')
    state = State(tmp_path / "topology.sqlite")
    build(state)
    dp = Dataplane(
        state,
        engine_factory=lambda _d, _cb: FakeEngine(),
        agent_factory=lambda _ch, _cb: FakeAgent(),
        gateway_chassis=("hv1", "hv2"),
        neighbors_file=tmp_path / "neighbors.json",
        gateways_file=tmp_path / "gateways.json",
        tick_s=0,
    )
    dp.start()
    try:
        topo = state.topology
        assert [(n.network_id, n.address, n.mac) for n in topo.neighbors.values()] == [("ext", *EXT_HOST)]
        assert set(topo.gateway_holds) == {"hv2"} and dp.compiler.down == {"hv2"}
        assert dp.compiler.neighbors == {"ext": {EXT_HOST[0]: EXT_HOST[1]}}
        assert not (tmp_path / "neighbors.json").exists() and not (tmp_path / "gateways.json").exists()
    finally:
        dp.stop()
        state.close()
