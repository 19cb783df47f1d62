"""Captured exchanges against nginx's own access log, line by line (the truth tests).

A log line and its exchange are paired by the X-Lab header the lab's traffic sends
(`by_lab_id`), or by client address where each connection carries one request
(`by_client`); a line without exactly one exchange is a problem. `unequal` words the
fields that differ; `compare` is the whole check of the lab's standard log format.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from ngxscope.lab.config import nginx_addr
from ngxscope.model import Exchange

__all__ = ["CLOCK_SLACK", "by_client", "by_lab_id", "client_socket", "compare", "lab_id", "pair_lines", "request_fields",
           "request_label", "unequal"]

Line = dict[str, Any]
Pairs = list[tuple[Line, Exchange]]

CLOCK_SLACK = 0.001
"""Seconds: nginx logs whole ms (truncated), and kernel time becomes Unix time through an
offset sampled once at attach."""


def lab_id(ex: Exchange) -> str | None:
    """The X-Lab request header the lab's traffic sends, None without one."""
    return next((v for k, v in ex.request_headers if k.lower() == "x-lab"), None)


def pair_lines(log: list[Line], exchanges: list[Exchange], line_key: Callable[[Line], Any],
               ex_key: Callable[[Exchange], Any], label: Callable[[Line], str]) -> tuple[Pairs, list[str]]:
    """(line, exchange) pairs where the line's key names exactly one exchange, and a problem
    ("LABEL: N captured exchanges") for every other line."""
    groups: dict[Any, list[Exchange]] = {}
    for ex in exchanges:
        key = ex_key(ex)
        if key is not None:
            groups.setdefault(key, []).append(ex)
    pairs: Pairs = []
    problems: list[str] = []
    for line in log:
        found = groups.get(line_key(line), [])
        if len(found) == 1:
            pairs.append((line, found[0]))
        else:
            problems.append(f"{label(line)}: {len(found)} captured exchanges")
    return pairs, problems


def request_label(line: Line) -> str:
    return f"{line['request']!r} (lab {line.get('lab_id')})"


def by_lab_id(log: list[Line], exchanges: list[Exchange],
              label: Callable[[Line], str] = request_label) -> tuple[Pairs, list[str]]:
    """`pair_lines` by the X-Lab header (the log's `lab_id`)."""
    return pair_lines(log, exchanges, lambda line: line.get("lab_id"), lab_id, label)


def by_client(log: list[Line], exchanges: list[Exchange],
              label: Callable[[Line], str] = request_label) -> tuple[Pairs, list[str]]:
    """`pair_lines` by client address, as nginx logs it (`$remote_addr:$remote_port`)."""
    return pair_lines(log, exchanges, lambda line: line["client"], lambda ex: nginx_addr(ex.client), label)


def unequal(label: str, checks: Mapping[str, tuple[Any, Any]]) -> list[str]:
    """"LABEL: FIELD GOT != log WANT" for each check {field: (captured, logged)} that differs."""
    return [f"{label}: {name} {got!r} != log {want!r}" for name, (got, want) in checks.items() if got != want]


def request_fields(ex: Exchange, line: Line) -> dict[str, tuple[Any, Any]]:
    """{field: (captured, logged)} of the request line, `$status` and the sizes: what every
    capture method gets right (the `unequal` checks the truth tests share)."""
    return {
        "method": (ex.method, line["method"]),
        "target": (ex.target, line["uri"]),
        "status": (ex.status, line["status"]),
        "request_bytes": (ex.request_bytes, line["request_length"]),
        "response_bytes": (ex.response_bytes, line["bytes_sent"]),
    }


def compare(log: list[Line], exchanges: list[Exchange]) -> list[str]:
    """Field-by-field differences between the lab's standard log lines and the exchanges."""
    pairs, problems = by_lab_id(log, exchanges)
    for line, ex in pairs:
        label = request_label(line)
        problems += unequal(label, {
            **request_fields(ex, line),
            "client": (nginx_addr(ex.client), line["client"]),  # IPv6: "[::1]:p" is "::1:p" there
            "server": (nginx_addr(ex.server), line["server"]),
            "pid": (ex.pid, int(line["pid"])),
            "tls": (ex.tls, line["https"] == "on"),
            "version": (ex.version, line["protocol"]),
        })
        # nginx's own clock read at the exchange's first and last events, as it computes
        # $request_time: must agree to its 1 ms resolution (the right events were chosen)
        want_ms = float(line["request_time"]) * 1000
        if ex.nginx_ms is None or abs(ex.nginx_ms - want_ms) > 1.0:
            problems.append(f"{label}: nginx_ms {ex.nginx_ms} vs log {want_ms:.0f} ms")
        # the true times (kernel clock at the I/O calls) against nginx's: nginx reads the
        # clock once per event-loop turn, before the calls of that turn, so its times are
        # never later than the true ones; how much earlier is how long the turn had run (on a
        # loaded box, tens of ms: no bound on that is load-independent)
        msec = float(line["msec"])
        nginx_start = msec - float(line["request_time"])
        if ex.start < nginx_start - CLOCK_SLACK:
            problems.append(f"{label}: start {ex.start:.4f} before nginx's $msec - $request_time {nginx_start:.3f}")
        if ex.end < msec - CLOCK_SLACK:
            problems.append(f"{label}: end {ex.end:.4f} before nginx's $msec {msec:.3f}")
        if ex.error:
            problems.append(f"{label}: error {ex.error}")
    return problems


_CLIENT_PORTS: set[int] = set()
"""Client ports used so far: requests are told apart by client address."""


def client_socket(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connection to host:port from a client port no earlier request used. Loopback lets
    connect() take a port still in TIME_WAIT (net.ipv4.tcp_tw_reuse=2), so two requests could
    share a client address; bound before connecting, a used port is let go with nothing sent."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
        mine = sock.getsockname()[1]
        if mine not in _CLIENT_PORTS:
            _CLIENT_PORTS.add(mine)
            sock.settimeout(timeout)
            sock.connect((host, port))
            return sock
        sock.close()
