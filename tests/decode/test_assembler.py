"""Assembler: whole recorded connections, as the capture delivers them, become exact Exchanges."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxscope.decode.http1 import parse_response
from ngxscope.model import Exchange

from . import streams as S
from .streams import EV_RECV, EV_REQ_DONE, EV_SEND, assemble, build_events, drop, every, nth


def key(x: Exchange) -> dict:
    """What must not depend on how the bytes were cut, nor on other connections."""
    d = x.to_dict()
    for k in ("id", "start", "end", "duration_ms", "nginx_ms"):
        d.pop(k, None)
    return d


def check(x: Exchange, req: S.Req, resp: bytes, *, discarded: bool = False) -> None:
    """`x` is `req` answered by `resp`, whole, with nginx's sizes."""
    head = parse_response(resp)
    assert (x.method, x.target, x.version) == (req.method, req.target, req.version)
    assert x.request_headers == list(req.headers)
    assert x.request_bytes == (req.head_bytes if discarded else req.total_bytes)
    assert x.request_body == req.body and x.request_body_size == req.body_size
    assert (x.status, x.reason, x.response_headers) == (head.status, head.reason, head.headers)
    assert x.response_bytes == len(resp)
    assert x.response_body == resp[head.body_offset :]
    assert x.response_body_size == len(resp) - head.head_bytes
    assert x.error is None and x.truncated is False


def target_req(path: str) -> S.Req:
    return S.request("GET", path, [("Host", "shop.example.test"), ("Accept", "*/*")])


FOUR = [target_req(f"/r{i}") for i in range(4)]
FOUR_CONV = [(r.wire, S.ok(r.target)) for r in FOUR]
KEEPALIVE = [(S.GET_INDEX.wire, S.ok("/")), (S.GET_ITEMS.wire, S.CHUNKED_RESPONSE),
             (S.GET_LOGO.wire, S.NOT_MODIFIED), (S.HEAD_INDEX.wire, S.HEAD_RESPONSE),
             (S.DELETE_CLOSE.wire, S.NO_CONTENT)]
KEEPALIVE_REQS = [S.GET_INDEX, S.GET_ITEMS, S.GET_LOGO, S.HEAD_INDEX, S.DELETE_CLOSE]


def assert_paired_by_marker(exchanges: list[Exchange]) -> None:
    """No exchange carries the response written for another request."""
    for x in exchanges:
        if x.response_body.startswith(b"resp:") and x.method:
            assert x.response_body == f"resp:{x.target}\n".encode(), (x.target, x.response_body)


# -- whole connections ---------------------------------------------------------------------------
SPLITS = {"whole": None, "bytewise": every(1), "every7": every(7), "every64": every(64),
          "at": S.at(1, 17, 120, 230)}


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_keepalive_connection(split: str) -> None:
    events = build_events(KEEPALIVE, split=SPLITS[split])
    out = assemble(events)
    assert len(out) == 5
    for i, (x, req, (_, resp)) in enumerate(zip(out, KEEPALIVE_REQS, KEEPALIVE, strict=True)):
        check(x, req, resp)
        assert x.conn_seq == i and x.id == i + 1 and x.pid == 4242
        assert (x.client, x.server, x.tls, x.conn_id) == ("10.0.0.7:51234", "10.0.0.1:8080", False, "4242:9:1000001")
        assert x.host == "shop.example.test"
    assert [x.status for x in out] == [200, 200, 304, 200, 204]
    assert out[3].response_body == b"" and out[3].response_body_size == 0  # HEAD
    assert [key(x) for x in out] == [key(x) for x in assemble(build_events(KEEPALIVE))]


