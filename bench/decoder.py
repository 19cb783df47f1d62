#!/usr/bin/env python3
"""Decoder throughput: exchanges per second per core, from recorded raw event streams.

Step 1 (once, needs root + eBPF): record the raw ring-buffer records of a real capture
(lab nginx, 1 worker, wrk on /static/small.txt plain and TLS, plus the lab's traffic mix) to
bench/results/events-<mode>.bin. Step 2: replay each file, and a synthetic stream of
summary-only exchanges (mode "summary": every exchange sampled out, as at saturation over
the CPU budget), through the user-space stages,
timing CPU (time.process_time) per stage:

  drain    the records out of a ring buffer's memory (capture.events RingReader.drain)
  parse    ring-buffer record -> RawEvent (capture.events.parse_batch, batches of 512)
  assemble RawEvents -> Exchanges (decode.assembler.Assembler)
  encode   Exchange -> JSON line (store.codec.encode_exchange, what SessionWriter writes)
  gzip     the JSON lines through SessionWriter's gzip stream
  streamed parse + assemble + encode as the capture runs them: 512 records at a time, each
           exchange encoded and dropped (the stages above keep every event and exchange
           alive, which adds the cyclic GC's walks over them)
  all-in   streamed, but each exchange through what `record -o FILE` does with it: the
           Recorder's delivery (server block, location, answer kind named from the lab
           nginx's configuration, the recorded listeners added to its first server block)
           and the session sink (redaction, encoding, gzip to a file)

Each stream runs twice per round, alternating: `pure` (the pure-Python reference, what
NGXSCOPE_PURE_PYTHON=1 selects) and `compiled` (the C extensions of capture._fastevents,
decode._fasthttp1, decode._fastmodel and store._fastcodec, when built: scripts/build_ext.py).

Then, in the same run, HTTP/1 head parsing: today's parser against dpkt.http (speed on
ordinary heads; tolerance on heads a real lab nginx accepts; bench/_heads.py).

    .venv/bin/python bench/decoder.py [--record] [--seconds 3] [--repeat 3] [--heads-only]

Prints a table and writes bench/results/decoder.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, pin_lab, urls, write_result, wrk
from _heads import heads_table

from ngxscope.capture import events as evmod
from ngxscope.capture import ring as ringmod
from ngxscope.decode import emitter as emmod
from ngxscope.decode import http1 as h1mod
from ngxscope.decode.assembler import Assembler
from ngxscope.model import Exchange
from ngxscope.store import codec as codecmod
from ngxscope.store.codec import encode_exchange
from ngxscope.store.session import SessionWriter

_LEN = struct.Struct("<I")


def record(seconds: float) -> None:
    """Capture raw records from a real nginx into events-<mode>.bin (length-prefixed)."""
    from ngxscope.capture import tracer as trmod
    from ngxscope.lab.traffic import Traffic
    from ngxscope.pipeline.recorder import Recorder
    from ngxscope.pipeline.target import RecordOptions

    raw: list[bytes] = []

    def on_records(self: Any, records: list[bytes]) -> None:  # RingReader path
        raw.extend(records)

    trmod.Tracer._on_records = on_records  # type: ignore[method-assign]

    class Null:
        def write_exchange(self, ex: Exchange) -> None: ...
        def write_event(self, ev: Any) -> None: ...
        def write_stats(self, d: Any) -> None: ...

    from ngxscope.lab.nginx import LabNginx

    with LabNginx(workers=1) as lab:
        pin_lab(lab)
        for mode, url in urls(lab).items():
            rec = Recorder(RecordOptions(pid=lab.master_pid), [Null()])
            rec.start()
            raw.clear()
            wrk(url, seconds, 50, rate=8000)
            if mode == "plain":  # the mix too: upstreams, bodies, chunked, pipelining
                Traffic(lab.plain_port, lab.tls_port).run_mix(rounds=4, concurrency=4)
            time.sleep(1.0)
            rec.stop("done")
            rec.join()
            RESULTS.mkdir(parents=True, exist_ok=True)
            path = RESULTS / f"events-{mode}.bin"
            with open(path, "wb") as fh:
                for r in raw:
                    fh.write(_LEN.pack(len(r)))
                    fh.write(r)
            print(f"recorded {len(raw)} events to {path}", flush=True)


def load(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


COMPILED_PARSE_HEAD = h1mod.parse_head
COMPILED_NEW = emmod.new_exchange
COMPILED_LINE = getattr(codecmod, "_fast_line", None)  # store._fastcodec (None in older trees)


def paths() -> list[str]:
    """pure, and compiled when the extensions are built (and not turned off)."""
    built = evmod._fast is not None and h1mod._fast is not None
    return ["pure", "compiled"] if built else ["pure"]


RING = 4 << 20
BATCH = 512


def ring_image(raw: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """The records laid out as in a BPF ring buffer's data pages (8-byte record headers,
    padding), RING bytes at a time: (the image, the (start, end) positions to drain)."""
    image = bytearray()
    spans: list[tuple[int, int]] = []
    start = pos = 0
    for r in raw:
        rec = struct.pack("<II", len(r), 0) + r
        rec += bytes(-len(rec) % 8)
        if pos + len(rec) - start > RING:
            spans.append((start, pos))
            start = pos = (pos + RING - 1) // RING * RING
            image.extend(bytes(pos - len(image)))
        image += rec
        pos += len(rec)
    spans.append((start, pos))
    image.extend(bytes(-len(image) % RING))
    return bytes(image), spans


def replay(raw: list[bytes], path: str = "compiled", cmap: Any = None) -> dict[str, float]:
    pure = path == "pure"
    h1mod.parse_head = h1mod.parse_head_py if pure else COMPILED_PARSE_HEAD  # type: ignore[assignment]
    emmod.new_exchange = emmod.new_exchange_py if pure else COMPILED_NEW
    codecmod._fast_line = None if pure else COMPILED_LINE  # encode_exchange's compiled line
    parse_batch = evmod.parse_batch_py if pure else evmod.parse_batch
    clock = time.time() - time.monotonic()
    image, cap = ring_image(raw)
    drain = ringmod.drain_py if pure else ringmod._fast.drain  # type: ignore[union-attr]
    data = memoryview(image) if pure else image
    td = time.process_time()
    drained = 0
    for start, end in cap:  # the capture thread: records out of the ring's memory
        recs, _ = drain(data, 0, end - start, start, RING - 1)  # each chunk its own ring
        drained += len(recs)
    assert drained == len(raw)
    t0 = time.process_time()
    for i in range(0, len(raw), BATCH):  # as the capture thread does: a batch per poll, short-lived
        parse_batch(raw[i : i + BATCH], clock)
    t1 = time.process_time()
    events = parse_batch(raw, clock)  # kept for the next stage (not timed)
    t1b = time.process_time()
    exchanges: list[Exchange] = []
    asm = Assembler(exchanges.append, None, attach_ts=0.0)
    feed = asm.feed
    for ev in events:
        feed(ev)
    asm.finish(time.time())
    t2 = time.process_time()
    lines = [encode_exchange(ex) for ex in exchanges]
    t3 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        w = SessionWriter(os.path.join(tmp, "s.ngxs"), {})
        for line in lines:
            w._emit(line)
        w.close()
        size = os.path.getsize(os.path.join(tmp, "s.ngxs"))
    t4 = time.process_time()
    n = max(1, len(exchanges))
    streamed = streamed_us(raw, parse_batch, clock)
    allin = allin_us(raw, parse_batch, clock, cmap)
    cpu = (t0 - td) + (t1 - t0) + (t2 - t1b) + (t3 - t2) + (t4 - t3)
    return {"events": len(raw), "exchanges": len(exchanges), "gzip_bytes": size,
            "drain_us": (t0 - td) / n * 1e6, "parse_us": (t1 - t0) / n * 1e6,
            "assemble_us": (t2 - t1b) / n * 1e6, "encode_us": (t3 - t2) / n * 1e6, "gzip_us": (t4 - t3) / n * 1e6,
            "total_us": cpu / n * 1e6, "exchanges_per_s": n / cpu,
            "decode_only_per_s": n / ((t0 - td) + (t1 - t0) + (t2 - t1b)), "streamed_us": streamed,
            "allin_us": allin}


def _feed_batches(asm: Assembler, raw: list[bytes], parse_batch: Any, clock: float) -> float:
    """Parse `raw` in the capture's batches into `asm` and finish it; returns the CPU time
    (process_time) at which feeding started."""
    feed = asm.feed
    t = time.process_time()
    for i in range(0, len(raw), BATCH):
        for ev in parse_batch(raw[i : i + BATCH], clock):
            feed(ev)
    asm.finish(time.time())
    return t


def streamed_us(raw: list[bytes], parse_batch: Any, clock: float) -> float:
    """µs of CPU per exchange for parse + assemble + encode as the capture runs them: a batch
    of records at a time, each exchange encoded and dropped (nothing kept alive)."""
    count = [0]

    def sink(ex: Exchange) -> None:
        encode_exchange(ex)
        count[0] += 1

    asm = Assembler(sink, None, attach_ts=0.0)
    t = _feed_batches(asm, raw, parse_batch, clock)
    return (time.process_time() - t) / max(1, count[0]) * 1e6


def allin_us(raw: list[bytes], parse_batch: Any, clock: float, cmap: Any) -> float:
    """µs of CPU per exchange for everything the capture's decode thread does with a record
    batch under `record -o FILE` (see the module doc): parse, assemble, the Recorder's
    naming, the session sink."""
    from ngxscope.pipeline.recorder import Recorder
    from ngxscope.pipeline.sinks import Outputs, open_sinks
    from ngxscope.pipeline.target import RecordOptions

    with tempfile.TemporaryDirectory() as tmp:
        sinks = open_sinks(Outputs(session=os.path.join(tmp, "s.ngxs")))
        rec = Recorder(RecordOptions(pid=1), sinks.sinks)
        rec.config = cmap
        asm = Assembler(rec._deliver, rec.emit_event, attach_ts=0.0)
        t = _feed_batches(asm, raw, parse_batch, clock)
        sinks.close()
        return (time.process_time() - t) / max(1, rec.exchanges) * 1e6


def lab_config(raws: list[list[bytes]]) -> Any:
    """The lab nginx's configuration, its first server block also listening where the
    recorded streams' connections arrived (they were recorded on another lab instance)."""
    from ngxscope.capture.nginxconf import load_config
    from ngxscope.lab.nginx import LabNginx

    with LabNginx(workers=1) as lab:
        cmap = load_config(str(lab.conf_path))
    ports = {int(ev.local.rsplit(":", 1)[1]) for raw in raws for ev in evmod.parse_batch_py(raw[:5000], 0.0)
             if ev.kind == evmod.EV_OPEN and ev.flags & evmod.EVF_CLIENT and ":" in ev.local}
    cmap.servers[0].listens.extend(("127.0.0.1", port, False) for port in sorted(ports))
    return cmap


