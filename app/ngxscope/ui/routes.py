"""The Routes panel: request paths collapsed into route templates (`store.routes`), or their
locations, per row over the last minute: req/s with a sparkline, error rate, p50/p95/p99,
bytes and the share that went upstream. Clicking a row asks for the filter matching its
requests (`route_clicked`). Templates come from the heuristic and the user's routes file,
which the panel's context menu adds to and edits (applied at once). With a baseline pinned
(`set_verdicts`), rows that got significantly worse are tinted red."""

from __future__ import annotations

import logging

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.store.diff import DiffRow
from ngxscope.store.filterexpr import quote_value
from ngxscope.store.memory import ExchangeStore
from ngxscope.store.routes import (
    RouteError,
    RouteTemplater,
    load_route_file,
    routes_file,
    save_route_text,
)
from ngxscope.store.routestats import RouteRow, route_regex, route_rows

from .paneltable import REFRESH_S, TablePanel, recent, set_cell
from .tablemodel import STATUS_COLORS, fmt_bytes, fmt_ms
from .upstreams import SPARK_ROLE, WORSE_BG, SparklineDelegate

__all__ = ["REFRESH_S", "RoutesPanel", "recent", "route_cells", "user_templater", "verdict_tip"]

log = logging.getLogger(__name__)

WINDOW_S = 60
HEADERS = ["Route", f"Last {WINDOW_S} s", "req/s", "Requests", "Errors", "p50", "p95", "p99", "Bytes",
           "Upstream"]
SPARK_COL = 1
COL_WIDTHS = (260, 110, 60, 70, 80, 62, 62, 62, 72, 68)
Verdicts = dict[tuple[str, str], DiffRow]


def route_cells(r: RouteRow) -> list[str]:
    """The text of every column but the sparkline."""
    return [r.template, "", f"{r.rate:,.1f}", f"{r.requests:,}",
            f"{r.errors:,} ({r.error_rate:.0%})" if r.errors else "0",
            fmt_ms(r.p50), fmt_ms(r.p95), fmt_ms(r.p99), fmt_bytes(r.response_bytes),
            f"{r.upstream_share:.0%}"]


def verdict_tip(v: DiffRow, baseline: str) -> str:
    """What got worse than the baseline, in words (a row's tooltip)."""
    parts = []
    if v.significant and (v.delta("p50") or 0) > 0:
        parts.append(f"p50 {fmt_ms(v.a.p50)} → {fmt_ms(v.b.p50)}, p95 {fmt_ms(v.a.p95)} → {fmt_ms(v.b.p95)} "
                     f"(Mann-Whitney p = {v.p_value:.1g})")
    if v.error_p < 1 and v.b.error_rate > v.a.error_rate:
        parts.append(f"errors {v.a.error_rate:.1%} → {v.b.error_rate:.1%} (p = {v.error_p:.1g})")
    return f"worse than the baseline ({baseline}): " + "; ".join(parts)


def user_templater() -> RouteTemplater:
    """The heuristic with the user's routes file first (a bad file is logged and ignored)."""
    try:
        return RouteTemplater(load_route_file())
    except RouteError as exc:
        log.warning("routes file ignored: %s", exc)
        return RouteTemplater()


