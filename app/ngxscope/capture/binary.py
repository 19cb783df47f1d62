"""What an nginx executable offers for capture, read statically from its ELF file.

:func:`inspect_binary` opens the file with pyelftools (it never executes it) and reports the
nginx flavor and version, how TLS is linked, which of the ``ngx_*`` functions that ngxscope
probes are present, and whether nginx-uprobe capture is possible at all.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .elfcode import CodeImage
from .sslfind import TARGETS as SSL_TARGETS
from .sslfind import find_ssl_functions

__all__ = [
    "CAPTURE_SYMBOLS",
    "METHOD_BUILTIN_SSL",
    "METHOD_LIBSSL_SYSCALLS",
    "METHOD_NGINX_UPROBES",
    "METHOD_SYSCALLS_ONLY",
    "OPTIONAL_SYMBOLS",
    "REQUIRED_SYMBOLS",
    "TLS_SYMBOLS",
    "BinaryError",
    "BinaryInfo",
    "clear_cache",
    "inspect_binary",
]

REQUIRED_SYMBOLS: tuple[str, ...] = (
    "ngx_unix_recv",
    "ngx_writev",
    "ngx_close_connection",
    "ngx_http_free_request",
)
"""Functions every capture needs: plaintext reads/writes and connection/request teardown."""

TLS_SYMBOLS: tuple[str, ...] = ("ngx_ssl_recv", "ngx_ssl_write")
"""Functions needed (in addition to :data:`REQUIRED_SYMBOLS`) when the binary has TLS."""

OPTIONAL_SYMBOLS: tuple[str, ...] = (
    "ngx_unix_send",
    "ngx_readv_chain",
    "ngx_ssl_send_chain",
    "ngx_linux_sendfile_chain",
    "ngx_http_upstream_init",
    "ngx_event_connect_peer",
    "ngx_http_init_connection",
)
"""Functions that improve capture (chains, sendfile, upstream attempts) when present."""

CAPTURE_SYMBOLS: tuple[str, ...] = REQUIRED_SYMBOLS + TLS_SYMBOLS + OPTIONAL_SYMBOLS
"""Every symbol :func:`inspect_binary` looks up, in a stable order."""

METHOD_NGINX_UPROBES = "nginx uprobes"
"""The capture method name used when the binary has everything ngxscope needs."""

METHOD_LIBSSL_SYSCALLS = "libssl uprobes + syscalls"
"""Fallback without ngx_* symbols: SSL_read/SSL_write uprobes in the mapped libssl, syscalls."""

METHOD_BUILTIN_SSL = "built-in SSL uprobes + syscalls"
"""Fallback without ngx_* symbols, OpenSSL linked in: uprobes on the binary's own SSL_read/
SSL_write (found by symbol, or by their OpenSSL error sites when stripped), syscalls."""

METHOD_SYSCALLS_ONLY = "syscalls only (plaintext)"
"""Fallback without ngx_* symbols for a build without TLS, or whose built-in SSL_read/SSL_write
cannot be located: TLS connections are not seen."""

_NO_NGX_REASON = (
    "no ngx_* symbols and no nginx version string: not recognised as nginx, "
    "so no capture method applies"
)

# Most specific first: "freenginx/" contains "nginx/", and Angie/OpenResty/Tengine binaries
# also carry the core "nginx/x.y.z" string.
_FLAVOR_PATTERNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("freenginx", re.compile(rb"freenginx/(\d+\.\d+\.\d+)")),
    ("angie", re.compile(rb"Angie/(\d+\.\d+\.\d+)")),
    ("openresty", re.compile(rb"openresty/(\d+(?:\.\d+){1,3})")),
    ("tengine", re.compile(rb"Tengine/(\d+\.\d+\.\d+)")),
)
_NGINX_VERSION = re.compile(rb"(?<![A-Za-z0-9_-])nginx/(\d+\.\d+\.\d+)")
_TLS_NEEDED = re.compile(r"^lib(ssl|boringssl|wolfssl)[.-]")
_STATIC_TLS_NAMES: tuple[re.Pattern[bytes], ...] = (
    re.compile(rb"(OpenSSL \d+\.\d+\.\d+[a-z]*)"),
    re.compile(rb"(LibreSSL \d+\.\d+\.\d+)"),
    re.compile(rb"(BoringSSL)"),
    re.compile(rb"(AWS-LC)"),
)
# Strings that only a statically linked OpenSSL-family library puts in .rodata.
_STATIC_TLS_MARKERS: tuple[bytes, ...] = (b"ssl/ssl_lib.c", b"ssl_lib.c", b"ssl3_read_bytes")
_TLS_FUNCS = ("SSL_read", "SSL_read_ex", "SSL_write")
_SSL_PROBED = SSL_TARGETS  # the built-in OpenSSL functions the fallback probes


class BinaryError(Exception):
    """The file cannot be inspected (missing, unreadable, not an ELF executable)."""


@dataclass(slots=True)
class BinaryInfo:
    """What one nginx-family executable offers for capture (see :func:`inspect_binary`)."""

    path: str
    """The path that was inspected (may be ``/proc/PID/exe`` for a deleted binary)."""
    inode: int
    """Inode of the file; a binary upgrade (``nginx -s USR2``) shows up as a new inode."""
    dev: int
    """Device number of the filesystem holding the file (pairs with :attr:`inode`)."""
    flavor: str
    """"nginx", "openresty", "angie", "tengine" or "freenginx"; "" when unrecognised."""
    version: str
    """Version of the flavor, e.g. "1.22.1" (or "1.21.4.1" for OpenResty); "" if unknown."""
    nginx_version: str
    """Version of the nginx core inside, e.g. "1.21.4" in OpenResty 1.21.4.1; "" if unknown."""
    tls: str
    """How TLS is linked: "dynamic" (libssl in DT_NEEDED), "static" (built in) or "none"."""
    tls_library: str
    """E.g. "libssl.so.3", "OpenSSL 3.0.13 (built in)", or "" without TLS."""
    symbols: dict[str, int] = field(default_factory=dict)
    """Capture symbol name → virtual address, for those of :data:`CAPTURE_SYMBOLS` present."""
    probeable: dict[str, bool] = field(default_factory=dict)
    """Capture symbol name → True when it is an STT_FUNC with nonzero size (a safe uprobe)."""
    ngx_symbol_count: int = 0
    """How many distinct defined ``ngx_*`` symbols .dynsym and .symtab hold together."""
    stripped: bool = True
    """True when the file has no .symtab (only exported .dynsym symbols are visible)."""
    method: str | None = None
    """:data:`METHOD_NGINX_UPROBES` when capture is possible, else None."""
    method_reason: str = ""
    """Why :attr:`method` is what it is, one line, suitable for showing to the user."""
    ssl_functions: dict[str, int] = field(default_factory=dict)
    """Built-in (static) OpenSSL function → virtual address, for the fallback's uprobes;
    filled only when there are no ngx_* symbols and TLS is static."""
    ssl_offsets: dict[str, int] = field(default_factory=dict)
    """The same functions' file offsets (what a uprobe is really attached to)."""
    cached_time: int | None = None
    """Link-time address of ``ngx_cached_time`` (nginx's cached clock), None when not exported."""
    ssl_found_by: str = ""
    """How :attr:`ssl_functions` were found ("SSL_read/SSL_write found in .dynsym", "... found
    by their OpenSSL 3 error sites"), or why they were not."""

    @property
    def has_tls(self) -> bool:
        """True when the binary can terminate TLS (statically or dynamically linked)."""
        return self.tls != "none"

    @property
    def missing_required(self) -> list[str]:
        """Required (and, with TLS, TLS) symbols that are absent or not sized functions."""
        needed = REQUIRED_SYMBOLS + (TLS_SYMBOLS if self.has_tls else ())
        return [name for name in needed if not self.probeable.get(name, False)]

    @property
    def description(self) -> str:
        """Short human name such as "nginx 1.22.1" or "openresty 1.21.4.1"."""
        name = self.flavor or "unknown nginx flavor"
        return f"{name} {self.version}" if self.version else name


