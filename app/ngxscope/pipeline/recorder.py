"""A capture run: tracer -> decode thread -> sinks (`Recorder`).

Two threads: the capture thread drains the BPF ring buffer (parsing headers only, so the
kernel side never waits on Python's decoding), the decode thread turns raw events into
exchanges and hands them to the sinks. The caller's thread handles signals and the live
counter (`pipeline.run`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..capture.budget import CpuContention, CpuGovernor
from ..capture.events import EV_EXIT, EV_FORK, RawEvent
from ..capture.fallback import (
    FALLBACK_METHODS,
    METHOD_LIBSSL_SYSCALLS,
    METHOD_SYSCALLS_ONLY,
    FallbackTracer,
)
from ..capture.kcounts import KernelCounts
from ..capture.layout import layout_for_binary
from ..capture.nginxconf import ConfigMap, ServerBlock, config_for_master
from ..capture.procs import resolve_target, socket_peer
from ..capture.selfanswer import CacheTracker
from ..capture.tracer import Tracer, TracerConfig
from ..capture.wire import WireError
from ..decode.assembler import Assembler
from ..model import Exchange, LifecycleEvent, UpstreamAttempt
from .lifecycle import LifecycleWatch, alive
from .sinks import RecordSink
from .target import RecordOptions, Target, preflight, resolve
from .wirejoin import WireJoin

__all__ = ["Recorder"]

log = logging.getLogger(__name__)


class Recorder:
    """Runs one capture: tracer → decode thread → sinks."""

    def __init__(self, opts: RecordOptions, sinks: Sequence[RecordSink], *,
                 watch_files: Sequence[str] = ()) -> None:
        """`watch_files`: session files written; removing one while recording stops it."""
        self.opts = opts
        self.sinks = list(sinks)
        self.target: Target | None = None
        self.tracer: Tracer | None = None
        self.started = 0.0
        self.assembler: Assembler | None = None
        self._raw: queue.Queue[tuple[float, list[RawEvent]] | None] = queue.Queue(maxsize=4096)
        """Batches for the decode thread, each with the time before which every record the
        programs made is in it or an earlier batch (0: no news; None: the end)."""
        self._decoded_until = 0.0
        """That time for the batches decoded so far."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._batch: list[RawEvent] = []
        self.exchanges = 0
        """Requests delivered as rows (connection records not included): the stats'
        "requests" and the CPU governor's measure of the load."""
        self.cache = CacheTracker()
        """What the capture saw of nginx's caches: the answer kind of each exchange."""
        self.decode_error: BaseException | None = None
        self.end_reason = ""
        self._stop_ts = 0.0
        self.watch = LifecycleWatch(emit=self.emit_event, fail=self.fail,
                                    stopping=lambda: self.stopping, files=watch_files)
        self.config: ConfigMap | None = None
        self._blocks: dict[tuple[int, str, str], ServerBlock | None] = {}
        """`_block_of`'s answers."""
        self._configs: dict[int, ConfigMap] = {}
        """--binary: each master's configuration (master pid → map), read when its first
        exchange is delivered."""
        self._masters: dict[int, int | None] = {}
        """--binary: worker pid → its master (None: not an nginx process of a master)."""
        self.governor: CpuGovernor | None = None
        self.wire: WireJoin | None = None
        self._wire_flushed = 0.0
        self.kcounts: KernelCounts | None = None
        """The kernel's counts of sampled-out exchanges no rule kept (None: not counted)."""
        self._kcounts_lock = threading.Lock()
        self._kcounts_drained = 0.0

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
            layout=layout_for_binary(target.binary, target.version),
            payload_cap=self.opts.payload_cap,
            ringbuf_mb=self.opts.ringbuf_mb,
            syscall_io=self.opts.syscall_io,
            syscall_regs=self.opts.syscall_regs,
        )
        if target.method in FALLBACK_METHODS:
            self.tracer = FallbackTracer(cfg, tls=target.method == METHOD_LIBSSL_SYSCALLS)
        else:
            self.tracer = Tracer(cfg)
        self.started = time.time()
        self.assembler = Assembler(
            self._deliver, self.emit_event, body_limit=self.opts.body_limit, attach_ts=self.started,
            peer_of=socket_peer,
        )
        # every record lands here: the list's own append, not a Python method per record
        self.tracer.start(self._batch.append)
        if target.master:
            # workers forked between the scan and the attach
            try:
                inst = resolve_target(target.master, force=True)
                self.tracer.add_pids(w.pid for w in inst.workers)
                target.workers = sorted({*target.workers, *(w.pid for w in inst.workers)})
            except Exception as exc:
                log.debug("rescan after attach: %s", exc)
        self.emit_event(LifecycleEvent(ts=self.started, kind="attach", pid=target.master or 0,
                                           detail=target.describe()))
        self.config = self._load_config(target)
        if self.opts.wire:
            self._start_wire(target)
        self.watch.start(target, self.tracer)
        # the governor's first second must not count the set-up (reading nginx's configuration,
        # compiling the socket filter: seconds of CPU) as the cost of watching
        if self.opts.cpu_budget > 0 and self.tracer.set_sampling(1):
            # every half second, and at once (0.1 s) when far over budget: at saturation the
            # first moments, before sampling, cost most
            contention = CpuContention(target.master, target.workers) if self.opts.yield_cpu else None
            self.governor = CpuGovernor(self.opts.cpu_budget, self.tracer.set_sampling, period=0.5,
                                        contention=contention, exchanges=lambda: self.exchanges, fast=0.1)
        self._start_kcounts()
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
            try:
                self.drain_kcounts(final=True)
            except Exception as exc:  # never let the counts hide the real end
                log.warning("reading the kernel's counts: %s", exc)
            self.tracer.stop()
        if self.assembler is not None:
            self.assembler.finish(self._stop_ts)
            if self.wire is not None:
                self._flush_wire(time.time() + self.wire.grace)
                self.wire.stop()
            self.emit_event(LifecycleEvent(ts=time.time(), kind="detach", detail=self.end_reason or "stopped"))
            self.write_stats()

    # -- threads --------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        assert self.tracer is not None
        try:
            tracer, told = self.tracer, 0.0
            while not self._stop.is_set():
                tracer.poll(50)
                # an idle ring still tells the decoder how far the programs' records go
                if self._batch or (tracer.read_until - told >= 0.2 and self._raw.empty()):
                    told = tracer.read_until
                    self._hand_over((told, self._take_batch()))
            tracer.poll(0)  # what arrived before the stop
            if self._batch:
                self._hand_over((tracer.read_until, self._take_batch()))
        except Exception as exc:  # surface to the main thread instead of dying silently
            self.decode_error = exc
            self.end_reason = f"capture failed: {exc}"
        finally:
            self._hand_over(None)

    def _hand_over(self, batch: tuple[float, list[RawEvent]] | None) -> None:
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
            if self.wire is not None and time.time() - self._wire_flushed >= 0.5:
                try:  # wake the decode thread: it emits the wire's connection records
                    self._raw.put_nowait((0.0, []))
                except queue.Full:
                    pass
            try:
                if self.governor is not None:
                    step = self.governor.tick()
                    if step is not None:
                        self.emit_event(LifecycleEvent(ts=time.time(), kind="sampling", detail=step.detail))
                if self.kcounts is not None and time.monotonic() - self._kcounts_drained >= 1.0:
                    self.drain_kcounts()
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
            item = self._raw.get()
            if item is None:
                return
            read_until, batch = item
            try:
                for ev in batch:
                    kind = ev.kind
                    if kind == EV_FORK:
                        watch.on_fork(ev.pid, int(ev.aux), ev.ts)
                    feed(ev)
                    if kind == EV_EXIT:
                        watch.on_exit(ev.pid, ev.ts)
                if read_until:
                    self._decoded_until = read_until
                if self.wire is not None and time.time() - self._wire_flushed >= 0.5:
                    self._flush_wire()
            except Exception as exc:
                self.decode_error = exc
                self.end_reason = f"capture stopped: {exc}"
                if type(exc).__name__ != "SessionError":
                    log.exception("decoder failed")
                self.stop()
                return

    def _start_kcounts(self) -> None:
        """Sampled-out exchanges no rule keeps are counted in the kernel (needs nginx's own
        access-log values: the request struct's layout)."""
        tracer = self.tracer
        if (self.opts.kernel_counts and isinstance(tracer, Tracer) and tracer.config.layout.request_log
                and tracer.counts_in_kernel()):
            cmap = self.config

            def name(server_name: str) -> str:
                if cmap is not None and server_name:
                    for sb in cmap.servers:
                        if server_name in sb.names:
                            return sb.label
                return server_name

            self.kcounts = KernelCounts(tracer.bpf, name_server=name,
                                        keep_slower_than_ms=self.opts.keep_slower_than_ms)
        elif isinstance(tracer, Tracer):
            tracer.set_kernel_counts(False)

    def drain_kcounts(self, final: bool = False) -> None:
        """Take the kernel's counts (about once a second; twice at the end: both epochs)."""
        if self.kcounts is None:
            return
        with self._kcounts_lock:
            self.kcounts.drain()
            if final:
                time.sleep(0.01)   # a program that read the old epoch has finished with it
                self.kcounts.drain()
        self._kcounts_drained = time.monotonic()

    def _load_config(self, target: Target) -> ConfigMap | None:
        """Upstream group and server block names, read-only from nginx's configuration file."""
        master = target.master or (target.pids[0] if target.pids else None)
        if master is None:
            return None
        cmap = config_for_master(master, target.binary)
        if cmap.note:
            log.warning("%s", cmap.note)
        self.emit_event(LifecycleEvent(
            ts=time.time(), kind="config", pid=master,
            detail=f"{cmap.path}: {len(cmap.groups)} upstream peers, {len(cmap.servers)} server blocks"
                   + (f" ({cmap.note})" if cmap.note else "")))
        return cmap

    def _start_wire(self, target: Target) -> None:
        """The socket filter on nginx's listening addresses; the capture goes on without it."""
        listen: list[str] = []
        for pid in [target.master] if target.master else target.pids[:1]:
            try:
                listen = resolve_target(pid, force=True).listen
            except Exception as exc:
                log.debug("listening addresses of %s: %s", pid, exc)
        if not listen:
            self.emit_event(LifecycleEvent(ts=time.time(), kind="wire", detail="socket filter off: "
                                           "no listening address found"))
            return
        wire = WireJoin(listen, error_logs=self.config.error_logs if self.config else (),
                        tls_visible=target.method != METHOD_SYSCALLS_ONLY,
                        netns_pid=target.master or (target.pids[0] if target.pids else None))
        try:
            line = wire.start()
        except WireError as exc:
            wire.stop()
            log.warning("%s", exc)
            self.emit_event(LifecycleEvent(ts=time.time(), kind="wire", detail=f"socket filter off: {exc}"))
            return
        self.wire = wire
        if self.assembler is not None:
            self.assembler.emitter.on_counted = wire.counted
        self.emit_event(LifecycleEvent(ts=time.time(), kind="wire", detail=line))

    def _flush_wire(self, now: float | None = None) -> None:
        """Records of the connections that ended without a request (decode thread: ids).
        Their grace runs on the decoder's time, not the wall clock's: a decoder behind by
        more than the grace has not yet seen the EV_COUNTED of a connection whose requests
        were all counted in the kernel, and would call it "closed before a request"."""
        assert self.wire is not None and self.assembler is not None
        self._wire_flushed = time.time()
        self.wire.pump(0.0)
        emitter = self.assembler.emitter
        if now is None:
            now = min(self._wire_flushed, self._decoded_until)
        for rec in self.wire.closed_records(emitter.next_id, now):
            emitter.next_id = rec.id + 1
            self._deliver(rec)

    def _take_batch(self) -> list[RawEvent]:
        """The events collected since the last call (the tracer keeps appending to
        `_batch` itself: it is emptied, never replaced)."""
        batch = self._batch[:]
        self._batch.clear()
        return batch

    # -- output ---------------------------------------------------------------------------
    def _deliver(self, ex: Exchange) -> None:
        if ex.conn_outcome is None:   # a connection that never became a request is no request
            self.exchanges += 1
        if self.wire is not None:
            self.wire.annotate(ex)
        cmap = self._config_of(ex.pid)
        if cmap is not None:
            if ex.server.startswith("unix:") and (ex.server == "unix:" or ex.server.endswith("\u2026")) \
                    and not ex.is_tcp:
                # a unix listener's path not read whole (cut short where /proc/net/unix could not
                # complete it, other sockets sharing the prefix; or not read at all): the
                # configuration's http listeners name it when one alone fits
                ex.server = cmap.unix_listener(ex.server.rstrip("\u2026")) or ex.server
            block = self._block_of(cmap, ex.server, ex.host or ex.sni or "")
            ex.server_block = block.label if block is not None else None
            if not ex.is_tcp:
                loc, ex.location_via = cmap.locate(block, ex.path,
                                                   [(a.addr, a.status) for a in ex.upstream] if ex.upstream else [],
                                                   ex.location, ex.location_via == "nginx")
                ex.location = loc.label if loc is not None else None
                ex.answer = self.cache.answer(ex, loc)
                last = ex.upstream[-1] if ex.upstream else None
                # only where the upstream side was followed: not for a summary-only exchange
                # nor a sampled-out one a keep rule held (their attempts were not seen)
                # nor where nginx's own list of attempts was read (it names the group itself)
                followed = (not ex.summary_only and ex.kept_by in (None, "sample", "all")
                            and ex.upstream_via != "nginx")
                nolive = None if not followed else cmap.nolive_group(loc, ex.status, len(ex.upstream),
                                           last is not None and last.response_head is None and not last.response_bytes,
                                           ex.method)
                if nolive is not None:
                    # nginx logs the group's name for the attempt it found no peer for
                    ex.upstream.append(UpstreamAttempt(nolive, status=502, duration_ms=0.0, start=ex.end))
                    ex.upstream_via = "wire"
            for att in ex.upstream:
                att.group = att.addr if att.addr in cmap.tries else cmap.group_of(att.addr, ex.path)
        for sink in self.sinks:
            sink.write_exchange(ex)

    def _block_of(self, cmap: ConfigMap, server: str, host: str) -> ServerBlock | None:
        """`cmap.block_of`, remembered per (configuration, listener, Host): a configuration
        is read once and never changes, and a capture sees few such pairs (every exchange
        asks)."""
        key = (id(cmap), server, host)
        blocks = self._blocks
        if key in blocks:
            return blocks[key]
        if len(blocks) >= 4096:
            blocks.clear()
        block = blocks[key] = cmap.block_of(server, host)
        return block

    def _config_of(self, pid: int) -> ConfigMap | None:
        """The configuration of the nginx a worker belongs to: following every process of a
        binary (--binary), each master its own, read once (as nginx reads it at start)."""
        target = self.target
        if target is None or not target.follow_all:
            return self.config
        if pid not in self._masters:
            if len(self._masters) >= 65536:
                self._masters.clear()
            self._masters[pid] = self.watch.master_of(pid)
        master = self._masters[pid]
        if master is None:
            return self.config
        cmap = self._configs.get(master)
        if cmap is None:
            if len(self._configs) >= 1024:
                self._configs.clear()
            self._blocks.clear()   # ids of configurations let go may come back
            cmap = self._configs[master] = config_for_master(master, target.binary)
        return cmap

    def emit_event(self, ev: LifecycleEvent) -> None:
        """Hand a lifecycle event to every sink (the decoder's, the watcher's, our own)."""
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
            "counted": self._counted(),
            "capture_cpu": round(self.governor.cpu, 3) if self.governor else None,
            "cpu_wait": round(self.governor.wait, 3) if self.governor else None,
            "yielding": self.governor.yielding if self.governor else False,
            "truncated": k.get("truncated", 0),
            "gaps": a.gaps if a else 0,
            "malformed": a.malformed if a else 0,
            "open_conns": a.open_conns if a else 0,
            "upstream_conns": self.assembler.upstreams.pool_stats() if self.assembler else {},
            "workers": self.alive_workers(),
            "method": self.target.method if self.target else "",
            **(self.wire.counters() if self.wire is not None else {}),
        }

    def _counted(self) -> dict[str, Any] | None:
        if self.kcounts is None:
            return None
        with self._kcounts_lock:
            return self.kcounts.snapshot()

    def write_stats(self) -> dict[str, Any]:
        stats = self.counters()
        for sink in self.sinks:
            sink.write_stats(stats)
        return stats

    def alive_workers(self) -> list[int]:
        if self.tracer is None:
            return []
        masters = self.watch.masters_ever
        return [p for p in self.tracer.target_pids() if alive(p) and p not in masters]

    def nginx_gone(self) -> bool:
        """The captured nginx has exited (master, or every process for --binary)."""
        if self.target is None:
            return False
        if self.target.follow_all:
            return False  # --binary waits for nginx to start again
        if self.target.master:  # or its successor after a binary upgrade
            return not any(alive(m) for m in self.watch.masters)
        return not any(alive(p) for p in self.target.pids)
