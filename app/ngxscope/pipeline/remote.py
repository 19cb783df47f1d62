"""Live capture of an nginx on another machine, over SSH (`ngxscope --remote USER@HOST`).

The remote host runs the same capture helper the window runs locally,
`ngxscope record --pid PID --stream` (capture and decoding happen there); its JSON lines
come back over the SSH channel, and the window reads them exactly like a local helper's.
Closing the window closes the channel: the remote helper sees its stdin end and stops.

    ssh -o BatchMode=yes -o ServerAliveInterval=10 ... -p PORT -i KEY user@host \
        ngxscope record --pid PID --stream

`RemoteStreamSource` is that helper as the window's source; `MultiHostSource` merges several
hosts into one (exchange ids kept unique, connection ids prefixed with the host,
`host_of(ex)`). No Qt here: `ngxscope.ui.remote` has the dialog, `ngxscope.cli` the options.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import Exchange, LifecycleEvent
from .source import PollResult, StreamSource

__all__ = [
    "MultiHostSource",
    "RemoteError",
    "RemoteSpec",
    "RemoteStreamSource",
    "choose_pid",
    "instances_json",
    "list_remote",
    "list_remote_text",
    "remote_failure",
    "remote_source",
    "ssh_argv",
]

_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*)"
                      r"(?::(?P<port>\d{1,5}))?(?:/(?P<pid>\d+))?$")


class RemoteError(Exception):
    """SSH or the remote ngxscope failed (one line, for the user)."""


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """Where and how to reach a remote ngxscope."""

    host: str
    user: str | None = None
    port: int | None = None
    pid: int | None = None
    """The nginx master (or worker) to capture there; None: choose (dialog / the only one)."""
    key: str | None = None
    """SSH private key (`ssh -i`); None: ssh's defaults and agent."""
    ngxscope: str = "ngxscope"
    """The ngxscope command on the remote host (a path when it is not on PATH)."""
    sudo: bool = False
    """Run the remote ngxscope through `sudo -n` (a non-root login)."""
    ssh_options: tuple[str, ...] = field(default_factory=tuple)
    """Extra `-o` options (StrictHostKeyChecking=..., UserKnownHostsFile=...)."""

    @classmethod
    def parse(cls, text: str, **kw: Any) -> RemoteSpec:
        """"[user@]host[:port][/pid]" (IPv6 in brackets). Raises ValueError."""
        m = _HOST_RE.match(text.strip())
        if not m:
            raise ValueError(f"not [USER@]HOST[:PORT][/PID]: {text!r}")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"bad SSH port in {text!r}")
        host = m["host"].strip("[]")
        pid = int(m["pid"]) if m["pid"] else kw.pop("pid", None)
        kw.pop("pid", None)
        if "sudo" not in kw or kw["sudo"] is None:
            kw["sudo"] = bool(m["user"]) and m["user"] != "root"
        return cls(host=host, user=m["user"], port=port, pid=pid, **kw)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        """"user@host" or "user@host:2222": how the window names this host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"{self.user}@{host}" if self.user else host
        return f"{base}:{self.port}" if self.port else base

    def with_pid(self, pid: int) -> RemoteSpec:
        return RemoteSpec(self.host, self.user, self.port, pid, self.key, self.ngxscope, self.sudo,
                          self.ssh_options)

    def remote_command(self, *args: str) -> str:
        """The command line the remote shell runs (quoted)."""
        words = shlex.split(self.ngxscope) + list(args)
        if self.sudo:
            words = ["sudo", "-n", *words]
        return shlex.join(words)

    def record_argv(self, extra: tuple[str, ...] = ()) -> list[str]:
        """The local argv of the remote capture helper (for `StreamSource`)."""
        if self.pid is None:
            raise ValueError(f"{self.label}: no nginx PID chosen")
        return ssh_argv(self, self.remote_command("record", "--pid", str(self.pid), "--stream", *extra))

    def list_argv(self, include_all: bool = False) -> list[str]:
        return ssh_argv(self, self.remote_command("list", "--json", *(["--all"] if include_all else [])))


def ssh_argv(spec: RemoteSpec, command: str) -> list[str]:
    """`ssh` in batch mode (never prompts: keys or agent only), with keepalives so a dead
    link ends the capture within ~30 s, running `command` on `spec`'s host."""
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    if spec.port:
        argv += ["-p", str(spec.port)]
    if spec.key:
        argv += ["-i", spec.key, "-o", "IdentitiesOnly=yes"]
    for opt in spec.ssh_options:
        argv += ["-o", opt]
    argv += [spec.destination, command]
    return argv


# -- `ngxscope list --json` on the remote side ----------------------------------------------

def instances_json(instances: list[Any]) -> dict[str, Any]:
    """`find_instances()` as JSON (what `ngxscope list --json` prints)."""
    def proc(p: Any) -> dict[str, Any]:
        return {"pid": p.pid, "ppid": p.ppid, "role": p.role, "exe": p.exe, "cmdline": p.cmdline,
                "user": p.user, "start_time": p.start_time, "rss": p.rss}

    out = []
    for inst in instances:
        b = inst.binary
        out.append({
            "label": inst.label,
            "master": proc(inst.master),
            "workers": [proc(w) for w in inst.workers],
            "binary": None if b is None else {
                "path": b.path, "flavor": b.flavor, "version": b.version, "tls": b.tls,
                "tls_library": b.tls_library, "method": b.method, "method_reason": b.method_reason,
            },
            "binary_error": inst.binary_error,
            "listen": list(inst.listen),
            "capture_method": inst.capture_method,
            "capture_reason": inst.capture_reason,
            "is_nginx": inst.is_nginx,
        })
    return {"host": os.uname().nodename, "instances": out}


