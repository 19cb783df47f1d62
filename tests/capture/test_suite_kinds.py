"""The kinds of disagreement nginx's own test suite showed (bench/nginx_suite.py), each
reproduced on our own configuration, the JSON access log as the truth, field by field:

- request heads whose lines end in a bare LF and whose blank line is CRLF ("\\n\\r\\n"): a
  WebDAV PUT written that way was called malformed;
- an upstream answering with bare-LF line ends: nginx takes its status, the capture did not;
- a POST sent to an error_page redirect: nginx logs $request_method GET (it turns the
  method into GET for the redirect);
- auth_request subrequests proxied to an upstream: their attempts are not in the main
  request's $upstream_addr (kept apart in the exchange);
- a peer that timed out (504), a client that went away while the peer worked (499: the
  attempt has no status, "-"), each attempt lasting until nginx let go of the peer; an
  HTTP/0.9 request's $request_time;
- realip (X-Real-IP from a trusted peer): nginx logs the header's client as $remote_addr
  (the exchange's `remote`, beside the socket peer in `client`);
- nginx's own list of attempts (r->upstream_states, `upstream_via` "nginx"): a group named at
  run time (`proxy_pass http://$g`) with no live peer, which nginx logs by name; a peer that
  timed out (504) before the next one answered; two upstream groups of an internal redirect
  (" : " between them); a unix-socket peer whose long path other bound sockets share; every
  $upstream_* list equal to nginx's, times to the millisecond; $msec and $request_time read
  from nginx's clock as it logs the request.

Both I/O modes (syscall tracepoints, uprobes only).
"""

from __future__ import annotations

import ctypes
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.config import nginx_addr
from ngxscope.lab.nginx import LabNginx, free_ports
from ngxscope.model import Exchange, nginx_list

from .truth import client_socket

pytestmark = pytest.mark.capture

_SERVER = """
    upstream half {{
        server 127.0.0.1:{c1} max_fails=1 fail_timeout=60s;
        server 127.0.0.1:{c2} max_fails=1 fail_timeout=60s;
    }}
    upstream downs {{
        server 127.0.0.1:{c1} down;
    }}
    upstream tnext {{
        server 127.0.0.1:{hold};
        server 127.0.0.1:{lf_port};
    }}
    upstream unixpeer {{
        server unix:{unix_a};
    }}
    server {{
        listen 127.0.0.1:{c1};
        listen 127.0.0.1:{c2};
        location / {{
            if ($server_port = {c1}) {{
                return 444;
            }}
            return 200 "ok\n";
        }}
        location /close {{
            return 444;
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name kinds;
        location /dav/ {{
            root {prefix}/davroot;
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
        }}
        location /lf/ {{
            proxy_pass http://127.0.0.1:{lf_port};
        }}
        location = /redirected {{
            proxy_pass http://app/api/status/404;
            proxy_intercept_errors on;
            error_page 404 = /fallback;
        }}
        location = /fallback {{
            default_type text/plain;
            return 200 "fallback\\n";
        }}
        location = /slow-up {{
            proxy_pass http://slow/slow/slow?ms=1500;
        }}
        location = /timeout-up {{
            proxy_pass http://slow/slow/slow?ms=1500;
            proxy_read_timeout 300ms;
        }}
        location /half/ {{
            proxy_pass http://half/;
        }}
        location /down/ {{
            proxy_pass http://downs/;
        }}
        location = /var-down {{
            set $g downs;
            proxy_pass http://$g;
        }}
        location = /next-after-timeout {{
            proxy_pass http://tnext;
            proxy_read_timeout 300ms;
        }}
        location = /two-groups {{
            proxy_pass http://app/api/status/404;
            proxy_intercept_errors on;
            error_page 404 = /second-group;
        }}
        location = /second-group {{
            internal;
            proxy_pass http://unixpeer;
        }}
        location = /unix-peer {{
            proxy_pass http://unixpeer;
        }}
        location = /realip {{
            set_real_ip_from 127.0.0.1;
            real_ip_header X-Real-IP;
            empty_gif;
        }}
        location = /authed {{
            auth_request /auth;
            empty_gif;
        }}
        location = /authed-proxied {{
            auth_request /auth;
            proxy_pass http://app/api/echo;
        }}
        location = /auth {{
            internal;
            proxy_pass http://app/api/status/200;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
    }}
"""

