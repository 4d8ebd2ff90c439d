"""Loss-curve anomalies of a trial: pure functions over :class:`ProgressRecord` lists.

Used by the language server (warnings on the lines an experiment changed) and usable by any
other adapter. Nothing here touches the journal, files or processes.
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import dataclass

from .models import ProgressRecord

#: Every kind :func:`detect` reports, in the order it reports them.
KINDS = ("nan", "spike", "divergence", "plateau")

#: What detect() can find, in its order.
KINDS = ("nan", "spike", "divergence", "plateau")

#: A loss at least this many times the running median of the earlier losses is a spike.
SPIKE_FACTOR = 3.0
#: Points needed before the running median means anything.
MIN_HISTORY = 5
#: Points needed before divergence / plateau are judged.
MIN_POINTS = 10
#: Divergence: the final loss gave back at least this share of the progress first → min.
DIVERGE_SHARE = 0.5
#: Plateau: the last half improved the best loss by less than this share of the first half's
#: improvement.
PLATEAU_SHARE = 0.01


@dataclass(frozen=True)
class Anomaly:
    kind: str  # "nan" | "spike" | "divergence" | "plateau"
    frac: float  # where in the budget (0..1) it shows
    step: int
    message: str  # e.g. "loss ×3.2 spike at 41% of budget"
    factor: float | None = None


def _pct(frac: float) -> str:
    return f"{round(max(0.0, min(1.0, frac)) * 100):d}%"


def detect(records: list[ProgressRecord]) -> list[Anomaly]:
    """Anomalies of one curve, in the order nan, spike, divergence | plateau (at most one each)."""
    points = [r for r in records if r.loss is not None]
    out: list[Anomaly] = []
    for r in points:
        if not math.isfinite(r.loss):
            what = "NaN" if math.isnan(r.loss) else "inf"
            out.append(Anomaly("nan", r.frac, r.step, f"loss {what} at {_pct(r.frac)} of budget"))
            break
    finite = [r for r in points if math.isfinite(r.loss)]
    spike = _spike(finite)
    if spike is not None:
        out.append(spike)
    trend = _divergence(finite) or _plateau(finite)
    if trend is not None:
        out.append(trend)
    return out


def _spike(points: list[ProgressRecord]) -> Anomaly | None:
    """The largest loss ≥ SPIKE_FACTOR × the running median of the losses before it."""
    history: list[float] = []
    best: tuple[float, ProgressRecord] | None = None
    for r in points:
        if len(history) >= MIN_HISTORY:
            n = len(history)
            median = history[n // 2] if n % 2 else (history[n // 2 - 1] + history[n // 2]) / 2
            if median > 0:
                factor = r.loss / median
                if factor >= SPIKE_FACTOR and (best is None or factor > best[0]):
                    best = (factor, r)
        insort(history, r.loss)
    if best is None:
        return None
    factor, r = best
    return Anomaly("spike", r.frac, r.step, f"loss ×{factor:.1f} spike at {_pct(r.frac)} of budget",
                   factor=factor)


def _divergence(points: list[ProgressRecord]) -> Anomaly | None:
    if len(points) < MIN_POINTS:
        return None
    first, last = points[0], points[-1]
    low = min(points, key=lambda r: r.loss)
    progress = first.loss - low.loss
    if progress <= 0 or low is last:
        return None
    if last.loss - low.loss >= DIVERGE_SHARE * progress:
        return Anomaly(
            "divergence", last.frac, last.step,
            f"loss diverged: final {last.loss:.4g} vs min {low.loss:.4g} at {_pct(low.frac)} of budget",
        )
    return None


def _plateau(points: list[ProgressRecord]) -> Anomaly | None:
    if len(points) < MIN_POINTS:
        return None
    half = len(points) // 2
    first_half, last_half = points[:half], points[half:]
    best_first = min(r.loss for r in first_half)
    best_last = min(r.loss for r in last_half)
    gained = points[0].loss - best_first
    if gained <= 0:
        gained = abs(best_first) or 1.0
    if best_first - best_last < PLATEAU_SHARE * gained:
        start = last_half[0]
        return Anomaly("plateau", start.frac, start.step,
                       f"loss plateaued: no improvement after {_pct(start.frac)} of budget")
    return None
