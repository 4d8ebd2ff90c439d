"""Charts as inline SVG text: the report's plots with no script and no fetch.

Small on purpose: a linear scale with round ticks, and five chart shapes the report needs (lines
over a band, a scatter, a forest of intervals, a timeline of bars, a stacked bar). Every mark
carries a ``<title>``, so hovering in any browser (or the editor's webview) reads its numbers.
Colours are CSS classes (``page.py``'s style sheet), so the page's light and dark themes apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

W, H = 760, 260  # default plot size (px); the page scales it to its column
PAD_L, PAD_R, PAD_T, PAD_B = 56, 14, 12, 36


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values covering [lo, hi] (1, 2, 2.5 or 5 × 10^k apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + step * 1e-9 and len(out) < 50:
        out.append(round(v, 12))
        v += step
    return out


def fmt(v: float) -> str:
    """A tick label: short, no float noise."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 0.001:
        return f"{v:.2g}"
    return f"{v:.4g}"


@dataclass
class Scale:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    def __call__(self, v: float) -> float:
        if self.hi == self.lo:
            return (self.a + self.b) / 2
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    @classmethod
    def of(cls, values: Sequence[float], a: float, b: float, pad: float = 0.05,
           include: Sequence[float] = ()) -> Scale:
        vals = [v for v in (*values, *include) if v is not None and math.isfinite(v)]
        if not vals:
            return cls(0.0, 1.0, a, b)
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or (abs(hi) or 1.0) * 0.1
        return cls(lo - pad * span, hi + pad * span, a, b)


@dataclass
class Frame:
    """A plot area with its axes: the SVG's outer parts, the scales, the labels."""

    x: Scale
    y: Scale
    width: int = W
    height: int = H
    x_label: str = ""
    y_label: str = ""
    title: str = ""
    x_fmt: object = fmt
    x_integer: bool = False  # ticks only on whole numbers (experiment ids, seeds)
    parts: list[str] = field(default_factory=list)

    def axes(self) -> str:
        out = []
        x0, x1 = PAD_L, self.width - PAD_R
        y0, y1 = self.height - PAD_B, PAD_T
        for t in nice_ticks(self.y.lo, self.y.hi):
            py = self.y(t)
            out.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}"/>'
                       f'<text class="tick" x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{_e(fmt(t))}</text>')
        for t in nice_ticks(self.x.lo, self.x.hi, 6):
            if self.x_integer and t != int(t):
                continue
            px = self.x(t)
            out.append(f'<line class="tickmark" x1="{px:.1f}" x2="{px:.1f}" y1="{y0}" y2="{y0 + 4}"/>'
                       f'<text class="tick" x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">'
                       f'{_e(self.x_fmt(t))}</text>')  # type: ignore[operator]
        out.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>'
                   f'<line class="axis" x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}"/>')
        if self.x_label:
            out.append(f'<text class="label" x="{(x0 + x1) / 2:.0f}" y="{self.height - 4}" '
                       f'text-anchor="middle">{_e(self.x_label)}</text>')
        if self.y_label:
            out.append(f'<text class="label" transform="translate(12,{(y0 + y1) / 2:.0f}) rotate(-90)" '
                       f'text-anchor="middle">{_e(self.y_label)}</text>')
        return "".join(out)

    def svg(self, kind: str) -> str:
        label = f' aria-label="{_e(self.title)}"' if self.title else ""
        return (f'<svg class="chart" data-chart="{_e(kind)}" viewBox="0 0 {self.width} {self.height}" '
                f'{_max(self.width)} role="img"{label} xmlns="http://www.w3.org/2000/svg">'
                f'{"<title>" + _e(self.title) + "</title>" if self.title else ""}'
                f'{self.axes()}{"".join(self.parts)}</svg>')


def _max(width: int) -> str:
    """Charts grow with the column up to a quarter over their drawn size (text stays legible)."""
    return f'style="max-width:{round(width * 1.25)}px"'


