"""Make byte patterns (:mod:`.sslpatterns`) from a static ``libssl.a``, and try them on binaries.

Add a pattern set from any x86-64 libssl.a (e.g. extracted from a distribution's libssl-dev
package with ``dpkg-deb -x``), then check it on a statically linked binary::

    python -m ngxscope.capture.sslpatterns_gen add /usr/lib/x86_64-linux-gnu/libssl.a \\
        --name "OpenSSL 3.0" --source "Debian 12 libssl-dev 3.0.x"
    python -m ngxscope.capture.sslpatterns_gen find /path/to/nginx

``add`` writes into the package's ``sslpatterns.json`` (or ``--output``), replacing a set of
the same name. For each of :data:`~.sslpatterns.TARGETS` the bytes of the function in the
archive become a pattern, with masked:

- the bytes every relocation patches (and, for GOT / TLS relocations, the instruction bytes
  the linker may rewrite when it relaxes them);
- the source line number passed to OpenSSL's error reporting (``ERR_set_debug`` in 3.x,
  ``ERR_put_error`` in 1.1.x): it moves between patch releases while the code does not.

Calls from a target into other functions of the archive (e.g. SSL_read → ssl_read_internal)
are recorded with the callee's own pattern, which the matcher uses to tell apart functions
whose masked bytes are identical.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Symbol, SymbolTableSection

from .sslpatterns import (
    TARGETS,
    CodeImage,
    Pattern,
    PatternSet,
    find_ssl_functions,
    load_sets,
    set_to_json,
)

__all__ = ["GenError", "archive_members", "main", "patterns_from_archive"]

# x86-64 relocation type → (bytes before r_offset, bytes patched, bytes after) to mask.
_SPAN: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),  # NONE
    1: (0, 8, 0), 2: (0, 4, 0), 3: (0, 4, 0), 4: (0, 4, 0),  # 64, PC32, GOT32, PLT32
    9: (3, 4, 0),  # GOTPCREL: mov → lea relaxation rewrites REX/opcode/ModRM
    10: (0, 4, 0), 11: (0, 4, 0), 12: (0, 2, 0), 13: (0, 2, 0), 14: (0, 1, 0), 15: (0, 1, 0),
    19: (4, 4, 8),  # TLSGD: the 16-byte __tls_get_addr sequence is rewritten as a whole
    20: (3, 4, 5),  # TLSLD: likewise, 12 bytes
    21: (0, 4, 0), 22: (3, 4, 0), 23: (0, 4, 0),  # DTPOFF32, GOTTPOFF (IE → LE), TPOFF32
    24: (0, 8, 0), 25: (0, 8, 0), 26: (0, 4, 0), 32: (0, 4, 0), 33: (0, 8, 0),
    34: (3, 4, 0), 35: (0, 2, 0),  # GOTPC32_TLSDESC, TLSDESC_CALL
    41: (2, 4, 0), 42: (3, 4, 0),  # GOTPCRELX, REX_GOTPCRELX: call/jmp/mov relaxations
}
_CALL_RELOCS = (2, 4)  # PC32, PLT32 on the rel32 of a call (e8) or jmp (e9)
# Error-reporting callee → opcode of the instruction loading the source line number (imm32).
_LINE_ARG: dict[str, bytes] = {"ERR_set_debug": b"\xbe", "ERR_put_error": b"\x41\xb8"}
_LINE_LOOKBACK = 32


class GenError(Exception):
    """The archive cannot be read or holds no usable functions; the message is one line."""


@dataclass(slots=True)
class _Member:
    name: str
    elf: ELFFile
    symtab: SymbolTableSection
    funcs: dict[str, Symbol] = field(default_factory=dict)


def archive_members(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of each member of a System V / GNU ``ar`` archive. Raises GenError."""
    if not data.startswith(b"!<arch>\n"):
        raise GenError("not an ar archive (no !<arch> header)")
    pos, longnames, out = 8, b"", []
    while pos + 60 <= len(data):
        head = data[pos : pos + 60]
        if head[58:60] != b"`\n":
            raise GenError(f"corrupt ar member header at byte {pos}")
        try:
            size = int(head[48:58].strip() or b"0")
        except ValueError:
            raise GenError(f"corrupt ar member size at byte {pos}") from None
        name = head[:16].rstrip().decode("latin-1")
        body = data[pos + 60 : pos + 60 + size]
        if len(body) != size:
            raise GenError("truncated ar archive")
        pos += 60 + size + (size & 1)
        if name == "//":
            longnames = body
        elif name in ("/", "/SYM64/"):
            continue
        elif name.startswith("/") and name[1:].isdigit():
            start = int(name[1:])
            end = longnames.find(b"/\n", start)
            out.append((longnames[start : end if end >= 0 else None].decode("latin-1"), body))
        else:
            out.append((name.rstrip("/"), body))
    return out


