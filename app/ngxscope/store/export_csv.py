"""CSV export of the window's table: one row per exchange, the table's columns in order.

Columns: time (ISO 8601 UTC, ms), worker, client, method, host, path (the target, query
included, as the table shows it), status, duration_ms, upstream (peer addresses in
attempt order, joined by " > "), request_bytes, response_bytes, tls (1/0), error, then
nginx's own: remote (the client realip named, nginx's $remote_addr, when it replaced the
socket's peer), nginx_msec ($msec on nginx's clock) and subrequest_upstream (the peers
of the request's subrequests, auth_request and the like, which $upstream_addr leaves out).
RFC 4180: comma separated, CRLF line ends, fields quoted when they hold a comma, quote or
line break, UTF-8 without a byte order mark. Text cells that a spreadsheet would take for
a formula (starting with = + - @, tab or carriage return) are prefixed with a single quote,
as OWASP recommends against CSV injection; numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import IO

from ngxscope.model import Exchange
from ngxscope.store.export_har import iso_time

__all__ = ["COLUMNS", "csv_row", "safe_cell", "write_csv"]

COLUMNS = [
    "time",
    "worker",
    "client",
    "method",
    "host",
    "path",
    "status",
    "duration_ms",
    "upstream",
    "request_bytes",
    "response_bytes",
    "tls",
    "error",
    "remote",
    "nginx_msec",
    "subrequest_upstream",
]
"""The header row."""

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str) -> str:
    """A text cell no spreadsheet evaluates as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(ex: Exchange) -> list[str | int]:
    """The row of one exchange, in `COLUMNS` order."""
    return [
        iso_time(ex.start),
        ex.pid,
        safe_cell(ex.client),
        safe_cell(ex.method),
        safe_cell(ex.host),
        safe_cell(ex.target),
        "" if ex.status is None else ex.status,
        f"{ex.duration_ms:.3f}",
        safe_cell(" > ".join(a.addr for a in ex.upstream)),
        ex.request_bytes,
        ex.response_bytes,
        1 if ex.tls else 0,
        safe_cell(ex.error or ""),
        safe_cell(ex.remote or ""),
        "" if ex.nginx_end is None else f"{ex.nginx_end:.3f}",
        safe_cell(" > ".join(a.addr for a in ex.subrequest_upstream)),
    ]


def write_csv(exchanges: Iterable[Exchange], out: IO[bytes]) -> int:
    """Write the header and one row per exchange; returns the number of rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    n = 0
    for ex in exchanges:
        writer.writerow(csv_row(ex))
        n += 1
        if buf.tell() >= 1 << 16:
            out.write(buf.getvalue().encode("utf-8", "backslashreplace"))
            buf.seek(0)
            buf.truncate()
    out.write(buf.getvalue().encode("utf-8", "backslashreplace"))
    return n
