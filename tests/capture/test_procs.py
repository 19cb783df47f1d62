"""Tests for ngxscope.capture.procs against real nginx processes started in a temp prefix."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ngxscope.capture.binary import METHOD_NGINX_UPROBES
from ngxscope.capture.listing import format_instances
from ngxscope.capture.procs import (
    NOT_NGINX_REASON,
    NginxInstance,
    TargetError,
    find_instances,
    resolve_target,
)

pytestmark = pytest.mark.capture  # every test starts real nginx processes

NGINX = "/usr/sbin/nginx"
HAVE_IPV6 = socket.has_ipv6 and os.path.exists("/proc/net/if_inet6")


@dataclass
class RunningNginx:
    """A private nginx started for a test."""

    proc: subprocess.Popen[bytes]
    prefix: Path
    port: int
    port6: int | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return sorted(c.pid for c in psutil.Process(self.pid).children())


def free_port(family: socket.AddressFamily = socket.AF_INET) -> int:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_nginx(
    prefix: Path, *, binary: str = NGINX, master: bool = True, ipv6: bool = False
) -> RunningNginx:
    """Start nginx in *prefix* (daemon off) and wait until it serves."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    port6 = free_port(socket.AF_INET6) if ipv6 else None
    listen6 = f"listen [::1]:{port6};" if port6 else ""
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"""
daemon off;
master_process {"on" if master else "off"};
worker_processes 2;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
{temps}
    server {{
        listen 127.0.0.1:{port};
        {listen6}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-e", f"{prefix}/error.log", "-c", f"{prefix}/nginx.conf"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    running = RunningNginx(proc, prefix, port, port6)
    deadline = time.monotonic() + 15
    want_workers = 2 if master else 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {err}\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            kids = psutil.Process(proc.pid).children()
            titled = psutil.Process(proc.pid).cmdline()[:1] != [binary]
            if len(kids) == want_workers and (titled or not master):
                return running
        except OSError:
            pass
        time.sleep(0.05)
    stop_nginx(running)
    raise RuntimeError("nginx did not start within 15s")


def stop_nginx(running: RunningNginx) -> None:
    """Graceful QUIT, then KILL if it lingers."""
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGQUIT)
        try:
            running.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait(timeout=5)
    if running.proc.stderr:
        running.proc.stderr.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNginx]:
    running = start_nginx(tmp_path_factory.mktemp("nginx"), ipv6=HAVE_IPV6)
    try:
        yield running
    finally:
        stop_nginx(running)


def instance_for(instances: list[NginxInstance], pid: int) -> NginxInstance:
    matches = [i for i in instances if i.master.pid == pid]
    assert len(matches) == 1, [i.label for i in instances]
    return matches[0]


def test_find_instances(nginx: RunningNginx) -> None:
    inst = instance_for(find_instances(), nginx.pid)
    assert inst.is_nginx
    assert inst.master.role == "master"
    assert inst.master.cmdline.startswith("nginx: master process /usr/sbin/nginx -p")
    assert inst.master.exe == NGINX and not inst.master.exe_deleted
    assert inst.master.user == "root"
    assert inst.master.rss > 0
    assert abs(inst.master.start_time - psutil.Process(nginx.pid).create_time()) < 1
    assert [w.pid for w in inst.workers] == nginx.worker_pids()
    assert [w.role for w in inst.workers] == ["worker", "worker"]
    assert all(w.ppid == nginx.pid and w.cmdline == "nginx: worker process" for w in inst.workers)
    assert inst.worker_pids == nginx.worker_pids()
    assert inst.pids == [nginx.pid, *nginx.worker_pids()]
    assert inst.binary is not None and inst.binary_error == ""
    assert inst.binary.path == NGINX
    assert (inst.binary.flavor, inst.binary.version) == ("nginx", "1.22.1")
    assert (inst.binary.tls, inst.binary.tls_library) == ("dynamic", "libssl.so.3")
    assert f"127.0.0.1:{nginx.port}" in inst.listen
    if nginx.port6:
        assert f"[::1]:{nginx.port6}" in inst.listen
    assert len(inst.listen) == (2 if nginx.port6 else 1)
    assert inst.capture_method == METHOD_NGINX_UPROBES
    assert inst.capture_reason
    assert inst.label == f"nginx 1.22.1 (master {nginx.pid}, 2 workers)"


def test_workers_are_not_separate_instances(nginx: RunningNginx) -> None:
    masters = {i.master.pid for i in find_instances()}
    assert not masters & set(nginx.worker_pids())
    assert os.getpid() not in masters


def test_include_all(nginx: RunningNginx) -> None:
    instances = find_instances(include_all=True)
    ours = instance_for(instances, nginx.pid)
    assert ours.capture_method == METHOD_NGINX_UPROBES
    me = instance_for(instances, os.getpid())
    assert not me.is_nginx
    assert me.capture_method is None
    assert me.capture_reason == NOT_NGINX_REASON
    assert me.binary is None
    assert me.label == f"{me.master.name} (PID {os.getpid()})"
    # Workers still appear only under their master.
    assert not {i.master.pid for i in instances} & set(nginx.worker_pids())


def test_resolve_master_and_worker(nginx: RunningNginx) -> None:
    by_master = resolve_target(nginx.pid)
    assert by_master.master.pid == nginx.pid
    assert [w.pid for w in by_master.workers] == nginx.worker_pids()
    assert by_master.capture_method == METHOD_NGINX_UPROBES
    assert f"127.0.0.1:{nginx.port}" in by_master.listen
    worker = nginx.worker_pids()[1]
    by_worker = resolve_target(worker)
    assert by_worker.master.pid == nginx.pid
    assert [w.pid for w in by_worker.workers] == nginx.worker_pids()
    assert by_worker.listen == by_master.listen


def test_resolve_non_nginx() -> None:
    with pytest.raises(TargetError) as err:
        resolve_target(os.getpid())
    name = os.path.basename(os.readlink("/proc/self/exe"))
    msg = str(err.value)
    assert (
        msg == f"PID {os.getpid()} ({name}) is not an nginx process (use --force to attach anyway)"
    )
    assert "\n" not in msg
    forced = resolve_target(os.getpid(), force=True)
    assert forced.master.pid == os.getpid()
    assert forced.binary is not None and forced.capture_method is None
    assert forced.capture_reason.startswith("no ngx_* symbols")


def test_resolve_missing_pid() -> None:
    pid = 4_000_000  # above the kernel's pid_max limit (4194304 is the hard maximum)
    while psutil.pid_exists(pid):
        pid += 1
    with pytest.raises(TargetError, match=f"^no process with PID {pid}$"):
        resolve_target(pid)


def test_single_process_nginx(tmp_path: Path) -> None:
    running = start_nginx(tmp_path / "single", master=False)
    try:
        inst = instance_for(find_instances(), running.pid)
        assert inst.master.role == "single"
        assert inst.workers == []
        assert inst.worker_pids == [running.pid]
        assert inst.capture_method == METHOD_NGINX_UPROBES
        assert f"127.0.0.1:{running.port}" in inst.listen
        assert inst.label == f"nginx 1.22.1 (single process {running.pid})"
        assert resolve_target(running.pid).master.pid == running.pid
    finally:
        stop_nginx(running)


def test_deleted_binary_after_upgrade(tmp_path: Path) -> None:
    copy = tmp_path / "bin" / "nginx"
    copy.parent.mkdir()
    shutil.copy2(NGINX, copy)
    running = start_nginx(tmp_path / "upgraded", binary=str(copy))
    try:
        copy.unlink()  # what a package upgrade does to the file the master runs
        inst = instance_for(find_instances(), running.pid)
        assert inst.master.exe == str(copy)
        assert inst.master.exe_deleted
        assert len(inst.workers) == 2
        assert inst.binary is not None, inst.binary_error
        assert inst.binary.path == f"/proc/{running.pid}/exe"
        assert inst.binary.version == "1.22.1"
        assert inst.capture_method == METHOD_NGINX_UPROBES
        assert "(deleted" in format_instances([inst])
    finally:
        stop_nginx(running)


def test_orphan_worker_is_its_own_instance(tmp_path: Path) -> None:
    """A process titled like a worker whose parent is not an nginx master stands alone."""
    code = (
        "import ctypes, sys, time\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)\n"
    )
    # exec -a sets argv[0]; nginx's title has the same shape once it rewrote argv.
    proc = subprocess.Popen(
        ["bash", "-c", f'exec -a "nginx: worker process" {sys.executable} -c "$0"', code],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        inst = instance_for(find_instances(), proc.pid)
        assert inst.master.role == "worker"
        assert inst.workers == []
        assert inst.binary is not None and inst.capture_method is None
        assert inst.label == f"{inst.title} (worker {proc.pid})"
    finally:
        proc.kill()
        proc.wait()
