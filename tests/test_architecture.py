"""The house's shape: no import circles between modules (function-local and TYPE_CHECKING
imports count), measured by scripts/import_cycles.py. The layering itself is
import-linter's job (pyproject.toml, `.venv/bin/lint-imports`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_cycles.py"
_spec = importlib.util.spec_from_file_location("import_cycles", _SCRIPT)
assert _spec is not None and _spec.loader is not None
import_cycles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_cycles)

def test_no_import_circles() -> None:
    found = import_cycles.circles()
    assert found == []


def test_a_circle_is_found(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pkg = tmp_path / "circled"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (pkg / "c.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles.circles("circled") == [["circled.a", "circled.b"]]
    assert import_cycles.circles("circled", type_checking=False) == []


def test_every_top_level_module_is_in_a_layer() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[1]
    with open(root / "pyproject.toml", "rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    named = {m.strip() for layer in layers for m in layer.split("|")}
    pkg = root / "app" / "ngxscope"
    top = {f"ngxscope.{p.stem}" for p in pkg.glob("*.py") if p.name != "__init__.py"}
    top |= {f"ngxscope.{p.name}" for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert named == top
