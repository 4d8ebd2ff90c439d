"""The tuner's predicted effect (proposers/effects.py): fitted on its own earlier measured steps,
and then real Optuna proposing on a metric with a known shape, scored by the calibration the
morning report shows."""

from __future__ import annotations

import math
import random

import pytest

from sigmaloop.calibration import calibrate
from sigmaloop.models import Experiment, Status
from sigmaloop.proposers import ProposalContext
from sigmaloop.proposers.effects import predict_delta, steps
from sigmaloop.proposers.tune import TuneProposer


def ctx_for(source: str, experiments: list[Experiment]) -> ProposalContext:
    return ProposalContext(source=source, script_name="train.py", experiments=list(experiments), best=None,
                           sigma=None, metric="val_bpb", lower_is_better=True)


def step(i: int, name: str, old, new, delta, status=Status.DISCARDED, source="tune", **extra) -> Experiment:
    changes = {name: [old, new], **extra}
    return Experiment(id=i, status=status, source=source, hypothesis="", delta=delta, params={"changes": changes})


def test_only_the_tuners_measured_single_constant_steps_count():
    history = [
        step(1, "LR", 0.1, 0.2, 0.01),
        step(2, "LR", 0.1, 0.05, -0.01, status=Status.KEPT),
        step(3, "LR", 0.1, 0.4, 0.5, status=Status.CRASHED),  # not measured
        step(4, "LR", 0.1, 0.3, None),  # no paired Δ
        step(5, "LR", 0.1, 0.3, math.nan),
        step(6, "LR", 0.1, 0.3, 0.02, source="llm:gpt"),  # not the tuner's: no structured change
        step(7, "LR", 0.1, 0.3, 0.02, DEPTH=[4, 5]),  # two at once: whose effect?
        step(8, "DEPTH", 4, 5, -0.003),
    ]
    assert steps(history) == {"LR": [(0.1, 0.2, 0.01), (0.1, 0.05, -0.01)], "DEPTH": [(4, 5, -0.003)]}


def test_no_number_without_two_measured_steps_of_every_changed_constant():
    history = [step(1, "LR", 0.1, 0.2, 0.01), step(2, "LR", 0.2, 0.4, 0.012), step(3, "DEPTH", 4, 5, -0.003)]
    assert predict_delta({"WIDTH": (64, 128)}, history) is None
    assert predict_delta({"DEPTH": (5, 6)}, history) is None
    assert predict_delta({"LR": (0.4, 0.8), "DEPTH": (5, 6)}, history) is None, "half a prediction misleads"
    assert predict_delta({"LR": (0.4, 0.8)}, history) is not None


def test_a_line_through_no_change_on_the_log_of_the_step():
    # Δ = 0.01 · log2(new/old): doubling costs 0.01, halving gains 0.01
    b = 0.01 / math.log(2)
    history = [step(1, "LR", 0.1, 0.2, 0.01), step(2, "LR", 0.2, 0.1, -0.01), step(3, "LR", 0.1, 0.4, 0.02)]
    p = predict_delta({"LR": (0.4, 0.2)}, history)
    assert p is not None and p.delta == pytest.approx(-0.01)
    assert p.basis == "3 earlier LR changes measured, each fitted by a line through no change"
    # a step beyond those seen is clamped to the largest seen that way (÷2 down, ×4 up): no extrapolation
    assert predict_delta({"LR": (0.4, 0.4 / 64)}, history).delta == pytest.approx(b * math.log(1 / 2))
    assert predict_delta({"LR": (0.4, 0.4 * 64)}, history).delta == pytest.approx(b * math.log(4))


