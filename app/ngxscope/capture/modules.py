"""nginx's dynamic modules as the target processes have them mapped (``load_module``)."""

from __future__ import annotations

import os

__all__ = ["stream_module_paths"]

STREAM_MODULE_NAME = "ngx_stream_module.so"


def _maps_paths(pid: int, name: str) -> set[str]:
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    out = set()
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].endswith("/" + name):
            # through the process's own root: the same file in another mount namespace
            out.add(f"/proc/{pid}/root{parts[5]}")
    return out


def stream_module_paths(pids: list[int]) -> list[str]:
    """Paths (one per distinct file) of the stream module the processes `pids` have mapped;
    with no pids, those of every process that maps one (``--binary``)."""
    if not pids:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    seen: set[tuple[int, int]] = set()
    out = []
    for pid in pids:
        for path in sorted(_maps_paths(pid, STREAM_MODULE_NAME)):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                out.append(path)
    return out
