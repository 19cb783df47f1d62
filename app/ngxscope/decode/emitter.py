"""Where the protocol handlers' results go: numbered exchanges, lifecycle events, counts.

Every handler (decode.handlers) is given the one :class:`Emitter` of its dispatcher
(decode.assembler.Assembler) and hands its exchanges out through it; it never sees the
dispatcher. The emitter numbers exchanges in order of completion, numbers them on their
connection, keeps the decoder's counters and calls the consumer's callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from types import ModuleType
from typing import Any

from ..capture import compiled
from ..model import Exchange, LifecycleEvent
from .connstate import Conn
from .nginxlog import NginxValues
from .websocket import WsTunnel

__all__ = ["DecodeStats", "Emitter", "new_exchange", "new_exchange_py"]

_GIVEN = ("id", "start", "end", "pid", "client", "server", "tls", "conn_id", "conn_seq", "proxy_client",
          "kept_by")
"""The fields `Emitter.exchange` sets from the connection, in the order `new_exchange` takes them."""


def new_exchange_py(*values: Any) -> Exchange:
    """Exchange(**dict(zip(_GIVEN, values))), the rest at their defaults: the reference of
    `new_exchange`."""
    return Exchange(**dict(zip(_GIVEN, values, strict=True)))


def _compiled_builder() -> Callable[..., Exchange] | None:
    """model.Exchange's constructor in C (decode._fastmodel), from the dataclass's own fields."""
    fast: ModuleType | None = None
    if compiled.wanted():
        try:
            from . import _fastmodel as fast
        except ImportError:  # not built: Exchange(...) does the work
            return None
    spec = _builder_spec()
    if fast is None or spec is None:
        return None
    builder: Callable[..., Exchange] = fast.Builder(Exchange, *spec)
    return builder


def _builder_spec() -> tuple[tuple[str, ...], dict[str, Any], tuple[str, ...]] | None:
    """(the given fields, the others' defaults, the fields that are a new list each time) of
    Exchange; None when a field is neither given nor defaulted to a value or a new list."""
    defaults = {f.name: f.default for f in fields(Exchange) if f.name not in _GIVEN and f.default is not MISSING}
    factories = tuple(f.name for f in fields(Exchange) if f.name not in _GIVEN and f.default is MISSING)
    if any(f.default_factory is not list for f in fields(Exchange) if f.name in factories):
        return None  # a required field or another factory: the dataclass knows best
    return _GIVEN, defaults, factories


new_exchange: Callable[..., Exchange] = _compiled_builder() or new_exchange_py
"""A new Exchange from the `_GIVEN` fields' values, positionally (compiled when built)."""


@dataclass(slots=True)
class DecodeStats:
    """What the decoder has seen (shown in the status line and the session's stats)."""

    events: int = 0
    exchanges: int = 0
    malformed: int = 0
    gaps: int = 0
    """Holes found in byte streams (lost ring-buffer events)."""
    lost_responses: int = 0
    """Request completions that never arrived (lost events); their exchanges are flagged."""
    open_conns: int = 0
    shed: int = 0
    """Exchanges whose payload the kernel shed (pressure or sampling): counted from its summary."""
    sampled: int = 0
    """Of :attr:`shed`, those sampled out on purpose (the capture was over its CPU budget)."""
    counted: int = 0
    """Sampled-out exchanges no rule kept: counted in the kernel's aggregates, never rows."""
    counted_unjoined: int = 0
    """EV_COUNTED records of connections the decoder did not know (no EV_OPEN, or no client
    address): their requests are in the counts, but no connection record learns of them."""


class Emitter:
    """The sink the handlers emit into: exchanges, lifecycle events and tunnel summaries."""

    __slots__ = ("body_limit", "next_id", "nginx", "on_counted", "on_event", "on_exchange", "on_websocket",
                 "stats")

    def __init__(
        self,
        on_exchange: Callable[[Exchange], None],
        on_event: Callable[[LifecycleEvent], None] | None = None,
        body_limit: int = 256 * 1024,
    ) -> None:
        self.on_exchange = on_exchange
        self.on_event = on_event
        self.on_websocket: Callable[[WsTunnel, float], None] | None = None
        """Called with each WebSocket tunnel that ended (tests and sinks may set it)."""
        self.on_counted: Callable[[str, str], None] | None = None
        """Called with (client, server) of a connection some of whose exchanges the kernel
        counted instead of sending (EV_COUNTED): it had requests though no row may say so."""
        self.body_limit = body_limit
        """Payload bytes kept per message body."""
        self.stats = DecodeStats()
        self.next_id = 1
        """The id the next exchange gets."""
        self.nginx = NginxValues()
        """nginx's own access-log values (EV_REQ_LOG), applied once they proved right."""

    def exchange(self, conn: Conn, start: float, end: float) -> Exchange:
        """A new exchange on `conn` with the next id (not emitted yet): the connection's part
        of it (worker, addresses, TLS, identity, place on the connection) filled in; the
        caller sets the rest (attribute stores: faster than a long keyword call, on a path
        every exchange takes)."""
        conn_id = conn.conn_id
        if not conn_id:
            conn_id = conn.conn_id = f"{conn.pid}:{conn.fd}:{conn.key[2]}"
        return new_exchange(self.next_id, start, end, conn.pid, conn.peer, conn.local, conn.tls,
                            conn_id, conn.seq, conn.proxy_client, conn.kept_by)

    def emit(self, conn: Conn, ex: Exchange) -> None:
        """Hand out `ex`, made by :meth:`exchange` on `conn`, and count it."""
        self.next_id += 1
        conn.seq += 1
        if ex.upstream and ex.upstream_via is None:
            ex.upstream_via = "wire"
        stats = self.stats
        if not ex.method and (ex.error or ex.summary_only):
            stats.malformed += 1
        stats.exchanges += 1
        self.on_exchange(ex)

    def lifecycle(self, ts: float, kind: str, pid: int, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(LifecycleEvent(ts=ts, kind=kind, pid=pid, detail=detail))

    def tunnel_ended(self, ws: WsTunnel, ts: float, pid: int, how: str) -> None:
        """A WebSocket tunnel ended: its summary goes out as a lifecycle event and to
        :attr:`on_websocket`."""
        self.lifecycle(ts, "websocket", pid, ws.summary(ts, how))
        if self.on_websocket is not None:
            self.on_websocket(ws, ts)
