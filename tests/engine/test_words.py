"""A verdict's words, read once: one sign convention (a size with better/worse, σ a magnitude,
then the bar), for either direction of the metric; the longer story `sigmaloop show` tells."""

from __future__ import annotations

import re

import pytest

from sigmaloop.lifecycle import Reason, delta_words, describe, explain, short
from sigmaloop.models import Experiment, Status

# a sign in front of a number: what the words must never put next to a σ of the other sign
SIGNED = re.compile(r"(?<![\w.])[-+−]\d")


def judged(reason: Reason, delta: float, z: float, status: Status = Status.DISCARDED, **kw) -> Experiment:
    return Experiment(id=5, status=status, source="tune", reason=reason.value, delta=delta, z=z, **kw)


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_within_noise_and_worse_say_size_word_sigma_and_bar_in_either_direction(lower_is_better):
    worse = 0.037 if lower_is_better else -0.037  # metric − reference, whose sign depends on the direction
    e = judged(Reason.WITHIN_NOISE, worse, -0.7, numbers={"runs": 1, "t_crit": 2.0})
    assert describe(e) == "0.0370 val_bpb worse, 0.7σ; keep needs ≥ 2.0σ better: within noise, discarded"
    e = judged(Reason.WITHIN_NOISE, -worse, 1.2, numbers={"runs": 1, "t_crit": 3.3})
    assert describe(e, "loss") == "0.0370 loss better, 1.2σ; keep needs ≥ 3.3σ better: within noise, discarded"
    e = judged(Reason.WORSE, 5 * worse, -9.0, numbers={"runs": 1, "t_crit": 2.0})
    assert describe(e) == "0.1850 val_bpb worse, 9.0σ; keep needs ≥ 2.0σ better: worse beyond noise, discarded"
    assert short(e) == "worse"
    assert not SIGNED.search(describe(e))


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_kept_names_its_seeds_and_the_bar_it_cleared(lower_is_better):
    gain = -0.012 if lower_is_better else 0.012
    e = judged(Reason.IMPROVED, gain, 3.1, Status.KEPT, numbers={"runs": 2, "t_crit": 2.31, "dof": 8})
    assert describe(e) == "0.0120 val_bpb better, 3.1σ over 2 seeds (bar 2.3σ), kept"
    e = judged(Reason.IMPROVED_ONE_SEED, gain, 4.0, Status.KEPT, numbers={"runs": 1, "t_crit": 2.0})
    assert describe(e) == "0.0120 val_bpb better, 4.0σ (bar 2.0σ), kept (no second seed to confirm on)"
    assert short(e) == "improved, 1 seed"


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_not_confirmed_says_each_seed_in_words(lower_is_better):
    """The judge's detail is signed metric deltas by seed; the words say which way each went."""
    s = 1 if lower_is_better else -1
    e = judged(Reason.NOT_CONFIRMED, s * -0.004, 1.1, numbers={"runs": 2, "t_crit": 3.3},
               detail=f"{s * 0.0100:+.4f}, {s * -0.0180:+.4f} by seed")
    assert describe(e) == ("0.0040 val_bpb better, 1.1σ over 2 seeds; keep needs ≥ 3.3σ better: "
                           "not confirmed (by seed: 0.0100 worse, 0.0180 better), discarded")
    assert not SIGNED.search(describe(e))


def test_rows_without_a_bar_and_self_reported_numbers():
    """Rows judged before the bar was stored say no bar; a printed number says so."""
    e = judged(Reason.WITHIN_NOISE, 0.01, -0.5, numbers={"runs": 1})
    assert describe(e) == "0.0100 val_bpb worse, 0.5σ: within noise, discarded"
    e = judged(Reason.IMPROVED, -0.02, 3.4, Status.KEPT, numbers={"runs": 2}, evaluator="self-reported")
    assert describe(e) == "0.0200 val_bpb better, 3.4σ over 2 seeds, kept (self-reported metric)"
    e = judged(Reason.WITHIN_NOISE, 0.0, 0.0, numbers={"runs": 1, "t_crit": 2.0})
    assert describe(e) == "0.0000 val_bpb, 0.0σ; keep needs ≥ 2.0σ better: within noise, discarded"


def test_other_reasons_keep_their_meaning():
    e = Experiment(id=3, status=Status.CRASHED, source="tune", reason="crashed",
                   detail="FAIL crashed: ValueError: bad shape")
    assert describe(e) == "crashed: ValueError: bad shape"
    e = judged(Reason.IMPLAUSIBLE, -1.15, 163.2)
    assert describe(e) == ("1.1500 val_bpb better, 163.2σ: implausibly large, not kept until you look "
                           "(accept or reject the result)")
    assert short(e) == "implausible: look"
    e = judged(Reason.STALE, -0.02, 3.4, detail="the branch moved on")
    assert describe(e) == "0.0200 val_bpb better, 3.4σ, beyond noise but not kept: the branch moved on"
    e = Experiment(id=4, status=Status.RUNNING, source="tune", phase="confirming", delta=0.02, z=-1.0)
    assert describe(e) == "0.0200 val_bpb worse, 1.0σ: confirming on another seed"
    assert short(e) == "confirming"
    e = Experiment(id=6, status=Status.KEPT, source="tune", reason="confirmation", confirms=5)
    assert short(e) == "confirms #5"


def test_delta_words():
    assert delta_words(-0.012, True) == "0.0120 better"
    assert delta_words(-0.012, False, "acc") == "0.0120 acc worse"
    assert delta_words(0.0, True) == "0.0000 (no change)"
    assert delta_words(0.5, None) == "+0.5000"
    assert delta_words(None, True) == ""


def test_explain_gives_the_bar_the_run_and_its_warnings():
    e = judged(Reason.WITHIN_NOISE, 0.037, -0.7, sigma=0.0374, numbers={"runs": 1, "t_crit": 2.0, "dof": 11},
               summary={"num_steps": 2, "total_tokens_M": 0.26, "training_seconds": 14.8},
               timings={"wall": 31.2},
               warnings={"barely_trained": "it made only 2 optimizer steps: its metric measures an untrained model"})
    rows = dict(explain(e, "val_bpb", lower_is_better=True))
    assert rows["verdict"] == describe(e)
    assert rows["effect"].startswith("0.0370 val_bpb worse than its paired reference run; 95% interval: ")
    assert "worse to " in rows["effect"] and rows["effect"].endswith("better")  # the interval spans zero
    assert rows["noise"].startswith("σ 0.0374 val_bpb run to run on 11 dof; the effect is 0.7σ")
    # the bar in σ and in metric units: t_crit·√2·σ on one run
    assert rows["keep bar"] == "≥ 2.0σ better, i.e. ≥ 0.1058 val_bpb better on one seed (Student's t on 11 dof)"
    assert rows["ran"] == "2 steps, 0.26M tokens, 14.8 s training, 31.2 s wall"
    assert rows["warning"] == "barely trained: it made only 2 optimizer steps: its metric measures an untrained model"
    # a baseline: no effect, no bar; what it ran still said
    b = Experiment(id=1, status=Status.KEPT, source="baseline", reason="baseline", seed=42, metric=1.5,
                   summary={"num_steps": 300})
    assert [k for k, _ in explain(b)] == ["verdict", "ran"]