class RoutesEditor(QDialog):
    """The routes file as text: one template per line, `#` comments; checked before saving."""

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Route templates")
        self.resize(560, 360)
        self.edit = QPlainTextEdit(text)
        note = QLabel(f"One template per line, {{name}} for one path segment, e.g. /api/v1/users/{{id}}; "
                      f"listed first wins. Saved to {routes_file()} and applied at once.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(note)
        lay.addWidget(self.edit)
        lay.addWidget(buttons)


class RoutesPanel(TablePanel):
    """Route templates (or locations) of the last minute; clicking one asks for its filter."""

    route_clicked = Signal(str)

    def __init__(self, templater: RouteTemplater | None = None, parent: QWidget | None = None) -> None:
        super().__init__(HEADERS, COL_WIDTHS, parent)
        self.templater = templater or user_templater()
        self.table.setItemDelegateForColumn(SPARK_COL, SparklineDelegate(self.table))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.rows: list[RouteRow] = []
        self.verdicts: Verdicts = {}
        self.baseline_name = ""
        self.group = QComboBox()
        self.group.addItems(["Routes", "Locations"])
        self.group.currentIndexChanged.connect(self._group_changed)
        self.baseline_label = QLabel("")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Group by"))
        bar.addWidget(self.group)
        bar.addStretch(1)
        bar.addWidget(self.baseline_label)
        lay = self.layout()
        assert isinstance(lay, QVBoxLayout)
        lay.insertLayout(0, bar)

    @property
    def by_location(self) -> bool:
        return self.group.currentIndex() == 1

    @property
    def dimension(self) -> str:
        """The `store.diff` dimension of the rows shown."""
        return "location" if self.by_location else "route"

    def _group_changed(self, _i: int) -> None:
        self.table.setHorizontalHeaderItem(0, QTableWidgetItem("Location" if self.by_location else "Route"))
        self._refreshed = -REFRESH_S

    def set_verdicts(self, verdicts: Verdicts, baseline_name: str) -> None:
        """The baseline's judgement of the recent rows (empty: no baseline pinned)."""
        self.verdicts = verdicts
        self.baseline_name = baseline_name
        if not verdicts:  # unpinned: untint at once
            for i in range(self.table.rowCount()):
                for col in range(self.table.columnCount()):
                    item = self.table.item(i, col)
                    if item is not None:
                        item.setBackground(Qt.GlobalColor.transparent)
        worse = sum(1 for (dim, _k), v in verdicts.items() if dim == self.dimension and v.worse)
        self.baseline_label.setText(f"Baseline: {baseline_name} — {worse} worse" if baseline_name else "")

    def _clicked(self, item: QTableWidgetItem) -> None:
        row = item.row()
        if not 0 <= row < len(self.rows):
            return
        key = self.rows[row].template
        if self.by_location:
            block, _, loc = key.partition(" \u203a ")
            terms = [f"block={quote_value(block)}"] if block != "?" else []
            self.route_clicked.emit(" ".join([*terms, f"location={quote_value(loc)}"]))
            return
        rx = route_regex(key)
        if rx is not None:
            self.route_clicked.emit(f"path~{quote_value(rx)}")

    # -- route templates from the window ------------------------------------------------------
    def _context_menu(self, pos: QPoint) -> None:
        item = self.table.itemAt(pos)
        menu = QMenu(self)
        suggest = self.rows[item.row()].template if item is not None and not self.by_location \
            and 0 <= item.row() < len(self.rows) else "/"
        menu.addAction("Add a route template…", lambda: self.add_route(suggest))
        menu.addAction("Edit route templates…", self.edit_routes)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _route_text(self) -> str:
        try:
            return routes_file().read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            QMessageBox.warning(self, "Route templates", f"Cannot read {routes_file()}: {exc}")
            return ""

    def apply_route_text(self, text: str) -> bool:
        """Save the routes file's new text and use its templates at once (False: refused,
        the user was told why)."""
        try:
            templates = save_route_text(text)
        except RouteError as exc:
            QMessageBox.warning(self, "Route templates", str(exc))
            return False
        self.templater.set_overrides(templates)
        self._refreshed = -REFRESH_S
        return True

    def add_route(self, suggest: str = "/") -> None:
        """Ask for one template and append it to the routes file."""
        template, ok = QInputDialog.getText(self, "Add a route template",
                                            "Template ({name} stands for one path segment):", text=suggest)
        if ok and template.strip():
            text = self._route_text()
            self.apply_route_text(text + ("" if not text or text.endswith("\n") else "\n") + template.strip() + "\n")

    def edit_routes(self) -> None:
        dlg = RoutesEditor(self._route_text(), self)
        while dlg.exec():
            if self.apply_route_text(dlg.edit.toPlainText()):
                return

    # -- refresh ------------------------------------------------------------------------------
    def refresh(self, store: ExchangeStore, end: float) -> None:
        """Recompute from the exchanges of the last minute up to `end` (unix time)."""
        if not self._due():
            return
        self.rows = route_rows(recent(store, end - WINDOW_S), self.templater, end, WINDOW_S,
                               by_location=self.by_location)
        t = self.table
        t.setRowCount(len(self.rows))
        red = STATUS_COLORS[4]
        for i, r in enumerate(self.rows):
            cells = [set_cell(t, i, col, text, right=col > 0)
                     for col, text in enumerate(route_cells(r))]
            cells[4].setForeground(red if r.errors else t.palette().text())
            cells[SPARK_COL].setData(SPARK_ROLE, [float(v) for v in r.spark])
            v = self.verdicts.get((self.dimension, r.template))
            worse = v is not None and v.worse
            for cell in cells:
                cell.setBackground(WORSE_BG if worse else Qt.GlobalColor.transparent)
            tip = f"{r.template}\nclick: show its requests"
            cells[0].setToolTip(tip + ("\n" + verdict_tip(v, self.baseline_name) if worse and v else ""))
