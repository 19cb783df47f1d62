"""The compiled ring-record parser (capture._fastevents) gives what the pure-Python reference
(capture.events.parse_batch_py) gives: equal RawEvents for real and generated records, the
same exception type where the reference raises (short records), and never an exception
where the reference has none (any bytes after a header, unknown kinds, lengths that lie)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngxscope.capture import _fastevents, compiled
from ngxscope.capture import events as E
from ngxscope.capture import reqlog as R
from ngxscope.capture import ring as ringread
from ringsample import REQLOG_SAMPLE, load_sample, reqlog_fields, reqlog_record, sockaddr

OFFSET = 1_700_000_000.25
_fastevents.prepare(E.RawEvent, R.NginxLog, {})  # done by capture.events unless NGXSCOPE_PURE_PYTHON=1
_fastevents.prepare_reqlog(R.NginxLog, R.UpstreamState, R._REQLOG_TAIL.format, R._UPSTATE.format, R.REQLOG_LAYOUT)


def both(bufs: list[Any], offset: float = OFFSET) -> tuple[Any, Any]:
    """(reference, compiled): a list of RawEvents or the exception's type."""
    out = []
    for parse in (lambda: E.parse_batch_py(bufs, offset),
                  lambda: _fastevents.parse_batch(bufs, offset, E._parse_one_py)):
        try:
            out.append(parse())
        except Exception as exc:
            out.append(type(exc))
    return out[0], out[1]


def test_the_compiled_parser_is_built_and_used() -> None:
    """scripts/setup.sh builds it (scripts/build_ext.py); a checkout without it runs, slower."""
    if compiled.wanted():
        assert E._fast is _fastevents
    else:
        assert E._fast is None


def test_recorded_records() -> None:
    recs = load_sample()
    ref, fast = both(recs)
    assert isinstance(ref, list) and len(ref) == len(recs) == 1500
    assert ref == fast
    kinds = {ev.kind for ev in ref}
    assert {E.EV_OPEN, E.EV_RECV, E.EV_SEND, E.EV_REQ_DONE, E.EV_REQ_LOG, E.EV_CLOSE} <= kinds
    assert any(ev.log is not None and ev.log.method for ev in ref)
    # memoryviews (what a zero-copy reader would hand over) parse the same
    assert both([memoryview(r) for r in recs])[1] == ref


def test_req_log_records_are_parsed_in_c() -> None:
    """EV_REQ_LOG records whole in C (none handed to `slow`) once prepare_reqlog knows their
    layout, which capture.events does whenever the compiled parser is used: a struct ev_reqlog
    or NginxLog changed without _fastevents.c fails here (its records would go to `slow`)."""
    recs = [r for r in load_sample() if r[60] == E.EV_REQ_LOG] + load_sample(REQLOG_SAMPLE)
    assert len(recs) > 100
    assert E.fast_reqlog is (E._fast is not None)
    seen: list[bytes] = []

    def slow(buf: Any, off: float) -> E.RawEvent:
        seen.append(bytes(buf))
        return E._parse_one_py(buf, off)

    ref = E.parse_batch_py(recs, OFFSET)
    assert _fastevents.parse_batch(recs, OFFSET, slow) == ref and not seen
    assert any(ev.log is not None and ev.log.rid for ev in ref)


def test_prepare_reqlog_refuses_another_layout() -> None:
    """Another struct format, constant or class shape: TypeError (capture.events then leaves
    REQ_LOG records to the reference), and what was prepared before stays."""
    args = (R.NginxLog, R.UpstreamState, R._REQLOG_TAIL.format, R._UPSTATE.format, R.REQLOG_LAYOUT)
    with pytest.raises(TypeError):
        _fastevents.prepare_reqlog(*args[:2], args[2].replace("II", "IIQ", 1), *args[3:])
    with pytest.raises(TypeError):
        _fastevents.prepare_reqlog(*args[:4], (*R.REQLOG_LAYOUT[:-1], 0x200))
    with pytest.raises(TypeError):
        _fastevents.prepare_reqlog(R.UpstreamState, R.NginxLog, *args[2:])
    _fastevents.prepare_reqlog(*args)
    recs = load_sample(REQLOG_SAMPLE)
    assert _fastevents.parse_batch(recs, OFFSET, None) == E.parse_batch_py(recs, OFFSET)


