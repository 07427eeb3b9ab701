"""Integer ranges as masked matches: a port range becomes the fewest (value, mask) prefixes covering it.

OpenFlow matches a field under a bit mask, not a range, so `lo..hi` is split into aligned power-of-two
blocks (the classic range-to-prefix expansion): 1..65535 needs 16 of them, any 16-bit range at most 30.
The blocks are disjoint, so flows built from them at one priority never overlap.
"""

from __future__ import annotations

from collections.abc import Iterator


def range_masks(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    """(value, mask) pairs whose union is exactly lo..hi (inclusive), in increasing order; a full-width
    mask means an exact value. The whole field (0..2**bits-1) is one pair with mask 0 (matches all)."""
    full = (1 << bits) - 1
    if not 0 <= lo <= hi <= full:
        raise ValueError(f"range {lo}..{hi} is not inside 0..{full}")
    return list(_blocks(lo, hi, bits))


def _blocks(lo: int, hi: int, bits: int) -> Iterator[tuple[int, int]]:
    full = (1 << bits) - 1
    while lo <= hi:
        # the largest aligned block starting at lo that does not pass hi
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        yield lo, full & ~(size - 1)
        lo += size


def port_masks(lo: int, hi: int) -> list[tuple[int, int]]:
    """(value, mask) pairs covering the 16-bit port range lo..hi (what apps/acl.py matches)."""
    return range_masks(lo, hi, 16)


def port_match(lo: int, hi: int) -> list[int | tuple[int, int]]:
    """Match values for a 16-bit L4 port range: [] for any port (0, 0 or 0..65535), else exact ints and
    (value, mask) pairs, ready for a Flow match."""
    if (lo, hi) == (0, 0) or (lo, hi) == (0, 0xFFFF):
        return []
    return [v if m == 0xFFFF else (v, m) for v, m in range_masks(lo, hi)]
