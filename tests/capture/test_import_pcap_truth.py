"""A packet capture of the lab's plaintext traffic (dumpcap, pcap and pcapng) opened by
ngxscope equals the eBPF capture of the same traffic: method, target, status, sizes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.store.foreign import read_foreign

from .truth import lab_id

pytestmark = pytest.mark.capture


def _dumpcap(port: int, path: Path, pcap: bool) -> subprocess.Popen[bytes]:
    argv = ["dumpcap", "-q", "-B", "64", "-i", "lo", "-f", f"tcp port {port}", "-w", str(path)]
    proc = subprocess.Popen(argv + (["-P"] if pcap else []), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not path.exists() or path.stat().st_size == 0:  # the file header: capturing
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "dumpcap did not start"
        time.sleep(0.05)
    time.sleep(0.3)
    return proc


def test_pcap_equals_capture(lab_nginx: LabNginx, capture_factory: Any, tmp_path: Path) -> None:
    files = {"pcap": tmp_path / "lab.pcap", "pcapng": tmp_path / "lab.pcapng"}
    dumps = [_dumpcap(lab_nginx.plain_port, files["pcap"], True),
             _dumpcap(lab_nginx.plain_port, files["pcapng"], False)]
    cap = capture_factory(pid=lab_nginx.master_pid)
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent = traffic.round(False) + traffic.round(True)  # the TLS half is not in the pcap
    lab_nginx.wait_log_lines(sent)
    captured = {lab_id(ex): ex for ex in cap.wait_for(sent) if not ex.tls}
    cap.stop()
    time.sleep(0.5)
    for proc in dumps:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert len(captured) == sent // 2
    for kind, path in files.items():
        session = read_foreign(str(path))
        assert session is not None and session.header["format"] == kind
        opened = {lab_id(ex): ex for ex in session.exchanges}
        assert set(opened) == set(captured), kind
        problems = []
        for lid, want in captured.items():
            got = opened[lid]
            for f in ("method", "target", "version", "status", "request_bytes", "response_bytes",
                      "request_body_size", "client", "server"):
                if getattr(got, f) != getattr(want, f):
                    problems.append(f"{kind} {want.method} {want.target} (lab {lid}): {f} "
                                    f"{getattr(got, f)!r} != captured {getattr(want, f)!r}")
            whole = want.response_body and not want.truncated and not want.sendfile_bytes
            if whole and got.response_body != want.response_body:
                problems.append(f"{kind} {want.target}: response body differs")
        assert not problems, "\n".join(problems)
        print(f"\n{kind}: {len(opened)} exchanges equal to the eBPF capture")
