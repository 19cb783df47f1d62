"""The whole user-space path gives the same answers compiled and pure: ring-buffer records
-> RawEvents (capture._fastevents or parse_batch_py) -> Assembler (HTTP/1 heads through
decode._fasthttp1 or parse_head_py) -> exchanges, lifecycle events, decoder counters and the
session lines (store.codec.encode_exchange), compared byte for byte. Streams: the recorded
sample, generated connections (keep-alive, pipelined, chunked bodies, 100-continue,
malformed requests, garbage, payload caps, lost events), summary-only records (the kernel's
EV_REQ_DONE with the request's first bytes), nginx's own values (EV_REQ_LOG ahead of its
EV_REQ_DONE: upstream attempts, locations, clock) and cut or flipped records."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngxscope.capture import events as E
from ngxscope.decode import _fastmodel, emitter, http1
from ngxscope.decode.assembler import Assembler
from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.store.codec import encode_exchange, encode_exchange_py
from ringsample import load_sample, record, reqlog_fields, reqlog_record

from . import streams as S

COMPILED_HEAD = http1.parse_head
COMPILED_NEW = emitter.new_exchange


@contextmanager
def path(pure: bool) -> Iterator[None]:
    http1.parse_head = http1.parse_head_py if pure else COMPILED_HEAD  # type: ignore[assignment]
    emitter.new_exchange = emitter.new_exchange_py if pure else COMPILED_NEW
    try:
        yield
    finally:
        http1.parse_head = COMPILED_HEAD  # type: ignore[assignment]
        emitter.new_exchange = COMPILED_NEW


def run(records: list[bytes], pure: bool) -> Any:
    """What the capture makes of `records`: (session lines, exchanges, events, counters), or
    the exception's type and message."""
    with path(pure):
        try:
            evs = (E.parse_batch_py if pure else E.parse_batch)(records, 0.0)
            exchanges: list[Exchange] = []
            lifecycle: list[LifecycleEvent] = []
            asm = Assembler(exchanges.append, lifecycle.append, attach_ts=0.0, body_limit=4096)
            for ev in evs:
                asm.feed(ev)
            asm.finish(S.BASE_TS + 1000)
        except Exception as exc:
            return type(exc).__name__, str(exc)
    encode = encode_exchange_py if pure else encode_exchange  # store._fastcodec when built
    return [encode(x) for x in exchanges], exchanges, lifecycle, dataclasses.asdict(asm.stats)


def same(records: list[bytes]) -> Any:
    ref = run(records, pure=True)
    assert run(records, pure=False) == ref
    return ref


def test_compiled_path_differs_from_pure_in_nothing_but_code() -> None:
    assert E.parse_batch is not E.parse_batch_py or E._fast is None
    assert http1.parse_head is not http1.parse_head_py or http1._fast is None
    assert isinstance(emitter.new_exchange, _fastmodel.Builder) or emitter.new_exchange is emitter.new_exchange_py


values = st.tuples(st.integers(), st.floats(allow_nan=False), st.floats(allow_nan=False), st.integers(),
                   st.text(max_size=5), st.text(max_size=5), st.booleans(), st.text(max_size=5), st.integers(),
                   st.one_of(st.none(), st.text(max_size=5)), st.one_of(st.none(), st.text(max_size=5)))


@given(values)
def test_compiled_exchange_constructor(args: tuple[Any, ...]) -> None:
    """The C constructor gives what Exchange(...) gives; each exchange its own lists."""
    build = _fastmodel.Builder(Exchange, *emitter._builder_spec())
    a, b = build(*args), emitter.new_exchange_py(*args)
    assert a == b and encode_exchange(a) == encode_exchange(b)
    a.request_headers.append(("X", "1"))
    assert build(*args).request_headers == [] and build(*args).upstream is not build(*args).upstream


def test_compiled_constructor_refuses_another_shape() -> None:
    import pytest

    given_, defaults, factories = emitter._builder_spec()
    with pytest.raises(TypeError):
        _fastmodel.Builder(Exchange, given_[1:], defaults, factories)   # a slot left out
    with pytest.raises(TypeError):
        _fastmodel.Builder(Exchange, (*given_[:-1], "nope"), defaults, factories)
    build = _fastmodel.Builder(Exchange, given_, defaults, factories)
    with pytest.raises(TypeError):
        build(1, 2)


def test_recorded_sample() -> None:
    _, exchanges, _, stats = same(load_sample())
    assert len(exchanges) > 150 and stats["exchanges"] == len(exchanges)
    assert any(x.upstream for x in exchanges) and any(x.request_body_size for x in exchanges)


# -- generated connections ------------------------------------------------------------------
REQUESTS = [S.GET_INDEX, S.GET_ITEMS, S.GET_LOGO, S.POST_UPLOAD, S.POST_CHUNKED, S.PUT_CHUNKED_TRAILERS,
            S.HEAD_INDEX, S.POST_EXPECT, S.OPTIONS_STAR, S.GET_ABSOLUTE, S.GET_FOLDED, S.GET_BARE_LF]
REQUEST_BYTES = st.one_of(st.sampled_from([r.wire for r in REQUESTS]),
                          st.sampled_from(sorted(S.MALFORMED_STREAMS.values())),
                          st.sampled_from(sorted(S.GARBAGE_STREAMS.values())),
                          st.binary(max_size=200))
