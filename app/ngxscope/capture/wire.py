"""The socket filter (bpf/wire.c) on packet sockets: handshake packets of nginx's connections.

`WireCapture` compiles the filter, fills its map with nginx's listening addresses, attaches
it with bcc's `attach_raw_socket` to one packet socket per interface those addresses live on
(loopback always), and reads what it passes: `WirePacket`s, each an Ethernet frame cut in the
kernel, with the kernel's receive time (SO_TIMESTAMPNS).

`WireListen`, `WireFlowKey` and `WireFlow` mirror the structs of bpf/events.h
(tests/capture/test_events_layout.py checks them).
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import select
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .netns import NetnsError, entered
from .packetsock import open_filtered, start_receiving

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "WIRE_ADDR_LEN",
    "WIRE_COUNTERS",
    "WIRE_ESTABLISHED",
    "WIRE_FLOWS",
    "WIRE_HELLO_MAX",
    "WIRE_PASSED",
    "WIRE_RETRANS",
    "WIRE_SEEN",
    "WIRE_SYNACK_SEEN",
    "WIRE_SYN_SEEN",
    "WIRE_TLS_CAP",
    "WireCapture",
    "WireError",
    "WireFlow",
    "WireFlowKey",
    "WireListen",
    "WirePacket",
    "interfaces_for",
    "listen_entries",
    "load_filter",
    "run_filter",
]

WIRE_ADDR_LEN = 16
WIRE_TLS_CAP = 2048
WIRE_HELLO_MAX = 32768
WIRE_FLOWS = 65536
WIRE_SEEN = 0
WIRE_PASSED = 1
WIRE_RETRANS = 2
WIRE_COUNTERS = 3
WIRE_SYN_SEEN = 1
WIRE_SYNACK_SEEN = 2
WIRE_ESTABLISHED = 3

_SIOCGIFFLAGS = 0x8913
_IFF_UP, _IFF_RUNNING = 0x1, 0x40
_SO_TIMESTAMPNS = 35
_SOL_PACKET, _PACKET_IGNORE_OUTGOING = 263, 23
_TIMESPEC = struct.Struct("qq")
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS


class WireError(RuntimeError):
    """The socket filter could not be loaded or attached."""


class WireListen(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint8 * WIRE_ADDR_LEN),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class WireFlowKey(ctypes.Structure):
    _fields_ = [
        ("client", ctypes.c_uint8 * WIRE_ADDR_LEN),
        ("server", ctypes.c_uint8 * WIRE_ADDR_LEN),
        ("client_port", ctypes.c_uint16),
        ("server_port", ctypes.c_uint16),
    ]


class WireFlow(ctypes.Structure):
    _fields_ = [
        ("client_next", ctypes.c_uint32),
        ("server_next", ctypes.c_uint32),
        ("state", ctypes.c_uint8),
        ("closed", ctypes.c_uint8),
        ("hello_left", ctypes.c_uint16),
    ]


@dataclass(slots=True, frozen=True)
class WirePacket:
    """One frame the filter passed."""

    ts: float
    """Unix time the kernel saw it (SO_TIMESTAMPNS)."""
    data: bytes
    """The Ethernet frame as cut by the filter (headers, and TLS records when any)."""
    interface: str
    """The interface it crossed ("lo", "eth0")."""


def _listen_addresses(listen: Iterable[str]) -> Iterator[tuple[str, IPAddress, int]]:
    """(host as written, address, port) of each listening address ("127.0.0.1:8080",
    "[::]:443"); one that does not parse is skipped."""
    for item in listen:
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        try:
            parsed = ipaddress.ip_address(host), int(port)
        except ValueError:
            continue
        yield host, *parsed


def listen_entries(listen: Iterable[str]) -> list[tuple[bytes, int, int]]:
    """(16-byte address, port, family 4/6) per listening address ("127.0.0.1:8080",
    "[::]:443"); a wildcard address becomes all zero bytes."""
    out: list[tuple[bytes, int, int]] = []
    for _host, ip, port in _listen_addresses(listen):
        if ip.is_unspecified:
            raw = bytes(WIRE_ADDR_LEN)
        elif ip.version == 4:
            raw = b"\0" * 10 + b"\xff\xff" + ip.packed
        else:
            raw = ip.packed
        out.append((raw, port, ip.version))
    return out


def _local_addresses() -> dict[str, set[str]]:
    """Interface name -> its IPv4 and IPv6 addresses (getifaddrs: this thread's namespace)."""
    import psutil

    out: dict[str, set[str]] = {}
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.setdefault(name, set()).add(a.address.split("%", 1)[0])
    return out


def _running_interfaces() -> list[str]:
    """Interfaces that are up and running, asked with sockets of this thread's network
    namespace (psutil.net_if_stats reads /proc/net/dev: the process's namespace)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                req = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, struct.pack("16sH14x", name.encode(), 0))
            except OSError:
                continue
            flags = struct.unpack_from("16sH", req)[1]
            if flags & _IFF_UP and flags & _IFF_RUNNING:
                out.append(name)
    return sorted(out)


def interfaces_for(listen: Iterable[str]) -> list[str]:
    """The interfaces nginx's listening addresses live on: loopback always; every interface
    that is up for a wildcard address; the owner of each specific address otherwise."""
    up = _running_interfaces()
    chosen = {"lo"} & set(up)
    local = _local_addresses()
    for host, ip, _port in _listen_addresses(listen):
        if ip.is_unspecified:
            chosen.update(up)
        else:
            chosen.update(n for n, addrs in local.items() if host in addrs and n in up)
    return sorted(chosen)


def _bpf_source() -> tuple[str, str]:
    path = resources.files("ngxscope.bpf").joinpath("wire.c")
    return path.read_text(), os.path.dirname(str(path))


def load_filter(listen: Iterable[str], source: tuple[str, str] | None = None) -> tuple[Any, int]:
    """Compile the socket filter (bpf/wire.c, or `source`: a text and its include directory)
    and fill its address maps for `listen`; returns bcc's BPF object and the program's fd.
    Raises WireError."""
    entries = listen_entries(listen)
    if not entries:
        raise WireError("no TCP listening address to filter on")
    try:
        from bcc import BPF
    except ImportError as exc:
        raise WireError(f"bcc is not importable ({exc})") from None
    text, include = source or _bpf_source()
    try:
        lo = socket.if_nametoindex("lo")
    except OSError:
        lo = 1
    try:
        bpf = BPF(text=text, cflags=[f"-I{include}", f"-DLOOPBACK_IFINDEX={lo}"])
        fn = bpf.load_func("wire_filter", BPF.SOCKET_FILTER)
    except Exception as exc:  # bcc raises bare Exception on compile/load failure
        raise WireError(f"socket filter refused: {exc}") from None
    table = bpf["wire_listen"]
    for raw, port, family in entries:
        key = table.Key()
        ctypes.memmove(ctypes.addressof(key.addr), raw, WIRE_ADDR_LEN)
        key.port = port
        key.family = family
        table[key] = table.Leaf(1)
    words: dict[int, int] = {}
    for _raw, port, _family in entries:
        words[port >> 6] = words.get(port >> 6, 0) | 1 << (port & 63)
    ports = bpf["wire_ports"]
    for word, bits in words.items():
        ports[ctypes.c_int(word)] = ctypes.c_uint64(bits)
    return bpf, int(fn.fd)


_SYS_BPF, _BPF_PROG_TEST_RUN = 321, 10   # x86-64


class _TestRunAttr(ctypes.Structure):
    """union bpf_attr for BPF_PROG_TEST_RUN (linux/bpf.h)."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32 * 8)]


def run_filter(prog_fd: int, frame: bytes, repeat: int = 1) -> tuple[int, float]:
    """The kernel runs the loaded filter on one frame `repeat` times (BPF_PROG_TEST_RUN):
    (bytes it keeps, mean ns per run). A test run starts past an Ethernet header the kernel
    pulls, where a packet socket's starts at it: give the frame a second one in front.
    Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(frame, len(frame))
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(frame), data_in=ctypes.addressof(buf), repeat=repeat)
    if libc.syscall(_SYS_BPF, _BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(attr.retval), float(attr.duration)


class WireCapture:
    """The socket filter on a packet socket per interface; `read` returns what it passed.

    With `netns_pid`, the interfaces are those of that process's network namespace (nginx's)
    and the packet sockets are opened there, whatever namespace the capture runs in."""

    def __init__(self, listen: Iterable[str], interfaces: Iterable[str] | None = None,
                 netns_pid: int | None = None) -> None:
        self.listen = list(listen)
        self.interfaces = list(interfaces) if interfaces is not None else []
        self._auto = interfaces is None
        self.netns_pid = netns_pid
        self.other_netns = False
        """The sockets were opened in nginx's namespace, not the capture's."""
        self.bpf: Any = None
        self._socks: list[socket.socket] = []

    def start(self) -> list[str]:
        """Compile, fill the address map, attach; returns the interfaces. Raises WireError."""
        try:
            with entered(self.netns_pid) as switched:
                self.other_netns = switched
                return self._start()
        except NetnsError as exc:
            self.stop()
            raise WireError(f"cannot enter nginx's network namespace: {exc}") from None

    def _start(self) -> list[str]:
        if self._auto:
            self.interfaces = interfaces_for(self.listen)
        self.bpf, prog_fd = load_filter(self.listen)
        for dev in self.interfaces:
            try:  # the filter and options on before it receives anything (capture.packetsock)
                sock = open_filtered(prog_fd)
                self._socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                if dev == "lo":
                    self._ignore_outgoing(sock)
                sock.setblocking(False)
                start_receiving(sock, dev)
            except OSError as exc:
                self.stop()
                raise WireError(f"cannot attach the socket filter to {dev}: {exc}") from None
        return list(self.interfaces)

    @staticmethod
    def _ignore_outgoing(sock: socket.socket) -> None:
        """On loopback every packet is sent and received on the same interface: its sent
        copy tells nothing its received one does not, and without this option the kernel
        clones each one and runs the filter on it (dev_queue_xmit_nit) only to drop it.
        Kernels before 4.20 lack the option: the filter drops the copy itself."""
        try:
            sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass

    def read(self, timeout: float = 0.05, limit: int = 4096) -> list[WirePacket]:
        """What the filter passed since the last call (waits up to `timeout` for the first)."""
        if not self._socks:
            return []
        ready, _, _ = select.select(self._socks, [], [], timeout)
        out: list[WirePacket] = []
        append, unpack = out.append, _TIMESPEC.unpack_from
        for sock in ready:
            recvmsg = sock.recvmsg
            while len(out) < limit:
                try:
                    data, anc, _flags, addr = recvmsg(65536, 64)
                except (BlockingIOError, InterruptedError):
                    break
                ts = 0.0
                for level, kind, cdata in anc:
                    if kind == _SCM_TIMESTAMPNS and level == socket.SOL_SOCKET and len(cdata) >= 16:
                        sec, nsec = unpack(cdata)
                        ts = sec + nsec / 1e9
                append(WirePacket(ts, data, addr[0]))
        if len(ready) > 1:
            out.sort(key=lambda p: p.ts)
        return out

    def counters(self) -> dict[str, int]:
        """Packets the filter examined, passed, and passed as retransmissions (all CPUs)."""
        if self.bpf is None:
            return {"seen": 0, "passed": 0, "retrans": 0}
        table = self.bpf["wire_counts"]
        vals = [sum(table[ctypes.c_int(i)]) for i in range(WIRE_COUNTERS)]
        return {"seen": vals[WIRE_SEEN], "passed": vals[WIRE_PASSED], "retrans": vals[WIRE_RETRANS]}

    def stop(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks = []
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
