"""Exchanges at rest: the session format and everything that reads or writes it. No Qt.

`codec` is the one record codec (a line of a session file or of the capture helper's
stream); `compat` the format versions and their converters; `session` the `.ngxs` file
(gzip JSON lines) and the stream writer; `fastrecord`/`bulkload` fast reading of large
sessions. In memory: `memory` (the bounded store), `aggregate`/`hdrhist` (rates and
latency figures), `filterexpr` (the filter language), `summary` (`ngxscope stats`),
`bodies`/`httpbody` (showing bodies), `redact` (masking secrets). Out and in: `exporters`
with HAR, pcapng, CSV and JSONL writers, and `import_har`.
"""
