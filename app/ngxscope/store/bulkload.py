"""Reading a whole session for the window: every exchange counted, only the newest kept.

`scan` streams a `SessionReader` through the fast record path (`fastrecord`): records are
still all checked (same errors, same warnings), but most exchanges are never built: their
aggregate columns (`Aggregator.feed_columns`) come straight from the decoded record, and
only the lines of the newest `keep` are held (about 1 KB each), to be built into
`Exchange`s once the end of the file is known. `BackgroundScan` runs `scan` in a thread and
hands the batches over through a bounded queue, so a GUI can feed its aggregates in short
slices while its event loop keeps running. No Qt here.
"""

from __future__ import annotations

import gc
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.store.aggregate import UNKNOWN_GROUP, AttemptRow, attempt_rows
from ngxscope.store.fastrecord import RawExchange, rebuild
from ngxscope.store.kcounted import CountedFeed, CountedStep
from ngxscope.store.session import ReadCancelled, SessionReader

__all__ = ["BATCH", "BackgroundScan", "Batch", "Done", "paused_gc", "scan"]

BATCH = 5000
"""Exchanges per `Batch`."""
_MARGIN = 0.01  # of the estimated total: building a few too many is cheaper than decoding twice


@dataclass(slots=True)
class Batch:
    """Up to `BATCH` exchanges as `Aggregator.feed_columns` takes them."""

    end: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    status: list[int | None] = field(default_factory=list)
    pid: list[int] = field(default_factory=list)
    attempts: list[list[AttemptRow]] = field(default_factory=list)
    exchanges: list[Exchange] | None = None
    """The exchanges themselves, built, when `scan(full=True)` (a filter must see them)."""

    def __len__(self) -> int:
        return len(self.end)

    def columns(self) -> tuple[list[float], list[float], list[int | None], list[int],
                               list[list[AttemptRow]]]:
        """The arguments of `Aggregator.feed_columns`."""
        return self.end, self.start, self.status, self.pid, self.attempts


@dataclass(slots=True)
class Done:
    """The end of a scan: the newest exchanges (oldest first), the events, what was read."""

    tail: list[Exchange]
    events: list[LifecycleEvent]
    total: int
    warning: str | None
    header: dict[str, object]
    counted: list[tuple[int, CountedStep]] = field(default_factory=list)
    """What the kernel counted instead of rows, second by second (store.kcounted)."""
    stats: dict[str, Any] | None = None
    """The last stats record."""


class paused_gc:
    """Context: the cyclic garbage collector off, in every thread, until the last of the
    nested or concurrent pauses ends (then as it was before the first). Reading allocates
    millions of short-lived containers while the kept rows pile up; each collection would
    walk them all (about 40 % of an open). Records make no reference cycles."""

    _lock = threading.Lock()
    _depth = 0
    _was_enabled = False

    def __enter__(self) -> None:
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._was_enabled = gc.isenabled()
                gc.disable()
            cls._depth += 1

    def __exit__(self, *_: object) -> None:
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0 and cls._was_enabled:
                gc.enable()


def _add(batch: Batch, ex: Exchange) -> None:
    batch.end.append(ex.end)
    batch.start.append(ex.start)
    batch.status.append(ex.status)
    batch.pid.append(ex.pid)
    batch.attempts.append(attempt_rows(ex) if ex.upstream else [])


def scan(
    reader: SessionReader,
    keep: int,
    *,
    full: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[Batch | Done]:
    """Yield `Batch`es of every exchange in `reader`'s file, then one `Done` with the newest
    `keep` exchanges. `full`: build every exchange (`Batch.exchanges`). Raises what
    `SessionReader.iter_records` raises (`SessionError`, `ReadCancelled`)."""
    tail: deque[bytes | Exchange] = deque(maxlen=keep)
    events: list[LifecycleEvent] = []
    batch = Batch(exchanges=[] if full else None)
    total = 0  # exchanges in batches yielded so far
    # The newest `keep` are built at once, from their first decoding, once the position in
    # the file tells they are probably among them (exchanges so far x total / read so far);
    # before, the line is kept and decoded again at the end (about 1 s per 200,000 more).
    # Only a guess: a wrong one costs time, never a row.
    build_from = math.inf
    where = [0, 0]

    def seen(done: int, size: int) -> None:
        where[:] = done, size
        if progress is not None:
            progress(done, size)

    unknown = UNKNOWN_GROUP
    counted = CountedFeed()
    steps: list[tuple[int, CountedStep]] = []
    last_stats: dict[str, Any] | None = None
    for rec in reader.iter_fast(seen, cancelled):
        if type(rec) is RawExchange:
            d = rec.data
            if full:
                ex = rec.build()
                _add(batch, ex)
                assert batch.exchanges is not None
                batch.exchanges.append(ex)
                tail.append(ex)
            else:
                batch.end.append(d["end"])
                batch.start.append(d["start"])
                batch.status.append(d["status"])
                batch.pid.append(d["pid"])
                ups = d["upstream"]
                batch.attempts.append([
                    (a["group"] or unknown, a["addr"], a["status"], a["header_ms"],
                     a["duration_ms"], a["request_bytes"], a["response_bytes"],
                     a["response_head"]) for a in ups] if ups else [])
                tail.append(rec.build() if total + len(batch.end) > build_from else rec.line)
        elif isinstance(rec, Exchange):  # the full path: an older version, an odd record
            _add(batch, rec)
            if batch.exchanges is not None:
                batch.exchanges.append(rec)
            tail.append(rec)
        elif isinstance(rec, LifecycleEvent):
            events.append(rec)
            continue
        else:
            if isinstance(rec, dict) and rec.get("t") == "stats":
                last_stats = rec
                step = counted.step(rec.get("counted"))
                if step.rows or step.hist:
                    steps.append((int(float(rec.get("ts") or 0)) - 1, step))
            continue
        if len(batch.end) >= BATCH:
            total += len(batch)
            yield batch
            batch = Batch(exchanges=[] if full else None)
            if where[0]:
                estimate = total * where[1] / where[0]
                build_from = estimate * (1 - _MARGIN) - keep
    if len(batch):
        total += len(batch)
        yield batch
    rows = [item if isinstance(item, Exchange) else rebuild(item) for item in tail]
    tail.clear()
    yield Done(rows, events, total, reader.warning, reader.header, steps, last_stats)


class BackgroundScan:
    """`scan` in a daemon thread; the consumer `poll`s batches (bounded queue: the reader
    waits when the consumer lags, so memory stays bounded). `cancel()` stops it."""

    def __init__(self, reader: SessionReader, keep: int, *, full: bool = False,
                 depth: int = 8) -> None:
        self.bytes_read = 0
        self.bytes_total = 1
        self._queue: queue.Queue[Batch | Done | BaseException] = queue.Queue(maxsize=depth)
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(reader, keep, full), name="session-scan", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.bytes_read, self.bytes_total = done, max(total, 1)

    def _put(self, item: Batch | Done | BaseException) -> bool:
        while not self._cancel.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, reader: SessionReader, keep: int, full: bool) -> None:
        try:
            with paused_gc():
                for item in scan(reader, keep, full=full, progress=self._progress,
                                 cancelled=self._cancel.is_set):
                    if not self._put(item):
                        return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc if not self._cancel.is_set() else ReadCancelled("cancelled"))

    def poll(self, timeout: float | None = None) -> Batch | Done | None:
        """The next item (None: none yet); raises the error the scan ended with."""
        try:
            item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        """Stop reading (the thread ends within a fraction of a second)."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
