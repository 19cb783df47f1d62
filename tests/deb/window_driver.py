"""The installed window, driven the way a person would, as the unprivileged test user.

    /usr/lib/ngxscope/bin/python3 -I window_driver.py PID SESSION PNG

Run by tests/deb/test_deb.py under Xvfb with the package's own interpreter (-I: the
checkout is not on the import path, so this is the installed ngxscope). Capture → Attach on
PID goes through `MainWindow.attach` → the default source → pkexec and the installed
capture helper. Protocol on stdout, one JSON object per line:
    {"attached": true}      the helper's probes are live (send traffic now)
    {"result": {...}}       the end: rows, state, error, helper argv, saved session
and on stdin the number of requests sent. It waits until that many rows are shown (or the
helper died, or 90 s), saves the session through File → Save's handler, renders the window
to PNG, and closes it.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from ngxscope.ui.app import ensure_app
from ngxscope.ui.launch import connect_file_hooks
from ngxscope.ui.mainwindow import MainWindow


def say(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def pump(app: object, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()  # type: ignore[attr-defined]
        time.sleep(0.02)


def main() -> int:
    pid, session, png = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    want: list[int] = []
    threading.Thread(target=lambda: want.append(int(sys.stdin.readline() or 0)), daemon=True).start()
    app = ensure_app()
    win = MainWindow(None, title="ngxscope")
    connect_file_hooks(win)
    win.resize(1500, 950)
    win.show()
    pump(app, 0.5)
    win.attach(pid)
    source = win.source
    assert source is not None
    argv = list(getattr(source, "argv", []))
    deadline = time.monotonic() + 90
    attached = False
    while time.monotonic() < deadline:
        pump(app, 0.1)
        if not attached and any(e.kind == "attach" for e in win.events):
            attached = True
            say({"attached": True})
        if (want and len(win.store) >= want[0]) or win.status.state_kind == "died":
            break
    pump(app, 1.0)  # a last frame: table, graphs, status bar
    saved = None
    if len(win.store):
        win.save_requested.emit(session)
        saved = session
    win.grab().save(png)
    result = {"rows": len(win.store), "state": win.status.state_kind,
              "state_text": win.status.state.text().strip(), "error": source.error(),
              "helper_argv": argv, "saved": saved, "attached": attached}
    win.close()
    pump(app, 0.3)
    say({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
