"""`ngxscope demo`: a private nginx (TLS + plain, two upstream backends) with traffic, captured live.

With a display it opens the window, whose capture helper is a separate
`ngxscope record --stream` process exactly as for a real nginx; without one (or with
--no-window) it shows the capture as a live log in the terminal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from .gui import run_gui
from .lab.nginx import LabNginx
from .lab.traffic import Traffic
from .model import Exchange, LifecycleEvent
from .pipeline.run import record
from .pipeline.sinks import Outputs
from .pipeline.source import helper_argv
from .pipeline.target import RecordOptions

__all__ = ["TerminalSink", "format_exchange", "run_demo"]


def format_exchange(ex: Exchange) -> str:
    """One terminal line per exchange, like an access log with more in it."""
    stamp = time.strftime("%H:%M:%S", time.localtime(ex.start)) + f".{int(ex.start * 1000) % 1000:03d}"
    status = str(ex.status) if ex.status is not None else "---"
    color = ""
    if sys.stdout.isatty() and ex.status is not None:
        color = {2: "\033[32m", 3: "\033[36m", 4: "\033[33m", 5: "\033[31m"}.get(ex.status // 100, "")
    reset = "\033[0m" if color else ""
    up = ",".join(a.addr for a in ex.upstream) if ex.upstream else ""
    target = ex.target if len(ex.target) <= 48 else ex.target[:45] + "..."
    line = (f"{stamp} w{ex.pid:<6} {'tls ' if ex.tls else '    '}{ex.client:<21} {ex.method or '?':<7}"
            f"{target:<49}{color}{status}{reset} {ex.duration_ms:8.2f} ms {ex.response_bytes:>9} B")
    if up:
        line += f"  -> {up}"
    if ex.error:
        line += f"  [{ex.error}]"
    return line


class TerminalSink:
    """Prints each exchange as it is decoded (the demo without a window)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.lock = threading.Lock()

    def write_exchange(self, ex: Exchange) -> None:
        with self.lock:
            print(format_exchange(ex), file=self.out, flush=True)

    def write_event(self, ev: LifecycleEvent) -> None:
        with self.lock:
            print(f"-- {ev.kind} {ev.pid or ''} {ev.detail}", file=self.out, flush=True)

    def write_stats(self, d: dict[str, Any]) -> None:
        pass

    def close(self, clean: bool = True) -> None:
        pass


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "minimal"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(args: argparse.Namespace) -> int:
    want_window = not args.no_window
    if args.screenshot:
        want_window = True
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if want_window and not _has_display():
        print("ngxscope: no display (DISPLAY/WAYLAND_DISPLAY unset): showing the demo in the terminal; "
              "use `ngxscope demo --screenshot demo.png` for a picture of the window", file=sys.stderr)
        want_window = False
    lab = LabNginx(workers=2)
    # SIGTERM (and SIGHUP) end the demo through its finally blocks, so the lab nginx is stopped
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    lab.start()
    stop = threading.Event()
    traffic = Traffic(lab.plain_port, lab.tls_port)
    feeder = threading.Thread(target=traffic.run_forever, args=(stop, args.rate), daemon=True, name="demo-traffic")
    print(f"demo nginx: master {lab.master_pid}, workers {lab.worker_pids()}, "
          f"http://127.0.0.1:{lab.plain_port}/ and https://127.0.0.1:{lab.tls_port}/, "
          f"upstreams {', '.join(lab.upstream_addrs)}", file=sys.stderr)
    try:
        feeder.start()
        if want_window:
            return _demo_window(args, lab)
        return _demo_terminal(args, lab)
    finally:
        stop.set()
        feeder.join(timeout=5)
        lab.stop()


def _demo_terminal(args: argparse.Namespace, lab: LabNginx) -> int:
    result = record(RecordOptions(pid=lab.master_pid), Outputs(session=args.output),
                    duration=args.duration, extra_sinks=[TerminalSink()],
                    announce=lambda line: print(line, file=sys.stderr, flush=True))
    stats = result.stats
    print(f"{stats['requests']} requests captured, {stats['lost']} events lost", file=sys.stderr)
    return 0


def _demo_window(args: argparse.Namespace, lab: LabNginx) -> int:
    argv = helper_argv(lab.master_pid, output=args.output)
    return run_gui(argv=argv, title=f"ngxscope demo — nginx master {lab.master_pid}",
                   screenshot=args.screenshot, after=args.after, duration=args.duration)