def _load_members(data: bytes) -> list[_Member]:
    members = []
    for name, body in archive_members(data):
        if not body.startswith(b"\x7fELF"):
            continue
        try:
            elf = ELFFile(io.BytesIO(body))
            if elf["e_machine"] != "EM_X86_64":
                raise GenError(f"{name}: {elf['e_machine']} object, only x86-64 is supported")
            symtab = elf.get_section_by_name(".symtab")
            if not isinstance(symtab, SymbolTableSection):
                continue
            m = _Member(name, elf, symtab)
            for sym in symtab.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] != "SHN_UNDEF" and sym["st_size"]:
                    m.funcs[sym.name] = sym
            members.append(m)
        except (ELFError, ValueError, KeyError, IndexError) as exc:
            raise GenError(f"cannot parse archive member {name}: {exc}") from None
    return members


def _relocations(m: _Member, shndx: int) -> RelocationSection | None:
    for sec in m.elf.iter_sections():
        if isinstance(sec, RelocationSection) and sec["sh_info"] == shndx:
            return sec
    return None


def _callee_name(m: _Member, sym: Symbol, addend: int) -> str:
    """The function a call relocation goes to (section-relative calls resolved in *m*)."""
    if sym["st_info"]["type"] != "STT_SECTION":
        return sym.name
    for name, f in m.funcs.items():
        if f["st_shndx"] == sym["st_shndx"] and f["st_value"] == addend + 4:
            return name
    return ""


def _function_pattern(m: _Member, name: str) -> Pattern:
    sym = m.funcs[name]
    start, size, shndx = int(sym["st_value"]), int(sym["st_size"]), sym["st_shndx"]
    code = m.elf.get_section(shndx).data()[start : start + size]
    mask = bytearray(b"\xff" * size)
    calls: list[tuple[int, str]] = []

    def hide(lo: int, hi: int) -> None:
        for i in range(max(lo, 0), min(hi, size)):
            mask[i] = 0

    relsec = _relocations(m, shndx)
    for rel in relsec.iter_relocations() if relsec is not None else ():
        off, rtype = int(rel["r_offset"]) - start, int(rel["r_info_type"])
        if off + 8 < 0 or off >= size:
            continue
        span = _SPAN.get(rtype)
        if span is None:
            raise GenError(f"{m.name}: {name} has an unsupported relocation type {rtype}")
        before, width, after = span
        hide(off - before, off + width + after)
        target = m.symtab.get_symbol(int(rel["r_info_sym"]))
        if rtype in _CALL_RELOCS and off >= 1 and code[off - 1] in (0xE8, 0xE9):
            callee = _callee_name(m, target, int(rel["r_addend"]))
            if callee:
                calls.append((off, callee))
            opcode = _LINE_ARG.get(callee)
            if opcode:
                window = code[max(0, off - 1 - _LINE_LOOKBACK) : off - 1]
                at = window.rfind(opcode)
                if at >= 0:
                    imm = max(0, off - 1 - _LINE_LOOKBACK) + at + len(opcode)
                    hide(imm, imm + 4)
    data = bytes(b if k else 0 for b, k in zip(code, mask, strict=True))
    return Pattern(name, data, bytes(mask), tuple(calls))


