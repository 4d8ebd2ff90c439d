"""A gain too large to believe unseen is held back (discarded, reason implausible) until the
researcher looks: accept result keeps it and advances the branch, reject result refuses it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sigmaloop.core import EngineError
from sigmaloop.engine import Engine
from sigmaloop.models import Proposal, Status

from enginekit import CONFIG, edit, make_workspace


@pytest.fixture
def strict(tmp_path):
    config = CONFIG.replace("implausible_sigma = 1000.0", "implausible_sigma = 30.0") \
                   .replace("implausible_pct = 50.0", "implausible_pct = 5.0")
    eng = Engine(make_workspace(tmp_path / "ws", config=config))
    eng.run_baseline()
    yield eng
    eng.close()


def run_edit(eng: Engine, old: str, new: str):
    p = eng.add_proposal(Proposal(edit(eng.head_source(), old, new), "a big claim", "user"))
    return eng.run(p.id)


def test_an_implausible_gain_waits_for_a_look_and_accept_keeps_it(strict):
    head = strict.head()
    exp = run_edit(strict, "BIAS = 0.0", "BIAS = -0.2")  # 20% of the metric
    assert exp.status == Status.DISCARDED and exp.reason == "implausible", exp.verdict
    assert "implausibly large" in exp.verdict and strict.head() == head
    kept = strict.review_result(exp.id, accept=True, note="checked the curves: the bias is real")
    assert kept.status == Status.KEPT and kept.reason == "result_accepted"
    assert strict.head() == kept.commit != head
    assert "kept after a look" in kept.verdict
    with pytest.raises(EngineError, match="not held back as implausible"):
        strict.review_result(exp.id, accept=False)


def test_the_cli_reviews_too(strict):
    exp = run_edit(strict, "BIAS = 0.0", "BIAS = -0.2")
    ws = strict.core.workspace
    cli = [sys.executable, "-m", "sigmaloop.cli", "review"]
    r = subprocess.run([*cli, str(exp.id), "reject", "--note", "a bug in the data"], cwd=ws, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, COLUMNS="200"))
    assert r.returncode == 0 and "discarded" in r.stdout, r.stdout + r.stderr
    assert strict.get(exp.id).reason == "result_rejected"
    again = subprocess.run([*cli, str(exp.id), "accept"], cwd=ws, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "not held back as implausible" in again.stderr


def test_reject_result_leaves_it_discarded_for_good(strict):
    head = strict.head()
    exp = run_edit(strict, "BIAS = 0.0", "BIAS = -0.2")
    refused = strict.review_result(exp.id, accept=False, note="too good to be true")
    assert refused.status == Status.DISCARDED and refused.reason == "result_rejected"
    assert strict.head() == head and "too good to be true" in refused.detail
    with pytest.raises(EngineError):
        strict.review_result(exp.id, accept=True)


def test_the_share_of_the_metric_alone_decides_when_sigma_would_not(tmp_path):
    config = CONFIG.replace("implausible_pct = 50.0", "implausible_pct = 5.0")  # sigma threshold stays 1000
    eng = Engine(make_workspace(tmp_path / "ws", config=config))
    try:
        eng.run_baseline()
        modest = run_edit(eng, "BIAS = 0.0", "BIAS = -0.045")  # 4.5% of a metric of ~1.0, ~20σ
        assert modest.status == Status.KEPT and modest.reason == "improved", modest.verdict
        big = run_edit(eng, "BIAS = -0.045", "BIAS = -0.2")
        assert big.status == Status.DISCARDED and big.reason == "implausible", big.verdict
        assert "%" in big.detail
    finally:
        eng.close()
