"""Port keys and conntrack zones: a 32-bit key unique in the deployment whose low 16 bits are the port's zone.

A conntrack zone has to be unique only where its conntrack entries live, on one chassis, but OVS's zones
are 16 bits: one deployment-wide number per port would stop at 65,535 ports. So the key, which is unique
in the deployment (the SRC_PORT / DST_PORT registers, 32 bits, name a port on every chassis), carries the
zone in its low 16 bits (`zone_of`), and the zone is unique only where it is used:

- a VM port (any port a VIF can carry) bound to a chassis: its zone is unique among the VM ports bound to
  that chassis (its security groups track in it there, and its DHCP meter is numbered by it);
- a router's gateway port (the router's NAT zone on whichever chassis is its gateway, which moves on
  failover) and a load balancer's VIP port (the hairpin's zone on every member's chassis): a *shared* zone,
  unique among shared zones and used by no bound VM port on any chassis;
- every other port (router interfaces, floating IPs, a VM port bound nowhere): its low bits are no zone,
  only part of a unique key.

The shared tracking flows copy a port's register into the zone (apps/acl.py), so one flow per chassis
still serves every port. The key is not on the wire (a tunnel carries the network's VNI only; the
receiving chassis finds the port again by MAC), so it may change: a VM port binding to a chassis where its
key's zone is taken gets a new key (its flows are recompiled there and on every chassis hosting its
network anyway, as for any move). Keys and zones are in the port record, so they survive a restart and
every controller sharing the store sees the same ones; they are chosen by the write that binds or creates
the port, validated on the model (on etcd: at the head revision) like an IP address.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from topology.allocator import RangeAllocator
from topology.records import (
    OWNER_FLOATING_IP,
    OWNER_LOAD_BALANCER,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    Port,
)

ZONE_BITS = 16
ZONE_MASK = (1 << ZONE_BITS) - 1
MAX_ZONE = ZONE_MASK
#: keys fit the 32-bit SRC_PORT / DST_PORT registers and ct_mark
MAX_PORT_KEY = (1 << 32) - 1
#: owners whose port is no VM's (kept in step with topology.ops.ROUTER_OWNERS)
CONTROLLER_OWNERS = (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY, OWNER_FLOATING_IP, OWNER_LOAD_BALANCER)
#: owners whose port's zone is used on several chassis
SHARED_OWNERS = (OWNER_ROUTER_GATEWAY, OWNER_LOAD_BALANCER)


def zone_of(key: int) -> int:
    return key & ZONE_MASK


def shared(port: Port) -> bool:
    """A port whose zone is shared: unique on every chassis."""
    return port.device_owner in SHARED_OWNERS


def zoned_on(port: Port) -> str:
    """The chassis where the port's zone must be unique ("" = none: not a bound VM port)."""
    if port.device_owner in CONTROLLER_OWNERS:
        return ""
    return port.binding_chassis


def freed(old: Port | None, new: Port | None) -> tuple[str, int] | None:
    """The conntrack zone the port change `old -> new` gives up, as (chassis, zone): chassis "" for a shared
    zone (used on every chassis); None when the port keeps its zone or had none."""
    if old is None or not zone_of(old.key):
        return None
    z = zone_of(old.key)
    if shared(old):
        kept = new is not None and shared(new) and zone_of(new.key) == z
        return None if kept else ("", z)
    chassis_id = zoned_on(old)
    if not chassis_id or (new is not None and zoned_on(new) == chassis_id and zone_of(new.key) == z):
        return None
    return chassis_id, z


@dataclass
class Claims:
    """Keys and zones chosen by one write for ports not yet applied to the model (several ports bound in one
    write must not pick the same)."""

    keys: set[int] = field(default_factory=set)
    zones: dict[str, set[int]] = field(default_factory=dict)
    shared: set[int] = field(default_factory=set)


