"""The `ngxscope` command: list, record, export, stats, demo, open, and the window."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from . import __version__

__all__ = ["main"]

log = logging.getLogger("ngxscope")


class UsageError(Exception):
    """Bad command line: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ngxscope", description="See every HTTP request a running nginx handles (eBPF).")
    p.add_argument("--version", action="version", version=f"ngxscope {__version__}")
    p.add_argument("--pid", type=int, help="open the window attached to this nginx master or worker")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    from .remote import add_remote_options

    add_remote_options(p)
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)

    ls = sub.add_parser("list", help="nginx processes on this machine and how they can be captured")
    ls.add_argument("--all", action="store_true", help="also list processes that are not nginx")
    ls.add_argument("--json", action="store_true", help="print the processes as JSON (for --remote)")

    rec = sub.add_parser("record", help="capture a running nginx into a session file")
    who = rec.add_mutually_exclusive_group()
    who.add_argument("--pid", type=int, help="nginx master (all workers, across reloads) or one worker")
    who.add_argument("--binary", help="every process running this nginx executable, now and later")
    rec.add_argument("--duration", type=float, help="stop after this many seconds")
    rec.add_argument("-o", "--output", help="session file to write (.ngxs)")
    rec.add_argument("--stream", action="store_true", help="write records as JSON lines to stdout (for the window)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rec.add_argument("--payload-cap", type=int, default=16384, metavar="BYTES",
                     help="payload bytes captured per I/O call (default 16384)")
    rec.add_argument("--ringbuf-mb", type=int, default=32, metavar="MB", help="BPF ring buffer size (default 32)")
    rec.add_argument("--force", action="store_true", help="attach to a process that does not look like nginx")
    rec.add_argument("--no-syscall-io", action="store_true",
                     help="see plaintext I/O with ngx_unix_recv/ngx_writev uprobes only, not the "
                          "recv(2)/writev(2) tracepoints (for comparisons)")
    rec.add_argument("--cpu-budget", type=float, default=None, metavar="PCT",
                     help="percent of one core the capture may use; above it, payloads are sampled and "
                          "the other requests counted from kernel summaries (default 25, or env "
                          "NGXSCOPE_CPU_BUDGET; 0: never sample)")
    rec.add_argument("--dump-bpf", action="store_true", help="print the BPF C program and its compile flags, then exit")
    rec.add_argument("--no-redact", action="store_true",
                     help="keep Authorization, Cookie, Set-Cookie... values (masked by default)")
    rec.add_argument("--redact-header", action="append", default=[], metavar="NAME",
                     help="also mask this header's values (repeatable; env NGXSCOPE_REDACT_HEADERS)")
    rec.add_argument("--redact-param", action="append", default=[], metavar="NAME",
                     help="also mask this query parameter (repeatable; env NGXSCOPE_REDACT_PARAMS)")
    from .telemetry import add_record_options

    add_record_options(rec)

    ex = sub.add_parser("export", help="convert a session (or HAR) file to HAR, pcapng, CSV or JSONL")
    ex.add_argument("file", help="session file (.ngxs) or HAR file")
    ex.add_argument("--format", choices=["har", "pcapng", "csv", "jsonl"], default="jsonl")
    ex.add_argument("-o", "--output", required=True, help="output file ('-' for stdout)")
    ex.add_argument("--filter", metavar="EXPR", help="export only the exchanges this filter matches")
    ex.add_argument("--no-redact", action="store_true",
                    help="keep Authorization, Cookie, Set-Cookie... values (masked by default)")
    ex.add_argument("--redact-header", action="append", default=[], metavar="NAME",
                    help="also mask this header's values (repeatable; env NGXSCOPE_REDACT_HEADERS)")
    ex.add_argument("--redact-param", action="append", default=[], metavar="NAME",
                    help="also mask this query parameter (repeatable; env NGXSCOPE_REDACT_PARAMS)")

    st = sub.add_parser("stats", help="a session's figures as a text table (no display needed)")
    st.add_argument("file", help="session file (.ngxs) or HAR file")
    st.add_argument("--json", action="store_true", help="print the figures as JSON")
    st.add_argument("--filter", metavar="EXPR", help="count only the exchanges this filter matches")
    st.add_argument("--top", type=int, default=10, metavar="N", help="paths listed (default 10)")

    demo = sub.add_parser("demo", help="a private nginx with TLS, upstreams and traffic, captured live")
    demo.add_argument("--no-window", action="store_true", help="show the capture in the terminal")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--rate", type=float, default=40.0, help="demo requests per second (default 40)")
    demo.add_argument("--screenshot", metavar="PNG", help="save the window to this PNG and exit")
    demo.add_argument("--after", type=float, default=8.0, metavar="S", help="seconds before --screenshot")
    demo.add_argument("-o", "--output", help="also record the demo to this session file")

    op = sub.add_parser("open", help="open a session file in the window")
    op.add_argument("file")

    doc = sub.add_parser("doctor", help="can this machine capture, and how (one screen for a bug report)")
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="ngxscope: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        name = type(exc).__name__
        known = name in {"CaptureError", "SessionError", "TargetError", "BinaryError", "LabError", "UsageError",
                         "RemoteError", "FilterError"}
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else name
        if isinstance(exc, OSError) and exc.filename:
            msg = f"{exc.strerror}: {exc.filename}"
        elif not known:
            msg = f"{name}: {msg}"
        print(f"ngxscope: error: {msg}", file=sys.stderr)
        return 2 if name == "UsageError" else 1


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "remote", None):
        from .remote import run_remote

        return run_remote(args)
    if args.cmd == "list" and args.json:
        import json

        from .capture.procs import find_instances
        from .remote import instances_json

        print(json.dumps(instances_json(find_instances(include_all=args.all))))
        return 0
    if args.cmd == "list":
        from .capture.procs import find_instances, format_instances

        print(format_instances(find_instances(include_all=args.all)))
        return 0
    if args.cmd == "record":
        return _cmd_record(args)
    if args.cmd == "export":
        return _cmd_export(args)
    if args.cmd == "stats":
        return _cmd_stats(args)
    if args.cmd == "demo":
        from .demo import run_demo

        return run_demo(args)
    if args.cmd == "doctor":
        from .doctor import run_doctor

        return run_doctor(json_output=args.json)
    if args.cmd == "open":
        from .gui import open_session_window

        return open_session_window(args.file)
    from .gui import open_window

    return open_window(pid=args.pid)


