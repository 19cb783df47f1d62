"""Tests for ngxscope.capture.listing: the text `ngxscope list` prints, of a real nginx."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ngxscope.capture.listing import _wrap_list, format_instances
from ngxscope.capture.procs import NOT_NGINX_REASON, find_instances, resolve_target

from .test_procs import NGINX, RunningNginx, start_nginx, stop_nginx

pytestmark = pytest.mark.capture  # starts a real nginx


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNginx]:
    running = start_nginx(tmp_path_factory.mktemp("nginx"))
    try:
        yield running
    finally:
        stop_nginx(running)


def test_format_instances(nginx: RunningNginx) -> None:
    inst = resolve_target(nginx.pid)
    text = format_instances([inst])
    assert text.startswith(f"nginx 1.22.1  master {nginx.pid}")
    assert NGINX in text
    assert "libssl.so.3 (dynamic)" in text
    assert f"127.0.0.1:{nginx.port}" in text
    assert "capture    nginx uprobes" in text
    for pid in nginx.worker_pids():
        assert any(line.split()[:2] == [str(pid), "worker"] for line in text.splitlines())
    assert max(len(line) for line in text.splitlines()) <= 100
    print(text)


def test_format_no_capture_and_empty() -> None:
    assert format_instances([]) == "no nginx processes found"
    me = [i for i in find_instances(include_all=True) if i.master.pid == os.getpid()]
    text = format_instances(me)
    assert f"pid {os.getpid()}" in text
    assert f"no capture: {NOT_NGINX_REASON}" in text


def test_many_listen_addresses_wrap() -> None:
    items = [f"127.0.0.1:{p}" for p in range(8000, 8020)]
    lines = _wrap_list(items, 60)
    assert all(len(line) <= 60 for line in lines)
    assert ", ".join(lines).replace(",,", ",") == ", ".join(items)
