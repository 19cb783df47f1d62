"""Fallback capture for nginx builds without ``ngx_*`` symbols: libssl uprobes + syscalls.

bpf/fallback.c follows the target processes' accepted sockets through syscall tracepoints
(plaintext) and libssl's ``SSL_read``/``SSL_write`` (TLS plaintext). Events have the same
shape as the nginx-uprobe capture's, without EV_REQ_DONE: client connections carry
EVF_NOMARK and the assembler frames responses from their HTTP/1 bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from .binary import METHOD_LIBSSL_SYSCALLS, METHOD_SYSCALLS_ONLY
from .events import EV_OPEN, RawEvent
from .tracer import CaptureError, Tracer, TracerConfig, program_text

__all__ = [
    "FALLBACK_METHODS",
    "METHOD_LIBSSL_SYSCALLS",
    "METHOD_SYSCALLS_ONLY",
    "SSL_PROBES",
    "FallbackTracer",
    "fallback_source",
    "find_libssl",
]

log = logging.getLogger(__name__)

FALLBACK_METHODS = (METHOD_LIBSSL_SYSCALLS, METHOD_SYSCALLS_ONLY)

# (symbol, entry function, return function or None, required)
SSL_PROBES: list[tuple[str, str, str | None, bool]] = [
    ("SSL_set_fd", "ssl_set_fd_enter", None, False),
    ("SSL_read", "ssl_read_enter", "ssl_leave_any", True),
    ("SSL_write", "ssl_write_enter", "ssl_leave_any", True),
    ("SSL_read_ex", "ssl_read_ex_enter", "ssl_leave_any", False),
    ("SSL_write_ex", "ssl_write_ex_enter", "ssl_leave_any", False),
]


def fallback_source() -> str:
    return program_text("fallback.c")


def find_libssl(pids: list[int]) -> str | None:
    """Path of the libssl the first readable of *pids* maps (from /proc/PID/maps), or None."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as fh:
                for line in fh:
                    cols = line.split(None, 5)
                    if len(cols) == 6:
                        path = cols[5].strip()
                        base = os.path.basename(path)
                        if base.startswith("libssl.so") and os.path.exists(path):
                            return path
        except OSError:
            continue
    return None


def _listen_addr(pid: int, fd: int) -> str:
    """Local "ip:port" of a listening socket held by pid as fd ("" when unknown)."""
    from .procs import socket_addresses

    return socket_addresses(pid, fd)[0]


class FallbackTracer(Tracer):
    """The same interface as :class:`Tracer`, with bpf/fallback.c and libssl uprobes."""

    def __init__(self, config: TracerConfig, tls: bool = True) -> None:
        super().__init__(config)
        self.tls = tls
        self.libssl: str | None = None
        self._listen: dict[tuple[int, int], str] = {}

    def cflags(self) -> list[str]:
        return [f for f in super().cflags() if not f.startswith("-DOFF_") and "_OFF_" not in f]

    def start(self, sink: Callable[[RawEvent], None]) -> list[str]:
        if self.config.follow_all:
            raise CaptureError("--binary is not supported by the libssl/syscall fallback: use --pid")
        self._sink = self._wrap(sink)
        if self.tls:
            self.libssl = find_libssl(self.config.pids) or self._static_ssl()
            if self.libssl is None:
                raise CaptureError("the target maps no libssl: cannot capture its TLS traffic")
        self._load(fallback_source(), SSL_PROBES)
        self._stat_self_binary()
        attached = ["syscalls"]
        if self.libssl is not None:
            try:
                attached += self._attach_ssl(self.libssl)
            except CaptureError:
                self.stop()
                raise
        self._attached = attached
        self._open_reader()
        return list(attached)

    def _static_ssl(self) -> str | None:
        """A binary with OpenSSL built in: its own SSL_read/SSL_write."""
        from .binary import inspect_binary

        try:
            info = inspect_binary(self.config.binary)
        except Exception:
            return None
        return self.config.binary if info.tls == "static" else None

    def _attach_ssl(self, path: str) -> list[str]:
        attached = []
        for sym, entry, ret, required in SSL_PROBES:
            try:
                self.bpf.attach_uprobe(name=path, sym=sym, fn_name=entry)
                if ret:
                    self.bpf.attach_uretprobe(name=path, sym=sym, fn_name=ret)
                attached.append(sym)
            except Exception as exc:
                if required:
                    raise CaptureError(f"cannot attach uprobe to {sym} in {path}: {exc}") from None
                log.info("optional probe %s not attached in %s: %s", sym, path, exc)
        return attached

    def attach_binary(self, path: str) -> tuple[int, int] | None:
        """A new nginx executable (binary upgrade): the syscall side already follows every
        target process; its libssl is the same file, already probed."""
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino)
        if ident in self.inodes:
            return None
        self.inodes.add(ident)
        return ident

    def _wrap(self, sink: Callable[[RawEvent], None]) -> Callable[[RawEvent], None]:
        """Fill EV_OPEN's local address from the listening socket it was accepted on (aux)."""

        def fill(ev: RawEvent) -> None:
            if ev.kind == EV_OPEN and not ev.local:
                lfd = ev.aux if ev.aux < (1 << 31) else -1
                if lfd >= 0:
                    key = (ev.pid, lfd)
                    addr = self._listen.get(key)
                    if addr is None:
                        addr = self._listen[key] = _listen_addr(ev.pid, lfd)
                    ev.local = addr
                ev.aux = 0
            sink(ev)

        return fill
