"""The kernel's counts of the exchanges it did not send (bpf/completion.c), drained once a second.

While the capture samples, an HTTP/1 exchange sampled out and kept by no rule never reaches
user space: the completion probe adds it to per-CPU hashes keyed by worker, server block
(nginx's r->srv_conf), $status and upstream peer (the ngx_str_t nginx names it by), with
log-linear histograms of $request_time and $upstream_response_time. The maps are
double-buffered by an epoch bit: :meth:`KernelCounts.drain` reads and deletes the epoch the
programs are not writing, then makes it the current one, so no increment is lost to a race.

The server block and peer are pointers into nginx's memory (the same in every worker: they
are made by the master before it forks): their names are read once from /proc/PID/mem.
What accumulates here is cumulative since the capture started (:meth:`snapshot`: the
`counted` object of the stats record, see store/kcounted.py for its readers).
"""

from __future__ import annotations

import ctypes
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from .events import HIST_REQUEST, HIST_UPSTREAM

__all__ = ["KernelCounts", "hist_bucket", "hist_bucket_high", "hist_bucket_low"]

log = logging.getLogger(__name__)

_SUB_BITS = 7
_SUB = 1 << _SUB_BITS
_SIZE = 4096


def hist_bucket(us: int) -> int:
    """The bucket of `us` microseconds: bpf/completion.c's hist_bucket, which is
    store.hdrhist.HdrHistogram.index on the same value."""
    if us < 2 * _SUB:
        return max(0, us)
    shift = us.bit_length() - _SUB_BITS - 1
    return min(_SIZE - 1, (shift + 1) * _SUB + (us >> shift) - _SUB)


def hist_bucket_low(i: int) -> int:
    """The first microsecond value in bucket `i`."""
    return hist_bucket_high(i - 1) if i > 0 else 0


def hist_bucket_high(i: int) -> int:
    """The first microsecond value past bucket `i`."""
    if i < 2 * _SUB:
        return i + 1
    shift = i // _SUB - 1
    return ((i % _SUB + _SUB) + 1) << shift


_STR = struct.Struct("<QQ")   # ngx_str_t: len, data
_CSCF_SERVER_NAME = 64        # ngx_http_core_srv_conf_t.server_name (1.22, x86-64)
_WINDOW = 10                  # seconds of request times behind each server block's moving p99
_MIN_FOR_P99 = 200            # requests in that window before a p99 is trusted


