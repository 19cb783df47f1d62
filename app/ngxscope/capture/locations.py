"""Which `location { }` block of a server served a request, chosen the way nginx chooses.

nginx (ngx_http_core_find_location) matches the normalised URI against a server's
locations: an exact `=` location that equals it wins at once; otherwise the longest
matching prefix is remembered and its nested locations searched; unless that prefix is
`^~`, the regex locations (`~`, `~*`) of the level are then tried in configuration order
and the first that matches wins (its own nested locations searched too); with none, the
remembered prefix serves.

Internal redirects change the location after that first match. The capture sees what
crossed the sockets, so a redirect is followed where it left a trace:

- `try_files ... @named` / `... /uri`: the fallback is taken when the request went to an
  upstream that only the fallback proxies to, or (no upstream involved) when none of the
  files exists under the location's `root` (read through /proc/PID/root when given);
- `error_page CODE ... @named | /uri`: taken when the location proxies with
  `proxy_intercept_errors on` and its last upstream attempt answered CODE, or when its
  `return CODE` is such a code.

`rewrite` and `if` are not followed here (nginx evaluates them on variables the capture does
not know); a request they moved is attributed to the location its URI matched first. Where
the capture reads the location nginx chose from its memory (the request's loc_conf at its
end, bpf/capture.c), that wins and `LocationTree.find` names it in this tree: rewrites, `if`
and every internal redirect are then nginx's own; this matcher is the fallback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

__all__ = ["Location", "LocationTree", "build_tree", "normalize_uri"]

_MAX_REDIRECTS = 10
"""nginx gives up after 10 internal redirects (NGX_HTTP_MAX_URI_CHANGES)."""


@dataclass(slots=True)
class Location:
    """One `location` block (or, with modifier "server", a server block's top level)."""

    modifier: str
    """"", "=", "^~", "~", "~*", "@" (named); "server" for the tree's root, "http" for the
    http block above it."""
    pattern: str
    """The URI prefix, exact URI, regex, or the name after "@"."""
    parent: Location | None = None
    """The enclosing location (None for the root)."""
    children: list[Location] = field(default_factory=list)
    """Nested locations in configuration order."""
    proxy: str | None = None
    """What its proxy_pass (or grpc_pass, fastcgi_pass...) names: an upstream group or address."""
    try_files: list[str] = field(default_factory=list)
    """Its try_files arguments (not inherited, as in nginx)."""
    error_pages: dict[int, str] | None = None
    """error_page code → target; None when not set here (then inherited)."""
    intercept: bool | None = None
    """proxy_intercept_errors; None when not set here (then inherited)."""
    returns: int | None = None
    """The code of its `return` directive, when it has one."""
    root: str | None = None
    """Its `root` (None: inherited)."""
    cache: str | None = None
    """Its proxy_cache zone ("off" when switched off here; None: inherited)."""
    limit_req: list[str] | None = None
    """The zones of its limit_req directives (None: inherited, as nginx inherits them)."""
    limit_conn: list[str] | None = None
    """The zones of its limit_conn directives (None: inherited)."""
    limit_req_status: int | None = None
    """limit_req_status (None: inherited; nginx's default 503)."""
    limit_conn_status: int | None = None
    """limit_conn_status (None: inherited; nginx's default 503)."""
    cache_valid: list[tuple[frozenset[int] | None, int]] | None = None
    """proxy_cache_valid as (statuses, seconds); statuses None for `any` (None: inherited)."""
    cache_bypass: list[str] | None = None
    """proxy_cache_bypass's values (None: inherited)."""
    cache_use_stale: list[str] | None = None
    """proxy_cache_use_stale's arguments (None: inherited)."""
    limit_keys: dict[str, str] | None = None
    """limit_req_zone / limit_conn_zone: zone name → its key ("$binary_remote_addr"); set on
    the http level, where nginx declares them."""
    cache_key: str | None = None
    """proxy_cache_key (None: inherited; nginx's default $scheme$proxy_host$request_uri)."""
    next_upstream: list[str] | None = None
    """proxy_next_upstream's arguments (None: inherited; nginx's default "error timeout")."""
    next_upstream_tries: int | None = None
    """proxy_next_upstream_tries (None: inherited; 0, nginx's default, is no limit)."""
    regex: re.Pattern[str] | None = None
    """The compiled pattern of a regex location (None when Python cannot compile it)."""
    memo: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """What `inherited` found, by directive, once the tree is built (`LocationTree.index`):
    naming asks the same few directives of the same few locations for every exchange.
    None while the tree is still being built (no memo)."""

    @property
    def label(self) -> str:
        """How the location is named in the window, filters and metrics: "= /x", "~ \\.php$",
        "/api/", "@backend"."""
        if self.modifier == "@":
            return "@" + self.pattern
        return f"{self.modifier} {self.pattern}" if self.modifier else self.pattern

    def inherited(self, name: str) -> Any:
        memo = self.memo
        if memo is not None:
            try:
                return memo[name]
            except KeyError:
                value = memo[name] = self._inherited(name)
                return value
        return self._inherited(name)

    def _inherited(self, name: str) -> Any:
        node: Location | None = self
        while node is not None:
            value = getattr(node, name)
            if value is not None:
                return value
            node = node.parent
        return None


def _compile(modifier: str, pattern: str) -> re.Pattern[str] | None:
    # PCRE's named groups (?<n>...) are Python's (?P<n>...)
    py = re.sub(r"\(\?<([A-Za-z_]\w*)>", r"(?P<\1>", pattern)
    try:
        return re.compile(py, re.IGNORECASE if modifier == "~*" else 0)
    except (re.error, OverflowError, RecursionError):
        return None


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}


