"""Exporting captured exchanges beyond the session file: Prometheus metrics, OTLP traces,
rotating session files for a long-running service (no Qt).

`add_record_options` adds the `record` options; `open_telemetry_sinks` builds the sinks the
recorder writes to; `close_telemetry_sinks` flushes them and says what happened. Importing
this package imports neither prometheus_client nor OpenTelemetry (they load on use).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_record_options", "close_telemetry_sinks", "open_telemetry_sinks", "telemetry_wanted"]


def add_record_options(rec: argparse.ArgumentParser) -> None:
    """The `record` options of this package."""
    g = rec.add_argument_group("metrics, traces and rotation (for a long-running service)")
    g.add_argument("--metrics-listen", metavar="ADDR:PORT",
                   help="serve Prometheus metrics (RED per worker, server block, upstream peer) on /metrics")
    g.add_argument("--otlp-endpoint", metavar="URL",
                   help="export every exchange as an OpenTelemetry trace over OTLP/HTTP "
                        "(http://collector:4318, /v1/traces added)")
    g.add_argument("--otlp-service-name", default="nginx", metavar="NAME",
                   help="service.name of the exported spans (default nginx)")
    g.add_argument("--otlp-header", action="append", default=[], metavar="NAME",
                   help="also export this request header as http.request.header.NAME (repeatable)")
    g.add_argument("--otlp-queue", type=int, default=2048, metavar="SPANS",
                   help="spans held for the exporter at most; beyond, spans are dropped and counted (default 2048)")
    g.add_argument("--otlp-timeout", type=float, default=5.0, metavar="S",
                   help="OTLP export request timeout (default 5)")
    g.add_argument("--rotate-dir", metavar="DIR",
                   help="write rotating session files DIR/ngxscope-YYYYmmdd-HHMMSS.ngxs")
    g.add_argument("--rotate-mb", type=float, default=256.0, metavar="MB",
                   help="start a new rotating file past this size (default 256; 0: no limit)")
    g.add_argument("--rotate-minutes", type=float, default=60.0, metavar="M",
                   help="start a new rotating file after this long (default 60; 0: no limit)")
    g.add_argument("--rotate-keep", type=int, default=24, metavar="N",
                   help="rotating files kept, oldest deleted first (default 24)")


def telemetry_wanted(args: argparse.Namespace) -> bool:
    """Any output of this package was asked for (then -o/--stream are optional)."""
    return bool(getattr(args, "metrics_listen", None) or getattr(args, "otlp_endpoint", None)
                or getattr(args, "rotate_dir", None))


def open_telemetry_sinks(args: argparse.Namespace) -> list[Any]:
    """The sinks asked for on the command line. Raises ValueError / OSError with one line."""
    sinks: list[Any] = []
    try:
        if getattr(args, "metrics_listen", None):
            from .prometheus import MetricsSink

            try:
                sinks.append(MetricsSink(args.metrics_listen))
            except OSError as exc:
                raise OSError(f"--metrics-listen {args.metrics_listen}: {exc.strerror or exc}") from None
        if getattr(args, "otlp_endpoint", None):
            from .otlp import SpanSink

            if args.otlp_queue < 1 or args.otlp_timeout <= 0:
                raise ValueError("--otlp-queue and --otlp-timeout must be positive")
            sinks.append(SpanSink(args.otlp_endpoint, service_name=args.otlp_service_name,
                                  queue_size=args.otlp_queue, timeout_s=args.otlp_timeout,
                                  request_headers=args.otlp_header))
        if getattr(args, "rotate_dir", None):
            from .rotate import RotatingSessionWriter

            sinks.append(RotatingSessionWriter(args.rotate_dir, max_mb=args.rotate_mb,
                                               max_age_s=args.rotate_minutes * 60.0, keep=args.rotate_keep))
    except BaseException:
        close_telemetry_sinks(sinks, quiet=True)
        raise
    return sinks


def close_telemetry_sinks(sinks: list[Any], *, quiet: bool = False) -> None:
    """Flush and stop each sink; one summary line per trace exporter on stderr."""
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:
            if not quiet:
                print(f"ngxscope: closing {type(sink).__name__}: {exc}", file=sys.stderr)
        summary = getattr(sink, "summary", None)
        if summary is not None and not quiet:
            print(f"ngxscope: {summary()}", file=sys.stderr)
