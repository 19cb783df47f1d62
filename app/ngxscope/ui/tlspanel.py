"""The TLS / Connections panel: what the socket filter saw beneath the requests.

A summary line (connections, TLS share, resumption rate, handshake and connect percentiles,
resets, connections that never became a request) over six small tables: versions, ciphers,
SNI, ALPN, failed handshakes by reason, clients with failed handshakes. Figures come from
`store.conntally.ConnTally` (`Aggregator.conns`), so the table's filter applies to them.
"""

from __future__ import annotations

import math
from collections import Counter

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ngxscope.store.aggregate import Aggregator
from ngxscope.store.conntally import ConnTally

from .paneltable import panel_table, set_cell
from .tablemodel import DASH, fmt_ms

__all__ = ["TlsPanel", "summary_text"]

TOP = 6
"""Rows per table (the most frequent values)."""

_TABLES = (("versions", "Versions"), ("ciphers", "Ciphers"), ("snis", "SNI"), ("alpns", "ALPN"),
           ("failures", "Failed handshakes by reason"), ("failed_clients", "Clients with failures"))


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole else DASH


def _ms(v: float) -> str:
    return DASH if math.isnan(v) else fmt_ms(v)


def summary_text(t: ConnTally) -> str:
    """The panel's summary line."""
    if not t.connections:
        return ("No connection seen by the socket filter yet (it needs root, and sees "
                "connections opened after the capture started).")
    hs = t.handshake.percentiles((0.5, 0.95, 0.99))
    ct = t.connect.percentiles((0.5, 0.95))
    never = sum(t.outcomes.values())
    rate = t.resumption_rate
    counts = [
        f"<b>{t.connections:,}</b> connections",
        f"TLS {_pct(t.tls, t.connections)}",
        f"resumed <b>{DASH if rate is None else f'{100 * rate:.0f} %'}</b>",
        f"resets {t.resets:,}",
        f"without a request <b>{never:,}</b>"
        + (f" ({', '.join(f'{k} {v:,}' for k, v in sorted(t.outcomes.items()))})" if never else ""),
    ]
    times = [
        f"TLS handshake p50 <b>{_ms(hs[0])}</b> · p95 {_ms(hs[1])} · p99 {_ms(hs[2])}",
        f"TCP connect p50 {_ms(ct[0])} · p95 {_ms(ct[1])}",
    ]
    sep = " &nbsp;│&nbsp; "
    return sep.join(counts) + "<br>" + sep.join(times)


def _table() -> QTableWidget:
    t = panel_table(["", "Conns", "%"], alternate=False, row_height=20)
    t.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # no current-cell frame: a click filters
    t.horizontalHeader().setStretchLastSection(False)
    t.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    t.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    t.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
    t.setMinimumHeight(60)
    return t


def _fill(table: QTableWidget, counts: Counter[str], whole: int) -> None:
    rows = counts.most_common(TOP)
    table.setRowCount(len(rows))
    for i, (name, n) in enumerate(rows):
        for col, text in enumerate((name, f"{n:,}", _pct(n, whole))):
            item = set_cell(table, i, col, text, right=col > 0)
            if col == 0 and item.toolTip() != text:
                item.setToolTip(text)


class TlsPanel(QWidget):
    """Versions, ciphers, SNI, ALPN, resumption, handshake times, failures."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.tables: dict[str, QTableWidget] = {}
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        for i, (key, title) in enumerate(_TABLES):
            box = QGroupBox(title)
            lay = QVBoxLayout(box)
            lay.setContentsMargins(2, 2, 2, 2)
            self.tables[key] = table = _table()
            lay.addWidget(table)
            grid.addWidget(box, i // 3, i % 3)
        for col in range(3):
            grid.setColumnStretch(col, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.summary)
        lay.addLayout(grid, 1)
        self.refresh_tally(ConnTally())

    def refresh(self, agg: Aggregator) -> None:
        self.refresh_tally(agg.conns)

    def refresh_tally(self, t: ConnTally) -> None:
        self.summary.setText(summary_text(t))
        failed = sum(t.failures.values())
        for key, _title in _TABLES:
            counts: Counter[str] = getattr(t, key)
            whole = failed if key in ("failures", "failed_clients") else t.tls
            _fill(self.tables[key], counts, whole)
