"""nginx's own reason for a failed TLS handshake, from its error log.

nginx logs each failed handshake as a line like

    2026/12/06 20:31:12 [info] 8096#8096: *123 SSL_do_handshake() failed (SSL: error:0A000102:
    SSL routines::unsupported protocol) while SSL handshaking, client: 127.0.0.1, server: ...

(at `info` level for the usual client-side causes, so only an error log at `info` or below
has them). `HandshakeErrors` follows the error log files the configuration names from their
end at the start of the capture, and hands each failure's reason to the connection record of
the same client address at the same second (the log has no client port).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import IO

__all__ = ["HandshakeErrors", "LoggedFailure", "parse_failure"]

_LINE = re.compile(
    r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[\w+\] \d+#\d+: (?:\*\d+ )?SSL_do_handshake\(\) failed "
    r"\((.*)\) while SSL handshaking, client: ([^,]+), server: (\S+)")
_WINDOW_S = 2.0


@dataclass(slots=True)
class LoggedFailure:
    ts: float
    """Unix time (the log's second resolution, local time)."""
    client: str
    """Client IP address (no port)."""
    reason: str
    """OpenSSL's reason ("unsupported protocol", "no shared cipher")."""
    used: bool = False


def parse_failure(line: str) -> LoggedFailure | None:
    """One error-log line -> the failure it reports, or None."""
    m = _LINE.match(line)
    if not m:
        return None
    try:
        ts = time.mktime(time.strptime(m.group(1), "%Y/%m/%d %H:%M:%S"))
    except ValueError:
        return None
    detail = m.group(2)
    # "SSL: error:0A000102:SSL routines::unsupported protocol" (several errors: the first)
    first = detail.split(" error:")[0] if detail.count(" error:") > 1 else detail
    reason = first.rsplit(":", 1)[-1].strip() or detail
    return LoggedFailure(ts=ts, client=m.group(3).strip(), reason=reason)


class HandshakeErrors:
    """Follows error log files; `reason_for` matches a failure to a connection."""

    def __init__(self, paths: list[str]) -> None:
        self._files: list[IO[str]] = []
        for path in paths:
            try:
                f = open(path, errors="replace")  # noqa: SIM115 - kept open while capturing
            except OSError:
                continue
            f.seek(0, 2)
            self._files.append(f)
        self.failures: list[LoggedFailure] = []
        self._partial = ["" for _ in self._files]

    def poll(self) -> None:
        for i, f in enumerate(self._files):
            text = self._partial[i] + f.read()
            lines = text.split("\n")
            self._partial[i] = lines.pop()
            for line in lines:
                failure = parse_failure(line)
                if failure is not None:
                    self.failures.append(failure)
        cutoff = time.time() - 120
        self.failures = [x for x in self.failures if x.ts >= cutoff]

    def reason_for(self, client: str, ts: float) -> str | None:
        """nginx's reason for the failed handshake of `client` ("ip:port") at `ts`."""
        self.poll()
        ip = client.rpartition(":")[0].strip("[]") or client
        for failure in self.failures:
            if not failure.used and failure.client == ip and abs(failure.ts - ts) <= _WINDOW_S:
                failure.used = True
                return failure.reason
        return None

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
