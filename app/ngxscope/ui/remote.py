"""Remote capture in the window: the "Remote host…" dialog and the sources it builds.

A remote capture is a `StreamSource` whose helper is `ssh ... host ngxscope record --pid N
--stream` (see `ngxscope.remote`): the window shows it exactly like a local capture.
Several hosts at once go through `MultiHostSource`, which merges their streams, keeps
exchange ids unique, prefixes connection ids with the host, and answers `host_of(ex)`.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
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

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.remote import RemoteError, RemoteSpec, list_remote

from .attach import COLUMNS, instance_row
from .source import PollResult, StreamSource

__all__ = ["MultiHostSource", "RemoteHostDialog", "RemoteStreamSource", "attach_remote",
           "remote_source", "run_remote_window"]


class RemoteStreamSource(StreamSource):
    """The capture helper of one remote host, run through ssh (never elevated locally)."""

    def __init__(self, spec: RemoteSpec) -> None:
        super().__init__(spec.record_argv(), elevate_if_needed=False)
        self.spec = spec
        self.ended = False
        """The remote helper finished its stream cleanly (its "end" record arrived)."""

    def describe(self) -> str:
        return f"nginx pid {self.spec.pid} on {self.spec.label} via ssh"

    def _parse_line(self, raw: bytes, pending: list[Exchange]) -> None:
        # the helper's clean exit writes the session's "end" record: not a bad line
        if b'"end"' in raw[:24] and raw.lstrip().startswith(b'{"t":'):
            try:
                if json.loads(raw).get("t") == "end":
                    self.ended = True
                    return
            except ValueError:
                pass
        super()._parse_line(raw, pending)

    def error(self) -> str | None:
        why = super().error()
        return f"{self.spec.label}: {why}" if why else None


class MultiHostSource:
    """Several remote captures as one source (an `ExchangeSource`)."""

    def __init__(self, sources: Sequence[RemoteStreamSource]) -> None:
        self.sources = list(sources)
        self._ids = itertools.count(1)
        self._host_by_id: dict[int, str] = {}
        self._stats: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for s in self.sources:
            s.start()

    def stop(self) -> None:
        for s in self.sources:
            s.stop()

    def poll(self) -> PollResult:
        exchanges: list[Exchange] = []
        events: list[LifecycleEvent] = []
        fresh = False
        for s in self.sources:
            label = s.spec.label
            exs, evs, stats = s.poll()
            for ex in exs:
                ex.id = next(self._ids)
                ex.conn_id = f"{label}|{ex.conn_id}"
                self._host_by_id[ex.id] = label
            exchanges += exs
            for ev in evs:
                ev.detail = f"[{label}] {ev.detail}"
            events += evs
            if stats is not None:
                self._stats[label] = stats
                fresh = True
        return exchanges, events, self._merged_stats() if fresh else None

    def _merged_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": 0.0, "requests": 0, "events": 0, "lost": 0, "truncated": 0,
                               "shed_exchanges": 0, "workers": [], "method": "", "hosts": {},
                               "sample_one_in": 1}
        for label, st in self._stats.items():
            out["ts"] = max(out["ts"], float(st.get("ts", 0.0) or 0.0))
            for key in ("requests", "events", "lost", "truncated", "shed_exchanges"):
                out[key] += int(st.get(key, 0) or 0)
            out["sample_one_in"] = max(out["sample_one_in"], int(st.get("sample_one_in", 1) or 1))
            out["workers"] += list(st.get("workers", []) or [])
            out["method"] = out["method"] or st.get("method", "")
            out["hosts"][label] = st
        return out

    def host_of(self, ex: Exchange) -> str:
        """The host an exchange came from ("" when unknown): for a Host column."""
        return self._host_by_id.get(ex.id, "")

    def describe(self) -> str:
        return f"{len(self.sources)} remote hosts: " + ", ".join(s.spec.label for s in self.sources)

    def alive(self) -> bool:
        return any(s.alive() for s in self.sources)

    def error(self) -> str | None:
        if self.alive():
            return None
        errors = [e for e in (s.error() for s in self.sources) if e]
        return "; ".join(errors) or None


def remote_source(specs: Sequence[RemoteSpec]) -> RemoteStreamSource | MultiHostSource:
    """One host: its `RemoteStreamSource`; several: a `MultiHostSource`."""
    sources = [RemoteStreamSource(s) for s in specs]
    return sources[0] if len(sources) == 1 else MultiHostSource(sources)


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


def run_remote_window(specs: Sequence[RemoteSpec]) -> int:
    """`ngxscope --remote ...`: the window on the remote capture(s) (the dialog when no PID)."""
    from .app import ensure_app, run_window
    from .launch import connect_file_hooks
    from .mainwindow import MainWindow

    ensure_app()
    title = "ngxscope - " + ", ".join(s.label for s in specs)
    win = MainWindow(None, title=title)
    connect_file_hooks(win)
    source: RemoteStreamSource | MultiHostSource | None = None
    if all(s.pid is not None for s in specs):
        source = remote_source(specs)
    else:
        dlg = RemoteHostDialog(None, initial=specs[0])
        if not dlg.exec() or dlg.spec is None:
            return 1
        source = remote_source([dlg.spec])
    try:
        return run_window(source, title=title, window=win)
    finally:
        source.stop()