_REQUESTS: dict[str, bytes] = {
    "lf-put": b"PUT /dav/file HTTP/1.1\nHost: localhost\nConnection: close\nContent-Length: 10\n\r\n0123456789",
    "lf-put-extra": (b"PUT /dav/a/b HTTP/1.1\nHost: localhost\nConnection: close\nContent-Length: 10\n\r\n"
                     b"0123456789extra"),
    "lf-delete": b"DELETE /dav/file HTTP/1.1\nHost: localhost\nConnection: close\n\r\n",
    "lf-upstream": b"GET /lf/ HTTP/1.0\r\nHost: localhost\r\n\r\n",
    "lf-upstream-head": b"HEAD /lf/ HTTP/1.0\r\nHost: localhost\r\n\r\n",
    "post-redirected": (b"POST /redirected HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                        b"Content-Length: 5\r\n\r\nhello"),
    "realip": b"GET /realip HTTP/1.1\r\nHost: localhost\r\nX-Real-IP: 192.0.2.7\r\nConnection: close\r\n\r\n",
    "http09": b"GET /fallback\r\n",
    "timeout-504": b"GET /timeout-up HTTP/1.0\r\n\r\n",
    "client-gone-499": b"GET /slow-up HTTP/1.0\r\n\r\n",
    "auth-static": b"GET /authed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    "auth-proxied": b"GET /authed-proxied HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    # "no live upstreams": nginx logs the group's name for an attempt it never made
    "half-retried": b"GET /half/ok HTTP/1.0\r\n\r\n",  # c1 closes (now failed), c2 answers
    "half-busy": b"GET /half/close HTTP/1.0\r\n\r\n",  # c2 closes; no live peer: "half"
    "half-none": b"GET /half/ok HTTP/1.0\r\n\r\n",  # both failed: only "half"
    "all-down": b"GET /down/ HTTP/1.0\r\n\r\n",  # the group's one server is down
    # nginx's own list of attempts
    "var-down": b"GET /var-down HTTP/1.0\r\n\r\n",  # the group named at run time: "downs"
    "next-after-timeout": b"GET /next-after-timeout HTTP/1.0\r\n\r\n",  # "504, 200"
    "two-groups": b"GET /two-groups HTTP/1.0\r\n\r\n",  # "404 : 200"
    "unix-peer": b"GET /unix-peer HTTP/1.0\r\n\r\n",  # its whole path
}


_FLAGGED = {"http09", "client-gone-499", "timeout-504"}
"""Exchanges flagged in nginx's words (HTTP/0.9, no response sent...): their error is a note."""


def _lf_backend(server: socket.socket, stop: threading.Event) -> None:
    """An upstream whose response head ends its lines with a bare LF (nginx accepts it)."""
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\nConnection: close\nX-Lf: yes\n\n"
                         + (b"" if head.startswith(b"HEAD") else b"TEST-OK-IF-YOU-SEE-THIS"))


def _send(port: int, data: bytes, wait: float | None = None) -> str:
    """One request on its own connection, read to the end (or closed after `wait` s)."""
    with client_socket("127.0.0.1", port) as sock:
        host, cport = sock.getsockname()[:2]
        sock.sendall(data)
        if wait is not None:
            time.sleep(wait)
        else:
            while sock.recv(65536):
                pass
    return f"{host}:{cport}"


def _ms_close(got: float | None, want: str, slack: float = 1.0) -> bool:
    return got is not None and abs(got - float(want) * 1000) <= slack


def _upstream(value: str) -> str:
    return "" if value in ("", "-") else value


def _ms_text(ms: float | None) -> str:
    return "-" if ms is None else f"{int(ms) // 1000}.{int(ms) % 1000:03d}"


