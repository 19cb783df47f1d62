"""The .deb, installed, used as a normal user: list, doctor, the window through polkit.

Root sets up (build, dpkg -i, a fresh user, polkit, the lab nginx); everything the user
does runs as that user with a clean environment and the package's own /usr/bin/ngxscope.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.store.session import SessionReader

from .conftest import HELPER, ROOT, as_user, helper_processes, run

pytestmark = pytest.mark.capture

DRIVER = Path(__file__).with_name("window_driver.py")
SCREENSHOTS = ROOT / "screenshots"


def uprobe_count() -> int:
    return len(Path("/sys/kernel/tracing/uprobe_events").read_text().splitlines())


def root_owned(top: Path) -> list[str]:
    return [str(p) for p in [top, *top.rglob("*")] if p.lstat().st_uid == 0]


# -- the package itself ----------------------------------------------------------------------


def test_package_contents_and_metadata(deb: Path) -> None:
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout
    paths = {line.split()[5].lstrip(".") for line in listing.splitlines()}
    for want in ("/usr/bin/ngxscope", HELPER, "/usr/share/polkit-1/actions/org.ngxscope.record.policy",
                 "/usr/share/applications/ngxscope.desktop", "/usr/share/icons/hicolor/scalable/apps/ngxscope.svg",
                 "/usr/share/metainfo/org.ngxscope.ngxscope.metainfo.xml", "/usr/share/man/man1/ngxscope.1.gz",
                 "/usr/share/bash-completion/completions/ngxscope", "/lib/systemd/system/ngxscope-record.service",
                 "/etc/ngxscope/ngxscope.conf", "/usr/lib/ngxscope/pyvenv.cfg",
                 "/usr/share/doc/ngxscope/copyright", "/usr/share/doc/ngxscope/changelog.gz"):
        assert want in paths, f"{want} not in the package"
    assert not any("__pycache__" in p for p in paths), "bytecode is compiled at install, not shipped"
    assert not any(line.split()[1] != "root/root" for line in listing.splitlines())
    fields = {k: run(["dpkg-deb", "-f", str(deb), k]).stdout.strip() for k in ("Depends", "Architecture", "Version")}
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert "python3-bpfcc" in depends and not any(d.startswith("nginx") for d in depends)
    assert any(d.startswith("python3 (>= 3.11") for d in depends)
    assert fields["Architecture"] == run(["dpkg", "--print-architecture"]).stdout.strip()
    conffiles = run(["sh", "-c", f"dpkg-deb --ctrl-tarfile {deb} | tar -xO ./conffiles"]).stdout
    assert conffiles.split() == ["/etc/ngxscope/ngxscope.conf"]


def test_lintian_reports_nothing_unexplained(deb: Path) -> None:
    res = run(["lintian", "--tag-display-limit", "0", str(deb)], timeout=600)
    tags = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert not tags, "\n".join(tags)  # what remains is overridden with a reason: packaging/lintian-overrides


def test_installed_files_and_metainfo(installed: Path) -> None:
    assert run(["appstreamcli", "validate", "--no-net",
                "/usr/share/metainfo/org.ngxscope.ngxscope.metainfo.xml"]).returncode == 0
    assert run(["dpkg", "--verify", "ngxscope"]).stdout == "", "installed files differ from the package"
    version = run(["/usr/bin/ngxscope", "--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"ngxscope {installed.name.split('_')[1]}"
    man = run(["man", "-l", "/usr/share/man/man1/ngxscope.1.gz"],
              env={"MANWIDTH": "100", "LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    headings = {ln.strip() for ln in man.stdout.splitlines() if ln.startswith("   ") and not ln.startswith("    ")}
    assert {"list", "record", "export", "stats", "demo", "open", "doctor"} <= headings, man.stdout[:2000]
    # every Qt library and plugin shipped finds its system libraries (the Depends are right)
    ldd = run(["sh", "-c", "find /usr/lib/ngxscope -name '*.so*' -type f -print0 | xargs -0 ldd 2>/dev/null"],
              env={"LD_LIBRARY_PATH": "/usr/lib/ngxscope/lib/python3.11/site-packages/PySide6/Qt/lib",
                   "PATH": "/usr/bin:/bin"})
    missing = sorted({line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line})
    assert not missing, f"shipped libraries need missing system libraries: {missing}"


def test_installed_package_runs_the_compiled_hot_path(installed: Path) -> None:
    """The .deb ships the C extensions built for its interpreter, and the app uses them."""
    res = run(["/usr/lib/ngxscope/bin/python3", "-I", "-c",
               "from ngxscope.capture import events; from ngxscope.decode import emitter, http1; "
               "from ngxscope.store import codec; "
               "print(events._fast.__name__, http1._fast.__name__, type(emitter.new_exchange).__module__, "
               "codec._fast_line.__module__)"],
              env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ngxscope.capture._fastevents", "ngxscope.decode._fasthttp1",
                                  "ngxscope.decode._fastmodel", "ngxscope.store._fastcodec"]


# -- as a normal user ------------------------------------------------------------------------


def test_list_as_user_says_what_it_cannot_inspect(installed: Path, user: str, lab_nginx: LabNginx) -> None:
    res = as_user(user, ["ngxscope", "list"])
    assert res.returncode == 0, res.stderr
    block = next(b for b in res.stdout.split("\n\n") if f"master {lab_nginx.master_pid}," in b)
    assert f"permission denied: cannot read /proc/{lab_nginx.master_pid}/exe" in block
    assert "nginx runs as root" in block and "sudo ngxscope list" in block
    assert "not readable by this user" in block  # listening sockets: unknown, not "none"
    as_root = run(["/usr/bin/ngxscope", "list"])
    root_block = next(b for b in as_root.stdout.split("\n\n") if f"master {lab_nginx.master_pid}," in b)
    assert "capture    nginx uprobes" in root_block and f"127.0.0.1:{lab_nginx.plain_port}" in root_block


def test_doctor_as_user(installed: Path, user: str, lab_nginx: LabNginx, polkitd: None) -> None:
    res = as_user(user, ["ngxscope", "doctor"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ngxscope" in res.stdout and "from Debian package (/usr/lib/ngxscope)" in res.stdout
    assert f"through pkexec {HELPER} (polkit action org.ngxscope.record)" in res.stdout
    assert f"{user} (uid {pwd.getpwnam(user).pw_uid})" in res.stdout
    assert "bcc 0." in res.stdout and "/usr/lib/python3/dist-packages/bcc" in res.stdout
    assert len(res.stdout.splitlines()) <= 45  # one screen
    checks = json.loads(as_user(user, ["ngxscope", "doctor", "--json"]).stdout)["checks"]
    mine = [c for c in checks if c["section"] == "nginx" and f"master {lab_nginx.master_pid}," in c["name"]]
    assert len(mine) == 1 and "permission denied" in mine[0]["detail"]


def test_helper_accepts_only_a_pid(installed: Path, user: str) -> None:
    for bad in ([], ["--pid"], ["--pid", "1", "-o", "/etc/owned"], ["--pid", "x1"], ["--pid", "-5"],
                ["--pid", "0"], ["record", "--pid", "1"], ["--pid", "99999999999"]):
        res = run([HELPER, *bad])
        assert res.returncode == 2, (bad, res.stderr)
        assert res.stderr.startswith("ngxscope-capture-helper: ") and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not Path("/etc/owned").exists()
    direct = as_user(user, [HELPER, "--pid", "1"])  # not through pkexec
    assert direct.returncode == 1 and "must run as root" in direct.stderr


def test_helper_as_root_writes_no_file(installed: Path, lab_nginx: LabNginx) -> None:
    """The helper under strace: every file it (and bcc) opens for writing or creates."""
    log = Path(f"/tmp/ngxscope-helper-strace-{os.getpid()}.log")
    proc = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=openat,open,creat,mkdir,mkdirat,rename,renameat2,"
                             "link,linkat,symlink,symlinkat,unlink,unlinkat,truncate", "-o", str(log),
                             HELPER, "--pid", str(lab_nginx.master_pid)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/tmp")
    assert proc.stdout is not None and proc.stdin is not None
    kinds = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()[-2000:] if proc.stderr else "helper ended"
        rec = json.loads(line)
        kinds.append(rec.get("kind") or rec.get("t"))
        if rec.get("t") == "event" and rec.get("kind") == "attach":
            break
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=1)
    lab_nginx.wait_log_lines(sent)
    time.sleep(1.0)
    out, _ = proc.communicate(timeout=60)  # closes stdin: the window went away
    assert proc.returncode == 0
    kinds += [json.loads(line).get("t") for line in out.splitlines() if line.strip()]
    assert kinds.count("exchange") == sent and kinds[-1] == "end"
    written = strace_leftovers(log.read_text())
    log.unlink()
    allowed = ("/sys/kernel/tracing/", "/sys/kernel/debug/tracing/", "/dev/null", "/sys/fs/bpf")
    outside = sorted(p for p in written if not p.startswith(allowed))
    assert not outside, f"the helper wrote as root outside the kernel's tracing files: {outside}"


def strace_leftovers(text: str) -> set[str]:
    """Paths an strace log shows created or opened for writing and not removed again.

    An anonymous file (O_TMPFILE, or tempfile's create-then-unlink probe: bcc's compiler
    messages are caught that way) leaves nothing behind and is not counted.
    """
    written: set[str] = set()
    for entry in text.splitlines():
        call = entry.split(None, 1)[1] if entry[:1].isdigit() else entry
        if "= -1" in call or '"' not in call or "O_TMPFILE" in call:
            continue
        quoted = call.split('"')
        if call.startswith(("unlink(", "unlinkat(")):
            written.discard(quoted[1])
        elif call.startswith(("rename(", "renameat2(", "link(", "linkat(", "symlink(", "symlinkat(")):
            written.discard(quoted[1]) if call.startswith("rename") else None
            written.add(quoted[3])
        elif call.startswith(("openat(", "open(")):
            if any(f in call for f in ("O_WRONLY", "O_RDWR", "O_CREAT")):
                written.add(quoted[1])
        else:  # creat, mkdir, mkdirat, truncate
            written.add(quoted[1])
    return written


def _run_window(user: str, pid: int, on_attach: Callable[[], int] | None,
                session: Path, png: Path) -> dict[str, Any]:
    """The driver under Xvfb as `user`; `on_attach` sends traffic once the probes are live
    and returns how many requests it sent. Returns the driver's result record."""
    pw = pwd.getpwnam(user)
    driver = Path(pw.pw_dir) / "window_driver.py"
    driver.write_text(DRIVER.read_text())
    os.chown(driver, pw.pw_uid, pw.pw_gid)
    env = [f"HOME={pw.pw_dir}", f"USER={user}", f"LOGNAME={user}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
           f"XDG_RUNTIME_DIR=/tmp/xdg-{user}"]
    cmd = ["runuser", "-u", user, "--", "env", "-i", *env, "xvfb-run", "-a", "-s", "-screen 0 1600x1000x24",
           "/usr/lib/ngxscope/bin/python3", "-I", str(driver), str(pid), str(session), str(png)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=pw.pw_dir)
    assert proc.stdout is not None and proc.stdin is not None
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        rec = json.loads(line)
        if rec.get("attached") and on_attach is not None:
            proc.stdin.write(f"{on_attach()}\n")
            proc.stdin.flush()
        if "result" in rec:
            result = rec["result"]
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(timeout=60)
    assert result is not None, err[-3000:]
    return result


