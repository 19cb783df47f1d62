"""The live request table: a model over `ExchangeStore` and a filtering/sorting proxy.

Rows are appended in batches: one beginInsertRows per batch, and when the store must
drop its oldest exchanges, one beginRemoveRows for the dropped block first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QFont

from ngxscope.model import Exchange, nginx_list
from ngxscope.store.filterexpr import quote_value
from ngxscope.store.memory import ExchangeStore

__all__ = [
    "COLUMNS",
    "DASH",
    "STATUS_COLORS",
    "ExchangeFilterProxy",
    "ExchangeTableModel",
    "fmt_bytes",
    "fmt_ms",
    "node_of",
]

DASH = "\u2013"
"""The en dash shown for an absent value."""

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
EXCHANGE_ROLE = Qt.ItemDataRole.UserRole + 2
FILTER_ROLE = Qt.ItemDataRole.UserRole + 3

STATUS_COLORS = {
    0: QColor("#8a8f98"),  # 1xx
    1: QColor("#2e9d4f"),  # 2xx
    2: QColor("#2f7fc1"),  # 3xx
    3: QColor("#d9822b"),  # 4xx
    4: QColor("#d64545"),  # 5xx
    5: QColor("#8a8f98"),  # none
}
"""Status class index (see aggregate.status_class) → colour, readable on dark and light."""


def fmt_ms(ms: float | None) -> str:
    """A duration for a table cell: µs below 1 ms, ms below 10 s, else s."""
    if ms is None or ms != ms:
        return DASH
    if ms < 1.0:
        return f"{ms * 1000:.0f} µs"
    if ms < 100.0:
        return f"{ms:.1f} ms"
    if ms < 10_000.0:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def fmt_bytes(n: int | float) -> str:
    """Bytes with a binary unit."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024.0
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} GiB"


def _status_cls(status: int | None) -> int:
    return 5 if status is None or not 100 <= status <= 599 else status // 100 - 1


def _upstream(e: Exchange) -> str:
    """The peers tried, as nginx's $upstream_addr prints them ("a, b" for a retry, "a : b"
    across an internal redirect)."""
    if not e.upstream:
        return ""
    if len(e.upstream) == 1:
        return e.upstream[0].addr
    return nginx_list(e.upstream, [a.addr for a in e.upstream])


def upstream_tooltip(e: Exchange) -> str:
    """Every attempt: peer, group, status, times, bytes (the Upstream column's tooltip)."""
    lines = []
    for i, a in enumerate(e.upstream, 1):
        group = getattr(a, "group", None) or getattr(e, "upstream_group", None)
        status = str(a.status) if a.status is not None else "no answer"
        parts = [f"#{i} {a.addr}" + (f" ({group})" if group else "") + f" → {status}"]
        if a.duration_ms is not None:
            parts.append(f"{fmt_ms(a.duration_ms)}")
        if a.header_ms is not None:
            parts.append(f"header {fmt_ms(a.header_ms)}")
        if a.connect_ms:
            parts.append(f"connect {fmt_ms(a.connect_ms)}")
        parts.append(f"{fmt_bytes(a.request_bytes)} sent, {fmt_bytes(a.response_bytes)} received")
        if a.reused:
            parts.append("keepalive")
        lines.append(" · ".join(parts))
    if len(e.upstream) > 1:
        lines.append(f"{len(e.upstream) - 1} retr{'y' if len(e.upstream) == 2 else 'ies'}: "
                     "nginx moved on to the next peer (proxy_next_upstream)")
    return "\n".join(lines)


def _time(e: Exchange) -> str:
    lt = time.localtime(e.start)
    return f"{lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d}.{int((e.start % 1) * 1000):03d}"


# (key, title, display, sort key, filter expression builder or None, right-aligned)
Column = tuple[str, str, Callable[[Exchange], str], Callable[[Exchange], Any],
               Callable[[Exchange], str] | None, bool]

def node_of(e: Exchange) -> str:
    """The host a remote capture came from ("" for this machine): multi-host sources prefix
    connection ids with "user@host|"."""
    head, sep, _ = e.conn_id.partition("|")
    return head if sep else ""


def location_label(e: Exchange) -> str:
    """`server_block > location`, as much of it as is known."""
    if e.location is None:
        return e.server_block or ""
    return f"{e.server_block} \u203a {e.location}" if e.server_block else e.location


