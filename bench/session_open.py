#!/usr/bin/env python3
"""Time and peak memory to open a large session file (default 1,000,000 exchanges).

Makes the file once (realistic exchanges: headers, small bodies, upstream attempts) under
bench/results/, then, each in a fresh process so peak RSS is its own:
  read   — stream every exchange through SessionReader (what export/stats do)
  window — open it in the main window (offscreen), as `ngxscope open FILE` does

    .venv/bin/python bench/session_open.py [--exchanges 1000000] [--skip-window]

Prints a table and writes bench/results/session_open.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def measure(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=1_000_000)
    ap.add_argument("--skip-window", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path = args.child
        res = child_read(path) if kind == "read" else child_window(path)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"session-{args.exchanges}.ngxs"
    made = None
    if not path.exists():
        made = make(path, args.exchanges)
    results = {"exchanges": args.exchanges, "file_mb": path.stat().st_size / 1e6, "write_seconds": made,
               "read": measure("read", path)}
    if not args.skip_window:
        results["window"] = measure("window", path)
    print(f"session: {args.exchanges} exchanges, {results['file_mb']:.0f} MB on disk"
          + (f", written in {made:.1f} s" if made else ""))
    print(f"{'open as':8} {'seconds':>8} {'peak RSS MB':>12}")
    for kind in ("read", "window"):
        if kind in results:
            r = results[kind]
            print(f"{kind:8} {r['seconds']:8.1f} {r['peak_rss_mb']:12.0f}")
    (RESULTS / "session_open.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
