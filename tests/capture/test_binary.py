"""Tests for ngxscope.capture.binary against real ELF files (Debian's nginx and tiny gcc builds)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ngxscope.capture.binary import (
    METHOD_NGINX_UPROBES,
    OPTIONAL_SYMBOLS,
    REQUIRED_SYMBOLS,
    TLS_SYMBOLS,
    BinaryError,
    inspect_binary,
)

NGINX = "/usr/sbin/nginx"


def build_c(tmp_path: Path, name: str, body: str, *extra: str) -> Path:
    """Compile *body* with gcc into tmp_path/name and return the executable's path."""
    src = tmp_path / f"{name}.c"
    src.write_text(body + "\nint main(void) { return 0; }\n")
    out = tmp_path / name
    subprocess.run(["gcc", "-O0", "-o", str(out), str(src), *extra], check=True)
    return out


def funcs(names: tuple[str, ...] | list[str]) -> str:
    """C definitions of non-trivial functions with the given names."""
    return "\n".join(f"int {n}(int x) {{ return x * 3 + {i}; }}" for i, n in enumerate(names))


def test_debian_nginx() -> None:
    info = inspect_binary(NGINX)
    assert info.path == NGINX
    st = os.stat(NGINX)
    assert (info.inode, info.dev) == (st.st_ino, st.st_dev)
    assert info.flavor == "nginx"
    assert info.version == "1.22.1"
    assert info.nginx_version == "1.22.1"
    assert info.tls == "dynamic"
    assert info.tls_library == "libssl.so.3"
    assert info.stripped is True  # Debian ships no .symtab; ngx_* come from .dynsym
    for name in REQUIRED_SYMBOLS + TLS_SYMBOLS + OPTIONAL_SYMBOLS:
        assert info.symbols[name] > 0, name
        assert info.probeable[name] is True, name
    assert info.ngx_symbol_count > 100
    assert info.method == METHOD_NGINX_UPROBES
    assert ".dynsym" in info.method_reason
    assert info.missing_required == []
    assert info.description == "nginx 1.22.1"


def test_cache_and_new_inode(tmp_path: Path) -> None:
    first = inspect_binary(NGINX)
    assert inspect_binary(NGINX) is first
    copy = tmp_path / "nginx"
    shutil.copy2(NGINX, copy)
    info = inspect_binary(copy)
    assert info is not first
    assert info.inode == copy.stat().st_ino != first.inode
    assert info.symbols == first.symbols
    # Replacing the file (binary upgrade) is noticed: new inode, new result.
    replacement = tmp_path / "nginx.new"
    shutil.copy2(NGINX, replacement)
    os.replace(replacement, copy)
    again = inspect_binary(copy)
    assert again is not info
    assert again.inode == copy.stat().st_ino


def test_program_without_ngx_symbols(tmp_path: Path) -> None:
    exe = build_c(tmp_path, "hello", '#include <stdio.h>\nint hello(void) { return puts("hi"); }')
    info = inspect_binary(exe)
    assert info.symbols == {}
    assert info.ngx_symbol_count == 0
    assert info.flavor == "" and info.version == ""
    assert info.tls == "none" and info.tls_library == ""
    assert info.stripped is False
    assert info.method is None
    assert info.method_reason == (
        "no ngx_* symbols and no nginx version string: not recognised as nginx, "
        "so no capture method applies"
    )


def test_stripped_program(tmp_path: Path) -> None:
    exe = build_c(tmp_path, "stripped", funcs(["ngx_unix_recv"]), "-s")
    info = inspect_binary(exe)
    assert info.stripped is True
    assert info.method is None
    assert info.method_reason.startswith("no ngx_* symbols")


