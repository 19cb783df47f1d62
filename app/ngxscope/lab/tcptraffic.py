"""TCP sessions through the lab's stream proxy (`LabNginx(stream=True)`), with byte counts
chosen per session in both directions, some carrying HTTP-looking text (a TCP proxy carries
anything: it must never be decoded as HTTP).

Each session talks to a `ngxscope.lab.tcpbackend` peer: either ``SEND a REPLY b`` (the peer
answers `b` bytes and closes) or an echo the client closes once it has read its bytes back.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass

__all__ = ["TcpSession", "run_tcp_sessions"]


@dataclass(slots=True)
class TcpSession:
    """One session the generator ran: its client address and the bytes each way."""

    client: str
    """The client's "ip:port" (nginx's `$remote_addr:$remote_port`)."""
    sent: int
    received: int
    kind: str
    """"reply" (the peer closes), "echo" (the client closes) or "refused" (no peer)."""


def _payload(rng: random.Random, kind: str) -> tuple[bytes, int]:
    if kind == "http":
        text = (f"GET /not-http-{rng.randrange(1000)} HTTP/1.1\r\nHost: tcp\r\nX-Lab: tcp\r\n\r\n"
                "HTTP/1.1 200 OK\r\n\r\n").encode()
        return text, len(text)
    a = rng.choice([0, 1, 17, 600, 4096, 20000, 70000])
    b = rng.choice([0, 5, 300, 5000, 33000, 100000])
    return f"SEND {a} REPLY {b}\n".encode() + rng.randbytes(a), b


def _one(port: int, rng: random.Random, kind: str, timeout: float) -> TcpSession:
    payload, expect = _payload(rng, kind)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        host, cport = s.getsockname()[:2]
        try:
            s.sendall(payload)
        except OSError:
            pass  # nginx closed first (no peer)
        got = 0
        while True:
            if kind == "http" and got >= expect:
                break  # echo: the client ends the session
            try:
                chunk = s.recv(65536)
            except OSError:
                break  # reset: nginx found no peer (status 502)
            if not chunk:
                break
            got += len(chunk)
    return TcpSession(f"{host}:{cport}", len(payload), got, "echo" if kind == "http" else "reply")


def run_tcp_sessions(port: int, sessions: int, concurrency: int = 4, seed: int = 7,
                     timeout: float = 10.0) -> list[TcpSession]:
    """Run `sessions` TCP sessions against the stream listener `port`, `concurrency` at a
    time; every fourth carries an HTTP request as opaque payload (echoed back)."""
    out: list[TcpSession] = []
    lock = threading.Lock()
    jobs = list(range(sessions))

    def worker(wid: int) -> None:
        rng = random.Random(seed * 1000 + wid)
        while True:
            with lock:
                if not jobs:
                    return
                n = jobs.pop()
            res = _one(port, rng, "http" if n % 4 == 0 else "binary", timeout)
            with lock:
                out.append(res)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
