"""decode.http2 on byte streams made by the h2 library (client and server side)."""

from __future__ import annotations

import h2.config
import h2.connection

from ngxscope.decode.http2 import PREFACE, H2Connection, grpc_summary


def _pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    client.initiate_connection()
    server.initiate_connection()
    return client, server


def _req(client: h2.connection.H2Connection, path: str, body: bytes = b"", extra: tuple = ()) -> int:
    sid = client.get_next_available_stream_id()
    hdrs = [(":method", "POST" if body else "GET"), (":path", path), (":scheme", "https"),
            (":authority", "localhost"), ("x-custom", "same value every time"), *extra]
    client.send_headers(sid, hdrs, end_stream=not body)
    if body:
        client.send_data(sid, body, end_stream=True)
    return sid


def test_streams_headers_bodies_sizes_and_dynamic_table() -> None:
    client, server = _pair()
    s1 = _req(client, "/a")
    s3 = _req(client, "/b", body=b"x" * 100)
    inbound = client.data_to_send()
    assert inbound.startswith(PREFACE)
    server.receive_data(inbound)
    server.send_headers(s3, [(":status", "201"), ("x-r", "1")])
    server.send_data(s3, b"hello", end_stream=True)
    server.send_headers(s1, [(":status", "200"), ("x-r", "1")], end_stream=True)
    outbound = server.data_to_send()

    dec = H2Connection()
    # cut the bytes at awkward places, as reads and writes do
    for i in range(0, len(inbound), 7):
        dec.feed_in(inbound[i : i + 7], len(inbound[i : i + 7]), 1.0 + i, 1.0)
    dec.feed_out(outbound, len(outbound), 5.0)
    st3, certain = dec.take(9 + 0 + 9 + 5 + (len(outbound) - len(outbound)) + _hdr_frame_len(outbound, s3))
    assert certain and st3 is not None and st3.sid == s3
    assert st3.status == 201 and bytes(st3.response_body) == b"hello"
    assert dict(st3.request_headers)[":path"] == "/b"
    assert st3.data_bytes == 100 and st3.request_body_size == 100
    st3.proxied = True
    assert st3.request_bytes == st3.header_bytes + 100
    st1, _ = dec.take(0)
    assert st1 is not None and st1.sid == s1 and st1.status == 200
    # the second request's x-custom came from HPACK's dynamic table: still decoded right
    assert ("x-custom", "same value every time") in st3.request_headers
    assert dec.hpack_broken is None


def _hdr_frame_len(out: bytes, sid: int) -> int:
    """Payload length of the first HEADERS frame of stream sid in out (test helper)."""
    pos = 0
    while pos + 9 <= len(out):
        length = int.from_bytes(out[pos : pos + 3], "big")
        ftype, stream = out[pos + 3], int.from_bytes(out[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if ftype == 1 and stream == sid:
            return length
        pos += 9 + length
    raise AssertionError("no HEADERS frame")


def test_hole_in_header_block_never_gives_wrong_headers() -> None:
    client, _server = _pair()
    _req(client, "/a")
    first = client.data_to_send()
    _req(client, "/b")
    second = client.data_to_send()
    dec = H2Connection()
    dec.feed_in(first, len(first), 1.0, 1.0)
    dec.feed_in(second[:5], len(second), 2.0, 2.0)  # the rest of the frame was not captured
    assert dec.hpack_broken
    streams = list(dec.streams.values())
    assert dict(streams[0].request_headers)[":path"] == "/a"
    assert all(not s.request_headers for s in streams[1:])


def test_joined_connection_decodes_nothing() -> None:
    dec = H2Connection(from_start=False)
    dec.feed_in(b"\x00\x00\x05\x00\x01\x00\x00\x00\x01hello", 14, 1.0, 1.0)
    assert dec.joined and not dec.streams


def test_grpc_summary() -> None:
    hdrs = [(":status", "200"), ("content-type", "application/grpc+proto")]
    assert grpc_summary("/pkg.Svc/Do", hdrs, [("grpc-status", "5"), ("grpc-message", "nope")]) == \
        "gRPC pkg.Svc/Do grpc-status 5 (nope)"
    assert grpc_summary("/x", [("content-type", "text/html")], []) == ""
