"""eBPF programs (C), loaded by bcc at run time through importlib.resources."""
