"""ngxscope.helper: the fixed-path capture helper accepts a PID and nothing else."""

from __future__ import annotations

import sys

import pytest

from ngxscope import helper
from ngxscope.helper import HelperUsage, parse_helper_args, record_argv
from ngxscope.pipeline.source import StreamSource, elevate, helper_argv


@pytest.mark.parametrize("argv, pid", [(["--pid", "1"], 1), (["--pid=4321"], 4321), (["--pid", "4194303"], 4194303)])
def test_accepts_a_pid(argv: list[str], pid: int) -> None:
    assert parse_helper_args(argv) == pid


@pytest.mark.parametrize("argv", [[], ["--pid"], ["1"], ["--pid", "1", "--stream"], ["--pid", "1", "-o", "/etc/x"],
                                  ["--pid", "0"], ["--pid", "-1"], ["--pid", "+1"], ["--pid", " 1"], ["--pid", "1e3"],
                                  ["--pid", "٣"], ["--pid", "4194304"], ["--pid", "9" * 40], ["--binary", "/bin/sh"],
                                  ["--pid=", ""], ["--PID", "1"]])
def test_refuses_everything_else(argv: list[str]) -> None:
    with pytest.raises(HelperUsage):
        parse_helper_args(argv)


def test_main_reports_bad_arguments_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert helper.main(["--pid", "1", "-o", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ngxscope-capture-helper: usage: ") and err.count("\n") == 1


def test_record_argv_is_isolated_and_streams() -> None:
    argv = record_argv(42, python="/usr/lib/ngxscope/bin/python3")
    assert argv == ["/usr/lib/ngxscope/bin/python3", "-I", "-B", "-m", "ngxscope", "record", "--pid", "42", "--stream"]


def test_checkout_never_uses_the_installed_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/work/somewhere/.venv")
    assert helper.installed_helper() is None


def test_window_elevates_through_the_installed_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root, a display, pkexec, and the .deb's helper: pkexec HELPER --pid N, nothing else."""
    import ngxscope.pipeline.source as source

    monkeypatch.setattr(source.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("DISPLAY", ":9")
    monkeypatch.setattr(source.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(source, "installed_helper", lambda: helper.HELPER_PATH)
    assert elevate(helper_argv(77)) == ["pkexec", helper.HELPER_PATH, "--pid", "77"]
    other = [sys.executable, "-m", "ngxscope", "record", "--pid", "77", "--stream", "-o", "x.ngxs"]
    assert elevate(other) == ["pkexec", *other]  # anything else: polkit's generic exec action
    monkeypatch.setattr(source, "installed_helper", lambda: None)
    assert elevate(helper_argv(77)) == ["pkexec", *helper_argv(77)]


def test_denial_is_a_clear_message() -> None:
    src = StreamSource(["pkexec", helper.HELPER_PATH, "--pid", "1"], elevate_if_needed=False)
    src.argv = ["sh", "-c", "echo 'Error executing command as another user: Not authorized' >&2; exit 127"]
    src.start()
    src._eof.wait(10)
    assert src.proc is not None and src.proc.wait(10) == 127
    for t in src._threads:
        t.join(5)
    src.argv = ["pkexec", helper.HELPER_PATH, "--pid", "1"]  # what the window ran
    assert src.error() == ("not authorized to capture: polkit refused org.ngxscope.record "
                           "(pkexec exit 127); nothing was started")
