"""Where nginx keeps the few struct fields the probes read, per nginx version.

Only leading fields of `ngx_connection_t` (fd, listening, sent, sockaddr...), `ngx_listening_t` and `ngx_http_request_t` are
read. They have been stable for years except for one insertion: nginx 1.25 added
`ngx_quic_stream_t *quic` (present with NGX_QUIC or NGX_COMPAT) before `ssl`, which moves
`local_sockaddr` by 8 bytes. Everything else the probes need (fd, listening, sockaddr) sits
before it. The decoder checks the addresses it gets back and flags nonsense.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Layout", "layout_for_version"]


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets (x86-64) of the fields the probes read."""

    fd: int = 24
    """ngx_connection_t.fd"""
    listening: int = 64
    """ngx_connection_t.listening (NULL for nginx's own outgoing connections)"""
    sent: int = 72
    """ngx_connection_t.sent (for an HTTP/2 stream's fake connection: the stream's $bytes_sent)"""
    sockaddr: int = 104
    """ngx_connection_t.sockaddr (the client's address for accepted connections)"""
    socklen: int = 112
    """ngx_connection_t.socklen"""
    local_sockaddr: int = 160
    """ngx_connection_t.local_sockaddr (NULL until nginx needs it)"""
    local_socklen: int = 168
    """ngx_connection_t.local_socklen"""
    listening_sockaddr: int = 8
    """ngx_listening_t.sockaddr"""
    listening_socklen: int = 16
    """ngx_listening_t.socklen"""
    note: str = ""
    """How this layout was chosen."""

    def cflags(self) -> list[str]:
        return [
            f"-DOFF_FD={self.fd}",
            f"-DOFF_LISTENING={self.listening}",
            f"-DOFF_SENT={self.sent}",
            f"-DOFF_SOCKADDR={self.sockaddr}",
            f"-DOFF_SOCKLEN={self.socklen}",
            f"-DOFF_LOCAL_SOCKADDR={self.local_sockaddr}",
            f"-DOFF_LOCAL_SOCKLEN={self.local_socklen}",
            f"-DLISTENING_OFF_SOCKADDR={self.listening_sockaddr}",
            f"-DLISTENING_OFF_SOCKLEN={self.listening_socklen}",
        ]


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def layout_for_version(version: str | None) -> Layout:
    """The layout for an nginx version string ("1.22.1"); unknown versions get 1.22's."""
    if version and _version_tuple(version) >= (1, 25, 0):
        return Layout(local_sockaddr=168, local_socklen=176, note=f"nginx {version}: quic field present")
    return Layout(note=f"nginx {version or 'unknown version'}: 1.17-1.24 layout")
