"""The native session file (`.ngxs`) and the live record stream (after mitmproxy's io).

A session file is gzip-compressed JSON Lines, one record per line:

    {"t":"header","format":"ngxscope-session","version":2,"created":<unix>,
     "tool":"ngxscope 0.1.0","target":{...free-form: pid, binary, method...}}
    {"t":"exchange", ...Exchange.to_dict()...}
    {"t":"event", ...LifecycleEvent.to_dict()...}
    {"t":"stats", ...free-form counters...}
    {"t":"end","exchanges":N,"ts":<unix>}      written on clean close only

The writer sync-flushes the gzip stream at least every `flush_interval` seconds of
writing, so a crash loses at most about a second and the file left behind is a readable
prefix. The reader keeps what it can read from a truncated or damaged file and reports it
in `Session.complete` / `Session.warning`; anything it cannot make sense of is a
`SessionError` carrying one clear line. `ngxscope record --stream` writes the very same
records as plain text lines (`StreamWriter`); `parse_record` decodes a line of either.
The record codec is `codec` (its names used here are re-exported); the format versions and
their converters are `compat`.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.store.codec import (
    FORMAT,
    ReadCancelled,
    Record,
    SessionError,
    check_header,
    encode_exchange,
    encode_record,
    end_record,
    header_record,
    parse_record,
)
from ngxscope.store.fastrecord import RawExchange, decode_line
from ngxscope.store.gzlines import GzipLines as _Lines

__all__ = [
    "FORMAT",
    "ReadCancelled",
    "Record",
    "Session",
    "SessionError",
    "SessionReader",
    "SessionWriter",
    "StreamWriter",
    "check_header",
    "parse_record",
]

_BATCH_BYTES = 256 * 1024  # encoded records buffered before they go to the compressor


# --- writers ---------------------------------------------------------------------------


class _RecordWriter:
    """The record vocabulary shared by `SessionWriter` and `StreamWriter`."""

    exchanges_written: int
    """Exchange records written so far."""

    def __init__(self, target: dict[str, Any]) -> None:
        self.exchanges_written = 0
        self.closed = False
        self._header = header_record(target)

    def _emit(self, data: bytes) -> None:
        raise NotImplementedError

    def _write(self, record: dict[str, Any]) -> None:
        if self.closed:
            raise SessionError("cannot write to a closed session")
        self._emit(encode_record(record))

    def write_exchange(self, ex: Exchange) -> None:
        """Append an exchange record."""
        if self.closed:
            raise SessionError("cannot write to a closed session")
        self._emit(encode_exchange(ex))
        self.exchanges_written += 1

    def write_event(self, ev: LifecycleEvent) -> None:
        """Append a lifecycle event record."""
        self._write({"t": "event", **ev.to_dict()})

    def write_stats(self, d: dict[str, Any]) -> None:
        """Append a stats record: free-form JSON-ready counters (no key "t")."""
        if "t" in d:
            raise ValueError('stats must not contain the key "t"')
        self._write({"t": "stats", **d})

    def _end_record(self) -> dict[str, Any]:
        return end_record(self.exchanges_written)

    def close(self, clean: bool = True) -> None:
        raise NotImplementedError

    def __enter__(self) -> typing.Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Close; with the end record unless an exception (other than Ctrl-C, the usual
        way to stop a recording) ends the block."""
        try:
            self.close(exc_type is None or issubclass(exc_type, KeyboardInterrupt))
        except SessionError:
            if exc_type is None:
                raise  # else the original exception says more


class _FdSink:
    """Unbuffered file-like over a descriptor whose write() never writes partially.

    Once closed it refuses to write, so a stale GzipFile can never write into a
    descriptor number the process has reused for another file.
    """

    name = ""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        if self.fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def _create(path: str, overwrite: bool) -> int:
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    try:
        if overwrite:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                pass
            else:
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise SessionError(f"cannot write session file {path}: not a regular file")
                os.unlink(path)  # a symlink itself, never its target
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SessionError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise SessionError(f"cannot write session file {path}: {exc.strerror or exc}") from None
    os.fchmod(fd, 0o600)  # whatever the umask; bodies and cookies are private
    return fd


