"""Gateway chassis failover: which gateway chassis are held for failed, kept as GatewayHold records in the
store (revisioned: a write moves their routers to the next candidate, or back, and a restarted controller
starts from them). When to hold and release is controller/southbound/liveness.py's (hold times, start-up
grace); the dataplane says how each gateway chassis is (`tick`'s observations)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from controller.services.host import Host, internal_write
from controller.southbound.liveness import GatewayLiveness
from topology.model import Change, Topology
from topology.records import GatewayHold

log = logging.getLogger(__name__)


class FailoverService:
    def __init__(
        self,
        host: Host,
        hold_s: float,
        clock: Callable[[], float],
        startup_grace_s: float = 10.0,
        legacy_file: Path | None = None,
    ) -> None:
        self.host = host
        # the JSON file earlier versions kept holds in (moved into the store by migrate)
        self.legacy_file = legacy_file
        held = frozenset(host.state.topology.gateway_holds) | self._load_legacy()
        self.liveness = GatewayLiveness(hold_s, clock(), startup_grace_s, held)
        # the gateway chassis whose holds this controller writes (several controllers: their masters')
        self.scope: Callable[[str], bool] = lambda _chassis_id: True

    @property
    def down(self) -> frozenset[str]:
        """The gateway chassis held for failed."""
        return self.liveness.down

    def migrate(self) -> None:
        """Earlier versions kept the holds in a JSON file beside the store: move them into it once (at
        start, before the dataplane listens to writes), then remove the file."""
        path = self.legacy_file
        if path is None or not path.exists():
            return
        held = self._load_legacy()
        internal_write(
            self.host.state,
            lambda t, rev, now: [
                ("gateway_hold", c, None, GatewayHold(id=c, revision=rev, create_time=now, update_time=now))
                for c in sorted(held)
                if c not in t.gateway_holds
            ],
            "gateway holds migrated",
        )
        path.unlink(missing_ok=True)

    def forget(self, chassis_id: str) -> None:
        """The chassis was deleted."""
        self.liveness.forget(chassis_id)

    def tick(self, now: float, healthy: Mapping[str, bool]) -> bool:
        """Observe the gateway chassis (`healthy`: chassis id -> connected and its OVSDB facts known); when
        the held set of the chassis in scope differs from the store's, store it (the write recompiles:
        routers move to the next candidate, or back to a preferred one). True if it was written: the moved
        routers' addresses are to be announced. The caller holds the model lock.

        Several controllers: every gateway chassis is observed (a new master has its history), those not in
        scope follow the store's holds, so a chassis taken over starts as its old master left it."""
        scope = self.scope
        for ch_id, ok in healthy.items():
            self.liveness.observe(ch_id, ok, now)
        stored = frozenset(self.host.state.topology.gateway_holds)
        self.liveness.follow(stored, scope)
        self.liveness.update(now, scope)
        if {c for c in self.liveness.down if scope(c)} == {c for c in stored if scope(c)}:
            return False
        topo = self.host.state.topology
        view = self.host.current_view()
        before = {r.id: view.gateway_of(r) for r in topo.routers.values()}
        log.warning("gateway chassis held down: %s", ", ".join(sorted(self.liveness.down)) or "none")
        down = self.liveness.down

        def fn(t: Topology, rev: int, now: float) -> list[Change]:
            changes: list[Change] = [
                ("gateway_hold", c, t.gateway_holds[c], None)
                for c in sorted(set(t.gateway_holds) - down)
                if scope(c)
            ]
            return changes + [
                ("gateway_hold", c, None, GatewayHold(id=c, revision=rev, create_time=now, update_time=now))
                for c in sorted(down - set(t.gateway_holds))
                if scope(c)
            ]

        internal_write(self.host.state, fn, "gateway failover")
        topo = self.host.state.topology
        view = self.host.current_view()
        for r in topo.routers.values():
            gc = view.gateway_of(r)
            if gc != before.get(r.id):
                log.warning("router %s: gateway chassis %s -> %s", r.id, before.get(r.id), gc)
        return True

    def _load_legacy(self) -> frozenset[str]:
        path = self.legacy_file
        if path is None or not path.exists():
            return frozenset()
        try:
            return frozenset(str(c) for c in json.loads(path.read_text()).get("down", []))
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("%s unreadable: every gateway chassis starts up", path)
            return frozenset()
