"""A validated fast path for current-version exchange records (opening a large session).

`parse_record` builds an `Exchange` from every exchange line and type-checks each of its
fields, some 15 µs a record. Opening a 1,000,000-exchange session needs full `Exchange`s
only for the newest table rows; every other record only feeds the aggregates. This module
proves, much more cheaply, that `parse_record` would accept a record, without building it:

- `check_exchange(data)` returns True only for a decoded record whose keys are exactly the
  ones `SessionWriter` writes, in its order, each value of its field's JSON type (the type
  signature of the record is checked against a cache of verified signatures), headers
  pairs, bodies canonical base64 and upstream attempts likewise exact. Anything else
  returns False and the caller takes the full path (`parse_record`), which gives the same
  `Exchange` or the same one-line error: strictness is unchanged, only the common case is
  faster. Unknown keys therefore always reach `parse_record` and its `SessionError`.
- `build_exchange(data)` turns a record `check_exchange` accepted into the very `Exchange`
  `parse_record` would return.
- `decode_line(line, version)` is `parse_record` with this fast path in front: accepted
  records come back as `RawExchange`s (the dict and its line), everything else as before.

Only records of `CURRENT_VERSION` take this path; older versions are migrated on the full
path as before. The expected keys and types are derived from the model's dataclasses, so
a format change (which bumps the version) cannot silently loosen the check.
"""

from __future__ import annotations

import re
import types
import typing
from binascii import a2b_base64
from dataclasses import fields
from typing import Any

from ngxscope.model import Exchange, UpstreamAttempt, WireFrame
from ngxscope.store.codec import Record, parse_record
from ngxscope.store.compat import CURRENT_VERSION

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency, json the fallback
    from json import loads as _loads  # type: ignore[assignment]

__all__ = ["EXCHANGE_KEYS", "RawExchange", "build_exchange", "check_exchange", "decode_line", "rebuild"]

EXCHANGE_KEYS: tuple[str, ...] = ("t", *(f.name for f in fields(Exchange)), "duration_ms")
"""The keys of an exchange record in the order `SessionWriter` writes them."""
_ATTEMPT_KEYS: tuple[str, ...] = tuple(f.name for f in fields(UpstreamAttempt))

# Canonical base64 (what the writer emits): always accepted by base64.b64decode(validate=True).
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_MAX_SIGNATURES = 4096  # distinct type signatures remembered (nullable fields vary)


_ANY = frozenset({object})
# Fields whose contents are checked apart (items, base64); only these may be lists or bytes.
_APART = {"request_headers": list, "response_headers": list, "upstream": list, "subrequest_upstream": list,
          "request_body": str, "response_body": str, "wire_packets": list}


