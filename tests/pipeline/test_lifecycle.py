"""LifecycleWatch talks to the run only through the callbacks it is given."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ngxscope.model import LifecycleEvent
from ngxscope.pipeline.lifecycle import LifecycleWatch
from ngxscope.pipeline.target import Target


class NoTracer:
    inodes: set[tuple[int, int]] = set()

    def forget_pid(self, pid: int) -> None:
        pass


def test_removed_session_file_fails_the_capture_once(tmp_path: Path) -> None:
    session = tmp_path / "s.ngxs"
    session.write_bytes(b"x")
    failures: list[BaseException] = []
    events: list[LifecycleEvent] = []
    watch = LifecycleWatch(emit=events.append, fail=failures.append, stopping=lambda: False,
                           files=[str(session)])
    target = Target(binary=str(tmp_path / "nginx"), version="1.22.1", method="nginx uprobes",
                    pids=[], master=None)
    tracer: Any = NoTracer()
    watch.start(target, tracer)
    watch.tick()
    assert failures == []
    os.unlink(session)
    watch._last_slow = 0.0
    watch.tick()
    watch._last_slow = 0.0
    watch.tick()
    assert len(failures) == 1 and "was removed while recording" in str(failures[0])
    assert events == []


def test_a_master_exit_is_named_so() -> None:
    watch = LifecycleWatch(emit=lambda ev: None, fail=lambda exc: None, stopping=lambda: False)
    watch.masters_ever.add(10)
    ev = watch.rename(LifecycleEvent(ts=1.0, kind="worker-exit", pid=10, detail="exit"))
    assert ev.kind == "master-exit"
    other = LifecycleEvent(ts=1.0, kind="worker-exit", pid=11, detail="exit")
    assert watch.rename(other) is other
