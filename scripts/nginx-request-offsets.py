#!/usr/bin/env python3
"""Check capture/layout.py's request-struct model against nginx's own headers.

Usage: scripts/nginx-request-offsets.py NGINX_SOURCE_DIR (a configured tree: objs/ exists,
e.g. `apt-get source nginx` then ./configure). Compiles offsetof() of the fields the probes
read with every combination of the features that move them and compares each with
capture.layout.request_offsets(); prints the mismatches, exits 1 when there are any.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "app"))
from ngxscope.capture.layout import REQUEST_FEATURES, request_offsets

PROBE = r"""
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    printf("header_in %zu\n", offsetof(ngx_http_request_t, header_in));
    printf("status %zu\n", offsetof(ngx_http_request_t, headers_out.status));
    printf("request_line %zu\n", offsetof(ngx_http_request_t, request_line));
    printf("request_length %zu\n", offsetof(ngx_http_request_t, request_length));
    printf("err_status %zu\n", offsetof(ngx_http_request_t, err_status));
    printf("request_start %zu\n", offsetof(ngx_http_request_t, request_start));
    printf("loc_conf %zu\n", offsetof(ngx_http_request_t, loc_conf));
#if (NGX_PCRE)
    printf("clcf_regex %zu\n", offsetof(ngx_http_core_loc_conf_t, regex));
#else
    printf("clcf_regex -1\n");
#endif
    /* the flag bits: the word after name, escaped_name (and regex) */
    ngx_http_core_loc_conf_t clcf;
    memset(&clcf, 0, sizeof(clcf));
    clcf.noname = 1; clcf.named = 1; clcf.exact_match = 1; clcf.noregex = 1;
    size_t at = 0; unsigned char *p = (unsigned char *) &clcf;
    for (size_t i = 16; i < sizeof(clcf); i++) if (p[i]) { at = i; break; }
    unsigned bits; memcpy(&bits, p + at, sizeof(bits));
    printf("clcf_flags %zu\n", at);
    printf("clcf_bits %u\n", bits);
    return 0;
}
"""
DEFINES = {"cache": ["NGX_HTTP_CACHE"], "gzip": ["NGX_HTTP_GZIP"], "headers": ["NGX_HTTP_HEADERS"],
           "x_forwarded_for": ["NGX_HTTP_X_FORWARDED_FOR"], "realip": ["NGX_HTTP_REALIP"],
           "dav": ["NGX_HTTP_DAV"], "pcre": ["NGX_PCRE", "NGX_PCRE2"]}
OTHER = ["NGX_COMPAT", "NGX_HTTP_SSL", "NGX_HTTP_V2", "NGX_THREADS"]


def main() -> int:
    if len(sys.argv) != 2 or not Path(sys.argv[1], "objs", "ngx_auto_config.h").is_file():
        print("usage: nginx-request-offsets.py NGINX_SOURCE_DIR (configured: objs/ngx_auto_config.h)", file=sys.stderr)
        return 2
    src = Path(sys.argv[1]).resolve()
    version = re.search(r'NGINX_VERSION\s+"([^"]+)"', (src / "src/core/nginx.h").read_text())
    assert version
    with tempfile.TemporaryDirectory() as tmp:
        conf = (src / "objs/ngx_auto_config.h").read_text()
        for name in [d for ds in DEFINES.values() for d in ds] + OTHER:
            conf = re.sub(rf"#ifndef {name}\n#define {name}  1\n#endif\n", "", conf)
        Path(tmp, "ngx_auto_config.h").write_text(conf)
        Path(tmp, "ngx_auto_headers.h").write_text((src / "objs/ngx_auto_headers.h").read_text())
        Path(tmp, "probe.c").write_text(PROBE)
        inc = [f"-I{src}/src/{d}" for d in ("core", "event", "event/modules", "os/unix", "http",
                                             "http/modules", "http/v2")] + [f"-I{tmp}"]
        bad = 0
        combos = list(itertools.product([0, 1], repeat=len(REQUEST_FEATURES) + 1))
        for bits in combos:
            feats = frozenset(f for f, b in zip(REQUEST_FEATURES, bits, strict=False) if b)
            flags = [f"-D{d}=1" for f in feats for d in DEFINES[f]] + (["-DNGX_COMPAT=1"] if bits[-1] else [])
            subprocess.run(["cc", *inc, *flags, f"{tmp}/probe.c", "-o", f"{tmp}/probe"], check=True)
            out = subprocess.run([f"{tmp}/probe"], capture_output=True, text=True, check=True).stdout
            real = {k: int(v) for k, v in (line.split() for line in out.splitlines())}
            model = request_offsets(version.group(1), feats)
            if model is not None:
                model = {**model, "clcf_bits": 0x1d}  # noname, named, exact_match, noregex: bits 0, 2, 3, 4
            if model != real:
                bad += 1
                print(f"{sorted(feats)} compat={bits[-1]}: model {model} != headers {real}")
    print(f"nginx {version.group(1)}: {len(combos)} feature combinations, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
