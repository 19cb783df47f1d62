"""Preconditions of a capture give one clear line each."""

from __future__ import annotations

import pytest

from ngxscope.capture.kheaders import find_kernel_headers
from ngxscope.pipeline import target


def test_not_root_without_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(target, "_read_cap_eff", lambda: 0)
    with pytest.raises(target.CaptureError, match="needs root"):
        target.preflight()


def test_caps_are_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(target, "_read_cap_eff", lambda: (1 << 39) | (1 << 38))
    assert target._has_bpf_caps()


def test_headers_are_found() -> None:
    source, notice = find_kernel_headers()
    assert source is None or source.startswith("/usr/src/")
    assert notice is None or "headers" in notice