def _seconds(text: str) -> int | None:
    """An nginx time ("10m", "1h30m", "90") in whole seconds (None: not a time)."""
    total = 0.0
    for num, unit in re.findall(r"(\d+)(ms|[smhdwMy]?)", text):
        total += int(num) * _UNITS.get(unit or "s", 1)
    return int(total) if re.fullmatch(r"(\d+(ms|[smhdwMy])?)+", text) else None


def normalize_uri(path: str) -> str:
    """The URI as nginx matches it ($uri): percent-decoded, `//` merged, `.`/`..` resolved."""
    uri = unquote(path.split("?", 1)[0], errors="surrogateescape")
    if not uri.startswith("/"):
        return uri
    uri = re.sub(r"/{2,}", "/", uri)
    if "/." not in uri:
        return uri
    out: list[str] = []
    parts = uri.split("/")
    for part in parts[1:]:
        if part == "..":
            if out:
                out.pop()
        elif part != ".":
            out.append(part)
    tail = "/" if parts[-1] in (".", "..") else ""
    return "/" + "/".join(out) + (tail if out else "")


def _set_directive(loc: Location, name: str, args: list[str], proxy_directives: Sequence[str]) -> None:
    if name in proxy_directives and args:
        loc.proxy = re.sub(r"^[a-z]+://", "", args[0]).split("/", 1)[0]
    elif name == "try_files" and len(args) >= 2:
        loc.try_files = list(args)
    elif name == "error_page" and len(args) >= 2:
        target = args[-1]
        pages = dict(loc.error_pages or {})
        for code in args[:-1]:
            if code.isdigit():
                pages[int(code)] = target
        loc.error_pages = pages
    elif name == "proxy_intercept_errors" and args:
        loc.intercept = args[0] == "on"
    elif name == "return" and args and args[0].isdigit():
        loc.returns = int(args[0])
    elif name in ("proxy_cache", "fastcgi_cache", "uwsgi_cache", "scgi_cache") and args:
        loc.cache = args[0]
    elif name == "limit_req" and args:
        zone = next((a.split("=", 1)[1] for a in args if a.startswith("zone=")), "?")
        loc.limit_req = [*(loc.limit_req or []), zone]
    elif name == "limit_conn" and args:
        loc.limit_conn = [*(loc.limit_conn or []), args[0]]
    elif name in ("limit_req_status", "limit_conn_status") and args and args[0].isdigit():
        setattr(loc, name, int(args[0]))
    elif name in ("limit_req_zone", "limit_conn_zone") and len(args) >= 2:
        zones = [a[5:].split(":", 1)[0] for a in args if a.startswith("zone=")]
        if zones and zones[0]:
            loc.limit_keys = {**(loc.limit_keys or {}), zones[0]: args[0]}
    elif name in ("proxy_cache_valid", "fastcgi_cache_valid", "uwsgi_cache_valid", "scgi_cache_valid") and args:
        secs = _seconds(args[-1])
        codes = args[:-1] or ["200", "301", "302"]
        which = None if "any" in codes else frozenset(int(c) for c in codes if c.isdigit())
        if secs is not None:
            loc.cache_valid = [*(loc.cache_valid or []), (which, secs)]
    elif name in ("proxy_cache_bypass", "fastcgi_cache_bypass", "uwsgi_cache_bypass", "scgi_cache_bypass"):
        loc.cache_bypass = [*(loc.cache_bypass or []), *args]
    elif name in ("proxy_cache_use_stale", "fastcgi_cache_use_stale", "uwsgi_cache_use_stale",
                  "scgi_cache_use_stale"):
        loc.cache_use_stale = list(args)
    elif name in ("proxy_cache_key", "fastcgi_cache_key", "uwsgi_cache_key", "scgi_cache_key") and args:
        loc.cache_key = args[0]
    elif name in ("proxy_next_upstream", "fastcgi_next_upstream", "uwsgi_next_upstream",
                  "scgi_next_upstream", "grpc_next_upstream") and args:
        loc.next_upstream = list(args)
    elif name in ("proxy_next_upstream_tries", "fastcgi_next_upstream_tries", "uwsgi_next_upstream_tries",
                  "scgi_next_upstream_tries", "grpc_next_upstream_tries") and args and args[0].isdigit():
        loc.next_upstream_tries = int(args[0])
    elif name in ("root", "alias") and args:
        loc.root = args[0] if name == "root" else None


