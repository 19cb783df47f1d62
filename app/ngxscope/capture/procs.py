"""Find the nginx processes running on this machine and group them into instances.

Backs ``ngxscope list``, the attach dialog and ``record``'s preflight. Everything is read from
/proc (through psutil where convenient); processes may vanish at any moment during a scan and
are then silently skipped.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

from ngxscope.capture.binary import BinaryError, BinaryInfo, inspect_binary

__all__ = [
    "NGINX_NAMES",
    "NginxInstance",
    "NginxProcess",
    "TargetError",
    "find_instances",
    "resolve_target",
]

NGINX_NAMES: frozenset[str] = frozenset({"nginx", "openresty", "angie", "tengine", "freenginx"})
"""Executable basenames (and process-title prefixes) that mark a process as nginx-like."""

NOT_NGINX_REASON = "not an nginx process"
_DELETED = " (deleted)"
_CONTROL_FLAGS = frozenset({"-s", "-t", "-T", "-v", "-V", "-h", "-?"})
_TITLE_ROLES: tuple[tuple[str, str], ...] = (
    ("master process", "master"),
    ("worker process", "worker"),
    ("cache manager process", "cache manager"),
    ("cache loader process", "cache loader"),
)
_TCP_LISTEN = "0A"


class TargetError(Exception):
    """The requested PID cannot be used as a capture target (one line, for the user)."""


@dataclass(slots=True)
class NginxProcess:
    """One process of an nginx instance (or, with ``include_all``, any process)."""

    pid: int
    """Process id."""
    ppid: int
    """Parent process id."""
    role: str
    """"master", "worker", "cache manager", "cache loader", "single" or "other"."""
    exe: str
    """Executable path with any " (deleted)" suffix removed ("" when unreadable)."""
    cmdline: str
    """Command line as one string (nginx rewrites it to "nginx: worker process" etc.)."""
    user: str
    """Name (or numeric uid) of the user the process runs as."""
    start_time: float
    """Start time, seconds since the epoch."""
    rss: int
    """Resident set size in bytes (0 when unreadable)."""
    exe_deleted: bool = False
    """True when the executable was replaced or removed since start (binary upgrade)."""
    nginx_like: bool = True
    """True when the exe name, first cmdline word or process title says nginx (or a fork)."""

    @property
    def name(self) -> str:
        """Short name: basename of the executable, else of the first cmdline word."""
        if self.exe:
            return os.path.basename(self.exe)
        first = self.cmdline.split(" ", 1)[0].rstrip(":")
        return os.path.basename(first) or f"pid {self.pid}"


@dataclass(slots=True)
class NginxInstance:
    """An nginx master with its workers, or a standalone process, as one capture target."""

    master: NginxProcess
    """The master (or the single process / orphan worker / other process itself)."""
    workers: list[NginxProcess] = field(default_factory=list)
    """Children of the master: workers, cache manager/loader, other helpers; by PID."""
    binary: BinaryInfo | None = None
    """What the master's executable offers, or None when it could not be inspected."""
    binary_error: str = ""
    """Why :attr:`binary` is None ("" otherwise)."""
    listen: list[str] = field(default_factory=list)
    """TCP listening addresses like "127.0.0.1:8080" or "[::]:443", sorted by port."""
    capture_method: str | None = None
    """Capture method the target supports (e.g. "nginx uprobes"), or None."""
    capture_reason: str = ""
    """Why :attr:`capture_method` is what it is; about the target, never about privileges."""
    is_nginx: bool = True
    """False for the non-nginx processes returned by ``find_instances(include_all=True)``."""

    @property
    def pids(self) -> list[int]:
        """Every PID of the instance, master first."""
        return [self.master.pid, *(w.pid for w in self.workers)]

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of processes that serve requests: the workers, or the master if it has none."""
        serving = [w.pid for w in self.workers if w.role == "worker"]
        return serving or [self.master.pid]

    @property
    def title(self) -> str:
        """Flavor and version (e.g. "nginx 1.22.1"), else the process name."""
        if self.binary is not None and self.binary.flavor:
            return self.binary.description
        return self.master.name

    @property
    def label(self) -> str:
        """One-line summary such as "nginx 1.22.1 (master 123, 2 workers)"."""
        if not self.is_nginx:
            return f"{self.title} (PID {self.master.pid})"
        role = self.master.role
        if role == "master":
            count = sum(1 for w in self.workers if w.role == "worker")
            noun = "worker" if count == 1 else "workers"
            return f"{self.title} (master {self.master.pid}, {count} {noun})"
        if role == "single":
            return f"{self.title} (single process {self.master.pid})"
        return f"{self.title} ({role} {self.master.pid})"


# --------------------------------------------------------------------------- process reading


def _read_cmdline(pid: int) -> tuple[list[str], str]:
    """Return (argv, joined string) from /proc/PID/cmdline; raises OSError if gone."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        raw = fh.read()
    argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0") if a]
    # nginx overwrites argv with its title and pads with NULs or spaces.
    return argv, " ".join(argv).strip()


