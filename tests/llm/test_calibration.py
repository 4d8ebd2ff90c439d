"""Calibration of predicted effects on a hand-made journal, and the CLI command."""

from __future__ import annotations

import json
import math

import pytest

from sigmaloop.calibration import calibrate, pearson
from sigmaloop.models import Experiment, Status


def exp(i, pred, delta, status=Status.DISCARDED, z=None, source="llm:m", **kw) -> Experiment:
    return Experiment(id=i, status=status, source=source, predicted_delta=pred, delta=delta, z=z, **kw)


SIGMA = 0.01  # z = -delta / (sqrt(2) * 0.01) when lower is better


def hand_made() -> list[Experiment]:
    return [
        Experiment(id=1, status=Status.KEPT, source="baseline", metric=1.0),
        exp(2, -0.05, -0.06, Status.KEPT, z=4.2),  # predicted better, was better (beyond noise)
        exp(3, -0.02, +0.01),  # predicted better, was worse (within noise: z = -0.71)
        exp(4, +0.01, +0.03),  # predicted worse, was worse
        exp(5, -0.01, -0.005),  # predicted better, was better but within noise (z = 0.35)
        exp(6, -0.03, None, Status.CRASHED),  # predicted, never measured
        exp(7, None, -0.02, source="tune"),  # no prediction
        exp(8, -0.05, -0.06, Status.KEPT, z=4.0, confirms=2),  # a confirmation rerun: not counted
    ]


def test_calibration_numbers():
    cal = calibrate(hand_made(), SIGMA, lower_is_better=True, k=2.0)
    assert cal.n == 4 and cal.n_predicted == 5
    assert cal.sign_accuracy == pytest.approx(3 / 4)
    preds, meas = [-0.05, -0.02, 0.01, -0.01], [-0.06, 0.01, 0.03, -0.005]
    assert cal.pearson == pytest.approx(pearson(preds, meas))
    mx, my = sum(preds) / 4, sum(meas) / 4
    r = sum((x - mx) * (y - my) for x, y in zip(preds, meas)) / math.sqrt(
        sum((x - mx) ** 2 for x in preds) * sum((y - my) ** 2 for y in meas))
    assert cal.pearson == pytest.approx(r) and 0.5 < cal.pearson < 1
    assert cal.predicted_improvements == 3
    assert cal.improvements_within_noise == 2 and cal.improvements_confirmed == 1
    assert cal.mean_abs_error == pytest.approx((0.01 + 0.03 + 0.02 + 0.005) / 4)
    assert cal.bias == pytest.approx((-0.01 + 0.03 + 0.02 + 0.005) / 4)
    assert [p["id"] for p in cal.points] == [2, 3, 4, 5]
    assert cal.points[1]["z"] == pytest.approx(-0.01 / (math.sqrt(2) * SIGMA))


def test_higher_is_better_flips_what_an_improvement_is():
    exps = [exp(2, +0.05, +0.06, z=4.2), exp(3, +0.01, -0.01), exp(4, -0.01, -0.02)]
    cal = calibrate(exps, SIGMA, lower_is_better=False)
    assert cal.predicted_improvements == 2 and cal.improvements_confirmed == 1
    assert cal.improvements_within_noise == 1 and cal.sign_accuracy == pytest.approx(2 / 3)


def test_too_few_points_or_no_variance_gives_no_correlation():
    assert calibrate([], SIGMA).pearson is None and calibrate([], SIGMA).sign_accuracy is None
    assert calibrate([exp(2, -0.1, -0.1), exp(3, -0.1, 0.2)], SIGMA).pearson is None
    assert calibrate([exp(i, -0.1, 0.01 * i) for i in range(2, 6)], SIGMA).pearson is None
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_source_filter():
    assert calibrate(hand_made(), SIGMA, source="tune").n_predicted == 0
    assert calibrate(hand_made(), SIGMA, source="llm").n == 4


def test_cli_calibration_json(tmp_path, capsys):
    from sigmaloop import cli
    from sigmaloop.journal import Journal

    from enginekit import make_workspace

    ws = make_workspace(tmp_path / "ws")
    (ws / ".sigmaloop").mkdir()
    with Journal(ws / ".sigmaloop" / "journal.db") as j:
        for e in hand_made()[1:6]:
            fields = {k: v for k, v in e.__dict__.items() if k not in ("id", "rev", "created_at")}
            j.create(**fields)
    assert cli.main(["--workspace", str(ws), "calibration", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["n"] == 4 and data["sign_accuracy"] == pytest.approx(0.75)
    assert data["predicted_improvements"] == 3 and "points" not in data
    assert cli.main(["--workspace", str(ws), "calibration"]) == 0
    assert "sign accuracy" in capsys.readouterr().out
