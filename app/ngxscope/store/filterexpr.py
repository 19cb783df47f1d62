"""The filter language of the window and of `ngxscope export --filter`.

Grammar (recursive descent, keywords case-insensitive)::

    expr    := and_ (("or" | "||") and_)*
    and_    := unary (("and" | "&&")? unary)*        # juxtaposition means "and"
    unary   := ("not" | "!") unary | primary
    primary := "(" expr ")" | FIELD OP VALUE | FLAG | WORD | "quoted string"

Fields: status, method, host, path, url (host + target), target, duration, upstream,
upstream_status, worker (alias pid), client, server, conn, size (response bytes), reqsize,
error, mark, note, block (the server block), location (its location block as written:
``location=/api/``, ``location="= /health"``, ``location=@fallback``), answer (why nginx
answered itself: ``answer=cache-hit``, ``answer~^cache-`` (capture.selfanswer), ``answer~^limit-req``,
``answer=return``, ``answer=client-abort``). Operators: ``= == != ~ !~ ~* !~* > >= < <=``. ``~`` is a regular-expression search,
case-sensitive (except on method and host); ``~*`` is the same search ignoring case (as in
nginx's ``location ~*``); ``=`` is exact and case-sensitive (method and host: caseless).
Flags: ``tls``, ``error``, ``truncated``, ``upstream`` (had an upstream attempt), ``sendfile``,
``summary`` (counted from the kernel summary, payload not captured),
``marked`` (the user marked the row: ``mark=red`` for one colour), ``noted`` (has a note:
``note~*ticket`` searches the notes).

Headers and bodies (store/bodysearch.py)::

    header.x-request-id=abc          a request or response header (name caseless) equals abc
    req.header.user-agent~*curl      request headers only; resp.header.NAME: response only
    header.x-request-id              the header is present (req./resp. prefixes too)
    body~"error code"                request or response body, decoded (de-chunked, gunzipped,
    resp.body~*timeout               JSON escapes resolved); req.body / resp.body: one side

A negative test (``!=``, ``!~``, ``!~*``) on a header holds when no such header matches
(a missing header included); on ``body`` when neither body matches.
A bare word or a quoted string matches the URL (host + target) as a case-insensitive
substring. Examples::

    status>=500
    status=5xx and not tls
    path~^/api && (method=POST || method=PUT)
    duration>200ms upstream=10.0.0.2:8080
    "/login?next="
    resp.header.content-type~json body~*"error code"

`compile_filter(text)` returns a predicate; empty text matches everything. Any malformed
input raises `FilterError` with a message and the 1-based column of the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ngxscope.model import Exchange
from ngxscope.store.bodysearch import (
    TextMatcher,
    body_predicate,
    header_predicate,
    header_presence,
)

__all__ = ["FIELDS", "FLAGS", "FilterError", "Predicate", "compile_filter", "quote_value",
           "search_patterns"]

Predicate = Callable[[Exchange], bool]

MAX_DEPTH = 64


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
_SEARCH_RE = re.compile(r"(?:(req|resp)\.)?(?:header\.([a-z0-9_-]+)|(body))")
"""Header and body fields: an optional side, then `header.NAME` or `body`."""
_BAD_SEARCH_RE = re.compile(r"((?:req|resp|header)\.[^\s=~!<>()]*)\s*[=~!<>]", re.IGNORECASE)
"""Something like a header/body field that is none (a typo, not a bare word to search)."""
_WORD_STOP = set(" \t\r\n\f\v()\"'")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m)?$", re.IGNORECASE)
_DURATION_UNITS = {None: 1.0, "us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d*)?)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_STATUS_CLASS_RE = re.compile(r"^([1-5])xx$", re.IGNORECASE)


@dataclass(slots=True)
class _Tok:
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


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        col = i + 1
        if c in "()":
            toks.append(_Tok(c, col))
            i += 1
        elif text.startswith("&&", i):
            toks.append(_Tok("and", col, "&&"))
            i += 2
        elif text.startswith("||", i):
            toks.append(_Tok("or", col, "||"))
            i += 2
        elif c == "!":
            toks.append(_Tok("not", col, "!"))
            i += 1
        elif c in "\"'":
            value, i = _read_string(text, i)
            toks.append(_Tok("string", col, value))
        else:
            m = _COND_RE.match(text, i)
            if m:
                name = m.group(1).lower()
                if name not in FIELDS and not _SEARCH_RE.fullmatch(name):
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
                toks.append(_Tok("cond", col, m.group(0), name, m.group(2), value, vcol))
                continue
            bad = _BAD_SEARCH_RE.match(text, i)
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
                toks.append(_Tok(low, col, word))
            elif low in FLAGS:
                toks.append(_Tok("flag", col, low))
            elif (hm := _SEARCH_RE.fullmatch(low)) and hm.group(2):
                toks.append(_Tok("has", col, low, low))
            else:
                toks.append(_Tok("word", col, word))
            i = j
    toks.append(_Tok("eof", n + 1))
    return toks


def _tls_number(version: str | None) -> float | None:
    """"TLSv1.2" -> 1.2 ("TLSv1" -> 1.0, "SSLv3" -> 0.3), for `tls_version<1.2`."""
    if not version:
        return None
    m = re.match(r"^(TLS|SSL)v(\d+(?:\.\d+)?)$", version)
    if not m:
        return None
    number = float(m.group(2))
    return number / 10 if m.group(1) == "SSL" else number


def _parse_number(field: str, value: str, col: int) -> float:
    if field == "tls_version":
        m = re.match(r"^(?:tlsv?)?(\d+(?:\.\d+)?)$", value.strip(), re.IGNORECASE)
        if not m:
            raise FilterError(f"bad TLS version '{value}' (e.g. 1.2)", col)
        return float(m.group(1))
    if field in ("duration", "handshake", "connect"):
        m = _DURATION_RE.match(value.strip())
        if not m:
            raise FilterError(f"bad duration '{value}' (e.g. 200ms, 1.5s, 300us)", col)
        unit = m.group(2).lower() if m.group(2) else None
        return float(m.group(1)) * _DURATION_UNITS[unit]
    if field in ("size", "reqsize"):
        m = _SIZE_RE.match(value.strip())
        if not m:
            raise FilterError(f"bad size '{value}' (e.g. 1500, 10k, 2M)", col)
        mult = {"k": 1024, "m": 1024**2, "g": 1024**3}.get((m.group(2) or "b")[0].lower(), 1)
        return float(m.group(1)) * mult
    try:
        return float(int(value, 10))
    except ValueError:
        what = "status (e.g. 404 or 5xx)" if field in ("status", "upstream_status") else "number"
        raise FilterError(f"bad {what} '{value}' for {field}", col) from None


def _compare(op: str, a: float, b: float) -> bool:
    if op in ("=", "=="):
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b


def _number_test(tok: _Tok) -> Callable[[float | None], bool]:
    """A test on one numeric value (None = absent: only `!=` matches it)."""
    op, field = tok.op, tok.field
    if "~" in op:
        raise FilterError(f"'{op}' needs a text field, {field} is a number", tok.col)
    m = _STATUS_CLASS_RE.match(tok.value) if field in ("status", "upstream_status") else None
    if m:
        if op not in ("=", "==", "!="):
            raise FilterError(f"'{op}' cannot compare with a status class", tok.col)
        cls_ = int(m.group(1))
        if op == "!=":
            return lambda v: v is None or v // 100 != cls_
        return lambda v: v is not None and v // 100 == cls_
    if field in ("status", "upstream_status") and tok.value.lower() in ("none", "-"):
        if op not in ("=", "==", "!="):
            raise FilterError(f"'{op}' cannot compare with none", tok.col)
        return (lambda v: v is not None) if op == "!=" else (lambda v: v is None)
    ref = _parse_number(field, tok.value, tok.value_col)
    if op == "!=":
        return lambda v: v is None or v != ref
    return lambda v: v is not None and _compare(op, v, ref)


def _text_test(tok: _Tok, caseless: bool) -> Callable[[str], bool]:
    op, value = tok.op, tok.value
    if op in ("~", "!~", "~*", "!~*"):
        try:
            rx = re.compile(value, re.IGNORECASE if caseless or op.endswith("*") else 0)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise FilterError(f"bad regular expression: {exc}", tok.value_col) from None
        if op in ("~", "~*"):
            return lambda s: rx.search(s) is not None
        return lambda s: rx.search(s) is None
    if op not in ("=", "==", "!="):
        raise FilterError(f"'{op}' needs a number field, {tok.field} is text", tok.col)
    if caseless:
        low = value.lower()
        if op == "!=":
            return lambda s: s.lower() != low
        return lambda s: s.lower() == low
    if op == "!=":
        return lambda s: s != value
    return lambda s: s == value


def _search(tok: _Tok) -> Predicate:
    """A header or body condition (store/bodysearch.py)."""
    m = _SEARCH_RE.fullmatch(tok.field)
    assert m is not None
    side, name = m.group(1) or "", m.group(2)
    if tok.op not in ("=", "==", "!=", "~", "!~", "~*", "!~*"):
        raise FilterError(f"'{tok.op}' cannot compare text ({tok.field}): use = != ~ !~ ~* !~*",
                          tok.col)
    positive = {"!=": "=", "!~": "~", "!~*": "~*"}.get(tok.op, tok.op)
    try:
        matcher = TextMatcher(positive, tok.value)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise FilterError(f"bad regular expression: {exc}", tok.value_col) from None
    negative = tok.op.startswith("!")
    if name:
        return header_predicate(side, name, matcher, negative)
    return body_predicate(side, matcher, negative)


def _condition(tok: _Tok) -> Predicate:
    field = tok.field
    if field not in FIELDS:
        return _search(tok)
    if field in NUMBER_FIELDS:
        get_n = NUMBER_FIELDS[field]
        ntest = _number_test(tok)
        return lambda e: ntest(get_n(e))
    if field in STRING_FIELDS:
        get_s = STRING_FIELDS[field]
        stest = _text_test(tok, field in CASELESS)
        return lambda e: stest(get_s(e))
    negative = tok.op in ("!=", "!~")
    if field == "upstream":
        # "upstream!=X": no attempt went to X. Test positively, then negate.
        pos = _Tok(tok.kind, tok.col, tok.text, field, {"!=": "=", "!~": "~"}.get(tok.op, tok.op),
                   tok.value, tok.value_col)
        utest = _text_test(pos, False)
        if negative:
            return lambda e: not any(utest(a.addr) for a in e.upstream)
        return lambda e: any(utest(a.addr) for a in e.upstream)
    # upstream_status
    ust = _number_test(tok)
    if negative:
        return lambda e: all(ust(a.status) for a in e.upstream)
    return lambda e: any(ust(a.status) for a in e.upstream)


def _word(text: str) -> Predicate:
    low = text.lower()
    return lambda e: low in (e.host + e.target).lower()


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.expr()
        tok = self.peek()
        if tok.kind != "eof":
            raise FilterError(f"unexpected '{tok.text or tok.kind}'", tok.col)
        return pred

    def expr(self) -> Predicate:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError("expression nested too deeply", self.peek().col)
        parts = [self.and_()]
        while self.peek().kind == "or":
            self.take()
            parts.append(self.and_())
        self.depth -= 1
        if len(parts) == 1:
            return parts[0]
        return lambda e: any(p(e) for p in parts)

    def and_(self) -> Predicate:
        parts = [self.unary()]
        while True:
            kind = self.peek().kind
            if kind == "and":
                self.take()
            elif kind in ("eof", "or", ")"):
                break
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda e: all(p(e) for p in parts)

    def unary(self) -> Predicate:
        if self.peek().kind == "not":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise FilterError("expression nested too deeply", self.peek().col)
            self.take()
            inner = self.unary()
            self.depth -= 1
            return lambda e: not inner(e)
        return self.primary()

    def primary(self) -> Predicate:
        tok = self.take()
        if tok.kind == "(":
            inner = self.expr()
            close = self.take()
            if close.kind != ")":
                raise FilterError(f"missing ')' for '(' at column {tok.col}", close.col)
            return inner
        if tok.kind == "cond":
            return _condition(tok)
        if tok.kind == "flag":
            return FLAGS[tok.text]
        if tok.kind == "has":
            hm = _SEARCH_RE.fullmatch(tok.field)
            assert hm is not None
            return header_presence(hm.group(1) or "", hm.group(2))
        if tok.kind in ("word", "string"):
            return _word(tok.text)
        if tok.kind == "eof":
            raise FilterError("expression ends too early", tok.col)
        raise FilterError(f"unexpected '{tok.text or tok.kind}'", tok.col)


def _match_all(_e: Exchange) -> bool:
    return True


def compile_filter(text: str) -> Predicate:
    """Compile filter `text` into a predicate over exchanges. Raises `FilterError`."""
    if not text or not text.strip():
        return _match_all
    return _Parser(_lex(text)).parse()


def search_patterns(text: str) -> list[re.Pattern[str]]:
    """The text patterns of the header and body terms of filter `text` (for highlighting
    what they matched); [] for a filter that does not compile."""
    try:
        toks = _lex(text)
    except FilterError:
        return []
    out = []
    for prev, tok in zip([None, *toks], toks, strict=False):
        if tok.kind != "cond" or tok.field in FIELDS or tok.op.startswith("!") or (
                prev is not None and prev.kind == "not"):
            continue
        value = tok.value if "~" in tok.op else re.escape(tok.value)
        try:
            out.append(re.compile(value, re.IGNORECASE if tok.op == "~*" else 0))
        except (re.error, OverflowError, RecursionError, ValueError):
            continue
    return out
