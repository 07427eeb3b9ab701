"""Field names and canonical values, shared by matches and set_field actions.

Field names are os-ken's OXM/NXM names (``eth_dst``, ``ipv4_src``, ``tunnel_id``, ``tun_ipv4_dst``,
``reg6``, ``ct_state``...). A canonical value is what os-ken's parser hands back: ints for integer
fields, lower-case ``aa:bb:..`` strings for MACs, compressed strings for IP addresses. A mask is kept
only when it is partial: an all-ones mask is dropped, and an all-zero mask wildcards the field away.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

from os_ken.lib import type_desc
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import oxm_fields

#: (value, mask-or-None) as stored in a Flow
Value = Any


class FieldError(ValueError):
    """A field name or value that OpenFlow 1.3 + Nicira extensions cannot carry."""


class _EricssonOxm(oxm_fields._OxmClass):
    """OXM class ERICOXM_OF (0x1000), which OVS 2.11+ uses for two ND fields os-ken does not know."""

    _class = 0x1000


def _register_nd_fields() -> None:
    """Teach os-ken OVS's `nd_reserved` (an NA's R/S/O flag bits) and `nd_options_type` (SLL 1 / TLL 2):
    with them a neighbour solicitation is turned into the advertisement in flows (apps/arp.py). os-ken's
    lookup tables are the dicts its generated functions close over; the fields are added to them."""
    name_to_field = ofp.oxm_get_field_info_by_name.args[1]
    num_to_field = ofp.oxm_to_user.args[1]
    for f in (
        _EricssonOxm("nd_reserved", 1, type_desc.Int4),
        _EricssonOxm("nd_options_type", 2, type_desc.Int1),
    ):
        if f.name not in name_to_field:
            ofp.oxm_types.append(f)
            name_to_field[f.name] = f
            num_to_field[f.num] = f


_register_nd_fields()


@cache
def field_info(name: str) -> tuple[int, Any]:
    """(os-ken OXM number, os-ken type descriptor) of field `name`."""
    try:
        return ofp.oxm_get_field_info_by_name(name)
    except KeyError:
        raise FieldError(f"unknown match/set field {name!r}") from None


@cache
def sort_key(name: str) -> tuple[int, str]:
    """Canonical order of fields in a match: os-ken's own order (OXM number), then name."""
    n, _ = field_info(name)
    return (n[0] if isinstance(n, tuple) else n, name)


@cache
def kind(name: str) -> str:
    """ "int", "mac", "ipv4", "ipv6" or "other": picks the fast paths below."""
    t = field_info(name)[1]
    if isinstance(t, type_desc.IntDescr):
        return "int"
    return {type_desc.MacAddr: "mac", type_desc.IPv4Addr: "ipv4", type_desc.IPv6Addr: "ipv6"}.get(t, "other")


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@lru_cache(maxsize=1 << 16)
def _canonical_ipv4(v: str) -> bool:
    parts = v.split(".")
    return len(parts) == 4 and all(p.isdigit() and str(int(p)) == p and int(p) < 256 for p in parts)


def value_bytes(name: str, value: Any) -> bytes:
    """Wire bytes of a canonical value of field `name`."""
    k = kind(name)
    if k == "int":
        return value.to_bytes(field_info(name)[1].size, "big")
    if k == "mac":
        return bytes.fromhex(value.replace(":", ""))
    if k == "ipv4":
        return bytes(int(p) for p in value.split("."))
    return field_info(name)[1].from_user(value)


def field_size(name: str) -> int:
    """Width of field `name` in bytes."""
    return field_info(name)[1].size


@lru_cache(maxsize=1 << 16)
def _normalize(name: str, user_value: Any, types: Any = None) -> tuple[Any, Any] | None:
    # `types` (the types of user_value's parts) only keys the cache: 1 == 1.0 == True hash alike, and a
    # cached (1, m) must not make (1.0, m), which os-ken rejects, look valid.
    _, t = field_info(name)
    if isinstance(user_value, list):
        user_value = tuple(user_value)
    limit = 1 << (8 * t.size)
    for part in user_value if isinstance(user_value, tuple) else (user_value,):
        if isinstance(part, int) and not 0 <= part < limit:
            raise FieldError(f"value {part:#x} does not fit field {name} ({t.size} bytes)")
    try:
        _, v, m = ofp.oxm_from_user(name, user_value)
    except Exception as e:  # noqa: BLE001 - os-ken raises assorted errors for bad values
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


#: field -> 1 << bits for integer fields, 0 for the others (filled as fields are first seen)
_INT_LIMIT: dict[str, int] = {}


def _int_limit(name: str) -> int:
    lim = _INT_LIMIT.get(name)
    if lim is None:
        lim = 1 << (8 * field_info(name)[1].size) if kind(name) == "int" else 0  # FieldError if unknown
        _INT_LIMIT[name] = lim
    return lim


def normalize(name: str, user_value: Any) -> tuple[Any, Any] | None:
    """Canonical (value, mask-or-None) for `user_value` of field `name`; None if fully wildcarded.

    Accepts what os-ken accepts: ints, MAC/IP strings, "10.0.0.0/24", and (value, mask) pairs.
    """
    lim = _int_limit(name)
    t = type(user_value)
    # fast paths for values already canonical (the common case when apps build many flows); each gives
    # what _normalize gives (tests/test_flows_cache.py compares them)
    if lim:
        if t is int:
            if not 0 <= user_value < lim:
                raise FieldError(f"value {user_value:#x} does not fit field {name}")
            return user_value, None
        if t is tuple and len(user_value) == 2:
            v, m = user_value
            if type(v) is int and type(m) is int and 0 <= v < lim and 0 <= m < lim:
                if m == lim - 1:
                    return v, None
                if m == 0:
                    return None
                return v & m, m
    elif t is str and "/" not in user_value:
        k = kind(name)
        if (k == "mac" and _MAC.fullmatch(user_value)) or (k == "ipv4" and _canonical_ipv4(user_value)):
            return user_value, None
    if t is tuple or t is list:
        types: Any = tuple(map(type, user_value))
    else:
        types = t
    try:
        return _normalize(name, user_value, types)
    except TypeError:  # unhashable input
        raise FieldError(f"bad value {user_value!r} for field {name}") from None


def to_int(name: str, value: Any) -> int:
    """Canonical value of field `name` as an unsigned integer (for bit arithmetic)."""
    if kind(name) == "int":
        return value
    _, t = field_info(name)
    return int.from_bytes(t.from_user(value), "big")


def from_int(name: str, number: int) -> Any:
    """Canonical value of field `name` from an unsigned integer."""
    if kind(name) == "int":
        return number
    _, t = field_info(name)
    return t.to_user(number.to_bytes(t.size, "big"))
