"""Fixtures for the telemetry tests: `ngxscope record` as a subprocess, a real Prometheus,
and an OTLP/HTTP receiver decoding the real protobuf payloads."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import free_port

NGXSCOPE = [sys.executable, "-m", "ngxscope"]


def split_upstream(value: str) -> list[str]:
    """$upstream_addr / $upstream_status: attempts split on ", " (and " : " for redirects)."""
    if value in ("", "-"):
        return []
    return [v for v in re.split(r", | : ", value) if v]


class RecordProc:
    """`ngxscope record ...` in a subprocess; started once it printed "capturing"."""

    def __init__(self, *args: str) -> None:
        assert os.geteuid() == 0, "capture tests need root (eBPF); they are never skipped"
        self.proc = subprocess.Popen([*NGXSCOPE, "record", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            self.stderr.append(line)
            if "capturing" in line:
                break
            if not line and self.proc.poll() is not None:
                raise AssertionError(f"record exited {self.proc.returncode}: {''.join(self.stderr)}")
        else:
            raise AssertionError("record never said it was capturing")
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def stop(self, timeout: float = 20.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        return "".join(self.stderr)


@pytest.fixture
def record_proc() -> Iterator[Any]:
    started: list[RecordProc] = []

    def make(*args: str) -> RecordProc:
        rp = RecordProc(*args)
        started.append(rp)
        return rp

    yield make
    for rp in started:
        rp.stop()


class Prometheus:
    """A real Prometheus server (Debian's `prometheus`) scraping one target every second."""

    def __init__(self, target: str, tmp: Path) -> None:
        exe = shutil.which("prometheus")
        assert exe, "the Debian package prometheus is needed (scripts/setup.sh installs it)"
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: ngxscope\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - lives with the server
        self.proc = subprocess.Popen(
            [exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.load(resp)
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        res = self.query(promql)
        return float(res[0]["value"][1]) if res else None

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def prometheus_factory() -> Iterator[Any]:
    started: list[Prometheus] = []
    tmp = Path(tempfile.mkdtemp(prefix="ngxscope-prom-"))

    def make(target: str) -> Prometheus:
        prom = Prometheus(target, tmp)
        started.append(prom)
        return prom

    yield make
    for prom in started:
        prom.stop()
    shutil.rmtree(tmp, ignore_errors=True)


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on loopback: decodes ExportTraceServiceRequest protobufs."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        receiver = self
        self.requests: list[Any] = []
        self.content_types: set[str] = set()
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                enc = self.headers.get("Content-Encoding", "")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                msg = ExportTraceServiceRequest()
                msg.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append(msg)
                    receiver.content_types.add(self.headers.get("Content-Type", ""))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        with self.lock:
            for req in self.requests:
                for rs in req.resource_spans:
                    res = attrs(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        out.extend((res, span) for span in ss.spans)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attrs(kvs: Any) -> dict[str, Any]:
    """OTLP KeyValue list -> dict of Python values."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind else None
    return out


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    rx = OtlpReceiver()
    try:
        yield rx
    finally:
        rx.close()
