"""The judge's statistics: Student t on sigma's dof, comparable runs only, implausible gains."""

from __future__ import annotations

import math

import pytest

from sigmaloop.config import JudgeConfig
from sigmaloop.judge import (
    Judge,
    alpha_for,
    comparable_key,
    critical_value,
    pooled_sigma,
    reference_for,
    t_cdf,
    t_ppf,
)
from sigmaloop.lifecycle import Reason
from sigmaloop.models import Experiment, Status
from sigmaloop.state import noise_advice

WHERE = {"budget": 60.0, "evaluator": "prepare:abc", "data": "stdlib-v8192", "device": "cpu"}


def run(i: int, code: str, seed: int, metric: float, status=Status.KEPT, source="baseline", **where) -> Experiment:
    return Experiment(id=i, status=status, source=source, code_hash=code, seed=seed, metric=metric,
                      **{**WHERE, **where})


def journal(seeds: int, spread: float = 0.02, value: float = 1.5) -> list[Experiment]:
    """A baseline on ``seeds`` seeds whose sample SD is exactly ``spread``."""
    offsets = [i - (seeds - 1) / 2 for i in range(seeds)]
    scale = spread / math.sqrt(sum(o * o for o in offsets) / (seeds - 1))
    return [run(i + 1, "base", 42 + i, value + o * scale) for i, o in enumerate(offsets)]


# -- Student's t ------------------------------------------------------------------------------
@pytest.mark.parametrize(("p", "dof", "table"), [
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 5, 2.5706), (0.95, 10, 1.8125),
    (0.99, 3, 4.5407), (0.995, 30, 2.7500), (0.9, 1000, 1.2824),
])
def test_t_quantiles_match_the_tables(p, dof, table):
    assert t_ppf(p, dof) == pytest.approx(table, abs=1e-4)
    assert t_cdf(t_ppf(p, dof), dof) == pytest.approx(p, abs=1e-12)
    assert t_ppf(1 - p, dof) == pytest.approx(-table, abs=1e-4)


def test_k_is_a_one_sided_level_and_the_critical_value_falls_with_dof():
    assert alpha_for(2.0) == pytest.approx(0.02275, abs=1e-5)
    crit = [critical_value(2.0, d) for d in (1, 2, 3, 5, 10, 100, 10_000)]
    assert crit[0] == pytest.approx(13.97, abs=0.01) and crit[1] == pytest.approx(4.53, abs=0.01)
    assert crit == sorted(crit, reverse=True) and crit[-1] == pytest.approx(2.0, abs=1e-3)
    assert critical_value(2.0, None) == 2.0 and critical_value(2.0, 0) == math.inf


def test_a_z_that_passes_with_known_sigma_is_refused_at_dof_1_and_2_and_kept_at_large_dof():
    judge = Judge(JudgeConfig(seeds=[42, 43, 44], k=2.0))
    for seeds, kept in ((2, False), (3, False), (40, True)):
        base = journal(seeds, spread=0.02)
        ref = reference_for(base, "base", **WHERE)
        sigma, dof = judge.noise(base, ref)
        assert dof == seeds - 1 and sigma == pytest.approx(0.02)
        # two paired runs, each 0.06 better: z = 0.06 / (√2·0.02/√2) = 3
        runs = [(s, ref.by_seed[s] - 0.06) for s in (42, 43)]
        v = judge.judge(runs, ref, sigma, dof=dof)
        assert v.z == pytest.approx(3.0)
        assert judge.judge(runs, ref, sigma).status == Status.KEPT  # sigma taken as known: z 3 >= k 2
        assert (v.status == Status.KEPT) is kept, (seeds, v)
        assert v.numbers["dof"] == dof and v.numbers["t_crit"] == pytest.approx(critical_value(2.0, dof), abs=1e-4)
        if not kept:
            assert v.reason == Reason.WITHIN_NOISE


def test_the_first_run_is_a_screen_at_confirm_z_and_low_dof_still_earns_confirmations():
    judge = Judge(JudgeConfig(seeds=[42, 43], k=2.0, confirm_z=1.0))
    base = journal(2, spread=0.02)
    ref = reference_for(base, "base", **WHERE)
    sigma, dof = judge.noise(base, ref)
    assert dof == 1
    first = judge.judge([(42, ref.by_seed[42] - 0.03)], ref, sigma, dof=dof)  # z ≈ 1.06
    assert first.needs_confirmation and first.status == Status.RUNNING
    small = judge.judge([(42, ref.by_seed[42] - 0.02)], ref, sigma, dof=dof)  # z ≈ 0.71
    assert small.status == Status.DISCARDED and small.reason == Reason.WITHIN_NOISE
    # no seed left to confirm on: the single run is judged at the full bar, never at the screen
    alone = judge.judge([(42, ref.by_seed[42] - 0.03)], ref, sigma, dof=dof, confirm=False)
    assert alone.status == Status.DISCARDED and not alone.needs_confirmation