_CacheKey = tuple[str, int, int, int, int]
_CACHE: OrderedDict[_CacheKey, BinaryInfo] = OrderedDict()
_CACHE_MAX = 64
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached :class:`BinaryInfo` (mainly for tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def inspect_binary(path: str | os.PathLike[str]) -> BinaryInfo:
    """Inspect the ELF executable at *path* without executing it.

    Results are cached by (path, device, inode, mtime, size), so repeated calls for a running
    nginx are cheap while a replaced binary is re-read. The returned object is shared between
    callers of the cache; treat it as read-only.

    Raises:
        BinaryError: the file is missing, unreadable, not a regular file or not ELF.
    """
    spath = os.fspath(path)
    try:
        st = os.stat(spath)
    except FileNotFoundError:
        raise BinaryError(f"no such file: {spath}") from None
    except PermissionError:
        raise BinaryError(f"permission denied: cannot read {spath}") from None
    except OSError as exc:
        raise BinaryError(f"cannot access {spath}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BinaryError(f"not a regular file: {spath}")

    key: _CacheKey = (spath, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached

    info = _inspect_uncached(spath, st)
    with _CACHE_LOCK:
        _CACHE[key] = info
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return info


def _inspect_uncached(path: str, st: os.stat_result) -> BinaryInfo:
    """Open and parse *path*; map every failure onto :class:`BinaryError`."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            if magic != b"\x7fELF":
                raise BinaryError(f"not an ELF file: {path}")
            fh.seek(0)
            try:
                return _read_elf(ELFFile(fh), path, st)
            except (ELFError, ValueError, KeyError, IndexError, EOFError) as exc:
                raise BinaryError(f"cannot parse ELF file {path}: {exc}") from None
    except PermissionError:
        raise BinaryError(f"permission denied: cannot read {path}") from None
    except FileNotFoundError:
        raise BinaryError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise BinaryError(f"not a regular file: {path}") from None
    except OSError as exc:
        raise BinaryError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_elf(elf: ELFFile, path: str, st: os.stat_result) -> BinaryInfo:
    """Collect everything :class:`BinaryInfo` needs from an opened ELF file."""
    if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
        raise BinaryError(f"not an executable ELF file ({elf['e_type']}): {path}")

    needed = _dt_needed(elf)
    rodata = _rodata(elf)
    wanted = set(CAPTURE_SYMBOLS)
    symbols: dict[str, int] = {}
    probeable: dict[str, bool] = {}
    ngx_names: set[str] = set()
    ssl_syms: dict[str, tuple[int, str]] = {}
    tls_funcs_defined = False
    has_symtab = False
    cached_time: int | None = None

    for section in elf.iter_sections():
        if not isinstance(section, SymbolTableSection):
            continue
        if section["sh_type"] == "SHT_SYMTAB":
            has_symtab = True
        for sym in section.iter_symbols():
            name = sym.name
            if not name or sym["st_shndx"] == "SHN_UNDEF":
                continue
            if name.startswith("ngx_"):
                ngx_names.add(name)
                if name == "ngx_cached_time" and sym["st_info"]["type"] == "STT_OBJECT":
                    cached_time = int(sym["st_value"])
                if name in wanted:
                    is_func = sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0
                    if name not in symbols or (is_func and not probeable[name]):
                        symbols[name] = int(sym["st_value"])
                        probeable[name] = is_func
            elif name in _SSL_PROBED:
                tls_funcs_defined = tls_funcs_defined or name in _TLS_FUNCS
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
                    ssl_syms.setdefault(name, (int(sym["st_value"]), section.name))

    flavor, version, nginx_version = _detect_flavor(rodata)
    tls, tls_library = _detect_tls(needed, rodata, tls_funcs_defined, symbols)

    ordered = {name: symbols[name] for name in CAPTURE_SYMBOLS if name in symbols}
    info = BinaryInfo(
        path=path,
        inode=st.st_ino,
        dev=st.st_dev,
        flavor=flavor,
        version=version,
        nginx_version=nginx_version,
        tls=tls,
        tls_library=tls_library,
        symbols=ordered,
        probeable={name: probeable[name] for name in ordered},
        ngx_symbol_count=len(ngx_names),
        stripped=not has_symtab,
        cached_time=cached_time,
    )
    if not ngx_names and tls == "static":
        _find_builtin_ssl(elf, info, ssl_syms)
    info.method, info.method_reason = _decide_method(info)
    return info


def _find_builtin_ssl(elf: ELFFile, info: BinaryInfo, syms: dict[str, tuple[int, str]]) -> None:
    """Locate the built-in SSL_read/SSL_write: by symbol, else by their error sites."""
    image = CodeImage.from_elf(elf)
    if "SSL_read" in syms and "SSL_write" in syms:
        found = {name: addr for name, (addr, _table) in syms.items()}
        info.ssl_found_by = f"SSL_read/SSL_write found in {syms['SSL_read'][1]}"
    else:
        search = find_ssl_functions(image)
        found = search.addresses
        info.ssl_found_by = search.reason
    offsets = {name: image.file_offset(addr) for name, addr in found.items()}
    if found and None not in offsets.values():
        info.ssl_functions = found
        info.ssl_offsets = {name: off for name, off in offsets.items() if off is not None}
    elif found:
        info.ssl_found_by = "SSL_read/SSL_write symbols lie outside the executable segments"


def _dt_needed(elf: ELFFile) -> list[str]:
    """DT_NEEDED library names of the dynamic section (empty for static executables)."""
    names: list[str] = []
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            names.extend(
                str(getattr(tag, "needed", ""))
                for tag in section.iter_tags()
                if tag.entry.d_tag == "DT_NEEDED"
            )
    return names


def _rodata(elf: ELFFile) -> bytes:
    """Bytes of the read-only data sections, where nginx keeps its version strings."""
    chunks: list[bytes] = []
    for section in elf.iter_sections():
        if section.name.startswith(".rodata") and section["sh_type"] != "SHT_NOBITS":
            chunks.append(section.data())
    return b"\0".join(chunks)


def _detect_flavor(rodata: bytes) -> tuple[str, str, str]:
    """Return (flavor, flavor version, nginx core version) from version strings."""
    core = _NGINX_VERSION.search(rodata)
    core_version = core.group(1).decode() if core else ""
    for flavor, pattern in _FLAVOR_PATTERNS:
        match = pattern.search(rodata)
        if match:
            return flavor, match.group(1).decode(), core_version
    if core:
        return "nginx", core_version, core_version
    return "", "", ""


def _detect_tls(
    needed: list[str], rodata: bytes, tls_funcs_defined: bool, symbols: dict[str, int]
) -> tuple[str, str]:
    """Return (tls, tls_library): how the TLS library is linked and its name."""
    for lib in needed:
        if _TLS_NEEDED.match(lib):
            return "dynamic", lib
    static = tls_funcs_defined or any(marker in rodata for marker in _STATIC_TLS_MARKERS)
    if not static and not any(name in symbols for name in TLS_SYMBOLS):
        return "none", ""
    for pattern in _STATIC_TLS_NAMES:
        match = pattern.search(rodata)
        if match:
            return "static", f"{match.group(1).decode()} (built in)"
    return "static", "TLS library (built in)"


def _decide_method(info: BinaryInfo) -> tuple[str | None, str]:
    """Decide the capture method and a one-line reason for *info*."""
    if info.ngx_symbol_count == 0:
        if info.flavor and info.tls == "dynamic":
            return METHOD_LIBSSL_SYSCALLS, (
                f"no ngx_* symbols: TLS plaintext via SSL_read/SSL_write uprobes in the mapped "
                f"{info.tls_library}, plaintext HTTP via syscalls; responses framed from HTTP/1")
        if info.flavor and info.tls == "static":
            built_in = info.tls_library.removesuffix(" (built in)")
            if info.ssl_functions:
                return METHOD_BUILTIN_SSL, (
                    f"no ngx_* symbols: {info.ssl_found_by} in the built-in {built_in}; "
                    "TLS plaintext via uprobes on them, HTTP via syscalls")
            return METHOD_SYSCALLS_ONLY, (
                f"no ngx_* symbols; built-in {built_in}: "
                f"{info.ssl_found_by}; plaintext HTTP via syscalls only, TLS traffic cannot "
                "be seen")
        if info.flavor and info.tls == "none":
            return METHOD_SYSCALLS_ONLY, (
                "no ngx_* symbols: plaintext HTTP via syscalls (no TLS in binary); "
                "responses framed from HTTP/1")
        return None, _NO_NGX_REASON
    missing = info.missing_required
    if missing:
        absent = [name for name in missing if name not in info.symbols]
        not_func = [name for name in missing if name in info.symbols]
        parts = []
        if absent:
            parts.append("missing " + ", ".join(absent))
        if not_func:
            parts.append("not sized functions: " + ", ".join(not_func))
        return None, "; ".join(parts)
    table = ".dynsym" if info.stripped else ".symtab/.dynsym"
    scope = "HTTP and TLS (plaintext via ngx_ssl_*)" if info.has_tls else "HTTP (no TLS in binary)"
    return METHOD_NGINX_UPROBES, f"ngx_* I/O functions found in {table}: captures {scope}"