def _lists(ex: Exchange) -> dict[str, str]:
    """The exchange's attempts as nginx's $upstream_* variables print them."""
    atts = ex.upstream
    return {
        "upstream_addr": nginx_list(atts, [a.addr for a in atts]),
        "upstream_status": nginx_list(atts, ["-" if a.status is None else str(a.status) for a in atts]),
        "upstream_connect_time": nginx_list(atts, [_ms_text(a.connect_ms) for a in atts]),
        "upstream_header_time": nginx_list(atts, [_ms_text(a.header_ms) for a in atts]),
        "upstream_response_time": nginx_list(atts, [_ms_text(a.duration_ms) for a in atts]),
    }


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_suite_kinds_match_access_log(tmp_path: Path, capture_factory: Any, syscall_io: bool) -> None:
    prefix = tmp_path / "lab"
    port, c1, c2 = free_ports(3)
    backend = socket.create_server(("127.0.0.1", 0))
    hold = socket.create_server(("127.0.0.1", 0))  # connects, never answers: a read timeout
    lf = f"127.0.0.1:{backend.getsockname()[1]}"
    # two bound unix sockets sharing a path prefix longer than the sockaddr bytes captured
    unix_dir = Path(tempfile.mkdtemp(prefix="ngxscope-unixpeer-"))  # tmp_path is too long for AF_UNIX
    unix_a, unix_b = (str(unix_dir / f"peer-{n}.sock") for n in "ab")
    unix_peer = socket.socket(socket.AF_UNIX)
    unix_peer.bind(unix_a)
    unix_peer.listen()
    unix_other = socket.socket(socket.AF_UNIX)
    unix_other.bind(unix_b)
    unix_other.listen()
    stop = threading.Event()
    threads = [threading.Thread(target=_lf_backend, args=(srv, stop), daemon=True) for srv in (backend, unix_peer)]
    for thread in threads:
        thread.start()
    lab = LabNginx(workers=1, prefix=prefix,
                   extra_http=_SERVER.format(port=port, prefix=prefix, lf_port=backend.getsockname()[1],
                                             c1=c1, c2=c2, hold=hold.getsockname()[1], unix_a=unix_a))
    lab.start()
    (prefix / "davroot").mkdir()
    try:
        cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io)
        names = {_send(port, data, 0.5 if name == "client-gone-499" else None): name
                 for name, data in _REQUESTS.items()}
        inner = 3  # the half-* requests' own requests to nginx's c1/c2 listeners, logged too
        log = [line for line in lab.wait_log_lines(len(names) + inner, timeout=15.0)
               if line["client"] in names or line["request"].startswith("GET /realip ")]
        assert len(log) == len(names), f"{len(log)} of {len(names)} requests logged"
        exchanges = cap.wait_for(len(names) + inner)
        cap.stop()
    finally:
        lab.stop()
        stop.set()
        for thread in threads:
            thread.join(5)
        for sock in (backend, hold, unix_peer, unix_other):
            sock.close()
        shutil.rmtree(unix_dir, ignore_errors=True)
    by_client: dict[str, list[Exchange]] = {}
    for ex in exchanges:
        by_client.setdefault(nginx_addr(ex.remote or ex.client), []).append(ex)
    problems = []
    for line in log:
        name = names.get(line["client"], "realip")
        found = by_client.get(line["client"], [])
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} exchanges for {line['request']!r}")
            continue
        ex = found[0]
        checks = {
            "method": (ex.method, line["method"]),
            "target": (ex.target, line["uri"]),
            "version": (ex.version, line["protocol"]),
            "status": (ex.status, line["status"]),
            "request_bytes": (ex.request_bytes, line["request_length"]),
            "response_bytes": (ex.response_bytes, line["bytes_sent"]),
            "error": (ex.error if name not in _FLAGGED else None, None),
            # nginx's clock as it logged the request: $request_time and $msec exactly
            "request_time": (ex.nginx_ms is not None and f"{ex.nginx_ms / 1000:.3f}",
                             f"{float(line['request_time']):.3f}"),
            "msec": (ex.nginx_end is not None and f"{ex.nginx_end:.3f}", f"{float(line['msec']):.3f}"),
            # nginx's own list of attempts: every $upstream_* list as it prints them
            "upstream_via": (ex.upstream_via, "nginx" if _upstream(line["upstream_addr"]) else None),
        }
        if _upstream(line["upstream_addr"]):
            checks.update({k: (v, str(line[k])) for k, v in _lists(ex).items()})
        else:
            checks["upstream"] = (ex.upstream, [])
        problems += [f"{name}: {field} {got!r} != log {want!r}" for field, (got, want) in checks.items()
                     if got != want]
        print(f"  {name}: {line['request']!r} -> {line['status']} {line['request_length']}/{line['bytes_sent']}"
              f" upstream {line['upstream_addr']!r}; subrequest attempts {[a.addr for a in ex.subrequest_upstream]}")
    assert not problems, "\n".join(problems)
    by_name = {names[nginx_addr(ex.client)]: ex for ex in exchanges if nginx_addr(ex.client) in names}
    # the auth subrequests' attempts are kept, apart from the request's own
    for name in ("auth-static", "auth-proxied"):
        subs = by_name[name].subrequest_upstream
        assert len(subs) == 1 and subs[0].status == 200, f"{name}: {subs}"
    assert by_name["post-redirected"].method == "GET"
    assert by_name["lf-upstream"].upstream[0].status == 200
    assert by_name["timeout-504"].upstream[0].status == 504
    assert by_name["client-gone-499"].status == 499 and by_name["client-gone-499"].upstream[0].status is None
    assert by_name["realip"].remote == "192.0.2.7" and by_name["realip"].client.startswith("127.0.0.1:")
    assert all(ex.remote is None for name, ex in by_name.items() if name != "realip")
    assert [a.addr for a in by_name["half-busy"].upstream] == [f"127.0.0.1:{c2}", "half"]
    assert [(a.addr, a.status, a.group) for a in by_name["all-down"].upstream] == [("downs", 502, "downs")]
    assert [(a.addr, a.status) for a in by_name["var-down"].upstream] == [("downs", 502)]
    assert [(a.addr, a.status) for a in by_name["next-after-timeout"].upstream][-1] == (lf, 200)
    assert by_name["next-after-timeout"].upstream[0].status == 504
    two = by_name["two-groups"].upstream
    assert [(a.status, a.redirected) for a in two] == [(404, False), (200, True)] and two[1].addr == f"unix:{unix_a}"
    assert two[0].response_head is not None and two[1].response_head is not None  # the wire's details kept
    assert [a.addr for a in by_name["unix-peer"].upstream] == [f"unix:{unix_a}"]


