"""What a run of the loop learned, in sentences: the end of ``sigmaloop loop``, the demo, the editor.

Pure: experiments and the engine's state in, lines out (no engine, no I/O), so every adapter says
the same thing. It says what a researcher would want read back at the end of a night, kept or not:

- the reference (the head's mean ± σ over its seeds; never one lucky seed);
- what was kept, with its size and σ;
- how the rest ended (within noise, worse, crashed, …);
- when nothing was kept: the smallest effect that could have been (the keep threshold), and the
  candidate that came closest;
- what to try next: the noise advisor's advice (more seeds, a longer budget), runs that barely
  trained, machines whose speed varied, the direction that came closest;
- the research questions still open, with where each stands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .lifecycle import Reason, delta_words, short
from .models import MEASURED, Experiment, Status
from .state import EngineState

#: the most kept experiments (and open questions) named one by one
MAX_NAMED = 5
#: a hypothesis is cut to this many characters in a sentence
HYPOTHESIS_CHARS = 60

_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("within noise", frozenset({Reason.WITHIN_NOISE.value})),
    ("worse beyond noise", frozenset({Reason.WORSE.value})),
    ("not confirmed on a second seed", frozenset({Reason.NOT_CONFIRMED.value, Reason.CONFIRMATION_FAILED.value})),
    ("held as implausibly large", frozenset({Reason.IMPLAUSIBLE.value, Reason.RESULT_REJECTED.value})),
    ("pruned early", frozenset({Reason.PRUNED.value})),
    ("crashed", frozenset({Reason.CRASHED.value})),
    ("timed out", frozenset({Reason.TIMEOUT.value})),
    ("untrusted (tampered or over budget)", frozenset({Reason.METRIC_MISMATCH.value, Reason.NO_MODEL.value,
                                                      Reason.FUTURE_PEEKING.value, Reason.OVER_BUDGET.value})),
    ("not kept: the branch moved on", frozenset({Reason.STALE.value})),
    ("not judged: no comparable reference", frozenset({Reason.NOT_COMPARABLE.value, Reason.NO_REFERENCE.value})),
    ("stopped", frozenset({Reason.STOPPED.value, Reason.STOPPED_IN_CONFIRMATION.value})),
)


def _cut(text: str, n: int = HYPOTHESIS_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _name(e: Experiment) -> str:
    return f"#{e.id}" + (f" ({_cut(e.hypothesis)})" if e.hypothesis else "")


def _size(e: Experiment, metric: str, lower_is_better: bool) -> str:
    """``0.0120 val_bpb better, 3.1σ over 2 seeds``."""
    words = delta_words(e.delta, lower_is_better, metric)
    if e.z is not None and math.isfinite(e.z):
        runs = int(e.numbers.get("runs", 1))
        words += f", {abs(e.z):.1f}σ" + (f" over {runs} seeds" if runs > 1 else "")
    return words


def candidates(experiments: Iterable[Experiment]) -> list[Experiment]:
    """The edits tried: not baselines, not confirmation runs."""
    return [e for e in experiments if not e.is_baseline and e.confirms is None]


def learned(experiments: Iterable[Experiment], state: EngineState) -> list[str]:
    """What the experiments (say, one loop's) taught, against the state now: sentences, one a line.

    ``experiments`` may include baselines and confirmations (they are counted where they
    belong); ``state`` is :meth:`Engine.state` (reference, keep threshold, advice, questions)."""
    exps = list(experiments)
    metric, lib = state.metric, state.direction == "minimize"
    better = "lower" if lib else "higher"
    ref = state.reference
    lines: list[str] = []

    # the reference
    if ref is None:
        lines.append(f"No reference yet: nothing measured the head's code ({metric}, {better} is better). "
                     "Run `sigmaloop baseline` first.")
    else:
        sigma = "" if ref.sigma is None else f" ± {ref.sigma:.4f}"
        n = len(ref.seeds)
        lines.append(f"Reference: {metric} {ref.value:.4f}{sigma}, the head's mean over {n} seed"
                     f"{'s' if n != 1 else ''} ({better} is better).")

    tried = candidates(exps)
    finished = [e for e in tried if e.finished]
    kept = [e for e in finished if e.status == Status.KEPT]
    rejected = [e for e in finished if e.status == Status.REJECTED]
    ran = [e for e in finished if e.status != Status.REJECTED]

    # what was kept
    for e in kept[:MAX_NAMED]:
        lines.append(f"Kept {_name(e)}: {_size(e, metric, lib)}.")
    if len(kept) > MAX_NAMED:
        lines.append(f"… and {len(kept) - MAX_NAMED} more kept (sigmaloop log).")

    # how the rest ended
    if ran:
        counts = [f"{len(kept)} kept"]
        for label, reasons in _GROUPS:
            n = sum(1 for e in ran if e.status != Status.KEPT and e.reason in reasons)
            if n:
                counts.append(f"{n} {label}")
        lines.append(f"Of {len(ran)} edit{'s' if len(ran) != 1 else ''} run: {', '.join(counts)}.")
    elif not tried:
        lines.append("No edits were tried.")
    if rejected:
        lines.append(f"{len(rejected)} proposal{'s were' if len(rejected) != 1 else ' was'} rejected before "
                     "running (sigmaloop show ID says why).")
    pending = [e for e in tried if not e.finished]
    if pending:
        lines.append(f"{len(pending)} still queued or running: {', '.join('#' + str(e.id) for e in pending[:8])}.")

    # nothing kept: the bar, and what came closest
    # held for a look (implausibly large) is not "close": it is said on its own, below
    measured = [e for e in ran if e.status in MEASURED and e.z is not None and math.isfinite(e.z)
                and e.delta is not None and e.reason != Reason.IMPLAUSIBLE.value]
    if not kept and ref is not None:
        if ref.keep_threshold is not None:
            rel = f" ({100 * ref.keep_threshold / abs(ref.value):.1f}% of the reference)" if ref.value else ""
            lines.append(f"Nothing was kept. The smallest effect that could have been kept: "
                         f"{ref.keep_threshold:.4f} {metric} {'lower' if lib else 'higher'}{rel}.")
        else:
            lines.append("Nothing was kept, and nothing could be: there is no noise estimate yet (the head "
                         "ran on one seed); `sigmaloop baseline` runs the judge's seeds.")
    closest = max(measured, key=lambda e: e.z or 0.0) if measured else None
    if not kept and closest is not None:
        lines.append(f"Closest: {_name(closest)}, {_size(closest, metric, lib)} ({short(closest)}).")

    # what to try next
    lines += [f"Next: {n}" for n in _next(exps, state, kept, ran, closest)]

    # the questions still open
    open_qs = [q for q in state.questions if q.status == "open"]
    for q in open_qs[:MAX_NAMED]:
        lines.append(f"Question #{q.id} ({_cut(q.text)}): {q.verdict}.")
    if len(open_qs) > MAX_NAMED:
        lines.append(f"… and {len(open_qs) - MAX_NAMED} more open questions (sigmaloop questions).")
    return lines


def _next(exps: list[Experiment], state: EngineState, kept: list[Experiment], ran: list[Experiment],
          closest: Experiment | None) -> list[str]:
    """What to try next, most important first (at most three)."""
    out: list[str] = []
    ref = state.reference
    ref_ids = set(ref.ids) if ref is not None else set()
    barely_ref = [e for e in exps if e.id in ref_ids and "barely_trained" in (e.warnings or {})]
    barely = [e for e in ran if "barely_trained" in (e.warnings or {})]
    if barely_ref:
        steps = barely_ref[0].summary.get("num_steps")
        made = f", #{barely_ref[0].id} made {int(steps)} optimizer steps" if isinstance(steps, (int, float)) else ""
        out.append(f"the reference runs barely trained{made}: raise the budget (or make steps cheaper) before "
                   "trusting any verdict.")
    elif len(barely) * 2 > max(1, len(ran)):
        out.append(f"{len(barely)} of {len(ran)} edits barely trained: raise the budget so the metric measures "
                   "the ideas, not start-up.")
    held = [e for e in ran if e.reason == Reason.IMPLAUSIBLE.value]
    if held:
        ids = ", ".join(f"#{e.id}" for e in held[:5])
        out.append(f"look at {ids}: {'gains' if len(held) > 1 else 'a gain'} too large to keep unseen "
                   f"(`sigmaloop show {held[0].id}`, then `sigmaloop review {held[0].id} accept` or `reject`).")
    if ref is not None and ref.advice:
        # the advice opens with the bar, said above; what follows is why it is high and what lowers it
        advice = ref.advice.split("): ", 1)[1] if "): " in ref.advice else ref.advice
        first = advice[:1].upper() if advice[:1].isascii() else advice[:1]  # σ stays σ
        out.append(first + advice[1:].rstrip(".") + ".")
    if any("step_count" in (e.warnings or {}) for e in exps):
        out.append("same-seed repeats made different numbers of steps: the machine's speed varied, and under a "
                   "time budget that moves the metric; run on an idle machine, or with fewer slots.")
    if ref is None:
        out.append("`sigmaloop baseline`, then `sigmaloop loop`.")
    elif kept:
        out.append(f"the loop goes on from the new head (#{kept[-1].id}); `sigmaloop adopt {kept[-1].id}` copies "
                   "its script into your working tree.")
    elif closest is not None and (closest.z or 0) > 0:
        held_up = "did not hold on another seed" if closest.reason == Reason.NOT_CONFIRMED.value else \
            "stayed within noise"
        out.append(f"#{closest.id} pointed the right way but {held_up}: push further in that direction, or "
                   "lower the bar (more baseline seeds, a longer budget).")
    elif ran and all(e.status in (Status.CRASHED, Status.TIMEOUT) for e in ran):
        out.append(f"every edit crashed or timed out: `sigmaloop show {ran[-1].id}` shows the log.")
    elif ran:
        out.append("no edit moved the metric the right way: try bolder changes, or ask a sharper question "
                   "(`sigmaloop ask`).")
    else:
        out.append("`sigmaloop loop --iterations 10`.")
    return out[:3]
