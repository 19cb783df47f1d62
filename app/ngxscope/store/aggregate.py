"""Time-bucketed aggregates the graphs and the per-worker / per-upstream views read.

Everything is fed in batches (`Aggregator.feed`) and kept in fixed-size numpy arrays, so
reading a graph never walks the exchanges:

- a ring of per-second buckets (20 minutes by default) keyed by the second an exchange
  ended, each with request counts per status class (1xx..5xx, none) and a log-scale
  latency histogram (20 bins per decade, 10 µs .. 100 s) from which p50/p95/p99 come;
- per worker (pid): totals, status classes, a latency histogram and a per-second ring;
- per upstream group and peer (`(group, addr)`): attempts, status classes, errors,
  failures (no answer), retries (attempts followed by another), upstream response-time and
  header-time HDR-style histograms (`HdrHistogram`, < 1 % relative error), bytes both
  ways, and a per-second ring (the sparklines).

A filter predicate can be set; graphs follow it by `rebuild`-ing from the store.
Pure Python + numpy, no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ngxscope.model import Exchange
from ngxscope.store.conntally import ConnTally
from ngxscope.store.hdrhist import HdrHistogram
from ngxscope.store.replay import TAG

__all__ = [
    "BIN_EDGES_MS",
    "CLASS_NAMES",
    "UNKNOWN_GROUP",
    "Aggregator",
    "AttemptRow",
    "HdrHistogram",
    "PeerRow",
    "Series",
    "WorkerRow",
    "attempt_failed",
    "attempt_group",
    "attempt_rows",
    "hist_percentiles",
    "latency_bin",
    "status_class",
]

CLASS_NAMES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
"""Status classes, in column order of the count arrays."""
NCLASS = len(CLASS_NAMES)

BINS_PER_DECADE = 20
LOG_MIN = -2  # 10 µs
LOG_MAX = 5  # 100 s
NBINS = (LOG_MAX - LOG_MIN) * BINS_PER_DECADE
BIN_EDGES_MS = np.logspace(LOG_MIN, LOG_MAX, NBINS + 1)
"""Edges of the latency histogram bins, in milliseconds."""
_BIN_MID_MS = np.sqrt(BIN_EDGES_MS[:-1] * BIN_EDGES_MS[1:])

SPARK_S = 60
"""Seconds of per-peer history in `PeerRow.spark`."""

RATE_WINDOW_S = 10
"""Rates (req/s) are averaged over this many most recent seconds."""

UNKNOWN_GROUP = "(unknown group)"
"""The group of a peer when neither the attempt nor the exchange names its upstream block."""


def attempt_group(ex: Exchange, attempt: object) -> str:
    """The `upstream NAME {}` group of an attempt: the attempt's, the exchange's, or unknown."""
    group = getattr(attempt, "group", None) or getattr(ex, "upstream_group", None)
    return str(group) if group else UNKNOWN_GROUP


def attempt_failed(attempt: object) -> bool:
    """The peer never answered (refused, reset, timed out): no status or no response head."""
    status = getattr(attempt, "status", None)
    if status is None:
        return True
    return (getattr(attempt, "header_ms", None) is None
            and not getattr(attempt, "response_bytes", 0)
            and not getattr(attempt, "response_head", None))


AttemptRow = tuple[str, str, int | None, float | None, float | None, int, int, str | None]
"""One upstream attempt as the aggregates count it: (group, addr, status, header_ms,
duration_ms, request_bytes, response_bytes, response_head); the group already resolved
(`attempt_group`)."""


def attempt_rows(ex: Exchange) -> list[AttemptRow]:
    """The `AttemptRow`s of an exchange's upstream attempts, in order."""
    ex_group = getattr(ex, "upstream_group", None)
    return [(getattr(a, "group", None) or ex_group or UNKNOWN_GROUP, a.addr, a.status, a.header_ms,
             a.duration_ms, a.request_bytes, a.response_bytes, a.response_head)
            for a in ex.upstream]


def status_class(status: int | None) -> int:
    """Index into CLASS_NAMES for a status code (5 = no status)."""
    if status is None or not 100 <= status <= 599:
        return 5
    return status // 100 - 1


def latency_bin(ms: float) -> int:
    """Histogram bin of a duration in ms (clamped to the first/last bin)."""
    if ms <= 0.0 or ms != ms:
        return 0
    i = int((math.log10(ms) - LOG_MIN) * BINS_PER_DECADE)
    return 0 if i < 0 else (NBINS - 1 if i >= NBINS else i)


