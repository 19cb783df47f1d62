"""Where nginx keeps the struct fields the probes read, per nginx version and build.

Leading fields of `ngx_connection_t` (fd, listening, sent, sockaddr...), `ngx_listening_t`
and `ngx_http_request_t` (signature, connection) have been stable for years except for one
insertion: nginx 1.25 added `ngx_quic_stream_t *quic` (present with NGX_QUIC or NGX_COMPAT)
before `ssl`, which moves `local_sockaddr` by 8 bytes. The decoder checks the addresses it
gets back and flags nonsense.

The access-log values read at a request's completion ($status, $request_length, the request
line, see bpf/reqlog.c's EV_REQ_LOG) sit deep in `ngx_http_request_t`, after
`headers_in`, whose fields depend on how nginx was configured (`#if (NGX_HTTP_DAV)`...).
:func:`request_offsets` computes them from the features the build's configure arguments
(embedded in the binary: ``nginx -V``) turn on, with the per-feature sizes below. That model
was checked against nginx 1.22.1's headers compiled with every combination of the features
(scripts/nginx-request-offsets.py); other nginx versions change `headers_in`, so for them the
values are not read and the byte-derived ones stay (Layout.request_log False).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = [
    "REQUEST_FEATURES",
    "Layout",
    "configure_arguments",
    "features_from_configure",
    "layout_for_binary",
    "layout_for_version",
    "request_offsets",
]


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets (x86-64) of the fields the probes read."""

    fd: int = 24
    """ngx_connection_t.fd"""
    listening: int = 64
    """ngx_connection_t.listening (NULL for nginx's own outgoing connections)"""
    sent: int = 72
    """ngx_connection_t.sent (for an HTTP/2 stream's fake connection: the stream's $bytes_sent)"""
    sockaddr: int = 104
    """ngx_connection_t.sockaddr (the client's address for accepted connections)"""
    socklen: int = 112
    """ngx_connection_t.socklen"""
    local_sockaddr: int = 160
    """ngx_connection_t.local_sockaddr (NULL until nginx needs it)"""
    local_socklen: int = 168
    """ngx_connection_t.local_socklen"""
    c_bits: int = 224
    """ngx_connection_t's first bit-field word (buffered:8, log_error:3, timedout, error ...):
    c->timedout and c->error are its bits 11 and 12 (local_socklen + 56 since 1.19.10, which
    added start_time; + 48 before)"""
    listening_sockaddr: int = 8
    """ngx_listening_t.sockaddr"""
    listening_socklen: int = 16
    """ngx_listening_t.socklen"""
    request_log: bool = False
    """The request struct's offsets below are known: nginx's own access-log values are read
    at each completion (EV_REQ_LOG)."""
    r_header_in: int = 0
    """ngx_http_request_t.header_in (ngx_buf_t *: the buffer the request head was read into)"""
    r_status: int = 0
    """ngx_http_request_t.headers_out.status"""
    r_request_line: int = 0
    """ngx_http_request_t.request_line, followed by uri, args, exten, unparsed_uri,
    method_name, http_protocol (seven ngx_str_t)"""
    r_request_length: int = 0
    """ngx_http_request_t.request_length ($request_length)"""
    r_err_status: int = 0
    """ngx_http_request_t.err_status (wins over headers_out.status in $status)"""
    r_request_start: int = 0
    """ngx_http_request_t.request_start (where $request begins when request_line is unset)"""
    r_loc_conf: int = 40
    """ngx_http_request_t.loc_conf (void **: the chosen location's per-module configurations)"""
    r_upstream: int = 72
    """ngx_http_request_t.upstream (after r->cache, which only a build with NGX_HTTP_CACHE has)"""
    clcf_regex: int = -1
    """ngx_http_core_loc_conf_t.regex (-1: a build without PCRE has none)"""
    clcf_flags: int = 32
    """ngx_http_core_loc_conf_t's flag bits (noname, lmt_excpt, named, exact_match, noregex)"""
    note: str = ""
    """How this layout was chosen."""

    def cflags(self) -> list[str]:
        return [
            f"-DOFF_FD={self.fd}",
            f"-DOFF_LISTENING={self.listening}",
            f"-DOFF_SENT={self.sent}",
            f"-DOFF_SOCKADDR={self.sockaddr}",
            f"-DOFF_SOCKLEN={self.socklen}",
            f"-DOFF_LOCAL_SOCKADDR={self.local_sockaddr}",
            f"-DOFF_LOCAL_SOCKLEN={self.local_socklen}",
            f"-DOFF_C_BITS={self.c_bits}",
            f"-DLISTENING_OFF_SOCKADDR={self.listening_sockaddr}",
            f"-DLISTENING_OFF_SOCKLEN={self.listening_socklen}",
            f"-DREQ_LOG={int(self.request_log)}",
            f"-DOFF_R_HEADER_IN={self.r_header_in}",
            f"-DOFF_R_STATUS={self.r_status}",
            f"-DOFF_R_REQUEST_LINE={self.r_request_line}",
            f"-DOFF_R_REQUEST_LENGTH={self.r_request_length}",
            f"-DOFF_R_ERR_STATUS={self.r_err_status}",
            f"-DOFF_R_REQUEST_START={self.r_request_start}",
            f"-DOFF_R_LOC_CONF={self.r_loc_conf}",
            f"-DOFF_R_UPSTREAM={self.r_upstream}",
            f"-DOFF_CLCF_REGEX={self.clcf_regex}",
            f"-DOFF_CLCF_FLAGS={self.clcf_flags}",
        ]


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def layout_for_version(version: str | None) -> Layout:
    """The connection layout for an nginx version string ("1.22.1"); unknown versions get
    1.22's. The request struct's offsets need the build's features: layout_for_binary."""
    if version and _version_tuple(version) >= (1, 25, 0):
        return Layout(local_sockaddr=168, local_socklen=176, c_bits=232, note=f"nginx {version}: quic field present")
    if version and _version_tuple(version) < (1, 19, 10):   # no c->start_time yet
        return Layout(c_bits=216, note=f"nginx {version}: 1.17-1.24 layout")
    return Layout(note=f"nginx {version or 'unknown version'}: 1.17-1.24 layout")


