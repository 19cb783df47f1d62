"""Turning captured body bytes into something readable (no Qt here; used by the detail pane).

Wire bytes → de-chunk (Transfer-Encoding: chunked) → decompress (gzip / deflate) →
pretty JSON, text, or a hex dump for binary. Every step tolerates truncated input and
says what it did in `notes`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ngxscope.model import Exchange
from ngxscope.store.httpbody import dechunk, inflate

__all__ = ["RenderedBody", "dechunk", "decompress", "header", "hexdump", "render_body"]

MAX_SHOWN = 256 * 1024
"""At most this many decoded bytes are rendered (hex dumps are 4x larger)."""


@dataclass(slots=True)
class RenderedBody:
    """What the detail pane shows for one body."""

    text: str
    kind: str  # "empty" | "json" | "text" | "hex"
    notes: list[str] = field(default_factory=list)


def header(headers: list[tuple[str, str]], name: str) -> str:
    """The last value of header `name` (case-insensitive), or ""."""
    low = name.lower()
    value = ""
    for k, v in headers:
        if k.lower() == low:
            value = v
    return value


def decompress(data: bytes, encoding: str) -> tuple[bytes, str | None]:
    """Decode Content-Encoding gzip/deflate. Returns (bytes, problem or None)."""
    out, problem = inflate(data, encoding, MAX_SHOWN * 4)
    return (data if out is None else out), problem


def hexdump(data: bytes, limit: int = 64 * 1024) -> str:
    """Classic offset / hex / ASCII dump, 16 bytes a line."""
    lines = []
    for off in range(0, min(len(data), limit), 16):
        row = data[off : off + 16]
        hexpart = " ".join(f"{b:02x}" for b in row[:8]) + "  " + " ".join(
            f"{b:02x}" for b in row[8:]
        )
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{off:08x}  {hexpart:<49}  {asc}")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit:,} more bytes")
    return "\n".join(lines)


def _looks_text(data: bytes) -> bool:
    if not data:
        return True
    sample = data[:4096]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start > len(sample) - 4  # cut in the middle of a character


def render_body(
    raw: bytes,
    headers: list[tuple[str, str]],
    *,
    wire_size: int,
    sendfile_bytes: int = 0,
) -> RenderedBody:
    """Decode and format one captured body."""
    notes: list[str] = []
    if sendfile_bytes:
        notes.append(f"{sendfile_bytes:,} bytes sent with sendfile: not captured")
    if wire_size and len(raw) < wire_size - sendfile_bytes:
        notes.append(f"truncated: {len(raw):,} of {wire_size:,} bytes captured")
    if not raw:
        return RenderedBody("", "empty", notes)
    data = raw
    if "chunked" in header(headers, "Transfer-Encoding").lower():
        data, complete = dechunk(data)
        notes.append("de-chunked" + ("" if complete else " (incomplete)"))
    encoding = header(headers, "Content-Encoding")
    if encoding and encoding.lower() != "identity":
        data, problem = decompress(data, encoding)
        notes.append(problem or f"{encoding} decoded: {len(data):,} bytes")
    ctype = header(headers, "Content-Type").lower()
    shown = data[:MAX_SHOWN]
    if "json" in ctype or shown[:1] in (b"{", b"["):
        try:
            obj = json.loads(shown.decode("utf-8"))
            return RenderedBody(json.dumps(obj, indent=2, ensure_ascii=False), "json", notes)
        except (ValueError, UnicodeDecodeError):
            pass
    if _looks_text(shown) and not ctype.startswith(("image/", "audio/", "video/", "font/")):
        text = shown.decode("utf-8", "replace")
        if len(data) > MAX_SHOWN:
            notes.append(f"showing the first {MAX_SHOWN:,} bytes")
        return RenderedBody(text, "text", notes)
    notes.append(f"binary ({ctype or 'unknown type'}): hex view")
    return RenderedBody(hexdump(data), "hex", notes)


def render_request(ex: Exchange) -> RenderedBody:
    """The request body of `ex`, rendered."""
    return render_body(ex.request_body, ex.request_headers, wire_size=ex.request_body_size)


def render_response(ex: Exchange) -> RenderedBody:
    """The response body of `ex`, rendered."""
    return render_body(
        ex.response_body, ex.response_headers, wire_size=ex.response_body_size,
        sendfile_bytes=ex.sendfile_bytes,
    )
