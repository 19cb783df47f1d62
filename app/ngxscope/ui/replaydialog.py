"""Replay… : send the selected request again, to nginx or one of its upstream peers, and show
the new answer beside the recorded one with their differences (store/replay.py).

Destinations offered: the nginx address that received the request (loopback only, else the
user types it), and each peer nginx sent it to (the request as nginx sent it). Any other
address must be typed. Methods that are not idempotent are confirmed first. Replays carry
the `X-Ngxscope-Replay` header (the capture sees them; the statistics skip them).
"""

from __future__ import annotations

import html
import threading

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ngxscope.model import Exchange
from ngxscope.store.bodysearch import decoded_body
from ngxscope.store.copyas import RequestSpec, from_attempt, from_exchange
from ngxscope.store.replay import (
    TAG,
    ReplayError,
    ReplayResult,
    check_target,
    diff,
    needs_confirmation,
    send,
)

__all__ = ["ReplayDialog", "ReplayManyDialog"]

ADDED, CHANGED, REMOVED = "#2e9d4f", "#d9822b", "#d64545"


class _Relay(QObject):
    done = Signal(object)
    """A ReplayResult or a ReplayError, from the sending thread."""


def _confirm(parent: QWidget, question: str) -> bool:
    """Ask before sending a non-idempotent request again."""
    return QMessageBox.question(parent, "Replay", question) == QMessageBox.StandardButton.Yes


def _side_html(title: str, status: int | None, reason: str, headers: list[tuple[str, str]],
               body: bytes) -> str:
    lines = [f"<h3 style='margin:2px'>{html.escape(title)}</h3>",
             f"<b>{status if status is not None else '(no answer)'} {html.escape(reason)}</b>"]
    lines += [f"{html.escape(k)}: {html.escape(v)}" for k, v in headers]
    text = body[:64 * 1024].decode("utf-8", "replace")
    return ("<pre style='margin:2px'>" + "<br>".join(lines) + "<br><br>" + html.escape(text)
            + "</pre>")


class ReplayDialog(QDialog):
    """Choose where to replay `ex`, send it, compare the answers."""

    def __init__(self, ex: Exchange, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ex = ex
        self.setWindowTitle(f"Replay #{ex.id} {ex.method} {ex.target}")
        self.resize(1100, 700)
        self.targets: list[tuple[str, RequestSpec]] = [
            (f"nginx at {ex.server} (as nginx received it)", from_exchange(ex))]
        for i, a in enumerate(ex.upstream, 1):
            if a.request_head:
                self.targets.append((f"peer {a.addr} directly (as nginx sent it, attempt #{i})",
                                     from_attempt(ex, a)))
        self.choice = QComboBox()
        for label, _spec in self.targets:
            self.choice.addItem(label)
        self.address = QLineEdit()
        self.address.setPlaceholderText("or type another host:port")
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.start)
        self.state = QLabel(f"The replay carries the header <code>{TAG}: {ex.id}</code>; the "
                            "capture sees it, the statistics do not count it.")
        self.state.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Send to:"))
        row.addWidget(self.choice, 2)
        row.addWidget(self.address, 1)
        row.addWidget(self.send_button)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.recorded = QTextBrowser()
        self.replayed = QTextBrowser()
        self.changes = QTextBrowser()
        for w in (self.recorded, self.replayed, self.changes):
            w.document().setDefaultStyleSheet(
                f"pre {{ font-family: '{mono.family()}'; font-size: {mono.pointSize()}pt; }}")
        self.recorded.setHtml(_side_html(
            "Recorded", ex.status, ex.reason, ex.response_headers,
            decoded_body(ex.response_body, ex.response_headers)))
        self.replayed.setHtml("<p><i>Not sent yet.</i></p>")
        sides = QSplitter(Qt.Orientation.Horizontal)
        sides.addWidget(self.recorded)
        sides.addWidget(self.replayed)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(sides)
        split.addWidget(self.changes)
        split.setSizes([420, 220])
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.state)
        lay.addWidget(split, 1)
        self.relay = _Relay()
        self.relay.done.connect(self._finished)
        self.answer: ReplayResult | None = None

    def destination(self) -> tuple[str, RequestSpec]:
        """(address, request) for the current choice; raises ReplayError if not allowed."""
        _label, spec = self.targets[self.choice.currentIndex()]
        typed = self.address.text().strip() or None
        if self.choice.currentIndex() > 0 and typed is None:
            return spec.connect, spec  # a peer the user picked from nginx's own attempts
        return check_target(spec.connect, typed), spec

    def start(self, *, confirmed: bool = False) -> bool:
        """Send (in a thread); False when refused or not confirmed."""
        try:
            to, spec = self.destination()
        except ReplayError as exc:
            self.state.setText(f"<span style='color:{REMOVED}'>{html.escape(str(exc))}</span>")
            return False
        if needs_confirmation(spec.method) and not confirmed and not _confirm(
                self, f"{spec.method} is not idempotent. Send {spec.method} {spec.target} to {to} again?"):
            return False
        self.send_button.setEnabled(False)
        self.state.setText(f"Sending {spec.method} {html.escape(spec.target)} to {to}…")
        relay, tag = self.relay, self.ex.id

        def work() -> None:
            try:
                relay.done.emit(send(spec, to, tag=tag))
            except ReplayError as exc:
                relay.done.emit(exc)

        threading.Thread(target=work, name="ngxscope-replay", daemon=True).start()
        return True

    def _finished(self, outcome: object) -> None:
        self.send_button.setEnabled(True)
        if isinstance(outcome, ReplayError):
            self.state.setText(f"<span style='color:{REMOVED}'>{html.escape(str(outcome))}</span>")
            return
        assert isinstance(outcome, ReplayResult)
        res = self.answer = outcome
        self.state.setText(f"Answered by {res.to} in {res.duration_ms:.1f} ms"
                           + (f" — {res.error}" if res.error else ""))
        self.replayed.setHtml(_side_html(f"Replayed to {res.to}", res.status, res.reason,
                                         res.headers, decoded_body(res.body, res.headers)))
        self.changes.setHtml(self._diff_html(res))

    def _diff_html(self, res: ReplayResult) -> str:
        d = diff(self.ex, res)
        if d.same:
            return "<p><b style='color:#2e9d4f'>Same answer</b> (status, headers, body)" + (
                f"; changed as expected: {html.escape(', '.join(d.volatile))}" if d.volatile
                else "") + "</p>"
        out = []
        old, new = d.status
        color = ADDED if old == new else REMOVED
        out.append(f"Status: <b style='color:{color}'>{old} → {new}</b>")
        out += [f"<span style='color:{ADDED}'>+ {html.escape(k)}: {html.escape(v)}</span>"
                for k, v in d.added]
        out += [f"<span style='color:{REMOVED}'>- {html.escape(k)}: {html.escape(v)}</span>"
                for k, v in d.removed]
        out += [f"<span style='color:{CHANGED}'>~ {html.escape(k)}: {html.escape(a)} → "
                f"{html.escape(b)}</span>" for k, a, b in d.changed]
        if d.volatile:
            out.append(f"(changed as expected: {html.escape(', '.join(d.volatile))})")
        if not d.body_equal:
            out.append("<b>body differs:</b>")
            for line in d.body_diff:
                color = ADDED if line.startswith("+") else REMOVED if line.startswith("-") else ""
                text = html.escape(line)
                out.append(f"<span style='color:{color}'>{text}</span>" if color else text)
        return "<pre>" + "<br>".join(out) + "</pre>"


