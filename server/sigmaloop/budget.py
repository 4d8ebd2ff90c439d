"""The budget is the runner's, not the script's: a trial that trained past it is ``over_budget``.

The runner times every trial process itself (``timings["wall"]``: start to exit, hand-over
included). What a run costs beyond its budget — start-up, data loading, compiling, exporting the
model — is learned from the comparable runs already measured (same budget, evaluator, device):
their median ``wall - budget``. A candidate is over budget when

    wall - budget  >  learned overhead + max(budget_tolerance_s, budget_tolerance x budget)
                                        + 3 x the spread of those runs' overheads

(it trained, or did anything else it shouldn't, for longer than the runs it is compared with;
the spread term is capped at max(base tolerance, half the budget), and only baselines — the
head's unchanged code, which no edit wrote — teach the overhead: a candidate that slipped
through must not loosen the rule for the next),
or when the training time it reports itself is past its budget by more than the base tolerance
and one of its own steps (a trainer checks the clock between steps; on a loaded CPU one step
may take seconds). Baselines set
the overhead and are not checked against it; with nothing measured yet only the reported time
is checked (and the kill limit still ends a run that never stops).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from .config import JudgeConfig
from .models import MEASURED, Experiment


@dataclass(frozen=True)
class BudgetCheck:
    """The numbers of one over-budget decision (rendered by :meth:`describe`)."""

    budget: float
    wall: float
    overhead: float | None  # learned from `runs` comparable runs; None: nothing to learn from
    runs: int
    tolerance: float
    reported: float | None  # the training seconds the script printed
    step: float = 0.0  # one step's time as reported (reported / steps), at most the budget
    base_tolerance: float = 0.0  # without the spread term: for the reported time

    @property
    def trained(self) -> float | None:
        """Training time by the runner's clock: wall minus the learned overhead."""
        return None if self.overhead is None else self.wall - self.overhead

    @property
    def over(self) -> bool:
        if self.overhead is not None and self.wall - self.budget > self.overhead + self.tolerance:
            return True
        return self.reported is not None and self.reported > self._reported_limit

    @property
    def _reported_limit(self) -> float:
        return self.budget + self.base_tolerance + self.step

    def describe(self) -> str:
        if self.overhead is not None and self.wall - self.budget > self.overhead + self.tolerance:
            return (f"trained ~{self.trained:.1f}s by the runner's clock for a {self.budget:g}s budget "
                    f"(wall {self.wall:.1f}s − overhead {self.overhead:.1f}s learned from {self.runs} "
                    f"comparable runs; tolerance {self.tolerance:.1f}s)")
        return (f"reported {self.reported:.1f}s of training for a {self.budget:g}s budget "
                f"(allowed {self._reported_limit:.1f}s: tolerance {self.base_tolerance:.1f}s + one step "
                f"{self.step:.1f}s)")


def comparable(e: Experiment, budget: float, evaluator: str, device: str) -> bool:
    return (e.budget is not None and math.isclose(e.budget, budget, rel_tol=1e-6)
            and e.evaluator == evaluator and e.device == device)


def check(budget: float, wall: float, reported: float | None, evaluator: str, device: str,
          history: Iterable[Experiment], cfg: JudgeConfig, steps: float | None = None) -> BudgetCheck:
    """The over-budget decision for a finished trial against ``history`` (measured runs)."""
    overheads = [
        e.timings["wall"] - budget for e in history
        if e.is_baseline and e.status in MEASURED and e.metric is not None
        and comparable(e, budget, evaluator, device)
        and isinstance(e.timings.get("wall"), (int, float)) and math.isfinite(e.timings["wall"])
    ]
    overhead = statistics.median(overheads) if overheads else None
    tolerance = base = max(cfg.budget_tolerance_s, cfg.budget_tolerance * budget)
    if len(overheads) >= 2:  # a loaded machine's start-up varies: that is not training
        spread = statistics.median(abs(o - overhead) for o in overheads) * 1.4826  # robust σ
        tolerance += min(3 * spread, max(base, 0.5 * budget))
    if reported is not None and not math.isfinite(reported):
        reported = None
    step = 0.0
    if reported is not None:
        n = steps if steps is not None and math.isfinite(steps) and steps >= 1 else 1.0
        step = min(budget, reported / n)
    return BudgetCheck(budget, wall, overhead, len(overheads), tolerance, reported, step, base)
