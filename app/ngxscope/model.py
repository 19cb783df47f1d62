"""The data model every layer shares: one HTTP exchange as nginx handled it.

Small typed dataclasses in the manner of mitmproxy's flow.py. `to_dict` gives the
JSON-ready form used by the session file and the JSONL export; `from_dict` is strict:
an unknown key raises `ModelError` (a file from a newer version must not be half-read).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "MARKS",
    "TCP",
    "Exchange",
    "LifecycleEvent",
    "ModelError",
    "UpstreamAttempt",
    "WireFrame",
    "nginx_list",
]

Headers = list[tuple[str, str]]

TCP = "TCP"
"""`Exchange.method` and `Exchange.version` of a stream-module session (nginx's TCP proxy):
one record per client connection, with `$status`, `$bytes_received` (request_bytes),
`$bytes_sent` (response_bytes), `$session_time` and its upstream attempts; no headers."""


MARKS = ("red", "orange", "yellow", "green", "blue", "purple")
"""The colours a row can be marked with (`Exchange.mark`)."""


class ModelError(ValueError):
    """A record does not fit the model (unknown key, wrong type)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(slots=True)
class UpstreamAttempt:
    """One connection nginx made (or reused) to an upstream peer for a client request."""

    addr: str
    """Peer address as nginx's `$upstream_addr` prints it ("127.0.0.1:8081")."""
    status: int | None = None
    """Status line code the peer answered (`$upstream_status`); None if it never answered."""
    connect_ms: float | None = None
    """Time to establish the connection (`$upstream_connect_time`); 0 for a reused one."""
    header_ms: float | None = None
    """Time until the response header was read (`$upstream_header_time`)."""
    duration_ms: float | None = None
    """Time until the response was read completely (`$upstream_response_time`)."""
    request_bytes: int = 0
    """Bytes nginx sent to the peer for this attempt."""
    response_bytes: int = 0
    """Bytes nginx read from the peer for this attempt."""
    reused: bool = False
    """The connection came from a keepalive pool."""
    start: float | None = None
    """Unix time nginx started this attempt (connect or first write)."""
    request_head: str | None = None
    """The request head as nginx sent it upstream (request line and headers)."""
    response_head: str | None = None
    """The response head the peer sent (status line and headers)."""
    group: str | None = None
    """The `upstream NAME { }` block the peer belongs to (from nginx's configuration), or the
    proxy_pass address for a peer named directly; None when unknown."""
    redirected: bool = False
    """nginx went on to another upstream group for this attempt, after an internal redirect
    (error_page, X-Accel-Redirect): its `$upstream_*` lists write " : " before it, not ", "."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ATTEMPT_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpstreamAttempt:
        return _strict(cls, data)


@dataclass(slots=True)
class WireFrame:
    """One packet of a connection as the socket filter passed it (an Ethernet frame, cut in
    the kernel: headers, and TLS handshake records)."""

    ts: float
    """Unix time the kernel received it."""
    frame: bytes
    """The frame's bytes as cut (base64 in records); its IP header still says how long the
    packet was."""

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "frame": _b64(self.frame) if self.frame else ""}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WireFrame:
        data = dict(data)
        if "frame" in data:
            data["frame"] = _unb64(data["frame"])
        return _strict(cls, data)


@dataclass(slots=True)
class Exchange:
    """One HTTP request a worker read and the response it wrote, as nginx logged it."""

    id: int
    """Sequence number within the capture, in order of completion."""
    start: float
    """Unix time nginx read the first byte of the request."""
    end: float
    """Unix time nginx finished the request (when it logs it, `$msec`): usually its last
    write of the response; later when it still waited for an upstream to end its answer,
    or lingered before closing."""
    pid: int
    """The nginx worker process that handled the request."""
    client: str
    """Client address "ip:port"; IPv6 in brackets, "[::1]:60752" (unambiguous; nginx's
    `$remote_addr:$remote_port` writes "::1:60752")."""
    server: str
    """nginx's local address "ip:port" (IPv6 bracketed, as `client`)."""
    tls: bool
    """The client connection uses TLS."""
    conn_id: str = ""
    """Stable identity of the connection in this capture: survives fd reuse ("pid:fd:first-seen-ns")."""
    conn_seq: int = 0
    """Position of this exchange on its connection (0 for the first request)."""
    method: str = ""
    """Request method; "" when the request line could not be parsed."""
    target: str = ""
    """Request target as sent, query included."""
    version: str = ""
    """Request protocol, "HTTP/1.1"."""
    host: str = ""
    """Host header (or the authority of an absolute target)."""
    status: int | None = None
    """Final response status; None when nginx sent no response."""
    reason: str = ""
    """Reason phrase of the response status line."""
    request_bytes: int = 0
    """Bytes of the request nginx read: line, headers and body (`$request_length`)."""
    response_bytes: int = 0
    """Bytes of the response nginx wrote: headers and body (`$bytes_sent`)."""
    request_headers: Headers = field(default_factory=list)
    """Request headers in wire order."""
    response_headers: Headers = field(default_factory=list)
    """Response headers in wire order (of the final response, after any 1xx)."""
    request_body: bytes = b""
    """Captured request body bytes as they crossed the wire (may be cut, see `truncated`)."""
    response_body: bytes = b""
    """Captured response body bytes as they crossed the wire (chunked framing kept)."""
    request_body_size: int = 0
    """Size of the request body on the wire."""
    response_body_size: int = 0
    """Size of the response body on the wire."""
    sendfile_bytes: int = 0
    """Response bytes sent with sendfile(2): counted, never in memory, so not captured."""
    truncated: bool = False
    """Some payload bytes were not captured (cap, sendfile, or lost events); sizes stay exact."""
    error: str | None = None
    """Why the exchange is incomplete or malformed; None when it is whole."""
    upstream: list[UpstreamAttempt] = field(default_factory=list)
    """Upstream attempts in order, retries included: the request's own, what nginx logs as
    `$upstream_addr`."""
    server_block: str | None = None
    """The `server { }` block that handled the request (its first server_name), from nginx's
    configuration; None when unknown."""
    location: str | None = None
    """The `location` block of that server that served the request, as written in the
    configuration ("/api/", "= /health", "~ \\.php$", "@fallback"): chosen the way nginx
    chooses, internal redirects followed where the capture saw them
    (`capture.locations`); None when unknown."""
    answer: str | None = None
    """Why nginx answered itself, or how its cache served the request (`capture.selfanswer`):
    "cache-hit", "cache-miss", "cache-expired", "cache-bypass", "cache-stale", "cache-updating",
    "cache-revalidated" (as `$upstream_cache_status`), "limit-req:ZONE", "limit-conn:ZONE",
    "return", "client-abort";
    None for a plain proxied or static request, or when unknown."""
    location_via: str | None = None
    """How `location` was known: "nginx" (read from nginx's memory: the request's loc_conf,
    the location nginx chose, rewrites and `if` included) or "config" (nginx's choice
    repeated on its configuration, `capture.locations`); None when `location` is."""
    nginx_ms: float | None = None
    """The request time as nginx's own clock measures it (`$request_time` in ms). nginx caches
    the time once per event-loop turn, so under load it can trail the true `duration_ms`."""
    summary_only: bool = False
    """Counted from the kernel's per-request summary, without payload (shed under pressure,
    or sampled out over the capture's CPU budget): status, sizes, times and the request line
    are exact, headers and bodies unknown. Not an error (`error` stays None for it)."""
    mark: str = ""
    """The colour the user marked the row with (one of `MARKS`); "" when not marked."""
    note: str = ""
    """The user's note on the row; "" when none."""
    proxy_client: str | None = None
    """On a ``listen ... proxy_protocol`` socket: the client the PROXY protocol header named
    ("ip:port", "[ip6]:port"; nginx's `$proxy_protocol_addr:$proxy_protocol_port`), while
    `client` is the socket's peer (the load balancer); "" when the header named none (LOCAL,
    UNKNOWN); None when the connection had no such header."""
    conn_start: float | None = None
    """Unix time of the client's SYN for this connection (socket filter); None when unseen."""
    tcp_connect_ms: float | None = None
    """TCP handshake of the connection: the client's SYN to its ACK of nginx's SYN-ACK, as the
    socket filter saw them; None when the connection's start was not seen."""
    tls_handshake_ms: float | None = None
    """TLS handshake of the connection: the ClientHello to the client's last handshake flight
    (ChangeCipherSpec / Finished; the ServerHello when that is not visible)."""
    tls_version: str | None = None
    """Negotiated protocol as nginx's `$ssl_protocol` prints it ("TLSv1.3")."""
    tls_cipher: str | None = None
    """Chosen cipher suite as `$ssl_cipher` prints it (OpenSSL's name)."""
    sni: str | None = None
    """Server name the client asked for (ClientHello server_name, `$ssl_server_name`)."""
    alpn: str | None = None
    """Application protocol agreed (`$ssl_alpn_protocol`): the ServerHello's for TLS 1.2; for
    TLS 1.3 (nginx's choice is encrypted) the offered protocol the connection then spoke."""
    tls_resumed: bool | None = None
    """The TLS session was resumed (TLS 1.3: ServerHello pre_shared_key; TLS 1.2: the session
    id echoed); None when no handshake was seen."""
    retransmits: int | None = None
    """Retransmitted segments (SYNs included) on the connection up to this exchange."""
    reset_by: str | None = None
    """"client" or "server": who reset the connection (RST), when one did."""
    conn_outcome: str | None = None
    """For a connection that never became a request (then method, target and status are
    empty): "tls-failed" (fatal alert or no ServerHello; `error` says which), "reset" or
    "closed" before a request. None for an exchange."""
    kept_by: str | None = None
    """Why this exchange is a row while the capture sampled (the kernel decided at its
    completion; the other sampled-out requests are only counted): "sample" (the uniform
    sample, payload captured), or the rules that kept a sampled-out one, comma-separated:
    "error" (5xx), "aborted" (499/444/408), "upstream" (a failed attempt), "malformed" (400),
    "slow" (over the slow threshold); "all" when kernel counting was off. None when the
    capture was not sampling (every request a row)."""
    wire_packets: list[WireFrame] = field(default_factory=list)
    """The connection's packets the socket filter passed up to this exchange (SYN, SYN-ACK,
    the handshake ACK, ClientHello, ServerHello, alerts; and FIN / RST for a connection that
    never became a request), on the connection's first exchange and on connection records
    only; the pcapng export writes them as they were."""
    remote: str | None = None
    """The client nginx logged (`$remote_addr:$remote_port`) when its realip module replaced
    the socket's peer with one named by X-Real-IP, X-Forwarded-For or a PROXY protocol
    header ("ip:port", or "ip" when the header named no port); None when nginx logged the
    peer itself (`client`)."""
    nginx_end: float | None = None
    """When nginx finished the request on its own cached clock (`$msec`, whole ms): it
    caches the time once per event-loop turn, so it can trail `end`; None when unknown."""
    subrequest_upstream: list[UpstreamAttempt] = field(default_factory=list)
    """Upstream attempts made by the request's subrequests (auth_request, SSI include,
    slice, mirror, addition...), in order: nginx leaves them out of the request's
    `$upstream_addr`, so they are kept apart from `upstream`."""
    upstream_via: str | None = None
    """How `upstream` was known: "nginx" (its own list, r->upstream_states, read at the
    request's completion: names, statuses and times as its `$upstream_*` variables print
    them) or "wire" (rebuilt from the connects and bytes); None when there is no attempt."""

    @property
    def duration_ms(self) -> float:
        return max(0.0, (self.end - self.start) * 1000.0)

    @property
    def is_tcp(self) -> bool:
        """A TCP proxy session (nginx's stream module), not an HTTP exchange (see `TCP`)."""
        return self.version == TCP

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the JSONL export contract and the session record)."""
        # one pass over precomputed names: this runs for every exchange a capture records
        out: dict[str, Any] = {name: getattr(self, name) for name in _EXCHANGE_FIELDS}
        out["request_body"] = _b64(self.request_body) if self.request_body else ""
        out["response_body"] = _b64(self.response_body) if self.response_body else ""
        out["request_headers"] = [[k, v] for k, v in self.request_headers]
        out["response_headers"] = [[k, v] for k, v in self.response_headers]
        out["upstream"] = [a.to_dict() for a in self.upstream]
        out["wire_packets"] = [w.to_dict() for w in self.wire_packets]
        out["subrequest_upstream"] = [a.to_dict() for a in self.subrequest_upstream]
        out["duration_ms"] = round(self.duration_ms, 3)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exchange:
        data = dict(data)
        data.pop("duration_ms", None)
        try:
            for name in ("request_body", "response_body"):
                if name in data:
                    data[name] = _unb64(data[name])
            for name in ("request_headers", "response_headers"):
                if name in data:
                    data[name] = [(str(k), str(v)) for k, v in data[name]]
            for name in ("upstream", "subrequest_upstream"):
                if name in data:
                    data[name] = [UpstreamAttempt.from_dict(a) for a in data[name]]
            if "wire_packets" in data:
                data["wire_packets"] = [WireFrame.from_dict(w) for w in data["wire_packets"]]
        except (TypeError, ValueError) as exc:
            raise ModelError(f"bad exchange record: {exc}") from None
        return _strict(cls, data)


def nginx_list(attempts: list[UpstreamAttempt], values: list[str]) -> str:
    """One value per attempt joined as nginx's `$upstream_*` variables join them: ", ", and
    " : " before an attempt in another group (`UpstreamAttempt.redirected`)."""
    out = []
    for i, (att, value) in enumerate(zip(attempts, values, strict=True)):
        if i:
            out.append(" : " if att.redirected else ", ")
        out.append(value)
    return "".join(out)


_ATTEMPT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UpstreamAttempt))
_EXCHANGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Exchange))


@dataclass(slots=True)
class LifecycleEvent:
    """Something that happened to the capture or to nginx during it."""

    ts: float
    """Unix time of the event."""
    kind: str
    """"worker-start", "worker-exit", "attach", "detach", "lost-events", ..."""
    pid: int = 0
    """Process the event concerns (0 when none)."""
    detail: str = ""
    """Human-readable detail."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LifecycleEvent:
        return _strict(cls, data)


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _strict(cls: Any, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise ModelError(f"{cls.__name__} record must be an object, got {type(data).__name__}")
    known = _FIELD_NAMES.get(cls)
    if known is None:
        known = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    unknown = data.keys() - known
    if unknown:
        raise ModelError(f"unknown key(s) in {cls.__name__} record: {', '.join(sorted(unknown))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ModelError(f"bad {cls.__name__} record: {exc}") from None
