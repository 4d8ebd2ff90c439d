"""The tuner's predicted effect (proposers/effects.py): fitted on its own earlier measured steps,
and then real Optuna proposing on a metric with a known shape, scored by the calibration the
morning report shows."""

from __future__ import annotations

import math

import pytest

from sigmaloop.calibration import calibrate
from sigmaloop.models import Experiment, Status
from sigmaloop.proposers.effects import predict_delta, steps

from enginekit import bench_module

bench = bench_module("tune_predictions")


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
    # a step beyond those seen is clamped to the farthest seen (×4, either way): no extrapolation
    assert predict_delta({"LR": (0.4, 0.4 / 64)}, history).delta == pytest.approx(b * math.log(1 / 4))
    assert predict_delta({"LR": (0.4, 0.4 * 64)}, history).delta == pytest.approx(b * math.log(4))
    # steps seen one way only: the line through no change says the other way is the opposite
    up = [step(1, "LR", 0.1, 0.2, 0.05), step(2, "LR", 0.1, 0.4, 0.1)]
    assert predict_delta({"LR": (0.1, 0.05)}, up).delta < 0 < predict_delta({"LR": (0.1, 0.2)}, up).delta
    # a flip seen one way only: the flip back is predicted to undo it, not to help again
    off = [step(1, "USE_QK", True, False, 0.01), step(2, "USE_QK", True, False, 0.012)]
    assert predict_delta({"USE_QK": (False, True)}, off).delta == pytest.approx(-0.011)


def test_a_parabola_says_any_big_move_hurts_where_a_line_says_nothing():
    # the reference sits at the optimum: halving and doubling both cost 0.02·x²
    history = [step(i, "LR", 0.1, 0.1 * f, 0.02 * math.log(f) ** 2, ) for i, f in enumerate((2, 0.5, 4, 0.25), 1)]
    line = predict_delta({"LR": (0.1, 0.2)}, history[:2])
    assert line is not None and line.delta == pytest.approx(0.0, abs=1e-12)
    p = predict_delta({"LR": (0.1, 0.2)}, history)
    assert p is not None and p.delta == pytest.approx(0.02 * math.log(2) ** 2)
    assert "parabola" in p.basis
    # a parabola seen on one side only says nothing of the other: clamped to no change there
    one_side = [step(i, "LR", 0.1, 0.1 * f, 0.02 * math.log(f) ** 2) for i, f in enumerate((2, 4, 8, 3), 1)]
    assert "parabola" in predict_delta({"LR": (0.1, 0.2)}, one_side).basis
    assert predict_delta({"LR": (0.1, 0.05)}, one_side).delta == pytest.approx(0.0, abs=1e-12)
    # small linear steps (a constant started at 0) get their parabola too: the test is relative
    small = [step(i, "WD", 0.0, w, 2.0 * w * w) for i, w in enumerate((0.001, 0.002, 0.003, 0.0015), 1)]
    assert "parabola" in predict_delta({"WD": (0.0, 0.0025)}, small).basis
    # steps all of one size cannot tell a parabola from a line
    same = [step(i, "LR", 0.1, 0.2, 0.01 + 0.001 * i) for i in range(1, 6)]
    assert "a line" in predict_delta({"LR": (0.1, 0.2)}, same).basis


def test_only_the_current_studys_steps_count():
    # a new metric or direction starts a new study: Δs in the old units mean nothing now
    old = [step(i, "LR", 0.1, 0.2, 5.0, ) for i in (1, 2)]
    new = [step(i, "LR", 0.1, 0.2, -0.01) for i in (3, 4)]
    for e, token in zip(old + new, ["old", "old", "new", "new"]):
        e.params["optuna_study"] = token
    assert predict_delta({"LR": (0.2, 0.4)}, old + new, study="new").delta == pytest.approx(-0.01)
    assert predict_delta({"LR": (0.2, 0.4)}, old, study="new") is None


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
    """Real TPE proposing LR and DEPTH steps on a metric with a known shape (bench/
    tune_predictions.py's first project: optimum LR 0.02, deeper a little better, seed noise),
    each result measured against the reference of its day and kept when it clears 2σ. Later
    proposals carry a predicted Δ whose sign and size track what was measured, better than the
    naive guess (the mean of every earlier Δ)."""
    project = bench.PROJECTS[0]
    journal = bench.night(project, seed=1, state_dir=str(tmp_path))
    for e in journal:
        if e.predicted_delta is not None:
            assert "Predicted Δ" in e.rationale and ("by about" in e.hypothesis or "exploring" in e.hypothesis)
        else:
            assert "Predicted" not in e.rationale
    cal = calibrate(journal, project.sigma, source="tune")
    assert cal.n >= 30, cal.n  # most of the night is predicted once each constant has 2 steps
    assert cal.sign_accuracy > 0.6 and cal.pearson > 0.3, (cal.sign_accuracy, cal.pearson)
    figures = bench.score([journal], [project.sigma])
    assert figures["mae_vs_naive"] < 1.0, figures
