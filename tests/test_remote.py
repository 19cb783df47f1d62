"""Remote live capture over SSH: a real sshd in a network namespace made by the test, the
remote side being this machine's ngxscope capturing a lab nginx; exchanges come back through
the SSH channel (the window's `StreamSource` with an ssh argv) and match the access log."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange
from ngxscope.pipeline.remote import RemoteSpec, ssh_argv

VENV_NGXSCOPE = str(Path(sys.executable).with_name("ngxscope"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the dialog test


def test_spec_parsing_and_argv() -> None:
    s = RemoteSpec.parse("deploy@web1:2222/1234", key="/k")
    assert (s.user, s.host, s.port, s.pid, s.sudo) == ("deploy", "web1", 2222, 1234, True)
    assert RemoteSpec.parse("root@[fd00::2]").host == "fd00::2"
    assert RemoteSpec.parse("root@10.0.0.2", pid=7).sudo is False
    argv = s.record_argv()
    assert argv[:4] == ["ssh", "-T", "-o", "BatchMode=yes"]
    assert argv[-2:] == ["deploy@web1", "sudo -n ngxscope record --pid 1234 --stream"]
    assert argv[argv.index("-p"):argv.index("-p") + 2] == ["-p", "2222"]
    with pytest.raises(ValueError):
        RemoteSpec.parse("-oProxyCommand=evil")
    assert ssh_argv(RemoteSpec("h", ngxscope="/opt/n s/ngxscope"), "x")[-1] == "x"
    assert RemoteSpec("h", ngxscope="'/opt/n s/ngxscope'").remote_command("list") == "'/opt/n s/ngxscope' list"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res


class SshHost:
    """sshd inside a network namespace reachable over a veth pair, with throwaway keys."""

    def __init__(self) -> None:
        assert os.geteuid() == 0, "the SSH test creates a network namespace: run it as root"
        for tool in ("ip", "ssh", "ssh-keygen", "/usr/sbin/sshd"):
            assert shutil.which(tool), f"{tool} is needed (Debian: iproute2, openssh-client, openssh-server)"
        n = os.getpid() % 200 + 20
        self.ns = f"ngxscope-t{os.getpid()}"
        self.veth = f"nxs{os.getpid() % 100000}"
        self.subnet = f"10.200.{n}"
        self.addr = f"{self.subnet}.2"
        self.tmp = Path(tempfile.mkdtemp(prefix="ngxscope-ssh-"))
        self.sshd: subprocess.Popen[bytes] | None = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    @property
    def ngxscope(self) -> str:
        """The remote ngxscope: this venv's, under this test run's PYTHONPATH (ssh does not
        pass the environment on; a worktree's tree would otherwise not be the one tested)."""
        path = os.environ.get("PYTHONPATH")
        if not path:
            return VENV_NGXSCOPE
        wrapper = self.tmp / "ngxscope"
        if not wrapper.exists():
            wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(path)} exec {shlex.quote(VENV_NGXSCOPE)} \"$@\"\n")
            wrapper.chmod(0o755)
        return str(wrapper)

    def _setup(self) -> None:
        t = self.tmp
        _run("ip", "netns", "add", self.ns)
        _run("ip", "link", "add", f"{self.veth}a", "type", "veth", "peer", "name", f"{self.veth}b")
        _run("ip", "link", "set", f"{self.veth}b", "netns", self.ns)
        _run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", f"{self.veth}a")
        _run("ip", "link", "set", f"{self.veth}a", "up")
        inside = ("ip", "netns", "exec", self.ns)
        _run(*inside, "ip", "addr", "add", f"{self.addr}/24", "dev", f"{self.veth}b")
        _run(*inside, "ip", "link", "set", f"{self.veth}b", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / "host_key"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(t / "id_test"))
        shutil.copy(t / "id_test.pub", t / "authorized_keys")
        (t / "sshd_config").write_text(
            f"ListenAddress {self.addr}:22\nHostKey {t / 'host_key'}\nPidFile {t / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {t / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PrintMotd no\nLogLevel ERROR\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        self.sshd = subprocess.Popen([*inside, "/usr/sbin/sshd", "-D", "-e", "-f", str(t / "sshd_config")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(t / "sshd.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.ssh("true", check=False).returncode == 0:
                return
            if self.sshd.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"sshd in {self.ns} did not come up: {(t / 'sshd.log').read_text()[-1500:]}")

    @property
    def key(self) -> str:
        return str(self.tmp / "id_test")

    def spec(self, pid: int | None = None) -> RemoteSpec:
        return RemoteSpec.parse(f"root@{self.addr}", pid=pid, key=self.key, ngxscope=self.ngxscope,
                                ssh_options=("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"))

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*ssh_argv(self.spec(), command), check=check)

    def close(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
        # sessions sshd forked (ours) live in the namespace: end them before removing it
        res = _run("ip", "netns", "pids", self.ns, check=False)
        for pid in res.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _run("ip", "link", "del", f"{self.veth}a", check=False)
        _run("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def ssh_host() -> Iterator[SshHost]:
    host = SshHost()
    try:
        yield host
    finally:
        host.close()
        assert host.ns not in _run("ip", "netns", "list").stdout


def requests_only(exchanges: list[Exchange]) -> list[Exchange]:
    """The exchanges that are requests: a connection that never became one (socket filter:
    closed, reset, failed handshake) is a record too, with no access-log line."""
    return [ex for ex in exchanges if ex.conn_outcome is None]


def _lab_id(ex: Exchange) -> str | None:
    return next((v for k, v in ex.request_headers if k.lower() == "x-lab"), None)


def test_remote_list_over_ssh(ssh_host: SshHost, lab_nginx: LabNginx) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ngxscope", "--remote", f"root@{ssh_host.addr}", "--ssh-key", ssh_host.key,
         "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
         "--remote-ngxscope", ssh_host.ngxscope, "list", "--json"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    masters = {i["master"]["pid"]: i for i in data["instances"]}
    assert lab_nginx.master_pid in masters
    inst = masters[lab_nginx.master_pid]
    assert inst["capture_method"] == "nginx uprobes"
    assert sorted(w["pid"] for w in inst["workers"] if w["role"] == "worker") == lab_nginx.worker_pids()


def test_remote_capture_over_ssh_matches_access_log(ssh_host: SshHost, lab_nginx: LabNginx) -> None:
    from ngxscope.pipeline.remote import RemoteStreamSource

    source = RemoteStreamSource(ssh_host.spec(lab_nginx.master_pid))
    assert source.argv[0] == "ssh" and "BatchMode=yes" in source.argv
    source.start()
    exchanges: list[Exchange] = []
    kinds: list[str] = []
    wire: list[str] = []
    try:
        deadline = time.monotonic() + 45
        while not {"attach", "wire"} <= set(kinds) and time.monotonic() < deadline:  # the filter
            # is compiled after the attach: traffic before it has no handshake to see
            _, evs, _ = source.poll()
            kinds += [e.kind for e in evs]
            wire += [e.detail for e in evs if e.kind == "wire"]
            assert source.alive(), source.error()
            time.sleep(0.1)
        assert "attach" in kinds, f"no attach event over ssh: {source.error()}"
        sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=2, concurrency=4)
        log = lab_nginx.wait_log_lines(sent)
        deadline = time.monotonic() + 20
        while len(exchanges) < sent and time.monotonic() < deadline:
            exs, evs, _ = source.poll()
            exchanges += requests_only(exs)
            wire += [e.detail for e in evs if e.kind == "wire"]
            time.sleep(0.1)
        time.sleep(0.5)
        exchanges += requests_only(source.poll()[0])
        header = source.header
    finally:
        source.stop()
    by_id = {_lab_id(ex): ex for ex in exchanges}
    problems = []
    for line in log:
        ex = by_id.get(line["lab_id"])
        if ex is None:
            problems.append(f"lab {line['lab_id']}: not captured")
            continue
        want = (line["method"], line["uri"], line["status"], line["request_length"], line["bytes_sent"],
                line["client"], int(line["pid"]), line["upstream_addr"] if line["upstream_addr"] != "-" else "")
        got = (ex.method, ex.target, ex.status, ex.request_bytes, ex.response_bytes, ex.client, ex.pid,
               ", ".join(a.addr for a in ex.upstream))
        if got != want:
            problems.append(f"lab {line['lab_id']}: {got} != log {want}")
        # the helper runs in the SSH host's network namespace, nginx in this one: the socket
        # filter opens its packet sockets in nginx's (capture.netns)
        if ex.tls_version != (line["ssl_protocol"] or None):
            problems.append(f"lab {line['lab_id']}: tls_version {ex.tls_version} != log {line['ssl_protocol']}")
    print(f"\nover ssh to {ssh_host.addr} (netns {ssh_host.ns}): {len(log)} logged, {len(exchanges)} received, "
          f"bad lines {source.bad_lines}, mismatches {len(problems)}; {wire}; remote header target {header and header.get('target')}")
    assert header is not None and header.get("format") == "ngxscope-session"
    assert source.bad_lines == 0, source.last_bad
    assert len(exchanges) == len(log) == sent
    assert not problems, "\n".join(problems[:20])
    # closing the channel ends the remote helper (its stdin closed): nothing is left running
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = _run("pgrep", "-f", f"record --pid {lab_nginx.master_pid} --stream", check=False).stdout.split()
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"remote helper still running: {left}"


def test_multi_host_source_merges_streams(tmp_path: Path) -> None:
    """Two hosts' streams: unique ids, per-host connection ids, `host_of`, merged stats."""
    from ngxscope.pipeline.remote import MultiHostSource, RemoteStreamSource
    from ngxscope.store.session import StreamWriter

    def fake(label: str, pid: int) -> RemoteStreamSource:
        path = tmp_path / f"{label}.jsonl"
        with open(path, "wb") as fh:
            w = StreamWriter(fh)
            for i in range(1, 4):
                w.write_exchange(Exchange(id=i, start=1.0, end=2.0, pid=pid, client="c:1", server="s:2",
                                          tls=False, conn_id=f"{pid}:5:1"))
            w.write_stats({"ts": 1.0, "requests": 3, "lost": 1, "truncated": 0, "workers": [pid]})
            w.close()
        src = RemoteStreamSource(RemoteSpec.parse(f"root@{label}", pid=pid))
        src.argv = ["cat", str(path)]
        return src

    multi = MultiHostSource([fake("web1", 10), fake("web2", 20)])
    multi.start()
    exchanges: list[Exchange] = []
    stats = None
    deadline = time.monotonic() + 10
    while (len(exchanges) < 6 or stats is None) and time.monotonic() < deadline:
        exs, _, st = multi.poll()
        exchanges += exs
        stats = st or stats
        time.sleep(0.05)
    multi.stop()
    assert sorted(ex.id for ex in exchanges) == [1, 2, 3, 4, 5, 6]
    assert {multi.host_of(ex) for ex in exchanges} == {"root@web1", "root@web2"}
    assert {ex.conn_id for ex in exchanges} == {"root@web1|10:5:1", "root@web2|20:5:1"}
    assert stats is not None and stats["requests"] == 6 and stats["lost"] == 2 and sorted(stats["workers"]) == [10, 20]
    assert all(s.ended and s.bad_lines == 0 for s in multi.sources)


def test_remote_host_dialog_lists_and_picks(qtbot: Any) -> None:
    """The "Remote host…" dialog: `ngxscope list --json` rows (injected lister), pick → spec."""
    from ngxscope.ui.remote import RemoteHostDialog

    listing = {"host": "web1", "instances": [{
        "label": "nginx 1.22.1 (master 4242, 1 worker)",
        "master": {"pid": 4242, "exe": "/usr/sbin/nginx", "role": "master"},
        "workers": [{"pid": 4243, "role": "worker", "exe": "/usr/sbin/nginx"}],
        "binary": {"path": "/usr/sbin/nginx", "flavor": "nginx", "version": "1.22.1", "tls": "dynamic",
                   "tls_library": "libssl.so.3", "method": "nginx uprobes", "method_reason": ""},
        "listen": ["0.0.0.0:443"], "capture_method": "nginx uprobes", "capture_reason": "", "is_nginx": True}]}
    asked: list[RemoteSpec] = []

    def lister(spec: RemoteSpec, include_all: bool) -> dict[str, Any]:
        asked.append(spec)
        return listing

    dlg = RemoteHostDialog(None, lister=lister)
    qtbot.addWidget(dlg)
    dlg.host.setText("ops@web1:2200")
    dlg.key.setText("/keys/id")
    dlg.sudo.setChecked(True)
    dlg.refresh()
    assert asked[0].port == 2200 and dlg.tree.topLevelItemCount() == 1
    assert "4242" in dlg.tree.topLevelItem(0).text(0)
    dlg.accept()
    assert dlg.spec is not None and dlg.spec.pid == 4242
    assert dlg.spec.record_argv()[-1] == "sudo -n ngxscope record --pid 4242 --stream"


def test_window_shows_a_capture_over_ssh(ssh_host: SshHost, lab_nginx: LabNginx, qtbot: Any) -> None:
    """The window, fed through ssh, shows exactly what nginx logged (screenshot kept)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from ngxscope.pipeline.remote import RemoteStreamSource
    from ngxscope.ui.app import grab_png
    from ngxscope.ui.mainwindow import MainWindow

    source = RemoteStreamSource(ssh_host.spec(lab_nginx.master_pid))
    win = MainWindow(None, title="ngxscope — remote")
    qtbot.addWidget(win)
    win.resize(1600, 1000)
    win.show()
    win.set_source(source)
    try:
        qtbot.waitUntil(lambda: any(e.kind == "attach" for e in win.events), timeout=45_000)
        sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=1, concurrency=2)
        log = lab_nginx.wait_log_lines(sent)
        qtbot.waitUntil(lambda: len(requests_only(list(win.store))) >= sent, timeout=30_000)
        by_id = {_lab_id(ex): ex for ex in win.store}
        for line in log:
            ex = by_id[line["lab_id"]]
            assert (ex.method, ex.target, ex.status, ex.response_bytes) == (
                line["method"], line["uri"], line["status"], line["bytes_sent"])
        win.refresh_graphs()
        win.refresh_panels()
        shots = Path(__file__).resolve().parents[1] / "screenshots"
        assert grab_png(win, str(shots / "remote-window.png"))
    finally:
        win.stop_capture()
