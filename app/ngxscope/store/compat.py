"""The session record format's versions, and reading old versions: only converters.

The record codec (`parse_record`, `check_header`, `encode_record`) is `store.codec`; it
calls `migrate` for records of an older version.

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
  or "payload not captured"; such a note is no error and goes.
- **version 5**: exchange records gained the user's `mark` (a colour name) and `note` (text),
  "" when none (marks and notes saved with the session); `location` (the `location` block
  that served the request, from nginx's configuration) and `answer` (why nginx answered
  itself, or how its cache served it), both null when unknown; `proxy_client` (the client a
  PROXY protocol header named; null without one, as always before); the connection beneath
  the request, from the socket filter: `conn_start`, `tcp_connect_ms`, `tls_handshake_ms`,
  `tls_version`, `tls_cipher`, `sni`, `alpn`, `tls_resumed`, `retransmits`, `reset_by` (null:
  not seen), and `conn_outcome` (null for an exchange; "tls-failed" / "reset" / "closed" for a
  connection that never became a request).
- **version 6**: exchange records gained `location_via`: "nginx" when the location was read
  from nginx's memory (the request's loc_conf), "config" when nginx's choice was repeated on
  its configuration (every location of version 5), null when there is no location;
  `kept_by` (why a row while the capture sampled: "sample", or the keep rules "error",
  "aborted", "upstream", "malformed", "slow" comma-separated; null when not sampling, as
  always before); and `wire_packets`: the connection's packets as the socket filter passed
  them (`[{"ts": float, "frame": base64}]`), on a connection's first exchange and on
  connection records; [] elsewhere and in older files; `remote` (the client nginx logged
  when its realip module replaced the socket's peer; null otherwise and in older files),
  `nginx_end` (nginx's own $msec; null: unknown) and `subrequest_upstream` (the attempts of
  the request's subrequests, which version 5 mixed into `upstream`: [] in older files).
- 7: exchanges gain `upstream_via` ("nginx": the attempts are nginx's own list, read from
  its memory at the request's completion; "wire": rebuilt from connects and bytes, all
  that older files knew; null without attempts), and upstream attempts gain `redirected`
  (nginx went on to another upstream group after an internal redirect: " : " in its
  `$upstream_*` lists; false in older files).

Any change to what `Exchange.to_dict()` / `LifecycleEvent.to_dict()` emit (a new field
included) is a format change: bump `CURRENT_VERSION`, add the converter, and freeze a new
sample (tests/store/samples/make_samples.py). `test_compat.py` fails until that is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ngxscope.model import ModelError

__all__ = [
    "CONVERTERS",
    "CURRENT_VERSION",
    "convert_0_1",
    "convert_1_2",
    "convert_2_3",
    "convert_3_4",
    "convert_4_5",
    "convert_5_6",
    "convert_6_7",
    "migrate",
]

RawRecord = dict[str, Any]

CURRENT_VERSION = 7
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
    note is then no error: null)."""
    if record.get("t") != "exchange" or "summary_only" in record:
        return record
    error = record.get("error")
    summary_only = isinstance(error, str) and error.startswith(_V3_SUMMARY_NOTES)
    out = {**record, "summary_only": summary_only}
    if summary_only:
        out["error"] = None
    return out


_V5_NULL_FIELDS = ("location", "answer", "proxy_client", "conn_start", "tcp_connect_ms",
                   "tls_handshake_ms", "tls_version", "tls_cipher", "sni", "alpn", "tls_resumed",
                   "retransmits", "reset_by", "conn_outcome")
"""Exchange fields new in version 5 that are null when unknown."""


def convert_4_5(record: RawRecord) -> RawRecord:
    """Version 4 → 5: exchanges get the user's `mark` and `note` (none in version 4: ""),
    and `_V5_NULL_FIELDS` (unknown in version 4: null)."""
    if record.get("t") != "exchange":
        return record
    return {"mark": "", "note": "", **{name: None for name in _V5_NULL_FIELDS}, **record}


def convert_5_6(record: RawRecord) -> RawRecord:
    """Version 5 → 6: exchanges get `location_via`: "config" where they have a location
    (version 5 only ever matched the configuration), else null; `kept_by` null (version 5
    did not sample rows by rules); `wire_packets` [] (version 5 kept no packets);
    `subrequest_upstream` [] (version 5 put the attempts of subrequests among `upstream`,
    indistinguishable), `remote` and `nginx_end` null (unknown in version 5)."""
    if record.get("t") != "exchange":
        return record
    out = {"remote": None, "nginx_end": None, "subrequest_upstream": [], **record}
    if "location_via" not in out:
        out["location_via"] = "config" if out.get("location") is not None else None
    out.setdefault("kept_by", None)
    out.setdefault("wire_packets", [])
    return out


def convert_6_7(record: RawRecord) -> RawRecord:
    """Version 6 → 7: exchanges get `upstream_via` ("wire" where they have attempts: the only
    method version 6 had; else null) and their attempts `redirected` false (version 6 wrote
    no group boundaries)."""
    if record.get("t") != "exchange":
        return record
    out = dict(record)
    for name in ("upstream", "subrequest_upstream"):
        atts = out.get(name)
        if isinstance(atts, list):
            out[name] = [{**a, "redirected": a.get("redirected", False)} if isinstance(a, dict) else a for a in atts]
    out.setdefault("upstream_via", "wire" if out.get("upstream") else None)
    return out


CONVERTERS: dict[int, Callable[[RawRecord], RawRecord]] = {
    0: convert_0_1,
    1: convert_1_2,
    2: convert_2_3,
    3: convert_3_4,
    4: convert_4_5,
    5: convert_5_6,
    6: convert_6_7,
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
