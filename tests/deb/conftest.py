"""Fixtures for the .deb tests: the package built and installed, a normal user, polkit.

The package is installed for real (`dpkg -i`, purged afterwards unless it was installed
before), because pkexec only honours a helper at the exact path a policy in
/usr/share/polkit-1/actions names: a `dpkg --root` tree would not be seen by polkitd.

This machine may run no systemd: when no system D-Bus answers, one is started
(`dbus-daemon --system`), and polkitd too when none runs (as its own user, the way its
systemd unit does); both are stopped afterwards, by PID. The polkit "agent" is a rules.d
file answering YES or NO for org.ngxscope.record and the test user only (what an admin
would write, or what a password typed into an agent amounts to).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPER = "/usr/libexec/ngxscope/ngxscope-capture-helper"
ACTION = "org.ngxscope.record"
BUS = "/run/dbus/system_bus_socket"
PIDFILE = "/run/dbus/pid"
RULES_DIR = Path("/etc/polkit-1/rules.d")


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload,no-any-return]


def as_user(user: str, cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """`cmd` as `user` with a login-like environment (no root's PYTHONPATH and friends)."""
    pw = pwd.getpwnam(user)
    env = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "PATH": "/usr/bin:/bin",
           "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": f"/tmp/xdg-{user}"}
    return run(["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd],
               cwd=pw.pw_dir, **kw)


def _processes() -> dict[int, tuple[str, int]]:
    """{pid: (comm, uid)} of every process now."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                comm = Path(f"/proc/{d}/comm").read_text().strip()
                uid = os.stat(f"/proc/{d}").st_uid
            except OSError:
                continue
            out[int(d)] = (comm, uid)
    return out


def _bus_answers() -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(BUS)
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def deb() -> Path:
    """build/ngxscope_<version>_<arch>.deb, built by the project's one command."""
    assert os.geteuid() == 0, "the .deb tests install a package and create a user: run as root"
    res = run(["bash", "packaging/build-deb.sh"], cwd=ROOT, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    path = ROOT / res.stdout.strip().splitlines()[-1]
    assert path.is_file(), res.stdout
    return path


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    """The .deb installed (dpkg -i); purged after the module unless it was installed before
    (module scope: later tests must not find its /usr/bin/ngxscope on PATH)."""
    before = run(["dpkg-query", "-W", "-f=${Status}", "ngxscope"]).stdout
    res = run(["dpkg", "-i", str(deb)], timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    yield deb
    if "install ok installed" not in before:
        purge = run(["dpkg", "--purge", "ngxscope"], timeout=120)
        assert purge.returncode == 0, purge.stderr
        assert not os.path.exists("/usr/lib/ngxscope"), "purge left /usr/lib/ngxscope behind"


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    """A fresh normal user with a home directory, removed (with its home) afterwards."""
    name = f"ngxt{secrets.token_hex(3)}"
    res = run(["useradd", "--create-home", "--shell", "/bin/sh", name])
    assert res.returncode == 0, res.stderr
    xdg = Path(f"/tmp/xdg-{name}")
    xdg.mkdir(mode=0o700)
    shutil.chown(xdg, name, name)
    try:
        yield name
    finally:
        shutil.rmtree(xdg, ignore_errors=True)
        run(["userdel", "--remove", name])


@pytest.fixture(scope="module")
def polkitd(installed: Path) -> Iterator[None]:
    """A system D-Bus and polkitd that know the installed policy (started if missing)."""
    started: list[subprocess.Popen[bytes] | int] = []
    if not _bus_answers():
        os.makedirs("/run/dbus", exist_ok=True)
        for stale in (PIDFILE, BUS):  # a bus that died leaves these; dbus-daemon refuses to start
            Path(stale).unlink(missing_ok=True)
        res = run(["dbus-daemon", "--system", "--fork", "--print-pid"])
        assert res.returncode == 0, res.stderr
        started.append(int(res.stdout.split()[0]))
        for _ in range(50):
            if _bus_answers():
                break
            time.sleep(0.1)
    if not any(comm == "polkitd" for comm, _ in _processes().values()):
        started.append(subprocess.Popen(["runuser", "-u", "polkitd", "--", "/usr/lib/polkit-1/polkitd",
                                         "--no-debug"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 20
    while run(["pkaction", "--action-id", ACTION]).returncode != 0:
        assert time.monotonic() < deadline, "polkitd does not list org.ngxscope.record"
        time.sleep(0.2)
    try:
        yield None
    finally:
        for item in reversed(started):
            if isinstance(item, int):
                try:
                    os.kill(item, 15)
                except ProcessLookupError:
                    pass
                for _ in range(50):
                    if not os.path.exists(f"/proc/{item}"):
                        break
                    time.sleep(0.1)
                for path in (PIDFILE, BUS):
                    Path(path).unlink(missing_ok=True)
            else:
                item.terminate()  # runuser passes SIGTERM on to polkitd
                item.wait(timeout=10)


def polkit_answer(user: str, answer: str, path: Path) -> None:
    """Make polkit answer `answer` ("YES"/"NO") for org.ngxscope.record to `user`, and wait
    until polkitd applies it (pkcheck on a process of that user)."""
    path.write_text(
        "// ngxscope tests: the authentication agent's answer, for one test user only\n"
        "polkit.addRule(function(action, subject) {\n"
        f'    if (action.id == "{ACTION}" && subject.user == "{user}") return polkit.Result.{answer};\n'
        "});\n")
    path.chmod(0o644)
    probe = subprocess.Popen(["runuser", "-u", user, "--", "sleep", "30"])
    try:
        time.sleep(0.2)
        child = next((pid for pid, (comm, uid) in _processes().items()
                      if comm == "sleep" and uid == pwd.getpwnam(user).pw_uid), None)
        assert child is not None
        deadline = time.monotonic() + 15
        while True:
            code = run(["pkcheck", "--action-id", ACTION, "--process", str(child)]).returncode
            if (code == 0) == (answer == "YES"):
                return
            assert time.monotonic() < deadline, f"polkitd did not apply the {answer} rule"
            time.sleep(0.2)
    finally:
        probe.terminate()
        probe.wait()


@pytest.fixture
def polkit_rule(polkitd: None, user: str) -> Iterator[object]:
    """Call with "YES" or "NO"; the rules file is removed afterwards."""
    path = RULES_DIR / f"00-ngxscope-test-{user}.rules"

    def answer(value: str) -> None:
        polkit_answer(user, value, path)

    try:
        yield answer
    finally:
        path.unlink(missing_ok=True)


def helper_processes() -> list[int]:
    """PIDs of capture helpers or `ngxscope record` processes running from the package."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if HELPER in cmd or ("/usr/lib/ngxscope/bin/python3" in cmd and " record " in cmd):
            out.append(int(d))
    return out
