"""Keep the capture process within a CPU budget by sampling payloads, never by losing requests.

Decoding a request's bytes costs tens of microseconds of Python; at tens of thousands of
requests per second that is more than a core, taken from nginx itself. :class:`CpuGovernor`
watches the process's own CPU time and, while it is over budget, tells the kernel to keep
the payload of only one exchange in N. The others still reach user space as the kernel's
per-exchange summary (status, sizes, times, the request line), so every request is counted.

A budget is what the capture may take from idle CPUs, not from nginx: while nginx's workers
(or the machine's tasks) wait for a CPU (:class:`CpuContention`, from the scheduler's own
accounting), every microsecond the capture spends is one they do not get, so the governor
keeps to :data:`YIELD_BUDGET` until they stop waiting. Errors and slow requests are kept by the kernel's
rules whatever the sampling.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BUDGET",
    "MAX_ONE_IN",
    "MIN_SAMPLE_RATE",
    "YIELD_BUDGET",
    "YIELD_WAIT",
    "CpuContention",
    "CpuGovernor",
    "GovernorStep",
    "default_budget",
]

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

MIN_SAMPLE_RATE = 1000.0
"""Exchanges a second below which sampling is never started (and is given up): decoding
fewer than this costs a few percent of a core, so the CPU over budget is going to something
sampling does not reduce (the socket filter, the stream, the session file) and a sample
would only cost the user rows."""

YIELD_WAIT = 0.05
"""Share of a period an nginx worker (or any task of the machine) may spend runnable but
waiting for a CPU before the capture yields; it takes its budget back once the wait is under
half of this."""

YIELD_BUDGET = 0.03
"""The budget (fraction of one core) while yielding."""


class CpuContention:
    """How much of the time since the last call something waited for a CPU, 0.0 to 1.0: the
    larger of the most-waiting nginx worker's share (/proc/PID/schedstat's run_delay) and the
    machine's (the share of time some task was runnable but not running, /proc/pressure/cpu).
    Either means the capture's CPU comes out of someone's turn: nginx's directly, or that of
    what nginx shares the machine with.

    The workers are the master's children at each call, so a reload's new workers count from
    their second sighting; without a master, the pids given. A kernel without schedstat or
    PSI gives no evidence of waiting (0.0) for that part."""

    def __init__(self, master: int | None, pids: list[int] | None = None, *,
                 proc: str = "/proc", clock: Callable[[], float] = time.monotonic) -> None:
        self._master = master
        self._pids = list(pids or [])
        self._proc = proc
        self._clock = clock
        self._last: dict[int, tuple[float, int]] = {}
        self._psi: tuple[float, int] | None = None
        self.nginx = 0.0
        """The most-waiting worker's share over the last interval."""
        self.machine = 0.0
        """The machine's "some" CPU pressure over the last interval."""
        self()

    def _workers(self) -> list[int]:
        if self._master is None:
            return self._pids
        try:
            with open(f"{self._proc}/{self._master}/task/{self._master}/children") as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return self._pids

    def _nginx_wait(self, now: float) -> float:
        worst = 0.0
        seen: dict[int, tuple[float, int]] = {}
        for pid in self._workers():
            try:
                with open(f"{self._proc}/{pid}/schedstat") as f:
                    delay = int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone, or a kernel without schedstat
            seen[pid] = (now, delay)
            last = self._last.get(pid)
            if last is not None and now > last[0]:
                worst = max(worst, (delay - last[1]) / 1e9 / (now - last[0]))
        self._last = seen
        return worst

    def _machine_wait(self, now: float) -> float:
        try:
            with open(f"{self._proc}/pressure/cpu") as f:
                some = f.readline().split()
            total = int(some[-1].partition("=")[2])   # µs
        except (OSError, ValueError, IndexError):
            return 0.0  # no PSI (CONFIG_PSI off or psi=0)
        last, self._psi = self._psi, (now, total)
        if last is None or now <= last[0]:
            return 0.0
        return (total - last[1]) / 1e6 / (now - last[0])

    def __call__(self) -> float:
        now = self._clock()
        self.nginx = min(1.0, max(0.0, self._nginx_wait(now)))
        self.machine = min(1.0, max(0.0, self._machine_wait(now)))
        return max(self.nginx, self.machine)


@dataclass(slots=True, frozen=True)
class GovernorStep:
    """A change of sampling decided by :meth:`CpuGovernor.tick`."""

    one_in: int
    """The new sampling: 1 = every payload, N = one exchange in N."""
    cpu: float
    """The process's CPU use over the last period, as a fraction of one core."""
    wait: float
    """The share of the last period nginx's most-waiting worker (or the machine's tasks)
    spent waiting for a CPU."""
    detail: str
    """One line for the user (lifecycle event)."""