def _bins(ms: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.floor((np.log10(np.maximum(ms, 1e-9)) - LOG_MIN) * BINS_PER_DECADE)
    return np.clip(np.nan_to_num(idx, nan=0.0), 0, NBINS - 1).astype(np.intp)


def hist_percentiles(hist: np.ndarray, qs: Iterable[float]) -> np.ndarray:
    """Percentiles (qs in 0..1) from histogram rows `hist` (..., NBINS) → (..., len(qs)) ms.

    Rows with no samples give NaN. The value is the geometric middle of the bin.
    """
    hist = np.asarray(hist)
    cs = np.cumsum(hist, axis=-1)
    total = cs[..., -1:]
    out = []
    for q in qs:
        target = np.maximum(total * q, 1e-9)
        idx = np.argmax(cs >= target, axis=-1)
        vals = _BIN_MID_MS[idx].astype(float)
        vals = np.where(total[..., 0] > 0, vals, np.nan)
        out.append(vals)
    return np.stack(out, axis=-1)


@dataclass(slots=True)
class Series:
    """Per-second data for the graphs over a window, oldest first."""

    t: np.ndarray
    """Seconds relative to the newest bucket (-window+1 .. 0)."""
    counts: np.ndarray
    """(len(t), 6) requests per status class per second."""
    pct: np.ndarray
    """(len(t), 3) p50/p95/p99 latency in ms per second (NaN when empty)."""
    hist: np.ndarray
    """(NBINS,) latency histogram summed over the window."""
    end: int = 0
    """The absolute second `t == 0` stands for (see `Aggregator.end_second`)."""


@dataclass(slots=True)
class WorkerRow:
    """What the per-worker table shows for one pid."""

    pid: int
    requests: int
    rate: float
    classes: list[int]
    p50: float
    p95: float
    p99: float


@dataclass(slots=True)
class PeerRow:
    """What the per-upstream table shows for one peer address."""

    addr: str
    requests: int
    rate: float
    classes: list[int]
    errors: int
    p50: float
    p95: float
    p99: float
    header_p50: float
    header_p95: float
    header_p99: float
    bytes_sent: int
    bytes_received: int
    group: str = UNKNOWN_GROUP
    """The upstream block (`upstream NAME {}`) the attempts were made for."""
    failures: int = 0
    """Attempts the peer never answered (refused, reset, timed out)."""
    retries: int = 0
    """Attempts that were followed by another attempt (nginx moved on to the next peer)."""
    spark: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Attempts per second over the SPARK_S seconds up to `end_second`, oldest first."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(slots=True)
class _Key:
    """Accumulators for one worker or peer."""

    requests: int = 0
    classes: np.ndarray = field(default_factory=lambda: np.zeros(NCLASS, np.int64))
    hist: np.ndarray = field(default_factory=lambda: np.zeros(NBINS, np.int64))
    errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    ring: np.ndarray | None = None
    failures: int = 0
    retries: int = 0
    resp: HdrHistogram | None = None
    header: HdrHistogram | None = None


class Aggregator:
    """Bounded time-bucketed aggregates over a stream of exchanges."""

    def __init__(self, seconds: int = 1200) -> None:
        self.seconds = seconds
        self.predicate: Callable[[Exchange], bool] | None = None
        self.clock: Callable[[], float] | None = None
        """Live: the wall clock (`time.time`). Windows and rates then end at the last complete
        second, so they keep moving (and fall to zero) when requests stop. None (a session):
        they end at the newest second fed."""
        self.reset()

    def reset(self) -> None:
        """Forget everything (the predicate stays)."""
        n = self.seconds
        self.slot_sec = np.full(n, -1, np.int64)
        self.counts = np.zeros((n, NCLASS), np.int64)
        self.hist = np.zeros((n, NBINS), np.int32)
        self.latest: int | None = None
        self.total = 0
        self.total_classes = np.zeros(NCLASS, np.int64)
        self.first: int | None = None
        """The oldest second fed since the last reset."""
        self.workers: dict[int, _Key] = {}
        self.peers: dict[tuple[str, str], _Key] = {}
        """Keyed by (group, addr)."""
        self.conns = ConnTally()
        """TLS / connection figures (fed by `feed`, not by `feed_columns`)."""

    def set_predicate(self, predicate: Callable[[Exchange], bool] | None) -> None:
        """Only exchanges the predicate accepts are counted from now on (see `rebuild`)."""
        self.predicate = predicate

    def rebuild(self, exchanges: Iterable[Exchange]) -> None:
        """Reset and feed `exchanges` again (after a filter change)."""
        self.reset()
        batch: list[Exchange] = []
        for ex in exchanges:
            batch.append(ex)
            if len(batch) >= 20_000:
                self.feed(batch)
                batch = []
        self.feed(batch)

    # -- ingestion -------------------------------------------------------------------

    def _claim(self, secs: np.ndarray) -> np.ndarray:
        """Map absolute seconds to ring slots, recycling stale slots. Returns slots."""
        n = self.seconds
        for s in np.unique(secs).tolist():
            slot = s % n
            if self.slot_sec[slot] != s:
                self.slot_sec[slot] = s
                self.counts[slot] = 0
                self.hist[slot] = 0
                for key in (*self.workers.values(), *self.peers.values()):
                    if key.ring is not None:
                        key.ring[slot] = 0
        return secs % n

    def feed(self, batch: list[Exchange]) -> None:
        """Count a batch of exchanges (filtered by the predicate if one is set); replays
        (`store.replay`) are never counted."""
        batch = [e for e in batch if not (e.request_headers and e.request_headers[-1][0] == TAG)]
        if self.predicate is not None:
            batch = [e for e in batch if self.predicate(e)]
        if not batch:
            return
        self.conns.feed(batch)
        self.feed_columns(
            [e.end for e in batch], [e.start for e in batch], [e.status for e in batch],
            [e.pid for e in batch], [attempt_rows(e) if e.upstream else () for e in batch],
        )

    def feed_columns(
        self,
        end: list[float],
        start: list[float],
        status: list[int | None],
        pid: list[int],
        attempts: list[Sequence[AttemptRow]],
    ) -> None:
        """Count exchanges given as columns (one item per exchange), bypassing the predicate.

        `attempts[i]` holds exchange i's upstream attempts as `AttemptRow`s (see
        `attempt_rows`), in order. `feed` is this on `Exchange` objects; a bulk reader can
        call it straight from decoded records without building `Exchange`s.
        """
        n = len(end)
        if not n:
            return
        secs = np.fromiter(map(int, end), np.int64, n)
        newest = int(secs.max())
        if self.latest is None or newest > self.latest:
            self.latest = newest
        oldest = max(int(secs.min()), self.latest - self.seconds + 1)
        if self.first is None or oldest < self.first:
            self.first = oldest
        keep = secs > self.latest - self.seconds
        if not keep.all():
            idx = np.flatnonzero(keep).tolist()
            if not idx:
                return
            end = [end[i] for i in idx]
            start = [start[i] for i in idx]
            status = [status[i] for i in idx]
            pid = [pid[i] for i in idx]
            attempts = [attempts[i] for i in idx]
            secs = secs[keep]
            n = len(idx)
        cls = np.fromiter(map(status_class, status), np.intp, n)
        dur = np.fromiter(((e - s) * 1000.0 for e, s in zip(end, start, strict=True)), float, n)
        bins = _bins(dur)
        slots = self._claim(secs)
        np.add.at(self.counts, (slots, cls), 1)
        np.add.at(self.hist, (slots, bins), 1)
        self.total += n
        self.total_classes += np.bincount(cls, minlength=NCLASS)
        self._feed_workers(np.fromiter(pid, np.int64, n), slots, cls, bins)
        self._feed_peers(attempts, slots)

    def _key(self, table: dict, name: object) -> _Key:
        key = table.get(name)
        if key is None:
            key = table[name] = _Key(ring=np.zeros(self.seconds, np.int32))
        return key

    def _feed_workers(
        self, pids: np.ndarray, slots: np.ndarray, cls: np.ndarray, bins: np.ndarray
    ) -> None:
        for pid in np.unique(pids).tolist():
            mask = pids == pid
            key = self._key(self.workers, pid)
            key.requests += int(mask.sum())
            key.classes += np.bincount(cls[mask], minlength=NCLASS)
            key.hist += np.bincount(bins[mask], minlength=NBINS)
            assert key.ring is not None
            np.add.at(key.ring, slots[mask], 1)

    def _feed_peers(self, attempts: list[Sequence[AttemptRow]], slots: np.ndarray) -> None:
        index = HdrHistogram.index
        peers = self.peers
        for ups, slot in zip(attempts, slots.tolist(), strict=True):
            if not ups:
                continue
            last = len(ups) - 1
            for n, (group, addr, status, header_ms, duration_ms, request_bytes, response_bytes,
                    response_head) in enumerate(ups):
                key = peers.get((group, addr))
                if key is None:
                    key = self._key(peers, (group, addr))
                    key.resp, key.header = HdrHistogram(), HdrHistogram()
                resp, header = key.resp, key.header
                assert resp is not None and header is not None and key.ring is not None
                key.requests += 1
                key.classes[status_class(status)] += 1
                if status is None or status >= 500:
                    key.errors += 1
                    if status is None or (header_ms is None and not response_bytes
                                          and not response_head):
                        key.failures += 1  # = attempt_failed(a), inlined: a hot loop
                if n < last:
                    key.retries += 1
                if duration_ms is not None:
                    resp.counts[index(duration_ms)] += 1
                    resp.total += 1
                if header_ms is not None:
                    header.counts[index(header_ms)] += 1
                    header.total += 1
                key.bytes_sent += request_bytes
                key.bytes_received += response_bytes
                key.ring[slot] += 1

    # -- reading ---------------------------------------------------------------------

    def end_second(self) -> int:
        """The newest second windows show: the last complete one (live) or the newest fed."""
        if self.clock is not None:
            return int(self.clock()) - 1
        return self.latest if self.latest is not None else 0

    def _window_slots(self, window_s: int) -> tuple[np.ndarray, np.ndarray]:
        """(absolute seconds, slots) of the `window_s` seconds up to `end_second`, oldest first."""
        window_s = max(1, min(window_s, self.seconds))
        end = self.end_second()
        secs = np.arange(end - window_s + 1, end + 1, dtype=np.int64)
        return secs, secs % self.seconds

    def _valid(self, secs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return self.slot_sec[slots] == secs

    def series(self, window_s: int) -> Series:
        """Per-second counts and percentiles over the last `window_s` seconds."""
        secs, slots = self._window_slots(window_s)
        valid = self._valid(secs, slots)
        counts = np.where(valid[:, None], self.counts[slots], 0)
        hist = np.where(valid[:, None], self.hist[slots], 0)
        pct = hist_percentiles(hist, (0.5, 0.95, 0.99))
        end = int(secs[-1])
        return Series(
            t=(secs - end).astype(float), counts=counts, pct=pct, hist=hist.sum(axis=0), end=end
        )

    def key_series(self, key: _Key, window_s: int) -> np.ndarray:
        """Per-second counts of one worker/peer over the window, oldest first."""
        secs, slots = self._window_slots(window_s)
        assert key.ring is not None
        return np.where(self._valid(secs, slots), key.ring[slots], 0)

    def _rate(self, key: _Key) -> float:
        if self.latest is None:
            return 0.0
        return float(self.key_series(key, RATE_WINDOW_S).sum()) / RATE_WINDOW_S

    def rate(self) -> float:
        """Requests per second over the RATE_WINDOW_S seconds up to `end_second`."""
        if self.latest is None:
            return 0.0
        return float(self.series(RATE_WINDOW_S).counts.sum()) / RATE_WINDOW_S

    def recent_percentiles(self, seconds: int = RATE_WINDOW_S) -> tuple[float, float, float]:
        """p50/p95/p99 (ms) over the `seconds` seconds up to `end_second` (NaN when empty)."""
        if self.latest is None:
            return (math.nan, math.nan, math.nan)
        secs, slots = self._window_slots(seconds)
        hist = np.where(self._valid(secs, slots)[:, None], self.hist[slots], 0).sum(axis=0)
        p = hist_percentiles(hist, (0.5, 0.95, 0.99))
        return (float(p[0]), float(p[1]), float(p[2]))

    def worker_rows(self) -> list[WorkerRow]:
        """One row per worker pid, by pid."""
        rows = []
        for pid in sorted(self.workers):
            key = self.workers[pid]
            p = hist_percentiles(key.hist, (0.5, 0.95, 0.99))
            rows.append(
                WorkerRow(
                    pid, key.requests, self._rate(key), [int(c) for c in key.classes],
                    float(p[0]), float(p[1]), float(p[2]),
                )
            )
        return rows

    def group_rows(self) -> list[PeerRow]:
        """One row per upstream group (addr ""): its peers' attempts added up, by group."""
        merged: dict[str, _Key] = {}
        for (group, _addr), key in self.peers.items():
            m = merged.get(group)
            if m is None:
                m = merged[group] = _Key(ring=np.zeros(self.seconds, np.int32),
                                         resp=HdrHistogram(), header=HdrHistogram())
            m.requests += key.requests
            m.classes += key.classes
            m.errors += key.errors
            m.failures += key.failures
            m.retries += key.retries
            m.bytes_sent += key.bytes_sent
            m.bytes_received += key.bytes_received
            assert m.ring is not None and key.ring is not None
            m.ring += key.ring
            if key.resp is not None and key.header is not None:
                assert m.resp is not None and m.header is not None
                m.resp.merge(key.resp)
                m.header.merge(key.header)
        return [self._peer_row(group, "", merged[group]) for group in sorted(merged)]

    def _peer_row(self, group: str, addr: str, key: _Key) -> PeerRow:
        qs = (0.5, 0.95, 0.99)
        p = key.resp.percentiles(qs) if key.resp else [math.nan] * 3
        h = key.header.percentiles(qs) if key.header else [math.nan] * 3
        spark = self.key_series(key, SPARK_S).astype(float)
        return PeerRow(
            addr, key.requests, self._rate(key), [int(c) for c in key.classes], key.errors,
            p[0], p[1], p[2], h[0], h[1], h[2], key.bytes_sent, key.bytes_received, group,
            key.failures, key.retries, spark,
        )

    def peer_rows(self) -> list[PeerRow]:
        """One row per (upstream group, peer address), by group then address."""
        return [self._peer_row(g, a, self.peers[(g, a)]) for g, a in sorted(self.peers)]
