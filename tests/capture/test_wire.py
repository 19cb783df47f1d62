"""The socket filter on loopback, on its own (real eBPF, no nginx): every packet of a
listening address's connection passes once, not twice (the loopback socket ignores the
sent copies: PACKET_IGNORE_OUTGOING), and a connection to a port nobody listed passes
nothing (the port bitmap), over IPv4 and IPv6."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from ngxscope.capture.wire import WireCapture, WirePacket

pytestmark = pytest.mark.capture

_SOL_PACKET, _PACKET_IGNORE_OUTGOING = 263, 23
_SYN, _ACK, _FIN = 0x02, 0x10, 0x01


def _server(family: int, host: str) -> socket.socket:
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(4)
    return srv


def _talk(family: int, host: str, port: int, srv: socket.socket) -> int:
    """One connection: a request, an answer, closed; returns the client's port."""
    cli = socket.create_connection((host, port))
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    assert conn.recv(16) == b"ping"
    conn.sendall(b"pong")
    assert cli.recv(16) == b"pong"
    client_port = cli.getsockname()[1]
    cli.close()
    conn.close()
    return int(client_port)


def _tcp(pkt: WirePacket) -> tuple[int, int, int]:
    """(source port, destination port, flags) of an Ethernet + IPv4/IPv6 + TCP frame."""
    data = pkt.data
    eth_type = struct.unpack_from("!H", data, 12)[0]
    l4 = 14 + ((data[14] & 0x0F) * 4 if eth_type == 0x0800 else 40)
    sport, dport = struct.unpack_from("!HH", data, l4)
    return sport, dport, data[l4 + 13]


@pytest.fixture
def servers() -> Iterator[dict[str, socket.socket]]:
    if os.geteuid() != 0:
        pytest.fail("the socket filter needs root")
    out = {"v4": _server(socket.AF_INET, "127.0.0.1"), "other": _server(socket.AF_INET, "127.0.0.1"),
           "v6": _server(socket.AF_INET6, "::1")}
    yield out
    for s in out.values():
        s.close()


def test_loopback_packets_pass_once_and_other_ports_not_at_all(servers: dict[str, socket.socket]) -> None:
    v4, other, v6 = (servers[k].getsockname()[1] for k in ("v4", "other", "v6"))
    wire = WireCapture([f"127.0.0.1:{v4}", f"[::1]:{v6}"], interfaces=["lo"])
    wire.start()
    try:
        for sock in wire._socks:
            assert sock.getsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING) == 1
        clients = {v4: _talk(socket.AF_INET, "127.0.0.1", v4, servers["v4"]),
                   v6: _talk(socket.AF_INET6, "::1", v6, servers["v6"])}
        other_client = _talk(socket.AF_INET, "127.0.0.1", other, servers["other"])
        packets: list[WirePacket] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            packets += wire.read(0.1)
    finally:
        wire.stop()
    seen = [_tcp(p) for p in packets]
    # (a client port may serve several connections at once: only the whole pair tells one)
    assert not [s for s in seen if {other, other_client} == set(s[:2])], "a port nobody listed passed"
    for port, client in clients.items():
        mine = [s for s in seen if {port, client} == set(s[:2])]
        syn = [s for s in mine if s[2] & (_SYN | _ACK) == _SYN]
        synack = [s for s in mine if s[2] & (_SYN | _ACK) == _SYN | _ACK]
        fins = [s for s in mine if s[2] & _FIN]
        # each once: the sent copy of a loopback packet never reaches the filter
        assert (len(syn), len(synack), len(fins)) == (1, 1, 2), (port, mine)
        assert syn[0][:2] == (client, port)
