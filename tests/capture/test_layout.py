"""capture.layout: the request struct's offsets per nginx build, from its configure arguments.

The expected offsets are offsetof() values of nginx 1.22.1's ngx_http_request_t, compiled
with each build's ngx_auto_config.h (scripts/nginx-request-offsets.py checks the model for
every feature combination against nginx's headers; tests/capture/test_nginx_values.py checks
it against the access log on the real builds).
"""

from __future__ import annotations

from pathlib import Path

from ngxscope.capture.layout import (
    configure_arguments,
    features_from_configure,
    layout_for_binary,
    layout_for_version,
    request_offsets,
)

DEBIAN = ("--with-cc-opt='-g -O2' --prefix=/usr/share/nginx --with-compat --with-debug --with-pcre-jit "
          "--with-http_ssl_module --with-http_stub_status_module --with-http_realip_module "
          "--with-http_auth_request_module --with-http_v2_module --with-http_dav_module --with-threads "
          "--with-http_geoip_module=dynamic --with-mail=dynamic --with-stream=dynamic")
STATIC = ("--prefix=/usr/share/nginx --with-http_ssl_module --with-http_v2_module --with-threads "
          "--without-http_gzip_module --without-http_geo_module --without-http_map_module")


def test_debian_build() -> None:
    offs = request_offsets("1.22.1", features_from_configure(DEBIAN))
    assert offs == {"header_in": 96, "status": 648, "request_line": 992, "request_length": 1248,
                    "err_status": 1256, "request_start": 1432,
                    "loc_conf": 40, "clcf_regex": 32, "clcf_flags": 40}


def test_static_build() -> None:
    offs = request_offsets("1.22.1", features_from_configure(STATIC))
    assert offs == {"header_in": 96, "status": 608, "request_line": 952, "request_length": 1208,
                    "err_status": 1216, "request_start": 1392,
                    "loc_conf": 40, "clcf_regex": 32, "clcf_flags": 40}


def test_minimal_build() -> None:
    feats = features_from_configure("--without-http-cache --without-http_gzip_module --without-http_geo_module "
                                    "--without-http_proxy_module --without-http_rewrite_module")
    assert feats == frozenset()
    assert request_offsets("1.22.0", feats) == {"header_in": 88, "status": 528, "request_line": 872,
                                                "request_length": 1104, "err_status": 1112, "request_start": 1288,
                                                "loc_conf": 40, "clcf_regex": -1, "clcf_flags": 32}


def test_other_versions_not_read() -> None:
    assert request_offsets("1.25.3", features_from_configure(DEBIAN)) is None
    assert request_offsets(None, frozenset()) is None


def test_binary_configure_arguments(tmp_path: Path) -> None:
    exe = tmp_path / "nginx"
    exe.write_bytes(b"\x7fELF junk\0configure arguments: " + DEBIAN.encode() + b"\n\0more")
    assert configure_arguments(exe) == DEBIAN
    layout = layout_for_binary(exe, "1.22.1")
    assert layout.request_log and layout.r_status == 648
    assert "-DREQ_LOG=1" in layout.cflags()
    plain = tmp_path / "other"
    plain.write_bytes(b"no such string")
    assert not layout_for_binary(plain, "1.22.1").request_log
    assert not layout_for_binary(exe, "1.26.0").request_log


def test_connection_bits_word() -> None:
    """c->error / c->timedout's word: local_socklen + 56 from 1.19.10 (c->start_time), + 48
    before; 1.25's quic field moves both (offsetof in nginx's ngx_connection.h per release)."""
    for version, bits in (("1.18.0", 216), ("1.19.10", 224), ("1.22.1", 224), (None, 224), ("1.26.2", 232)):
        lay = layout_for_version(version)
        assert lay.c_bits == bits and f"-DOFF_C_BITS={bits}" in lay.cflags(), version
        assert lay.c_bits - lay.local_socklen in (48, 56)


def test_request_upstream_follows_the_cache_field(tmp_path: Path) -> None:
    """r->upstream (where the writev tracepoint finds a reused upstream connection) comes
    after r->cache, which only a build with the HTTP cache has; any nginx version."""
    for version in ("1.22.1", "1.26.0"):
        with_cache, without = tmp_path / "with", tmp_path / "without"
        with_cache.write_bytes(b"configure arguments: " + DEBIAN.encode() + b"\n")
        without.write_bytes(b"configure arguments: --without-http-cache " + STATIC.encode() + b"\n")
        assert layout_for_binary(with_cache, version).r_upstream == 72
        assert layout_for_binary(without, version).r_upstream == 64
        assert "-DOFF_R_UPSTREAM=64" in layout_for_binary(without, version).cflags()