def test_recorded_req_log_records_with_upstream_states() -> None:
    """Real records of struct ev_reqlog as it is now: nginx's clock, upstream states (one and
    two attempts), locations, plain and TLS."""
    recs = load_sample(REQLOG_SAMPLE)
    ref, fast = both(recs)
    assert isinstance(ref, list) and ref == fast
    logs = [ev.log for ev in ref if ev.log is not None]
    assert len(logs) == len(recs)
    tried = [log for log in logs if log.upstream]
    assert len(tried) > 100 and any(len(log.upstream) == 2 for log in tried)
    assert all(log.upstream_count == len(log.upstream) for log in tried)
    assert all(s.peer and s.peer.startswith("127.0.0.1:") for log in tried for s in log.upstream)
    assert {log.status for log in logs} >= {200, 404, 502} and all(log.msec and log.remote for log in logs)
    assert memoryview_parse(recs) == ref
    for i, rec in enumerate(recs[::7]):
        for n in {399, 400, 401, 559, 560, 561, 720, 721, len(rec) - 1, len(rec) + 1}:
            r, f = both([rec[:n]])
            assert r == f, (i, n)
        flipped = bytearray(rec)
        flipped[(i * 37) % len(rec)] ^= 0x5A
        r, f = both([bytes(flipped)])
        assert r == f, i


def memoryview_parse(recs: list[bytes]) -> list[E.RawEvent]:
    return _fastevents.parse_batch([memoryview(r) for r in recs], OFFSET, E._parse_one_py)


DONE = E.RawEvent(E.EV_REQ_DONE, 1_796_612_820.5, 4242, 9, 1_000_001, 90, 240, 0, E.EVF_CLIENT, seq=3)


def test_req_log_values() -> None:
    """A record with what the generated ones mix: more attempts than the record holds, a
    group boundary, a peer name longer than its copy, times nginx prints as "-", a regex
    location cut short, realip's client without a port, a unix listener."""
    line = b"GET /api/items?id=7 HTTP/1.1\r\nHost: x\r\n"
    states = [(502, 14, 3, 1, -1, b"127.0.0.1:8081"), (0, R.UPSTATE_GROUP, -1, -1, -1, b""),
              (200, 300, 12, 0, 11, b"b" * R.UPSTATE_PEER_CAP)] + [(200, 5, 1, 0, 1, b"x:1/2")] * 6
    rec = reqlog_record(DONE, line=line, status=200, request_length=57, sent=438,
                        location=(0x55D0_0000_2000, 200, R.LOCF_REGEX, b"r" * R.LOC_NAME_CAP),
                        remote=(16, sockaddr("192.0.2.1:0")), clock=(1_796_612_820, 224, 1_796_612_820, 151),
                        states=states[: R.UPSTATES_MAX], nstates=len(states), unix=b"\x01\x00/run/ngx.sock")
    ref, fast = both([rec])
    assert isinstance(ref, list) and ref == fast == _fastevents.parse_batch([rec], OFFSET, None)   # all in C
    log = fast[0].log
    assert log is not None
    assert (log.request, log.method, log.uri, log.protocol) == (b"GET /api/items?id=7 HTTP/1.1", "GET",
                                                                "/api/items?id=7", "HTTP/1.1")
    assert (log.status, log.request_length, log.bytes_sent, log.msec, log.request_ms) == (
        200, 57, 438, 1_796_612_820_224, 73)
    assert log.location == "~ " + "r" * R.LOC_NAME_CAP + "\u2026" and log.remote == "192.0.2.1"
    assert log.server == "unix:/run/ngx.sock" and log.upstream_count == 9
    assert log.upstream == [R.UpstreamState("127.0.0.1:8081", 502, 3, 1, None), R.UpstreamState(None, None, None, None, None),
                            R.UpstreamState("b" * R.UPSTATE_PEER_CAP + "\u2026", 200, 12, 0, 11)] + [
        R.UpstreamState("x:1/2", 200, 1, 0, 1)] * 5


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(reqlog_fields(), st.one_of(st.none(), st.integers(0, 3000))), min_size=1, max_size=6),
       st.integers(0, 2**32 - 1), st.sampled_from([0, E.EVF_H2STREAM | E.EVF_CLIENT, E.EVF_CLIENT | E.EVF_TLS]))
