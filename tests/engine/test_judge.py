"""The judge on hand-made journals: noise estimate, pairing, and every kind of verdict."""

from __future__ import annotations

import math

import pytest

from sigmaloop.config import JudgeConfig
from sigmaloop.judge import Judge, pooled_sigma, reference_for
from sigmaloop.lifecycle import Reason
from sigmaloop.models import Experiment, Status


def run(i: int, code: str, seed: int, metric: float, status=Status.KEPT, source="baseline") -> Experiment:
    return Experiment(id=i, status=status, source=source, code_hash=code, seed=seed, metric=metric)


BASE = [run(1, "base", 42, 1.500), run(2, "base", 43, 1.520)]


def test_pooled_sigma_uses_only_repeats_of_the_same_code():
    exps = [*BASE, run(3, "other", 42, 9.0, Status.DISCARDED, "tune")]
    sigma, dof = pooled_sigma(exps)
    assert dof == 1
    assert sigma == pytest.approx(math.sqrt(2 * 0.01**2))  # two values 0.02 apart


def test_pooled_sigma_ignores_unfinished_and_crashed_runs():
    exps = [*BASE, run(3, "base", 44, 5.0, Status.RUNNING), run(4, "base", 45, 5.0, Status.CRASHED)]
    assert pooled_sigma(exps) == pooled_sigma(BASE)
    assert pooled_sigma([BASE[0]]) == (None, 0)


def test_reference_is_per_seed_mean_of_that_code():
    exps = [*BASE, run(3, "base", 42, 1.510)]
    ref = reference_for(exps, "base")
    assert ref.by_seed == {42: pytest.approx(1.505), 43: pytest.approx(1.520)}
    assert ref.value == pytest.approx((1.505 + 1.520) / 2)


def test_noise_sized_change_is_discarded_with_its_z():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0))
    ref = reference_for(BASE, "base")
    sigma = judge.sigma(BASE, ref)
    v = judge.judge([(42, 1.495)], ref, sigma)
    assert v.status == Status.DISCARDED
    assert v.reason == Reason.WITHIN_NOISE and v.z == pytest.approx(0.005 / (math.sqrt(2) * sigma))


def test_clear_improvement_needs_a_confirmation_then_is_kept():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0))
    ref = reference_for(BASE, "base")
    sigma = judge.sigma(BASE, ref)  # sigma taken as known here (no dof): the rule before t
    first = judge.judge([(42, 1.45)], ref, sigma)
    assert first.status == Status.RUNNING and first.needs_confirmation
    assert judge.pick_seed(ref, exclude=[42]) == 43
    final = judge.judge([(42, 1.45), (43, 1.47)], ref, sigma)
    assert final.status == Status.KEPT
    assert final.delta == pytest.approx(-0.05)  # 3.3% of the metric: plausible
    assert final.reason == Reason.IMPROVED and final.runs == 2
    assert final.numbers == {"runs": 2, "t_crit": 2.0}


def test_confirmation_that_does_not_improve_discards():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0))
    ref = reference_for(BASE, "base")
    sigma = judge.sigma(BASE, ref)
    final = judge.judge([(42, 1.30), (43, 1.53)], ref, sigma)
    assert final.status == Status.DISCARDED and final.reason == Reason.NOT_CONFIRMED
    assert final.detail == "-0.2000, +0.0100 by seed"


def test_worse_is_called_worse():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0))
    ref = reference_for(BASE, "base")
    v = judge.judge([(42, 1.9)], ref, judge.sigma(BASE, ref))
    assert v.status == Status.DISCARDED and v.reason == Reason.WORSE


def test_maximize_direction_flips_improvement():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0), lower_is_better=False, metric="accuracy")
    ref = reference_for(BASE, "base")
    sigma = judge.sigma(BASE, ref)
    assert judge.judge([(42, 1.40)], ref, sigma).status == Status.DISCARDED
    assert judge.judge([(42, 1.60)], ref, sigma).needs_confirmation


def test_sigma_floor_stops_identical_repeats_from_making_everything_significant():
    same = [run(1, "base", 42, 1.5), run(2, "base", 43, 1.5)]
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0, min_sigma_rel=0.001))
    ref = reference_for(same, "base")
    sigma = judge.sigma(same, ref)
    assert sigma == pytest.approx(0.0015)
    assert judge.judge([(42, 1.499)], ref, sigma).status == Status.DISCARDED


def test_judging_without_noise_estimate_or_pairing_is_an_error():
    judge = Judge(JudgeConfig())
    ref = reference_for(BASE, "base")
    with pytest.raises(ValueError, match="baseline"):
        judge.judge([(42, 1.4)], ref, None)
    with pytest.raises(ValueError, match="reference"):
        judge.judge([(42, 1.4)], reference_for([], "base"), 0.01)


def test_a_seed_without_its_own_reference_run_is_compared_with_the_mean():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0))
    ref = reference_for(BASE, "base")
    v = judge.judge([(7, 1.505)], ref, judge.sigma(BASE, ref))
    assert v.delta == pytest.approx(1.505 - 1.510)
