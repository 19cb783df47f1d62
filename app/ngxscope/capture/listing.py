"""The text table ``ngxscope list`` prints: one block per nginx instance found by
`capture.procs.find_instances` (binary, TLS library, listening addresses, capture method,
workers with their memory and age)."""

from __future__ import annotations

import os
import textwrap
import time

from ngxscope.capture.procs import NginxInstance

__all__ = ["format_instances"]


def _fmt_bytes(n: int) -> str:
    """Human-readable size, e.g. "12.3 MiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _fmt_age(start: float, now: float) -> str:
    """Compact age such as "45s", "12m", "3h05m" or "4d02h"."""
    secs = max(0, int(now - start))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def _wrap_list(items: list[str], width: int) -> list[str]:
    """Join *items* with ", " into lines no longer than *width* (each item kept whole)."""
    lines: list[str] = []
    current = ""
    for item in items:
        candidate = f"{current}, {item}" if current else item
        if current and len(candidate) > width:
            lines.append(current + ",")
            current = item
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _format_one(inst: NginxInstance, now: float, width: int) -> list[str]:
    """Text block for one instance."""
    m = inst.master
    b = inst.binary
    head = f"{inst.title}  {m.role if m.role != 'other' else 'pid'} {m.pid}"
    if inst.is_nginx and m.role == "master":
        count = sum(1 for w in inst.workers if w.role == "worker")
        head += f", {count} worker{'s' if count != 1 else ''}"
    head += f"  user {m.user}  up {_fmt_age(m.start_time, now)}"
    lines = [head]
    label_w = 11
    pad = " " * (2 + label_w)

    exe = m.exe or (b.path if b else "") or "(unreadable)"
    if m.exe_deleted:
        exe += " (deleted: binary replaced since start)"
    lines.append(f"  {'binary':<{label_w}}{exe}")
    if not inst.is_nginx:
        lines.append(f"  {'capture':<{label_w}}no capture: {inst.capture_reason}")
        return lines
    if b is None:
        lines.append(f"  {'':<{label_w}}cannot inspect: {inst.binary_error}")
    else:
        tls = f"{b.tls_library} ({b.tls})" if b.tls_library else b.tls
        lines.append(f"  {'tls':<{label_w}}{tls}")
    hidden = not inst.listen and not os.access(f"/proc/{m.pid}/fd", os.R_OK)
    listen = _wrap_list(inst.listen, width - len(pad)) or [
        "(unknown: its sockets are not readable by this user)" if hidden else "(no TCP listening sockets found)"]
    lines.append(f"  {'listen':<{label_w}}{listen[0]}")
    lines.extend(pad + extra for extra in listen[1:])
    if inst.capture_method:
        lines.append(f"  {'capture':<{label_w}}{inst.capture_method}")
        # how the method was chosen (e.g. where SSL_read/SSL_write were found), wrapped
        why = textwrap.wrap(inst.capture_reason, max(20, width - len(pad)))
        lines.extend(pad + part for part in why)
    else:
        lines.append(f"  {'capture':<{label_w}}no capture: {inst.capture_reason}")
    for w in inst.workers:
        lines.append(
            f"    {w.pid:<7}  {w.role:<13}  {_fmt_bytes(w.rss):>10}  {w.user:<10}"
            f"  up {_fmt_age(w.start_time, now)}"
        )
    return lines


def format_instances(instances: list[NginxInstance], width: int = 100) -> str:
    """Render *instances* as the text table ``ngxscope list`` prints (fits *width* columns)."""
    if not instances:
        return "no nginx processes found"
    now = time.time()
    blocks = ["\n".join(_format_one(inst, now, width)) for inst in instances]
    return "\n\n".join(blocks)
