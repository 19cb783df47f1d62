"""Running one capture to its end: open the sinks, attach, tick until stopped, detach.

`record` is what `ngxscope record` (and the terminal demo) runs; `run_until_stopped` is its
main-thread loop: stats once a second, the live counter, signals, --duration, nginx gone,
and (for the capture helper) the window going away.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .recorder import Recorder
from .sinks import Outputs, RecordSink, SinkSet, open_sinks
from .target import RecordOptions

__all__ = ["RecordResult", "record", "run_until_stopped"]


@dataclass(slots=True)
class RecordResult:
    """How a capture ended."""

    stats: dict[str, Any] = field(default_factory=dict)
    """The Recorder's last counters (requests, lost, truncated, shed_exchanges...)."""
    end_reason: str = ""
    """Why it stopped ("stopped by SIGINT", "nginx exited"...)."""
    error: BaseException | None = None
    """What stopped it, when something failed (a sink, the decoder)."""


def record(opts: RecordOptions, outputs: Outputs, *, duration: float | None = None, live: bool = False,
           watch_stdin: bool = False, extra_sinks: Sequence[RecordSink] = (),
           announce: Callable[[str], None] | None = None) -> RecordResult:
    """Capture until stopped into `outputs` (and `extra_sinks`, e.g. a terminal printer).

    `announce` gets the "capturing ..." line once attached. Raises CaptureError (and the
    errors of `open_sinks`) with one line when the capture cannot start; a session file
    created for it is removed again then.
    """
    created = bool(outputs.session) and not os.path.exists(str(outputs.session))
    sinks: SinkSet | None = None
    try:
        sinks = open_sinks(outputs)
        rec = Recorder(opts, [*sinks.sinks, *extra_sinks],
                       watch_files=[sinks.session] if sinks.session else [])
        sinks.on_error(rec.fail)
        line = rec.start()
    except BaseException:
        if sinks is not None:
            sinks.close(clean=False, quiet=True)
        if created and outputs.session and os.path.exists(outputs.session):
            os.unlink(outputs.session)  # nothing was captured: leave no empty session behind
        raise
    if announce is not None:
        announce(line)
    try:
        run_until_stopped(rec, duration, live=live, watch_stdin=watch_stdin)
    finally:
        rec.join()
        sinks.close()
    return RecordResult(stats=rec.counters(), end_reason=rec.end_reason, error=rec.decode_error)


def run_until_stopped(rec: Recorder, duration: float | None, *, live: bool, watch_stdin: bool = False) -> None:
    """Tick once a second (stats, liveness) until a signal, the duration, or nginx exits."""
    def on_signal(signum: int, _frame: Any) -> None:
        rec.stop(f"stopped by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    if watch_stdin:
        def stdin_watch() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            rec.stop("the window closed")

        threading.Thread(target=stdin_watch, daemon=True, name="ngxscope-stdin").start()
    deadline = time.monotonic() + duration if duration else None
    last_tick = time.monotonic()
    last_requests = 0
    try:
        while not rec.stopping:
            time.sleep(0.2)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                rec.stop(f"stopped after {duration:g} s")
                break
            if now - last_tick >= 1.0:
                stats = rec.write_stats()
                rate = (stats["requests"] - last_requests) / (now - last_tick)
                last_requests, last_tick = stats["requests"], now
                if live:
                    sys.stderr.write(
                        f"\r{stats['requests']:>9} requests  {rate:8.1f} req/s  lost {stats['lost']}  "
                        f"truncated {stats['truncated']}  summary-only {stats['shed_exchanges']}  "
                        f"workers {len(stats['workers'])}   "
                    )
                    sys.stderr.flush()
                if rec.nginx_gone():
                    rec.stop("nginx exited")
    finally:
        if live:
            sys.stderr.write("\n")
        for s, h in old.items():
            signal.signal(s, h)