def test_generated_req_log_records(specs: list[tuple[dict[str, Any], int | None]], rid: int, flags: int) -> None:
    """Generated EV_REQ_LOG records, whole or cut anywhere: the same events or exception type."""
    done = E.RawEvent(E.EV_REQ_DONE, DONE.ts, 4242, 9, 1_000_001, 90, 240, 0, flags, seq=3, rid=rid)
    recs = []
    for kw, cut in specs:
        rec = reqlog_record(done, **kw)
        recs.append(rec if cut is None else rec[:cut])
    ref, fast = both(recs)
    assert ref == fast
    if isinstance(ref, list):
        assert memoryview_parse(recs) == ref


def test_recorded_records_cut_and_mutated() -> None:
    for i, rec in enumerate(load_sample()[::5]):
        for n in {0, 1, 60, 63, 64, 65, 119, 120, 215, 216, len(rec) - 1}:
            ref, fast = both([rec[:max(0, n)]])
            assert ref == fast, (i, n)
        flipped = bytearray(rec)
        flipped[i % len(rec)] ^= 0xFF
        assert both([bytes(flipped)])[0] == both([bytes(flipped)])[1]


u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
small = st.integers(0, 600)


@st.composite
def header(draw: st.DrawFn) -> bytes:
    kind = draw(st.one_of(st.integers(0, 16), st.integers(0, 255)))
    return E._HEADER.pack(draw(u64), draw(u64), draw(u64), draw(st.one_of(st.just(0), u64)),
                          draw(st.one_of(st.just(0), u64)), draw(u32), draw(st.one_of(st.just(0), u32)),
                          draw(st.integers(-(2**31), 2**31 - 1)), draw(st.one_of(small, u32)),
                          draw(st.one_of(st.just(0), small, u32)), kind,
                          draw(st.integers(0, 255)), draw(st.integers(0, 65535)))


addresses = st.sampled_from(["10.0.0.7:51234", "127.0.0.1:80", "[::1]:443", "[2001:db8::5]:8443",
                             "[::ffff:10.1.2.3]:8080"])


unix_addresses = st.sampled_from([b"\x01\x00" + b"\0" * 26, (b"\x01\x00/run/ngx.sock").ljust(28, b"\0"),
                                  b"\x01\x00/tmp/nginx-test-abcdefghij0123"])


@st.composite
def record_bytes(draw: st.DrawFn) -> bytes:
    head = draw(header())
    tail = draw(st.one_of(
        st.binary(max_size=700),
        # a plausible sockaddr pair with lengths that may lie
        st.builds(lambda p, lo, a, b: sockaddr(p) + sockaddr(lo) + struct.pack("<II", a, b),
                  addresses, addresses, st.sampled_from([0, 7, 8, 16, 28, 2**32 - 1]), st.sampled_from([0, 16, 28])),
        # unix sockets (unnamed, a short path, a path cut at the copied bytes): the compiled
        # parser hands them to the reference's formatting
        st.builds(lambda p, lo, a, b: p + lo + struct.pack("<II", a, b),
                  unix_addresses, unix_addresses, st.sampled_from([2, 20, 28, 110]), st.sampled_from([2, 20, 110])),
        # a REQ_LOG tail whose string addresses point into, around and outside its line
        st.builds(lambda base, strs, line: struct.pack("<qQQQQ14Q", -1, 5, 200, 0, base, *strs) + line,
                  st.sampled_from([0, 4096]),
                  st.lists(st.one_of(st.integers(0, 600), st.integers(4000, 4700), u64), min_size=14, max_size=14),
                  st.binary(max_size=600)),
    ))
    # sometimes a family other than the one the tail was built for
    data = head + tail
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return data if cut is None else data[:cut]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_bytes(), min_size=1, max_size=8), st.floats(-1e10, 1e10, allow_nan=False))
def test_generated_records(recs: list[bytes], offset: float) -> None:
    ref, fast = both(recs, offset)
    assert ref == fast


@given(st.lists(st.binary(max_size=300), max_size=5))
def test_garbage(recs: list[bytes]) -> None:
    ref, fast = both(recs)
    assert ref == fast


def test_unknown_kinds_go_to_the_reference() -> None:
    """A kind the C code does not know (one added later, say) is parsed by the Python function
    it is handed; the records around it by C."""
    seen = []

    def slow(buf: Any, off: float) -> E.RawEvent:
        seen.append(bytes(buf))
        return E._parse_one_py(buf, off)

    rec = E._HEADER.pack(1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 99, 0, 1)
    recv = E._HEADER.pack(1, 2, 0, 0, 0, 6, 7, 8, 3, 3, E.EV_RECV, 2, 0) + b"GET"
    out = _fastevents.parse_batch([recv, rec, recv], 0.0, slow)
    assert seen == [rec]
    assert out == E.parse_batch_py([recv, rec, recv], 0.0)


