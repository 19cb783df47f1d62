"""Remote capture in the window: the "Remote host…" dialog.

A remote capture is a `RemoteStreamSource` (`ngxscope.pipeline.remote`) whose helper is
`ssh ... host ngxscope record --pid N --stream`: the window shows it exactly like a local
capture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ngxscope.pipeline.remote import RemoteError, RemoteSpec, list_remote, remote_source

from .attach import COLUMNS, instance_row

__all__ = ["RemoteHostDialog", "attach_remote"]


# -- the dialog ---------------------------------------------------------------------------

def _namespace(obj: Any) -> Any:
    """JSON objects as attribute objects, for `attach.instance_row`'s getattr reading."""
    from types import SimpleNamespace

    if isinstance(obj, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_namespace(v) for v in obj]
    return obj


Lister = Callable[[RemoteSpec, bool], dict[str, Any]]


class RemoteHostDialog(QDialog):
    """Host, key and remote command; "List nginx" runs `ssh host ngxscope list --json`."""

    def __init__(self, parent: QWidget | None = None, *, lister: Lister | None = None,
                 initial: RemoteSpec | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Remote host")
        self.resize(1100, 420)
        self.lister: Lister = lister or list_remote
        self.spec: RemoteSpec | None = None
        self.host = QLineEdit(initial.label if initial else "")
        self.host.setPlaceholderText("user@host[:port]")
        self.key = QLineEdit(initial.key or "" if initial else "")
        self.key.setPlaceholderText("default keys / ssh-agent")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key, 1)
        key_row.addWidget(browse)
        self.command = QLineEdit(initial.ngxscope if initial else "ngxscope")
        self.sudo = QCheckBox("Run with sudo -n (a non-root login)")
        self.show_all = QCheckBox("Show all processes")
        form = QFormLayout()
        form.addRow("Host:", self.host)
        form.addRow("SSH key:", key_row)
        form.addRow("Remote ngxscope:", self.command)
        form.addRow("", self.sudo)
        self.list_button = QPushButton("List nginx")
        self.list_button.clicked.connect(self.refresh)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.itemDoubleClicked.connect(lambda *_: self.accept())
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.attach_button = self.buttons.addButton("Attach", QDialogButtonBox.ButtonRole.AcceptRole)
        self.attach_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.tree.currentItemChanged.connect(lambda *_: self.attach_button.setEnabled(self._pid() is not None))
        top = QHBoxLayout()
        top.addWidget(self.list_button)
        top.addWidget(self.show_all)
        top.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(top)
        lay.addWidget(self.status)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SSH private key", self.key.text() or "~/.ssh")
        if path:
            self.key.setText(path)

    def current_spec(self) -> RemoteSpec:
        return RemoteSpec.parse(self.host.text(), key=self.key.text().strip() or None,
                                ngxscope=self.command.text().strip() or "ngxscope",
                                sudo=self.sudo.isChecked())

    def refresh(self) -> None:
        self.tree.clear()
        try:
            spec = self.current_spec()
            self.status.setText(f"listing nginx on {spec.label}…")
            self.repaint()
            data = self.lister(spec, self.show_all.isChecked())
        except (ValueError, RemoteError) as exc:
            self.status.setText(str(exc))
            return
        insts = data.get("instances", [])
        self.status.setText(f"{len(insts)} on {data.get('host', spec.label)}")
        for inst in insts:
            ns = _namespace(inst)
            item = QTreeWidgetItem(instance_row(ns))
            item.setData(0, Qt.ItemDataRole.UserRole, int(inst["master"]["pid"]))
            for w in inst.get("workers", []):
                child = QTreeWidgetItem([f"{w['pid']}  {w['role']}", w.get("exe", "")])
                child.setData(0, Qt.ItemDataRole.UserRole, int(w["pid"]))
                item.addChild(child)
            self.tree.addTopLevelItem(item)
        first = self.tree.topLevelItem(0)
        if first is not None:
            self.tree.setCurrentItem(first)

    def _pid(self) -> int | None:
        item = self.tree.currentItem()
        value = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        return int(value) if value is not None else None

    def accept(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        try:
            self.spec = self.current_spec().with_pid(pid)
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        super().accept()


def attach_remote(win: Any, *, lister: Lister | None = None) -> bool:
    """The hook for a "Remote host…" menu entry: dialog, then `win.set_source(ssh source)`."""
    dlg = RemoteHostDialog(win, lister=lister)
    if not dlg.exec() or dlg.spec is None:
        return False
    source = remote_source([dlg.spec])
    win.set_source(source)
    return True
