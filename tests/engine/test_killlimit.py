"""The kill limit rule on journal rows: what it learns from, and what it says when it fires."""

from __future__ import annotations

import pytest

from sigmaloop.killlimit import RECENT_RUNS, fixed_overhead, kill_limit
from sigmaloop.models import Experiment, KillLimit, Status


def run(i: int, wall: float, train: float | None = None, budget: float = 10.0,
        status: Status = Status.KEPT, metric: float | None = 1.0) -> Experiment:
    timings = {"wall": wall} if train is None else {"wall": wall, "train": train}
    return Experiment(id=i, status=status, source="baseline", budget=budget, metric=metric, timings=timings)


def test_first_run_gets_the_generous_configured_limit():
    limit = kill_limit(10.0, grace=120.0, margin=5.0, history=[])
    assert limit == KillLimit.initial(10.0, 120.0)
    assert limit.seconds == 140.0 and not limit.learned
    assert "2 x budget + grace = 140s" in limit.rule()
    assert "no measured run at this budget yet" in limit.rule()
    assert "experiment.grace" in limit.advice()


def test_learns_the_largest_recent_overhead_from_wall_minus_training_time():
    history = [run(1, wall=14.0, train=10.5), run(2, wall=16.0, train=10.2), run(3, wall=13.0)]
    limit = kill_limit(10.0, grace=120.0, margin=5.0, history=history)
    # overheads 3.5, 5.8 and (no training_seconds: the budget) 3.0 -> 5.8
    assert limit.overhead == pytest.approx(5.8)
    assert limit.runs == 3 and limit.learned
    assert limit.seconds == pytest.approx(10.0 + 2 * 5.8 + 5.0)
    assert "budget 10s + 2 x overhead 5.8s + kill_margin 5s = 26.6s" in limit.rule()
    assert "last 3 measured runs" in limit.rule()
    assert "experiment.kill_margin" in limit.advice()


def test_only_measured_runs_of_the_same_budget_count():
    history = [
        run(1, wall=500.0, budget=300.0),  # another budget
        run(2, wall=90.0, status=Status.TIMEOUT, metric=None),  # killed: says nothing
        run(3, wall=3.0, status=Status.CRASHED, metric=None),
        run(4, wall=11.0, train=10.0),
        Experiment(id=5, status=Status.DISCARDED, source="tune", budget=10.0, metric=1.0),  # no timings
    ]
    limit = kill_limit(10.0, grace=120.0, margin=2.0, history=history)
    assert limit.runs == 1 and limit.overhead == pytest.approx(1.0)
    assert limit.seconds == pytest.approx(14.0)
    assert fixed_overhead(history[2]) is None and fixed_overhead(history[4]) is None


def test_an_old_slow_outlier_ages_out_and_overhead_is_never_negative():
    slow = run(1, wall=60.0, train=10.0)
    fast = [run(i, wall=10.5, train=10.0) for i in range(2, 2 + RECENT_RUNS)]
    assert kill_limit(10.0, 120.0, 1.0, [slow, *fast[:-1]]).overhead == pytest.approx(50.0)
    assert kill_limit(10.0, 120.0, 1.0, [slow, *fast]).overhead == pytest.approx(0.5)
    # a script that ignores the budget and stops early: overhead 0, not negative
    assert fixed_overhead(run(1, wall=2.0)) == 0.0


def test_learning_never_loosens_the_configured_limit():
    history = [run(1, wall=80.0, train=10.0)]  # 70 s of overhead: learned would be 155 s
    limit = kill_limit(10.0, grace=60.0, margin=5.0, history=history)
    assert limit.seconds == 80.0 and not limit.learned
    assert "2 x budget + grace = 80s" in limit.rule() and "no shorter" in limit.rule()
    assert "experiment.grace" in limit.advice()
