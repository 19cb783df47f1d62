"""The Timing tab: a waterfall of one exchange drawn with QPainter.

Rows: request read → each upstream attempt (connect / wait for header / read body) →
response written, on a shared millisecond axis, each bar labelled with its duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ngxscope.model import Exchange

from .tablemodel import fmt_ms

__all__ = ["Segment", "WaterfallWidget", "waterfall_rows"]

CONNECT = QColor("#e0a526")
WAIT = QColor("#7e8fa6")
RECEIVE = QColor("#2f7fc1")
CLIENT = QColor("#2e9d4f")
FAILED = QColor("#d64545")


@dataclass(slots=True)
class Segment:
    """One coloured piece of a row, in ms from the exchange start."""

    start: float
    end: float
    color: QColor
    name: str


def waterfall_rows(ex: Exchange) -> list[tuple[str, list[Segment], str]]:
    """(label, segments, annotation) per row, times in ms since `ex.start`."""
    total = ex.duration_ms
    rows: list[tuple[str, list[Segment], str]] = []
    first_up = min((a.start for a in ex.upstream if a.start is not None), default=None)
    read_end = (first_up - ex.start) * 1000.0 if first_up is not None else min(total, 0.05 * total)
    read_end = max(0.0, min(read_end, total))
    rows.append(("request read", [Segment(0.0, read_end, CLIENT, "read")], fmt_ms(read_end)))
    cursor = read_end
    for i, a in enumerate(ex.upstream, 1):
        s = (a.start - ex.start) * 1000.0 if a.start is not None else cursor
        connect = a.connect_ms or 0.0
        header = a.header_ms if a.header_ms is not None else connect
        dur = a.duration_ms if a.duration_ms is not None else header
        bad = a.status is None or a.status >= 500
        segs = []
        if connect > 0:
            segs.append(Segment(s, s + connect, CONNECT, "connect"))
        segs.append(Segment(s + connect, s + max(connect, header), FAILED if bad else WAIT,
                            "waiting"))
        segs.append(Segment(s + max(connect, header), s + max(dur, header), FAILED if bad
                            else RECEIVE, "receive"))
        status = a.status if a.status is not None else "no answer"
        reuse = " reused" if a.reused else ""
        parts = [f"{fmt_ms(dur)}"]
        if connect:
            parts.append(f"connect {fmt_ms(connect)}")
        parts.append(f"header {fmt_ms(header)}")
        rows.append((f"#{i} {a.addr} → {status}{reuse}", segs, " · ".join(parts)))
        cursor = max(cursor, s + dur)
    cursor = min(cursor, total)
    rows.append(("response written", [Segment(cursor, total, CLIENT, "write")],
                 fmt_ms(total - cursor)))
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
    LEFT_MIN = 180

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
        n = 2 + (len(self.exchange.upstream) if self.exchange else 0)
        return QSize(600, self.TOP + n * self.ROW_H + 40)

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
        left = max(self.LEFT_MIN, max(fm.horizontalAdvance(r[0]) for r in rows) + 24)
        right_pad = max(fm.horizontalAdvance(r[2]) for r in rows) + 24
        width = max(50.0, self.width() - left - right_pad)
        total = max(ex.duration_ms, 1e-3)
        scale = width / total
        # axis
        step = _nice_step(total)
        p.setPen(QPen(grid, 1))
        tick: float = 0.0
        while tick <= total * 1.0001:
            x = left + tick * scale
            p.drawLine(int(x), self.TOP - 6, int(x), self.TOP + len(rows) * self.ROW_H)
            p.save()
            p.setPen(text)
            label = fmt_ms(tick) if tick else "0"
            p.drawText(QRectF(x - 40, 4, 80, 18), Qt.AlignmentFlag.AlignCenter, label)
            p.restore()
            tick += step
        for i, (label, segs, note) in enumerate(rows):
            y = self.TOP + i * self.ROW_H
            p.setPen(text)
            p.drawText(QRectF(8, y, left - 16, self.ROW_H),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, label)
            end_x = float(left)
            for seg in segs:
                x0 = left + seg.start * scale
                w = max(2.0, (seg.end - seg.start) * scale)
                p.fillRect(QRectF(x0, y + 6, w, self.ROW_H - 12), seg.color)
                end_x = max(end_x, x0 + w)
            p.setPen(text)
            p.drawText(QRectF(end_x + 6, y, right_pad + 200, self.ROW_H),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, note)
        # legend
        y = self.TOP + len(rows) * self.ROW_H + 10
        x = 8.0
        for color, name in ((CLIENT, "client I/O"), (CONNECT, "connect"), (WAIT, "waiting"),
                            (RECEIVE, "receiving"), (FAILED, "failed attempt")):
            p.fillRect(QRectF(x, y + 4, 12, 12), color)
            p.setPen(text)
            p.drawText(QRectF(x + 16, y, 120, 20), Qt.AlignmentFlag.AlignVCenter, name)
            x += 22 + fm.horizontalAdvance(name) + 12
        p.drawText(QRectF(x + 12, y, 400, 20), Qt.AlignmentFlag.AlignVCenter,
                   f"total {fmt_ms(ex.duration_ms)}")
        p.end()
