"""Research questions: what the researcher wants to know, and what the experiments say about it.

A question comes from ``sigmaloop ask``, the editor's palette, or the ``## Questions`` section of
``program.md`` (one bullet a question; ``(decision: …)`` at its end, or an indented
``decision: …`` line under it, says what result would change the next decision). Experiments
name the question they test (``Experiment.question``). A question's page is a
:class:`QuestionView`: its experiments, the effect each measured one showed with a 95% interval,
and one line saying where it stands. Nothing here closes a question: the researcher does,
with what was learned (the line says when there is something to close it on).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .judge import t_ppf
from .models import MEASURED, Experiment, Question, QuestionStatus

#: the interval's level (two-sided)
LEVEL = 0.95


@dataclass
class Effect:
    """What one measured experiment showed: the improvement over its paired reference in the
    metric's units (positive = better, whatever the direction), with its ``level`` interval.

    The interval is Student's t on the noise's degrees of freedom over the standard error the
    judge used (``√2·σ/√runs``: a difference of paired runs); with σ taken as known, the normal."""

    exp_id: int
    better: float
    low: float
    high: float
    z: float | None
    runs: int
    level: float = LEVEL


@dataclass
class QuestionView:
    """A question's page: the question, the experiments testing it, their effects, where it stands."""

    question: Question
    experiments: list[Experiment]
    effects: list[Effect] = field(default_factory=list)
    verdict: str = ""


def effect(e: Experiment, lower_is_better: bool = True) -> Effect | None:
    """The effect a judged candidate showed (None: a baseline, unmeasured, or no noise estimate)."""
    if e.is_baseline or e.confirms is not None or e.delta is None or e.sigma is None:
        return None
    if not (math.isfinite(e.delta) and math.isfinite(e.sigma)) or e.sigma <= 0:
        return None
    runs = max(1, int(e.numbers.get("runs", 1)))
    better = -e.delta if lower_is_better else e.delta
    se = math.sqrt(2.0) * e.sigma / math.sqrt(runs)
    dof = e.numbers.get("dof")
    q = 1 - (1 - LEVEL) / 2
    crit = t_ppf(q, float(dof)) if dof else t_ppf(q, math.inf)
    return Effect(e.id, better, better - crit * se, better + crit * se, e.z, runs)


def _words(x: float, digits: int) -> str:
    return f"{abs(x):.{digits}f} {'better' if x >= 0 else 'worse'}"


def fmt_effect(f: Effect, digits: int = 4) -> str:
    """The effect and its interval in one sign convention, magnitudes with a word:
    ``0.0120 better (95%: 0.0040 to 0.0200 better)``, ``0.0200 worse (95%: 0.0457 worse to
    0.0057 better)``."""
    level = f"{100 * f.level:.0f}%"
    if (f.low >= 0) == (f.high >= 0):
        lo, hi = sorted((abs(f.low), abs(f.high)))
        side = "better" if f.low >= 0 else "worse"
        return f"{_words(f.better, digits)} ({level}: {lo:.{digits}f} to {hi:.{digits}f} {side})"
    return f"{_words(f.better, digits)} ({level}: {_words(f.low, digits)} to {_words(f.high, digits)})"


def view(question: Question, experiments: list[Experiment], lower_is_better: bool = True,
         keep_threshold: float | None = None) -> QuestionView:
    """The page of ``question`` over the experiments that test it."""
    effects = [f for f in (effect(e, lower_is_better) for e in experiments) if f is not None]
    return QuestionView(question, experiments, effects,
                        verdict(question, experiments, effects, keep_threshold))


