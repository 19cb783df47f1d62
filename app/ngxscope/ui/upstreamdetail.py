"""The detail pane's Upstream tab: every attempt nginx made for one request.

Per attempt: peer, group, status, timings, bytes, keepalive; the request head as nginx sent
it upstream, compared with the client's request (headers nginx added, changed or dropped),
and the response head the peer sent back.
"""

from __future__ import annotations

import html

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QTextBrowser, QWidget

from ngxscope.model import Exchange, UpstreamAttempt

from .tablemodel import DASH, STATUS_COLORS, _status_cls, fmt_bytes, fmt_ms

__all__ = ["UpstreamView", "attempt_html", "head_changes", "is_nolive", "upstream_html"]

ADDED, CHANGED, REMOVED = "#2e9d4f", "#d9822b", "#d64545"


def _parse_head(head: str) -> tuple[str, list[tuple[str, str]]]:
    lines = head.replace("\r\n", "\n").split("\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return lines[0], headers


def head_changes(ex: Exchange, head: str) -> tuple[dict[str, str], list[str]]:
    """How nginx rewrote the client's headers: ({lower name: "added"|"changed"}, dropped)."""
    _line, sent = _parse_head(head)
    client = {k.lower(): v for k, v in ex.request_headers}
    marks = {}
    for k, v in sent:
        low = k.lower()
        if low not in client:
            marks[low] = "added"
        elif client[low] != v:
            marks[low] = "changed"
    sent_names = {k.lower() for k, _v in sent}
    dropped = [k for k, _v in ex.request_headers if k.lower() not in sent_names]
    return marks, dropped


def _head_html(head: str, marks: dict[str, str] | None = None) -> str:
    line, headers = _parse_head(head)
    out = [f"<b>{html.escape(line)}</b>"]
    for k, v in headers:
        mark = (marks or {}).get(k.lower())
        text = f"{html.escape(k)}: {html.escape(v)}"
        if mark == "added":
            text = f"<span style='color:{ADDED}'>{text}</span>  <i style='color:{ADDED}'>+ added</i>"
        elif mark == "changed":
            text = (f"<span style='color:{CHANGED}'>{text}</span>  "
                    f"<i style='color:{CHANGED}'>~ changed</i>")
        out.append(text)
    return "<pre style='margin:2px 0 8px 12px'>" + "<br>".join(out) + "</pre>"


def is_nolive(a: UpstreamAttempt) -> bool:
    """nginx found no live peer in the group for this attempt (it logs the group's name)."""
    return a.group is not None and a.addr == a.group and a.request_head is None and not a.response_bytes


def attempt_html(ex: Exchange, i: int, a: UpstreamAttempt, attempts: list[UpstreamAttempt] | None = None) -> str:
    """One attempt (the `i`-th, from 1, of `attempts`: the request's own by default) as HTML."""
    group = getattr(a, "group", None) or getattr(ex, "upstream_group", None)
    color = STATUS_COLORS[_status_cls(a.status)].name()
    status = str(a.status) if a.status is not None else "no answer"
    atts = ex.upstream if attempts is None else attempts
    last = i == len(atts)
    verdict = ("" if last else " — then an internal redirect to another group" if atts[i].redirected
               else " — nginx moved on to the next peer")
    title = (f"<h3 style='margin:8px 0 2px 0'>#{i} {html.escape(a.addr)}"
             f"<span style='font-weight:normal'> in upstream "
             f"<b>{html.escape(group) if group else '(unknown group)'}</b></span>"
             f" → <span style='color:{color}'>{status}</span>"
             f"<span style='font-weight:normal'>{verdict}</span></h3>")
    start = (f"+{fmt_ms((a.start - ex.start) * 1000.0)}" if a.start is not None else DASH)
    facts = [("started", start), ("connect", fmt_ms(a.connect_ms)),
             ("header", fmt_ms(a.header_ms)), ("response", fmt_ms(a.duration_ms)),
             ("sent", fmt_bytes(a.request_bytes)), ("received", fmt_bytes(a.response_bytes)),
             ("connection", "keepalive (reused)" if a.reused else "new")]
    table = " &nbsp;·&nbsp; ".join(f"{k} <b>{html.escape(v)}</b>" for k, v in facts)
    parts = [title, f"<div style='margin-left:12px'>{table}</div>"]
    if a.redirected:
        parts.insert(0, "<div style='margin:10px 0 0 0'><i>― internal redirect (error_page, X-Accel-Redirect): "
                        "another upstream group; nginx's $upstream_* lists write \" : \" here ―</i></div>")
    if is_nolive(a):
        parts.append("<div style='margin:6px 0 0 12px'><i>No live upstreams: every peer of this "
                     "group was down, failed or at max_conns, so nginx tried none and logged the "
                     "group's name as $upstream_addr (status 502).</i></div>")
    elif a.request_head:
        marks, dropped = head_changes(ex, a.request_head)
        parts.append("<div style='margin:6px 0 0 12px'><b>Request head as nginx sent it</b>"
                     " (compared with the client's request)</div>")
        parts.append(_head_html(a.request_head, marks))
        if dropped:
            names = ", ".join(html.escape(d) for d in dropped)
            parts.append(f"<div style='margin:-4px 0 6px 12px; color:{REMOVED}'>"
                         f"not passed on: {names}</div>")
    else:
        parts.append("<div style='margin:6px 0 0 12px'><i>No request head captured: the peer "
                     "never accepted the connection (refused, reset or timed out).</i></div>")
    if a.response_head:
        parts.append("<div style='margin:6px 0 0 12px'><b>Response head from the peer</b></div>")
        parts.append(_head_html(a.response_head))
    elif a.request_head:
        parts.append("<div style='margin:6px 0 0 12px'><i>No response head: the peer did not "
                     "answer.</i></div>")
    return "".join(parts)


class UpstreamView(QTextBrowser):
    """Every upstream attempt of one exchange, with the heads nginx and the peer exchanged."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.document().setDefaultStyleSheet(
            f"pre {{ font-family: '{mono.family()}'; font-size: {mono.pointSize()}pt; }}")
        self.setPlaceholderText("Select a request")

    def show_exchange(self, ex: Exchange | None) -> None:
        if ex is None:
            self.clear()
            return
        self.setHtml(upstream_html(ex))


def upstream_html(ex: Exchange) -> str:
    """The Upstream tab of `ex`: its own attempts ($upstream_addr), then its subrequests'."""
    subs = ex.subrequest_upstream
    if not ex.upstream and not subs:
        return ("<p><i>nginx answered this request itself (static file, return, "
                "cache …): no upstream attempt.</i></p>")
    n = len(ex.upstream)
    out = []
    if n:
        redirects = sum(1 for a in ex.upstream[1:] if a.redirected)
        retries = n - 1 - redirects
        out.append(f"<p style='margin:0'><b>{n}</b> upstream attempt{'s' if n != 1 else ''}"
                   + (f", <b>{retries}</b> retr{'y' if retries == 1 else 'ies'}" if retries > 0 else "")
                   + (f", <b>{redirects}</b> internal redirect{'s' if redirects > 1 else ''}" if redirects else "")
                   + f" for <b>{html.escape(ex.method)} {html.escape(ex.target)}</b>"
                   + {"nginx": " <i>(nginx's own list: names, statuses and times as it logs them)</i>",
                      "wire": " <i>(rebuilt from the connections and bytes seen)</i>"}.get(ex.upstream_via or "", "")
                   + "</p>")
        out += [attempt_html(ex, i, a) for i, a in enumerate(ex.upstream, 1)]
    else:
        out.append("<p style='margin:0'><i>No upstream attempt of the request itself.</i></p>")
    if subs:
        out.append(f"<h3 style='margin:14px 0 2px 0'>Subrequests' attempts ({len(subs)})</h3>"
                   "<div style='margin-left:12px'><i>made by auth_request, SSI include, slice, "
                   "mirror…: nginx leaves them out of this request's $upstream_addr</i></div>")
        out += [attempt_html(ex, i, a, subs) for i, a in enumerate(subs, 1)]
    return "".join(out)
