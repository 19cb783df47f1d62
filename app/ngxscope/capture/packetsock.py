"""A packet socket that hands user space nothing its filter did not pass, from its first packet.

bcc's `BPF.attach_raw_socket` opens a packet socket for every protocol, binds it to the
interface, and only then attaches the filter: whatever crosses any interface in between is
queued whole, unfiltered (frames of up to 64 KiB on loopback), and once those fill the
socket's receive buffer the kernel drops what the filter passes next, until user space first
reads. On a busy or loaded machine that is the handshake of the first connection after the
attach (tests/capture/test_wire_vs_accesslog.py lost its TLS facts about one run in five).
Here the socket is opened for no protocol (it receives nothing), gets its filter and
options, and starts receiving at the bind.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

__all__ = ["ETH_P_ALL", "SO_ATTACH_BPF", "open_packet_socket"]

ETH_P_ALL = 0x0003
SO_ATTACH_BPF = 50


def open_packet_socket(prog_fd: int, interface: str,
                       options: Iterable[tuple[int, int, int]] = ()) -> socket.socket:
    """A packet socket on `interface` (of this thread's network namespace) filtered by the
    loaded BPF_PROG_TYPE_SOCKET_FILTER program `prog_fd`, with the (level, option, value)
    `options` set before it receives anything. Raises OSError."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, struct.pack("i", prog_fd))
        for level, option, value in options:
            sock.setsockopt(level, option, value)
        sock.bind((interface, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock
