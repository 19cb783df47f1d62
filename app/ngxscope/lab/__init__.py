"""A private nginx with TLS and upstreams, its backends and a traffic generator.

Used by ``ngxscope demo``, the capture tests (truth: nginx's JSON access log) and benchmarks.
It stands alone: it imports no other ngxscope package, and in the package only the demo
imports it (import-linter contracts in pyproject.toml).
"""

from ngxscope.lab.config import LOG_FIELDS, LabError
from ngxscope.lab.nginx import LabNginx, free_port
from ngxscope.lab.traffic import Response, SentRequest, Traffic, TrafficError

__all__ = [
    "LOG_FIELDS",
    "LabError",
    "LabNginx",
    "Response",
    "SentRequest",
    "Traffic",
    "TrafficError",
    "free_port",
]