COLUMNS: list[Column] = [
    ("time", "Time", _time, lambda e: e.start, None, False),
    ("node", "Node", node_of, node_of, None, False),
    ("worker", "Worker", lambda e: str(e.pid), lambda e: e.pid,
     lambda e: f"worker={e.pid}", True),
    ("client", "Client", lambda e: e.client, lambda e: e.client,
     lambda e: f"client={quote_value(e.client)}", False),
    ("method", "Method", lambda e: e.method, lambda e: e.method,
     lambda e: f"method={quote_value(e.method)}", False),
    ("host", "Host", lambda e: e.host, lambda e: e.host,
     lambda e: f"host={quote_value(e.host)}", False),
    ("location", "Location", lambda e: location_label(e), lambda e: location_label(e),
     lambda e: f"location={quote_value(e.location)}" if e.location else "location=\"\"", False),
    ("path", "Path", lambda e: e.target, lambda e: e.target,
     lambda e: f"path={quote_value(e.path)}", False),
    ("status", "Status", lambda e: str(e.status) if e.status is not None else (e.error and "ERR")
     or DASH, lambda e: e.status if e.status is not None else -1,
     lambda e: f"status={e.status}" if e.status is not None else "status=none", True),
    ("duration", "Duration", lambda e: fmt_ms(e.duration_ms), lambda e: e.end - e.start,
     lambda e: f"duration>={max(0.0, e.duration_ms):.0f}ms", True),
    ("req_size", "Req size", lambda e: fmt_bytes(e.request_bytes), lambda e: e.request_bytes,
     lambda e: f"reqsize>={e.request_bytes}", True),
    ("resp_size", "Resp size", lambda e: fmt_bytes(e.response_bytes), lambda e: e.response_bytes,
     lambda e: f"size>={e.response_bytes}", True),
    ("tls", "TLS", lambda e: "✓" if e.tls else "", lambda e: e.tls,
     lambda e: "tls" if e.tls else "not tls", False),
    ("upstream", "Upstream", _upstream, _upstream,
     lambda e: f"upstream={quote_value(e.upstream[-1].addr)}" if e.upstream else "not upstream",
     False),
]
COLUMN_KEYS = [c[0] for c in COLUMNS]
STATUS_COL = COLUMN_KEYS.index("status")
DEFAULT_WIDTHS = {"time": 90, "worker": 52, "client": 122, "method": 58, "host": 100,
                  "location": 190, "path": 185, "status": 50, "duration": 70, "req_size": 68, "resp_size": 72,
                  "tls": 34, "upstream": 150}
"""Upstream is last: the widest and most variable column ("a, b" for retries, fitted as
they arrive), so it never pushes the compact columns out of view."""

_DISPLAY = Qt.ItemDataRole.DisplayRole
_FOREGROUND = Qt.ItemDataRole.ForegroundRole
_ALIGN = Qt.ItemDataRole.TextAlignmentRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_FONT = Qt.ItemDataRole.FontRole
_BACKGROUND = Qt.ItemDataRole.BackgroundRole
MARK_COLORS = {"red": QColor(229, 57, 53, 70), "orange": QColor(251, 140, 0, 70),
               "yellow": QColor(253, 216, 53, 90), "green": QColor(67, 160, 71, 70),
               "blue": QColor(30, 136, 229, 70), "purple": QColor(142, 36, 170, 70)}
"""Row tints of the marks (`Exchange.mark`), light enough for both themes."""
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_LEFT = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
_CENTER = int(Qt.AlignmentFlag.AlignCenter)


