"""The ctypes mirror in capture/events.py (and capture/reqlog.py) must match bpf/events.h byte for byte, and its
constants (event kinds, flags, counter indices, ring-buffer positions) the header's #defines."""

from __future__ import annotations

import ctypes
import re
import subprocess
from importlib import resources
from pathlib import Path

from ngxscope.capture import events, reqlog, sockaddr, wire

STRUCTS = {"ev_header": events.EvHeader, "ev_open": events.EvOpen, "ev_done": events.EvDone,
           "ev_reqlog": events.EvReqLog, "ev_upstate": reqlog.EvUpstate, **events.AGG_STRUCTS}


def _header_path() -> Path:
    return Path(str(resources.files("ngxscope.bpf").joinpath("events.h")))


def _members(cls: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every field of `cls` as C names it: the members of anonymous
    unions included, each under its own name."""
    out: list[tuple[str, int, int]] = []
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ctype in cls._fields_:  # type: ignore[misc]
        if name in anonymous:
            base = getattr(cls, name).offset
            for sub, subtype in ctype._fields_:
                out.append((sub, base + getattr(ctype, sub).offset, ctypes.sizeof(subtype)))
        else:
            field = getattr(cls, name)
            out.append((name, field.offset, field.size))
    return out


def _probe_source() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>", '#include "events.h"',
             "int main(void) {"]
    for struct, cls in STRUCTS.items():
        lines.append(f'    printf("{struct} %zu\\n", sizeof(struct {struct}));')
        for name, _off, _size in _members(cls):
            lines.append(f'    printf("{struct}.{name} %zu %zu\\n", offsetof(struct {struct}, {name}), '
                         f"sizeof(((struct {struct} *)0)->{name}));")
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def _c_layout(tmp_path: Path) -> dict[str, list[int]]:
    src = tmp_path / "probe.c"
    src.write_text(_probe_source())
    exe = tmp_path / "probe"
    subprocess.run(["cc", "-I", str(_header_path().parent), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {parts[0]: [int(x) for x in parts[1:]] for parts in (line.split() for line in out.splitlines())}


def _defines() -> dict[str, int]:
    """Every `#define NAME <integer>` of the header (the include guard has no value)."""
    text = _header_path().read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)}


def test_struct_layout_matches_header(tmp_path: Path) -> None:
    c = _c_layout(tmp_path)
    for struct, cls in STRUCTS.items():
        assert c[struct] == [ctypes.sizeof(cls)], struct
        for name, off, size in _members(cls):
            assert c[f"{struct}.{name}"] == [off, size], f"{struct}.{name}"


def test_header_fields_have_their_per_kind_names() -> None:
    names = {name for name, _o, _s in _members(events.EvHeader)}
    assert {"offset", "recvd", "ret", "sock_err", "owner", "sent", "cptr", "child", "rid", "tid",
            "clock_span_us", "len", "status", "cap", "span_us"} <= names
    assert "aux" not in names, "one name per meaning, no catch-all"


def test_struct_unpacker_matches_the_mirror() -> None:
    """parse_batch unpacks with a struct format: the same slots as the ctypes mirror."""
    h = events.EvHeader(ts=1, conn_ts=2, offset=3, owner=4, clock=5, pid=6, rid=7, fd=-8, len=9, cap=10,
                        kind=11, flags=12, seq=13)
    assert events._HEADER.unpack(bytes(h)) == (1, 2, 3, 4, 5, 6, 7, -8, 9, 10, 11, 12, 13)


def test_constants_match_header() -> None:
    defines = _defines()
    assert "NGXSCOPE_EVENTS_H" not in defines
    counters = {name: value for name, value in defines.items() if name.startswith("CNT_")}
    for name, value in defines.items():
        if name.startswith("CNT_"):
            continue
        # the socket filter's constants are mirrored by its own module (capture.wire), the
        # REQ_LOG record's by capture.reqlog, the sockaddr size by capture.sockaddr
        mirror = next((m for m in (wire, reqlog, sockaddr) if name in m.__all__), events)
        assert getattr(mirror, name) == value, name
    # COUNTER_NAMES[i] is the lower-case name of CNT_<NAME> = i; CNT_MAX their number
    cnt_max = counters.pop("CNT_MAX")
    assert cnt_max == events.CNT_MAX == len(events.COUNTER_NAMES)
    assert sorted(counters.values()) == list(range(cnt_max))
    assert {events.COUNTER_NAMES[i] for i in counters.values()} == {n[4:].lower() for n in counters}
    for name, value in counters.items():
        assert events.COUNTER_NAMES[value] == name[4:].lower(), name
    # every kind, flag and position of the header is known here, and nothing more
    mirrored = {n for n in dir(events) if re.fullmatch(r"(EV|EVF|RB|KEEP|HIST)_[A-Z0-9_]+", n)} - {"KEEP_NAMES"}
    assert mirrored == {n for n in defines if n.startswith(("EV_", "EVF_", "RB_", "KEEP_", "HIST_"))}


def test_parse_event_round_trip() -> None:
    h = events.EvHeader(ts=2_000_000_000, conn_ts=5, offset=7, owner=9, pid=10, rid=11, fd=12, len=5, cap=3,
                        kind=events.EV_SEND, flags=events.EVF_TLS | events.EVF_TRUNCATED, seq=4)
    ev = events.parse_event(bytes(h) + b"abc", clock_offset=100.0)
    assert (ev.kind, ev.pid, ev.fd, ev.conn_ts, ev.offset, ev.aux, ev.length, ev.data, ev.seq, ev.rid) == (
        events.EV_SEND, 10, 12, 5, 7, 9, 5, b"abc", 4, 11)
    assert ev.ts == 102.0


def test_parse_event_reads_each_kind_by_its_names() -> None:
    done = events.EvHeader(ts=3_000_000_000, conn_ts=5, recvd=100, sent=2000, clock=2_990_000_000, pid=10,
                           clock_span_us=1501, fd=12, status=404, span_us=2001, kind=events.EV_REQ_DONE,
                           flags=events.EVF_CLIENT, seq=2)
    ev = events.parse_event(bytes(done), clock_offset=0.0)
    assert (ev.offset, ev.aux, ev.status, ev.seq, ev.length) == (100, 2000, 404, 2, 0)
    assert abs(ev.span - 0.002) < 1e-12 and abs(ev.clock_span - 0.0015) < 1e-12
    h2 = events.EvHeader(ts=3_000_000_000, conn_ts=5, recvd=100, sent=77, pid=10, rid=0xBEEF, fd=12,
                         kind=events.EV_REQ_DONE, flags=events.EVF_CLIENT | events.EVF_H2STREAM, seq=0)
    ev = events.parse_event(bytes(h2), clock_offset=0.0)
    assert (ev.aux, ev.rid, ev.status, ev.span) == (77, 0xBEEF, 0, -1.0)
    sess = events.EvHeader(ts=1, conn_ts=5, recvd=10, sent=20, pid=10, rid=33, fd=12, status=502,
                           kind=events.EV_STREAM_DONE, flags=events.EVF_CLIENT)
    ev = events.parse_event(bytes(sess), clock_offset=0.0)
    assert (ev.offset, ev.aux, ev.status, ev.rid, ev.length) == (10, 20, 502, 33, 0)
    fork = events.EvHeader(ts=1, pid=10, parent=10, child=11, tid=10, fd=-1, kind=events.EV_FORK)
    ev = events.parse_event(bytes(fork), clock_offset=0.0)
    assert (ev.aux, ev.pid, ev.fd) == (11, 10, -1)
