"""Request paths collapsed into route templates (`/users/{id}`, `/orders/{uuid}/items`).

The heuristic, segment by segment of the path (the query is dropped):

- a user template (`--route '/api/v1/users/{id}'`, or a line of the routes file) that
  matches the whole path wins, first listed first; `{name}` stands for one segment;
- otherwise each segment is kept, except that it becomes
  `{id}` when it is all digits; `{uuid}` for a UUID (8-4-4-4-12 hex digits);
  `{hex}` for 8 or more hex digits holding at least one digit (hashes, object ids);
  `{token}` for 20 or more characters of letters, digits, `-`, `_`, `.`, `~` or `=`
  mixing letters and digits (session tokens, base64 ids);
- a segment position where more than `fanout` different literal values were seen under the
  same template prefix (slugs like `/product/lamp-42`) becomes `{slug}` for the values
  that come after; the ones seen before keep their own template;
- never more than `limit` templates: past it, a new template is counted as `{other}`.

Deterministic for a given order of paths; the bounds keep memory and metric label
cardinality fixed whatever the traffic.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["OTHER", "RouteError", "RouteTemplater", "load_route_file", "parse_routes", "routes_file",
           "save_route_text"]

OTHER = "{other}"
"""The template of every path past the bound on the number of templates."""

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")
_TOKEN = re.compile(r"[A-Za-z0-9\-_.~=]{20,}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteError(ValueError):
    """A user route template is not valid."""


def _segment(seg: str) -> str:
    if seg.isdigit():
        return "{id}"
    if _UUID.fullmatch(seg):
        return "{uuid}"
    if _HEX.fullmatch(seg) and any(c.isdigit() for c in seg):
        return "{hex}"
    if _TOKEN.fullmatch(seg) and any(c.isdigit() for c in seg) and any(c.isalpha() for c in seg):
        return "{token}"
    return seg


def _compile_template(template: str) -> re.Pattern[str]:
    if not template.startswith("/"):
        raise RouteError(f"route template must start with '/': {template!r}")
    parts = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        parts.append("[^/]+")
        pos = m.end()
    rest = template[pos:]
    if "{" in rest or "}" in rest or any("{" in p or "}" in p for p in parts):
        raise RouteError(f"bad placeholder in route template {template!r} (use {{name}})")
    parts.append(re.escape(rest))
    return re.compile("".join(parts))


class RouteTemplater:
    """Path → route template, with user templates first and bounded cardinality."""

    def __init__(self, overrides: list[str] | None = None, limit: int = 200, fanout: int = 30,
                 cache: int = 50_000) -> None:
        self.overrides = [(t, _compile_template(t)) for t in (overrides or [])]
        self.limit = limit
        self.fanout = fanout
        self._templates: set[str] = set()
        self._children: dict[str, set[str]] = {}
        self._cache: dict[str, str] = {}
        self._cache_size = cache

    def set_overrides(self, overrides: list[str]) -> None:
        """Use these user templates from now on (paths seen before are templated again)."""
        self.overrides = [(t, _compile_template(t)) for t in overrides]
        self._cache.clear()

    @property
    def templates(self) -> int:
        """How many distinct templates were given out (`{other}` aside)."""
        return len(self._templates)

    def template(self, path: str) -> str:
        """The route template of a request path or target."""
        path = path.split("?", 1)[0]
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        out = self._template(path)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()  # bounded; recomputing is deterministic apart from the bounds
        self._cache[path] = out
        return out

    def _template(self, path: str) -> str:
        for template, rx in self.overrides:
            if rx.fullmatch(path):
                return template
        if not path.startswith("/"):
            return OTHER
        prefix = ""
        for seg in path[1:].split("/"):
            gen = _segment(seg)
            if gen == seg and seg:
                seen = self._children.setdefault(prefix, set())
                if seg not in seen:
                    if len(seen) >= self.fanout:
                        gen = "{slug}"
                    else:
                        seen.add(seg)
            prefix = f"{prefix}/{gen}"
        template = prefix or "/"
        if template not in self._templates:
            if len(self._templates) >= self.limit:
                return OTHER
            self._templates.add(template)
        return template


def routes_file() -> Path:
    """The user's route templates file: $XDG_CONFIG_HOME/ngxscope/routes (one per line)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ngxscope" / "routes"


def load_route_file(path: Path | None = None) -> list[str]:
    """The templates listed in a routes file (`#` comments, blank lines ignored); [] when absent.
    Raises `RouteError` naming the line of a bad one."""
    path = path or routes_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteError(f"{path}: cannot read: {exc}") from None
    return parse_routes(text, str(path))


def parse_routes(text: str, origin: str = "routes") -> list[str]:
    """The templates of a routes file's text. Raises `RouteError` naming the line of a bad one."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            _compile_template(line)
        except RouteError as exc:
            raise RouteError(f"{origin}:{n}: {exc}") from None
        out.append(line)
    return out


def save_route_text(text: str, path: Path | None = None) -> list[str]:
    """Check a routes file's text and write it (directories made); its templates. Raises
    `RouteError` (nothing written) for a bad line or a file that cannot be written."""
    path = path or routes_file()
    templates = parse_routes(text, str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") or not text else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise RouteError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return templates