def list_remote(spec: RemoteSpec, include_all: bool = False, timeout: float = 30.0) -> dict[str, Any]:
    """Run `ngxscope list --json` on the remote host. Raises RemoteError with one line."""
    stdout = _run_list(spec, spec.list_argv(include_all), timeout)
    try:
        data = json.loads(stdout)
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
            raise ValueError("no instances")
    except ValueError:
        raise RemoteError(f"{spec.label}: `ngxscope list --json` printed no JSON "
                          f"(an older ngxscope there?): {stdout[:120]!r}") from None
    return data


def list_remote_text(spec: RemoteSpec, include_all: bool = False, timeout: float = 60.0) -> str:
    """`ngxscope list` on the remote host, as it prints it. Raises RemoteError with one line."""
    argv = ssh_argv(spec, spec.remote_command("list", *(["--all"] if include_all else [])))
    return _run_list(spec, argv, timeout)


def _run_list(spec: RemoteSpec, argv: list[str], timeout: float) -> str:
    """The output of an `ngxscope list` run over ssh. Raises RemoteError with one line."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RemoteError("ssh is not installed (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{spec.label}: no answer from `ngxscope list` within {timeout:g} s") from None
    if res.returncode != 0:
        raise RemoteError(f"{spec.label}: {remote_failure(res.returncode, res.stderr)}")
    return res.stdout


def remote_failure(code: int, stderr: str) -> str:
    """One line for the user about a failed ssh/remote command."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    tail = lines[-1] if lines else ""
    if code == 255:
        return f"ssh failed: {tail or 'cannot connect'}"
    if code == 127 or "command not found" in tail:
        return f"ngxscope is not installed there (or not on PATH: use --remote-ngxscope PATH): {tail}"
    return tail or f"remote command exited with code {code}"


def choose_pid(spec: RemoteSpec, listing: dict[str, Any]) -> int:
    """The only capturable nginx master in `listing`; RemoteError when none or several."""
    found = [i["master"]["pid"] for i in listing["instances"]
             if i.get("is_nginx", True) and i.get("capture_method")]
    if len(found) == 1:
        return int(found[0])
    if not found:
        raise RemoteError(f"{spec.label}: no capturable nginx there")
    raise RemoteError(f"{spec.label}: {len(found)} nginx instances ({', '.join(map(str, found))}): "
                      f"choose one with {spec.label}/PID")


# -- the window's sources ---------------------------------------------------------------

class RemoteStreamSource(StreamSource):
    """The capture helper of one remote host, run through ssh (never elevated locally)."""

    def __init__(self, spec: RemoteSpec) -> None:
        super().__init__(spec.record_argv(), elevate_if_needed=False)
        self.spec = spec

    def describe(self) -> str:
        return f"nginx pid {self.spec.pid} on {self.spec.label} via ssh"

    def error(self) -> str | None:
        why = super().error()
        return f"{self.spec.label}: {why}" if why else None


class MultiHostSource:
    """Several remote captures as one source (an `ExchangeSource`)."""

    def __init__(self, sources: Sequence[RemoteStreamSource]) -> None:
        self.sources = list(sources)
        self._ids = itertools.count(1)
        self._host_by_id: dict[int, str] = {}
        self._stats: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for s in self.sources:
            s.start()

    def stop(self) -> None:
        for s in self.sources:
            s.stop()

    def poll(self) -> PollResult:
        exchanges: list[Exchange] = []
        events: list[LifecycleEvent] = []
        fresh = False
        for s in self.sources:
            label = s.spec.label
            exs, evs, stats = s.poll()
            for ex in exs:
                ex.id = next(self._ids)
                ex.conn_id = f"{label}|{ex.conn_id}"
                self._host_by_id[ex.id] = label
            exchanges += exs
            for ev in evs:
                ev.detail = f"[{label}] {ev.detail}"
            events += evs
            if stats is not None:
                self._stats[label] = stats
                fresh = True
        return exchanges, events, self._merged_stats() if fresh else None

    def _merged_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": 0.0, "requests": 0, "events": 0, "lost": 0, "truncated": 0,
                               "shed_exchanges": 0, "workers": [], "method": "", "hosts": {},
                               "sample_one_in": 1}
        for label, st in self._stats.items():
            out["ts"] = max(out["ts"], float(st.get("ts", 0.0) or 0.0))
            for key in ("requests", "events", "lost", "truncated", "shed_exchanges"):
                out[key] += int(st.get(key, 0) or 0)
            out["sample_one_in"] = max(out["sample_one_in"], int(st.get("sample_one_in", 1) or 1))
            out["workers"] += list(st.get("workers", []) or [])
            out["method"] = out["method"] or st.get("method", "")
            out["hosts"][label] = st
        return out

    def host_of(self, ex: Exchange) -> str:
        """The host an exchange came from ("" when unknown): for a Host column."""
        return self._host_by_id.get(ex.id, "")

    def describe(self) -> str:
        return f"{len(self.sources)} remote hosts: " + ", ".join(s.spec.label for s in self.sources)

    def alive(self) -> bool:
        return any(s.alive() for s in self.sources)

    def error(self) -> str | None:
        if self.alive():
            return None
        errors = [e for e in (s.error() for s in self.sources) if e]
        return "; ".join(errors) or None


def remote_source(specs: Sequence[RemoteSpec]) -> RemoteStreamSource | MultiHostSource:
    """One host: its `RemoteStreamSource`; several: a `MultiHostSource`."""
    sources = [RemoteStreamSource(s) for s in specs]
    return sources[0] if len(sources) == 1 else MultiHostSource(sources)
