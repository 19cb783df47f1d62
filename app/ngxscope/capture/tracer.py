"""Load the BPF programs with bcc, attach them to an nginx binary, and read the ring buffer."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .events import RawEvent, parse_event
from .layout import Layout

__all__ = ["PROBES", "CaptureError", "Tracer", "TracerConfig", "bpf_source"]

log = logging.getLogger(__name__)


class CaptureError(RuntimeError):
    """The capture cannot start or continue; the message is one line for the user."""


# (symbol, entry function, return function or None, required)
PROBES: list[tuple[str, str, str | None, bool]] = [
    ("ngx_unix_recv", "recv_enter", "recv_leave", True),
    ("ngx_writev", "writev_enter", "writev_leave", True),
    ("ngx_close_connection", "close_enter", None, True),
    ("ngx_http_free_request", "free_request_enter", None, True),
    ("ngx_unix_send", "send_enter", "send_leave", False),
    ("ngx_readv_chain", "readv_enter", "readv_leave", False),
    ("ngx_ssl_recv", "ssl_recv_enter", "ssl_recv_leave", False),
    ("ngx_ssl_write", "ssl_write_enter", "ssl_write_leave", False),
    ("ngx_http_upstream_init", "upstream_init_enter", None, False),
]

COUNTER_NAMES = ["events", "lost", "truncated", "args_full", "conns_full"]


@dataclass(slots=True)
class TracerConfig:
    """How to build and attach the probes."""

    binary: str
    """Path of the nginx executable to attach to (uprobes follow its inode)."""
    pids: list[int] = field(default_factory=list)
    """Processes to capture (a master's workers follow through fork); empty with follow_all."""
    follow_all: bool = False
    """Capture every process that runs `binary` (--binary)."""
    layout: Layout = field(default_factory=Layout)
    """Struct offsets for this nginx build."""
    payload_cap: int = 16384
    """Payload bytes kept per event (rounded up to a power of two)."""
    ringbuf_mb: int = 32
    """Ring buffer size."""


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def bpf_source() -> str:
    """The C text of the capture program (also what `--dump-bpf` prints)."""
    return resources.files("ngxscope.bpf").joinpath("capture.c").read_text()


def _bpf_include_dir() -> str:
    path = resources.files("ngxscope.bpf").joinpath("events.h")
    return os.path.dirname(str(path))


class Tracer:
    """Owns the bcc BPF object: compile, attach, poll, detach."""

    def __init__(self, config: TracerConfig) -> None:
        self.config = config
        self.bpf: Any = None
        self._attached: list[str] = []
        self._clock_offset = time.time() - time.monotonic()
        self._sink: Callable[[RawEvent], None] | None = None

    def cflags(self) -> list[str]:
        cfg = self.config
        cap = max(256, _pow2(cfg.payload_cap))
        pages = _pow2(max(1, cfg.ringbuf_mb) * 256)
        return [
            f"-I{_bpf_include_dir()}",
            f"-DPAYLOAD_CAP={cap}",
            f"-DRINGBUF_PAGES={pages}",
            f"-DFOLLOW_ALL={1 if cfg.follow_all else 0}",
            f"-DMAX_CPUS={os.cpu_count() or 1}",
            *cfg.layout.cflags(),
        ]

    def start(self, sink: Callable[[RawEvent], None]) -> list[str]:
        """Compile and attach; returns the attached symbol names. Raises CaptureError."""
        try:
            from bcc import BPF
        except ImportError as exc:
            raise CaptureError(
                f"bcc is not importable ({exc}); run scripts/setup.sh (installs python3-bpfcc)"
            ) from None
        self._sink = sink
        try:
            self.bpf = BPF(text=bpf_source(), cflags=self.cflags())
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise CaptureError(f"BPF program failed to load: {str(exc).strip().splitlines()[-1]}") from None
        bpf = self.bpf
        for sym, entry, ret, required in PROBES:
            try:
                bpf.attach_uprobe(name=self.config.binary, sym=sym, fn_name=entry)
                if ret:
                    bpf.attach_uretprobe(name=self.config.binary, sym=sym, fn_name=ret)
                self._attached.append(sym)
            except Exception as exc:
                if required:
                    self.stop()
                    raise CaptureError(f"cannot attach uprobe to {sym} in {self.config.binary}: {exc}") from None
                log.info("optional probe %s not attached: %s", sym, exc)
        bpf["events"].open_ring_buffer(self._on_event)
        # Only now let events through, so no exchange is seen by half of the probes.
        self.add_pids(self.config.pids)
        bpf["enabled"][ctypes.c_int(0)] = ctypes.c_uint32(1)
        return list(self._attached)

    def _on_event(self, _ctx: int, data: int, size: int) -> int:
        raw = ctypes.string_at(data, size)
        try:
            ev = parse_event(raw, self._clock_offset)
        except (ValueError, IndexError):
            return 0
        if self._sink is not None:
            self._sink(ev)
        return 0

    def poll(self, timeout_ms: int = 100) -> None:
        """Drain the ring buffer, waiting up to timeout_ms for the first record."""
        if self.bpf is not None:
            try:
                self.bpf.ring_buffer_poll(timeout_ms)
            except InterruptedError:
                pass
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    raise

    def counters(self) -> dict[str, int]:
        """Kernel-side counters summed over CPUs: events, lost, truncated, ..."""
        out = dict.fromkeys(COUNTER_NAMES, 0)
        if self.bpf is None:
            return out
        table = self.bpf["counters"]
        for idx, name in enumerate(COUNTER_NAMES):
            try:
                out[name] = int(sum(table[ctypes.c_int(idx)]))
            except KeyError:
                pass
        return out

    def add_pids(self, pids: Iterable[int]) -> None:
        if self.bpf is None:
            return
        targets = self.bpf["targets"]
        for pid in pids:
            targets[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def target_pids(self) -> list[int]:
        if self.bpf is None:
            return []
        return sorted(int(k.value) for k in self.bpf["targets"])

    def forget_pid(self, pid: int) -> None:
        """Drop a dead process's connection entries (the kernel side cannot iterate)."""
        if self.bpf is None:
            return
        conns = self.bpf["conns"]
        for key in list(conns):
            if key.pid == pid:
                try:
                    del conns[key]
                except KeyError:
                    pass

    def stop(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            except Exception as exc:  # detaching must never mask the real exit reason
                log.warning("detaching probes: %s", exc)
            self.bpf = None
