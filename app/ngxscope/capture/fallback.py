"""Fallback capture for nginx builds without ``ngx_*`` symbols: SSL uprobes + syscalls.

bpf/fallback.c follows the target processes' accepted sockets through syscall tracepoints
(plaintext) and OpenSSL's ``SSL_read``/``SSL_write`` (TLS plaintext): in the libssl the
process maps, or, with OpenSSL linked statically, in the nginx binary itself at the addresses
:func:`~.binary.inspect_binary` found (by symbol, or by :mod:`.sslfind`). Events have the same
shape as the nginx-uprobe capture's, without EV_REQ_DONE: client connections carry
EVF_NOMARK and the assembler frames responses from their HTTP/1 bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from .binary import (
    METHOD_BUILTIN_SSL,
    METHOD_LIBSSL_SYSCALLS,
    METHOD_SYSCALLS_ONLY,
    BinaryError,
    inspect_binary,
)
from .events import EV_OPEN, RawEvent
from .tracer import CaptureError, Tracer, TracerConfig, program_text

__all__ = [
    "FALLBACK_METHODS",
    "METHOD_BUILTIN_SSL",
    "METHOD_LIBSSL_SYSCALLS",
    "METHOD_SYSCALLS_ONLY",
    "SSL_PROBES",
    "FallbackTracer",
    "fallback_source",
    "find_libssl",
]

log = logging.getLogger(__name__)

FALLBACK_METHODS = (METHOD_LIBSSL_SYSCALLS, METHOD_BUILTIN_SSL, METHOD_SYSCALLS_ONLY)

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


def builtin_ssl(path: str) -> dict[str, tuple[int, int]]:
    """Built-in SSL function → (virtual address, file offset) in the binary at *path* when
    its capture method is :data:`METHOD_BUILTIN_SSL`, else {}."""
    try:
        info = inspect_binary(path)
    except BinaryError:
        return {}
    if info.method != METHOD_BUILTIN_SSL:
        return {}
    return {name: (addr, info.ssl_offsets[name]) for name, addr in info.ssl_functions.items()}


class FallbackTracer(Tracer):
    """The same interface as :class:`Tracer`, with bpf/fallback.c and SSL uprobes.

    `tls` asks for the libssl the targets map; a binary whose method is
    :data:`METHOD_BUILTIN_SSL` gets its own SSL functions probed whatever `tls` says (the
    recorder passes tls only for the libssl method)."""

    def __init__(self, config: TracerConfig, tls: bool = True) -> None:
        super().__init__(config)
        self.tls = tls
        self.libssl: str | None = None
        self.builtin: dict[str, tuple[int, int]] = {}
        """Built-in SSL function → (virtual address, file offset) in the nginx binary."""
        self._listen: dict[tuple[int, int], str] = {}

    def cflags(self) -> list[str]:
        return [f for f in super().cflags() if not f.startswith("-DOFF_") and "_OFF_" not in f]

    def start(self, sink: Callable[[RawEvent], None]) -> list[str]:
        if self.config.follow_all:
            raise CaptureError("--binary is not supported by the libssl/syscall fallback: use --pid")
        self._sink = self._wrap(sink)
        self.builtin = builtin_ssl(self.config.binary)
        if self.tls and not self.builtin:
            self.libssl = find_libssl(self.config.pids)
            if self.libssl is None:
                raise CaptureError("the target maps no libssl: cannot capture its TLS traffic")
        self._load(fallback_source(), SSL_PROBES)
        self._stat_self_binary()
        attached = ["syscalls"]
        try:
            if self.builtin:
                attached += self._attach_builtin(self.config.binary, self.builtin)
            elif self.libssl is not None:
                attached += self._attach_ssl(self.libssl)
        except CaptureError:
            self.stop()
            raise
        self._attached = attached
        self._open_reader()
        return list(attached)

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

    def _attach_builtin(self, path: str, addrs: dict[str, tuple[int, int]]) -> list[str]:
        """Uprobes on the SSL functions inside the nginx executable, by virtual address."""
        attached = []
        for sym, entry, ret, required in SSL_PROBES:
            if sym not in addrs:
                if required:
                    raise CaptureError(f"{sym} not located in {path}: cannot capture TLS")
                continue
            addr, offset = addrs[sym]
            self._check_bcc_offset(path, sym, addr, offset)
            try:
                self.bpf.attach_uprobe(name=path, addr=addr, fn_name=entry)
                if ret:
                    self.bpf.attach_uretprobe(name=path, addr=addr, fn_name=ret)
            except Exception as exc:
                if required:
                    raise CaptureError(f"cannot attach uprobe to {sym} at {addr:#x} in {path}: {exc}") from None
                log.info("optional probe %s not attached in %s: %s", sym, path, exc)
                continue
            attached.append(f"{sym}@{addr:#x}")
        return attached

    @staticmethod
    def _check_bcc_offset(path: str, sym: str, addr: int, offset: int) -> None:
        """bcc 0.26 takes `addr` as a virtual address and converts it to a file offset through
        the executable PT_LOAD segments (bcc_resolve_symname); the kernel wants the offset.
        Refuse to attach when its conversion differs from ours (another bcc would probe the
        wrong instruction: a crash in nginx, not just a missed event)."""
        from bcc import BPF

        try:
            _module, got = BPF._check_path_symbol(path, b"", addr, -1)
        except Exception as exc:  # bcc raises bare Exception
            raise CaptureError(f"bcc cannot resolve {sym} at {addr:#x} in {path}: {exc}") from None
        if got != offset:
            raise CaptureError(f"bcc maps {sym} at {addr:#x} to file offset {got:#x}, not "
                               f"{offset:#x}: not attaching")

    def _attach_file(self, fd_path: str, path: str) -> None:
        """A new nginx executable (binary upgrade): the syscall side already follows every
        target process; a libssl is the same file, already probed; built-in SSL functions
        are probed in the new file too."""
        if not self.builtin:
            return
        addrs = builtin_ssl(path)
        if addrs:
            self._attach_builtin(fd_path, addrs)
        else:
            log.warning("new binary %s: built-in SSL functions not located; its TLS "
                        "traffic is not captured", path)

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
