"""The session record format: its versions, the record codec, and reading old versions.

`parse_record` decodes one line (of a session file or of the `record --stream` pipe) into
a model object, migrating records of older versions first; `encode_record` is the other
way. `session` re-exports the codec; import it from there.

Migrations follow mitmproxy's io/compat.py. Every change to the record format bumps `CURRENT_VERSION` and adds one
`convert_<N>_<N+1>` function that rewrites a single record of version N into version
N+1. `migrate` chains them, so a reader only ever parses current records. Old files are
never rewritten on disk. The frozen files under `tests/store/samples/` prove that each
version ever released still reads; never edit them, add a new one per version.

Format history:

- **version 0** (pre-release prototype): the records of version 1, except that an
  exchange stored its headers as JSON objects under `req_headers` / `resp_headers`
  (`{"Host": "a"}`), which lost header order and repeated names.
- **version 1**: headers are lists of `[name, value]` pairs in wire order under
  `request_headers` / `response_headers` (`Exchange.to_dict()`).
- **version 2**: exchange records gained `nginx_ms` (nginx's own `$request_time`, in ms;
  null when unknown). A version 1 reader would reject the new key, hence the bump.
- **version 3**: exchange records gained `server_block` and upstream attempts `group`
  (names from nginx's configuration; null when unknown).
- **version 4**: exchange records gained `summary_only` (counted from the kernel summary,
  payload not captured). Version 3 said so with an `error` note beginning "payload shed"
  or "payload not captured"; such a note is no error and goes. They also gained
  `proxy_client` (the client a PROXY protocol header named; null without one, as always
  before).

Any change to what `Exchange.to_dict()` / `LifecycleEvent.to_dict()` emit (a new field
included) is a format change: bump `CURRENT_VERSION`, add the converter, and freeze a new
sample (tests/store/samples/make_samples.py). `test_compat.py` fails until that is done.
"""

from __future__ import annotations

import base64
import json
import types
import typing
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from ngxscope.model import Exchange, LifecycleEvent, ModelError

__all__ = [
    "CONVERTERS",
    "CURRENT_VERSION",
    "FORMAT",
    "ReadCancelled",
    "Record",
    "SessionError",
    "check_header",
    "convert_0_1",
    "convert_1_2",
    "convert_2_3",
    "convert_3_4",
    "encode_exchange",
    "encode_record",
    "migrate",
    "parse_record",
]

RawRecord = dict[str, Any]

FORMAT = "ngxscope-session"
"""The `format` value of every session header."""

Record = Exchange | LifecycleEvent | dict[str, Any]
"""What `parse_record` returns: a model object, or the dict of a header/stats/end record."""

CURRENT_VERSION = 4
"""The record format version this ngxscope writes, and the newest it reads."""


def _headers_0_1(value: Any, key: str) -> list[list[str]]:
    if not isinstance(value, dict):
        raise ModelError(f"bad version 0 exchange record: {key} must be an object")
    return [[str(name), str(val)] for name, val in value.items()]


def convert_0_1(record: RawRecord) -> RawRecord:
    """Version 0 → 1: header objects `req_headers`/`resp_headers` become pair lists.

    Only exchange records changed; every other record is returned as it is.
    """
    if record.get("t") != "exchange":
        return record
    out = dict(record)
    for old, new in (("req_headers", "request_headers"), ("resp_headers", "response_headers")):
        if old in out:
            if new in out:
                raise ModelError(f"bad version 0 exchange record: both {old} and {new}")
            out[new] = _headers_0_1(out.pop(old), old)
    return out


def convert_1_2(record: RawRecord) -> RawRecord:
    """Version 1 → 2: exchange records get `nginx_ms` (unknown in version 1: null)."""
    if record.get("t") != "exchange" or "nginx_ms" in record:
        return record
    return {**record, "nginx_ms": None}


def convert_2_3(record: RawRecord) -> RawRecord:
    """Version 2 → 3: exchanges get `server_block` and each upstream attempt `group`
    (names from nginx's configuration; unknown in version 2: null)."""
    if record.get("t") != "exchange":
        return record
    out = dict(record)
    out.setdefault("server_block", None)
    ups = out.get("upstream")
    if isinstance(ups, list):
        out["upstream"] = [{**a, "group": a.get("group")} if isinstance(a, dict) else a for a in ups]
    return out


_V3_SUMMARY_NOTES = ("payload shed", "payload not captured")
"""How the `error` note of a summary-only exchange began up to version 3."""


def convert_3_4(record: RawRecord) -> RawRecord:
    """Version 3 → 4: exchanges get `summary_only`, true where the `error` note said so (that
    note is then no error: null), and `proxy_client` null (no PROXY protocol header read)."""
    if record.get("t") != "exchange" or "summary_only" in record:
        return record
    error = record.get("error")
    summary_only = isinstance(error, str) and error.startswith(_V3_SUMMARY_NOTES)
    out = {**record, "summary_only": summary_only, "proxy_client": None}
    if summary_only:
        out["error"] = None
    return out


CONVERTERS: dict[int, Callable[[RawRecord], RawRecord]] = {
    0: convert_0_1,
    1: convert_1_2,
    2: convert_2_3,
    3: convert_3_4,
}
"""`CONVERTERS[n]` turns a record of version n into version n + 1."""


def migrate(record: RawRecord, from_version: int) -> RawRecord:
    """Bring one record written with format `from_version` up to `CURRENT_VERSION`.

    Raises `ModelError` for a record that does not fit its version and `ValueError`
    for a version this ngxscope cannot convert (newer than current, or unknown).
    """
    if isinstance(from_version, bool) or not isinstance(from_version, int):
        raise ValueError(f"format version must be an integer, got {from_version!r}")
    if from_version > CURRENT_VERSION:
        raise ValueError(
            f"format version {from_version} is newer than this ngxscope reads"
            f" (up to {CURRENT_VERSION})"
        )
    version = from_version
    while version < CURRENT_VERSION:
        convert = CONVERTERS.get(version)
        if convert is None:
            raise ValueError(f"format version {version} is not supported")
        record = convert(record)
        version += 1
    return record


# --- the record codec --------------------------------------------------------------


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


def _body(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else ""


_EXCHANGE_PREFIX = b'{"t":"exchange",'


def encode_exchange(ex: Exchange) -> bytes:
    """`encode_record({"t": "exchange", **ex.to_dict()})`, byte for byte, without building the
    dict: orjson walks the dataclass itself (fields in declaration order, as to_dict), bodies
    go through its `default`, and `duration_ms` is appended as to_dict does. Every captured
    exchange passes here: at saturation the dict alone cost more than the JSON."""
    if _orjson_dumps is not None:
        try:
            data = _orjson_dumps(ex, default=_body)
            duration = _orjson_dumps(round(ex.duration_ms, 3))
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
