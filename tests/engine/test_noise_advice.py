"""The noise advisor: the smallest improvement the judge can keep, next to the reference."""

from __future__ import annotations

import math
import subprocess
import sys

from sigmaloop.judge import critical_value
from sigmaloop.state import noise_advice


def test_after_a_real_baseline_the_state_says_what_can_be_kept(engine, workspace):
    engine.run_baseline()
    ref = engine.state().reference
    assert ref.sigma is not None
    judge = engine.config.judge
    assert ref.sigma_dof == len(judge.seeds) - 1
    # the mean of two paired runs must clear Student's t on σ's dof: t_crit·√2·σ/√2
    t_crit = critical_value(judge.k, ref.sigma_dof)
    assert math.isclose(ref.keep_threshold, t_crit * ref.sigma)
    if ref.sigma_dof >= 3:
        assert ref.advice is None  # σ ≈ 0.002 on a metric ≈ 1, on enough dof: edits can be kept
    else:  # the fixture's 2 seeds: σ on 1 dof, t_crit 14: more seeds is the advice
        assert "More seeds lower it" in ref.advice and f"now {len(judge.seeds)}" in ref.advice
    wire = engine.state().as_dict()["reference"]
    assert wire["keepThreshold"] == ref.keep_threshold and wire["advice"] == ref.advice
    out = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "status"], cwd=workspace,
                         capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    assert f"an edit must be ≥ {ref.keep_threshold:.4f} val_bpb lower" in out, out


def test_noise_as_large_as_the_metric_gets_advice():
    # a user's MLP script measured here: σ 0.19 on a metric of 0.15
    advice = noise_advice(2 * math.sqrt(2) * 0.19, 0.15, "val_loss", 2)
    assert advice is not None and "val_loss" in advice and "More baseline seeds (now 2" in advice
    assert "longer budget" in advice and "nondeterminism" in advice
    assert noise_advice(None, 1.0, "m", 2) is None and noise_advice(0.005, 1.0, "m", 2) is None