RESPONSES = st.one_of(st.sampled_from([S.ok("a"), S.CHUNKED_RESPONSE, S.NOT_MODIFIED, S.NO_CONTENT, S.CREATED,
                                       S.BAD_REQUEST, S.CONTINUE + S.ok("b"), S.HEAD_RESPONSE, None]),
                      st.binary(max_size=200))


@st.composite
def connection(draw: st.DrawFn, fd: int) -> list[E.RawEvent]:
    specs = draw(st.lists(st.tuples(REQUEST_BYTES, RESPONSES), min_size=1, max_size=5))
    pipelined = draw(st.booleans()) and len(specs) > 1
    split = draw(st.sampled_from([None, 1, 7, 64]))
    events = S.build_events(specs, fd=fd, conn_ts=1_000_000 + fd, t0=S.BASE_TS + fd * 0.01,
                            split=None if split is None else S.every(split),
                            cap=draw(st.sampled_from([None, 16, 300])),
                            pipeline=[len(specs)] if pipelined else None,
                            proxied=draw(st.sets(st.integers(0, len(specs) - 1), max_size=2)))
    lost = draw(st.sets(st.integers(0, len(events) - 1), max_size=2))
    return S.drop(events, lambda i, _: i in lost)


@st.composite
def summary_connection(draw: st.DrawFn, fd: int) -> list[bytes]:
    """An EV_OPEN then kernel summaries only: exchanges sampled out or shed."""
    t = conn_ts = int((S.BASE_TS + 0.5 + fd * 0.01) * 1e9)
    recs = [record(E.RawEvent(E.EV_OPEN, t / 1e9, 4242, fd, conn_ts, 0, 0, 0, E.EVF_CLIENT, peer="10.0.0.9:4000",
                              local="10.0.0.1:80"))]
    recvd = sent = 0
    for seq in range(1, draw(st.integers(1, 5)) + 1):
        t += 1_000_000
        line = draw(st.one_of(st.sampled_from([r.wire for r in REQUESTS]), st.binary(max_size=140)))
        recvd += draw(st.integers(0, 400))
        sent += draw(st.integers(0, 900))
        flags = E.EVF_CLIENT | E.EVF_SHED | draw(st.sampled_from([0, E.EVF_SAMPLED]))
        ev = E.RawEvent(E.EV_REQ_DONE, t / 1e9, 4242, fd, conn_ts, recvd, sent, 0, flags,
                        clock=draw(st.sampled_from([0.0, t / 1e9])), seq=seq, data=line[: E.LINE_CAP],
                        status=draw(st.sampled_from([0, 200, 404, 502])),
                        span=draw(st.sampled_from([-1.0, 0.000041])), clock_span=draw(st.sampled_from([-1.0, 0.001])))
        recs.append(record(ev))
    return recs


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_generated_streams(data: st.DataObject) -> None:
    conns = [data.draw(connection(fd)) for fd in range(data.draw(st.integers(1, 3)))]
    order = data.draw(st.permutations([k for k, evs in enumerate(conns) for _ in evs]))
    records = [record(ev) for ev in S.interleave(conns, order)]
    for fd in range(10, 10 + data.draw(st.integers(0, 2))):
        records += data.draw(summary_connection(fd))
    same(records)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_generated_streams_with_nginx_logs(data: st.DataObject) -> None:
    """Most exchanges' EV_REQ_LOG ahead of their EV_REQ_DONE (as the kernel writes them), some
    cut short: what they tell the exchanges (attempts, location, $status...) the same."""
    conns = [data.draw(connection(fd)) for fd in range(data.draw(st.integers(1, 2)))]
    order = data.draw(st.permutations([k for k, evs in enumerate(conns) for _ in evs]))
    records = [record(ev) for ev in S.interleave(conns, order)]
    records += data.draw(summary_connection(10))
    out = []
    for rec in records:
        if rec[60] == E.EV_REQ_DONE and data.draw(st.integers(0, 3)):
            (done,) = E.parse_batch_py([rec], 0.0)
            log = reqlog_record(done, **data.draw(reqlog_fields()))
            out.append(log[: data.draw(st.integers(0, len(log)))] if data.draw(st.integers(0, 9)) == 0 else log)
        out.append(rec)
    same(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_records(data: st.DataObject) -> None:
    """Records cut short, flipped bytes, garbage after a header: both paths fail alike (a
    short record is struct.error on both) or agree on what they make of it."""
    records = [record(ev) for ev in S.build_events([(S.POST_CHUNKED.wire, S.ok("a")), (S.GET_ITEMS.wire, S.ok("b"))])]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(records) - 1))
        rec = bytearray(records[i])
        what = data.draw(st.sampled_from(["cut", "flip", "tail", "kind"]))
        if what == "cut":
            rec = rec[: data.draw(st.integers(0, len(rec)))]
        elif what == "flip" and rec:
            rec[data.draw(st.integers(0, len(rec) - 1))] ^= data.draw(st.integers(1, 255))
        elif what in ("tail", "flip"):
            rec += data.draw(st.binary(max_size=300))
        elif len(rec) > 60:
            struct.pack_into("<B", rec, 60, data.draw(st.integers(0, 20)))
        records[i] = bytes(rec)
    same(records)
