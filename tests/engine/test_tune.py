"""The built-in tuner: real Optuna on real SQLite, real trainer-like scripts."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import statistics

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sigmaloop.config import Config
from sigmaloop.diff import changed_lines
from sigmaloop.edits import find_constants, validate_source
from sigmaloop.models import Experiment, Status
from sigmaloop.proposers import (
    ProposalContext,
    ProposalError,
    Proposer,
    make_proposer,
    register_proposer,
)
from sigmaloop.proposers.tune import TuneProposer, distribution_for

TRAIN = '''\
"""A small GPT trainer (shape of autoresearch's train.py)."""
import os
import time

import torch

TIME_BUDGET = 60  # seconds of training
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DEVICE_BATCH_SIZE = 16  # fits in memory
SEED = 42  # the judge varies this

# model shape
DEPTH = 4  # transformer layers
HEAD_DIM = 64
# optimisation
MATRIX_LR = 0.04  # Muon
EMBEDDING_LR: float = 0.6
WARMUP_FRAC = 0.1  # of the budget
WEIGHT_DECAY = 0.0
USE_QK_NORM = True  # normalise q and k
LOG_EVERY = 10
NAME = "baseline"


def main():
    torch.manual_seed(SEED)
    t0 = time.time()
    step = 0
    while time.time() - t0 < TIME_BUDGET:
        step += 1
    print(f"val_bpb: {1.0 / (1 + step * MATRIX_LR):.4f}")


if __name__ == "__main__":
    main()
'''

TUNABLE = {
    "DEPTH",
    "HEAD_DIM",
    "MATRIX_LR",
    "EMBEDDING_LR",
    "WARMUP_FRAC",
    "WEIGHT_DECAY",
    "USE_QK_NORM",
}


def ctx_for(source: str, experiments=(), lower_is_better=True, metric="val_bpb") -> ProposalContext:
    return ProposalContext(
        source=source,
        script_name="train.py",
        experiments=list(experiments),
        best=None,
        sigma=None,
        metric=metric,
        lower_is_better=lower_is_better,
    )


def experiment(exp_id: int, proposal, status: Status, metric: float | None = None) -> Experiment:
    return Experiment(
        id=exp_id,
        status=status,
        source=proposal.source,
        hypothesis=proposal.hypothesis,
        metric=metric,
        params=dict(proposal.params),
    )


def load(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="sigmaloop", storage=f"sqlite:///{tmp_path}/optuna.db")


def values_of(source: str) -> dict:
    return {c.name: c.value for c in find_constants(source)}


# ---------------------------------------------------------------- proposals


def test_proposes_valid_single_constant_changes(tmp_path):
    tuner = TuneProposer(tmp_path, seed=1, two_change_prob=0.0, metric="val_bpb")
    assert isinstance(tuner, Proposer)
    before = values_of(TRAIN)
    seen = set()
    for _ in range(12):
        p = tuner.propose(ctx_for(TRAIN))
        validate_source(p.new_source, TRAIN)
        after = values_of(p.new_source)
        changed = {n for n in before if after[n] != before[n]}
        assert len(changed) == 1 and changed <= TUNABLE
        (name,) = changed
        seen.add(name)
        assert p.params["changes"] == {name: [before[name], after[name]]}
        assert type(after[name]) is type(before[name])  # ints stay ints, bools bools
        assert p.source == "tune" and p.predicted_delta is None
        assert p.hypothesis.startswith(f"{name} ") and " → " in p.hypothesis
        assert p.hypothesis.endswith("lowers val_bpb")
        assert "TPE" in p.rationale and f"#{p.params['optuna_trial']}" in p.rationale
        assert len(changed_lines(TRAIN, p.new_source)) == 1  # comments stay in place
        line = next(ln for ln in p.new_source.splitlines() if re.match(rf"{name}\b", ln))
        original_line = next(ln for ln in TRAIN.splitlines() if re.match(rf"{name}\b", ln))
        assert line.split("=")[0] == original_line.split("=")[0]  # "NAME: float " kept
        if "#" in original_line:
            assert line.endswith(original_line[original_line.index("#") :])
    assert len(seen) >= 4  # spreads over the constants
    assert {c.name for c in find_constants(TRAIN)} - TUNABLE >= {"SEED", "TIME_BUDGET", "LOG_EVERY"}


def test_steered_to_the_constants_an_open_question_names(tmp_path):
    from sigmaloop.models import Question

    tuner = TuneProposer(tmp_path, seed=5, two_change_prob=0.0, question_prob=0.75)
    qs = [Question(1, "Does the matrix lr matter?"), Question(2, "Is depth 6 better?",
          decision="switch to DEPTH 6"), Question(3, "Should we use a cosine schedule?")]
    ps = [tuner.propose(dataclasses.replace(ctx_for(TRAIN), questions=qs)) for _ in range(40)]
    by_q = {}
    for p in ps:
        (name,) = p.params["changes"]
        by_q.setdefault(p.question, []).append(name)
    assert set(by_q.get(1, [])) == {"MATRIX_LR"} and set(by_q.get(2, [])) == {"DEPTH"}
    assert 3 not in by_q  # names nothing the tuner can change
    steered = len(by_q[1]) + len(by_q[2])
    assert 20 <= steered <= 38  # ~75% of 40; the rest explores everything
    assert len(set(by_q[None])) >= 3
    # without questions the tuner draws exactly as before (the same seed, the same edits)
    plain = [TuneProposer(tmp_path / "a", seed=9).propose(ctx_for(TRAIN)).params["changes"] for _ in range(1)]
    again = [TuneProposer(tmp_path / "b", seed=9).propose(
        dataclasses.replace(ctx_for(TRAIN), questions=[qs[2]])).params["changes"] for _ in range(1)]
    assert plain == again


def test_two_changes_sometimes(tmp_path):
    tuner = TuneProposer(tmp_path, seed=3, two_change_prob=1.0)
    ps = [tuner.propose(ctx_for(TRAIN)) for _ in range(6)]
    assert all(1 <= len(p.params["changes"]) <= 2 for p in ps)
    two = [p for p in ps if len(p.params["changes"]) == 2]
    assert two  # (one of the two may land on its current value; then only one changes)
    a, b = two[0].params["changes"]
    assert two[0].hypothesis.startswith(f"{a} ") and f" and {b} " in two[0].hypothesis
    validate_source(two[0].new_source, TRAIN)


def test_never_seed_budget_device_or_excluded(tmp_path):
    tuner = TuneProposer(tmp_path, seed=5, exclude=["DEPTH", "*_LR"])
    tunable, skipped = tuner.tunables(TRAIN)
    assert {c.name for c in tunable} == {"HEAD_DIM", "WARMUP_FRAC", "WEIGHT_DECAY", "USE_QK_NORM"}
    assert "proposer.exclude" in skipped["DEPTH"] and "proposer.exclude" in skipped["MATRIX_LR"]
    assert "SEED" in skipped["SEED"] and "DEVICE" in skipped["DEVICE_BATCH_SIZE"]
    for _ in range(8):
        p = tuner.propose(ctx_for(TRAIN))
        assert set(p.params["changes"]) <= {
            "HEAD_DIM",
            "WARMUP_FRAC",
            "WEIGHT_DECAY",
            "USE_QK_NORM",
        }


def test_values_within_ranges_and_log_scale_for_lr(tmp_path):
    tuner = TuneProposer(tmp_path, seed=7, two_change_prob=0.3)
    for _ in range(25):
        p = tuner.propose(ctx_for(TRAIN))
        for name, (_old, new) in p.params["changes"].items():
            dist = distribution_for(name, values_of(TRAIN)[name])
            if isinstance(dist, CategoricalDistribution):
                assert new in (False, True)
            else:
                assert dist.low * 0.999 <= new <= dist.high * 1.001, (name, new)
    study = load(tmp_path)
    dists = {}
    for trial in study.trials:
        dists.update(trial.distributions)
    assert dists["MATRIX_LR"] == FloatDistribution(0.01, 0.16, log=True)
    assert dists["EMBEDDING_LR"] == FloatDistribution(0.15, 2.4, log=True)
    assert dists["WARMUP_FRAC"] == FloatDistribution(0.05, 0.55)  # a fraction: linear in (0, 1)
    assert dists["DEPTH"] == IntDistribution(2, 8)
    assert dists["HEAD_DIM"] == IntDistribution(32, 128, log=True)
    assert dists["USE_QK_NORM"] == CategoricalDistribution([False, True])
    if "WEIGHT_DECAY" in dists:
        assert dists["WEIGHT_DECAY"] == FloatDistribution(0.0, 0.1)
    space = study.user_attrs["space"]
    assert space["MATRIX_LR"]["original"] == 0.04


def test_ranges_stay_around_the_original_value(tmp_path):
    tuner = TuneProposer(tmp_path, seed=2, exclude=["*"])
    tuner.exclude = [n for n in TUNABLE if n != "MATRIX_LR"]
    source = TRAIN
    for _ in range(4):  # every edit kept: the current value moves, the range does not
        p = tuner.propose(ctx_for(source))
        source = p.new_source
        tuner.observe(experiment(1, p, Status.KEPT, 0.9))
    lr = values_of(source)["MATRIX_LR"]
    assert lr != 0.04
    study = load(tmp_path)
    for trial in study.trials:
        assert trial.distributions["MATRIX_LR"] == FloatDistribution(0.01, 0.16, log=True)


def test_no_constants_is_a_proposal_error(tmp_path):
    tuner = TuneProposer(tmp_path)
    script = 'import torch\nSEED = 1\nNAME = "x"\n\n\ndef main():\n    lr = 0.1\n    print(lr)\n'
    with pytest.raises(
        ProposalError, match=r"train\.py has no top-level numeric constants to tune"
    ):
        tuner.propose(ctx_for(script))
    with pytest.raises(ProposalError, match="does not parse"):
        tuner.propose(ctx_for("LR = = 1\n"))


def test_negative_constants_are_skipped(tmp_path):
    tuner = TuneProposer(tmp_path)
    script = "CLIP = -1  # off\nOFFSET = -0.5\n"
    with pytest.raises(ProposalError, match="negative"):
        tuner.propose(ctx_for(script))


def test_bool_only_script_flips(tmp_path):
    tuner = TuneProposer(tmp_path)
    script = "USE_BIAS = False  # try it\nSEED = 3\n"
    for _ in range(3):
        p = tuner.propose(ctx_for(script))
        assert p.new_source == "USE_BIAS = True  # try it\nSEED = 3\n"
        assert p.hypothesis == "USE_BIAS False → True lowers val_bpb"


def test_small_int_range_never_proposes_a_noop(tmp_path):
    tuner = TuneProposer(tmp_path, seed=0)
    script = "N_LAYERS = 1\n"  # range [1, 2]: TPE often samples the current value
    for _ in range(6):
        p = tuner.propose(ctx_for(script))
        assert p.new_source == "N_LAYERS = 2\n"
        tuner.observe(experiment(1, p, Status.DISCARDED, 1.0))
    noops = [t for t in load(tmp_path).trials if t.user_attrs.get("noop")]
    assert all(t.state == TrialState.FAIL for t in noops)


# ---------------------------------------------------------------- results


def test_observe_tells_the_study(tmp_path):
    tuner = TuneProposer(tmp_path, seed=4)
    ps = [tuner.propose(ctx_for(TRAIN)) for _ in range(6)]
    results = [
        (Status.KEPT, 0.95),
        (Status.DISCARDED, 1.02),
        (Status.CRASHED, None),
        (Status.DISCARDED, None),  # measured, but no metric: a failure
        (Status.TIMEOUT, None),
        (Status.REJECTED, None),
    ]
    for i, (p, (status, metric)) in enumerate(zip(ps, results)):
        exp = experiment(i + 1, p, status, metric)
        tuner.observe(exp)
        tuner.observe(exp)  # idempotent
    tuner.observe(Experiment(id=99, status=Status.KEPT, source="llm:x", metric=0.5))  # ignored
    study = load(tmp_path)
    by_number = {t.number: t for t in study.trials}
    states = [by_number[p.params["optuna_trial"]].state for p in ps]
    assert states == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.FAIL,
    ]
    assert by_number[ps[0].params["optuna_trial"]].value == 0.95
    assert by_number[ps[1].params["optuna_trial"]].value == 1.02
    # a later result for an already told trial changes nothing and does not raise
    tuner.observe(experiment(1, ps[0], Status.DISCARDED, 2.0))
    assert load(tmp_path).trials[ps[0].params["optuna_trial"]].value == 0.95


def test_unfinished_and_unmeasured_results(tmp_path):
    tuner = TuneProposer(tmp_path, seed=4)
    p = tuner.propose(ctx_for(TRAIN))
    number = p.params["optuna_trial"]
    tuner.observe(experiment(1, p, Status.INTERRUPTED))
    assert load(tmp_path).trials[number].state == TrialState.RUNNING
    tuner.observe(experiment(1, p, Status.DISCARDED, None))  # no metric: a failure
    assert load(tmp_path).trials[number].state == TrialState.FAIL


# ---------------------------------------------------------------- persistence


def test_new_proposer_continues_the_study(tmp_path):
    first = TuneProposer(tmp_path, seed=1)
    p0 = first.propose(ctx_for(TRAIN))
    p1 = first.propose(ctx_for(TRAIN))
    p2 = first.propose(ctx_for(TRAIN))
    first.observe(experiment(1, p0, Status.DISCARDED, 1.0))
    # the process dies: p1 was never recorded; p2 is still queued in the journal;
    # p3's result was recorded in the journal but never reached the study
    p3 = first.propose(ctx_for(TRAIN))
    journal = [
        experiment(1, p0, Status.DISCARDED, 1.0),
        experiment(2, p2, Status.QUEUED),
        experiment(3, p3, Status.KEPT, 0.9),
    ]
    second = TuneProposer(tmp_path, seed=1)
    assert second.token == first.token
    p4 = second.propose(ctx_for(TRAIN, journal))
    numbers = [p.params["optuna_trial"] for p in (p0, p1, p2, p3)]
    assert p4.params["optuna_trial"] > max(numbers)
    trials = {t.number: t for t in load(tmp_path).trials}
    assert trials[numbers[0]].state == TrialState.COMPLETE
    assert trials[numbers[1]].state == TrialState.FAIL  # orphaned by the crash
    assert trials[numbers[2]].state == TrialState.RUNNING  # still pending
    assert trials[numbers[3]].state == TrialState.COMPLETE and trials[numbers[3]].value == 0.9
    assert trials[p4.params["optuna_trial"]].state == TrialState.RUNNING
    second.observe(experiment(2, p2, Status.DISCARDED, 1.1))
    assert load(tmp_path).trials[numbers[2]].state == TrialState.COMPLETE


def test_direction_change_starts_a_new_study(tmp_path):
    first = TuneProposer(tmp_path, metric="val_bpb")
    old = first.propose(ctx_for(TRAIN))
    first_token = first.token
    second = TuneProposer(tmp_path, direction="maximize", metric="accuracy")
    assert second.token != first_token
    p = second.propose(ctx_for(TRAIN, lower_is_better=False, metric="accuracy"))
    assert p.hypothesis.endswith("raises accuracy")
    assert p.params["optuna_trial"] == 0
    second.observe(experiment(1, old, Status.KEPT, 0.5))  # an old study's result: ignored
    study = load(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.trials[0].state == TrialState.RUNNING


def test_make_proposer(tmp_path):
    cfg = Config()
    cfg.proposer.exclude = ["DEPTH"]
    tuner = make_proposer("tune", cfg, tmp_path / ".sigmaloop")
    assert tuner.name == "tune" and isinstance(tuner, TuneProposer)
    assert tuner.exclude == ["DEPTH"]
    assert (tmp_path / ".sigmaloop" / "optuna.db").exists()
    with pytest.raises(ValueError, match="unknown proposer kind 'bogus'"):
        make_proposer("bogus", cfg, tmp_path)

    class Fixed:
        name = "fixed"

        def __init__(self, config, state_dir):
            self.state_dir = state_dir

        def propose(self, ctx):
            raise ProposalError("nothing")

        def observe(self, experiment):
            pass

    register_proposer("fixed-test", Fixed)
    made = make_proposer("fixed-test", cfg, str(tmp_path))
    assert isinstance(made, Proposer) and made.state_dir == tmp_path


# ---------------------------------------------------------------- learning


def test_tpe_moves_toward_the_optimum(tmp_path):
    script = "MATRIX_LR = 0.04  # Muon\nSEED = 42\n"
    tuner = TuneProposer(tmp_path, seed=11, n_startup_trials=5)
    distances = []
    for i in range(20):
        p = tuner.propose(ctx_for(script))
        lr = p.params["changes"]["MATRIX_LR"][1]
        assert lr == ast.literal_eval(p.new_source.split("=")[1].split("#")[0])
        distance = abs(math.log(lr) - math.log(0.02))
        distances.append(distance)
        tuner.observe(experiment(i + 1, p, Status.DISCARDED, distance**2))
    early = statistics.mean(distances[:5])
    late = statistics.mean(distances[-8:])
    assert late < early, (distances, early, late)
    study = load(tmp_path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 20
    assert abs(math.log(study.best_params["MATRIX_LR"]) - math.log(0.02)) < 0.25
