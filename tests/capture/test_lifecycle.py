"""nginx's lifecycle during a capture: reload, a killed worker, a binary upgrade, a restart.

Each runs traffic across the event and compares every access-log line with the captured
exchanges (`compare`): zero missed requests. The session names each event
(LifecycleEvent kinds reload, worker-start, worker-exit, binary-upgrade, master-exit,
nginx-exit, nginx-start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic, TrafficError
from ngxscope.model import LifecycleEvent

from .truth import compare


class Background:
    """Keep-alive, pipelined and POST traffic from one thread until stopped.

    A request nginx never read (its keep-alive connection closed by a retiring worker)
    fails on the client side only; it is not in the access log, so it is not compared.
    """

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.stop_event = threading.Event()
        self.sent = 0
        self.client_errors = 0
        self.thread = threading.Thread(target=self._run, name="lifecycle-traffic", daemon=True)

    def _run(self) -> None:
        t = self.traffic
        actions: list[Callable[[bool], int]] = [
            lambda tls: t.keepalive(tls, ["/static/small.txt", "/health", "/api/items?id=3", "/204"]),
            lambda tls: t.pipelined(tls, ["/static/data.json", "/missing", "/health"]),
            lambda tls: t.post(tls, 2048),
            lambda tls: t.keepalive(tls, ["/api/chunked?n=3", "/static/page.html"]),
        ]
        i = 0
        while not self.stop_event.is_set():
            try:
                self.sent += actions[i % len(actions)](i % 2 == 1)
            except (OSError, TrafficError):
                self.client_errors += 1
            i += 1
            self.stop_event.wait(0.005)

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.thread.join(30)


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _events(cap: Any, kind: str | None = None) -> list[LifecycleEvent]:
    with cap.sink.lock:
        return [ev for ev in cap.sink.events if kind is None or ev.kind == kind]


def _settle_and_compare(lab: LabNginx, cap: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Wait for the log to stop growing and the capture to catch up; compare; stop."""
    def settled() -> int:
        count = lab.log_line_count()
        time.sleep(0.3)
        return count if count and count == lab.log_line_count() else 0

    n = _wait(settled, 15, "the access log to settle")
    log = lab.read_access_log()
    assert len(log) == n
    exchanges = cap.wait_for(n)
    stats = cap.recorder.counters()
    cap.stop()
    problems = compare(log, exchanges)
    assert not problems, f"{len(problems)} mismatches of {len(log)}:\n" + "\n".join(problems[:30])
    assert stats["lost"] == 0
    return log, exchanges