@dataclass(slots=True)
class LocationTree:
    """The locations of one server block, and nginx's choice among them."""

    root: Location
    """The server level: its children are the top-level locations."""
    named: dict[str, Location] = field(default_factory=dict)
    """Named locations (`location @name`) by name."""
    fs_root: str = ""
    """Where nginx's files are seen from here ("/proc/PID/root" for a process in a container)."""
    _by_pattern: dict[str, list[Location]] = field(default_factory=dict)
    _fits: dict[str, list[Location]] = field(default_factory=dict)
    """`find`'s candidates by label (they depend on the tree only; bounded)."""

    # -- the first match ----------------------------------------------------------------------
    def match(self, uri: str) -> Location | None:
        """The location nginx picks for the normalised `uri` (before any internal redirect)."""
        found, _final = self._find(self.root, uri)
        return found if found is not self.root else None

    def _find(self, level: Location, uri: str) -> tuple[Location, bool]:
        """(chosen location, final): final when an exact or regex match ended the search
        (nginx's NGX_OK), not when only a prefix matched (NGX_AGAIN / NGX_DECLINED)."""
        best: Location | None = None
        for loc in level.children:
            if loc.modifier == "=":
                if uri == loc.pattern:
                    return loc, True
            elif (loc.modifier in ("", "^~") and uri.startswith(loc.pattern)
                  and (best is None or len(loc.pattern) > len(best.pattern))):
                best = loc
        chosen = level
        if best is not None:
            chosen, final = self._find(best, uri)
            if final:
                return chosen, True
        if best is None or best.modifier != "^~":
            for loc in level.children:
                if loc.modifier in ("~", "~*") and loc.regex is not None and loc.regex.search(uri):
                    return self._find(loc, uri)[0], True
        return chosen, False

    # -- the location nginx named ---------------------------------------------------------------
    def find(self, label: str, prefer: Callable[[], Location | None] | None = None) -> Location | None:
        """The location of this server that `label` names, as read from nginx's memory
        (capture.reqlog.location_label: "~ REGEX" stands for ~ and ~* alike, a name cut short
        ends in "…"); when several locations have that name (nested ones), the one `prefer()`
        gives (the matcher's choice, asked only then) wins."""
        if label.startswith("@"):
            return self.named.get(label[1:])
        fits = self._fits.get(label)
        if fits is None:
            if len(self._fits) >= 1024:
                self._fits.clear()
            fits = self._fits[label] = self._candidates(label)
        if len(fits) > 1 and prefer is not None:
            chosen = prefer()
            if chosen is not None and chosen in fits:
                return chosen
        return fits[0] if fits else None

    def _candidates(self, label: str) -> list[Location]:
        """The locations `label` (not a named one's) may stand for, the first the default."""
        mod, _, pattern = label.partition(" ") if label[:2] in ("= ", "~ ", "^~") else ("", "", label)
        cut = pattern.endswith("…")
        pattern = pattern[:-1] if cut else pattern
        if cut:
            named = [loc for loc in self._every() if loc.pattern.startswith(pattern)]
        else:
            named = self._by_pattern.get(pattern, [])
        mods: tuple[str, ...] = ("~", "~*") if mod == "~" else (mod,)
        fits = [loc for loc in named if loc.modifier in mods]
        if mod == "":
            # an `if` or `limit_except` block is named as its location but not flagged as it
            # (nginx copies the name only): the location of that name, whatever its modifier;
            # the matcher's choice among several
            anyhow = [loc for loc in named if loc.modifier != "@"]
            fits = fits if len(anyhow) == len(fits) else (anyhow if not fits else [*fits, *anyhow])
        return fits

    def _every(self) -> list[Location]:
        """Every location but the named ones, outer before inner, in configuration order."""
        out: list[Location] = []
        todo = list(self.root.children)
        while todo:
            loc = todo.pop(0)
            out.append(loc)
            todo.extend(loc.children)
        return out

    def index(self) -> None:
        """Index the locations by pattern (for `find`) and let each remember what it
        inherits; call once the tree is built (it is not changed after)."""
        self._by_pattern = {}
        self._fits = {}
        every = self._every()
        for loc in every:
            self._by_pattern.setdefault(loc.pattern, []).append(loc)
        for loc in (self.root, *every, *self.named.values()):
            loc.memo = {}

    # -- internal redirects ---------------------------------------------------------------------
    def resolve(self, uri: str, attempts: Sequence[tuple[str, int | None]] = (),
                peer_groups: dict[str, list[str]] | None = None) -> Location | None:
        """The location that finally served `uri`: the first match, then the internal
        redirects the evidence shows. `attempts` are the upstream attempts in order as (peer
        "ip:port", status); `peer_groups` maps a peer to the upstream groups listing it."""
        groups = peer_groups or {}
        loc = self.match(uri)
        used = 0  # upstream attempts accounted for by the locations passed so far
        for _ in range(_MAX_REDIRECTS):
            if loc is None:
                return None
            mine = used
            while mine < len(attempts) and self._proxies_to(loc, attempts[mine][0], groups):
                mine += 1
            nxt = self._redirect(loc, uri, attempts, used, mine, groups)
            used = mine
            if nxt is None:
                return loc
            loc, uri = nxt
        return loc

    def _proxies_to(self, loc: Location, peer: str, groups: dict[str, list[str]]) -> bool:
        target = loc.proxy
        return target is not None and (target == peer or target in groups.get(peer, ()))

    def _target(self, target: str, uri: str) -> tuple[Location, str] | None:
        if target.startswith("@"):
            named = self.named.get(target[1:])
            return (named, uri) if named is not None else None
        if target.startswith("/"):
            new_uri = normalize_uri(target.replace("$uri", uri))
            found = self.match(new_uri)
            return (found, new_uri) if found is not None else None
        return None

    def _redirect(self, loc: Location, uri: str, attempts: Sequence[tuple[str, int | None]], used: int,
                  mine: int, groups: dict[str, list[str]]) -> tuple[Location, str] | None:
        pages: dict[int, str] = loc.inherited("error_pages") or {}
        if mine > used and loc.inherited("intercept"):
            status = attempts[mine - 1][1]
            if status is not None and status in pages:
                return self._target(pages[status], uri)
        if loc.returns is not None and loc.returns in pages and loc.proxy is None:
            return self._target(pages[loc.returns], uri)
        if loc.try_files and loc.proxy is None:
            fallback = self._target(loc.try_files[-1], uri) if not loc.try_files[-1].startswith("=") else None
            if fallback is None:
                return None
            if used < len(attempts):  # the request went upstream: only the fallback can have sent it
                return fallback if self._proxies_to(fallback[0], attempts[used][0], groups) else None
            if fallback[0].proxy is not None:
                return None  # a proxying fallback would have gone upstream: a file was served
            return None if self._any_file(loc, uri) else fallback
        return None

    def _any_file(self, loc: Location, uri: str) -> bool:
        root = loc.inherited("root") or "html"
        for arg in loc.try_files[:-1]:
            name = arg.replace("$uri", uri)
            if "$" in name:
                return True  # a variable we cannot expand: assume nginx found it
            path = self.fs_root + os.path.join(root, name.lstrip("/"))
            if os.path.isdir(path) if name.endswith("/") else os.path.isfile(path):
                return True
        return False