class ExchangeTableModel(QAbstractTableModel):
    """A read-only table over an `ExchangeStore`; grows by batches; sorts itself.

    Sorting is done here, not by the proxy: a Python `sorted` with a key over 200k rows
    takes ~0.3 s, while QSortFilterProxyModel calling a Python `lessThan` 3.4M times
    takes ~20 s. While sorted, the row order is the permutation `order` (store indexes)
    and the window holds live batches back (see `MainWindow.ingest`).
    """

    def __init__(self, store: ExchangeStore, parent: Any = None) -> None:
        super().__init__(parent)
        self.store = store
        self.order: list[int] | None = None
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self._bold = QFont()
        self._bold.setBold(True)

    @property
    def sorted(self) -> bool:
        return self.order is not None

    def exchange(self, row: int) -> Exchange:
        """The exchange shown at `row` (through the sort permutation)."""
        order = self.order
        return self.store[row if order is None else order[row]]

    # -- Qt model API ----------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.store)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = _DISPLAY) -> Any:
        if role == _DISPLAY:
            return COLUMNS[index.column()][2](self.exchange(index.row()))
        if role == SORT_ROLE:
            return COLUMNS[index.column()][3](self.exchange(index.row()))
        if role == _ALIGN:
            col = COLUMNS[index.column()]
            return _CENTER if col[0] == "tls" else _RIGHT if col[5] else _LEFT
        if role == _FOREGROUND:
            if index.column() != STATUS_COL:
                return None
            return STATUS_COLORS[_status_cls(self.exchange(index.row()).status)]
        if role == _FONT:
            return self._bold if index.column() == STATUS_COL else None
        if role == _BACKGROUND:
            mark = self.exchange(index.row()).mark
            return MARK_COLORS.get(mark) if mark else None
        if role == _TOOLTIP:
            col = COLUMNS[index.column()]
            ex = self.exchange(index.row())
            if ex.note:
                return f"Note: {ex.note}"
            if col[0] == "status" and ex.error:
                return ex.error
            if col[0] == "upstream":
                return upstream_tooltip(ex) if ex.upstream else None
            if col[0] in ("path", "host", "client", "location"):
                return col[2](ex)
            return None
        if role == EXCHANGE_ROLE:
            return self.exchange(index.row())
        if role == FILTER_ROLE:
            build = COLUMNS[index.column()][4]
            return build(self.exchange(index.row())) if build else None
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == _DISPLAY:
                return COLUMNS[section][1]
            if role == _ALIGN:
                return _RIGHT if COLUMNS[section][5] else _LEFT
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by `column` (-1: arrival order) with one layout change."""
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        old_keys = [self.order[i.row()] if self.order is not None else i.row() for i in old]
        self.sort_column, self.sort_order = column, order
        if column < 0 or column >= len(COLUMNS):
            self.order = None
        else:
            key = COLUMNS[column][3]
            items = self.store.snapshot()
            desc = order == Qt.SortOrder.DescendingOrder
            self.order = sorted(range(len(items)), key=lambda i: (key(items[i]), i),
                                reverse=desc)
        if old:
            if self.order is None:
                rows = old_keys
            else:
                where = {store_i: row for row, store_i in enumerate(self.order)}
                rows = [where.get(k, 0) for k in old_keys]
            self.changePersistentIndexList(
                old, [self.index(r, i.column()) for r, i in zip(rows, old, strict=True)]
            )
        self.layoutChanged.emit()

    # -- batches ---------------------------------------------------------------------

    def append_batch(self, batch: list[Exchange]) -> None:
        """Append a batch: one remove signal for the dropped block, one insert signal.

        Only in arrival order (callers hold batches back while sorted).
        """
        if not batch:
            return
        if self.order is not None:
            raise RuntimeError("append_batch while sorted: hold the batch or unsort first")
        store = self.store
        if len(batch) >= store.capacity:
            self.beginResetModel()
            store.clear()
            store.append_batch(batch[-store.capacity :])
            self.endResetModel()
            return
        drop = store.would_drop(len(batch))
        if drop:
            self.beginRemoveRows(QModelIndex(), 0, drop - 1)
            store.drop_oldest(drop)
            self.endRemoveRows()
        first = len(store)
        self.beginInsertRows(QModelIndex(), first, first + len(batch) - 1)
        store.append_batch(batch)
        self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        self.store.clear()
        self.order = None
        self.endResetModel()

    def replace(self, exchanges: list[Exchange]) -> None:
        """Load a whole set of exchanges at once (opening a session)."""
        self.beginResetModel()
        self.store.clear()
        self.store.append_batch(exchanges[-self.store.capacity :])
        if self.order is not None:
            self.order = None
            self.endResetModel()
            self.sort(self.sort_column, self.sort_order)
            return
        self.endResetModel()


class ExchangeFilterProxy(QSortFilterProxyModel):
    """Keeps the rows the compiled filter accepts; sorting is delegated to the source."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.predicate: Callable[[Exchange], bool] | None = None
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    def _source(self) -> ExchangeTableModel:
        model = self.sourceModel()
        assert isinstance(model, ExchangeTableModel)
        return model

    def set_predicate(self, predicate: Callable[[Exchange], bool] | None) -> None:
        self.beginFilterChange()
        self.predicate = predicate
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """The view's header click: the source model sorts (fast); this proxy stays put."""
        self._source().sort(column, order)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        pred = self.predicate
        if pred is None:
            return True
        try:
            return bool(pred(self._source().exchange(source_row)))
        except Exception:
            return False

    def exchange_at(self, index: QModelIndex) -> Exchange | None:
        """The exchange shown at a proxy index."""
        if not index.isValid():
            return None
        src = self.mapToSource(index)
        model = self._source()
        if not 0 <= src.row() < len(model.store):
            return None
        return model.exchange(src.row())
