"""The socket filter's connection table (bpf/wire.c wire_slots), run by the kernel on
synthetic frames (BPF_PROG_TEST_RUN): two connections whose keys share a pair of slots are
both followed, a third takes the slot its hash names, a closed connection's slot is taken
first. A followed connection's repeated data segment passes as a retransmission (its
headers, 54 bytes); an unfollowed one's is cut like any application data (0)."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest

from ngxscope.capture import wire

PORT = 8080
LO = bytes([127, 0, 0, 1])
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
HEADERS = 14 + 20 + 20
SLOT_BITS = 16


def frame(sport: int, dport: int, flags: int, seq: int, payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, LO, LO)
    eth = bytes(12) + b"\x08\x00"
    return eth + eth + ip + tcp + payload   # a test run starts past the first Ethernet header


def slot_pair(client_port: int) -> int:
    """bpf/wire.c flow_base for client 127.0.0.1:client_port -> 127.0.0.1:PORT."""
    mapped = bytes(10) + b"\xff\xff" + LO
    w = struct.unpack("<9I", mapped + mapped + struct.pack("<HH", client_port, PORT))
    m = 0xFFFFFFFF
    h = ((w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9E3779B1) & m
    h = ((h ^ w[4] ^ w[5] ^ w[6] ^ w[7]) * 0x9E3779B1) & m
    h = ((h ^ w[8]) * 0x9E3779B1) & m
    return (h >> (32 - SLOT_BITS)) & ~1


@pytest.fixture(scope="module")
def prog() -> Any:
    if os.geteuid() != 0:
        pytest.fail("needs root (eBPF): capture tests run as root")
    bpf, fd = wire.load_filter([f"127.0.0.1:{PORT}"])
    yield fd
    bpf.cleanup()


def run(fd: int, data: bytes) -> int:
    return wire.run_filter(fd, data)[0]


def connect(fd: int, port: int) -> None:
    """SYN, SYN-ACK, the handshake ACK (each passes its headers), then 10 bytes of data (cut)."""
    assert run(fd, frame(port, PORT, SYN, 999)) == HEADERS
    assert run(fd, frame(PORT, port, SYN | ACK, 4999)) == HEADERS
    assert run(fd, frame(port, PORT, ACK, 1000)) == HEADERS
    assert run(fd, frame(port, PORT, ACK | PSH, 1000, b"x" * 10)) == 0


def followed(fd: int, port: int) -> bool:
    """Whether its first data segment again passes as a retransmission."""
    return run(fd, frame(port, PORT, ACK | PSH, 1000, b"x" * 10)) == HEADERS


def test_colliding_connections_share_a_pair_of_slots(prog: Any) -> None:
    fd = prog
    pairs: dict[int, list[int]] = {}
    for port in range(1024, 65536):
        pairs.setdefault(slot_pair(port), []).append(port)
    a, b, c, d = next(ports for ports in pairs.values() if len(ports) >= 4)[:4]
    connect(fd, a)
    connect(fd, b)
    assert followed(fd, a) and followed(fd, b)   # both ways of the pair
    connect(fd, c)                                # both live: it takes the first way
    assert followed(fd, c) and followed(fd, b) and not followed(fd, a)
    assert run(fd, frame(b, PORT, FIN | ACK, 1010)) == HEADERS
    connect(fd, d)                                # b closed: its way, not c's
    assert followed(fd, d) and followed(fd, c) and not followed(fd, b)
