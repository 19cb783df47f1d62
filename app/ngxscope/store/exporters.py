"""One entry point for every export: `export(path, fmt, out, redact=..., filter_text=...)`.

The input is a session file (`.ngxs`) or a HAR file (told apart by content, not by
name). Exchanges are filtered (`filterexpr`, on the original data), redacted (`redact`,
on by default), and handed to the format writer in order of request start (ties by
id) with bounded memory: a first pass writes each kept exchange (pickled) to a temporary file and
remembers (start, id, offset) per exchange; the second pass reads them back in order
(sequentially when the input was already in order). The output is written to a 0600
temporary file beside the target and renamed over it, so a failed export never leaves
half a file; "-" writes to stdout.

A truncated or damaged session exports what could be read and logs one warning line.
Every failure is a `SessionError` with one line.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import sys
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from ngxscope.model import Exchange
from ngxscope.store.filterexpr import compile_filter
from ngxscope.store.redact import NO_REDACTION, RedactPolicy, policy_from_env, redact_exchange
from ngxscope.store.session import SessionError, SessionReader

__all__ = ["FORMATS", "SortedExchanges", "detect_kind", "export", "open_output"]

log = logging.getLogger(__name__)

FORMATS = ("har", "pcapng", "csv", "jsonl")
"""Export formats, as `--format` spells them."""


def detect_kind(path: str | os.PathLike[str]) -> str:
    """"session" or "har", from the first bytes of the file.

    Anything that is neither (or cannot be opened) is left to `SessionReader`, whose
    one-line errors say what is wrong ("session"); a HAR is any file starting with `{`.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return "session"
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return "har" if head.lstrip().startswith(b"{") else "session"


def _sort_start(start: float) -> float:
    return math.inf if math.isnan(start) else float(start)


class SortedExchanges:
    """The exchanges of a session or HAR file, filtered and redacted, in start order.

    Construction runs the first pass (reading the whole input); iterate afterwards, once.
    `count`, `pids` and `conn_counts` (exchanges per connection id) describe what will
    come; `warning` says why the input was not read whole (None when it was).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        predicate: Callable[[Exchange], bool] | None = None,
        policy: RedactPolicy = NO_REDACTION,
        work_dir: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.kind = detect_kind(self.path)
        self.warning: str | None = None
        self.stats: dict[str, Any] | None = None
        """The session's last stats record (None: none, or a HAR file)."""
        self.pids: set[int] = set()
        self.conn_counts: Counter[str] = Counter()
        self._tmp: IO[bytes] = tempfile.TemporaryFile(dir=work_dir)  # noqa: SIM115
        self._starts: array[float] = array("d")
        self._ids: list[int] = []
        self._offsets: array[int] = array("q", [0])
        self._in_order = True
        try:
            self._first_pass(predicate, policy)
        except BaseException:
            self._tmp.close()
            raise

    def _source(self) -> Iterator[Exchange]:
        if self.kind == "har":
            from ngxscope.store.import_har import import_har

            session = import_har(self.path)
            self.warning = session.warning
            yield from session.exchanges
            return
        reader = SessionReader(self.path)
        for record in reader.iter_records():
            if isinstance(record, Exchange):
                yield record
            elif isinstance(record, dict) and record.get("t") == "stats":
                self.stats = record
        self.warning = reader.warning

    def _first_pass(
        self, predicate: Callable[[Exchange], bool] | None, policy: RedactPolicy
    ) -> None:
        last: tuple[float, int] | None = None
        for ex in self._source():
            if predicate is not None and not predicate(ex):
                continue
            ex = redact_exchange(ex, policy)
            line = pickle.dumps(ex, protocol=pickle.HIGHEST_PROTOCOL)
            self._tmp.write(line)
            key = (_sort_start(ex.start), ex.id)
            if last is not None and key < last:
                self._in_order = False
            last = key
            self._starts.append(key[0])
            self._ids.append(ex.id)
            self._offsets.append(self._offsets[-1] + len(line))
            self.pids.add(ex.pid)
            self.conn_counts[ex.conn_id] += 1
        self._tmp.flush()

    @property
    def count(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Exchange]:
        tmp, offsets = self._tmp, self._offsets
        tmp.seek(0)
        if self._in_order:
            order: Any = range(len(self._ids))
        else:
            starts, ids = self._starts, self._ids
            order = sorted(range(len(ids)), key=lambda i: (starts[i], ids[i]))
        for i in order:
            if not self._in_order:
                tmp.seek(offsets[i])
            data = tmp.read(offsets[i + 1] - offsets[i])
            yield pickle.loads(data)  # our own temporary file, written above

    def close(self) -> None:
        self._tmp.close()

    def __enter__(self) -> SortedExchanges:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def open_output(out: str | os.PathLike[str] | IO[Any]) -> Iterator[IO[bytes]]:
    """A binary file to write the export to: a path (temporary file renamed on success,
    mode 0600), "-" (stdout), or an open text/binary file object (not closed)."""
    if not isinstance(out, str | os.PathLike):
        target: Any = out
        if isinstance(out, io.TextIOBase):
            out.flush()
            target = getattr(out, "buffer", None)
            if target is None:
                raise SessionError("cannot export to a text stream without a byte buffer")
        yield target
        target.flush()
        return
    path = os.fspath(out)
    if path == "-":
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.isdir(path):
        raise SessionError(f"cannot export to {path}: it is a directory")
    try:
        fd, part = tempfile.mkstemp(
            dir=os.path.dirname(os.path.abspath(path)),
            prefix=os.path.basename(path) + ".",
            suffix=".part",
        )
    except OSError as exc:
        raise SessionError(f"cannot export to {path}: {exc.strerror or exc}") from None
    try:
        with open(fd, "wb", buffering=1 << 20) as f:
            yield f
        os.replace(part, path)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise


def _write(fmt: str, source: SortedExchanges, f: IO[bytes]) -> int:
    """Write `source` as `fmt`; returns how many exchanges went in."""
    if fmt == "jsonl":
        from ngxscope.store.export_jsonl import exchange_line

        for ex in source:
            f.write(exchange_line(ex))
    elif fmt == "har":
        from ngxscope.store.export_har import write_har

        return write_har(source, f)
    elif fmt == "csv":
        from ngxscope.store.export_csv import write_csv

        write_csv(source, f)
    elif fmt == "pcapng":
        from ngxscope.store.export_pcapng import write_pcapng

        write_pcapng(source, f, pids=sorted(source.pids), conn_counts=source.conn_counts)
    else:
        raise SessionError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    return source.count


def export(
    session_path: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | IO[Any],
    *,
    redact: bool = True,
    filter_text: str | None = None,
    policy: RedactPolicy | None = None,
    notes: list[str] | None = None,
) -> int:
    """Export a session (or HAR) file to `fmt` ("har", "pcapng", "csv", "jsonl").

    `redact` masks secrets with `policy` (default: `policy_from_env()`, the built-in
    headers plus `NGXSCOPE_REDACT_HEADERS` / `NGXSCOPE_REDACT_PARAMS`); `filter_text`
    keeps only the exchanges it matches (raises `filterexpr.FilterError` when malformed).
    Returns how many exchanges were exported; what was left out (TCP sessions in a HAR,
    which holds HTTP only) is said in `notes`, one line each. Raises `SessionError` on any
    failure.
    """
    if fmt not in FORMATS:
        raise SessionError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    predicate = compile_filter(filter_text) if filter_text else None
    if not redact:
        policy = NO_REDACTION
    elif policy is None:
        policy = policy_from_env()
    work_dir = None
    if isinstance(out, str | os.PathLike) and os.fspath(out) != "-":
        work_dir = os.path.dirname(os.path.abspath(os.fspath(out)))
    try:
        with SortedExchanges(session_path, predicate, policy, work_dir) as source:
            if source.warning:
                log.warning("%s: %s", source.path, source.warning)
            with open_output(out) as f:
                n = _write(fmt, source, f)
            if n < source.count and notes is not None:
                notes.append(f"{source.count - n} TCP proxy sessions skipped: HAR holds HTTP only "
                             "(pcapng, JSONL and CSV include them)")
            return n
    except OSError as exc:
        target = os.fspath(out) if isinstance(out, str | os.PathLike) else "the output"
        raise SessionError(f"cannot export to {target}: {exc.strerror or exc}") from None
