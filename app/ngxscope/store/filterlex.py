"""The words of the filter language (store/filterexpr.py): its fields and flags, and the
lexer that cuts filter text into tokens (a field condition, a flag, a word, a quoted string,
parentheses and the and/or/not operators), each with the column it starts at."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ngxscope.model import Exchange

__all__ = ["CASELESS", "FIELDS", "FLAGS", "MULTI_FIELDS", "NUMBER_FIELDS", "SEARCH_RE", "STRING_FIELDS",
           "FilterError", "Predicate", "Token", "lex", "quote_value"]

Predicate = Callable[[Exchange], bool]


class FilterError(ValueError):
    """The filter text is not valid; `column` is 1-based (0 when unknown)."""

    def __init__(self, message: str, column: int = 0) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} (column {column})" if column else message)


STRING_FIELDS = {
    "method": lambda e: e.method,
    "host": lambda e: e.host,
    "path": lambda e: e.path,
    "target": lambda e: e.target,
    "url": lambda e: e.host + e.target,
    "client": lambda e: e.client,
    "server": lambda e: e.server,
    "conn": lambda e: e.conn_id,
    "error": lambda e: e.error or "",
    "note": lambda e: e.note,
    "mark": lambda e: e.mark,
    "block": lambda e: e.server_block or "",
    "location": lambda e: e.location or "",
    "answer": lambda e: e.answer or "",
    "sni": lambda e: e.sni or "",
    "alpn": lambda e: e.alpn or "",
    "cipher": lambda e: e.tls_cipher or "",
    "outcome": lambda e: e.conn_outcome or "",
}
"""Fields compared as text."""

NUMBER_FIELDS = {
    "status": lambda e: e.status,
    "worker": lambda e: e.pid,
    "pid": lambda e: e.pid,
    "duration": lambda e: e.duration_ms,
    "size": lambda e: e.response_bytes,
    "reqsize": lambda e: e.request_bytes,
    "handshake": lambda e: e.tls_handshake_ms,
    "connect": lambda e: e.tcp_connect_ms,
    "retransmits": lambda e: e.retransmits,
    "tls_version": lambda e: _tls_number(e.tls_version),
}
"""Fields compared as numbers (duration in ms)."""

MULTI_FIELDS = {"upstream", "upstream_status"}
"""Fields with one value per upstream attempt: true when any attempt matches."""

FIELDS = sorted([*STRING_FIELDS, *NUMBER_FIELDS, *MULTI_FIELDS])

FLAGS: dict[str, Predicate] = {
    "tls": lambda e: e.tls,
    "error": lambda e: e.error is not None,
    "truncated": lambda e: e.truncated,
    "upstream": lambda e: bool(e.upstream),
    "sendfile": lambda e: e.sendfile_bytes > 0,
    "summary": lambda e: e.summary_only,
    "marked": lambda e: bool(e.mark),
    "noted": lambda e: bool(e.note),
    "resumed": lambda e: e.tls_resumed is True,
    "reset": lambda e: e.reset_by is not None,
    "tls_failed": lambda e: e.conn_outcome == "tls-failed",
}

CASELESS = {"method", "host", "mark"}
OPS = ("!~*", "~*", "==", "!=", ">=", "<=", "!~", "=", "~", ">", "<")
_COND_RE = re.compile(
    r"((?:req\.|resp\.)?(?:header\.[A-Za-z0-9_-]+|body)|[A-Za-z_][A-Za-z0-9_]*)"
    r"\s*(!~\*|~\*|==|!=|>=|<=|!~|=|~|>|<)")
SEARCH_RE = re.compile(r"(?:(req|resp)\.)?(?:header\.([a-z0-9_-]+)|(body))")
"""Header and body fields: an optional side, then `header.NAME` or `body`."""
_BADSEARCH_RE = re.compile(r"((?:req|resp|header)\.[^\s=~!<>()]*)\s*[=~!<>]", re.IGNORECASE)
"""Something like a header/body field that is none (a typo, not a bare word to search)."""
_WORD_STOP = set(" \t\r\n\f\v()\"'")


def _tls_number(version: str | None) -> float | None:
    """"TLSv1.2" -> 1.2 ("TLSv1" -> 1.0, "SSLv3" -> 0.3), for `tls_version<1.2`."""
    if not version:
        return None
    m = re.match(r"^(TLS|SSL)v(\d+(?:\.\d+)?)$", version)
    if not m:
        return None
    number = float(m.group(2))
    return number / 10 if m.group(1) == "SSL" else number


@dataclass(slots=True)
class Token:
    kind: str  # "(" ")" "and" "or" "not" "cond" "word" "string" "flag" "eof"
    col: int  # 1-based
    text: str = ""
    field: str = ""
    op: str = ""
    value: str = ""
    value_col: int = 0


def quote_value(value: str) -> str:
    """Render `value` so the lexer reads it back as one value (quoted when needed)."""
    if value and not any(c in _WORD_STOP for c in value) and value.lower() not in (
        "and",
        "or",
        "not",
    ):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_string(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted string starting at `pos` (the quote). Returns (value, end)."""
    quote = text[pos]
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise FilterError("unterminated string", pos + 1)


def _read_value(text: str, pos: int) -> tuple[str, int]:
    """An unquoted value: up to whitespace or an unbalanced ')'."""
    depth = 0
    i = pos
    while i < len(text):
        c = text[i]
        if c.isspace():
            break
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                break
            depth -= 1
        i += 1
    return text[pos:i], i


def lex(text: str) -> list[Token]:
    """The tokens of filter `text`, ending with an "eof" one. Raises `FilterError`."""
    toks: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        col = i + 1
        if c in "()":
            toks.append(Token(c, col))
            i += 1
        elif text.startswith("&&", i):
            toks.append(Token("and", col, "&&"))
            i += 2
        elif text.startswith("||", i):
            toks.append(Token("or", col, "||"))
            i += 2
        elif c == "!":
            toks.append(Token("not", col, "!"))
            i += 1
        elif c in "\"'":
            value, i = _read_string(text, i)
            toks.append(Token("string", col, value))
        else:
            m = _COND_RE.match(text, i)
            if m:
                name = m.group(1).lower()
                if name not in FIELDS and not SEARCH_RE.fullmatch(name):
                    raise FilterError(
                        f"unknown field '{m.group(1)}' (fields: {', '.join(FIELDS)})", col
                    )
                j = m.end()
                while j < n and text[j] in " \t":
                    j += 1
                vcol = j + 1
                if j < n and text[j] in "\"'":
                    value, i = _read_string(text, j)
                else:
                    value, i = _read_value(text, j)
                    if not value:
                        raise FilterError(f"missing value after '{m.group(0).strip()}'", vcol)
                toks.append(Token("cond", col, m.group(0), name, m.group(2), value, vcol))
                continue
            bad = _BADSEARCH_RE.match(text, i)
            if bad:
                raise FilterError(f"unknown field '{bad.group(1)}' (header.NAME, req.header.NAME, "
                                  "resp.header.NAME, body, req.body, resp.body)", col)
            j = i
            while j < n and text[j] not in _WORD_STOP:
                if text.startswith("&&", j) or text.startswith("||", j):
                    break
                j += 1
            word = text[i:j]
            low = word.lower()
            if low in ("and", "or", "not"):
                toks.append(Token(low, col, word))
            elif low in FLAGS:
                toks.append(Token("flag", col, low))
            elif (hm := SEARCH_RE.fullmatch(low)) and hm.group(2):
                toks.append(Token("has", col, low, low))
            else:
                toks.append(Token("word", col, word))
            i = j
    toks.append(Token("eof", n + 1))
    return toks
