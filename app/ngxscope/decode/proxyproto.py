"""The PROXY protocol header a load balancer puts before the client's bytes.

On a ``listen ... proxy_protocol`` socket nginx first reads the header (version 1: a text
line, version 2: a binary block) naming the client the balancer accepted, then the request
(or, with ``ssl``, the TLS handshake). The header is no part of the request: it is taken off
the connection's first bytes and the client it names is reported as nginx's
``$proxy_protocol_addr:$proxy_protocol_port`` (IPv6 in brackets, as ngxscope writes every
address).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["V2_SIGNATURE", "ProxyHeader", "parse_proxy_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes a version 2 header starts with."""

_V1 = re.compile(rb"PROXY (TCP4|TCP6|UNKNOWN)(?: ([0-9a-fA-F.:]+) ([0-9a-fA-F.:]+) (\d+) (\d+))? ?\r\n")
_V1_MAX = 107
"""The longest version 1 line (the specification's bound)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A PROXY protocol header at the start of a connection."""

    length: int
    """Its bytes on the wire."""
    client: str
    """The source it names, "ip:port" or "[ip6]:port" ("" for UNKNOWN / LOCAL)."""
    version: int
    """1 (text) or 2 (binary)."""


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_proxy_header(data: bytes) -> ProxyHeader | bool | None:
    """The header at the start of `data`; None when `data` does not start with one; True
    when it may, but more bytes are needed to tell; False when it starts like one but is
    malformed (nginx closes such connections)."""
    if not data:
        return None
    if data.startswith(b"PROXY"):
        m = _V1.match(data)
        if m is None:
            return b"\n" not in data[:_V1_MAX] and len(data) < _V1_MAX
        client = ""
        if m.group(1) != b"UNKNOWN" and m.group(2):
            try:
                ip = str(ipaddress.ip_address(m.group(2).decode()))
            except ValueError:
                return False
            client = _addr(ip, int(m.group(4)))
        return ProxyHeader(m.end(), client, 1)
    if data.startswith(V2_SIGNATURE):
        if len(data) < 16:
            return True
        ver_cmd, fam = data[12], data[13]
        size = 16 + int.from_bytes(data[14:16], "big")
        if ver_cmd >> 4 != 2:
            return False
        if len(data) < size:
            return True
        body = data[16:size]
        client = ""
        if ver_cmd & 0x0F == 1:  # PROXY (LOCAL: the balancer's own connection, no client)
            if fam >> 4 == 1 and len(body) >= 12:
                client = _addr(str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big"))
            elif fam >> 4 == 2 and len(body) >= 36:
                client = _addr(str(ipaddress.IPv6Address(body[0:16])), int.from_bytes(body[32:34], "big"))
        return ProxyHeader(size, client, 2)
    if V2_SIGNATURE.startswith(data) or b"PROXY".startswith(data):
        return True
    return None
