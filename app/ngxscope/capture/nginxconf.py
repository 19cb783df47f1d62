"""What the running nginx's configuration says about upstream groups and server blocks.

Read-only: the configuration file the master was started with (its `-c`, else the
binary's compiled-in path) is parsed with crossplane, includes followed. nginx is never
run, signalled or changed. If the file changed on disk since the last reload, what is read
is the new text: the names may be ahead of what the workers run (said in `note`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from typing import Any

from ngxscope.capture.locations import Location, LocationTree, build_tree, normalize_uri

__all__ = ["ConfigMap", "ServerBlock", "compiled_conf_path", "config_for_master", "config_path_of", "load_config"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServerBlock:
    """One `server { }` block of the http context."""

    label: str
    """How it is shown: its first server_name, else its first listen address."""
    listens: list[tuple[str, int, bool]] = field(default_factory=list)
    """(address or "*", port, default_server) per `listen`."""
    names: list[str] = field(default_factory=list)
    """Its server_name values."""
    tree: LocationTree | None = None
    """Its locations, for nginx's choice of one per request."""


@dataclass(slots=True)
class ConfigMap:
    """Peer → upstream group, and (local address, Host) → server block."""

    path: str = ""
    groups: dict[str, list[str]] = field(default_factory=dict)
    """Peer "ip:port" (as $upstream_addr prints it) → the upstream groups listing it."""
    tries: dict[str, int] = field(default_factory=dict)
    """`upstream NAME { }` → how many peers nginx tries for a request at most: its servers'
    addresses that are not `down`, backups included (nginx's ngx_http_upstream_tries)."""
    locations: list[tuple[str, str, str]] = field(default_factory=list)
    """(modifier, pattern, proxied group or address) of each location that proxies."""
    servers: list[ServerBlock] = field(default_factory=list)
    error_logs: list[str] = field(default_factory=list)
    """Absolute paths of the `error_log` files (any context), in order of appearance."""
    note: str = ""

    def group_of(self, addr: str, path: str = "") -> str | None:
        """The group of a peer; when several groups list it, the one the path's location uses."""
        names = self.groups.get(addr)
        if not names:
            return None
        if len(names) == 1 or not path:
            return names[0]
        chosen = self._location_target(path)
        return chosen if chosen in names else names[0]

    def _location_target(self, path: str) -> str | None:
        """nginx's location choice, simplified: exact, then longest prefix (^~ wins), then regex."""
        best: tuple[int, str, str] | None = None
        for mod, pattern, target in self.locations:
            if mod == "=" and path == pattern:
                return target
            if mod in ("", "^~") and path.startswith(pattern) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), mod, target)
        if best is not None and best[1] == "^~":
            return best[2]
        for mod, pattern, target in self.locations:
            if mod in ("~", "~*"):
                try:
                    if re.search(pattern, path, re.IGNORECASE if mod == "~*" else 0):
                        return target
                except re.error:
                    continue
        return best[2] if best else None

    def server_of(self, local: str, host: str) -> str | None:
        """The server block nginx chose: by listen address/port, then server_name, then default."""
        block = self.block_of(local, host)
        return block.label if block is not None else None

    def location_of(self, block: ServerBlock | None, path: str,
                    attempts: list[tuple[str, int | None]] | None = None) -> str | None:
        """The label of the location of `block` that served `path` (internal redirects
        followed where the upstream `attempts`, (peer, status) in order, show them)."""
        loc = self.resolve(block, path, attempts)
        return loc.label if loc is not None else None

    def resolve(self, block: ServerBlock | None, path: str,
                attempts: list[tuple[str, int | None]] | None = None) -> Location | None:
        """The location itself (see `location_of`)."""
        if "://" in path:  # an absolute-form target: nginx matches its path
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if block is None or block.tree is None or not path.startswith("/"):
            return None
        return block.tree.resolve(normalize_uri(path), attempts or (), self.groups)

    def locate(self, block: ServerBlock | None, path: str, attempts: list[tuple[str, int | None]],
               nginx_label: str | None = None, from_nginx: bool = False) -> tuple[Location | None, str | None]:
        """(location, how it was known): the one nginx named from its memory (`from_nginx`,
        its label `nginx_label`; None: the server level) when this configuration has it,
        "nginx"; else nginx's choice repeated on the configuration, "config"."""
        if from_nginx and block is not None and block.tree is not None:
            if nginx_label is None:
                return None, None
            found = block.tree.find(nginx_label, prefer=lambda: self.resolve(block, path, attempts))
            if found is not None:
                return found, "nginx"
        loc = self.resolve(block, path, attempts)
        return loc, "config" if loc is not None else None

    def nolive_group(self, loc: Location | None, status: int | None, tried: int, last_failed: bool,
                     method: str = "GET") -> str | None:
        """The name nginx logs as the last `$upstream_addr` (status 502) when it found no live
        peer ("no live upstreams": every peer down, failed or at max_conns) and so made an
        attempt the capture cannot see: the group `loc` proxies to, or None. `tried`: the
        attempts seen; `last_failed`: the last one got nothing from its peer (an error or a
        timeout, which proxy_next_upstream passes to the next peer by default)."""
        if status != 502 or loc is None or loc.proxy is None or loc.proxy not in self.tries:
            return None  # a peer named directly is a single peer: nginx never finds it busy
        if tried == 0:
            return loc.proxy
        tries = self.tries[loc.proxy]
        limit = loc.inherited("next_upstream_tries")
        if limit:
            tries = min(tries, limit)
        nxt = loc.inherited("next_upstream") or ["error", "timeout"]
        if not last_failed or tried >= tries or "off" in nxt or not {"error", "timeout"} & set(nxt):
            return None
        if method in ("POST", "LOCK", "PATCH") and "non_idempotent" not in nxt:
            return None  # nginx passes a non-idempotent request to no second peer
        return loc.proxy

    def unix_listener(self, prefix: str) -> str | None:
        """The one http `listen unix:PATH` that begins with `prefix` ("unix:/run/ng"): a
        listener path cut where the probes stopped copying, completed from the configuration
        when other bound sockets share the prefix. None: none or several."""
        found = {a for sb in self.servers for a, _p, _d in sb.listens if a.startswith("unix:") and a.startswith(prefix)}
        return found.pop() if len(found) == 1 else None

    def block_of(self, local: str, host: str) -> ServerBlock | None:
        """The server block nginx chose (see `server_of`)."""
        if local.startswith("unix:"):  # a unix listener: its path, no port
            addr, port = local, 0
        else:
            try:
                addr, port_s = local.rsplit(":", 1)
                port = int(port_s)
            except ValueError:
                return None
            addr = addr.strip("[]")
        host = host.split(":", 1)[0].lower() if host else ""
        candidates = [s for s in self.servers
                      if any(p == port and (a in ("*", "0.0.0.0", "::") or a == addr) for a, p, _ in s.listens)]
        if not candidates:
            return None
        for s in candidates:
            if host and host in (n.lower() for n in s.names):
                return s
        for s in candidates:
            for n in s.names:
                if n.startswith("*.") and host.endswith(n[1:].lower()):
                    return s
                if n.startswith("~") and host and _search(n[1:], host):
                    return s
        for s in candidates:
            if any(d for a, p, d in s.listens if p == port):
                return s
        return candidates[0]


