"""A plain TCP peer for the lab's ``stream {}`` proxy (not HTTP: bytes in, bytes out).

Run as ``python -m ngxscope.lab.tcpbackend --port P``. Per connection, the first bytes decide:

- ``SEND <a> REPLY <b>\\n`` then `a` bytes: after reading them all, it writes `b` bytes
  (a repeating pattern) and closes: the peer ends the session.
- anything else: an echo; every byte read is written back until the client closes.

So a stream session can carry any payload, HTTP-looking text included, with byte counts
chosen by the client in both directions.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import socketserver

__all__ = ["TcpBackendHandler", "main", "reply_bytes"]

_HEAD = re.compile(rb"^SEND (\d{1,9}) REPLY (\d{1,9})\n")
_PATTERN = bytes(range(256))


def reply_bytes(n: int) -> bytes:
    """The `n` bytes the backend replies with (a repeating 0..255 pattern)."""
    return (_PATTERN * (n // 256 + 1))[:n]


class TcpBackendHandler(socketserver.BaseRequestHandler):
    """One client connection (nginx's upstream connection)."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):
            first = sock.recv(65536)
            if not first:
                return
            m = _HEAD.match(first)
            if m is None:
                self._echo(sock, first)
                return
            want, reply = int(m.group(1)), int(m.group(2))
            got = len(first) - m.end()
            while got < want:
                chunk = sock.recv(min(65536, want - got))
                if not chunk:
                    return
                got += len(chunk)
            sock.sendall(reply_bytes(reply))

    @staticmethod
    def _echo(sock: socket.socket, first: bytes) -> None:
        data = first
        while data:
            sock.sendall(data)
            data = sock.recv(65536)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    with _Server((args.host, args.port), TcpBackendHandler) as server, \
            contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