def test_window_as_user_attaches_through_polkit(installed: Path, user: str, lab_nginx: LabNginx,
                                               polkit_rule: Callable[[str], None]) -> None:
    polkit_rule("YES")
    home = Path(pwd.getpwnam(user).pw_dir)
    session, png = home / "captured.ngxs", home / "window.png"
    probes_before = uprobe_count()
    traffic = Traffic(lab_nginx.plain_port, lab_nginx.tls_port)
    sent: list[int] = []

    def send() -> int:
        sent.append(traffic.run_mix(rounds=2))
        return sent[0]

    result = _run_window(user, lab_nginx.master_pid, send, session, png)
    assert result["helper_argv"] == ["pkexec", HELPER, "--pid", str(lab_nginx.master_pid)]
    assert result["attached"] and not result["error"], result
    log = lab_nginx.wait_log_lines(sent[0])
    assert result["rows"] >= 20 and result["rows"] == len(log), result
    # the session was written by the window, as the user, and holds what nginx logged
    uid = pwd.getpwnam(user).pw_uid
    st = session.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)
    # connections that never became a request are records too (conn_outcome): not log lines
    exchanges = [ex for ex in SessionReader(session).read_all().exchanges if ex.conn_outcome is None]
    by_id = {next(v for k, v in ex.request_headers if k.lower() == "x-lab"): ex for ex in exchanges}
    for line in log:
        ex = by_id[str(line["lab_id"])]
        assert (ex.method, ex.target, ex.status) == (line["method"], line["uri"], line["status"])
        assert (ex.request_bytes, ex.response_bytes) == (line["request_length"], line["bytes_sent"])
    assert root_owned(home) == [], "root wrote into the user's home"
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "deb-window-as-user.png").write_bytes(png.read_bytes())
    # nothing left running or attached once the window closed
    deadline = time.monotonic() + 30
    while helper_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert helper_processes() == []
    assert uprobe_count() == probes_before


def test_window_as_user_denied_by_polkit(installed: Path, user: str, lab_nginx: LabNginx,
                                         polkit_rule: Callable[[str], None]) -> None:
    polkit_rule("NO")
    home = Path(pwd.getpwnam(user).pw_dir)
    session, png = home / "denied.ngxs", home / "denied.png"
    result = _run_window(user, lab_nginx.master_pid, None, session, png)
    assert result["rows"] == 0 and result["state"] == "died" and not result["attached"], result
    assert result["error"].startswith("not authorized to capture: polkit refused org.ngxscope.record"), result
    assert result["error"] in result["state_text"]
    assert not session.exists() and helper_processes() == []
    assert root_owned(home) == []
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "deb-window-denied.png").write_bytes(png.read_bytes())