class ReplayManyDialog(QDialog):
    """Replay several requests, each to the nginx address that received it (loopback only),
    one after the other; a row per request: recorded and replayed status, same or not."""

    def __init__(self, exchanges: list[Exchange], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.exchanges = [e for e in exchanges if e.method and not e.is_tcp]
        self.setWindowTitle(f"Replay {len(self.exchanges)} requests")
        self.resize(900, 420)
        self.table = QTableWidget(len(self.exchanges), 5)
        self.table.setHorizontalHeaderLabels(["#", "Request", "Recorded", "Replayed", "Answer"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        for row, ex in enumerate(self.exchanges):
            for col, text in enumerate([str(ex.id), f"{ex.method} {ex.target}",
                                        str(ex.status) if ex.status is not None else "-", "", ""]):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.send_button = QPushButton("Send all")
        self.send_button.clicked.connect(self.start)
        self.state = QLabel(f"Each goes to the nginx address that received it (loopback only), "
                            f"tagged {TAG}.")
        lay = QVBoxLayout(self)
        lay.addWidget(self.state)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.send_button)
        self.relay = _Relay()
        self.relay.done.connect(self._row_done)
        self.finished_rows = 0

    def start(self, *, confirmed: bool = False) -> bool:
        risky = sorted({e.method for e in self.exchanges if needs_confirmation(e.method)})
        if risky and not confirmed and not _confirm(
                self, f"{', '.join(risky)} {'is' if len(risky) == 1 else 'are'} not "
                f"idempotent. Send all {len(self.exchanges)} requests again?"):
            return False
        self.send_button.setEnabled(False)
        self.finished_rows = 0
        relay, todo = self.relay, list(enumerate(self.exchanges))

        def work() -> None:
            for row, ex in todo:
                spec = from_exchange(ex)
                try:
                    to = check_target(spec.connect, None)
                    relay.done.emit((row, send(spec, to, tag=ex.id)))
                except ReplayError as exc:
                    relay.done.emit((row, exc))

        threading.Thread(target=work, name="ngxscope-replay-many", daemon=True).start()
        return True

    def _cell(self, row: int, col: int) -> QTableWidgetItem:
        item = self.table.item(row, col)
        assert item is not None  # every cell is made in __init__
        return item

    def _row_done(self, outcome: object) -> None:
        assert isinstance(outcome, tuple)
        row: int = outcome[0]
        res: ReplayResult | ReplayError = outcome[1]
        ex = self.exchanges[row]
        answer = self._cell(row, 4)
        if isinstance(res, ReplayError):
            self._cell(row, 3).setText("-")
            answer.setText(str(res))
            answer.setForeground(QColor(REMOVED))
        else:
            d = diff(ex, res)
            self._cell(row, 3).setText(str(res.status))
            what = "same answer" if d.same else ", ".join(
                p for p, on in (("status", d.status[0] != d.status[1]),
                                ("headers", bool(d.added or d.removed or d.changed)),
                                ("body", not d.body_equal)) if on) + " differ"
            answer.setText(f"{what} ({res.duration_ms:.1f} ms)")
            answer.setForeground(QColor(ADDED if d.same else CHANGED))
        self.finished_rows += 1
        if self.finished_rows == len(self.exchanges):
            self.send_button.setEnabled(True)
            self.state.setText(f"{len(self.exchanges)} requests replayed.")