def _read_exe(pid: int) -> tuple[str, bool]:
    """Return (exe path without " (deleted)", deleted flag); ("", False) when unreadable."""
    try:
        link = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "", False
    if link.endswith(_DELETED):
        return link[: -len(_DELETED)], True
    return link, False


def _classify(argv: list[str], cmdline: str, exe: str) -> str | None:
    """Role of an nginx-like process, or None when the process is not nginx-like."""
    head, sep, rest = cmdline.partition(": ")
    if sep and head in NGINX_NAMES:
        for prefix, role in _TITLE_ROLES:
            if rest.startswith(prefix):
                return role
        return "other"
    first = os.path.basename(argv[0].split(" ", 1)[0]) if argv else ""
    if os.path.basename(exe) in NGINX_NAMES or first in NGINX_NAMES:
        if any(arg in _CONTROL_FLAGS for arg in argv[1:]):
            return "other"  # nginx -t / -s reload / -V: a control command, not a server
        return "single"  # master_process off (or a master before it set its title)
    return None


def _snapshot(proc: psutil.Process, *, only_nginx: bool) -> NginxProcess | None:
    """Read one process; None if it vanished, or if *only_nginx* and it is not nginx-like."""
    pid = proc.pid
    try:
        argv, cmdline = _read_cmdline(pid)
        exe, deleted = _read_exe(pid)
        role = _classify(argv, cmdline, exe)
        if role is None and only_nginx:
            return None
        with proc.oneshot():
            ppid = proc.ppid()
            start = proc.create_time()
            if not cmdline:  # kernel thread or zombie
                cmdline = f"[{proc.name()}]"
            try:
                user = proc.username()
            except (psutil.AccessDenied, KeyError):
                user = str(proc.uids().real)
            try:
                rss = int(proc.memory_info().rss)
            except psutil.AccessDenied:
                rss = 0
    except (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
        return None
    except (psutil.AccessDenied, PermissionError):
        if only_nginx:
            return None
        return NginxProcess(pid, 0, "other", "", "", "?", 0.0, 0, nginx_like=False)
    return NginxProcess(
        pid=pid,
        ppid=ppid,
        role=role or "other",
        exe=exe,
        cmdline=cmdline,
        user=user,
        start_time=start,
        rss=rss,
        exe_deleted=deleted,
        nginx_like=role is not None,
    )


def _scan(*, only_nginx: bool) -> tuple[list[NginxProcess], set[int]]:
    """Snapshot every process; returns (snapshots, PIDs of nginx-like processes)."""
    procs: list[NginxProcess] = []
    nginx_pids: set[int] = set()
    for proc in psutil.process_iter():
        snap = _snapshot(proc, only_nginx=only_nginx)
        if snap is None:
            continue
        procs.append(snap)
        if snap.nginx_like:
            nginx_pids.add(snap.pid)
    return procs, nginx_pids


# --------------------------------------------------------------------------- sockets


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of the sockets held open by *pids* (unreadable processes are skipped)."""
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def _decode_addr(hex_addr: str, family: int) -> str:
    """Format a /proc/net/tcp{,6} "ADDR:PORT" hex field as "ip:port" or "[ip6]:port"."""
    addr_hex, port_hex = hex_addr.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(addr_hex)
    # The kernel prints each 32-bit word in host byte order.
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    packed = struct.pack(f"!{len(words)}I", *words)
    if family == socket.AF_INET:
        return f"{ipaddress.IPv4Address(packed)}:{port}"
    return f"[{ipaddress.IPv6Address(packed).compressed}]:{port}"


def _listen_addresses(pids: list[int]) -> list[str]:
    """TCP LISTEN sockets owned by *pids*, from the first PID's network namespace."""
    inodes = _socket_inodes(pids)
    if not inodes or not pids:
        return []
    found: set[tuple[int, str]] = set()
    for fname, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pids[0]}/net/{fname}") as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != _TCP_LISTEN:
                continue
            try:
                if int(cols[9]) not in inodes:
                    continue
                addr = _decode_addr(cols[1], family)
            except ValueError:
                continue
            found.add((int(addr.rsplit(":", 1)[1]), addr))
    return [addr for _, addr in sorted(found)]


# --------------------------------------------------------------------------- instances


def _binary_path(proc: NginxProcess) -> str:
    """Path to inspect: the exe path if it is still the running file, else /proc/PID/exe."""
    proc_exe = f"/proc/{proc.pid}/exe"
    if proc.exe and not proc.exe_deleted:
        try:
            a, b = os.stat(proc.exe), os.stat(proc_exe)
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                return proc.exe
        except OSError:
            pass
    return proc_exe


