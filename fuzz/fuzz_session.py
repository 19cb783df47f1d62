#!/usr/bin/env python3
"""atheris harness: `SessionReader` on damaged and hostile session files.

Each input becomes a file in three ways (chosen by its first byte):
- raw: the input bytes are the file;
- mutated: a real session file (header, exchanges with bodies, events, stats, end record)
  with fuzzer-chosen bytes overwritten, inserted, and a fuzzer-chosen truncation;
- plaintext: the input is gzip-compressed, so the JSON-lines layer (header checks, records,
  migrations) sees arbitrary lines behind a valid gzip stream.

The reader must either read the file (possibly flagging it incomplete) or raise
`SessionError` with one line; anything else is a crash. Run:

    .venv/bin/python fuzz/fuzz_session.py -atheris_runs=300000 [corpus_dir]
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from ngxscope.model import Exchange, LifecycleEvent
    from ngxscope.store.codec import SessionError
    from ngxscope.store.session import SessionReader, SessionWriter

_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
_PATH = os.path.join(tempfile.mkdtemp(prefix="ngxscope-fuzz-", dir=_DIR), "f.ngxs")


def _valid_session() -> bytes:
    path = _PATH + ".seed"
    with SessionWriter(path, {"pid": 1, "binary": "/usr/sbin/nginx"}, overwrite=True) as w:
        for i in range(3):
            w.write_exchange(Exchange(id=i + 1, start=1.0 + i, end=1.5 + i, pid=7, client="127.0.0.1:9", server="127.0.0.1:80",
                                      tls=bool(i % 2), method="GET",
                                      target=f"/x{i}", version="HTTP/1.1", status=200,
                                      request_headers=[("Host", "a")], response_body=b"\x00\xffbody" * i))
            w.write_event(LifecycleEvent(ts=1.0 + i, kind="reload", pid=7, detail="d"))
        w.write_stats({"events": 10, "lost": 0})
    with open(path, "rb") as fh:
        data = fh.read()
    os.unlink(path)
    return data


VALID = _valid_session()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        blob = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == 1:
        buf = bytearray(VALID)
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            pos = fdp.ConsumeIntInRange(0, len(buf) - 1)
            if fdp.ConsumeBool():
                buf[pos] = fdp.ConsumeInt(1) & 0xFF
            else:
                buf[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
        cut = fdp.ConsumeIntInRange(0, len(buf))
        blob = bytes(buf[:cut] if fdp.ConsumeBool() else buf)
    else:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
            gz.write(fdp.ConsumeBytes(fdp.remaining_bytes()))
        blob = out.getvalue()
    with open(_PATH, "wb") as fh:
        fh.write(blob)
    try:
        session = SessionReader(_PATH).read_all()
    except SessionError as exc:
        assert "\n" not in str(exc), repr(exc)
        return
    assert session.complete or session.warning
    for ex in session.exchanges:
        assert isinstance(ex, Exchange)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
