"""TLS records on the wire, as the socket filter cut them, decoded with dpkt.ssl.

`parse_tls` takes the TCP payload of one segment (TLS records, the last possibly cut at the
filter's cap) and returns what ngxscope needs of each whole message: a ClientHello's SNI,
ALPN, offered versions and cipher suites, ticket / PSK offers; a ServerHello's chosen
version and cipher, ALPN and whether it resumes; alerts. It never raises: dpkt raises its
own errors and also ValueError / OverflowError / struct.error on garbage, so every message is
decoded on its own and a bad one is counted in `TlsParse.errors`.
"""

from __future__ import annotations

import ssl
import struct
from dataclasses import dataclass, field

import dpkt
from dpkt import ssl as dssl
from dpkt import ssl_ciphersuites

__all__ = [
    "ALERTS",
    "ClientHello",
    "ServerHello",
    "TlsAlert",
    "TlsParse",
    "cipher_name",
    "parse_client_flight",
    "parse_tls",
    "version_name",
]

_EXT_SNI = 0
_EXT_ALPN = 16
_EXT_SESSION_TICKET = 35
_EXT_PSK = 41
_EXT_SUPPORTED_VERSIONS = 43

_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))

ALERTS: dict[int, str] = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    30: "decompression_failure", 40: "handshake_failure", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
    50: "decode_error", 51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity",
    116: "certificate_required", 120: "no_application_protocol",
}
"""Alert descriptions by code (RFC 8446 §6 names)."""

_VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def version_name(code: int) -> str:
    """A protocol version as nginx's `$ssl_protocol` prints it ("TLSv1.2")."""
    return _VERSIONS.get(code, f"0x{code:04x}")


def _openssl_names() -> dict[int, str]:
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        return {int(c["id"]) & 0xFFFF: str(c["name"]) for c in ctx.get_ciphers()}
    except (ssl.SSLError, ValueError):
        return {}


_OPENSSL_NAMES = _openssl_names()


def cipher_name(code: int) -> str:
    """A cipher suite as nginx's `$ssl_cipher` prints it (OpenSSL's name,
    "ECDHE-RSA-AES128-GCM-SHA256"); the IANA name when this OpenSSL does not know it."""
    name = _OPENSSL_NAMES.get(code)
    if name:
        return name
    suite = ssl_ciphersuites.BY_CODE.get(code)
    return suite.name if suite is not None else f"0x{code:04x}"


@dataclass(slots=True)
class ClientHello:
    """What a client offered."""

    sni: str | None = None
    """server_name (host_name) extension."""
    alpn: list[str] = field(default_factory=list)
    """Offered application protocols ("h2", "http/1.1")."""
    versions: list[str] = field(default_factory=list)
    """supported_versions, else the hello's own version."""
    cipher_codes: list[int] = field(default_factory=list)
    """Offered cipher suites' codes (GREASE values left out); named by `ciphers` when asked
    (naming them all costs more than the rest of the hello, on the capture's hot path)."""
    session_id: bytes = b""
    """legacy_session_id: a TLS 1.2 resumption offer when the server echoes it."""
    ticket: bool = False
    """A non-empty session_ticket extension (TLS 1.2 ticket resumption offer)."""
    psk: bool = False
    """pre_shared_key extension (TLS 1.3 resumption offer)."""

    @property
    def ciphers(self) -> list[str]:
        """Offered cipher suites by OpenSSL's names."""
        return [cipher_name(c) for c in self.cipher_codes]


@dataclass(slots=True)
class ServerHello:
    """What nginx chose."""

    version: str = ""
    """Negotiated version (supported_versions extension for TLS 1.3)."""
    cipher: str = ""
    """Chosen cipher suite, OpenSSL's name."""
    session_id: bytes = b""
    """legacy_session_id echoed (TLS 1.2: equal to the client's = resumed)."""
    alpn: str | None = None
    """Selected application protocol."""
    psk: bool = False
    """pre_shared_key extension: TLS 1.3 resumption accepted."""


@dataclass(slots=True, frozen=True)
class TlsAlert:
    """An alert record in the clear (before the handshake's keys are in use)."""

    level: int
    """1 warning, 2 fatal."""
    code: int
    """Alert description code."""

    @property
    def name(self) -> str:
        return ALERTS.get(self.code, f"alert {self.code}")


@dataclass(slots=True)
class TlsParse:
    """The decoded messages of one segment."""

    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    alerts: list[TlsAlert] = field(default_factory=list)
    errors: int = 0
    """Records or messages that did not decode (garbage, or cut by the filter)."""


_ERRORS = (dpkt.Error, dssl.SSL3Exception, ValueError, OverflowError, struct.error, IndexError,
           KeyError, TypeError, AttributeError)


