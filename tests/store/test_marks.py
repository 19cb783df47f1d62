"""Marks and notes: filter terms, HAR `comment` / `_mark` both ways, JSONL, the session."""

from __future__ import annotations

import io
import json
from pathlib import Path

from factories import make_exchange
from ngxscope.store.export_har import har_entry, write_har
from ngxscope.store.export_jsonl import exchange_line
from ngxscope.store.filterexpr import compile_filter
from ngxscope.store.import_har import parse_har
from ngxscope.store.session import SessionReader, SessionWriter


def test_filter_terms() -> None:
    marked = make_exchange(mark="red", note="Retried: ticket #42")
    plain = make_exchange()
    for text, want in [("marked", (True, False)), ("not marked", (False, True)),
                       ("mark=red", (True, False)), ("mark=RED", (True, False)),
                       ("mark=blue", (False, False)), ("noted", (True, False)),
                       ("note~ticket", (True, False)), ("note~Ticket", (False, False)),
                       ("note~*TICKET", (True, False)), ('note=""', (False, True))]:
        pred = compile_filter(text)
        assert (pred(marked), pred(plain)) == want, text


def test_har_comment_and_mark_round_trip() -> None:
    ex = make_exchange(mark="green", note="slow since the deploy ✓")
    entry = har_entry(ex)
    assert entry["comment"] == "slow since the deploy ✓" and entry["_mark"] == "green"
    assert "comment" not in har_entry(make_exchange())
    out = io.BytesIO()
    write_har([ex, make_exchange()], out)
    back = parse_har(json.loads(out.getvalue()), "x.har").exchanges
    assert (back[0].mark, back[0].note) == ("green", "slow since the deploy ✓")
    assert (back[1].mark, back[1].note) == ("", "")
    # a browser's HAR: a comment on an entry becomes its note; an unknown mark is ignored
    doc = json.loads(out.getvalue())
    doc["log"]["entries"][1]["comment"] = "from DevTools"
    doc["log"]["entries"][1]["_mark"] = "chartreuse"
    other = parse_har(doc, "y.har").exchanges[1]
    assert (other.mark, other.note) == ("", "from DevTools")


def test_jsonl_and_session_keep_them(tmp_path: Path) -> None:
    ex = make_exchange(mark="blue", note="a\nb")
    rec = json.loads(exchange_line(ex))
    assert rec["mark"] == "blue" and rec["note"] == "a\nb"
    path = tmp_path / "s.ngxs"
    with SessionWriter(path, {}) as w:
        w.write_exchange(ex)
    (back,) = SessionReader(path).read_all().exchanges
    assert (back.mark, back.note) == ("blue", "a\nb")
