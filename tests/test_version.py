"""`ngxscope --version`: one version, the same in pyproject, the package and the metainfo."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import ngxscope

ROOT = Path(__file__).resolve().parents[1]


def test_version_everywhere() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ngxscope.__version__ == version
    res = subprocess.run([sys.executable, "-m", "ngxscope", "--version"], capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (0, f"ngxscope {version}\n")
    releases = ET.parse(ROOT / "resources" / "org.ngxscope.ngxscope.metainfo.xml").getroot().find("releases")
    assert releases is not None
    assert releases[0].get("version") == version, "add a <release> for this version to the metainfo"
