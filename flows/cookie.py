"""The flow cookie: who owns a flow.

Bit layout of the 64-bit OpenFlow cookie::

    63      56 55      48 47                              16 15             0
    +---------+----------+----------------------------------+---------------+
    |  MAGIC  |  app id  |   owner hash (32 bits)           |  generation   |
    |  0xC5   |  1..255  |   blake2b(owner id)[:4]          |   0..65535    |
    +---------+----------+----------------------------------+---------------+

- MAGIC marks a flow as ours. Any other top byte (e.g. OVS's default cookie 0) is foreign: sync sweeps it.
- app id says which app compiled the flow; owner hash names the model object (network, port, router...)
  that caused it. A CookieRegistry maps (app, owner hash) back to the owner's id.
- generation lets a controller stamp a compile epoch (make-before-break, restart adoption).

Masks for OpenFlow cookie_mask (delete / stats by owner): OURS_MASK, APP_MASK, OWNER_MASK.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAGIC = 0xC5
OURS_MASK = 0xFF << 56
APP_MASK = 0xFFFF << 48
OWNER_MASK = 0xFFFFFFFFFFFF << 16


def owner_hash(owner_id: str) -> int:
    """32-bit stable hash of an owner's id (same on every controller and run)."""
    return int.from_bytes(hashlib.blake2b(owner_id.encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True, slots=True)
class Cookie:
    """Decoded cookie: app id, owner hash, generation."""

    app: int
    owner: int
    generation: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.app <= 0xFF:
            raise ValueError(f"app id {self.app} outside 1..255")
        if not 0 <= self.owner <= 0xFFFFFFFF:
            raise ValueError(f"owner hash {self.owner:#x} wider than 32 bits")
        if not 0 <= self.generation <= 0xFFFF:
            raise ValueError(f"generation {self.generation} outside 0..65535")

    @classmethod
    def for_owner(cls, app: int, owner_id: str, generation: int = 0) -> Cookie:
        """The cookie of flows app `app` compiles for model object `owner_id`."""
        return cls(app, owner_hash(owner_id), generation)

    @property
    def value(self) -> int:
        """The 64-bit cookie to put on the wire."""
        return (MAGIC << 56) | (self.app << 48) | (self.owner << 16) | self.generation

    def __int__(self) -> int:
        return self.value

    @classmethod
    def decode(cls, value: int) -> Cookie | None:
        """The Cookie for a wire value, or None if the value is not one of ours."""
        if value >> 56 != MAGIC or not (value >> 48) & 0xFF:
            return None
        return cls((value >> 48) & 0xFF, (value >> 16) & 0xFFFFFFFF, value & 0xFFFF)


def is_ours(value: int) -> bool:
    """True if wire cookie `value` was stamped by this controller's scheme."""
    return Cookie.decode(value) is not None


class CookieRegistry:
    """Maps (app, owner hash) back to (app name, owner id); raises on a hash collision.

    Not a value: the controller keeps one, registering owners as apps compile them.
    """

    def __init__(self) -> None:
        self._apps: dict[int, str] = {}
        self._owners: dict[tuple[int, int], str] = {}

    def register_app(self, app: int, name: str) -> None:
        """Give app id `app` a name; re-registering the same name is a no-op."""
        Cookie(app, 0)
        old = self._apps.get(app)
        if old is not None and old != name:
            raise ValueError(f"app id {app} already belongs to {old!r}")
        self._apps[app] = name

    def register(self, app: int, owner_id: str, generation: int = 0) -> Cookie:
        """Remember `owner_id` under app `app` and return its cookie."""
        c = Cookie.for_owner(app, owner_id, generation)
        old = self._owners.setdefault((app, c.owner), owner_id)
        if old != owner_id:
            raise ValueError(f"owner hash collision in app {app}: {old!r} and {owner_id!r}")
        return c

    def forget(self, app: int, owner_id: str) -> None:
        """Drop `owner_id` (its flows become unknown, hence stale)."""
        self._owners.pop((app, owner_hash(owner_id)), None)

    def lookup(self, value: int) -> tuple[str, str] | None:
        """(app name or str(app id), owner id) for wire cookie `value`, or None if unknown."""
        c = Cookie.decode(value)
        if c is None:
            return None
        owner = self._owners.get((c.app, c.owner))
        if owner is None:
            return None
        return self._apps.get(c.app, str(c.app)), owner

    def knows(self, value: int) -> bool:
        """True if the cookie is ours and its owner is registered (its flow may be adopted)."""
        return self.lookup(value) is not None
