"""Copy as curl, for real: a captured request's curl command run against the lab nginx gives
an access-log line equal to the original's (method, URI, request_length, status).

Real nginx, real eBPF capture of the original traffic, real curl for the copies.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange
from ngxscope.store.copyas import from_attempt, from_exchange, to_curl

pytestmark = pytest.mark.capture


def _lab_id(ex: Exchange) -> str | None:
    return next((v for k, v in ex.request_headers if k.lower() == "x-lab"), None)


def _send_originals(traffic: Traffic, tls: bool) -> int:
    n = traffic.round(tls)
    # what the mix lacks: shell-hostile and non-ASCII bytes, a text body, odd targets
    traffic.request(tls, "GET", "/api/items?q=a'b\"c$(x)&n=1;rm", [("X-Quote", "it's \"$HOME\" `id`")])
    traffic.request(tls, "GET", "/api/items?name=Zo%C3%AB", [("X-Name", "Zoë 東京".encode().decode("latin-1"))])
    traffic.request(tls, "POST", "/upload", [("Content-Type", "application/json")],
                    b'{"msg": "line1\\nline2", "q": "it\'s"}\n')
    # (no empty header here: the model keeps values stripped, curl sends "X-Empty:" where the
    # lab sent "X-Empty: ", one byte of request_length; test_copyas.py covers its syntax)
    traffic.request(tls, "PUT", "/api/put", [("X-Bin", "1")], b"\x00\x01\xff\r\n\x1b[31mred")
    traffic.request(tls, "DELETE", "/api/items/7")
    traffic.request(tls, "OPTIONS", "/api/opts")
    traffic.request(tls, "POST", "/upload", [("Content-Length", "0")])
    return n + 7


def _with(cmd: str, flags: str) -> str:
    """`cmd` with extra curl options (after "curl": a here-document may follow the URL)."""
    head, sep, rest = cmd.partition("curl --http")
    assert sep, cmd
    return f"{head}curl {flags} --http{rest}"


def _run(cmd: str) -> None:
    # as a script on stdin, the way a pasted command runs (a long body exceeds argv limits)
    proc = subprocess.run(["bash"], input=_with(cmd, "-s -o /dev/null --max-time 10").encode(),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, f"{cmd}\n→ {proc.returncode}: {proc.stderr.decode(errors='replace')}"


def test_copied_curl_reproduces_the_access_log_line(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent = _send_originals(traffic, False) + _send_originals(traffic, True)
    log = lab_nginx.wait_log_lines(sent)
    exchanges = cap.wait_for(sent)
    cap.stop()
    originals = {line["lab_id"]: line for line in log}
    by_id = {_lab_id(ex): ex for ex in exchanges}
    assert set(originals) <= set(by_id), "every original request was captured"

    problems: list[str] = []
    checked = chunked = 0
    for lab_id, want in originals.items():
        ex = by_id[lab_id]
        if ex.truncated:
            continue  # a body the capture cut cannot be copied whole
        cmd = to_curl(from_exchange(ex))
        before = lab_nginx.log_line_count()
        _run(cmd)
        got = lab_nginx.wait_log_lines(before + 1)[before]
        fields = ["method", "uri", "status", "request_length"]
        if any(k.lower() == "transfer-encoding" for k, _v in ex.request_headers):
            fields.remove("request_length")  # curl chooses its own chunk sizes
            chunked += 1
        for f in fields:
            if got[f] != want[f]:
                problems.append(f"{want['request']!r}: {f} {got[f]!r} != original {want[f]!r}\n  {cmd[:300]}")
        assert got["https"] == want["https"]
        checked += 1
    print(f"\ncopied {checked} of {sent} requests with curl ({chunked} chunked); "
          f"{len(problems)} differences from the original log lines")
    assert not problems, "\n".join(problems)
    assert checked >= sent - 10 and chunked == 2
    assert any(ex.request_body and b"\x00" in ex.request_body for ex in by_id.values())


def test_copied_upstream_request_reaches_the_peer(lab_nginx: LabNginx, capture_factory: Any) -> None:
    """From the Upstream tab: the head nginx sent, to the peer directly (bypassing nginx)."""
    cap = capture_factory(pid=lab_nginx.master_pid)
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    traffic.request(False, "GET", "/api/items?id=9")
    lab_nginx.wait_log_lines(1)
    (ex,) = cap.wait_for(1)
    cap.stop()
    attempt = ex.upstream[-1]
    spec = from_attempt(ex, attempt)
    assert spec.connect == attempt.addr and spec.connect in lab_nginx.upstream_addrs
    cmd = to_curl(spec)
    proc = subprocess.run(["bash"], input=_with(cmd, "-s -i --max-time 10").encode(),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out[:200]
    backend = next(line for line in out.splitlines() if line.lower().startswith("x-backend:"))
    sent_backend = next(v for k, v in ex.response_headers if k.lower() == "x-backend")
    assert backend.split(":", 1)[1].strip() == sent_backend
    assert lab_nginx.log_line_count() == 1, "nginx did not see the copy"