class SessionWriter(_RecordWriter):
    """Write a `.ngxs` session file; a context manager. Not thread-safe.

    The file is created with mode 0600 and never replaces an existing one unless
    `overwrite=True`. Records are batched and the gzip stream sync-flushed whenever a
    write finds `flush_interval` seconds passed since the last flush; a capture loop that
    may go idle should call `maybe_flush()` on its ticks. Any OSError (disk full...)
    raises `SessionError`; afterwards nothing more is written, so what reached the disk
    stays a readable (truncated) session.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        target: dict[str, Any],
        flush_interval: float = 1.0,
        *,
        overwrite: bool = False,
    ) -> None:
        super().__init__(target)
        self.path = os.fspath(path)
        self.flush_interval = flush_interval
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._failed = False
        self._sink = _FdSink(_create(self.path, overwrite))
        self._gz: gzip.GzipFile | None = None
        self._last_flush = time.monotonic()
        try:
            # level 1: half of level 6's CPU per record (this runs for every request captured;
            # 2.3 vs 4.7 us on a real capture), for files about a third larger
            self._gz = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=1)
            self._emit(encode_record(self._header))
            self.flush()  # the header is on disk as soon as the file exists
        except BaseException as exc:
            self._release()
            try:
                os.unlink(self.path)  # ours, and useless without its header
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise self._fail(exc) from None
            raise

    def _release(self) -> None:
        """Close the file; an unfinished gzip stream is abandoned, never written again."""
        self.closed = True
        self._abandon_gzip()
        self._sink.close()

    def _abandon_gzip(self) -> None:
        # GzipFile.close() returns at once without a fileobj, even when __del__ calls it.
        if self._gz is not None:
            self._gz.fileobj = None  # type: ignore[assignment]

    def _fail(self, exc: OSError) -> SessionError:
        self._failed = True
        self._abandon_gzip()  # what reached the disk stays a readable prefix
        return SessionError(f"cannot write session file {self.path}: {exc.strerror or exc}")

    def _check(self) -> None:
        if self._failed:
            raise SessionError(f"cannot write session file {self.path}: an earlier write failed")

    def _emit(self, data: bytes) -> None:
        self._check()
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _BATCH_BYTES:
            self._write_pending()
        self.maybe_flush()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        try:
            assert self._gz is not None
            self._gz.write(data)
        except OSError as exc:
            raise self._fail(exc) from None

    def maybe_flush(self) -> None:
        """Flush if `flush_interval` seconds passed since the last flush."""
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Push every record written so far to the file (gzip sync flush)."""
        self._check()
        if self.closed:
            return
        self._write_pending()
        try:
            assert self._gz is not None
            self._gz.flush()
        except OSError as exc:
            raise self._fail(exc) from None
        self._last_flush = time.monotonic()

    def close(self, clean: bool = True) -> None:
        """Finish the file. `clean` writes the end record that marks a complete capture."""
        if self.closed:
            return
        try:
            if not self._failed:
                if clean:
                    self._write(self._end_record())
                self._write_pending()
                try:
                    assert self._gz is not None
                    self._gz.close()
                except OSError as exc:
                    raise self._fail(exc) from None
        finally:
            self._release()


class StreamWriter(_RecordWriter):
    """The same records as plain JSON lines on a pipe (`ngxscope record --stream`).

    Every record is flushed at once. `fileobj` may be a text or binary file object; it is
    not closed by `close()`. An OSError (the reader went away) raises `SessionError`.
    """

    def __init__(self, fileobj: IO[str] | IO[bytes], target: dict[str, Any] | None = None) -> None:
        super().__init__(target or {})
        self._file = fileobj
        self._text = isinstance(fileobj, io.TextIOBase)
        self._emit(encode_record(self._header))

    def _emit(self, data: bytes) -> None:
        try:
            if self._text:
                typing.cast(IO[str], self._file).write(data.decode("ascii"))
            else:
                typing.cast(IO[bytes], self._file).write(data)
            self._file.flush()
        except OSError as exc:
            raise SessionError(f"cannot write the record stream: {exc.strerror or exc}") from None

    def flush(self) -> None:
        """Records are flushed as written; kept for symmetry with `SessionWriter`."""

    def close(self, clean: bool = True) -> None:
        """Write the end record (if `clean`); the file object stays open."""
        if not self.closed:
            if clean:
                self._write(self._end_record())
            self.closed = True


# --- reader ----------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    """A whole session file in memory (`SessionReader.read_all`)."""

    header: dict[str, Any]
    exchanges: list[Exchange] = field(default_factory=list)
    events: list[LifecycleEvent] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    """The last stats record (as `parse_record` returns it, "t" included), if any."""
    complete: bool = False
    """The file ends with an end record and the gzip stream is whole."""
    warning: str | None = None
    """Why the file is not complete (truncated, damaged, capture not ended cleanly)."""


