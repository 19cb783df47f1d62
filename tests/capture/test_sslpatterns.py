"""Byte patterns of OpenSSL functions (capture/sslpatterns*.py) on real archives and binaries.

Ground truth: the static-ssl build exports SSL_* in .dynsym, and static-ssl-nosym is the same
objects relinked, so the functions keep their distances from one another.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from ngxscope.capture.binary import METHOD_SYSCALLS_ONLY, BinaryError, inspect_binary
from ngxscope.capture.sslpatterns import (
    CodeImage,
    Pattern,
    PatternSet,
    builtin_sets,
    find_ssl_functions,
    load_sets,
)
from ngxscope.capture.sslpatterns_gen import GenError, archive_members, main, patterns_from_archive

from .test_binary import build_c
from .test_static_openssl import built

LIBSSL_A = "/usr/lib/x86_64-linux-gnu/libssl.a"
ALL = {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_set_fd"}


def image(path: str | Path) -> CodeImage:
    with open(path, "rb") as fh:
        return CodeImage.from_elf(ELFFile(fh))


def dynsym(path: str, names: set[str]) -> dict[str, int]:
    with open(path, "rb") as fh:
        table = ELFFile(fh).get_section_by_name(".dynsym")
        return {s.name: s["st_value"] for s in table.iter_symbols() if s.name in names}


def openssl30() -> PatternSet:
    return next(s for s in builtin_sets() if s.name == "OpenSSL 3.0")


def test_unique_match_in_nosym_build() -> None:
    found = find_ssl_functions(image(built("static-ssl-nosym")))
    assert found.found and set(found.addresses) == ALL
    assert found.reason == "SSL_read/SSL_write found by OpenSSL 3.0 byte patterns"
    # same object code as static-ssl, whose symbols say where each function is
    truth = dynsym(built("static-ssl"), ALL)
    shift = found.addresses["SSL_read"] - truth["SSL_read"]
    assert {n: a - shift for n, a in found.addresses.items()} == truth


def test_openssl111_set_against_its_archive() -> None:
    """static-ssl111-nosym (OpenSSL 1.1.1): the functions lie as far apart as in ssl_lib.o."""
    found = find_ssl_functions(image(built("static-ssl111-nosym")))
    assert found.set_name == "OpenSSL 1.1.1" and set(found.addresses) == ALL
    # the 3.0 set was tried first and said why it did not apply
    assert find_ssl_functions(image(built("static-ssl111-nosym")), [openssl30()]).reason == (
        "no OpenSSL 3.0 byte pattern matches SSL_read/SSL_write")
    deb = Path(built("static-ssl111-nosym")).parents[1] / ".libssl-dev_1.1.1.deb"
    members = dict(archive_members(_deb_member(deb, "./usr/lib/x86_64-linux-gnu/libssl.a")))
    with io.BytesIO(members["ssl_lib.o"]) as fh:
        table = ELFFile(fh).get_section_by_name(".symtab")
        truth = {s.name: s["st_value"] for s in table.iter_symbols() if s.name in ALL}
    shift = found.addresses["SSL_read"] - truth["SSL_read"]
    assert {n: a - shift for n, a in found.addresses.items()} == truth


def _deb_member(deb: Path, name: str) -> bytes:
    """One file of a .deb (dpkg-deb --fsys-tarfile | tar -xO)."""
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    out = subprocess.run(["tar", "-xO", name], input=tar.stdout, capture_output=True, check=True)
    return out.stdout


def test_patterns_agree_with_symbols_in_static_ssl() -> None:
    path = built("static-ssl")
    assert find_ssl_functions(image(path)).addresses == dynsym(path, ALL)


def test_generated_from_debian_libssl_a() -> None:
    pset = patterns_from_archive(LIBSSL_A, "fresh")
    assert set(pset.patterns) >= ALL
    # SSL_read verifies its call into ssl_read_internal; SSL_write into ssl_write_internal
    assert [c for _o, c in pset.patterns["SSL_read"].calls] == ["ssl_read_internal"]
    assert [c for _o, c in pset.patterns["SSL_write_ex"].calls] == ["ssl_write_internal"]
    nosym = image(built("static-ssl-nosym"))
    assert find_ssl_functions(nosym, [pset]).addresses == find_ssl_functions(nosym).addresses


def test_identical_masked_bytes_are_told_apart_by_call_targets() -> None:
    """SSL_read, SSL_peek and SSL_write (and the three *_ex wrappers) differ only in their
    callee once the line numbers of their error paths are masked."""
    pset = openssl30()
    nosym = image(built("static-ssl-nosym"))
    for name, places in (("SSL_read", 3), ("SSL_read_ex", 3)):
        blind = replace(pset.patterns[name], calls=())
        assert len(nosym.find_all(blind)) == places, name
    # an ambiguous pattern is rejected, with the reason
    loose = PatternSet("loose", "test", {**pset.patterns,
                                          "SSL_read": replace(pset.patterns["SSL_read"], calls=())})
    found = find_ssl_functions(nosym, [loose])
    assert not found.found and "SSL_read" not in found.addresses
    assert "SSL_read matches 3 places" in found.reason and "ambiguous" in found.reason


def test_binary_without_openssl() -> None:
    found = find_ssl_functions(image("/usr/sbin/nginx"))  # OpenSSL in libssl.so, not inside
    assert not found.found and found.addresses == {}
    assert found.reason == ("no OpenSSL 3.0 or OpenSSL 1.1.1 byte pattern matches "
                            "SSL_read/SSL_write")
    assert find_ssl_functions(image("/usr/sbin/nginx"), []).reason == "no byte pattern sets installed"


def test_static_tls_not_located_means_syscalls_only(tmp_path: Path) -> None:
    """An nginx claiming built-in OpenSSL whose SSL_read/SSL_write no pattern finds."""
    body = ('const char v[] = "nginx/1.22.1";\nconst char o[] = "OpenSSL 3.0.99 1 Jan 2030";\n'
            'const char f[] = "../ssl/ssl_lib.c";\n')
    info = inspect_binary(build_c(tmp_path, "fake", body, "-s"))
    assert info.tls == "static" and info.ngx_symbol_count == 0
    assert info.method == METHOD_SYSCALLS_ONLY
    assert info.ssl_functions == {}
    assert info.method_reason.startswith("no ngx_* symbols; built-in OpenSSL 3.0.99: no OpenSSL 3.0")
    assert "no OpenSSL 3.0 or OpenSSL 1.1.1 byte pattern matches" in info.method_reason
    assert info.method_reason.endswith("TLS traffic cannot be seen")
    print(info.method_reason)


def test_everything_masked_never_matches() -> None:
    blank = Pattern("SSL_read", b"\0" * 8, b"\0" * 8)
    assert image("/usr/sbin/nginx").find_all(blank) == []


def test_garbage_is_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    with pytest.raises(BinaryError):
        inspect_binary(junk)
    # a truncated static build: an answer or a BinaryError, never another exception
    cut = tmp_path / "cut"
    cut.write_bytes(Path(built("static-ssl-nosym")).read_bytes()[: 600_000])
    try:
        info = inspect_binary(cut)
    except BinaryError as exc:
        assert "\n" not in str(exc)
    else:
        assert info.method != "built-in SSL uprobes + syscalls"
    with pytest.raises(GenError, match="not an ar archive"):
        archive_members(b"garbage")
    with pytest.raises(GenError, match="truncated"):
        archive_members(Path(LIBSSL_A).read_bytes()[:5000])
    with pytest.raises(ValueError):
        Pattern.from_hex("x", "4a?")
    with pytest.raises((ValueError, KeyError)):
        load_sets('{"sets": [{"name": "x", "functions": {"SSL_read": {"bytes": "zz"}}}]}')
    for argv in (["add", str(junk), "--name", "x"], ["find", str(junk)],
                 ["add", str(tmp_path / "missing.a"), "--name", "x"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_generator_on_a_small_archive(tmp_path: Path) -> None:
    """A libssl-like archive made here: long member names (GNU table), relocations masked."""
    src = tmp_path / "ssl_lib_with_a_long_member_name.c"
    src.write_text(
        "extern int sink(int);\nextern int ERR_set_debug(const char *, int, const char *);\n"
        "int ssl_read_internal(void *s, int n) { return sink(n) + 1; }\n"
        "int SSL_read(void *s, void *b, int n) { if (n < 0) { ERR_set_debug(\"f\", 1234, \"g\");"
        " return -1; } return ssl_read_internal(s, n) * 2; }\n"
        "int SSL_write(void *s, const void *b, int n) { return sink(n) - 7; }\n"
    )
    obj = tmp_path / "ssl_lib_with_a_long_member_name.o"
    subprocess.run(["gcc", "-O2", "-fno-inline", "-c", "-o", str(obj), str(src)], check=True)
    lib = tmp_path / "libssl.a"
    subprocess.run(["ar", "rcs", str(lib), str(obj)], check=True)
    assert [n for n, _ in archive_members(lib.read_bytes())] == [obj.name]
    pset = patterns_from_archive(lib, "tiny")
    read = pset.patterns["SSL_read"]
    assert [c for _o, c in read.calls] == ["ssl_read_internal"]
    assert "ssl_read_internal" in pset.patterns and "sink" not in pset.patterns
    assert (1234).to_bytes(4, "little") not in read.data  # the line number is masked
    assert read.fixed < len(read.data)
    out = tmp_path / "patterns.json"
    assert main(["add", str(lib), "--name", "tiny", "--output", str(out)]) == 0
    assert main(["add", str(lib), "--name", "tiny", "--output", str(out)]) == 0  # replaced
    assert [s.name for s in load_sets(out.read_text())] == ["tiny"]


def test_cli_find(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ngxscope.capture.sslpatterns_gen", "find", built("static-ssl-nosym")],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "SSL_read/SSL_write found by OpenSSL 3.0 byte patterns" in proc.stdout
    assert main(["find", "/usr/sbin/nginx"]) == 1
    assert "byte pattern matches SSL_read/SSL_write" in capsys.readouterr().out
