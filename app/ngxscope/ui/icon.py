"""The application icon: a scope lens over request bars, drawn from resources/ngxscope.svg
(the same file the desktop entry names)."""

from __future__ import annotations

from importlib import resources

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

__all__ = ["app_icon", "icon_svg"]


def icon_svg() -> bytes:
    """The icon's SVG text (resources/ngxscope.svg, shipped as ngxscope.resources)."""
    return resources.files("ngxscope.resources").joinpath("ngxscope.svg").read_bytes()


def app_icon() -> QIcon:
    """The icon at the usual sizes, rendered from its SVG."""
    renderer = QSvgRenderer(QByteArray(icon_svg()))
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        pm = QPixmap(size, size)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        renderer.render(p, QRectF(0, 0, size, size))
        p.end()
        icon.addPixmap(pm)
    return icon