def _search(pattern: str, text: str) -> bool:
    """A server_name regex (PCRE) on `text`; one Python cannot compile (\\Q…\\E, …) matches
    nothing rather than stopping the capture."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def config_path_of(cmdline: str, binary_conf_path: str = "/etc/nginx/nginx.conf") -> tuple[str, str]:
    """(config file, prefix) from a master's title "nginx: master process /usr/sbin/nginx -p P -c C"."""
    text = cmdline.split("master process", 1)[-1].strip()
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    conf, prefix = "", ""
    for i, w in enumerate(words[:-1]):
        if w == "-c":
            conf = words[i + 1]
        elif w == "-p":
            prefix = words[i + 1]
    if not conf:
        conf = binary_conf_path
    elif prefix and not os.path.isabs(conf):
        conf = os.path.join(prefix, conf)
    return conf, prefix


def compiled_conf_path(binary: str) -> str:
    """The configuration path built into an nginx binary (its `--conf-path`), read from the file."""
    try:
        with open(binary, "rb") as fh:
            data = fh.read()
    except OSError:
        return "/etc/nginx/nginx.conf"
    m = re.search(rb"--conf-path=([^\s'\x00]+)", data)
    if m:
        return m.group(1).decode("utf-8", "replace")
    m = re.search(rb"--prefix=([^\s'\x00]+)", data)
    return (m.group(1).decode("utf-8", "replace") if m else "/usr/local/nginx") + "/conf/nginx.conf"


