"""End to end: the window attached to a REAL nginx through the REAL capture helper.

The lab nginx (master + 2 workers, TLS, upstream groups) is captured by `ngxscope record
--stream` started by `StreamSource` exactly as the CLI does it; what the window shows is
compared with nginx's own JSON access log, request by request (matched by `X-Lab`).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer

from ngxscope.lab.nginx import LabNginx
from ngxscope.lab.traffic import Traffic
from ngxscope.model import Exchange
from ngxscope.pipeline.source import StreamSource, helper_argv
from ngxscope.ui.mainwindow import MainWindow

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="eBPF capture needs root")

FILL_BOUND_S = 5.0
ATTACH_TIMEOUT_MS = 60_000


def lab_id(ex: Exchange) -> str | None:
    return next((v for k, v in ex.request_headers if k.lower() == "x-lab"), None)


def log_peers(line: dict[str, Any]) -> list[str]:
    """The peers of one log line's $upstream_addr ("a, b" for a retry; "" for none)."""
    addrs = str(line.get("upstream_addr") or "").replace(" : ", ", ")
    return [a.strip() for a in addrs.split(",") if a.strip()]


def log_statuses(line: dict[str, Any]) -> list[str]:
    text = str(line.get("upstream_status") or "").replace(" : ", ", ")
    return [s.strip() for s in text.split(",") if s.strip()]


def open_window(qtbot, settings: QSettings, lab: LabNginx) -> MainWindow:  # type: ignore[no-untyped-def]
    win = MainWindow(None, title="ngxscope e2e", settings=settings)
    qtbot.addWidget(win)
    win.resize(1600, 1000)
    win.show()
    win.set_source(StreamSource(helper_argv(lab.master_pid)))
    # the probes are live once the helper reports "attach" (BPF compile: a few seconds)
    qtbot.waitUntil(lambda: any(e.kind == "attach" for e in win.events), timeout=ATTACH_TIMEOUT_MS)
    return win


