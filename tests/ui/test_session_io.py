"""The window's File menu paths: open (streamed, bounded), save (redacted), export, recent, drop."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from factories import make_exchange
from ngxscope.store.session import SessionWriter
from ngxscope.ui.launch import connect_file_hooks
from ngxscope.ui.recent import recent_files
from ngxscope.ui.sessionload import load_session


def _session(path: Path, n: int, *, redacted: bool) -> list:
    exs = [make_exchange(request_headers=[("Host", "a"), ("Authorization", f"Bearer tok-{i}")])
           for i in range(n)]
    with SessionWriter(path, {"redacted": redacted, "redact_headers": ["authorization"]}) as w:
        for ex in exs:
            w.write_exchange(ex)
    return exs


def test_large_session_streams_into_a_bounded_table(window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "big.ngxs"
    exs = _session(path, 12_000, redacted=True)
    window.store.capacity = 5_000  # a small window of rows, as 200k is for a million
    seen: list[int] = []
    result = load_session(window, str(path), progress=lambda done, total: seen.append(done))
    assert result.total == 12_000 and result.kept == 5_000
    assert len(window.store) == 5_000
    assert window.store[len(window.store) - 1].id == exs[-1].id, "the newest rows are kept"
    assert sum(r.requests for r in window.agg.worker_rows()) == 12_000, "the graphs count every exchange"
    assert seen and seen[-1] > 0
    assert window.status.redaction.isVisibleTo(window) and "masked" in window.status.redaction.text()


def test_unredacted_session_is_flagged(window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "raw.ngxs"
    _session(path, 3, redacted=False)
    load_session(window, str(path))
    assert "not redacted" in window.status.redaction.text()


def test_save_masks_secrets_and_export_writes_each_format(window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    connect_file_hooks(window)
    src = tmp_path / "in.ngxs"
    _session(src, 5, redacted=False)
    load_session(window, str(src))
    saved = tmp_path / "saved.ngxs"
    window.save_requested.emit(str(saved))
    text = gzip.decompress(saved.read_bytes()).decode()
    assert "tok-1" not in text and json.loads(text.splitlines()[0])["target"]["redacted"] is True
    assert str(saved) in recent_files(window.settings)
    for fmt in ("har", "pcapng", "csv", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        window.export_requested.emit(str(out), fmt, False, True)
        data = out.read_bytes()
        assert data and b"tok-1" not in data, fmt
    har = json.loads((tmp_path / "out.har").read_text())
    assert len(har["log"]["entries"]) == 5
    window.export_requested.emit(str(tmp_path / "raw.jsonl"), "jsonl", False, False)
    assert b"tok-1" in (tmp_path / "raw.jsonl").read_bytes(), "the checkbox opts out"


def test_dropping_a_session_file_opens_it(window, qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "dropped.ngxs"
    _session(path, 2, redacted=True)
    opened: list[str] = []
    window.open_session_requested.connect(opened.append)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert opened == [str(path)]


def test_node_column_shows_for_several_hosts(window) -> None:  # type: ignore[no-untyped-def]
    from ngxscope.ui.tablemodel import COLUMN_KEYS, node_of

    col = COLUMN_KEYS.index("node")
    hh = window.table.horizontalHeader()
    assert hh.isSectionHidden(col), "a local capture has no Node column"

    class TwoHosts:
        header = None

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def poll(self):  # type: ignore[no-untyped-def]
            return [make_exchange(conn_id="root@web1|4100:11:1"), make_exchange(conn_id="root@web2|4200:9:1")], [], None
        def describe(self) -> str: return "2 hosts"
        def alive(self) -> bool: return True
        def error(self) -> None: return None
        def host_of(self, ex) -> str:  # type: ignore[no-untyped-def]
            return node_of(ex)

    window.set_source(TwoHosts())
    window.ingest()
    assert not hh.isSectionHidden(col)
    assert {window.model.data(window.model.index(r, col)) for r in range(2)} == {"root@web1", "root@web2"}


def test_background_open_matches_the_synchronous_one(window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ngxscope.ui.sessionload import load_in_background

    path = tmp_path / "bg.ngxs"
    exs = _session(path, 12_000, redacted=True)
    window.store.capacity = 5_000
    load_session(window, str(path))
    want = (window.agg.total, str(window.agg.worker_rows()), str(window.agg.series(1200).counts.tolist()))
    seen: list[int] = []
    result = load_in_background(window, str(path), progress=lambda done, total: seen.append(done))
    assert (result.total, result.kept, result.warning) == (12_000, 5_000, None)
    assert [window.store[i].id for i in (0, 4_999)] == [exs[7_000].id, exs[-1].id]
    assert (window.agg.total, str(window.agg.worker_rows()),
            str(window.agg.series(1200).counts.tolist())) == want
    assert seen and seen[-1] > 0


def test_background_open_cancels_and_reports_errors(window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from ngxscope.store.session import ReadCancelled, SessionError
    from ngxscope.ui.sessionload import load_in_background

    path = tmp_path / "c.ngxs"
    _session(path, 3_000, redacted=True)
    with pytest.raises(ReadCancelled):
        load_in_background(window, str(path), cancelled=lambda: True)
    bad = tmp_path / "bad.ngxs"
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    lines[2000] = lines[2000].replace(b'"tls":false', b'"tls":false,"surprise":1')
    bad.write_bytes(gzip.compress(b"".join(lines)))
    with pytest.raises(SessionError, match=r"line 2001: unknown key.*surprise"):
        load_in_background(window, str(bad))