def build_tree(server_block: list[dict[str, Any]], proxy_directives: Sequence[str],
               server_root: str | None = None, http_block: list[dict[str, Any]] | None = None) -> LocationTree:
    """The location tree of one crossplane-parsed `server { }` block; the directives of its
    `http { }` block (`http_block`) are inherited as nginx inherits them (limit_req,
    limit_conn, proxy_cache..., error_page, root)."""
    http = Location(modifier="http", pattern="")
    for d in http_block or ():
        if d.get("block") is None:
            _set_directive(http, d.get("directive", ""), d.get("args", []), ())
    top = Location(modifier="server", pattern="", root=server_root, parent=http)
    tree = LocationTree(root=top)

    def walk(parent: Location, block: list[dict[str, Any]]) -> None:
        for d in block:
            name, args = d.get("directive", ""), d.get("args", [])
            if name == "location" and d.get("block") is not None and args:
                if len(args) > 1:
                    mod, pattern = args[0], args[1]
                elif args[0].startswith("@"):
                    mod, pattern = "@", args[0][1:]
                else:
                    mod, pattern = "", args[0]
                loc = Location(modifier=mod, pattern=pattern, parent=parent)
                if mod in ("~", "~*"):
                    loc.regex = _compile(mod, pattern)
                if mod == "@":
                    loc.parent = top  # named locations live at the server level
                    tree.named[pattern] = loc
                else:
                    parent.children.append(loc)
                walk(loc, d["block"])
            else:
                _set_directive(parent, name, args, proxy_directives)

    walk(top, server_block)
    tree.index()
    return tree