def test_times_follow_reads_and_writes() -> None:
    events = build_events(KEEPALIVE[:2])
    first, second = assemble(events)
    recv0, done0 = events[nth(events, EV_RECV, 0)], events[nth(events, EV_REQ_DONE, 0)]
    # it ends when nginx finished it ($msec): the completion, right after its last write
    assert first.start == recv0.ts and first.end == done0.ts > events[nth(events, EV_SEND, 0)].ts
    assert second.start == events[nth(events, EV_RECV, 1)].ts > done0.ts


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_pipelined_requests_pair_in_order(split: str) -> None:
    conv = [*FOUR_CONV, (S.POST_UPLOAD.wire, S.ok(S.POST_UPLOAD.target)), (S.HEAD_INDEX.wire, S.HEAD_RESPONSE)]
    events = build_events(conv, pipeline=[3, 3], split=SPLITS[split])
    out = assemble(events)
    for x, req, (_, resp) in zip(out[:4], FOUR, conv[:4], strict=True):
        check(x, req, resp)
    check(out[4], S.POST_UPLOAD, conv[4][1], discarded=True)
    check(out[5], S.HEAD_INDEX, S.HEAD_RESPONSE)
    assert len(out) == 6
    assert_paired_by_marker(out)
    dones = [e for e in events if e.kind == EV_REQ_DONE]
    assert out[1].start == dones[0].ts and out[2].start == dones[1].ts  # nginx starts it then
    assert out[4].start == dones[3].ts


def test_http10_and_connection_close() -> None:
    a = assemble(build_events([(S.GET_10.wire, S.HTTP10_RESPONSE)]))
    b = assemble(build_events([(S.GET_INDEX.wire, S.ok("/")), (S.DELETE_CLOSE.wire, S.CLOSE_RESPONSE)]))
    check(a[0], S.GET_10, S.HTTP10_RESPONSE)
    assert a[0].host == ""
    check(b[1], S.DELETE_CLOSE, S.CLOSE_RESPONSE)


def test_absolute_target_gives_host() -> None:
    (x,) = assemble(build_events([(S.GET_ABSOLUTE.wire, S.ok(S.GET_ABSOLUTE.target))]))
    assert x.host == "other.example.test:8080"


# -- bodies --------------------------------------------------------------------------------------
@pytest.mark.parametrize("proxied", [False, True])
@pytest.mark.parametrize("req", [S.POST_UPLOAD, S.POST_CHUNKED, S.PUT_CHUNKED_TRAILERS], ids=lambda r: r.method + r.target)
def test_request_body_discarded_or_proxied(req: S.Req, proxied: bool) -> None:
    conv = [(req.wire, S.CREATED), (S.GET_ITEMS.wire, S.CHUNKED_RESPONSE)]
    out = assemble(build_events(conv, proxied=[0] if proxied else [], split=every(100)))
    check(out[0], req, S.CREATED, discarded=not proxied)
    check(out[1], S.GET_ITEMS, S.CHUNKED_RESPONSE)


@pytest.mark.parametrize("proxied", [False, True])
def test_expect_100_continue(proxied: bool) -> None:
    head, body = S.POST_EXPECT.wire[: S.POST_EXPECT.head_bytes], S.POST_EXPECT.body
    conv: list = [[("recv", head), ("send", S.CONTINUE), ("recv", body), ("send", S.CREATED)],
                  (S.GET_LOGO.wire, S.NOT_MODIFIED)]
    out = assemble(build_events(conv, proxied=[0] if proxied else []))
    check(out[0], S.POST_EXPECT, S.CONTINUE + S.CREATED, discarded=not proxied)
    assert out[0].status == 201 and out[0].response_bytes == len(S.CONTINUE) + len(S.CREATED)
    assert out[0].response_body == b"resp:/api/orders\n"
    check(out[1], S.GET_LOGO, S.NOT_MODIFIED)


