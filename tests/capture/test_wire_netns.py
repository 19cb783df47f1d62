"""nginx in another network namespace than the capture; IPv6 listeners; real retransmissions.

nginx runs inside a fresh network namespace (`ip netns add`; started from a thread that
entered it), the capture in the test's own: the socket filter must open its packet sockets
in nginx's namespace, else it sees none of nginx's packets. The lab gets an IPv6 TLS
listener on [::1] too. Every access-log line's TLS facts must equal the exchange's, for
IPv4 and IPv6 clients. Then 15 % of the packets to and from nginx are dropped inside the
namespace (an nftables rule there: never on the host; this kernel has no netem) while
dumpcap records it: each connection's retransmission count must equal
what tshark marks as retransmissions in that recording.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx, free_port

from .test_wire_vs_accesslog import _ctx, compare_tls

pytestmark = pytest.mark.capture

_SERVER6 = """
    server {{
        listen [::1]:{port} ssl;
        server_name six;
        ssl_certificate {prefix}/tls/cert.pem;
        ssl_certificate_key {prefix}/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
    }}
"""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res


class Netns:
    """A network namespace with its loopback up, and a thread that lives inside it."""

    def __init__(self) -> None:
        assert os.geteuid() == 0, "this test creates a network namespace: run it as root"
        for tool in ("ip", "nft", "dumpcap", "tshark"):
            assert shutil.which(tool), f"{tool} is needed (scripts/setup.sh installs it)"
        self.name = f"ngxscope-w{os.getpid()}"
        _run("ip", "netns", "add", self.name)
        _run("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        self.inside = ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self) -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            assert libc.setns(fd, 0x40000000) == 0, os.strerror(ctypes.get_errno())
        finally:
            os.close(fd)

    def run(self, fn: Any, *args: Any) -> Any:
        """Call fn in the namespace (sockets it opens, processes it starts live there)."""
        return self.inside.submit(fn, *args).result(timeout=300)

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.name, *argv, check=check)

    def close(self) -> None:
        self.inside.shutdown(wait=True)
        for pid in _run("ip", "netns", "pids", self.name, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _run("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def netns_lab(tmp_path: Path) -> Iterator[tuple[Netns, LabNginx, int]]:
    ns = Netns()
    lab: LabNginx | None = None
    try:
        prefix = tmp_path / "lab"
        port6 = ns.run(free_port)  # a fresh namespace: free on ::1 as well
        lab = LabNginx(workers=1, prefix=prefix, extra_http=_SERVER6.format(port=port6, prefix=prefix))
        ns.run(lab.start)
        yield ns, lab, port6
    finally:
        if lab is not None:
            ns.run(lab.stop)
        ns.close()
        assert ns.name not in _run("ip", "netns", "list").stdout


def _connection(host: str, port: int, ctx: ssl.SSLContext, ids: list[str],
                session: ssl.SSLSession | None = None, path: str = "/health") -> tuple[str, Any]:
    """Requests on one TLS connection (keep-alive, the last closes): (client, session)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(120)  # lost packets back off: seconds each
    raw.connect((host, port))
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
        name = s.getsockname()
        client = f"[{name[0]}]:{name[1]}" if family == socket.AF_INET6 else f"{name[0]}:{name[1]}"
        for i, lab_id in enumerate(ids):
            close = "close" if i == len(ids) - 1 else "keep-alive"
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Lab: {lab_id}\r\n"
                      f"Connection: {close}\r\n\r\n".encode())
            buf = b""
            while not buf.endswith(b"ok\n") and b"\r\n0\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return client, s.session


def _traffic(lab: LabNginx, port6: int, prefix: str) -> list[str]:
    clients = []
    n = 0
    for host, port in (("127.0.0.1", lab.tls_port), ("::1", port6)):
        for version in ("1.2", "1.3"):
            for alpn in (None, ["h2", "http/1.1"]):
                ctx = _ctx(version, alpn)
                client, session = _connection(host, port, ctx, [f"{prefix}{n}-0", f"{prefix}{n}-1"])
                clients.append(client)
                _connection(host, port, ctx, [f"{prefix}{n}-r"], session=session)
                n += 1
    return clients


def test_nginx_in_another_netns_ipv4_and_ipv6(netns_lab: tuple[Netns, LabNginx, int],
                                              capture_factory: Any) -> None:
    ns, lab, port6 = netns_lab
    assert not os.path.samefile(f"/proc/{lab.master_pid}/ns/net", "/proc/self/ns/net")
    cap = capture_factory(pid=lab.master_pid)
    assert cap.recorder.wire is not None
    wire_lines = [ev.detail for ev in cap.sink.events if ev.kind == "wire"]
    assert any("nginx's network namespace" in d for d in wire_lines), wire_lines
    clients = ns.run(_traffic, lab, port6, "n")
    sent = len(clients) // 2 * 3 * 2
    log = lab.wait_log_lines(sent)
    assert len(log) == sent
    cap.wait_for(sent)
    cap.stop()
    problems = compare_tls(log, cap.sink.exchanges)
    v6 = [ex for ex in cap.sink.exchanges if ex.client.startswith("[::1]:")]
    print(f"\n{wire_lines}\naccess log {len(log)} lines ({len(v6)} over IPv6), fields unequal: {len(problems)}")
    assert not problems, "\n".join(problems[:40])
    assert len(v6) == sent // 2 and all(ex.tls_version for ex in v6)


