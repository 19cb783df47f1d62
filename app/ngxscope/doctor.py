"""`ngxscope doctor`: can this machine capture, and how — one screen for a bug report.

Only reads: /proc, /sys, the kernel config, the nginx binaries (as `list` does). Nothing is
loaded into the kernel and nothing is created (kernel-header links are made by a capture,
not here), so it gives the same answer as root or as a user, except for what the user may
not read, which it says.
"""

from __future__ import annotations

import glob
import gzip
import os
import platform
import pwd
import sys
from dataclasses import asdict, dataclass

from . import __version__
from .capture.procs import find_instances
from .helper import HELPER_PATH, INSTALL_PREFIX, POLKIT_ACTION

__all__ = ["Check", "as_dicts", "format_report", "main_exit_code", "run_checks", "run_doctor"]

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
POLICY_PATH = f"/usr/share/polkit-1/actions/{POLKIT_ACTION}.policy"
TRACEPOINTS = ("syscalls/sys_enter_recvfrom", "syscalls/sys_exit_writev",
               "syscalls/sys_enter_sendfile64", "syscalls/sys_enter_connect",
               "sched/sched_process_fork", "sched/sched_process_exit")
"""A sample of the tracepoints the capture attaches to (bpf/*.c TRACEPOINT_PROBE)."""
CAPS = {"CAP_BPF": 39, "CAP_PERFMON": 38, "CAP_SYS_ADMIN": 21, "CAP_SYS_PTRACE": 19,
        "CAP_DAC_READ_SEARCH": 2}
"""Capabilities a capture (bcc: BPF, PERFMON, SYS_ADMIN) or reading another user's nginx
binary (SYS_PTRACE, DAC_READ_SEARCH) needs."""
KCONFIG = (
    ("BPF_SYSCALL", FAIL, "the bpf(2) system call"),
    ("BPF_EVENTS", FAIL, "BPF programs on uprobes and tracepoints"),
    ("UPROBES", FAIL, "uprobes: the probes on nginx's functions"),
    ("UPROBE_EVENTS", WARN, "uprobe events in tracefs"),
    ("TRACEPOINTS", FAIL, "tracepoints (fork/exit of workers)"),
    ("FTRACE_SYSCALLS", WARN, "syscall tracepoints (without: slower uprobe pairs for plaintext I/O)"),
    ("DEBUG_INFO_BTF", WARN, "BTF type information"),
    ("KPROBES", INFO, "kprobes (not needed by ngxscope)"),
)


