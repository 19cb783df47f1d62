"""What to capture: the options of a capture run, the machine check before it (`preflight`),
and the nginx processes and binary it attaches to (`resolve` -> `Target`)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ..capture.binary import BinaryError, inspect_binary
from ..capture.budget import default_budget
from ..capture.kheaders import find_kernel_headers
from ..capture.procs import TargetError, find_instances, resolve_target
from ..capture.tracer import CaptureError

__all__ = ["CaptureError", "RecordOptions", "Target", "preflight", "resolve"]


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
    yield_cpu: bool = True
    """While nginx's workers wait for a CPU, keep to the governor's YIELD_BUDGET instead of
    `cpu_budget` (False: the budget holds whatever nginx waits)."""
    syscall_io: bool = True
    """Plaintext I/O at syscall tracepoints where possible (False: uprobes only)."""
    syscall_regs: bool = True
    """With syscall_io: recv/writev arguments from the exit's saved registers where the kernel
    can (False: from the entry tracepoints, as on kernels before 5.15)."""
    wire: bool = True
    """The socket filter on nginx's listening addresses (TCP and TLS handshakes joined to the
    exchanges); a capture goes on without it when it cannot attach."""
    kernel_counts: bool = True
    """While sampling, count sampled-out exchanges no rule keeps in the kernel (per-second
    aggregates) instead of sending each as a summary row (False: every exchange is a row)."""
    keep_slower_than_ms: float | None = None
    """Keep whole every sampled-out exchange slower than this ($request_time, ms); None: a
    moving p99 per server block."""


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
