"""The machine code of an x86-64 ELF executable as :mod:`.sslfind` reads it: loaded bytes by
virtual address, function bounds from the unwind tables, rip-relative ``lea`` references and
direct calls.

Stripping removes ``.symtab`` but never ``.eh_frame``/``.eh_frame_hdr`` (C++ exceptions and
backtraces need them), and gcc emits one FDE per function (each hot/cold part of a split
function gets its own): the ``.eh_frame_hdr`` search table is a sorted list of function
starts, and each FDE gives its function's length.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile

__all__ = ["CodeImage", "ElfCodeError"]

_PF_X = 1
# lea disp32(%rip), %reg64: REX.W (+R) 8d, ModRM mod=00 rm=101
_LEA_RIP = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", re.DOTALL)
_DW_EH_PE_omit = 0xFF


class ElfCodeError(Exception):
    """The unwind tables or code cannot be read; the message is one line."""


@dataclass(slots=True)
class CodeImage:
    """The loaded (PT_LOAD) segments of an ELF file, and what is derived from them."""

    segments: list[tuple[int, int, bytes, bool]] = field(default_factory=list)
    """(virtual address, file offset, file bytes, executable) per PT_LOAD segment."""
    eh_frame_hdr: int | None = None
    """Virtual address of ``.eh_frame_hdr`` (the PT_GNU_EH_FRAME segment), if any."""
    _starts: list[int] | None = None
    _fdes: dict[int, int] = field(default_factory=dict)
    _ends: dict[int, int] = field(default_factory=dict)
    _cies: dict[int, int] = field(default_factory=dict)
    _leas: tuple[list[int], list[int]] | None = None

    @classmethod
    def from_elf(cls, elf: ELFFile) -> CodeImage:
        segs, hdr = [], None
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                segs.append((int(seg["p_vaddr"]), int(seg["p_offset"]), seg.data(),
                             bool(seg["p_flags"] & _PF_X)))
            elif seg["p_type"] == "PT_GNU_EH_FRAME":
                hdr = int(seg["p_vaddr"])
        return cls(segs, hdr)

    # -- bytes by virtual address -------------------------------------------------------

    def read(self, vaddr: int, size: int) -> bytes:
        """*size* bytes at *vaddr* (fewer at the end of a segment, b"" outside any)."""
        for base, _off, data, _x in self.segments:
            if base <= vaddr < base + len(data):
                return data[vaddr - base : vaddr - base + size]
        return b""

    def cstring(self, vaddr: int, limit: int = 256) -> bytes | None:
        """The NUL-terminated string at *vaddr* (without the NUL), None if unterminated."""
        raw = self.read(vaddr, limit)
        end = raw.find(b"\0")
        return raw[:end] if end >= 0 else None

    def file_offset(self, vaddr: int) -> int | None:
        """The file offset of a virtual address inside an executable segment, or None."""
        for base, off, data, x in self.segments:
            if x and base <= vaddr < base + len(data):
                return off + vaddr - base
        return None

    def is_code(self, vaddr: int) -> bool:
        return self.file_offset(vaddr) is not None

    def find_all(self, needle: bytes, executable: bool = False) -> list[int]:
        """Virtual addresses of every occurrence of *needle* in the (executable) segments."""
        hits = []
        for base, _off, data, x in self.segments:
            if executable and not x:
                continue
            pos = data.find(needle)
            while pos >= 0:
                hits.append(base + pos)
                pos = data.find(needle, pos + 1)
        return hits

    # -- functions from the unwind tables ----------------------------------------------

    def function_starts(self) -> list[int]:
        """Sorted start addresses of every function with an FDE (from .eh_frame_hdr)."""
        if self._starts is None:
            self._starts = self._read_hdr_table()
        return self._starts

    def function_at(self, vaddr: int) -> tuple[int, int] | None:
        """(start, end) of the function whose FDE covers *vaddr*, or None."""
        starts = self.function_starts()
        i = bisect.bisect_right(starts, vaddr) - 1
        while i >= 0:  # FDEs do not overlap in gcc output; look one back for safety
            start = starts[i]
            end = self.function_end(start)
            if start <= vaddr < end:
                return start, end
            if start + 0x10000 < vaddr:
                break
            i -= 1
        return None

    def function_end(self, start: int) -> int:
        """End address (exclusive) of the function starting at *start* (its FDE's range)."""
        end = self._ends.get(start)
        if end is None:
            end = self._ends[start] = start + self._fde_range(self._fdes[start])
        return end

    def _read_hdr_table(self) -> list[int]:
        if self.eh_frame_hdr is None:
            raise ElfCodeError("no PT_GNU_EH_FRAME segment: function bounds unknown")
        hdr = self.eh_frame_hdr
        head = self.read(hdr, 4)
        if len(head) < 4 or head[0] != 1:
            raise ElfCodeError("unsupported .eh_frame_hdr")
        pos = hdr + 4
        _frame, pos = self._pointer(pos, head[1], hdr)
        count, pos = self._pointer(pos, head[2], hdr)
        if head[2] == _DW_EH_PE_omit or head[3] != 0x3B:  # datarel | sdata4: what ld writes
            raise ElfCodeError(f".eh_frame_hdr without a search table (encoding {head[3]:#x})")
        table = self.read(pos, 8 * count)
        if len(table) != 8 * count:
            raise ElfCodeError("truncated .eh_frame_hdr search table")
        view = memoryview(table).cast("i")
        starts = [hdr + view[2 * i] for i in range(count)]
        self._fdes = {s: hdr + view[2 * i + 1] for i, s in enumerate(starts)}
        return sorted(self._fdes)

    def _fde_range(self, fde: int) -> int:
        """The pc_range of the FDE at *fde*."""
        length = int.from_bytes(self.read(fde, 4), "little")
        at = fde + 4
        if length == 0xFFFFFFFF:
            at += 8
        cie = at - int.from_bytes(self.read(at, 4), "little")
        enc = self._cies.get(cie)
        if enc is None:
            enc = self._cies[cie] = self._cie_encoding(cie)
        _begin, at = self._pointer(at + 4, enc, 0)
        value, _at = self._pointer(at, enc & 0x0F, 0)
        return value

    def _cie_encoding(self, cie: int) -> int:
        """The FDE pointer encoding ('R' augmentation) of the CIE at *cie*."""
        raw = self.read(cie, 512)
        ext = raw[:4] == b"\xff\xff\xff\xff"
        at = 4 + 8 + 8 if ext else 4 + 4  # length, CIE id
        version = raw[at]
        aug_end = raw.index(b"\0", at + 1)
        aug = raw[at + 1 : aug_end].decode("latin-1")
        at = aug_end + 1
        _v, at = _uleb(raw, at)  # code alignment
        _v, at = _uleb(raw, at)  # data alignment (sleb: only skipped)
        if version == 1:
            at += 1  # return address register: a byte in version 1, else uleb
        else:
            _v, at = _uleb(raw, at)
        if not aug.startswith("z"):
            return 0x00  # absolute pointers
        _v, at = _uleb(raw, at)
        for ch in aug[1:]:
            if ch == "R":
                return raw[at]
            if ch == "L":
                at += 1
            elif ch == "P":
                _p, at2 = self._pointer(cie + at + 1, raw[at], 0)
                at = at2 - cie
            elif ch not in "SB":
                break
        return 0x00

    def _pointer(self, vaddr: int, enc: int, datarel: int) -> tuple[int, int]:
        """(value, address after it) of a DW_EH_PE-encoded pointer at *vaddr*."""
        if enc == _DW_EH_PE_omit:
            return 0, vaddr
        fmt = enc & 0x0F
        if fmt in (0x01, 0x09):
            raw = self.read(vaddr, 10)
            value, n = _uleb(raw, 0)
            if fmt == 0x09 and raw[n - 1] & 0x40:
                value -= 1 << (7 * n)
            size = n
        else:
            size = {0x00: 8, 0x02: 2, 0x03: 4, 0x04: 8, 0x0A: 2, 0x0B: 4, 0x0C: 8}.get(fmt, 0)
            if not size:
                raise ElfCodeError(f"unsupported pointer encoding {enc:#x} in .eh_frame")
            value = int.from_bytes(self.read(vaddr, size), "little", signed=fmt >= 0x09)
        app = enc & 0x70
        if app == 0x10:
            value += vaddr
        elif app == 0x30:
            value += datarel
        return value, vaddr + size

    # -- references in the code -------------------------------------------------------

    def lea_targets(self) -> tuple[list[int], list[int]]:
        """(instruction addresses, target addresses) of every byte sequence in the
        executable segments that decodes as ``lea disp32(%rip), %r64``, sorted by address.
        A sequence inside another instruction is a false hit; callers check the target."""
        if self._leas is None:
            at: list[int] = []
            to: list[int] = []
            for base, _off, data, x in self.segments:
                if not x:
                    continue
                for m in _LEA_RIP.finditer(data):
                    pos = m.start()
                    disp = int.from_bytes(data[pos + 3 : pos + 7], "little", signed=True)
                    at.append(base + pos)
                    to.append(base + pos + 7 + disp)
            self._leas = (at, to)
        return self._leas

    def leas_near(self, vaddr: int, before: int, after: int) -> list[tuple[int, int]]:
        """(address, target) of the leas that start within [vaddr-before, vaddr+after]."""
        at, to = self.lea_targets()
        lo = bisect.bisect_left(at, vaddr - before)
        hi = bisect.bisect_right(at, vaddr + after)
        return list(zip(at[lo:hi], to[lo:hi], strict=True))

    def calls_from(self, start: int, end: int) -> set[int]:
        """Function starts that a ``call rel32`` or ``jmp rel32`` (tail call) in [start, end)
        lands on exactly. Only real function starts count, so a stray e8/e9 byte inside
        another instruction almost never adds a wrong callee."""
        code = self.read(start, end - start)
        starts = self.function_starts()
        out: set[int] = set()
        for op in (0xE8, 0xE9):
            pos = code.find(op)
            while 0 <= pos <= len(code) - 5:
                target = start + pos + 5 + int.from_bytes(code[pos + 1 : pos + 5], "little", signed=True)
                i = bisect.bisect_left(starts, target)
                if i < len(starts) and starts[i] == target and target != start:
                    out.add(target)
                pos = code.find(op, pos + 1)
        return out


def _uleb(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = raw[at]
        at += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, at
