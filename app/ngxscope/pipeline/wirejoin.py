"""The capture run's wire stage: socket-filter packets joined to exchanges by 4-tuple.

`WireJoin` owns the socket filter (`capture.wire.WireCapture`) and the connection tracker
(`decode.wire.ConnTracker`). The Recorder calls `annotate` on every exchange before the
sinks see it: the packets the kernel holds are drained first (so a handshake is never
missed for being still in the socket's queue), then the exchange gets its connection's TCP
and TLS facts. `closed_records` turns connections that ended without any exchange into
records of their own (`Exchange.conn_outcome`): failed TLS handshakes (with nginx's reason
from its error log, `pipeline.errorlog`), connections reset or closed before a request. Those
wait `grace` seconds after their end, since the exchange of a connection's last request can
reach the Recorder after its FIN reached the filter.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

from ..capture.wire import WireCapture
from ..decode.wire import MAX_FRAMES, ConnFacts, ConnTracker, Segment, parse_frame
from ..model import Exchange, WireFrame
from .errorlog import HandshakeErrors

__all__ = ["WireJoin", "apply_facts", "record_for"]

COUNTED_MAX = 65536
"""Connections counted in the kernel held while their packets are awaited: past this, the
oldest half is forgotten (each then risks only a false "closed before a request" record)."""


def _alpn(facts: ConnFacts, ex: Exchange | None) -> str | None:
    sh, ch = facts.server_hello, facts.client_hello
    if sh is None or ch is None:
        return None
    if sh.alpn is not None or sh.version != "TLSv1.3":
        return sh.alpn
    # TLS 1.3 encrypts nginx's choice (EncryptedExtensions): the offered protocol spoken
    if ex is None or not ch.alpn:
        return None
    if ex.version.startswith("HTTP/2") and "h2" in ch.alpn:
        return "h2"
    for proto in ("http/1.1", "http/1.0"):
        if proto in ch.alpn:
            return proto
    return None


def apply_facts(ex: Exchange, facts: ConnFacts) -> None:
    """Give `ex` its connection's wire facts."""
    ex.conn_start = facts.syn_ts
    ex.tcp_connect_ms = facts.tcp_connect_ms
    ex.retransmits = facts.retransmits
    ex.reset_by = facts.reset_by
    ch, sh = facts.client_hello, facts.server_hello
    if ch is not None:
        ex.sni = ch.sni
    if sh is not None:
        ex.tls_version = sh.version
        ex.tls_cipher = sh.cipher
        ex.tls_handshake_ms = facts.tls_handshake_ms
        ex.tls_resumed = facts.tls_resumed
        ex.alpn = _alpn(facts, ex)


def record_for(facts: ConnFacts, ex_id: int) -> Exchange:
    """The record of a connection that never became a request."""
    start = facts.syn_ts or facts.hello_ts or facts.end_ts or 0.0
    end = facts.end_ts or start
    if facts.tls_failed:
        outcome, error = "tls-failed", f"TLS handshake failed: {facts.failure}"
    elif facts.reset_by:
        outcome, error = "reset", f"reset by the {facts.reset_by} before a request"
    else:
        outcome, error = "closed", f"closed by the {facts.fin_by or 'peer'} before a request"
    ex = Exchange(id=ex_id, start=start, end=end, pid=0, client=facts.client, server=facts.server,
                  tls=facts.client_hello is not None, error=error, conn_outcome=outcome,
                  wire_packets=[WireFrame(ts, frame) for ts, frame in facts.frames])
    apply_facts(ex, facts)
    return ex