class SessionReader:
    """Read a `.ngxs` session file. The header is read and checked on construction.

    `iter_records` streams in constant memory; after it is exhausted `complete` and
    `warning` tell how the file ended (see `Session`). Any file that is not a readable
    session raises `SessionError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.complete = False
        self.warning: str | None = None
        raw, _ = self._open()
        with raw:
            lines = _Lines(raw)
            first = next(iter(lines), None)
            self.header: dict[str, Any] = self._parse_header(first, lines.error)
        self.version = check_header(self.header, self.path)

    def _open(self) -> tuple[IO[bytes], int]:
        path = self.path
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                raise SessionError(f"cannot open session file {path}: it is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise SessionError(f"cannot open session file {path}: not a regular file")
            raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise SessionError(f"cannot open session file {path}: {exc.strerror or exc}") from None
        try:
            magic = raw.read(2)
            raw.seek(0)
        except OSError as exc:
            raw.close()
            raise SessionError(f"cannot read session file {path}: {exc.strerror or exc}") from None
        if magic != b"\x1f\x8b":
            raw.close()
            if not magic:
                raise SessionError(f"{path} is empty, not an ngxscope session file")
            raise SessionError(f"{path} is not an ngxscope session file (not gzip-compressed)")
        return raw, st.st_size

    def _parse_header(self, first: tuple[bytes, bool] | None, error: Exception | None) -> Any:
        path = self.path
        if first is None or not first[1]:
            if isinstance(error, EOFError):
                raise SessionError(f"{path} is truncated before the end of its header")
            if error is not None:
                raise SessionError(f"{path} is damaged before the end of its header ({error})")
            if first is None:
                raise SessionError(f"{path} is empty, not an ngxscope session file")
        assert first is not None
        try:
            return parse_record(first[0])
        except SessionError:
            raise SessionError(f"{path} is not an ngxscope session (no session header)") from None

    def iter_records(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[Record]:
        """Yield every record after the header, in file order.

        `progress(bytes_read, total_bytes)` (compressed bytes) is called now and then;
        `cancelled()` is polled and stops the read with `ReadCancelled`.
        """
        version = self.version
        return typing.cast(Iterator[Record], self._iter(
            lambda line: parse_record(line, version), progress, cancelled))

    def iter_fast(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[Record | RawExchange]:
        """`iter_records`, except that exchange records the fast path proves valid come as
        `RawExchange`s, not built (`fastrecord.decode_line`): every record is still checked,
        errors and warnings are the same."""
        version = self.version
        return self._iter(lambda line: decode_line(line, version), progress, cancelled)

    def _iter(
        self,
        decode: Callable[[bytes], Record | RawExchange],
        progress: Callable[[int, int], None] | None,
        cancelled: Callable[[], bool] | None,
    ) -> Iterator[Record | RawExchange]:
        self.complete = False
        self.warning = None
        path = self.path
        raw, total = self._open()
        with raw:
            lines = _Lines(raw)
            it = iter(lines)
            next(it, None)  # the header, checked on construction
            step = max(64 * 1024, total // 200)
            reported = 0
            count = 0
            end: dict[str, Any] | None = None
            partial = False
            for lineno, (data, whole) in enumerate(it, start=2):
                if lineno % 64 == 0:  # tell() costs a system call: not on every line
                    if cancelled is not None and cancelled():
                        raise ReadCancelled(f"reading {path} was cancelled")
                    if progress is not None and (pos := raw.tell()) - reported >= step:
                        reported = pos
                        progress(pos, total)
                if not whole:
                    partial = True
                try:
                    record = decode(data)
                except SessionError as exc:
                    if partial:
                        break  # the last line was cut off
                    raise SessionError(f"{path}: line {lineno}: {exc}") from None
                if end is not None:
                    raise SessionError(f"{path}: line {lineno}: record after the end record")
                if isinstance(record, (Exchange, RawExchange)):
                    count += 1
                elif isinstance(record, dict):
                    if record["t"] == "header":
                        raise SessionError(f"{path}: line {lineno}: a second header")
                    if record["t"] == "end":
                        end = record
                yield record
            error = lines.error
        if isinstance(error, EOFError) or (partial and error is None):
            self.warning = f"file is truncated: read {count} exchanges"
        elif error is not None:
            self.warning = f"file is damaged ({error}): read {count} exchanges"
        elif end is None:
            self.warning = f"capture did not end cleanly: read {count} exchanges"
        else:
            self.complete = True
            if end["exchanges"] != count:
                self.warning = (
                    f"the end record counts {end['exchanges']} exchanges, the file holds {count}"
                )
        if progress is not None:
            progress(total, total)

    def exchanges(self) -> Iterator[Exchange]:
        """Yield the exchanges only, streaming."""
        for record in self.iter_records():
            if isinstance(record, Exchange):
                yield record

    def events(self) -> Iterator[LifecycleEvent]:
        """Yield the lifecycle events only, streaming."""
        for record in self.iter_records():
            if isinstance(record, LifecycleEvent):
                yield record

    def read_all(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Session:
        """Read the whole file into a `Session`."""
        session = Session(header=self.header)
        for record in self.iter_records(progress, cancelled):
            if isinstance(record, Exchange):
                session.exchanges.append(record)
            elif isinstance(record, LifecycleEvent):
                session.events.append(record)
            elif record["t"] == "stats":
                session.stats = record
        session.complete = self.complete
        session.warning = self.warning
        return session
