"""The record codec: one line of a session file or of the `record --stream` pipe, both ways.

Every reader and writer of records goes through here: `SessionWriter`/`StreamWriter` (the
capture helper's stream included) encode with `encode_record`/`encode_exchange`; the
session reader, the window's stream source (local helper, `--remote`) and `open` decode
with `check_header` on the first line and `parse_record` on every other one. Records of
an older format version are migrated first (`compat.migrate`, the converters).
"""

from __future__ import annotations

import base64
import json
import time
import types
import typing
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from ngxscope import __version__
from ngxscope.capture import compiled
from ngxscope.model import Exchange, LifecycleEvent, ModelError, UpstreamAttempt, WireFrame
from ngxscope.store.compat import CURRENT_VERSION, migrate

__all__ = [
    "FORMAT",
    "ReadCancelled",
    "Record",
    "SessionError",
    "check_header",
    "encode_exchange",
    "encode_exchange_py",
    "encode_record",
    "end_record",
    "header_record",
    "parse_record",
]

FORMAT = "ngxscope-session"
"""The `format` value of every session header."""

Record = Exchange | LifecycleEvent | dict[str, Any]
"""What `parse_record` returns: a model object, or the dict of a header/stats/end record."""


class SessionError(Exception):
    """A session file or stream cannot be written or read; the message is one clear line."""


class ReadCancelled(SessionError):
    """Reading stopped because the caller's `cancelled()` returned true."""


def encode_record(record: dict[str, Any]) -> bytes:
    """One record as an ASCII JSON line (newline included)."""
    if _orjson_dumps is not None:
        # orjson is several times faster; its output is used when it is plain ASCII (it
        # refuses lone surrogates and ints beyond 64 bits: those take the json path)
        try:
            data = _orjson_dumps(record)
        except TypeError:
            pass
        else:
            if data.isascii():
                return data + b"\n"
    # ensure_ascii keeps any str (lone surrogates included) exact through the round trip.
    text = json.dumps(record, ensure_ascii=True, separators=(",", ":"), check_circular=False)
    return text.encode("ascii") + b"\n"


def header_record(target: dict[str, Any]) -> dict[str, Any]:
    """The first record of every session and stream: format, version, tool, `target`."""
    return {
        "t": "header",
        "format": FORMAT,
        "version": CURRENT_VERSION,
        "created": time.time(),
        "tool": f"ngxscope {__version__}",
        "target": dict(target),
    }


def end_record(exchanges: int) -> dict[str, Any]:
    """The last record of a cleanly closed session or stream."""
    return {"t": "end", "exchanges": exchanges, "ts": time.time()}


