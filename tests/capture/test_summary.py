"""The kernel's per-exchange summary counts every request when all payload is shed.

With SHED_BYTES=0 the programs shed every payload event, so exchanges are built from the
EV_REQ_DONE summary alone: each logged request must still be counted, with nginx's status
and $bytes_sent (multisets compared: without payload there is no X-Lab id to pair by).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ngxscope.capture.tracer import Tracer
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic


def test_every_request_counted_from_the_summary(lab_nginx: LabNginx, capture_factory: Any, monkeypatch: Any) -> None:
    cflags = Tracer.cflags
    monkeypatch.setattr(Tracer, "cflags", lambda self: [*cflags(self), "-DSHED_BYTES=0"])
    start = lab_nginx.log_line_count()
    cap = capture_factory(pid=lab_nginx.master_pid)
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent = traffic.run_mix(rounds=2, concurrency=2)
    log = lab_nginx.wait_log_lines(start + sent)[start:]
    exchanges = cap.wait_for(len(log))
    stats = cap.recorder.counters()
    cap.stop()
    assert stats["shed"] > 0 and stats["lost"] == 0
    shed = [ex for ex in exchanges if ex.error and ex.error.startswith("payload shed")]
    assert len(shed) == len(exchanges) == len(log)
    assert Counter((ex.status, ex.response_bytes) for ex in exchanges) == Counter(
        (line["status"], line["bytes_sent"]) for line in log)
    assert Counter(ex.tls for ex in exchanges) == Counter(line["https"] == "on" for line in log)
    for ex in exchanges:
        assert ex.start <= ex.end and ex.nginx_ms is not None