def _path(points: list[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Finite stretches of a curve (a NaN breaks the line)."""
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y):
            if out[-1]:
                out.append([])
            continue
        out[-1].append((x, y))
    return [r for r in out if r]


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]
    css: str = "s-main"
    marks: Sequence[tuple[float, str]] = ()  # (x, message): an anomaly on this curve


def curves(series: Sequence[Series], *, band: Sequence[Sequence[tuple[float, float | None]]] = (),
           x_label: str = "", y_label: str = "", title: str = "", width: int = W, height: int = H) -> str:
    """Lines (training loss against the fraction of the budget) over the min–max band of
    ``band``'s curves (the reference runs). Non-finite points show as a red × at the top."""
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    ys += [y for c in band for _, y in c if y is not None and math.isfinite(y)]
    # a blown-up curve must not flatten the rest: clip the scale at a high quantile
    if ys:
        ordered = sorted(ys)
        hi = ordered[min(len(ordered) - 1, int(0.98 * len(ordered)))]
        lo = ordered[0]
        ys = [lo, hi]
    frame = Frame(Scale.of([0.0, 1.0], PAD_L, width - PAD_R, pad=0.0), Scale.of(ys, height - PAD_B, PAD_T),
                  width, height, x_label, y_label, title, x_fmt=lambda v: f"{100 * v:.0f}%")
    clip_top = frame.y.hi

    def pt(x: float, y: float) -> tuple[float, float]:
        return frame.x(max(0.0, min(1.0, x))), frame.y(min(y, clip_top))

    if band:
        grid = sorted({round(x, 3) for c in band for x, y in c if y is not None and math.isfinite(y)})
        lows, highs = [], []
        for gx in grid:
            vals = [_at(c, gx) for c in band]
            vals = [v for v in vals if v is not None]
            if vals:
                lows.append(pt(gx, min(vals)))
                highs.append(pt(gx, max(vals)))
        if lows:
            poly = highs + lows[::-1]
            frame.parts.append(f'<path class="band" d="{_path(poly)}Z"><title>reference runs: min–max</title></path>')
    for s in series:
        for run in _runs(s.points):
            frame.parts.append(f'<path class="line {s.css}" d="{_path([pt(x, y) for x, y in run])}">'
                               f'<title>{_e(s.name)}</title></path>')
        for x, y in s.points:
            if y is not None and not math.isfinite(y):
                px, py = frame.x(max(0.0, min(1.0, x))), PAD_T + 6
                frame.parts.append(f'<text class="mark-bad" x="{px:.1f}" y="{py:.1f}" text-anchor="middle">×'
                                   f'<title>{_e(s.name)}: loss {y} at {100 * x:.0f}% of the budget</title></text>')
                break
        for x, message in s.marks:
            y = _at(s.points, x)
            px = frame.x(max(0.0, min(1.0, x)))
            py = frame.y(min(y, clip_top)) if y is not None else PAD_T + 6
            frame.parts.append(f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="5">'
                               f'<title>{_e(s.name)}: {_e(message)}</title></circle>')
    return frame.svg("curves")


def _at(points: Sequence[tuple[float, float | None]], x: float) -> float | None:
    """The curve's finite value nearest ``x``."""
    best, dist = None, math.inf
    for px, py in points:
        if py is not None and math.isfinite(py) and abs(px - x) < dist:
            best, dist = py, abs(px - x)
    return best


@dataclass
class Point:
    x: float
    y: float
    css: str
    tip: str
    r: float = 4.0


def scatter(points: Sequence[Point], *, x_label: str = "", y_label: str = "", title: str = "",
            hlines: Sequence[tuple[float, str, str]] = (), hband: tuple[float, float] | None = None,
            diagonal: bool = False, step_line: Sequence[tuple[float, float]] = (), zero_cross: bool = False,
            x_fmt: object = fmt, x_integer: bool = False, width: int = W, height: int = H) -> str:
    """Points with optional horizontal lines (value, css, label), a band, the y = x line, and a
    step line (the best so far)."""
    xs = [p.x for p in points]
    ys = [p.y for p in points] + [v for v, _, _ in hlines] + ([*hband] if hband else [])
    if diagonal:
        both = [*xs, *ys]
        xs = ys = both
    frame = Frame(Scale.of(xs, PAD_L, width - PAD_R, include=[0.0] if zero_cross else []),
                  Scale.of(ys, height - PAD_B, PAD_T, include=[0.0] if zero_cross else []),
                  width, height, x_label, y_label, title, x_fmt=x_fmt, x_integer=x_integer)
    x0, x1 = PAD_L, width - PAD_R
    if hband:
        ya, yb = frame.y(hband[1]), frame.y(hband[0])
        frame.parts.append(f'<rect class="band" x="{x0}" y="{min(ya, yb):.1f}" width="{x1 - x0}" '
                           f'height="{abs(yb - ya):.1f}"><title>reference ± σ</title></rect>')
    if zero_cross:
        frame.parts.append(f'<line class="zero" x1="{frame.x(0):.1f}" x2="{frame.x(0):.1f}" y1="{PAD_T}" '
                           f'y2="{height - PAD_B}"/><line class="zero" x1="{x0}" x2="{x1}" '
                           f'y1="{frame.y(0):.1f}" y2="{frame.y(0):.1f}"/>')
    if diagonal:
        lo, hi = max(frame.x.lo, frame.y.lo), min(frame.x.hi, frame.y.hi)
        frame.parts.append(f'<line class="diag" x1="{frame.x(lo):.1f}" y1="{frame.y(lo):.1f}" x2="{frame.x(hi):.1f}" '
                           f'y2="{frame.y(hi):.1f}"><title>predicted = measured</title></line>')
    for value, css, label in hlines:
        py = frame.y(value)
        frame.parts.append(f'<line class="{css}" x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}">'
                           f'<title>{_e(label)}</title></line>'
                           f'<text class="hl-label" x="{x1 - 4}" y="{py - 4:.1f}" text-anchor="end">{_e(label)}</text>')
    if step_line:
        pts = []
        for i, (x, y) in enumerate(step_line):
            if i:
                pts.append((frame.x(x), pts[-1][1]))
            pts.append((frame.x(x), frame.y(y)))
        frame.parts.append(f'<path class="line s-best" d="{_path(pts)}"><title>the head: best so far</title></path>')
    for p in points:
        frame.parts.append(f'<circle class="pt {p.css}" cx="{frame.x(p.x):.1f}" cy="{frame.y(p.y):.1f}" '
                           f'r="{p.r}"><title>{_e(p.tip)}</title></circle>')
    return frame.svg("scatter")


@dataclass
class Interval:
    label: str
    est: float
    low: float
    high: float
    css: str
    tip: str
    predicted: float | None = None


def forest(rows: Sequence[Interval], *, x_label: str = "", title: str = "", bar: float | None = None,
           width: int = W) -> str:
    """One row per effect: the estimate with its interval, the zero line, the keep bar, and the
    proposer's prediction as a hollow diamond."""
    row_h = 22
    height = PAD_T + PAD_B + row_h * max(1, len(rows))
    left = 150
    vals = [v for r in rows for v in (r.low, r.high, r.est, *( [r.predicted] if r.predicted is not None else []))]
    xs = Scale.of(vals, left, width - PAD_R, include=[0.0] + ([bar] if bar else []))
    parts = []
    x_of = xs
    y_bottom = height - PAD_B
    for t in nice_ticks(xs.lo, xs.hi, 6):
        px = x_of(t)
        parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{PAD_T}" y2="{y_bottom}"/>'
                     f'<text class="tick" x="{px:.1f}" y="{y_bottom + 16}" text-anchor="middle">{_e(fmt(t))}</text>')
    parts.append(f'<line class="zero" x1="{x_of(0):.1f}" x2="{x_of(0):.1f}" y1="{PAD_T}" y2="{y_bottom}">'
                 '<title>no effect</title></line>')
    if bar:
        parts.append(f'<line class="keepbar" x1="{x_of(bar):.1f}" x2="{x_of(bar):.1f}" y1="{PAD_T}" y2="{y_bottom}">'
                     f'<title>the smallest keepable effect: {bar:.4g}</title></line>')
    for i, r in enumerate(rows):
        cy = PAD_T + row_h * i + row_h / 2
        parts.append(f'<g class="row {r.css}"><title>{_e(r.tip)}</title>'
                     f'<text class="rowlabel" x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end">{_e(r.label)}</text>'
                     f'<line class="ci" x1="{x_of(r.low):.1f}" x2="{x_of(r.high):.1f}" y1="{cy:.1f}" y2="{cy:.1f}"/>'
                     f'<rect class="est" x="{x_of(r.est) - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8"/>')
        if r.predicted is not None:
            px = x_of(r.predicted)
            parts.append(f'<path class="pred" d="M{px:.1f},{cy - 6:.1f}L{px + 6:.1f},{cy:.1f}L{px:.1f},{cy + 6:.1f}'
                         f'L{px - 6:.1f},{cy:.1f}Z"/>')
        parts.append("</g>")
    parts.append(f'<text class="label" x="{(left + width - PAD_R) / 2:.0f}" y="{height - 4}" '
                 f'text-anchor="middle">{_e(x_label)}</text>')
    return (f'<svg class="chart" data-chart="forest" viewBox="0 0 {width} {height}" {_max(width)} role="img" '
            f'aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
            f'{"".join(parts)}</svg>')


@dataclass
class Bar:
    lane: int
    start: float
    end: float
    css: str
    tip: str
    label: str = ""


def timeline(bars: Sequence[Bar], *, start: float, end: float, x_fmt: object, title: str = "",
             width: int = W) -> str:
    """The night as lanes of bars (one lane per slot a trial ran in), coloured by outcome."""
    lanes = max((b.lane for b in bars), default=0) + 1
    lane_h = 18
    height = PAD_T + PAD_B + lane_h * lanes
    xs = Scale(start, end if end > start else start + 1, PAD_L, width - PAD_R)
    parts = []
    y_bottom = height - PAD_B
    ticks = nice_ticks(start, end, 6)
    for t in ticks:
        px = xs(t)
        parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{PAD_T}" y2="{y_bottom}"/>'
                     f'<text class="tick" x="{px:.1f}" y="{y_bottom + 16}" text-anchor="middle">'
                     f'{_e(x_fmt(t))}</text>')  # type: ignore[operator]
    for b in bars:
        x0, x1 = xs(b.start), max(xs(b.end), xs(b.start) + 2)
        y = PAD_T + b.lane * lane_h + 2
        parts.append(f'<rect class="tbar {b.css}" x="{x0:.1f}" y="{y:.1f}" width="{x1 - x0:.1f}" height="{lane_h - 4}" '
                     f'rx="2"><title>{_e(b.tip)}</title></rect>')
        if b.label and x1 - x0 > 8 * len(b.label):
            parts.append(f'<text class="tlabel" x="{x0 + 3:.1f}" y="{y + lane_h - 8:.1f}">{_e(b.label)}</text>')
    for lane in range(lanes):
        parts.append(f'<text class="tick" x="{PAD_L - 6}" y="{PAD_T + lane * lane_h + lane_h / 2 + 4:.1f}" '
                     f'text-anchor="end">slot {lane + 1}</text>')
    return (f'<svg class="chart" data-chart="timeline" viewBox="0 0 {width} {height}" {_max(width)} role="img" '
            f'aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
            f'{"".join(parts)}</svg>')


def stacked(parts_in: Sequence[tuple[str, float, str]], *, title: str = "",
            width: int = W) -> str:
    """One horizontal bar split into labelled parts (name, hours, css): where the trial time went."""
    total = sum(v for _, v, _ in parts_in) or 1.0
    height = 64
    x = float(PAD_L)
    span = width - PAD_L - PAD_R
    out = []
    for name, value, css in parts_in:
        w = span * value / total
        if w <= 0:
            continue
        out.append(f'<rect class="tbar {css}" x="{x:.1f}" y="8" width="{w:.1f}" height="24">'
                   f'<title>{_e(name)}: {value * 60:.1f} min ({100 * value / total:.0f}%)</title></rect>')
        if w > 8 * (len(name) + 6):
            out.append(f'<text class="tlabel" x="{x + 4:.1f}" y="24">{_e(name)} {100 * value / total:.0f}%</text>')
        x += w
    return (f'<svg class="chart" data-chart="stacked" viewBox="0 0 {width} {height}" {_max(width)} role="img" '
            f'aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
            f'{"".join(out)}</svg>')
