"""The Connection tab's timeline: the connection's TCP and TLS handshakes (socket filter),
then the requests on it, on one millisecond axis from the client's SYN.

The TLS bar starts where the TCP one ends: a client sends its ClientHello right after its
ACK of the handshake (the filter keeps both instants' durations, not the gap between them).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ngxscope.model import Exchange

from .tablemodel import DASH, fmt_ms
from .waterfall import CLIENT, CONNECT, FAILED, _nice_step

__all__ = ["HandshakeTimeline", "TimelineRow", "handshake_text", "timeline_rows"]

TLS = QColor("#16a085")
MAX_REQUESTS = 12


@dataclass(slots=True)
class TimelineRow:
    label: str
    start: float
    """ms since the SYN."""
    end: float
    color: QColor
    note: str
    bold: bool = False


def timeline_rows(ex: Exchange, related: list[Exchange]) -> list[TimelineRow]:
    """Rows for `ex`'s connection (`related`: the exchanges on it, oldest first)."""
    if ex.conn_start is None:
        return []
    t0 = ex.conn_start
    rows: list[TimelineRow] = []
    tcp = ex.tcp_connect_ms
    if tcp is not None:
        note = f"{fmt_ms(tcp)} SYN → ACK"
        if ex.retransmits:
            note += f" · {ex.retransmits} retransmission{'s' if ex.retransmits != 1 else ''}"
        rows.append(TimelineRow("TCP connect", 0.0, tcp, CONNECT, note))
    failed = ex.conn_outcome == "tls-failed"
    if ex.tls_handshake_ms is not None or failed:
        start = tcp or 0.0
        dur = ex.tls_handshake_ms if ex.tls_handshake_ms is not None else max(0.0, (ex.end - t0) * 1000 - start)
        if failed:
            note = ex.error or "failed"
        else:
            bits = [fmt_ms(dur), ex.tls_version or "", ex.tls_cipher or ""]
            if ex.sni:
                bits.append(f"SNI {ex.sni}")
            if ex.alpn:
                bits.append(f"ALPN {ex.alpn}")
            bits.append("resumed" if ex.tls_resumed else "full handshake")
            note = " · ".join(b for b in bits if b)
        rows.append(TimelineRow("TLS handshake", start, start + dur, FAILED if failed else TLS, note))
    if ex.conn_outcome is not None and not failed:
        end = (ex.end - t0) * 1000
        rows.append(TimelineRow("no request", end, end, FAILED, ex.error or ex.conn_outcome))
    for other in related[:MAX_REQUESTS]:
        if other.conn_outcome is not None:
            continue
        s, e = (other.start - t0) * 1000, (other.end - t0) * 1000
        rows.append(TimelineRow(f"#{other.conn_seq + 1} {other.method} {other.path}"[:48], s, e, CLIENT,
                                f"{fmt_ms(other.duration_ms)} · {other.status if other.status else DASH}",
                                bold=other is ex))
    if ex.reset_by:
        rows[-1].note += f" · reset by the {ex.reset_by}"
    return rows


class HandshakeTimeline(QWidget):
    """Draws `timeline_rows`."""

    ROW_H = 22
    TOP = 26

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[TimelineRow] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMinimumHeight(60)

    def set_exchange(self, ex: Exchange | None, related: list[Exchange]) -> None:
        self.rows = timeline_rows(ex, related) if ex is not None else []
        self.setMinimumHeight(self.sizeHint().height())
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(600, self.TOP + max(1, len(self.rows)) * self.ROW_H + 8)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.WindowText)
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        if not self.rows:
            dim = QColor(text)
            dim.setAlpha(150)
            p.setPen(dim)
            p.drawText(self.rect().adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter,
                       "Handshake not seen: the connection opened before the capture, or the "
                       "socket filter is off.")
            p.end()
            return
        fm = QFontMetrics(self.font())
        left = max(fm.horizontalAdvance(r.label) for r in self.rows) + 20
        right_pad = min(360, max(fm.horizontalAdvance(r.note) for r in self.rows) + 16)
        width = max(50.0, self.width() - left - right_pad)
        total = max(max(r.end for r in self.rows), 1e-3)
        scale = width / total
        grid = QColor(text)
        grid.setAlpha(40)
        step = _nice_step(total)
        tick = 0.0
        bottom = self.TOP + len(self.rows) * self.ROW_H
        while tick <= total * 1.0001:
            x = left + tick * scale
            p.setPen(QPen(grid, 1))
            p.drawLine(int(x), self.TOP - 4, int(x), bottom)
            p.setPen(text)
            p.drawText(QRectF(x - 40, 2, 80, 18), Qt.AlignmentFlag.AlignCenter, fmt_ms(tick) if tick else "SYN")
            tick += step
        for i, r in enumerate(self.rows):
            y = self.TOP + i * self.ROW_H
            f = p.font()
            f.setBold(r.bold)
            p.setFont(f)
            p.setPen(text)
            p.drawText(QRectF(6, y, left - 10, self.ROW_H), Qt.AlignmentFlag.AlignVCenter, r.label)
            x0 = left + r.start * scale
            w = max(2.0, (r.end - r.start) * scale)
            p.fillRect(QRectF(x0, y + 4, w, self.ROW_H - 8), r.color)
            p.drawText(QRectF(x0 + w + 6, y, self.width() - x0 - w - 8, self.ROW_H),
                       Qt.AlignmentFlag.AlignVCenter, fm.elidedText(r.note, Qt.TextElideMode.ElideRight,
                                                                    int(self.width() - x0 - w - 12)))
        p.end()


def handshake_text(ex: Exchange) -> str:
    """One line for the Connection tab's form."""
    if ex.conn_start is None and ex.tls_version is None:
        return DASH
    bits = []
    if ex.tcp_connect_ms is not None:
        bits.append(f"TCP {fmt_ms(ex.tcp_connect_ms)}")
    if ex.tls_version:
        bits.append(f"{ex.tls_version} {ex.tls_cipher or ''} in {fmt_ms(ex.tls_handshake_ms or 0.0)}"
                    + (" (resumed)" if ex.tls_resumed else ""))
    if ex.sni:
        bits.append(f"SNI {ex.sni}")
    if ex.alpn:
        bits.append(f"ALPN {ex.alpn}")
    if ex.retransmits:
        bits.append(f"{ex.retransmits} retransmission{'s' if ex.retransmits != 1 else ''}")
    if ex.reset_by:
        bits.append(f"reset by the {ex.reset_by}")
    return " · ".join(bits) or DASH
