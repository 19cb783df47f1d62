"""Sources: SyntheticSource (both modes) and StreamSource against a fake capture helper."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ngxscope.model import LifecycleEvent
from ngxscope.pipeline.source import ExchangeSource, StreamSource, elevate, helper_argv
from ngxscope.pipeline.synthetic import SyntheticSource, sample_exchange
from ngxscope.store.codec import encode_record, header_record
from ngxscope.store.compat import CURRENT_VERSION


def test_synthetic_unthreaded_makes_realistic_traffic() -> None:
    src = SyntheticSource(5000, threaded=False)
    assert isinstance(src, ExchangeSource)
    src.start()
    assert src.alive() and src.error() is None and "5,000" in src.describe()
    time.sleep(0.2)
    exchanges, events, _stats = src.poll()
    assert 500 < len(exchanges) < 3000
    assert any(e.kind == "worker-start" for e in events)
    assert len({e.pid for e in exchanges}) == 4
    assert len({e.host for e in exchanges}) == 3
    peers = {a.addr for e in exchanges for a in e.upstream}
    assert peers == {"10.0.0.2:8080", "10.0.0.3:8080"}
    assert {e.status // 100 for e in exchanges if e.status} >= {2, 3, 4, 5}
    ids = [e.id for e in exchanges]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e.end >= e.start for e in exchanges)
    src.stop()
    assert not src.alive() and src.poll() == ([], [], None)


def test_synthetic_threaded_queues_and_reports_stats() -> None:
    src = SyntheticSource(2000, lose_events=True)
    src.start()
    got = 0
    stats = None
    deadline = time.time() + 3
    while time.time() < deadline and (stats is None or got < 1000):
        ex, _ev, st = src.poll()
        got += len(ex)
        stats = stats or st
        time.sleep(0.05)
    src.stop()
    assert got >= 1000
    assert stats is not None and stats["lost"] > 0 and stats["requests"] > 0


def test_sample_exchange_shapes() -> None:
    ex = sample_exchange()
    assert ex.status == 200 and len(ex.upstream) == 2
    assert ("Content-Encoding", "gzip") in ex.response_headers
    assert sample_exchange("binary").response_body.startswith(b"\x89PNG")


def test_helper_argv_and_elevation() -> None:
    argv = helper_argv(123)
    assert argv[1:] == ["-m", "ngxscope", "record", "--pid", "123", "--stream"]
    el = elevate(argv)
    assert el[-len(argv):] == argv
    assert el[0] in (sys.executable, "pkexec", "sudo")


FAKE_HELPER = r'''
import json, sys, time
ex = {json_ex}
print(json.dumps({{"t": "header", "format": "ngxscope-session", "version": 1}}))
for i in range(250):
    d = dict(ex); d["id"] = i + 1
    print(json.dumps(dict(d, t="exchange")))
print("this is not json")
print(json.dumps({{"t": "exchange", "bogus_key": 1}}))
print(json.dumps({{"t": "mystery"}}))
print(json.dumps([1, 2]))
print(json.dumps({{"t": "event", "ts": 1.0, "kind": "worker-exit", "pid": 77, "detail": "bye"}}))
print(json.dumps({{"t": "stats", "ts": 2.0, "events": 10, "lost": 3, "truncated": 1,
                  "workers": [77], "method": "fake", "requests": 250}}))
sys.stdout.flush()
print("fake helper: probe failed, giving up", file=sys.stderr)
sys.exit(3)
'''

WAITING_HELPER = r'''
import sys
print('{"t": "header", "format": "ngxscope-session", "version": 1}', flush=True)
sys.stdin.read()   # the window closing our stdin ends us
print("stdin closed", file=sys.stderr)
'''


def _drain(src: StreamSource, until: float = 5.0):  # type: ignore[no-untyped-def]
    exchanges, events, stats = [], [], []
    deadline = time.time() + until
    while time.time() < deadline:
        ex, ev, st = src.poll()
        exchanges += ex
        events += ev
        if st:
            stats.append(st)
        if not src.alive():
            ex, ev, st = src.poll()
            exchanges += ex
            events += ev
            if st:
                stats.append(st)
            break
        time.sleep(0.02)
    return exchanges, events, stats


def test_stream_source_parses_and_reports_death(tmp_path: Path) -> None:
    ex = sample_exchange().to_dict()
    script = tmp_path / "helper.py"
    script.write_text(FAKE_HELPER.format(json_ex=repr(ex)))
    src = StreamSource([sys.executable, str(script)], elevate_if_needed=False)
    src.start()
    exchanges, events, stats = _drain(src)
    assert len(exchanges) == 250
    assert exchanges[0].host == "api.example.com" and exchanges[-1].id == 250
    assert exchanges[0].response_body == sample_exchange().response_body
    assert events == [LifecycleEvent(1.0, "worker-exit", 77, "bye")]
    assert stats and stats[-1]["lost"] == 3 and "t" not in stats[-1]
    assert src.bad_lines == 4
    assert src.header is not None and src.header["format"] == "ngxscope-session"
    assert not src.alive()
    err = src.error()
    assert err is not None and "code 3" in err and "probe failed" in err
    src.stop()


def test_stream_source_stop_closes_stdin(tmp_path: Path) -> None:
    script = tmp_path / "wait.py"
    script.write_text(WAITING_HELPER)
    src = StreamSource([sys.executable, str(script)], elevate_if_needed=False)
    src.start()
    time.sleep(0.3)
    assert src.alive()
    assert "capture helper" in src.describe()
    t0 = time.time()
    src.stop()
    assert time.time() - t0 < 2.0  # it ended because stdin closed, not by a kill
    assert src.proc is not None and src.proc.returncode == 0
    assert not src.alive() and src.error() is None


def test_stream_source_cannot_start() -> None:
    src = StreamSource(["/nonexistent/ngxscope-helper"], elevate_if_needed=False)
    src.start()
    assert not src.alive()
    assert "cannot start" in (src.error() or "")
    src.stop()


def _run_stream(tmp_path: Path, lines: list[str]) -> StreamSource:
    data = tmp_path / "lines.jsonl"
    data.write_text("\n".join(lines) + "\n")
    src = StreamSource([sys.executable, "-c",
                        f"import sys; sys.stdout.write(open({str(data)!r}).read())"],
                       elevate_if_needed=False)
    src.start()
    return src


def test_stream_source_needs_a_header_it_reads(tmp_path: Path) -> None:
    ex = json.dumps(dict(sample_exchange().to_dict(), t="exchange"))
    src = _run_stream(tmp_path, [ex, ex])
    exchanges, _ev, _st = _drain(src)
    assert exchanges == [] and "no session header" in (src.error() or "")
    newer = dict(header_record({}), version=CURRENT_VERSION + 1)
    src = _run_stream(tmp_path, [json.dumps(newer), ex])
    exchanges, _ev, _st = _drain(src)
    assert exchanges == [] and "newer ngxscope" in (src.error() or "")


def test_stream_source_checks_value_types(tmp_path: Path) -> None:
    good = dict(sample_exchange().to_dict(), t="exchange")
    bad = dict(good, status="200")  # the codec's type check: a status is an int
    src = _run_stream(tmp_path, [encode_record(header_record({})).decode().strip(),
                                 json.dumps(good), json.dumps(bad), json.dumps({"t": "end", "exchanges": 1})])
    exchanges, _ev, _st = _drain(src)
    assert len(exchanges) == 1 and src.bad_lines == 1 and "status" in src.last_bad
    assert src.ended


def test_stream_source_json_roundtrip_of_every_synthetic_exchange(tmp_path: Path) -> None:
    lines = [encode_record(header_record({})).decode().strip()]
    lines += [json.dumps(dict(e.to_dict(), t="exchange"))
              for e in SyntheticSource(threaded=False).generate(300)]
    data = tmp_path / "lines.jsonl"
    data.write_text("\n".join(lines) + "\n")
    src = StreamSource([sys.executable, "-c",
                        f"import sys; sys.stdout.write(open({str(data)!r}).read())"],
                       elevate_if_needed=False)
    src.start()
    exchanges, _ev, _st = _drain(src)
    assert len(exchanges) == 300 and src.bad_lines == 0
    assert src.error() is not None and "ended" in (src.error() or "")
