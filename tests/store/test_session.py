"""The session file: writer, reader, stream writer and their failure modes."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import make_event, make_exchange
from ngxscope import __version__
from ngxscope.model import Exchange, LifecycleEvent, UpstreamAttempt
from ngxscope.store.compat import CURRENT_VERSION
from ngxscope.store.session import (
    FORMAT,
    ReadCancelled,
    Session,
    SessionError,
    SessionReader,
    SessionWriter,
    StreamWriter,
    check_header,
    parse_record,
)

TARGET = {"pid": 123, "binary": "/usr/sbin/nginx", "method": "uprobes"}


def odd_exchanges() -> list[Exchange]:
    """Exchanges with every awkward value the format must carry exactly."""
    return [
        make_exchange(),
        make_exchange(
            request_body=bytes(range(256)) * 3,
            response_body=b"\x00\xff\r\n\x1f\x8b" + os.urandom(1000),
            request_headers=[("X-Ünïcödé", "値 ✓ \U0001f600"), ("X-Dup", "1"), ("X-Dup", "2")],
            response_headers=[("Set-Cookie", 'a="b\\"c"; Path=/'), ("X-Empty", "")],
            error="upstream timed out\n(110: Connection timed out)",
            truncated=True,
        ),
        make_exchange(
            request_headers=[("X-Raw", "bad \udcff byte")],  # a surrogate-escaped raw byte
            status=None,
            reason="",
            method="",
            target="",
            upstream=[],
        ),
        make_exchange(tls=True, client="[::1]:443", upstream=[UpstreamAttempt(addr="unix:/x")]),
    ]


def write_session(path: Path, exchanges: list[Exchange], **kw: Any) -> None:
    with SessionWriter(path, TARGET, **kw) as w:
        w.write_event(make_event())
        for ex in exchanges:
            w.write_exchange(ex)
            w.write_stats({"ts": ex.end, "requests": ex.id})


def assert_same(got: list[Exchange], want: list[Exchange]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for name in Exchange.__dataclass_fields__:
            assert getattr(g, name) == getattr(w, name), name
        assert g == w


# --- round trip ------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    exchanges = odd_exchanges()
    write_session(path, exchanges)
    reader = SessionReader(path)
    assert reader.header["format"] == FORMAT
    assert reader.header["version"] == CURRENT_VERSION
    assert reader.header["tool"] == f"ngxscope {__version__}"
    assert reader.header["target"] == TARGET
    assert abs(reader.header["created"] - time.time()) < 60
    session = reader.read_all()
    assert isinstance(session, Session)
    assert_same(session.exchanges, exchanges)
    assert session.events == [make_event()]
    assert session.stats == {"t": "stats", "ts": exchanges[-1].end, "requests": exchanges[-1].id}
    assert session.complete is True
    assert session.warning is None
    assert list(reader.exchanges()) == exchanges
    assert list(reader.events()) == [make_event()]
    kinds = [r["t"] if isinstance(r, dict) else type(r).__name__ for r in reader.iter_records()]
    assert kinds[0] == "LifecycleEvent"
    assert kinds[-1] == "end"


def test_many_exchanges_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    exchanges = [make_exchange(response_body=os.urandom(500)) for _ in range(3000)]
    write_session(path, exchanges)
    assert_same(list(SessionReader(path).exchanges()), exchanges)


texts = st.text(max_size=20)
headers = st.lists(st.tuples(texts, texts), max_size=4)


@st.composite
def exchanges_st(draw: st.DrawFn) -> Exchange:
    return make_exchange(
        id=draw(st.integers(min_value=0, max_value=2**63)),
        start=draw(st.floats(allow_nan=False, min_value=0, max_value=2e9)),
        method=draw(texts),
        target=draw(texts),
        status=draw(st.none() | st.integers(100, 999)),
        request_headers=draw(headers),
        response_headers=draw(headers),
        request_body=draw(st.binary(max_size=300)),
        response_body=draw(st.binary(max_size=300)),
        error=draw(st.none() | texts),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(exchanges_st(), max_size=5))
def test_round_trip_property(tmp_path: Path, exchanges: list[Exchange]) -> None:
    path = tmp_path / "p.ngxs"
    write_session(path, exchanges, overwrite=True)
    assert_same(SessionReader(path).read_all().exchanges, exchanges)


# --- creating the file -----------------------------------------------------------------


def test_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_session(tmp_path / "s.ngxs", [make_exchange()])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "s.ngxs").st_mode) == 0o600


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    path.write_bytes(b"precious")
    with pytest.raises(SessionError, match="already exists"):
        SessionWriter(path, TARGET)
    assert path.read_bytes() == b"precious"
    path.chmod(0o644)
    write_session(path, [make_exchange()], overwrite=True)
    assert len(SessionReader(path).read_all().exchanges) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_overwrite_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "s.ngxs"
    link.symlink_to(victim)
    with pytest.raises(SessionError, match="already exists"):
        SessionWriter(link, TARGET)
    write_session(link, [], overwrite=True)
    assert victim.read_bytes() == b"keep"
    assert not link.is_symlink()


def test_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SessionError, match=r"^cannot write session file .*: Not a directory$"):
        SessionWriter(tmp_path / "file" / "s.ngxs", TARGET)
    with pytest.raises(SessionError, match="not a regular file"):
        SessionWriter(tmp_path, TARGET, overwrite=True)
    with pytest.raises(SessionError, match="already exists"):
        SessionWriter(tmp_path, TARGET)


# --- writing ---------------------------------------------------------------------------


def test_flush_by_time(tmp_path: Path) -> None:
    path = tmp_path / "live.ngxs"
    w = SessionWriter(path, TARGET, flush_interval=0.05)
    try:
        # The header is on disk at once.
        assert SessionReader(path).read_all().exchanges == []
        exchanges = [make_exchange() for _ in range(3)]
        w.write_exchange(exchanges[0])
        w.write_exchange(exchanges[1])
        time.sleep(0.1)
        w.write_exchange(exchanges[2])  # the write notices the interval passed
        session = SessionReader(path).read_all()
        assert session.exchanges == exchanges
        assert session.complete is False
        assert session.warning == "file is truncated: read 3 exchanges"
        w.write_exchange(make_exchange())
        time.sleep(0.1)
        w.maybe_flush()  # what an idle capture loop calls
        assert len(SessionReader(path).read_all().exchanges) == 4
    finally:
        w.close()
    assert SessionReader(path).read_all().complete


def test_no_flush_before_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    with SessionWriter(path, TARGET, flush_interval=3600) as w:
        w.write_exchange(make_exchange())
        assert SessionReader(path).read_all().exchanges == []
        w.flush()
        assert len(SessionReader(path).read_all().exchanges) == 1


def test_unclean_end_is_reported_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    w = SessionWriter(path, TARGET)
    w.write_exchange(make_exchange())
    w.close(clean=False)
    session = SessionReader(path).read_all()
    assert len(session.exchanges) == 1
    assert session.complete is False
    assert session.warning == "capture did not end cleanly: read 1 exchanges"


def test_context_manager_end_record(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), SessionWriter(tmp_path / "a.ngxs", TARGET) as w:
        w.write_exchange(make_exchange())
        raise RuntimeError("capture died")
    assert SessionReader(tmp_path / "a.ngxs").read_all().complete is False
    with pytest.raises(KeyboardInterrupt), SessionWriter(tmp_path / "b.ngxs", TARGET) as w:
        raise KeyboardInterrupt  # Ctrl-C ends a recording cleanly
    assert SessionReader(tmp_path / "b.ngxs").read_all().complete is True


def test_write_after_close_and_bad_stats(tmp_path: Path) -> None:
    w = SessionWriter(tmp_path / "s.ngxs", TARGET)
    with pytest.raises(ValueError):
        w.write_stats({"t": "x"})
    w.close()
    w.close()
    with pytest.raises(SessionError, match="closed"):
        w.write_exchange(make_exchange())
    assert w.exchanges_written == 0


def test_disk_full_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    exchanges = [make_exchange() for _ in range(5)]
    w = SessionWriter(path, TARGET)
    for ex in exchanges:
        w.write_exchange(ex)
    w.flush()

    def full(data: bytes) -> int:
        os.write(w._sink.fd, bytes(data)[: len(data) // 2])  # a partial write, then ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    w._sink.write = full  # type: ignore[method-assign]
    w.write_exchange(make_exchange(response_body=os.urandom(5000)))
    with pytest.raises(SessionError) as info:
        w.flush()
    assert str(info.value) == f"cannot write session file {path}: No space left on device"
    with pytest.raises(SessionError, match="earlier write failed"):
        w.write_exchange(make_exchange())
    w.close()  # quietly: the error was reported
    session = SessionReader(path).read_all()
    assert session.exchanges == exchanges
    assert session.complete is False
    assert session.warning is not None


# --- reading damaged and foreign files ---------------------------------------------------


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    full_path = tmp_path / "full.ngxs"
    exchanges = [make_exchange(response_body=os.urandom(40)) for _ in range(6)]
    write_session(full_path, exchanges, flush_interval=0)  # a sync flush after each record
    data = full_path.read_bytes()
    whole = SessionReader(full_path).read_all()
    assert whole.complete and whole.exchanges == exchanges
    cut = tmp_path / "cut.ngxs"
    seen = set()
    for n in range(len(data) + 1):
        cut.write_bytes(data[:n])
        try:
            session = SessionReader(cut).read_all()
        except SessionError as exc:
            assert "\n" not in str(exc)
            continue
        k = len(session.exchanges)
        seen.add(k)
        assert session.exchanges == exchanges[:k]
        if n == len(data):
            assert session.complete and session.warning is None
        else:
            assert not session.complete
            assert session.warning in (
                f"file is truncated: read {k} exchanges",
                f"capture did not end cleanly: read {k} exchanges",
            )
    assert seen == set(range(len(exchanges) + 1))


def test_truncated_single_block(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    exchanges = [make_exchange() for _ in range(50)]
    write_session(path, exchanges)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    session = SessionReader(path).read_all()
    assert 0 < len(session.exchanges) < 50
    assert session.exchanges == exchanges[: len(session.exchanges)]
    assert session.warning == f"file is truncated: read {len(session.exchanges)} exchanges"


def records_file(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


def header(**kw: Any) -> bytes:
    rec = {
        "t": "header",
        "format": FORMAT,
        "version": CURRENT_VERSION,
        "created": 1.0,
        "target": {},
        **kw,
    }
    return json.dumps(rec).encode() + b"\n"


def ex_line(**kw: Any) -> bytes:
    return json.dumps({"t": "exchange", **make_exchange().to_dict(), **kw}).encode() + b"\n"


def test_trailing_partial_line(tmp_path: Path) -> None:
    good = ex_line()
    path = records_file(tmp_path / "s.ngxs", [header(), good, good[:50]])
    session = SessionReader(path).read_all()
    assert len(session.exchanges) == 1
    assert session.warning == "file is truncated: read 1 exchanges"
    path = records_file(tmp_path / "t.ngxs", [header(), good, good[:-1]])  # only "\n" lost
    assert len(SessionReader(path).read_all().exchanges) == 2


def test_damaged_crc(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    write_session(path, [make_exchange()])
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    session = SessionReader(path).read_all()
    assert len(session.exchanges) == 1
    assert not session.complete
    assert session.warning is not None and session.warning.startswith("file is damaged (")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"hello world\n", "not gzip-compressed"),
        (b"\x1f", "not gzip-compressed"),
        (b"\x1f\x8b", "truncated before the end of its header"),
        (gzip.compress(b""), "is empty"),
        (gzip.compress(b"not json\n"), "no session header"),
        (gzip.compress(b"[1, 2]\n"), "no session header"),
        (gzip.compress(b'{"t": "stats"}\n'), "no session header"),
        (gzip.compress(header(format="mitmproxy")), "format 'mitmproxy'"),
        (gzip.compress(header(version="1")), "invalid format version '1'"),
        (gzip.compress(header(version=-1)), "invalid format version -1"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage!", "damaged before the end of its header"),
    ],
)
def test_garbage_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "g.ngxs"
    path.write_bytes(content)
    with pytest.raises(SessionError, match=message) as info:
        SessionReader(path).read_all()
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_newer_version(tmp_path: Path) -> None:
    path = records_file(tmp_path / "new.ngxs", [header(version=8), b'{"t":"futuristic"}\n'])
    with pytest.raises(SessionError) as info:
        SessionReader(path)
    assert str(info.value) == (
        f"{path} was written by a newer ngxscope (format version 8);"
        f" this version reads up to {CURRENT_VERSION}"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (ex_line(colour="red"), r"line 3: unknown key\(s\) in Exchange record: colour"),
        (b'{"t": "telemetry"}\n', "line 3: unknown record type 'telemetry'"),
        (b'{"x": 1}\n', 'line 3: record has no "t"'),
        (b"[]\n", "line 3: record is a JSON list"),
        (b"{oops\n", "line 3: record is not valid JSON"),
        (b'{"t": "exchange", "id": 1}\n', "line 3: bad Exchange record"),
        (ex_line(id="7"), "line 3: bad Exchange record: id cannot be str"),
        (ex_line(tls=1), "line 3: bad Exchange record: tls cannot be int"),
        (ex_line(start=None), "line 3: bad Exchange record: start cannot be NoneType"),
        (ex_line(request_body=5), "line 3: "),
        (ex_line(request_body="!!"), "line 3: "),
        (ex_line(request_headers=[["a"]]), "line 3: "),
        (ex_line(request_headers=[[1, 2]]), None),  # str() makes these valid
        (ex_line(upstream=[{"addr": 1}]), "line 3: bad UpstreamAttempt record: addr"),
        (ex_line(upstream=[{"adr": "x"}]), "line 3: .*unknown key"),
        (b'{"t": "event", "ts": 1, "kind": "x", "when": 2}\n', "line 3: unknown key"),
        (b'{"t": "event", "ts": "now", "kind": "x"}\n', "line 3: bad LifecycleEvent"),
        (b'{"t": "end", "exchanges": "1"}\n', "line 3: end record"),
        (header(), "line 3: a second header"),
        (b"\xff\xfe\n", "line 3: record is not UTF-8"),
        (b"[" * 100000 + b"\n", "line 3: record is not valid JSON"),
    ],
)
def test_bad_records_name_their_line(tmp_path: Path, line: bytes, message: str | None) -> None:
    event = json.dumps({"t": "event", **make_event().to_dict()}).encode() + b"\n"
    path = records_file(
        tmp_path / "s.ngxs", [header(), event, line, b'{"t":"end","exchanges":1}\n']
    )
    if message is None:
        assert len(SessionReader(path).read_all().exchanges) == 1
        return
    with pytest.raises(SessionError, match=message):
        SessionReader(path).read_all()


def test_record_after_end(tmp_path: Path) -> None:
    path = records_file(tmp_path / "s.ngxs", [header(), b'{"t":"end","exchanges":0}\n', ex_line()])
    with pytest.raises(SessionError, match="line 3: record after the end record"):
        SessionReader(path).read_all()


def test_end_count_mismatch_is_a_warning(tmp_path: Path) -> None:
    path = records_file(tmp_path / "s.ngxs", [header(), ex_line(), b'{"t":"end","exchanges":2}\n'])
    session = SessionReader(path).read_all()
    assert session.complete
    assert session.warning == "the end record counts 2 exchanges, the file holds 1"


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match=r"^cannot open session file .*: it is a directory$"):
        SessionReader(tmp_path)
    with pytest.raises(
        SessionError, match=r"^cannot open session file .*: No such file or directory$"
    ):
        SessionReader(tmp_path / "missing.ngxs")
    (tmp_path / "f").write_text("x")
    with pytest.raises(SessionError, match=r"^cannot open session file .*: Not a directory$"):
        SessionReader(tmp_path / "f" / "s.ngxs")
    with pytest.raises(SessionError, match="not a regular file"):
        SessionReader("/dev/null")


def test_no_permission(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    write_session(path, [])
    path.chmod(0)
    if os.geteuid() == 0:
        pytest.skip("root reads any file; the not-a-directory case covers the error path")
    with pytest.raises(SessionError, match=r"^cannot open session file .*: Permission denied$"):
        SessionReader(path)


# --- progress and cancel -----------------------------------------------------------------


def test_progress_and_cancel(tmp_path: Path) -> None:
    path = tmp_path / "s.ngxs"
    write_session(path, [make_exchange(response_body=os.urandom(2000)) for _ in range(400)])
    total = path.stat().st_size
    calls: list[tuple[int, int]] = []
    session = SessionReader(path).read_all(progress=lambda done, tot: calls.append((done, tot)))
    assert len(session.exchanges) == 400
    assert len(calls) > 3
    assert all(tot == total for _, tot in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (total, total)
    polls = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(ReadCancelled):
        SessionReader(path).read_all(cancelled=cancelled)
    assert issubclass(ReadCancelled, SessionError)


# --- the stream and parse_record ---------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_stream_writer_round_trip(binary: bool) -> None:
    buf: Any = io.BytesIO() if binary else io.StringIO()
    exchanges = odd_exchanges()
    with StreamWriter(buf, TARGET) as w:
        w.write_event(make_event())
        for ex in exchanges:
            w.write_exchange(ex)
        w.write_stats({"ts": 1.0, "lost": 0})
        w.flush()
    text = buf.getvalue()
    lines = text.splitlines()
    head = parse_record(lines[0])
    assert check_header(head, "<stdout>") == CURRENT_VERSION
    assert isinstance(head, dict) and head["target"] == TARGET
    records = [parse_record(line) for line in lines[1:]]
    assert records[0] == make_event()
    assert records[1:-2] == exchanges
    assert records[-2] == {"t": "stats", "ts": 1.0, "lost": 0}
    assert records[-1]["t"] == "end" and records[-1]["exchanges"] == len(exchanges)  # type: ignore[index]


def test_stream_writer_flushes_each_record_and_reports_a_closed_pipe() -> None:
    r, w = os.pipe()
    out = os.fdopen(w, "w")
    sw = StreamWriter(out, TARGET)
    reader = os.fdopen(r, "r")
    assert check_header(parse_record(reader.readline()), "pipe") == CURRENT_VERSION
    sw.write_exchange(make_exchange(id=99))
    got = parse_record(reader.readline())
    assert isinstance(got, Exchange) and got.id == 99
    reader.close()
    with pytest.raises(SessionError, match="cannot write the record stream: Broken pipe"):
        sw.write_exchange(make_exchange())
    try:
        out.close()
    except BrokenPipeError:
        pass


def test_parse_record() -> None:
    ex = make_exchange()
    line = json.dumps({"t": "exchange", **ex.to_dict()})
    assert parse_record(line) == ex
    assert parse_record(line.encode()) == ex
    ev = parse_record('{"t":"event","ts":1.5,"kind":"worker-exit","pid":7}')
    assert ev == LifecycleEvent(ts=1.5, kind="worker-exit", pid=7)
    v0 = {"t": "exchange", **ex.to_dict()}
    v0["req_headers"] = dict(v0.pop("request_headers"))
    assert parse_record(json.dumps(v0), version=0).request_headers == ex.request_headers  # type: ignore[union-attr]
    with pytest.raises(SessionError):
        parse_record(json.dumps(v0))
    with pytest.raises(SessionError, match="newer"):
        parse_record(line, version=CURRENT_VERSION + 1)


def test_check_header() -> None:
    ok = {"t": "header", "format": FORMAT, "version": 0}
    assert check_header(ok, "x") == 0
    bad_headers: list[Any] = [
        None,
        [],
        {"t": "stats"},
        {**ok, "format": "x"},
        {**ok, "version": True},
    ]
    for bad in bad_headers:
        with pytest.raises(SessionError):
            check_header(bad, "x")


# --- fuzz --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "v.ngxs"
    write_session(path, odd_exchanges()[:3], flush_interval=0)
    return path.read_bytes()


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "f.ngxs"


def read_or_error(path: Path) -> Session | None:
    try:
        session = SessionReader(path).read_all()
    except SessionError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    for ex in session.exchanges:
        assert isinstance(ex, Exchange)
        ex.to_dict()
    assert isinstance(session.header, dict)
    return session


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400) | st.binary(max_size=400).map(lambda b: b"\x1f\x8b\x08\x00" + b))
def test_fuzz_random_bytes(fuzz_path: Path, data: bytes) -> None:
    fuzz_path.write_bytes(data)
    read_or_error(fuzz_path)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from(["replace", "insert", "delete", "truncate"]),
)
def test_fuzz_mutations(
    valid_bytes: bytes, fuzz_path: Path, edits: list[tuple[int, int]], how: str
) -> None:
    data = bytearray(valid_bytes)
    for pos, byte in edits:
        pos %= len(data) + 1
        if how == "replace" and pos < len(data):
            data[pos] = byte
        elif how == "insert":
            data[pos:pos] = bytes([byte])
        elif how == "delete":
            del data[pos : pos + 1 + byte % 4]
        elif how == "truncate":
            del data[pos:]
    fuzz_path.write_bytes(bytes(data))
    session = read_or_error(fuzz_path)
    if session is not None and how == "truncate":
        assert session.exchanges == odd_exchanges_prefix(valid_bytes, len(session.exchanges))


def odd_exchanges_prefix(valid: bytes, k: int) -> list[Exchange]:
    records = [parse_record(line) for line in gzip.decompress(valid).splitlines()[1:]]
    return [r for r in records if isinstance(r, Exchange)][:k]
