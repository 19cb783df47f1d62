"""Debian packages providing the shared libraries the vendored venv's ELF files need.

    python packaging/shlibdeps.py VENV_DIR

Prints one package name per line (what dpkg-shlibdeps would find, without needing a
debian/ source tree): every DT_NEEDED soname that the venv does not ship itself is looked up
with ldconfig, then with `dpkg -S`. A soname nothing on this machine provides is reported on
stderr with the files that need it and makes the exit code 1 (Qt plugins for platforms we
do not support are pruned by build-deb.sh before this runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

__all__ = ["main", "needed_sonames"]


def _elf_files(root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(path)
    return out


def needed_sonames(root: str) -> tuple[dict[str, list[str]], set[str]]:
    """({soname needed: [files needing it]}, {sonames shipped under root})."""
    needed: dict[str, list[str]] = defaultdict(list)
    shipped: set[str] = set()
    for path in _elf_files(root):
        shipped.add(os.path.basename(path))
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                for section in elf.iter_sections():
                    if isinstance(section, DynamicSection):
                        for tag in section.iter_tags():
                            if tag.entry.d_tag == "DT_SONAME":
                                shipped.add(tag.soname)  # type: ignore[attr-defined]
                            elif tag.entry.d_tag == "DT_NEEDED":
                                needed[tag.needed].append(path)  # type: ignore[attr-defined]
        except ELFError:
            continue
    return needed, shipped


def _ldconfig() -> dict[str, str]:
    text = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        if "x86-64" in rest or "64bit" in rest:
            out.setdefault(name, rest.rsplit("=> ", 1)[-1])
    return out


def _packages_of(paths: list[str]) -> dict[str, str]:
    """{path: package} for the paths dpkg knows (one `dpkg -S` per spelling, for usrmerge)."""
    found: dict[str, str] = {}
    for spell in (lambda p: p, os.path.realpath, lambda p: p.replace("/lib/", "/usr/lib/", 1)):
        todo = {spell(p): p for p in paths if p not in found}
        if not todo:
            break
        res = subprocess.run(["dpkg", "-S", *todo], capture_output=True, text=True)
        for line in res.stdout.splitlines():
            pkgs, _, owned = line.partition(": ")
            if owned in todo:
                found[todo[owned]] = pkgs.split(",")[0].split(":")[0].strip()
    return found


def main(argv: list[str] | None = None) -> int:
    root = (argv or sys.argv[1:])[0]
    needed, shipped = needed_sonames(root)
    libs = _ldconfig()
    packages: set[str] = set()
    unresolved: dict[str, list[str]] = {}
    wanted = {soname: libs.get(soname) for soname in needed if soname not in shipped}
    owners = _packages_of([p for p in wanted.values() if p])
    for soname, path in sorted(wanted.items()):
        pkg = owners.get(path) if path else None
        if pkg is None:
            unresolved[soname] = needed[soname]
        else:
            packages.add(pkg)
    for soname, users in unresolved.items():
        rel = ", ".join(sorted({os.path.relpath(u, root) for u in users})[:3])
        print(f"shlibdeps: no package provides {soname} (needed by {rel})", file=sys.stderr)
    print("\n".join(sorted(packages)))
    return 1 if unresolved else 0


if __name__ == "__main__":
    sys.exit(main())