def test_answered_before_body_read() -> None:
    """nginx answers (413, or a static file) before the body arrives; it is not a request."""
    head, body = S.POST_UPLOAD.wire[: S.POST_UPLOAD.head_bytes], S.POST_UPLOAD.body
    conv: list = [[("recv", head), ("send", S.BAD_REQUEST)], (body + S.GET_ITEMS.wire, S.ok(S.GET_ITEMS.target))]
    first, second = assemble(build_events(conv))
    assert (first.method, first.status, first.request_bytes) == ("POST", 400, S.POST_UPLOAD.head_bytes)
    assert second.target == S.GET_ITEMS.target and second.status == 200 and second.error is None


def test_payload_cap_keeps_sizes_exact() -> None:
    conv = [(S.POST_UPLOAD.wire, S.CREATED), (S.GET_ITEMS.wire, S.ok(S.GET_ITEMS.target) + b"x" * 500)]
    out = assemble(build_events(conv, cap=260, proxied=[0]))
    assert out[0].request_bytes == S.POST_UPLOAD.total_bytes and out[0].truncated
    assert out[0].request_body == S.POST_UPLOAD.body[: 260 - S.POST_UPLOAD.head_bytes]
    assert out[1].response_bytes == len(conv[1][1]) and out[1].status == 200 and out[1].truncated
    assert out[0].error is None and out[1].error is None


# -- malformed and other connections -----------------------------------------------------------------
def three_connections() -> tuple[list[list], list[list]]:
    """A 400 for garbage, a keep-alive client, a client sending bodies: events and conversations."""
    bad = [(S.MALFORMED_STREAMS["foo"], S.BAD_REQUEST)]
    good = KEEPALIVE
    posts = [(S.POST_UPLOAD.wire, S.CREATED), (S.TLS_CLIENT_HELLO, S.BAD_REQUEST)]
    convs = [bad, good, posts]
    events = [build_events(c, fd=10 + i, conn_ts=500 + i, split=every(50 + 13 * i), t0=S.BASE_TS + i / 7,
                           proxied=[0] if i == 2 else []) for i, c in enumerate(convs)]
    return events, convs


def by_conn(out: list[Exchange]) -> dict[str, list[dict]]:
    res: dict[str, list[dict]] = {}
    for x in out:
        res.setdefault(x.conn_id, []).append(key(x))
    return res


def test_malformed_request_does_not_disturb_other_connections() -> None:
    events, _ = three_connections()
    order = [k for n in range(max(map(len, events))) for k in range(3) if n < len(events[k])]
    out = assemble(S.interleave(events, order))
    conns = {x.conn_id: [y for y in out if y.conn_id == x.conn_id] for x in out}
    (bad,) = conns["4242:10:500"]
    assert bad.method == "" and bad.error and "malformed" in bad.error and bad.status == 400
    assert bad.request_bytes == len(S.MALFORMED_STREAMS["foo"])
    for x, req, (_, resp) in zip(conns["4242:11:501"], KEEPALIVE_REQS, KEEPALIVE, strict=True):
        check(x, req, resp)
    post, hello = conns["4242:12:502"]
    check(post, S.POST_UPLOAD, S.CREATED)
    assert hello.method == "" and hello.error and hello.status == 400
    assert hello.request_bytes == len(S.TLS_CLIENT_HELLO)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_random_interleavings_give_same_exchanges(data: st.DataObject) -> None:
    events, _ = three_connections()
    expected = by_conn([x for evs in events for x in assemble(evs)])
    order = data.draw(st.permutations([k for k, evs in enumerate(events) for _ in evs]))
    assert by_conn(assemble(S.interleave(events, order))) == expected


# -- lost events ---------------------------------------------------------------------------------------
def test_lost_send_of_response_head() -> None:
    events = build_events(FOUR_CONV)
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_SEND, 1)))
    assert [x.target for x in out] == [r.target for r in FOUR]
    assert out[1].status is None and out[1].error and out[1].truncated
    assert out[1].response_bytes == len(FOUR_CONV[1][1])
    for k in (0, 2, 3):
        check(out[k], FOUR[k], FOUR_CONV[k][1])


