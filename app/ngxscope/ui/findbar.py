"""Find in the detail pane: highlight every match in headers and bodies, step through them.

`highlight(view, patterns)` marks matches of compiled patterns in a `MessageView` (header
cells get a background, body text an extra selection) and returns their count. `FindBar`
is the Ctrl+F bar under the detail pane; the window also passes the patterns of the
filter's header/body terms (`filterexpr.search_patterns`) so what the filter found is
highlighted without typing it again.
"""

from __future__ import annotations

import re
from typing import Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QTableWidget,
    QTextEdit,
    QToolButton,
    QWidget,
)

__all__ = ["MATCH_COLOR", "FindBar", "body_matches", "highlight"]

MATCH_COLOR = QColor("#ffd54f")
CURRENT_COLOR = QColor("#ff9800")


class MessageView(Protocol):
    """What `highlight` needs of the detail pane's `ui.detail.MessageView` (a protocol, so
    the two modules do not import each other)."""

    headers: QTableWidget
    body: QPlainTextEdit


def body_matches(text: str, patterns: list[re.Pattern[str]]) -> list[tuple[int, int]]:
    """Sorted, non-empty (start, end) spans of every pattern in `text`."""
    spans = {(m.start(), m.end()) for rx in patterns for m in rx.finditer(text)
             if m.end() > m.start()}
    return sorted(spans)


def highlight(view: MessageView, patterns: list[re.Pattern[str]],
              current: int = -1) -> list[tuple[int, int]]:
    """Mark matches in `view`'s header cells and body; returns the body's match spans."""
    for row in range(view.headers.rowCount()):
        for col in (0, 1):
            item = view.headers.item(row, col)
            if item is None:
                continue
            hit = bool(patterns) and any(rx.search(item.text()) for rx in patterns)
            item.setBackground(MATCH_COLOR if hit else QColor(0, 0, 0, 0))
            if hit:
                item.setForeground(QColor("black"))
            else:
                item.setData(Qt.ItemDataRole.ForegroundRole, None)
    body: QPlainTextEdit = view.body
    spans = body_matches(body.toPlainText(), patterns) if patterns else []
    selections = []
    for i, (start, end) in enumerate(spans[:5000]):
        sel = QTextEdit.ExtraSelection()
        fmt = QTextCharFormat()
        fmt.setBackground(CURRENT_COLOR if i == current else MATCH_COLOR)
        fmt.setForeground(QColor("black"))
        sel.format = fmt
        cursor = QTextCursor(body.document())
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        sel.cursor = cursor
        selections.append(sel)
    body.setExtraSelections(selections)
    if 0 <= current < len(spans):
        cursor = QTextCursor(body.document())
        cursor.setPosition(spans[current][0])
        body.setTextCursor(cursor)
        body.ensureCursorVisible()
    return spans


class FindBar(QWidget):
    """Text (a regular expression when it is one), a case toggle, the count, next/previous."""

    changed = Signal()
    """The pattern changed (the pane re-highlights)."""
    step = Signal(int)
    """+1 next match, -1 previous."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Find in headers and bodies (regular expression)")
        self.edit.setClearButtonEnabled(True)
        self.case = QCheckBox("Match case")
        self.count = QLabel()
        prev_b, next_b, close_b = QToolButton(), QToolButton(), QToolButton()
        prev_b.setText("▲")
        next_b.setText("▼")
        close_b.setText("✕")
        prev_b.setToolTip("Previous match (Shift+Enter)")
        next_b.setToolTip("Next match (Enter)")
        close_b.setToolTip("Close (Esc)")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.addWidget(QLabel("Find:"))
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.case)
        lay.addWidget(self.count)
        for b in (prev_b, next_b, close_b):
            lay.addWidget(b)
        self.edit.textChanged.connect(self.changed)
        self.case.toggled.connect(self.changed)
        prev_b.clicked.connect(lambda: self.step.emit(-1))
        next_b.clicked.connect(lambda: self.step.emit(1))
        close_b.clicked.connect(self.close_bar)
        self.edit.installEventFilter(self)
        self.hide()

    def pattern(self) -> re.Pattern[str] | None:
        """The typed text as a pattern (literal when it is not a valid expression)."""
        text = self.edit.text()
        if not text or self.isHidden():
            return None
        flags = 0 if self.case.isChecked() else re.IGNORECASE
        try:
            return re.compile(text, flags)
        except (re.error, OverflowError, RecursionError):
            return re.compile(re.escape(text), flags)

    def open_bar(self) -> None:
        self.show()
        self.edit.setFocus()
        self.edit.selectAll()
        self.changed.emit()

    def close_bar(self) -> None:
        self.hide()
        self.changed.emit()

    def show_count(self, n: int, current: int) -> None:
        if not self.edit.text():
            self.count.setText("")
        elif n:
            self.count.setText(f"{current + 1} of {n}" if current >= 0 else f"{n} matches")
        else:
            self.count.setText("no match")

    def eventFilter(self, obj: object, event: object) -> bool:
        if obj is self.edit and isinstance(event, QKeyEvent) and \
                event.type() == QKeyEvent.Type.KeyPress:
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                shift = event.modifiers() & Qt.KeyboardModifier.ShiftModifier
                self.step.emit(-1 if shift else 1)
                return True
            if event.key() == Qt.Key.Key_Escape:
                self.close_bar()
                return True
        return False
