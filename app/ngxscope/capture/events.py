"""Python mirror of bpf/events.h, and the decoded form of one ring-buffer record.

The ctypes structures must match the C header byte for byte; tests/capture/test_events_layout.py
compiles the header with the system C compiler and compares sizes and offsets.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

__all__ = [
    "EVF_CLIENT",
    "EVF_TLS",
    "EVF_TRUNCATED",
    "EV_CLOSE",
    "EV_CONNECT",
    "EV_EXIT",
    "EV_FORK",
    "EV_OPEN",
    "EV_RECV",
    "EV_REQ_DONE",
    "EV_SEND",
    "EV_SENDFILE",
    "EV_UPSTREAM",
    "SOCKADDR_MAX",
    "EvHeader",
    "EvOpen",
    "RawEvent",
    "format_sockaddr",
    "parse_event",
]

EV_OPEN = 1
EV_RECV = 2
EV_SEND = 3
EV_SENDFILE = 4
EV_CLOSE = 5
EV_REQ_DONE = 6
EV_CONNECT = 7
EV_FORK = 8
EV_EXIT = 9
EV_UPSTREAM = 10

EVF_TLS = 0x01
EVF_CLIENT = 0x02
EVF_TRUNCATED = 0x04

SOCKADDR_MAX = 28


class EvHeader(ctypes.Structure):
    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("conn_ts", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("aux", ctypes.c_uint64),
        ("clock", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("len", ctypes.c_uint32),
        ("cap", ctypes.c_uint32),
        ("kind", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("seq", ctypes.c_uint16),
    ]


class EvOpen(ctypes.Structure):
    _fields_ = [
        ("h", EvHeader),
        ("peer", ctypes.c_uint8 * SOCKADDR_MAX),
        ("local", ctypes.c_uint8 * SOCKADDR_MAX),
        ("peer_len", ctypes.c_uint32),
        ("local_len", ctypes.c_uint32),
    ]


HEADER_SIZE = ctypes.sizeof(EvHeader)


@dataclass(slots=True)
class RawEvent:
    """One ring-buffer record, decoded, with kernel time already turned into Unix time."""

    kind: int
    """EV_* constant."""
    ts: float
    """Unix time of the event."""
    pid: int
    """Process (tgid) that made the call."""
    fd: int
    """Socket descriptor in that process (-1 when none)."""
    conn_ts: int
    """Connection identity: kernel ns of its first sighting; with pid and fd, unique."""
    offset: int
    """RECV/SEND/SENDFILE: stream offset of the first byte; REQ_DONE/CLOSE: bytes read so far."""
    aux: int
    """REQ_DONE/CLOSE: bytes written so far; FORK: child pid; OPEN: connection address."""
    length: int
    """Bytes the call moved."""
    flags: int
    """EVF_* bits."""
    clock: float = 0.0
    """nginx's cached clock at the event (Unix time of the worker's last epoll_wait return;
    0 when unknown): what nginx itself uses for $request_time and $msec."""
    seq: int = 0
    """REQ_DONE: requests finished on the connection so far (mod 2**16): reveals lost events."""
    data: bytes = b""
    """Captured payload (at most `length` bytes)."""
    peer: str = ""
    """OPEN/CONNECT: remote address "ip:port"."""
    local: str = ""
    """OPEN: local address "ip:port"."""

    @property
    def conn_key(self) -> tuple[int, int, int]:
        return (self.pid, self.fd, self.conn_ts)


def format_sockaddr(raw: bytes, length: int) -> str:
    """struct sockaddr_in / sockaddr_in6 bytes → "ip:port" / "[ip6]:port" ("" if unknown)."""
    import socket

    if length < 8 or len(raw) < 8:
        return ""
    family = int.from_bytes(raw[0:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{port}"
    if family == socket.AF_INET6 and len(raw) >= 24:
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if addr.startswith("::ffff:") and "." in addr:
            return f"{addr[7:]}:{port}"
        return f"[{addr}]:{port}"
    if family == socket.AF_UNIX:
        return "unix:"
    return ""


def parse_event(buf: bytes, clock_offset: float) -> RawEvent:
    """Decode one ring-buffer record; `clock_offset` turns kernel monotonic ns into Unix time."""
    h = EvHeader.from_buffer_copy(buf, 0)
    ev = RawEvent(
        kind=h.kind,
        ts=h.ts / 1e9 + clock_offset,
        pid=h.pid,
        fd=h.fd,
        conn_ts=h.conn_ts,
        offset=h.offset,
        aux=h.aux,
        length=h.len,
        flags=h.flags,
        seq=h.seq,
        clock=h.clock / 1e9 + clock_offset if h.clock else 0.0,
    )
    if h.kind in (EV_OPEN, EV_CONNECT):
        o = EvOpen.from_buffer_copy(buf, 0)
        ev.peer = format_sockaddr(bytes(o.peer), o.peer_len)
        ev.local = format_sockaddr(bytes(o.local), o.local_len)
    elif h.cap:
        ev.data = bytes(buf[HEADER_SIZE : HEADER_SIZE + h.cap])
    return ev
