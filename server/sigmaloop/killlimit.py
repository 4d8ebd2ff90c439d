"""The kill limit: how long a trial may run before the runner kills it, learned per project.

A trial trains for ``budget`` seconds, but its wall time also holds a fixed overhead that is
the project's own: interpreter and library start-up, data loading, compilation, evaluation,
teardown. A constant ``2 x budget + grace`` must be generous enough for the slowest project,
so a hung trial of a fast one idles for minutes. Instead the engine learns the overhead from the
runs it measured (wall - training time) and kills at ``budget + 2 x overhead + kill_margin``:

* no measured run at this budget yet (the first reference runs): ``2 x budget + grace``, so a
  large fixed start-up cost is never mistaken for a hang before it has been seen once;
* afterwards: the largest overhead of the last :data:`RECENT_RUNS` measured runs at this budget,
  doubled (a busier machine, a colder cache), plus ``kill_margin`` (jitter, a slower last step),
  and never more than ``2 x budget + grace``: learning only tightens the configured limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .models import MEASURED, Experiment, KillLimit

RECENT_RUNS = 20  # an old slow outlier (a loaded machine) stops counting after this many runs
OVERHEAD_FACTOR = 2.0


def fixed_overhead(exp: Experiment) -> float | None:
    """A measured run's wall time minus its training time (seconds, >= 0); None if unknown.

    The training time is what the script reported (``training_seconds``), else the budget
    it was given. Runs without a metric (crashed, timed out, interrupted) say nothing about it.
    """
    wall = exp.timings.get("wall")
    if exp.status not in MEASURED or exp.metric is None or not _finite(wall):
        return None
    train = exp.timings.get("train")
    if not _finite(train) or train < 0:
        train = exp.budget
    if not _finite(train):
        return None
    return max(0.0, wall - train)


def kill_limit(budget: float, grace: float, margin: float, history: Iterable[Experiment]) -> KillLimit:
    """The kill limit for a trial of ``budget`` seconds, learned from ``history`` (oldest first)."""
    overheads = [
        o for e in history
        if e.budget is not None and math.isclose(e.budget, budget, rel_tol=1e-6)
        and (o := fixed_overhead(e)) is not None
    ][-RECENT_RUNS:]
    first = KillLimit.initial(budget, grace)
    if not overheads:
        return first
    overhead = max(overheads)
    learned = budget + OVERHEAD_FACTOR * overhead + margin
    return KillLimit(seconds=min(first.seconds, learned), budget=budget, grace=grace,
                     overhead=overhead, runs=len(overheads), margin=margin)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