_LOSSY = """table inet ngxscope_lossy {{
    chain in {{
        type filter hook prerouting priority 0;
        tcp dport {port} numgen random mod 100 < 15 drop
        tcp sport {port} numgen random mod 100 < 15 drop
    }}
}}"""


def _tshark_retransmissions(pcap: Path, port: int) -> dict[int, int]:
    """Client port -> segments tshark marks as retransmitted, on connections to `port`.

    Loopback reorders nothing: a segment tshark suspects of being out of order (its bytes
    seen before, sent again within a few ms of the previous one) is a retransmission too."""
    out = _run("tshark", "-r", str(pcap), "-Y",
               "tcp.analysis.retransmission || tcp.analysis.fast_retransmission "
               "|| tcp.analysis.spurious_retransmission || tcp.analysis.out_of_order",
               "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport").stdout
    counts: dict[int, int] = {}
    for line in out.splitlines():
        sport, dport = (int(x) for x in line.split())
        client = dport if sport == port else sport
        counts[client] = counts.get(client, 0) + 1
    return counts


def _wait_closed(ns: Netns, port: int, timeout: float = 60.0) -> None:
    """Until no socket on either end of `port`'s connections still retransmits (FIN-WAIT-1,
    CLOSING, LAST-ACK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.exec("ss", "-Htn", "state", "fin-wait-1", "state", "closing", "state", "last-ack",
                      f"( sport = :{port} or dport = :{port} )").stdout
        if not out.strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"nginx's connections on {port} still closing after {timeout:g} s")


def test_retransmissions_match_tshark(netns_lab: tuple[Netns, LabNginx, int], capture_factory: Any,
                                      tmp_path: Path) -> None:
    ns, lab, _port6 = netns_lab
    cap = capture_factory(pid=lab.master_pid)
    assert cap.recorder.wire is not None
    cap.recorder.wire.grace = 600.0  # keep every connection's facts until compared
    pcap = tmp_path / "lossy.pcap"
    dump = subprocess.Popen(["ip", "netns", "exec", ns.name, "dumpcap", "-q", "-i", "lo", "-P", "-w", str(pcap),
                             "-f", f"tcp port {lab.tls_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        # 15 % of nginx's segments dropped on their way in (after the packet taps saw them:
        # dumpcap and the filter both see the lost segment and its retransmission)
        rules = tmp_path / "lossy.nft"
        rules.write_text(_LOSSY.format(port=lab.tls_port))
        ns.exec("nft", "-f", str(rules))
        try:
            clients = []
            for i in range(6):
                ctx = _ctx("1.3" if i % 2 else "1.2", None)
                clients.append(ns.run(_connection, "127.0.0.1", lab.tls_port, ctx, [f"x{i}-0", f"x{i}-1"],
                                      None)[0])
            time.sleep(4.0)  # the last FINs, retransmitted too
        finally:
            ns.exec("nft", "delete", "table", "inet", "ngxscope_lossy", check=False)
        # a FIN still unanswered (the client's RSTs were dropped too) is sent again on a
        # backed-off timer, seconds apart: both taps must stop after the last of them
        _wait_closed(ns, lab.tls_port)
        time.sleep(0.5)
    finally:
        dump.terminate()
        dump.wait(10)
    cap.recorder.wire.pump(0.0)
    with cap.recorder.wire._lock:
        facts = {f.client: f for f in cap.recorder.wire.tracker.conns.values()}
    cap.stop()
    truth = _tshark_retransmissions(pcap, lab.tls_port)
    got = {int(c.rsplit(":", 1)[1]): facts[c].retransmits for c in clients if c in facts}
    want = {int(c.rsplit(":", 1)[1]): truth.get(int(c.rsplit(":", 1)[1]), 0) for c in clients}
    print(f"\nretransmissions per connection: wire {got}\n                                tshark {want}")
    assert len(got) == len(clients), "every connection followed"
    assert sum(want.values()) > 0, "15 % loss made retransmissions"
    for port in [p for p in want if got.get(p) != want[p]]:
        print(_run("tshark", "-r", str(pcap), "-Y", f"tcp.port == {port}", "-T", "fields", "-e",
                   "frame.time_relative", "-e", "tcp.srcport", "-e", "tcp.flags.str", "-e", "tcp.seq",
                   "-e", "tcp.len", "-e", "tcp.analysis.flags", "-e", "_ws.expert.message").stdout)
    assert got == want