class CpuGovernor:
    """Multiplies the sampling while over budget (by the power of two its overshoot asks
    for, up to 16), halves it after two periods well under it. With `contention` (a
    :class:`CpuContention`), the budget is :data:`YIELD_BUDGET` while something waits for a
    CPU more than :data:`YIELD_WAIT` of the time, and sampling is only relaxed once the wait
    is under half of that. With `exchanges` (the count of exchanges delivered whole so far),
    sampling waits for :data:`MIN_SAMPLE_RATE` of them a second, and ends when the load
    drops under it. With `fast`, a step up is taken as soon as `fast` seconds of a period
    show the CPU at more than twice the budget: at attach to a saturated nginx every
    exchange is decoded until the first step, and each tenth of a second of that costs a
    backlog of thousands of them (tens of ms of a core each time it is not waited for)."""

    def __init__(
        self,
        budget: float,
        apply: Callable[[int], object],
        *,
        period: float = 1.0,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
        contention: Callable[[], float] | None = None,
        exchanges: Callable[[], int] | None = None,
        fast: float | None = None,
    ) -> None:
        self.budget = budget
        """Fraction of one core (0: never sample)."""
        self.one_in = 1
        """Current sampling (1: every payload)."""
        self.cpu = 0.0
        """CPU use over the last full period, fraction of one core."""
        self.wait = 0.0
        """The CPU wait over the last full period (0 without `contention`)."""
        self.yielding = False
        """Whether the last period's budget was :data:`YIELD_BUDGET` (something waited for a CPU)."""
        self.rate: float | None = None
        """Exchanges a second over the last full period, estimated from those kept whole
        times the sampling (None without `exchanges`)."""
        self._contention = contention
        self._exchanges = exchanges
        self._kept = exchanges() if exchanges is not None else 0
        self._apply = apply
        self._period = period
        self._fast = fast
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._last = (wall_clock(), cpu_clock())
        self._calm = 0

    def _far_over(self, wall: float, cpu: float) -> bool:
        """Part of a period (at least `fast` s) already shows the CPU at more than twice the
        budget (the last period's, yielding or not)."""
        if self._fast is None or wall < self._fast or self.budget <= 0:
            return False
        budget = min(self.budget, YIELD_BUDGET) if self.yielding else self.budget
        return (cpu - self._last[1]) / wall > 2 * budget

    def tick(self) -> GovernorStep | None:
        """Call often; acts once per period. Returns the change made, if any."""
        now, cpu = self._wall_clock(), self._cpu_clock()
        wall = now - self._last[0]
        if wall < self._period and not self._far_over(wall, cpu):
            return None
        self.cpu = max(0.0, (cpu - self._last[1]) / wall)
        self._last = (now, cpu)
        if self._exchanges is not None:
            kept = self._exchanges()
            self.rate = max(0, kept - self._kept) / wall * self.one_in
            self._kept = kept
        if self.budget <= 0:
            return None
        if self._contention is not None:
            self.wait = self._contention()
            if self.wait > YIELD_WAIT:
                self.yielding = True
            elif self.wait < YIELD_WAIT / 2:
                self.yielding = False
        budget = min(self.budget, YIELD_BUDGET) if self.yielding else self.budget
        before = self.one_in
        few = self.rate is not None and self.rate < MIN_SAMPLE_RATE
        if few:
            self._calm = 0
            self.one_in = 1   # the load is gone: its sampling would only cost rows now
        elif self.cpu > budget:
            self._calm = 0
            # the cost follows the kept share (the others are counted in the kernel): step by
            # the power of two that brings it under budget at once, at most 16 per period
            factor = 2
            while factor < 16 and self.cpu / factor > budget:
                factor *= 2
            self.one_in = min(MAX_ONE_IN, self.one_in * factor)
        elif self.cpu < budget / 2 and self.one_in > 1 and not self.yielding:
            self._calm += 1
            if self._calm >= 2:   # two calm periods: a burst that ended, not a lull inside one
                self._calm = 0
                self.one_in = max(1, self.one_in // 2)
        else:
            self._calm = 0
        if self.one_in == before:
            return None
        self._apply(self.one_in)
        pct, budget_pct = f"{self.cpu:.0%}", f"{self.budget:.0%}"
        if self.one_in == 1 and few:
            detail = (f"payload sampling off: {self.rate:,.0f} exchanges a second, too few for "
                      f"sampling to save CPU (capture CPU {pct} of a core)")
        elif self.one_in == 1:
            detail = f"payload sampling off: capture CPU {pct} of a core, budget {budget_pct}"
        elif self.yielding:
            detail = (f"payload sampling 1 in {self.one_in}: CPU is short (nginx or another task waited "
                      f"for one {self.wait:.0%} of the time), so the capture keeps to {YIELD_BUDGET:.0%} "
                      f"of a core (CPU {pct}); every request is still counted from the kernel summaries")
        else:
            detail = (f"payload sampling 1 in {self.one_in}: capture CPU {pct} of a core over budget "
                      f"{budget_pct}; every request is still counted from the kernel summaries")
        return GovernorStep(self.one_in, self.cpu, self.wait, detail)