def _children(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def _workers_of(pid: int) -> list[int]:
    out = []
    for c in _children(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "worker process" in " ".join(c.cmdline()):
                out.append(c.pid)
    return sorted(out)


@pytest.fixture
def nginx_copy(tmp_path: Path) -> Iterator[Path]:
    """/usr/sbin/nginx copied to a private path (its own inode, replaceable for USR2)."""
    path = tmp_path / "bin" / "nginx"
    path.parent.mkdir()
    shutil.copy2("/usr/sbin/nginx", path)
    yield path


def test_reload_under_traffic(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    old = lab_nginx.worker_pids()
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    with Background(traffic) as bg:
        _wait(lambda: bg.sent > 100, 15, "traffic before the reload")
        new = lab_nginx.reload()
        _wait(lambda: bg.sent > 300, 15, "traffic after the first reload")
        newer = lab_nginx.reload()
        start = bg.sent
        _wait(lambda: bg.sent > start + 200, 15, "traffic after the second reload")
    log, exchanges = _settle_and_compare(lab_nginx, cap)
    pids = {ex.pid for ex in exchanges}
    assert set(old) & pids and set(new) & pids and set(newer) & pids, (old, new, newer, pids)
    reloads = _events(cap, "reload")
    assert [ev.pid for ev in reloads] == [lab_nginx.master_pid] * 2, "\n".join(map(str, _events(cap)))
    started = {ev.pid for ev in _events(cap, "worker-start")}
    exited = {ev.pid for ev in _events(cap, "worker-exit")}
    assert set(new) | set(newer) <= started
    assert set(old) | set(new) <= exited
    print(f"\nreload x2 under traffic: {len(log)} logged, {len(exchanges)} captured, 0 mismatches, "
          f"{bg.client_errors} client-side errors; events {[e.kind for e in _events(cap)]}")


def test_worker_killed_and_respawned(lab_nginx: LabNginx, capture_factory: Any) -> None:
    master = lab_nginx.master_pid
    cap = capture_factory(pid=master)
    old = lab_nginx.worker_pids()
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    with Background(traffic) as bg:
        _wait(lambda: bg.sent > 100, 15, "traffic before the kill")
        victim = old[0]
        os.kill(victim, signal.SIGKILL)
        respawned = _wait(lambda: [p for p in lab_nginx.worker_pids() if p not in old], 10, "the respawn")
        start = bg.sent
        _wait(lambda: bg.sent > start + 200, 15, "traffic after the respawn")
    # a request the killed worker had read but not answered is not logged: not compared
    log, exchanges = _settle_and_compare(lab_nginx, cap)
    assert set(respawned) & {ex.pid for ex in exchanges}
    kinds = [e.kind for e in _events(cap)]
    assert victim in {ev.pid for ev in _events(cap, "worker-exit")}
    assert set(respawned) <= {ev.pid for ev in _events(cap, "worker-start")}
    assert "reload" not in kinds, kinds
    # nginx stopping: the master's exit is named, then nginx-exit
    cap2 = capture_factory(pid=master)
    lab_nginx.stop()
    _wait(lambda: _events(cap2, "nginx-exit"), 10, "nginx-exit")
    assert master in {ev.pid for ev in _events(cap2, "master-exit")}
    assert cap2.recorder.nginx_gone()
    print(f"\nworker {victim} SIGKILLed, respawned as {respawned}: {len(log)} logged, "
          f"{len(exchanges)} captured, 0 mismatches; events {kinds}")


def test_binary_upgrade(nginx_copy: Path, capture_factory: Any) -> None:
    lab = LabNginx(workers=2, nginx_bin=str(nginx_copy))
    lab.start()
    # USR2 is ignored by a master whose parent is still its launcher (`daemon off`): start
    # this one as a daemon, on the lab's prefix and ports, as an init system would
    lab.stop_nginx_only()
    old_master = new_master = 0
    try:
        subprocess.run([str(nginx_copy), "-p", f"{lab.prefix}/", "-c", str(lab.conf_path)],
                       check=True, timeout=10, stdin=subprocess.DEVNULL, capture_output=True)
        old_master = int((lab.prefix / "nginx.pid").read_text())
        old_workers = _wait(lambda: len(w := _workers_of(old_master)) == 2 and w, 10, "the workers")
        cap = capture_factory(pid=old_master)
        traffic = Traffic(lab.plain_port, lab.tls_port)
        with Background(traffic) as bg:
            _wait(lambda: bg.sent > 100, 15, "traffic before the upgrade")
            # the new executable: a new inode at the same path, as a package upgrade leaves it
            staged = nginx_copy.with_name("nginx.new")
            shutil.copy2("/usr/sbin/nginx", staged)
            os.replace(staged, nginx_copy)
            tracer = cap.recorder.tracer
            _wait(lambda: len(tracer.inodes) == 2, 10, "the probes on the new inode")
            os.kill(old_master, signal.SIGUSR2)
            new_master = _wait(
                lambda: next((c.pid for c in _children(old_master) if "master process" in " ".join(c.cmdline())), 0),
                10, "the new master")
            new_workers = _wait(lambda: len(w := _workers_of(new_master)) == 2 and w, 10, "the new workers")
            start = bg.sent
            _wait(lambda: bg.sent > start + 150, 15, "traffic with both generations")
            os.kill(old_master, signal.SIGWINCH)  # old workers finish and leave
            _wait(lambda: not _workers_of(old_master), 15, "the old workers to leave")
            os.kill(old_master, signal.SIGQUIT)
            _wait(lambda: not psutil.pid_exists(old_master) or
                  psutil.Process(old_master).status() == psutil.STATUS_ZOMBIE, 10, "the old master to exit")
            start = bg.sent
            _wait(lambda: bg.sent > start + 200, 15, "traffic on the new generation only")
        assert not cap.recorder.nginx_gone(), "the new master carries the capture on"
        log, exchanges = _settle_and_compare(lab, cap)
        pids = {ex.pid for ex in exchanges}
        assert set(old_workers) & pids and set(new_workers) & pids, (old_workers, new_workers, pids)
        ups = _events(cap, "binary-upgrade")
        assert [ev.pid for ev in ups] == [new_master], _events(cap)
        assert old_master in {ev.pid for ev in _events(cap, "master-exit")}
        assert not _events(cap, "nginx-exit") and not _events(cap, "reload")
        print(f"\nbinary upgrade (USR2 from a new inode, WINCH, QUIT): {len(log)} logged, "
              f"{len(exchanges)} captured, 0 mismatches; {ups[0].detail}")
    finally:
        for pid in (new_master, old_master):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
                with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                    psutil.Process(pid).wait(5)
        if old_master:  # the daemon's session: both generations, whatever is left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(old_master, signal.SIGKILL)
        lab.stop()


def test_restart_under_binary_mode(nginx_copy: Path, capture_factory: Any) -> None:
    lab = LabNginx(workers=2, nginx_bin=str(nginx_copy))
    lab.start()
    try:
        cap = capture_factory(binary=str(nginx_copy))
        first = lab.master_pid
        traffic = Traffic(lab.plain_port, lab.tls_port)
        with Background(traffic) as bg:
            _wait(lambda: bg.sent > 100, 15, "traffic before the stop")
        os.kill(first, signal.SIGQUIT)
        assert lab._proc is not None
        lab._proc.wait(10)
        lab._proc = None
        _wait(lambda: _events(cap, "nginx-exit"), 10, "nginx-exit")
        assert lab._start_nginx(10.0) == "", "nginx restarts on the same ports"
        second = lab.master_pid
        _wait(lambda: _events(cap, "nginx-start"), 10, "nginx-start")
        with Background(traffic) as bg2:
            _wait(lambda: bg2.sent > 150, 15, "traffic after the restart")
        log, exchanges = _settle_and_compare(lab, cap)
        pids = {ex.pid for ex in exchanges}
        assert {int(line["pid"]) for line in log} == pids
        kinds = [e.kind for e in _events(cap)]
        assert kinds.index("nginx-exit") < kinds.index("nginx-start"), kinds
        assert _events(cap, "nginx-start")[0].pid == second != first
        # each master's configuration names the server block (read per master under --binary)
        unnamed = [ex for ex in exchanges if ex.server_block is None]
        assert not unnamed, f"{len(unnamed)} exchanges without a server block, e.g. {unnamed[0].server}"
        print(f"\nnginx stopped and started again under --binary: {len(log)} logged, "
              f"{len(exchanges)} captured, 0 mismatches; events {kinds}")
    finally:
        lab.stop()
