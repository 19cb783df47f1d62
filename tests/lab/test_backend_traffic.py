"""The upstream backend on its own, and the traffic generator's response framing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from ngxscope.lab.backend import make_server
from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic


@pytest.fixture
def backend() -> Iterator[Traffic]:
    """A backend served in a thread, with a plain-only `Traffic` aimed at it."""
    server = make_server(free_port(), "solo")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Traffic(server.server_address[1], 0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_backend_endpoints(backend: Traffic) -> None:
    echo = backend.request(False, "POST", "/any/prefix/echo", body=b"x" * 1234)
    assert json.loads(echo.body) == {
        "backend": "solo",
        "method": "POST",
        "path": "/any/prefix/echo",
        "body_size": 1234,
    }
    assert echo.header("Content-Length") == str(len(echo.body))
    assert backend.request(False, "GET", "/x/status/503").status == 503
    chunked = backend.request(False, "GET", "/x/chunked?n=3")
    assert chunked.header("Transfer-Encoding") == "chunked"
    assert chunked.body == b"chunk 0 from solo\nchunk 1 from solo\nchunk 2 from solo\n"
    assert len(backend.request(False, "GET", "/x/big?kb=5").body) == 5 * 1024
    assert json.loads(backend.request(False, "GET", "/slow/?ms=10").body)["slept_ms"] == 10
    default = json.loads(backend.request(False, "GET", "/whatever?q=1").body)
    assert default == {"backend": "solo", "method": "GET", "path": "/whatever?q=1"}
    assert backend.chunked_post(False, 20_000, path="/a/echo") == 1
    assert backend.records[-1].status == 200


def test_backend_keepalive(backend: Traffic) -> None:
    assert backend.keepalive(False, ["/a", "/b/status/404", "/c/chunked?n=2", "/d"]) == 4
    assert [r.status for r in backend.records] == [200, 404, 200, 200]
    assert backend.pipelined(False, ["/a", "/b/big?kb=1", "/c"]) == 3


def test_response_framing_through_nginx(lab_nginx: LabNginx) -> None:
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    for tls in (False, True):
        # HTTP/1.0 client: nginx de-chunks the upstream body and closes instead
        traffic.http10(tls, "/api/chunked?n=3")
        assert traffic.records[-1].status == 200
        resp = traffic.request(tls, "GET", "/api/chunked?n=2")
        assert resp.header("Transfer-Encoding") == "chunked"
        assert resp.body.count(b"chunk ") == 2
        head = traffic.request(tls, "HEAD", "/static/page.html")
        assert head.body == b"" and int(head.header("Content-Length") or 0) > 4000
        assert traffic.request(tls, "GET", "/204").body == b""
    assert traffic.conditional(False) == 2
    assert [r.status for r in traffic.records[-2:]] == [200, 304]
    n = len(traffic.records)
    assert len(lab_nginx.wait_log_lines(n)) == n
