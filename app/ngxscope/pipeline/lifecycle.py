"""What happens to nginx during a capture (reloads, respawns, binary upgrades, exits), and
keeping the probes on it: :class:`LifecycleWatch`, driven by the Recorder's fork/exit events
and its watcher thread. It reports through the callbacks it is given (`emit` an event,
`fail` the capture), never by reaching into the Recorder."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..capture.binary import BinaryError, inspect_binary
from ..capture.layout import layout_for_binary
from ..capture.tracer import CaptureError, Tracer
from ..model import LifecycleEvent
from .target import Target

__all__ = ["LifecycleWatch", "alive"]

log = logging.getLogger(__name__)


def _exe_ident(pid: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the executable a process runs (also when it was replaced)."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read(200).replace(b"\0", b" ").decode("latin-1").strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b") ", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


_SERVER_TITLES = ("master process", "worker process", "single process", "cache manager", "cache loader")


@dataclass(slots=True)
class _Fork:
    ts: float
    """Event time (the fork, in Unix seconds)."""
    seen: float
    """time.monotonic() when the decoder saw it."""
    parent: int
    child: int


class LifecycleWatch:
    """Names what happens to nginx during a capture, and keeps the probes on it.

    From the fork/exit events of the captured processes it tells a reload (a master forks
    workers while its old ones still run) from a respawn (a worker died and the master
    replaced it) and from a binary upgrade (the master's child runs a new executable, or
    becomes a master itself). A watcher thread (`tick`, ten times a second) attaches the
    probes to a new executable inode as soon as the captured binary's path points to one
    (so a USR2 upgrade is captured from its first request) or a captured process runs one,
    and tells when nginx exits and (with --binary) starts again. It also notices the
    session file being removed.
    """

    def __init__(self, *, emit: Callable[[LifecycleEvent], None], fail: Callable[[BaseException], None],
                 stopping: Callable[[], bool], files: Sequence[str] = ()) -> None:
        """emit: a lifecycle event for the sinks; fail: stop the capture with this error;
        stopping: the capture is stopping already; files: session files that must stay."""
        self.emit = emit
        self.fail = fail
        self.stopping = stopping
        self.watch_files = list(files)
        self.target: Target | None = None
        self.tracer: Tracer | None = None
        self.lock = threading.RLock()
        self.masters: set[int] = set()
        """Masters whose workers are captured (the target's, then upgrade successors)."""
        self.masters_ever: set[int] = set()
        self.parent: dict[int, tuple[int, float]] = {}
        """child pid -> (master pid, fork time) for the masters' children."""
        self.pending: list[_Fork] = []
        self.respawn_due: dict[int, int] = {}
        self.retiring: set[int] = set()
        self.burst: dict[int, float] = {}
        self.master_ident: dict[int, tuple[int, int] | None] = {}
        self.running = False
        """nginx is running (the target's master(s), or any process of --binary)."""
        self.seen_binary_pids: set[int] = set()
        self.watch_paths: list[str] = []
        self._failed_paths: set[tuple[str, tuple[int, int]]] = set()
        self._files: list[tuple[str, tuple[int, int]]] = []
        self._last_slow = 0.0
        self.dead: list[int] = []
        """Exited processes whose kernel-side connection entries are still to be dropped."""

    # -- setup ----------------------------------------------------------------------------
    def start(self, target: Target, tracer: Tracer) -> None:
        self.target = target
        self.tracer = tracer
        if target.master:
            self._add_master(target.master)
            for w in target.workers:
                self.parent[w] = (target.master, 0.0)
        self.running = bool(target.pids)
        if target.follow_all:
            self.seen_binary_pids = set(target.pids)
        path = target.binary
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        self.watch_paths = [os.path.realpath(path)]
        for out in self.watch_files:
            try:
                st = os.stat(out)
            except OSError:
                continue
            self._files.append((out, (st.st_dev, st.st_ino)))

    def master_of(self, pid: int) -> int | None:
        """The master an nginx process belongs to (itself for a master or a single process):
        from the forks seen, else from /proc (a worker the scan has not met yet)."""
        owner = self.parent.get(pid)
        if owner is not None:
            return owner[0]
        if pid in self.masters_ever:
            return pid
        for candidate in (_ppid(pid), pid):
            title = _title(candidate) if candidate else ""
            if "master process" in title or "single process" in title:
                return candidate
        return None

    def _add_master(self, pid: int) -> None:
        self.masters.add(pid)
        self.masters_ever.add(pid)
        self.master_ident[pid] = _exe_ident(pid)

    def _emit(self, ts: float, kind: str, pid: int, detail: str) -> None:
        self.emit(LifecycleEvent(ts=ts, kind=kind, pid=pid, detail=detail))

    # -- raw events (decode thread) ---------------------------------------------------------
    def on_fork(self, parent: int, child: int, ts: float) -> None:
        with self.lock:
            if parent in self.masters:
                self.parent[child] = (parent, ts)
                self.pending.append(_Fork(ts, time.monotonic(), parent, child))
            elif child not in self.parent:
                self.parent[child] = (parent, ts)

    def rename(self, ev: LifecycleEvent) -> LifecycleEvent:
        """The decoder says "worker-exit" for every captured process: a master is not one."""
        if ev.kind == "worker-exit" and ev.pid in self.masters_ever:
            return LifecycleEvent(ts=ev.ts, kind="master-exit", pid=ev.pid, detail="master process exited")
        return ev

    def on_exit(self, pid: int, ts: float) -> None:
        with self.lock:
            self._classify(force=True)
            if pid in self.masters:
                self.masters.discard(pid)
                target = self.target
                if target is None or not target.follow_all:  # --binary: the /proc scan tells
                    self._check_gone(ts)
                return
            owner = self.parent.pop(pid, None)
            if pid in self.retiring:
                self.retiring.discard(pid)
            elif owner is not None and owner[0] in self.masters and alive(owner[0]):
                self.respawn_due[owner[0]] = self.respawn_due.get(owner[0], 0) + 1
            self.dead.append(pid)

    def _check_gone(self, ts: float) -> None:
        if self.running and not any(alive(m) for m in self.masters):
            self.running = False
            self._emit(ts, "nginx-exit", 0, "nginx exited")

    # -- classification ---------------------------------------------------------------------
    def _classify(self, force: bool = False) -> None:
        now = time.monotonic()
        keep: list[_Fork] = []
        for f in self.pending:
            if not force and now - f.seen < 0.15 and not self._runs_other_binary(f):
                keep.append(f)
                continue
            self._classify_one(f)
        self.pending = keep

    def _runs_other_binary(self, f: _Fork) -> bool:
        ident = _exe_ident(f.child)
        return ident is not None and ident != self.master_ident.get(f.parent)

    def _classify_one(self, f: _Fork) -> None:
        child_forked = any(par == f.child for par, _ts in self.parent.values())
        if self._runs_other_binary(f) or child_forked or "master process" in _title(f.child):
            self._upgrade(f)
        elif self.respawn_due.get(f.parent, 0) > 0:
            self.respawn_due[f.parent] -= 1
        elif f.ts - self.burst.get(f.parent, -10.0) > 1.0:
            self.burst[f.parent] = f.ts
            # the master's children known from the event stream (exits are processed in
            # order), not /proc now: the decoder may run behind
            old = sorted(p for p, (par, t) in self.parent.items() if par == f.parent and t < f.ts)
            self.retiring.update(old)
            self._emit(f.ts, "reload", f.parent,
                       f"nginx reloaded: master {f.parent} starts new workers; old workers {old} drain")
        else:
            self.burst[f.parent] = f.ts

    def _upgrade(self, f: _Fork) -> None:
        self.parent.pop(f.child, None)
        self._add_master(f.child)
        ident = self.master_ident.get(f.child)
        detail = f"new master {f.child} (started by master {f.parent})"
        try:
            exe = os.readlink(f"/proc/{f.child}/exe")
        except OSError:
            exe = "?"
        tracer = self.tracer
        if ident is not None and tracer is not None and ident not in tracer.inodes:
            why = self._attach(f"/proc/{f.child}/exe")
            detail += f" runs {exe}: " + (why or "probes attached to its new inode")
        else:
            detail += f" runs {exe} (probes already on its inode)"
        self._emit(f.ts, "binary-upgrade", f.child, detail)

    def _attach(self, path: str) -> str:
        """Attach the probes to the executable at path; '' on success, else why not."""

        tracer, target = self.tracer, self.target
        if tracer is None or target is None:
            return "capture not running"
        try:
            info = inspect_binary(path)
            if not info.method:
                return f"not captured: {info.method_reason}"
            if layout_for_binary(path, info.version) != layout_for_binary(target.binary, target.version):
                return f"not captured: nginx {info.version} needs other struct offsets (restart ngxscope)"
            ident = tracer.attach_binary(path)
        except (BinaryError, CaptureError, OSError) as exc:
            return f"not captured: {exc}"
        if ident is not None:
            log.info("probes attached to %s (inode %d)", path, ident[1])
        return ""

    # -- watcher thread ---------------------------------------------------------------------
    def tick(self) -> None:
        with self.lock:
            self._classify()
            now = time.monotonic()
            if now - self._last_slow < 0.5:
                return
            self._last_slow = now
            dead, self.dead = self.dead, []
            if self.tracer is not None:
                for pid in dead:
                    self.tracer.forget_pid(pid)
            self._watch_paths()
            target = self.target
            if target is not None and target.follow_all:
                self._scan_binary()
            elif self.masters or self.running:
                self._check_gone(time.time())
        self._check_files()

    def _watch_paths(self) -> None:
        tracer = self.tracer
        if tracer is None:
            return
        for path in self.watch_paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in tracer.inodes or (path, ident) in self._failed_paths:
                continue
            if time.time() - st.st_mtime < 0.2:
                continue  # still being written: look again next time
            why = self._attach(path)
            if why:
                self._failed_paths.add((path, ident))
                log.warning("%s was replaced; %s", path, why)
            else:
                log.info("%s was replaced: its new inode is probed too (binary upgrade ready)", path)

    def _scan_binary(self) -> None:
        """--binary: which processes run a probed inode; nginx-start / nginx-exit."""
        tracer = self.tracer
        if tracer is None:
            return
        found: dict[int, str] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if _exe_ident(pid) in tracer.inodes:
                title = _title(pid)
                if any(t in title for t in _SERVER_TITLES):
                    found[pid] = title
        new = set(found) - self.seen_binary_pids
        if new:
            tracer.add_pids(new)  # so forks and exits of the master are seen from now on
        for pid in sorted(new):
            if "master process" in found[pid]:
                self._add_master(pid)
            else:
                owner = _ppid(pid)
                if owner:
                    self.parent.setdefault(pid, (owner, 0.0))
        self.seen_binary_pids = set(found)
        if found and not self.running:
            self.running = True
            masters = sorted(p for p, t in found.items() if "master process" in t)
            who = masters[0] if masters else min(found)
            self._emit(time.time(), "nginx-start", who,
                       f"nginx started: {len(found)} processes of {self.watch_paths[0]}")
        elif not found and self.running:
            self.running = False
            self._emit(time.time(), "nginx-exit", 0, f"no process runs {self.watch_paths[0]} any more")

    def _check_files(self) -> None:
        for path, ident in self._files:
            try:
                st = os.stat(path)
                gone = (st.st_dev, st.st_ino) != ident
            except FileNotFoundError:
                gone = True
            except OSError:
                gone = False
            if gone and not self.stopping():
                self._files = []
                self.fail(CaptureError(f"session file {path} was removed while recording"))
                return


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b") ", 1)[1][:1] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
