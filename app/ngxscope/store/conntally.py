"""Figures of the connections beneath the requests (socket filter fields), for the
TLS / Connections panel: versions, ciphers, SNI, ALPN, resumption rate, handshake-time
percentiles, failures by reason and the clients that failed.

Counted once per connection (its first exchange seen, or its own record for a connection
that never became a request), so keep-alive traffic does not inflate the handshake figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ngxscope.model import Exchange
from ngxscope.store.hdrhist import HdrHistogram

__all__ = ["ConnTally"]

_MAX_SEEN = 200_000
"""Connection ids remembered to count each once (then forgotten oldest first)."""


@dataclass(slots=True)
class ConnTally:
    """Running counts over exchanges fed in completion order."""

    connections: int = 0
    """Connections seen with wire facts (a TCP handshake or a TLS one)."""
    tls: int = 0
    """... of them with a TLS handshake."""
    resumed: int = 0
    """TLS connections that resumed a session."""
    resets: int = 0
    """Connections reset (RST), by either side."""
    versions: Counter[str] = field(default_factory=Counter)
    ciphers: Counter[str] = field(default_factory=Counter)
    snis: Counter[str] = field(default_factory=Counter)
    alpns: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Connections that never became a request, by outcome ("tls-failed", "reset", "closed")."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed TLS handshakes by reason (the alert)."""
    failed_clients: Counter[str] = field(default_factory=Counter)
    """Failed TLS handshakes by client address (without the port)."""
    handshake: HdrHistogram = field(default_factory=HdrHistogram)
    """TLS handshake times (ms)."""
    connect: HdrHistogram = field(default_factory=HdrHistogram)
    """TCP connect times (ms)."""
    _seen: dict[str, None] = field(default_factory=dict)

    def _first(self, ex: Exchange) -> bool:
        key = ex.conn_id or f"{ex.client}>{ex.server}@{ex.conn_start}"
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > _MAX_SEEN:
            del self._seen[next(iter(self._seen))]
        return True

    def feed(self, batch: list[Exchange]) -> None:
        for ex in batch:
            if ex.conn_start is None and ex.tls_version is None and ex.conn_outcome is None:
                continue  # no wire facts (capture without the socket filter)
            if ex.conn_outcome is None and not self._first(ex):
                continue
            self.connections += 1
            if ex.tcp_connect_ms is not None:
                self.connect.record(ex.tcp_connect_ms)
            if ex.reset_by:
                self.resets += 1
            if ex.conn_outcome is not None:
                self.outcomes[ex.conn_outcome] += 1
                if ex.conn_outcome == "tls-failed":
                    reason = (ex.error or "").removeprefix("TLS handshake failed: ") or "unknown"
                    self.failures[reason] += 1
                    self.failed_clients[ex.client.rpartition(":")[0] or ex.client] += 1
            if ex.tls_version is None:
                continue
            self.tls += 1
            self.versions[ex.tls_version] += 1
            if ex.tls_cipher:
                self.ciphers[ex.tls_cipher] += 1
            self.snis[ex.sni or "(none)"] += 1
            self.alpns[ex.alpn or "(none)"] += 1
            if ex.tls_resumed:
                self.resumed += 1
            if ex.tls_handshake_ms is not None:
                self.handshake.record(ex.tls_handshake_ms)

    @property
    def resumption_rate(self) -> float | None:
        return self.resumed / self.tls if self.tls else None
