"""Locate OpenSSL's SSL_read, SSL_write, SSL_read_ex, SSL_write_ex and SSL_set_fd inside an
executable that has OpenSSL linked statically and exports no symbols.

Bytes change with every compiler, flag and point release; what stays is the source. Every
error OpenSSL raises passes the source file's name: ``ERR_raise`` in 3.x expands to
``ERR_set_debug(OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC)``, i.e. ``__FILE__`` and
``__func__`` ("ssl/ssl_lib.c", "SSL_read"), and ``SSLerr`` in 1.1.x to
``ERR_put_error(ERR_LIB_SSL, SSL_F_SSL_READ, reason, OPENSSL_FILE, OPENSSL_LINE)`` with a
public function code (223). The code loads those strings with rip-relative ``lea``, so each
*error site* (a ``lea`` of the ssl_lib.c file name, with a ``lea`` of a function name or a
``mov $code, %esi`` next to it) lies inside the very function it names; function bounds come
from the unwind tables (:mod:`.elfcode`). Then:

- SSL_read, SSL_write, SSL_set_fd: the one function holding an error site named after it;
  SSL_read (SSL_write) must also reach ssl_read_internal (ssl_write_internal): hold its error
  sites (inlined) or call a function that does.
- SSL_read_ex (SSL_write_ex) raises nothing of its own: the one function of ssl_lib.c's code
  (among its functions, no error site of another source file between it and SSL_read: the
  BIO's ssl_read in bio_ssl.c calls ssl_read_internal too) that holds or calls
  ssl_read_internal's error sites and no other ssl_lib.c error site, once the functions that
  SSL_read or another such candidate call are left out (the out-of-line ssl_read_internal).

A function counts as found only when exactly one place qualifies; otherwise the reason says
why, and nothing is guessed.
"""

from __future__ import annotations

import argparse
import bisect
import re
import sys
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .elfcode import CodeImage, ElfCodeError

__all__ = ["REQUIRED", "TARGETS", "SslSearch", "find_ssl_functions", "main"]

TARGETS: tuple[str, ...] = ("SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_set_fd")
"""The functions located (the fallback probes them; SSL_set_fd tells the socket of a TLS
connection before its handshake)."""

REQUIRED: tuple[str, ...] = ("SSL_read", "SSL_write")
"""Without these, no TLS plaintext (nginx calls SSL_read / SSL_write, never the _ex forms)."""

SSL_LIB = "ssl/ssl_lib.c"
"""The source file of every target (how OPENSSL_FILE ends, whatever the build directory)."""

# OpenSSL 1.1.x function codes (include/openssl/sslerr.h: SSL_F_*), stable across releases.
_CODES_111: dict[int, str] = {
    223: "SSL_read", 208: "SSL_write", 192: "SSL_set_fd", 434: "SSL_read_ex",
    433: "SSL_write_ex", 523: "ssl_read_internal", 524: "ssl_write_internal",
    270: "SSL_peek", 432: "SSL_peek_ex", 522: "ssl_peek_internal",
}
# OpenSSL source file names as __FILE__ puts them ("../ssl/ssl_lib.c", "ssl/ssl_lib.c", ...).
_SOURCE_FILE = re.compile(rb"(?:ssl|crypto|providers|engines)/[A-Za-z0-9_/.-]{1,80}\.c\x00")
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{2,63}")
_MOV_ESI = re.compile(rb"\xbe(..)\x00\x00", re.DOTALL)  # mov $imm32, %esi (small imm)
_NEAR = 48  # bytes around a file-name lea where the same error site's other arguments are


@dataclass(slots=True)
class _Function:
    start: int
    end: int
    tags: set[str] = field(default_factory=set)
    """Names of the ssl_lib.c error sites inside ("SSL_read", "#412" for an unknown 1.1.x
    code, "?" when neither a name nor a code sits next to the file name)."""
    files: set[str] = field(default_factory=set)
    """Source files named by error sites inside."""


@dataclass(slots=True)
class SslSearch:
    """What :func:`find_ssl_functions` found in one executable."""

    addresses: dict[str, int] = field(default_factory=dict)
    """Found target → virtual address (only functions that qualified at exactly one place)."""
    family: str = ""
    """"OpenSSL 3" (function-name error sites) or "OpenSSL 1.1" (function codes); "" if none."""
    problems: list[str] = field(default_factory=list)
    """Why targets were not found (short phrases, one per target or cause)."""

    @property
    def found(self) -> bool:
        return all(name in self.addresses for name in REQUIRED)

    @property
    def reason(self) -> str:
        """One line: what was found, or why nothing was."""
        if self.found:
            return f"SSL_read/SSL_write found by their {self.family} error sites"
        return "SSL_read/SSL_write not located: " + "; ".join(self.problems or ["no reason"])


