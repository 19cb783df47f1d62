"""File ▸ Pin baseline: the first minutes of the running capture, the time range of the
selected requests, or a saved session become the baseline (`store.baseline`) the Routes and
Upstreams panels judge their last minute against (rows significantly worse tinted red), and
the Compare view compares the rest of the capture with."""

from __future__ import annotations

import time

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from ngxscope.model import Exchange
from ngxscope.store.baseline import FIRST_MINUTES, BaselinePin, first_minutes, time_range
from ngxscope.store.routes import RouteTemplater
from ngxscope.store.session import SessionError, SessionReader

from .compare import CompareDialog
from .paneltable import REFRESH_S, recent
from .windowbase import WindowBase

__all__ = ["SESSION_FILTER", "add_baseline_menu", "compare_with_pinned", "pin_baseline", "pin_first_minutes", "pin_selection",
           "pin_session", "refresh_verdicts", "unpin"]

NOW_S = 60
"""The panels' recent minute, judged against the baseline."""

SESSION_FILTER = "ngxscope sessions (*.ngxs);;All files (*)"


def _templater(w: WindowBase) -> RouteTemplater | None:
    routes = getattr(w, "routes", None)
    return getattr(routes, "templater", None)


def pin_baseline(w: WindowBase, pin: BaselinePin | None) -> None:
    """Make `pin` the window's baseline (None: no baseline) and judge the panels at once."""
    w.baseline = pin
    w.baseline_checked = -REFRESH_S
    w.baseline_verdicts = {}
    if pin is None:
        for panel in ("routes", "upstreams"):
            getattr(w, panel).set_verdicts({}, "")
        w.status.flash("Baseline unpinned")
        return
    w.status.flash(f"Baseline pinned: {pin.name} ({len(pin.exchanges):,} requests)")
    refresh_verdicts(w, force=True)


def _pin(w: WindowBase, name: str, exchanges: list[Exchange], span: tuple[float, float] | None) -> BaselinePin | None:
    if not exchanges:
        QMessageBox.information(w, "Pin baseline", f"No requests in {name} to pin.")
        return None
    user = _templater(w)
    overrides = [t for t, _rx in user.overrides] if user is not None else []
    pin = BaselinePin(name, exchanges, span, templater=lambda: RouteTemplater(overrides))
    pin_baseline(w, pin)
    return pin


def pin_first_minutes(w: WindowBase, minutes: float = FIRST_MINUTES) -> BaselinePin | None:
    """The first `minutes` of this capture (what there is of them so far)."""
    all_ex = list(w.store)
    span = first_minutes(all_ex, minutes)
    if span is None:
        return _pin(w, f"the first {minutes:g} min", [], None)
    latest = max(ex.start for ex in all_ex)
    if latest < span[1]:
        span = (span[0], latest + 1e-6)
        name = f"the first {(span[1] - span[0]) / 60:.1f} min of this capture (all so far)"
    else:
        name = f"the first {minutes:g} min of this capture"
    return _pin(w, name, time_range(all_ex, *span), span)


def pin_selection(w: WindowBase) -> BaselinePin | None:
    """The time range from the first to the last of the selected requests."""
    chosen = w.selected_exchanges()
    if not chosen:
        QMessageBox.information(w, "Pin baseline", "Select the requests whose time range is the baseline first.")
        return None
    t0, t1 = min(ex.start for ex in chosen), max(ex.start for ex in chosen) + 1e-6
    name = f"{time.strftime('%H:%M:%S', time.localtime(t0))} to {time.strftime('%H:%M:%S', time.localtime(t1))}"
    return _pin(w, name, time_range(list(w.store), t0, t1), (t0, t1))


def pin_session(w: WindowBase, path: str) -> BaselinePin | None:
    """A saved session (a clear message if unreadable)."""
    try:
        exchanges = SessionReader(path).read_all().exchanges
    except (SessionError, OSError) as exc:
        QMessageBox.warning(w, "Pin baseline", f"Cannot read {path}: {exc}")
        return None
    return _pin(w, path, exchanges, None)


def unpin(w: WindowBase) -> None:
    pin_baseline(w, None)


def compare_with_pinned(w: WindowBase) -> CompareDialog | None:
    """The Compare view: the pinned baseline against the rest of this window's requests."""
    pin = w.baseline
    if pin is None:
        QMessageBox.information(w, "Compare with baseline", "Pin a baseline first (File ▸ Pin baseline).")
        return None
    dlg = CompareDialog(pin.exchanges, pin.after(w.store), pin.name, _templater(w), w)
    dlg.show()
    return dlg


def refresh_verdicts(w: WindowBase, force: bool = False) -> None:
    """Judge the panels' last minute against the pinned baseline (at most every REFRESH_S)
    and tint the panels by the latest judgement."""
    pin = w.baseline
    if pin is None:
        return
    if force or time.monotonic() - w.baseline_checked >= REFRESH_S:
        w.baseline_checked = time.monotonic()
        end = w.store[len(w.store) - 1].end if len(w.store) else time.time()
        now = [ex for ex in recent(w.store, end - NOW_S) if ex.end >= end - NOW_S]
        w.baseline_verdicts = pin.compare(now)
    for panel in ("routes", "upstreams"):
        getattr(w, panel).set_verdicts(w.baseline_verdicts, pin.name)


def add_baseline_menu(w: WindowBase, menu: QMenu) -> QMenu:
    """The Pin baseline submenu of `menu`."""
    sub = menu.addMenu("Pin &baseline")

    def session() -> None:
        path, _ = QFileDialog.getOpenFileName(w, "Pin a saved session as the baseline", "", SESSION_FILTER)
        if path:
            pin_session(w, path)

    for text, slot, key in (
        (f"The &first {FIRST_MINUTES} minutes of this capture", lambda: pin_first_minutes(w), None),
        ("The time range of the &selected requests", lambda: pin_selection(w), None),
        ("A saved &session…", session, None),
        ("&Compare with the pinned baseline", lambda: compare_with_pinned(w), "Ctrl+Shift+D"),
        ("&Unpin", lambda: unpin(w), None),
    ):
        act = sub.addAction(text)
        act.triggered.connect(slot)
        if key:
            act.setShortcut(QKeySequence(key))
            w.addAction(act)
    return sub
