"""Rotating session files for long-running captures (`record --rotate-dir DIR`).

Writes DIR/ngxscope-YYYYmmdd-HHMMSS.ngxs, starts a new file when the current one passes
`max_mb` or `max_age_s`, and keeps only the `keep` newest files. Each file is a complete
session on its own: it starts with the capture's attach and config events again.
Not thread-safe: `pipeline.sinks` wraps it in a `LockedSink`, like a `SessionWriter`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..model import Exchange, LifecycleEvent
from ..store.session import SessionWriter

__all__ = ["PREFIX", "RotatingSessionWriter"]

PREFIX = "ngxscope-"
SUFFIX = ".ngxs"


class RotatingSessionWriter:
    def __init__(self, directory: str, *, max_mb: float = 256.0, max_age_s: float = 3600.0,
                 keep: int = 24, target: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.max_bytes = int(max_mb * 1024 * 1024) if max_mb > 0 else 0
        self.max_age_s = max_age_s
        self.keep = max(1, keep)
        self.target = dict(target or {})
        self.files: list[str] = []
        self._preamble: dict[str, LifecycleEvent] = {}
        os.makedirs(directory, mode=0o750, exist_ok=True)
        self.writer = self._open()

    def _name(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        path = os.path.join(self.directory, f"{PREFIX}{stamp}{SUFFIX}")
        n = 1
        while os.path.exists(path):
            path = os.path.join(self.directory, f"{PREFIX}{stamp}-{n}{SUFFIX}")
            n += 1
        return path

    def _open(self) -> SessionWriter:
        path = self._name()
        writer = SessionWriter(path, self.target)
        self.opened = time.monotonic()
        self.files.append(path)
        for ev in self._preamble.values():
            writer.write_event(ev)
        self._prune()
        return writer

    def _prune(self) -> None:
        ours = sorted(f for f in os.listdir(self.directory) if f.startswith(PREFIX) and f.endswith(SUFFIX))
        current = os.path.basename(self.writer.path) if hasattr(self, "writer") else None
        for name in ours[: max(0, len(ours) - self.keep)]:
            if name != current:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass

    def rotate(self) -> None:
        """Finish the current file (cleanly) and start the next one."""
        self.writer.close(clean=True)
        self.writer = self._open()

    def _due(self) -> bool:
        if self.max_age_s > 0 and time.monotonic() - self.opened >= self.max_age_s:
            return True
        if self.max_bytes:
            try:
                return os.stat(self.writer.path).st_size >= self.max_bytes
            except OSError:
                return False
        return False

    # -- sink protocol ---------------------------------------------------------------
    def write_exchange(self, ex: Exchange) -> None:
        self.writer.write_exchange(ex)

    def write_event(self, ev: LifecycleEvent) -> None:
        if ev.kind in ("attach", "config"):
            self._preamble[ev.kind] = ev
        self.writer.write_event(ev)

    def write_stats(self, d: dict[str, Any]) -> None:
        self.writer.write_stats(d)
        if self._due():
            self.rotate()

    def maybe_flush(self) -> None:
        self.writer.maybe_flush()

    def close(self, clean: bool = True) -> None:
        self.writer.close(clean=clean)
