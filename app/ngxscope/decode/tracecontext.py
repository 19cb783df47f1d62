"""W3C Trace Context (`traceparent`) read from captured request headers.

`traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`; a higher
version is read by its first four fields, as the specification asks. All-zero ids and
version ff are invalid (None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TraceParent", "header_value", "parse_traceparent", "traceparent_of_head"]

_TP = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid traceparent."""

    trace_id: str
    """32 lowercase hex digits."""
    parent_id: str
    """16 lowercase hex digits: the caller's span."""
    flags: int
    """Trace flags (bit 0: sampled)."""


def parse_traceparent(value: str) -> TraceParent | None:
    """The traceparent in a header value, or None when it is not a valid one."""
    m = _TP.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags = m.group(1), m.group(2), m.group(3), m.group(4)
    if version == "ff" or (version == "00" and m.group(5)):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header `name` (case-insensitive)."""
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def traceparent_of_head(head: str | None) -> str | None:
    """The traceparent header value in a raw request head (as nginx sent it upstream)."""
    if not head:
        return None
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "traceparent":
            return value.strip()
    return None
