"""The filter bar: live-compiles the filter language, red with the error when invalid."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QWidget

from ngxscope.store.filterexpr import FilterError, Predicate, compile_filter

__all__ = ["FilterBar"]

INVALID_STYLE = "QLineEdit { background: #f8d0d0; color: #5a0000; }"
VALID_STYLE = ""


class FilterBar(QWidget):
    """A line edit that emits `filter_changed(predicate_or_None, text)` once text is valid."""

    filter_changed = Signal(object, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setClearButtonEnabled(True)
        self.edit.setPlaceholderText(
            "Filter: status>=500 · path~^/api · duration>200ms · upstream=10.0.0.2:8080 · "
            "not tls · (F1 for the language)"
        )
        self.error = QLabel()
        self.error.setStyleSheet("color: #d64545;")
        self.error.setVisible(False)
        self.count = QLabel()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 2)
        lay.addWidget(QLabel("Filter:"))
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.error)
        lay.addWidget(self.count)
        self.valid = True
        self.applied_text = ""
        # debounce so a fast typist does not re-filter 200k rows per key
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.apply)
        self.edit.textChanged.connect(self._text_changed)
        self.edit.returnPressed.connect(self.apply)

    def _text_changed(self, text: str) -> None:
        try:
            compile_filter(text)
        except FilterError as exc:
            self._show_error(exc)
            self._debounce.stop()
            return
        self._show_ok()
        self._debounce.start()

    def _show_error(self, exc: FilterError) -> None:
        self.valid = False
        self.edit.setStyleSheet(INVALID_STYLE)
        self.error.setText(str(exc))
        self.error.setToolTip(str(exc))
        self.error.setVisible(True)

    def _show_ok(self) -> None:
        self.valid = True
        self.edit.setStyleSheet(VALID_STYLE)
        self.error.setVisible(False)

    def apply(self) -> None:
        """Compile the current text and announce it (no-op when invalid or unchanged)."""
        text = self.edit.text()
        try:
            pred: Predicate | None = compile_filter(text) if text.strip() else None
        except FilterError as exc:
            self._show_error(exc)
            return
        self._show_ok()
        if text.strip() == self.applied_text.strip():
            return
        self.applied_text = text
        self.filter_changed.emit(pred, text)

    def set_text(self, text: str) -> None:
        """Replace the filter and apply it now."""
        self.edit.setText(text)
        self._debounce.stop()
        self.apply()

    def add_clause(self, clause: str) -> None:
        """And a clause onto the current filter ("Filter by this value")."""
        cur = self.edit.text().strip()
        if not cur:
            self.set_text(clause)
        elif " or " in cur.lower() or "||" in cur:
            self.set_text(f"({cur}) and {clause}")
        else:
            self.set_text(f"{cur} and {clause}")

    def focus(self) -> None:
        self.edit.setFocus()
        self.edit.selectAll()
