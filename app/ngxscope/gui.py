"""The CLI's way into the window: refuses early, without importing Qt, when there is no display.

The window never loads BPF: live captures come from a `ngxscope record --stream` helper.
"""

from __future__ import annotations

import os
import sys

__all__ = ["capture_argv", "no_display_reason", "open_session_window", "open_window", "run_gui"]


def no_display_reason() -> str | None:
    """Why a window cannot be shown here (None when it can)."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc", "eglfs", "linuxfb"):
        return None
    return ("no display (neither DISPLAY nor WAYLAND_DISPLAY is set): use `ngxscope record "
            "--pid PID -o capture.ngxs` to capture without a window, or run under a desktop "
            "session (QT_QPA_PLATFORM=offscreen for screenshots)")


def capture_argv(pid: int, output: str | None = None) -> list[str]:
    """The capture helper the window runs (as root directly, else through pkexec/sudo)."""
    argv = [sys.executable, "-m", "ngxscope", "record", "--pid", str(pid), "--stream"]
    if output:
        argv += ["-o", output]
    return argv


def run_gui(argv: list[str] | None = None, **kwargs: object) -> int:
    """The main window fed by the capture helper `argv` (or empty); exit code 2 without a display."""
    reason = no_display_reason()
    if reason:
        print(f"ngxscope: {reason}", file=sys.stderr)
        return 2
    from .ui.launch import run_gui as launch

    return launch(argv, **kwargs)  # type: ignore[arg-type]


def open_window(pid: int | None = None) -> int:
    """`ngxscope` (the attach dialog) and `ngxscope --pid PID`."""
    if pid is None:
        return run_gui(None, open_attach=True)
    return run_gui(capture_argv(pid), title=f"ngxscope - nginx {pid}")


def open_session_window(path: str) -> int:
    """`ngxscope open FILE`: a saved session in the window."""
    reason = no_display_reason()
    if reason:
        print(f"ngxscope: {reason}", file=sys.stderr)
        return 2
    from .ui.launch import open_session_window as launch_session

    return launch_session(path)
