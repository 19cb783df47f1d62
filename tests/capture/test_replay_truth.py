"""Replay, for real: `ngxscope replay` of captured requests against the lab nginx (its access
log must show the same method, URI, status and request_length, the tag header's bytes
aside) and directly to one upstream peer (nginx must see nothing; the peer answers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.store.replay import is_replay, tag_bytes
from ngxscope.store.session import SessionWriter

from .truth import lab_id

pytestmark = pytest.mark.capture


def _replay(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ngxscope", "replay", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def test_replay_to_nginx_and_to_a_peer(lab_nginx: LabNginx, capture_factory: Any,
                                       tmp_path: Path) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    traffic.request(False, "GET", "/api/items?id=5")
    traffic.request(True, "POST", "/upload", [("Content-Type", "application/json")], b'{"n": 1}')
    traffic.request(False, "GET", "/static/page.html")
    traffic.request(True, "GET", "/fail/503")
    log = lab_nginx.wait_log_lines(4)
    exchanges = cap.wait_for(4)
    path = tmp_path / "orig.ngxs"
    with SessionWriter(path, {"test": "replay"}) as w:
        for ex in exchanges:
            w.write_exchange(ex)
    originals = {line["lab_id"]: line for line in log}
    by_lab = {lab_id(ex): ex for ex in exchanges}

    # to nginx, tagged and untagged
    for lid, want in originals.items():
        ex = by_lab[lid]
        for extra, tagged in ((["--yes"], True), (["--yes", "--no-tag"], False)):
            before = lab_nginx.log_line_count()
            proc = _replay(path, "--id", str(ex.id), *extra)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert f"{ex.status}" in proc.stdout.splitlines()[0]
            got = lab_nginx.wait_log_lines(before + 1)[before]
            for f in ("method", "uri", "status", "https"):
                assert got[f] == want[f], (f, got, want)
            added = tag_bytes(ex.id) if tagged else 0
            assert got["request_length"] == want["request_length"] + added, (got, want)
    # the capture saw the replays, and can tell the tagged ones apart
    seen = cap.wait_for(4 + 8)
    replays = [ex for ex in seen if is_replay(ex)]
    assert len(replays) == 4 and len(seen) == 12

    # directly to the peer nginx used: nginx sees nothing, the same backend answers
    ex = by_lab[next(k for k, line in originals.items() if line["uri"] == "/api/items?id=5")]
    before = lab_nginx.log_line_count()
    captured = len(cap.wait_for(0))
    proc = _replay(path, "--id", str(ex.id), "--upstream", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"→ {ex.upstream[0].addr}: 200 OK" in proc.stdout
    assert "X-Backend" not in proc.stdout, "the same peer answered (no header difference)"
    assert lab_nginx.log_line_count() == before
    assert len(cap.wait_for(0)) == captured, "nginx handled nothing"
    cap.stop()


def test_replay_refuses_without_confirmation_or_typed_address(tmp_path: Path) -> None:
    from factories import make_exchange

    path = tmp_path / "s.ngxs"
    with SessionWriter(path, {}) as w:
        w.write_exchange(make_exchange(id=1, method="POST", server="127.0.0.1:9"))
        w.write_exchange(make_exchange(id=2, method="GET", server="10.1.2.3:80"))
    proc = _replay(path, "--id", "1")
    assert proc.returncode == 1 and "POST is not idempotent: add --yes" in proc.stderr
    proc = _replay(path, "--id", "2")
    assert proc.returncode == 1 and "not a loopback address: type it (--to 10.1.2.3:80)" in proc.stderr
    proc = _replay(path, "--id", "7")
    assert proc.returncode == 1 and "no request with id 7" in proc.stderr
    proc = _replay(path, "--id", "1", "--upstream", "3", "--yes")
    assert proc.returncode == 1 and "upstream attempt(s)" in proc.stderr
    assert "Traceback" not in proc.stderr
    har = tmp_path / "x.har"
    har.write_text('{"log": {"entries": []}}')
    proc = _replay(har, "--id", "1")
    assert proc.returncode == 1 and "no request with id 1" in proc.stderr