def summary_stream(connections: int = 2000, per_conn: int = 10) -> list[bytes]:
    """Ring-buffer records of keep-alive connections whose exchanges were all sampled out
    (what the capture sees at saturation over its CPU budget): an EV_OPEN, then one kernel
    summary (EV_REQ_DONE + the request's first bytes) per exchange."""
    def sockaddr(port: int) -> bytes:
        return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton("127.0.0.1") + bytes(20)

    line = b"GET /static/small.txt HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\n"
    line = line[: evmod.LINE_CAP].ljust(evmod.LINE_CAP, b"\0")
    flags = evmod.EVF_CLIENT
    recs, t = [], 10**12
    for c in range(connections):
        fd, cts = 10 + c % 50, t
        recs.append(bytes(evmod.EvHeader(ts=t, conn_ts=cts, clock=t, pid=4242, tid=4242, fd=fd,
                                         kind=evmod.EV_OPEN, flags=flags))
                    + evmod._OPEN_TAIL.pack(sockaddr(40000 + c % 20000), sockaddr(8080), 16, 16))
        for i in range(1, per_conn + 1):
            t += 50_000
            recs.append(bytes(evmod.EvHeader(ts=t, conn_ts=cts, recvd=90 * i, sent=240 * i, clock=t - t % 1_000_000,
                                             pid=4242, clock_span_us=1001, fd=fd, status=200, span_us=41,
                                             kind=evmod.EV_REQ_DONE,
                                             flags=flags | evmod.EVF_SHED | evmod.EVF_SAMPLED, seq=i)) + line)
        t += 50_000
    return recs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="(re)record the event streams first")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--heads-only", action="store_true", help="only the HTTP head parsers (no eBPF)")
    args = ap.parse_args()
    res: dict[str, Any] = {"machine": machine(), "modes": {}}
    if not args.heads_only:
        decode_modes(args, res)
    from ngxscope.lab.nginx import LabNginx

    with LabNginx(workers=1) as lab:
        res["heads"] = heads_table(args.repeat, lab.plain_port)
    print(f"wrote {write_result('decoder', res)}")
    return 0