def _json_types(hint: Any) -> frozenset[type] | None:
    """The JSON value types `parse_record` accepts for a scalar field annotated `hint`
    (None: a type this fast path does not know, so such records always take the full path)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        out: set[type] = set()
        for arg in typing.get_args(hint):
            sub = _json_types(arg)
            if sub is None:
                return None
            out |= sub
        return frozenset(out)
    if hint is type(None):
        return frozenset({type(None)})
    if hint is float:
        return frozenset({float, int})  # as codec._compile: an int is a float, a bool is not
    if hint in (int, bool, str):
        return frozenset({hint})
    return None


def _allowed(cls: type) -> tuple[frozenset[type] | None, ...]:
    """Per field of `cls`, in order, the JSON types its value may have."""
    hints = typing.get_type_hints(cls)
    return tuple(frozenset({_APART[f.name]}) if f.name in _APART else _json_types(hints[f.name])
                 for f in fields(cls))


# "t" is a str (its value is checked apart); from_dict drops duration_ms whatever its type.
_EXCHANGE_ALLOWED = (frozenset({str}), *_allowed(Exchange), _ANY)
_ATTEMPT_ALLOWED = _allowed(UpstreamAttempt)


class _Signatures:
    """Remembers which tuples of value types fit a record layout."""

    def __init__(self, allowed: tuple[frozenset[type] | None, ...]) -> None:
        self.allowed = allowed
        self.known: dict[tuple[type, ...], bool] = {}

    def check(self, sig: tuple[type, ...]) -> bool:
        ok = self.known.get(sig)
        if ok is None:
            ok = len(sig) == len(self.allowed) and all(
                a is not None and (a is _ANY or t in a) for t, a in zip(sig, self.allowed, strict=True))
            if len(self.known) < _MAX_SIGNATURES:
                self.known[sig] = ok
        return ok


_EXCHANGE_SIGS = _Signatures(_EXCHANGE_ALLOWED)
_ATTEMPT_SIGS = _Signatures(_ATTEMPT_ALLOWED)


_b64_match = _B64.fullmatch


def check_exchange(data: Any) -> bool:
    """True if `data` (a decoded line) is an exchange record `parse_record` certainly accepts
    and `build_exchange` builds exactly; False: take the full path, which decides.

    (Written flat: it runs for every record of a session being opened.)
    """
    if type(data) is not dict or tuple(data) != EXCHANGE_KEYS or data["t"] != "exchange":
        return False
    sig = tuple(map(type, data.values()))
    ok = _EXCHANGE_SIGS.known.get(sig)
    if not (ok or (ok is None and _EXCHANGE_SIGS.check(sig))):
        return False
    for h in data["request_headers"]:  # from_dict unpacks each into (name, value)
        if type(h) is not list or len(h) != 2:
            return False
    for h in data["response_headers"]:
        if type(h) is not list or len(h) != 2:
            return False
    body = data["request_body"]
    if body and _b64_match(body) is None:
        return False
    body = data["response_body"]
    if body and _b64_match(body) is None:
        return False
    for w in data["wire_packets"]:
        if (type(w) is not dict or tuple(w) != ("ts", "frame") or type(w["ts"]) not in (float, int)
                or type(w["frame"]) is not str or (w["frame"] and _b64_match(w["frame"]) is None)):
            return False
    known = _ATTEMPT_SIGS.known
    for a in (*data["upstream"], *data["subrequest_upstream"]):
        if type(a) is not dict or tuple(a) != _ATTEMPT_KEYS:
            return False
        sig = tuple(map(type, a.values()))
        ok = known.get(sig)
        if not (ok or (ok is None and _ATTEMPT_SIGS.check(sig))):
            return False
    return True


def build_exchange(data: dict[str, Any]) -> Exchange:
    """The `Exchange` of a record `check_exchange` accepted (`data` is consumed)."""
    del data["t"], data["duration_ms"]
    for name in ("request_body", "response_body"):
        data[name] = a2b_base64(data[name]) if data[name] else b""
    for name in ("request_headers", "response_headers"):
        data[name] = [(str(k), str(v)) for k, v in data[name]]
    data["upstream"] = [UpstreamAttempt(**a) for a in data["upstream"]]
    if data["wire_packets"]:
        data["wire_packets"] = [WireFrame(float(w["ts"]), a2b_base64(w["frame"]) if w["frame"] else b"")
                                for w in data["wire_packets"]]
    data["subrequest_upstream"] = [UpstreamAttempt(**a) for a in data["subrequest_upstream"]]
    return Exchange(**data)


class RawExchange:
    """An exchange record `check_exchange` accepted, not yet built: the decoded dict and
    its line (a few hundred bytes, to rebuild it later for much less memory than the dict)."""

    __slots__ = ("data", "line")

    def __init__(self, data: dict[str, Any], line: bytes) -> None:
        self.data = data
        self.line = line

    def build(self) -> Exchange:
        """The `Exchange` (consumes `data`)."""
        return build_exchange(self.data)


_EXCHANGE_PREFIX = b'{"t":"exchange",'


def decode_line(line: bytes, version: int) -> Record | RawExchange:
    """`parse_record(line, version)`, except that an exchange record of the current version
    that passes `check_exchange` comes back as a `RawExchange` (not built, not re-checked)."""
    if version == CURRENT_VERSION and line.startswith(_EXCHANGE_PREFIX):
        try:
            data = _loads(line)
        except ValueError:
            pass  # parse_record says why (or takes the json path orjson refuses)
        else:
            if check_exchange(data):
                return RawExchange(data, line)
    return parse_record(line, version)


def rebuild(line: bytes) -> Exchange:
    """The `Exchange` of a `RawExchange.line` (a line `decode_line` accepted before)."""
    return build_exchange(_loads(line))  # the same bytes decode the same way: no new check
