"""Live capture of an nginx on another machine, over SSH (`ngxscope --remote USER@HOST`).

The remote host runs the same capture helper the window runs locally,
`ngxscope record --pid PID --stream` (capture and decoding happen there); its JSON lines
come back over the SSH channel, and the window reads them exactly like a local helper's.
Closing the window closes the channel: the remote helper sees its stdin end and stops.

    ssh -o BatchMode=yes -o ServerAliveInterval=10 ... -p PORT -i KEY user@host \
        ngxscope record --pid PID --stream

No Qt here: `ngxscope.ui.remote` has the dialog and the multi-host source.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RemoteError",
    "RemoteSpec",
    "add_remote_options",
    "instances_json",
    "list_remote",
    "run_remote",
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
    try:
        res = subprocess.run(spec.list_argv(include_all), capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RemoteError("ssh is not installed (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{spec.label}: no answer from `ngxscope list` within {timeout:g} s") from None
    if res.returncode != 0:
        raise RemoteError(f"{spec.label}: {_why(res.returncode, res.stderr)}")
    try:
        data = json.loads(res.stdout)
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
            raise ValueError("no instances")
    except ValueError:
        raise RemoteError(f"{spec.label}: `ngxscope list --json` printed no JSON "
                          f"(an older ngxscope there?): {res.stdout[:120]!r}") from None
    return data


def _why(code: int, stderr: str) -> str:
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


# -- the command line --------------------------------------------------------------------

def add_remote_options(p: argparse.ArgumentParser) -> None:
    """The top-level `--remote` options."""
    p.add_argument("--remote", action="append", metavar="[USER@]HOST[:PORT][/PID]",
                   help="capture nginx on another machine over SSH (repeat for several hosts; "
                        "with `list`: list that host's nginx)")
    p.add_argument("--ssh-key", metavar="PATH", help="SSH private key for --remote")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="extra ssh -o option for --remote (repeatable)")
    p.add_argument("--remote-ngxscope", default="ngxscope", metavar="CMD",
                   help="the ngxscope command on the remote host (default: ngxscope on PATH)")
    p.add_argument("--remote-sudo", choices=["auto", "yes", "no"], default="auto",
                   help="run the remote ngxscope with sudo -n (auto: when USER is not root)")


def specs_from_args(args: argparse.Namespace) -> list[RemoteSpec]:
    sudo = {"yes": True, "no": False}.get(args.remote_sudo)
    specs = []
    for text in args.remote:
        specs.append(RemoteSpec.parse(text, pid=args.pid, key=args.ssh_key, ngxscope=args.remote_ngxscope,
                                      sudo=sudo, ssh_options=tuple(args.ssh_option)))
    return specs


def run_remote(args: argparse.Namespace) -> int:
    """`ngxscope --remote ...`: the window on remote captures, or `list` of a remote host."""
    from .cli import UsageError

    try:
        specs = specs_from_args(args)
    except ValueError as exc:
        raise UsageError(f"--remote: {exc}") from None
    if args.cmd == "list":
        for spec in specs:
            if getattr(args, "json", False):
                print(json.dumps(list_remote(spec, args.all)))
                continue
            res = subprocess.run(ssh_argv(spec, spec.remote_command("list", *(["--all"] if args.all else []))),
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if res.returncode != 0:
                raise RemoteError(f"{spec.label}: {_why(res.returncode, res.stderr)}")
            if len(specs) > 1:
                print(f"== {spec.label} ==")
            sys.stdout.write(res.stdout)
        return 0
    if args.cmd is not None:
        raise UsageError(f"--remote works with the window and with `list`, not with `{args.cmd}`")
    from .gui import no_display_reason

    reason = no_display_reason()
    if reason:
        print(f"ngxscope: {reason}", file=sys.stderr)
        return 2
    if len(specs) > 1:  # several hosts: each needs its nginx now (a dialog per host would stack up)
        specs = [s if s.pid is not None else s.with_pid(choose_pid(s, list_remote(s))) for s in specs]
    from .ui.remote import run_remote_window

    return run_remote_window(specs)
