"""ngxscope: every HTTP request a running nginx handles, live, TLS in plaintext, via eBPF."""

__version__ = "0.1.0"
