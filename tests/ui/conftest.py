"""Qt tests run offscreen, with settings in a temporary file, screenshots in /screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QSettings

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "screenshots"


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "ngxscope.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def shots() -> Path:
    SHOTS.mkdir(exist_ok=True)
    return SHOTS


@pytest.fixture
def window(qtbot, settings: QSettings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from ngxscope.ui.mainwindow import MainWindow

    win = MainWindow(None, title="ngxscope", settings=settings)
    qtbot.addWidget(win)
    win.show()
    yield win
    if win.source is not None:
        win.source.stop()