def _cmd_export(args: argparse.Namespace) -> int:
    from .store.exporters import export
    from .store.filterexpr import FilterError
    from .store.redact import policy_from_env

    policy = policy_from_env(args.redact_header, args.redact_param, enabled=not args.no_redact)
    notes: list[str] = []
    try:
        n = export(args.file, args.format, args.output, redact=not args.no_redact,
                   filter_text=args.filter, policy=policy, notes=notes)
    except FilterError as exc:
        raise UsageError(f"export: bad --filter: {exc}") from None
    for note in notes:
        print(f"export: {note}", file=sys.stderr)
    if args.output != "-":
        print(f"exported {n} exchanges to {args.output}", file=sys.stderr)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    import json

    from .store.exporters import SortedExchanges
    from .store.filterexpr import FilterError, compile_filter
    from .store.summary import format_summary, summarize

    try:
        predicate = compile_filter(args.filter) if args.filter else None
    except FilterError as exc:
        raise UsageError(f"stats: bad --filter: {exc}") from None
    if args.top < 0:
        raise UsageError("stats: --top must not be negative")
    with SortedExchanges(args.file, predicate) as source:
        summary = summarize(source, top=args.top)
        if source.warning:
            log.warning("%s: %s", source.path, source.warning)
    if args.json:
        print(json.dumps({"file": args.file, "warning": source.warning, **summary.to_dict()}, indent=2))
    else:
        sys.stdout.write(format_summary(summary, args.file))
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from .record import Recorder, RecordOptions

    if args.dump_bpf:
        from .capture.tracer import Tracer, TracerConfig, bpf_source

        print(f"// cflags: {' '.join(Tracer(TracerConfig(binary='nginx')).cflags())}")
        print(bpf_source())
        return 0
    if args.pid is None and not args.binary:
        raise UsageError("record: give --pid PID or --binary PATH")
    from .telemetry import close_telemetry_sinks, open_telemetry_sinks, telemetry_wanted

    if not args.output and not args.stream and not telemetry_wanted(args):
        raise UsageError("record: give -o FILE (or --stream, --metrics-listen, --otlp-endpoint, --rotate-dir)")
    if args.payload_cap < 64 or args.payload_cap > 1 << 20:
        raise UsageError("record: --payload-cap must be between 64 and 1048576")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("record: --duration must be positive")
    opts = RecordOptions(pid=args.pid, binary=args.binary, payload_cap=args.payload_cap,
                         ringbuf_mb=args.ringbuf_mb, force=args.force, syscall_io=not args.no_syscall_io)
    if args.cpu_budget is not None:
        if not 0 <= args.cpu_budget <= 800:
            raise UsageError("record: --cpu-budget must be between 0 and 800 (percent of one core)")
        opts.cpu_budget = args.cpu_budget / 100
    try:
        telemetry = open_telemetry_sinks(args)
    except ValueError as exc:
        raise UsageError(f"record: {exc}") from None
    from .store.redact import policy_from_env

    redactor = Redactor(policy_from_env(args.redact_header, args.redact_param, enabled=not args.no_redact))
    sinks = open_sinks(args.output, args.stream, args.overwrite, redactor=redactor)
    sinks += [(LockedSink(t, redactor), type(t).__name__) for t in telemetry]
    rec = Recorder(opts, [s for s, _ in sinks])
    for sink, _ in sinks:
        sink.on_error = rec.fail
    try:
        line = rec.start()
    except BaseException:
        for sink, _ in sinks:
            sink.close(clean=False)
        close_telemetry_sinks(telemetry, quiet=True)
        if args.output and os.path.exists(args.output) and not args.overwrite:
            os.unlink(args.output)  # nothing was captured: leave no empty session behind
        raise
    print(line, file=sys.stderr, flush=True)
    try:
        run_until_stopped(rec, args.duration, live=sys.stderr.isatty() and not args.stream,
                          watch_stdin=args.stream)
    finally:
        rec.join()
        for sink, _ in sinks:
            sink.close()
        close_telemetry_sinks(telemetry)
    stats = rec.counters()
    summary = (f"{stats['requests']} requests captured, {stats['lost']} events lost, "
               f"{stats['truncated']} payloads truncated")
    if stats["shed_exchanges"]:
        summary += (f", {stats['shed_exchanges']} counted from kernel summaries without payload "
                    f"({stats['sampled_exchanges']} sampled out over the CPU budget)")
    if args.output:
        summary += f"; session saved to {args.output}"
    if rec.end_reason:
        summary = f"{rec.end_reason}; {summary}"
    if rec.decode_error is not None:
        print(f"ngxscope: error: {rec.decode_error}", file=sys.stderr)
        print(f"{stats['requests']} requests were captured before the error"
              + (f"; {args.output} keeps what reached the disk" if args.output and os.path.exists(args.output) else ""), file=sys.stderr)
        return 1
    print(summary, file=sys.stderr)
    return 0


