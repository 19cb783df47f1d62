"""`ngxscope diff` against a known change: two sessions captured from the lab (real nginx,
real eBPF), the second with one route made slower (its backend sleeps longer) and one
upstream peer made slower (every request to it waits); the report must name exactly that
route first among routes and that peer first among peers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange
from ngxscope.store.session import SessionWriter

ROUTES = ["/api/items/{n}", "/api/echo", "/api/chunked?n=2", "/api/users/{n}/cart", "/api/x/slow?ms={ms}",
          "/api/big?kb=4"]
ROUNDS = 24


def _delay(port: int, ms: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_lab/delay?ms={ms}", timeout=5) as resp:
        assert json.loads(resp.read())["delay_ms"] == ms


def _session(nginx: LabNginx, capture_factory: Any, slow_ms: int, seed: int) -> list[Exchange]:
    cap = capture_factory(pid=nginx.master_pid)
    traffic = Traffic(nginx.plain_port, nginx.tls_port)
    rng = random.Random(seed)
    paths = []
    for _ in range(ROUNDS):
        batch = [p.format(n=rng.randrange(1, 10_000), ms=slow_ms) for p in ROUTES]
        rng.shuffle(batch)  # no route keeps to one peer of the round robin
        paths += batch
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: traffic.request(False, "GET", p), paths))
    exchanges = cap.wait_for(len(paths))
    cap.stop()
    return exchanges


def _write(path: Path, exchanges: list[Exchange]) -> None:
    with SessionWriter(path, {"pid": 0}) as w:
        for ex in exchanges:
            w.write_exchange(ex)


def test_diff_names_the_slowed_route_and_peer_first(lab_nginx: LabNginx, capture_factory: Any,
                                                    tmp_path: Path) -> None:
    _b1, b2 = lab_nginx.backend_ports
    a = _session(lab_nginx, capture_factory, slow_ms=5, seed=1)
    _delay(b2, 110)
    try:
        b = _session(lab_nginx, capture_factory, slow_ms=175, seed=2)
    finally:
        _delay(b2, 0)
    assert len(a) == len(b) == ROUNDS * len(ROUTES)
    _write(tmp_path / "a.ngxs", a)
    _write(tmp_path / "b.ngxs", b)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}  # no user routes file
    out = subprocess.run([sys.executable, "-m", "ngxscope", "diff", str(tmp_path / "a.ngxs"),
                          str(tmp_path / "b.ngxs"), "--json"], capture_output=True, text=True, env=env, check=True)
    rows = json.loads(out.stdout)
    routes = [r for r in rows if r["dimension"] == "route"]
    peers = [r for r in rows if r["dimension"] == "upstream peer"]
    text = subprocess.run([sys.executable, "-m", "ngxscope", "diff", str(tmp_path / "a.ngxs"),
                           str(tmp_path / "b.ngxs")], capture_output=True, text=True, env=env, check=True).stdout
    print("\n" + text)
    assert routes[0]["key"] == "/api/x/slow", text
    assert peers[0]["key"] == f"127.0.0.1:{b2}", text
    assert routes[0]["p_value"] < 0.001 and peers[0]["p_value"] < 0.001
    assert routes[0]["impact"] > routes[1]["impact"] and peers[0]["impact"] > peers[1]["impact"]
    assert {r["key"] for r in routes} >= {"/api/items/{id}", "/api/users/{id}/cart", "/api/echo"}
