"""The way into the window: refuses early, without importing Qt, when there is no display.

The window never loads BPF: live captures come from a `ngxscope record --stream` helper
(`pipeline.source.helper_argv`), local or over SSH. Qt loads (`ngxscope.ui.launch`) only
once a display is known to be there, so `ngxscope record` and friends never pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .pipeline.remote import RemoteSpec
from .pipeline.source import helper_argv

__all__ = ["no_display_reason", "open_remote_window", "open_session_window", "open_window", "run_gui"]


def no_display_reason() -> str | None:
    """Why a window cannot be shown here (None when it can)."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc", "eglfs", "linuxfb"):
        return None
    return ("no display (neither DISPLAY nor WAYLAND_DISPLAY is set): use `ngxscope record "
            "--pid PID -o capture.ngxs` to capture without a window, or run under a desktop "
            "session (QT_QPA_PLATFORM=offscreen for screenshots)")


def _refused() -> bool:
    reason = no_display_reason()
    if reason:
        print(f"ngxscope: {reason}", file=sys.stderr)
    return reason is not None


def run_gui(argv: list[str] | None = None, *, title: str = "", screenshot: str | None = None,
            after: float = 0.0, duration: float | None = None, open_attach: bool = False) -> int:
    """The main window fed by the capture helper `argv` (or empty); exit code 2 without a display."""
    if _refused():
        return 2
    from .ui.launch import run_gui as launch  # Qt from here on

    return launch(argv, title=title, screenshot=screenshot, after=after, duration=duration,
                  open_attach=open_attach)


def open_window(pid: int | None = None) -> int:
    """`ngxscope` (the attach dialog) and `ngxscope --pid PID`."""
    if pid is None:
        return run_gui(None, open_attach=True)
    return run_gui(helper_argv(pid), title=f"ngxscope - nginx {pid}")


def open_session_window(path: str) -> int:
    """`ngxscope open FILE`: a saved session in the window."""
    if _refused():
        return 2
    from .ui.launch import open_session_window as launch_session  # Qt from here on

    return launch_session(path)


def open_remote_window(specs: Sequence[RemoteSpec]) -> int:
    """`ngxscope --remote ...`: the window on remote captures (the host dialog without a PID)."""
    if _refused():
        return 2
    from .ui.launch import open_remote_window as launch_remote  # Qt from here on

    return launch_remote(specs)
