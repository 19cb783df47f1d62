"""A sampled-out exchange a keep rule held: the kernel sends what it staged of it as ordinary
RECV/SEND records (EVF_STAGED), cut at STAGE_CAP bytes each way, lengths whole."""

from __future__ import annotations

from ngxscope.capture.events import (
    EV_OPEN,
    EV_RECV,
    EV_REQ_DONE,
    EV_SEND,
    EVF_CLIENT,
    EVF_STAGED,
    EVF_TRUNCATED,
    KEEP_ERROR,
    KEEP_SLOW,
    STAGE_CAP,
    RawEvent,
)
from ngxscope.decode.assembler import Assembler
from ngxscope.decode.handlers.http1 import STAGED_CUT
from ngxscope.model import Exchange

REQ = b"GET /fail/502 HTTP/1.1\r\nHost: h\r\nX-Lab: 7\r\n\r\n"
HEAD = b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\nContent-Length: 5000\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _run(staged: list[tuple[bytes, int]], plain: bool) -> list[Exchange]:
    """One connection: a kept exchange whose (request, response) were staged, each given
    as (bytes held, bytes moved); then, when `plain`, an ordinary exchange."""
    f = EVF_CLIENT
    ts = 1_700_000_000.0
    evs = [RawEvent(EV_OPEN, ts, 7, 9, 1, 0, 0, 0, f, peer="10.0.0.1:5000", local="10.0.0.2:80")]
    offs = [0, 0]
    for i, (kind, (data, moved)) in enumerate(zip((EV_RECV, EV_SEND), staged, strict=True)):
        flags = f | EVF_STAGED | (EVF_TRUNCATED if len(data) < moved else 0)
        evs.append(RawEvent(kind, ts, 7, 9, 1, offs[i], 0, moved, flags, ts, data=data))
        offs[i] += moved
    status = int(staged[1][0][9:12])
    done = RawEvent(EV_REQ_DONE, ts, 7, 9, 1, offs[0], offs[1], status, f, ts, 1)
    done.status, done.keep = status, KEEP_ERROR | KEEP_SLOW
    evs.append(done)
    if plain:
        evs.append(RawEvent(EV_RECV, ts, 7, 9, 1, offs[0], 0, len(REQ), f, ts, data=REQ))
        evs.append(RawEvent(EV_SEND, ts, 7, 9, 1, offs[1], 0, len(OK), f, ts, data=OK))
        evs.append(RawEvent(EV_REQ_DONE, ts, 7, 9, 1, offs[0] + len(REQ), offs[1] + len(OK), 200, f, ts, 2))
    out: list[Exchange] = []
    asm = Assembler(out.append, None, attach_ts=0.0)
    for ev in evs:
        asm.feed(ev)
    return out


def test_a_staged_exchange_cut_by_the_kernel_says_so() -> None:
    body = b"x" * 5000
    resp = (HEAD + body)[:STAGE_CAP]
    kept, after = _run([(REQ, len(REQ)), (resp, len(HEAD) + len(body))], plain=True)
    assert (kept.method, kept.target, kept.status, kept.kept_by) == ("GET", "/fail/502", 502, "error,slow")
    assert ("X-Lab", "7") in kept.request_headers
    assert kept.response_headers == [("Server", "nginx"), ("Content-Length", "5000")]
    assert kept.response_bytes == len(HEAD) + 5000 and kept.request_bytes == len(REQ)
    assert kept.truncated and kept.error == STAGED_CUT and not kept.summary_only
    assert kept.response_body == body[: STAGE_CAP - len(HEAD)]
    # the next exchange, captured whole, carries no trace of it
    assert (after.status, after.error, after.truncated, after.kept_by) == (200, None, False, None)


def test_a_staged_exchange_that_fit_is_whole() -> None:
    (kept,) = _run([(REQ, len(REQ)), (OK, len(OK))], plain=False)
    assert kept.status == 200 and kept.response_body == b"ok"
    assert kept.error is None and not kept.truncated and kept.kept_by == "error,slow"
