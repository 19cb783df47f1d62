"""A pinned baseline judges later exchanges with store.diff's tests."""

from __future__ import annotations

import random

from factories import make_exchange
from ngxscope.store.baseline import BaselinePin, first_minutes, time_range


def _ex(t: float, path: str, ms: float, status: int = 200):  # type: ignore[no-untyped-def]
    ex = make_exchange(target=path, status=status)
    ex.start, ex.end = t, t + ms / 1000.0
    return ex


def test_first_minutes_then_judged() -> None:
    rng = random.Random(3)
    early = [_ex(1000.0 + i * 0.5, p, rng.uniform(10, 20)) for i in range(600) for p in ("/a", "/b")]
    span = first_minutes(early, 5)
    assert span == (1000.0, 1300.0)
    base = time_range(early, *span)
    assert len(base) == 1200 and all(1000.0 <= ex.start < 1300.0 for ex in base)
    pin = BaselinePin("first 5 min", base, span)
    later = [_ex(1400.0 + i * 0.1, "/a", rng.uniform(40, 60)) for i in range(100)]
    later += [_ex(1400.0 + i * 0.1, "/b", rng.uniform(10, 20), 500 if i % 4 == 0 else 200) for i in range(100)]
    assert pin.after(early + later) == later
    verdicts = pin.compare(later)
    assert verdicts[("route", "/a")].worse and verdicts[("route", "/a")].significant  # slower
    assert verdicts[("route", "/b")].worse and not verdicts[("route", "/b")].significant  # more errors
    same = pin.compare([_ex(1400.0 + i * 0.1, "/a", rng.uniform(10, 20)) for i in range(100)])
    assert not same[("route", "/a")].worse
    assert pin.sides[("route", "/a")].requests == 600  # the baseline's figures, kept
    assert first_minutes([]) is None
