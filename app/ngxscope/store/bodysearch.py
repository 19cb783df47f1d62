"""Header and body search for the filter language (`header.NAME~…`, `body~…`; filterexpr.py).

Bodies are searched decoded: de-chunked (Transfer-Encoding: chunked), decompressed
(Content-Encoding gzip / deflate) and, for JSON carrying `\\uXXXX` escapes, with the escapes
resolved, so `body~café` finds `"caf\\u00e9"`. Speed (bench/search.py, 200k rows):

- a body that needs no decoding (the common case) is searched as raw bytes with a bytes
  regex: no decoding, no copy;
- a body that needs decoding is decoded once and kept in `DecodedCache` (bounded by bytes,
  keyed by the exchange object), so refining a filter does not decompress again;
- patterns are compiled once per filter.

Matching is on bytes for an ASCII pattern (case folding of `~*` is then ASCII-only) and on
UTF-8 text (invalid bytes replaced) for a pattern with non-ASCII characters.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable

from ngxscope.model import Exchange
from ngxscope.store.httpbody import dechunk, inflate

__all__ = [
    "DecodedCache",
    "TextMatcher",
    "body_predicate",
    "decoded_body",
    "decompress",
    "header_predicate",
    "header_presence",
]

Headers = list[tuple[str, str]]

MAX_DECODED = 8 * 1024 * 1024
"""A body is decompressed up to this many bytes for search (a zip bomb stops here)."""


def _header(headers: Headers, name: str) -> str:
    for k, v in headers:
        if k.lower() == name:
            return v
    return ""


def decompress(data: bytes, encoding: str) -> bytes | None:
    """gzip / deflate decoded (what a cut stream gave), or None for other encodings."""
    return inflate(data, encoding, MAX_DECODED)[0]


def _needs_decoding(raw: bytes, headers: Headers) -> bool:
    if not raw:
        return False
    for k, v in headers:
        n = len(k)  # runs for every row searched: compare lengths before lower-casing names
        if n == 17 and k.lower() == "transfer-encoding" and "chunked" in v.lower():
            return True
        if n == 16 and k.lower() == "content-encoding" and v.strip().lower() not in (
                "", "identity"):
            return True
    return raw[:1] in (b"{", b"[") and b"\\u" in raw


def decoded_body(raw: bytes, headers: Headers) -> bytes:
    """The body as its payload: de-chunked, decompressed, JSON escapes resolved."""
    data = raw
    if "chunked" in _header(headers, "transfer-encoding").lower():
        data, _complete = dechunk(data)
    encoding = _header(headers, "content-encoding")
    if encoding and encoding.strip().lower() != "identity":
        out = decompress(data, encoding)
        if out is not None:
            data = out
    if data[:1] in (b"{", b"[") and b"\\u" in data:
        try:
            data = json.dumps(json.loads(data), ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):
            pass
    return data


class DecodedCache:
    """The searchable form of each body seen: the raw bytes themselves when they need no
    decoding (no copy: only the decision is remembered), else the decoded bytes, bounded by
    their size (least recently used out first). Keyed by exchange object (it is held, so its
    id is never reused while cached)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, max_entries: int = 500_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        """Per side; beyond it the cache starts over (it must not keep evicted rows alive)."""
        # (response, request) sides: id(ex) -> searchable bytes, and id(ex) -> ex. Two plain
        # dicts, no per-entry tuple: 400k new container objects would wake the cyclic GC
        # again and again over a store of millions of objects (seconds on a first search).
        self._data: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})
        self._owner: tuple[dict[int, Exchange], dict[int, Exchange]] = ({}, {})
        self._decoded: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._size = 0
        self.misses = 0
        """Bodies decoded (not found in the cache)."""

    def get(self, ex: Exchange, request: bool) -> bytes:
        side, owner = self._data[request], self._owner[request]
        key = id(ex)
        data = side.get(key)
        if data is not None and owner[key] is ex:
            return data
        if len(side) >= self.max_entries:
            self.clear()
        raw, headers = ((ex.request_body, ex.request_headers) if request
                        else (ex.response_body, ex.response_headers))
        owner[key] = ex
        if not _needs_decoding(raw, headers):
            side[key] = raw
            return raw
        self.misses += 1
        data = decoded_body(raw, headers)
        side[key] = data
        self._size += len(data) - self._decoded.pop((key, request), 0)
        self._decoded[(key, request)] = len(data)
        while self._size > self.max_bytes and self._decoded:
            (old, old_side), size = self._decoded.popitem(last=False)
            self._data[old_side].pop(old, None)
            self._owner[old_side].pop(old, None)
            self._size -= size
        return data

    def clear(self) -> None:
        for side in (*self._data, *self._owner):
            side.clear()
        self._decoded.clear()
        self._size = 0


