"""Field names and canonical values, shared by matches and set_field actions.

Field names are os-ken's OXM/NXM names (``eth_dst``, ``ipv4_src``, ``tunnel_id``, ``tun_ipv4_dst``,
``reg6``, ``ct_state``...). A canonical value is what os-ken's parser hands back: ints for integer
fields, lower-case ``aa:bb:..`` strings for MACs, compressed strings for IP addresses. A mask is kept
only when it is partial: an all-ones mask is dropped, and an all-zero mask wildcards the field away.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

#: (value, mask-or-None) as stored in a Flow
Value = Any


class FieldError(ValueError):
    """A field name or value that OpenFlow 1.3 + Nicira extensions cannot carry."""


@lru_cache(maxsize=None)
def field_info(name: str) -> tuple[int, Any]:
    """(os-ken OXM number, os-ken type descriptor) of field `name`."""
    try:
        return ofp.oxm_get_field_info_by_name(name)
    except KeyError:
        raise FieldError(f"unknown match/set field {name!r}") from None


@lru_cache(maxsize=None)
def sort_key(name: str) -> tuple[int, str]:
    """Canonical order of fields in a match: os-ken's own order (OXM number), then name."""
    n, _ = field_info(name)
    return (n[0] if isinstance(n, tuple) else n, name)


def field_size(name: str) -> int:
    """Width of field `name` in bytes."""
    return field_info(name)[1].size


@lru_cache(maxsize=1 << 16)
def _normalize(name: str, user_value: Any) -> tuple[Any, Any] | None:
    _, t = field_info(name)
    if isinstance(user_value, list):
        user_value = tuple(user_value)
    limit = 1 << (8 * t.size)
    for part in user_value if isinstance(user_value, tuple) else (user_value,):
        if isinstance(part, int) and not 0 <= part < limit:
            raise FieldError(f"value {part:#x} does not fit field {name} ({t.size} bytes)")
    try:
        _, v, m = ofp.oxm_from_user(name, user_value)
    except Exception as e:  # os-ken raises assorted errors for bad values
        raise FieldError(f"bad value {user_value!r} for field {name}: {e}") from None
    if len(v) != t.size:
        raise FieldError(f"value {user_value!r} does not fit field {name} ({t.size} bytes)")
    if m is not None:
        if len(m) != t.size:
            raise FieldError(f"mask in {user_value!r} does not fit field {name}")
        if m == b"\xff" * len(m):
            m = None
        elif m == b"\x00" * len(m):
            return None
        else:
            v = bytes(a & b for a, b in zip(v, m))
    return t.to_user(v), (None if m is None else t.to_user(m))


def normalize(name: str, user_value: Any) -> tuple[Any, Any] | None:
    """Canonical (value, mask-or-None) for `user_value` of field `name`; None if fully wildcarded.

    Accepts what os-ken accepts: ints, MAC/IP strings, "10.0.0.0/24", and (value, mask) pairs.
    """
    try:
        return _normalize(name, user_value)
    except TypeError:  # unhashable input
        raise FieldError(f"bad value {user_value!r} for field {name}") from None


def to_int(name: str, value: Any) -> int:
    """Canonical value of field `name` as an unsigned integer (for bit arithmetic)."""
    _, t = field_info(name)
    return int.from_bytes(t.from_user(value), "big")


def from_int(name: str, number: int) -> Any:
    """Canonical value of field `name` from an unsigned integer."""
    _, t = field_info(name)
    return t.to_user(number.to_bytes(t.size, "big"))
