"""Remove the parts of the PySide6 wheel a desktop install of ngxscope never loads.

    python packaging/prune_qt.py SITE_PACKAGES_DIR

The window uses QtCore/QtGui/QtWidgets/QtSvg (and QtOpenGL through pyqtgraph) on X11,
Wayland or offscreen. Gone: QML/Quick and their modules, Designer, developer tools and
headers, SQL drivers, print support, the embedded-only EGLFS platforms, the GTK3 theme
plugin (it alone would pull GTK, Pango and Cairo into the package's dependencies), Qt's
translations (ngxscope is English only). Then every ELF file left that needs a removed
library goes too, repeated until nothing dangles, so what stays can all be loaded.
Prints the megabytes removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

__all__ = ["main", "prune"]

REMOVE = [
    "PySide6/Qt/qml", "PySide6/Qt/translations", "PySide6/Qt/metatypes", "PySide6/Qt/libexec",
    "PySide6/include", "PySide6/typesystems", "PySide6/glue", "PySide6/scripts",
    "PySide6/Qt/plugins/designer", "PySide6/Qt/plugins/qmltooling", "PySide6/Qt/plugins/qmllint",
    "PySide6/Qt/plugins/sqldrivers", "PySide6/Qt/plugins/printsupport",
    "PySide6/Qt/plugins/egldeviceintegrations", "PySide6/Qt/plugins/imageformats/libqpdf.so",
    "PySide6/Qt/plugins/platforms/libqeglfs.so", "PySide6/Qt/plugins/platforms/libqlinuxfb.so",
    "PySide6/Qt/plugins/platforms/libqminimalegl.so", "PySide6/Qt/plugins/platforms/libqvkkhrdisplay.so",
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so", "PySide6/Qt/plugins/wayland-graphics-integration-server",
    "PySide6/designer", "PySide6/assistant", "PySide6/linguist", "PySide6/lupdate", "PySide6/lrelease",
    "PySide6/qmlformat", "PySide6/qmlls", "PySide6/qmllint", "PySide6/qmlcachegen", "PySide6/qmltyperegistrar",
    "PySide6/qmlimportscanner", "PySide6/balsam", "PySide6/balsamui", "PySide6/svgtoqml",
    "PySide6/Qt/lib/libQt6Quick*", "PySide6/Qt/lib/libQt6Qml*", "PySide6/Qt/lib/libQt6Labs*",
    "PySide6/Qt/lib/libQt6Lottie*", "PySide6/Qt/lib/libQt6Designer*", "PySide6/Qt/lib/libQt6Help*",
    "PySide6/Qt/lib/libQt6Sql*", "PySide6/Qt/lib/libQt6EglFs*", "PySide6/Qt/lib/libQt6EglFSDeviceIntegration*",
    "PySide6/Qt/lib/libQt6WaylandCompositor*", "PySide6/Qt/lib/libQt6WaylandEglCompositor*",
    "PySide6/Qt/lib/libQt6WlShellIntegration*", "PySide6/Qt/lib/libQt6Test*", "PySide6/Qt/lib/libQt6PrintSupport*",
]


def _needed(path: str) -> tuple[str | None, list[str]]:
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None, []
            f.seek(0)
            elf = ELFFile(f)
            soname, needed = None, []
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags():
                        if tag.entry.d_tag == "DT_SONAME":
                            soname = tag.soname  # type: ignore[attr-defined]
                        elif tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)  # type: ignore[attr-defined]
            return soname, needed
    except (ELFError, OSError):
        return None, []


def _size(path: str) -> int:
    if os.path.isfile(path) or os.path.islink(path):
        return os.lstat(path).st_size
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


def _remove(path: str) -> int:
    size = _size(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return size


def prune(site: str) -> int:
    """Prune `site`'s PySide6 in place; return the bytes removed."""
    removed_bytes = 0
    gone: set[str] = set()
    for pattern in REMOVE:
        for path in glob.glob(os.path.join(site, pattern)):
            gone.add(os.path.basename(path))
            removed_bytes += _remove(path)
    root = os.path.join(site, "PySide6")
    while True:
        dangling = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                soname, needed = _needed(path)
                if any(n in gone for n in needed):
                    dangling.append((path, soname or name))
        if not dangling:
            break
        for path, soname in dangling:
            gone.add(soname)
            removed_bytes += _remove(path)
            stub = os.path.splitext(path)[0].split(".abi3")[0] + ".pyi"
            if os.path.exists(stub):
                removed_bytes += _remove(stub)
    return removed_bytes


def main(argv: list[str] | None = None) -> int:
    site = (argv or sys.argv[1:])[0]
    print(f"{prune(site) / 1e6:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
