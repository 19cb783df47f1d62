"""Find kernel headers for bcc: the running kernel's own, else the distribution's nearest."""

from __future__ import annotations

import glob
import os
import platform
import re

__all__ = ["HeadersError", "find_kernel_headers"]


class HeadersError(RuntimeError):
    """No kernel headers bcc could compile against."""


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", os.path.basename(path))[:4])


def find_kernel_headers() -> tuple[str | None, str | None]:
    """Return (BCC_KERNEL_SOURCE value or None when bcc finds them itself, notice or None).

    bcc looks in /lib/modules/$(uname -r)/build; when that is missing we point it at the
    newest /usr/src/linux-headers-*-amd64 (Debian's split packages: the arch dir includes
    the -common dir through its Makefile, which bcc follows via the `source` link).
    """
    release = platform.release()
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(os.path.join(build, "include")):
        real = os.path.realpath(build)
        if os.path.basename(real).find(release) >= 0:
            return None, None
        return None, f"kernel {release} has no headers package; bcc uses {os.path.basename(real)}"
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and os.path.isdir(env):
        return env, f"kernel headers from BCC_KERNEL_SOURCE={env}"
    candidates = sorted(glob.glob("/usr/src/linux-headers-*-amd64"), key=_version_key)
    if candidates:
        arch_dir = candidates[-1]
        common = arch_dir[: -len("-amd64")] + "-common"
        notice = f"kernel {release} has no headers package; bcc uses {os.path.basename(arch_dir)}"
        try:
            # bcc follows build -> arch dir and source -> common dir (Debian's split headers)
            os.makedirs(f"/lib/modules/{release}", exist_ok=True)
            os.symlink(arch_dir, build)
            if os.path.isdir(common) and not os.path.lexists(f"/lib/modules/{release}/source"):
                os.symlink(common, f"/lib/modules/{release}/source")
            return None, notice
        except OSError:
            return arch_dir, notice
    raise HeadersError(
        f"no kernel headers for {release}: install linux-headers-amd64 "
        "(scripts/setup.sh does) or set BCC_KERNEL_SOURCE"
    )
