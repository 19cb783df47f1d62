"""Load the BPF programs with bcc, attach them to an nginx binary, and read the ring buffer."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .events import COUNTER_NAMES, RB_CONSUMED, RawEvent, parse_batch
from .layout import Layout
from .nginxclock import cached_time_address
from .ring import RingReader

__all__ = ["PROBES", "CaptureError", "Tracer", "TracerConfig", "bpf_source", "verifier_reason"]

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
    ("ngx_ssl_write", "ssl_write_enter", None, False),   # entry only (bpf/capture.c)
    ("ngx_http_upstream_init", "upstream_init_enter", None, False),
    ("ngx_http_init_connection", "http_init_enter", None, False),
]

_RECV_SYMBOL = "ngx_unix_recv"
_WRITEV_SYMBOL = "ngx_writev"
_INIT_SYMBOL = "ngx_http_init_connection"

# The stream module (TCP proxy): exported functions, in ngx_stream_module.so (Debian's
# libnginx-mod-stream, loaded with load_module) or in the binary when built in. Optional.
STREAM_PROBES: list[tuple[str, str, str | None, bool]] = [
    ("ngx_stream_core_content_phase", "stream_content_enter", None, False),
    ("ngx_stream_finalize_session", "stream_finalize_enter", None, False),
]

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
    syscall_io: bool = True
    """See plaintext reads at the recv(2) tracepoints (no ngx_unix_recv uprobe) and
    ngx_writev's writes at writev(2)'s (no ngx_writev uprobe), when the kernel has the syscall
    tracepoints and the binary exports ngx_http_init_connection (see
    :meth:`Tracer.io_mode`)."""
    syscall_regs: bool = True
    """With syscall_io: read recv(2)/writev(2)'s arguments at their exit from the registers
    the syscall saved (no entry tracepoints) where the kernel can (x86-64, 5.15's
    bpf_task_pt_regs); False: the entry tracepoints keep them for the exit."""


_TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_SYSCALL_TRACEPOINTS = ("events/syscalls/sys_enter_recvfrom", "events/syscalls/sys_enter_writev",
                        "events/syscalls/sys_exit_writev")


def _has_task_pt_regs() -> bool:
    """bpf_task_pt_regs (Linux 5.15) and the x86-64 register layout bpf/syscalls.c reads."""
    if platform.machine() != "x86_64":
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 15)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def program_text(*names: str) -> str:
    """bpf/common.c + bpf/NAMES... + bpf/processes.c as one text: bcc rewrites map calls and
    finds tracepoints only in the program text, so shared C cannot live in a header."""
    files = resources.files("ngxscope.bpf")
    return "\n".join(files.joinpath(part).read_text() for part in ("common.c", *names, "processes.c"))


def bpf_source() -> str:
    """The C text of the capture program (also what `--dump-bpf` prints)."""
    return program_text("capture.c", "reqlog.c", "completion.c", "syscalls.c", "stream.c")


_LOG_NOISE = re.compile(
    r"^(processed \d+ insns|verification time|stack depth|HINT:|bpf: Failed to load|"
    r"Validating |Func#|\d+: \(|\d+: R\d|; |from \d+ to \d+|last_idx|regs=|parent |mark_precise)"
)


def verifier_reason(text: str) -> str:
    """The line of a verifier (or compiler) log that says why loading failed, or ''."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if ": error: " in line:  # clang: the first error says it
            return line.split(": error: ", 1)[1][:300]
    for line in reversed(lines):
        if not _LOG_NOISE.match(line):
            return line[:300]
    return ""


class _StderrCapture:
    """Redirect file descriptor 2 to a temporary file (bcc/libbpf print the verifier log there)."""

    def __init__(self) -> None:
        self.text = ""
        self._saved = -1
        self._tmp: Any = None

    def __enter__(self) -> _StderrCapture:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()


def _bpf_include_dir() -> str:
    path = resources.files("ngxscope.bpf").joinpath("events.h")
    return os.path.dirname(str(path))