def _body(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else ""


_EXCHANGE_PREFIX = b'{"t":"exchange",'


def encode_exchange(ex: Exchange) -> bytes:
    """`encode_record({"t": "exchange", **ex.to_dict()})`, byte for byte, without building the
    dict: orjson walks the dataclass itself (fields in declaration order, as to_dict), bodies
    go through its `default`, and `duration_ms` is appended as to_dict does. Every captured
    exchange passes here: at saturation the dict alone cost more than the JSON. Compiled
    (store._fastcodec) when built: `encode_exchange_py` is its reference."""
    if _fast_line is not None:
        line = _fast_line(ex, round(ex.duration_ms, 3))
        if line is not None:
            return line
    return encode_exchange_py(ex)


def encode_exchange_py(ex: Exchange) -> bytes:
    """`encode_exchange` without the compiled encoder (and what it falls back to for what
    it does not write itself: non-ASCII text, exponent floats, big ints...)."""
    if _orjson_dumps is not None:
        try:
            data = _orjson_dumps(ex, default=_body)
            ms = round(ex.duration_ms, 3)
            # orjson writes a finite float as repr does (tests/store/test_compat.py checks)
            duration = repr(ms).encode() if type(ms) is float and -1e300 < ms < 1e300 else _orjson_dumps(ms)
        except TypeError:
            pass
        else:
            if data.isascii():
                return b"".join((_EXCHANGE_PREFIX, data[1:-1], b',"duration_ms":', duration, b"}\n"))
    return encode_record({"t": "exchange", **ex.to_dict()})


try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a dependency, json the fallback
    _orjson_dumps = None  # type: ignore[assignment]


def _compiled_line() -> Callable[[Exchange, float], bytes | None] | None:
    """store._fastcodec's exchange_line, taught Exchange's and its nested dataclasses' fields
    (in declaration order, as orjson writes a dataclass); None when not built or not wanted."""
    if _orjson_dumps is None or not compiled.wanted():
        return None  # the compiled lines are orjson's bytes: without orjson, json's are
    try:
        from . import _fastcodec
    except ImportError:  # not built: orjson does the work
        return None
    return prepare_fastcodec(_fastcodec)


def prepare_fastcodec(fast: types.ModuleType) -> Callable[[Exchange, float], bytes | None]:
    """Teach store._fastcodec the model's dataclasses and orjson's float text; its
    exchange_line."""
    fast.floats(_orjson_dumps)
    for cls in (Exchange, UpstreamAttempt, WireFrame):
        fast.register(cls, tuple(f.name for f in fields(cls)))
    line: Callable[[Exchange, float], bytes | None] = fast.exchange_line
    return line


_fast_line = _compiled_line()


try:  # faster than json on session records
    from orjson import loads as _orjson_loads

    def _loads(text: str) -> Any:
        try:
            return _orjson_loads(text)
        except ValueError:
            # orjson refuses escaped lone surrogates, which our writer emits for such strings
            return json.loads(text)
except ImportError:  # pragma: no cover - orjson is a dependency, json the fallback
    _loads = json.loads  # type: ignore[assignment]

_Check = Callable[[Any], bool]
_CHECKS: dict[type, list[tuple[str, _Check]]] = {}
# Fields whose type `from_dict` already guarantees by converting them (headers to str pairs,
# bodies from base64); checking them again costs most of a session's reading time.
_CONVERTED: dict[str, tuple[str, ...]] = {
    "Exchange": ("request_headers", "response_headers", "request_body", "response_body"),
}


def _compile(hint: Any) -> _Check:
    """A fast test of whether a value decoded from JSON fits a model field annotation."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        subs = [_compile(a) for a in args if a is not type(None)]
        if len(subs) == 1 and len(args) == 2:
            sub = subs[0]
            return lambda v: v is None or sub(v)
        alts = [_compile(a) for a in args]
        return lambda v: any(c(v) for c in alts)
    if origin is list:
        item = _compile(typing.get_args(hint)[0])
        return lambda v: type(v) is list and all(map(item, v))
    if origin is tuple:
        subs = [_compile(a) for a in typing.get_args(hint)]
        n = len(subs)
        return lambda v: (
            type(v) is tuple and len(v) == n and all(c(x) for c, x in zip(subs, v, strict=True))
        )
    if hint is type(None):
        return lambda v: v is None
    if hint is float:
        return lambda v: type(v) is float or type(v) is int  # not bool
    if hint is int:
        return lambda v: type(v) is int  # not bool
    if isinstance(hint, type) and is_dataclass(hint):
        return lambda v: isinstance(v, hint) and _check_types(v)
    if isinstance(hint, type):
        return lambda v: isinstance(v, hint)
    return lambda v: True


def _check_types(obj: Any) -> bool:
    """Return True if every field of a model object has its annotated type, else raise.

    (`from_dict` checks keys but not value types; a wrongly typed value would only fail
    later, far away, e.g. when exchanges are sorted by start.)
    """
    cls = type(obj)
    checks = _CHECKS.get(cls)
    if checks is None:
        hints = typing.get_type_hints(cls)
        trusted = _CONVERTED.get(cls.__name__, ())
        checks = _CHECKS[cls] = [(f.name, _compile(hints[f.name])) for f in fields(cls) if f.name not in trusted]
    for name, check in checks:
        if not check(getattr(obj, name)):
            value = getattr(obj, name)
            raise ModelError(f"bad {cls.__name__} record: {name} cannot be {type(value).__name__}")
    return True


def parse_record(line: str | bytes, version: int = CURRENT_VERSION) -> Record:
    """Decode one line of a session file or stream.

    Exchange and event records become `Exchange` / `LifecycleEvent`; header, stats and
    end records are returned as dicts (their `"t"` key included). Records of an older
    format `version` are migrated first (`compat.migrate`). Raises `SessionError` (no
    line number: the caller knows it) for anything that is not a valid record.
    """
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        data = _loads(line)
    except UnicodeDecodeError:
        raise SessionError("record is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise SessionError(f"record is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SessionError(f"record is a JSON {type(data).__name__}, not an object")
    kind = data.get("t")
    if not isinstance(kind, str):
        raise SessionError('record has no "t" (record type) key')
    try:
        data = migrate(data, version)
        if kind == "exchange":
            del data["t"]
            obj: Exchange | LifecycleEvent = Exchange.from_dict(data)
        elif kind == "event":
            del data["t"]
            obj = LifecycleEvent.from_dict(data)
        elif kind in ("header", "stats"):
            return data
        elif kind == "end":
            if isinstance(data.get("exchanges"), bool) or not isinstance(
                data.get("exchanges"), int
            ):
                raise ModelError('end record needs an integer "exchanges"')
            return data
        else:
            raise SessionError(f"unknown record type {kind!r}")
        _check_types(obj)
    except (ModelError, TypeError, ValueError, AttributeError) as exc:
        # from_dict lets TypeError/AttributeError through for some wrong value types.
        raise SessionError(str(exc) or type(exc).__name__) from None
    return obj


def check_header(record: Any, source: str) -> int:
    """Validate a header record (from `parse_record` on line 1) and return its version.

    `source` names the file or stream in the error message.
    """
    if not isinstance(record, dict) or record.get("t") != "header":
        raise SessionError(f"{source} is not an ngxscope session (no session header)")
    if record.get("format") != FORMAT:
        raise SessionError(f"{source} is not an ngxscope session (format {record.get('format')!r})")
    version = record.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise SessionError(f"{source} has an invalid format version {version!r}")
    if version > CURRENT_VERSION:
        raise SessionError(
            f"{source} was written by a newer ngxscope (format version {version});"
            f" this version reads up to {CURRENT_VERSION}"
        )
    return version