def test_a_parabola_says_any_big_move_hurts_where_a_line_says_nothing():
    # the reference sits at the optimum: halving and doubling both cost 0.02·x²
    history = [step(i, "LR", 0.1, 0.1 * f, 0.02 * math.log(f) ** 2, ) for i, f in enumerate((2, 0.5, 4, 0.25), 1)]
    line = predict_delta({"LR": (0.1, 0.2)}, history[:2])
    assert line is not None and line.delta == pytest.approx(0.0, abs=1e-12)
    p = predict_delta({"LR": (0.1, 0.2)}, history)
    assert p is not None and p.delta == pytest.approx(0.02 * math.log(2) ** 2)
    assert "parabola" in p.basis
    # steps all of one size cannot tell a parabola from a line
    same = [step(i, "LR", 0.1, 0.2, 0.01 + 0.001 * i) for i in range(1, 6)]
    assert "a line" in predict_delta({"LR": (0.1, 0.2)}, same).basis


def test_flips_ints_zero_starts_and_several_constants():
    history = [step(1, "USE_QK", False, True, -0.02), step(2, "USE_QK", True, False, 0.018),
               step(3, "WD", 0.0, 0.05, -0.005), step(4, "WD", 0.05, 0.0, 0.004),  # through zero: linear
               step(5, "DEPTH", 4, 8, -0.01), step(6, "DEPTH", 8, 4, 0.01)]
    flip = predict_delta({"USE_QK": (False, True)}, history)
    assert flip.delta == pytest.approx(-0.019)
    wd = predict_delta({"WD": (0.0, 0.05)}, history)
    assert wd.delta == pytest.approx(-0.0045)
    both = predict_delta({"USE_QK": (False, True), "DEPTH": (4, 8)}, history)
    assert both.delta == pytest.approx(-0.019 - 0.01)
    assert both.basis.startswith("2 earlier USE_QK changes and 2 earlier DEPTH changes measured")
    # a value that is not a number (a string constant, a type changed under the tuner): no number
    assert predict_delta({"DEPTH": ("4", 8)}, history) is None


def test_the_tuner_predicts_from_its_own_night_and_the_calibration_says_it_helps(tmp_path):
    """Real TPE proposing LR and DEPTH steps on a metric with a known shape (optimum LR 0.02,
    deeper a little better) plus seed noise; each result is measured against the reference
    of its day and kept when it clears 2σ. Later proposals carry a predicted Δ whose sign
    and size track what was measured."""
    script = "MATRIX_LR = 0.04  # Muon\nDEPTH = 4\nSEED = 42\n"
    rng = random.Random(1)
    sigma = 0.002

    def metric(src: str) -> float:
        vals = {}
        for line in src.splitlines():
            if "=" in line:
                k, v = line.split("#")[0].split("=")
                vals[k.strip()] = float(v)
        return 1.0 + 0.05 * math.log(vals["MATRIX_LR"] / 0.02) ** 2 - 0.004 * vals["DEPTH"]

    tuner = TuneProposer(tmp_path, seed=1, n_startup_trials=5)
    journal: list[Experiment] = []
    head, reference = script, metric(script)
    for i in range(1, 41):
        p = tuner.propose(ctx_for(head, journal))
        delta = metric(p.new_source) + rng.gauss(0, sigma) - reference
        kept = delta < -2 * sigma
        e = Experiment(id=i, status=Status.KEPT if kept else Status.DISCARDED, source="tune",
                       hypothesis=p.hypothesis, metric=reference + delta, delta=delta, sigma=sigma,
                       predicted_delta=p.predicted_delta, params=dict(p.params))
        journal.append(e)
        tuner.observe(e)
        if p.predicted_delta is not None:
            assert "Predicted Δ" in p.rationale and ("by about" in p.hypothesis or "exploring" in p.hypothesis)
        else:
            assert "Predicted" not in p.rationale
        if kept:
            head, reference = p.new_source, metric(p.new_source)
    cal = calibrate(journal, sigma, source="tune")
    assert cal.n >= 20, cal.n  # most of the night is predicted once each constant has 2 steps
    assert cal.sign_accuracy > 0.6 and cal.pearson > 0.3, (cal.sign_accuracy, cal.pearson)
