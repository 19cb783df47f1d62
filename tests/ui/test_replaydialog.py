"""The Replay dialog: destinations, refusal without a typed address, the side-by-side diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factories import make_exchange, one_shot_server
from ngxscope.model import UpstreamAttempt
from ngxscope.store.replay import TAG


def test_replay_dialog_shows_the_diff(window: Any, qtbot: Any, shots: Path) -> None:
    body = b'{\n  "items": [1, 2, 3],\n  "page": 1,\n  "stock": "ok"\n}\n'
    answer = (b'{\n  "items": [1, 2],\n  "page": 1,\n  "stock": "low"\n}\n')
    port, got = one_shot_server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 5\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
    ex = make_exchange(
        server=f"127.0.0.1:{port}", status=200, reason="OK", response_body=body,
        response_headers=[("Content-Type", "application/json"), ("Cache-Control", "max-age=60"),
                          ("Content-Length", str(len(body)))],
        upstream=[UpstreamAttempt(addr="10.9.9.9:8081", status=200,
                                  request_head="GET /api/items HTTP/1.1\r\nHost: app\r\n\r\n")])
    window.load([ex])
    window.select_exchange(ex)
    assert window.detail.replay_button.isEnabled()
    dlg = window.replay(ex)
    qtbot.addWidget(dlg)
    assert dlg.choice.count() == 2 and "10.9.9.9:8081" in dlg.choice.itemText(1)
    assert dlg.start()
    qtbot.waitUntil(lambda: dlg.answer is not None, timeout=5000)
    assert got[0].endswith(f"{TAG}: {ex.id}\r\n\r\n".encode())
    text = dlg.changes.toPlainText()
    assert "200 → 503" in text
    assert "+ Retry-After: 5" in text and "- Cache-Control: max-age=60" in text
    assert '-  "stock": "ok"' in text and '+  "stock": "low"' in text
    dlg.resize(1100, 650)
    qtbot.wait(50)
    assert dlg.grab().save(str(shots / "replay-diff.png"))


def test_replay_dialog_refuses_non_loopback_untyped(window: Any, qtbot: Any) -> None:
    ex = make_exchange(server="192.0.2.7:80", method="GET")
    dlg = window.replay(ex)
    qtbot.addWidget(dlg)
    assert not dlg.start()
    assert "not a loopback address" in dlg.state.text()
    assert window.replay(make_exchange(method="")) is None


def test_replay_a_selection(window: Any, qtbot: Any) -> None:
    body = b"same"
    port1, got1 = one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsame")
    port2, got2 = one_shot_server(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail")
    a = make_exchange(server=f"127.0.0.1:{port1}", status=200, response_body=body,
                      response_headers=[("Content-Length", "4")])
    b = make_exchange(server=f"127.0.0.1:{port2}", status=200, response_body=body,
                      response_headers=[("Content-Length", "4")])
    c = make_exchange(server="192.0.2.1:80")
    dlg = window.replay_many([a, b, c])
    qtbot.addWidget(dlg)
    assert dlg.start()
    qtbot.waitUntil(lambda: dlg.finished_rows == 3, timeout=8000)
    answers = [dlg.table.item(r, 4).text() for r in range(3)]
    assert answers[0].startswith("same answer")
    assert answers[1].startswith("status, body differ")
    assert "not a loopback address" in answers[2]
    assert got1 and got2