REQUEST_FEATURES = ("cache", "gzip", "headers", "x_forwarded_for", "realip", "dav", "pcre")
"""The configure-time features (NGX_HTTP_CACHE, NGX_HTTP_GZIP, NGX_HTTP_HEADERS,
NGX_HTTP_X_FORWARDED_FOR, NGX_HTTP_REALIP, NGX_HTTP_DAV, NGX_PCRE) that move the request
struct's fields the probes read."""

# nginx 1.22's ngx_http_request_t with none of REQUEST_FEATURES (x86-64)
_BASE_1_22 = {"header_in": 88, "status": 528, "request_line": 872, "request_length": 1104,
              "err_status": 1112, "request_start": 1288, "loc_conf": 40}
# ngx_http_core_loc_conf_t: name, escaped_name (two ngx_str_t), then with PCRE the regex
# pointer, then the flag bits (noname, lmt_excpt, named, exact_match, noregex)
_CLCF_REGEX, _CLCF_FLAGS = 32, 32


def features_from_configure(args: str) -> frozenset[str]:
    """The REQUEST_FEATURES a build with these configure arguments has (nginx's auto/modules,
    auto/options and auto/lib/conf; --with-compat turns on all but cache and pcre)."""
    opts = set(args.split())
    has = lambda flag: any(o == flag or o.startswith(flag + "=") for o in opts)  # noqa: E731
    compat = has("--with-compat")
    feats = set()
    if not has("--without-http-cache"):
        feats.add("cache")
    v2 = has("--with-http_v2_module")
    realip = has("--with-http_realip_module")
    if compat or v2:
        feats.add("headers")
    if compat or not has("--without-http_gzip_module") or has("--with-http_gzip_static_module") \
            or has("--with-http_gunzip_module") or v2:
        feats.add("gzip")  # its two fields are also there with NGX_HTTP_HEADERS alone
    if compat or realip or not has("--without-http_geo_module") or has("--with-http_geoip_module") \
            or not has("--without-http_proxy_module"):
        feats.add("x_forwarded_for")
    if compat or realip:
        feats.add("realip")
    if compat or has("--with-http_dav_module"):
        feats.add("dav")
    if not has("--without-pcre") and (not has("--without-http_rewrite_module") or has("--with-pcre")):
        feats.add("pcre")
    return frozenset(feats)


