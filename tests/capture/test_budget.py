"""The CPU governor's policy, driven by fake clocks (no eBPF needed)."""

from __future__ import annotations

import pytest

from ngxscope.capture.budget import DEFAULT_BUDGET, MAX_ONE_IN, CpuGovernor, default_budget


class Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def spend(self, fraction: float, seconds: float = 1.0) -> None:
        self.wall += seconds
        self.cpu += fraction * seconds


def make(budget: float = 0.25) -> tuple[CpuGovernor, Clocks, list[int]]:
    clocks, applied = Clocks(), []
    gov = CpuGovernor(budget, applied.append, cpu_clock=lambda: clocks.cpu, wall_clock=lambda: clocks.wall)
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
