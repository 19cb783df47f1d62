"""Running a capture, from the nginx to pick to the records written: the orchestration.

In the privileged helper (`ngxscope record`): `target` (options, `preflight`, `resolve` the
nginx processes and binary), `recorder` (`Recorder`: tracer -> capture thread -> decode
thread -> sinks), `lifecycle` (reloads, respawns, binary upgrades, exits: keeps the probes
on nginx), `sinks` (the sink interface; session, stream, metrics, traces, rotation,
redaction), `rotate` (rotating session files), `run` (`record`: one capture to its end).

In the window's process: `source` (`ExchangeSource`; `StreamSource` runs the helper and
decodes its stream with `store.codec`), `remote` (the helper over SSH, several hosts as one
source), `synthetic` (fake traffic for tests and benchmarks). No Qt here.
"""
