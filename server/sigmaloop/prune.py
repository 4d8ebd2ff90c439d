"""Early pruning: stop a candidate whose training curve is clearly behind the reference's.

The reference is the parent code's own measured runs (the seeds its judge pairs with). At a
fraction ``f`` of the budget each reference curve gives one number (its mean loss over the
window ``[f - window, f]``); their median is the reference there and their robust spread
(1.4826 x the median absolute deviation; the standard deviation of two) says how far apart runs
of the same code drift by chance. A candidate is behind at ``f`` when its own window mean is
above the reference by more than ``max(z x spread, margin(f) x reference)``, and it is pruned
only when it stayed behind for a whole window of the budget (never on one noisy point), after
``after`` of the budget and before the last ``window`` (nothing left to save). The median and
the robust spread keep one slow reference run (a busy machine) from either hiding a clearly
losing candidate or lowering the bar.

``margin(f)`` shrinks from ``catch_up`` (early, when a slower start can still win: a higher
learning rate looks worse until its warmdown) to ``floor`` at the end of the budget: the
bar is far beyond noise everywhere, so a trial that could still win within noise runs on.
Baselines and confirmations are never pruned (the engine never asks).

The loss is the training loss the script records (lower is better whatever the judged metric's
direction). bench/prune.py measures budget saved against keeps lost on real trials.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .models import ProgressRecord

Point = tuple[float, float]  # (fraction of the budget, loss)


@dataclass(frozen=True)
class PruneRule:
    after: float = 0.3  # never before this fraction of the budget (judge.prune_after)
    window: float = 0.1  # the span a window mean covers, and how long a trial must stay behind
    z: float = 4.0  # ... beyond this many spreads of the reference curves
    catch_up: float = 0.08  # ... and beyond this fraction of the reference loss at the start
    floor: float = 0.02  # ... shrinking linearly to this at the end of the budget
    min_points: int = 3  # points a window mean needs (the candidate's)

    def margin(self, frac: float, ref_mean: float, spread: float) -> float:
        rel = self.floor + (self.catch_up - self.floor) * max(0.0, 1.0 - frac)
        return max(self.z * spread, rel * abs(ref_mean))


@dataclass
class PruneDecision:
    frac: float  # where it was pruned
    loss: float  # its window mean there
    reference: float  # the reference curves' median there
    spread: float  # their robust spread
    margin: float
    refs: int  # how many reference seeds
    window: float = 0.1

    def describe(self, budget: float | None = None) -> str:
        saved = f"; saved ~{(1 - self.frac) * budget:.0f}s of its {budget:g}s budget" if budget else ""
        return (f"at {self.frac:.0%} of the budget its training loss {self.loss:.4f} was {self.loss - self.reference:+.4f} "
                f"behind its reference ({self.reference:.4f} ± {self.spread:.4f} over {self.refs} seeds); the bar there "
                f"is {self.margin:.4f}, and it stayed behind for {self.window:.0%} of the budget{saved}")


def window_mean(points: Sequence[Point], end: float, width: float, at_least: int = 1) -> tuple[float | None, int]:
    """The mean loss of ``points`` with fraction in ``[end - width, end]`` (at least the last
    ``at_least`` points up to ``end``: short budgets log sparsely), and how many."""
    upto = [p for p in points if p[0] <= end]
    inside = [loss for frac, loss in upto if frac >= end - width]
    vals = inside if len(inside) >= at_least else [loss for _, loss in upto[-at_least:]]
    if not vals:
        return None, 0
    return sum(vals) / len(vals), len(vals)


def robust(values: Sequence[float]) -> tuple[float, float]:
    """Median and robust spread (1.4826 x MAD; for two values their standard deviation)."""
    center = statistics.median(values)
    if len(values) == 2:
        return center, statistics.stdev(values)
    return center, 1.4826 * statistics.median(abs(v - center) for v in values)


def curve_points(records: Iterable[ProgressRecord]) -> list[Point]:
    """(frac, loss) of the records that have a finite loss, in order."""
    return [(r.frac, r.loss) for r in records
            if r.loss is not None and math.isfinite(r.loss) and math.isfinite(r.frac)]


@dataclass
class Pruner:
    """Watches one running candidate against its reference curves (at least two seeds)."""

    references: dict[object, list[list[Point]]]  # per seed (a run of unknown seed is its own)
    rule: PruneRule = field(default_factory=PruneRule)
    seed: int | None = None  # the candidate's: the reference on the same seed saw the same batches
    points: list[Point] = field(default_factory=list)
    behind_since: float | None = None  # fraction where it fell behind (and stayed)
    decision: PruneDecision | None = None

    @classmethod
    def for_references(cls, curves: Iterable[Iterable[ProgressRecord]], rule: PruneRule,
                       seeds: Sequence[int | None] | None = None, seed: int | None = None) -> Pruner | None:
        """A pruner, or None when fewer than two seeds of reference runs have a curve to compare
        with. ``seeds``: each curve's seed (runs on one seed are averaged: one voice per seed)."""
        by_seed: dict[object, list[list[Point]]] = {}
        for i, c in enumerate(curves):
            pts = curve_points(c)
            key = seeds[i] if seeds is not None and seeds[i] is not None else ("run", i)
            if len(pts) >= 2:
                by_seed.setdefault(key, []).append(pts)
        return cls(by_seed, rule, seed) if len(by_seed) >= 2 else None

    def update(self, records: Iterable[ProgressRecord]) -> PruneDecision | None:
        """Take new records; the decision to prune (once), or None."""
        if self.decision is not None:
            return self.decision
        new = curve_points(records)
        if not new:
            return None
        self.points.extend(new)
        return self.check(self.points[-1][0])

    def _reference_at(self, frac: float) -> dict[object, float]:
        rule, out = self.rule, {}
        for key, runs in self.references.items():
            vals = [m for m, _ in (window_mean(r, frac, rule.window, rule.min_points) for r in runs) if m is not None]
            if vals:
                out[key] = statistics.fmean(vals)
        return out

    def check(self, frac: float) -> PruneDecision | None:
        rule = self.rule
        if frac < rule.after or frac > 1.0 - rule.window:
            return None
        loss, n = window_mean(self.points, frac, rule.window, rule.min_points)
        per_seed = self._reference_at(frac)
        if loss is None or n < rule.min_points or len(per_seed) < 2:
            return None
        center, spread = robust(list(per_seed.values()))
        margin = rule.margin(frac, center, spread)
        if loss - center <= margin:
            self.behind_since = None
            return None
        if self.behind_since is None:
            self.behind_since = frac
        if frac - self.behind_since < rule.window:
            return None  # behind, but not yet for a whole window
        self.decision = PruneDecision(frac, loss, center, spread, margin, len(per_seed), rule.window)
        return self.decision