def decode_modes(args: argparse.Namespace, res: dict[str, Any]) -> None:
    if args.record or not (RESULTS / "events-plain.bin").exists():
        record(args.seconds)
    res["uptime"] = os.getloadavg()
    print(f"{'mode':7} {'path':8} {'events':>8} {'exch':>7} {'drain':>7} {'parse':>7} {'assem':>7} {'encode':>7} {'gzip':>7} "
          f"{'total us':>8} {'exch/s/core':>11} {'decode-only/s':>13} {'streamed':>8} {'all-in':>7}")
    streams = {mode: summary_stream() if mode == "summary" else load(RESULTS / f"events-{mode}.bin")
               for mode in ("plain", "tls", "summary")}
    cmap = lab_config([streams["plain"], streams["tls"]])
    for mode in ("plain", "tls", "summary"):
        raw = streams[mode]
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for path in paths():  # alternating within each round
                r = replay(raw, path, cmap)
                if path not in best or r["total_us"] < best[path]["total_us"]:
                    best[path] = r
        res["modes"][mode] = best
        for path, b in best.items():
            print(f"{mode:7} {path:8} {b['events']:8.0f} {b['exchanges']:7.0f} {b['drain_us']:7.2f} {b['parse_us']:7.2f} "
                  f"{b['assemble_us']:7.2f} {b['encode_us']:7.2f} {b['gzip_us']:7.2f} "
                  f"{b['total_us']:8.2f} {b['exchanges_per_s']:11.0f} {b['decode_only_per_s']:13.0f} {b['streamed_us']:8.2f} {b['allin_us']:7.2f}")
    print(f"(µs of CPU per exchange, best of {args.repeat}; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())