class KernelCounts:
    """Drains the kernel's aggregate maps and keeps their cumulative totals."""

    def __init__(self, bpf: Any, *, name_server: Callable[[str], str] | None = None,
                 keep_slower_than_ms: float | None = None) -> None:
        self.bpf = bpf
        self._name_server = name_server or (lambda name: name)
        self.requests = 0
        """Exchanges counted in the kernel since the start."""
        self.counts: dict[tuple[int, str, str, int], list[int]] = {}
        """(pid, server, peer, status) -> [n, request_length, bytes_sent, upstream_tries, upstream_failed]."""
        self.hists: dict[tuple[int, str, str, int, int], dict[int, int]] = {}
        """(pid, server, peer, status class, which) -> {bucket: count} (which: HIST_REQUEST/UPSTREAM)."""
        self._names: dict[tuple[int, int], str] = {}
        self._recent: dict[int, deque[dict[int, int]]] = {}
        self.slow_us: dict[str, int] = {}
        """The KEEP_SLOW threshold written for each server block (microseconds)."""
        self.fixed_slow_us = round(keep_slower_than_ms * 1000) if keep_slower_than_ms else 0
        ctl = bpf["slow_us"]
        if self.fixed_slow_us:
            ctl[ctypes.c_uint64(0)] = ctypes.c_uint64(self.fixed_slow_us)

    # -- draining ---------------------------------------------------------------------------
    def drain(self) -> int:
        """Take the epoch the programs are not writing into the totals, then switch them to
        it. Returns the exchanges taken. Call about once a second (and twice at the end)."""
        ctl = self.bpf["agg_ctl"]
        current = int(ctl[ctypes.c_int(0)].value) & 1
        idle = 1 - current
        taken = self._drain_counts(idle)
        per_srv = self._drain_hists(idle)
        ctl[ctypes.c_int(0)] = ctypes.c_uint32(idle)
        self.requests += taken
        self._update_slow(per_srv)
        return taken

    def _drain_counts(self, epoch: int) -> int:
        table = self.bpf["agg_counts"]
        taken = 0
        for key, per_cpu in list(table.items()):
            if key.epoch != epoch:
                continue
            vals = [sum(getattr(v, f) for v in per_cpu)
                    for f in ("n", "request_length", "bytes_sent", "upstream_tries", "upstream_failed")]
            self._delete(table, key)
            k = (int(key.pid), self._server(key.pid, key.srv), self._peer(key.pid, key.peer), int(key.status))
            row = self.counts.get(k)
            if row is None:
                self.counts[k] = vals
            else:
                for i, v in enumerate(vals):
                    row[i] += v
            taken += vals[0]
        return taken

    def _drain_hists(self, epoch: int) -> dict[int, dict[int, int]]:
        table = self.bpf["agg_hist"]
        per_srv: dict[int, dict[int, int]] = {}
        for key, per_cpu in list(table.items()):
            if key.epoch != epoch:
                continue
            n = int(sum(per_cpu))
            self._delete(table, key)
            if not n:
                continue
            k = (int(key.pid), self._server(key.pid, key.srv), self._peer(key.pid, key.peer), int(key.cls),
                 int(key.which))
            buckets = self.hists.setdefault(k, {})
            b = int(key.bucket)
            buckets[b] = buckets.get(b, 0) + n
            if key.which == HIST_REQUEST:
                srv = per_srv.setdefault(int(key.srv), {})
                srv[b] = srv.get(b, 0) + n
        return per_srv

    @staticmethod
    def _delete(table: Any, key: Any) -> None:
        try:
            del table[key]
        except KeyError:
            pass

    # -- the moving p99 per server block -------------------------------------------------
    def _update_slow(self, per_srv: dict[int, dict[int, int]]) -> None:
        """A sampled-out exchange slower than its server block's p99 over the last
        _WINDOW seconds is kept whole (KEEP_SLOW); --keep-slower-than fixes one threshold."""
        if self.fixed_slow_us:
            return
        ctl = self.bpf["slow_us"]
        for srv in set(per_srv) | set(self._recent):
            window = self._recent.setdefault(srv, deque(maxlen=_WINDOW))
            window.append(per_srv.get(srv, {}))
            merged: dict[int, int] = {}
            for second in window:
                for b, n in second.items():
                    merged[b] = merged.get(b, 0) + n
            total = sum(merged.values())
            if total < _MIN_FOR_P99:
                continue
            rank, seen, p99 = 0.99 * total, 0, 0
            for b in sorted(merged):
                seen += merged[b]
                if seen >= rank:
                    p99 = b
                    break
            limit = hist_bucket_high(p99) - 1   # slower than everything in the p99's bucket
            self.slow_us[self._server(0, srv)] = limit
            ctl[ctypes.c_uint64(srv)] = ctypes.c_uint64(limit)

    # -- names ------------------------------------------------------------------------------
    def _read(self, pid: int, addr: int, n: int) -> bytes:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as fh:
            fh.seek(addr)
            return fh.read(n)

    def _ngx_str(self, pid: int, addr: int) -> str:
        length, data = _STR.unpack(self._read(pid, addr, 16))
        if not data or not 0 < length <= 256:
            return ""
        return self._read(pid, data, length).decode("latin-1")

    def _server(self, pid: int, srv: int) -> str:
        """The server block's name (its first server_name, as the window labels blocks)."""
        name = self._names.get((0, srv))
        if name is not None or not pid:
            return name or f"server@{srv:#x}"
        try:
            cscf = struct.unpack("<Q", self._read(pid, srv, 8))[0]   # srv_conf[core module]
            raw = self._ngx_str(pid, cscf + _CSCF_SERVER_NAME)
        except (OSError, struct.error, ValueError, OverflowError) as exc:
            log.debug("server block name at %#x in %d: %s", srv, pid, exc)
            raw = ""
        name = self._name_server(raw) or f"server@{srv:#x}"
        self._names[(0, srv)] = name
        return name

    def _peer(self, pid: int, peer: int) -> str:
        if not peer:
            return ""
        name = self._names.get((1, peer))
        if name is None:
            try:
                name = self._ngx_str(pid, peer) or f"peer@{peer:#x}"
            except (OSError, struct.error, ValueError, OverflowError):
                name = f"peer@{peer:#x}"
            self._names[(1, peer)] = name
        return name

    # -- what the stats record carries -----------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The cumulative counts as the stats record's `counted` object (JSON-ready)."""
        return {
            "requests": self.requests,
            "rows": [{"pid": pid, "server": srv, "peer": peer or None, "status": status, "n": v[0],
                      "request_length": v[1], "bytes_sent": v[2], "upstream_tries": v[3], "upstream_failed": v[4]}
                     for (pid, srv, peer, status), v in self.counts.items()],
            "hist": [{"pid": pid, "server": srv, "peer": peer or None, "class": cls,
                      "which": "request" if which == HIST_REQUEST else "upstream" if which == HIST_UPSTREAM else str(which),
                      "buckets": {str(b): n for b, n in sorted(buckets.items())}}
                     for (pid, srv, peer, cls, which), buckets in self.hists.items()],
            "slow_ms": {srv: us / 1000 for srv, us in self.slow_us.items()} if not self.fixed_slow_us
            else {"*": self.fixed_slow_us / 1000},
        }