def _build_instance(master: NginxProcess, workers: list[NginxProcess]) -> NginxInstance:
    """Inspect the binary and sockets of one nginx instance."""
    inst = NginxInstance(
        master=master, workers=sorted(workers, key=lambda p: p.pid), is_nginx=master.nginx_like
    )
    try:
        inst.binary = inspect_binary(_binary_path(master))
    except BinaryError as exc:
        inst.binary_error = str(exc)
    inst.listen = _listen_addresses(inst.pids)
    if master.nginx_like and master.role == "other":
        inst.capture_reason = f"not a serving nginx process ({master.cmdline})"
    elif inst.binary is None:
        inst.capture_reason = f"cannot inspect binary: {inst.binary_error}"
        if "permission denied" in inst.binary_error and os.geteuid() != 0:
            inst.capture_reason += (f" (nginx runs as {master.user}: `sudo ngxscope list` shows its "
                                    "capture method; the window's capture helper runs as root)")
    else:
        inst.capture_method = inst.binary.method
        inst.capture_reason = inst.binary.method_reason
    return inst


def _group(procs: list[NginxProcess], nginx_pids: set[int]) -> list[NginxInstance]:
    """Group nginx-like snapshots into instances; non-serving leftovers come back last."""
    by_pid = {p.pid: p for p in procs if p.pid in nginx_pids}
    masters = {pid for pid, p in by_pid.items() if p.role == "master"}
    children: dict[int, list[NginxProcess]] = {pid: [] for pid in masters}
    tops: list[NginxProcess] = []
    for p in by_pid.values():
        if p.role == "master":
            tops.append(p)
        elif p.ppid in masters:
            children[p.ppid].append(p)
        else:
            tops.append(p)  # single process, orphan worker, control command
    return [_build_instance(p, children.get(p.pid, [])) for p in sorted(tops, key=lambda p: p.pid)]


def find_instances(include_all: bool = False) -> list[NginxInstance]:
    """Return the nginx instances on this machine, masters with their workers, by PID.

    A worker whose parent is not an nginx master, or a ``master_process off`` nginx, becomes its
    own instance. With *include_all*, nginx control commands (``nginx -s reload``) and every
    other process are appended as instances with ``capture_method=None``.
    """
    procs, nginx_pids = _scan(only_nginx=not include_all)
    instances = _group(procs, nginx_pids)
    serving = [i for i in instances if i.master.role != "other"]
    if not include_all:
        return serving
    control = [i for i in instances if i.master.role == "other"]
    others = [
        NginxInstance(master=p, capture_reason=NOT_NGINX_REASON, is_nginx=False)
        for p in procs
        if p.pid not in nginx_pids
    ]
    return serving + control + others


def resolve_target(pid: int, *, force: bool = False) -> NginxInstance:
    """Return the instance a master or worker *pid* belongs to (a worker gives its master's).

    With *force*, a process that does not look like nginx is accepted as its own instance, with
    its binary inspected (for a renamed nginx); capture still depends on that binary.

    Raises:
        TargetError: no such process, not nginx (without *force*), or unreadable.
    """
    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, ValueError):
        raise TargetError(f"no process with PID {pid}") from None
    snap = _snapshot(proc, only_nginx=False)
    if snap is None:
        raise TargetError(f"no process with PID {pid}")
    if not snap.nginx_like:
        if force:
            return _build_instance(snap, [])
        raise TargetError(
            f"PID {pid} ({snap.name}) is not an nginx process (use --force to attach anyway)"
        )
    if snap.role == "other" and not force:
        raise TargetError(f"PID {pid} ({snap.cmdline}) is an nginx control command, not a server")

    master = snap
    if snap.role not in ("master", "single"):
        try:
            parent = _snapshot(psutil.Process(snap.ppid), only_nginx=True)
        except (psutil.NoSuchProcess, ValueError):
            parent = None
        if parent is not None and parent.role == "master":
            master = parent
    workers: list[NginxProcess] = []
    if master.role == "master":
        try:
            kids = psutil.Process(master.pid).children()
        except psutil.NoSuchProcess:
            raise TargetError(f"PID {master.pid} (nginx master) exited") from None
        for kid in kids:
            child = _snapshot(kid, only_nginx=True)
            if child is not None and child.role != "master":
                workers.append(child)
    return _build_instance(master, workers)


def socket_addresses(pid: int, fd: int) -> tuple[str, str]:
    """(local, remote) "ip:port" of a process's TCP socket, ("", "") when unknown or closed.

    IPv4-mapped IPv6 addresses are shown as IPv4, as nginx prints them.
    """
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return "", ""
    if not link.startswith("socket:["):
        return "", ""
    inode = link[8:-1]
    for fname, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{fname}") as fh:
                for line in fh:
                    cols = line.split()
                    if len(cols) > 9 and cols[9] == inode:
                        return _unmap(_decode_addr(cols[1], family)), _unmap(_decode_addr(cols[2], family))
        except (OSError, ValueError):
            continue
    return "", ""


def _unmap(addr: str) -> str:
    if addr.startswith("[::ffff:") and "." in addr:
        host, port = addr[1:].rsplit("]:", 1)
        return f"{host[7:]}:{port}"
    return addr


def socket_peer(pid: int, fd: int) -> str:
    """Remote "ip:port" of a process's connected TCP socket, or "" (e.g. already closed).

    Used for upstream connections opened before the capture attached, whose connect(2)
    was never seen; keepalive connections live long enough for this to be reliable.
    """
    return socket_addresses(pid, fd)[1]
