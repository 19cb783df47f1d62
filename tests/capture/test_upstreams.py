"""Upstream attempts against nginx's access log: $upstream_addr, $upstream_status and the
three $upstream_*_time values, per attempt, retries included (real nginx, real eBPF)."""

from __future__ import annotations

from typing import Any

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange

from .truth import by_lab_id


def _times(value: str) -> list[float | None]:
    return [None if v.strip() == "-" else float(v) * 1000 for v in value.split(",")]


def compare_upstreams(pairs: list[tuple[dict[str, Any], Exchange]]) -> tuple[int, list[str]]:
    proxied = 0
    problems = []
    for line, ex in pairs:
        where = f"{line['request']!r} (lab {line['lab_id']})"
        if line["upstream_addr"] in ("", "-"):
            if ex.upstream:
                problems.append(f"{where}: not proxied but {len(ex.upstream)} attempts captured")
            continue
        proxied += 1
        addrs = ", ".join(a.addr for a in ex.upstream)
        statuses = ", ".join(str(a.status) for a in ex.upstream)
        if addrs != line["upstream_addr"] or statuses != line["upstream_status"]:
            problems.append(f"{where}: {addrs} / {statuses} != log {line['upstream_addr']} / {line['upstream_status']}")
            continue
        for field, key in (("connect_ms", "upstream_connect_time"), ("header_ms", "upstream_header_time"),
                           ("duration_ms", "upstream_response_time")):
            for att, want in zip(ex.upstream, _times(line[key]), strict=True):
                got = getattr(att, field)
                if want is None:
                    continue
                if got is None or abs(got - want) > max(2.0, 0.1 * want):
                    problems.append(f"{where}: {att.addr} {field} {got} vs log {want}")
        # the group (the upstream block proxy_pass names) and the server block, from the config
        if any(a.group != line["proxy_host"] for a in ex.upstream):
            problems.append(f"{where}: groups {[a.group for a in ex.upstream]} vs log proxy_host {line['proxy_host']}")
        if ex.server_block != line["server_name"]:
            problems.append(f"{where}: server block {ex.server_block!r} vs log {line['server_name']!r}")
        sent = [int(v) for v in line["upstream_bytes_sent"].split(",")]
        received = [int(v) for v in line["upstream_bytes_received"].split(",")]
        for att, s, r in zip(ex.upstream, sent, received, strict=True):
            if (att.request_bytes, att.response_bytes) != (s, r):
                problems.append(f"{where}: {att.addr} bytes {att.request_bytes}/{att.response_bytes} vs log {s}/{r}")
    return proxied, problems


def test_upstream_attempts_match_access_log(lab_nginx: LabNginx, capture_factory: Any) -> None:
    cap = capture_factory(pid=lab_nginx.master_pid)
    sent = Traffic(lab_nginx.plain_port, lab_nginx.tls_port).run_mix(rounds=4, concurrency=4)
    log = lab_nginx.wait_log_lines(sent)
    exchanges = cap.wait_for(sent)
    cap.stop()
    pairs = by_lab_id(log, exchanges)[0]
    assert len(pairs) == sent
    proxied, problems = compare_upstreams(pairs)
    print(f"\nproxied requests {proxied}, upstream mismatches {len(problems)}")
    assert proxied > 50
    assert not problems, "\n".join(problems[:30])
    attempts = [a for _, ex in pairs for a in ex.upstream]
    assert any(a.reused for a in attempts), "keepalive pool reuse is seen"
    assert any(not a.reused for a in attempts)
    retried = [ex for _, ex in pairs if len(ex.upstream) > 1]
    assert retried and all(ex.upstream[0].status == 502 for ex in retried)
    for a in attempts:
        if a.status != 502 or a.response_head:
            assert a.request_head and a.request_head.split(" ", 1)[0] in ("GET", "POST", "HEAD")
            assert a.response_head and a.response_head.startswith("HTTP/1.")
