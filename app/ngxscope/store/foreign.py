"""Files other tools captured, opened like sessions: HAR (browsers' DevTools, HTTP Toolkit,
mitmproxy, ngxscope's own export) and pcap / pcapng of plaintext HTTP (tcpdump, dumpcap).

`foreign_kind(path)` tells them from an ngxscope session by their first bytes;
`read_foreign(path)` reads one into a `Session` (None for a native session file).
"""

from __future__ import annotations

import os

from ngxscope.store.import_har import import_har
from ngxscope.store.import_pcap import import_pcap, is_pcap
from ngxscope.store.session import Session

__all__ = ["FILE_FILTERS", "foreign_kind", "read_foreign"]

FILE_FILTERS = ("HAR (*.har *.json)", "Packet captures (*.pcap *.pcapng *.cap)")
"""File dialog filters for what `read_foreign` opens."""


def foreign_kind(path: str | os.PathLike[str]) -> str | None:
    """"har", "pcap" or "pcapng"; None for anything else (an ngxscope session, or a file
    whose errors the session reader reports)."""
    kind = is_pcap(path)
    if kind is not None:
        return kind
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return "har" if head.lstrip().startswith(b"{") else None


def read_foreign(path: str | os.PathLike[str]) -> Session | None:
    """The file as a `Session`, or None when it is not a foreign format (raises
    `SessionError` with one line for a damaged one)."""
    kind = foreign_kind(path)
    if kind == "har":
        return import_har(path)
    if kind in ("pcap", "pcapng"):
        return import_pcap(path)
    return None
