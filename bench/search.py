#!/usr/bin/env python3
"""Header and body search over a large in-memory capture (default 200,000 exchanges).

Builds realistic exchanges (request headers with an X-Request-Id, JSON response bodies of
0.3-3 KB: 70 % plain, 15 % gzip, 10 % chunked, 5 % binary; POST bodies on 20 %; a needle
"error code" seeded in 0.1 %), then times `compile_filter(q)` applied to every row, for
each query:

  cold — the decoded-body cache empty (the first search after loading)
  warm — the same query again (refining a filter in the window)
  naive — the A/B baseline: every body decoded and searched as text on each run, no raw-bytes
          path and no cache (what a straightforward implementation does)

    .venv/bin/python bench/search.py [--rows 200000] [--runs 3]

Medians of --runs; prints a table (CPU ms of the search, single-threaded: its duration on
an idle core), the matches per query and the load average.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "app"))

from ngxscope.model import Exchange
from ngxscope.store import bodysearch
from ngxscope.store.filterexpr import compile_filter

QUERIES = [
    'body~"error code"',
    'body~*"ERROR CODE"',
    "resp.body~*timeout.{0,20}retry",
    "req.body~needle",
    "header.x-request-id=r-0123456",
    "resp.header.content-type~json",
    'status>=500 body~"error code"',
]


def make(n: int) -> list[Exchange]:
    rnd = random.Random(7)
    words = ("alpha", "beta", "gamma", "delta", "items", "price", "name", "value", "ok")
    out = []
    for i in range(n):
        items = [{"id": i * 10 + k, "name": rnd.choice(words) * rnd.randint(1, 4),
                  "price": rnd.random() * 100} for k in range(rnd.randint(3, 40))]
        doc = {"items": items, "page": i}
        if rnd.random() < 0.001:
            doc["error"] = "error code 17: upstream timeout, will retry"
        body = json.dumps(doc).encode()
        headers = [("Content-Type", "application/json"), ("Server", "nginx")]
        kind = rnd.random()
        if kind < 0.15:
            body = gzip.compress(body, 1)
            headers.append(("Content-Encoding", "gzip"))
        elif kind < 0.25:
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            headers.append(("Transfer-Encoding", "chunked"))
        elif kind < 0.30:
            body = rnd.randbytes(rnd.randint(300, 3000))
            headers[0] = ("Content-Type", "application/octet-stream")
        req_body = b""
        if rnd.random() < 0.2:
            req_body = f"q={rnd.choice(words)}&n={i}".encode() + (b"&needle=1" if i % 997 == 0 else b"")
        out.append(Exchange(
            id=i, start=1.7e9 + i * 0.001, end=1.7e9 + i * 0.001 + 0.01, pid=100,
            client="127.0.0.1:5000", server="127.0.0.1:80", tls=False,
            method="POST" if req_body else "GET", target=f"/api/items?page={i}",
            version="HTTP/1.1", host="shop.test", status=500 if i % 50 == 0 else 200,
            request_headers=[("Host", "shop.test"), ("User-Agent", "bench"),
                             ("X-Request-Id", f"r-{i:07d}")],
            response_headers=headers, request_body=req_body, response_body=body,
            request_body_size=len(req_body), response_body_size=len(body)))
    return out


def naive(q: str) -> object:
    """The baseline: decode every body each time, search text."""
    m = re.match(r"(?:(req|resp)\.)?body(~\*?)(.*)", q)
    if not m:
        return None
    side, op, value = m.group(1) or "", m.group(2), json.loads(m.group(3)) \
        if m.group(3).startswith('"') else m.group(3)
    rx = re.compile(value, re.IGNORECASE if op == "~*" else 0)

    def pred(e: Exchange) -> bool:
        for req in ((True, False) if not side else ((side == "req"),)):
            raw, h = ((e.request_body, e.request_headers) if req
                      else (e.response_body, e.response_headers))
            if rx.search(bodysearch.decoded_body(raw, h).decode("utf-8", "replace")):
                return True
        return False
    return pred


def timed(rows: list[Exchange], pred: object) -> tuple[float, int]:
    """CPU milliseconds of this process (on a shared machine, wall time mostly measures the
    neighbours; the search is single-threaded, so its CPU time is its duration alone)."""
    t0 = time.process_time()
    n = sum(1 for e in rows if pred(e))  # type: ignore[operator]
    return (time.process_time() - t0) * 1000, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = make(args.rows)
    gc.freeze()  # as the window does after each batch: the store is never cyclic-collected
    size = sum(len(e.response_body) + len(e.request_body) for e in rows)
    print(f"{len(rows):,} exchanges, {size / 1e6:.0f} MB of bodies on the wire "
          f"(built in {time.perf_counter() - t0:.1f} s); medians of {args.runs} runs, ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'query (CPU ms)':<36} {'matches':>8} {'cold':>8} {'warm':>8} {'naive':>8}")
    for q in QUERIES:
        cold, warm, base = [], [], []
        n = 0
        for _ in range(args.runs):
            bodysearch.CACHE.clear()
            ms, n = timed(rows, compile_filter(q))
            cold.append(ms)
            warm.append(timed(rows, compile_filter(q))[0])
            pred = naive(q)
            if pred is not None:
                base.append(timed(rows, pred)[0])
        b = f"{statistics.median(base):8.0f}" if base else f"{'-':>8}"
        print(f"{q:<36} {n:>8,} {statistics.median(cold):8.0f} {statistics.median(warm):8.0f} {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