CACHE = DecodedCache()
"""The process-wide cache the filter uses."""


def _body(ex: Exchange, request: bool) -> bytes:
    raw = ex.request_body if request else ex.response_body
    return CACHE.get(ex, request) if raw else raw  # most requests have no body: not cached


_UPPER_ESCAPE = re.compile(r"\\[A-Z]")
"""`\\S`, `\\D`, `\\W`, `\\B`, `\\A`, `\\Z`: escapes that lower-casing a pattern would change."""


class TextMatcher:
    """One comparison (`=`, `~` regex, `~*` caseless regex) on bytes or text values.

    Bodies are large: a literal pattern is found with `in` (a C substring search), a caseless
    ASCII pattern is matched lower-cased against the lower-cased body (Python's IGNORECASE
    regexes are several times slower), other patterns with a bytes regex (ASCII) or on text.
    """

    def __init__(self, op: str, value: str) -> None:
        """Raises re.error (and friends) for a bad pattern; the caller reports it."""
        self.op = op
        self.value = value
        caseless = op.endswith("*")
        self.exact_b = value.encode("utf-8")
        self.text_rx: re.Pattern[str] | None = None
        self.bytes_rx: re.Pattern[bytes] | None = None
        self.needle: bytes | None = None
        self.lower = False
        if op.lstrip("!") not in ("~", "~*"):
            return
        flags = re.IGNORECASE if caseless else 0
        self.text_rx = re.compile(value, flags)
        if not value.isascii():
            return
        if re.escape(value) == value or (value and not any(c in value for c in "\\.^$*+?{}[]|()")):
            self.needle = value.lower().encode() if caseless else value.encode()
            self.lower = caseless
        elif caseless and not _UPPER_ESCAPE.search(value):
            self.bytes_rx = re.compile(value.lower().encode("ascii"))
            self.lower = True
        else:
            self.bytes_rx = re.compile(value.encode("ascii"), flags)

    def text(self, s: str) -> bool:
        if self.text_rx is not None:
            return self.text_rx.search(s) is not None
        return s == self.value

    def data(self, b: bytes) -> bool:
        if self.needle is not None:
            return self.needle in (b.lower() if self.lower else b)
        if self.bytes_rx is not None:
            return self.bytes_rx.search(b.lower() if self.lower else b) is not None
        if self.text_rx is not None:
            return self.text_rx.search(b.decode("utf-8", "replace")) is not None
        return b == self.exact_b


def header_predicate(side: str, name: str, m: TextMatcher, negative: bool
                     ) -> Callable[[Exchange], bool]:
    """`[req.|resp.]header.NAME op VALUE`: some header NAME (case-insensitive) matches;
    negative (`!=`, `!~`): none does (a missing header included)."""
    low = name.lower()
    req, resp = side in ("", "req"), side in ("", "resp")

    def any_match(e: Exchange) -> bool:
        if req:
            for k, v in e.request_headers:
                if k.lower() == low and m.text(v):
                    return True
        if resp:
            for k, v in e.response_headers:
                if k.lower() == low and m.text(v):
                    return True
        return False

    if negative:
        return lambda e: not any_match(e)
    return any_match


def header_presence(side: str, name: str) -> Callable[[Exchange], bool]:
    """`[req.|resp.]header.NAME` alone: the header is present."""
    low = name.lower()
    req, resp = side in ("", "req"), side in ("", "resp")
    return lambda e: (req and any(k.lower() == low for k, _v in e.request_headers)) or (
        resp and any(k.lower() == low for k, _v in e.response_headers))


def body_predicate(side: str, m: TextMatcher, negative: bool) -> Callable[[Exchange], bool]:
    """`[req.|resp.]body op VALUE` on the decoded bodies; negative: neither matches."""
    req, resp = side in ("", "req"), side in ("", "resp")

    def any_match(e: Exchange) -> bool:
        return bool((req and m.data(_body(e, True))) or (resp and m.data(_body(e, False))))

    if negative:
        return lambda e: not any_match(e)
    return any_match