def _file_strings(image: CodeImage) -> tuple[list[int], list[tuple[int, str]]]:
    """Sorted string starts, and (last address a lea may point to, whole string) of each
    OpenSSL source file name: a lea may point into a longer string whose tail still names
    the file (the linker merges "ssl/ssl_lib.c" into "../ssl/ssl_lib.c")."""
    spans: list[tuple[int, int, str]] = []
    for base, _off, data, _x in image.segments:
        for m in _SOURCE_FILE.finditer(data):
            pos = m.start()
            start = data.rfind(b"\0", max(0, pos - 200), pos) + 1 or max(0, pos - 200)
            whole = data[start : m.end() - 1].decode("latin-1")
            spans.append((base + start, base + pos, whole))
    spans.sort()
    return [s for s, _e, _n in spans], [(e, n) for _s, e, n in spans]


def _site_tag(image: CodeImage, at: int, bounds: tuple[int, int],
              files: tuple[list[int], list[tuple[int, str]]]) -> tuple[str, str]:
    """(name, family) of the function an error site at *at* names: the nearest lea of an
    identifier string in the same function with no call in between (``__func__``, an argument
    of the same ERR_set_debug call: OpenSSL 3), else the nearest ``mov $code, %esi`` (1.1.x),
    else ("?", "")."""
    best: tuple[int, str] | None = None
    for pos, target in image.leas_near(at, _NEAR, _NEAR):
        if pos == at or not bounds[0] <= pos < bounds[1] or _file_at(target, files):
            continue
        text = image.cstring(target, 80)
        if not text or not _IDENT.fullmatch(text) or (best and abs(pos - at) >= best[0]):
            continue
        if image.calls_from(min(pos, at), max(pos, at)):
            continue  # an argument of another call (a neighbouring error site)
        best = (abs(pos - at), text.decode())
    if best:
        return best[1], "OpenSSL 3"
    lo = max(at - _NEAR, bounds[0])
    window = image.read(lo, min(at + _NEAR, bounds[1]) - lo)
    for m in sorted(_MOV_ESI.finditer(window), key=lambda m: abs(lo + m.start() - at)):
        code = int.from_bytes(m.group(1), "little")
        if 0 < code < 4096:
            return _CODES_111.get(code, f"#{code}"), "OpenSSL 1.1"
    return "?", ""


def _file_at(target: int, files: tuple[list[int], list[tuple[int, str]]]) -> str | None:
    starts, ends = files
    i = bisect.bisect_right(starts, target) - 1
    if i >= 0 and target <= ends[i][0]:
        return ends[i][1]
    return None


def _is_ssl_lib(name: str) -> bool:
    return name.endswith(SSL_LIB) and (len(name) == len(SSL_LIB) or name[-len(SSL_LIB) - 1] == "/")


def _error_sites(image: CodeImage) -> tuple[dict[int, _Function], str]:
    """Functions holding OpenSSL error sites (by start), and the family of ssl_lib.c's
    (the one most of its sites show)."""
    files = _file_strings(image)
    funcs: dict[int, _Function] = {}
    families: dict[str, int] = {}
    at_list, to_list = image.lea_targets()
    for at, target in zip(at_list, to_list, strict=True):
        name = _file_at(target, files)
        bounds = image.function_at(at) if name is not None else None
        if name is None or bounds is None:
            continue
        fn = funcs.setdefault(bounds[0], _Function(*bounds))
        if not _is_ssl_lib(name):
            fn.files.add(name)
            continue
        fn.files.add(SSL_LIB)
        tag, family = _site_tag(image, at, bounds, files)
        fn.tags.add(tag)
        families[family] = families.get(family, 0) + 1
    families.pop("", None)
    return funcs, max(families, key=lambda f: families[f]) if families else ""


