"""The morning report as one self-contained HTML page: inline CSS, inline SVG, no script, no fetch.

Its own Content-Security-Policy forbids everything but inline styles and data: images, so the
page is the same file in a browser, an e-mail attachment or the editor's webview, and cannot
reach the network even by mistake. Sections (fixed ids, the editor and the tests find them):
``#timeline #kept #refuted #calibration #weird #noise #cost #questions``.
"""

from __future__ import annotations

import math
import time
from html import escape

from ..questions import fmt_effect
from . import charts
from .model import OUTCOME_OF, REFUTED_TITLES, Item, MorningReport

SECTIONS = ("timeline", "kept", "refuted", "calibration", "weird", "noise", "cost", "questions")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root { color-scheme: light dark; --fg:#1f2328; --muted:#59636e; --bg:#ffffff; --panel:#f6f8fa; --line:#d0d7de;
  --kept:#1a7f37; --discarded:#8c959f; --pruned:#bf8700; --crashed:#cf222e; --untrusted:#8250df;
  --interrupted:#afb8c1; --running:#0969da; --baseline:#0969da; --confirmation:#1b7c83; --band:rgba(9,105,218,.13); }
@media (prefers-color-scheme: dark) { :root { --fg:#e6edf3; --muted:#9198a1; --bg:#0d1117; --panel:#161b22;
  --line:#30363d; --kept:#3fb950; --discarded:#6e7681; --pruned:#d29922; --crashed:#f85149; --untrusted:#a371f7;
  --interrupted:#484f58; --running:#58a6ff; --baseline:#58a6ff; --confirmation:#39c5cf; --band:rgba(88,166,255,.16); } }
body.vscode-dark, body.vscode-high-contrast { --fg:#e6edf3; --muted:#9198a1; --bg:#1e1e1e; --panel:#252526;
  --line:#3c3c3c; --kept:#3fb950; --discarded:#6e7681; --pruned:#d29922; --crashed:#f85149; --untrusted:#a371f7;
  --interrupted:#484f58; --running:#58a6ff; --baseline:#58a6ff; --confirmation:#39c5cf; --band:rgba(88,166,255,.16); }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
  margin: 0 auto; max-width: 980px; padding: 24px 28px 64px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 36px 0 8px; padding-top: 8px;
  border-top: 1px solid var(--line); } h3 { font-size: 14px; margin: 18px 0 4px; }
.sub, .muted { color: var(--muted); } .sub { margin: 0 0 16px; }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; margin: 8px 0 0; font-size: 13px; }
nav a { color: var(--running); text-decoration: none; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 8px; margin: 16px 0; }
.tile { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.tile b { display: block; font-size: 20px; } .tile span { color: var(--muted); font-size: 12px; }
ul.learned { padding-left: 20px; margin: 8px 0; } ul.learned li { margin: 2px 0; }
svg.chart { width: 100%; height: auto; display: block; margin: 8px 0; overflow: visible; }
svg .grid { stroke: var(--line); stroke-width: 1; opacity: .6; } svg .axis { stroke: var(--muted); }
svg .tickmark { stroke: var(--muted); } svg text { fill: var(--muted); font-size: 11px; }
svg .label { fill: var(--fg); font-size: 12px; } svg .rowlabel { fill: var(--fg); font-size: 12px; }
svg .line { fill: none; stroke-width: 1.6; } svg .band { fill: var(--band); stroke: none; }
svg .s-main { stroke: var(--crashed); } svg .s-ref { stroke: var(--discarded); stroke-dasharray: 3 3; }
svg .s-best { stroke: var(--kept); stroke-width: 2; }
svg .zero { stroke: var(--muted); stroke-dasharray: 2 3; } svg .diag { stroke: var(--muted); stroke-dasharray: 4 4; }
svg .keepbar { stroke: var(--kept); stroke-dasharray: 6 3; stroke-width: 1.5; }
svg .refline { stroke: var(--baseline); stroke-width: 1.5; } svg .hl-label { font-size: 11px; }
svg .mark { fill: none; stroke: var(--crashed); stroke-width: 2; } svg .mark-bad { fill: var(--crashed); font-size: 16px; }
svg .pt { stroke: var(--bg); stroke-width: 1; } svg .ci { stroke-width: 2; }
svg .row .ci { stroke: currentColor; } svg .row .est { fill: currentColor; } svg .pred { fill: none; stroke: var(--fg); }
svg .tbar { stroke: none; } svg .tlabel { fill: #fff; font-size: 10px; }
.c-kept { color: var(--kept); fill: var(--kept); } .c-discarded { color: var(--discarded); fill: var(--discarded); }
.c-pruned { color: var(--pruned); fill: var(--pruned); } .c-crashed { color: var(--crashed); fill: var(--crashed); }
.c-untrusted { color: var(--untrusted); fill: var(--untrusted); }
.c-interrupted { color: var(--interrupted); fill: var(--interrupted); }
.c-running { color: var(--running); fill: var(--running); } .c-baseline { color: var(--baseline); fill: var(--baseline); }
.c-confirmation { color: var(--confirmation); fill: var(--confirmation); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px;
  background: currentColor; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 6px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; margin: 10px 0; }
.card h3 { margin-top: 0; } .tag { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px;
  border: 1px solid currentColor; margin-right: 6px; }
.empty { color: var(--muted); font-style: italic; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 8px 18px; }
code { font-size: 12px; background: var(--panel); padding: 0 4px; border-radius: 3px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""

_LEGEND = (("kept", "kept"), ("discarded", "discarded"), ("pruned", "pruned"), ("crashed", "crashed / timeout"),
           ("untrusted", "tampered / over budget"), ("baseline", "baseline"), ("confirmation", "confirmation"),
           ("interrupted", "interrupted"))


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _css(it: Item) -> str:
    if it.is_baseline:
        return "c-baseline"
    if it.confirms is not None:
        return "c-confirmation"
    return "c-" + _OUTCOME.get(it.status, "interrupted")


_OUTCOME = {st.value: name for st, name in OUTCOME_OF.items()}


def _clock(ts: float, seconds: bool = False) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(ts))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "–"


def duration(hours: float) -> str:
    """Trial time as people say it: ``42 s``, ``17 min``, ``3.2 h``."""
    seconds = hours * 3600
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{hours:.1f} h"


def _num(v: float | None, spec: str = ".4f") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, spec)


def _hyp(it: Item, n: int = 90) -> str:
    text = " ".join((it.hypothesis or "").split()) or ("baseline" if it.is_baseline else "(no hypothesis)")
    return text if len(text) <= n else text[: n - 1] + "…"


def _legend(keys: tuple[str, ...] | None = None) -> str:
    items = [f'<span class="c-{k}"><i></i><span class="muted">{_e(label)}</span></span>'
             for k, label in _LEGEND if keys is None or k in keys]
    return f'<div class="legend">{"".join(items)}</div>'


def render(r: MorningReport) -> str:
    """The page."""
    body = [_header(r), _timeline(r), _kept(r), _refuted(r), _calibration(r), _weird(r), _noise(r), _cost(r),
            _questions(r)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(r.title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body)
            + f'<footer>Written by sigmaloop at {_e(_when(r.generated_at))}. Every number here comes from the '
              "journal (<code>.sigmaloop/journal.db</code>); <code>sigmaloop show ID</code> tells one experiment's "
              "whole story.</footer></body></html>\n")


def _header(r: MorningReport) -> str:
    counts = r.counts
    tried = sum(counts.values())
    window = f"{_when(r.start)} → {_when(r.end)}" if r.start else "no trial has run yet"
    scope = f" · experiments from #{r.since}" if r.since else ""
    tiles = [
        (str(len(r.kept)), "kept"),
        (str(len(r.refuted)), "refuted or no effect"),
        (str(len(r.weird)), "things to look at"),
        (str(tried), "edits tried"),
        (duration(r.cost.trial_hours), "trial time"),
        (_num(r.noise.keep_threshold, ".4g"), f"smallest keepable effect ({r.metric})"),
    ]
    tiles_html = "".join(f'<div class="tile"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in tiles)
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    learned = "".join(f"<li>{_e(line)}</li>" for line in r.learned)
    return (f"<header><h1>{_e(r.title)}</h1><p class=\"sub\">{_e(window)}{_e(scope)} · {_e(r.metric)}, "
            f"{'lower' if r.lower_is_better else 'higher'} is better</p><nav>{nav}</nav></header>"
            f'<div class="tiles">{tiles_html}</div><section id="summary"><h2>What the night says</h2>'
            f'<ul class="learned">{learned}</ul></section>')


def _head(section: str, title: str) -> str:
    return f'<section><h2 id="{section}">{_e(title)}</h2>'


def _empty(out: list[str], html: str) -> str:
    """A section with nothing to show says so (in words that say what would fill it)."""
    return "".join(out) + f'<p class="empty">{html}</p></section>'


def _timeline(r: MorningReport) -> str:
    ran = [it for it in r.items if it.started_at]
    out = [_head("timeline", "Timeline")]
    if not ran or r.start is None:
        return _empty(out, 'No trial has run yet.')
    # lanes: a trial takes the first slot free when it starts
    lanes: list[float] = []
    bars = []
    for it in sorted(ran, key=lambda i: i.started_at or 0):
        start = it.started_at or 0.0
        end = it.finished_at or (start + it.hours * 3600) or start
        lane = next((i for i, free in enumerate(lanes) if free <= start + 1e-6), None)
        if lane is None:
            lanes.append(end)
            lane = len(lanes) - 1
        else:
            lanes[lane] = end
        tip = f"#{it.id} {it.short}: {_hyp(it, 70)} ({_clock(start)}–{_clock(end)}, {it.hours * 60:.1f} min)"
        bars.append(charts.Bar(lane, start, end, _css(it), tip, f"#{it.id}"))
    end = r.end or max(b.end for b in bars)
    seconds = end - r.start < 600  # a short run: minutes alone would repeat
    out.append(charts.timeline(bars, start=r.start, end=end, x_fmt=lambda t: _clock(t, seconds),
                               title="trials over the night, one lane per slot"))
    out.append(_legend())
    # the progress chart: each measured run's metric by experiment, the head's best as a step line
    pts, best_line = [], []
    for it in r.items:
        if it.metric is None or it.status in ("tampered", "over_budget"):
            continue
        tip = f"#{it.id} {it.short}: {r.metric} {it.metric:.4f} — {_hyp(it, 70)}"
        pts.append(charts.Point(it.id, it.metric, _css(it), tip, 5 if it.status == "kept" else 3.5))
    kept_ids = {it.id for it in r.kept}
    ref_vals = [it.metric for it in r.items if it.is_baseline and it.metric is not None]
    if ref_vals:
        best = None
        for it in r.items:
            if it.metric is None:
                continue
            if (it.is_baseline and best is None) or it.id in kept_ids:
                best = it.metric
            if best is not None:
                best_line.append((it.id, best))
    hband = None
    if r.noise.reference is not None and r.noise.sigma:
        hband = (r.noise.reference - r.noise.sigma, r.noise.reference + r.noise.sigma)
    hlines = []
    if r.noise.reference is not None:
        hlines.append((r.noise.reference, "refline", f"reference {r.noise.reference:.4f}"))
        if r.noise.keep_threshold:
            sign = -1 if r.lower_is_better else 1
            hlines.append((r.noise.reference + sign * r.noise.keep_threshold, "keepbar", "keep bar"))
    if pts:
        out.append("<h3>The metric, experiment by experiment</h3>")
        out.append(charts.scatter(pts, x_label="experiment #", y_label=r.metric, hlines=hlines, hband=hband,
                                  step_line=best_line, x_fmt=lambda v: f"#{v:.0f}", x_integer=True,
                                  title=f"{r.metric} by experiment, with the reference ± σ and the keep bar"))
    out.append("</section>")
    return "".join(out)


def _effect_cell(it: Item) -> str:
    return _e(fmt_effect(it.effect)) if it.effect else _e(it.short)


def _kept(r: MorningReport) -> str:
    out = [_head("kept", "What was kept")]
    measured = [it for it in r.items if it.effect is not None]
    if not r.kept:
        bar = f" The smallest effect that could have been kept: {r.noise.keep_threshold:.4g} {r.metric}." \
            if r.noise.keep_threshold else ""
        out.append(f'<p class="empty">Nothing was kept.{_e(bar)}</p>')
    else:
        out.append("<table><tr><th>#</th><th>hypothesis</th><th>effect (95% interval)</th><th>z</th>"
                   "<th>changed</th></tr>")
        for it in r.kept:
            out.append(f'<tr><td class="num">#{it.id}</td><td>{_e(_hyp(it))}</td><td>{_effect_cell(it)}</td>'
                       f'<td class="num">{_num(it.z, ".1f")}σ</td><td>{_e(", ".join(it.names))}</td></tr>')
        out.append("</table>")
    if measured:
        rows = [charts.Interval(f"#{it.id} {', '.join(it.names)[:18] or it.source}", it.effect.better,
                                it.effect.low, it.effect.high, _css(it),
                                f"#{it.id} {it.short}: {fmt_effect(it.effect)} — {_hyp(it, 70)}"
                                + (f"; predicted {it.predicted_better:.4g} better" if it.predicted_better is not None
                                   else ""), it.predicted_better)
                for it in sorted(measured, key=lambda i: -i.effect.better)[:40]]  # type: ignore[union-attr]
        out.append("<h3>Every measured effect, with its 95% interval</h3>")
        out.append(charts.forest(rows, x_label=f"improvement in {r.metric} (positive = better)",
                                 bar=r.noise.keep_threshold,
                                 title="effects with 95% intervals; the dashed line is the keep bar, ◇ the prediction"))
        out.append(_legend(("kept", "discarded", "pruned")))
    out.append("</section>")
    return "".join(out)


def _refuted(r: MorningReport) -> str:
    out = [_head("refuted", "What was refuted")]
    if not r.refuted:
        return _empty(out, 'No measured edit was turned down.')
    out.append('<p class="muted">Within noise is not proof of no effect: the interval says how large an effect '
               "could still hide there. A prediction is called refuted only when its interval excludes it.</p>")
    for kind, title in REFUTED_TITLES.items():
        group = [x for x in r.refuted if x.kind == kind]
        if not group:
            continue
        out.append(f"<h3>{_e(title)} ({len(group)})</h3><table><tr><th>#</th><th>hypothesis</th>"
                   "<th>effect (95% interval)</th><th>prediction</th></tr>")
        for x in group:
            it = x.item
            if x.prediction_excluded is None:
                pred = "–"
            else:
                pred = (f"{it.predicted_better:.4g} better: "
                        + ("refuted (outside the interval)" if x.prediction_excluded else "not ruled out"))
            out.append(f'<tr><td class="num">#{it.id}</td><td>{_e(_hyp(it))}</td><td>{_effect_cell(it)}</td>'
                       f"<td>{_e(pred)}</td></tr>")
        out.append("</table>")
    out.append("</section>")
    return "".join(out)


def _calibration(r: MorningReport) -> str:
    out = [_head("calibration", "Predictions against outcomes")]
    if not r.calibration:
        return _empty(out, "No proposal carried a predicted effect. The tuner predicts one once a constant has "
                           "two measured steps; the LLM proposer states one with every edit, and so can you "
                           "(<code>sigmaloop run-edit --predicted-delta</code>).")
    out.append('<div class="grid2">')
    sign = -1 if r.lower_is_better else 1
    for pc in r.calibration:
        c = pc.calibration
        pts = [charts.Point(sign * p["predicted"], sign * p["measured"],
                            "c-kept" if (p.get("z") or 0) >= c.k else "c-discarded",
                            f"#{p['id']}: predicted {sign * p['predicted']:.4g} better, measured "
                            f"{sign * p['measured']:.4g} better" + (f" ({p['z']:.1f}σ)" if p.get("z") is not None
                                                                    else ""))
               for p in c.points]
        acc = "–" if c.sign_accuracy is None else f"{100 * c.sign_accuracy:.0f}%"
        r_txt = "–" if c.pearson is None else f"{c.pearson:+.2f}"
        out.append(f'<div class="card" data-proposer="{_e(pc.source)}"><h3>{_e(pc.source)}</h3>'
                   f'<p class="muted">{c.n_predicted} predictions, {c.n} measured · direction right {acc} · '
                   f"Pearson r {r_txt} · of {c.predicted_improvements} predicted improvements, "
                   f"{c.improvements_confirmed} cleared {c.k:g}σ, {c.improvements_within_noise} were within noise"
                   + (f" · bias {sign * c.bias:+.4g} (measured − predicted, better-positive)" if c.bias is not None
                      else "") + "</p>")
        if pts:
            out.append(charts.scatter(pts, x_label="predicted improvement", y_label="measured improvement",
                                      diagonal=True, zero_cross=True, width=420, height=300,
                                      title=f"{pc.source}: predicted vs measured (on the dashed line = calibrated)"))
        else:
            out.append('<p class="empty">None of its predictions was measured yet.</p>')
        out.append("</div>")
    out.append("</div></section>")
    return "".join(out)


_WHAT = {"anomaly": "curve anomaly", "crashed": "crashed", "untrusted": "untrusted result",
         "implausible": "too good to keep unseen", "warning": "warning"}


def _weird(r: MorningReport) -> str:
    out = [_head("weird", "What looked weird")]
    if not r.weird:
        return _empty(out, "Nothing: no curve anomaly, crash, untrusted result or warning.")
    drawn = [w for w in r.weird if w.curve]
    listed = [w for w in r.weird if not w.curve]
    if drawn:
        out.append('<div class="grid2">')
        for w in drawn:
            it = w.item
            marks = [(a.frac, a.message) for a in w.anomalies]
            svg = charts.curves([charts.Series(f"#{it.id}", w.curve, "s-main", marks)], band=r.reference_curves,
                                x_label="fraction of the time budget", y_label="training loss", width=420, height=220,
                                title=f"#{it.id} training loss over the reference runs' band")
            others = [x for x in r.weird if x.item.id == it.id and x is not w]
            extra = "".join(f"<li>{_e(x.message)}</li>" for x in others)
            out.append(f'<div class="card" data-weird="{_e(w.what)}" data-exp="{it.id}">'
                       f'<h3><span class="tag {_css(it)}">{_e(_WHAT[w.what])}</span>#{it.id} {_e(_hyp(it, 60))}</h3>'
                       f"<ul><li>{_e(w.message)}</li>{extra}</ul>{svg}"
                       f'<p class="muted">Open it: <code>sigmaloop show {it.id}</code>; its log: '
                       f"<code>.sigmaloop/logs/{it.id}.log</code>.</p></div>")
        out.append("</div>")
    shown = {w.item.id for w in drawn}
    rest = [w for w in listed if w.item.id not in shown]
    if rest:
        out.append("<table><tr><th>#</th><th>what</th><th>details</th></tr>")
        for w in rest:
            out.append(f'<tr data-weird="{_e(w.what)}"><td class="num">#{w.item.id}</td><td>{_e(_WHAT[w.what])}</td>'
                       f"<td>{_e(w.message)}</td></tr>")
        out.append("</table>")
    out.append("</section>")
    return "".join(out)


def _noise(r: MorningReport) -> str:
    n = r.noise
    out = [_head("noise", "The noise budget")]
    if n.reference is None:
        return _empty(out, 'No reference yet: run the baseline.')
    sigma = f" ± {n.sigma:.4f} (σ on {n.sigma_dof} degree{'s' if n.sigma_dof != 1 else ''} of freedom)" \
        if n.sigma is not None else " (one seed: no noise estimate yet)"
    bar = (f"The smallest effect the judge can keep: <b>{n.keep_threshold:.4g}</b> {_e(r.metric)}"
           + (f" ({n.keep_pct:.1f}% of the reference)" if n.keep_pct is not None else "") + ".") \
        if n.keep_threshold else "There is no keep bar until the head has run on two seeds."
    out.append(f"<p>Reference: {_e(r.metric)} <b>{n.reference:.4f}</b>{_e(sigma)}, the head's mean over "
               f"{len(n.runs)} run{'s' if len(n.runs) != 1 else ''}. {bar}</p>")
    out.append(f"<p>Knowing the noise cost {n.baseline_runs} baseline run{'s' if n.baseline_runs != 1 else ''} and "
               f"{n.confirmation_runs} confirmation run{'s' if n.confirmation_runs != 1 else ''}: "
               f"{duration(n.hours)} of trial time ({_share(n.hours, r.cost.trial_hours)} of it all).</p>")
    if n.advice:
        out.append(f"<p>{_e(n.advice)}</p>")
    runs = [it for it in n.runs if it.metric is not None]
    if runs:
        pts = [charts.Point(it.seed if it.seed is not None else it.id, it.metric, "c-baseline",
                            f"#{it.id} seed {it.seed}: {it.metric:.4f}", 5) for it in runs]
        hlines = [(n.reference, "refline", "mean")]
        if n.keep_threshold:
            sign = -1 if r.lower_is_better else 1
            hlines.append((n.reference + sign * n.keep_threshold, "keepbar", "keep bar"))
        out.append(charts.scatter(pts, x_label="seed", y_label=r.metric, hlines=hlines, width=420, height=200,
                                  hband=(n.reference - n.sigma, n.reference + n.sigma) if n.sigma else None,
                                  x_fmt=lambda v: f"{v:.0f}", x_integer=True,
                                  title="the head's reference runs by seed, with the mean ± σ and the keep bar"))
    out.append("</section>")
    return "".join(out)


def _share(part: float, total: float) -> str:
    return f"{100 * part / total:.0f}%" if total > 0 else "–"


_COST_ORDER = (("kept", "c-kept"), ("discarded", "c-discarded"), ("pruned", "c-pruned"), ("crashed", "c-crashed"),
               ("untrusted", "c-untrusted"), ("baseline", "c-baseline"), ("confirmation", "c-confirmation"),
               ("interrupted", "c-interrupted"), ("running", "c-running"))


def _cost(r: MorningReport) -> str:
    c = r.cost
    out = [_head("cost", "Cost")]
    rate = f", {c.per_hour:.1f} trials an hour" if c.per_hour else ""
    out.append(f"<p><b>{duration(c.trial_hours)}</b> of trial time ({c.trial_hours:.3f} trial-hours) over "
               f"{c.experiments} trial{'s' if c.experiments != 1 else ''} in a {duration(c.window_hours)} "
               f"window{rate}.</p>")
    parts = [(name, c.hours_by_outcome[name], css) for name, css in _COST_ORDER if c.hours_by_outcome.get(name)]
    if parts:
        out.append(charts.stacked(parts, title="where the trial-hours went"))
        out.append("<table><tr><th>spent on</th><th>trial time</th><th>share</th></tr>" + "".join(
            f'<tr><td><span class="tag {css}">{_e(name)}</span></td><td class="num">{duration(h)}</td>'
            f'<td class="num">{_share(h, c.trial_hours)}</td></tr>' for name, h, css in parts) + "</table>")
    if c.tokens:
        out.append("<h3>Tokens</h3><table><tr><th>proposer</th><th>calls</th><th>prompt</th><th>completion</th>"
                   "<th>total</th></tr>" + "".join(
                       f'<tr><td>{_e(src)}</td><td class="num">{t.get("calls", 0)}</td><td class="num">'
                       f'{t["prompt"]:,}</td><td class="num">{t["completion"]:,}</td><td class="num">{t["total"]:,}</td>'
                       "</tr>" for src, t in sorted(c.tokens.items())) + "</table>")
    else:
        out.append('<p class="muted">No LLM tokens: the proposals came from the tuner or from you.</p>')
    out.append("</section>")
    return "".join(out)


def _questions(r: MorningReport) -> str:
    out = [_head("questions", "Open questions and what to run next")]
    if r.next_steps:
        out.append("<h3>Next</h3><ul>" + "".join(f"<li>{_e(s)}</li>" for s in r.next_steps) + "</ul>")
    if not r.questions:
        out.append('<p class="empty">No research question is open: <code>sigmaloop ask "…"</code> '
                   "says what the loop should find out.</p>")
    for q in r.questions:
        decision = f'<p class="muted">What would change the decision: {_e(q.decision)}</p>' if q.decision else ""
        tried = [it for it in q.items if it.effect is not None]
        forest = ""
        if tried:
            forest = charts.forest([charts.Interval(f"#{it.id} {', '.join(it.names)[:18]}", it.effect.better,
                                                    it.effect.low, it.effect.high, _css(it),
                                                    f"#{it.id}: {fmt_effect(it.effect)}", it.predicted_better)
                                    for it in tried], bar=r.noise.keep_threshold, width=560,
                                   x_label=f"improvement in {r.metric} (positive = better)",
                                   title=f"question #{q.id}: its experiments' effects")
        sugg = "".join(f"<li>{_e(s)}</li>" for s in q.suggestions)
        out.append(f'<div class="card" data-question="{q.id}"><h3>#{q.id} {_e(q.text)} '
                   f'<span class="tag muted">{_e(q.status)}</span></h3>{decision}<p>{_e(q.verdict)}</p>'
                   f"{forest}{'<ul>' + sugg + '</ul>' if sugg else ''}</div>")
    out.append("</section>")
    return "".join(out)