def test_lost_send_inside_response_body() -> None:
    conv = [(S.GET_ITEMS.wire, S.ok(S.GET_ITEMS.target) + b"y" * 300), (S.GET_LOGO.wire, S.NOT_MODIFIED)]
    events = build_events(conv, split=every(64))
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_SEND, 3)))
    assert out[0].status == 200 and out[0].truncated and out[0].response_bytes == len(conv[0][1])
    assert out[0].response_body_size == len(conv[0][1]) - parse_response(conv[0][1]).head_bytes
    check(out[1], S.GET_LOGO, S.NOT_MODIFIED)


def test_lost_recv_inside_request_body() -> None:
    conv = [(S.POST_UPLOAD.wire, S.CREATED), (S.GET_ITEMS.wire, S.ok(S.GET_ITEMS.target))]
    events = build_events(conv, split=every(100), proxied=[0])
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_RECV, 2)))
    assert out[0].target == "/upload?name=blob.bin" and out[0].truncated and out[0].status == 201
    assert out[0].request_bytes == S.POST_UPLOAD.total_bytes
    assert out[0].request_body_size == S.POST_UPLOAD.body_size
    check(out[1], S.GET_ITEMS, conv[1][1])


@pytest.mark.parametrize("n", [0, 1, 3])
def test_lost_recv_of_whole_request(n: int) -> None:
    events = build_events(FOUR_CONV)
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_RECV, n)))
    assert len(out) == 4 and out[n].method == "" and out[n].error == "request not captured"
    assert out[n].response_bytes == len(FOUR_CONV[n][1]) and out[n].status == 200
    for k in set(range(4)) - {n}:
        check(out[k], FOUR[k], FOUR_CONV[k][1])


def test_lost_recv_of_whole_request_keeps_size() -> None:
    events = build_events(FOUR_CONV)
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_RECV, 1)))
    assert out[1].request_bytes == FOUR[1].total_bytes


@pytest.mark.parametrize("pipeline", [None, [4]])
def test_lost_recv_inside_head(pipeline: list[int] | None) -> None:
    events = build_events(FOUR_CONV, pipeline=pipeline, split=every(40))
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_RECV, 1)))  # bytes 40..80
    assert len(out) == 4 and out[0].error and out[0].truncated
    assert [x.response_bytes for x in out] == [len(r) for _, r in FOUR_CONV]
    for x in out:  # never silently paired with another request's response
        if x.method and x.response_body != f"resp:{x.target}\n".encode():
            assert x.error, (x.target, x.response_body)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lost_req_done_flags_exchanges(n: int) -> None:
    events = build_events(FOUR_CONV)
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_REQ_DONE, n)))
    assert [x.target for x in out] == [r.target for r in FOUR]
    assert out[n].error and out[n + 1].error
    assert sum(x.response_bytes for x in out) == sum(len(r) for _, r in FOUR_CONV)
    for k in set(range(4)) - {n, n + 1}:
        check(out[k], FOUR[k], FOUR_CONV[k][1])


@pytest.mark.parametrize("pipeline", [None, [4]])
def test_lost_req_done_never_pairs_wrong_response(pipeline: list[int] | None) -> None:
    events = build_events(FOUR_CONV, pipeline=pipeline)
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_REQ_DONE, 1)))
    assert_paired_by_marker(out)


POST_PLAIN = S.request("POST", "/form", [("Host", "a"), ("Content-Length", "300")], b"field=" + b"x" * 294)


