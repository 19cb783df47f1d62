"""A log-linear histogram of durations (the upstream response and header times)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["HdrHistogram"]


class HdrHistogram:
    """A log-linear histogram of durations in the manner of HdrHistogram.

    Values are recorded in integer microseconds. Below 2*SUB µs every value has its own
    bucket; above, each power of two is split into SUB linear sub-buckets, so any recorded
    value is known to within 1/SUB (< 0.8 %) over 1 µs .. 3 days, in a fixed 4096-slot
    array (longer durations land in the last bucket). Percentiles report the middle of their bucket.
    """

    SUB_BITS = 7
    SUB = 1 << SUB_BITS
    SIZE = 4096

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = np.zeros(self.SIZE, np.int64)
        self.total = 0

    @classmethod
    def index(cls, ms: float) -> int:
        """The bucket of a duration in ms."""
        if not ms > 0.0:  # also NaN
            return 0
        v = int(ms * 1000.0 + 0.5)
        if v < 2 * cls.SUB:
            return v
        shift = v.bit_length() - cls.SUB_BITS - 1
        return min(cls.SIZE - 1, (shift + 1) * cls.SUB + (v >> shift) - cls.SUB)

    @classmethod
    def bucket_ms(cls, i: int) -> tuple[float, float]:
        """[low, high) of bucket `i` in ms."""
        if i < 2 * cls.SUB:
            return i / 1000.0, (i + 1) / 1000.0
        shift = i // cls.SUB - 1
        mant = i % cls.SUB + cls.SUB
        return (mant << shift) / 1000.0, ((mant + 1) << shift) / 1000.0

    def record(self, ms: float) -> None:
        self.counts[self.index(ms)] += 1
        self.total += 1

    def merge(self, other: HdrHistogram) -> None:
        """Add `other`'s counts to this histogram."""
        self.counts += other.counts
        self.total += other.total

    def percentiles(self, qs: Iterable[float]) -> list[float]:
        """Values (ms) at quantiles `qs` (0..1); NaN when empty."""
        qs = list(qs)
        if not self.total:
            return [math.nan] * len(qs)
        cs = np.cumsum(self.counts)
        out = []
        for q in qs:
            i = int(np.searchsorted(cs, max(1.0, q * self.total), side="left"))
            lo, hi = self.bucket_ms(min(i, self.SIZE - 1))
            out.append(lo if i < 2 * self.SUB else (lo + hi) / 2)
        return out
