"""The status bar: capture state, source, rates, lost events, truncated payloads, memory."""

from __future__ import annotations

import os
import time
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from .tablemodel import fmt_bytes

__all__ = ["CaptureStatusBar", "rss_bytes"]

STATE_STYLES = {
    "live": "color: white; background: #2e9d4f;",
    "paused": "color: black; background: #e0a526;",
    "stopped": "color: white; background: #6b7280;",
    "died": "color: white; background: #d64545;",
    "idle": "color: white; background: #6b7280;",
    "session": "color: white; background: #2f7fc1;",
}


def rss_bytes() -> int:
    """Resident set size of this process (0 when unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _label(tip: str) -> QLabel:
    label = QLabel()
    label.setToolTip(tip)
    label.setContentsMargins(6, 0, 6, 0)
    return label


class CaptureStatusBar(QStatusBar):
    """Permanent labels updated once a second by the main window."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.redaction_target: dict[str, Any] | None = None
        """The redaction facts of the session/stream header shown (None: unknown)."""
        self.state = _label("Capture state")
        self.source = _label("Where the requests come from")
        self.rows = _label("Requests shown (after the filter) / kept in memory")
        self.rate = _label("Requests and capture events per second")
        self.lost = _label("Capture events lost (the ring buffer overflowed): some requests "
                           "may be missing or truncated")
        self.truncated = _label("Payloads not fully captured (cap, sendfile or lost events)")
        self.summary_only = _label("Requests counted from the kernel's per-request summary without "
                                   "their payload: shed while the ring buffer was full, or sampled "
                                   "out while the capture was over its CPU budget (record --cpu-budget). "
                                   "Their status, sizes and times are exact.")
        self.summary_only.setVisible(False)
        self.memory = _label("Memory used by ngxscope (RSS)")
        self.notice = _label("The latest lifecycle event (all of them: the Events panel)")
        self.notice.setVisible(False)
        self.redaction = _label("Secrets in what is shown")
        self.redaction.setVisible(False)
        self._notice_timer = QTimer(self)
        self._notice_timer.setSingleShot(True)
        self._notice_timer.timeout.connect(lambda: self.notice.setVisible(False))
        self.addWidget(self.state)
        self.addWidget(self.notice)
        self.addWidget(self.redaction)
        self.addWidget(self.source, 1)
        for w in (self.rows, self.rate, self.lost, self.summary_only, self.truncated, self.memory):
            self.addPermanentWidget(w)
        self.set_state("idle", "no capture")
        self._last_events: tuple[float, int] | None = None
        self.events_rate = 0.0
        self.lost_total = 0
        self.truncated_total = 0
        self.set_stats(None, req_rate=0.0)

    def set_state(self, kind: str, text: str) -> None:
        """kind: live / paused / stopped / died / idle / session."""
        self.state.setText(f" {text} ")
        self.state.setStyleSheet(STATE_STYLES.get(kind, "") + " border-radius: 3px;")
        self.state_kind = kind

    def flash(self, text: str, color: str = "#2f7fc1", ms: int = 8000) -> None:
        """Show `text` as a coloured notice next to the state for `ms` milliseconds."""
        self.notice.setText(f" {text} ")
        self.notice.setStyleSheet(f"color: white; background: {color}; border-radius: 3px;")
        self.notice.setVisible(True)
        self._notice_timer.start(ms)

    def set_redaction(self, target: dict[str, Any] | None) -> None:
        """Say whether the data shown had its secrets masked (from a session/stream header)."""
        self.redaction_target = target
        if not target or "redacted" not in target:
            self.redaction.setVisible(False)
            return
        if target.get("redacted"):
            names = ", ".join(target.get("redact_headers") or [])
            params = ", ".join(target.get("redact_params") or [])
            self.redaction.setText(" secrets masked ")
            self.redaction.setToolTip(f"Values masked when recorded: headers {names}"
                                      + (f"; query parameters {params}" if params else ""))
            self.redaction.setStyleSheet("color: white; background: #4a7a3a; border-radius: 3px;")
        else:
            self.redaction.setText(" not redacted ")
            self.redaction.setToolTip("Recorded with --no-redact: Authorization, Cookie... are shown as sent")
            self.redaction.setStyleSheet("color: white; background: #b5651d; border-radius: 3px;")
        self.redaction.setVisible(True)

    def set_source(self, text: str) -> None:
        self.source.setText(text)

    def set_rows(self, shown: int, kept: int, dropped: int) -> None:
        extra = f" ({dropped:,} older dropped)" if dropped else ""
        self.rows.setText(f"{shown:,} / {kept:,} requests{extra}")

    def set_stats(self, stats: dict[str, Any] | None, *, req_rate: float) -> None:
        """Update from the helper's latest stats record (or None to keep the last values)."""
        if stats is not None:
            events = int(stats.get("events", 0) or 0)
            now = float(stats.get("ts", time.time()) or time.time())
            if self._last_events is not None and now > self._last_events[0]:
                self.events_rate = (events - self._last_events[1]) / (now - self._last_events[0])
            self._last_events = (now, events)
            self.lost_total = int(stats.get("lost", 0) or 0)
            self.truncated_total = int(stats.get("truncated", 0) or 0)
            shed = int(stats.get("shed_exchanges", 0) or 0)
            one_in = int(stats.get("sample_one_in", 1) or 1)
            counted = stats.get("counted")
            in_kernel = int(counted.get("requests") or 0) if isinstance(counted, dict) else 0
            if shed or one_in > 1 or in_kernel:
                sampling = f" · sampling 1/{one_in}" if one_in > 1 else ""
                if one_in > 1 and stats.get("yielding"):
                    sampling += " (CPU is short: the capture yields)"
                not_rows = f" · {in_kernel:,} counted in the kernel, not rows" if in_kernel else ""
                self.summary_only.setText(f" {shed:,} summary only{not_rows}{sampling} ")
                self.summary_only.setToolTip(
                    "Over its CPU budget (3% of a core while nginx or another task waits for a CPU) the capture "
                    "keeps the payload of one request in N. The others "
                    "that no rule keeps (errors, aborts, failed upstreams, slow) are counted in the kernel: "
                    "they are in the graphs and panels but not rows of the table.")
                self.summary_only.setStyleSheet("color: black; background: #e0b040; border-radius: 3px;")
                self.summary_only.setVisible(True)
        self.rate.setText(f"{req_rate:,.0f} req/s · {max(0.0, self.events_rate):,.0f} events/s")
        if self.lost_total:
            self.lost.setText(f" ⚠ {self.lost_total:,} events lost ")
            self.lost.setStyleSheet("color: white; background: #d64545; border-radius: 3px;"
                                    " font-weight: bold;")
        else:
            self.lost.setText("0 lost")
            self.lost.setStyleSheet("")
        self.truncated.setText(f"{self.truncated_total:,} truncated")
        self.memory.setText(f"RSS {fmt_bytes(rss_bytes())}")
