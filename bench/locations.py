"""What naming the location costs the recorder per exchange (it runs on the decode thread):
A = the server block alone (before issue 18), B = server block + location (nginx's matching,
redirects) + the answer kind, C = server block + the location nginx named from its memory
(found in the parsed tree by its label) + the answer kind with the cache's history
(`CacheTracker`, as the recorder runs it), on a configuration of 40 locations (prefix, ^~,
=, regex, nested, try_files, error_page) and a mix of paths. Prints µs per exchange.

    PYTHONPATH=app .venv/bin/python bench/locations.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from ngxscope.capture.nginxconf import load_config
from ngxscope.capture.selfanswer import CacheTracker, self_answer
from ngxscope.model import Exchange, UpstreamAttempt


def _conf(root: Path) -> str:
    locs = []
    for i in range(10):
        locs.append(f"location /svc{i}/ {{ proxy_pass http://app; location ~ \\.json$ {{ proxy_pass http://app; }} }}")
        locs.append(f"location = /svc{i}/health {{ return 200; }}")
        locs.append(f"location ^~ /static{i}/ {{ root {root}; }}")
        locs.append(f"location ~* ^/img{i}/.*\\.(png|jpg)$ {{ root {root}; }}")
    locs.append("location /files/ { try_files $uri @backend; }")
    locs.append("location @backend { proxy_pass http://app; }")
    locs.append("location /err/ { proxy_pass http://app; proxy_intercept_errors on; error_page 404 = @backend; }")
    return ("events {} http { upstream app { server 10.0.0.2:80; } server { listen 80; server_name a; "
            + " ".join(locs) + " location / { return 404; } } }")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "n.conf").write_text(_conf(tmp))
    cmap = load_config(str(tmp / "n.conf"))
    rng = random.Random(1)
    paths = [rng.choice([f"/svc{rng.randrange(10)}/items/{rng.randrange(9999)}", f"/svc{rng.randrange(10)}/a.json",
                         f"/svc{rng.randrange(10)}/health", f"/static{rng.randrange(10)}/app.js",
                         f"/img{rng.randrange(10)}/p.PNG", "/files/x.txt", "/err/x", "/nothing"])
             for _ in range(20_000)]
    attempts = [("10.0.0.2:80", 200)]
    for _round in range(2):
        t = time.perf_counter()
        for _p in paths:
            cmap.server_of("127.0.0.1:80", "a")
        a = (time.perf_counter() - t) / len(paths) * 1e6
        t = time.perf_counter()
        for p in paths:
            block = cmap.block_of("127.0.0.1:80", "a")
            loc = cmap.resolve(block, p, attempts)
            self_answer(loc, 200, True)
        b = (time.perf_counter() - t) / len(paths) * 1e6
        # C: what nginx named (the labels B found stand in for what the probe reads)
        block = cmap.block_of("127.0.0.1:80", "a")
        found = [(p, cmap.resolve(block, p, attempts)) for p in paths]
        labels = [(p, loc.label if loc is not None else None) for p, loc in found]
        exes = [Exchange(id=1, start=1.0, end=1.01, pid=1, client="10.0.0.9:4000", server="127.0.0.1:80", tls=False,
                         method="GET", target=p, status=200,
                         upstream=[UpstreamAttempt(addr="10.0.0.2:80", status=200, start=1.0, header_ms=1.0)])
                for p in paths]
        tracker = CacheTracker()
        t = time.perf_counter()
        for (p, label), ex in zip(labels, exes, strict=True):
            block = cmap.block_of("127.0.0.1:80", "a")
            loc, _via = cmap.locate(block, p, attempts, label, True)
            tracker.answer(ex, loc)
        c = (time.perf_counter() - t) / len(paths) * 1e6
    print(f"A server block only: {a:.1f} µs/exchange; B + location matched + answer: {b:.1f} µs/exchange "
          f"(+{b - a:.1f} µs); C + location read from nginx + answer with the cache's history: {c:.1f} µs/exchange "
          f"(+{c - a:.1f} µs) over {len(paths)} paths, 42 locations")


if __name__ == "__main__":
    main()
