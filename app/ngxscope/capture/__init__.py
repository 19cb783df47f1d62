"""Getting nginx's I/O out of the kernel: everything that touches eBPF or /proc. No Qt.

`procs` finds the nginx instances (`ngxscope list`, the attach dialog), `binary` reads what
an executable offers (ELF, version, TLS linkage, probe points; `sslpatterns` locates the
OpenSSL functions of a static build), `layout`/`nginxclock`/`modules`/`nginxconf` what the
probes and names need from it. `tracer.Tracer` (or `fallback.FallbackTracer` for builds
without usable `ngx_*` symbols) compiles the C programs of the top-level `bpf/` folder
with bcc, attaches the probes and drains the ring buffer; `events` is the Python mirror of
`bpf/events.h` (`RawEvent`). `budget` keeps the capture within a CPU budget.
"""
