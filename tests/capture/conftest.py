"""Fixtures for capture tests: a real recorder attached to the lab nginx with real eBPF.

Capture tests never skip: run as root (CI does); without root they fail loudly.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.pipeline.recorder import Recorder
from ngxscope.pipeline.target import RecordOptions


class MemorySink:
    """Collects what the recorder writes."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.connections: list[Exchange] = []
        """Records of connections that never became a request (socket filter), kept apart so
        exchange counts compare with access-log lines."""
        self.events: list[LifecycleEvent] = []
        self.stats: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def write_exchange(self, ex: Exchange) -> None:
        with self.lock:
            (self.exchanges if ex.conn_outcome is None else self.connections).append(ex)

    def write_event(self, ev: LifecycleEvent) -> None:
        with self.lock:
            self.events.append(ev)

    def write_stats(self, d: dict[str, Any]) -> None:
        with self.lock:
            self.stats.append(d)


class Capture:
    """A running in-process capture of one nginx."""

    def __init__(self, pid: int | None = None, binary: str | None = None, **opts: Any) -> None:
        assert os.geteuid() == 0, "capture tests need root (eBPF); they are never skipped"
        self.sink = MemorySink()
        self.recorder = Recorder(RecordOptions(pid=pid, binary=binary, **opts), [self.sink])
        self.line = self.recorder.start()

    def wait_for(self, n: int, timeout: float = 15.0) -> list[Exchange]:
        """Wait until at least n exchanges were decoded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sink.lock:
                if len(self.sink.exchanges) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # let stragglers (extra exchanges) arrive too
        with self.sink.lock:
            return list(self.sink.exchanges)

    def stop(self) -> list[Exchange]:
        self.recorder.stop("test done")
        self.recorder.join()
        return list(self.sink.exchanges)


@pytest.fixture
def capture_factory() -> Iterator[Any]:
    started: list[Capture] = []

    def make(**kwargs: Any) -> Capture:
        cap = Capture(**kwargs)
        started.append(cap)
        return cap

    yield make
    for cap in started:
        if not cap.recorder.stopping:
            cap.stop()
