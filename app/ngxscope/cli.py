"""The `ngxscope` command line: argument parsing, and a call into the package that does the work.

list, record (`pipeline.run.record`), export/stats (`store`), demo (`demo`), open and the
window (`gui`), --remote (`pipeline.remote`, `gui`). Errors end as one line and exit 1
(2 for a bad command line), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, NoReturn

from . import __version__
from .capture.listing import format_instances
from .capture.procs import find_instances
from .capture.tracer import Tracer, TracerConfig, bpf_source
from .demo import run_demo
from .doctor import run_doctor
from .gui import no_display_reason, open_remote_window, open_session_window, open_window
from .pipeline.remote import (
    RemoteSpec,
    choose_pid,
    instances_json,
    list_remote,
    list_remote_text,
)
from .pipeline.run import record
from .pipeline.sinks import OtlpOptions, OutputError, Outputs, RotateOptions
from .pipeline.target import RecordOptions
from .replaycmd import add_arguments as replay_arguments
from .replaycmd import run as run_replay
from .store.diff import Side, diff_exchanges, format_diff
from .store.exporters import SortedExchanges, export
from .store.filterexpr import FilterError, compile_filter
from .store.kcounted import parse_counted
from .store.redact import policy_from_env
from .store.routes import RouteError, RouteTemplater, load_route_file
from .store.summary import format_summary, summarize

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
    _add_remote_options(p)
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
    rec.add_argument("--no-wire", action="store_true",
                     help="no socket filter: exchanges without TCP/TLS handshake facts, and no records of "
                          "connections that never became a request")
    rec.add_argument("--no-syscall-io", action="store_true",
                     help="see plaintext I/O with ngx_unix_recv/ngx_writev uprobes only, not the "
                          "recv(2)/writev(2) tracepoints (for comparisons)")
    rec.add_argument("--no-syscall-regs", action="store_true",
                     help="take recv(2)/writev(2)'s arguments at their entry tracepoints, as on "
                          "kernels before 5.15, not from the saved registers at their exit (for "
                          "comparisons)")
    rec.add_argument("--cpu-budget", type=float, default=None, metavar="PCT",
                     help="percent of one core the capture may use; above it, payloads are sampled and "
                          "the other requests counted from kernel summaries (default 25, or env "
                          "NGXSCOPE_CPU_BUDGET; 0: never sample); while nginx's workers wait for "
                          "a CPU, the capture keeps to 3%%")
    rec.add_argument("--no-yield", action="store_true",
                     help="hold the --cpu-budget even while nginx's workers wait for a CPU")
    rec.add_argument("--keep-slower-than", type=float, default=None, metavar="MS",
                     help="while sampling, keep whole every request slower than MS ($request_time); "
                          "default: slower than its server block's moving p99")
    rec.add_argument("--no-kernel-counts", action="store_true",
                     help="while sampling, send every sampled-out request as a summary row instead of "
                          "counting those no rule keeps in the kernel")
    rec.add_argument("--dump-bpf", action="store_true", help="print the BPF C program and its compile flags, then exit")
    rec.add_argument("--no-redact", action="store_true",
                     help="keep Authorization, Cookie, Set-Cookie... values (masked by default)")
    rec.add_argument("--redact-header", action="append", default=[], metavar="NAME",
                     help="also mask this header's values (repeatable; env NGXSCOPE_REDACT_HEADERS)")
    rec.add_argument("--redact-param", action="append", default=[], metavar="NAME",
                     help="also mask this query parameter (repeatable; env NGXSCOPE_REDACT_PARAMS)")
    _add_output_options(rec)

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

    df = sub.add_parser("diff", help="compare two sessions: per server block, location, route and peer")
    df.add_argument("a", help="the baseline session (.ngxs or HAR)")
    df.add_argument("b", help="the session compared with it")
    df.add_argument("--filter", metavar="EXPR", help="compare only the exchanges this filter matches")
    df.add_argument("--top", type=int, default=10, metavar="N", help="rows per table (default 10)")
    df.add_argument("--route", action="append", default=[], metavar="TEMPLATE", help="a route template (as stats)")
    df.add_argument("--json", action="store_true", help="print the rows as JSON")

    st = sub.add_parser("stats", help="a session's figures as a text table (no display needed)")
    st.add_argument("file", help="session file (.ngxs) or HAR file")
    st.add_argument("--json", action="store_true", help="print the figures as JSON")
    st.add_argument("--filter", metavar="EXPR", help="count only the exchanges this filter matches")
    st.add_argument("--top", type=int, default=10, metavar="N", help="paths listed (default 10)")
    st.add_argument("--route", action="append", default=[], metavar="TEMPLATE",
                    help="a route template such as '/api/v1/users/{id}' (repeatable; before those of "
                         "~/.config/ngxscope/routes and the built-in heuristic)")

    demo = sub.add_parser("demo", help="a private nginx with TLS, upstreams and traffic, captured live")
    demo.add_argument("--no-window", action="store_true", help="show the capture in the terminal")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--rate", type=float, default=40.0, help="demo requests per second (default 40)")
    demo.add_argument("--screenshot", metavar="PNG", help="save the window to this PNG and exit")
    demo.add_argument("--after", type=float, default=8.0, metavar="S", help="seconds before --screenshot")
    demo.add_argument("-o", "--output", help="also record the demo to this session file")

    op = sub.add_parser("open", help="open a session file, a HAR or a pcap/pcapng in the window")
    op.add_argument("file")

    replay_arguments(sub.add_parser("replay", help="send a recorded request again and diff the answer"))
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
                         "RemoteError", "FilterError", "ReplayError"}
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else name
        if isinstance(exc, OSError) and exc.filename:
            msg = f"{exc.strerror}: {exc.filename}"
        elif not known:
            msg = f"{name}: {msg}"
        print(f"ngxscope: error: {msg}", file=sys.stderr)
        return 2 if name == "UsageError" else 1


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "remote", None):
        return _cmd_remote(args)
    if args.cmd == "list" and args.json:
        print(json.dumps(instances_json(find_instances(include_all=args.all))))
        return 0
    if args.cmd == "list":
        print(format_instances(find_instances(include_all=args.all)))
        return 0
    if args.cmd == "record":
        return _cmd_record(args)
    if args.cmd == "export":
        return _cmd_export(args)
    if args.cmd == "stats":
        return _cmd_stats(args)
    if args.cmd == "diff":
        return _cmd_diff(args)
    if args.cmd == "demo":
        return run_demo(args)
    if args.cmd == "replay":
        return run_replay(args)
    if args.cmd == "doctor":
        return run_doctor(json_output=args.json)
    if args.cmd == "open":
        return open_session_window(args.file)
    return open_window(pid=args.pid)


def _cmd_export(args: argparse.Namespace) -> int:
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


def _cmd_diff(args: argparse.Namespace) -> int:
    try:
        predicate = compile_filter(args.filter) if args.filter else None
        routes = [*args.route, *load_route_file()]
        RouteTemplater(routes)
    except (FilterError, RouteError) as exc:
        raise UsageError(f"diff: {exc}") from None
    if args.top < 0:
        raise UsageError("diff: --top must not be negative")
    sides = []
    for path in (args.a, args.b):
        with SortedExchanges(path, predicate) as source:
            sides.append(list(source))
            if source.warning:
                log.warning("%s: %s", source.path, source.warning)
    rows = diff_exchanges(sides[0], sides[1], lambda: RouteTemplater(routes))
    if args.json:
        print(json.dumps([{"dimension": r.dimension, "key": r.key, "p_value": r.p_value, "error_p_value": r.error_p,
                           "worse": r.worse, "impact": r.impact, "a": _side(r.a), "b": _side(r.b)} for r in rows],
                         indent=2))
    else:
        sys.stdout.write(format_diff(rows, args.a, args.b, args.top))
    return 0


def _side(s: Side) -> dict[str, Any]:
    return {k: getattr(s, k) for k in ("requests", "errors", "rate", "error_rate", "p50", "p95", "p99")}


def _cmd_stats(args: argparse.Namespace) -> int:
    try:
        predicate = compile_filter(args.filter) if args.filter else None
    except FilterError as exc:
        raise UsageError(f"stats: bad --filter: {exc}") from None
    if args.top < 0:
        raise UsageError("stats: --top must not be negative")
    try:
        templater = RouteTemplater([*args.route, *load_route_file()])
    except RouteError as exc:
        raise UsageError(f"stats: {exc}") from None
    with SortedExchanges(args.file, predicate) as source:
        # the kernel's counts are per worker/server/peer/status only: a filter cannot apply
        counted = parse_counted((source.stats or {}).get("counted")) if predicate is None else None
        summary = summarize(source, top=args.top, templater=templater, counted=counted)
        if source.warning:
            log.warning("%s: %s", source.path, source.warning)
    if args.json:
        print(json.dumps({"file": args.file, "warning": source.warning, **summary.to_dict()}, indent=2))
    else:
        sys.stdout.write(format_summary(summary, args.file))
    return 0


def _record_outputs(args: argparse.Namespace) -> Outputs:
    """-o, --stream and the service outputs, checked."""
    out = Outputs(session=args.output, overwrite=args.overwrite,
                  stream=sys.stdout.buffer if args.stream else None,
                  policy=policy_from_env(args.redact_header, args.redact_param, enabled=not args.no_redact),
                  metrics_listen=args.metrics_listen)
    if args.otlp_endpoint:
        if args.otlp_queue < 1 or args.otlp_timeout <= 0:
            raise UsageError("record: --otlp-queue and --otlp-timeout must be positive")
        out.otlp = OtlpOptions(args.otlp_endpoint, service_name=args.otlp_service_name,
                               headers=args.otlp_header, queue=args.otlp_queue, timeout_s=args.otlp_timeout)
    if args.rotate_dir:
        out.rotate = RotateOptions(args.rotate_dir, max_mb=args.rotate_mb,
                                   max_age_s=args.rotate_minutes * 60.0, keep=args.rotate_keep)
    if not out.wanted():
        raise UsageError("record: give -o FILE (or --stream, --metrics-listen, --otlp-endpoint, --rotate-dir)")
    return out


def _cmd_record(args: argparse.Namespace) -> int:
    if args.dump_bpf:
        print(f"// cflags: {' '.join(Tracer(TracerConfig(binary='nginx')).cflags())}")
        print(bpf_source())
        return 0
    if args.pid is None and not args.binary:
        raise UsageError("record: give --pid PID or --binary PATH")
    outputs = _record_outputs(args)
    if args.payload_cap < 64 or args.payload_cap > 1 << 20:
        raise UsageError("record: --payload-cap must be between 64 and 1048576")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("record: --duration must be positive")
    opts = RecordOptions(pid=args.pid, binary=args.binary, payload_cap=args.payload_cap,
                         ringbuf_mb=args.ringbuf_mb, force=args.force, syscall_io=not args.no_syscall_io,
                         syscall_regs=not args.no_syscall_regs,
                         wire=not args.no_wire, yield_cpu=not args.no_yield)
    if args.cpu_budget is not None:
        if not 0 <= args.cpu_budget <= 800:
            raise UsageError("record: --cpu-budget must be between 0 and 800 (percent of one core)")
        opts.cpu_budget = args.cpu_budget / 100
    if args.keep_slower_than is not None:
        if not 0 < args.keep_slower_than <= 3_600_000:
            raise UsageError("record: --keep-slower-than must be between 0 and 3600000 ms")
        opts.keep_slower_than_ms = args.keep_slower_than
    opts.kernel_counts = not args.no_kernel_counts
    try:
        result = record(opts, outputs, duration=args.duration, live=sys.stderr.isatty() and not args.stream,
                        watch_stdin=args.stream, announce=lambda line: print(line, file=sys.stderr, flush=True))
    except OutputError as exc:
        raise UsageError(f"record: {exc}") from None
    stats = result.stats
    summary = (f"{stats['requests']} requests captured, {stats['lost']} events lost, "
               f"{stats['truncated']} payloads truncated")
    if stats["shed_exchanges"]:
        summary += (f", {stats['shed_exchanges']} counted from kernel summaries without payload "
                    f"({stats['sampled_exchanges']} sampled out over the CPU budget)")
    counted = stats.get("counted") or {}
    if counted.get("requests"):
        summary += (f", {counted['requests']} more counted in the kernel (sampled out, no rule kept them: "
                    "in the figures, not as rows)")
    if args.output:
        summary += f"; session saved to {args.output}"
    if result.end_reason:
        summary = f"{result.end_reason}; {summary}"
    if result.error is not None:
        print(f"ngxscope: error: {result.error}", file=sys.stderr)
        print(f"{stats['requests']} requests were captured before the error"
              + (f"; {args.output} keeps what reached the disk" if args.output and os.path.exists(args.output) else ""), file=sys.stderr)
        return 1
    print(summary, file=sys.stderr)
    return 0


def _add_output_options(rec: argparse.ArgumentParser) -> None:
    """`record` outputs for a long-running service: metrics, traces, rotating files."""
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


def _add_remote_options(p: argparse.ArgumentParser) -> None:
    """The top-level `--remote` options."""
    p.add_argument("--remote", action="append", metavar="[USER@]HOST[:PORT][/PID]",
                   help="capture nginx on another machine over SSH (repeat for several hosts; "
                        "with `list`: list that host's nginx)")
    p.add_argument("--ssh-key", metavar="PATH", help="SSH private key for --remote")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="extra ssh -o option for --remote (repeatable)")
    p.add_argument("--remote-ngxscope", default="ngxscope", metavar="CMD",
                   help="the ngxscope command on the remote host (default: ngxscope on PATH)")
    p.add_argument("--remote-sudo", choices=["auto", "yes", "no"], default="auto",
                   help="run the remote ngxscope with sudo -n (auto: when USER is not root)")


def _specs_from_args(args: argparse.Namespace) -> list[RemoteSpec]:
    sudo = {"yes": True, "no": False}.get(args.remote_sudo)
    specs = []
    for text in args.remote:
        specs.append(RemoteSpec.parse(text, pid=args.pid, key=args.ssh_key, ngxscope=args.remote_ngxscope,
                                      sudo=sudo, ssh_options=tuple(args.ssh_option)))
    return specs


def _cmd_remote(args: argparse.Namespace) -> int:
    """`ngxscope --remote ...`: the window on remote captures, or `list` of a remote host."""
    try:
        specs = _specs_from_args(args)
    except ValueError as exc:
        raise UsageError(f"--remote: {exc}") from None
    if args.cmd == "list":
        for spec in specs:
            if getattr(args, "json", False):
                print(json.dumps(list_remote(spec, args.all)))
                continue
            text = list_remote_text(spec, args.all)
            if len(specs) > 1:
                print(f"== {spec.label} ==")
            sys.stdout.write(text)
        return 0
    if args.cmd is not None:
        raise UsageError(f"--remote works with the window and with `list`, not with `{args.cmd}`")
    if no_display_reason() is not None:
        return open_remote_window(specs)  # says why not, exit 2
    if len(specs) > 1:  # several hosts: each needs its nginx now (a dialog per host would stack up)
        specs = [s if s.pid is not None else s.with_pid(choose_pid(s, list_remote(s))) for s in specs]
    return open_remote_window(specs)