def config_for_master(pid: int, binary: str) -> ConfigMap:
    """The configuration a running master was started with, parsed."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\x00", b" ").decode("utf-8", "replace").strip()
    except OSError as exc:
        return ConfigMap(note=f"cannot read the command line of {pid}: {exc.strerror}")
    path, _prefix = config_path_of(cmdline, compiled_conf_path(binary))
    cmap = load_config(path)
    for sb in cmap.servers:  # try_files looks for files as the master sees them
        if sb.tree is not None:
            sb.tree.fs_root = f"/proc/{pid}/root"
    return cmap


def _norm_addr(text: str, default_port: int = 80) -> list[str]:
    """An upstream `server` / proxy_pass address → the "ip:port" forms nginx will print."""
    if text.startswith("unix:"):
        return [text]
    host, _, port_s = text.rpartition(":") if re.search(r":\d+$", text) else (text, "", "")
    port = int(port_s) if port_s else default_port
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        return [f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    out = []
    for family, _, _, _, sockaddr in infos:
        out.append(f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{port}")
    return sorted(set(out))


def _listen(args: list[str]) -> tuple[str, int, bool]:
    spec = args[0] if args else "80"
    default = "default_server" in args or "default" in args
    if spec.startswith("unix:"):
        return spec, 0, default
    if re.fullmatch(r"\d+", spec):
        return "*", int(spec), default
    host, _, port_s = spec.rpartition(":")
    if not host:
        return spec.strip("[]"), 80, default
    return host.strip("[]") if host != "*" else "*", int(port_s) if port_s.isdigit() else 80, default


_PASS = ("proxy_pass", "grpc_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass")


def _pass_target(url: str) -> str:
    return re.sub(r"^[a-z]+://", "", url).split("/", 1)[0]


def _inline(block: list[dict[str, Any]], configs: list[dict[str, Any]], depth: int) -> list[dict[str, Any]]:
    """`block` with every `include` replaced by the directives of the files it names, as nginx
    reads them in place (crossplane parses each file on its own and names them by index)."""
    out: list[dict[str, Any]] = []
    for d in block:
        if d.get("directive") == "include" and "includes" in d and depth < 16:
            for idx in d["includes"]:
                if 0 <= idx < len(configs):
                    out += _inline(configs[idx].get("parsed", []), configs, depth + 1)
            continue
        if d.get("block") is not None:
            d = {**d, "block": _inline(d["block"], configs, depth)}
        out.append(d)
    return out


def _walk(blocks: list[dict[str, Any]], cmap: ConfigMap, http: list[dict[str, Any]] | None = None) -> None:
    for d in blocks:
        name, args, block = d.get("directive"), d.get("args", []), d.get("block")
        if name == "upstream" and block is not None and args:
            cmap.tries.setdefault(args[0], 0)
            for s in block:
                if s.get("directive") == "server" and s.get("args"):
                    addrs = _norm_addr(s["args"][0])
                    if "down" not in s["args"][1:]:
                        cmap.tries[args[0]] += max(1, len(addrs))  # nginx resolved it
                    for addr in addrs:
                        names = cmap.groups.setdefault(addr, [])
                        if args[0] not in names:
                            names.append(args[0])
        elif name == "server" and block is not None and d.get("_ctx") == "http":
            sb = ServerBlock(label="")
            for s in block:
                if s.get("directive") == "listen":
                    sb.listens.append(_listen(s.get("args", [])))
                elif s.get("directive") == "server_name":
                    sb.names += [n for n in s.get("args", []) if n]
            if not sb.listens:
                sb.listens.append(("*", 80, False))
            named = [n for n in sb.names if n not in ("_", "")]
            first = sb.listens[0]
            sb.label = named[0] if named else f"{first[0]}:{first[1]}"
            sb.tree = build_tree(block, _PASS, http_block=http)
            cmap.servers.append(sb)
        elif name == "location" and block is not None and args:
            mod, pattern = (args[0], args[1]) if len(args) > 1 else ("", args[0])
            for s in block:
                if s.get("directive") in _PASS and s.get("args"):
                    cmap.locations.append((mod, pattern, _pass_target(s["args"][0])))
        elif name == "error_log" and args and args[0].startswith("/") and args[0] not in cmap.error_logs:
            cmap.error_logs.append(args[0])
        elif name in _PASS and args:
            target = _pass_target(args[0])
            if "$" not in target:
                for addr in _norm_addr(target):
                    names = cmap.groups.setdefault(addr, [])
                    if not names:
                        names.append(target)
        if block is not None:
            for child in block:
                child["_ctx"] = "http" if name == "http" else (d.get("_ctx") or name)
            _walk(block, cmap, block if name == "http" else http)


def load_config(path: str) -> ConfigMap:
    """Parse the configuration at `path` (includes followed); errors become `note`."""
    cmap = ConfigMap(path=path)
    try:
        import crossplane
    except ImportError:
        cmap.note = "crossplane is not installed: upstream group names unavailable"
        return cmap
    try:
        payload = crossplane.parse(path, catch_errors=True, single=False, comments=False, strict=False)
    except (OSError, ValueError) as exc:
        cmap.note = f"cannot read {path}: {exc}"
        return cmap
    configs = payload.get("config", [])
    if configs:
        _walk(_inline(configs[0].get("parsed", []), configs, 0), cmap)
    errors = payload.get("errors") or []
    if errors:
        cmap.note = f"{path}: {errors[0].get('error', 'parse error')}"
    return cmap
