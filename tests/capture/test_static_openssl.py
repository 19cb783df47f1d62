"""nginx with OpenSSL linked statically (issue 8), built by scripts/build-nginx-static.sh.

- ``static-ssl``: stripped, but nginx links with -Wl,-E, so ngx_* stay in .dynsym: the
  nginx-uprobe capture (and its struct layout) must work as for Debian's nginx.
- ``static-ssl-nosym``: no exported symbol at all: SSL_read/SSL_write are located by their
  error sites (capture/sslfind.py) and probed inside the binary; plaintext HTTP comes from
  syscalls. Likewise ``static-ssl111-nosym`` (Debian 11's OpenSSL 1.1.1) and
  ``static-ssl3-{O3,Os}-nosym`` (OpenSSL 3 libssl.a compiled by the build script).
- the static-ssl binary with ngx_* renamed in .dynstr: SSL_read/SSL_write found by symbol.

Each capture is compared with nginx's own access log, line by line, field by field.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from ngxscope.capture.binary import (
    METHOD_BUILTIN_SSL,
    METHOD_NGINX_UPROBES,
    METHOD_SYSCALLS_ONLY,
    OPTIONAL_SYMBOLS,
    REQUIRED_SYMBOLS,
    TLS_SYMBOLS,
    inspect_binary,
)
from ngxscope.capture.elfcode import CodeImage
from ngxscope.capture.layout import layout_for_version
from ngxscope.capture.procs import resolve_target
from ngxscope.capture.sslfind import SslSearch, find_ssl_functions
from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic

from .test_fallback import FIELDS, compare_fields, drive, renamed_nginx
from .truth import compare, lab_id

BUILDS = Path(os.environ.get("NGXSCOPE_BUILDS", "/var/cache/ngxscope/nginx-builds"))


def built(variant: str) -> str:
    """The path of a variant built by scripts/build-nginx-static.sh; fails (never skips)."""
    path = BUILDS / variant / "nginx"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} missing: run scripts/setup.sh (it runs scripts/build-nginx-static.sh)")
    return str(path)


@pytest.fixture
def lab_of(tmp_path: Path) -> Iterator[Any]:
    """Start a LabNginx on a given binary; stopped afterwards."""
    labs: list[LabNginx] = []

    def start(binary: str) -> LabNginx:
        lab = LabNginx(workers=2, nginx_bin=binary)
        labs.append(lab)
        lab.start()
        return lab

    yield start
    for lab in labs:
        lab.stop()


def fallback_vs_log(lab: LabNginx, cap: Any) -> None:
    """Drive traffic through *lab* under the fallback capture *cap*; every log line matched."""
    traffic = Traffic(lab.plain_port, lab.tls_port)
    sent, discarded = drive(traffic)
    log = lab.wait_log_lines(sent)
    assert len(log) == sent
    wanted = {line["lab_id"] for line in log}
    exchanges = cap.wait_for(sent)
    deadline = time.monotonic() + 15  # the count alone can be reached early by an extra one
    while not wanted <= {lab_id(ex) for ex in exchanges} and time.monotonic() < deadline:
        exchanges = cap.wait_for(sent, timeout=0.5)
    stats = cap.recorder.counters()
    cap.stop()
    by_id = {lab_id(ex): ex for ex in exchanges}
    for line in [ln for ln in log if ln["lab_id"] in discarded]:
        log.remove(line)
        got = by_id[line["lab_id"]].request_bytes
        assert line["request_length"] <= got <= line["request_length"] + 1000, (got, line)
    problems, others = compare_fields(log, exchanges)
    tls_lines = sum(1 for line in log if line["https"] == "on")
    print(f"\n{lab.nginx_bin}: access log {len(log)} lines ({tls_lines} TLS, "
          f"{len(log) - tls_lines} plain; +{len(discarded)} discarded body), captured "
          f"{len(exchanges)} exchanges; mismatches in {'/'.join(FIELDS)}: {len(problems)}, "
          f"in client/server/pid/tls/version/nginx_ms: {len(others)}; lost {stats['lost']}")
    for p in others[:10]:
        print("  other:", p)
    extras = [ex for ex in exchanges if lab_id(ex) not in wanted]
    for ex in extras[:5]:
        print("  extra exchange:", ex.method, ex.target, ex.status, ex.tls, ex.error,
              ex.request_bytes, ex.response_bytes, ex.request_headers[:2])
    assert not problems, f"{len(problems)} mismatches of {sent}:\n" + "\n".join(problems[:40])
    assert not [o for o in others if ": tls " in o or ": pid " in o or ": client " in o]
    assert {ex.tls for ex in exchanges} == {True, False}
    assert {ex.pid for ex in exchanges} == set(lab.worker_pids())
    assert stats["lost"] == 0


# -- static-ssl: ngx_* exported, the nginx-uprobe capture -------------------------------------


def test_static_ssl_is_probed_with_nginx_uprobes() -> None:
    info = inspect_binary(built("static-ssl"))
    assert (info.flavor, info.version) == ("nginx", "1.22.1")
    assert info.tls == "static" and info.tls_library.startswith("OpenSSL 3.0.")
    assert info.stripped is True  # .symtab stripped: only .dynsym (-Wl,-E) remains
    for name in REQUIRED_SYMBOLS + TLS_SYMBOLS + OPTIONAL_SYMBOLS:
        assert info.probeable.get(name), name
    assert info.method == METHOD_NGINX_UPROBES
    assert layout_for_version(info.version).local_sockaddr == 160  # the 1.17-1.24 layout


def test_static_ssl_capture_matches_access_log(lab_of: Any, capture_factory: Any) -> None:
    lab = lab_of(built("static-ssl"))
    cap = capture_factory(pid=lab.master_pid)
    assert "capturing 2 workers" in cap.line and METHOD_NGINX_UPROBES in cap.line
    traffic = Traffic(lab.plain_port, lab.tls_port)
    sent = traffic.run_mix(rounds=3, concurrency=4)
    log = lab.wait_log_lines(sent)
    assert len(log) == sent
    exchanges = cap.wait_for(sent)
    stats = cap.recorder.counters()
    cap.stop()
    problems = compare(log, exchanges)
    tls_lines = sum(1 for line in log if line["https"] == "on")
    print(f"\nstatic-ssl: access log {len(log)} lines ({tls_lines} TLS), captured "
          f"{len(exchanges)} exchanges, mismatches {len(problems)}")
    assert not problems, f"{len(problems)} mismatches of {sent}:\n" + "\n".join(problems[:40])
    assert {ex.tls for ex in exchanges} == {True, False}
    assert {ex.pid for ex in exchanges} == set(lab.worker_pids())
    assert stats["lost"] == 0


# -- *-nosym: nothing exported, SSL_* found by their error sites ---------------------------------


NOSYM = [("static-ssl-nosym", "OpenSSL 3"), ("static-ssl111-nosym", "OpenSSL 1.1"),
         ("static-ssl3-O3-nosym", "OpenSSL 3"), ("static-ssl3-Os-nosym", "OpenSSL 3")]
"""(variant, family of its error sites): the installed libssl-dev, Debian 11's, and two
libssl.a compiled by scripts/build-nginx-static.sh with other flags."""


@pytest.mark.parametrize(("variant", "family"), NOSYM)
def test_nosym_finds_ssl_by_error_sites(variant: str, family: str) -> None:
    info = inspect_binary(built(variant))
    assert info.ngx_symbol_count == 0 and info.stripped
    assert info.tls == "static" and info.flavor == "nginx"
    assert info.tls_library.startswith(family + ".")
    assert info.method == METHOD_BUILTIN_SSL
    assert f"SSL_read/SSL_write found by their {family} error sites" in info.method_reason
    assert set(info.ssl_functions) == {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex",
                                       "SSL_set_fd"}


@pytest.mark.parametrize(("variant", "family"), NOSYM)
def test_nosym_capture_matches_access_log(lab_of: Any, capture_factory: Any, variant: str,
                                          family: str) -> None:
    lab = lab_of(built(variant))
    inst = resolve_target(lab.master_pid)
    assert inst.capture_method == METHOD_BUILTIN_SSL
    cap = capture_factory(pid=lab.master_pid)
    assert "capturing 2 workers" in cap.line and METHOD_BUILTIN_SSL in cap.line
    tracer = cap.recorder.tracer
    info = inspect_binary(lab.nginx_bin)
    # probed inside the binary at the addresses located (bcc resolved to offsets)
    assert tracer.libssl is None
    assert tracer.builtin == {n: (a, info.ssl_offsets[n]) for n, a in info.ssl_functions.items()}
    fallback_vs_log(lab, cap)


# -- renamed ngx_*: SSL_* still exported, found by symbol --------------------------------------


def test_renamed_static_finds_ssl_by_symbol(tmp_path: Path) -> None:
    info = inspect_binary(renamed_nginx(tmp_path, built("static-ssl")))
    assert info.ngx_symbol_count == 0
    assert info.method == METHOD_BUILTIN_SSL
    assert "SSL_read/SSL_write found in .dynsym" in info.method_reason
    # the error sites agree with the symbols
    nosym = inspect_binary(built("static-ssl"))
    assert nosym.method == METHOD_NGINX_UPROBES
    with open(built("static-ssl"), "rb") as fh:
        located = find_ssl_functions(CodeImage.from_elf(ELFFile(fh))).addresses
    assert located == info.ssl_functions


def test_renamed_static_capture_matches_access_log(tmp_path: Path, lab_of: Any,
                                                   capture_factory: Any) -> None:
    lab = lab_of(str(renamed_nginx(tmp_path, built("static-ssl"))))
    cap = capture_factory(pid=lab.master_pid)
    assert METHOD_BUILTIN_SSL in cap.line
    fallback_vs_log(lab, cap)


# -- nothing found: plaintext HTTP via syscalls, TLS connections recognised and left out ------


def test_syscalls_only_when_ssl_is_not_located(lab_of: Any, capture_factory: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The fourth method on its own kind of target: static OpenSSL that cannot be located
    (here: the locator told to find nothing). Plain requests must equal the access log; TLS
    requests must be left out, never decoded as garbage."""
    from ngxscope.capture import binary as binary_mod

    monkeypatch.setattr(binary_mod, "find_ssl_functions",
                        lambda image: SslSearch(problems=["test: not located"]))
    binary_mod.clear_cache()
    try:
        lab = lab_of(built("static-ssl-nosym"))
        info = inspect_binary(lab.nginx_bin)
        assert info.method == METHOD_SYSCALLS_ONLY and "TLS traffic cannot be seen" in info.method_reason
        cap = capture_factory(pid=lab.master_pid)
        assert METHOD_SYSCALLS_ONLY in cap.line
        traffic = Traffic(lab.plain_port, lab.tls_port)
        paths = ["/health", "/static/small.txt", "/api/items?id=3", "/static/page.html", "/204"]
        plain = traffic.keepalive(False, paths) + traffic.keepalive(False, paths[::-1])
        tls = traffic.keepalive(True, paths)
        log = lab.wait_log_lines(plain + tls)
        plain_log = [line for line in log if line["https"] != "on"]
        assert len(plain_log) == plain
        exchanges = cap.wait_for(plain)
        time.sleep(0.5)
        cap.stop()
    finally:
        binary_mod.clear_cache()
    problems, _others = compare_fields(plain_log, exchanges)
    assert not problems, "\n".join(problems[:20])
    tls_ids = {line["lab_id"] for line in log if line["https"] == "on"}
    assert not [ex for ex in exchanges if lab_id(ex) in tls_ids or ex.tls]
    assert all(lab_id(ex) is not None for ex in exchanges), "an exchange decoded from TLS bytes"
