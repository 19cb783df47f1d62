"""Attach…: pick a running nginx (masters with their workers as children).

Data comes from `ngxscope.capture.procs.find_instances(include_all)`, imported lazily and
read defensively (getattr with defaults), or from an injected `lister` (tests).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.capture.procs import find_instances

__all__ = ["AttachDialog", "Lister", "default_lister", "instance_row"]

Lister = Callable[[bool], Sequence[Any]]
COLUMNS = ["Process", "Binary", "Version", "TLS library", "Listening", "Capture", "Why"]
_CAPTURE, _WHY = 5, 6
_WIDTHS = (205, 215, 130, 165, 130, 215)  # the dialog's column widths (the last one stretches)
_WRAPPED = (1, 4, _WHY)  # a binary's path, listening addresses and the reason wrap


def default_lister(include_all: bool) -> Sequence[Any]:
    """`ngxscope.capture.procs.find_instances`."""
    return list(find_instances(include_all=include_all))


def _get(obj: Any, name: str, default: Any = "") -> Any:
    value = getattr(obj, name, default) if obj is not None else default
    return default if value is None else value


def instance_row(inst: Any) -> list[str]:
    """The master row's cells for an NginxInstance (tolerant of missing attributes)."""
    master = _get(inst, "master", None)
    binary = _get(inst, "binary", None)
    pid = _get(master, "pid", "?")
    label = _get(inst, "label", "") or f"nginx master {pid}"
    if _get(master, "role", "") == "master":  # flavor and version have their own column
        n = sum(1 for w in _get(inst, "workers", []) or [] if _get(w, "role", "worker") == "worker")
        label = f"master, {n} worker{'s' if n != 1 else ''}"
    exe = _get(master, "exe", "") or _get(binary, "path", "")
    flavor = _get(binary, "flavor", "")
    version = _get(binary, "version", "")
    tls_lib = _get(binary, "tls_library", "") or ("yes" if _get(binary, "tls", False) else "")
    listen = ", ".join(str(x) for x in _get(inst, "listen", []) or [])
    method = _get(inst, "capture_method", "") or _get(binary, "method", "")
    reason = _get(inst, "capture_reason", "") or _get(binary, "method_reason", "")
    capture = method if method else "cannot capture"
    return [f"{pid}  {label}", exe, " ".join(x for x in (flavor, version) if x), tls_lib,
            listen, capture, reason or ("" if method else "unknown reason")]


