"""Integer range allocation without scanning the range: IP addresses of a subnet, segment ids of a type.

A cursor walks the ranges in order; numbers released behind the cursor go to a free set. Choosing a number is
amortized O(1) whatever the number already allocated (10k ports in a /16 cost the same as 100). `choose` does
not allocate: the caller commits the write and then calls `add`, so a refused write changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable


class RangeAllocator:
    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.ranges: list[tuple[int, int]] = sorted((lo, hi) for lo, hi in ranges if lo <= hi)
        self.allocated: set[int] = set()
        self._free_behind: set[int] = set()  # released numbers the cursor has passed
        self._range_idx = 0
        self._next = self.ranges[0][0] if self.ranges else 0

    def in_ranges(self, n: int) -> bool:
        return any(lo <= n <= hi for lo, hi in self.ranges)

    def _behind_cursor(self, n: int) -> bool:
        if self._range_idx >= len(self.ranges):
            return True
        return n < self._next

    def choose(self, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        """A free number in the ranges, not in `exclude`, or None when the ranges are full."""
        for n in self._free_behind:
            if n not in exclude and n not in self.allocated:
                return n
        while self._range_idx < len(self.ranges):
            lo, hi = self.ranges[self._range_idx]
            n = max(self._next, lo)
            while n <= hi:
                if n not in self.allocated and n not in exclude:
                    self._next = n
                    return n
                n += 1
            self._range_idx += 1
            if self._range_idx < len(self.ranges):
                self._next = self.ranges[self._range_idx][0]
        return None

    def add(self, n: int) -> None:
        self.allocated.add(n)
        self._free_behind.discard(n)

    def remove(self, n: int) -> None:
        self.allocated.discard(n)
        if self.in_ranges(n) and self._behind_cursor(n):
            self._free_behind.add(n)

    def reset_ranges(self, ranges: Iterable[tuple[int, int]]) -> None:
        """New ranges (e.g. edited allocation pools); keeps what is allocated, restarts the cursor."""
        allocated = self.allocated
        self.__init__(ranges)  # type: ignore[misc]
        self.allocated = allocated
