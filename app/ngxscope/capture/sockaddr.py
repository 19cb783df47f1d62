"""The socket addresses the probes copy (struct sockaddr_in / _in6 / _un, at most
SOCKADDR_MAX bytes), written as nginx writes them in its access log."""

from __future__ import annotations

import socket

__all__ = ["SOCKADDR_MAX", "format_sockaddr", "unix_path_with_prefix"]

SOCKADDR_MAX = 28

_UNIX_PATHS: dict[str, str] = {}


def unix_path_with_prefix(prefix: str) -> str | None:
    """The one bound unix socket path (/proc/net/unix, this network namespace) that begins
    with `prefix`: a path longer than the sockaddr bytes the probes copy is completed so
    (a listener's own path, or the peer nginx connected to). None: none or several."""
    known = _UNIX_PATHS.get(prefix)
    if known is not None:
        return known
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    paths = {parts[7] for parts in (line.split(None, 7) for line in lines)
             if len(parts) == 8 and parts[7].startswith(prefix)}
    if len(paths) != 1:
        return None
    if len(_UNIX_PATHS) > 256:
        _UNIX_PATHS.clear()
    found = _UNIX_PATHS[prefix] = paths.pop()
    return found


def format_sockaddr(raw: bytes, length: int) -> str:
    """struct sockaddr_in / sockaddr_in6 bytes → "ip:port" / "[ip6]:port" ("" if unknown)."""
    if length < 2 or len(raw) < 2:
        return ""
    family = int.from_bytes(raw[0:2], "little")
    if family == socket.AF_UNIX:
        # as nginx's $remote_addr/$server_addr: "unix:" for an unnamed peer, else its path;
        # a path longer than the bytes captured ends in "…" where it was cut
        path = raw[2:length].split(b"\0", 1)[0]
        text = path.decode("utf-8", "replace")
        if length > len(raw) and len(path) == len(raw) - 2:
            return "unix:" + (unix_path_with_prefix(text) or text + "…")
        return "unix:" + text
    if length < 8 or len(raw) < 8:
        return ""
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{port}"
    if family == socket.AF_INET6 and len(raw) >= 24:
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if addr.startswith("::ffff:") and "." in addr:
            return f"{addr[7:]}:{port}"
        return f"[{addr}]:{port}"
    return ""
