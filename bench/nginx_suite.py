#!/usr/bin/env python3
"""Fidelity against nginx's own test suite: every access-log line vs the captured exchange.

Runs the .t files of an nginx-tests checkout (Perl, Test::Nginx; not part of this tree:
give its path) with ``prove``, one file at a time on a few parallel slots, while
``ngxscope record --binary NGINX`` follows every nginx those tests start. Test::Nginx
expands ``TEST_NGINX_GLOBALS_HTTP`` into every http block, so each test's nginx also writes
a JSON access log (one file per .t); afterwards each log line is joined with its exchange
(same client and server address, nearest end time, the request line as tie-break) and
compared field by field as the capture tests do (tests/capture/test_capture_vs_accesslog.py).

    git clone <nginx-tests> /tmp/nginx-tests
    sudo PYTHONPATH=$PWD/app .venv/bin/python bench/nginx_suite.py run /tmp/nginx-tests \\
        --out /tmp/suite [--only 'proxy*.t'] [--jobs 2]
    PYTHONPATH=$PWD/app .venv/bin/python bench/nginx_suite.py compare /tmp/suite [--show KIND]

Needs root (eBPF). The nginx binary is copied into OUT (``--nginx``, default
/usr/sbin/nginx) so that only the suite's nginx processes are followed; it runs as
``user root`` (the test directories are root's). Tests whose Perl modules or nginx modules
are missing skip; that is fine (the figures count log lines). Test::Nginx loads every
dynamic module the binary was built with from TEST_NGINX_MODULES (default here
/usr/lib/nginx/modules), so for Debian's nginx the libnginx-mod-* packages of those modules
must be installed (http-geoip, http-image-filter, http-perl, http-xslt-filter, mail,
stream-geoip; stream is already). Perl modules some tests use, by Debian package:
libprotocol-websocket-perl libfcgi-perl libcache-memcached-perl libscgi-perl
libcryptx-perl libgd-perl (IO::Socket::SSL and Net::SSLeay are there already).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ngxscope.lab.config import LOG_FIELDS, nginx_addr
from ngxscope.model import Exchange, nginx_list
from ngxscope.store.session import SessionError, SessionReader

FIELDS = {name: LOG_FIELDS[name] for name in (
    "client", "server", "request", "method", "uri", "protocol", "status", "bytes_sent", "request_length",
    "request_time", "msec", "pid", "https", "connection", "connection_requests", "upstream_addr",
    "upstream_status", "upstream_connect_time", "upstream_header_time", "upstream_response_time")}
FORMAT = "ngxscope_suite"


def _globals_http(log: Path) -> str:
    fmt = ",".join(f'"{k}":"{v}"' for k, v in FIELDS.items())
    return f"log_format {FORMAT} escape=json '{{{fmt}}}';\naccess_log {log} {FORMAT};\n"


# ---------------------------------------------------------------------------- run


def _prove(tests: Path, t: str, out: Path, nginx: Path, timeout: float) -> tuple[str, str]:
    env = dict(os.environ)
    env.update(
        TEST_NGINX_BINARY=str(nginx),
        TEST_NGINX_MODULES=os.environ.get("TEST_NGINX_MODULES", "/usr/lib/nginx/modules"),
        # the suite's nginx runs as root: the test directories are root's, mode 0700
        TEST_NGINX_GLOBALS=os.environ.get("TEST_NGINX_GLOBALS", "user root;"),
        TEST_NGINX_GLOBALS_HTTP=_globals_http(out / "logs" / (t + ".json")),
    )
    try:
        proc = subprocess.run(["prove", t], cwd=tests, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        text = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        return t, "timeout"
    if "skipped" in text:
        return t, "skipped"
    return t, "ok" if proc.returncode == 0 else "failed"


def run(args: argparse.Namespace) -> int:
    tests = Path(args.tests).resolve()
    if not (tests / "lib" / "Test" / "Nginx.pm").is_file():
        print(f"nginx_suite: {tests} is not an nginx-tests checkout (no lib/Test/Nginx.pm)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("nginx_suite: run needs root (eBPF)", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    nginx = out / "nginx"
    shutil.copy2(args.nginx, nginx)
    files = sorted(p.name for p in tests.glob("*.t") if any(fnmatch.fnmatch(p.name, g) for g in args.only))
    session = out / "session.ngxs"
    rec_cmd = [sys.executable, "-m", "ngxscope", "record", "--binary", str(nginx), "-o", str(session),
               "--cpu-budget", str(args.cpu_budget)]
    rec = subprocess.Popen(rec_cmd, stderr=subprocess.PIPE, text=True)
    assert rec.stderr is not None
    while True:  # the probes are attached when it says "capturing"
        first = rec.stderr.readline()
        print(f"record: {first.strip()}", flush=True)
        if not first or first.startswith("capturing"):
            break
    if rec.poll() is not None:
        print(f"nginx_suite: record exited with {rec.returncode}: {rec.stderr.read().strip()}", file=sys.stderr)
        return 1
    rec_err: list[str] = []
    drain = threading.Thread(target=lambda: rec_err.extend(rec.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    t0 = time.monotonic()
    results: dict[str, str] = {}
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            for i, (t, res) in enumerate(pool.map(lambda t: _prove(tests, t, out, nginx, args.timeout), files)):
                results[t] = res
                if args.verbose or res == "timeout":
                    print(f"[{i + 1}/{len(files)}] {t}: {res}", flush=True)
        time.sleep(2.0)  # the last exchanges reach the session file
    finally:
        rec.send_signal(signal.SIGINT)
        try:
            rec.wait(60)
        except subprocess.TimeoutExpired:
            rec.kill()
        drain.join(5)
    (out / "prove.json").write_text(json.dumps(results, indent=1))
    counts = Counter(results.values())
    print(f"{len(files)} test files in {time.monotonic() - t0:.0f} s: {dict(counts)}; record exit {rec.returncode}")
    print("".join(rec_err[-5:]).strip())
    return compare(argparse.Namespace(out=str(out), show=args.show, limit=args.limit))


# ---------------------------------------------------------------------------- compare


def _times(value: str) -> list[float | None]:
    return [None if v.strip() in ("-", "") else float(v) * 1000 for v in value.replace(" : ", ", ").split(",")]


def _ms_text(ms: float | None) -> str:
    return "-" if ms is None else f"{int(ms) // 1000}.{int(ms) % 1000:03d}"


def differences(line: dict[str, Any], ex: Exchange) -> dict[str, str]:
    """Every field of one log line that its exchange does not equal: {kind: detail}."""
    want_ms = float(line["request_time"]) * 1000
    checks: dict[str, tuple[Any, Any]] = {
        "method": (ex.method, line["method"]),
        "uri": (ex.target, line["uri"].encode("utf-8", "surrogateescape").decode("latin-1")),
        "protocol": (ex.version, line["protocol"]),
        "status": (ex.status, int(line["status"])),
        "request_length": (ex.request_bytes, int(line["request_length"])),
        "bytes_sent": (ex.response_bytes, int(line["bytes_sent"])),
        "pid": (ex.pid, int(line["pid"])),
        "client": (nginx_addr(ex.remote or ex.client), line["client"]),
        "server": (nginx_addr(ex.server), line["server"]),
        "https": (ex.tls, line["https"] == "on"),
    }
    diff = {k: f"{got!r} != log {want!r}" for k, (got, want) in checks.items() if got != want}
    if ex.nginx_ms is None or abs(ex.nginx_ms - want_ms) > 1.0:
        diff["request_time"] = f"nginx_ms {ex.nginx_ms} vs log {want_ms:.0f} ms"
    if ex.nginx_end is not None:  # nginx's own clock: equal to the millisecond
        if abs(ex.nginx_end - float(line["msec"])) > 0.0005:
            diff["msec"] = f"nginx_end {ex.nginx_end:.3f} vs log {line['msec']}"
    elif abs(ex.end - float(line["msec"])) > 0.05:
        diff["msec"] = f"end {ex.end:.3f} vs log {line['msec']}"
    want_addr = line["upstream_addr"] if line["upstream_addr"] not in ("", "-") else ""
    # nginx's own lists, " : " between the groups of an internal redirect included
    addrs = nginx_list(ex.upstream, [a.addr for a in ex.upstream])
    if addrs != want_addr:
        diff["upstream_addr"] = f"{addrs!r} != log {line['upstream_addr']!r}"
    elif want_addr:
        statuses = nginx_list(ex.upstream, ["-" if a.status is None else str(a.status) for a in ex.upstream])
        if statuses != line["upstream_status"]:
            diff["upstream_status"] = f"{statuses!r} != log {line['upstream_status']!r}"
        if ex.upstream_via == "nginx":  # nginx's own times: equal to the millisecond
            for name, key in (("upstream_connect_time", "connect_ms"), ("upstream_header_time", "header_ms"),
                              ("upstream_response_time", "duration_ms")):
                times = nginx_list(ex.upstream, [_ms_text(getattr(a, key)) for a in ex.upstream])
                if name in line and times != line[name]:  # (runs before this had no connect/header times)
                    diff[name] = f"{times!r} != log {line[name]!r}"
        else:
            for att, want in zip(ex.upstream, _times(line["upstream_response_time"]), strict=False):
                if want is not None and (att.duration_ms is None or abs(att.duration_ms - want) > max(2.0, 0.1 * want)):
                    diff["upstream_response_time"] = f"{att.addr} {att.duration_ms} vs log {want}"
    return diff


def _load_log(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"unparsable": raw})
    return lines


def compare(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        reader = SessionReader(out / "session.ngxs")
        session = reader.read_all()
    except SessionError as exc:
        print(f"nginx_suite: {exc}", file=sys.stderr)
        return 1
    # joined by the client's address and port (unique while its connection lasts); a line
    # whose client nginx rewrote (realip: X-Real-IP, X-Forwarded-For, PROXY protocol) by the
    # server, worker and request line instead
    groups: dict[str, list[Exchange]] = defaultdict(list)
    by_request: dict[tuple[str, int, str], list[Exchange]] = defaultdict(list)
    for ex in session.exchanges:
        if ex.conn_outcome is None:
            groups[nginx_addr(ex.remote or ex.client)].append(ex)
            by_request[(nginx_addr(ex.server), ex.pid, f"{ex.method} {ex.target}")].append(ex)
    used: set[int] = set()
    total = found = equal = 0
    kinds: Counter[str] = Counter()
    apart: Counter[str] = Counter()
    per_file: dict[str, list[int]] = {}
    examples: dict[str, list[str]] = defaultdict(list)
    for path in sorted((out / "logs").glob("*.json")):
        t = path.name[:-5]
        stats = per_file.setdefault(t, [0, 0, 0])
        for line in sorted(_load_log(path), key=lambda d: float(d.get("msec", 0))):
            total += 1
            stats[0] += 1
            if "unparsable" in line:
                kinds["unparsable log line"] += 1
                continue
            cands = [ex for ex in groups.get(line["client"], []) if id(ex) not in used]
            if not cands:
                key = (line["server"], int(line["pid"]), f"{line['method']} {line['uri']}")
                cands = [ex for ex in by_request.get(key, []) if id(ex) not in used
                         and abs(ex.end - float(line["msec"])) < 2.0]
            if not cands:
                kinds["not found"] += 1
                examples["not found"].append(f"{t}: {line['request']!r} {line['status']} {line['client']}")
                continue
            req = f"{line['method']} {line['uri']}"
            # a client port may be reused by another test's nginx running alongside: same server first
            ex = min(cands, key=lambda e: (nginx_addr(e.server) != line["server"], f"{e.method} {e.target}" != req,
                                           abs(e.end - float(line["msec"]))))
            used.add(id(ex))
            found += 1
            stats[1] += 1
            diff = differences(line, ex)
            # not a logged field: the kernel clock's duration against nginx's cached clock,
            # which stops while one event-loop turn runs (counted apart, for information)
            want_ms = float(line["request_time"]) * 1000
            if abs(ex.duration_ms - want_ms) > max(20.0, 0.3 * want_ms):
                apart["true duration beyond max(20 ms, 30 %) of $request_time"] += 1
            if not diff:
                equal += 1
                stats[2] += 1
                continue
            for kind, detail in diff.items():
                kinds[kind] += 1
                examples[kind].append(f"{t}: {line['request']!r} {line['status']}: {detail}"
                                      + (f" [{ex.error}]" if ex.error else ""))
    if not total:
        print("no access-log lines")
        return 1
    print(f"\nexchanges {len(session.exchanges)} ({len(used)} joined); session complete: {session.complete}")
    stats_rec = session.stats or {}
    print(f"events {stats_rec.get('events')}, lost {stats_rec.get('lost')}, truncated {stats_rec.get('truncated')}")
    via = Counter(ex.upstream_via for ex in session.exchanges if ex.upstream)
    print(f"exchanges with upstream attempts: {sum(via.values())} (nginx's own list {via['nginx']}, "
          f"rebuilt from the wire {via['wire']})")
    print(f"access-log lines {total}: found {found} ({100 * found / total:.2f} %), "
          f"every field equal {equal} ({100 * equal / total:.2f} %)")
    print("\nfields that differ (lines):")
    for kind, n in kinds.most_common():
        print(f"  {kind:24} {n}")
        for ex_line in examples[kind][: args.limit if args.show in (None, kind) else 0]:
            print(f"      {ex_line[:300]}")
    for what, n in apart.items():
        print(f"  (not a field) {what}: {n} lines")
    print("\nfiles with unequal lines (lines / found / equal):")
    for t, (n, f, e) in sorted(per_file.items()):
        if e < n:
            print(f"  {t:36} {n:5} {f:5} {e:5}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the suite under ngxscope record, then compare")
    r.add_argument("tests", help="an nginx-tests checkout")
    r.add_argument("--out", default="/tmp/ngxscope-suite")
    r.add_argument("--nginx", default="/usr/sbin/nginx")
    r.add_argument("--only", nargs="+", default=["*.t"], help="glob(s) of .t files")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--timeout", type=float, default=180.0)
    r.add_argument("--cpu-budget", default="0")
    r.add_argument("--verbose", action="store_true")
    c = sub.add_parser("compare", help="compare an earlier run's logs and session again")
    c.add_argument("out")
    for p in (r, c):
        p.add_argument("--show", help="print examples of this kind only")
        p.add_argument("--limit", type=int, default=6, help="examples per kind")
    args = ap.parse_args()
    return run(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
