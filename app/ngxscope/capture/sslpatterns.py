"""Find OpenSSL's SSL_read/SSL_write inside an executable that has it linked statically and
exports no symbols, by masked byte patterns.

A static link copies each ``.o`` member of ``libssl.a`` verbatim into the executable; only the
bytes its relocations cover (and a few that the linker may relax) change. A pattern is a
function's bytes from the archive with those bytes masked (see :mod:`.sslpatterns_gen`, which
makes them). Masked patterns of different functions can be identical (SSL_read_ex,
SSL_peek_ex and SSL_write_ex differ only in the callee), so a pattern also lists its calls
into the same archive: a match is kept only when each such call lands on a function that
matches the callee's own pattern. A function counts as found only when exactly one place
matches; the reason for anything else is reported, never guessed.

Pattern sets ship in ``sslpatterns.json`` next to this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from elftools.elf.elffile import ELFFile

__all__ = [
    "REQUIRED",
    "TARGETS",
    "CodeImage",
    "Pattern",
    "PatternSet",
    "SslSearch",
    "builtin_sets",
    "find_ssl_functions",
    "load_sets",
    "set_from_json",
    "set_to_json",
]

TARGETS: tuple[str, ...] = ("SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_set_fd")
"""The functions a pattern set locates (the fallback probes them; SSL_set_fd tells the socket
of a TLS connection before its handshake)."""

REQUIRED: tuple[str, ...] = ("SSL_read", "SSL_write")
"""Without these, no TLS plaintext (nginx calls SSL_read / SSL_write, never the _ex forms)."""

_MASKED = "??"
_PF_X = 1


@dataclass(frozen=True, slots=True)
class Pattern:
    """One function's bytes with the relocated (and relaxable) bytes masked."""

    name: str
    """The function's symbol name in the archive, e.g. "SSL_read" or "ssl_read_internal"."""
    data: bytes
    """The function's bytes; masked positions hold 0."""
    mask: bytes
    """0xff where :attr:`data` must match, 0x00 where any byte is accepted."""
    calls: tuple[tuple[int, str], ...] = ()
    """(offset of a call's rel32 within the function, callee name) for calls into the archive."""

    def __post_init__(self) -> None:
        if len(self.data) != len(self.mask) or not self.data:
            raise ValueError(f"pattern {self.name}: data and mask must be non-empty, same length")

    @property
    def fixed(self) -> int:
        """How many bytes must match."""
        return sum(1 for m in self.mask if m)

    def hex(self) -> str:
        """The pattern as hex pairs with "??" for masked bytes (the JSON form)."""
        return "".join(f"{b:02x}" if m else _MASKED for b, m in zip(self.data, self.mask, strict=True))

    @classmethod
    def from_hex(cls, name: str, text: str, calls: Iterable[tuple[int, str]] = ()) -> Pattern:
        if len(text) % 2:
            raise ValueError(f"pattern {name}: odd number of hex digits")
        data, mask = bytearray(), bytearray()
        for i in range(0, len(text), 2):
            pair = text[i : i + 2]
            if pair == _MASKED:
                data.append(0)
                mask.append(0)
            else:
                data.append(int(pair, 16))
                mask.append(0xFF)
        return cls(name, bytes(data), bytes(mask), tuple((int(o), str(c)) for o, c in calls))

    def regex(self) -> re.Pattern[bytes]:
        return _compiled(self.data, self.mask)

    def anchor(self) -> tuple[int, bytes]:
        """(offset, bytes) of the longest unmasked run: what is searched for first."""
        best, start, run = (0, b""), 0, 0
        for i, m in enumerate(self.mask + b"\0"):
            if m:
                if run == 0:
                    start = i
                run += 1
            else:
                if run > len(best[1]):
                    best = (start, self.data[start : start + run])
                run = 0
        return best