class PortKeys:
    """The model's index of keys and zones, derived from the port records (`add` / `remove` per record)."""

    def __init__(self) -> None:
        self.keys = RangeAllocator([(1, MAX_PORT_KEY)])
        self.shared: dict[int, int] = {}  # shared zone -> ports holding it (1 unless records disagree)
        self.local: dict[str, dict[int, int]] = {}  # chassis -> zone -> bound VM ports holding it there
        self.local_use: dict[int, int] = {}  # zone -> bound VM ports holding it, on any chassis
        self._cursor: dict[str, int] = {}  # chassis -> the zone to try next (so freed zones wait their turn)
        self._shared_cursor = MAX_ZONE  # shared zones are taken from the top down, local ones bottom up

    # ----------------------------------------------------------------------------------------- the index

    def add(self, port: Port) -> None:
        self.keys.add(port.key)
        self._count(port, 1)

    def remove(self, port: Port) -> None:
        self.keys.remove(port.key)
        self._count(port, -1)

    def _count(self, port: Port, delta: int) -> None:
        z = zone_of(port.key)
        if not z:
            return
        if shared(port):
            _bump(self.shared, z, delta)
            return
        ch = zoned_on(port)
        if ch:
            _bump(self.local.setdefault(ch, {}), z, delta)
            if not self.local[ch]:
                del self.local[ch]
            _bump(self.local_use, z, delta)

    def zone_free(self, chassis_id: str, z: int, claims: Claims | None = None) -> bool:
        """Could a VM port bound to `chassis_id` take zone `z` (no other user there, no shared zone)?"""
        if not 0 < z <= MAX_ZONE or z in self.shared or z in self.local.get(chassis_id, ()):
            return False
        return claims is None or (z not in claims.shared and z not in claims.zones.get(chassis_id, ()))

    def holders(self, chassis_id: str) -> int:
        return sum(self.local.get(chassis_id, {}).values())

    # ------------------------------------------------------------------------------------------ choosing

    def choose_key(self, claims: Claims | None = None) -> int | None:
        """A free key whose low bits mean nothing yet (a router interface's, a floating IP's, an unbound port's)."""
        return self.keys.choose(claims.keys if claims is not None else frozenset())

    def choose_zoned_key(self, chassis_id: str, claims: Claims | None = None) -> int | None:
        """A free key whose zone is free on `chassis_id` (None: the chassis has no free zone left)."""
        start = self._cursor.get(chassis_id, 1)
        for i in range(MAX_ZONE):
            z = (start - 1 + i) % MAX_ZONE + 1
            if self.zone_free(chassis_id, z, claims):
                key = self._key_with_zone(z, claims)
                if key is not None:
                    self._cursor[chassis_id] = z % MAX_ZONE + 1
                    return key
        return None

    def choose_shared_key(self, claims: Claims | None = None) -> int | None:
        """A free key whose zone is used by no bound VM port and no other shared port."""
        start = self._shared_cursor
        for i in range(MAX_ZONE):
            z = (start - 1 - i) % MAX_ZONE + 1
            if (
                z in self.shared
                or z in self.local_use
                or (claims is not None and z in _claimed_zones(claims))
            ):
                continue
            key = self._key_with_zone(z, claims)
            if key is not None:
                self._shared_cursor = (z - 2) % MAX_ZONE + 1
                return key
        return None

    def _key_with_zone(self, z: int, claims: Claims | None) -> int | None:
        taken = self.keys.allocated
        for high in range(1 << (32 - ZONE_BITS)):
            key = (high << ZONE_BITS) | z
            if key not in taken and (claims is None or key not in claims.keys):
                return key
        return None


def _claimed_zones(claims: Claims) -> set[int]:
    out = set(claims.shared)
    for zs in claims.zones.values():
        out |= zs
    return out


def _bump(counts: dict[int, int], z: int, delta: int) -> None:
    n = counts.get(z, 0) + delta
    if n > 0:
        counts[z] = n
    else:
        counts.pop(z, None)
