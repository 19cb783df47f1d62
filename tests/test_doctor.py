"""`ngxscope doctor`: every check of this machine, one line each, and what a user lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ngxscope import doctor
from ngxscope.doctor import FAIL, OK, WARN, format_report, kernel_config, main_exit_code, run_checks
from ngxscope.lab.nginx import LabNginx


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_kernel_config_is_read() -> None:
    config = kernel_config()
    assert config is not None, "no /boot/config-RELEASE nor /proc/config.gz on this machine"
    assert config["BPF_SYSCALL"] == "y" and config["UPROBES"] == "y"


@pytest.mark.capture
def test_this_machine_can_capture(lab_nginx: LabNginx) -> None:
    assert os.geteuid() == 0, "doctor's capture check compares with what root can do"
    checks = run_checks()
    names = by_name(checks)
    assert not [c for c in checks if c.status == FAIL], format_report(checks)
    for name in ("CONFIG_BPF_SYSCALL", "CONFIG_UPROBES", "BTF", "uprobe PMU", "tracefs", "tracepoints",
                 "headers for bcc", "python module", "capture"):
        assert names[name].status == OK, names[name]
    assert names["kprobe PMU"].detail in ("present", "absent (not needed)")
    mine = [c for c in checks if c.section == "nginx" and f"master {lab_nginx.master_pid}," in c.name]
    assert len(mine) == 1 and mine[0].status == OK and mine[0].detail.startswith("nginx uprobes")
    text = format_report(checks)
    assert text.endswith("0 failed, 0 warnings") or "warn" in text
    assert main_exit_code(checks) == 0


def test_missing_tracefs_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor._read
    monkeypatch.setattr(doctor, "_read", lambda path: "" if path == "/proc/mounts" else real(path))
    checks = run_checks()
    tracefs = by_name(checks)["tracefs"]
    assert tracefs.status == FAIL and "mount -t tracefs nodev /sys/kernel/tracing" in tracefs.detail
    assert main_exit_code(checks) == 1
    assert "1 failed" in format_report(checks).splitlines()[-1]


def test_user_without_helper_is_told_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 4242)
    monkeypatch.setattr(doctor, "effective_caps", lambda: 0)
    monkeypatch.setattr(doctor, "HELPER_PATH", "/nonexistent/ngxscope-capture-helper")
    checks = [c for c in doctor._privilege_checks() if c.section == "privileges"]
    names = by_name(checks)
    assert names["user"].detail.endswith("(uid 4242)")
    assert names["capabilities"].detail.startswith("none of CAP_BPF")
    assert names["capture"].status == WARN and "missing the capture helper" in names["capture"].detail


def test_cli_text_and_json() -> None:
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-m", "ngxscope", "doctor"], capture_output=True, text=True, env=env)
    assert res.returncode in (0, 1) and res.stderr == ""
    assert res.stdout.startswith("[ngxscope]") and "[kernel]" in res.stdout and "[nginx]" in res.stdout
    assert len(res.stdout.splitlines()) <= 50
    data = json.loads(subprocess.run([sys.executable, "-m", "ngxscope", "doctor", "--json"], capture_output=True,
                                     text=True, env=env).stdout)
    assert {c["section"] for c in data["checks"]} >= {"ngxscope", "kernel", "privileges", "bcc", "nginx"}
    assert all(set(c) == {"section", "name", "status", "detail"} for c in data["checks"])
