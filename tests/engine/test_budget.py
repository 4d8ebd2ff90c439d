"""The over-budget rule: the runner's clock against the comparable runs' learned overhead."""

from __future__ import annotations

from sigmaloop.budget import check
from sigmaloop.config import JudgeConfig
from sigmaloop.models import Experiment, Status


def run(i: int, wall: float, budget: float = 10.0, evaluator: str = "prepare:x", device: str = "cpu",
        status: Status = Status.KEPT) -> Experiment:
    return Experiment(id=i, status=status, source="baseline", budget=budget, metric=1.0, evaluator=evaluator,
                      device=device, timings={"wall": wall})


CFG = JudgeConfig()
HISTORY = [run(1, 13.0), run(2, 13.4), run(3, 12.8), run(4, 13.1)]


def test_an_honest_run_is_within_budget():
    c = check(10.0, 13.6, 10.1, "prepare:x", "cpu", HISTORY, CFG, steps=80)
    assert not c.over and c.runs == 4 and 2.9 < c.overhead < 3.3


def test_training_longer_shows_on_the_runners_clock_even_when_the_script_lies():
    c = check(10.0, 19.0, 10.0, "prepare:x", "cpu", HISTORY, CFG, steps=80)
    assert c.over and "runner's clock" in c.describe() and "15.9" in c.describe()


def test_a_reported_training_time_past_the_budget_is_over():
    c = check(10.0, 13.0, 14.5, "prepare:x", "cpu", [], CFG, steps=100)  # nothing learned yet
    assert c.overhead is None and c.over and "reported 14.5s" in c.describe()
    # one slow step past the budget is how a trainer that checks the clock between steps ends
    assert not check(10.0, 13.0, 12.5, "prepare:x", "cpu", [], CFG, steps=2).over


def test_only_comparable_measured_runs_teach_the_overhead():
    others = [run(5, 40.0, budget=30.0), run(6, 30.0, device="cuda"), run(7, 30.0, evaluator="self-reported"),
              run(8, 30.0, status=Status.CRASHED)]
    c = check(10.0, 13.6, None, "prepare:x", "cpu", HISTORY + others, CFG)
    assert c.runs == 4 and not c.over


def test_a_noisy_machine_widens_the_tolerance():
    noisy = [run(1, 12.0), run(2, 16.0), run(3, 13.0), run(4, 18.0)]
    assert check(10.0, 21.0, None, "prepare:x", "cpu", noisy, CFG).tolerance > \
        check(10.0, 21.0, None, "prepare:x", "cpu", HISTORY, CFG).tolerance


def test_candidates_never_teach_the_overhead():
    slow_cheats = [Experiment(id=10 + i, status=Status.DISCARDED, source="user", budget=10.0, metric=1.0,
                              evaluator="prepare:x", device="cpu", timings={"wall": 30.0}) for i in range(5)]
    c = check(10.0, 19.0, None, "prepare:x", "cpu", HISTORY + slow_cheats, CFG)
    assert c.runs == 4 and c.over


def test_the_spread_term_is_capped():
    wild = [run(1, 11.0), run(2, 40.0), run(3, 12.0), run(4, 45.0)]
    c = check(10.0, 21.0, None, "prepare:x", "cpu", wild, CFG)
    assert c.tolerance <= 2.0 + 5.0 + 1e-9
