"""The "Copy as" menus: curl, HTTPie, raw HTTP, Python requests (store/copyas.py renders).

`fill_copy_menu(menu, exchanges, redaction, attempts)` fills a menu for the detail pane
(one exchange: as nginx received it, and as nginx sent it to each upstream peer) or for the
table's selection (several rows become one script). The first line says whether what is
copied holds the real secrets or masked ones (from the session/stream header).
"""

from __future__ import annotations

import functools
from typing import Any

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMenu

from ngxscope.model import Exchange
from ngxscope.store.copyas import FORMATS, RequestSpec, from_attempt, from_exchange, render, script

__all__ = ["fill_copy_menu", "redaction_note"]


def redaction_note(redaction: dict[str, Any] | None, specs: list[RequestSpec]) -> str:
    """One line on the secrets in what is copied."""
    masked = sorted({n for s in specs for n in s.masked})
    if redaction and redaction.get("redacted") is False:
        return "Secrets included (recorded with --no-redact)"
    if masked:
        return f"Masked values stay masked: {', '.join(masked)} (record with --no-redact)"
    if redaction and redaction.get("redacted"):
        return "Recorded with redaction: Authorization, Cookie… would be masked"
    return "No masked values in this request"


def _copy(text: str) -> None:
    QGuiApplication.clipboard().setText(text)


def _copy_script(specs: list[RequestSpec], fmt: str) -> None:
    _copy(script(specs, fmt))


def _add_formats(menu: QMenu, specs: list[RequestSpec]) -> None:
    for key, label in FORMATS.items():
        if len(specs) == 1:
            text = render(specs[0], key)
            menu.addAction(label, functools.partial(_copy, text))
        else:
            kind = "Python script" if key == "requests" else (
                "bash script" if key in ("curl", "httpie") else "text")
            menu.addAction(f"{label} ({len(specs)} requests, {kind})",
                           functools.partial(_copy_script, specs, key))


def fill_copy_menu(menu: QMenu, exchanges: list[Exchange],
                   redaction: dict[str, Any] | None) -> None:
    """Fill `menu` with Copy-as actions for `exchanges`: the formats (several rows: one
    script) of the requests as nginx received them, then, for one exchange, a submenu per
    upstream attempt with the request as nginx sent it to that peer."""
    menu.clear()
    exchanges = [e for e in exchanges if e.method and not e.is_tcp]
    if not exchanges:
        act = menu.addAction("Nothing to copy (no HTTP request line captured)")
        act.setEnabled(False)
        return
    specs = [from_exchange(e) for e in exchanges]
    attempts = []
    if len(exchanges) == 1:
        ex = exchanges[0]
        for i, a in enumerate(ex.upstream, 1):
            if a.request_head:
                attempts.append((f"As nginx sent it to {a.addr} (attempt #{i})",
                                 from_attempt(ex, a)))
    note = menu.addAction(redaction_note(redaction, specs + [s for _t, s in attempts]))
    note.setEnabled(False)
    menu.addSeparator()
    what = "as nginx received it" if len(specs) == 1 else "as nginx received them"
    head = menu.addAction(what[0].upper() + what[1:] + ":")
    head.setEnabled(False)
    _add_formats(menu, specs)
    if attempts:
        menu.addSeparator()
    for title, spec in attempts:
        _add_formats(menu.addMenu(title), [spec])
