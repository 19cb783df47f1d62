"""A pinned baseline: what the window's recent traffic is compared with, live.

The baseline is a set of exchanges: the first minutes of the running capture, any time
range of it, or a saved session. Its per server block / location / route / peer figures
are computed once (`BaselinePin`); each refresh of a panel then judges the panel's own
exchanges (its last minute) against them with `store.diff`'s tests: Mann-Whitney U on the
latency samples and a two-proportion test on the error rates. A row is *worse* when its
latency is significantly higher or its error rate significantly higher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ngxscope.model import Exchange
from ngxscope.store.diff import DiffRow, Side, collect_sides, judge
from ngxscope.store.routes import RouteTemplater

__all__ = ["FIRST_MINUTES", "LIVE_SAMPLES", "BaselinePin", "first_minutes", "time_range"]

FIRST_MINUTES = 5
"""The default live baseline: the first five minutes of the capture."""

LIVE_SAMPLES = 1000
"""Latency samples per side and row given to the test on each live refresh (it runs on the
UI thread: an even stride beyond)."""


def first_minutes(exchanges: Iterable[Exchange], minutes: float = FIRST_MINUTES) -> tuple[float, float] | None:
    """The time range of the first `minutes` of these exchanges (None when there are none)."""
    starts = [ex.start for ex in exchanges]
    if not starts:
        return None
    t0 = min(starts)
    return t0, t0 + 60.0 * minutes


def time_range(exchanges: Iterable[Exchange], t0: float, t1: float) -> list[Exchange]:
    """The exchanges that started within [t0, t1)."""
    return [ex for ex in exchanges if t0 <= ex.start < t1]


@dataclass(slots=True)
class BaselinePin:
    """A baseline's figures, kept for live comparisons."""

    name: str
    """How the window names it ("first 5 min of this capture", "base.ngxs")."""
    exchanges: list[Exchange]
    """The baseline's exchanges (the Compare view shows them against the rest)."""
    span: tuple[float, float] | None = None
    """The time range of this capture it covers (None: a saved session)."""
    templater: Callable[[], RouteTemplater] = RouteTemplater
    """Makes the route templater both sides share."""
    sides: dict[tuple[str, str], Side] = field(default_factory=dict)
    """The baseline's figures per (dimension, key)."""
    _shared: RouteTemplater | None = None

    def __post_init__(self) -> None:
        self._shared = self.templater()
        self.sides = collect_sides(self.exchanges, self._shared, LIVE_SAMPLES)

    def after(self, exchanges: Iterable[Exchange]) -> list[Exchange]:
        """The exchanges to compare with it: those after its range (all, for a saved session)."""
        if self.span is None:
            return list(exchanges)
        return [ex for ex in exchanges if ex.start >= self.span[1]]

    def compare(self, now: Iterable[Exchange]) -> dict[tuple[str, str], DiffRow]:
        """Every (dimension, key) seen `now`, judged against the baseline."""
        assert self._shared is not None
        now_sides = collect_sides(list(now), self._shared, LIVE_SAMPLES)
        return {key: judge(key, self.sides.get(key), side) for key, side in now_sides.items()}
