"""A private nginx (master + N workers) with TLS, upstream groups and a JSON access log.

`LabNginx` writes a complete prefix (config, self-signed certificate, static files, temp
dirs), starts two `ngxscope.lab.backend` upstreams and nginx itself, and tears it all down
again. The JSON access log it configures is the ground truth the capture tests compare with.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from ngxscope.lab.config import (
    LOG_FIELDS,
    STREAM_MODULE,
    LabError,
    parse_log_line,
    render_conf,
    render_stream,
    write_site,
)

__all__ = ["LOG_FIELDS", "LabError", "LabNginx", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct TCP ports that were free a moment ago (held together, so never equal)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LabNginx:
    """A private nginx with a plain and a TLS listener, upstream backends and a JSON log.

    Use as a context manager, or call `start()` / `stop()`.
    """

    def __init__(
        self,
        workers: int = 2,
        prefix: Path | None = None,
        nginx_bin: str = "/usr/sbin/nginx",
        extra_http: str = "",
        stream: bool = False,
    ) -> None:
        self.workers = workers
        self.stream = stream
        """Also load the stream module and proxy TCP (`tcp_port`, `tcp_fail_port`)."""
        self.tcp_port = 0
        """stream: the TCP listener proxying to upstream ``tcp_echo`` (dead peer + 2 TCP peers)."""
        self.tcp_fail_port = 0
        """stream: the TCP listener whose only peer is dead (every session logs status 502)."""
        self.tcp_backend_ports: list[int] = []
        self.nginx_bin = nginx_bin
        self.extra_http = extra_http
        self._own_prefix = prefix is None
        self.prefix: Path = Path(prefix) if prefix is not None else Path()
        self.plain_port = 0
        self.tls_port = 0
        self.h2_port = 0
        """The HTTP/2 TLS listener (``listen ... ssl http2``)."""
        self.dead_port = 0
        """A port nothing listens on: the dead peer of the `flaky` upstream group."""
        self.backend_ports: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._backends: list[subprocess.Popen[bytes]] = []
        self._stderr: Any = None
        self._line_counts: dict[Path, tuple[int, int, int]] = {}
        """Per log path: (inode, bytes counted, lines in them), so a count reads only what
        was appended since the last (benchmarks count a log of gigabytes between runs)."""

    # -- paths and addresses ----------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def access_log_path(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def stream_log_path(self) -> Path:
        """The stream module's JSON access log (see `config.STREAM_LOG_FIELDS`)."""
        return self.prefix / "logs" / "stream.log"

    @property
    def tcp_peer_addrs(self) -> list[str]:
        """The live TCP peers as nginx prints them in the stream `$upstream_addr`."""
        return [f"127.0.0.1:{p}" for p in self.tcp_backend_ports]

    @property
    def error_log_path(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def static_dir(self) -> Path:
        return self.prefix / "html" / "static"

    @property
    def upstream_addrs(self) -> list[str]:
        """The live backends as nginx prints them in `$upstream_addr`."""
        return [f"127.0.0.1:{p}" for p in self.backend_ports]

    @property
    def master_pid(self) -> int:
        if self._proc is None:
            raise LabError("nginx is not running")
        return self._proc.pid

    def base_url(self, tls: bool = False) -> str:
        """``http://127.0.0.1:PLAIN`` or ``https://127.0.0.1:TLS``."""
        if tls:
            return f"https://127.0.0.1:{self.tls_port}"
        return f"http://127.0.0.1:{self.plain_port}"

    def worker_pids(self) -> list[int]:
        """PIDs of the master's live children whose command line says "worker process"."""
        try:
            children = psutil.Process(self.master_pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                if "worker process" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return sorted(pids)

    # -- access log -------------------------------------------------------------------------
    def read_access_log(self, start: int = 0, path: Path | None = None) -> list[dict[str, Any]]:
        """Parse the access log (lines from index `start` on); numbers become int/float."""
        try:
            # nginx logs raw bytes >= 0x80
            text = (path or self.access_log_path).read_text(errors="replace")
        except FileNotFoundError:
            return []
        lines = [ln for ln in text.split("\n") if ln.strip()]
        return [parse_log_line(ln) for ln in lines[start:]]

    def log_line_count(self, path: Path | None = None) -> int:
        """Number of complete lines in the access log."""
        path = path or self.access_log_path
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                ino, done, lines = self._line_counts.get(path, (st.st_ino, 0, 0))
                if ino != st.st_ino or st.st_size < done:   # replaced or truncated: recount
                    done = lines = 0
                fh.seek(done)
                tail = fh.read()
        except FileNotFoundError:
            return 0
        # up to the last newline only: a line being written is counted once, when whole
        end = tail.rfind(b"\n") + 1
        lines += tail.count(b"\n", 0, end)
        done += end
        self._line_counts[path] = (st.st_ino, done, lines)
        return lines

    def settled_line_count(self, idle: float = 0.4, timeout: float = 15.0) -> int:
        """The access log's line count once no line was added for `idle` seconds: a request
        still in flight (a previous client's slow upstream, the end of a load run) is
        logged before it, not after a count taken as the baseline or the total."""
        deadline = time.monotonic() + timeout
        count, since = self.log_line_count(), time.monotonic()
        while time.monotonic() - since < idle and time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.log_line_count()
            if now != count:
                count, since = now, time.monotonic()
        return count

    def wait_stream_lines(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """`wait_log_lines` for the stream module's log (one line per TCP session)."""
        return self.wait_log_lines(n, timeout, path=self.stream_log_path)

    def wait_log_lines(self, n: int, timeout: float = 10.0, start: int = 0,
                       path: Path | None = None) -> list[dict[str, Any]]:
        """Poll until the log holds at least `n` lines after `start`; return those parsed.

        nginx writes a line when it finishes a request, which can be a moment after the client
        has read the response. Raises `LabError` on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            count = self.log_line_count(path) - start
            if count >= n:
                return self.read_access_log(start, path)
            if time.monotonic() > deadline:
                raise LabError(f"access log has {count} lines after {timeout}s, expected {n}")
            time.sleep(0.02)

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> LabNginx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Write the prefix, start the backends and nginx; wait until all are serving."""
        if self._proc is not None:
            raise LabError("already started")
        # a private nginx never outlives the process that started it (the demo killed, a
        # test run interrupted): stop() is idempotent, so this is harmless after a clean stop
        atexit.register(self.stop)
        if self.stream and not Path(STREAM_MODULE).exists():
            raise LabError(f"{STREAM_MODULE} is missing: run scripts/setup.sh "
                           "(installs libnginx-mod-stream)")
        if self._own_prefix:
            self.prefix = Path(tempfile.mkdtemp(prefix="ngxscope-lab-"))
        try:
            write_site(self.prefix)
            self._start_backends(timeout)
            last = ""
            for _attempt in range(3):
                (self.plain_port, self.tls_port, self.dead_port, self.h2_port,
                 self.tcp_port, self.tcp_fail_port) = free_ports(6)
                stream = ""
                if self.stream:
                    stream = render_stream(self.prefix, self.tcp_port, self.tcp_fail_port,
                                           self.dead_port, self.tcp_peer_addrs)
                self.conf_path.write_text(
                    render_conf(
                        self.prefix,
                        self.workers,
                        self.plain_port,
                        self.tls_port,
                        self.dead_port,
                        self.upstream_addrs,
                        self.extra_http,
                        h2_port=self.h2_port,
                        stream=stream,
                    )
                )
                last = self._start_nginx(timeout)
                if not last:
                    return
                if "Address already in use" not in last:
                    break
            raise LabError(f"nginx failed to start:\n{last}")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful QUIT, KILL after `timeout`; stop the backends; remove an owned prefix."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGQUIT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # workers share the master's process group: kill any stragglers with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2.0)
        for backend in self._backends:
            if backend.poll() is None:
                backend.terminate()
        for backend in self._backends:
            try:
                backend.wait(2.0)
            except subprocess.TimeoutExpired:
                backend.kill()
                backend.wait(2.0)
        self._backends = []
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._own_prefix and self.prefix != Path() and self.prefix.exists():
            shutil.rmtree(self.prefix, ignore_errors=True)

    def reload(self, timeout: float = 10.0) -> list[int]:
        """SIGHUP; wait for N new workers and the old ones to exit. Returns the new pids.

        Old workers that are still busy past `timeout` are left to finish; missing new
        workers raise `LabError`.
        """
        old = set(self.worker_pids())
        os.kill(self.master_pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        new: list[int] = []
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            new = [p for p in pids if p not in old]
            if len(new) >= self.workers and not (old & set(pids)):
                return sorted(new)
            time.sleep(0.02)
        if len(new) < self.workers:
            raise LabError(
                f"reload: {len(new)} new workers after {timeout}s\n{_tail(self.error_log_path)}"
            )
        return sorted(new)

    # -- internals --------------------------------------------------------------------------
    def _start_backends(self, timeout: float) -> None:
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        names = ["b1", "b2"] + (["t1", "t2"] if self.stream else [])
        ports = [0] * len(names)
        started: dict[int, subprocess.Popen[bytes]] = {}
        for _attempt in range(3):
            procs: dict[int, subprocess.Popen[bytes]] = {}
            for i in range(len(names)):
                if i in started:
                    continue
                ports[i] = free_port()
                module = "tcpbackend" if names[i].startswith("t") else "backend"
                name_args = [] if module == "tcpbackend" else ["--name", names[i]]
                procs[i] = subprocess.Popen(
                    [sys.executable, "-m", f"ngxscope.lab.{module}",
                     "--port", str(ports[i]), *name_args],
                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
                self._backends.append(procs[i])
            deadline = time.monotonic() + timeout
            while procs and time.monotonic() < deadline:
                for i, proc in list(procs.items()):
                    if _port_open(ports[i]):
                        started[i] = procs.pop(i)
                    elif proc.poll() is not None:
                        procs.pop(i)  # bind failed: retry with another port
                if procs:
                    time.sleep(0.02)
            if len(started) == len(names):
                self.backend_ports, self.tcp_backend_ports = ports[:2], ports[2:]
                return
        missing = [names[i] for i in range(len(names)) if i not in started]
        raise LabError(f"backends {missing} did not start")

    def _start_nginx(self, timeout: float) -> str:
        """Start nginx; '' when it serves, else the reason (error log tail)."""
        logs = self.prefix / "logs"
        self.error_log_path.write_text("")
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = open(logs / "stderr.log", "ab")  # noqa: SIM115 - lives with nginx
        proc = subprocess.Popen(
            [self.nginx_bin, "-p", f"{self.prefix}/", "-c", str(self.conf_path),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            start_new_session=True,
        )  # fmt: skip
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                return (
                    f"exit status {proc.returncode}\n{_tail(self.error_log_path)}\n"
                    f"{_tail(logs / 'stderr.log')}"
                ).strip()
            if (
                _port_open(self.plain_port)
                and _port_open(self.tls_port)
                and _port_open(self.h2_port)
                and len(self.worker_pids()) == self.workers
            ):
                return ""
            time.sleep(0.02)
        self.stop_nginx_only()
        return f"timeout after {timeout}s\n{_tail(self.error_log_path)}"

    def stop_nginx_only(self) -> None:
        """Kill nginx (not the backends) at once; used when startup failed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
