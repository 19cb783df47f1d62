"""The application icon: a scope lens over request bars (SVG kept inline, also shipped as
resources/ngxscope.svg for the desktop entry)."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

__all__ = ["SVG", "app_icon"]

SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="#1f8f4e"/>
      <stop offset="1" stop-color="#12633a"/>
    </linearGradient>
  </defs>
  <rect x="12" y="12" width="232" height="232" rx="44" fill="url(#bg)"/>
  <g fill="#ffffff" opacity="0.92">
    <rect x="44" y="60" width="120" height="16" rx="8"/>
    <rect x="44" y="90" width="84" height="16" rx="8"/>
    <rect x="44" y="120" width="104" height="16" rx="8"/>
    <rect x="44" y="150" width="64" height="16" rx="8"/>
  </g>
  <rect x="44" y="180" width="44" height="16" rx="8" fill="#ff6b5b"/>
  <circle cx="160" cy="146" r="46" fill="none" stroke="#ffffff" stroke-width="16"/>
  <circle cx="160" cy="146" r="38" fill="#ffffff" fill-opacity="0.18"/>
  <line x1="194" y1="180" x2="222" y2="208" stroke="#ffffff" stroke-width="20"
        stroke-linecap="round"/>
</svg>
"""


def app_icon() -> QIcon:
    """The icon at the usual sizes, rendered from the inline SVG."""
    renderer = QSvgRenderer(QByteArray(SVG.encode()))
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        pm = QPixmap(size, size)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        renderer.render(p, QRectF(0, 0, size, size))
        p.end()
        icon.addPixmap(pm)
    return icon
