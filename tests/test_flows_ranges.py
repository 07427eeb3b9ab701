"""Port ranges as masked matches: exact cover, no overlap, few prefixes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flows.ranges import port_match, range_masks


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_prefixes_cover_exactly_the_range_without_overlap(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    blocks = range_masks(lo, hi)
    assert len(blocks) <= 30
    covered = 0
    for value, mask in blocks:
        size = (~mask & 0xFFFF) + 1
        assert value & ~mask & 0xFFFF == 0  # aligned
        assert lo <= value and value + size - 1 <= hi
        covered += size
    assert covered == hi - lo + 1  # inside the range and summing to its size: exact and disjoint


def test_known_shapes() -> None:
    assert range_masks(22, 22) == [(22, 0xFFFF)]
    assert range_masks(0, 0xFFFF) == [(0, 0)]
    assert range_masks(1024, 2047) == [(1024, 0xFC00)]
    assert len(range_masks(1, 0xFFFF)) == 16
    assert port_match(0, 0) == [] and port_match(0, 0xFFFF) == []
    assert port_match(80, 80) == [80]
    assert port_match(80, 81) == [(80, 0xFFFE)]


def test_port_masks_is_the_16_bit_expansion() -> None:
    from flows.ranges import port_masks

    assert port_masks(1, 0xFFFF) == range_masks(1, 0xFFFF)
