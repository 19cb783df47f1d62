"""The recorder's delivery of rows (no eBPF: exchanges built by hand)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from factories import closed_connection, make_exchange
from ngxscope.model import Exchange
from ngxscope.pipeline.recorder import Recorder
from ngxscope.pipeline.target import RecordOptions
from ngxscope.pipeline.wirejoin import WireJoin


class _Rows:
    def __init__(self) -> None:
        self.rows: list[Exchange] = []

    def write_exchange(self, ex: Exchange) -> None:
        self.rows.append(ex)


def test_a_connection_record_is_a_row_but_no_request() -> None:
    """The stats' "requests" (and the CPU governor's load) count requests only: a connection
    that closed or failed its handshake before a request is a row, not a request."""
    sink = _Rows()
    rec = Recorder(RecordOptions(), [sink])  # type: ignore[list-item]
    rec._deliver(make_exchange())
    rec._deliver(make_exchange(method="", target="", status=None, conn_outcome="reset"))
    rec._deliver(make_exchange(method="", target="", status=None, conn_outcome="tls-failed"))
    rec._deliver(make_exchange(status=503))
    assert len(sink.rows) == 4
    assert rec.exchanges == 2 and rec.counters()["requests"] == 2


def test_connection_records_wait_for_the_decoder(monkeypatch: Any) -> None:
    """A connection whose requests were all counted in the kernel is known to have had
    requests only when the decoder reaches its EV_COUNTED. A decoder behind the wire by more
    than the grace (a burst, a slow disk) must not call it "closed before a request" in the
    meantime: the grace runs on the time the decoder has read up to, not on the wall clock."""
    sink = _Rows()
    rec = Recorder(RecordOptions(), [sink])  # type: ignore[list-item]
    join = WireJoin(["127.0.0.1:8080"], grace=1.0)
    monkeypatch.setattr(join, "pump", lambda timeout=0.0: 0)
    rec.wire = join
    rec.assembler = SimpleNamespace(emitter=SimpleNamespace(next_id=1))  # type: ignore[assignment]
    now = time.time()
    client, server = "127.0.0.1:5001", "127.0.0.1:8080"
    closed_connection(join.tracker, client, server, now - 5.0)   # ended 5 s ago by the wall clock
    closed_connection(join.tracker, "127.0.0.1:5002", server, now - 5.0)   # one with no request
    rec._decoded_until = now - 6.0                  # the decoder has not reached that yet
    rec._flush_wire()
    assert sink.rows == []
    join.counted(client, server)                    # now it reaches the connection's EV_COUNTED
    rec._decoded_until = now
    rec._flush_wire()
    assert [(r.client, r.conn_outcome) for r in sink.rows] == [("127.0.0.1:5002", "closed")]
