"""Shared pytest fixtures: the lab nginx (a private master + 2 workers with TLS and upstreams)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Traffic

__all__ = ["free_port"]

# Tests compare captured payloads with nginx's access log, so every payload must be kept: on
# this shared 2-core machine the capture's CPU governor would otherwise sample them out. The
# governor's own tests turn it on explicitly (record --cpu-budget, Tracer.set_sampling).
os.environ["NGXSCOPE_CPU_BUDGET"] = "0"

CAPTURE_FIXTURES = frozenset({"lab_nginx", "lab_traffic", "capture_factory", "record_proc",
                              "prometheus_factory", "ssh_host"})
"""Fixtures that start a real nginx, an SSH server or an eBPF capture (root needed)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test using one of `CAPTURE_FIXTURES` (directly or through another fixture) gets the
    `capture` marker, so `pytest -m "not capture"` is the fast tier without root or nginx.
    Modules whose tests start nginx or a capture themselves mark it with `pytestmark`."""
    for item in items:
        if CAPTURE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.capture)


@pytest.fixture
def lab_nginx() -> Iterator[LabNginx]:
    """A started `LabNginx(workers=2)` (about 0.2 s to start), always stopped afterwards."""
    nginx = LabNginx(workers=2)
    nginx.start()
    try:
        yield nginx
    finally:
        nginx.stop()


@pytest.fixture
def lab_traffic(lab_nginx: LabNginx) -> Traffic:
    """A `Traffic` generator aimed at the `lab_nginx` of the same test."""
    return Traffic(lab_nginx.plain_port, lab_nginx.tls_port)


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_port()
