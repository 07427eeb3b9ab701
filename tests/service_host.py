"""A Host for the services' unit tests (controller/services/host.py): a real State built by
tests/test_dataplane_nat.py's `build` (gateway chassis hv1 then hv2, an external network "ext" on physnet1,
router "r"), chassis facts as given, every revision realized, packet-outs recorded; no Dataplane."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from os_ken.lib.packet import arp, packet

from apps.view import ChassisRuntime, View
from controller.services.host import PacketIn
from tests.test_dataplane_nat import PATCH, build
from topology.records import Port
from topology.state import State

GATEWAYS = ("hv1", "hv2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeHost:
    def __init__(self, tmp: Path) -> None:
        self.state = State(tmp / "topology.sqlite")
        if not self.state.topology.routers:
            build(self.state)
        self.sent: list[tuple[int, bytes, int]] = []
        self.packet_out: Callable[[int, bytes, int], bool] | None = self._send
        self.runtimes = {
            ch: (dpid, ChassisRuntime(ch, patches={"physnet1": PATCH})) for dpid, ch in enumerate(GATEWAYS, 1)
        }

    def _send(self, dpid: int, data: bytes, port: int) -> bool:
        self.sent.append((dpid, data, port))
        return True

    def current_view(self) -> View:
        topo = self.state.topology
        runtime = {ch: rt for ch, (_d, rt) in self.runtimes.items()}
        return View(topo, runtime, GATEWAYS, topo.neighbor_map(), down=frozenset(topo.gateway_holds))

    def runtime_of(self, chassis_id: str) -> tuple[int, ChassisRuntime] | None:
        return self.runtimes.get(chassis_id)

    def realized_on(self, chassis_id: str, revision: int) -> bool:
        return chassis_id in self.runtimes

    def packet_in(self, chassis_id: str, data: bytes, match: dict[str, Any]) -> PacketIn:
        topo = self.state.topology
        return PacketIn(chassis_id, self.runtimes[chassis_id][0], data, match, topo, self.current_view())

    def gateway(self) -> Port:
        return next(p for p in self.state.topology.router_ports("r") if p.network_id == "ext")

    def probes(self) -> list[tuple[int, str]]:
        """(datapath, address asked for) of every ARP request sent that is not gratuitous, oldest first."""
        return [
            (dpid, a.dst_ip)
            for dpid, data, _port in self.sent
            if (a := packet.Packet(data).get_protocol(arp.arp)) is not None and a.src_ip != a.dst_ip
        ]
