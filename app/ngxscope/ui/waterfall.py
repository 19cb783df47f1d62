"""The Timing tab: a nested waterfall of one exchange drawn with QPainter.

Rows, on a shared millisecond axis, indented by nesting:

    client request           the whole exchange, first request byte → last response byte
      nginx                  nginx's own time: total minus the upstream envelope (read, write)
      upstream               first attempt start → last attempt end (the envelope)
        #1 peer → status     each attempt: connect / waiting for the header / receiving
        #2 peer → status     (a failed attempt in red; retries follow it)

Attempt times come from nginx's clock ($upstream_*_time, millisecond resolution), placed at
the attempt's captured start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ngxscope.model import Exchange

from .tablemodel import fmt_ms

__all__ = ["Row", "Segment", "WaterfallWidget", "waterfall_rows"]

CLIENT = QColor("#2e9d4f")
NGINX = QColor("#8e6cc4")
UPSTREAM = QColor("#b9c7d8")
CONNECT = QColor("#e0a526")
WAIT = QColor("#7e8fa6")
RECEIVE = QColor("#2f7fc1")
FAILED = QColor("#d64545")
LEGEND = ((CLIENT, "client exchange"), (NGINX, "nginx's own time"), (UPSTREAM, "upstream"),
          (CONNECT, "connect"), (WAIT, "waiting for header"), (RECEIVE, "receiving"),
          (FAILED, "failed attempt"))


@dataclass(slots=True)
class Segment:
    """One coloured piece of a row, in ms from the exchange start."""

    start: float
    end: float
    color: QColor
    name: str


@dataclass(slots=True)
class Row:
    """One waterfall row: label, nesting level, bars and the note after them."""

    label: str
    level: int
    segments: list[Segment]
    note: str


def _attempt_span(ex: Exchange, cursor: float) -> list[tuple[float, float]]:
    """(start, end) in ms since ex.start of each attempt, clamped to the exchange."""
    total = ex.duration_ms
    spans = []
    for a in ex.upstream:
        s = (a.start - ex.start) * 1000.0 if a.start is not None else cursor
        s = max(0.0, min(s, total))
        dur = a.duration_ms if a.duration_ms is not None else (a.header_ms or 0.0)
        e = max(s, min(total, s + dur))
        spans.append((s, e))
        cursor = e
    # an attempt nginx gave up on lasted until it started the next one
    for i in range(len(spans) - 1):
        s, e = spans[i]
        spans[i] = (s, max(e, min(spans[i + 1][0], total)))
    return spans


def waterfall_rows(ex: Exchange) -> list[Row]:
    """The rows of the waterfall of `ex`, times in ms since `ex.start`."""
    total = ex.duration_ms
    rows = [Row("client request", 0, [Segment(0.0, total, CLIENT, "client")],
                f"total {fmt_ms(total)}")]
    if not ex.upstream:
        rows.append(Row("nginx", 1, [Segment(0.0, total, NGINX, "nginx")],
                        f"{fmt_ms(total)} · answered by nginx itself"))
        return rows
    spans = _attempt_span(ex, 0.0)
    u0, u1 = spans[0][0], max(e for _s, e in spans)
    # nginx's own time: everything outside the upstream envelope (retry handling is upstream)
    own: list[Segment] = []
    if u0 > 0:
        own.append(Segment(0.0, u0, NGINX, "nginx"))
    if total > u1:
        own.append(Segment(u1, total, NGINX, "nginx"))
    own_ms = sum(seg.end - seg.start for seg in own)
    rows.append(Row("nginx", 1, own, f"{fmt_ms(own_ms)} (total minus upstream)"))
    n = len(ex.upstream)
    retries = f" · {n - 1} retr{'y' if n == 2 else 'ies'}" if n > 1 else ""
    group = getattr(ex.upstream[0], "group", None) or getattr(ex, "upstream_group", None)
    rows.append(Row(f"upstream {group}" if group else "upstream", 1,
                    [Segment(u0, u1, UPSTREAM, "upstream")],
                    f"{fmt_ms(u1 - u0)} · {n} attempt{'s' if n != 1 else ''}{retries}"))
    for i, (a, (s, e)) in enumerate(zip(ex.upstream, spans, strict=True), 1):
        connect = min(a.connect_ms or 0.0, e - s)
        header = min(a.header_ms if a.header_ms is not None else connect, e - s)
        bad = a.status is None or a.status >= 500
        segs = []
        if connect > 0:
            segs.append(Segment(s, s + connect, CONNECT, "connect"))
        segs.append(Segment(s + connect, s + max(connect, header), FAILED if bad else WAIT,
                            "waiting"))
        segs.append(Segment(s + max(connect, header), max(e, s + header),
                            FAILED if bad else RECEIVE, "receive"))
        status = a.status if a.status is not None else "no answer"
        if a.status is not None and a.header_ms is None and not a.response_bytes:
            status = f"{a.status} (no answer)"
        reuse = " · keepalive" if a.reused else ""
        parts = [fmt_ms(a.duration_ms if a.duration_ms is not None else e - s)]
        if connect:
            parts.append(f"connect {fmt_ms(connect)}")
        if a.header_ms is not None:
            parts.append(f"header {fmt_ms(a.header_ms)}")
        rows.append(Row(f"#{i} {a.addr} → {status}", 2, segs, " · ".join(parts) + reuse))
    return rows


def _nice_step(span: float, target_ticks: int = 6) -> float:
    raw = max(span / target_ticks, 1e-6)
    mag = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * mag:
            return mult * mag
    return 10 * mag


class WaterfallWidget(QWidget):
    """Draws `waterfall_rows` of the current exchange."""

    ROW_H = 26
    TOP = 34
    LEFT_MIN = 200
    INDENT = 16

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.exchange: Exchange | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(140)

    def set_exchange(self, ex: Exchange | None) -> None:
        self.exchange = ex
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        n = 2 + (2 + len(self.exchange.upstream) if self.exchange and self.exchange.upstream
                 else 0)
        return QSize(600, self.TOP + n * self.ROW_H + 64)

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.WindowText)
        grid = QColor(text)
        grid.setAlpha(40)
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        ex = self.exchange
        if ex is None:
            p.setPen(text)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Select a request")
            p.end()
            return
        rows = waterfall_rows(ex)
        fm = QFontMetrics(self.font())
        left = max(self.LEFT_MIN, max(fm.horizontalAdvance(r.label) + r.level * self.INDENT
                                      for r in rows) + 28)
        right_pad = max(fm.horizontalAdvance(r.note) for r in rows) + 24
        width = max(50.0, self.width() - left - right_pad)
        total = max(ex.duration_ms, 1e-3)
        scale = width / total
        bottom = self.TOP + len(rows) * self.ROW_H
        step = _nice_step(total)
        p.setPen(QPen(grid, 1))
        tick: float = 0.0
        while tick <= total * 1.0001:
            x = left + tick * scale
            p.drawLine(int(x), self.TOP - 6, int(x), bottom)
            p.save()
            p.setPen(text)
            p.drawText(QRectF(x - 40, 4, 80, 18), Qt.AlignmentFlag.AlignCenter,
                       fmt_ms(tick) if tick else "0")
            p.restore()
            tick += step
        guide = QColor(text)
        guide.setAlpha(70)
        for i, row in enumerate(rows):
            y = self.TOP + i * self.ROW_H
            indent = 8 + row.level * self.INDENT
            if row.level:  # a tree guide: └ from the parent row
                p.setPen(QPen(guide, 1))
                gx = indent - self.INDENT / 2
                p.drawLine(int(gx), y - 4, int(gx), y + self.ROW_H // 2)
                p.drawLine(int(gx), y + self.ROW_H // 2, int(indent - 3), y + self.ROW_H // 2)
            p.setPen(text)
            f = p.font()
            f.setBold(row.level == 0)
            p.setFont(f)
            p.drawText(QRectF(indent, y, left - indent - 8, self.ROW_H),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, row.label)
            f.setBold(False)
            p.setFont(f)
            end_x = float(left)
            inset = 4 + 2 * row.level  # nested bars are thinner: they sit inside their parent
            for seg in row.segments:
                x0 = left + seg.start * scale
                w = max(2.0, (seg.end - seg.start) * scale)
                p.fillRect(QRectF(x0, y + inset, w, self.ROW_H - 2 * inset), seg.color)
                end_x = max(end_x, x0 + w)
            p.setPen(text)
            p.drawText(QRectF(end_x + 6, y, right_pad + 200, self.ROW_H),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, row.note)
        y = bottom + 10
        x = 8.0
        for color, name in LEGEND:
            p.fillRect(QRectF(x, y + 4, 12, 12), color)
            p.setPen(text)
            p.drawText(QRectF(x + 16, y, 160, 20), Qt.AlignmentFlag.AlignVCenter, name)
            x += 22 + fm.horizontalAdvance(name) + 12
        if ex.upstream:
            dim = QColor(text)
            dim.setAlpha(150)
            p.setPen(dim)
            p.drawText(QRectF(8, y + 22, self.width() - 16, 20), Qt.AlignmentFlag.AlignVCenter,
                       "Attempt durations are nginx's own $upstream_*_time (1 ms steps), placed "
                       "at each attempt's captured start; the bars are clipped to the exchange.")
        p.end()
