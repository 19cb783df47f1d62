"""Two sets of exchanges compared (`ngxscope diff A.ngxs B.ngxs`): per server block, location,
route template and upstream peer, the change in rate, error rate and p50/p95/p99, with a
Mann-Whitney U test on the latency samples (no distribution assumed: latencies are skewed
and multi-modal) and a two-proportion z test on the error rates, sorted by impact.

Impact (ms) of a row = the larger of |Δp50| and |Δp95| / 2 when the latency change is
significant (two-sided p < `ALPHA`; else 0), plus 1000 * |Δ error rate| (one point of error
rate weighs like 10 ms). Rows seen on one side only are listed after the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ngxscope.model import Exchange
from ngxscope.store.routes import RouteTemplater
from ngxscope.store.summary import location_key, percentile

__all__ = ["ALPHA", "DIMENSIONS", "DiffRow", "Side", "collect_sides", "diff_exchanges", "format_diff", "judge",
           "mann_whitney_u", "two_proportions"]

ALPHA = 0.001
"""Significance level of the latency test (many rows are tested: stay strict)."""

MAX_SAMPLES = 4000
"""Latency samples per side and row given to the test (an even stride beyond)."""

DIMENSIONS = ("server block", "location", "route", "upstream peer")


def mann_whitney_u(a: list[float], b: list[float]) -> tuple[float, float]:
    """(U of `a`, two-sided p) by the normal approximation with tie correction (fine for
    n ≥ 8 a side; smaller samples give p = 1). No scipy needed."""
    n1, n2 = len(a), len(b)
    if n1 < 8 or n2 < 8:
        return 0.0, 1.0
    merged = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    n = n1 + n2
    rank_a = 0.0
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and merged[j + 1][0] == merged[i][0]:
            j += 1
        rank = (i + j) / 2.0 + 1.0
        t = j - i + 1
        if t > 1:
            ties += t ** 3 - t
        rank_a += rank * sum(1 for k in range(i, j + 1) if merged[k][1] == 0)
        i = j + 1
    u = rank_a - n1 * (n1 + 1) / 2.0
    mean = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return u, 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(var)
    return u, min(1.0, math.erfc(max(0.0, z) / math.sqrt(2.0)))


@dataclass(slots=True)
class Side:
    """One row's figures in one session."""

    requests: int = 0
    errors: int = 0
    ms: list[float] = field(default_factory=list)
    rate: float = 0.0
    error_rate: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    def finish(self, seconds: float) -> None:
        self.ms.sort()
        self.p50, self.p95, self.p99 = (percentile(self.ms, q) for q in (50, 95, 99))
        self.rate = self.requests / seconds if seconds > 0 else 0.0
        self.error_rate = self.errors / self.requests if self.requests else 0.0


@dataclass(slots=True)
class DiffRow:
    """One server block / location / route / peer in both sessions."""

    dimension: str
    key: str
    a: Side
    b: Side
    p_value: float = 1.0
    """Two-sided Mann-Whitney p of the latency samples (1 when not testable)."""
    impact: float = 0.0
    error_p: float = 1.0
    """Two-sided p of the two-proportion test of the error rates (1 when not testable)."""

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def delta(self, name: str) -> float | None:
        va, vb = getattr(self.a, name), getattr(self.b, name)
        return None if va is None or vb is None else vb - va

    @property
    def worse(self) -> bool:
        """B is significantly slower than A, or has a significantly higher error rate."""
        return ((self.significant and (self.delta("p50") or 0.0) > 0)
                or (self.error_p < ALPHA and self.b.error_rate > self.a.error_rate))

    @property
    def better(self) -> bool:
        """B is significantly faster (and not worse for errors)."""
        return not self.worse and self.significant and (self.delta("p50") or 0.0) < 0


