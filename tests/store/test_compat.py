"""Old session formats still read: frozen sample files and the converters."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_exchange
from ngxscope.model import Exchange, LifecycleEvent, ModelError, UpstreamAttempt, WireFrame
from ngxscope.store.codec import encode_exchange, encode_record
from ngxscope.store.compat import (
    CONVERTERS,
    CURRENT_VERSION,
    convert_0_1,
    convert_1_2,
    convert_3_4,
    convert_4_5,
    convert_5_6,
    convert_6_7,
    migrate,
)
from ngxscope.store.session import SessionError, SessionReader, SessionWriter

SAMPLES = Path(__file__).parent / "samples"

# The sample files must never change: a new format version gets a new sample.
FROZEN = {
    "session-v0.ngxs": "ed4de6d1d1584eaa8d7cc365993e1fb9afb3ad30f1b7494dd465565fef4a9eba",
    "session-v1.ngxs": "d907be03bc0293adbe98c50076ae6b813f4bc043b375ccfa6d9ccf9394888736",
    "session-v2.ngxs": "9bf626718fdd14c4038545634aa045bfd76bba15a07fffbc744cad2a40ab59b3",
    "session-v3.ngxs": "dca726c4246757458b346e146b2c735ec3d9c2281b934ba090fbb070695ec292",
    "session-v4.ngxs": "07861db553077db9242183bef8f1bb6b0240c3bdf915b03ff337986012ab5783",
    "session-v5.ngxs": "9b851eac555591b003acf2d5e47b17675198b985cc0101ce737c3c81e44946eb",
    "session-v6.ngxs": "160ca4721a36ad14451e96165cdd828f84e88f57da2564fe60b6e01486af7cd3",
    "session-v7.ngxs": "619ba34438efd5327a028aab06a66e5713ccac7ba69aedbfbd74832694d1dd95",
}
LATEST_SAMPLE = "session-v7.ngxs"

TARGET = {"pid": 4100, "binary": "/usr/sbin/nginx", "method": "uprobes", "workers": [4101, 4102]}

EXPECTED_EXCHANGES = [
    Exchange(
        id=1,
        start=1700000000.25,
        end=1700000000.2625,
        pid=4101,
        client="127.0.0.1:40001",
        server="127.0.0.1:8080",
        tls=False,
        conn_id="4101:11:1000001",
        conn_seq=0,
        method="GET",
        target="/api/items?page=1",
        version="HTTP/1.1",
        host="shop.example.test",
        status=200,
        reason="OK",
        request_bytes=97,
        response_bytes=180,
        request_headers=[
            ("Host", "shop.example.test"),
            ("Accept", "application/json"),
            ("X-Name", "Zoë 東京 ✓"),
        ],
        response_headers=[
            ("Server", "nginx/1.22.1"),
            ("Content-Type", "application/json"),
            ("Content-Length", "26"),
        ],
        request_body=b"",
        response_body=b'{"items":[1,2,3],"page":1}',
        request_body_size=0,
        response_body_size=26,
        sendfile_bytes=0,
        truncated=False,
        error=None,
        upstream=[
            UpstreamAttempt(
                addr="127.0.0.1:8081",
                status=502,
                connect_ms=0.2,
                header_ms=1.5,
                duration_ms=1.6,
                request_bytes=80,
                response_bytes=0,
                reused=False,
                start=1700000000.2504,
                request_head="GET /api/items?page=1 HTTP/1.0\r\n\r\n",
                response_head=None,
            ),
            UpstreamAttempt(
                addr="127.0.0.1:8082",
                status=200,
                connect_ms=0.0,
                header_ms=9.5,
                duration_ms=10.0,
                request_bytes=80,
                response_bytes=150,
                reused=True,
                start=1700000000.2521,
                request_head="GET /api/items?page=1 HTTP/1.0\r\n\r\n",
                response_head="HTTP/1.1 200 OK\r\n\r\n",
            ),
        ],
    ),
    Exchange(
        id=2,
        start=1700000000.125,
        end=1700000000.5,
        pid=4102,
        client="[::1]:50000",
        server="[::1]:8443",
        tls=True,
        conn_id="4102:12:1000002",
        conn_seq=3,
        method="POST",
        target="/upload",
        version="HTTP/1.1",
        host="shop.example.test",
        status=413,
        reason="Request Entity Too Large",
        request_bytes=70000,
        response_bytes=300,
        request_headers=[
            ("Host", "shop.example.test"),
            ("Content-Type", "application/octet-stream"),
        ],
        response_headers=[("Connection", "close")],
        request_body=b"\x00\x01\xff\x80\r\n\xc3\x00",
        response_body=b"",
        request_body_size=69900,
        response_body_size=180,
        truncated=True,
    ),
    Exchange(
        id=3,
        start=1700000001.0,
        end=1700000001.0,
        pid=4101,
        client="127.0.0.1:40003",
        server="127.0.0.1:8080",
        tls=False,
        conn_id="4101:13:1000003",
        request_bytes=5,
        status=None,
        error="malformed request line",
    ),
]
EXPECTED_EVENTS = [
    LifecycleEvent(ts=1700000000.0, kind="attach", pid=4100, detail="uprobes on 2 workers")
]
EXPECTED_STATS = {
    "t": "stats",
    "ts": 1700000001.5,
    "events": 42,
    "lost": 0,
    "truncated": 1,
    "workers": [4101, 4102],
    "method": "uprobes",
    "requests": 3,
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_sample_files_are_frozen(name: str) -> None:
    assert hashlib.sha256((SAMPLES / name).read_bytes()).hexdigest() == FROZEN[name]


# Version 2 added nginx_ms; older files read it as None.
EXPECTED_V2 = [
    replace(EXPECTED_EXCHANGES[0], nginx_ms=12.0),
    replace(EXPECTED_EXCHANGES[1], nginx_ms=375.0),
    EXPECTED_EXCHANGES[2],
]


# Version 3 added server_block and upstream groups; older files read them as None.
EXPECTED_V3 = [
    replace(EXPECTED_V2[0], server_block="shop.example.test",
            upstream=[replace(a, group="app") for a in EXPECTED_V2[0].upstream]),
    *(replace(ex, upstream=[replace(a, group="app") for a in ex.upstream]) for ex in EXPECTED_V2[1:]),
]


# Version 5 added the user's mark and note (older files read them as ""), location, answer,
# proxy_client and the wire fields of the socket filter (older files read them as None).
_V5_USER = [
    replace(EXPECTED_V3[0], location="/api/", answer="cache-miss", mark="red",
            note="retried: 8081 refused (ticket #42) ✓"),
    replace(EXPECTED_V3[1], location="= /upload", proxy_client="203.0.113.7:51000"),
    EXPECTED_V3[2],
]
EXPECTED_V5 = [
    replace(ex, conn_start=1700000000.4975, tcp_connect_ms=0.052, tls_handshake_ms=1.875, tls_version="TLSv1.3",
            tls_cipher="TLS_AES_256_GCM_SHA384", sni="shop.example.test", alpn="http/1.1",
            tls_resumed=True, retransmits=1, reset_by="client",
            location_via="config" if ex.location else None) if ex.tls
    else replace(ex, location_via="config" if ex.location else None)
    for ex in _V5_USER
]
V6_FRAMES = [
    WireFrame(1700000000.4975, base64.b64decode(
        "AAAAAAAAAAAAAAAACABFAAA8AABAAEAGPLp/AAABfwAAAZ2UIPsAAAPoAAAAAKAC//9xYAAAAgQ/2AQCCAoAAAAAAAAAAAEDAwc=")),
    WireFrame(1700000000.49752, base64.b64decode(
        "AAAAAAAAAAAAAAAACABFAAA8AABAAEAGPLp/AAABfwAAASD7nZQAABOIAAAD6aAS//9VYAAAAgQ/2AQCCAoAAAAAAAAAAAEDAwc=")),
]
# Version 6 added location_via (older files read "config" where they name a location),
# kept_by (older files read it as None) and wire_packets (older files read them as []).
_V6_NEW = [replace(ex, location_via="nginx" if ex.id == 1 else ex.location_via,
                       kept_by={1: "sample", 2: "error,slow"}.get(ex.id),
                       wire_packets=V6_FRAMES if ex.tls else []) for ex in EXPECTED_V5]
# ... subrequest_upstream (older files read it as []), remote and nginx_end (None).
EXPECTED_V6 = [
    replace(_V6_NEW[0], subrequest_upstream=[UpstreamAttempt(
        addr="127.0.0.1:9000", status=200, connect_ms=0.1, header_ms=0.9, duration_ms=1.0, request_bytes=60,
        response_bytes=90, reused=False, start=1700000000.2502, request_head="GET /auth HTTP/1.0\r\nHost: auth\r\n",
        response_head="HTTP/1.1 200 OK\r\nContent-Length: 0", group="auth")], nginx_end=1700000000.262),
    replace(_V6_NEW[1], remote="198.51.100.4", nginx_end=1700000000.5),
    *_V6_NEW[2:],
]
# Version 7 added upstream_via (older files read "wire" where there are attempts) and the
# attempts' redirected (older files read False).
EXPECTED_V7 = [
    replace(EXPECTED_V6[0], upstream_via="nginx",
            upstream=[replace(a, redirected=i == 1) for i, a in enumerate(EXPECTED_V6[0].upstream)]),
    *EXPECTED_V6[1:],
]


def _as_v7(expected: list[Exchange]) -> list[Exchange]:
    """Exchanges of an older file as version 7 reads them: attempts known from the wire."""
    return [replace(ex, upstream_via="wire" if ex.upstream else None) for ex in expected]


@pytest.mark.parametrize(
    ("name", "version", "tool", "expected"),
    [
        ("session-v0.ngxs", 0, "ngxscope 0.0.1", _as_v7(EXPECTED_EXCHANGES)),
        ("session-v1.ngxs", 1, "ngxscope 0.1.0", _as_v7(EXPECTED_EXCHANGES)),
        ("session-v2.ngxs", 2, "ngxscope 0.1.0", _as_v7(EXPECTED_V2)),
        ("session-v3.ngxs", 3, "ngxscope 0.1.0", _as_v7(EXPECTED_V3)),
        ("session-v4.ngxs", 4, "ngxscope 0.1.0", _as_v7(EXPECTED_V3)),
        ("session-v5.ngxs", 5, "ngxscope 0.1.0", _as_v7(EXPECTED_V5)),
        ("session-v6.ngxs", 6, "ngxscope 0.1.0", _as_v7(EXPECTED_V6)),
        ("session-v7.ngxs", 7, "ngxscope 0.1.0", EXPECTED_V7),
    ],
)
def test_sample_reads_exactly(name: str, version: int, tool: str, expected: list[Exchange]) -> None:
    reader = SessionReader(SAMPLES / name)
    assert reader.header == {
        "t": "header",
        "format": "ngxscope-session",
        "version": version,
        "created": 1700000000.0,
        "tool": tool,
        "target": TARGET,
    }
    session = reader.read_all()
    assert session.exchanges == expected
    assert session.events == EXPECTED_EVENTS
    assert session.stats == EXPECTED_STATS
    assert session.complete is True
    assert session.warning is None
    # Field by field too, so a failure names the field.
    for got, want in zip(session.exchanges, expected, strict=True):
        assert got.to_dict() == want.to_dict()


def test_writer_writes_the_latest_sample_records(tmp_path: Path) -> None:
    """The writer's records equal the newest frozen sample's, key for key.

    If this fails because a model field was added, renamed or removed, the session format
    changed: bump CURRENT_VERSION, add a converter in store/compat.py and freeze a new
    sample with tests/store/samples/make_samples.py (see the compat.py docstring).
    """
    assert f"session-v{CURRENT_VERSION}.ngxs" == LATEST_SAMPLE, "freeze a sample per version"
    path = tmp_path / "s.ngxs"
    with SessionWriter(path, TARGET) as w:
        w.write_event(EXPECTED_EVENTS[0])
        for ex in EXPECTED_V7:  # the newest sample's exchanges
            w.write_exchange(ex)
        w.write_stats({k: v for k, v in EXPECTED_STATS.items() if k != "t"})
    ours = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    sample = [
        json.loads(line)
        for line in gzip.decompress((SAMPLES / LATEST_SAMPLE).read_bytes()).splitlines()
    ]
    for rec in (ours[0], sample[0]):
        del rec["created"], rec["tool"]
    del ours[-1]["ts"], sample[-1]["ts"]
    for got, want in zip(ours, sample, strict=True):
        assert sorted(got) == sorted(want), "record keys changed: the format changed"
        assert got == want


def test_convert_0_1_turns_header_objects_into_pairs() -> None:
    rec = {"t": "exchange", "id": 1, "req_headers": {"Host": "a", "X": "1"}, "resp_headers": {}}
    assert convert_0_1(rec) == {
        "t": "exchange",
        "id": 1,
        "request_headers": [["Host", "a"], ["X", "1"]],
        "response_headers": [],
    }
    assert rec["req_headers"] == {"Host": "a", "X": "1"}  # input left alone
    other = {"t": "stats", "req_headers": 1}
    assert convert_0_1(other) is other


def test_convert_0_1_rejects_bad_records() -> None:
    with pytest.raises(ModelError):
        convert_0_1({"t": "exchange", "req_headers": [["Host", "a"]]})
    with pytest.raises(ModelError):
        convert_0_1({"t": "exchange", "req_headers": {}, "request_headers": []})


_V5_NULLS = {k: None for k in ("location", "answer", "proxy_client", "conn_start", "tcp_connect_ms",
                                "tls_handshake_ms", "tls_version", "tls_cipher", "sni", "alpn",
                                "tls_resumed", "retransmits", "reset_by", "conn_outcome")}
"""The exchange fields version 5 added that older files read as null (written out here, not
taken from the converter, so a change to the converter fails this test)."""


def test_migrate_chains_up_to_current() -> None:
    assert set(CONVERTERS) == set(range(CURRENT_VERSION))
    rec = {"t": "exchange", "req_headers": {"A": "b"}}
    assert migrate(rec, 0) == {"t": "exchange", "request_headers": [["A", "b"]], "nginx_ms": None,
                               "server_block": None, "summary_only": False, "mark": "",
                               "note": "", **_V5_NULLS, "location_via": None, "kept_by": None,
                               "wire_packets": [], "remote": None, "nginx_end": None, "subrequest_upstream": [],
                               "upstream_via": None}
    assert migrate({"t": "event", "ts": 1}, 0) == {"t": "event", "ts": 1}
    current = {"t": "exchange", "request_headers": [["A", "b"]], "nginx_ms": 1.0}
    assert migrate(current, CURRENT_VERSION) is current
    with pytest.raises(ValueError, match="newer"):
        migrate(current, CURRENT_VERSION + 1)
    with pytest.raises(ValueError):
        migrate(current, True)


def test_bad_v0_record_names_its_line(tmp_path: Path) -> None:
    lines = gzip.decompress((SAMPLES / "session-v0.ngxs").read_bytes()).splitlines()
    rec = json.loads(lines[2])
    rec["req_headers"] = [["Host", "x"]]
    lines[2] = json.dumps(rec).encode()
    path = tmp_path / "bad.ngxs"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    with pytest.raises(SessionError, match=r"line 3: .*req_headers"):
        SessionReader(path).read_all()


def test_convert_4_5_adds_mark_note_location_answer() -> None:
    assert convert_4_5({"t": "exchange", "id": 1}) == {"t": "exchange", "id": 1, "mark": "",
                                                       "note": "", **_V5_NULLS}
    kept = {"t": "exchange", "location": "/a/", "mark": "red"}
    assert convert_4_5(kept) == {"mark": "", "note": "", **_V5_NULLS, **kept}
    event = {"t": "event", "ts": 1.0}
    assert convert_4_5(event) is event
    stats = {"t": "stats"}
    assert convert_4_5(stats) is stats


def test_convert_5_6_says_the_location_was_matched_on_the_configuration() -> None:
    assert convert_5_6({"t": "exchange", "id": 1, "location": "/api/"})["location_via"] == "config"
    assert convert_5_6({"t": "exchange", "id": 1, "location": None})["location_via"] is None
    kept = {"t": "exchange", "id": 1, "location": "/x", "location_via": "nginx"}
    assert convert_5_6(kept)["location_via"] == "nginx"
    assert convert_5_6({"t": "exchange", "id": 1})["kept_by"] is None
    event = {"t": "event", "ts": 1.0, "kind": "attach"}
    assert convert_5_6(event) is event


def test_convert_1_2_adds_nginx_ms() -> None:
    assert convert_1_2({"t": "exchange", "id": 1}) == {"t": "exchange", "id": 1, "nginx_ms": None}
    stats = {"t": "stats"}
    assert convert_1_2(stats) is stats


_SAMPLED_V3 = ("payload not captured (sampled out while the capture was over its CPU budget): status, "
               "sizes and times from the kernel summary")
_SHED_V3 = "payload shed (capture overload): status, sizes and times from the kernel summary"


def test_convert_4_5_adds_unknown_wire_fields() -> None:
    out = convert_4_5({"t": "exchange", "id": 1, "tls": True})
    assert out["tls_version"] is None and out["retransmits"] is None and out["conn_outcome"] is None
    assert out["id"] == 1
    event = {"t": "event", "ts": 1.0, "kind": "attach"}
    assert convert_4_5(event) is event


def test_convert_3_4_makes_the_summary_note_a_flag() -> None:
    for note in (_SAMPLED_V3, _SHED_V3):
        assert convert_3_4({"t": "exchange", "id": 1, "error": note}) == {
            "t": "exchange", "id": 1, "error": None, "summary_only": True}
    for error in (None, "malformed request line", "response lost (capture overflow)", 5):
        assert convert_3_4({"t": "exchange", "error": error}) == {
            "t": "exchange", "error": error, "summary_only": False}
    event = {"t": "event", "detail": _SHED_V3}
    assert convert_3_4(event) is event



def test_version_3_summary_exchange_reads_as_summary_only(tmp_path: Path) -> None:
    """A version 3 session written with the note reads back flagged, the note gone."""
    v3 = make_exchange(status=503).to_dict()
    del v3["summary_only"]
    v3["error"] = _SHED_V3
    path = tmp_path / "v3.ngxs"
    header = {"t": "header", "format": "ngxscope-session", "version": 3, "created": 1.0, "tool": "t",
              "target": {}}
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in (header, {"t": "exchange", **v3}))))
    (ex,) = SessionReader(path).read_all().exchanges
    assert ex.summary_only and ex.error is None and ex.status == 503


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(["\udcff", "é", "\x00"]),
                max_size=12)


@given(
    method=_TEXT, target=_TEXT, status=st.none() | st.integers(100, 599) | st.integers(2**64, 2**70),
    req_body=st.binary(max_size=40), resp_body=st.binary(max_size=40),
    headers=st.lists(st.tuples(_TEXT, _TEXT), max_size=3), nginx_ms=st.none() | st.floats(0, 1e6),
    error=st.none() | _TEXT, attempts=st.integers(0, 2), start=st.floats(0, 2e9), length=st.floats(0, 100),
    summary_only=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_encode_exchange_equals_encode_record(method: str, target: str, status: int | None, req_body: bytes,
                                              resp_body: bytes, headers: list[tuple[str, str]],
                                              nginx_ms: float | None, error: str | None, attempts: int,
                                              start: float, length: float, summary_only: bool) -> None:
    """The writer's dict-free encoder gives the very bytes of the dict path, whatever the
    exchange holds (non-ASCII, lone surrogates, ints beyond 64 bits take the json path)."""
    ex = make_exchange(method=method, target=target, status=status, request_body=req_body,
                       response_body=resp_body, request_headers=headers, start=start)
    ex.end = start + length
    ex.nginx_ms = nginx_ms
    ex.error = error
    ex.summary_only = summary_only
    ex.upstream = ex.upstream[:attempts]
    assert encode_exchange(ex) == encode_record({"t": "exchange", **ex.to_dict()})


@given(start=st.floats(0, 2e9) | st.sampled_from([0.0, 1e300]),
       length=st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1e-6) | st.floats(1e9, 1e20))
@settings(max_examples=300, deadline=None)
def test_encode_exchange_duration_as_orjson_writes_it(start: float, length: float) -> None:
    """duration_ms is written with repr (orjson's own text for finite floats, without a second
    call): tiny, huge, infinite and NaN durations give the dict path's bytes."""
    ex = make_exchange(start=start)
    ex.end = start + length
    assert encode_exchange(ex) == encode_record({"t": "exchange", **ex.to_dict()})