class WireJoin:
    """Socket filter + connection tracker for one capture run (thread-safe)."""

    def __init__(self, listen: Sequence[str], grace: float = 2.0, error_logs: Sequence[str] = (),
                 tls_visible: bool = True, netns_pid: int | None = None) -> None:
        self.capture = WireCapture(listen, netns_pid=netns_pid)
        self.tls_visible = tls_visible
        """False when the capture method cannot see TLS requests (syscalls only): a connection
        whose TLS handshake completed then had requests nobody saw, so it is no record of a
        connection "closed before a request"; it is counted (`tls_unseen`) instead."""
        self.tls_unseen = 0
        self.errors = HandshakeErrors(list(error_logs))
        """nginx's reasons for failed handshakes (its error log)."""
        self.tracker = ConnTracker()
        self.parse: Callable[[float, bytes], Segment | None] = parse_frame
        """Frame -> segment (bench/wire_filter.py swaps in the dpkt-only reference)."""
        self.grace = grace
        self._lock = threading.Lock()
        self.unmatched = 0
        """Exchanges whose connection the filter did not follow (opened before the capture)."""
        self._counted: dict[tuple[str, str], float] = {}
        """Connections the kernel counted requests of, not yet in the tracker: (client,
        server) -> when we were told."""

    def start(self) -> str:
        """Attach; returns a line saying where. Raises capture.wire.WireError."""
        ifaces = self.capture.start()
        where = " (in nginx's network namespace)" if self.capture.other_netns else ""
        return f"socket filter on {', '.join(ifaces)}{where} for {', '.join(self.capture.listen)}"

    def pump(self, timeout: float = 0.0) -> int:
        """Feed what the filter passed so far to the tracker; returns the packet count."""
        with self._lock:
            packets = self.capture.read(timeout)
            parse, feed = self.parse, self.tracker.feed
            for p in packets:
                seg = parse(p.ts, p.data)
                if seg is not None:
                    facts = feed(seg)
                    if facts is not None and len(facts.frames) < MAX_FRAMES:
                        facts.frames.append((p.ts, p.data))
            return len(packets)

    def annotate(self, ex: Exchange) -> None:
        """Join `ex` to its connection. The filter's queue is drained first unless the
        connection's handshake is already known (keep-alive: no system call per exchange)."""
        if ex.conn_outcome is not None:
            return
        with self._lock:
            facts = self.tracker.get(ex.client, ex.server)
        if (facts is None or facts.ack_ts is None or facts.end_ts is not None
                or (ex.tls and facts.server_hello is None)):
            self.pump(0.0)
        with self._lock:
            facts = self.tracker.get(ex.client, ex.server)
            if facts is None:
                self.unmatched += 1
                return
            facts.joined += 1
            apply_facts(ex, facts)
            if facts.joined == 1:  # the connection's packets go with its first exchange
                ex.wire_packets = [WireFrame(ts, frame) for ts, frame in facts.frames]

    def counted(self, client: str, server: str) -> None:
        """The kernel counted requests of this connection instead of sending them: it is not
        one that "closed before a request", though no exchange may ever join it."""
        with self._lock:
            facts = self.tracker.get(client, server)
            if facts is not None:
                facts.counted = True
            else:   # its packets may still be in the filter's queue: settled at expiry
                counted = self._counted
                if len(counted) >= COUNTED_MAX:
                    for key in list(itertools.islice(counted, COUNTED_MAX // 2)):
                        del counted[key]
                counted[(client, server)] = time.time()

    def closed_records(self, next_id: int, now: float | None = None) -> list[Exchange]:
        """Connections that ended more than `grace` s ago without an exchange, as records
        numbered from `next_id` (forgets every connection that ended that long ago)."""
        now = time.time() if now is None else now
        with self._lock:
            gone = self.tracker.expire(now - self.grace)
            counted = self._counted
            for facts in gone:
                if counted.pop((facts.client, facts.server), None) is not None:
                    facts.counted = True
            if counted:   # connections the filter never followed (opened before it)
                stale = now - 30 * self.grace
                for key in [k for k, ts in counted.items() if ts < stale]:
                    del counted[key]
        out: list[Exchange] = []
        for facts in gone:
            if facts.joined == 0 and not facts.counted and facts.syn_ts is not None:
                if not self.tls_visible and facts.server_hello is not None and not facts.tls_failed:
                    self.tls_unseen += 1
                    continue
                rec = record_for(facts, next_id + len(out))
                if rec.conn_outcome == "tls-failed":
                    reason = self.errors.reason_for(rec.client, rec.end)
                    if reason:
                        rec.error = f"{rec.error} (nginx: {reason})"
                out.append(rec)
        return out

    def counters(self) -> dict[str, int]:
        c = self.capture.counters()
        return {"wire_seen": c["seen"], "wire_passed": c["passed"], "wire_retrans": c["retrans"],
                "wire_tls_errors": self.tracker.tls_errors, "wire_unmatched": self.unmatched,
                "wire_tls_unseen": self.tls_unseen}

    def stop(self) -> None:
        self.capture.stop()
        self.errors.close()
