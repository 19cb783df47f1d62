"""Reading a BPF ring buffer map straight from its memory mapping (what libbpf does in C),
without a ctypes callback per record: the records come out as bytes, for
`capture.events.parse_batch`.

`drain_py` is the pure-Python reference of the compiled `capture._fastevents.drain`, used
when the extension is not built or NGXSCOPE_PURE_PYTHON=1 (tests/capture/test_fastevents.py
wants both equal).
"""

from __future__ import annotations

import mmap
import struct
from types import ModuleType

from . import compiled

__all__ = ["RingReader", "drain_py"]

_fast: ModuleType | None = None
if compiled.wanted():
    try:
        from . import _fastevents as _fast
    except ImportError:  # not built: the reference does the work
        _fast = None

_BUSY = 1 << 31
_DISCARD = 1 << 30
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def drain_py(data: memoryview, cons: int, end: int, base: int, mask: int) -> tuple[list[bytes], int]:
    """The committed records of a ring buffer's data mapping `data` from consumer position
    `cons` up to `end` (or the first busy one), and the position after them: the pure-Python
    reference of the compiled `drain`. The data pages start at `base`; `mask` = size - 1."""
    u32 = _U32.unpack_from
    out: list[bytes] = []
    append = out.append
    while cons < end:
        off = base + (cons & mask)
        hdr = u32(data, off)[0]
        if hdr & _BUSY:
            break
        n = hdr & ~(_BUSY | _DISCARD)
        if not hdr & _DISCARD:
            append(data[off + 8 : off + 8 + n].tobytes())
        cons += (n + 8 + 7) & ~7
    return out, cons


class RingReader:
    """Read a BPF ring buffer map straight from its memory mapping (what libbpf does in C),
    without a ctypes callback per record.

    The consumer page is mapped read-write, the producer page and the data pages (mapped
    twice in a row by the kernel, so a record never wraps) read-only.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.size = size
        self._mask = size - 1
        self._page = page
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._view = memoryview(self._data)
        self.consumed = _U64.unpack_from(self._cons, 0)[0]
        """The consumer position: bytes of records read so far (padding included)."""
        self.caught_up = False
        """The last drain read every record reserved before it (none left, none still
        being written): whatever was produced before it started has been read."""

    def drain(self, limit: int = 1 << 30) -> list[bytes]:
        """Every committed record (up to `limit` bytes of them), oldest first, as bytes."""
        data = self._data
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(data, 0)[0]
        end = min(prod, cons + limit)
        if _fast is not None:
            out, cons = _fast.drain(data, cons, end, self._page, self._mask)
        else:
            out, cons = drain_py(self._view, cons, end, self._page, self._mask)
        if out or cons != self.consumed:
            _U64.pack_into(self._cons, 0, cons)
        self.consumed = cons
        self.caught_up = cons == prod
        return out

    def close(self) -> None:
        self._view.release()
        self._data.close()
        self._cons.close()
