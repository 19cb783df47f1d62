"""Reading session files written by older ngxscope versions (after mitmproxy's io/compat.py).

Every change to the record format bumps `CURRENT_VERSION` and adds one
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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ngxscope.model import ModelError

__all__ = [
    "CONVERTERS",
    "CURRENT_VERSION",
    "convert_0_1",
    "migrate",
]

Record = dict[str, Any]

CURRENT_VERSION = 1
"""The record format version this ngxscope writes, and the newest it reads."""


def _headers_0_1(value: Any, key: str) -> list[list[str]]:
    if not isinstance(value, dict):
        raise ModelError(f"bad version 0 exchange record: {key} must be an object")
    return [[str(name), str(val)] for name, val in value.items()]


def convert_0_1(record: Record) -> Record:
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


CONVERTERS: dict[int, Callable[[Record], Record]] = {
    0: convert_0_1,
}
"""`CONVERTERS[n]` turns a record of version n into version n + 1."""


def migrate(record: Record, from_version: int) -> Record:
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
