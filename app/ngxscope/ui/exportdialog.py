"""File → Export…: format, whole session or the filtered view, redaction (on by default)."""

from __future__ import annotations

import os

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["FORMATS", "ExportDialog"]

FORMATS = {
    "har": ("HAR 1.2 (Chrome DevTools, HTTP Toolkit)", "har"),
    "pcapng": ("pcapng (Wireshark, tshark)", "pcapng"),
    "csv": ("CSV (the table's columns)", "csv"),
    "jsonl": ("JSON lines (one exchange per line)", "jsonl"),
}


class ExportDialog(QDialog):
    """Choose what to export and where; read `fmt`, `path`, `filtered`, `redact` after exec()."""

    def __init__(self, parent: QWidget | None, *, shown: int, total: int, filter_text: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.format_box = QComboBox()
        for key, (label, _ext) in FORMATS.items():
            self.format_box.addItem(label, key)
        self.path_edit = QLineEdit(os.path.abspath("exchanges.har"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        self.filtered_radio = QRadioButton(f"The filtered view ({shown:,} requests)"
                                           + (f": {filter_text}" if filter_text else ""))
        self.all_radio = QRadioButton(f"Everything in the window ({total:,} requests)")
        (self.filtered_radio if filter_text else self.all_radio).setChecked(True)
        self.redact_box = QCheckBox("Mask secrets (Authorization, Cookie, Set-Cookie…)")
        self.redact_box.setChecked(True)
        form = QFormLayout()
        form.addRow("Format", self.format_box)
        form.addRow("File", row)
        scope = QVBoxLayout()
        scope.addWidget(self.filtered_radio)
        scope.addWidget(self.all_radio)
        form.addRow("Export", scope)
        form.addRow("", self.redact_box)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        outer = QVBoxLayout(self)
        outer.addLayout(form)
        outer.addWidget(buttons)
        self.format_box.currentIndexChanged.connect(self._fix_extension)
        self.resize(560, 0)

    @property
    def fmt(self) -> str:
        return str(self.format_box.currentData())

    @property
    def path(self) -> str:
        return self.path_edit.text().strip()

    @property
    def filtered(self) -> bool:
        return self.filtered_radio.isChecked()

    @property
    def redact(self) -> bool:
        return self.redact_box.isChecked()

    def _fix_extension(self) -> None:
        base, _ = os.path.splitext(self.path)
        self.path_edit.setText(f"{base}.{FORMATS[self.fmt][1]}")

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.path)
        if path:
            self.path_edit.setText(path)
