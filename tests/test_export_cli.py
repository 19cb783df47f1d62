"""`ngxscope export` and `ngxscope stats` as a user runs them (subprocesses)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factories import make_exchange
from ngxscope.store.session import SessionWriter

NGXSCOPE = [sys.executable, "-m", "ngxscope"]
SECRET = "tok-9f8e7d6c5b4a"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NGXSCOPE, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def one_line_error(res: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ngxscope: error: ") or lines[0].startswith("ngxscope ")
    return lines[0]


@pytest.fixture
def session(tmp_path: Path) -> Path:
    path = tmp_path / "s.ngxs"
    with SessionWriter(path, {"pid": 1}) as w:
        for i in range(6):
            w.write_exchange(make_exchange(
                target=f"/item/{i}?api_key={SECRET}" if i % 2 else f"/item/{i}",
                status=500 if i == 5 else 200,
                request_headers=[("Host", "shop"), ("Authorization", f"Bearer {SECRET}"),
                                 ("X-Custom", SECRET)]))
    return path


@pytest.mark.parametrize("fmt", ["har", "pcapng", "csv", "jsonl"])
def test_export_each_format(session: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    res = run("export", str(session), "--format", fmt, "-o", str(out),
              "--redact-header", "X-Custom", "--redact-param", "api_key")
    assert res.returncode == 0, res.stderr
    assert f"exported 6 exchanges to {out}" in res.stderr
    assert SECRET.encode() not in out.read_bytes()
    res = run("export", str(session), "--format", fmt, "-o", str(out), "--no-redact")
    assert res.returncode == 0 and SECRET.encode() in out.read_bytes()


def test_env_redaction_filter_and_stdout(session: Path) -> None:
    res = run("export", str(session), "--format", "jsonl", "-o", "-", "--filter", "status>=500",
              env={"NGXSCOPE_REDACT_HEADERS": "X-Custom", "NGXSCOPE_REDACT_PARAMS": "api_key"})
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["status"] for r in rows] == [500]
    assert SECRET not in res.stdout
    line = one_line_error(run("export", str(session), "-o", "-", "--filter", "status>>"), code=2)
    assert "bad --filter" in line


def test_stats_text_and_json(session: Path) -> None:
    res = run("stats", str(session))
    assert res.returncode == 0, res.stderr
    assert "requests  6" in res.stdout and "5xx 1" in res.stdout and "upstream peers" in res.stdout
    res = run("stats", str(session), "--json")
    data = json.loads(res.stdout)
    assert data["requests"] == 6 and data["classes"]["5xx"] == 1
    assert data["peers"][0]["addr"] == "127.0.0.1:8081"


def test_har_input(session: Path, tmp_path: Path) -> None:
    har = tmp_path / "s.har"
    assert run("export", str(session), "--format", "har", "-o", str(har)).returncode == 0
    out = tmp_path / "back.jsonl"
    res = run("export", str(har), "--format", "jsonl", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert len(out.read_text().splitlines()) == 6
    assert run("stats", str(har)).returncode == 0


def test_truncated_session_exports_what_it_holds_with_a_warning(session: Path, tmp_path: Path) -> None:
    data = session.read_bytes()
    cut = tmp_path / "cut.ngxs"
    cut.write_bytes(data[: len(data) * 3 // 4])
    for fmt in ("har", "csv", "pcapng", "jsonl"):
        out = tmp_path / f"cut.{fmt}"
        res = run("export", str(cut), "--format", fmt, "-o", str(out))
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        assert "truncated" in res.stderr or "damaged" in res.stderr
        assert out.exists()
    res = run("stats", str(cut))
    assert res.returncode == 0 and "truncated" in res.stderr


def _newer(path: Path) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b'{"t":"header","format":"ngxscope-session","version":999,"created":0,'
                b'"tool":"x","target":{}}\n')
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p, "No such file"),
        (lambda p: (p.write_bytes(b""), p)[1], "is empty"),
        (lambda p: (p.write_text("hello, world\n"), p)[1], "not an ngxscope session"),
        (lambda p: (p.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate"), p)[1], ""),
        (lambda p: (p.write_text('{"log": 1}'), p)[1], "not a HAR file"),
        (lambda p: (p.write_text('{"log": {"entries": ['), p)[1], "not a valid HAR file"),
        (_newer, "newer"),
        (lambda p: (p.mkdir(), p)[1], "directory"),
    ],
)
@pytest.mark.parametrize("cmd", ["export", "stats"])
def test_bad_input_is_one_line(tmp_path: Path, make: object, needle: str, cmd: str) -> None:
    path = make(tmp_path / "in.ngxs")  # type: ignore[operator]
    args = ["export", str(path), "--format", "csv", "-o", str(tmp_path / "o.csv")] if cmd == "export" \
        else ["stats", str(path)]
    line = one_line_error(run(*args))
    assert needle in line
    assert not (tmp_path / "o.csv").exists()
    assert not list(tmp_path.glob("o.csv.*.part"))


def test_misuse(session: Path, tmp_path: Path) -> None:
    one_line_error(run("export", str(session), "--format", "xml", "-o", "x"), code=2)
    one_line_error(run("export", str(session)), code=2)
    line = one_line_error(run("export", str(session), "-o", str(tmp_path)))
    assert "directory" in line
    line = one_line_error(run("export", str(session), "-o", str(tmp_path / "no" / "dir.csv")))
    assert "No such file" in line
