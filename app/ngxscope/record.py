"""`ngxscope record`: attach to a running nginx, decode, and write the session as it goes.

Two threads: the capture thread drains the BPF ring buffer (parsing headers only, so the
kernel side never waits on Python's decoding), the decode thread turns raw events into
exchanges and writes them. The caller's thread handles signals and the live counter.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .capture.binary import BinaryError, inspect_binary
from .capture.budget import CpuGovernor, default_budget
from .capture.events import EV_EXIT, EV_FORK, RawEvent
from .capture.fallback import FALLBACK_METHODS, METHOD_LIBSSL_SYSCALLS, FallbackTracer
from .capture.kheaders import find_kernel_headers
from .capture.layout import layout_for_version
from .capture.nginxconf import ConfigMap, config_for_master
from .capture.procs import resolve_target
from .capture.tracer import CaptureError, Tracer, TracerConfig
from .decode.assembler import Assembler
from .model import Exchange, LifecycleEvent

__all__ = ["CaptureError", "LifecycleWatch", "RecordOptions", "Recorder", "preflight"]

log = logging.getLogger(__name__)


class RecordSink(Protocol):
    def write_exchange(self, ex: Exchange) -> None: ...
    def write_event(self, ev: LifecycleEvent) -> None: ...
    def write_stats(self, d: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class RecordOptions:
    """What to capture and how."""

    pid: int | None = None
    """A master (all its workers, now and after reloads) or a single worker."""
    binary: str | None = None
    """Every process running this executable, now and later."""
    payload_cap: int = 16384
    """Payload bytes captured per I/O call."""
    ringbuf_mb: int = 32
    """Ring buffer size in MiB."""
    body_limit: int = 256 * 1024
    """Body bytes kept per exchange."""
    force: bool = False
    """Attach to a process that does not look like nginx."""
    cpu_budget: float = field(default_factory=default_budget)
    """Fraction of one core the capture may use before it samples payloads (0: never)."""
    syscall_io: bool = True
    """Plaintext I/O at syscall tracepoints where possible (False: uprobes only)."""


def _read_cap_eff() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _has_bpf_caps() -> bool:
    if os.geteuid() == 0:
        return True
    caps = _read_cap_eff()
    return bool(caps & (1 << 39)) and bool(caps & (1 << 38))  # CAP_BPF, CAP_PERFMON


def preflight() -> list[str]:
    """Check the machine can capture; returns notices, raises CaptureError with one line."""
    if not _has_bpf_caps():
        raise CaptureError("capturing needs root (or CAP_BPF and CAP_PERFMON): run it with sudo")
    if not os.path.exists("/proc/sys/kernel/unprivileged_bpf_disabled"):
        raise CaptureError("this kernel has no BPF support (CONFIG_BPF_SYSCALL is off)")
    notices = []
    if not os.path.isdir("/sys/kernel/tracing/events") and not os.path.isdir("/sys/kernel/debug/tracing/events"):
        mount = ["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"]
        if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
            raise CaptureError("tracefs is not mounted and cannot be: mount -t tracefs nodev /sys/kernel/tracing")
        notices.append("mounted tracefs on /sys/kernel/tracing")
    try:
        source, notice = find_kernel_headers()
    except RuntimeError as exc:
        raise CaptureError(str(exc)) from None
    if source:
        os.environ["BCC_KERNEL_SOURCE"] = source
    if notice:
        notices.append(notice)
    return notices


@dataclass(slots=True)
class Target:
    """What was resolved from --pid / --binary."""

    binary: str
    version: str
    method: str
    pids: list[int]
    master: int | None
    workers: list[int] = field(default_factory=list)
    follow_all: bool = False

    def describe(self) -> str:
        n = len(self.workers)
        who = f"{n} worker{'s' if n != 1 else ''}"
        if self.follow_all:
            return f"{who} of {self.binary} (all processes of this binary) via {self.method}"
        owner = f"master {self.master}" if self.master else "single process"
        return f"{who} of nginx ({owner}) via {self.method}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "version": self.version,
            "method": self.method,
            "master": self.master,
            "workers": self.workers,
            "follow_all": self.follow_all,
            "host": os.uname().nodename,
        }


def resolve(opts: RecordOptions) -> Target:
    """Find the processes and the binary to probe. Raises CaptureError with one line."""
    from .capture.procs import TargetError, find_instances

    if opts.pid is not None:
        try:
            inst = resolve_target(opts.pid, force=opts.force)
        except TargetError as exc:
            raise CaptureError(str(exc)) from None
        info = inst.binary
        if info is None:
            raise CaptureError(f"cannot inspect the binary of PID {opts.pid}: {inst.binary_error}")
        if not info.method and not opts.force:
            raise CaptureError(f"cannot capture PID {opts.pid}: {info.method_reason}")
        pids = [inst.master.pid] + [w.pid for w in inst.workers]
        workers = [w.pid for w in inst.workers] or [inst.master.pid]
        master = inst.master.pid if inst.workers else None
        return Target(info.path, info.version, info.method or "nginx uprobes", pids, master, workers)
    assert opts.binary is not None
    try:
        info = inspect_binary(opts.binary)
    except BinaryError as exc:
        raise CaptureError(str(exc)) from None
    if not info.method:
        raise CaptureError(f"cannot capture {opts.binary}: {info.method_reason}")
    real = os.path.realpath(opts.binary)
    running: list[int] = []
    for inst in find_instances():
        if inst.binary is not None and os.path.realpath(inst.master.exe) == real:
            running += [w.pid for w in inst.workers] or [inst.master.pid]
    return Target(real, info.version, info.method, running, None, running, follow_all=True)


class Recorder:
    """Runs one capture: tracer → decode thread → sinks."""

    def __init__(self, opts: RecordOptions, sinks: list[RecordSink]) -> None:
        self.opts = opts
        self.sinks = sinks
        self.target: Target | None = None
        self.tracer: Tracer | None = None
        self.started = 0.0
        self.assembler: Assembler | None = None
        self._raw: queue.Queue[list[RawEvent] | None] = queue.Queue(maxsize=4096)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._batch: list[RawEvent] = []
        self.exchanges = 0
        self.decode_error: BaseException | None = None
        self.end_reason = ""
        self.on_exchange: Callable[[Exchange], None] | None = None
        self._stop_ts = 0.0
        self.watch = LifecycleWatch(self)
        self.config: ConfigMap | None = None
        self.governor: CpuGovernor | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        """Attach; returns the "capturing ..." line. Raises CaptureError."""
        for notice in preflight():
            log.warning("%s", notice)
        self.target = target = resolve(self.opts)
        cfg = TracerConfig(
            binary=target.binary,
            pids=target.pids,
            follow_all=target.follow_all,
            layout=layout_for_version(target.version),
            payload_cap=self.opts.payload_cap,
            ringbuf_mb=self.opts.ringbuf_mb,
            syscall_io=self.opts.syscall_io,
        )
        if target.method in FALLBACK_METHODS:
            self.tracer = FallbackTracer(cfg, tls=target.method == METHOD_LIBSSL_SYSCALLS)
        else:
            self.tracer = Tracer(cfg)
        self.started = time.time()
        from .capture.procs import socket_peer

        self.assembler = Assembler(
            self._deliver, self._deliver_event, body_limit=self.opts.body_limit, attach_ts=self.started,
            peer_of=socket_peer,
        )
        self.tracer.start(self._collect)
        tracer = self.tracer
        if self.opts.cpu_budget > 0 and tracer.set_sampling(1):
            self.governor = CpuGovernor(self.opts.cpu_budget, tracer.set_sampling)
        if target.master:
            # workers forked between the scan and the attach
            try:
                from .capture.procs import resolve_target as again

                inst = again(target.master, force=True)
                self.tracer.add_pids(w.pid for w in inst.workers)
                target.workers = sorted({*target.workers, *(w.pid for w in inst.workers)})
            except Exception as exc:
                log.debug("rescan after attach: %s", exc)
        self._deliver_event(LifecycleEvent(ts=self.started, kind="attach", pid=target.master or 0,
                                           detail=target.describe()))
        self.config = self._load_config(target)
        self.watch.start(target)
        self._threads = [
            threading.Thread(target=self._capture_loop, name="ngxscope-capture", daemon=True),
            threading.Thread(target=self._decode_loop, name="ngxscope-decode", daemon=True),
            threading.Thread(target=self._watch_loop, name="ngxscope-watch", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return f"capturing {target.describe()}"

    def stop(self, reason: str = "") -> None:
        if reason and not self.end_reason:
            self.end_reason = reason
        if not self._stop.is_set():
            self._stop_ts = time.time()
        self._stop.set()

    def fail(self, exc: BaseException) -> None:
        """A sink failed (disk full...): keep the first error and stop the capture."""
        if self.decode_error is None:
            self.decode_error = exc
            self.stop(f"capture stopped: {exc}")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self) -> None:
        """Wait for both threads to drain, detach, and flush the decoder."""
        self.stop()
        for t in self._threads:
            t.join(timeout=30)
        if self.tracer is not None:
            self.tracer.stop()
        if self.assembler is not None:
            self.assembler.finish(self._stop_ts)
            self._deliver_event(LifecycleEvent(ts=time.time(), kind="detach", detail=self.end_reason or "stopped"))
            self.write_stats()

    # -- threads --------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        assert self.tracer is not None
        try:
            while not self._stop.is_set():
                self.tracer.poll(50)
                if self._batch:
                    batch, self._batch = self._batch, []
                    self._hand_over(batch)
            self.tracer.poll(0)  # what arrived before the stop
            if self._batch:
                self._hand_over(self._batch)
                self._batch = []
        except Exception as exc:  # surface to the main thread instead of dying silently
            self.decode_error = exc
            self.end_reason = f"capture failed: {exc}"
        finally:
            self._hand_over(None)

    def _hand_over(self, batch: list[RawEvent] | None) -> None:
        # Blocks while the decoder catches up (the ring buffer absorbs the burst, and its
        # overflow is counted in the kernel); gives up only if the decoder has died.
        while True:
            try:
                self._raw.put(batch, timeout=0.5)
                return
            except queue.Full:
                if self.decode_error is not None:
                    return

    def _watch_loop(self) -> None:
        failures = 0
        while not self._stop.wait(0.1):
            try:
                if self.governor is not None:
                    step = self.governor.tick()
                    if step is not None:
                        self._deliver_event(LifecycleEvent(ts=time.time(), kind="sampling", detail=step.detail))
                self.watch.tick()
            except Exception as exc:  # never let the watcher take the capture down
                failures += 1
                if failures <= 3:
                    log.warning("lifecycle watcher: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))

    def _decode_loop(self) -> None:
        assert self.assembler is not None
        feed = self.assembler.feed
        watch = self.watch
        while True:
            batch = self._raw.get()
            if batch is None:
                return
            try:
                for ev in batch:
                    kind = ev.kind
                    if kind == EV_FORK:
                        watch.on_fork(ev.pid, int(ev.aux), ev.ts)
                    feed(ev)
                    if kind == EV_EXIT:
                        watch.on_exit(ev.pid, ev.ts)
            except Exception as exc:
                self.decode_error = exc
                self.end_reason = f"capture stopped: {exc}"
                if type(exc).__name__ != "SessionError":
                    log.exception("decoder failed")
                self.stop()
                return

    def _load_config(self, target: Target) -> ConfigMap | None:
        """Upstream group and server block names, read-only from nginx's configuration file."""
        master = target.master or (target.pids[0] if target.pids else None)
        if master is None:
            return None
        cmap = config_for_master(master, target.binary)
        if cmap.note:
            log.warning("%s", cmap.note)
        self._deliver_event(LifecycleEvent(
            ts=time.time(), kind="config", pid=master,
            detail=f"{cmap.path}: {len(cmap.groups)} upstream peers, {len(cmap.servers)} server blocks"
                   + (f" ({cmap.note})" if cmap.note else "")))
        return cmap

    def _collect(self, ev: RawEvent) -> None:
        self._batch.append(ev)

    # -- output ---------------------------------------------------------------------------
    def _deliver(self, ex: Exchange) -> None:
        self.exchanges += 1
        cmap = self.config
        if cmap is not None:
            ex.server_block = cmap.server_of(ex.server, ex.host)
            for att in ex.upstream:
                att.group = cmap.group_of(att.addr, ex.path)
        for sink in self.sinks:
            sink.write_exchange(ex)
        if self.on_exchange is not None:
            self.on_exchange(ex)

    def _deliver_event(self, ev: LifecycleEvent) -> None:
        ev = self.watch.rename(ev)
        for sink in self.sinks:
            sink.write_event(ev)

    def counters(self) -> dict[str, Any]:
        k = self.tracer.counters() if self.tracer is not None else {}
        a = self.assembler.stats if self.assembler is not None else None
        return {
            "ts": time.time(),
            "requests": self.exchanges,
            "events": k.get("events", 0),
            "lost": k.get("lost", 0),
            "shed": k.get("shed", 0),
            "shed_exchanges": a.shed if a else 0,
            "sampled": k.get("sampled", 0),
            "sampled_exchanges": a.sampled if a else 0,
            "sample_one_in": self.governor.one_in if self.governor else 1,
            "capture_cpu": round(self.governor.cpu, 3) if self.governor else None,
            "truncated": k.get("truncated", 0),
            "gaps": a.gaps if a else 0,
            "malformed": a.malformed if a else 0,
            "open_conns": a.open_conns if a else 0,
            "upstream_conns": self.assembler.upstreams.pool_stats() if self.assembler else {},
            "workers": self.alive_workers(),
            "method": self.target.method if self.target else "",
        }

    def write_stats(self) -> dict[str, Any]:
        stats = self.counters()
        for sink in self.sinks:
            sink.write_stats(stats)
        return stats

    def alive_workers(self) -> list[int]:
        if self.tracer is None:
            return []
        masters = self.watch.masters_ever
        return [p for p in self.tracer.target_pids() if _alive(p) and p not in masters]

    def nginx_gone(self) -> bool:
        """The captured nginx has exited (master, or every process for --binary)."""
        if self.target is None:
            return False
        if self.target.follow_all:
            return False  # --binary waits for nginx to start again
        if self.target.master:  # or its successor after a binary upgrade
            return not any(_alive(m) for m in self.watch.masters)
        return not any(_alive(p) for p in self.target.pids)


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

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
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
    def start(self, target: Target) -> None:
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
        for sink in self.rec.sinks:
            out = getattr(getattr(sink, "writer", sink), "path", None)
            if isinstance(out, str):
                try:
                    st = os.stat(out)
                except OSError:
                    continue
                self._files.append((out, (st.st_dev, st.st_ino)))

    def _add_master(self, pid: int) -> None:
        self.masters.add(pid)
        self.masters_ever.add(pid)
        self.master_ident[pid] = _exe_ident(pid)

    def _emit(self, ts: float, kind: str, pid: int, detail: str) -> None:
        self.rec._deliver_event(LifecycleEvent(ts=ts, kind=kind, pid=pid, detail=detail))

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
                target = self.rec.target
                if target is None or not target.follow_all:  # --binary: the /proc scan tells
                    self._check_gone(ts)
                return
            owner = self.parent.pop(pid, None)
            if pid in self.retiring:
                self.retiring.discard(pid)
            elif owner is not None and owner[0] in self.masters and _alive(owner[0]):
                self.respawn_due[owner[0]] = self.respawn_due.get(owner[0], 0) + 1
            self.dead.append(pid)

    def _check_gone(self, ts: float) -> None:
        if self.running and not any(_alive(m) for m in self.masters):
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
        tracer = self.rec.tracer
        if ident is not None and tracer is not None and ident not in tracer.inodes:
            why = self._attach(f"/proc/{f.child}/exe")
            detail += f" runs {exe}: " + (why or "probes attached to its new inode")
        else:
            detail += f" runs {exe} (probes already on its inode)"
        self._emit(f.ts, "binary-upgrade", f.child, detail)

    def _attach(self, path: str) -> str:
        """Attach the probes to the executable at path; '' on success, else why not."""
        from .capture.binary import inspect_binary

        tracer, target = self.rec.tracer, self.rec.target
        if tracer is None or target is None:
            return "capture not running"
        try:
            info = inspect_binary(path)
            if not info.method:
                return f"not captured: {info.method_reason}"
            if layout_for_version(info.version) != layout_for_version(target.version):
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
            if self.rec.tracer is not None:
                for pid in dead:
                    self.rec.tracer.forget_pid(pid)
            self._watch_paths()
            target = self.rec.target
            if target is not None and target.follow_all:
                self._scan_binary()
            elif self.masters or self.running:
                self._check_gone(time.time())
        self._check_files()

    def _watch_paths(self) -> None:
        tracer = self.rec.tracer
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
        tracer = self.rec.tracer
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
            if gone and not self.rec.stopping:
                self._files = []
                self.rec.fail(CaptureError(f"session file {path} was removed while recording"))
                return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b") ", 1)[1][:1] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