def test_the_candidates_own_runs_do_not_count_toward_its_dof():
    # a seed-blind edit (identical runs) would otherwise shrink its own noise estimate
    judge = Judge(JudgeConfig(seeds=[42, 43, 44], k=2.0))
    base = journal(3, spread=0.02)
    ref = reference_for(base, "base", **WHERE)
    sigma, dof = judge.noise(base, ref)
    v = judge.judge([(42, ref.by_seed[42] - 0.06), (43, ref.by_seed[43] - 0.06)], ref, sigma, dof=dof)
    assert v.dof == 2 and v.status == Status.DISCARDED


# -- comparable or not compared ---------------------------------------------------------------
def test_runs_at_another_budget_device_evaluator_or_data_are_not_in_the_reference():
    exps = [
        *journal(3),
        run(10, "base", 42, 9.0, budget=30.0),
        run(11, "base", 42, 9.0, device="cuda:H100"),
        run(12, "base", 42, 9.0, evaluator="self-reported"),
        run(13, "base", 42, 9.0, data="climbmix-v8192"),
        run(14, "base", 42, 9.0, evaluator="", data="", device=""),  # unknown only matches unknown
    ]
    ref = reference_for(exps, "base", **WHERE)
    assert sorted(ref.ids) == [1, 2, 3] and ref.value == pytest.approx(1.5)
    assert ref.key == (60.0, "prepare:abc", "stdlib-v8192", "cpu")
    on_gpu = reference_for(exps, "base", budget=60.0, evaluator="prepare:abc", data="stdlib-v8192", device="cuda:H100")
    assert on_gpu.ids == [11]
    unknown = reference_for(exps, "base", budget=None)
    assert unknown.ids == [14]  # budget None: any budget, but "" fields match only ""
    any_budget = reference_for(exps, "base", budget=None, **{k: v for k, v in WHERE.items() if k != "budget"})
    assert sorted(any_budget.ids) == [1, 2, 3, 10]
    anywhere = reference_for(exps, "base", evaluator=None, data=None, device=None)
    assert sorted(anywhere.ids) == [1, 2, 3, 10, 11, 12, 13, 14]
    assert comparable_key(exps[3]) == (30.0, "prepare:abc", "stdlib-v8192", "cpu")


def test_sigma_is_not_pooled_across_budgets_devices_or_evaluators():
    exps = [
        *journal(3, spread=0.02),
        run(10, "base", 42, 1.0, budget=30.0), run(11, "base", 43, 2.0, budget=30.0),
        run(12, "base", 42, 1.0, device="cuda:H100"), run(13, "base", 43, 2.0, device="cuda:H100"),
        run(14, "base", 42, 1.0, evaluator="self-reported"), run(15, "base", 43, 2.0, evaluator="self-reported"),
        # another code at the same key pools (that is what pooling is)
        run(16, "other", 42, 1.6, source="tune"), run(17, "other", 43, 1.6, source="tune"),
    ]
    judge = Judge(JudgeConfig())
    ref = reference_for(exps, "base", **WHERE)
    sigma, dof = judge.noise(exps, ref)
    assert dof == 3 and sigma == pytest.approx(math.sqrt(2 * 0.02**2 / 3))
    assert pooled_sigma(exps, ref.key) == (pytest.approx(sigma), 3)
    # without a key every group is pooled, but a group is still one code under one key
    assert pooled_sigma(exps)[1] == 6


# -- implausible gains ------------------------------------------------------------------------
def test_a_confirmed_huge_gain_is_held_as_implausible_with_what_it_crossed():
    judge = Judge(JudgeConfig(seeds=[42, 43, 44], k=2.0))
    base = journal(20, spread=0.02, value=2.1)
    ref = reference_for(base, "base", **WHERE)
    sigma, dof = judge.noise(base, ref)
    runs = [(42, ref.by_seed[42] - 1.16), (43, ref.by_seed[43] - 1.16)]
    first = judge.judge(runs[:1], ref, sigma, dof=dof)
    assert first.needs_confirmation and first.reason == Reason.IMPROVED  # never held before its confirmation
    v = judge.judge(runs, ref, sigma, dof=dof)
    assert v.status == Status.DISCARDED and v.reason == Reason.IMPLAUSIBLE
    assert v.delta == pytest.approx(-1.16) and v.z == pytest.approx(58.0)
    assert v.detail == "-1.16 is 55% of the metric; over 5% and 58σ; over 30σ"
    assert v.numbers["runs"] == 2 and "t_crit" in v.numbers


