"""Where a capture's records go: the sink interface and the sinks a run opens.

A sink has four methods (`RecordSink`): `write_exchange`, `write_event`, `write_stats`,
`close`. The writers behind them are the session file and the helper's stream
(`store.session`), rotating session files (`rotate`), Prometheus metrics and OTLP traces
(`telemetry`). `open_sinks` builds what `Outputs` asks for, each wrapped in a `LockedSink`
that masks secrets (`Redactor`) and keeps the first write error.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from ..model import Exchange, LifecycleEvent
from ..store.redact import RedactPolicy, policy_from_env, redact_exchange
from ..store.session import SessionWriter, StreamWriter
from .rotate import RotatingSessionWriter

__all__ = [
    "LockedSink",
    "OtlpOptions",
    "OutputError",
    "Outputs",
    "RecordSink",
    "Redactor",
    "RotateOptions",
    "SinkSet",
    "open_sinks",
]


class OutputError(ValueError):
    """An output asked for cannot be used as given (a bad address, size...): one line."""


class RecordSink(Protocol):
    """What the Recorder writes to (from its decode thread and the stats ticks)."""

    def write_exchange(self, ex: Exchange) -> None: ...
    def write_event(self, ev: LifecycleEvent) -> None: ...
    def write_stats(self, d: dict[str, Any]) -> None: ...


class Writer(RecordSink, Protocol):
    """A record writer a `LockedSink` wraps (session, stream, rotation, metrics, traces)."""

    def close(self, clean: bool = True) -> None: ...


class Redactor:
    """Masks secrets once per exchange, however many sinks write it (the decode thread
    hands the same object to each sink in turn)."""

    def __init__(self, policy: RedactPolicy) -> None:
        self.policy = policy
        self._last: tuple[Exchange, Exchange] | None = None

    @property
    def active(self) -> bool:
        return bool(self.policy.active)

    def describe(self) -> dict[str, Any]:
        """What the session header says about redaction (the window shows it)."""
        return {"redacted": self.active, "redact_headers": sorted(self.policy.headers) if self.active else [],
                "redact_params": sorted(self.policy.params) if self.active else []}

    def __call__(self, ex: Exchange) -> Exchange:
        if not self.active:
            return ex
        last = self._last
        if last is not None and last[0] is ex:
            return last[1]
        out = redact_exchange(ex, self.policy)
        self._last = (ex, out)
        return out


class LockedSink:
    """Serialises writes from the decode thread and the stats ticks of the main thread.

    The first write error (disk full...) is kept and reported once through `on_error`;
    later writes are skipped, so what reached the disk stays a readable session.
    """

    def __init__(self, writer: Writer, redactor: Redactor | None = None) -> None:
        self.writer = writer
        self.redactor = redactor
        self.lock = threading.Lock()
        self.error: Exception | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        with self.lock:
            if self.error is not None:
                return
            try:
                fn(*args)
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.error = exc
        if self.on_error is not None:
            self.on_error(exc)

    def write_exchange(self, ex: Exchange) -> None:
        # _guard written out: every exchange passes here
        if self.redactor is not None:
            ex = self.redactor(ex)
        with self.lock:
            if self.error is not None:
                return
            try:
                self.writer.write_exchange(ex)
            except Exception as exc:
                self._failed(exc)

    def write_event(self, ev: LifecycleEvent) -> None:
        self._guard(self.writer.write_event, ev)

    def write_stats(self, d: dict[str, Any]) -> None:
        def stats_and_flush() -> None:
            self.writer.write_stats(d)
            # session files: sync the gzip stream now and then (a crash loses ~1 s at most)
            flush = getattr(self.writer, "maybe_flush", None) or getattr(self.writer, "flush", None)
            if flush is not None:
                flush()

        self._guard(stats_and_flush)

    def close(self, clean: bool = True) -> Exception | None:
        """Close the writer (cleanly unless a write failed); returns what closing raised."""
        with self.lock:
            try:
                self.writer.close(clean=clean and self.error is None)
            except Exception as exc:
                self.error = self.error or exc
                return exc
        return None


@dataclass(slots=True)
class RotateOptions:
    """Rotating session files DIR/ngxscope-YYYYmmdd-HHMMSS.ngxs."""

    directory: str
    max_mb: float = 256.0
    """Start a new file past this size (0: no limit)."""
    max_age_s: float = 3600.0
    """Start a new file after this long (0: no limit)."""
    keep: int = 24
    """Files kept, oldest deleted first."""


@dataclass(slots=True)
class OtlpOptions:
    """Every exchange as an OpenTelemetry trace over OTLP/HTTP."""

    endpoint: str
    service_name: str = "nginx"
    headers: list[str] = field(default_factory=list)
    """Request headers also exported as span attributes."""
    queue: int = 2048
    timeout_s: float = 5.0


@dataclass(slots=True)
class Outputs:
    """What a capture writes to; `open_sinks` opens it."""

    session: str | None = None
    """Session file (.ngxs)."""
    overwrite: bool = False
    """Replace an existing session file."""
    stream: BinaryIO | None = None
    """Write the records as JSON lines here (the helper's stdout, for the window)."""
    rotate: RotateOptions | None = None
    metrics_listen: str | None = None
    """Serve Prometheus metrics on ADDR:PORT."""
    otlp: OtlpOptions | None = None
    policy: RedactPolicy | None = None
    """What to mask (None: the default policy and the environment's additions)."""

    def wanted(self) -> bool:
        return bool(self.session or self.stream or self.rotate or self.metrics_listen or self.otlp)


class SinkSet:
    """The opened sinks of one run, closed together."""

    def __init__(self, sinks: list[LockedSink], session: str | None) -> None:
        self.sinks = sinks
        self.session = session
        """The session file written (None without -o): the Recorder watches it."""

    def on_error(self, fail: Callable[[BaseException], None]) -> None:
        """Report the first write error of any sink to `fail` (the Recorder stops)."""
        for sink in self.sinks:
            sink.on_error = fail

    def close(self, clean: bool = True, *, quiet: bool = False) -> None:
        """Flush and close each sink; one summary line per trace exporter on stderr."""
        for sink in self.sinks:
            error = sink.close(clean=clean)
            if error is not None and not quiet and not isinstance(sink.writer, (SessionWriter, StreamWriter)):
                print(f"ngxscope: closing {type(sink.writer).__name__}: {error}", file=sys.stderr)
            summary = getattr(sink.writer, "summary", None)  # the OTLP exporter's figures
            if summary is not None and not quiet:
                print(f"ngxscope: {summary()}", file=sys.stderr)


def open_sinks(outputs: Outputs) -> SinkSet:
    """Open every output asked for. Raises OutputError (a bad option), OSError or
    SessionError with one line; what was opened before the failure is closed again."""
    redactor = Redactor(outputs.policy if outputs.policy is not None else policy_from_env())
    target = redactor.describe()
    sinks: list[LockedSink] = []

    def add(writer: Writer) -> None:
        sinks.append(LockedSink(writer, redactor))

    try:
        # prometheus_client and OpenTelemetry load only when asked for (start-up time)
        if outputs.metrics_listen:
            from ..telemetry.prometheus import MetricsSink

            try:
                add(MetricsSink(outputs.metrics_listen))
            except OSError as exc:
                raise OSError(f"--metrics-listen {outputs.metrics_listen}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise OutputError(str(exc)) from None
        if outputs.otlp is not None:
            from ..telemetry.otlp import SpanSink

            o = outputs.otlp
            if o.queue < 1 or o.timeout_s <= 0:
                raise OutputError("--otlp-queue and --otlp-timeout must be positive")
            try:
                add(SpanSink(o.endpoint, service_name=o.service_name, queue_size=o.queue,
                             timeout_s=o.timeout_s, request_headers=o.headers))
            except ValueError as exc:
                raise OutputError(str(exc)) from None
        if outputs.rotate is not None:
            r = outputs.rotate
            add(RotatingSessionWriter(r.directory, max_mb=r.max_mb, max_age_s=r.max_age_s, keep=r.keep))
        # the session file last: a bad option above leaves no file behind
        if outputs.stream is not None:
            add(StreamWriter(outputs.stream, target))
        if outputs.session:
            add(SessionWriter(outputs.session, target, overwrite=outputs.overwrite))
    except BaseException:
        SinkSet(sinks, None).close(clean=False, quiet=True)
        raise
    return SinkSet(sinks, outputs.session)