@dataclass(slots=True)
class _Finder:
    image: CodeImage
    funcs: dict[int, _Function]
    result: SslSearch
    _calls: dict[int, set[int]] = field(default_factory=dict)

    def calls(self, start: int) -> set[int]:
        if start not in self._calls:
            fn = self.funcs.get(start)
            end = fn.end if fn else self.image.function_end(start)
            self._calls[start] = self.image.calls_from(start, end)
        return self._calls[start]

    def holders(self, tag: str) -> list[int]:
        return sorted(s for s, fn in self.funcs.items() if tag in fn.tags)

    def reaches(self, start: int, internal: str) -> bool:
        """*start* holds *internal*'s error sites (inlined) or calls a function that does."""
        fn = self.funcs.get(start)
        if fn and internal in fn.tags:
            return True
        return any(c in self.funcs and internal in self.funcs[c].tags for c in self.calls(start))

    def unique(self, name: str, places: list[int], why: str) -> int | None:
        if len(places) == 1:
            return places[0]
        if not places:
            self.result.problems.append(f"{name}: {why}")
        else:
            where = ", ".join(f"{a:#x}" for a in places[:4])
            self.result.problems.append(f"{name}: {len(places)} candidates ({where}), not probed")
        return None

    def named(self, name: str, internal: str | None) -> int | None:
        """The function holding *name*'s own error site (and reaching *internal*)."""
        found = self.unique(name, self.holders(name), "no error site names it")
        if found is not None and internal and not self.reaches(found, internal):
            self.result.problems.append(f"{name} at {found:#x}: no call into {internal}")
            return None
        return found

    def same_object(self, a: int, b: int) -> bool:
        """Function *a* lies among ssl_lib.c's functions (between the first and the last
        holding its error sites) and no error site of another source file lies between *a*
        and *b*: one object file, ssl_lib.o."""
        mine = [s for s, fn in self.funcs.items() if SSL_LIB in fn.files]
        if not mine or not min(mine) <= a <= max(mine):
            return False
        lo, hi = min(a, b), max(a, b)
        return all(fn.files <= {SSL_LIB} for s, fn in self.funcs.items() if lo <= s <= hi)

    def wrapper(self, name: str, internal: str, sibling: int) -> int | None:
        """The *_ex wrapper: holds or calls *internal* and raises nothing else of ssl_lib.c."""
        own = self.holders(name)  # an OpenSSL that raises in the wrapper itself
        if len(own) == 1 and self.reaches(own[0], internal):
            return own[0]
        inner = set(self.holders(internal))
        allowed = {internal, name}
        cands = {s for s in inner if self.funcs[s].tags <= allowed}
        cands |= {s for s in self._callers_of(inner) if self._own_tags(s) <= allowed}
        cands = {s for s in cands if self.same_object(s, sibling)}
        called = self.calls(sibling).union(*(self.calls(s) for s in cands)) if cands else set()
        return self.unique(name, sorted(cands - called),
                           f"no function of {SSL_LIB} calls or inlines {internal} alone")

    def _own_tags(self, start: int) -> set[str]:
        fn = self.funcs.get(start)
        return fn.tags if fn else set()

    def _callers_of(self, targets: set[int]) -> set[int]:
        """Functions near the ssl_lib.c error sites that call one of *targets*."""
        if not targets:
            return set()
        lo, hi = min(targets) - 0x10000, max(targets) + 0x10000
        starts = self.image.function_starts()
        i, out = bisect.bisect_left(starts, lo), set()
        while i < len(starts) and starts[i] < hi:
            if self.calls(starts[i]) & targets:
                out.add(starts[i])
            i += 1
        return out


def find_ssl_functions(image: CodeImage) -> SslSearch:
    """Locate :data:`TARGETS` in *image* (see the module docstring)."""
    result = SslSearch()
    try:
        _locate(image, result)
    except (ElfCodeError, ValueError, IndexError, KeyError) as exc:  # a damaged file
        result.addresses = {}
        result.problems.append(f"unreadable code or unwind tables ({exc})")
    return result


def _locate(image: CodeImage, result: SslSearch) -> None:
    funcs, result.family = _error_sites(image)
    if not any(fn.tags for fn in funcs.values()):
        result.problems.append(f"no error site of {SSL_LIB} (no OpenSSL built in, or built "
                               "without file names)")
        return
    finder = _Finder(image, funcs, result)
    found: dict[str, int | None] = {
        "SSL_read": finder.named("SSL_read", "ssl_read_internal"),
        "SSL_write": finder.named("SSL_write", "ssl_write_internal"),
        "SSL_set_fd": finder.named("SSL_set_fd", None),
    }
    for name, internal, sibling in (("SSL_read_ex", "ssl_read_internal", "SSL_read"),
                                    ("SSL_write_ex", "ssl_write_internal", "SSL_write")):
        anchor = found[sibling]
        found[name] = finder.wrapper(name, internal, anchor) if anchor is not None else None
    addresses = {name: a for name in TARGETS if (a := found.get(name)) is not None}
    if len(set(addresses.values())) != len(addresses):
        result.problems.append("two functions located at the same address")
        return
    result.addresses = addresses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ngxscope.capture.sslfind",
        description="locate OpenSSL's SSL_read/SSL_write... in a stripped static binary")
    parser.add_argument("binary")
    args = parser.parse_args(argv)
    try:
        with open(args.binary, "rb") as fh:
            image = CodeImage.from_elf(ELFFile(fh))
    except OSError as exc:
        print(f"error: cannot read {args.binary}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (ELFError, ValueError, KeyError, IndexError, EOFError) as exc:
        print(f"error: {args.binary}: not a usable ELF file: {exc}", file=sys.stderr)
        return 2
    found = find_ssl_functions(image)
    for fn, addr in found.addresses.items():
        print(f"{fn:14} {addr:#x} (file offset {image.file_offset(addr):#x})")
    print(found.reason)
    return 0 if found.found else 1


if __name__ == "__main__":
    sys.exit(main())