def test_missing_required_symbols(tmp_path: Path) -> None:
    body = funcs(["ngx_unix_recv", "ngx_close_connection", "ngx_unix_send"])
    body += '\nconst char ver[] = "nginx/1.24.0";\n'
    info = inspect_binary(build_c(tmp_path, "partial", body))
    assert info.flavor == "nginx" and info.version == "1.24.0"
    assert set(info.symbols) == {"ngx_unix_recv", "ngx_close_connection", "ngx_unix_send"}
    assert all(info.probeable.values())
    assert info.stripped is False  # found through .symtab, not exported
    assert info.method is None
    assert info.method_reason == "missing ngx_writev, ngx_http_free_request"


def test_symbol_that_is_not_a_function(tmp_path: Path) -> None:
    body = funcs(["ngx_unix_recv", "ngx_close_connection", "ngx_http_free_request"])
    body += "\nint ngx_writev = 5;\n"
    info = inspect_binary(build_c(tmp_path, "datasym", body))
    assert "ngx_writev" in info.symbols
    assert info.probeable["ngx_writev"] is False
    assert info.method is None
    assert info.method_reason == "not sized functions: ngx_writev"


def test_static_tls_openresty(tmp_path: Path) -> None:
    body = funcs([*REQUIRED_SYMBOLS, *TLS_SYMBOLS, "SSL_read"])
    body += (
        '\nconst char v1[] = "openresty/1.21.4.3";\nconst char v2[] = "nginx/1.21.4";'
        '\nconst char v3[] = "OpenSSL 3.0.13 30 Jan 2024";\n'
    )
    info = inspect_binary(build_c(tmp_path, "openresty", body))
    assert info.flavor == "openresty"
    assert info.version == "1.21.4.3"
    assert info.nginx_version == "1.21.4"
    assert info.tls == "static"
    assert info.tls_library == "OpenSSL 3.0.13 (built in)"
    assert info.method == METHOD_NGINX_UPROBES
    assert "TLS" in info.method_reason


def test_tls_binary_without_ssl_hooks(tmp_path: Path) -> None:
    body = funcs([*REQUIRED_SYMBOLS, "SSL_read", "ngx_ssl_write"])
    info = inspect_binary(build_c(tmp_path, "notls", body))
    assert info.tls == "static"
    assert info.method is None
    assert info.method_reason == "missing ngx_ssl_recv"


def test_plain_http_build_needs_no_tls_symbols(tmp_path: Path) -> None:
    info = inspect_binary(build_c(tmp_path, "plain", funcs(REQUIRED_SYMBOLS)))
    assert info.tls == "none"
    assert info.method == METHOD_NGINX_UPROBES
    assert "no TLS" in info.method_reason


@pytest.mark.parametrize(
    ("strings", "flavor", "version"),
    [
        (["Angie/1.5.0", "nginx/1.25.4"], "angie", "1.5.0"),
        (["Tengine/3.1.0", "nginx/1.24.0"], "tengine", "3.1.0"),
        (["freenginx/1.27.2"], "freenginx", "1.27.2"),
        (["nginx/1.26.2"], "nginx", "1.26.2"),
    ],
)
def test_flavors(tmp_path: Path, strings: list[str], flavor: str, version: str) -> None:
    body = "\n".join(f'const char s{i}[] = "{s}";' for i, s in enumerate(strings))
    info = inspect_binary(build_c(tmp_path, flavor, body))
    assert (info.flavor, info.version) == (flavor, version)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BinaryError, match="no such file"):
        inspect_binary(tmp_path / "nope")


def test_not_elf(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho nginx/1.22.1\n")
    with pytest.raises(BinaryError, match="not an ELF file"):
        inspect_binary(script)


def test_truncated_elf(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_bytes(Path(NGINX).read_bytes()[:200])
    with pytest.raises(BinaryError, match="cannot parse ELF file"):
        inspect_binary(broken)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(BinaryError, match="not a regular file"):
        inspect_binary(tmp_path)


def test_no_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    shutil.copy(NGINX, locked)
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        pytest.skip("running as root: every file is readable")
    with pytest.raises(BinaryError, match="permission denied"):
        inspect_binary(locked)
