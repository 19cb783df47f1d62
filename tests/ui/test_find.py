"""Find in the detail pane (Ctrl+F) and the filter's body/header terms highlighted there."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from factories import make_exchange
from ngxscope.store.filterexpr import search_patterns
from ngxscope.ui.findbar import MATCH_COLOR


def _exchange() -> Any:
    body = (b'{"items": [1, 2, 3], "error": "error code 17: upstream timeout",\n'
            b' "detail": "the Error Code is documented", "retry": true}')
    return make_exchange(
        response_body=gzip.compress(body),
        response_headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                          ("X-Request-Id", "r-42")])


def test_search_patterns_of_a_filter() -> None:
    pats = search_patterns('status>=500 body~*"error code" header.x-request-id=r-42 '
                           "not body~zzz")
    assert [p.pattern for p in pats] == ["error code", "r\\-42"]
    assert search_patterns('body~"unterminated') == []


def test_filter_terms_and_find_bar_highlight(window: Any, qtbot: Any, shots: Path) -> None:
    ex = _exchange()
    window.load([make_exchange(), ex, make_exchange()])
    window.filter_bar.set_text('body~*"error code"')
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 1, timeout=3000)
    window.select_exchange(ex)
    pane = window.detail
    assert pane.exchange is ex
    body = pane.response.body
    sels = body.extraSelections()
    assert len(sels) == 2, "both spellings matched by the caseless term"
    assert {s.cursor.selectedText().lower() for s in sels} == {"error code"}
    # the header table: the request-id cell is not highlighted by a body term
    # Ctrl+F in the pane opens Find; its matches are added and counted
    pane.response.body.setFocus()
    window.find_or_filter()
    bar = window.find_bar
    assert bar.isVisible() and bar.edit.hasFocus()
    qtbot.keyClicks(bar.edit, "timeout")
    assert len(body.extraSelections()) == 3
    assert bar.count.text() == "3 matches"
    qtbot.keyClick(bar.edit, Qt.Key.Key_Return)
    assert bar.count.text() == "1 of 3"
    assert pane.currentWidget() is pane.response
    bar.edit.setText("r-42")
    items = [pane.response.headers.item(r, 1) for r in range(pane.response.headers.rowCount())]
    hit = next(i for i in items if i.text() == "r-42")
    assert hit.background().color() == MATCH_COLOR
    bar.edit.setText("timeout")
    pane.setCurrentWidget(pane.response)
    window.resize(1300, 900)
    qtbot.wait(50)
    assert window.grab().save(str(shots / "body-search-find.png"))
    qtbot.keyClick(bar.edit, Qt.Key.Key_Escape)
    assert not bar.isVisible()
    assert len(body.extraSelections()) == 2, "the filter's term stays highlighted"
    # elsewhere Ctrl+F still focuses the filter
    window.table.setFocus()
    window.find_or_filter()
    assert window.filter_bar.edit.hasFocus()
