"""`ngxscope replay FILE --id N [--to ADDR] [--upstream K] [--times K] [--yes]`.

Sends one recorded request again (store/replay.py) — to the nginx address that received it,
or with `--upstream K` as nginx sent it to the K-th upstream peer, or to an address typed
with `--to` — and prints each answer and its difference from the recorded response.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ngxscope.store.copyas import from_attempt, from_exchange
from ngxscope.store.foreign import read_foreign
from ngxscope.store.replay import (
    TAG,
    ReplayError,
    check_target,
    diff,
    needs_confirmation,
    send,
)
from ngxscope.store.session import SessionReader

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="session file (.ngxs), HAR or pcap/pcapng")
    p.add_argument("--id", type=int, required=True, help="capture id of the request")
    p.add_argument("--to", metavar="ADDR",
                   help="send to this host:port (default: where the original went, if loopback)")
    p.add_argument("--upstream", type=int, metavar="K",
                   help="replay the request as nginx sent it to its K-th upstream attempt "
                        "(1 = first), directly to that peer")
    p.add_argument("--times", type=int, default=1, metavar="K", help="send it K times (default 1)")
    p.add_argument("--yes", action="store_true",
                   help="do not ask before replaying a method that is not idempotent (POST…)")
    p.add_argument("--no-tag", action="store_true",
                   help=f"do not add the {TAG} header (the capture will not know it is a replay)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S")


def _find(path: str, ex_id: int) -> Any:
    foreign = read_foreign(path)  # a HAR or a pcap/pcapng replays too
    exchanges = foreign.exchanges if foreign is not None else SessionReader(path).exchanges()
    for ex in exchanges:
        if ex.id == ex_id:
            return ex
    raise ReplayError(f"{path} has no request with id {ex_id}")


def _confirm(method: str, target: str, to: str, yes: bool, times: int) -> None:
    if yes or not needs_confirmation(method):
        return
    what = f"{method} {target} to {to}" + (f" {times} times" if times > 1 else "")
    if not sys.stdin.isatty():
        raise ReplayError(f"{method} is not idempotent: add --yes to replay {what}")
    answer = input(f"{method} is not idempotent. Replay {what}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise ReplayError("not confirmed")


def run(args: argparse.Namespace) -> int:
    if args.times < 1:
        raise ReplayError("--times must be at least 1")
    ex = _find(args.file, args.id)
    if not ex.method or ex.is_tcp:
        raise ReplayError(f"request {args.id} has no HTTP request line to replay")
    if args.upstream is not None:
        if not 1 <= args.upstream <= len(ex.upstream):
            raise ReplayError(f"request {args.id} has {len(ex.upstream)} upstream attempt(s)")
        attempt = ex.upstream[args.upstream - 1]
        spec = from_attempt(ex, attempt)
        recorded_status = attempt.status
    else:
        spec = from_exchange(ex)
        recorded_status = ex.status
    to = check_target(spec.connect, args.to)
    _confirm(spec.method, spec.target, to, args.yes, args.times)
    notes = list(spec.notes)
    if spec.version.startswith("HTTP/2"):
        notes.append("recorded over HTTP/2: replayed as HTTP/1.1")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    tag = None if args.no_tag else ex.id
    worst = 0
    for i in range(args.times):
        result = send(spec, to, tag=tag, timeout=args.timeout)
        d = diff(ex, result)
        if args.upstream is not None:
            d.status = (recorded_status, result.status)
        same = d.status[0] == d.status[1]
        print(f"#{i + 1} {spec.method} {spec.target} → {to}: {result.status} {result.reason} "
              f"in {result.duration_ms:.1f} ms (recorded {recorded_status})"
              + ("" if same else "  STATUS DIFFERS"))
        if i == 0 or not d.same:
            for k, v in d.added:
                print(f"  + {k}: {v}")
            for k, v in d.removed:
                print(f"  - {k}: {v}")
            for k, old, new in d.changed:
                print(f"  ~ {k}: {old} → {new}")
            if d.volatile:
                print(f"  (changed as expected: {', '.join(d.volatile)})")
            if not d.body_equal:
                print("  body differs:")
                for line in d.body_diff:
                    print(f"    {line}")
        if result.error:
            print(f"  {result.error}")
        worst = max(worst, 0 if same else 3)
    return worst
