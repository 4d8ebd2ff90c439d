"""How good is the tuner's predicted Δ? Real Optuna TPE nights on metrics of known shape.

    python bench/tune_predictions.py            # 5 projects × 4 seeds × 40 proposals, ~1 min

Each project is a script of top-level constants and a metric that is a known function of them
(an optimum of a learning rate away from where it starts, depth that helps a little, a flag that
helps, a constant that does nothing) plus seed noise σ. A night: the real ``TuneProposer``
proposes, the metric is measured against the reference of the day (paired seed noise on both
sides), a result whose paired z (Δ / √2σ) is 2 or more better is kept and becomes the new head. Every proposal's
``predicted_delta`` (``proposers/effects.py``) is scored with ``calibration.calibrate``, the
morning report's own numbers.

Side by side on the same proposals: the naive predictor (the mean Δ of every earlier measured
step, whatever it changed: mostly "worse", which is mostly right) and zero (no effect). Figures:
how many proposals carry a prediction, direction accuracy, Pearson r, mean absolute error and its
ratio to the naive one's and to zero's (below 1 is better). Caveat: these metrics are smooth in
log(value) and additive, the shape the model assumes, so the figures are a best case; real
trainers are noisier and interact.

Prints one JSON line.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from sigmaloop.calibration import calibrate, pearson
from sigmaloop.edits import find_constants
from sigmaloop.models import Experiment, Status
from sigmaloop.proposers import ProposalContext
from sigmaloop.proposers.tune import TuneProposer


@dataclass(frozen=True)
class Project:
    name: str
    script: str
    metric: Callable[[dict], float]  # constants → the metric without noise (lower is better)
    sigma: float


PROJECTS = [
    Project("lr-depth", "MATRIX_LR = 0.04  # Muon\nDEPTH = 4\nSEED = 42\n",
            lambda c: 1.0 + 0.05 * math.log(c["MATRIX_LR"] / 0.02) ** 2 - 0.004 * c["DEPTH"], 0.002),
    Project("two-lrs", "EMBEDDING_LR = 0.6\nMATRIX_LR = 0.04\nSEED = 42\n",
            lambda c: 2.0 + 0.03 * math.log(c["EMBEDDING_LR"] / 0.3) ** 2
            + 0.08 * math.log(c["MATRIX_LR"] / 0.05) ** 2, 0.004),
    Project("flag-and-noise", "USE_QK_NORM = False\nWARMUP_FRAC = 0.1\nWIDTH = 64\nSEED = 42\n",
            lambda c: 1.5 - 0.02 * c["USE_QK_NORM"] + 0.0 * c["WIDTH"] + 0.1 * (c["WARMUP_FRAC"] - 0.2) ** 2,
            0.003),
    Project("noise-only", "WIDTH = 64\nHEAD_DIM = 32\nSEED = 42\n", lambda c: 1.2, 0.002),
    Project("batch-lr", "BATCH_SIZE = 32\nLR = 0.001\nSEED = 42\n",
            lambda c: 3.0 + 0.04 * math.log(c["LR"] / 0.003) ** 2 - 0.01 * math.log(c["BATCH_SIZE"] / 32), 0.005),
]


def constants(source: str) -> dict:
    return {c.name: c.value for c in find_constants(source)}


def night(project: Project, seed: int, proposals: int = 40, state_dir: str | None = None) -> list[Experiment]:
    """One night of the real tuner on ``project``: the journal it leaves (predictions included)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tuner = TuneProposer(state_dir or tmp, seed=seed, n_startup_trials=5)
        journal: list[Experiment] = []
        head = project.script
        reference = project.metric(constants(head))
        for i in range(1, proposals + 1):
            ctx = ProposalContext(source=head, script_name="train.py", experiments=list(journal), best=None,
                                  sigma=project.sigma, metric="val_bpb", lower_is_better=True)
            p = tuner.propose(ctx)
            # paired: the candidate and the reference each carry their seed's noise
            delta = (project.metric(constants(p.new_source)) + rng.gauss(0, project.sigma)
                     - reference - rng.gauss(0, project.sigma))
            kept = -delta / (math.sqrt(2) * project.sigma) >= 2  # the judge's z of a paired difference
            e = Experiment(id=i, status=Status.KEPT if kept else Status.DISCARDED, source="tune",
                           hypothesis=p.hypothesis, metric=reference + delta, delta=delta, sigma=project.sigma,
                           predicted_delta=p.predicted_delta, params=dict(p.params), rationale=p.rationale)
            journal.append(e)
            tuner.observe(e)
            if kept:
                head, reference = p.new_source, project.metric(constants(p.new_source))
        return journal


def naive(journal: list[Experiment]) -> dict[int, float]:
    """The naive predictor on the same proposals: the mean Δ of every earlier measured step."""
    out, seen = {}, []
    for e in journal:
        if e.predicted_delta is not None and seen:
            out[e.id] = statistics.fmean(seen)
        seen.append(e.delta)
    return out


def score(journals: list[list[Experiment]], sigma_of: list[float]) -> dict:
    preds, meas, naive_preds, n_total, n_pred = [], [], [], 0, 0
    sign_ok = 0
    for journal, sigma in zip(journals, sigma_of):
        cal = calibrate(journal, sigma, source="tune")
        n_total += len(journal)
        n_pred += cal.n
        sign_ok += round((cal.sign_accuracy or 0) * cal.n)
        base = naive(journal)
        for pt in cal.points:
            if pt["id"] in base:  # compared where both predict
                preds.append(pt["predicted"])
                meas.append(pt["measured"])
                naive_preds.append(base[pt["id"]])

    if not meas:
        return {"proposals": n_total, "predicted": n_pred, "coverage": round(n_pred / n_total, 3)}

    def mae(ps: list[float]) -> float:
        return statistics.fmean(abs(m - p) for p, m in zip(ps, meas))

    def sign(v: float) -> int:  # calibrate's: no effect is a direction of its own
        return (v > 0) - (v < 0)

    naive_sign = sum(1 for p, m in zip(naive_preds, meas) if sign(p) == sign(m)) / len(meas)
    return {
        "proposals": n_total, "predicted": n_pred, "coverage": round(n_pred / n_total, 3),
        "sign_accuracy": round(sign_ok / n_pred, 3), "pearson": round(pearson(preds, meas) or 0.0, 3),
        "mae": round(mae(preds), 5), "naive_sign_accuracy": round(naive_sign, 3),
        "naive_pearson": round(pearson(naive_preds, meas) or 0.0, 3), "naive_mae": round(mae(naive_preds), 5),
        "zero_mae": round(mae([0.0] * len(meas)), 5),
        "mae_vs_naive": round(mae(preds) / mae(naive_preds), 3), "mae_vs_zero": round(mae(preds) / mae([0.0] * len(meas)), 3),
    }


def main() -> None:
    seeds = range(4)
    t0 = time.perf_counter()
    per_project = {}
    everything, sigmas = [], []
    for project in PROJECTS:
        journals = [night(project, s) for s in seeds]
        per_project[project.name] = score(journals, [project.sigma] * len(journals))
        everything += journals
        sigmas += [project.sigma] * len(journals)
    print(json.dumps({"bench": "tune_predictions", "seeds": len(seeds), "projects": per_project,
                      "all": score(everything, sigmas), "seconds": round(time.perf_counter() - t0, 1),
                      "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
