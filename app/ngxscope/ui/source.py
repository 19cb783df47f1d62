"""Where the window's exchanges come from.

`ExchangeSource` is the protocol the main window polls from its UI timer. Sources never
touch widgets: a background reader thread (if any) only queues parsed objects, and
`poll()` hands over what was queued since the last call.

- `StreamSource` runs the root capture helper (`ngxscope record --pid N --stream`) and
  reads its JSON-lines stdout (docs/ARCHITECTURE.md, "Capture helper protocol").
- `SyntheticSource` (in `ngxscope.ui.synthetic`) makes realistic fake traffic.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Protocol, runtime_checkable

from ngxscope.helper import HELPER_PATH, POLKIT_ACTION, installed_helper
from ngxscope.model import Exchange, LifecycleEvent, ModelError

__all__ = ["ExchangeSource", "PollResult", "StreamSource", "helper_argv"]

PollResult = tuple[list[Exchange], list[LifecycleEvent], dict[str, Any] | None]

MAX_PER_POLL = 25_000
"""At most this many exchanges are handed over per poll (bursts spread over ticks)."""


@runtime_checkable
class ExchangeSource(Protocol):
    """A live (or replayed) supply of exchanges, polled from the UI thread."""

    def start(self) -> None:
        """Begin producing (may spawn a process or thread)."""

    def stop(self) -> None:
        """Stop producing and release everything (idempotent)."""

    def poll(self) -> PollResult:
        """New exchanges, lifecycle events and the latest stats record (or None)."""
        ...

    def describe(self) -> str:
        """A short human description ("pid 1234 via ngxscope record")."""
        ...

    def alive(self) -> bool:
        """Still producing (False after stop or when the helper died)."""
        ...

    def error(self) -> str | None:
        """Why the source stopped on its own, or None."""
        ...


def helper_argv(pid: int, *, python: str | None = None) -> list[str]:
    """The capture helper command line for nginx master/worker `pid` (unelevated)."""
    return [python or sys.executable, "-m", "ngxscope", "record", "--pid", str(pid), "--stream"]


def elevate(argv: list[str]) -> list[str]:
    """Prefix `argv` with pkexec (graphical session) or `sudo -n` when not root.

    Installed from the .deb, a plain `helper_argv` goes through the fixed-path helper its
    polkit action names (`ngxscope.helper`), so polkit asks about capturing, not about
    running some Python as root.
    """
    if os.geteuid() == 0:
        return list(argv)
    graphical = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if graphical and shutil.which("pkexec"):
        helper = installed_helper()
        if helper is not None and argv[1:-3] == ["-m", "ngxscope", "record"] \
                and argv[-3] == "--pid" and argv[-1] == "--stream":
            return ["pkexec", helper, "--pid", argv[-2]]
        return ["pkexec", *argv]
    return ["sudo", "-n", *argv]


class StreamSource:
    """Reads the capture helper's JSON-lines stdout in a reader thread."""

    def __init__(self, argv: list[str], *, elevate_if_needed: bool = True) -> None:
        self.argv = elevate(argv) if elevate_if_needed else list(argv)
        self.proc: subprocess.Popen[bytes] | None = None
        self.header: dict[str, Any] | None = None
        self.ended = False
        """The helper wrote its closing record (a clean stop, not a crash)."""
        self.bad_lines = 0
        self.last_bad: str = ""
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._events: list[LifecycleEvent] = []
        self._stats: dict[str, Any] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._eof = threading.Event()
        self._error: str | None = None

    # -- protocol --------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=1 << 16,
            )
        except OSError as exc:
            self._error = f"cannot start capture helper: {exc}"
            self._eof.set()
            return
        for target, name in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            t = threading.Thread(target=target, name=f"ngxscope-helper-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopped = True
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        # an elevated helper stops when its stdin closes (detaching probes takes seconds under
        # load); the window may not signal it: pkexec leaves it with no trace of our uid
        elevated = self.argv[0] in ("pkexec", "sudo")
        try:
            proc.wait(timeout=10.0 if elevated else 2.0)
        except subprocess.TimeoutExpired:
            try:
                proc.terminate()
                try:
                    proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=2.0)
            except PermissionError:
                try:
                    proc.wait(timeout=20.0)
                except subprocess.TimeoutExpired:
                    pass  # still stopping; its stdin is closed, it cannot outlive that for long
        for t in self._threads:
            t.join(timeout=1.0)

    def poll(self) -> PollResult:
        with self._lock:
            if len(self._exchanges) > MAX_PER_POLL:
                exchanges = self._exchanges[:MAX_PER_POLL]
                del self._exchanges[:MAX_PER_POLL]
            else:
                exchanges, self._exchanges = self._exchanges, []
            events, self._events = self._events, []
            stats, self._stats = self._stats, None
        return exchanges, events, stats

    def describe(self) -> str:
        pid = ""
        if "--pid" in self.argv:
            i = self.argv.index("--pid")
            if i + 1 < len(self.argv):
                pid = f"nginx pid {self.argv[i + 1]} "
        via = self.argv[0] if self.argv[0] in ("pkexec", "sudo") else "root"
        return f"{pid}via capture helper ({via})".strip()

    def alive(self) -> bool:
        if self.proc is None or self._stopped:
            return False
        return self.proc.poll() is None or not self._eof.is_set()

    def error(self) -> str | None:
        if self._error:
            return self._error
        proc = self.proc
        if proc is None or self._stopped:
            return None
        code = proc.poll()
        if code is None or not self._eof.is_set():
            return None
        tail = " | ".join(line for line in list(self._stderr)[-3:] if line)
        if self.argv[0] == "pkexec" and (code == 126 or (code == 127 and "Not authorized" in tail)):
            # pkexec: 126 = the authentication dialog was dismissed, 127 + this text = denied
            return (f"not authorized to capture: polkit refused {self._action()} "
                    f"(pkexec exit {code}); nothing was started")
        if code == 0:
            return f"capture helper ended{': ' + tail if tail else ''}"
        return f"capture helper exited with code {code}{': ' + tail if tail else ''}"

    def _action(self) -> str:
        return POLKIT_ACTION if self.argv[1:2] == [HELPER_PATH] else "org.freedesktop.policykit.exec"

    # -- reader threads --------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        pending: list[Exchange] = []
        last_flush = time.monotonic()
        try:
            for raw in self.proc.stdout:
                self._parse_line(raw, pending)
                now = time.monotonic()
                if len(pending) >= 500 or now - last_flush > 0.02:
                    self._flush(pending)
                    pending = []
                    last_flush = now
        except (OSError, ValueError):
            pass
        finally:
            self._flush(pending)
            self._eof.set()

    def _flush(self, pending: list[Exchange]) -> None:
        if pending:
            with self._lock:
                self._exchanges.extend(pending)

    def _parse_line(self, raw: bytes, pending: list[Exchange]) -> None:
        line = raw.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ModelError("not an object")
            kind = obj.pop("t", None)
            if kind == "exchange":
                pending.append(Exchange.from_dict(obj))
            elif kind == "event":
                ev = LifecycleEvent.from_dict(obj)
                with self._lock:
                    self._events.append(ev)
            elif kind == "stats":
                with self._lock:
                    self._stats = obj
            elif kind == "header":
                self.header = obj
            elif kind == "end":
                self.ended = True  # the helper closed its stream cleanly
            else:
                raise ModelError(f"unknown record type {kind!r}")
        except (ValueError, TypeError) as exc:  # JSONDecodeError and ModelError are ValueErrors
            self.bad_lines += 1
            self.last_bad = str(exc)[:200]

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass
