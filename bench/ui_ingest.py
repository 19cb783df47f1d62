"""How fast the window absorbs exchanges, and how long the event loop stalls meanwhile.

Runs the real MainWindow (offscreen unless a display is set) fed by SyntheticSource at
each rate for a few seconds, with a 10 ms probe timer measuring the largest gap between
its ticks (an event-loop stall). Prints exchanges/s absorbed and the max/p99 stall.

    .venv/bin/python bench/ui_ingest.py [--rates 20000 50000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "app"))

from PySide6.QtCore import QEventLoop, QSettings, QTimer

from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.ui.app import ensure_app
from ngxscope.ui.mainwindow import MainWindow


def measure(rate: float, seconds: float, *, filter_text: str = "") -> dict[str, float]:
    """Feed the window at `rate` for `seconds`; return absorbed rate and stall figures."""
    ensure_app()
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(os.path.join(tmp, "bench.ini"), QSettings.Format.IniFormat)
        win = MainWindow(None, title="bench", settings=settings)
        win.show()
        if filter_text:
            win.filter_bar.set_text(filter_text)
        gaps: list[float] = []
        when: list[float] = []
        last = [time.perf_counter()]

        def probe() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            when.append(now - t0)
            last[0] = now

        probe_timer = QTimer()
        probe_timer.setInterval(10)
        probe_timer.timeout.connect(probe)
        loop = QEventLoop()
        src = SyntheticSource(rate)
        win.set_source(src)
        t0 = time.perf_counter()
        last[0] = t0
        probe_timer.start()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        probe_timer.stop()
        elapsed = time.perf_counter() - t0
        absorbed = win.store.total
        win.close()
        win.deleteLater()
    worst_at = when[gaps.index(max(gaps))] if gaps else 0.0
    gaps.sort()
    return {
        "rate": rate,
        "absorbed_per_s": absorbed / elapsed,
        "absorbed": absorbed,
        "max_stall_ms": (gaps[-1] if gaps else 0.0) * 1000,
        "p99_stall_ms": (gaps[int(len(gaps) * 0.99)] if gaps else 0.0) * 1000,
        "worst_at_s": worst_at,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--filter", default="", help="a filter applied during the run")
    args = ap.parse_args()
    for rate in args.rates:
        measure(1000, 0.5)  # warm-up: first paint, font and pyqtgraph caches
        r = measure(rate, args.seconds, filter_text=args.filter)
        print(f"offered {r['rate']:>8,.0f}/s  absorbed {r['absorbed_per_s']:>9,.0f}/s "
              f"({r['absorbed']:,.0f} in {args.seconds:g} s)  max stall "
              f"{r['max_stall_ms']:6.1f} ms  p99 stall {r['p99_stall_ms']:5.1f} ms (worst at {r['worst_at_s']:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
