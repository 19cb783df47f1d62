"""Entering another process's network namespace for a moment (this thread only).

A packet socket sees the interfaces of the network namespace it was created in. nginx may
run in another one than the capture (a container, `ip netns exec`, the capture started over
SSH into a namespace): the socket filter's sockets must then be opened in nginx's namespace.
setns(2) on a network namespace moves only the calling thread, so `entered` switches this
thread, runs the body (which creates the sockets) and switches back; the sockets stay bound
to nginx's interfaces after that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["NetnsError", "entered", "same_netns"]

_CLONE_NEWNET = 0x40000000
_SELF = "/proc/thread-self/ns/net"


class NetnsError(OSError):
    """The namespace could not be entered (or left)."""


def _ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def same_netns(pid: int) -> bool:
    """Whether `pid` is in this thread's network namespace (True when it cannot be told)."""
    try:
        return _ident(f"/proc/{pid}/ns/net") == _ident(_SELF)
    except OSError:
        return True


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(pid: int | None) -> Iterator[bool]:
    """Run the body in `pid`'s network namespace (this thread only); yields whether it had
    to switch. Raises NetnsError when the switch is refused."""
    if pid is None or same_netns(pid):
        yield False
        return
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(exc.errno, f"network namespace of pid {pid}: {exc.strerror}") from None
    back = os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield True
        finally:
            _setns(back)  # a failure here must not pass silently: this thread would stay there
    finally:
        os.close(target)
        os.close(back)