@cache
def _compiled(data: bytes, mask: bytes) -> re.Pattern[bytes]:
    parts = [re.escape(bytes([b])) if m else b"." for b, m in zip(data, mask, strict=True)]
    return re.compile(b"".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class PatternSet:
    """Patterns of one libssl build: the :data:`TARGETS` and the callees they verify."""

    name: str
    """Shown to the user, e.g. "OpenSSL 3.0" ("found by OpenSSL 3.0 byte patterns")."""
    source: str
    """Where the bytes came from (archive, package version, sha256)."""
    patterns: dict[str, Pattern] = field(default_factory=dict)
    """Function name → pattern, targets and callees alike."""


@dataclass(slots=True)
class SslSearch:
    """What :func:`find_ssl_functions` found in one executable."""

    addresses: dict[str, int] = field(default_factory=dict)
    """Found target → virtual address (only functions matched at exactly one place)."""
    set_name: str = ""
    """The pattern set that found :data:`REQUIRED` ("" when none did)."""
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Set name → why it did not find the required functions (short phrases)."""

    @property
    def found(self) -> bool:
        return all(name in self.addresses for name in REQUIRED)

    @property
    def reason(self) -> str:
        """One line: what was found, or why nothing was."""
        if self.found:
            return f"SSL_read/SSL_write found by {self.set_name} byte patterns"
        if not self.problems:
            return "no byte pattern sets installed"
        if all(p and all(x.endswith(" not found") for x in p) for p in self.problems.values()):
            return f"no {' or '.join(self.problems)} byte pattern matches SSL_read/SSL_write"
        return "; ".join(f"{name} patterns: {', '.join(p)}" for name, p in self.problems.items())


@dataclass(slots=True)
class CodeImage:
    """The executable PT_LOAD segments of an ELF file: (virtual address, file offset, bytes)."""

    segments: list[tuple[int, int, bytes]] = field(default_factory=list)

    @classmethod
    def from_elf(cls, elf: ELFFile) -> CodeImage:
        segs = []
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & _PF_X and seg["p_filesz"]:
                segs.append((int(seg["p_vaddr"]), int(seg["p_offset"]), seg.data()))
        return cls(segs)

    def file_offset(self, vaddr: int) -> int | None:
        """The file offset of a virtual address inside an executable segment, or None."""
        for base, off, data in self.segments:
            if base <= vaddr < base + len(data):
                return off + vaddr - base
        return None

    def matches_at(self, pattern: Pattern, vaddr: int) -> bool:
        for base, _off, data in self.segments:
            if base <= vaddr < base + len(data):
                return pattern.regex().match(data, vaddr - base) is not None
        return False

    def find_all(self, pattern: Pattern, limit: int = 16) -> list[int]:
        """Virtual addresses where *pattern* matches (at most *limit*)."""
        at, anchor = pattern.anchor()
        rx = pattern.regex()
        hits: list[int] = []
        if not anchor:  # everything masked: refuse rather than match everywhere
            return hits
        for base, _off, data in self.segments:
            pos = data.find(anchor)
            while pos >= 0 and len(hits) < limit:
                start = pos - at
                if start >= 0 and rx.match(data, start):
                    hits.append(base + start)
                pos = data.find(anchor, pos + 1)
        return hits

    def rel32_target(self, vaddr: int) -> int | None:
        """Where the rel32 operand at *vaddr* (the last 4 bytes of a call/jmp) points."""
        for base, _off, data in self.segments:
            if base <= vaddr and vaddr + 4 <= base + len(data):
                i = vaddr - base
                return vaddr + 4 + int.from_bytes(data[i : i + 4], "little", signed=True)
        return None


def _verified(image: CodeImage, pset: PatternSet, pattern: Pattern, vaddr: int) -> bool:
    """Each call of *pattern* at *vaddr* into the archive lands on its callee's pattern."""
    for off, callee in pattern.calls:
        want = pset.patterns.get(callee)
        if want is None:
            continue
        target = image.rel32_target(vaddr + off)
        if target is None or not image.matches_at(want, target):
            return False
    return True


def _search_set(image: CodeImage, pset: PatternSet) -> tuple[dict[str, int], list[str]]:
    """(unique addresses, problems) of the targets of one set."""
    found: dict[str, int] = {}
    problems: list[str] = []
    for name in TARGETS:
        pattern = pset.patterns.get(name)
        if pattern is None:
            continue
        hits = [a for a in image.find_all(pattern) if _verified(image, pset, pattern, a)]
        if len(hits) == 1:
            found[name] = hits[0]
        elif hits and name in REQUIRED:
            where = ", ".join(f"{a:#x}" for a in hits[:4])
            problems.append(f"{name} matches {len(hits)} places ({where}): ambiguous, not probed")
        elif name in REQUIRED:
            problems.append(f"{name} not found")
    # two targets at one address would mean a pattern that is too loose
    if len(set(found.values())) != len(found):
        return {}, ["two functions matched the same address"]
    return found, problems


def find_ssl_functions(image: CodeImage, sets: Sequence[PatternSet] | None = None) -> SslSearch:
    """Locate :data:`TARGETS` in *image* with each pattern set in turn; the first set that finds
    every :data:`REQUIRED` function at exactly one place wins."""
    result = SslSearch()
    for pset in builtin_sets() if sets is None else sets:
        found, problems = _search_set(image, pset)
        if all(name in found for name in REQUIRED):
            return SslSearch(addresses=found, set_name=pset.name)
        result.problems[pset.name] = problems
    return result


def set_to_json(pset: PatternSet) -> dict[str, Any]:
    return {
        "name": pset.name,
        "source": pset.source,
        "functions": {
            name: {"bytes": p.hex(), "calls": [list(c) for c in p.calls]}
            for name, p in pset.patterns.items()
        },
    }


def set_from_json(obj: dict[str, Any]) -> PatternSet:
    """A set from its JSON form. Raises ValueError (or KeyError/TypeError) on bad input."""
    patterns = {
        name: Pattern.from_hex(name, fn["bytes"], [tuple(c) for c in fn.get("calls", [])])
        for name, fn in obj["functions"].items()
    }
    return PatternSet(str(obj["name"]), str(obj.get("source", "")), patterns)


def load_sets(text: str) -> list[PatternSet]:
    """Every set in a ``sslpatterns.json`` text (``{"sets": [...]}``)."""
    return [set_from_json(obj) for obj in json.loads(text)["sets"]]


@cache
def builtin_sets() -> tuple[PatternSet, ...]:
    """The pattern sets shipped with ngxscope, in the order they are tried."""
    text = resources.files("ngxscope.capture").joinpath("sslpatterns.json").read_text()
    return tuple(load_sets(text))
