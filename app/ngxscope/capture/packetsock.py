"""A packet socket that hands user space nothing its filter did not pass, from its first packet.

bcc's `BPF.attach_raw_socket` opens a packet socket for every protocol, binds it to the
interface, and only then attaches the filter: whatever crosses any interface in between is
queued whole, unfiltered (frames of up to 64 KiB on loopback), and once those fill the
socket's receive buffer the kernel drops what the filter passes next, until user space first
reads. On a busy or loaded machine that is the handshake of the first connection after the
attach (tests/capture/test_wire_vs_accesslog.py lost its TLS facts about one run in five).
Here the socket is opened for no protocol (it receives nothing), gets its filter
(`open_filtered`) and its options, and starts receiving at the bind (`start_receiving`).
"""

from __future__ import annotations

import socket
import struct

__all__ = ["ETH_P_ALL", "SO_ATTACH_BPF", "open_filtered", "start_receiving"]

ETH_P_ALL = 0x0003
SO_ATTACH_BPF = 50


def open_filtered(prog_fd: int) -> socket.socket:
    """A packet socket (of this thread's network namespace) that receives nothing yet, with
    the loaded BPF_PROG_TYPE_SOCKET_FILTER program `prog_fd` on it. Raises OSError."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, struct.pack("i", prog_fd))
    except OSError:
        sock.close()
        raise
    return sock


def start_receiving(sock: socket.socket, interface: str) -> None:
    """Bind `sock` to every protocol on `interface`: it receives from here on, filtered, with
    the options set before. Raises OSError (an unknown interface)."""
    sock.bind((interface, ETH_P_ALL))
