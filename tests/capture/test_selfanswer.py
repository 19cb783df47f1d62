"""Answer kinds from a parsed configuration (captured truth: test_selfanswer_truth.py)."""

from __future__ import annotations

from pathlib import Path

from ngxscope.capture.nginxconf import load_config
from ngxscope.capture.selfanswer import self_answer

CONF = """events {} http { upstream app { server 10.0.0.2:80; }
  server { listen 80; limit_conn perip 10;
    location /c/ { proxy_cache z; proxy_pass http://app; }
    location /c/off/ { proxy_cache off; proxy_pass http://app; }
    location /r/ { limit_req zone=one burst=5; limit_req zone=two; limit_req_status 429; proxy_pass http://app; }
    location /p/ { proxy_pass http://app; }
    location = /x { return 302 /y; }
  } }"""


def test_kinds(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text(CONF)
    m = load_config(str(conf))
    block = m.block_of("127.0.0.1:80", "")

    def kind(path: str, status: int | None, upstream: bool) -> str | None:
        return self_answer(m.resolve(block, path, [("10.0.0.2:80", 200)] if upstream else []), status, upstream)

    assert kind("/c/a", 200, False) == "cache-hit"
    assert kind("/c/a", 200, True) == "cache-miss"
    assert kind("/c/off/a", 200, True) is None
    assert kind("/r/a", 429, False) == "limit-req:one"
    assert kind("/r/a", 503, False) == "limit-conn:perip"  # server-level limit_conn, default status
    assert kind("/p/a", 503, False) == "limit-conn:perip"
    assert kind("/p/a", 200, True) is None
    assert kind("/x", 302, False) == "return"
    assert kind("/p/a", 499, True) == "client-abort"
    assert self_answer(None, 200, False) is None
