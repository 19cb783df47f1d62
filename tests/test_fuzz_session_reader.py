"""Property tests for the session reader on damaged and hostile files (a few seconds).

The reader either reads a file (flagging what is incomplete) or raises `SessionError` with
one line; a truncated file yields exactly a prefix of what was written. The long-running
coverage-guided version of this is fuzz/fuzz_session.py (atheris).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.store.codec import SessionError
from ngxscope.store.session import Session, SessionReader, SessionWriter

PROPS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _exchange(i: int) -> Exchange:
    return Exchange(id=i, start=1.0 + i, end=1.25 + i, pid=7, client="127.0.0.1:9", server="127.0.0.1:80",
                    tls=bool(i % 2), method="POST", target=f"/item/{i}", version="HTTP/1.1", status=201,
                    request_headers=[("Host", "a"), ("X-I", str(i))], request_body=bytes(range(i % 7)) * 50,
                    response_body=b"\x00\xff" * i)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[Exchange]]:
    path = tmp_path_factory.mktemp("sess") / "s.ngxs"
    exchanges = [_exchange(i) for i in range(1, 41)]
    # flush often, so a cut file has many readable prefixes
    with SessionWriter(path, {"pid": 1}, flush_interval=0.0) as w:
        for ex in exchanges:
            w.write_exchange(ex)
            if ex.id % 10 == 0:
                w.write_event(LifecycleEvent(ts=ex.start, kind="reload", pid=7, detail="x"))
        w.write_stats({"events": 1})
    return path.read_bytes(), exchanges


def _read(tmp_path: Path, blob: bytes) -> Session | None:
    path = tmp_path / "f.ngxs"
    path.write_bytes(blob)
    try:
        return SessionReader(path).read_all()
    except SessionError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


def test_the_intact_file_reads_complete(written: tuple[bytes, list[Exchange]], tmp_path: Path) -> None:
    session = _read(tmp_path, written[0])
    assert session is not None and session.complete and session.warning is None
    assert session.exchanges == written[1]


@PROPS
@given(cut=st.integers(min_value=0, max_value=1 << 20))
def test_truncation_yields_a_prefix(written: tuple[bytes, list[Exchange]], tmp_path: Path, cut: int) -> None:
    blob, exchanges = written
    cut %= len(blob) + 1
    session = _read(tmp_path, blob[:cut])
    if session is None:
        return  # cut inside the header
    assert session.exchanges == exchanges[: len(session.exchanges)]
    if cut < len(blob):
        assert not session.complete or session.exchanges == exchanges


@PROPS
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(0, 255)),
                      min_size=1, max_size=8),
       cut=st.none() | st.integers(min_value=0, max_value=1 << 20))
def test_damaged_bytes_never_crash(written: tuple[bytes, list[Exchange]], tmp_path: Path,
                                   edits: list[tuple[int, int]], cut: int | None) -> None:
    buf = bytearray(written[0])
    for pos, value in edits:
        buf[pos % len(buf)] = value
    if cut is not None:
        del buf[cut % (len(buf) + 1):]
    session = _read(tmp_path, bytes(buf))
    if session is not None:
        assert session.complete or session.warning
        assert all(isinstance(ex, Exchange) for ex in session.exchanges)


@PROPS
@given(text=st.lists(st.one_of(
    st.text(max_size=80),
    st.sampled_from(['{"t":"header","format":"ngxscope-session","version":1}',
                     '{"t":"header","format":"ngxscope-session","version":3,"created":1,"tool":"x","target":{}}',
                     '{"t":"exchange","id":1}', '{"t":"event","ts":1,"kind":"reload"}', '{"t":"end"}',
                     '{"t":"stats"}', "[]", "null", '{"t":"end","exchanges":"x","ts":1}']),
), max_size=8))
def test_hostile_records_behind_valid_gzip(tmp_path: Path, text: list[str]) -> None:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz:
        gz.write("\n".join(text).encode("utf-8", "surrogatepass"))
    session = _read(tmp_path, out.getvalue())
    if session is not None:
        assert session.complete or session.warning


@PROPS
@given(blob=st.binary(max_size=512))
def test_arbitrary_bytes(tmp_path: Path, blob: bytes) -> None:
    _read(tmp_path, blob)