def verdict(question: Question, experiments: list[Experiment], effects: list[Effect],
            keep_threshold: float | None = None) -> str:
    """One line: where the question stands, from its status and its experiments' verdicts."""
    if question.status == QuestionStatus.ANSWERED:
        return f"answered: {question.answer}" if question.answer else "answered"
    if question.status == QuestionStatus.DROPPED:
        return f"dropped: {question.answer}" if question.answer else "dropped"
    candidates = [e for e in experiments if not e.is_baseline and e.confirms is None]
    if not candidates:
        return "open: no experiment tests it yet"
    by_id = {f.exp_id: f for f in effects}
    measured = [e for e in candidates if e.status in MEASURED and e.id in by_id]
    pending = sum(1 for e in candidates if not e.finished)
    tail = f", {pending} in progress" if pending else ""
    kept = [e for e in measured if e.status.value == "kept"]
    if kept:
        best = max(kept, key=lambda e: by_id[e.id].better)
        return (f"open: #{best.id} kept, {fmt_effect(by_id[best.id])} "
                f"({len(measured)} measured{tail}); close it with what you learned")
    if not measured:
        return f"open: {len(candidates)} tried, none measured yet{tail}"
    top = max(measured, key=lambda e: by_id[e.id].better)
    bar = f"; the smallest keepable effect is {keep_threshold:.4f}" if keep_threshold else ""
    return (f"open: {len(measured)} measured, none kept; closest #{top.id}, "
            f"{fmt_effect(by_id[top.id])}{bar}{tail}")


def tested_by(experiments: Iterable[Experiment]) -> dict[int, list[int]]:
    """question id → the ids of the experiments testing it."""
    out: dict[int, list[int]] = {}
    for e in experiments:
        if e.question is not None:
            out.setdefault(e.question, []).append(e.id)
    return out


# --- which question an edit tests --------------------------------------------------------

_ASSIGNED = re.compile(r"^[+-](?![+-])\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?=(?!=)")


def changed_names(diff: str) -> set[str]:
    """The names assigned on the lines a unified diff adds or removes (``LR = 0.04`` → LR)."""
    return {m.group(1) for line in diff.splitlines() if (m := _ASSIGNED.match(line))}


def mentions(text: str, name: str) -> bool:
    """Whether a question's text names ``name``: as written (``WARMUP_RATIO``), or in words
    (``warmup ratio``), case-insensitively, as whole words."""
    lowered = text.lower()
    for form in {name.lower(), name.lower().replace("_", " ")}:
        if len(form) >= 2 and re.search(rf"(?<![a-z0-9_]){re.escape(form)}(?![a-z0-9_])", lowered):
            return True
    return False


def match(open_questions: Iterable[Question], names: Iterable[str]) -> int | None:
    """The one open question whose text names a changed constant; None when none or several do
    (a proposal is never credited to a question by a guess)."""
    names = list(names)
    hits = [q.id for q in open_questions if any(mentions(q.text + " " + q.decision, n) for n in names)]
    return hits[0] if len(hits) == 1 else None


# --- program.md ----------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_BULLET = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+(.*\S)\s*$")
_DECISION_TAIL = re.compile(r"\s*\((?:decision|would change)\s*:\s*(.+?)\)\s*$", re.IGNORECASE)
_DECISION_LINE = re.compile(r"^\s+(?:[-*+]\s+)?(?:decision|would change)\s*:\s*(.+\S)\s*$", re.IGNORECASE)


def from_program(text: str) -> list[tuple[str, str]]:
    """The (question, decision) pairs of a ``## Questions`` section (any heading level whose
    title starts with "Questions" or "Research questions"); empty when there is none."""
    out: list[tuple[str, str]] = []
    inside, level = False, 0
    for line in text.splitlines():
        h = _HEADING.match(line)
        if h:
            title = h.group(2).lower()
            if inside and len(h.group(1)) <= level:
                inside = False
            if not inside and (title.startswith("questions") or title.startswith("research questions")):
                inside, level = True, len(h.group(1))
            continue
        if not inside:
            continue
        d = _DECISION_LINE.match(line)
        if d and out:
            out[-1] = (out[-1][0], d.group(1))
            continue
        b = _BULLET.match(line)
        if b:
            q = b.group(1)
            m = _DECISION_TAIL.search(q)
            decision = ""
            if m:
                decision, q = m.group(1).strip(), q[: m.start()].rstrip()
            if q:
                out.append((q, decision))
    return out
