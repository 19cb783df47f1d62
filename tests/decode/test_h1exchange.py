"""emit_summary (the summary-only fast path) against emit_h1: the same exchanges.

Streams of kernel summaries (EV_REQ_DONE with EVF_SHED|EVF_SAMPLED, the request's first
bytes attached), mixed with whole exchanges and sendfile counts, go through two assemblers:
one with the fast path, one with every summary through emit_h1. Every exchange and every
counter must be equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.capture.events import (
    EV_OPEN,
    EV_RECV,
    EV_REQ_DONE,
    EV_SEND,
    EV_SENDFILE,
    EVF_CLIENT,
    EVF_SAMPLED,
    EVF_SHED,
    RawEvent,
)
from ngxscope.decode.assembler import Assembler
from ngxscope.model import Exchange

LINES = [b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n", b"POST http://up.example:8080/p HTTP/1.0\r\n",
         b"", b"\x16\x03\x01garbage", b"HEAD https://h.example HTTP/1.1\r\n", b"GET /trunc"]

_STEP = st.tuples(
    st.sampled_from(["summary", "summary", "summary", "whole", "sendfile"]),
    st.integers(-1, 50_000),          # span in µs (-1: unknown)
    st.integers(-1, 50_000),          # span on nginx's clock in µs (-1: unknown)
    st.sampled_from([0, 200, 304, 502]),
    st.sampled_from(LINES),
    st.integers(0, 5000),             # bytes read
    st.integers(0, 90_000),           # bytes written
    st.integers(1, 3_000_000),        # µs since the previous step
    st.booleans(),                    # shed under pressure instead of sampled
)


def _events(steps: list[tuple[Any, ...]]) -> list[RawEvent]:
    flags = EVF_CLIENT
    ts = 1_700_000_000.0
    evs = [RawEvent(EV_OPEN, ts, 7, 9, 1, 0, 0, 0, flags, peer="10.0.0.1:5000", local="10.0.0.2:443")]
    recv = sent = seq = 0
    for kind, span, cspan, status, line, nread, nwrite, gap, pressure in steps:
        ts += gap / 1e6
        clock = float(int(ts * 1000)) / 1000
        if kind == "sendfile":
            evs.append(RawEvent(EV_SENDFILE, ts, 7, 9, 1, sent, 0, nwrite, flags, clock))
            sent += nwrite
            continue
        seq += 1
        if kind == "whole":
            req = b"GET /w HTTP/1.1\r\nHost: h\r\n\r\n"
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            evs.append(RawEvent(EV_RECV, ts, 7, 9, 1, recv, 0, len(req), flags, clock, data=req))
            evs.append(RawEvent(EV_SEND, ts, 7, 9, 1, sent, 0, len(resp), flags, clock, data=resp))
            recv += len(req)
            sent += len(resp)
            evs.append(RawEvent(EV_REQ_DONE, ts, 7, 9, 1, recv, sent, 200, flags, clock, seq))
            continue
        recv += nread
        sent += nwrite
        ev = RawEvent(EV_REQ_DONE, ts, 7, 9, 1, recv, sent, status,
                      flags | EVF_SHED | (0 if pressure else EVF_SAMPLED), clock, seq, data=line)
        ev.status = status
        ev.span = span / 1e6 if span >= 0 else -1.0
        ev.clock_span = cspan / 1e6 if cspan >= 0 else -1.0
        evs.append(ev)
    return evs


def _run(evs: list[RawEvent], fast: bool) -> tuple[list[dict[str, Any]], Any]:
    out: list[Exchange] = []
    asm = Assembler(out.append, None, attach_ts=0.0)
    asm.http1.summary_fast_path = fast
    for ev in evs:
        asm.feed(ev)
    return [ex.to_dict() for ex in out], asm.stats


@given(st.lists(_STEP, min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_summary_fast_path_equals_emit_h1(steps: list[tuple[Any, ...]]) -> None:
    evs = _events(steps)
    fast, fast_stats = _run(evs, True)
    slow, slow_stats = _run(evs, False)
    assert fast == slow
    assert fast_stats == slow_stats
    assert len(fast) == sum(1 for s in steps if s[0] != "sendfile")
