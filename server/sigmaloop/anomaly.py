"""Loss-curve anomalies of a trial: pure functions over :class:`ProgressRecord` lists.

Used by the language server (warnings on the lines an experiment changed), the morning report
and any other adapter. Nothing here touches the journal, files or processes.

What each kind means (what a researcher would call it), judged against the curve's own noise so
the same rules hold for 10 points or 10,000, for a loss of 9 or of -3:

- ``nan``: a loss that is NaN or ±inf.
- ``spike``: one or a few points far above the level around them (>= SPIKE_SIGMAS noise sigmas
  and >= SPIKE_REL of the level), after which the curve comes back; a last point counts too.
- ``divergence``: the loss turned up and stayed up: its level at the end is above its best level
  by more than the noise allows and by >= DIVERGE_SHARE of the progress made before.
- ``plateau``: the loss stopped improving for a large share of the run (>= PLATEAU_SPAN of its
  points and of its budget, to the end): a least-squares line through that stretch falls, even
  PLATEAU_Z standard errors up, at under PLATEAU_PACE of the pace of as long a stretch just
  before (which itself clearly fell), falls by under PLATEAU_SHARE of what the loss fell before
  it, and does not clearly climb (that is a divergence, or nothing). A slow but real improvement
  is not a plateau; nor is a run whose loss ends NaN (it blew up, it did not level off). A loss
  that never moved is one.

Spikes are left out when the trend is judged; a spike after the turn of a divergence is part of
the climb (unless the climb is only that last point: then it is a spike at the end).

Measured on real trainer curves with injected faults in ``bench/anomaly.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import accumulate

from .models import ProgressRecord
from .output import loss_of

#: Every kind :func:`detect` reports, in the order it reports them.
KINDS = ("nan", "spike", "divergence", "plateau")

#: Neighbours on each side whose median is a point's local level (a spike of up to 3 points
#: leaves the median of 8 neighbours clean); fewer on a short curve, whose level moves faster.
LEVEL_HALF = 4
#: Neighbours on each side whose residuals give a spike's local noise.
NOISE_HALF = 15
#: A spike is at least this many local noise sigmas over the level around it ...
SPIKE_SIGMAS = 6.5
#: ... and at least this share of that level (a blip on a very smooth curve is no spike).
SPIKE_REL = 0.08
#: Points a curve needs before any spike is judged (the first ones are warm-up).
MIN_HISTORY = 3
#: Points needed before divergence / plateau are judged.
MIN_POINTS = 10
#: Divergence: the end level is over the best level by this many noise sigmas (of a level) ...
DIVERGE_SIGMAS = 5.0
#: ... and by at least this share of the progress made from the start to the best level.
DIVERGE_SHARE = 0.05
#: Trends are judged on about this many block medians (on each point's level, when shorter).
BLOCKS = 60
#: Plateau: the flat stretch is at least this share of the points and of the budget ...
PLATEAU_SPAN = 0.25
#: ... and at least this many points.
PLATEAU_MIN_POINTS = 8
#: Plateau: the stretch's fall, plus this many standard errors ...
PLATEAU_Z = 2.0
#: ... is at under this share of the pace of the stretch just before it (which fell by at least
#: PLATEAU_Z standard errors itself) ...
PLATEAU_PACE = 0.25
#: ... and the stretch's fall is under this share of what the loss fell before the stretch.
PLATEAU_SHARE = 0.05
#: Plateau: the starts tried on a long curve (about).
PLATEAU_STARTS = 200
#: MAD → sigma for normal noise.
MAD_SIGMA = 1.4826
#: The noise is taken as at least this share of the loss level (and NOISE_FLOOR_ABS): a perfectly
#: smooth curve has next to no noise, and a figure of 10^16 sigmas tells no one anything.
NOISE_FLOOR_REL = 1e-3
NOISE_FLOOR_ABS = 1e-12
#: Over this many noise sigmas a message says "far beyond its noise" instead of the figure.
SIGMAS_SHOWN = 1000.0


@dataclass(frozen=True)
class Anomaly:
    kind: str  # one of KINDS
    frac: float  # where in the budget (0..1) it shows
    step: int
    message: str  # e.g. "loss spike ×3.2 at step 410 (41% of budget): 9.6 vs 3.0 around it"
    factor: float | None = None  # spike: peak / local level (when the level is positive)
    value: float | None = None  # the loss it is about: spike peak, end level, plateau level
    sigmas: float | None = None  # how far beyond the curve's noise (spike, divergence)


def _pct(frac: float) -> str:
    return f"{round(max(0.0, min(1.0, frac)) * 100):d}%"


def _where(r: ProgressRecord) -> str:
    return f"step {r.step} ({_pct(r.frac)} of budget)"


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def detect(records: list[ProgressRecord]) -> list[Anomaly]:
    """Anomalies of one curve, in the order nan, spike, divergence | plateau (at most one each).

    A loss stored JSON-safe (``loss`` None plus the NONFINITE_LOSS extra, as the journal keeps
    NaN and ±inf) is read back with :func:`loss_of`. Records without a loss are skipped; spikes
    and trends are judged on the finite losses."""
    points = [_with_loss(r) for r in records]
    points = [r for r in points if r.loss is not None]
    out: list[Anomaly] = []
    bad = _nan(points)
    if bad is not None:
        out.append(bad)
    finite = [r for r in points if math.isfinite(r.loss)]
    curve = _Curve.of(finite)
    spike, spiked = _spike(curve)
    trend = _divergence(curve) if curve else None
    if trend is not None and spike is not None and spike.step > trend.step:
        last = spike.step == finite[-1].step
        if last and _divergence(_Curve.of(finite[:-1])) is None:
            trend = None  # the climb is that one last point: a spike at the end
        else:
            spike = None  # a point of the climb itself, not a spike the curve came back from
    if trend is None and curve and math.isfinite(points[-1].loss):
        # judged without the spikes: one high point must not hide or fake a flat end; and not
        # on a run whose loss ended NaN / inf: that run blew up, its finite part is no "end"
        rest = [r for i, r in enumerate(finite) if i not in spiked] if spiked else finite
        trend = _plateau(_Curve.of(rest)) if len(rest) >= MIN_POINTS else None
    return out + [a for a in (spike, trend) if a is not None]


def _with_loss(r: ProgressRecord) -> ProgressRecord:
    """The record with its real loss (a NaN or ±inf the journal stored as None + a marker)."""
    if r.loss is not None or not r.extra:
        return r
    loss = loss_of(r)
    return r if loss is None else replace(r, loss=loss)


def _sigmas_text(sigmas: float, floored: bool) -> str:
    """", 12σ of its noise", or words where the figure would be absurd or only says how far the
    noise was floored (a near-noiseless curve)."""
    if floored or sigmas > SIGMAS_SHOWN:
        return ", far beyond its noise"
    return f", {sigmas:.0f}σ of its noise"


def _nan(points: list[ProgressRecord]) -> Anomaly | None:
    for i, r in enumerate(points):
        if math.isfinite(r.loss):
            continue
        what = "NaN" if math.isnan(r.loss) else "inf" if r.loss > 0 else "-inf"
        rest = points[i + 1:]
        tail = " and every point after it" if rest and not any(math.isfinite(p.loss) for p in rest) else ""
        before = next((p for p in reversed(points[:i]) if math.isfinite(p.loss)), None)
        last = f"; last finite loss {before.loss:.4g} at step {before.step}" if before else \
            " (no finite loss before it)"
        return Anomaly("nan", r.frac, r.step, f"loss {what} at {_where(r)}{tail}{last}")
    return None


@dataclass
class _Curve:
    """The finite points with each one's local level (median of its neighbours) and residual;
    those two are only worked out when asked for (the plateau test does without them)."""

    points: list[ProgressRecord]
    xs: list[float]
    half: int  # neighbours on each side of a point's level
    curl: list[float]  # second differences x[i-1] - 2 x[i] + x[i+1] (a straight trend: 0)

    @classmethod
    def of(cls, points: list[ProgressRecord]) -> _Curve:
        xs = [r.loss for r in points]
        half = max(2, min(LEVEL_HALF, len(xs) // 10))
        curl = [xs[i - 1] - 2 * xs[i] + xs[i + 1] for i in range(1, len(xs) - 1)]
        return cls(points, xs, half, curl)

    @cached_property
    def level(self) -> list[float]:
        return _neighbour_medians(self.xs, self.half)

    @cached_property
    def resid(self) -> list[float]:
        return [x - m for x, m in zip(self.xs, self.level)]

    def __bool__(self) -> bool:
        return len(self.xs) >= MIN_POINTS

    def noise(self, lo: int, hi: int) -> float:
        """Robust noise sigma around the points lo..hi-1 (see :meth:`noise_parts`)."""
        return max(self.noise_parts(lo, hi))

    @cached_property
    def bend(self) -> list[float]:
        return [abs(d) for d in self.curl]

    def noise_parts(self, lo: int, hi: int, level: float | None = None) -> tuple[float, float]:
        """The noise sigma measured around the points lo..hi-1, from their second differences
        (blind to a trend, unlike residuals from a level that lags a bend; √6: three points'
        noise), and its floor there: NOISE_FLOOR_REL of the loss level (``level``, or the
        points' median), or NOISE_FLOOR_ABS."""
        lo, hi = max(lo, 0), min(hi, len(self.xs))
        sigma = MAD_SIGMA * _median(self.bend[max(lo - 1, 0):hi - 1] or [0.0]) / math.sqrt(6)
        if level is None:
            level = _median(self.xs[lo:hi]) if hi > lo else 0.0
        return sigma, max(NOISE_FLOOR_REL * abs(level), NOISE_FLOOR_ABS)


def _neighbour_medians(xs: list[float], half: int) -> list[float]:
    """:func:`_neighbour_median` of every point (inline where the window is whole: a 10k-point
    curve has 10k of them)."""
    n = len(xs)
    if n < 2 * half + 1:
        return [_neighbour_median(xs, i, half) for i in range(n)]
    out = [_neighbour_median(xs, i, half) for i in range(half)]
    for i in range(half, n - half):
        w = sorted(xs[i - half:i] + xs[i + 1:i + half + 1])
        out.append((w[half - 1] + w[half]) / 2)
    out += [_neighbour_median(xs, i, half) for i in range(n - half, n)]
    return out


def _neighbour_median(xs: list[float], i: int, half: int) -> float:
    """Median of up to 2×half neighbours of i (not i itself), the window kept full at the ends
    by taking more from the other side."""
    n = len(xs)
    if n < 2:
        return xs[i]
    lo, hi = i - half, i + half + 1
    if lo < 0:
        hi -= lo
        lo = 0
    if hi > n:
        lo = max(0, lo - (hi - n))
        hi = n
    return _median(xs[lo:i] + xs[i + 1:hi])


def _spike(c: _Curve) -> tuple[Anomaly | None, set[int]]:
    """The highest point (in noise sigmas) of the points far above their local level, and the
    indices of all such points."""
    n = len(c.xs)
    if n < MIN_HISTORY + 2:
        return None, set()
    found: list[tuple[float, int, float, bool]] = []  # (sigmas, index, excess, noise floored)
    for i in range(MIN_HISTORY, n):
        excess = c.resid[i]
        scale = abs(c.level[i])
        if excess <= SPIKE_REL * scale or excess <= 1e-12 * max(1.0, scale):
            continue
        # the level of the points before, too: a point at the end has only those, and one on a
        # falling stretch must clear the level it fell from
        before = _median(c.xs[max(0, i - 2 * c.half):i])
        if c.xs[i] - before <= SPIKE_REL * scale:
            continue
        # the noise around it, but not from the first quarter: a run's opening drop is nearly
        # noise-free and would make ordinary noise later look like spikes
        measured, floor = c.noise_parts(max(i - NOISE_HALF, min(n // 4, i - 2)), i + NOISE_HALF + 1,
                                        c.level[i])
        sigma = max(measured, floor)  # > 0
        if excess < SPIKE_SIGMAS * sigma:
            continue
        found.append((excess / sigma, i, excess, measured < floor))
    if not found:
        return None, set()
    events = sum(1 for k, f in enumerate(found) if k == 0 or f[1] > found[k - 1][1] + 1)
    sigmas, i, excess, floored = max(found)
    r, level = c.points[i], c.level[i]
    factor = r.loss / level if level > 0 else None
    size = f"×{factor:.1f}" if factor is not None else f"+{excess:.3g}"
    noise = _sigmas_text(sigmas, floored)
    more = f"; {events} spikes in all" if events > 1 else ""
    return Anomaly("spike", r.frac, r.step,
                   f"loss spike {size} at {_where(r)}: {r.loss:.4g} vs {level:.4g} around it{noise}{more}",
                   factor=factor, value=r.loss,
                   sigmas=sigmas), {f[1] for f in found}


@dataclass
class _Blocks:
    """The curve's level at a coarser grain, so trends cost the same at any length: for a long
    curve the medians of consecutive blocks of m points (about BLOCKS of them), for a short one
    each point's local level. ``starts``: each block's first point; ``noise``: the noise sigma
    of one block's level, from the residuals of the whole curve."""

    v: list[float]
    starts: list[int]
    m: int
    noise: float

    @classmethod
    def of(cls, c: _Curve) -> _Blocks:
        n = len(c.xs)
        sigma = c.noise(0, n)
        m = n // BLOCKS
        if m < 3:
            # each point's level: the median of a centred window; at the start a narrower one
            # (the opening drop is steep), at the end one that only looks back (a last spike
            # must not become the end's level)
            h = c.half
            v = [_median(c.xs[i - min(h, i):i + h + 1]) if i < n - h else _median(c.xs[i - h:])
                 for i in range(n)]
            return cls(v, list(range(n)), 1, 1.2533 * sigma / math.sqrt(2 * h + 1))
        starts = list(range(0, n - m + 1, m))
        if starts[-1] + m < n:
            starts.append(n - m)
        return cls([_median(c.xs[s:s + m]) for s in starts], starts, m,
                   1.2533 * sigma / math.sqrt(m))


def _divergence(c: _Curve) -> Anomaly | None:
    k = _Blocks.of(c)
    v = k.v
    if len(v) < 3:
        return None
    best = min(range(len(v)), key=lambda b: v[b])
    if best >= len(v) - 1:
        return None
    n = len(c.xs)
    end = _median(c.xs[n - max(3, k.m):])
    rise = end - v[best]
    progress = max(v[0] - v[best], 0.0)
    sigma = k.noise * math.sqrt(2)
    if rise <= DIVERGE_SHARE * progress or rise <= DIVERGE_SIGMAS * sigma or rise <= 1e-12:
        return None
    s = k.starts[best]
    turn = min(range(s, s + k.m), key=lambda i: c.level[i])
    r = c.points[turn]
    share = f", {rise / progress:.0%} of the progress made" if progress > 0 else ""
    return Anomaly("divergence", r.frac, r.step,
                   f"loss diverged after {_where(r)}: best {v[best]:.4g}, "
                   f"{end:.4g} at the end (+{rise:.3g}{share})",
                   value=end, sigmas=rise / sigma)


class _Line:
    """Least-squares lines through any stretch of the points in O(1), from prefix sums (the
    plateau test tries every start)."""

    def __init__(self, xs: list[float]) -> None:
        self.sx = list(accumulate(xs, initial=0.0))
        self.six = list(accumulate((i * x for i, x in enumerate(xs)), initial=0.0))

    def fall(self, lo: int, hi: int) -> float:
        """How much the line through the points lo..hi-1 falls from the first to the last."""
        n = hi - lo
        if n < 2:
            return 0.0
        sx, six = self.sx[hi] - self.sx[lo], self.six[hi] - self.six[lo]
        slope = (six - (lo + hi - 1) / 2 * sx) / (n * (n * n - 1) / 12)
        return -slope * (n - 1)

    def mean(self, lo: int, hi: int) -> float:
        return (self.sx[hi] - self.sx[lo]) / (hi - lo)


def _fall_se(sigma: float, n: int) -> float:
    """Standard error of :meth:`_Line.fall` over n points of independent noise sigma."""
    return sigma * (n - 1) * math.sqrt(12 / (n * (n * n - 1))) if n > 2 else math.inf


def _plateau(c: _Curve) -> Anomaly | None:
    """The longest flat end stretch: the earliest start from which a line through the rest
    falls, even PLATEAU_Z standard errors up, at under PLATEAU_PACE of the pace of as long a
    stretch just before (one that clearly fell), by under PLATEAU_SHARE of what the loss fell
    before, and whose second half does not clearly climb; or a curve that never moved at all."""
    xs, n = c.xs, len(c.xs)
    if n < MIN_POINTS:
        return None
    if max(xs) - min(xs) <= 1e-12 * max(1.0, abs(xs[0])):
        r = c.points[0]
        return Anomaly("plateau", r.frac, r.step,
                       f"loss never improved: flat at {xs[0]:.4g} from the start", value=xs[0])
    line = _Line(xs)
    sigma = c.noise(n // 4, n)  # past the opening drop, whose noise is not the run's
    head = line.mean(0, 3)
    end_frac = c.points[-1].frac
    latest = n - max(PLATEAU_MIN_POINTS, math.ceil(PLATEAU_SPAN * n))
    # every start on a curve of up to PLATEAU_STARTS points, every n/PLATEAU_STARTS-th on a
    # longer one: where a plateau starts is not known closer than that anyway
    for s in range(MIN_HISTORY, latest + 1, max(1, n // PLATEAU_STARTS)):
        if end_frac > 0 and end_frac - c.points[s].frac < PLATEAU_SPAN * end_frac:
            return None  # from here on, too small a share of the budget
        size = n - s
        lo = max(0, s - size)  # as long a stretch just before (to s: the two meet)
        fell_before = line.fall(lo, s + 1)
        if fell_before < PLATEAU_Z * _fall_se(sigma, s + 1 - lo):
            continue  # not falling before either: the stretch starts earlier, if anywhere
        fell, se = line.fall(s, n), _fall_se(sigma, size)
        half = s + size // 2
        if fell < -PLATEAU_Z * se or line.fall(half, n) < -PLATEAU_Z * _fall_se(sigma, n - half):
            continue  # it climbs: not flat (a divergence, if anything)
        most = max(fell, 0.0) + PLATEAU_Z * se  # what it may have fallen, at most
        allowed = PLATEAU_SHARE * (head - line.mean(s, s + 3))
        if most / size <= PLATEAU_PACE * fell_before / (s + 1 - lo) and fell <= allowed and \
                line.fall(s, half) <= allowed + PLATEAU_Z * _fall_se(sigma, half - s):
            break  # (its first half too: a line through a fall and then a flat end is flat-ish)
    else:
        return None
    r = c.points[s]
    level = _median(xs[s:])
    share = (end_frac - r.frac) / end_frac if end_frac > 0 else (n - s) / n
    return Anomaly("plateau", r.frac, r.step,
                   f"loss plateaued from {_where(r)}: flat at {level:.4g} for the last "
                   f"{_pct(share)} of the run", value=level)