@pytest.mark.parametrize("syscall_io", [True, False], ids=["syscall-io", "uprobes-only"])
def test_clock_found_before_user_space_names_it(tmp_path: Path, capture_factory: Any, syscall_io: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """$msec and $request_time come from nginx's clock, read where it keeps it; a worker user
    space has not yet told the probes about (under --binary: started a moment before the
    /proc scan finds it) gets the clock's address from the completion probe itself, so its
    first requests' $msec are exact too (the suite's 1 ms misses)."""
    from ngxscope.capture import tracer as tracer_mod

    real = tracer_mod.cached_time_address
    monkeypatch.setattr(tracer_mod, "cached_time_address", lambda *_a: None)  # user space never tells
    lab = LabNginx(workers=1, prefix=tmp_path / "lab")
    lab.start()
    paths = ["/health", "/api/items", "/slow/x?ms=30", "/health", "/api/items?page=2"]
    try:
        cap = capture_factory(pid=lab.master_pid, syscall_io=syscall_io)
        clients = {}
        for path in paths:
            clients[_send(lab.plain_port, f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())] = path
        log = lab.wait_log_lines(len(paths), timeout=15.0)
        exchanges = cap.wait_for(len(paths))
        tracer = cap.recorder.tracer
        pids = {ex.pid for ex in exchanges}
        table = tracer.bpf["loop_clock"]
        learned = {pid: table[ctypes.c_uint32(pid)].at for pid in pids}
        want = {pid: real(pid, tracer.config.binary, tracer._cached_time_symbol()) for pid in pids}
        cap.stop()
    finally:
        lab.stop()
    assert learned == want and None not in want.values()
    by_client = {nginx_addr(ex.client): ex for ex in exchanges}
    problems = []
    for line in log:
        ex = by_client[line["client"]]
        got = (f"{ex.nginx_end:.3f}" if ex.nginx_end else None, f"{(ex.nginx_ms or 0) / 1000:.3f}")
        if got != (f"{float(line['msec']):.3f}", f"{float(line['request_time']):.3f}"):
            problems.append(f"{clients[line['client']]}: $msec/$request_time {got} != log {line['msec']}/"
                            f"{line['request_time']}")
    assert not problems, "\n".join(problems)
