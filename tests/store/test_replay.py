"""store/replay.py without a network: diff, tag, target checks; replays kept out of stats."""

from __future__ import annotations

import gzip

import pytest

from factories import make_exchange, one_shot_server
from ngxscope.store.aggregate import Aggregator
from ngxscope.store.copyas import from_exchange
from ngxscope.store.replay import (
    TAG,
    ReplayError,
    ReplayResult,
    check_target,
    diff,
    is_replay,
    needs_confirmation,
    send,
    tag_bytes,
)


def test_diff_status_headers_and_decoded_body() -> None:
    ex = make_exchange(status=200, response_headers=[("Content-Type", "application/json"),
                                                     ("Date", "Mon"), ("X-Old", "1")],
                       response_body=b'{"a": 1,\n"b": 2}')
    res = ReplayResult(to="127.0.0.1:1", status=500,
                       headers=[("Content-Type", "text/plain"), ("Date", "Tue"), ("X-New", "2"),
                                ("Content-Encoding", "gzip")],
                       body=gzip.compress(b'{"a": 1,\n"b": 3}'))
    d = diff(ex, res)
    assert d.status == (200, 500) and not d.same
    assert d.added == [("X-New", "2"), ("Content-Encoding", "gzip")]
    assert d.removed == [("X-Old", "1")]
    assert d.changed == [("Content-Type", "application/json", "text/plain")]
    assert d.volatile == ["Date"]
    assert not d.body_equal and '-"b": 2}' in d.body_diff and '+"b": 3}' in d.body_diff
    same = diff(ex, ReplayResult(to="x:1", status=200, headers=list(ex.response_headers),
                                 body=ex.response_body))
    assert same.same


def test_targets_methods_and_tag() -> None:
    assert check_target("127.0.0.1:8080", None) == "127.0.0.1:8080"
    assert check_target("[::1]:8443", None) == "[::1]:8443"
    with pytest.raises(ReplayError, match="type it"):
        check_target("10.0.0.1:80", None)
    assert check_target("10.0.0.1:80", "10.0.0.1:80") == "10.0.0.1:80"
    with pytest.raises(ReplayError, match="bad address"):
        check_target("x", "nope")
    assert needs_confirmation("POST") and needs_confirmation("patch")
    assert not needs_confirmation("GET") and not needs_confirmation("DELETE")
    assert tag_bytes(12) == len(f"{TAG}: 12\r\n")



def test_send_reads_chunked_answer_after_100_continue_and_tags() -> None:
    port, got = one_shot_server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    ex = make_exchange(id=9, method="GET", target="/x", request_headers=[("Host", "h")])
    res = send(from_exchange(ex), f"127.0.0.1:{port}", tag=9, timeout=5)
    assert (res.status, res.reason) == (201, "Created")
    assert res.body == b"3\r\nabc\r\n0\r\n\r\n" and res.error is None
    assert got[0] == b"GET /x HTTP/1.1\r\nHost: h\r\nX-Ngxscope-Replay: 9\r\n\r\n"


def test_send_errors_are_one_line() -> None:
    with pytest.raises(ReplayError, match="cannot connect"):
        send(from_exchange(make_exchange()), "127.0.0.1:1", timeout=2)


def test_replays_are_not_counted() -> None:
    agg = Aggregator()
    real = make_exchange()
    replay = make_exchange(request_headers=[("Host", "h"), (TAG, "1")])
    assert is_replay(replay) and not is_replay(real)
    agg.feed([real, replay])
    assert agg.total == 1
