"""capture.sockaddr: the sockaddr bytes the probes copy, written as nginx logs addresses."""

from __future__ import annotations

from ngxscope.capture.sockaddr import format_sockaddr


def test_format_sockaddr() -> None:
    import socket
    import struct

    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8080) + socket.inet_aton("10.1.2.3") + bytes(8)
    assert format_sockaddr(v4, 16) == "10.1.2.3:8080"
    v6 = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 443) + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    assert format_sockaddr(v6, 28) == "[::1]:443"
    mapped = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 80) + bytes(4)
              + socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1") + bytes(4))
    assert format_sockaddr(mapped, 28) == "127.0.0.1:80"
    assert format_sockaddr(b"\x00" * 16, 0) == ""
    unnamed = struct.pack("<H", socket.AF_UNIX) + bytes(26)
    assert format_sockaddr(unnamed, 2) == "unix:"  # nginx's $remote_addr of a unix client
    named = struct.pack("<H", socket.AF_UNIX) + b"/run/a.sock".ljust(26, b"\0")
    assert format_sockaddr(named, 2 + 12) == "unix:/run/a.sock"
    cut = struct.pack("<H", socket.AF_UNIX) + b"/tmp/nginx-test-0123456789/unix.sock"[:26]
    assert format_sockaddr(cut, 2 + 37) == "unix:/tmp/nginx-test-0123456789…"  # cut: said so
    assert format_sockaddr(named, 110) == "unix:/run/a.sock"


def test_cut_unix_path_completed_from_bound_sockets() -> None:
    """A unix path longer than the 26 bytes the probes copy is completed from the one bound
    socket whose path begins so (the listener nginx accepted on, or connected to)."""
    import socket
    import struct
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ngxscope-unix-path-", dir="/tmp") as tmp:
        path = f"{tmp}/unix.sock"
        assert len(path) > 26
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
            srv.bind(path)
            srv.listen(1)
            raw = struct.pack("<H", socket.AF_UNIX) + path.encode()[:26]
            assert format_sockaddr(raw, 2 + len(path) + 1) == "unix:" + path
