"""scripts/apt-private.sh: the private apt sources derived from the machine's own entries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "apt-private.sh"


def _run(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    etc = tmp_path / "etc"
    (etc / "sources.list.d").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    (tmp_path / "os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    env = {**os.environ, "NGXSCOPE_APT": str(tmp_path / "apt"), "NGXSCOPE_APT_ETC": str(etc),
           "NGXSCOPE_OS_RELEASE": str(tmp_path / "os-release")}
    return subprocess.run(["bash", str(SCRIPT), "sources"], capture_output=True, text=True,
                          env=env, check=False)


def test_deb822_and_one_line_entries(tmp_path: Path) -> None:
    key = tmp_path / "archive.gpg"
    key.write_bytes(b"k")
    deb822 = (f"Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\n"
              f"Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: {key}\n\n"
              f"Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
              f"Components: main\nSigned-By: {key}\n\n"
              f"Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\n"
              f"Signed-By: {key}\nEnabled: no\n")
    one_line = (f"deb [arch=amd64 signed-by={key}] http://other.invalid/debian bookworm main contrib\n"
                "deb http://unsigned.invalid/debian bookworm main\n"
                f"deb [signed-by={key}] http://old.invalid/debian bullseye main\n")
    proc = _run(tmp_path, {"sources.list.d/debian.sources": deb822, "sources.list": one_line})
    assert proc.returncode == 0, proc.stderr
    opt = f"[signed-by={key}]"
    assert sorted(proc.stdout.splitlines()) == sorted([
        f"deb {opt} http://mirror.invalid/debian bookworm main",
        f"deb-src {opt} http://mirror.invalid/debian bookworm main",
        f"deb {opt} http://mirror.invalid/debian bullseye main",
        f"deb {opt} http://mirror.invalid/debian bookworm-updates main",
        f"deb-src {opt} http://mirror.invalid/debian bookworm-updates main",
        f"deb {opt} http://mirror.invalid/debian-security bookworm-security main",
        f"deb-src {opt} http://mirror.invalid/debian-security bookworm-security main",
        f"deb {opt} http://other.invalid/debian bookworm main contrib",
        f"deb-src {opt} http://other.invalid/debian bookworm main contrib",
        f"deb {opt} http://other.invalid/debian bullseye main",
    ])
    # the system's own files are left as they were
    assert (tmp_path / "etc" / "sources.list").read_text() == one_line


def test_no_signed_entry_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _run(tmp_path, {"sources.list": "deb http://unsigned.invalid/debian bookworm main\n"})
    assert proc.returncode == 1
    assert proc.stderr == "apt-private: no signed bookworm entry in the system's apt sources\n"
