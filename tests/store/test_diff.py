"""Session comparison: the Mann-Whitney test and the impact order (captured truth:
tests/capture/test_diff_truth.py)."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from factories import make_exchange
from ngxscope.model import Exchange, UpstreamAttempt
from ngxscope.store.diff import diff_exchanges, format_diff, mann_whitney_u


def test_mann_whitney_known_values() -> None:
    a = [float(i) for i in range(1, 11)]
    b = [float(i) for i in range(11, 21)]
    u, p = mann_whitney_u(a, b)
    assert u == 0.0
    # normal approximation with continuity correction: z = (50 - 0.5) / sqrt(175)
    assert p == pytest.approx(math.erfc(49.5 / math.sqrt(175) / math.sqrt(2)), rel=1e-9)
    u, p = mann_whitney_u(b, a)
    assert u == 100.0 and p < 0.001
    same = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert mann_whitney_u(same, list(same))[1] == pytest.approx(1.0, abs=0.05)
    assert mann_whitney_u([1.0] * 20, [1.0] * 20) == (200.0, 1.0)  # all tied: no evidence
    assert mann_whitney_u([1.0], [2.0]) == (0.0, 1.0)  # too small to test


def _ex(path: str, ms: float, peer: str, t: float, status: int = 200) -> Exchange:
    e = make_exchange(target=path, status=status, start=t)
    e.end = t + ms / 1000
    e.server_block, e.location = "shop", "/api/"
    e.upstream = [UpstreamAttempt(addr=peer, status=status, duration_ms=ms * 0.9)]
    return e


def test_the_changed_route_and_peer_come_first() -> None:
    rng = random.Random(3)
    a, b = [], []
    for i in range(200):
        for side, out in ((0, a), (1, b)):
            peer = "10.0.0.2:80" if i % 2 else "10.0.0.3:80"
            for path in ("/users/7", "/orders/9", "/cart"):
                ms = rng.uniform(10, 20)
                if side and path == "/orders/9":
                    ms += 50
                if side and peer == "10.0.0.3:80":
                    ms += 30
                status = 503 if side and path == "/cart" and i % 50 == 0 else 200
                out.append(_ex(path, ms, peer, 1000.0 + i * 0.1, status))
    rows = diff_exchanges(a, b)
    routes = [r for r in rows if r.dimension == "route"]
    peers = [r for r in rows if r.dimension == "upstream peer"]
    assert routes[0].key == "/orders/{id}" and routes[0].significant
    assert peers[0].key == "10.0.0.3:80"
    cart = next(r for r in routes if r.key == "/cart")
    assert cart.b.error_rate == pytest.approx(0.02) and cart.impact >= 20.0  # 2 points of errors weigh 20 ms
    text = format_diff(rows, "a.ngxs", "b.ngxs")
    assert "/orders/{id}" in text and "upstream peer" in text


def test_rows_on_one_side_only_go_last() -> None:
    a = [_ex("/x", 10, "10.0.0.2:80", 1.0 + i) for i in range(10)]
    b = [_ex("/x", 10, "10.0.0.2:80", 1.0 + i) for i in range(10)] + [_ex("/new", 5, "10.0.0.2:80", 3.0)]
    routes = [r for r in diff_exchanges(a, b) if r.dimension == "route"]
    assert [r.key for r in routes] == ["/x", "/new"] and routes[1].impact < 0
    assert "only B" in format_diff(routes, "a", "b")


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    sample = Path(__file__).parent / "samples" / "session-v5.ngxs"
    for argv in ([str(sample), str(tmp_path / "none.ngxs")], [str(sample), str(sample), "--route", "x"],
                 [str(sample), str(sample), "--filter", "status>"]):
        out = subprocess.run([sys.executable, "-m", "ngxscope", "diff", *argv], capture_output=True, text=True,
                             env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    ok = subprocess.run([sys.executable, "-m", "ngxscope", "diff", str(sample), str(sample)], capture_output=True,
                        text=True, env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})
    assert ok.returncode == 0 and "/api/items" in ok.stdout


def test_error_rates_are_tested_and_judged() -> None:
    from ngxscope.store.diff import DiffRow, Side, two_proportions

    assert two_proportions(5, 1000, 60, 1000) < 1e-9  # 0.5 % → 6 %
    assert two_proportions(5, 1000, 7, 1000) > 0.3
    assert two_proportions(0, 5, 5, 5) == 1.0  # too few to say
    a, b = Side(requests=1000, errors=5, error_rate=0.005), Side(requests=1000, errors=60, error_rate=0.06)
    row = DiffRow("route", "/x", a, b, error_p=two_proportions(5, 1000, 60, 1000))
    assert row.worse and not row.better
    assert not DiffRow("route", "/x", a, Side(requests=1000, errors=7, error_rate=0.007),
                       error_p=two_proportions(5, 1000, 7, 1000)).worse
