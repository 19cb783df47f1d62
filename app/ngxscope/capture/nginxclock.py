"""Where nginx keeps its cached clock in a running process.

nginx reads the time once per event-loop turn (ngx_time_update, right after epoll_wait) and
every $msec and $request_time is taken from that cache, reached through the global pointer
``ngx_cached_time``. The probes read it in the process's memory (bpf/common.c), so events
carry nginx's own clock to the millisecond; the kernel time of the worker's last epoll_wait
return is only the fallback (it trails nginx's clock when the worker is preempted between
the two). This module finds the pointer's run-time address: its link-time address in the
binary plus the load bias of the process's mapping of that binary.
"""

from __future__ import annotations

import os

from elftools.elf.elffile import ELFFile

__all__ = ["CACHED_TIME_SYMBOL", "cached_time_address", "link_base", "load_bias"]

CACHED_TIME_SYMBOL = "ngx_cached_time"
"""``volatile ngx_time_t *ngx_cached_time`` (ngx_times.c); ngx_time_t starts with
``time_t sec; ngx_uint_t msec``."""

_link_base_cache: dict[tuple[int, int, int], int | None] = {}


def link_base(path: str) -> int | None:
    """Link-time address of the binary's first byte (the PT_LOAD segment at file offset 0),
    or None when it has none; position-dependent executables are not relocated (see
    :func:`load_bias`)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if key not in _link_base_cache:
        base: int | None = None
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            if elf["e_type"] == "ET_EXEC":
                base = -1
            else:
                for seg in elf.iter_segments():
                    if seg["p_type"] == "PT_LOAD" and seg["p_offset"] == 0:
                        base = int(seg["p_vaddr"])
                        break
        _link_base_cache[key] = base
    return _link_base_cache[key]


def load_bias(pid: int, path: str) -> int | None:
    """Run-time minus link-time addresses of *path* in process *pid* (0 for a
    position-dependent executable), or None when the process does not map it (gone, another
    binary, no permission)."""
    try:
        st = os.stat(path)
        base = link_base(path)
    except OSError:
        return None
    if base is None:
        return None
    if base == -1:
        return 0
    try:
        with open(f"/proc/{pid}/maps") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    for line in lines:
        cols = line.split(None, 5)
        if len(cols) < 5 or int(cols[2], 16) != 0:
            continue
        if int(cols[4]) != st.st_ino:
            continue
        major, minor = (int(x, 16) for x in cols[3].split(":"))
        if os.makedev(major, minor) != st.st_dev:
            continue
        return int(cols[0].split("-")[0], 16) - base
    return None


def cached_time_address(pid: int, path: str, symbol_addr: int | None) -> int | None:
    """Run-time address of ``ngx_cached_time`` in *pid*, given its link-time address."""
    if not symbol_addr:
        return None
    bias = load_bias(pid, path)
    return None if bias is None else symbol_addr + bias
