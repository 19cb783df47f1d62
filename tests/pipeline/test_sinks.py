"""The sinks of a capture run: redaction once per exchange, the first write error kept and
reported once, a bad output option leaving no session file behind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from factories import make_event, make_exchange
from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.pipeline.sinks import (
    LockedSink,
    OutputError,
    Outputs,
    Redactor,
    RotateOptions,
    open_sinks,
)
from ngxscope.store.codec import check_header, parse_record
from ngxscope.store.redact import policy_from_env
from ngxscope.store.session import SessionReader


class Failing:
    """A writer whose disk fills up at the second exchange."""

    def __init__(self) -> None:
        self.written: list[Exchange] = []
        self.closed_clean: bool | None = None

    def write_exchange(self, ex: Exchange) -> None:
        if self.written:
            raise OSError(28, "No space left on device")
        self.written.append(ex)

    def write_event(self, ev: LifecycleEvent) -> None:
        pass

    def write_stats(self, d: dict[str, Any]) -> None:
        pass

    def close(self, clean: bool = True) -> None:
        self.closed_clean = clean


def test_redactor_masks_once_for_every_sink() -> None:
    redactor = Redactor(policy_from_env())
    ex = make_exchange(request_headers=[("Host", "a"), ("Authorization", "Bearer secret")])
    first, second = redactor(ex), redactor(ex)
    assert first is second and first is not ex
    assert "secret" not in str(first.request_headers) and "secret" in str(ex.request_headers)
    assert Redactor(policy_from_env(enabled=False))(ex) is ex


def test_locked_sink_keeps_the_first_error_and_reports_it_once() -> None:
    writer, errors = Failing(), []
    sink = LockedSink(writer)
    sink.on_error = errors.append
    for _ in range(3):
        sink.write_exchange(make_exchange())
    assert len(writer.written) == 1 and len(errors) == 1 and isinstance(sink.error, OSError)
    assert sink.close() is None and writer.closed_clean is False  # what reached the disk stays readable


def test_stream_and_session_sinks_write_the_same_records(tmp_path: Path) -> None:
    out = io.BytesIO()
    sinks = open_sinks(Outputs(session=str(tmp_path / "a.ngxs"), stream=out))
    assert sinks.session == str(tmp_path / "a.ngxs")
    ex = make_exchange(request_headers=[("Cookie", "id=1")])
    for s in sinks.sinks:
        s.write_exchange(ex)
        s.write_event(make_event())
    sinks.close()
    lines = out.getvalue().splitlines()
    assert check_header(parse_record(lines[0]), "stream") >= 0
    streamed = parse_record(lines[1])
    stored = next(SessionReader(tmp_path / "a.ngxs").exchanges())
    assert streamed == stored and "id=1" not in str(stored.request_headers)
    assert parse_record(lines[-1])["t"] == "end"  # type: ignore[index]


def test_bad_output_option_leaves_no_file(tmp_path: Path) -> None:
    session = tmp_path / "s.ngxs"
    with pytest.raises(OutputError, match="port"):
        open_sinks(Outputs(session=str(session), metrics_listen="127.0.0.1:99999"))
    assert not session.exists()
    rotated = open_sinks(Outputs(rotate=RotateOptions(str(tmp_path / "rot"), keep=2)))
    assert rotated.session is None
    rotated.close()
    assert len(list((tmp_path / "rot").iterdir())) == 1
