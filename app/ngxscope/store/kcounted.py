"""The requests counted in the kernel, not rows: the stats record's `counted` object.

While the capture samples, sampled-out exchanges no keep rule kept are counted in the kernel
(capture/kcounts.py) and never become rows. Every stats record carries their cumulative
counts since the capture started: `rows` (per worker, server block, upstream peer and
$status: requests, $request_length and $bytes_sent summed, upstream attempts) and `hist`
(per worker, server block, peer, status class: log-linear histograms of $request_time and
of the last attempt's $upstream_response_time, in the buckets of store/hdrhist.py, keyed by
bucket index over microseconds). The latest record holds everything; figures that include
them (`ngxscope stats`, Prometheus, the window) add them to what the rows say, and
percentiles become exact to the bucket (< 0.8 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ngxscope.store.hdrhist import HdrHistogram

__all__ = ["Counted", "CountedFeed", "CountedGroup", "CountedStep", "merged_percentiles", "parse_counted",
           "status_class"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "none"


@dataclass(slots=True)
class CountedGroup:
    """The counted requests of one worker, server block or peer."""

    requests: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    """5xx or no status."""
    request_bytes: int = 0
    response_bytes: int = 0
    hist: HdrHistogram = field(default_factory=HdrHistogram)
    """$request_time (a peer's: its $upstream_response_time)."""


@dataclass(slots=True)
class Counted:
    """The `counted` object of a stats record, parsed."""

    requests: int = 0
    total: CountedGroup = field(default_factory=CountedGroup)
    workers: dict[int, CountedGroup] = field(default_factory=dict)
    servers: dict[str, CountedGroup] = field(default_factory=dict)
    peers: dict[str, CountedGroup] = field(default_factory=dict)
    slow_ms: dict[str, float] = field(default_factory=dict)
    """The slow threshold (ms) of each server block ("*": one for all: --keep-slower-than)."""


def _add(group: CountedGroup, status: int, n: int, req: int, sent: int) -> None:
    group.requests += n
    cls = status_class(status)
    group.classes[cls] = group.classes.get(cls, 0) + n
    group.errors += n if cls in ("5xx", "none") else 0
    group.request_bytes += req
    group.response_bytes += sent


def _hist_of(buckets: dict[str, int]) -> HdrHistogram:
    h = HdrHistogram()
    for b, n in buckets.items():
        i = int(b)
        if 0 <= i < HdrHistogram.SIZE and n > 0:
            h.counts[i] += n
            h.total += n
    return h


def parse_counted(d: Any) -> Counted | None:
    """`counted` of a stats record (None when absent, or not an object)."""
    if not isinstance(d, dict):
        return None
    c = Counted(requests=int(d.get("requests") or 0))
    for row in d.get("rows") or ():
        try:
            status, n = int(row["status"]), int(row["n"])
            req, sent = int(row["request_length"]), int(row["bytes_sent"])
            pid, server, peer = int(row["pid"]), str(row["server"]), row.get("peer")
        except (KeyError, TypeError, ValueError):
            continue
        _add(c.total, status, n, req, sent)
        _add(c.workers.setdefault(pid, CountedGroup()), status, n, req, sent)
        _add(c.servers.setdefault(server, CountedGroup()), status, n, req, sent)
        if peer:
            _add(c.peers.setdefault(str(peer), CountedGroup()), status, n, 0, 0)
    for entry in d.get("hist") or ():
        try:
            h = _hist_of(entry["buckets"])
            pid, server, peer, which = int(entry["pid"]), str(entry["server"]), entry.get("peer"), entry["which"]
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if which == "request":
            for group in (c.total, c.workers.setdefault(pid, CountedGroup()),
                          c.servers.setdefault(server, CountedGroup())):
                group.hist.merge(h)
        elif which == "upstream" and peer:
            c.peers.setdefault(str(peer), CountedGroup()).hist.merge(h)
    slow = d.get("slow_ms")
    if isinstance(slow, dict):
        c.slow_ms = {str(k): float(v) for k, v in slow.items() if isinstance(v, (int, float))}
    return c


def merged_percentiles(values_ms: Any, hist: HdrHistogram, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[float]:
    """Percentiles (ms) of exact values and a histogram together: the values go into a copy
    of the histogram, so the result is exact to the bucket."""
    h = HdrHistogram()
    h.merge(hist)
    for v in np.asarray(values_ms, dtype=float):
        h.record(float(v))
    return h.percentiles(qs)


@dataclass(slots=True)
class CountedStep:
    """What the kernel counted between two stats records (see :class:`CountedFeed`)."""

    rows: list[tuple[int, int, str, int]] = field(default_factory=list)
    """(pid, status, peer or "", requests)."""
    hist: list[tuple[int, str, int, str, int, int]] = field(default_factory=list)
    """(pid, peer or "", status class 1..5, "request"/"upstream", bucket, requests)."""

    @property
    def requests(self) -> int:
        return sum(r[3] for r in self.rows)


class CountedFeed:
    """Turns the cumulative `counted` of successive stats records into what is new in each
    (the window's graphs and panels take the kernel's counts second by second)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], int] = {}

    def step(self, d: Any) -> CountedStep:
        out = CountedStep()
        if not isinstance(d, dict):
            return out
        seen = self._seen
        for row in d.get("rows") or ():
            try:
                key = ("r", int(row["pid"]), str(row["server"]), str(row.get("peer") or ""), int(row["status"]))
                n = int(row["n"])
            except (KeyError, TypeError, ValueError):
                continue
            new = n - seen.get(key, 0)
            seen[key] = n
            if new > 0:
                out.rows.append((key[1], key[4], key[3], new))
        for entry in d.get("hist") or ():
            try:
                base = (int(entry["pid"]), str(entry.get("peer") or ""), int(entry["class"]), str(entry["which"]))
                items = [(int(b), int(n)) for b, n in entry["buckets"].items()]
                server = str(entry["server"])
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            for b, n in items:
                hkey: tuple[Any, ...] = ("h", *base, server, b)
                new = n - seen.get(hkey, 0)
                seen[hkey] = n
                if new > 0 and 0 <= b < HdrHistogram.SIZE:
                    out.hist.append((*base, b, new))
        return out