def table_rows(table: Any) -> dict[str, list[str]]:
    """A QTableWidget's rows by first cell."""
    out = {}
    for r in range(table.rowCount()):
        cells = [table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
        out[cells[0]] = cells
    return out


def graph_total(win: MainWindow) -> int:
    top = win.graphs.stack_curves[-1].getData()[1]  # the stack's top: every class added up
    return 0 if top is None else round(float(top.sum()))


def stop_window(win: MainWindow) -> None:
    if win.source is not None:
        win.source.stop()
    win.close()


def test_window_shows_every_request_of_a_real_nginx(lab_nginx: LabNginx, qtbot,  # type: ignore[no-untyped-def]
                                                    settings: QSettings) -> None:
    lab = lab_nginx
    win = open_window(qtbot, settings, lab)
    try:
        _check_live_window(win, lab, qtbot)
    finally:
        stop_window(win)


def _check_live_window(win: MainWindow, lab: LabNginx, qtbot) -> None:  # type: ignore[no-untyped-def]
    workers = lab.worker_pids()
    assert len(workers) == 2
    # -- traffic, and when rows / graphs / per-worker view fill -----------------------------
    sent: list[int] = []
    traffic = Traffic(lab.plain_port, lab.tls_port)
    feeder = threading.Thread(target=lambda: sent.append(traffic.run_mix(rounds=1, concurrency=2)))
    filled: dict[str, float] = {}
    expected: list[int] = []  # the log's line count once the traffic is done

    def probe() -> None:
        now = time.monotonic()
        n = expected[0] if expected else None
        if "rows" not in filled and n is not None and win.proxy.rowCount() >= n:
            filled["rows"] = now
        if "graphs" not in filled and graph_total(win) > 0:
            filled["graphs"] = now
        if "workers" not in filled and win.workers.table.rowCount() >= 2:
            filled["workers"] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(probe)
    timer.start()
    t0 = time.monotonic()
    feeder.start()
    qtbot.waitUntil(lambda: not feeder.is_alive(), timeout=30_000)
    log = lab.wait_log_lines(sent[0])
    assert len(log) == sent[0]
    expected.append(len(log))
    qtbot.waitUntil(lambda: len(filled) == 3, timeout=int(FILL_BOUND_S * 1000) + 5000)
    timer.stop()
    fill = max(filled.values()) - t0
    print(f"\n{len(log)} requests; filled after: rows {filled['rows'] - t0:.2f} s, graphs "
          f"{filled['graphs'] - t0:.2f} s, workers {filled['workers'] - t0:.2f} s after the "
          f"first request (bound {FILL_BOUND_S:.0f} s)")
    assert fill < FILL_BOUND_S, f"the window took {fill:.2f} s to fill"

    # -- every log line has its row, with equal method / path / status / sizes -----------------
    # connections that never became a request are rows too (conn_outcome): not log lines
    shown = [ex for ex in win.visible_exchanges() if ex.conn_outcome is None]
    assert len(shown) == len(log)
    by_id = {lab_id(ex): ex for ex in shown}
    assert len(by_id) == len(shown)
    for line in log:
        ex = by_id.get(line["lab_id"])
        assert ex is not None, f"no row for {line['request']} (X-Lab {line['lab_id']})"
        got = (ex.method, ex.target, ex.status, ex.response_bytes, ex.request_bytes, ex.pid)
        want = (line["method"], line["uri"], line["status"], line["bytes_sent"],
                line["request_length"], line["pid"])
        assert got == want, f"X-Lab {line['lab_id']}: window {got} != log {want}"
        assert [a.addr for a in ex.upstream] == log_peers(line)

    # -- the detail pane of a selected row ------------------------------------------------
    retried = next(line for line in log if len(log_peers(line)) > 1)
    ex = by_id[retried["lab_id"]]
    win.select_exchange(ex)
    detail = win.detail
    assert detail.exchange is ex and not detail.placeholder.isVisibleTo(detail)
    assert detail.request.start_line.text().startswith(f"{ex.method} {retried['uri']} ")
    req = [(detail.request.headers.item(r, 0).text(), detail.request.headers.item(r, 1).text())
           for r in range(detail.request.headers.rowCount())]
    assert ("X-Lab", retried["lab_id"]) in req and req == ex.request_headers
    resp = [(detail.response.headers.item(r, 0).text(), detail.response.headers.item(r, 1).text())
            for r in range(detail.response.headers.rowCount())]
    assert resp == ex.response_headers and any(k.lower() == "x-backend" for k, _v in resp)
    assert str(retried["status"]) in detail.response.start_line.text()
    assert detail.tabText(detail.upstream_tab) == f"Upstream ({len(ex.upstream)})"
    up_text = detail.upstream.toPlainText()
    assert f"X-Lab: {retried['lab_id']}" in up_text  # the head nginx sent upstream
    assert "moved on to the next peer" in up_text and "HTTP/1.1 200" in up_text
    # the Upstream column shows the retry in full, as nginx's $upstream_addr prints it
    from ngxscope.ui.tablemodel import COLUMN_KEYS, FILTER_ROLE

    col = COLUMN_KEYS.index("upstream")
    row = win.table.selectionModel().currentIndex().row()
    cell = win.proxy.index(row, col)
    assert cell.data() == retried["upstream_addr"]
    assert win.table.columnWidth(col) > win.table.fontMetrics().horizontalAdvance(cell.data())
    tip = cell.data(Qt.ItemDataRole.ToolTipRole)
    assert "#1 " in tip and "#2 " in tip and "1 retry" in tip
    assert cell.data(FILTER_ROLE) == f"upstream={ex.upstream[-1].addr}"

    # -- graphs: requests/s added up over the window equals the rows ----------------------
    qtbot.waitUntil(lambda: graph_total(win) == len(log), timeout=5000)
    assert win.agg.total == len(log)

    # -- per-worker view: both workers, with the log's per-pid counts ------------------------
    per_pid = collections.Counter(line["pid"] for line in log)
    qtbot.waitUntil(lambda: {int(k): int(v[1].replace(",", "")) for k, v in
                             table_rows(win.workers.table).items()} == dict(per_pid), timeout=3000)
    assert set(per_pid) == set(workers), "both workers served requests"

    # -- Upstreams panel: the lab's peers with the log's $upstream_addr counts ------------------
    win.docks["upstreams"].raise_()
    per_peer = collections.Counter(a for line in log for a in log_peers(line))
    retries = collections.Counter(a for line in log for a in log_peers(line)[:-1])
    fives = collections.Counter(a for line in log
                                for a, s in zip(log_peers(line), log_statuses(line), strict=True)
                                if s.startswith("5"))
    dead = f"127.0.0.1:{lab.dead_port}"
    assert set(per_peer) == {*lab.upstream_addrs, dead}

    def panel_counts() -> dict[str, int]:
        got: dict[str, int] = collections.Counter()
        for r in win.upstreams.rows():
            got[r.addr] += r.requests
        return dict(got)

    qtbot.waitUntil(lambda: panel_counts() == dict(per_peer), timeout=3000)
    rows = win.upstreams.rows()
    for addr in per_peer:
        mine = [r for r in rows if r.addr == addr]
        assert sum(r.retries for r in mine) == retries[addr], addr
        assert sum(r.classes[4] for r in mine) == fives[addr], addr
    dead_rows = [r for r in rows if r.addr == dead]
    assert sum(r.failures for r in dead_rows) == per_peer[dead]  # never answered
    live = [r for r in rows if r.addr in lab.upstream_addrs]
    assert all(r.failures == 0 and r.p50 == r.p50 for r in live)  # answered, timed
    tree = win.upstreams.tree
    assert tree.topLevelItemCount() == len({r.group for r in rows}) >= 1
    shown_peers = {tree.topLevelItem(g).child(c).text(0) for g in range(tree.topLevelItemCount())
                   for c in range(tree.topLevelItem(g).childCount())}
    assert shown_peers == set(per_peer)
    # clicking a peer filters the table to the requests it served
    win.upstreams.click_peer(dead)
    assert win.filter_bar.edit.text() == f"upstream={dead}"
    qtbot.waitUntil(lambda: win.filter_text == f"upstream={dead}", timeout=2000)
    assert win.proxy.rowCount() == sum(1 for line in log if dead in log_peers(line))


def test_attach_dialog_lists_and_attaches_the_real_lab_nginx(lab_nginx: LabNginx, qtbot,  # type: ignore[no-untyped-def]
                                                             settings: QSettings, shots: Path) -> None:
    from PySide6.QtWidgets import QDialogButtonBox

    from ngxscope.ui.attach import AttachDialog

    lab = lab_nginx
    dlg = AttachDialog()  # the real lister: ngxscope.capture.procs.find_instances
    qtbot.addWidget(dlg)
    dlg.show()
    tree = dlg.tree
    items = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    item = next((it for it in items if it.data(0, Qt.ItemDataRole.UserRole) == lab.master_pid),
                None)
    assert item is not None, f"lab master {lab.master_pid} not listed: {[i.text(0) for i in items]}"
    kids = sorted(item.child(k).data(0, Qt.ItemDataRole.UserRole) for k in range(item.childCount()))
    assert kids == lab.worker_pids() and len(kids) == 2
    assert all("worker" in item.child(k).text(0) for k in range(item.childCount()))
    assert "nginx uprobes" in item.text(5)
    assert f":{lab.plain_port}" in item.text(4) and f":{lab.tls_port}" in item.text(4)
    assert item.text(1) == lab.nginx_bin
    tree.setCurrentItem(item)
    qtbot.wait(50)
    assert dlg.grab().save(str(shots / "attach-dialog-live.png"))
    dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert dlg.result() == 1 and dlg.selected_pid == lab.master_pid
    # what Capture → Attach… does with that choice: a live capture of that nginx
    win = MainWindow(None, settings=settings)
    qtbot.addWidget(win)
    try:
        win.attach(dlg.selected_pid)
        qtbot.waitUntil(lambda: any(e.kind == "attach" for e in win.events),
                        timeout=ATTACH_TIMEOUT_MS)
        assert Traffic(lab.plain_port, lab.tls_port).keepalive(True, ["/health"]) == 1
        qtbot.waitUntil(lambda: win.proxy.rowCount() == 1, timeout=5000)
        assert win.visible_exchanges()[0].path == "/health"
        assert win.status.state_kind == "live"
    finally:
        stop_window(win)


def test_screenshots_of_the_real_demo(lab_nginx: LabNginx, qtbot,  # type: ignore[no-untyped-def]
                                      settings: QSettings, shots: Path) -> None:
    """What `ngxscope demo` shows: the lab nginx under its demo traffic, captured live."""
    lab = lab_nginx
    win = open_window(qtbot, settings, lab)
    stop = threading.Event()
    feeder = threading.Thread(target=Traffic(lab.plain_port, lab.tls_port).run_forever,
                              args=(stop, 25.0), daemon=True)
    feeder.start()
    try:
        qtbot.wait(9000)

        def retried() -> Exchange | None:
            return next((e for e in reversed(win.visible_exchanges()) if len(e.upstream) > 1),
                        None)

        qtbot.waitUntil(lambda: retried() is not None, timeout=10_000)
        stop.set()
        ex = retried()
        assert ex is not None
        win.refresh_graphs()
        win.refresh_panels()
        # main window: a retried request selected, its Timing tab open
        win.select_exchange(ex)
        win.detail.setCurrentIndex(win.detail.indexOf(win.detail.timing))
        qtbot.wait(300)
        assert win.grab().save(str(shots / "demo-main-window.png"))
        assert win.detail.grab().save(str(shots / "demo-detail-timing.png"))
        win.detail.setCurrentIndex(win.detail.upstream_tab)
        qtbot.wait(100)
        assert win.detail.grab().save(str(shots / "demo-detail-upstream.png"))
        # the Upstreams panel, given more room
        win.docks["upstreams"].raise_()
        win.resizeDocks([win.docks["upstreams"]], [330], Qt.Orientation.Vertical)
        win.refresh_panels()
        qtbot.wait(300)
        assert win.upstreams.tree.topLevelItemCount() >= 1
        assert win.docks["upstreams"].grab().save(str(shots / "demo-upstreams.png"))
        win.docks["events"].raise_()
        qtbot.wait(100)
        assert win.docks["events"].grab().save(str(shots / "demo-events.png"))
    finally:
        stop.set()
        feeder.join(timeout=5)
        stop_window(win)
