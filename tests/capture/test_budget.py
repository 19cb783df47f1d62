"""The CPU governor's policy, driven by fake clocks (no eBPF needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ngxscope.capture.budget import (
    DEFAULT_BUDGET,
    MAX_ONE_IN,
    MIN_SAMPLE_RATE,
    YIELD_BUDGET,
    YIELD_WAIT,
    CpuContention,
    CpuGovernor,
    default_budget,
)


class Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def spend(self, fraction: float, seconds: float = 1.0) -> None:
        self.wall += seconds
        self.cpu += fraction * seconds


def make(budget: float = 0.25, waits: list[float] | None = None, **opts: Any) -> tuple[CpuGovernor, Clocks, list[int]]:
    """A governor on fake clocks; with `waits`, nginx's CPU wait is waits[0] each period
    (change the list's first item to change it); `opts` go to CpuGovernor (period, fast)."""
    clocks, applied = Clocks(), []
    contention = (lambda: waits[0]) if waits is not None else None
    gov = CpuGovernor(budget, applied.append, cpu_clock=lambda: clocks.cpu, wall_clock=lambda: clocks.wall,
                      contention=contention, **opts)
    return gov, clocks, applied


def test_over_budget_doubles_and_far_over_quadruples() -> None:
    gov, clocks, applied = make()
    clocks.spend(0.3)
    step = gov.tick()
    assert step is not None and step.one_in == 2 and applied == [2]
    assert "1 in 2" in step.detail and "30%" in step.detail and "25%" in step.detail
    clocks.spend(0.9)
    assert gov.tick() is not None and applied == [2, 8]


def test_steps_by_the_overshoot_at_most_sixteen() -> None:
    gov, clocks, applied = make(0.02)
    clocks.spend(0.3)   # 15x over: x16 at once
    gov.tick()
    clocks.spend(0.05)  # 2.5x over: x4
    gov.tick()
    clocks.spend(1.0)   # 50x over: capped at x16
    gov.tick()
    assert applied == [16, 64, 1024]


def test_acts_once_per_period() -> None:
    gov, clocks, applied = make()
    clocks.spend(0.9, seconds=0.5)
    assert gov.tick() is None and applied == []
    clocks.spend(0.9, seconds=0.5)
    assert gov.tick() is not None


def test_halves_only_after_two_calm_periods_and_says_when_off() -> None:
    gov, clocks, applied = make()
    clocks.spend(0.3)
    gov.tick()
    clocks.spend(0.05)
    assert gov.tick() is None   # one calm period: maybe a lull inside a burst
    clocks.spend(0.05)
    step = gov.tick()
    assert step is not None and step.one_in == 1 and step.detail.startswith("payload sampling off")
    assert applied == [2, 1]


def test_between_half_and_full_budget_holds() -> None:
    gov, clocks, _applied = make()
    clocks.spend(0.3)
    gov.tick()
    for _ in range(5):
        clocks.spend(0.2)
        assert gov.tick() is None
    assert gov.one_in == 2


def test_never_beyond_the_sparsest_sampling() -> None:
    gov, clocks, applied = make()
    for _ in range(20):
        clocks.spend(1.0)
        gov.tick()
    assert gov.one_in == MAX_ONE_IN and applied[-1] == MAX_ONE_IN


def test_zero_budget_never_samples() -> None:
    gov, clocks, applied = make(0.0)
    clocks.spend(2.0)
    assert gov.tick() is None and applied == [] and gov.cpu == pytest.approx(2.0)


@pytest.mark.parametrize(("env", "expected"), [("", DEFAULT_BUDGET), ("10", 0.10), ("0", 0.0),
                                               ("junk", DEFAULT_BUDGET), ("-5", 0.0)])
def test_default_budget_from_environment(monkeypatch: pytest.MonkeyPatch, env: str, expected: float) -> None:
    monkeypatch.setenv("NGXSCOPE_CPU_BUDGET", env)
    assert default_budget() == pytest.approx(expected)


def test_yields_while_nginx_waits_for_a_cpu() -> None:
    waits = [0.20]
    gov, clocks, applied = make(0.25, waits)
    clocks.spend(0.20)  # under its own budget, but 20 % over nginx's shoulder: 0.20 / 0.03 → x8
    step = gov.tick()
    assert step is not None and step.one_in == 8 and gov.yielding
    assert "waited for one 20%" in step.detail and f"{YIELD_BUDGET:.0%} of a core" in step.detail
    for _ in range(4):  # well under even the yield budget, but nginx still waits: no relaxing
        clocks.spend(0.005)
        assert gov.tick() is None
    waits[0] = YIELD_WAIT * 0.8  # under the threshold, not under half of it: still yielding
    clocks.spend(0.005)
    assert gov.tick() is None and gov.yielding
    waits[0] = 0.0  # nginx has the CPUs it wants: the budget is back, sampling relaxes
    clocks.spend(0.005)
    assert gov.tick() is None and not gov.yielding
    clocks.spend(0.005)
    step = gov.tick()
    assert step is not None and step.one_in == 4 and applied == [8, 4]


def test_no_yield_without_waiting_or_under_the_yield_budget() -> None:
    gov, clocks, applied = make(0.25, [0.0])
    clocks.spend(0.20)
    assert gov.tick() is None and applied == []
    gov, clocks, applied = make(0.25, [0.5])
    clocks.spend(0.02)  # nginx waits, but the capture takes less than the yield budget
    assert gov.tick() is None and applied == [] and gov.yielding


def test_too_few_exchanges_are_never_sampled_and_end_sampling() -> None:
    """Over budget (and yielding) with a few hundred exchanges a second: the CPU is not theirs,
    sampling them would only cost rows. Once the load drops under the floor, sampling ends
    at once, yielding or not."""
    clocks, applied, done = Clocks(), [], [0]
    gov = CpuGovernor(0.25, applied.append, cpu_clock=lambda: clocks.cpu, wall_clock=lambda: clocks.wall,
                      contention=lambda: 0.5, exchanges=lambda: done[0])
    done[0] += int(MIN_SAMPLE_RATE * 0.4)
    clocks.spend(0.9)
    assert gov.tick() is None and applied == [] and gov.yielding
    assert gov.rate == pytest.approx(MIN_SAMPLE_RATE * 0.4)
    done[0] += int(MIN_SAMPLE_RATE * 5)   # a real load: sampling starts
    clocks.spend(0.9)
    assert gov.tick() is not None and gov.one_in == 16
    done[0] += int(MIN_SAMPLE_RATE * 5 / 16)   # the same load, a sixteenth kept: estimated whole
    clocks.spend(0.02)
    assert gov.tick() is None and gov.rate == pytest.approx(MIN_SAMPLE_RATE * 5, rel=0.01)
    done[0] += 10   # the load is gone (160 a second)
    clocks.spend(0.02)
    step = gov.tick()
    assert step is not None and step.one_in == 1 and applied == [16, 1]
    assert "too few for sampling" in step.detail


def fake_proc(root: Path, master: int, delays: dict[int, int], psi_us: int | None = None) -> None:
    (root / str(master) / "task" / str(master)).mkdir(parents=True, exist_ok=True)
    (root / str(master) / "task" / str(master) / "children").write_text(" ".join(map(str, delays)) + " \n")
    for pid, delay in delays.items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "schedstat").write_text(f"123456 {delay} 42\n")
    if psi_us is not None:
        (root / "pressure").mkdir(exist_ok=True)
        (root / "pressure" / "cpu").write_text(
            f"some avg10=1.00 avg60=2.00 avg300=3.00 total={psi_us}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")


