#!/usr/bin/env python3
"""Time and peak memory to open a large session file (default 1,000,000 exchanges).

Makes the file once (realistic exchanges: headers, small bodies, upstream attempts) under
bench/results/, then, each in a fresh process so peak RSS is its own:
  read      — stream every exchange through SessionReader (what export/stats do)
  window    — open it in the main window (offscreen), as `ngxscope open FILE` does
  window-bg — the same read in a worker thread while the window's event loop runs (File ▸
              Open); also the event loop's longest stall (a 10 ms timer's worst lateness)

    .venv/bin/python bench/session_open.py [--exchanges 1000000] [--skip-window] [--runs 3]
        [--variant before=/path/to/other/app]

`--variant NAME=DIR` also measures another source tree (its `app` directory) in the same
run, alternating with this one, so machine load hits both alike. Medians of `--runs`.
Prints a table and writes bench/results/session_open.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def make(path: Path, n: int) -> float:
    from ngxscope.model import Exchange, UpstreamAttempt
    from ngxscope.store.session import SessionWriter

    t0 = time.perf_counter()
    base = 1_800_000_000.0
    with SessionWriter(path, {"bench": "session_open"}, overwrite=True) as w:
        for i in range(n):
            start = base + i * 0.001
            status = (200, 200, 200, 304, 404, 502)[i % 6]
            w.write_exchange(Exchange(
                id=i + 1, start=start, end=start + 0.002 + (i % 50) / 1000, pid=4100 + i % 2,
                client=f"10.0.{i % 250}.{i % 200}:{40000 + i % 20000}", server="10.0.0.1:443", tls=i % 2 == 0,
                conn_id=f"{4100 + i % 2}:{i % 900}:{i // 7}", conn_seq=i % 7, method="GET" if i % 5 else "POST",
                target=f"/api/v1/items/{i % 5000}?page={i % 13}", version="HTTP/1.1", host="shop.example.com",
                status=status, reason="OK", request_bytes=320, response_bytes=1200 + i % 700,
                request_headers=[("Host", "shop.example.com"), ("User-Agent", "bench/1.0"),
                                 ("Accept", "application/json"), ("X-Request-Id", f"{i:016x}")],
                response_headers=[("Server", "nginx/1.22.1"), ("Content-Type", "application/json"),
                                  ("Content-Length", str(900 + i % 700))],
                response_body=b'{"id": %d, "name": "item"}' % i, response_body_size=900 + i % 700,
                upstream=[UpstreamAttempt(addr=f"10.0.1.{2 + i % 2}:8080", status=status, connect_ms=0.0,
                                          header_ms=1.0, duration_ms=2.0, request_bytes=300,
                                          response_bytes=1100, group="app")] if i % 3 else [],
                nginx_ms=2.0,
            ))
    return time.perf_counter() - t0


def child_read(path: str) -> dict[str, float]:
    from ngxscope.store.session import SessionReader

    t0 = time.perf_counter()
    n = sum(1 for _ in SessionReader(path).exchanges())
    return {"exchanges": n, "seconds": time.perf_counter() - t0}


def child_window(path: str) -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from ngxscope.ui.app import ensure_app
    from ngxscope.ui.mainwindow import MainWindow
    from ngxscope.ui.sessionload import load_session

    app = ensure_app()
    t0 = time.perf_counter()
    win = MainWindow(None, title="bench")
    result = load_session(win, path)
    win.show()
    app.processEvents()
    return {"exchanges": result.total, "seconds": time.perf_counter() - t0, "shown_rows": len(win.store)}


def child_window_bg(path: str) -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer

    from ngxscope.ui.app import ensure_app
    from ngxscope.ui.mainwindow import MainWindow
    from ngxscope.ui.sessionload import load_in_background

    app = ensure_app()
    t0 = time.perf_counter()
    win = MainWindow(None, title="bench")
    win.show()
    last = [time.perf_counter()]
    stalls: list[float] = []

    def beat() -> None:
        now = time.perf_counter()
        stalls.append(now - last[0] - 0.010)
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(beat)
    timer.start(10)
    result = load_in_background(win, path)
    app.processEvents()
    seconds = time.perf_counter() - t0
    stalls.sort()
    return {"exchanges": result.total, "seconds": seconds, "shown_rows": len(win.store),
            "max_stall_ms": 1000 * stalls[-1] if stalls else 0.0,
            "p99_stall_ms": 1000 * stalls[int(len(stalls) * 0.99)] if stalls else 0.0}


def measure(kind: str, path: Path, app_dir: str | None = None) -> dict[str, float]:
    env = dict(os.environ)
    if app_dir:
        env["PYTHONPATH"] = app_dir + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--skip-window", action="store_true")
    ap.add_argument("--runs", type=int, default=1, help="runs per mode (medians reported)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=APP_DIR",
                    help="also measure another source tree (e.g. before=/tmp/before/app)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path = args.child
        if kind == "window-bg":
            try:
                res = child_window_bg(path)
            except ImportError:  # a tree without the background open
                res = {"exchanges": 0, "seconds": float("nan")}
        else:
            res = child_read(path) if kind == "read" else child_window(path)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return 0
    trees: list[tuple[str, str | None]] = [("this", str(ROOT / "app"))]
    for v in args.variant:
        name, sep, app_dir = v.partition("=")
        if not sep or not os.path.isdir(app_dir):
            ap.error(f"--variant wants NAME=APP_DIR (an existing directory), got {v!r}")
        trees.append((name, app_dir))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"session-{args.exchanges}.ngxs"
    made = None
    if not path.exists():
        made = make(path, args.exchanges)
    kinds = ["read"] + ([] if args.skip_window else ["window", "window-bg"])
    raw: dict[str, dict[str, list[dict[str, float]]]] = {t: {k: [] for k in kinds} for t, _ in trees}
    for _ in range(args.runs):
        for kind in kinds:
            for tree, app_dir in trees:  # alternate trees within each mode
                raw[tree][kind].append(measure(kind, path, app_dir))
    results: dict[str, object] = {"exchanges": args.exchanges, "file_mb": path.stat().st_size / 1e6,
                                  "write_seconds": made, "runs": args.runs}
    for tree, _ in trees:
        results[tree] = {kind: median_of(runs) for kind, runs in raw[tree].items()}
        results[tree + "_all"] = raw[tree]
    print(f"session: {args.exchanges} exchanges, {results['file_mb']:.0f} MB on disk"
          + (f", written in {made:.1f} s" if made else "") + f"; medians of {args.runs}")
    print(f"{'tree':8} {'open as':10} {'seconds':>8} {'peak RSS MB':>12} {'max stall ms':>13}")
    for tree, _ in trees:
        for kind in kinds:
            r = results[tree][kind]  # type: ignore[index]
            stall = f"{r['max_stall_ms']:13.0f}" if "max_stall_ms" in r else f"{'':13}"
            print(f"{tree:8} {kind:10} {r['seconds']:8.1f} {r['peak_rss_mb']:12.0f} {stall}")
    (RESULTS / "session_open.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
