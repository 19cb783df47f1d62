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

from ngxscope.model import Exchange
from ngxscope.store.bodysearch import (
    TextMatcher,
    body_predicate,
    header_predicate,
    header_presence,
)
from ngxscope.store.filterlex import (
    CASELESS,
    FIELDS,
    FLAGS,
    NUMBER_FIELDS,
    SEARCH_RE,
    STRING_FIELDS,
    FilterError,
    Predicate,
    Token,
    lex,
    quote_value,
)

__all__ = ["FilterError", "Predicate", "compile_filter", "quote_value", "search_patterns"]

MAX_DEPTH = 64
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m)?$", re.IGNORECASE)
_DURATION_UNITS = {None: 1.0, "us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d*)?)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_STATUS_CLASS_RE = re.compile(r"^([1-5])xx$", re.IGNORECASE)


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


def _number_test(tok: Token) -> Callable[[float | None], bool]:
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


def _text_test(tok: Token, caseless: bool) -> Callable[[str], bool]:
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


def _search(tok: Token) -> Predicate:
    """A header or body condition (store/bodysearch.py)."""
    m = SEARCH_RE.fullmatch(tok.field)
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


def _condition(tok: Token) -> Predicate:
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
        pos = Token(tok.kind, tok.col, tok.text, field, {"!=": "=", "!~": "~"}.get(tok.op, tok.op),
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
    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
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
            hm = SEARCH_RE.fullmatch(tok.field)
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
    return _Parser(lex(text)).parse()


def search_patterns(text: str) -> list[re.Pattern[str]]:
    """The text patterns of the header and body terms of filter `text` (for highlighting
    what they matched); [] for a filter that does not compile."""
    try:
        toks = lex(text)
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