def test_contention_is_the_worst_workers_share_or_the_machines(tmp_path: Path) -> None:
    now = [100.0]
    fake_proc(tmp_path, 10, {11: 5_000_000_000, 12: 7_000_000_000}, psi_us=1_000_000)
    wait = CpuContention(10, proc=str(tmp_path), clock=lambda: now[0])
    now[0] += 2.0  # worker 11 waited 0.1 s of 2, worker 12 0.5 s of 2; the machine 0.2 s
    fake_proc(tmp_path, 10, {11: 5_100_000_000, 12: 7_500_000_000}, psi_us=1_200_000)
    assert wait() == pytest.approx(0.25)
    assert (wait.nginx, wait.machine) == (pytest.approx(0.25), pytest.approx(0.1))
    now[0] += 1.0  # a reload: 12 is gone, 13 is new (counted from its second sighting)
    (tmp_path / "10" / "task" / "10" / "children").write_text("11 13\n")
    fake_proc(tmp_path, 10, {11: 5_130_000_000, 13: 9_000_000_000}, psi_us=1_600_000)
    assert wait() == pytest.approx(0.4)   # now the machine's 0.4 s of 1 is the larger
    assert wait.nginx == pytest.approx(0.03)


def test_contention_without_schedstat_or_psi_is_zero(tmp_path: Path) -> None:
    wait = CpuContention(None, [4242], proc=str(tmp_path))
    assert wait() == 0.0


def test_contention_reads_this_kernel() -> None:
    """The real /proc: this process's own schedstat and the machine's PSI parse (a burst of
    busy work between two calls cannot make the share negative or above one)."""
    wait = CpuContention(None, [os.getpid()])
    sum(i * i for i in range(200_000))
    share = wait()
    assert 0.0 <= share <= 1.0
    assert Path("/proc/self/schedstat").exists(), "the kernel has no schedstat: nginx's wait is unseen"
    assert Path("/proc/pressure/cpu").exists(), "the kernel has no PSI: the machine's wait is unseen"


def test_far_over_budget_steps_up_before_the_period_ends() -> None:
    gov, clocks, applied = make(period=0.5, fast=0.1)
    clocks.spend(0.9, seconds=0.05)
    assert gov.tick() is None   # too little of a period to judge
    clocks.spend(0.9, seconds=0.05)
    step = gov.tick()           # 0.1 s at 3.6x the budget: at once
    assert step is not None and step.one_in == 4 and applied == [4]
    clocks.spend(0.4, seconds=0.2)   # over budget, but not twice: waits for the whole period
    assert gov.tick() is None
    clocks.spend(0.4, seconds=0.3)
    assert gov.tick() is not None and applied == [4, 8]
    clocks.spend(0.01, seconds=0.1)  # under budget: nothing before the period's end
    assert gov.tick() is None and applied == [4, 8]


def test_fast_step_up_uses_the_yield_budget_while_yielding() -> None:
    gov, clocks, applied = make(waits=[0.5], period=0.5, fast=0.1)
    clocks.spend(0.6, seconds=0.5)
    assert gov.tick() is not None and gov.yielding and applied == [16]
    clocks.spend(0.1, seconds=0.2)   # 0.1 of a core: under 0.25, but over twice the yield budget
    assert gov.tick() is not None and applied == [16, 64]
