"""What a wheel holds: every package under app/, and the top-level bpf/ and resources/
folders mapped into it (pyproject.toml), read back through importlib.resources."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:  # type: ignore[type-arg]
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]  # type: ignore[no-any-return]


def test_every_package_is_listed() -> None:
    found = {".".join(p.parent.relative_to(ROOT / "app").parts)
             for p in (ROOT / "app" / "ngxscope").rglob("__init__.py")}
    mapped = {name for name in _setuptools()["package-dir"] if name}
    assert set(_setuptools()["packages"]) == found | mapped
    assert mapped == {"ngxscope.bpf", "ngxscope.resources"}


def test_mapped_folders_hold_one_copy() -> None:
    dirs = _setuptools()["package-dir"]
    for name in ("ngxscope.bpf", "ngxscope.resources"):
        top = ROOT / dirs[name]
        assert top.parent == ROOT
        assert not (ROOT / "app" / "ngxscope" / top.name).exists()


def test_files_read_through_importlib_resources() -> None:
    bpf = resources.files("ngxscope.bpf")
    names = {f.name for f in bpf.iterdir() if f.name.endswith((".c", ".h"))}
    assert {"events.h", "capture.c", "common.c", "processes.c"} <= names
    assert "struct" in bpf.joinpath("events.h").read_text()
    res = resources.files("ngxscope.resources")
    for name in ("ngxscope.svg", "ngxscope.desktop", "ngxscope-record.service", "ngxscope.conf"):
        assert res.joinpath(name).read_bytes(), name
    assert res.joinpath("ngxscope.svg").read_text().lstrip().startswith("<?xml")
    patterns = _setuptools()["package-data"]
    assert set(patterns["ngxscope.resources"]) >= {"*.svg", "*.desktop", "*.service", "*.conf"}
    assert set(patterns["ngxscope.bpf"]) == {"*.c", "*.h"}
