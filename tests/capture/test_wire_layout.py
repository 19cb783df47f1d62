"""The ctypes mirror in capture/wire.py must match the socket filter's structs in bpf/events.h."""

from __future__ import annotations

import ctypes
import subprocess
from importlib import resources
from pathlib import Path

from ngxscope.capture import wire

PROBE_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/types.h>
#include "events.h"
#define F(s, f) printf(#s "." #f " %zu %zu\n", offsetof(struct s, f), sizeof(((struct s *)0)->f));
int main(void) {
    printf("wire_listen %zu\nwire_flow_key %zu\nwire_flow %zu\n", sizeof(struct wire_listen),
           sizeof(struct wire_flow_key), sizeof(struct wire_flow));
    F(wire_listen, addr) F(wire_listen, port) F(wire_listen, family) F(wire_listen, pad)
    F(wire_flow_key, client) F(wire_flow_key, server) F(wire_flow_key, client_port)
    F(wire_flow_key, server_port)
    F(wire_flow, client_next) F(wire_flow, server_next) F(wire_flow, state) F(wire_flow, closed)
    F(wire_flow, hello_left)
    printf("WIRE_HELLO_MAX %d\n", WIRE_HELLO_MAX);
    printf("WIRE_ADDR_LEN %d\nWIRE_TLS_CAP %d\nWIRE_FLOWS %d\nWIRE_SEEN %d\nWIRE_PASSED %d\n"
           "WIRE_RETRANS %d\nWIRE_COUNTERS %d\nWIRE_SYN_SEEN %d\nWIRE_SYNACK_SEEN %d\n"
           "WIRE_ESTABLISHED %d\n", WIRE_ADDR_LEN, WIRE_TLS_CAP, WIRE_FLOWS, WIRE_SEEN, WIRE_PASSED,
           WIRE_RETRANS, WIRE_COUNTERS, WIRE_SYN_SEEN, WIRE_SYNACK_SEEN, WIRE_ESTABLISHED);
    return 0;
}
"""


def _c_layout(tmp_path: Path) -> dict[str, list[int]]:
    header_dir = Path(str(resources.files("ngxscope.bpf").joinpath("events.h"))).parent
    src = tmp_path / "probe.c"
    src.write_text(PROBE_C)
    exe = tmp_path / "probe"
    subprocess.run(["cc", "-I", str(header_dir), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {parts[0]: [int(x) for x in parts[1:]] for parts in (line.split() for line in out.splitlines())}


def test_wire_structs_match_header(tmp_path: Path) -> None:
    c = _c_layout(tmp_path)
    for struct, cls in (("wire_listen", wire.WireListen), ("wire_flow_key", wire.WireFlowKey),
                        ("wire_flow", wire.WireFlow)):
        assert c[struct] == [ctypes.sizeof(cls)], struct
        for name, _ctype in cls._fields_:
            field = getattr(cls, name)
            assert c[f"{struct}.{name}"] == [field.offset, field.size], f"{struct}.{name}"


def test_wire_constants_match_header(tmp_path: Path) -> None:
    c = _c_layout(tmp_path)
    for name in ("WIRE_ADDR_LEN", "WIRE_TLS_CAP", "WIRE_HELLO_MAX", "WIRE_FLOWS", "WIRE_SEEN", "WIRE_PASSED",
                 "WIRE_RETRANS", "WIRE_COUNTERS", "WIRE_SYN_SEEN", "WIRE_SYNACK_SEEN",
                 "WIRE_ESTABLISHED"):
        assert c[name] == [getattr(wire, name)], name


def test_listen_entries() -> None:
    assert wire.listen_entries(["127.0.0.1:8443", "[::]:443", "[::1]:80", "bogus", "1.2.3.4:x"]) == [
        (b"\0" * 10 + b"\xff\xff\x7f\0\0\1", 8443, 4),
        (bytes(16), 443, 6),
        (bytes(15) + b"\1", 80, 6),
    ]
