"""Rotating session files: size/age rotation, pruning, each file a whole readable session."""

from __future__ import annotations

from pathlib import Path

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.pipeline.rotate import RotatingSessionWriter
from ngxscope.store.session import SessionReader


def test_rotation_keeps_newest_readable_files(tmp_path: Path) -> None:
    w = RotatingSessionWriter(str(tmp_path), max_mb=0, max_age_s=0, keep=2)
    w.write_event(LifecycleEvent(ts=1.0, kind="attach", detail="2 workers"))
    for n in range(4):
        for i in range(5):
            w.write_exchange(Exchange(id=n * 5 + i, start=1.0, end=2.0, pid=1, client="c:1", server="s:2", tls=False))
        w.rotate()
    w.close()
    files = sorted(tmp_path.glob("ngxscope-*.ngxs"))
    assert len(files) == 2 and len(w.files) == 5
    for f in files:
        session = SessionReader(str(f)).read_all()
        assert session.warning in (None, "")
        assert [e.kind for e in session.events][:1] == ["attach"], "each file starts with the attach event"
    assert len(SessionReader(str(files[0])).read_all().exchanges) == 5