def test_prepare_refuses_another_shape() -> None:
    from dataclasses import dataclass

    @dataclass(slots=True)
    class Other:
        kind: int

    with pytest.raises(TypeError):
        _fastevents.prepare(Other, R.NginxLog, {})
    with pytest.raises(TypeError):
        _fastevents.prepare(E.RawEvent, R.NginxLog, {"kind": 0})  # a slot too many
    _fastevents.prepare(E.RawEvent, R.NginxLog, {})


def test_a_field_added_to_raw_event_gets_its_default() -> None:
    """A field someone adds to RawEvent later (kept_by, say) is set on every compiled event."""
    from dataclasses import dataclass, fields

    @dataclass(slots=True)
    class Wider:
        kind: int
        ts: float
        pid: int
        fd: int
        conn_ts: int
        offset: int
        aux: int
        length: int
        flags: int
        clock: float = 0.0
        seq: int = 0
        data: bytes = b""
        peer: str = ""
        local: str = ""
        status: int = 0
        span: float = -1.0
        clock_span: float = -1.0
        rid: int = 0
        log: R.NginxLog | None = None
        keep: int = 0
        kept_by: str = "sample"

    assert len(fields(Wider)) == len(fields(E.RawEvent)) + 1
    try:
        _fastevents.prepare(Wider, R.NginxLog, {"kept_by": "sample"})
        rec = E._HEADER.pack(1, 2, 0, 0, 0, 6, 7, 8, 3, 3, E.EV_RECV, 2, 0) + b"GET"
        (ev,) = _fastevents.parse_batch([rec], 0.0, E._parse_one_py)
        assert type(ev) is Wider and ev.kept_by == "sample" and ev.data == b"GET"
    finally:
        _fastevents.prepare(E.RawEvent, R.NginxLog, {})


@st.composite
def ring(draw: st.DrawFn) -> tuple[bytes, int, int, int]:
    """A ring buffer's data mapping (a page of producer position, the data pages twice) with
    records (busy, discarded, any length) written from a random start; (data, start, end, size)."""
    size = draw(st.sampled_from([256, 4096]))
    start = draw(st.integers(0, 3 * size))
    data = bytearray(draw(st.binary(min_size=size, max_size=size)))
    pos = start
    for _ in range(draw(st.integers(0, 12))):
        payload = draw(st.binary(max_size=size // 4))
        bits = draw(st.sampled_from([0, 0, 0, 1 << 30, 1 << 31]))
        rec = struct.pack("<II", len(payload) | bits, 0) + payload
        rec += bytes(-len(rec) % 8)
        for i, b in enumerate(rec):
            data[(pos + i) % size] = b
        pos += len(rec)
    end = draw(st.integers(start, pos + 64))
    return bytes(64) + bytes(data) + bytes(data), start, end, size


@settings(max_examples=400)
@given(ring())
def test_drain(r: tuple[bytes, int, int, int]) -> None:
    data, start, end, size = r
    try:
        ref: Any = ringread.drain_py(memoryview(data), start, end, 64, size - 1)
    except struct.error:
        ref = struct.error
    try:
        fast: Any = _fastevents.drain(data, start, end, 64, size - 1)
    except struct.error:
        fast = struct.error
    assert fast == ref


def test_unix_socket_addresses_as_the_reference() -> None:
    """A connection on a unix listener: its path (and an unnamed peer's "unix:") as the
    reference gives them, not a bare "unix:" for every unix socket (nginx-tests' *_unix.t)."""
    path = b"\x01\x00/run/ngx.sock".ljust(28, b"\0")
    unnamed = b"\x01\x00" + b"\0" * 26
    head = E._HEADER.pack(1, 2, 3, 0, 0, 42, 0, 7, 0, 0, E.EV_OPEN, 0, 0)
    rec = head + unnamed + path + struct.pack("<II", 2, 110)
    ref, fast = both([rec])
    assert isinstance(ref, list) and ref == fast
    assert (fast[0].peer, fast[0].local) == ("unix:", "unix:/run/ngx.sock")