class Tracer:
    """Owns the bcc BPF object: compile, attach, poll, detach."""

    def __init__(self, config: TracerConfig) -> None:
        self.config = config
        self.bpf: Any = None
        self._reader: RingReader | None = None
        self._attached: list[str] = []
        self._clock_offset = time.time() - time.monotonic()
        self._sink: Callable[[RawEvent], None] | None = None
        self.inodes: set[tuple[int, int]] = set()
        """(st_dev, st_ino) of every executable the probes are attached to."""
        self.verifier_log = ""
        """What the kernel verifier (or the compiler) printed when loading failed."""
        self.read_until = 0.0
        """Unix time before which every record the programs made has been handed to the
        sink: the start of the last poll that left the ring buffer empty."""
        self.syscall_io, self.io_reason = self.io_mode()
        self.syscall_regs = self.syscall_io and config.syscall_regs and _has_task_pt_regs()
        if self.syscall_regs:
            self.io_reason += "; their arguments read at the exit from the syscall's saved registers"

    @property
    def attached(self) -> list[str]:
        """The probed symbols; "ngx_stream" when the stream module's probes are attached."""
        return list(self._attached)

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
            f"-DSYSCALL_IO={1 if self.syscall_io else 0}",
            f"-DSYSCALL_REGS={1 if self.syscall_regs else 0}",
            f"-DWALL_NS_OFFSET={round(self._clock_offset * 1e9)}ULL",
            *cfg.layout.cflags(),
            *self._clock_link_flags(),
        ]

    def _clock_link_flags(self) -> list[str]:
        """Link-time addresses of ngx_cached_time and ngx_http_free_request: the completion
        probe finds nginx's clock with them in a process user space has not told it of yet
        (bpf/reqlog.c learn_clock_at)."""
        from .binary import BinaryError, inspect_binary

        try:
            info = inspect_binary(self.config.binary)
        except (BinaryError, OSError):
            return []
        free_request = info.symbols.get("ngx_http_free_request")
        if info.cached_time is None or free_request is None:
            return []
        return [f"-DCACHED_TIME_LINK={info.cached_time}ULL", f"-DFREE_REQUEST_LINK={free_request}ULL"]

    def io_mode(self) -> tuple[bool, str]:
        """(see plaintext I/O at syscall tracepoints, why): they need the tracepoints and
        ngx_http_init_connection (connections must be known before their first read)."""
        uprobes = "plaintext reads and writes via ngx_unix_recv/ngx_writev uprobes"
        if not self.config.syscall_io:
            return False, f"{uprobes} (asked for)"
        for tp in _SYSCALL_TRACEPOINTS:
            if not any(os.path.isdir(os.path.join(root, tp)) for root in _TRACEFS):
                return False, f"{uprobes}: no {tp.split('/', 1)[1].replace('/', ':')} tracepoint"
        try:
            from .binary import BinaryError, inspect_binary

            info = inspect_binary(self.config.binary)
        except BinaryError as exc:
            return False, f"{uprobes}: {exc}"
        if not info.probeable.get(_INIT_SYMBOL):
            return False, f"{uprobes}: no {_INIT_SYMBOL} in the binary"
        return True, ("plaintext reads and writes via the recv(2) and writev(2) tracepoints "
                      "(fewer uprobe traps per request)")

    def start(self, sink: Callable[[RawEvent], None]) -> list[str]:
        """Compile, load and attach; returns the attached symbol names. Raises CaptureError.

        A program the kernel refuses raises CaptureError naming the verifier's reason; the
        whole verifier log is logged at INFO (`ngxscope --verbose`) and kept in
        `verifier_log`.
        """
        self._sink = sink
        log.info("%s", self.io_reason)
        try:
            self._load(bpf_source(), PROBES + STREAM_PROBES)
        except CaptureError as exc:
            if not self.syscall_regs:
                raise
            # a kernel that refuses bpf_task_pt_regs in a tracepoint program: the entry
            # tracepoints keep the arguments instead (one more program run per call)
            log.warning("syscall arguments from the entry tracepoints: with registers at the "
                        "exit the program failed to load (%s)", exc)
            self.syscall_regs = False
            self._load(bpf_source(), PROBES + STREAM_PROBES)
        try:
            self._stat_self_binary()
            self._attached = self._attach_all(self.config.binary)
            self._attached += self._attach_stream()
        except CaptureError:
            self.stop()
            raise
        self._open_reader()
        return list(self._attached)

    def _load(self, text: str, probes: list[tuple[str, str, str | None, bool]]) -> None:
        """Compile `text` and load every probe program now, so a refusal names the verifier's
        reason (bcc prints the verifier log on stderr, not in its exception)."""
        try:
            from bcc import BPF
        except ImportError as exc:
            raise CaptureError(
                f"bcc is not importable ({exc}); run scripts/setup.sh (installs python3-bpfcc)"
            ) from None
        with _StderrCapture() as err:
            try:
                self.bpf = BPF(text=text, cflags=self.cflags())
                for _sym, entry, ret, _required in probes:
                    for fn in (entry, ret):
                        if fn:
                            self.bpf.load_func(fn, BPF.KPROBE)
            except Exception as exc:  # bcc raises bare Exception on compile/load failure
                failure: Exception | None = exc
            else:
                failure = None
        if failure is not None:
            if self.bpf is not None:
                self.stop()
            raise CaptureError(self._load_error(failure, err.text)) from None
        if err.text.strip():
            log.info("%s", err.text.rstrip())

    def _open_reader(self) -> None:
        """Read the ring buffer's memory directly (no ctypes callback per record; the programs
        never wake us, poll() drains on a timer), then let events through: only now, so no
        exchange is seen by half of the probes."""
        bpf = self.bpf
        self._reader = RingReader(bpf["events"].map_fd, bpf["events"].max_entries)
        self._rbstate = bpf["rbstate"]
        self.add_pids(self.config.pids)
        bpf["enabled"][ctypes.c_int(0)] = ctypes.c_uint32(1)

    def _load_error(self, exc: Exception, text: str) -> str:
        """One line for a failed compile/load: the verifier's (or compiler's) reason."""
        self.verifier_log = text
        if text.strip():
            log.info("BPF load failed; the kernel/compiler said:\n%s", text.rstrip())
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        reason = verifier_reason(text)
        if reason and "Failed to load BPF program" in first:
            return (f"BPF program refused by the kernel verifier: {reason} ({first}; "
                    "--verbose prints the verifier log)")
        if reason:
            return f"BPF program failed to load: {first}: {reason} (--verbose prints the log)"
        return f"BPF program failed to load: {first}"

    def _stat_self_binary(self) -> None:
        try:
            st = os.stat(self.config.binary)
        except OSError as exc:
            raise CaptureError(f"cannot read {self.config.binary}: {exc.strerror}") from None
        self.inodes.add((st.st_dev, st.st_ino))

    def _attach_all(self, path: str) -> list[str]:
        """Attach every probe to the executable at `path` (resolved to its inode now)."""
        bpf = self.bpf
        attached = []
        for sym, entry, ret, required in PROBES:
            if sym in (_RECV_SYMBOL, _WRITEV_SYMBOL) and self.syscall_io:
                continue   # seen at the syscall's tracepoints instead (bpf/syscalls.c)
            try:
                bpf.attach_uprobe(name=path, sym=sym, fn_name=entry)
                if ret:
                    bpf.attach_uretprobe(name=path, sym=sym, fn_name=ret)
                attached.append(sym)
            except Exception as exc:
                if required:
                    raise CaptureError(f"cannot attach uprobe to {sym} in {path}: {exc}") from None
                log.info("optional probe %s not attached in %s: %s", sym, path, exc)
        return attached

    def _attach_stream(self) -> list[str]:
        """The stream module's probes: in the binary when built in, else in every
        ngx_stream_module.so the targets have mapped (a module loaded by a later reload is
        not followed). Returns "ngx_stream" when attached (the capture then shows TCP sessions)."""
        from .modules import stream_module_paths

        paths = [self.config.binary, *stream_module_paths(self.config.pids)]
        done = False
        for path in paths:
            try:
                for sym, entry, _ret, _required in STREAM_PROBES:
                    self.bpf.attach_uprobe(name=path, sym=sym, fn_name=entry)
                done = True
            except Exception as exc:  # bcc: symbol not found in this file
                log.info("stream probes not attached in %s: %s", path, exc)
        return ["ngx_stream"] if done else []

    def attach_binary(self, path: str) -> tuple[int, int] | None:
        """Also attach the probes to another nginx executable (a binary upgrade's new inode).

        `path` may be a replaced file's path or /proc/PID/exe. The probes are the same
        programs with the same maps, so processes keep one connection table and one ring
        buffer. Returns the (dev, inode) attached, or None when it already was.
        Raises CaptureError.
        """
        if self.bpf is None:
            raise CaptureError("the capture is not running")
        # Hold the file open so the inode that is attached is the one that was checked.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if ident in self.inodes:
                return None
            self._attach_file(f"/proc/self/fd/{fd}", path)
            self.inodes.add(ident)
            return ident
        finally:
            os.close(fd)

    def _attach_file(self, fd_path: str, path: str) -> None:
        """Probe a new executable, held open as `fd_path` (`path` names it in messages)."""
        self._attach_all(fd_path)

    def _on_records(self, records: list[bytes]) -> None:
        sink = self._sink
        if sink is not None:
            for ev in parse_batch(records, self._clock_offset):
                sink(ev)

    def poll(self, timeout_ms: int = 100) -> None:
        """Drain the ring buffer; when it is empty, wait up to min(timeout_ms, 10) ms once."""
        reader = self._reader  # opened with the programs, closed by stop()
        if reader is None:
            return
        started = time.time()
        records = reader.drain(8 << 20)
        if not records and timeout_ms > 0:
            time.sleep(min(timeout_ms, 10) / 1000)
            started = time.time()
            records = reader.drain(8 << 20)
        if reader.caught_up:
            self.read_until = started
        # tell the programs how far we have read (they shed payload when far behind)
        self._rbstate[ctypes.c_int(RB_CONSUMED)] = ctypes.c_uint64(reader.consumed)
        if records:
            self._on_records(records)

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

    def set_sampling(self, one_in: int) -> bool:
        """Capture the payload of one exchange in *one_in* (1: all); the others are counted
        from the kernel's summaries. False when the program has no sampling control."""
        if self.bpf is None:
            return False
        try:
            table = self.bpf["sample_ctl"]
        except KeyError:
            return False
        table[ctypes.c_int(0)] = ctypes.c_uint32(max(1, one_in))
        return True

    def counts_in_kernel(self) -> bool:
        """Whether the loaded program counts sampled-out exchanges (bpf/completion.c): the
        fallback methods' programs do not."""
        if self.bpf is None:
            return False
        try:
            self.bpf["agg_ctl"]
        except KeyError:
            return False
        return True

    def set_kernel_counts(self, on: bool) -> None:
        """Keep rules on (counting sampled-out exchanges in the kernel) or, off, keep every
        rule: each sampled-out exchange is sent as its summary (agg_ctl[1])."""
        if self.bpf is None:
            return
        try:
            ctl = self.bpf["agg_ctl"]
        except KeyError:
            return
        ctl[ctypes.c_int(1)] = ctypes.c_uint32(0 if on else 0xFF)

    def add_pids(self, pids: Iterable[int]) -> None:
        if self.bpf is None:
            return
        targets = self.bpf["targets"]
        clock_at = self.bpf["loop_clock"]
        symbol = self._cached_time_symbol()
        for pid in pids:
            # every target has a loop_clock entry, first: bpf/processes.c tells targets by it
            addr = cached_time_address(pid, self.config.binary, symbol)
            if addr is not None or not self._has_key(clock_at, pid):   # not what the probes learned
                clock_at[ctypes.c_uint32(pid)] = clock_at.Leaf(0, 0, addr or 0)
            targets[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    @staticmethod
    def _has_key(table: Any, pid: int) -> bool:
        try:
            table[ctypes.c_uint32(pid)]
        except KeyError:
            return False
        return True

    def _cached_time_symbol(self) -> int | None:
        """Link-time address of nginx's ngx_cached_time in the target binary (None: unknown)."""
        from .binary import BinaryError, inspect_binary

        try:
            return inspect_binary(self.config.binary).cached_time
        except (BinaryError, OSError):
            return None

    def remove_pids(self, pids: Iterable[int]) -> None:
        if self.bpf is None:
            return
        targets = self.bpf["targets"]
        for pid in pids:
            for table in (targets, self.bpf["loop_clock"]):
                try:
                    del table[ctypes.c_uint32(pid)]
                except KeyError:
                    pass

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
        reader = self._reader
        if reader is not None:
            self._reader = None
            reader.close()
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            except Exception as exc:  # detaching must never mask the real exit reason
                log.warning("detaching probes: %s", exc)
            self.bpf = None