class Redactor:
    """Masks secrets once per exchange, however many sinks write it (the decode thread
    hands the same object to each sink in turn)."""

    def __init__(self, policy: Any) -> None:
        from .store.redact import redact_exchange

        self.policy = policy
        self._redact = redact_exchange
        self._last: tuple[Any, Any] | None = None

    @property
    def active(self) -> bool:
        return bool(self.policy.active)

    def describe(self) -> dict[str, Any]:
        """What the session header says about redaction (the window shows it)."""
        return {"redacted": self.active, "redact_headers": sorted(self.policy.headers) if self.active else [],
                "redact_params": sorted(self.policy.params) if self.active else []}

    def __call__(self, ex: Any) -> Any:
        if not self.active:
            return ex
        last = self._last
        if last is not None and last[0] is ex:
            return last[1]
        out = self._redact(ex, self.policy)
        self._last = (ex, out)
        return out


class LockedSink:
    """Serialises writes from the decode thread and the stats ticks of the main thread.

    The first write error (disk full...) is kept and reported once through `on_error`;
    later writes are skipped, so what reached the disk stays a readable session.
    """

    def __init__(self, writer: Any, redactor: Redactor | None = None) -> None:
        self.writer = writer
        self.redactor = redactor
        self.lock = threading.Lock()
        self.error: Exception | None = None
        self.on_error: Any = None

    def _guard(self, fn: Any, *args: Any) -> None:
        with self.lock:
            if self.error is not None:
                return
            try:
                fn(*args)
            except Exception as exc:
                self.error = exc
                if self.on_error is not None:
                    self.on_error(exc)

    def write_exchange(self, ex: Any) -> None:
        self._guard(self.writer.write_exchange, self.redactor(ex) if self.redactor is not None else ex)

    def write_event(self, ev: Any) -> None:
        self._guard(self.writer.write_event, ev)

    def write_stats(self, d: dict[str, Any]) -> None:
        def stats_and_flush() -> None:
            self.writer.write_stats(d)
            flush = getattr(self.writer, "maybe_flush", None) or getattr(self.writer, "flush", None)
            if flush is not None:
                flush()

        self._guard(stats_and_flush)

    def close(self, clean: bool = True) -> None:
        with self.lock:
            try:
                self.writer.close(clean=clean and self.error is None)
            except Exception as exc:
                self.error = self.error or exc


def open_sinks(output: str | None, stream: bool, overwrite: bool,
               redactor: Redactor | None = None) -> list[tuple[LockedSink, str]]:
    from .store.redact import policy_from_env
    from .store.session import SessionWriter, StreamWriter

    if redactor is None:
        redactor = Redactor(policy_from_env())
    sinks: list[tuple[LockedSink, str]] = []
    target: dict[str, Any] = redactor.describe()
    if output:
        sinks.append((LockedSink(SessionWriter(output, target, overwrite=overwrite), redactor), output))
    if stream:
        sinks.append((LockedSink(StreamWriter(sys.stdout.buffer, target), redactor), "-"))
    return sinks


def run_until_stopped(rec: Any, duration: float | None, *, live: bool, watch_stdin: bool = False) -> None:
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
