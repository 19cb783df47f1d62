"""The kernel's counts in the window's graphs and panels (`CountedGraphs`).

Requests counted in the kernel (sampled out, no keep rule: store.kcounted) are not rows,
but the graphs, the per-worker and the per-upstream panels count them: each stats record's
new counts are fed into the `Aggregator` at the second before the record (the kernel's
counts are drained once a second, so a request may land one second late). They cannot be
filtered (the kernel keeps no path, header or body): while a filter is set they stay out of
the graphs, and come back when it is cleared.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ngxscope.store.aggregate import UNKNOWN_GROUP, Aggregator, HdrHistogram, latency_bin
from ngxscope.store.kcounted import CountedFeed, CountedStep

__all__ = ["CountedGraphs", "feed_counted"]


def feed_counted(agg: Aggregator, second: int, step: CountedStep) -> None:
    """Add one step of the kernel's counts to `agg` at `second`."""
    if not step.rows and not step.hist:
        return
    if agg.latest is None or second > agg.latest:
        agg.latest = second
    if second <= agg.latest - agg.seconds:
        return
    if agg.first is None or second < agg.first:
        agg.first = second
    slot = int(agg._claim(np.array([second], np.int64))[0])
    groups = {addr: group for group, addr in agg.peers}
    for pid, status, peer, n in step.rows:
        cls = status // 100 - 1 if 100 <= status <= 599 else 5
        agg.counts[slot, cls] += n
        agg.total += n
        agg.total_classes[cls] += n
        w = agg._key(agg.workers, pid)
        w.requests += n
        w.classes[cls] += n
        assert w.ring is not None
        w.ring[slot] += n
        if peer:
            p = _peer(agg, groups, peer)
            p.requests += n
            p.classes[cls] += n
            p.errors += n if cls >= 4 else 0
            assert p.ring is not None
            p.ring[slot] += n
    for pid, peer, _cls, which, bucket, n in step.hist:
        if which == "request":
            b = latency_bin(HdrHistogram.bucket_ms(bucket)[0])
            agg.hist[slot, b] += n
            agg._key(agg.workers, pid).hist[b] += n
        elif which == "upstream" and peer:
            resp = _peer(agg, groups, peer).resp
            assert resp is not None
            resp.counts[bucket] += n
            resp.total += n


def _peer(agg: Aggregator, groups: dict[str, str], addr: str) -> Any:
    key = agg._key(agg.peers, (groups.get(addr, UNKNOWN_GROUP), addr))
    if key.resp is None:
        key.resp, key.header = HdrHistogram(), HdrHistogram()
    return key


class CountedGraphs:
    """Feeds an Aggregator the kernel's counts from successive stats records."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self.requests = 0
        """Requests counted in the kernel since the capture started (the latest record's)."""
        self._feed = CountedFeed()
        self._log: deque[tuple[int, CountedStep]] = deque(maxlen=agg.seconds)

    def take(self, stats: dict[str, Any]) -> None:
        """A stats record arrived: feed what the kernel counted since the last one."""
        counted = stats.get("counted")
        if not isinstance(counted, dict):
            return
        self.requests = int(counted.get("requests") or 0)
        step = self._feed.step(counted)
        if not step.rows and not step.hist:
            return
        second = int(float(stats.get("ts") or 0)) - 1
        self._log.append((second, step))
        if self.agg.predicate is None:
            feed_counted(self.agg, second, step)

    def take_steps(self, steps: list[tuple[int, CountedStep]], stats: dict[str, Any] | None) -> None:
        """A session file's counts (store.bulkload.Done), fed at once."""
        counted = (stats or {}).get("counted")
        self.requests = int(counted.get("requests") or 0) if isinstance(counted, dict) else 0
        for second, step in steps:
            self._log.append((second, step))
            if self.agg.predicate is None:
                feed_counted(self.agg, second, step)

    def refeed(self) -> None:
        """After the aggregator was rebuilt: feed the counts again (without a filter)."""
        if self.agg.predicate is None:
            for second, step in self._log:
                feed_counted(self.agg, second, step)

    def clear(self) -> None:
        """The window was cleared: forget the counts shown so far."""
        self._log.clear()
