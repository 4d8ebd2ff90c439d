"""What an adapter shows at a glance: the engine's state as one record.

:class:`EngineState` is what the status bar, the code lens, the panel and ``sigmaloop status``
render; ``as_dict()`` is its wire form (camelCase keys, JSON values). It is computed from the
journal and the research branch's head by :func:`engine_state`; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .calibration import Calibration, calibrate
from .judge import Judge, Reference, critical_value
from .models import Experiment, Status


@dataclass
class ReferenceState:
    """The head's code, measured: the mean over its seeds, the noise, and the runs it comes from."""

    value: float
    sigma: float | None
    sigma_dof: int
    seeds: list[int]
    ids: list[int]
    # the smallest improvement the judge can keep (t_crit·σ: the mean of a candidate's two paired
    # runs, Student's t on σ's dof), and — when that is large against the metric, or σ rests on
    # too few repeats — what would lower it ("optional": older servers do not send them)
    keep_threshold: float | None = field(default=None, metadata={"optional": True})
    advice: str | None = field(default=None, metadata={"optional": True})


@dataclass
class BestState:
    """The best reference: the head's mean (never one lucky seed) and the experiment that made it."""

    id: int
    metric: float
    hypothesis: str


@dataclass
class LoopStatus:
    running: bool = False
    iteration: int = 0
    iterations: int = 0
    phase: str = ""  # "starting", "proposing", "running #12", "done", "stopped"


@dataclass
class QuestionState:
    """A research question at a glance: its words, where it stands, the experiments testing it."""

    id: int
    text: str
    decision: str
    status: str  # "open" | "answered" | "dropped"
    answer: str
    experiments: list[int]
    verdict: str  # one line: questions.verdict


@dataclass
class EngineState:
    metric: str
    direction: str  # "minimize" | "maximize"
    reference: ReferenceState | None
    best: BestState | None
    counts: dict[str, int]
    kept: int  # candidates kept (baselines and confirmations not counted)
    run: int  # candidates that ran to a verdict
    running: list[int]
    calibration: Calibration | None
    loop: LoopStatus = field(default_factory=LoopStatus)
    config_error: str | None = None  # filled by the language server
    questions: list[QuestionState] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        ref, best = self.reference, self.best
        return {
            "metric": self.metric,
            "direction": self.direction,
            "reference": None if ref is None else {
                "value": ref.value, "sigma": ref.sigma, "sigmaDof": ref.sigma_dof,
                "seeds": list(ref.seeds), "ids": list(ref.ids),
                "keepThreshold": ref.keep_threshold, "advice": ref.advice,
            },
            "best": None if best is None else {"id": best.id, "metric": best.metric, "hypothesis": best.hypothesis},
            "counts": dict(self.counts),
            "kept": self.kept,
            "run": self.run,
            "running": list(self.running),
            "calibration": None if self.calibration is None else _camel(self.calibration.as_dict()),
            "loop": {"running": self.loop.running, "iteration": self.loop.iteration,
                     "iterations": self.loop.iterations, "phase": self.loop.phase},
            "configError": self.config_error,
            "questions": [{"id": q.id, "text": q.text, "decision": q.decision, "status": q.status,
                           "answer": q.answer, "experiments": list(q.experiments), "verdict": q.verdict}
                          for q in self.questions],
        }


def _camel(d: dict[str, Any]) -> dict[str, Any]:
    def key(k: str) -> str:
        head, *rest = k.split("_")
        return head + "".join(p[:1].upper() + p[1:] for p in rest)

    return {key(k): v for k, v in d.items()}


#: a keep threshold above this fraction of the metric is worth a word: few real edits move a
#: well-tuned metric by more than a percent or two.
ADVICE_REL = 0.01
#: σ on so few degrees of freedom that the critical value is this many times k is worth a word:
#: at k = 2 that is dof <= 2 (t_crit 4.5 at dof 2, 14 at dof 1, against 3.3 at dof 3).
ADVICE_DOF_PENALTY = 2.0


def noise_advice(threshold: float | None, value: float, metric: str, seeds: int,
                 dof: int | None = None, k: float = 2.0) -> str | None:
    """What to do when the noise, or too few repeats to know it, hides realistic improvements
    (None when neither does). ``dof``: σ's degrees of freedom (None: σ known)."""
    if threshold is None or value == 0:
        return None
    penalty = critical_value(k, dof) / k
    few = dof is not None and penalty >= ADVICE_DOF_PENALTY
    rel = 100 * threshold / abs(value)
    if few:
        return (f"the judge can only keep improvements of {threshold:.4g} {metric} or more ({rel:.1f}% of the "
                f"reference): σ rests on {dof} degree{'s' if dof != 1 else ''} of freedom, so the bar is "
                f"{penalty:.1f}× what a well-measured σ needs. More seeds lower it: more baseline seeds "
                f"(now {seeds}; judge.seeds, e.g. sigmaloop baseline); every confirmation run adds one too")
    if threshold / abs(value) <= ADVICE_REL:
        return None
    return (f"the judge can only keep improvements of {threshold:.4g} {metric} or more ({rel:.1f}% of the "
            f"reference): run-to-run noise is large here. More baseline seeds (now {seeds} on this code; "
            "judge.seeds, and sigmaloop baseline runs the missing ones), a longer budget, or fewer sources "
            "of nondeterminism in the script would lower it")


_RAN = (Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.TIMEOUT)


def head_experiment(experiments: list[Experiment], ref: Reference) -> Experiment | None:
    """The experiment that brought the head's code: the first run of it that is not a
    confirmation (the kept candidate, or the first baseline seed of unchanged code)."""
    ids = set(ref.ids)
    for e in experiments:  # in id order
        if e.id in ids and e.confirms is None:
            return e
    return None


def engine_state(
    experiments: list[Experiment],
    ref: Reference,
    judge: Judge,
    metric: str,
    direction: str,
    loop: LoopStatus,
) -> EngineState:
    """The state from the journal's rows and the head's reference (``reference_for`` the head)."""
    counts: dict[str, int] = {}
    for e in experiments:
        counts[e.status.value] = counts.get(e.status.value, 0) + 1
    sigma, dof = judge.noise(experiments, ref)  # comparable with the head's reference only
    reference = best = None
    if ref.value is not None:
        threshold = None if sigma is None else judge.keep_threshold(sigma, dof)
        advice = noise_advice(threshold, ref.value, metric, len(ref.by_seed), dof, judge.cfg.k)
        reference = ReferenceState(ref.value, sigma, dof, sorted(ref.by_seed), sorted(ref.ids),
                                   threshold, advice)
        first = head_experiment(experiments, ref)
        if first is not None:
            best = BestState(first.id, ref.value, first.hypothesis)
    candidates = [e for e in experiments if not e.is_baseline and e.confirms is None]
    return EngineState(
        metric=metric,
        direction=direction,
        reference=reference,
        best=best,
        counts=counts,
        kept=sum(1 for e in candidates if e.status == Status.KEPT),
        run=sum(1 for e in candidates if e.status in _RAN),
        running=[e.id for e in experiments if e.status == Status.RUNNING],
        calibration=calibrate(experiments, sigma, direction == "minimize", judge.cfg.k),
        loop=LoopStatus(loop.running, loop.iteration, loop.iterations, loop.phase),
    )
