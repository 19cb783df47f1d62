"""ExchangeStore: bounded window, drop accounting, by_conn index."""

from __future__ import annotations

import pytest

from ngxscope.model import Exchange
from ngxscope.store.memory import ExchangeStore


def ex(i: int, conn: str = "") -> Exchange:
    return Exchange(id=i, start=float(i), end=i + 0.01, pid=1, client="c", server="s", tls=False,
                    conn_id=conn)


def test_append_index_len() -> None:
    st = ExchangeStore(10)
    assert st.append_batch([ex(i) for i in range(5)]) == 0
    assert len(st) == 5
    assert st[0].id == 0 and st[-1].id == 4
    assert [e.id for e in st] == [0, 1, 2, 3, 4]
    with pytest.raises(IndexError):
        st[5]


def test_capacity_drops_oldest_and_counts() -> None:
    st = ExchangeStore(10)
    st.append_batch([ex(i) for i in range(8)])
    assert st.would_drop(5) == 3
    assert st.append_batch([ex(i) for i in range(8, 13)]) == 3
    assert len(st) == 10
    assert st[0].id == 3 and st[9].id == 12
    assert st.dropped == 3 and st.total == 13


def test_compaction_keeps_order() -> None:
    st = ExchangeStore(100)
    for k in range(200):
        st.append_batch([ex(k * 50 + j) for j in range(50)])
    assert len(st) == 100
    assert [e.id for e in st] == list(range(9900, 10000))
    assert st.dropped == 9900
    assert st.snapshot()[0].id == 9900


def test_by_conn_index_follows_drops() -> None:
    st = ExchangeStore(4)
    st.append_batch([ex(0, "a"), ex(1, "b"), ex(2, "a"), ex(3, "a")])
    assert [e.id for e in st.by_conn("a")] == [0, 2, 3]
    st.append_batch([ex(4, "b"), ex(5, "c")])
    assert [e.id for e in st.by_conn("a")] == [2, 3]
    assert [e.id for e in st.by_conn("b")] == [4]
    assert st.by_conn("zzz") == []


def test_drop_oldest_and_clear() -> None:
    st = ExchangeStore(10)
    st.append_batch([ex(i, "x") for i in range(6)])
    assert st.drop_oldest(4) == 4
    assert [e.id for e in st] == [4, 5]
    assert st.drop_oldest(100) == 2
    assert len(st) == 0 and st.by_conn("x") == []
    st.append_batch([ex(9)])
    st.clear()
    assert len(st) == 0 and st.dropped == 0 and st.total == 0


def test_bad_capacity() -> None:
    with pytest.raises(ValueError):
        ExchangeStore(0)