def test_convert_5_6_adds_the_version_6_fields() -> None:
    rec = {"t": "exchange", "id": 1}
    assert migrate(rec, 5) == {"t": "exchange", "id": 1, "location_via": None, "kept_by": None,
                               "wire_packets": [], "remote": None, "nginx_end": None, "subrequest_upstream": [],
                               "upstream_via": None}
    assert migrate({"t": "stats", "ts": 1.0}, 5) == {"t": "stats", "ts": 1.0}
    kept = {"t": "exchange", "remote": "10.0.0.1", "nginx_end": 1.5, "subrequest_upstream": [{"addr": "a"}],
            "location_via": None, "kept_by": None, "wire_packets": []}
    assert convert_5_6(kept) == kept
    event = {"t": "event", "ts": 1.0}
    assert convert_5_6(event) is event


def test_convert_6_7_adds_the_version_7_fields() -> None:
    rec = {"t": "exchange", "id": 1, "upstream": [{"addr": "a", "status": 200}], "subrequest_upstream": []}
    assert convert_6_7(rec) == {"t": "exchange", "id": 1, "upstream": [{"addr": "a", "status": 200, "redirected": False}],
                                "subrequest_upstream": [], "upstream_via": "wire"}
    assert rec["upstream"] == [{"addr": "a", "status": 200}]  # input left alone
    assert convert_6_7({"t": "exchange", "upstream": []})["upstream_via"] is None
    event = {"t": "event", "ts": 1.0}
    assert convert_6_7(event) is event
