"""What the controller's services (neighbours, gateway failover, announcements, DHCP, firewall rejects) get
from the dataplane, and what they hand it: packet-ins of their apps' flows, the chassis they may send
packets out of, and writes of the controller's own state (named in flow provenance)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from apps.view import ChassisRuntime, View
from controller.api.context import REQUEST
from topology.model import Change, Topology
from topology.state import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PacketIn:
    """A packet-in for an app's handler (registered in Dataplane.packet_in_apps by the cookie's app id),
    called on the dataplane worker under the model lock: reply with Dataplane.packet_out."""

    chassis_id: str
    datapath_id: int
    data: bytes
    match: dict[str, Any]  # the packet-in's match: in_port, metadata, registers
    topo: Topology
    view: Any  # apps.view.View of the current model


PacketInHandler = Callable[[PacketIn], None]


class Host(Protocol):
    """The dataplane as a service sees it (controller.dataplane.Dataplane); called under the model lock."""

    state: State
    #: sends a packet out a port of a switch: (datapath id, bytes, ofport) -> sent; None: nothing can be sent
    packet_out: Callable[[int, bytes, int], bool] | None

    def current_view(self) -> View:
        """The compilers' view of the current model (with the chassis's runtime facts)."""
        ...

    def runtime_of(self, chassis_id: str) -> tuple[int, ChassisRuntime] | None:
        """(datapath id, OVSDB facts) of a chassis whose facts are known; None otherwise."""
        ...

    def realized_on(self, chassis_id: str, revision: int) -> bool:
        """Has the chassis's switch confirmed the flows of model revision `revision` (<= 0: any)?"""
        ...


def internal_write(state: State, fn: Callable[[Topology, int, float], list[Change]], why: str) -> None:
    """A write of the controller's own state (neighbours, gateway holds), named in flow provenance; a
    failure is logged, not raised (the service tries again at its next event)."""
    token = REQUEST.set(why)
    try:
        state.write(fn)
    except Exception:
        log.exception("could not store %s", why)
    finally:
        REQUEST.reset(token)