def _strings(buf: bytes, lenbytes: int) -> list[str]:
    """A list<..> of 1-byte-length-prefixed strings (ALPN protocol names)."""
    out = []
    data, _n = dssl.parse_variable_array(buf, lenbytes)
    i = 0
    while i < len(data):
        ln = data[i]
        out.append(data[i + 1:i + 1 + ln].decode("ascii", "replace"))
        i += 1 + ln
    return out


def _sni(buf: bytes) -> str | None:
    data, _n = dssl.parse_variable_array(buf, 2)
    i = 0
    while i + 3 <= len(data):
        kind = data[i]
        ln = struct.unpack("!H", data[i + 1:i + 3])[0]
        if kind == 0:
            return data[i + 3:i + 3 + ln].decode("ascii", "replace")
        i += 3 + ln
    return None


def _client_hello(msg: dssl.TLSClientHello) -> ClientHello:
    hello = ClientHello(session_id=bytes(msg.session_id))
    hello.cipher_codes = [c.code for c in msg.ciphersuites if c.code not in _GREASE]
    versions: list[str] = []
    for kind, data in getattr(msg, "extensions", []):
        if kind == _EXT_SNI:
            hello.sni = _sni(data)
        elif kind == _EXT_ALPN:
            hello.alpn = _strings(data, 2)
        elif kind == _EXT_SUPPORTED_VERSIONS:
            raw, _n = dssl.parse_variable_array(data, 1)
            codes = struct.unpack(f"!{len(raw) // 2}H", raw[: len(raw) // 2 * 2])
            versions = [version_name(v) for v in codes if v not in _GREASE]
        elif kind == _EXT_SESSION_TICKET:
            hello.ticket = len(data) > 0
        elif kind == _EXT_PSK:
            hello.psk = True
    hello.versions = versions or [version_name(msg.version)]
    return hello


def _server_hello(msg: dssl.TLSServerHello) -> ServerHello:
    hello = ServerHello(session_id=bytes(msg.session_id), cipher=cipher_name(msg.ciphersuite.code))
    version = msg.version
    for kind, data in getattr(msg, "extensions", []):
        if kind == _EXT_SUPPORTED_VERSIONS and len(data) >= 2:
            version = struct.unpack("!H", data[:2])[0]
        elif kind == _EXT_ALPN:
            names = _strings(data, 2)
            hello.alpn = names[0] if names else None
        elif kind == _EXT_PSK:
            hello.psk = True
    hello.version = version_name(version)
    return hello


def _handshake(body: bytes, out: TlsParse) -> None:
    """The handshake messages of one record's body (whole messages only)."""
    i = 0
    while i + 4 <= len(body):
        kind = body[i]
        length = int.from_bytes(body[i + 1:i + 4], "big")
        if i + 4 + length > len(body):
            if kind in (1, 2):
                out.errors += 1  # a hello cut at the filter's cap or split over segments
            return
        if kind in (1, 2):
            try:
                msg = dssl.TLSHandshake(body[i:i + 4 + length])
                if kind == 1 and out.client_hello is None:
                    out.client_hello = _client_hello(msg.data)
                elif kind == 2 and out.server_hello is None:
                    out.server_hello = _server_hello(msg.data)
            except _ERRORS:
                out.errors += 1
        i += 4 + length


def parse_tls(payload: bytes) -> TlsParse:
    """Decode the TLS records that begin `payload` (never raises)."""
    out = TlsParse()
    i = 0
    while i + 5 <= len(payload):
        ctype, major = payload[i], payload[i + 1]
        if major != 3 or ctype not in (20, 21, 22, 23):
            out.errors += 1
            break
        length = struct.unpack("!H", payload[i + 3:i + 5])[0]
        body = payload[i + 5:i + 5 + length]
        if ctype == 22:
            _handshake(body, out)
        elif ctype == 21 and len(body) == 2 and length == 2:
            out.alerts.append(TlsAlert(level=body[0], code=body[1]))
        i += 5 + length
        if ctype == 20:
            break  # after ChangeCipherSpec everything is encrypted
    return out


def parse_client_flight(buf: bytes) -> TlsParse | None:
    """A client's first handshake flight, as reassembled from its segments: None while its
    first handshake message (the ClientHello) is not complete yet, else what it holds (the
    message may span several handshake records). Never raises."""
    body = bytearray()
    i = 0

    def complete() -> bool:
        return len(body) >= 4 and len(body) >= 4 + int.from_bytes(body[1:4], "big")

    while not complete():
        if i + 5 > len(buf):
            return None  # more to come
        if buf[i] != 22 or buf[i + 1] != 3:
            return TlsParse(errors=1)  # not a handshake record where one should be
        length = struct.unpack("!H", buf[i + 3:i + 5])[0]
        body += buf[i + 5:i + 5 + length]
        i = min(len(buf), i + 5 + length)
    out = TlsParse()
    _handshake(bytes(body[:4 + int.from_bytes(body[1:4], "big")]), out)
    if i < len(buf):  # what follows it in the same segment (an alert, more records)
        out.alerts.extend(parse_tls(buf[i:]).alerts)
    return out
