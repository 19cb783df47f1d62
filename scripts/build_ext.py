#!/usr/bin/env python3
"""Build the compiled hot path in place (app/ngxscope/.../_fast*.so), only when needed.

    .venv/bin/python scripts/build_ext.py [--force] [--check]

The extensions are the `[tool.setuptools] ext-modules` of pyproject.toml (the same list pip
builds into a wheel, the .deb's). Each is rebuilt when its .so is missing or when its
sources, the interpreter or this recipe changed (a hash kept in build/ext/NAME.sha256), so
scripts/setup.sh can run this every time. --check: exit 1 when one is not up to date (and
build nothing). A failed build is one line on stderr and exit 1: the app still runs on its
pure-Python path, but the set-up must say so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "1"


def extensions() -> list[dict[str, object]]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return list(tomllib.load(fh)["tool"]["setuptools"].get("ext-modules", []))


def target(name: str) -> Path:
    """Where the in-place build of module `name` lands (the package dir under app/)."""
    return ROOT / "app" / Path(*name.split(".")).with_suffix("").parent / (
        name.rsplit(".", 1)[1] + str(sysconfig.get_config_var("EXT_SUFFIX")))


def digest(ext: dict[str, object]) -> str:
    h = hashlib.sha256()
    h.update(f"{RECIPE}\n{sys.version}\n{sys.executable}\n{ext!r}\n".encode())
    for src in [*ext["sources"], *ext.get("depends", [])]:  # type: ignore[attr-defined]
        h.update((ROOT / str(src)).read_bytes())
    return h.hexdigest()


def build(exts: list[dict[str, object]]) -> None:
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    modules = [Extension(str(e["name"]), [str(ROOT / str(s)) for s in e["sources"]],  # type: ignore[attr-defined]
                         depends=[str(ROOT / str(d)) for d in e.get("depends", [])],  # type: ignore[attr-defined]
                         extra_compile_args=list(e.get("extra-compile-args", [])))  # type: ignore[call-overload]
               for e in exts]
    with tempfile.TemporaryDirectory() as tmp:
        dist = Distribution({"ext_modules": modules, "package_dir": {"": str(ROOT / "app")}})
        cmd = build_ext(dist)
        cmd.inplace = True
        cmd.build_temp = tmp
        cmd.build_lib = tmp
        cmd.ensure_finalized()
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            cmd.run()
        finally:
            os.chdir(cwd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--check", action="store_true", help="only tell whether all are up to date")
    args = ap.parse_args()
    stamps = ROOT / "build" / "ext"
    stale = []
    for ext in extensions():
        name = str(ext["name"])
        stamp = stamps / f"{name}.sha256"
        want = digest(ext)
        if args.force or not target(name).exists() or not stamp.exists() or stamp.read_text().strip() != want:
            stale.append((ext, stamp, want))
    if args.check:
        for ext, _, _ in stale:
            print(f"build_ext: {ext['name']} is not built or out of date", file=sys.stderr)
        return 1 if stale else 0
    if not stale:
        print("build_ext: compiled hot path up to date", file=sys.stderr)
        return 0
    try:
        build([e for e, _, _ in stale])
    except Exception as exc:  # a compiler error: setuptools raises CompileError / LinkError
        print(f"build_ext: error: building {', '.join(str(e['name']) for e, _, _ in stale)} failed: {exc}",
              file=sys.stderr)
        return 1
    stamps.mkdir(parents=True, exist_ok=True)
    for ext, stamp, want in stale:
        if not target(str(ext["name"])).exists():
            print(f"build_ext: error: {target(str(ext['name']))} was not produced", file=sys.stderr)
            return 1
        stamp.write_text(want + "\n")
        print(f"build_ext: built {target(str(ext['name'])).relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
