"""Whether to use the compiled hot path (C extensions beside the Python modules they speed up).

The capture's per-record work has a pure-Python reference and a compiled twin built by
scripts/build_ext.py (and by pip for the .deb): `capture._fastevents` (ring-buffer records)
and `decode._fasthttp1` (HTTP/1 heads). Each module that has a twin imports it when
`wanted()` and falls back to its Python function when the extension is missing;
NGXSCOPE_PURE_PYTHON=1 selects the reference (to compare, or to rule the extension out).
The choice is made once, at import.
"""

from __future__ import annotations

import os

__all__ = ["PURE_PYTHON_ENV", "wanted"]

PURE_PYTHON_ENV = "NGXSCOPE_PURE_PYTHON"
"""Set to 1 to run the pure-Python reference instead of the compiled extensions."""


def wanted() -> bool:
    """False when NGXSCOPE_PURE_PYTHON asks for the pure-Python path (any value but "" or 0)."""
    return os.environ.get(PURE_PYTHON_ENV, "").strip() in ("", "0")
