"""How well proposers predict their own effects: predicted_delta against the measured delta.

Every proposal may carry ``predicted_delta`` (new − reference, in metric units, so an
improvement is negative when lower is better); the judge stores the measured ``delta`` and
``z`` on the same row. :func:`calibrate` compares them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sigmaloop.models import MEASURED, Experiment, Status

__all__ = ["Calibration", "calibrate", "pearson"]


@dataclass
class Calibration:
    n: int  # measured experiments that carried a prediction
    n_predicted: int  # experiments with a prediction, measured or not (crashes included)
    sign_accuracy: (
        float | None
    )  # share whose predicted sign (better/worse) matched the measured one
    pearson: (
        float | None
    )  # correlation of predicted vs measured deltas (None: < 3 points or no variance)
    predicted_improvements: int  # predictions of an improvement that were measured
    improvements_within_noise: (
        int  # ... of which the measured |z| < k (indistinguishable from noise)
    )
    improvements_confirmed: int  # ... of which the measured z >= k (a real improvement)
    mean_abs_error: float | None  # mean |measured − predicted|
    bias: float | None  # mean (measured − predicted): > 0 means predictions were too low
    k: float = 2.0
    sigma: float | None = None
    lower_is_better: bool = True
    points: list[dict[str, Any]] = field(default_factory=list)  # id, source, predicted, measured, z

    def as_dict(self, points: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not points:
            d.pop("points")
        return d


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None for fewer than 3 points or a constant series."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def calibrate(
    experiments: Iterable[Experiment],
    sigma: float | None,
    lower_is_better: bool = True,
    k: float = 2.0,
    source: str | None = None,
) -> Calibration:
    """Compare predictions with outcomes over the journal.

    Counted: proposals (not baselines, not confirmation reruns) with a finite
    ``predicted_delta``; those measured (kept/discarded, with a delta) are the points.
    z is the judge's stored z; where it is missing, delta / (√2 σ) with the row's sigma or
    ``sigma``. ``source`` keeps only experiments whose source starts with it (e.g. "llm").
    """
    better = -1 if lower_is_better else 1
    predicted_rows = [
        e
        for e in experiments
        if not e.is_baseline
        and e.confirms is None
        and _finite(e.predicted_delta)
        and (source is None or e.source.startswith(source))
    ]
    points = [e for e in predicted_rows if Status(e.status) in MEASURED and _finite(e.delta)]
    preds = [float(e.predicted_delta) for e in points]  # type: ignore[arg-type]
    meas = [float(e.delta) for e in points]  # type: ignore[arg-type]

    def z_of(e: Experiment) -> float | None:
        if _finite(e.z):
            return float(e.z)  # type: ignore[arg-type]
        s = e.sigma if _finite(e.sigma) and e.sigma else sigma
        if not s:
            return None
        return better * float(e.delta) / (math.sqrt(2) * s)  # type: ignore[arg-type]

    matched = sum(1 for p, m in zip(preds, meas) if _sign(p) == _sign(m))
    improving = [e for e in points if _sign(float(e.predicted_delta)) == better]  # type: ignore[arg-type]
    zs = [z_of(e) for e in improving]
    within = sum(1 for z in zs if z is not None and abs(z) < k)
    confirmed = sum(1 for z in zs if z is not None and z >= k)
    errors = [m - p for p, m in zip(preds, meas)]
    return Calibration(
        n=len(points),
        n_predicted=len(predicted_rows),
        sign_accuracy=matched / len(points) if points else None,
        pearson=pearson(preds, meas),
        predicted_improvements=len(improving),
        improvements_within_noise=within,
        improvements_confirmed=confirmed,
        mean_abs_error=sum(abs(x) for x in errors) / len(errors) if errors else None,
        bias=sum(errors) / len(errors) if errors else None,
        k=k,
        sigma=sigma,
        lower_is_better=lower_is_better,
        points=[
            {"id": e.id, "source": e.source, "predicted": p, "measured": m, "z": z_of(e)}
            for e, p, m in zip(points, preds, meas)
        ],
    )
