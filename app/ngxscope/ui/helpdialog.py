"""F1: the filter language and the keyboard shortcuts."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

__all__ = ["HELP_HTML", "HelpDialog"]

HELP_HTML = """
<h2>ngxscope</h2>
<p>Every HTTP request a running nginx handles, live, captured with eBPF by a root helper
(no proxy, no keys; TLS shown as plaintext).</p>
<h3>Filter language</h3>
<table cellpadding="3">
<tr><td><code>status&gt;=500</code>, <code>status=404</code>, <code>status=5xx</code>,
 <code>status=none</code></td><td>response status (or class)</td></tr>
<tr><td><code>path~^/api</code>, <code>path!~\\.png$</code></td><td>regular expression on the path</td></tr>
<tr><td><code>method=POST</code>, <code>host=example.com</code></td><td>exact, case-insensitive</td></tr>
<tr><td><code>duration&gt;200ms</code></td><td>units <code>us</code>, <code>ms</code> (default),
 <code>s</code></td></tr>
<tr><td><code>upstream=10.0.0.2:8080</code>, <code>upstream_status=502</code></td>
 <td>any upstream attempt matches</td></tr>
<tr><td><code>worker=1234</code>, <code>client~127.0.0.1</code>, <code>server=…</code>,
 <code>conn=…</code></td><td>worker pid, addresses, connection id</td></tr>
<tr><td><code>size&gt;10k</code>, <code>reqsize&gt;=1M</code></td><td>bytes sent / read</td></tr>
<tr><td><code>header.x-request-id=abc</code>, <code>req.header.user-agent~*curl</code>,
 <code>resp.header.content-type~json</code>, <code>header.x-trace</code></td>
 <td>headers (name caseless; either side, or <code>req.</code> / <code>resp.</code> only);
 alone: present</td></tr>
<tr><td><code>body~"error code"</code>, <code>resp.body~*timeout</code>,
 <code>req.body~id=42</code></td><td>bodies, decoded (de-chunked, gunzipped, JSON escapes
 resolved)</td></tr>
<tr><td><code>marked</code>, <code>mark=red</code>, <code>noted</code>,
 <code>note~*ticket</code></td><td>your marks and notes (right-click a row: Mark, Note…)</td></tr>
<tr><td><code>tls</code>, <code>error</code>, <code>truncated</code>, <code>upstream</code>,
 <code>sendfile</code>, <code>summary</code></td><td>flags (<code>summary</code>: counted from the
 kernel summary, payload not captured)</td></tr>
<tr><td><code>sni=shop.example.com</code>, <code>alpn=h2</code>, <code>cipher~CHACHA</code>,
 <code>tls_version&lt;1.2</code>, <code>handshake&gt;50ms</code>, <code>connect&gt;5ms</code>,
 <code>retransmits&gt;0</code>, <code>outcome=tls-failed</code></td>
 <td>the connection beneath the request (socket filter)</td></tr>
<tr><td><code>resumed</code>, <code>reset</code>, <code>tls_failed</code></td>
 <td>TLS session resumed; connection reset; handshake failed (no request)</td></tr>
<tr><td><code>login</code>, <code>"a b"</code></td><td>bare word / quoted string: substring of
 host + target</td></tr>
</table>
<p>Combine with <code>and</code> / <code>or</code> / <code>not</code> (or <code>&amp;&amp;</code>,
<code>||</code>, <code>!</code>) and parentheses; juxtaposition means <i>and</i>:<br>
<code>status=5xx and not tls</code><br>
<code>path~^/api (method=POST || method=PUT)</code><br>
<code>duration&gt;1s or upstream_status=502</code></p>
<p>Operators: <code>= == != ~ !~ ~* !~* &gt; &gt;= &lt; &lt;=</code>. <code>~</code> is a
regular expression, case-sensitive (method and host ignore case); <code>~*</code> ignores
case (as nginx's <code>location ~*</code>); <code>=</code> is exact. Right-click a cell:
<i>Filter by this value</i>. Clicking a peer in <i>Upstreams</i> filters its requests.
The graphs and the Workers / Upstreams panels follow the filter.</p>
<h3>Table</h3>
<p>Click a column header to sort (ascending, descending, then back to arrival order).
While sorted, new requests are held back (the status bar counts them) and the graphs stay
live; back in arrival order the table catches up and follows the newest row again unless you
scrolled up. Right-click the header to show or hide columns; drag headers to reorder.</p>
<h3>Keys</h3>
<table cellpadding="3">
<tr><td>Ctrl+F</td><td>focus the filter; in the detail pane: find in the request / response
 (matches highlighted, Enter / Shift+Enter next / previous, Esc closes)</td></tr>
<tr><td>Ctrl+Shift+F</td><td>find in the request / response</td></tr>
<tr><td>Space</td><td>pause / resume the live view</td></tr>
<tr><td>Ctrl+L</td><td>clear</td></tr>
<tr><td>Ctrl+O / Ctrl+S</td><td>open / save a session</td></tr>
<tr><td>F1</td><td>this help</td></tr>
</table>
"""


class HelpDialog(QDialog):
    """A scrollable rich-text help page."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("ngxscope help")
        self.resize(720, 640)
        text = QTextBrowser()
        text.setHtml(HELP_HTML)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(text)
        lay.addWidget(buttons)
