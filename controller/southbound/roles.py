"""Which controller is master of which chassis, when several share one etcd (store = "etcd").

Keys under the deployment's prefix (`PREFIX/ha/`), all attached to their controller's one lease:

    ha/controllers/<controller id>   this controller is alive (the live set)
    ha/owner/<chassis id>            the chassis's master; the key's create revision is the OpenFlow role
                                     generation id it sends (etcd revisions only grow: a later master always
                                     has a higher one, so a deposed master's late ROLE_REQUEST is stale)

Each controller runs `Ownership`: it keeps its lease alive (every lease/3), reads `ha/` every `interval`,
and for each chassis of the model: keeps the key it holds; campaigns (create-if-absent) for an absent one
that rendezvous hashing over the live set gives it (`assign`), or for any absent one past a short grace
(its designated controller may be dying too); hands over a chassis the hash now gives a newer controller
(steps down first, then deletes its key). A controller whose keepalives have failed for
`lease - margin` steps down from every chassis on its own (`LeaseTimer`): the lease can expire in etcd
only after `lease` from the last keepalive etcd granted, so it is never master while another is.

What being master means is the caller's (`on_role`): the OpenFlow role request, the sync engine pushing,
packet-in services answering (controller/main.py wires it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from topology.etcd_store import EtcdStore

log = logging.getLogger(__name__)

#: an absent owner key is left to the controller the hash names for this long; then anyone campaigns
CAMPAIGN_GRACE_S = 1.0


def assign(chassis: Iterable[str], controllers: Iterable[str]) -> dict[str, str]:
    """Each chassis's controller by rendezvous (highest random weight) hashing: a controller joining or
    leaving moves only the chassis it gains or held; chassis spread evenly. {} without controllers."""
    live = sorted(set(controllers))
    if not live:
        return {}

    def weight(ch: str, ctl: str) -> bytes:
        return hashlib.sha256(f"{ch}\0{ctl}".encode()).digest()

    return {ch: max(live, key=lambda ctl: weight(ch, ctl)) for ch in chassis}


@dataclass
class LeaseTimer:
    """Is this controller's lease surely still alive in etcd? Pure; the clock is passed in.

    `renewed(sent_at)` with the time a grant or keepalive that etcd confirmed was *sent* (etcd renewed it
    later than that, so the lease lasts at least until sent_at + lease_s). Valid until lease_s - margin_s
    after it: the margin covers a slow step-down (a thread scheduled late, a role request in flight)."""

    lease_s: float
    margin_s: float
    last_ok: float | None = None

    def renewed(self, sent_at: float) -> None:
        if self.last_ok is None or sent_at > self.last_ok:
            self.last_ok = sent_at

    def lost(self) -> None:
        self.last_ok = None

    def valid(self, now: float) -> bool:
        return self.last_ok is not None and now - self.last_ok < self.lease_s - self.margin_s

    def step_down_at(self) -> float | None:
        return None if self.last_ok is None else self.last_ok + self.lease_s - self.margin_s


#: on_role(chassis id, master?, generation): the generation is the master's (ours or the known owner's; 0:
#: no owner known)
RoleCallback = Callable[[str, bool, int], None]


class Ownership:
    """Campaign for, keep, hand over and step down from chassis; see the module docstring. Thread-safe."""

    def __init__(
        self,
        store: EtcdStore,
        controller_id: str,
        chassis: Callable[[], Iterable[str]],
        on_role: RoleCallback,
        lease_s: float = 3.0,
        margin_s: float = 1.0,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.controller_id = controller_id
        self._chassis = chassis
        self._on_role = on_role
        self.timer = LeaseTimer(lease_s, margin_s)
        self.ttl = max(1, math.ceil(lease_s))
        self.interval = interval
        self.clock = clock
        prefix = store.prefix + b"ha/"
        self.ha_prefix = prefix
        self.controllers_prefix = prefix + b"controllers/"
        self.owner_prefix = prefix + b"owner/"
        self._lock = threading.Lock()
        self._masters: dict[str, int] = {}  # chassis -> our generation, while we are its master
        self._told: dict[str, tuple[bool, int]] = {}  # what on_role last said per chassis
        self._absent_since: dict[str, float] = {}
        self._lease: int | None = None
        self._last_keepalive = -1e9
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owners: dict[str, str] = {}  # chassis -> its master's controller id, as last read
        self.step_downs = 0  # times every chassis was given up because etcd stopped answering
        self.takeovers = 0  # chassis taken (created owner keys)

    # --------------------------------------------------------------------------------------- queries

    def is_master(self, chassis_id: str) -> bool:
        with self._lock:
            return chassis_id in self._masters

    def lease(self) -> int | None:
        """The lease our keys are attached to (None: none granted now)."""
        return self._lease

    def owner_of(self, chassis_id: str) -> str | None:
        """The controller that masters the chassis, as of the last round (None: none known)."""
        return self.owners.get(chassis_id)

    def masters(self) -> dict[str, int]:
        """Chassis we are master of -> generation."""
        with self._lock:
            return dict(self._masters)

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ownership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Step down from everything and end the lease (the others take over at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._step_down_all("controller stopping", expected=True)
        if self._lease is not None:
            try:
                self.store.lease_revoke(self._lease)
            except Exception as err:  # noqa: BLE001 - best effort: the lease expires anyway
                log.warning("could not revoke the ownership lease: %s", err)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("ownership round failed")
            wait = self.interval
            at = self.timer.step_down_at()
            if at is not None and self._masters:
                wait = max(0.01, min(wait, at - self.clock()))
            self._stop.wait(wait)

    # --------------------------------------------------------------------------------------- one round

    def step(self) -> None:
        """One round: keep the lease alive, step down if it may be gone, else settle each chassis."""
        self._keepalive()
        now = self.clock()
        if not self.timer.valid(now):
            if self._masters:
                self.step_downs += 1
            self._step_down_all("etcd lease not renewed in time")
            return
        try:
            _rev, kvs = self.store.range_prefix(self.ha_prefix)
        except OSError as err:
            log.debug("ownership: etcd read failed: %s", err)
            return
        live: list[str] = []
        owners: dict[str, tuple[str, int]] = {}
        for key, value, created in kvs:
            if key.startswith(self.controllers_prefix):
                live.append(key[len(self.controllers_prefix) :].decode())
            elif key.startswith(self.owner_prefix):
                owners[key[len(self.owner_prefix) :].decode()] = (value.decode(), created)
        self.owners = {ch: owner for ch, (owner, _created) in owners.items()}
        if self.controller_id not in live:
            live.append(self.controller_id)  # our own key may be a moment behind our new lease
        chassis = sorted(self._chassis())
        want = assign(chassis, live)
        for ch in chassis:
            self._settle(ch, owners.get(ch), want.get(ch), now)
        for ch in set(self._told) - set(chassis):  # chassis deleted
            with self._lock:
                self._masters.pop(ch, None)
            self._told.pop(ch, None)

    def _settle(self, ch: str, owner: tuple[str, int] | None, wanted: str | None, now: float) -> None:
        me = self.controller_id
        if owner is not None and owner[0] == me:
            self._absent_since.pop(ch, None)
            self._become(ch, True, owner[1])
            if wanted is not None and wanted != me:
                self._become(ch, False, owner[1])  # step down before the key goes: never two masters
                self._delete_owner(ch, f"handed over to {wanted}")
            return
        if owner is not None:
            self._absent_since.pop(ch, None)
            self._become(ch, False, owner[1])
            return
        since = self._absent_since.setdefault(ch, now)
        old = self._told.get(ch)
        if old is not None and old[0]:
            self._become(ch, False, old[1])  # our key is gone (lease expired?)
        if wanted == me or now - since >= CAMPAIGN_GRACE_S:
            self._campaign(ch)

    def _campaign(self, ch: str) -> None:
        lease = self._lease
        if lease is None:
            return
        try:
            created = self.store.create_if_absent(
                self.owner_prefix + ch.encode(), self.controller_id.encode(), lease
            )
        except OSError as err:
            log.debug("ownership: campaign for %s failed: %s", ch, err)
            return
        if created and self.timer.valid(self.clock()):
            self.takeovers += 1
            self._absent_since.pop(ch, None)
            self._become(ch, True, created)

    def _delete_owner(self, ch: str, why: str) -> None:
        try:
            if self.store.delete_if(self.owner_prefix + ch.encode(), self.controller_id.encode()):
                log.info("chassis %s: %s", ch, why)
        except OSError as err:
            log.debug("ownership: could not release %s: %s", ch, err)

    def _become(self, ch: str, master: bool, generation: int) -> None:
        if self._told.get(ch) == (master, generation):
            return
        with self._lock:
            if master:
                self._masters[ch] = generation
            else:
                self._masters.pop(ch, None)
        self._told[ch] = (master, generation)
        log.info("chassis %s: %s (generation %d)", ch, "master" if master else "slave", generation)
        try:
            self._on_role(ch, master, generation)
        except Exception:
            log.exception("chassis %s: role change failed", ch)

    def _step_down_all(self, why: str, expected: bool = False) -> None:
        mine = self.masters()
        if mine:  # a normal stop hands the chassis over: news, not trouble
            log.log(
                logging.INFO if expected else logging.WARNING,
                "stepping down from %s: %s",
                ", ".join(sorted(mine)),
                why,
            )
        for ch, gen in sorted(mine.items()):
            self._become(ch, False, gen)

    def _keepalive(self) -> None:
        now = self.clock()
        if self._lease is not None and now - self._last_keepalive < self.ttl / 3:
            return
        self._last_keepalive = now
        try:
            if self._lease is None:
                lease = self.store.lease_grant(self.ttl)
                self.store.put_leased(
                    self.controllers_prefix + self.controller_id.encode(), str(lease).encode(), lease
                )
                self._lease = lease
                self.timer.renewed(now)
                log.info("ownership: lease %x of %d s, controller %s", lease, self.ttl, self.controller_id)
                return
            if self.store.lease_keepalive(self._lease) > 0:
                self.timer.renewed(now)
            else:
                log.warning("ownership: lease %x expired in etcd", self._lease)
                self._lease = None
                self.timer.lost()
                self._last_keepalive = -1e9
        except OSError as err:
            log.debug("ownership: keepalive failed: %s", err)
