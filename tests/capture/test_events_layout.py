"""The ctypes mirror in capture/events.py must match bpf/events.h byte for byte."""

from __future__ import annotations

import ctypes
import subprocess
from importlib import resources
from pathlib import Path

from ngxscope.capture import events

PROBE_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/types.h>
#include "events.h"
#define F(s, f) printf(#s "." #f " %zu %zu\n", offsetof(struct s, f), sizeof(((struct s *)0)->f));
int main(void) {
    printf("ev_header %zu\n", sizeof(struct ev_header));
    printf("ev_open %zu\n", sizeof(struct ev_open));
    printf("ev_done %zu\n", sizeof(struct ev_done));
    F(ev_done, h) F(ev_done, line)
    F(ev_header, ts) F(ev_header, conn_ts) F(ev_header, offset) F(ev_header, aux) F(ev_header, clock)
    F(ev_header, pid) F(ev_header, tid) F(ev_header, fd) F(ev_header, len) F(ev_header, cap)
    F(ev_header, kind) F(ev_header, flags) F(ev_header, seq)
    F(ev_open, h) F(ev_open, peer) F(ev_open, local) F(ev_open, peer_len) F(ev_open, local_len)
    printf("EV_OPEN %d\nEV_RECV %d\nEV_SEND %d\nEV_SENDFILE %d\nEV_CLOSE %d\nEV_REQ_DONE %d\n"
           "EV_CONNECT %d\nEV_FORK %d\nEV_EXIT %d\nEV_UPSTREAM %d\nEVF_TLS %d\nEVF_CLIENT %d\n"
           "EVF_TRUNCATED %d\nSOCKADDR_MAX %d\nEVF_SHED %d\nEVF_H2STREAM %d\nEVF_NOMARK %d\n"
           "EVF_SAMPLED %d\nLINE_CAP %d\n",
           EV_OPEN, EV_RECV, EV_SEND, EV_SENDFILE, EV_CLOSE, EV_REQ_DONE, EV_CONNECT, EV_FORK,
           EV_EXIT, EV_UPSTREAM, EVF_TLS, EVF_CLIENT, EVF_TRUNCATED, SOCKADDR_MAX, EVF_SHED,
           EVF_H2STREAM, EVF_NOMARK, EVF_SAMPLED, LINE_CAP);
    printf("EV_STREAM_START %d\nEV_STREAM_DONE %d\nEV_CONNECTED %d\n",
           EV_STREAM_START, EV_STREAM_DONE, EV_CONNECTED);
    printf("ev_reqlog %zu\nEV_REQ_LOG %d\nREQLOG_LINE_CAP %d\n", sizeof(struct ev_reqlog), EV_REQ_LOG,
           REQLOG_LINE_CAP);
    F(ev_reqlog, h) F(ev_reqlog, request_length) F(ev_reqlog, sent) F(ev_reqlog, status)
    F(ev_reqlog, err_status) F(ev_reqlog, line_addr) F(ev_reqlog, strs) F(ev_reqlog, line)
    return 0;
}
"""


def _c_layout(tmp_path: Path) -> dict[str, list[int]]:
    header_dir = Path(str(resources.files("ngxscope.bpf").joinpath("events.h"))).parent
    src = tmp_path / "probe.c"
    src.write_text(PROBE_C)
    exe = tmp_path / "probe"
    subprocess.run(["cc", "-I", str(header_dir), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {parts[0]: [int(x) for x in parts[1:]] for parts in (line.split() for line in out.splitlines())}


def test_struct_layout_matches_header(tmp_path: Path) -> None:
    c = _c_layout(tmp_path)
    assert c["ev_header"] == [ctypes.sizeof(events.EvHeader)]
    assert c["ev_open"] == [ctypes.sizeof(events.EvOpen)]
    assert c["ev_done"] == [ctypes.sizeof(events.EvDone)]
    assert c["ev_reqlog"] == [ctypes.sizeof(events.EvReqLog)]
    for struct, cls in (("ev_header", events.EvHeader), ("ev_open", events.EvOpen), ("ev_done", events.EvDone),
                        ("ev_reqlog", events.EvReqLog)):
        for name, _ctype in cls._fields_:
            field = getattr(cls, name)
            assert c[f"{struct}.{name}"] == [field.offset, field.size], f"{struct}.{name}"


def test_constants_match_header(tmp_path: Path) -> None:
    c = _c_layout(tmp_path)
    for name in ("EV_OPEN", "EV_RECV", "EV_SEND", "EV_SENDFILE", "EV_CLOSE", "EV_REQ_DONE", "EV_CONNECT",
                 "EV_FORK", "EV_EXIT", "EV_UPSTREAM", "EV_STREAM_START", "EV_STREAM_DONE",
                 "EV_CONNECTED", "EVF_TLS", "EVF_CLIENT", "EVF_TRUNCATED", "SOCKADDR_MAX", "EVF_SHED",
                 "EVF_H2STREAM", "EVF_NOMARK", "EVF_SAMPLED", "LINE_CAP", "EV_REQ_LOG", "REQLOG_LINE_CAP"):
        assert c[name] == [getattr(events, name)], name


def test_parse_event_round_trip() -> None:
    h = events.EvHeader(ts=2_000_000_000, conn_ts=5, offset=7, aux=9, pid=10, tid=11, fd=12, len=5, cap=3,
                        kind=events.EV_SEND, flags=events.EVF_TLS | events.EVF_TRUNCATED, seq=4)
    ev = events.parse_event(bytes(h) + b"abc", clock_offset=100.0)
    assert (ev.kind, ev.pid, ev.fd, ev.conn_ts, ev.offset, ev.aux, ev.length, ev.data, ev.seq) == (
        events.EV_SEND, 10, 12, 5, 7, 9, 5, b"abc", 4)
    assert ev.ts == 102.0


def test_format_sockaddr() -> None:
    import socket
    import struct

    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8080) + socket.inet_aton("10.1.2.3") + bytes(8)
    assert events.format_sockaddr(v4, 16) == "10.1.2.3:8080"
    v6 = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 443) + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    assert events.format_sockaddr(v6, 28) == "[::1]:443"
    mapped = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 80) + bytes(4)
              + socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1") + bytes(4))
    assert events.format_sockaddr(mapped, 28) == "127.0.0.1:80"
    assert events.format_sockaddr(b"\x00" * 16, 0) == ""
