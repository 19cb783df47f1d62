"""Locating OpenSSL's functions in stripped static builds (capture/sslfind.py).

Ground truth: every *-nosym build of scripts/build-nginx-static.sh comes with its unstripped
twin (nginx.unstripped, the same link before strip), whose .symtab names SSL_read... None of
these builds gave the locator any bytes: it knows OpenSSL's source (file and function names,
1.1.x function codes), not its machine code.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from ngxscope.capture.binary import METHOD_SYSCALLS_ONLY, BinaryError, inspect_binary
from ngxscope.capture.elfcode import CodeImage
from ngxscope.capture.sslfind import TARGETS, find_ssl_functions, main

from .test_binary import build_c
from .test_static_openssl import NOSYM, built

ALL = set(TARGETS)


def image(path: str | Path) -> CodeImage:
    with open(path, "rb") as fh:
        return CodeImage.from_elf(ELFFile(fh))


def symbols(path: str | Path, names: set[str], table: str = ".symtab") -> dict[str, int]:
    with open(path, "rb") as fh:
        sec = ELFFile(fh).get_section_by_name(table)
        return {s.name: s["st_value"] for s in sec.iter_symbols()
                if s.name in names and s["st_info"]["type"] == "STT_FUNC"}


@pytest.mark.parametrize(("variant", "family"), NOSYM)
def test_located_at_the_unstripped_twins_symbols(variant: str, family: str) -> None:
    stripped = built(variant)
    twin = Path(stripped).with_name("nginx.unstripped")
    what = Path(stripped).with_name("openssl.txt").read_text().strip()
    # a twin: the same link (identical code), with .symtab; the stripped file names nothing
    code = [(a, d) for a, _o, d, x in image(stripped).segments if x]
    assert code == [(a, d) for a, _o, d, x in image(twin).segments if x]
    with open(stripped, "rb") as fh:
        elf = ELFFile(fh)
        assert elf.get_section_by_name(".symtab") is None
        assert not [s.name for s in elf.get_section_by_name(".dynsym").iter_symbols()
                    if s.name.startswith(("SSL_", "ngx_")) and s["st_shndx"] != "SHN_UNDEF"]
    truth = symbols(twin, ALL)
    assert set(truth) == ALL, what
    found = find_ssl_functions(image(stripped))
    print(f"\n{variant} [{what}]: " + ", ".join(
        f"{n} {'=' if found.addresses.get(n) == truth[n] else '!='} {truth[n]:#x}" for n in TARGETS))
    assert found.addresses == truth, found.reason
    assert found.reason == f"SSL_read/SSL_write found by their {family} error sites"
    assert found.problems == []


def test_static_ssl_agrees_with_its_dynsym() -> None:
    """static-ssl exports SSL_* (nginx links with -Wl,-E): the locator, blind to them, agrees."""
    path = built("static-ssl")
    assert find_ssl_functions(image(path)).addresses == symbols(path, ALL, ".dynsym")


def test_function_bounds_from_eh_frame() -> None:
    """The unwind table's functions are the twin's: same starts and sizes, ssl and ngx_."""
    twin = Path(built("static-ssl-nosym")).with_name("nginx.unstripped")
    img = image(built("static-ssl-nosym"))
    with open(twin, "rb") as fh:
        syms = [(s.name, s["st_value"], s["st_size"]) for s in
                ELFFile(fh).get_section_by_name(".symtab").iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_size"]]
    wanted = [(n, a, size) for n, a, size in syms
              if n in ALL or n.startswith(("ngx_http_", "ssl_", "SSL_"))]
    assert len(wanted) > 1000
    assert [(n, img.function_at(a)) for n, a, _ in wanted] == [(n, (a, a + size)) for n, a, size in wanted]
    assert img.function_at(0) is None


_PRELUDE = ("#include <stddef.h>\n"
            "void ERR_set_debug(const char *f, int l, const char *fn);\n"
            "#define ERR_raise() ERR_set_debug(__FILE__, __LINE__, __func__)\n"
            "extern volatile int sink;\n"
            "int ssl_read_internal(void *s, size_t n);\n")
_BIO = _PRELUDE + """
__attribute__((noinline)) int ssl_new(void *b) { if (!b) { ERR_raise(); return 0; } return 1; }
__attribute__((noinline)) int ssl_read(void *b, size_t n) { int r = ssl_read_internal(b, n); return r < 0 ? 0 : r; }
"""


def _fake_libssl(tmp_path: Path, body: str, bio_first: bool | None = None) -> Path:
    """An executable from C compiled as ssl/ssl_lib.c (so __FILE__ names it), with the BIO's
    ssl_read (ssl/bio_ssl.c, calling ssl_read_internal too) linked before or after it."""
    (tmp_path / "ssl").mkdir(exist_ok=True)
    (tmp_path / "ssl" / "ssl_lib.c").write_text(
        _PRELUDE.replace("int ssl_read_internal(void *s, size_t n);\n", "") +
        "__attribute__((noinline)) void ERR_set_debug(const char *f, int l, const char *fn)"
        " { __asm__ volatile(\"\" :: \"r\"(f), \"r\"(l), \"r\"(fn)); }\n"
        "volatile int sink;\n" + body + "\nint main(void) { return sink; }\n")
    (tmp_path / "ssl" / "bio_ssl.c").write_text(_BIO)
    sources = ["ssl/ssl_lib.c"]
    if bio_first is not None:
        sources.insert(0 if bio_first else 1, "ssl/bio_ssl.c")
    out = tmp_path / "fake"
    subprocess.run(["gcc", "-O2", "-o", str(out), *sources], cwd=tmp_path, check=True)
    return out


_INTERNAL = """
__attribute__((noinline)) int ssl_read_internal(void *s, size_t n) { if (!s) { ERR_raise(); return -1; } return sink + (int)n; }
__attribute__((noinline)) int ssl_write_internal(void *s, size_t n) { if (!s) { ERR_raise(); return -1; } return sink - (int)n; }
__attribute__((noinline)) int SSL_read_ex(void *s, size_t n) { int r = ssl_read_internal(s, n); return r < 0 ? 0 : r; }
__attribute__((noinline)) int SSL_write_ex(void *s, size_t n) { int r = ssl_write_internal(s, n); return r < 0 ? 0 : r; }
__attribute__((noinline)) int SSL_set_fd(void *s, int fd) { if (fd < 0) { ERR_raise(); return 0; } sink = fd; return 1; }
__attribute__((noinline)) int SSL_write(void *s, int n) { if (n < 0) { ERR_raise(); return -1; } return ssl_write_internal(s, (size_t)n); }
"""
_SSL_READ = ("__attribute__((noinline)) int SSL_read(void *s, int n) { if (n < 0) { ERR_raise();"
             " return -1; } return ssl_read_internal(s, (size_t)n) * 2; }\n")


@pytest.mark.parametrize("bio_first", [None, True, False])
def test_rules_on_a_small_program(tmp_path: Path, bio_first: bool | None) -> None:
    """The same rules on a few lines of C: found where the symbols say, the BIO's ssl_read
    (another object, also calling ssl_read_internal) left out wherever the linker put it."""
    path = _fake_libssl(tmp_path, _INTERNAL + _SSL_READ, bio_first)
    found = find_ssl_functions(image(path))
    assert found.addresses == symbols(path, ALL), found.reason
    assert found.family == "OpenSSL 3"


def test_inlined_internal_functions(tmp_path: Path) -> None:
    """ssl_read_internal inlined into SSL_read and SSL_read_ex (its error sites with them),
    its out-of-line copy called by the BIO's ssl_read only: SSL_read is found (its own site
    told from the inlined one next to it); SSL_read_ex and the out-of-line copy then look
    alike (both raise as ssl_read_internal only), so neither is probed, and the reason says so."""
    inlined = _INTERNAL.replace(
        "__attribute__((noinline)) int ssl_read_internal(",
        "extern int ssl_read_internal(void *s, size_t n);\n"
        "__attribute__((always_inline)) inline int ssl_read_internal(")
    path = _fake_libssl(tmp_path, inlined + _SSL_READ, bio_first=False)
    truth = symbols(path, ALL | {"ssl_read_internal"})
    found = find_ssl_functions(image(path))
    assert found.addresses == {n: a for n, a in truth.items() if n in ALL - {"SSL_read_ex"}}
    pair = sorted([truth["SSL_read_ex"], truth["ssl_read_internal"]])
    assert found.problems == [f"SSL_read_ex: 2 candidates ({pair[0]:#x}, {pair[1]:#x}), not probed"]


def test_ambiguous_or_unconfirmed_is_refused(tmp_path: Path) -> None:
    # a second function raising under the name SSL_read: two candidates, none probed
    twice = _SSL_READ + _SSL_READ.replace("int SSL_read(", "int SSL_read_copy(").replace(
        "ERR_raise()", 'ERR_set_debug(__FILE__, __LINE__, "SSL_read")')
    found = find_ssl_functions(image(_fake_libssl(tmp_path, _INTERNAL + twice)))
    assert not found.found and "SSL_read" not in found.addresses
    assert "SSL_read: 2 candidates (0x" in found.reason and "not probed" in found.reason
    # an SSL_read that never reaches ssl_read_internal is not believed
    lone = _SSL_READ.replace("ssl_read_internal(s, (size_t)n) * 2", "sink")
    found = find_ssl_functions(image(_fake_libssl(tmp_path, _INTERNAL + lone)))
    assert "SSL_read" not in found.addresses
    assert "no call into ssl_read_internal" in found.reason


def test_binary_without_openssl() -> None:
    found = find_ssl_functions(image("/usr/sbin/nginx"))  # OpenSSL in libssl.so, not inside
    assert not found.found and found.addresses == {}
    assert found.reason == ("SSL_read/SSL_write not located: no error site of ssl/ssl_lib.c "
                            "(no OpenSSL built in, or built without file names)")


def test_static_tls_not_located_means_syscalls_only(tmp_path: Path) -> None:
    """An nginx claiming built-in OpenSSL whose SSL_read/SSL_write cannot be located."""
    body = ('const char v[] = "nginx/1.22.1";\nconst char o[] = "OpenSSL 3.0.99 1 Jan 2030";\n'
            'const char f[] = "../ssl/ssl_lib.c";\n')
    info = inspect_binary(build_c(tmp_path, "fake", body, "-s"))
    assert info.tls == "static" and info.ngx_symbol_count == 0
    assert info.method == METHOD_SYSCALLS_ONLY
    assert info.ssl_functions == {}
    assert info.method_reason.startswith(
        "no ngx_* symbols; built-in OpenSSL 3.0.99: SSL_read/SSL_write not located: no error "
        "site of ssl/ssl_lib.c")
    assert info.method_reason.endswith("TLS traffic cannot be seen")


def test_garbage_is_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    with pytest.raises(BinaryError):
        inspect_binary(junk)
    # truncated static builds: an answer or a BinaryError, never another exception
    whole = Path(built("static-ssl-nosym")).read_bytes()
    for size in (600_000, 4_500_000, len(whole) - 1000):
        cut = tmp_path / f"cut{size}"
        cut.write_bytes(whole[:size])
        try:
            info = inspect_binary(cut)
        except BinaryError as exc:
            assert "\n" not in str(exc)
        else:
            assert "\n" not in info.method_reason
    for argv in ([str(junk)], [str(tmp_path / "missing")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "ngxscope.capture.sslfind", built("static-ssl-nosym")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "SSL_read/SSL_write found by their OpenSSL 3 error sites" in proc.stdout
    assert proc.stdout.count("(file offset 0x") == len(TARGETS)
    assert main(["/usr/sbin/nginx"]) == 1
    assert "not located: no error site" in capsys.readouterr().out


def test_damaged_tables_and_code_never_raise(tmp_path: Path) -> None:
    """Bytes overwritten in the unwind tables, strings and code (seeded, bounded fuzzing):
    an answer every time, never an exception, and never an address that is not a function
    start of the (damaged) unwind table."""
    path = _fake_libssl(tmp_path, _INTERNAL + _SSL_READ, bio_first=True)
    clean = image(path)
    rng = random.Random(13)
    for _ in range(400):
        segments = []
        for base, off, data, x in clean.segments:
            buf = bytearray(data)
            hdr = (clean.eh_frame_hdr or 0) - base  # the unwind tables half of the time
            for _n in range(rng.choice((1, 4, 16))):
                near = 0 <= hdr < len(buf) and rng.random() < 0.5
                i = hdr + rng.randrange(min(0x400, len(buf) - hdr)) if near else rng.randrange(len(buf))
                buf[i] = rng.randrange(256)
            segments.append((base, off, bytes(buf), x))
        damaged = CodeImage(segments, clean.eh_frame_hdr)
        found = find_ssl_functions(damaged)
        assert found.found or found.problems
        if found.addresses:
            assert set(found.addresses.values()) <= set(damaged.function_starts())
