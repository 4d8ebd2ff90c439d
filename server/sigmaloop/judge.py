"""The noise-aware judge: keep an edit only when its improvement stands clear of run-to-run noise.

Noise (sigma) is the pooled standard deviation of repeats of the *same code* with different seeds
(baselines, and the confirmation reruns every would-be keep gets). A candidate runs on a seed the
reference already ran on, and its delta is taken against that paired run. The difference of two
runs carries sqrt(2) sigma of noise, so z = improvement / (sqrt(2) sigma).

Policy (k from the config, default 2):
- z < k: discarded ("within noise" or "worse").
- z >= k: a would-be keep. It earns a confirmation rerun on another paired seed; it is kept only
  when every run improved and the mean improvement is still beyond k sigma of the mean.
  (The issue asks this only of borderline candidates, z in [k, k + margin); we confirm all of
  them, because the rerun also gives the new reference a second seed and sigma another repeat.)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import JudgeConfig
from .lifecycle import Reason
from .models import Experiment, Status


@dataclass
class Reference:
    """What the current code scored, per seed: the runs a candidate is paired with."""

    code_hash: str | None
    by_seed: dict[int, float] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)

    @property
    def value(self) -> float | None:
        """Mean over seeds: the number shown as "baseline" / "best"."""
        if not self.by_seed:
            return None
        return sum(self.by_seed.values()) / len(self.by_seed)


@dataclass
class Verdict:
    """The judge's decision as fields; its words are lifecycle.describe's job."""

    status: Status  # KEPT or DISCARDED; RUNNING while a confirmation is due
    delta: float | None
    sigma: float | None
    z: float | None
    reason: Reason
    runs: int = 1  # how many seeds the candidate ran on
    detail: str = ""  # e.g. the per-seed deltas of a run that did not hold
    needs_confirmation: bool = False

    @property
    def numbers(self) -> dict[str, float]:
        return {"runs": self.runs}


def measured_runs(experiments: Iterable[Experiment]) -> list[Experiment]:
    """Finished runs with a metric, whatever their verdict (repeats of code count for sigma)."""
    out = []
    for e in experiments:
        if e.metric is None or e.code_hash is None or e.seed is None:
            continue
        if not math.isfinite(e.metric):
            continue
        if e.status in (Status.KEPT, Status.DISCARDED):
            out.append(e)
    return out


def pooled_sigma(experiments: Iterable[Experiment]) -> tuple[float | None, int]:
    """Pooled standard deviation of same-code repeats, and its degrees of freedom."""
    groups: dict[str, list[float]] = defaultdict(list)
    for e in measured_runs(experiments):
        groups[e.code_hash].append(e.metric)  # type: ignore[index, arg-type]
    ss, dof = 0.0, 0
    for values in groups.values():
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        ss += sum((v - mean) ** 2 for v in values)
        dof += len(values) - 1
    if dof == 0:
        return None, 0
    return math.sqrt(ss / dof), dof


def reference_for(experiments: Iterable[Experiment], code_hash: str | None) -> Reference:
    """All measured runs of the given code, averaged per seed."""
    per_seed: dict[int, list[float]] = defaultdict(list)
    ref = Reference(code_hash)
    for e in measured_runs(experiments):
        if e.code_hash == code_hash:
            per_seed[e.seed].append(e.metric)  # type: ignore[index, arg-type]
            ref.ids.append(e.id)
    ref.by_seed = {s: sum(v) / len(v) for s, v in sorted(per_seed.items())}
    return ref


class Judge:
    def __init__(self, cfg: JudgeConfig, lower_is_better: bool = True, metric: str = "val_bpb"):
        self.cfg = cfg
        self.lower_is_better = lower_is_better
        self.metric = metric

    # -- noise -------------------------------------------------------------------------------
    def sigma(self, experiments: Iterable[Experiment], reference: Reference) -> float | None:
        """Run-to-run noise, floored so two lucky-identical repeats can't make it zero."""
        s, _ = pooled_sigma(experiments)
        if s is None:
            return None
        ref = reference.value
        floor = self.cfg.min_sigma_rel * abs(ref) if ref is not None else 0.0
        return max(s, floor, 1e-12)

    def keep_threshold(self, sigma: float) -> float:
        """The smallest improvement (metric units) a candidate's first run must show to be kept:
        k times the noise of a paired difference (√2 σ)."""
        return self.cfg.k * math.sqrt(2.0) * sigma

    def improvement(self, delta: float) -> float:
        """Positive when the candidate is better, whatever the metric's direction."""
        return -delta if self.lower_is_better else delta

    def pick_seed(self, reference: Reference, exclude: Iterable[int] = ()) -> int | None:
        """A seed the reference ran on (paired comparison), preferring the configured order."""
        excluded = set(exclude)
        for seed in self.cfg.seeds:
            if seed in reference.by_seed and seed not in excluded:
                return seed
        for seed in reference.by_seed:
            if seed not in excluded:
                return seed
        return None

    # -- verdicts ----------------------------------------------------------------------------
    def judge(
        self, runs: list[tuple[int, float]], reference: Reference, sigma: float | None
    ) -> Verdict:
        """Judge a candidate from its runs [(seed, metric), ...] against the paired reference."""
        if sigma is None:
            raise ValueError("no noise estimate yet: run the baseline on at least 2 seeds first")
        if reference.value is None:
            raise ValueError("no reference runs of the current code: run the baseline first")
        # paired with the reference run of the same seed where there is one, else its mean
        # (then the noise of the difference is below sqrt(2) sigma: the verdict stays conservative)
        deltas = [value - reference.by_seed.get(seed, reference.value) for seed, value in runs]
        n = len(deltas)
        delta = sum(deltas) / n
        sd = math.sqrt(2.0) * sigma / math.sqrt(n)  # noise of a mean of n paired differences
        z = self.improvement(delta) / sd
        every_run_better = all(self.improvement(d) > 0 for d in deltas)
        if z >= self.cfg.k and every_run_better:
            if n < 2:
                return Verdict(Status.RUNNING, delta, sigma, z, Reason.IMPROVED, n, needs_confirmation=True)
            return Verdict(Status.KEPT, delta, sigma, z, Reason.IMPROVED, n)
        if n >= 2 and not every_run_better:
            by_seed = ", ".join(f"{d:+.4f}" for d in deltas)
            return Verdict(Status.DISCARDED, delta, sigma, z, Reason.NOT_CONFIRMED, n, f"{by_seed} by seed")
        if z <= -self.cfg.k:
            reason = Reason.WORSE
        elif z < self.cfg.k:
            reason = Reason.WITHIN_NOISE
        else:
            reason = Reason.NOT_CONFIRMED
        return Verdict(Status.DISCARDED, delta, sigma, z, reason, n)
