"""File ▸ Compare with…: the window's exchanges against a saved session taken as the
baseline (`store.diff`): per server block, location, route and upstream peer, rate, error
rate and latency percentiles side by side, what got significantly worse in red, better in
green, most impact first."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import Exchange
from ngxscope.store.diff import ALPHA, DIMENSIONS, DiffRow, diff_exchanges
from ngxscope.store.routes import RouteTemplater

__all__ = ["CompareDialog", "row_cells"]

HEADERS = ["Part", "req/s base", "req/s now", "err % base", "err % now", "p50 base", "p50 now", "Δp50",
           "p95 base", "p95 now", "Δp95", "p99 base", "p99 now", "p", "Impact"]
WORSE, BETTER = QColor("#d64545"), QColor("#2e9d4f")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f} ms"


def row_cells(r: DiffRow) -> list[str]:
    """The text of one row."""
    impact = f"only {'baseline' if r.b.requests == 0 else 'now'}" if r.impact < 0 else f"{r.impact:.1f}"
    return [r.key, f"{r.a.rate:.1f}", f"{r.b.rate:.1f}", f"{100 * r.a.error_rate:.1f}",
            f"{100 * r.b.error_rate:.1f}", _ms(r.a.p50), _ms(r.b.p50), _signed(r.delta("p50")),
            _ms(r.a.p95), _ms(r.b.p95), _signed(r.delta("p95")), _ms(r.a.p99), _ms(r.b.p99),
            f"{r.p_value:.1g}" if r.p_value < 1 else "1", impact]


class CompareDialog(QDialog):
    """The comparison of `now` with `baseline`, one branch per dimension."""

    def __init__(self, baseline: Iterable[Exchange], now: Iterable[Exchange], baseline_name: str,
                 templater: RouteTemplater | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Compare with {baseline_name}")
        self.resize(1300, 640)
        routes = templater.overrides if templater is not None else []
        self.rows = diff_exchanges(baseline, now, lambda: RouteTemplater([t for t, _rx in routes]))
        tree = self.tree = QTreeWidget()
        tree.setHeaderLabels(HEADERS)
        tree.setAlternatingRowColors(True)
        tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for dim in DIMENSIONS:
            mine = [r for r in self.rows if r.dimension == dim]
            if not mine:
                continue
            top = QTreeWidgetItem([f"{dim} ({len(mine)})"])
            tree.addTopLevelItem(top)
            for r in mine:
                item = QTreeWidgetItem(row_cells(r))
                if r.worse or r.better:
                    for col in range(len(HEADERS)):
                        item.setForeground(col, WORSE if r.worse else BETTER)
                top.addChild(item)
            top.setExpanded(True)
        note = QLabel(f"Baseline: {baseline_name}. Latency changes tested with Mann-Whitney U, error rates "
                      f"with a two-proportion test (p < {ALPHA}); red: significantly slower or more errors now, "
                      "green: significantly faster.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(note)
        lay.addWidget(tree)
        lay.addWidget(buttons)
