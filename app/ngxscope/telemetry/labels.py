"""Small helpers the exporters share: status classes, address splitting, bounded labels."""

from __future__ import annotations

import threading

__all__ = ["OTHER", "BoundedLabel", "split_addr", "status_class"]

OTHER = "other"
"""The label value every new value maps to once a label has reached its limit."""

KNOWN_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
)


def status_class(status: int | None) -> str:
    """"2xx" for 200..299 ...; "none" when nginx sent no response."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


def method_label(method: str) -> str:
    """The method itself when it is a standard one, else "_OTHER" (semantic conventions)."""
    return method if method in KNOWN_METHODS else "_OTHER"


def split_addr(addr: str) -> tuple[str, int | None]:
    """"127.0.0.1:8081" -> ("127.0.0.1", 8081); "[::1]:80" -> ("::1", 80); "unix:/x" -> ("unix:/x", None)."""
    addr = addr.strip()
    if addr.startswith("unix:"):
        return addr, None
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return addr, None


class BoundedLabel:
    """Maps label values to themselves until `limit` distinct ones were seen, then to "other".

    Values come from nginx's configuration (server blocks, upstream groups and peers) or the
    worker pids, so they are few; the bound keeps a misbehaving source (a resolver handing out
    new peer addresses, reload storms) from growing the metric series without end.
    """

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.overflowed = 0
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        with self._lock:
            if len(self.seen) < self.limit:
                self.seen.add(value)
                return value
            self.overflowed += 1
            return OTHER
