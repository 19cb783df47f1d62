"""From raw events to exchanges: per-connection byte streams become `model.Exchange`s.

Fed one `capture.events.RawEvent` at a time by the pipeline's decode thread, it follows
each connection (client side and upstream side), parses HTTP/1, HTTP/2, WebSocket tunnels
and TCP stream sessions, and emits finished exchanges and lifecycle events through the
callbacks it was given. Pure Python: no I/O, no Qt, no BPF.
"""