def two_proportions(e1: int, n1: int, e2: int, n2: int) -> float:
    """Two-sided p of the pooled two-proportion z test (1 when either side has < 8)."""
    if n1 < 8 or n2 < 8:
        return 1.0
    pooled = (e1 + e2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se <= 0:
        return 1.0
    z = abs(e2 / n2 - e1 / n1) / se
    return min(1.0, math.erfc(z / math.sqrt(2.0)))


def _span(exchanges: list[Exchange]) -> float:
    if not exchanges:
        return 0.0
    return max(e.end for e in exchanges) - min(e.start for e in exchanges)


def _sample(values: list[float], most: int = MAX_SAMPLES) -> list[float]:
    if len(values) <= most:
        return values
    step = len(values) / most
    return [values[int(i * step)] for i in range(most)]


def collect_sides(exchanges: list[Exchange], templater: RouteTemplater,
                  samples: int = MAX_SAMPLES) -> dict[tuple[str, str], Side]:
    """Each (dimension, key)'s figures over these exchanges: percentiles of all its
    latencies, `samples` of them kept (an even stride) for the test."""
    rows: dict[tuple[str, str], Side] = {}

    def add(key: tuple[str, str], ms: float | None, error: bool) -> None:
        s = rows.get(key)
        if s is None:
            s = rows[key] = Side()
        s.requests += 1
        s.errors += error
        if ms is not None:
            s.ms.append(ms)

    for ex in exchanges:
        error = ex.status is None or ex.status >= 500
        if ex.server_block:
            add(("server block", ex.server_block), ex.duration_ms, error)
        if ex.location:
            add(("location", location_key(ex)), ex.duration_ms, error)
        if not ex.is_tcp and ex.target:
            add(("route", templater.template(ex.path)), ex.duration_ms, error)
        for att in ex.upstream:
            add(("upstream peer", att.addr), att.duration_ms, att.status is None or att.status >= 500)
    span = _span(exchanges)
    for side in rows.values():
        side.finish(span)
        side.ms = _sample(side.ms, samples)
    return rows


def judge(key: tuple[str, str], a: Side | None, b: Side | None) -> DiffRow:
    """The row of `key` with A's and B's figures (None: not seen there), tested."""
    sa, sb = a or Side(), b or Side()
    _, p = mann_whitney_u(sa.ms, sb.ms)
    row = DiffRow(key[0], key[1], sa, sb, p, error_p=two_proportions(sa.errors, sa.requests, sb.errors, sb.requests))
    lat = 0.0
    if row.significant:
        d50, d95 = row.delta("p50") or 0.0, row.delta("p95") or 0.0
        lat = max(abs(d50), abs(d95) / 2)
    both = sa.requests and sb.requests
    row.impact = lat + 1000.0 * abs(sb.error_rate - sa.error_rate) if both else -1.0
    return row


def diff_exchanges(a: Iterable[Exchange], b: Iterable[Exchange],
                   templater: Callable[[], RouteTemplater] = RouteTemplater) -> list[DiffRow]:
    """Every row of both sides, per dimension (in `DIMENSIONS` order), most impact first."""
    xa, xb = list(a), list(b)
    # one templater per side would give each its own bounds: share one, A first
    shared = templater()
    rows_a, rows_b = collect_sides(xa, shared), collect_sides(xb, shared)
    out = [judge(key, rows_a.get(key), rows_b.get(key)) for key in rows_a.keys() | rows_b.keys()]
    for row in out:
        row.a.ms, row.b.ms = [], []
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    out.sort(key=lambda r: (order[r.dimension], -r.impact, -(r.a.requests + r.b.requests), r.key))
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}"


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()


def format_diff(rows: list[DiffRow], name_a: str, name_b: str, top: int = 10) -> str:
    """The text report: one table per dimension, `top` rows each."""
    out = [f"A  {name_a}", f"B  {name_b}",
           f"latency change tested with Mann-Whitney U, error rates with a two-proportion test (p < {ALPHA}); "
           "▲ worse, ▼ better; impact in ms (see ngxscope.store.diff)"]
    for dim in DIMENSIONS:
        mine = [r for r in rows if r.dimension == dim][:top]
        if not mine:
            continue
        heads = ["", dim, "req/s A", "req/s B", "err% A", "err% B", "p50 A", "p50 B", "Δp50", "p95 A", "p95 B",
                 "Δp95", "p99 A", "p99 B", "p", "impact"]
        body = []
        for r in mine:
            mark = "▲" if r.worse else "▼" if r.better else " "
            body.append([mark, r.key if len(r.key) <= 50 else r.key[:49] + "…",
                         f"{r.a.rate:.1f}", f"{r.b.rate:.1f}",
                         f"{100 * r.a.error_rate:.1f}", f"{100 * r.b.error_rate:.1f}",
                         _ms(r.a.p50), _ms(r.b.p50), _signed(r.delta("p50")),
                         _ms(r.a.p95), _ms(r.b.p95), _signed(r.delta("p95")),
                         _ms(r.a.p99), _ms(r.b.p99),
                         f"{r.p_value:.1g}" if r.p_value < 1 else "1",
                         "only " + ("A" if r.b.requests == 0 else "B") if r.impact < 0 else f"{r.impact:.1f}"])
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(heads)]
        out += ["", *(_line(cells, widths) for cells in (heads, ["-" * w for w in widths], *body))]
    return "\n".join(out) + "\n"
