"""What the assembler (decode.assembler) keeps per connection between events.

One :class:`Conn` per connection nginx has open (client side or upstream), keyed like the
capture's events. The decoders of whatever runs on it (HTTP/1 request stream, HTTP/2
connection, WebSocket tunnel, TCP session, fallback response framer) hang off it; the byte
counters and the last completion's are what response sizes and lost events are found from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import UpstreamAttempt
from .http1 import ParsedRequest, RequestStream
from .http2 import H2Connection
from .respframe import ResponseFramer
from .tcpstream import TcpSession
from .websocket import WsTunnel

__all__ = ["Conn", "ConnKey", "Upgrade"]

ConnKey = tuple[int, int, int]
"""(pid, fd, conn_ts): RawEvent.conn_key, unique per connection."""


@dataclass(slots=True)
class Upgrade:
    """The request nginx answered with "101 Switching Protocols": its exchange is handed out
    when the tunnel ends, so that its response counts the head and every byte relayed (as
    nginx's $bytes_sent does)."""

    request: ParsedRequest
    head: bytes
    """The 101 response head as captured."""
    head_len: int
    """Its length on the wire."""
    send_off: int
    """The connection's write offset where the 101 head starts."""
    send_first_ts: float
    upstream: list[UpstreamAttempt]


@dataclass(slots=True)
class Conn:
    """One connection's decoding state, from its first event to its close."""

    key: ConnKey
    pid: int
    fd: int
    client: bool
    tls: bool
    opened: float
    peer: str = ""
    local: str = ""
    requests: RequestStream = field(default_factory=RequestStream)
    recv_off: int = 0
    send_off: int = 0
    done_send_off: int = 0
    done_seq: int = 0
    seq: int = 0
    last_done_ts: float = 0.0
    last_done_clock: float = 0.0
    done_recv_off: int = 0
    segments: list[tuple[bytes, int]] = field(default_factory=list)
    captured: int = 0
    send_first_ts: float = 0.0
    send_last_ts: float = 0.0
    sendfile_bytes: int = 0
    send_hole: bool = False
    proxied: bool = False
    """nginx handed the current request to an upstream (so it read the request body)."""
    h2: H2Connection | None = None
    """The HTTP/2 decoder, for an HTTP/2 connection."""
    ws: WsTunnel | None = None
    """The connection was upgraded (101): nginx relays WebSocket frames."""
    upgrade: Upgrade | None = None
    """With ws: the upgrade's exchange, handed out when the tunnel ends."""
    proxy_client: str | None = None
    """The client a PROXY protocol header at the connection's start named (decode.proxyproto;
    "" for a LOCAL / UNKNOWN one); None: no such header."""
    kept_by: str | None = None
    """Why the exchange being completed is a row while the capture samples (REQ_DONE's keep
    rules, `Exchange.kept_by`); None when not sampling."""
    staged_cut: bool = False
    """The kernel held the current exchange's payload while it was sampled out (EVF_STAGED)
    and cut it at STAGE_CAP bytes per direction."""
    framer: ResponseFramer | None = None
    """EVF_NOMARK connections (no completion markers): responses framed from HTTP/1."""
    tcp: TcpSession | None = None
    """A stream-module (TCP proxy) session runs on this connection: bytes are not HTTP."""
    conn_id: str = ""
    """`Exchange.conn_id` of its exchanges, "pid:fd:conn_ts" (made at its first exchange)."""
