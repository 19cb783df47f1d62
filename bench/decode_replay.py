#!/usr/bin/env python3
"""Replay recorded ring-buffer streams through the decoder, to prove a refactor changes nothing.

`dump` feeds each recorded stream (bench/results/events-*.bin, as decoder.py --record writes
them; `summary` adds decoder.py's synthetic summary-only stream as events-summary.bin)
through the `Assembler` of whatever ngxscope PYTHONPATH points at: whole, and with every
7th / 13th event dropped (the loss paths). Every exchange, lifecycle event, WebSocket tunnel
summary, the counters and the upstream pool go to a JSON-lines file. Run it on two trees,
then `compare` the two files:

    PYTHONPATH=$PWD/app .venv/bin/python bench/decode_replay.py summary
    PYTHONPATH=/old/app .venv/bin/python bench/decode_replay.py dump old.jsonl [events-*.bin...]
    PYTHONPATH=$PWD/app .venv/bin/python bench/decode_replay.py dump new.jsonl [events-*.bin...]
    .venv/bin/python bench/decode_replay.py compare old.jsonl new.jsonl

`compare` reads an exchange written before session format 4 as format 4 does (its
summary-only error note becomes `summary_only`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder import load, summary_stream

from ngxscope.capture import events as evmod
from ngxscope.decode.assembler import Assembler
from ngxscope.model import Exchange, LifecycleEvent

RESULTS = Path(__file__).resolve().parent / "results"
_V3_NOTES = ("payload shed", "payload not captured")


def _enc(obj: object) -> str:
    return obj.hex() if isinstance(obj, bytes) else repr(obj)


def write_summary() -> int:
    path = RESULTS / "events-summary.bin"
    recs = summary_stream(300, 10)
    with open(path, "wb") as fh:
        for r in recs:
            fh.write(struct.pack("<I", len(r)) + r)
    print(f"wrote {len(recs)} records to {path}")
    return 0


def dump(out_path: Path, files: list[Path]) -> int:
    streams: dict[str, list[bytes]] = {p.stem: load(p) for p in files}
    n = 0
    with open(out_path, "w") as out:
        def put(*rec: Any) -> None:
            out.write(json.dumps(list(rec), default=_enc, sort_keys=True) + "\n")

        for name, raw in streams.items():
            for drop in (0, 7, 13):
                evs = evmod.parse_batch(raw, 1000.0)
                if drop:
                    evs = [e for i, e in enumerate(evs) if i % drop != 5]
                exs: list[Exchange] = []
                lcs: list[LifecycleEvent] = []
                tunnels: list[tuple[int, str, float]] = []
                asm = Assembler(exs.append, lcs.append, attach_ts=evs[0].ts, peer_of=lambda p, f: f"peer{p}:{f}")
                asm.on_websocket = lambda ws, ts, keep=tunnels.append: keep((ws.exchange_id, ws.summary(ts, "x"), ts))
                for e in evs:
                    asm.feed(e)
                asm.finish(evs[-1].ts + 1)
                for ex in exs:
                    put(name, drop, "ex", ex.to_dict())
                for lc in lcs:
                    put(name, drop, "lc", lc.to_dict())
                for t in tunnels:
                    put(name, drop, "ws", t)
                put(name, drop, "stats", dataclasses.asdict(asm.stats))
                put(name, drop, "pool", asm.upstreams.pool_stats())
                n += len(exs)
                print(f"{name:14} drop 1/{drop or '-':2}  {len(exs):6} exchanges  {asm.stats}", file=sys.stderr)
    print(f"{n} exchanges written to {out_path}")
    return 0


def _normal(line: str) -> str:
    rec = json.loads(line)
    if rec[2] == "ex" and "summary_only" not in rec[3]:
        ex = rec[3]
        err = ex.get("error")
        ex["summary_only"] = isinstance(err, str) and err.startswith(_V3_NOTES)
        if ex["summary_only"]:
            ex["error"] = None
    return json.dumps(rec, sort_keys=True)


def compare(a_path: Path, b_path: Path) -> int:
    a = a_path.read_text().splitlines()
    b = b_path.read_text().splitlines()
    if len(a) != len(b):
        print(f"{len(a)} records vs {len(b)}")
        return 1
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if _normal(x) != _normal(y)]
    print(f"{len(a)} records compared, {len(diff)} differ")
    for i in diff[:3]:
        print("-", _normal(a[i])[:400])
        print("+", _normal(b[i])[:400])
    return 1 if diff else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("summary")
    d = sub.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("files", type=Path, nargs="*")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "summary":
        return write_summary()
    if args.cmd == "dump":
        files = args.files or sorted(RESULTS.glob("events-*.bin"))
        return dump(args.out, files)
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
