"""The recorder's delivery of rows (no eBPF: exchanges built by hand)."""

from __future__ import annotations

from factories import make_exchange
from ngxscope.model import Exchange
from ngxscope.pipeline.recorder import Recorder
from ngxscope.pipeline.target import RecordOptions


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
