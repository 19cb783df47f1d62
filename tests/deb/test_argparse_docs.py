"""packaging/argparse_docs.py: the man page and the bash completion follow the CLI's parser."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ngxscope.cli import _build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("argparse_docs", ROOT / "packaging" / "argparse_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["argparse_docs"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_man_page_renders_cleanly_with_every_command_and_option(docs: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "ngxscope.1"
    page.write_text(docs.man_page("2026-01-02"))
    res = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                         env={"MANWIDTH": "120", "LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and res.stderr == "", res.stderr
    text = res.stdout
    assert "2026-01-02" in text and "NGXSCOPE(1)" in text
    for cmd in docs.commands():
        for action in cmd.options:
            for opt in action.option_strings:
                assert opt in text, f"{cmd.name or 'ngxscope'} {opt} missing from the man page"
        if cmd.name:
            assert f"\n   {cmd.name}\n" in text
    assert "doctor" in [c.name for c in docs.commands()]


def complete(script: str, words: list[str]) -> list[str]:
    """COMPREPLY for the command line `words` (the last one being completed)."""
    line = " ".join(f"'{w}'" for w in words)
    prog = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _ngxscope; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    res = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True, check=True)
    return [w for w in res.stdout.splitlines() if w]


def test_bash_completion(docs: ModuleType) -> None:
    script = docs.bash_completion()
    subs = sorted(_build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert sorted(complete(script, ["ngxscope", ""])) == subs
    assert complete(script, ["ngxscope", "do"]) == ["doctor"]
    assert sorted(complete(script, ["ngxscope", "export", "f.ngxs", "--format", ""])) == ["csv", "har", "jsonl", "pcapng"]
    rec = complete(script, ["ngxscope", "record", "--"])
    assert {"--pid", "--binary", "--output", "--stream", "--metrics-listen", "--help"} <= set(rec)
    assert "--all" not in rec  # list's option, not record's
    assert complete(script, ["ngxscope", "doctor", "--"]) == ["--help", "--json"]
    assert "--version" in complete(script, ["ngxscope", "--v"])
    assert complete(script, ["ngxscope", "--remote-sudo", "y"]) == ["yes"]
