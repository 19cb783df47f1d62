"""The Attach dialog with an injected lister (no /proc probing)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from PySide6.QtCore import Qt

from ngxscope.ui.attach import AttachDialog, instance_row


def proc(pid: int, role: str = "worker") -> SimpleNamespace:
    return SimpleNamespace(pid=pid, ppid=1, role=role, exe="/usr/sbin/nginx",
                           cmdline=[f"nginx: {role} process"], user="www-data")


def instances(include_all: bool) -> list[SimpleNamespace]:
    a = SimpleNamespace(
        master=proc(1200, "master"), workers=[proc(1201), proc(1202)],
        binary=SimpleNamespace(flavor="nginx", version="1.22.1", tls=True,
                               tls_library="OpenSSL 3.0.11 (libssl.so.3)", method="uprobes",
                               method_reason=""),
        listen=["0.0.0.0:80", "0.0.0.0:443", "[::]:443"], capture_method="uprobes",
        capture_reason="", label="nginx 1.22.1 (/etc/nginx/nginx.conf)",
    )
    b = SimpleNamespace(
        master=proc(3400, "master"), workers=[proc(3401)],
        binary=SimpleNamespace(flavor="openresty", version="1.21.4.3", tls=True,
                               tls_library="BoringSSL (static)", method=None,
                               method_reason="stripped binary"),
        listen=["127.0.0.1:8443"], capture_method=None,
        capture_reason="stripped binary: no symbols for ngx_* functions", label="openresty",
    )
    out = [a, b]
    if include_all:
        out.append(SimpleNamespace(master=proc(99, "master"), workers=[], binary=None,
                                   listen=[], capture_method=None, capture_reason=""))
    return out


def test_instance_row_is_defensive() -> None:
    row = instance_row(SimpleNamespace())
    assert row[0].startswith("?") and row[5].startswith("cannot capture")
    row = instance_row(instances(False)[0])
    assert row[2] == "nginx 1.22.1" and row[3].startswith("OpenSSL") and row[5] == "uprobes"
    assert "0.0.0.0:443" in row[4]


def test_tree_filter_toggle_and_attach(qtbot, shots: Path) -> None:  # type: ignore[no-untyped-def]
    calls: list[bool] = []

    def lister(include_all: bool):  # type: ignore[no-untyped-def]
        calls.append(include_all)
        return instances(include_all)

    dlg = AttachDialog(lister=lister)
    qtbot.addWidget(dlg)
    dlg.show()
    tree = dlg.tree
    assert tree.topLevelItemCount() == 2 and tree.topLevelItem(0).childCount() == 2
    assert tree.topLevelItem(1).text(5) == "cannot capture"
    assert "stripped binary" in tree.topLevelItem(1).text(6)
    assert "2 nginx instances" in dlg.message.text()
    qtbot.wait(50)
    assert dlg.grab().save(str(shots / "attach-dialog-sample.png"))
    dlg.filter.setText("openresty")
    assert tree.topLevelItem(0).isHidden() and not tree.topLevelItem(1).isHidden()
    dlg.filter.setText("")
    dlg.show_all.setChecked(True)
    assert calls == [False, True] and tree.topLevelItemCount() == 3
    tree.setCurrentItem(tree.topLevelItem(0).child(1))
    tree.setFocus()
    qtbot.keyClick(tree, Qt.Key.Key_Return)
    assert dlg.selected_pid == 1202 and dlg.result() == 1


def test_double_click_master(qtbot) -> None:  # type: ignore[no-untyped-def]
    dlg = AttachDialog(lister=instances)
    qtbot.addWidget(dlg)
    item = dlg.tree.topLevelItem(1)
    dlg.tree.setCurrentItem(item)
    dlg.tree.itemDoubleClicked.emit(item, 0)
    assert dlg.selected_pid == 3400


def test_lister_failure_and_empty(qtbot) -> None:  # type: ignore[no-untyped-def]
    def broken(_all: bool):  # type: ignore[no-untyped-def]
        raise PermissionError("no /proc")

    dlg = AttachDialog(lister=broken)
    qtbot.addWidget(dlg)
    assert "Cannot list" in dlg.message.text() and "no /proc" in dlg.message.text()
    dlg2 = AttachDialog(lister=lambda _a: [])
    qtbot.addWidget(dlg2)
    assert "No nginx found" in dlg2.message.text()
    dlg2.accept()
    assert dlg2.selected_pid is None
