"""Which gateway chassis are held for failed: pure bookkeeping over observations, with an injected clock.

A gateway chassis is healthy while its switch is connected to the controller (OpenFlow) and its OVSDB facts
are known (the agent's session is up). It is held DOWN once it has been unhealthy for `hold_s` without a
break, and UP again once it has been healthy for `hold_s` (a flapping switch does not drag routers back
and forth). A chassis never seen healthy since the controller started gets `startup_grace_s` from the
start instead: switches reconnect to a restarted controller within about a second, and a restart must not
move routers (hitless). Chassis held down when the controller stopped (the persisted set) start down and
come up like any other after `hold_s` healthy, so a restart during a failover moves nothing either.

Several controllers: each observes every gateway chassis all along (its own OpenFlow and OVSDB sessions),
but judges only those it masters (`judge`); the others' down state follows the store (`follow`: what their
masters wrote). A new master thus starts from the store's holds and its own history of observations, not
from scratch: a takeover alone moves no router.
"""

from __future__ import annotations

from collections.abc import Callable


class GatewayLiveness:
    def __init__(
        self, hold_s: float, start: float, startup_grace_s: float = 10.0, down: frozenset[str] = frozenset()
    ) -> None:
        self.hold_s = hold_s
        self.start = start
        self.startup_grace_s = max(startup_grace_s, hold_s)
        self.down: frozenset[str] = frozenset(down)
        self._state: dict[str, tuple[bool, float]] = {}  # chassis -> (healthy, since when)
        self._seen_healthy: set[str] = set()

    def observe(self, chassis_id: str, healthy: bool, now: float) -> None:
        cur = self._state.get(chassis_id)
        if cur is None:
            self._state[chassis_id] = (healthy, now if healthy else self.start)
        elif cur[0] != healthy:
            self._state[chassis_id] = (healthy, now)
        if healthy:
            self._seen_healthy.add(chassis_id)

    def forget(self, chassis_id: str) -> None:
        self._state.pop(chassis_id, None)
        self._seen_healthy.discard(chassis_id)
        self.down -= {chassis_id}

    def follow(self, held: frozenset[str], judge: Callable[[str], bool]) -> None:
        """The chassis not ours to judge are down as the store holds them (their masters' judgement)."""
        self.down = frozenset(c for c in self.down if judge(c)) | frozenset(c for c in held if not judge(c))

    def update(self, now: float, judge: Callable[[str], bool] = lambda _c: True) -> bool:
        """Apply the hold times to the chassis ours to judge; True if the down set changed."""
        down = set(self.down)
        for ch, (healthy, since) in self._state.items():
            if not judge(ch):
                continue
            if healthy:
                if now - since >= self.hold_s:
                    down.discard(ch)
            else:
                wait = self.hold_s if ch in self._seen_healthy else self.startup_grace_s
                if now - since >= wait:
                    down.add(ch)
        changed = frozenset(down) != self.down
        self.down = frozenset(down)
        return changed
