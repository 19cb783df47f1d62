"""Exporting captured exchanges to monitoring systems: Prometheus metrics (`prometheus`,
RED per worker, server block and upstream peer on /metrics) and OpenTelemetry traces over
OTLP/HTTP (`otlp`), with bounded label values (`labels`). No Qt.

Each exporter is a record sink (`write_exchange`, `write_event`, `write_stats`, `close`);
`pipeline.sinks.open_sinks` opens the ones a capture asks for. Importing this package
imports neither prometheus_client nor OpenTelemetry (the modules do, on use).
"""
