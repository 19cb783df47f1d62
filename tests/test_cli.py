"""`ngxscope` as a user runs it: real subprocesses, a real nginx, real eBPF (as root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic

NGXSCOPE = [sys.executable, "-m", "ngxscope"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NGXSCOPE, *args], capture_output=True, text=True, timeout=timeout)


def start_record(*args: str) -> subprocess.Popen[str]:
    """Start `ngxscope record`; returns once it printed its "capturing" line."""
    proc = subprocess.Popen([*NGXSCOPE, "record", *args], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "capturing" in line:
            return proc
        if not line and proc.poll() is not None:
            raise AssertionError(f"record exited {proc.returncode} before capturing")
    raise AssertionError("record never said it was capturing")


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("ngxscope: kernel")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["record", "-o", "x.ngxs"], "give --pid PID or --binary PATH"),
        (["record", "--pid", "1"], "give -o FILE"),
        (["record", "--pid", "999999", "-o", "x.ngxs"], "no process with PID 999999"),
        (["record", "--pid", str(os.getpid()), "-o", "x.ngxs"], "is not an nginx process"),
        (["record", "--binary", "/etc/passwd", "-o", "x.ngxs"], "not an ELF file"),
        (["record", "--pid", "1", "--pid-typo"], "unrecognized arguments"),
        (["record", "--pid", "1", "-o", "x.ngxs", "--cpu-budget", "-3"], "--cpu-budget must be between"),
        (["record", "--pid", "1", "-o", "x.ngxs", "--cpu-budget", "lots"], "invalid float value"),
        (["record", "--pid", "1", "-o", "x.ngxs", "--keep-slower-than", "0"], "--keep-slower-than must be between"),
        (["export", "/no/such.ngxs", "-o", "out.jsonl"], "No such file"),
        (["export", "/etc", "-o", "out.jsonl"], ""),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_misuse_gives_one_line_error(args: list[str], needle: str, tmp_path: Path) -> None:
    res = subprocess.run([*NGXSCOPE, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    line = one_line_error(res)
    assert needle in line
    assert not (tmp_path / "x.ngxs").exists(), "a failed record leaves no session file"


def test_list_shows_lab_nginx(lab_nginx: LabNginx) -> None:
    res = run("list")
    assert res.returncode == 0, res.stderr
    assert f"master {lab_nginx.master_pid}, 2 workers" in res.stdout
    assert f"127.0.0.1:{lab_nginx.tls_port}" in res.stdout
    assert "nginx uprobes" in res.stdout


def test_record_sigint_then_export_matches_log(lab_nginx: LabNginx, tmp_path: Path) -> None:
    out = tmp_path / "s.ngxs"
    proc = start_record("--pid", str(lab_nginx.master_pid), "-o", str(out))
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=2, concurrency=2)
    log = lab_nginx.wait_log_lines(sent)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGINT" in err
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    jsonl = tmp_path / "s.jsonl"
    res = run("export", str(out), "--format", "jsonl", "-o", str(jsonl))
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["start"] for r in records] == sorted(r["start"] for r in records)
    by_lab = {dict(map(tuple, r["request_headers"])).get("X-Lab"): r for r in records}
    for line in log:
        r = by_lab[line["lab_id"]]
        assert (r["method"], r["target"], r["status"], r["request_bytes"], r["response_bytes"]) == (
            line["method"], line["uri"], line["status"], line["request_length"], line["bytes_sent"]), line
        assert r["upstream"] == [] or isinstance(r["upstream"], list)
    assert len(records) >= sent


def test_record_ends_cleanly_when_nginx_exits(lab_nginx: LabNginx, tmp_path: Path) -> None:
    out = tmp_path / "s.ngxs"
    proc = start_record("--pid", str(lab_nginx.master_pid), "-o", str(out))
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=1, concurrency=1)
    lab_nginx.wait_log_lines(sent)
    time.sleep(0.5)
    lab_nginx.stop_nginx_only()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "nginx exited" in err
    res = run("export", str(out), "-o", "-")
    assert res.returncode == 0
    assert len(res.stdout.splitlines()) >= sent


def test_record_duration_and_binary_mode(lab_nginx: LabNginx, tmp_path: Path) -> None:
    out = tmp_path / "b.ngxs"
    proc = start_record("--binary", "/usr/sbin/nginx", "--duration", "4", "-o", str(out))
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).keepalive(True, ["/health", "/204"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped after 4 s" in err
    res = run("export", str(out), "-o", "-")
    targets = [json.loads(line)["target"] for line in res.stdout.splitlines()]
    assert targets.count("/health") >= 1 and len(targets) >= sent


def test_disk_full_is_one_line_and_session_stays_readable(lab_nginx: LabNginx, tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "s.ngxs"
        proc = start_record("--pid", str(lab_nginx.master_pid), "-o", str(out))
        traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
        deadline = time.monotonic() + 40
        while proc.poll() is None and time.monotonic() < deadline:
            traffic.keepalive(False, ["/static/page.html"] * 20)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "Traceback" not in err
        assert "No space left on device" in err
        res = run("export", str(out), "-o", "-")
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.splitlines()) > 10, "what reached the disk is readable"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: never leaves it behind


def test_dump_bpf() -> None:
    res = run("record", "--dump-bpf")
    assert res.returncode == 0
    assert "ngx_http_free_request" in res.stdout and "-DPAYLOAD_CAP=" in res.stdout


@pytest.mark.parametrize("redact", [True, False])
def test_record_redacts_secrets_by_default(lab_nginx: LabNginx, tmp_path: Path, redact: bool) -> None:
    import gzip

    out = tmp_path / "r.ngxs"
    proc = start_record("--pid", str(lab_nginx.master_pid), "-o", str(out), *([] if redact else ["--no-redact"]))
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    traffic.request(True, "GET", "/api/secret", headers=[("Authorization", "Bearer s3cr3t-token"),
                                                         ("Cookie", "session=hunter2")])
    lab_nginx.wait_log_lines(1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    text = gzip.decompress(out.read_bytes()).decode()
    header = json.loads(text.splitlines()[0])
    assert header["target"]["redacted"] is redact
    assert ("s3cr3t-token" in text) is not redact and ("hunter2" in text) is not redact
    if redact:
        assert "session=" in text, "cookie names stay"