@dataclass(slots=True)
class Check:
    """One line of the report."""

    section: str
    """"ngxscope", "kernel", "privileges", "bcc" or "nginx"."""
    name: str
    """What was checked."""
    status: str
    """OK, WARN, FAIL or INFO."""
    detail: str
    """What was found (one line)."""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def kernel_config(release: str | None = None) -> dict[str, str] | None:
    """The running kernel's build options (CONFIG_X=... without the prefix), or None."""
    release = release or platform.release()
    text = _read(f"/boot/config-{release}")
    if text is None:
        try:
            with gzip.open("/proc/config.gz", "rt", encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line[len("CONFIG_"):].split("=", 1)
            out[key] = value
    return out


def _install_checks() -> list[Check]:
    packaged = os.path.realpath(sys.prefix) == INSTALL_PREFIX
    where = f"Debian package ({INSTALL_PREFIX})" if packaged else f"venv/checkout ({sys.prefix})"
    wayland, x11 = os.environ.get("WAYLAND_DISPLAY"), os.environ.get("DISPLAY")
    return [
        Check("ngxscope", "version", INFO, f"ngxscope {__version__} from {where}"),
        Check("ngxscope", "python", INFO, f"{platform.python_version()} ({sys.executable})"),
        Check("ngxscope", "display", INFO,
              f"Wayland ({wayland})" if wayland else f"X11 ({x11})" if x11
              else "none: the window needs a desktop session (record/list/stats work without)"),
    ]


def _kernel_checks() -> list[Check]:
    release = platform.release()
    checks = [Check("kernel", "release", INFO, f"{release} {platform.machine()}")]
    config = kernel_config(release)
    if config is None:
        checks.append(Check("kernel", "config", WARN,
                            "no /boot/config-RELEASE or /proc/config.gz: build options unknown"))
    else:
        for opt, severity, what in KCONFIG:
            value = config.get(opt)
            if value in ("y", "m"):
                checks.append(Check("kernel", f"CONFIG_{opt}", OK, f"{value}: {what}"))
            else:
                checks.append(Check("kernel", f"CONFIG_{opt}", severity, f"not set: {what}"))
    btf = "/sys/kernel/btf/vmlinux"
    checks.append(Check("kernel", "BTF", OK, f"{btf} ({os.path.getsize(btf) // 1024} KiB)")
                  if os.path.exists(btf) else Check("kernel", "BTF", WARN, f"no {btf}"))
    pmu = _read("/sys/bus/event_source/devices/uprobe/type")
    checks.append(Check("kernel", "uprobe PMU", OK, f"perf event type {pmu.strip()}") if pmu
                  else Check("kernel", "uprobe PMU", FAIL, "no /sys/bus/event_source/devices/uprobe"))
    kprobe = os.path.exists("/sys/bus/event_source/devices/kprobe")
    checks.append(Check("kernel", "kprobe PMU", INFO, "present" if kprobe else "absent (not needed)"))
    checks += _tracefs_checks()
    for name, path in (("unprivileged_bpf_disabled", "/proc/sys/kernel/unprivileged_bpf_disabled"),
                       ("perf_event_paranoid", "/proc/sys/kernel/perf_event_paranoid")):
        value = _read(path)
        checks.append(Check("kernel", f"kernel.{name}", INFO, value.strip() if value else "unreadable"))
    lockdown = _read("/sys/kernel/security/lockdown")
    if lockdown and "[none]" not in lockdown:
        checks.append(Check("kernel", "lockdown", WARN, f"{lockdown.strip()} (may forbid reading nginx memory)"))
    checks.append(_headers_check(release))
    return checks


def _tracefs_checks() -> list[Check]:
    mounts = _read("/proc/mounts") or ""
    mounted = [d for d in TRACEFS_DIRS if any(
        f" {d} tracefs " in line or f" {d} debugfs " in line for line in mounts.splitlines())]
    if not mounted:
        return [Check("kernel", "tracefs", FAIL,
                      "not mounted: mount -t tracefs nodev /sys/kernel/tracing (as root)")]
    out = [Check("kernel", "tracefs", OK, f"mounted at {mounted[0]}")]
    events = os.path.join(mounted[0], "events")
    if not os.access(events, os.R_OK | os.X_OK):
        out.append(Check("kernel", "tracepoints", INFO,
                         f"{events} is not readable as uid {os.geteuid()} (root only): not checked"))
        return out
    missing = [tp for tp in TRACEPOINTS if not os.path.isdir(os.path.join(events, tp))]
    out.append(Check("kernel", "tracepoints", WARN if missing else OK,
                     f"missing: {', '.join(missing)}" if missing else f"{len(TRACEPOINTS)} checked, all present"))
    return out


def _headers_check(release: str) -> Check:
    """Where bcc will find kernel headers (capture/kheaders.py's order), without linking."""
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(os.path.join(build, "include")):
        real = os.path.realpath(build)
        note = "" if release in os.path.basename(real) else " (nearest Debian headers, not this kernel's own)"
        return Check("kernel", "headers for bcc", OK, f"{build} -> {real}{note}")
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and os.path.isdir(env):
        return Check("kernel", "headers for bcc", OK, f"BCC_KERNEL_SOURCE={env}")
    candidates = sorted(glob.glob("/usr/src/linux-headers-*-amd64"))
    if candidates:
        return Check("kernel", "headers for bcc", WARN,
                     f"none for {release}; a capture links {build} to {candidates[-1]}")
    return Check("kernel", "headers for bcc", FAIL,
                 f"none for {release}: install linux-headers-{release} or linux-headers-amd64")


def effective_caps() -> int:
    """This process's effective capability set (CapEff of /proc/self/status)."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _privilege_checks() -> list[Check]:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    caps = effective_caps()
    held = [name for name, bit in CAPS.items() if caps >> bit & 1]
    checks = [Check("privileges", "user", INFO, f"{user} (uid {uid})"),
              Check("privileges", "capabilities", INFO, ", ".join(held) if held else "none of " + ", ".join(CAPS))]
    direct = uid == 0 or {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"} <= set(held)
    if direct:
        checks.append(Check("privileges", "capture", OK, "this user can capture directly"))
        return checks
    helper = os.access(HELPER_PATH, os.X_OK)
    policy = os.path.exists(POLICY_PATH)
    pkexec = any(os.access(os.path.join(d, "pkexec"), os.X_OK) for d in ("/usr/bin", "/bin"))
    bus = os.path.exists("/run/dbus/system_bus_socket")
    if helper and policy and pkexec and bus:
        checks.append(Check("privileges", "capture", OK,
                            f"through pkexec {HELPER_PATH} (polkit action {POLKIT_ACTION})"))
    else:
        missing = [what for what, ok in (("the capture helper", helper), ("its polkit policy", policy),
                                         ("pkexec", pkexec), ("a system D-Bus (polkitd)", bus)) if not ok]
        checks.append(Check("privileges", "capture", WARN,
                            f"needs root: missing {', '.join(missing)}; run `sudo ngxscope record ...`"))
    return checks


def _bcc_checks() -> list[Check]:
    try:
        import bcc
    except Exception as exc:  # ImportError, or bcc's own failure to load libbcc
        return [Check("bcc", "python module", FAIL,
                      f"cannot import bcc ({type(exc).__name__}: {exc}): install python3-bpfcc")]
    where = os.path.dirname(os.path.realpath(bcc.__file__ or ""))
    return [Check("bcc", "python module", OK, f"bcc {getattr(bcc, '__version__', '?')} ({where})")]


def _nginx_checks() -> list[Check]:
    instances = find_instances()
    if not instances:
        return [Check("nginx", "processes", INFO, "no nginx running")]
    out = []
    for inst in instances:
        exe = inst.master.exe or "?"
        if inst.capture_method:
            out.append(Check("nginx", inst.label, OK, f"{inst.capture_method} ({exe})"))
        else:
            out.append(Check("nginx", inst.label, WARN, f"no capture: {inst.capture_reason}"))
    return out


def run_checks() -> list[Check]:
    """Every check, in report order."""
    return [*_install_checks(), *_kernel_checks(), *_privilege_checks(), *_bcc_checks(), *_nginx_checks()]


def format_report(checks: list[Check]) -> str:
    """The checks as aligned text, one line each, grouped by section."""
    width = min(34, max(len(c.name) for c in checks))
    lines: list[str] = []
    section = ""
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"{'' if not lines else chr(10)}[{section}]")
        name = c.name if len(c.name) <= width else c.name[: width - 1] + "…"
        lines.append(f"  {c.status:<4}  {name:<{width}}  {c.detail}")
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    lines.append(f"\n{fails} failed, {warns} warnings")
    return "\n".join(lines)


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    """The checks as JSON-ready dicts (`doctor --json`)."""
    return [asdict(c) for c in checks]


def main_exit_code(checks: list[Check]) -> int:
    """0 when nothing failed, 1 otherwise (a capture cannot work here)."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def run_doctor(*, json_output: bool = False) -> int:
    """`ngxscope doctor [--json]`: print the report; exit 1 when a capture cannot work here."""
    checks = run_checks()
    if json_output:
        import json

        print(json.dumps({"version": __version__, "checks": as_dicts(checks)}, indent=2))
    else:
        print(format_report(checks))
    return main_exit_code(checks)
