"""A request's upstream attempts as nginx itself logs them: its r->upstream_states.

At a request's completion the probes read nginx's own list of attempts (capture.events
UpstreamState: the peer's name, $upstream_status and the three times, as nginx's
$upstream_* variables print them). That list is the truth the access log shows, where the
bytes and connects tell less: an attempt that never connected (nginx found no live peer
and logs the group's name), a timeout (504) told from a peer that closed (502), a resolver's
TCP connection that is no peer, a request body sent in pieces, the " : " between the groups
of an internal redirect. The wire-derived attempts (decode.upstream) stay the fallback
method, and lend nginx's attempts what only they saw: the heads, byte counts, start time
and keep-alive reuse, matched by peer in order.
"""

from __future__ import annotations

from ..capture.reqlog import UpstreamState
from ..model import UpstreamAttempt

__all__ = ["attempts_from_states"]


def _same_peer(wire_addr: str, name: str) -> bool:
    """A wire attempt's address is nginx's peer name: equal, or a unix path the probes cut
    ("unix:/run/long…") that the name continues."""
    if wire_addr == name:
        return True
    return wire_addr.endswith("\u2026") and wire_addr.startswith("unix:") and name.startswith(wire_addr[:-1])


def _match(wire: list[UpstreamAttempt], start: int, state: UpstreamState) -> int:
    """The index of the wire attempt (from `start` on) that is nginx's `state`: the first to
    the same peer that got the same status, else the first to the same peer; -1: none."""
    assert state.peer is not None
    first = -1
    for k in range(start, len(wire)):
        if _same_peer(wire[k].addr, state.peer):
            if wire[k].status == state.status:
                return k
            if first < 0:
                first = k
    return first


def attempts_from_states(states: list[UpstreamState], wire: list[UpstreamAttempt]) -> list[UpstreamAttempt]:
    """nginx's attempts (`states`, in order), each the wire attempt to the same peer when
    there is one, with nginx's name, status and times. Wire attempts nginx does not list
    are left out."""
    out: list[UpstreamAttempt] = []
    at = 0
    redirected = False
    for st in states:
        if st.peer is None:
            redirected = bool(out)  # the next attempt is in another group
            continue
        k = _match(wire, at, st)
        if k >= 0:
            att = wire[k]
            at = k + 1
        else:
            att = UpstreamAttempt(addr=st.peer)
            prev = out[-1] if out else None
            if prev is not None and prev.start is not None and prev.duration_ms is not None:
                att.start = prev.start + prev.duration_ms / 1000  # nginx moved on when that ended
        att.addr = st.peer
        att.status = st.status
        att.duration_ms = None if st.response_ms is None else float(st.response_ms)
        att.connect_ms = None if st.connect_ms is None else float(st.connect_ms)
        att.header_ms = None if st.header_ms is None else float(st.header_ms)
        att.redirected = redirected
        redirected = False
        out.append(att)
    return out