def patterns_from_archive(path: str | Path, name: str, source: str = "") -> PatternSet:
    """A pattern set for :data:`TARGETS` (and their callees in the archive) from *path*.

    Raises GenError with one line when the archive is unusable or lacks SSL_read/SSL_write.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise GenError(f"cannot read {path}: {exc.strerror or exc}") from None
    members = _load_members(raw)
    owner = {fn: m for m in members for fn in m.funcs if m.funcs[fn]["st_info"]["bind"] != "STB_LOCAL"}
    missing = [t for t in ("SSL_read", "SSL_write") if t not in owner]
    if missing:
        raise GenError(f"{path}: no {', '.join(missing)} in any member: not a libssl archive")
    patterns: dict[str, Pattern] = {}
    for target in TARGETS:
        m = owner.get(target)
        if m is None:
            continue
        pat = _function_pattern(m, target)
        kept = []
        for off, callee in pat.calls:
            home = m if callee in m.funcs else owner.get(callee)
            if home is None:
                continue  # outside the archive (libcrypto, libc): not verifiable here
            kept.append((off, callee))
            if callee not in patterns:
                sub = _function_pattern(home, callee)
                inside = tuple(c for c in sub.calls if c[1] in home.funcs or c[1] in owner)
                patterns[callee] = Pattern(sub.name, sub.data, sub.mask, inside)
        patterns[target] = Pattern(pat.name, pat.data, pat.mask, tuple(kept))
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return PatternSet(name, source or f"{Path(path).name} sha256:{digest}", patterns)


def _default_json() -> Path:
    return Path(__file__).with_name("sslpatterns.json")


def _cmd_add(args: argparse.Namespace) -> int:
    pset = patterns_from_archive(args.archive, args.name, args.source)
    out = Path(args.output) if args.output else _default_json()
    sets = []
    if out.exists():
        try:
            sets = [s for s in json.loads(out.read_text())["sets"] if s.get("name") != args.name]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise GenError(f"{out} is not a pattern file ({{\"sets\": [...]}})") from None
    sets.append(set_to_json(pset))
    out.write_text(json.dumps({"sets": sets}, indent=1) + "\n")
    for fn, p in pset.patterns.items():
        role = "target" if fn in TARGETS else "callee"
        calls = ", ".join(f"{c}@{o}" for o, c in p.calls) or "-"
        print(f"{role:6}  {fn:20} {len(p.data):4} bytes, {p.fixed:4} fixed; verifies calls: {calls}")
    print(f"wrote set {pset.name!r} to {out}")
    return 0


def _cmd_find(args: argparse.Namespace) -> int:
    try:
        with open(args.binary, "rb") as fh:
            image = CodeImage.from_elf(ELFFile(fh))
    except OSError as exc:
        raise GenError(f"cannot read {args.binary}: {exc.strerror or exc}") from None
    except (ELFError, ValueError, KeyError, IndexError) as exc:
        raise GenError(f"{args.binary}: not a usable ELF file: {exc}") from None
    sets = load_sets(Path(args.patterns).read_text()) if args.patterns else None
    found = find_ssl_functions(image, sets)
    for fn, addr in found.addresses.items():
        print(f"{fn:14} {addr:#x} (file offset {image.file_offset(addr):#x})")
    print(found.reason)
    return 0 if found.found else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ngxscope.capture.sslpatterns_gen",
                                     description="OpenSSL byte patterns for static builds")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add (or replace) a pattern set made from a libssl.a")
    add.add_argument("archive")
    add.add_argument("--name", required=True, help='e.g. "OpenSSL 3.0"')
    add.add_argument("--source", default="", help="where the archive came from")
    add.add_argument("--output", help="pattern file to update (default: the package's)")
    find = sub.add_parser("find", help="locate SSL_read/SSL_write in a binary with the patterns")
    find.add_argument("binary")
    find.add_argument("--patterns", help="pattern file (default: the package's)")
    args = parser.parse_args(argv)
    try:
        return int(_cmd_add(args) if args.cmd == "add" else _cmd_find(args))
    except GenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
