"""Where the window's exchanges come from.

`ExchangeSource` is the protocol the main window polls from its UI timer. Sources never
touch widgets: a background reader thread (if any) only queues parsed objects, and
`poll()` hands over what was queued since the last call.

- `StreamSource` runs the root capture helper (`ngxscope record --pid N --stream`) and
  reads its JSON-lines stdout (docs/ARCHITECTURE.md, "The helper's stream").
- `SyntheticSource` (in `pipeline.synthetic`) makes realistic fake traffic.
- `RemoteStreamSource` / `MultiHostSource` (in `pipeline.remote`): helpers on other hosts.

The stream is decoded by the record codec (`store.codec`), like a session file: its first
line must be a header this ngxscope reads (format and version checked), every later line a
valid record of that version.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Protocol, runtime_checkable

from ..helper import HELPER_PATH, POLKIT_ACTION, installed_helper
from ..model import Exchange, LifecycleEvent
from ..store.codec import SessionError, check_header, parse_record

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


def helper_argv(pid: int, *, output: str | None = None, python: str | None = None) -> list[str]:
    """The capture helper command line for nginx master/worker `pid` (unelevated); with
    `output`, the helper also records to that session file."""
    argv = [python or sys.executable, "-m", "ngxscope", "record", "--pid", str(pid), "--stream"]
    if output:
        argv += ["-o", output]
    return argv


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
        """The helper's header record (after the first line)."""
        self.version: int | None = None
        """Its format version (checked: this ngxscope reads it)."""
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
        self._stop_reading = False

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
        self._close_stdin()
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

    def _close_stdin(self) -> None:
        """The helper stops when its stdin closes."""
        proc = self.proc
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass

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
                if not self._stop_reading:
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
            if self.version is None:  # the first line: the header, or nothing is read
                header = parse_record(line)
                self.version = check_header(header, "the capture helper's stream")
                assert isinstance(header, dict)
                header.pop("t")
                self.header = header
                return
            record = parse_record(line, self.version)
        except SessionError as exc:
            if self.version is None:  # not a stream this ngxscope reads: stop the helper
                self._error = f"capture helper: {exc}"
                self._stop_reading = True
                self._close_stdin()
                return
            self.bad_lines += 1
            self.last_bad = str(exc)[:200]
            return
        if isinstance(record, Exchange):
            pending.append(record)
        elif isinstance(record, LifecycleEvent):
            with self._lock:
                self._events.append(record)
        elif record["t"] == "stats":
            del record["t"]
            with self._lock:
                self._stats = record
        elif record["t"] == "end":
            self.ended = True  # the helper closed its stream cleanly
        else:  # a second header
            self.bad_lines += 1
            self.last_bad = "a second header"

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass
