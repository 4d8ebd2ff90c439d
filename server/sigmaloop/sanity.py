"""What looks off about a finished run, in words: warnings a verdict carries (``Experiment.warnings``).

They never change a verdict; they say when its number is worth less than it looks:

- ``barely_trained``: the run made so few optimizer steps, or its loss fell so little, that its
  metric measures start-up more than the idea (a baseline at ln(vocab) after two steps).
- ``step_count``: a repeat of the same code on the same seed and budget made a clearly different
  number of steps: the machine's speed varied (other load, a throttled GPU), and under a fixed
  time budget that moves the metric as much as an edit does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .judge import comparable_key
from .models import Experiment, ProgressRecord

#: fewer optimizer steps than this is "barely trained"
MIN_STEPS = 10
#: the last logged loss above this share of the first is "barely trained" (it hardly fell)
MIN_DROP = 0.05
#: same-seed repeats whose step counts differ by more than this share are worth a word
STEP_SPREAD = 0.10


def steps_of(e: Experiment) -> int | None:
    """The optimizer steps a run made (its summary's ``num_steps``), None when unknown."""
    v = e.summary.get("num_steps")
    return int(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def barely_trained(steps: int | None, curve: list[ProgressRecord]) -> str | None:
    losses = [r.loss for r in curve if r.loss is not None and math.isfinite(r.loss)]
    if steps is not None and steps < MIN_STEPS:
        loss = f" (last loss {losses[-1]:.3g})" if losses else ""
        return (f"it made only {steps} optimizer step{'s' if steps != 1 else ''}{loss}: its metric "
                "measures an untrained model; raise the budget or make steps cheaper")
    if len(losses) >= 3 and losses[0] > 0 and losses[-1] > (1 - MIN_DROP) * losses[0]:
        return (f"its training loss hardly fell ({losses[0]:.3g} → {losses[-1]:.3g}): it barely trained; "
                "raise the budget, or check the learning rate")
    return None


def step_count(e: Experiment, steps: int | None, peers: Iterable[Experiment]) -> str | None:
    """A repeat of ``e``'s code on its seed and budget that made clearly more or fewer steps."""
    if steps is None or e.code_hash is None or e.seed is None:
        return None
    key = comparable_key(e)
    worst: tuple[float, Experiment, int] | None = None
    for p in peers:
        if p.id == e.id or p.code_hash != e.code_hash or p.seed != e.seed or comparable_key(p) != key:
            continue
        other = steps_of(p)
        if other is None or max(other, steps) == 0:
            continue
        spread = abs(other - steps) / max(other, steps)
        if spread > STEP_SPREAD and (worst is None or spread > worst[0]):
            worst = (spread, p, other)
    if worst is None:
        return None
    spread, p, other = worst
    return (f"it made {steps} steps where #{p.id} (the same code, seed {e.seed}, budget) made {other} "
            f"({100 * spread:.0f}% apart): the machine's speed varied, which under a time budget moves "
            "the metric too; run trials on an otherwise idle machine, or fewer slots")


def warnings_for(e: Experiment, curve: list[ProgressRecord], peers: Iterable[Experiment]) -> dict[str, str]:
    """The warnings of a finished, measured run (code → sentence); empty when nothing looks off."""
    steps = steps_of(e)
    out = {}
    if (w := barely_trained(steps, curve)) is not None:
        out["barely_trained"] = w
    if (w := step_count(e, steps, peers)) is not None:
        out["step_count"] = w
    return out
