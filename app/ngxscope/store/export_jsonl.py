"""Export a session's exchanges as JSON Lines: one `Exchange.to_dict()` object a line.

Lines come in order of request `start` (ties by `id`, then file order). Memory stays
bounded whatever the session size: the first pass writes each exported line to a
temporary file next to the output and keeps only (start, id, offset) per exchange (about
100 bytes each, so a million exchanges need ~100 MB); the second pass copies the lines
out in sorted order, or sequentially when the session was already in order.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable
from typing import IO, Any

from ngxscope.model import Exchange
from ngxscope.store.session import SessionError, SessionReader

__all__ = ["exchange_line", "export_jsonl"]

log = logging.getLogger(__name__)


def exchange_line(ex: Exchange) -> bytes:
    """The export line for one exchange: compact UTF-8 JSON and a newline."""
    data = ex.to_dict()
    try:
        return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate: escape it rather than emit bad UTF-8
        return (json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def _sort_start(start: float) -> float:
    return math.inf if math.isnan(start) else float(start)


def _copy_sorted(
    tmp: IO[bytes],
    write: Callable[[bytes], Any],
    starts: array[float],
    ids: list[int],
    offsets: array[int],
) -> None:
    order = sorted(range(len(ids)), key=lambda i: (starts[i], ids[i]))
    for i in order:
        tmp.seek(offsets[i])
        write(tmp.read(offsets[i + 1] - offsets[i]))


def export_jsonl(
    session_path: str | os.PathLike[str],
    out_path_or_file: str | os.PathLike[str] | IO[bytes] | IO[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> int:
    """Write the exchanges of a session file as JSON Lines; return how many.

    `out_path_or_file` is a path (written to a 0600 temporary file beside it, then
    renamed over it, so a failed export never leaves half a file) or an open text or
    binary file object (not closed). A truncated session exports what it holds and logs
    a warning. Raises `SessionError` for an unreadable session or an output error.
    `progress` and `cancelled` are passed to `SessionReader.iter_records`.
    """
    reader = SessionReader(session_path)
    out_file: IO[Any] | None = None
    out_path: str | None = None
    if isinstance(out_path_or_file, str | os.PathLike):
        out_path = os.fspath(out_path_or_file)
    else:
        out_file = out_path_or_file
    work_dir = os.path.dirname(os.path.abspath(out_path)) if out_path else None
    try:
        with tempfile.TemporaryFile(dir=work_dir) as tmp:
            starts: array[float] = array("d")
            ids: list[int] = []
            offsets: array[int] = array("q", [0])
            in_order = True
            last: tuple[float, int] | None = None
            for record in reader.iter_records(progress, cancelled):
                if not isinstance(record, Exchange):
                    continue
                line = exchange_line(record)
                tmp.write(line)
                key = (_sort_start(record.start), record.id)
                if last is not None and key < last:
                    in_order = False
                last = key
                starts.append(key[0])
                ids.append(record.id)
                offsets.append(offsets[-1] + len(line))
            if reader.warning:
                log.warning("%s: %s", reader.path, reader.warning)
            tmp.flush()
            tmp.seek(0)
            if out_file is not None:
                _write_to(out_file, tmp, in_order, starts, ids, offsets)
            elif out_path is not None:
                _write_path(out_path, tmp, in_order, starts, ids, offsets)
    except OSError as exc:
        target = out_path or getattr(out_path_or_file, "name", "the output")
        raise SessionError(f"cannot export to {target}: {exc.strerror or exc}") from None
    return len(ids)


def _write_to(
    out: IO[Any],
    tmp: IO[bytes],
    in_order: bool,
    starts: array[float],
    ids: list[int],
    offsets: array[int],
) -> None:
    text = isinstance(out, io.TextIOBase)
    if text and hasattr(out, "buffer"):  # sys.stdout: bytes as they are, whatever the locale
        out.flush()
        out, text = out.buffer, False

    def write(data: bytes) -> None:
        out.write(data.decode("utf-8") if text else data)

    if in_order:
        while chunk := tmp.read(1 << 20):
            write(chunk)
    else:
        _copy_sorted(tmp, write, starts, ids, offsets)
    out.flush()


def _write_path(
    path: str,
    tmp: IO[bytes],
    in_order: bool,
    starts: array[float],
    ids: list[int],
    offsets: array[int],
) -> None:
    fd, part = tempfile.mkstemp(
        dir=os.path.dirname(os.path.abspath(path)),
        prefix=os.path.basename(path) + ".",
        suffix=".part",
    )
    try:
        with open(fd, "wb") as out:
            if in_order:
                shutil.copyfileobj(tmp, out, 1 << 20)
            else:
                _copy_sorted(tmp, out.write, starts, ids, offsets)
        os.replace(part, path)
    except BaseException:
        try:
            os.unlink(part)
        except OSError:
            pass
        raise
