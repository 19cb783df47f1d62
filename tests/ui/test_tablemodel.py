"""The table model: Qt model contract, batch signals, drops, filtering proxy, sorting."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt

from ngxscope.pipeline.synthetic import SyntheticSource
from ngxscope.store.filterexpr import compile_filter
from ngxscope.store.memory import ExchangeStore
from ngxscope.ui.tablemodel import (
    COLUMNS,
    DASH,
    FILTER_ROLE,
    ExchangeFilterProxy,
    ExchangeTableModel,
    fmt_bytes,
    fmt_ms,
)


def batch(n: int, seed: int = 1):  # type: ignore[no-untyped-def]
    src = SyntheticSource(seed=seed, threaded=False)
    return src.generate(n)


def test_qtmodeltester_source_and_proxy(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    model = ExchangeTableModel(ExchangeStore(500))
    model.append_batch(batch(300))
    qtmodeltester.check(model, force_py=True)
    proxy = ExchangeFilterProxy()
    proxy.setSourceModel(model)
    proxy.set_predicate(compile_filter("status>=400"))
    qtmodeltester.check(proxy, force_py=True)


def test_one_insert_signal_per_batch_and_one_remove_for_drops(qtbot) -> None:  # type: ignore[no-untyped-def]
    model = ExchangeTableModel(ExchangeStore(1000))
    inserts: list[tuple[int, int]] = []
    removes: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, a, b: inserts.append((a, b)))
    model.rowsRemoved.connect(lambda _p, a, b: removes.append((a, b)))
    model.append_batch(batch(800))
    model.append_batch(batch(500, seed=2))
    assert inserts == [(0, 799), (500, 999)]
    assert removes == [(0, 299)]
    assert model.rowCount() == 1000
    model.append_batch(batch(1500, seed=3))  # larger than capacity: a reset
    assert model.rowCount() == 1000
    model.append_batch([])
    assert len(inserts) == 2


def test_display_roles_and_filter_clauses() -> None:
    model = ExchangeTableModel(ExchangeStore(100))
    model.append_batch(batch(50))
    ex = model.exchange(0)
    keys = [c[0] for c in COLUMNS]
    status_col = keys.index("status")
    idx = model.index(0, status_col)
    assert model.data(idx) == str(ex.status)
    assert model.data(idx, Qt.ItemDataRole.ForegroundRole) is not None
    assert model.data(idx, Qt.ItemDataRole.DecorationRole) is None
    assert model.data(idx, FILTER_ROLE) == f"status={ex.status}"
    host = model.data(model.index(0, keys.index("host")), FILTER_ROLE)
    assert host == f"host={ex.host}"
    for col in range(len(COLUMNS)):
        clause = model.data(model.index(0, col), FILTER_ROLE)
        if clause:
            assert compile_filter(clause)(ex), clause
    assert model.headerData(0, Qt.Orientation.Horizontal) == "Time"
    assert model.rowCount(model.index(0, 0)) == 0


def test_proxy_sorts_numerically() -> None:
    model = ExchangeTableModel(ExchangeStore(1000))
    model.append_batch(batch(400))
    proxy = ExchangeFilterProxy()
    proxy.setSourceModel(model)
    col = [c[0] for c in COLUMNS].index("duration")
    proxy.sort(col, Qt.SortOrder.DescendingOrder)
    durs = [proxy.exchange_at(proxy.index(r, 0)).duration_ms for r in range(proxy.rowCount())]
    assert durs == sorted(durs, reverse=True)
    assert proxy.exchange_at(QModelIndex()) is None


def test_formatters() -> None:
    assert fmt_ms(None) == DASH and fmt_ms(0.25) == "250 µs" and fmt_ms(12.34) == "12.3 ms"
    assert fmt_ms(1234) == "1234 ms" and fmt_ms(12_345) == "12.3 s"
    assert fmt_bytes(10) == "10 B" and fmt_bytes(2048) == "2.0 KiB"
    assert fmt_bytes(5 * 1024**3) == "5.0 GiB"