@pytest.mark.parametrize("pipeline", [None, [1, 2, 2], [5]])
def test_any_single_lost_event_is_exact_or_flagged(pipeline: list[int] | None) -> None:
    """Drop each event in turn (EV_UPSTREAM aside: its loss is undetectable by design)."""
    conv = [*FOUR_CONV, (POST_PLAIN.wire, S.ok(POST_PLAIN.target))]
    reqs = [*FOUR, POST_PLAIN]
    events = build_events(conv, split=every(40), pipeline=pipeline, proxied=[4])
    for k, lost in enumerate(events):
        if lost.kind == S.EV_UPSTREAM:
            continue
        out = assemble(drop(events, lambda i, e, k=k: i == k))
        assert len(out) == 5, k
        if k != nth(events, EV_REQ_DONE, 4):  # see test_lost_last_req_done_close_gives_size
            assert sum(x.response_bytes for x in out) == sum(len(r) for _, r in conv), k
        for x, req, (_, resp) in zip(out, reqs, conv, strict=True):
            if not (x.error or x.truncated):
                check(x, req, resp)


@pytest.mark.xfail(strict=True, reason="known limit: a lost RECV holding the start of a POST head "
                   "lets resync find 'GET / HTTP/1.1' inside the binary body; that phantom and what "
                   "follows are flagged 'pairing uncertain', but the next real request stays flagged "
                   "too instead of exact (needs request start offsets vs nginx's read counter)")
def test_lost_request_start_does_not_invent_requests_from_body() -> None:
    conv = [FOUR_CONV[0], (S.POST_UPLOAD.wire, S.ok(S.POST_UPLOAD.target)), FOUR_CONV[1]]
    events = build_events(conv, split=every(40))
    out = assemble(drop(events, lambda i, e: e.kind == EV_RECV and e.offset == len(FOUR[0].wire)))
    assert len(out) == 3 and out[1].error
    check(out[2], FOUR[1], FOUR_CONV[1][1])


def test_lost_last_req_done_close_gives_size() -> None:
    events = build_events(FOUR_CONV)
    out = assemble(drop(events, lambda i, e: i == nth(events, EV_REQ_DONE, 3)))
    assert out[3].target == "/r3" and out[3].error
    assert out[3].response_bytes == len(FOUR_CONV[3][1]) and out[3].status == 200


# -- connection ends ------------------------------------------------------------------------------------
def test_close_with_unanswered_request() -> None:
    out = assemble(build_events([FOUR_CONV[0], (FOUR[1].wire, None)]))
    assert len(out) == 2 and out[1].target == "/r1" and out[1].status is None
    assert out[1].error == "connection closed before response" and out[1].response_bytes == 0
    assert out[1].request_bytes == FOUR[1].total_bytes


def test_finish_flushes_open_connections() -> None:
    events = build_events([FOUR_CONV[0], (FOUR[1].wire, None)], close=False)
    assert len(assemble(events)) == 1
    out = assemble(events, finish=S.BASE_TS + 60)
    assert out[1].error == "capture ended before response" and out[1].end == S.BASE_TS + 60
    assert len(assemble(build_events(FOUR_CONV[:1], close=False), finish=S.BASE_TS + 60)) == 1


def test_fd_reuse_keeps_connections_apart() -> None:
    first = build_events(FOUR_CONV[:2], conn_ts=111)
    second = build_events(FOUR_CONV[2:], conn_ts=222, t0=S.BASE_TS + 5)
    out = assemble(first + second)
    assert [x.conn_id for x in out] == ["4242:9:111"] * 2 + ["4242:9:222"] * 2
    assert [x.conn_seq for x in out] == [0, 1, 0, 1]
    for x, req, (_, resp) in zip(out, FOUR, FOUR_CONV, strict=True):
        check(x, req, resp)


def test_fd_reuse_with_lost_close() -> None:
    first = build_events([FOUR_CONV[0], (FOUR[1].wire, None)], conn_ts=111, close=False)
    second = build_events(FOUR_CONV[2:], conn_ts=222, t0=S.BASE_TS + 5)
    out = assemble(first + second)
    assert [(x.conn_id, x.target) for x in out] == [("4242:9:111", "/r0"), ("4242:9:111", "/r1"),
                                                     ("4242:9:222", "/r2"), ("4242:9:222", "/r3")]
    assert out[1].error == "connection replaced before response"
    check(out[2], FOUR[2], FOUR_CONV[2][1])
