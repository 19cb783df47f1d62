"""The privileged capture helper of a packaged install, and how the window reaches it.

The .deb installs `HELPER_PATH`, the one program its polkit action `POLKIT_ACTION` names
(resources/org.ngxscope.record.policy). pkexec runs it as root with a clean environment;
it accepts only ``--pid PID`` and then runs ``ngxscope record --pid PID --stream``: the
capture streams to the window over a pipe, and the window (running as the user) writes any
file. Nothing the caller passes becomes a path written as root.

A checkout (venv) keeps its old way: the window elevates its own interpreter with pkexec
(polkit's generic ``org.freedesktop.policykit.exec``, admin password every time) or sudo.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "HELPER_PATH",
    "INSTALL_PREFIX",
    "POLKIT_ACTION",
    "HelperUsage",
    "installed_helper",
    "main",
    "parse_helper_args",
    "record_argv",
]

HELPER_PATH = "/usr/libexec/ngxscope/ngxscope-capture-helper"
"""Where the .deb installs the helper; the polkit policy's exec.path names exactly this."""
INSTALL_PREFIX = "/usr/lib/ngxscope"
"""The .deb's private Python environment (a venv on Debian's python3)."""
POLKIT_ACTION = "org.ngxscope.record"
"""The polkit action pkexec checks for `HELPER_PATH` (auth_admin_keep by default)."""

USAGE = "usage: ngxscope-capture-helper --pid PID"


class HelperUsage(ValueError):
    """Arguments the helper does not accept (one line)."""


def installed_helper() -> str | None:
    """`HELPER_PATH` when this process is the .deb's ngxscope and the helper is there.

    A checkout with a .deb also installed keeps elevating its own code: the packaged helper
    may be a different version speaking a different stream format.
    """
    if os.path.realpath(sys.prefix) != INSTALL_PREFIX:
        return None
    return HELPER_PATH if os.access(HELPER_PATH, os.X_OK) else None


def parse_helper_args(argv: list[str]) -> int:
    """The nginx PID from exactly ``--pid N`` (or ``--pid=N``); anything else is refused."""
    if len(argv) == 1 and argv[0].startswith("--pid="):
        argv = ["--pid", argv[0].split("=", 1)[1]]
    if len(argv) != 2 or argv[0] != "--pid":
        raise HelperUsage(f"{USAGE} (got {' '.join(argv) or 'no arguments'})")
    text = argv[1]
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise HelperUsage(f"--pid must be a process id, not {text!r}")
    pid = int(text)
    if pid < 1 or pid >= 2**22:  # PID_MAX_LIMIT: pids stay below it on 64-bit Linux
        raise HelperUsage(f"--pid {pid} is out of range")
    return pid


def record_argv(pid: int, python: str | None = None) -> list[str]:
    """What the helper runs: the record command, streaming, in isolated mode (-I: no
    current directory or PYTHON* variables on the import path) without bytecode writes."""
    return [python or sys.executable, "-I", "-B", "-m", "ngxscope", "record", "--pid", str(pid), "--stream"]


def main(argv: list[str] | None = None) -> int:
    """Entry of `HELPER_PATH` (`python -m ngxscope.helper --pid PID`)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        pid = parse_helper_args(args)
    except HelperUsage as exc:
        print(f"ngxscope-capture-helper: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("ngxscope-capture-helper: must run as root (through pkexec)", file=sys.stderr)
        return 1
    cmd = record_argv(pid)
    os.execv(cmd[0], cmd)
    return 1  # not reached: execv replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
