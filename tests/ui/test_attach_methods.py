"""The Attach dialog with one nginx of each kind running: each row names its capture method.

Real processes, the real lister (ngxscope.capture.procs.find_instances), filtered to the four
nginx started here (other nginx may run on the machine). Writes screenshots/attach-dialog.png.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from capture.test_fallback import renamed_nginx
from capture.test_static_openssl import built
from ngxscope.capture.binary import (
    METHOD_BUILTIN_SSL,
    METHOD_LIBSSL_SYSCALLS,
    METHOD_NGINX_UPROBES,
)
from ngxscope.lab.nginx import LabNginx
from ngxscope.ui.attach import AttachDialog, default_lister

pytestmark = pytest.mark.capture  # every test starts real nginx processes


@pytest.fixture
def four_kinds() -> Iterator[list[tuple[LabNginx, str, str]]]:
    """(lab, binary kind, expected method) for Debian's nginx, both static builds and the
    Debian copy without ngx_* symbols, all running at once."""
    copy_dir = Path(tempfile.mkdtemp(prefix="ngxscope-renamed-"))  # a short path to show
    kinds = [
        ("/usr/sbin/nginx", "Debian nginx (libssl.so.3)", METHOD_NGINX_UPROBES),
        (built("static-ssl"), "static OpenSSL, stripped", METHOD_NGINX_UPROBES),
        (built("static-ssl-nosym"), "static OpenSSL, no symbols", METHOD_BUILTIN_SSL),
        (str(renamed_nginx(copy_dir)), "Debian copy, ngx_* renamed", METHOD_LIBSSL_SYSCALLS),
    ]
    labs: list[tuple[LabNginx, str, str]] = []
    try:
        for binary, kind, method in kinds:
            lab = LabNginx(workers=1, nginx_bin=binary)
            labs.append((lab, kind, method))
            lab.start()
        yield labs
    finally:
        for lab, _kind, _method in labs:
            lab.stop()
        shutil.rmtree(copy_dir, ignore_errors=True)


def test_attach_dialog_shows_the_method_per_target(four_kinds: list[tuple[LabNginx, str, str]],
                                                  qtbot: Any, shots: Path) -> None:
    masters = {lab.master_pid for lab, _k, _m in four_kinds}

    def ours(include_all: bool) -> Sequence[Any]:
        return [i for i in default_lister(include_all) if i.master.pid in masters]

    dlg = AttachDialog(lister=ours)
    qtbot.addWidget(dlg)
    dlg.show()
    tree = dlg.tree
    rows = {tree.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole): tree.topLevelItem(i)
            for i in range(tree.topLevelItemCount())}
    assert set(rows) == masters
    for lab, kind, method in four_kinds:
        item = rows[lab.master_pid]
        assert item.text(1) == lab.nginx_bin, kind
        assert item.text(5) == method, (kind, item.text(5))
        reason = item.toolTip(5)
        assert reason.startswith(method), (kind, reason)
        if method == METHOD_BUILTIN_SSL:
            assert "found by their OpenSSL 3 error sites" in reason
            assert "found by their OpenSSL 3 error sites" in item.text(6)
        if method == METHOD_LIBSSL_SYSCALLS:
            assert "libssl.so.3" in reason
    qtbot.wait(50)
    tree.setCurrentItem(rows[four_kinds[2][0].master_pid])
    assert dlg.grab().save(str(shots / "attach-dialog.png"))