class _Wrap(QStyledItemDelegate):
    """Text wrapped at word boundaries to the column's width; the row grows to fit."""

    def __init__(self, tree: QTreeWidget) -> None:
        super().__init__(tree)
        self.tree = tree

    def initStyleOption(self, option: QStyleOptionViewItem,
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        option.features |= QStyleOptionViewItem.ViewItemFeature.WrapText

    def sizeHint(self, option: QStyleOptionViewItem,
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        base = super().sizeHint(option, index)
        width = max(60, self.tree.header().sectionSize(index.column()) - 10)
        text = str(index.data() or "")
        box = option.fontMetrics.boundingRect(
            QRect(0, 0, width, 100_000), int(Qt.TextFlag.TextWordWrap), text)
        return QSize(base.width(), max(base.height(), box.height() + 6))


class AttachDialog(QDialog):
    """Tree of nginx instances; Enter / double-click / Attach returns `selected_pid`."""

    def __init__(self, parent: QWidget | None = None, *, lister: Lister | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Attach to nginx")
        self.resize(1440, 480)
        self.lister = lister or default_lister
        self.selected_pid: int | None = None
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by pid, path, version, address…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        self.show_all = QCheckBox("Show all processes")
        self.show_all.setToolTip("Also list processes that do not look like nginx")
        self.show_all.toggled.connect(self.refresh)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.show_all)
        top.addWidget(refresh)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(False)
        self.tree.setWordWrap(True)
        self.tree.itemDoubleClicked.connect(lambda *_: self.accept())
        self.tree.currentItemChanged.connect(self._current_changed)
        for col in _WRAPPED:
            self.tree.setItemDelegateForColumn(col, _Wrap(self.tree))
        header = self.tree.header()
        header.setStretchLastSection(True)
        for col, width in enumerate(_WIDTHS):
            header.resizeSection(col, width)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.sectionResized.connect(lambda *_: self.tree.doItemsLayout())  # re-wrap
        self.details = QLabel()
        """The selected nginx's capture method and the whole reason for it."""
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Attach")
        ok.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.details)
        lay.addWidget(self.message)
        lay.addWidget(self.buttons)
        self.refresh()

    def refresh(self) -> None:
        """Ask the lister again and rebuild the tree."""
        self.tree.clear()
        try:
            instances = list(self.lister(self.show_all.isChecked()))
        except Exception as exc:  # the lister runs arbitrary /proc probing
            self.message.setText(f"Cannot list nginx processes: {exc}")
            return
        for inst in instances:
            master = _get(inst, "master", None)
            item = QTreeWidgetItem(instance_row(inst))
            item.setData(0, Qt.ItemDataRole.UserRole, _get(master, "pid", None))
            if not (_get(inst, "capture_method", "") or _get(_get(inst, "binary", None),
                                                             "method", "")):
                item.setForeground(_CAPTURE, Qt.GlobalColor.darkRed)
                item.setForeground(_WHY, Qt.GlobalColor.darkRed)
            for col in range(len(COLUMNS)):
                item.setToolTip(col, item.text(col))
            method_and_why = f"{item.text(_CAPTURE)}: {item.text(_WHY)}"
            item.setToolTip(_CAPTURE, method_and_why)
            item.setToolTip(_WHY, method_and_why)
            for w in _get(inst, "workers", []) or []:
                role = _get(w, "role", "worker") or "worker"
                user = _get(w, "user", "")
                exe = _get(w, "exe", "")
                child = QTreeWidgetItem(  # a worker's binary is shown only when it differs
                    [f"{_get(w, 'pid', '?')}  {role}{' (' + user + ')' if user else ''}",
                     "" if exe == item.text(1) else exe]
                )
                child.setToolTip(0, " ".join(_get(w, "cmdline", []) or []))
                child.setData(0, Qt.ItemDataRole.UserRole, _get(w, "pid", None))
                item.addChild(child)
            self.tree.addTopLevelItem(item)
            item.setExpanded(True)
        n = len(instances)
        self.message.setText(
            "No nginx found. Is it running? (Tick \u201cShow all processes\u201d to list "
            "everything.)" if n == 0 else f"{n} nginx instance{'s' if n != 1 else ''} found. "
            "Attach to a master to capture all its workers, or to one worker (needs root: pkexec/sudo)."
        )
        first = self.tree.topLevelItem(0)
        if first is not None:
            self.tree.setCurrentItem(first)
        self._apply_filter(self.filter.text())

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item is None:
                continue
            hay = " ".join(item.text(c) for c in range(len(COLUMNS))).lower()
            kids = " ".join(
                child.text(0)
                for k in range(item.childCount())
                if (child := item.child(k)) is not None
            ).lower()
            item.setHidden(bool(needle) and needle not in hay and needle not in kids)

    def _current_changed(self, current: QTreeWidgetItem | None, _prev: Any) -> None:
        pid = current.data(0, Qt.ItemDataRole.UserRole) if current is not None else None
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(pid is not None)
        top = current
        while top is not None and top.parent() is not None:
            top = top.parent()
        if top is None:
            self.details.setText("")
            return
        why = top.text(_WHY)
        self.details.setText(
            f"<b>{html.escape(top.text(0))}</b> \u2014 capture: <b>{html.escape(top.text(_CAPTURE))}"
            f"</b>" + (f"<br>{html.escape(why)}" if why else ""))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.tree.hasFocus():
            self.accept()
            return
        super().keyPressEvent(event)

    def accept(self) -> None:
        item = self.tree.currentItem()
        pid = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        if pid is None:
            return
        self.selected_pid = int(pid)
        super().accept()
