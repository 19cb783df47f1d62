#!/usr/bin/env python3
"""atheris harness: the HTTP/1.x decoder on arbitrary bytes.

Each input drives, from one FuzzedDataProvider:
- `RequestStream` fed the bytes cut at fuzzer-chosen points, with fuzzer-chosen holes
  (bytes that crossed the wire but were not captured), then every request taken;
- `parse_response` on a slice of the input;
- the `Assembler` over synthesized events for a few connections (OPEN, RECV/SEND with
  stream offsets that may jump, REQ_DONE with counters and sequence numbers that may skip,
  UPSTREAM, CLOSE, FORK/EXIT) in fuzzer-chosen order, then `finish()`.

Crashes are uncaught exceptions; invariants are asserted (sizes never negative, exchanges
numbered in order). Run:

    .venv/bin/python fuzz/fuzz_http.py -atheris_runs=500000 [corpus_dir]
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from ngxscope.capture.events import (
        EV_CLOSE,
        EV_EXIT,
        EV_FORK,
        EV_OPEN,
        EV_RECV,
        EV_REQ_DONE,
        EV_SEND,
        EV_SENDFILE,
        EV_UPSTREAM,
        EVF_CLIENT,
        EVF_TLS,
        RawEvent,
    )
    from ngxscope.decode.assembler import Assembler
    from ngxscope.decode.http1 import RequestStream, parse_response
    from ngxscope.model import Exchange, LifecycleEvent

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
]

KINDS = [EV_OPEN, EV_RECV, EV_SEND, EV_SENDFILE, EV_REQ_DONE, EV_CLOSE, EV_UPSTREAM, EV_FORK, EV_EXIT]


def _request_stream(fdp: atheris.FuzzedDataProvider) -> None:
    rs = RequestStream(body_limit=fdp.ConsumeIntInRange(0, 4096))
    rs.allow_midway = fdp.ConsumeBool()
    ts = 1.0
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
        if not data and fdp.remaining_bytes() == 0:
            break
        hole = (fdp.ConsumeIntInRange(0, 3) == 0 and fdp.ConsumeIntInRange(1, 5000)) or 0
        ts += 0.001
        rs.feed(data, len(data) + hole, ts, ts)
        if fdp.ConsumeBool():
            while (req := rs.take()) is not None:
                assert req.body_size >= 0 and req.head_bytes >= 0
            rs.settle()
    while (req := rs.take()) is not None:
        assert req.total_bytes >= 0


def _assembler(fdp: atheris.FuzzedDataProvider) -> None:
    out: list[Exchange] = []
    events: list[LifecycleEvent] = []
    asm = Assembler(out.append, events.append, body_limit=1024, attach_ts=0.0)
    offsets: dict[tuple[int, int], list[int]] = {}
    seqs: dict[tuple[int, int], int] = {}
    ts = 100.0
    for _ in range(fdp.ConsumeIntInRange(0, 40)):
        if fdp.remaining_bytes() == 0:
            break
        kind = KINDS[fdp.ConsumeIntInRange(0, len(KINDS) - 1)]
        pid = 10 + fdp.ConsumeIntInRange(0, 1)
        fd = fdp.ConsumeIntInRange(3, 5)
        conn_ts = fdp.ConsumeIntInRange(1, 3)
        flags = (EVF_CLIENT if fdp.ConsumeIntInRange(0, 3) else 0) | (EVF_TLS if fdp.ConsumeBool() else 0)
        key = (pid * 100 + fd, conn_ts)
        recv, sent = offsets.setdefault(key, [0, 0])
        jump = (fdp.ConsumeIntInRange(0, 7) == 0 and fdp.ConsumeIntInRange(1, 3000)) or 0  # lost events
        ts += fdp.ConsumeIntInRange(0, 1000) / 1e5
        data = b""
        length = 0
        offset = 0
        aux = 0
        seq = 0
        if kind in (EV_RECV, EV_SEND, EV_SENDFILE):
            data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)) if kind != EV_SENDFILE else b""
            length = len(data) + (fdp.ConsumeIntInRange(0, 2000) if fdp.ConsumeIntInRange(0, 5) == 0 else 0)
            if kind == EV_SENDFILE:
                length = max(1, length)
            if kind == EV_RECV:
                offset = recv + jump
                offsets[key][0] = offset + length
            else:
                offset = sent + jump
                offsets[key][1] = offset + length
        elif kind in (EV_REQ_DONE, EV_CLOSE):
            # nginx's counters only grow: a jump means events were lost, never a step back
            offset = recv + jump
            aux = sent + (fdp.ConsumeIntInRange(0, 500) if fdp.ConsumeBool() else 0)
            offsets[key] = [offset, aux]
            if kind == EV_REQ_DONE:
                seqs[key] = seq = (seqs.get(key, 0) + 1 + (fdp.ConsumeIntInRange(0, 2) if jump else 0)) % 65536
        elif kind == EV_FORK:
            aux = 10 + fdp.ConsumeIntInRange(0, 3)
        elif kind == EV_OPEN:
            aux = fdp.ConsumeIntInRange(0, 1 << 20)
        asm.feed(RawEvent(kind=kind, ts=ts, pid=pid, fd=fd, conn_ts=conn_ts, offset=offset, aux=aux,
                          length=length, flags=flags, clock=ts, seq=seq, data=data,
                          peer="127.0.0.1:1234" if kind == EV_OPEN else "", local=""))
    asm.finish(ts + 1)
    ids = [ex.id for ex in out]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for ex in out:
        assert ex.request_bytes >= 0 and (ex.response_bytes is None or ex.response_bytes >= 0), ex
        assert ex.end >= ex.start, ex


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 2)
    if which == 0:
        _request_stream(fdp)
    elif which == 1:
        head = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
        resp = parse_response(head)
        assert 0 <= resp.body_offset <= len(head) and resp.head_bytes >= 0
    else:
        _assembler(fdp)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
