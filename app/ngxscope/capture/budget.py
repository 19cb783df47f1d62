"""Keep the capture process within a CPU budget by sampling payloads, never by losing requests.

Decoding a request's bytes costs tens of microseconds of Python; at tens of thousands of
requests per second that is more than a core, taken from nginx itself. :class:`CpuGovernor`
watches the process's own CPU time and, while it is over budget, tells the kernel to keep
the payload of only one exchange in N. The others still reach user space as the kernel's
per-exchange summary (status, sizes, times, the request line), so every request is counted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_BUDGET", "MAX_ONE_IN", "CpuGovernor", "GovernorStep", "default_budget"]

DEFAULT_BUDGET = 0.25
"""Fraction of one core the capture process may use before it samples payloads."""


def default_budget() -> float:
    """:data:`DEFAULT_BUDGET`, or the environment's NGXSCOPE_CPU_BUDGET (percent of a core;
    0 turns sampling off) when set to a number."""
    raw = os.environ.get("NGXSCOPE_CPU_BUDGET", "").strip()
    try:
        return max(0.0, float(raw) / 100) if raw else DEFAULT_BUDGET
    except ValueError:
        return DEFAULT_BUDGET

MAX_ONE_IN = 1024
"""The sparsest sampling: one exchange in this many keeps its payload."""


@dataclass(slots=True, frozen=True)
class GovernorStep:
    """A change of sampling decided by :meth:`CpuGovernor.tick`."""

    one_in: int
    """The new sampling: 1 = every payload, N = one exchange in N."""
    cpu: float
    """The process's CPU use over the last period, as a fraction of one core."""
    detail: str
    """One line for the user (lifecycle event)."""


class CpuGovernor:
    """Multiplies the sampling while over budget (by the power of two its overshoot asks
    for, up to 16), halves it after two periods well under it."""

    def __init__(
        self,
        budget: float,
        apply: Callable[[int], object],
        *,
        period: float = 1.0,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        """Fraction of one core (0: never sample)."""
        self.one_in = 1
        """Current sampling (1: every payload)."""
        self.cpu = 0.0
        """CPU use over the last full period, fraction of one core."""
        self._apply = apply
        self._period = period
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._last = (wall_clock(), cpu_clock())
        self._calm = 0

    def tick(self) -> GovernorStep | None:
        """Call often; acts once per period. Returns the change made, if any."""
        now, cpu = self._wall_clock(), self._cpu_clock()
        wall = now - self._last[0]
        if wall < self._period:
            return None
        self.cpu = max(0.0, (cpu - self._last[1]) / wall)
        self._last = (now, cpu)
        if self.budget <= 0:
            return None
        before = self.one_in
        if self.cpu > self.budget:
            self._calm = 0
            # the cost follows the kept share (the others are counted in the kernel): step by
            # the power of two that brings it under budget at once, at most 16 per period
            factor = 2
            while factor < 16 and self.cpu / factor > self.budget:
                factor *= 2
            self.one_in = min(MAX_ONE_IN, self.one_in * factor)
        elif self.cpu < self.budget / 2 and self.one_in > 1:
            self._calm += 1
            if self._calm >= 2:   # two calm periods: a burst that ended, not a lull inside one
                self._calm = 0
                self.one_in = max(1, self.one_in // 2)
        else:
            self._calm = 0
        if self.one_in == before:
            return None
        self._apply(self.one_in)
        pct, budget = f"{self.cpu:.0%}", f"{self.budget:.0%}"
        if self.one_in == 1:
            detail = f"payload sampling off: capture CPU {pct} of a core, budget {budget}"
        else:
            detail = (f"payload sampling 1 in {self.one_in}: capture CPU {pct} of a core over budget "
                      f"{budget}; every request is still counted from the kernel summaries")
        return GovernorStep(self.one_in, self.cpu, detail)
