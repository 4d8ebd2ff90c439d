"""The morning report as fields: what a night of the loop learned, refuted and found weird.

Pure: experiments, the engine's state and two lookups (a curve, its anomalies) in; a
:class:`MorningReport` out. The page (``page.py``) and the terminal summary (the CLI) render it;
neither computes anything of its own.

Words used here, as a careful researcher would sign them:

- **kept**: cleared the judge's bar and held on a second seed; shown with its effect and 95% interval.
- **refuted**: measured and not kept. Split by what the numbers allow one to say: *worse beyond
  noise* (the idea hurt), *no effect the bar can see* (within noise: not proof of no effect, the
  interval says how big an effect could still hide), *did not hold on a second seed*, *pruned*
  (its curve was clearly behind). When the proposer predicted an effect, the report says whether
  the 95% interval excludes it: "prediction refuted" is only said when it does.
- **weird**: anything a researcher should look at before trusting the night: curve anomalies not
  dismissed, crashes and timeouts, untrusted results (tampered, over budget), implausibly large
  gains held for a look, and the sanity warnings (barely trained, step counts that moved).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..anomaly import Anomaly
from ..calibration import Calibration, calibrate
from ..learned import candidates, learned
from ..lifecycle import Reason, short
from ..models import MEASURED, Experiment, ProgressRecord, Status
from ..questions import Effect, changed_names, effect
from ..state import EngineState

#: points a curve keeps in the report (evenly thinned; enough for a 600 px wide plot)
CURVE_POINTS = 300
#: the most experiments the weird section draws a curve for (the rest are listed)
MAX_WEIRD_CURVES = 12

#: how an ending is grouped for the cost and the timeline's colours
OUTCOME_OF: dict[Status, str] = {
    Status.KEPT: "kept", Status.DISCARDED: "discarded", Status.PRUNED: "pruned",
    Status.CRASHED: "crashed", Status.TIMEOUT: "crashed", Status.TAMPERED: "untrusted",
    Status.OVER_BUDGET: "untrusted", Status.INTERRUPTED: "interrupted", Status.RUNNING: "running",
}

_REFUTED_KIND = {
    Reason.WORSE.value: "worse",
    Reason.WITHIN_NOISE.value: "no_effect",
    Reason.NOT_CONFIRMED.value: "not_confirmed",
    Reason.CONFIRMATION_FAILED.value: "not_confirmed",
    Reason.RESULT_REJECTED.value: "no_effect",
    Reason.PRUNED.value: "pruned",
}
REFUTED_TITLES = {
    "worse": "worse beyond noise",
    "no_effect": "no effect the bar can see",
    "not_confirmed": "did not hold on a second seed",
    "pruned": "pruned: clearly behind early",
}


@dataclass
class Item:
    """One experiment as the report shows it."""

    id: int
    status: str
    reason: str
    source: str
    hypothesis: str
    verdict: str  # the judge's line
    short: str  # a few words: "kept", "within noise", "crashed"
    metric: float | None
    delta: float | None
    z: float | None
    seed: int | None
    question: int | None
    started_at: float | None
    finished_at: float | None
    hours: float  # trial wall time, in hours (0 when it never ran)
    names: list[str] = field(default_factory=list)  # the constants its edit changed
    effect: Effect | None = None
    predicted_better: float | None = None  # the predicted effect, positive = better
    is_baseline: bool = False
    confirms: int | None = None


@dataclass
class Refuted:
    item: Item
    kind: str  # a key of REFUTED_TITLES
    prediction_excluded: bool | None  # the interval excludes the predicted effect (None: no prediction)


@dataclass
class Weird:
    """Something to look at before trusting the night."""

    item: Item
    what: str  # "anomaly" | "crashed" | "untrusted" | "implausible" | "warning"
    message: str
    anomalies: list[Anomaly] = field(default_factory=list)
    curve: list[tuple[float, float | None]] = field(default_factory=list)  # (frac, loss)


@dataclass
class ProposerCalibration:
    source: str  # "tune", "llm:gpt-…", "user"
    calibration: Calibration


@dataclass
class Noise:
    """What it cost to know the noise, and what that bought (the keep bar)."""

    reference: float | None
    sigma: float | None
    sigma_dof: int
    keep_threshold: float | None
    keep_pct: float | None  # the bar as a percentage of the reference
    advice: str | None
    runs: list[Item]  # the head's reference runs
    baseline_runs: int  # baseline runs in the window (any head)
    confirmation_runs: int
    hours: float  # trial-hours spent on baselines and confirmations


@dataclass
class Cost:
    trial_hours: float
    hours_by_outcome: dict[str, float]  # outcome → hours (baselines and confirmations apart)
    experiments: int  # that ran
    per_hour: float | None  # experiments run per wall-clock hour of the window
    tokens: dict[str, dict[str, int]]  # proposer source → prompt / completion / total
    window_hours: float


@dataclass
class QuestionEntry:
    id: int
    text: str
    decision: str
    status: str
    verdict: str
    items: list[Item]
    suggestions: list[str]


@dataclass
class MorningReport:
    title: str
    workspace: str
    branch: str
    metric: str
    lower_is_better: bool
    generated_at: float
    start: float | None  # the window: first trial start … last trial end
    end: float | None
    since: int | None
    learned: list[str]
    items: list[Item]  # every experiment in the window, by id
    kept: list[Item]
    refuted: list[Refuted]
    calibration: list[ProposerCalibration]
    weird: list[Weird]
    noise: Noise
    cost: Cost
    questions: list[QuestionEntry]
    next_steps: list[str]
    reference_curves: list[list[tuple[float, float | None]]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            if not it.is_baseline and it.confirms is None:
                out[it.status] = out.get(it.status, 0) + 1
        return out


def _hours(e: Experiment) -> float:
    wall = e.timings.get("wall") if e.timings else None
    if wall is None and e.started_at and e.finished_at:
        wall = e.finished_at - e.started_at
    return max(0.0, float(wall or 0.0)) / 3600.0


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def item(e: Experiment, lower_is_better: bool) -> Item:
    pred = e.predicted_delta if _finite(e.predicted_delta) else None
    return Item(
        id=e.id, status=e.status.value, reason=e.reason, source=e.source, hypothesis=e.hypothesis,
        verdict=e.verdict, short=short(e), metric=e.metric if _finite(e.metric) else None,
        delta=e.delta if _finite(e.delta) else None, z=e.z if _finite(e.z) else None, seed=e.seed,
        question=e.question, started_at=e.started_at, finished_at=e.finished_at, hours=_hours(e),
        names=sorted(changed_names(e.diff)) if e.diff else [],
        effect=effect(e, lower_is_better),
        predicted_better=None if pred is None else (-pred if lower_is_better else pred),
        is_baseline=e.is_baseline, confirms=e.confirms,
    )


def thin(curve: list[ProgressRecord], n: int = CURVE_POINTS) -> list[tuple[float, float | None]]:
    """(frac, loss) pairs, evenly thinned to at most ``n`` (first and last kept). Non-finite
    losses stay in as NaN / inf (the page draws them as a mark, not a line)."""
    if len(curve) > n:
        step = (len(curve) - 1) / (n - 1)
        curve = [curve[round(i * step)] for i in range(n)]
    return [(r.frac, r.loss) for r in curve]


def _prediction_excluded(f: Effect | None, predicted: float | None) -> bool | None:
    if predicted is None or f is None:
        return None
    return not (f.low <= predicted <= f.high)


def _family(source: str) -> str:
    return source if source.startswith("llm") else source.split(":", 1)[0]


def build(
    experiments: Iterable[Experiment],
    state: EngineState,
    curve: Callable[[int], list[ProgressRecord]],
    anomalies: Callable[[int], list[Anomaly]],
    *,
    workspace: str = "",
    branch: str = "",
    since: int | None = None,
    k: float = 2.0,
    now: float | None = None,
) -> MorningReport:
    """The report over ``experiments`` (all of them, or those from ``since`` on: the night).

    ``curve(id)`` gives a stored training curve, ``anomalies(id)`` its anomalies not dismissed
    (``Engine.anomalies``); the reference is ``state``'s (the head's, now)."""
    every = list(experiments)
    exps = [e for e in every if since is None or e.id >= since]
    lib = state.direction == "minimize"
    items = {e.id: item(e, lib) for e in exps}
    ordered = [items[e.id] for e in exps]
    tried = candidates(exps)
    ran = [e for e in exps if e.started_at]

    kept = [items[e.id] for e in tried if e.status == Status.KEPT]
    refuted = [
        Refuted(items[e.id], _REFUTED_KIND[e.reason],
                _prediction_excluded(items[e.id].effect, items[e.id].predicted_better))
        for e in tried if e.status in (*MEASURED, Status.PRUNED) and e.status != Status.KEPT
        and e.reason in _REFUTED_KIND
    ]

    sigma = state.reference.sigma if state.reference else None
    cal = []
    for source in sorted({_family(e.source) for e in tried if _finite(e.predicted_delta)}):
        c = calibrate(exps, sigma, lib, k=k, source=source)
        if c.n_predicted:
            cal.append(ProposerCalibration(source, c))

    weird = _weird(exps, items, curve, anomalies)

    ref = state.reference
    ref_ids = set(ref.ids) if ref else set()
    noise_rows = [e for e in ran if e.is_baseline or e.confirms is not None]
    noise = Noise(
        reference=ref.value if ref else None, sigma=ref.sigma if ref else None,
        sigma_dof=ref.sigma_dof if ref else 0,
        keep_threshold=ref.keep_threshold if ref else None,
        keep_pct=(100 * ref.keep_threshold / abs(ref.value)) if ref and ref.keep_threshold and ref.value else None,
        advice=ref.advice if ref else None,
        runs=[item(e, lib) if e.id not in items else items[e.id] for e in every if e.id in ref_ids],
        baseline_runs=sum(1 for e in noise_rows if e.is_baseline),
        confirmation_runs=sum(1 for e in noise_rows if e.confirms is not None),
        hours=sum(_hours(e) for e in noise_rows),
    )

    starts = [e.started_at for e in ran if e.started_at]
    ends = [e.finished_at for e in ran if e.finished_at]
    start, end = (min(starts) if starts else None), (max(ends) if ends else None)
    window = ((end - start) / 3600.0) if start and end and end > start else 0.0
    by_outcome: dict[str, float] = {}
    for e in ran:
        key = "baseline" if e.is_baseline else "confirmation" if e.confirms is not None else \
            OUTCOME_OF.get(e.status, e.status.value)
        by_outcome[key] = by_outcome.get(key, 0.0) + _hours(e)
    tokens: dict[str, dict[str, int]] = {}
    for e in exps:
        usage = e.usage or {}
        if not usage:
            continue
        t = tokens.setdefault(_family(e.source), {"prompt": 0, "completion": 0, "total": 0, "calls": 0})
        for key, name in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("total", "total_tokens")):
            value = usage.get(name, usage.get(key))
            if isinstance(value, (int, float)):
                t[key] += int(value)
        t["calls"] += int(usage.get("calls", 1)) if isinstance(usage.get("calls", 1), (int, float)) else 1
    cost = Cost(
        trial_hours=sum(by_outcome.values()), hours_by_outcome=by_outcome, experiments=len(ran),
        per_hour=(len(ran) / window) if window > 0 else None, tokens=tokens, window_hours=window,
    )

    lines = learned(exps, state)
    next_steps = [line.removeprefix("Next: ") for line in lines if line.startswith("Next: ")]
    summary = [line for line in lines if not line.startswith(("Next: ", "Question #"))]
    questions = [_question(q, [items[i] for i in q.experiments if i in items], lib) for q in state.questions
                 if q.status == "open" or any(i in items for i in q.experiments)]

    ref_curves = [thin(curve(i)) for i in sorted(ref_ids)[:3]]
    title = f"Morning report: {workspace or 'sigmaloop'}" + (f" ({branch})" if branch else "")
    return MorningReport(
        title=title, workspace=workspace, branch=branch, metric=state.metric, lower_is_better=lib,
        generated_at=time.time() if now is None else now, start=start, end=end, since=since,
        learned=summary, items=ordered, kept=kept, refuted=refuted, calibration=cal, weird=weird,
        noise=noise, cost=cost, questions=questions, next_steps=next_steps, reference_curves=ref_curves,
    )


def _weird(exps: list[Experiment], items: dict[int, Item], curve: Callable[[int], list[ProgressRecord]],
           anomalies: Callable[[int], list[Anomaly]]) -> list[Weird]:
    """Problems one experiment at a time (with its curve, the first MAX_WEIRD_CURVES), then the
    sanity warnings, one entry a kind of warning naming every run it concerns."""
    out: list[Weird] = []
    warned: dict[str, list[Experiment]] = {}
    drawn = 0
    for e in exps:
        it = items[e.id]
        found: list[Weird] = []
        if e.status in (Status.TAMPERED, Status.OVER_BUDGET):
            found.append(Weird(it, "untrusted", f"{e.status.value.replace('_', ' ')}: {e.verdict}"))
        elif e.status in (Status.CRASHED, Status.TIMEOUT):
            where = f" ({e.crash.file}:{e.crash.line})" if e.crash else ""
            said = e.verdict.removeprefix(f"{e.status.value}: ")  # "crashed" is the entry's kind already
            found.append(Weird(it, "crashed", f"{said}{where}"))
        if e.reason == Reason.IMPLAUSIBLE.value:
            found.append(Weird(it, "implausible", e.verdict))
        if e.started_at:
            an = anomalies(e.id)
            if an:
                found.append(Weird(it, "anomaly", "; ".join(a.message for a in an), anomalies=an))
        for code in sorted(e.warnings or {}):
            warned.setdefault(code, []).append(e)
        if found and e.started_at and drawn < MAX_WEIRD_CURVES:
            points = thin(curve(e.id))
            if points:
                found[0].curve = points
                drawn += 1
        out += found
    for code, runs in warned.items():
        first = runs[0]
        others = ", ".join(f"#{e.id}" for e in runs[1:9]) + (" …" if len(runs) > 9 else "")
        also = f" (also {others}: {len(runs)} runs in all)" if others else ""
        out.append(Weird(items[first.id], "warning", f"{first.warnings[code]}{also}"))
    return out


def _question(q, qitems: list[Item], lib: bool) -> QuestionEntry:
    """A question with where it stands and what to run next for it."""
    tried = [it for it in qitems if not it.is_baseline and it.confirms is None]
    measured = [it for it in tried if it.effect is not None]
    suggestions: list[str] = []
    if q.status == "open":
        if not tried:
            suggestions.append(f"nothing has tested it yet: `sigmaloop run-edit --question {q.id}` runs your edit "
                               "for it; the tuner and the LLM are steered to open questions")
        elif measured:
            best = max(measured, key=lambda it: it.effect.better)  # type: ignore[union-attr]
            f = best.effect
            names = ", ".join(best.names) or "its change"
            if f is not None and f.better > 0 and best.status != "kept":
                suggestions.append(f"#{best.id} ({names}) pointed the right way ({f.better:.4g} better, interval "
                                   f"{f.low:.4g} to {f.high:.4g}): push {names} further the same way, or rerun it "
                                   "on more seeds to narrow the interval")
            elif best.status == "kept":
                suggestions.append(f"#{best.id} was kept: close the question with what it showed "
                                   f"(`sigmaloop question {q.id} --close \"…\"`)")
            else:
                suggestions.append(f"none of the {len(measured)} measured tries helped; the closest was #{best.id} "
                                   f"({names}): try the other direction or a bolder change")
        if any(it.status in ("crashed", "timeout") for it in tried):
            suggestions.append("some tries crashed: read their logs before drawing a conclusion")
    return QuestionEntry(q.id, q.text, q.decision, q.status, q.verdict, qitems, suggestions)
