"""The tuner's predicted effect: what the night's earlier changes of the same constant measured.

TPE says where to look next, not how much it will help, so without this the tuner's proposals
carry no number a morning report could hold them to. Here each constant gets the simplest
model its own history supports, fitted on the tuner's earlier *measured* single-constant
changes of it (kept or discarded, each with its paired Δ against the reference of its day):

* ``x`` is the size of the step: ``log(new/old)`` while every value seen is positive (ranges
  are searched on a log scale around the original), else ``new - old``; a bool's flip is
  ``+1`` (to True) or ``-1`` (to False).
* With 2–3 steps: a line through no change (``Δ = b·x``). With 4 or more steps of at least 3
  sizes: a parabola through no change (``Δ = b·x + c·x²``), which can say "any big move of LR
  hurts" where a line through halvings and doublings would say nothing.
* The new step is clamped to what was seen: a line (odd through no change) to the farthest
  step either way, a parabola to between the steps seen and no change (a parabola seen on one
  side only says nothing of the other). A change of several constants predicts the sum (no
  interactions are known).
* Only the current study's steps count: a new metric or direction starts a new study, and
  Δs measured in other units mean nothing here.
* No prediction when any changed constant has fewer than 2 measured steps: a number with
  nothing behind it would only blur the calibration of the ones that have.

Decided: earlier Δs were measured against the head of their day, so a model that outlives
several keeps mixes contexts; it is a local, honest guess, and the report's calibration
section shows how good it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sigmaloop.models import MEASURED, Experiment, Status

#: Fewest measured steps of a constant before it gets a line; a parabola needs more.
MIN_LINE = 2
MIN_PARABOLA = 4


@dataclass(frozen=True)
class Prediction:
    """A predicted Δ (new − reference, metric units) and what it rests on, in words."""

    delta: float
    basis: str


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def steps(experiments: Iterable[Experiment], study: str | None = None) -> dict[str, list[tuple[Any, Any, float]]]:
    """Each constant's measured single-constant tuner steps: ``(old, new, Δ)``, oldest first;
    with ``study``, only that study's (a new metric or direction starts a new one: older Δs are
    in other units)."""
    out: dict[str, list[tuple[Any, Any, float]]] = {}
    for e in experiments:
        if e.source != "tune" or Status(e.status) not in MEASURED:
            continue
        params = e.params or {}
        token = params.get("optuna_study")
        if study is not None and token is not None and token != study:
            continue
        if e.delta is None or not math.isfinite(e.delta):
            continue
        changes = params.get("changes")
        if not isinstance(changes, dict) or len(changes) != 1:
            continue  # two constants at once: whose effect was it?
        (name, pair), = changes.items()
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            out.setdefault(name, []).append((pair[0], pair[1], float(e.delta)))
    return out


def _sizes(pairs: list[tuple[Any, Any]]) -> list[float] | None:
    """The steps' sizes on one scale (see the module doc), or None when they have none."""
    if all(isinstance(a, bool) and isinstance(b, bool) for a, b in pairs):
        return [0.0 if a == b else (1.0 if b else -1.0) for a, b in pairs]
    nums = [(_number(a), _number(b)) for a, b in pairs]
    if any(a is None or b is None for a, b in nums):
        return None
    if all(a > 0 and b > 0 for a, b in nums):  # type: ignore[operator]
        return [math.log(b / a) for a, b in nums]  # type: ignore[operator]
    return [b - a for a, b in nums]  # type: ignore[operator]


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float, str] | None:
    """Least squares through the origin: ``(b, c, shape)`` of ``b·x + c·x²`` (c = 0 for a line)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x != 0.0]
    if len(pts) < MIN_LINE:
        return None
    sxx = sum(x * x for x, _ in pts)
    sxy = sum(x * y for x, y in pts)
    if len(pts) >= MIN_PARABOLA and len({round(x, 9) for x, _ in pts}) >= 3:
        s3 = sum(x ** 3 for x, _ in pts)
        s4 = sum(x ** 4 for x, _ in pts)
        sx2y = sum(x * x * y for x, y in pts)
        det = sxx * s4 - s3 * s3
        if det > 1e-12 * sxx * s4:  # relative: steps of any scale
            return (sxy * s4 - s3 * sx2y) / det, (sxx * sx2y - s3 * sxy) / det, "a parabola"
    return sxy / sxx, 0.0, "a line"


def predict_delta(changes: dict[str, tuple[Any, Any]], experiments: Iterable[Experiment],
                  study: str | None = None) -> Prediction | None:
    """The predicted Δ of changing each ``name: (old, new)`` together, from the tuner's earlier
    measured steps of those constants (of ``study`` only, when given); None where any of them
    has too few."""
    history = steps(experiments, study)
    total = 0.0
    words = []
    shapes = set()
    for name, (old, new) in changes.items():
        seen = history.get(name, [])
        sizes = _sizes([(a, b) for a, b, _ in seen] + [(old, new)])
        if sizes is None:
            return None
        xs, x = sizes[:-1], sizes[-1]
        fit = _fit(xs, [d for _, _, d in seen])
        if fit is None:
            return None
        b, c, shape = fit
        shapes.add(shape)
        moved = [v for v in xs if v != 0.0]
        if shape == "a line":  # odd through no change: as far either way as the farthest step seen
            reach = max(abs(v) for v in moved)
            x = max(-reach, min(x, reach))
        else:  # a parabola is known only between the steps seen (and no change)
            x = max(min(*moved, 0.0), min(x, max(*moved, 0.0)))
        total += b * x + c * x * x
        words.append(f"{len(moved)} earlier {name} change{'s' if len(moved) != 1 else ''}")
    if not words:
        return None
    basis = f"{' and '.join(words)} measured, each fitted by {' or '.join(sorted(shapes))} through no change"
    return Prediction(total, basis)