def test_sigma_threshold_alone_and_a_modest_gain_kept():
    judge = Judge(JudgeConfig(seeds=[42, 43, 44], k=2.0))
    base = journal(20, spread=0.001, value=2.0)  # quiet: 0.06 is 60σ but only 3% of the metric
    ref = reference_for(base, "base", **WHERE)
    sigma, dof = judge.noise(base, ref)
    huge_z = judge.judge([(42, ref.by_seed[42] - 0.06), (43, ref.by_seed[43] - 0.06)], ref, sigma, dof=dof)
    assert huge_z.reason == Reason.IMPLAUSIBLE and huge_z.detail == "60σ; over 30σ"
    modest = judge.judge([(42, ref.by_seed[42] - 0.01), (43, ref.by_seed[43] - 0.01)], ref, sigma, dof=dof)
    assert modest.status == Status.KEPT and modest.reason == Reason.IMPROVED and modest.detail == ""


def test_implausible_works_in_the_maximize_direction():
    judge = Judge(JudgeConfig(seeds=[42, 43, 44], k=2.0), lower_is_better=False, metric="accuracy")
    base = journal(20, spread=0.005, value=0.5)
    ref = reference_for(base, "base", **WHERE)
    sigma, dof = judge.noise(base, ref)
    v = judge.judge([(42, ref.by_seed[42] + 0.1), (43, ref.by_seed[43] + 0.1)], ref, sigma, dof=dof)
    assert v.reason == Reason.IMPLAUSIBLE and "+0.1 is 20% of the metric" in v.detail


# -- the advisor ------------------------------------------------------------------------------
def test_the_keep_threshold_grows_at_low_dof_and_the_advice_asks_for_seeds():
    judge = Judge(JudgeConfig(k=2.0))
    t = {dof: judge.keep_threshold(0.01, dof) for dof in (1, 2, 5, 50)}
    assert t[1] > t[2] > t[5] > t[50]
    assert t[5] == pytest.approx(critical_value(2.0, 5) * 0.01)  # the mean of 2 paired runs
    assert judge.keep_threshold(0.01, None, runs=1) == pytest.approx(2.0 * math.sqrt(2) * 0.01)
    low = noise_advice(t[1], 2.0, "val_bpb", 2, dof=1, k=2.0)
    assert low is not None and "1 degree of freedom" in low and "More seeds" in low and "now 2" in low
    assert noise_advice(t[2], 2.0, "val_bpb", 3, dof=2, k=2.0) is not None  # t_crit 4.5: > 2× k
    assert noise_advice(t[5], 10.0, "val_bpb", 6, dof=5, k=2.0) is None  # 0.3% of the metric, dof 5


def test_a_borderline_verdict_earns_one_more_seed_up_to_max_runs():
    exps = journal(6, spread=0.02)
    judge = Judge(JudgeConfig(seeds=list(range(42, 48)), k=2.0, implausible_pct=100.0))
    ref = reference_for(exps, "base", **WHERE)
    sigma, dof = judge.noise(exps, ref)
    crit = judge.critical_value(dof)

    def runs(n: int, z: float) -> list[tuple[int, float]]:  # n paired runs whose mean gain is z noise units
        gain = z * math.sqrt(2.0) * sigma / math.sqrt(n)
        return [(s, ref.by_seed[s] - gain) for s in list(ref.by_seed)[:n]]

    near = judge.judge(runs(2, crit - 0.5), ref, sigma, dof=dof)
    assert near.needs_confirmation and near.status == Status.RUNNING and "borderline" in near.detail
    far = judge.judge(runs(2, crit - 1.5), ref, sigma, dof=dof)  # outside the band: decided now
    assert not far.needs_confirmation and far.reason == Reason.WITHIN_NOISE
    capped = judge.judge(runs(3, crit - 0.5), ref, sigma, dof=dof)  # max_runs reached: decided
    assert not capped.needs_confirmation and capped.status == Status.DISCARDED
    assert not Judge(JudgeConfig(seeds=list(range(42, 48)), max_runs=2)).judge(
        runs(2, crit - 0.5), ref, sigma, dof=dof).needs_confirmation