def request_offsets(version: str | None, features: frozenset[str]) -> dict[str, int] | None:
    """Offsets of the request struct's fields the probes read (keys as in _BASE_1_22), or
    None for nginx versions the model was not checked against."""
    if not version or _version_tuple(version)[:2] != (1, 22):
        return None
    f = features
    # ngx_http_headers_in_t: accept_encoding + via (GZIP or HEADERS), x_forwarded_for (an
    # ngx_array_t), x_real_ip, accept + accept_language (HEADERS), depth, destination,
    # overwrite, date (DAV)
    headers_in = (16 * ("gzip" in f or "headers" in f) + 40 * ("x_forwarded_for" in f) + 8 * ("realip" in f)
                  + 16 * ("headers" in f) + 32 * ("dav" in f))
    cache = 8 * ("cache" in f)  # r->cache, before header_in
    pcre = 24 * ("pcre" in f)   # ncaptures, captures, captures_data, before request_length
    b = _BASE_1_22
    return {
        "header_in": b["header_in"] + cache,
        "status": b["status"] + cache + headers_in,
        "request_line": b["request_line"] + cache + headers_in,
        "request_length": b["request_length"] + cache + headers_in + pcre,
        "err_status": b["err_status"] + cache + headers_in + pcre,
        "request_start": b["request_start"] + cache + headers_in + pcre,
        "loc_conf": b["loc_conf"],
        "clcf_regex": _CLCF_REGEX if "pcre" in f else -1,
        "clcf_flags": _CLCF_FLAGS + 8 * ("pcre" in f),
    }


_CONFIGURE = re.compile(rb"configure arguments:([^\n\0]*)")


def configure_arguments(path: str | Path) -> str | None:
    """The configure arguments compiled into an nginx binary (what ``nginx -V`` prints), or
    None when it has none (not nginx, or unreadable)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    m = _CONFIGURE.search(data)
    return m.group(1).decode("latin-1").strip() if m else None


def layout_for_binary(path: str | Path | None, version: str | None) -> Layout:
    """The layout for the nginx binary at `path`: the connection's (by version) and, when
    its version and configure arguments are known, the request struct's."""
    conn = layout_for_version(version)
    args = configure_arguments(path) if path else None
    if args is None:
        return conn
    feats = features_from_configure(args)
    conn = replace(conn, r_upstream=64 + 8 * ("cache" in feats))
    offs = request_offsets(version, feats)
    if offs is None:
        return replace(conn, note=conn.note + "; access-log values from the bytes (request struct "
                       f"offsets not known for nginx {version})")
    return replace(conn, request_log=True, r_header_in=offs["header_in"], r_status=offs["status"],
                   r_request_line=offs["request_line"], r_request_length=offs["request_length"],
                   r_err_status=offs["err_status"], r_request_start=offs["request_start"],
                   r_loc_conf=offs["loc_conf"], clcf_regex=offs["clcf_regex"], clcf_flags=offs["clcf_flags"],
                   note=conn.note + f"; request struct with {', '.join(sorted(feats)) or 'no optional fields'}")
