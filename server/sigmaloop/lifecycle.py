"""The experiment lifecycle: which status may follow which, and why an experiment ended as it did.

Every status change in the engine goes through :func:`check` (and the journal's compare-and-set),
so an illegal move fails loudly with what the experiment is now and what it could become. The
verdict is structured: a status, a :class:`Reason` code, the numbers, a free-text detail (an
error message, a ratchet refusal). Text is made from those fields by :func:`describe` at the edges
(CLI, language server, results.tsv); nothing decides anything by reading text back. The words
have one sign convention: a size and "better"/"worse", then σ as a magnitude, then the bar.

    proposed ─▶ accepted ─▶ queued ─▶ running ─▶ kept | discarded | crashed | timeout | pruned
        │           │          │         │             | over_budget | tampered
        └───────────┴──────────┴─▶ rejected        └─▶ interrupted ─▶ queued (recovery)

    discarded (reason implausible: a gain too large to believe unseen) ─accept result─▶ kept

``pruned`` is a fixed name that nothing produces yet (early pruning comes with scale-out).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable

from .models import Experiment, Status


class Reason(str, enum.Enum):
    """Why an experiment is where it is (one code per verdict; fixed names, stored)."""

    # before any trial
    INVALID_EDIT = "invalid_edit"  # the proposed script does not parse, apply, or changes nothing
    PROPOSER_ERROR = "proposer_error"  # the proposer failed to produce an edit
    USER_REJECTED = "user_rejected"
    # measured and judged
    BASELINE = "baseline"  # a reference run of unchanged code
    IMPROVED = "improved"  # beyond k sigma on every seed it ran on
    IMPROVED_ONE_SEED = "improved_one_seed"  # kept on one run: the reference had no other seed
    WITHIN_NOISE = "within_noise"
    WORSE = "worse"
    NOT_CONFIRMED = "not_confirmed"  # the confirmation run did not hold the improvement
    CONFIRMATION_FAILED = "confirmation_failed"  # the confirmation run crashed or timed out
    STALE = "stale"  # would have been kept, but the branch moved on (or is checked out elsewhere)
    NO_REFERENCE = "no_reference"  # nothing to compare with: run the baseline first
    CONFIRMATION = "confirmation"  # a confirmation run: it follows the experiment it confirms
    NOT_COMPARABLE = "not_comparable"  # no reference at its budget / evaluator / data / device
    IMPLAUSIBLE = "implausible"  # cleared the bar by an implausible margin: kept only after a look
    RESULT_ACCEPTED = "result_accepted"  # an implausible gain the researcher looked at and kept
    RESULT_REJECTED = "result_rejected"  # an implausible gain the researcher looked at and refused
    # the result can't be trusted (status tampered / over_budget)
    METRIC_MISMATCH = "metric_mismatch"  # the printed metric is not what the evaluator measured
    NO_MODEL = "no_model"  # printed a result but handed over no model to evaluate
    FUTURE_PEEKING = "future_peeking"  # changing later tokens changed earlier predictions
    OVER_BUDGET = "over_budget"  # trained past its budget (the runner's clock)
    # ended without a verdict on the idea
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    STOPPED = "stopped"  # stopped on request
    STOPPED_IN_CONFIRMATION = "stopped_in_confirmation"
    ENGINE_DIED = "engine_died"  # the engine that ran it is gone; re-queued on recovery
    NODE_LOST = "node_lost"  # the cluster node or worker running it went away; re-queued
    PRUNED = "pruned"  # its curve was clearly behind the reference's: stopped early
    INTERNAL_ERROR = "internal_error"  # a failure inside sigmaloop (git, disk), not the trial's

    def __str__(self) -> str:
        return self.value


class Phase(str, enum.Enum):
    """Where a queued or running experiment is; empty once it has finished."""

    NONE = ""
    STARTING = "starting"  # claimed, worktree being made
    TRAINING = "training"  # the trial process runs
    JUDGING = "judging"
    CONFIRMING = "confirming"  # measured; its confirmation run on another seed is due or running

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PROPOSED: frozenset({Status.ACCEPTED, Status.REJECTED}),
    Status.ACCEPTED: frozenset({Status.QUEUED, Status.REJECTED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.REJECTED, Status.INTERRUPTED}),
    Status.RUNNING: frozenset({
        Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.TIMEOUT, Status.PRUNED,
        Status.INTERRUPTED, Status.OVER_BUDGET, Status.TAMPERED,
    }),
    Status.INTERRUPTED: frozenset({Status.QUEUED}),
    Status.REJECTED: frozenset(),
    Status.KEPT: frozenset(),
    Status.DISCARDED: frozenset({Status.KEPT}),  # only "accept result" of an implausible gain
    Status.CRASHED: frozenset(),
    Status.TIMEOUT: frozenset(),
    Status.PRUNED: frozenset(),
    Status.OVER_BUDGET: frozenset(),
    Status.TAMPERED: frozenset(),
}
#: Statuses a new journal row may start in.
INITIAL = frozenset({Status.PROPOSED, Status.REJECTED, Status.QUEUED})


class IllegalTransition(ValueError):
    """A status change the lifecycle does not allow; says what is allowed instead."""

    def __init__(self, exp_id: int | None, current: Status | None, target: Status, action: str = "") -> None:
        self.exp_id, self.current, self.target = exp_id, current, target
        who = f"experiment #{exp_id}" if exp_id is not None else "a new experiment"
        doing = f" ({action})" if action else ""
        if current == target:
            msg = f"{who} is already {target.value}{doing}"
        elif current is None:
            allowed = ", ".join(s.value for s in sorted(INITIAL, key=_order))
            msg = f"{who} can't start as {target.value}{doing}; new experiments start as {allowed}"
        else:
            nxt = sources_of(target)
            if not TRANSITIONS[current]:
                hint = f"{current.value} is final"
            else:
                hint = f"from {current.value} it can become {', '.join(s.value for s in sorted(TRANSITIONS[current], key=_order))}"
            only = f"; only {', '.join(s.value for s in sorted(nxt, key=_order))} experiments can" if nxt else ""
            msg = f"{who} is {current.value} and can't become {target.value}{doing}: {hint}{only}"
        super().__init__(msg)


def _order(s: Status) -> int:
    return list(Status).index(s)


def sources_of(target: Status) -> frozenset[Status]:
    """The statuses from which ``target`` may be reached."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if target in nxt)


def check(current: Status | None, target: Status, exp_id: int | None = None, action: str = "") -> None:
    """Raise :class:`IllegalTransition` unless ``current → target`` is allowed (``None``: a new row).

    A move to the status it already has is refused too (fields change with Journal.update);
    that is what makes a second reject or a second claim of a trial fail.
    """
    if current is None:
        if target not in INITIAL:
            raise IllegalTransition(exp_id, None, target, action)
        return
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(exp_id, current, target, action)


def is_final(status: Status) -> bool:
    """Nothing more happens to it (a discarded implausible gain may still be accepted by hand)."""
    return not TRANSITIONS[status] or status == Status.DISCARDED


# --- text, at the edges ----------------------------------------------------------------------
_REASON_TEXT = {
    Reason.INVALID_EDIT: "rejected before running",
    Reason.PROPOSER_ERROR: "no valid proposal",
    Reason.USER_REJECTED: "rejected by user",
    Reason.WITHIN_NOISE: "within noise",
    Reason.WORSE: "worse beyond noise",
    Reason.NOT_CONFIRMED: "not confirmed",
    Reason.CONFIRMATION_FAILED: "confirmation failed",
    Reason.STALE: "not kept",
    Reason.NO_REFERENCE: "no paired baseline to judge against: run the baseline first",
    Reason.CRASHED: "crashed",
    Reason.TIMEOUT: "timeout",
    Reason.STOPPED: "stopped before it finished",
    Reason.STOPPED_IN_CONFIRMATION: "stopped during its confirmation",
    Reason.ENGINE_DIED: "interrupted: engine stopped mid-trial",
    Reason.INTERNAL_ERROR: "sigmaloop error",
    Reason.NOT_COMPARABLE: "not judged: no comparable reference",
    Reason.RESULT_REJECTED: "implausible gain, refused after a look",
    Reason.METRIC_MISMATCH: "tampered: the printed metric is not the evaluator's",
    Reason.NO_MODEL: "tampered: printed a result but handed over no model",
    Reason.FUTURE_PEEKING: "tampered: the model sees future tokens",
    Reason.OVER_BUDGET: "over budget",
    Reason.NODE_LOST: "interrupted: the machine running it went away",
    Reason.PRUNED: "pruned early",
}


def better_of(e: Experiment, lower_is_better: bool | None = None) -> bool | None:
    """Whether ``e`` measured better than its reference (None: no difference, or not measured).

    z is positive for better whatever the direction, so the direction is only needed where z is
    unknown."""
    if e.z is not None and e.z != 0 and math.isfinite(e.z):
        return e.z > 0
    if e.delta is None or e.delta == 0 or lower_is_better is None or not math.isfinite(e.delta):
        return None
    return (e.delta < 0) == lower_is_better


def _lower_is_better(e: Experiment) -> bool | None:
    """The metric's direction as the verdict's own numbers show it (z > 0 is better)."""
    if e.delta and e.z and math.isfinite(e.delta) and math.isfinite(e.z):
        return (e.z > 0) == (e.delta < 0)
    return None


def delta_words(delta: float | None, lower_is_better: bool | None, metric: str = "", digits: int = 4) -> str:
    """A difference as a magnitude and a word: ``0.0370 val_bpb worse`` / ``0.0120 better``;
    signed (``+0.0370``) only when the direction is unknown; "" for None."""
    if delta is None or not math.isfinite(delta):
        return ""
    unit = f" {metric}" if metric else ""
    if round(delta, digits) == 0:
        return f"{0:.{digits}f}{unit} (no change)"
    if lower_is_better is None:
        return f"{delta:+.{digits}f}{unit}"
    word = "better" if (delta < 0) == lower_is_better else "worse"
    return f"{abs(delta):.{digits}f}{unit} {word}"


def _numbers(e: Experiment, metric: str, lower_is_better: bool | None = None) -> str:
    """``0.0370 val_bpb worse, 0.7σ over 2 seeds``: the effect's size and its noise-units, both
    magnitudes, the word saying which way."""
    if e.delta is None or e.z is None:
        return ""
    better = better_of(e, lower_is_better)
    size = f"{abs(e.delta):.4f} {metric}"
    size += "" if better is None else (" better" if better else " worse")
    runs = int(e.numbers.get("runs", 1))
    over = f" over {runs} seeds" if runs > 1 else ""
    return f"{size}, {abs(e.z):.1f}σ{over}"


def _t_crit(e: Experiment) -> float | None:
    t = e.numbers.get("t_crit")
    return float(t) if isinstance(t, (int, float)) and math.isfinite(t) else None


def _needs(e: Experiment) -> str:
    """``; keep needs ≥ 2.0σ better`` (the bar the verdict used; "" on rows without one)."""
    t = _t_crit(e)
    return "" if t is None else f"; keep needs ≥ {t:.1f}σ better"


def _bar(e: Experiment) -> str:
    """`` (bar 2.3σ)`` after a kept gain."""
    t = _t_crit(e)
    return "" if t is None else f" (bar {t:.1f}σ)"


_BY_SEED = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?(?:\s*,\s*[-+]?\d+(?:\.\d+)?)*)\s+by seed\s*$")


def _by_seed(detail: str, lower_is_better: bool | None) -> str:
    """The judge's ``+0.0100, -0.0020 by seed`` as ``by seed: 0.0100 worse, 0.0020 better``."""
    m = _BY_SEED.match(detail)
    if m is None or lower_is_better is None:
        return detail
    words = [delta_words(float(x), lower_is_better) for x in m.group(1).split(",")]
    return "by seed: " + ", ".join(words)


_FAIL = re.compile(r"^FAIL\b[:\s]*", re.IGNORECASE)


def _clean(detail: str, label: str) -> str:
    """A detail without what the label already says: the trainer's ``FAIL crashed: X`` under
    "crashed" is ``X``."""
    detail = _FAIL.sub("", detail.strip())
    low = detail.lower()
    for prefix in (label.lower() + ":", label.lower() + " -", label.lower() + " —"):
        if low.startswith(prefix):
            detail = detail[len(prefix):].strip()
            break
    return detail


_DISCARDS = (Reason.WITHIN_NOISE, Reason.WORSE, Reason.NOT_CONFIRMED, Reason.CONFIRMATION_FAILED)


_JUDGED = frozenset({Reason.BASELINE, Reason.IMPROVED, Reason.IMPROVED_ONE_SEED, Reason.WITHIN_NOISE, Reason.WORSE,
                     Reason.NOT_CONFIRMED, Reason.STALE, Reason.IMPLAUSIBLE, Reason.RESULT_ACCEPTED,
                     Reason.RESULT_REJECTED, Reason.OVER_BUDGET})


def describe(e: Experiment, metric: str = "val_bpb", lower_is_better: bool | None = None) -> str:
    """One line a person reads once: where the experiment is, or why it ended as it did.

    One sign convention: sizes are magnitudes with "better"/"worse", then the noise-units
    (σ, a magnitude), then the bar a keep needed (``0.0370 val_bpb worse, 0.7σ; keep needs ≥
    2.0σ better: within noise, discarded``). A number the script printed itself (no fixed
    evaluator) says so. ``lower_is_better`` is needed only where a row has a Δ but no z."""
    text = _describe(e, metric, lower_is_better)
    if e.evaluator == "self-reported" and e.reason in _JUDGED:
        return f"{text} (self-reported metric)"
    return text


def _describe(e: Experiment, metric: str, lower_is_better: bool | None = None) -> str:
    nums = _numbers(e, metric, lower_is_better)
    if e.status in (Status.PROPOSED, Status.ACCEPTED, Status.QUEUED, Status.RUNNING):
        if e.phase == Phase.CONFIRMING:
            return f"{nums}: confirming on another seed" if nums else "confirming on another seed"
        return e.phase or e.status.value
    try:
        reason = Reason(e.reason)
    except ValueError:
        return e.status.value
    detail = e.detail
    if reason == Reason.BASELINE:
        return f"baseline (seed {e.seed}): " + ("–" if e.metric is None else f"{e.metric:.6f}")
    if reason == Reason.CONFIRMATION:
        return f"confirmation of #{e.confirms}" + (f": {detail}" if detail else "")
    if reason == Reason.IMPROVED:
        return f"{nums}{_bar(e)}, kept"
    if reason == Reason.IMPROVED_ONE_SEED:
        return f"{nums}{_bar(e)}, kept (no second seed to confirm on)"
    if reason == Reason.IMPLAUSIBLE:
        return f"{nums}: implausibly large, not kept until you look (accept or reject the result)"
    if reason == Reason.RESULT_ACCEPTED:
        return f"{nums}, kept after a look at an implausible gain"
    label = _REASON_TEXT.get(reason, reason.value)
    if reason in _DISCARDS:
        if reason == Reason.NOT_CONFIRMED:
            detail = _by_seed(detail, lower_is_better if lower_is_better is not None else _lower_is_better(e))
        verdict = label + (f" ({detail})" if detail else "") + ", discarded"
        return f"{nums}{_needs(e)}: {verdict}" if nums else verdict
    if reason == Reason.STALE:
        return ", ".join(p for p in (nums, f"beyond noise but not kept: {detail}") if p)
    detail = _clean(detail, label) if detail else ""
    return f"{label}: {detail}" if detail else label


_SHORT = {
    Reason.BASELINE: "baseline",
    Reason.IMPROVED: "improved",
    Reason.IMPROVED_ONE_SEED: "improved, 1 seed",
    Reason.IMPLAUSIBLE: "implausible: look",
    Reason.RESULT_ACCEPTED: "kept after look",
    Reason.RESULT_REJECTED: "refused after look",
    Reason.WITHIN_NOISE: "within noise",
    Reason.WORSE: "worse",
    Reason.NOT_CONFIRMED: "not confirmed",
    Reason.CONFIRMATION_FAILED: "confirm failed",
    Reason.STALE: "stale",
    Reason.NO_REFERENCE: "no reference",
    Reason.NOT_COMPARABLE: "not comparable",
    Reason.INVALID_EDIT: "invalid edit",
    Reason.PROPOSER_ERROR: "proposer error",
    Reason.USER_REJECTED: "by you",
    Reason.METRIC_MISMATCH: "metric mismatch",
    Reason.NO_MODEL: "no model",
    Reason.FUTURE_PEEKING: "future peeking",
    Reason.OVER_BUDGET: "over budget",
    Reason.CRASHED: "crashed",
    Reason.TIMEOUT: "timeout",
    Reason.STOPPED: "stopped",
    Reason.STOPPED_IN_CONFIRMATION: "stopped",
    Reason.ENGINE_DIED: "engine died",
    Reason.NODE_LOST: "node lost",
    Reason.PRUNED: "pruned early",
    Reason.INTERNAL_ERROR: "sigmaloop error",
}


def short(e: Experiment) -> str:
    """A few words for a table cell: the reason (``within noise``, ``confirms #3``), or the
    phase while it runs (``training``, ``confirming``)."""
    if not e.finished:
        return e.phase or e.status.value
    if e.reason == Reason.CONFIRMATION.value:
        return f"confirms #{e.confirms}" if e.confirms is not None else "confirmation"
    try:
        return _SHORT.get(Reason(e.reason), e.reason.replace("_", " "))
    except ValueError:
        return e.reason.replace("_", " ") or e.status.value


_WARNING_NAMES = {"barely_trained": "barely trained", "step_count": "step count"}


def explain(e: Experiment, metric: str = "val_bpb", lower_is_better: bool | None = None) -> list[tuple[str, str]]:
    """The longer story of a verdict (``sigmaloop show``): (label, text) rows — the verdict; the
    effect with its 95% interval; the noise and the bar a keep needed, in σ and in metric
    units; what the run did (steps, tokens, training and wall time); its warnings."""
    from .questions import effect  # late: questions imports the judge, which imports this module

    lib = lower_is_better if lower_is_better is not None else _lower_is_better(e)
    rows: list[tuple[str, str]] = [("verdict", describe(e, metric, lib))]
    runs = max(1, int(e.numbers.get("runs", 1)))
    if e.delta is not None and math.isfinite(e.delta) and not e.is_baseline and e.confirms is None:
        paired = "its paired reference run" if runs == 1 else f"its paired reference runs (mean of {runs} seeds)"
        text = f"{delta_words(e.delta, lib, metric)} than {paired}"
        f = effect(e, lib) if lib is not None else None
        if f is not None:
            text += (f"; {100 * f.level:.0f}% interval: {delta_words(-f.low, True)} to "
                     f"{delta_words(-f.high, True)}")
        rows.append(("effect", text))
    if e.sigma is not None and math.isfinite(e.sigma) and e.z is not None and not e.is_baseline:
        dof = e.numbers.get("dof")
        on = f" on {int(dof)} dof" if dof else ""
        rows.append(("noise", f"σ {e.sigma:.4f} {metric} run to run{on}; the effect is "
                              f"{abs(e.z):.1f}σ of its own noise (√2·σ/√{runs})"))
        t = _t_crit(e)
        if t is not None:
            need = t * math.sqrt(2.0) * e.sigma / math.sqrt(runs)
            seeds = f" over {runs} seeds" if runs > 1 else " on one seed"
            rows.append(("keep bar", f"≥ {t:.1f}σ better, i.e. ≥ {need:.4f} {metric} better{seeds}"
                                     + ("" if dof is None else f" (Student's t on {int(dof)} dof)")))
    did = _ran(e)
    if did:
        rows.append(("ran", did))
    for code, sentence in (getattr(e, "warnings", None) or {}).items():
        rows.append(("warning", f"{_WARNING_NAMES.get(code, code.replace('_', ' '))}: {sentence}"))
    return rows


def _ran(e: Experiment) -> str:
    """``1,234 steps, 12.3M tokens, 30.0 s training, 42.1 s wall``."""
    s, parts = e.summary, []
    steps = s.get("num_steps")
    if isinstance(steps, (int, float)) and math.isfinite(steps):
        parts.append(f"{int(steps):,} step{'s' if int(steps) != 1 else ''}")
    tokens = s.get("total_tokens_M")
    if isinstance(tokens, (int, float)) and math.isfinite(tokens):
        parts.append(f"{tokens:.3g}M tokens")
    train = s.get("training_seconds", e.timings.get("train"))
    if isinstance(train, (int, float)) and math.isfinite(train):
        parts.append(f"{train:.1f} s training")
    wall = e.timings.get("wall")
    if isinstance(wall, (int, float)) and math.isfinite(wall):
        parts.append(f"{wall:.1f} s wall")
    return ", ".join(parts)


def reached(experiments: Iterable[Experiment], *reasons: Reason) -> list[Experiment]:
    """The experiments whose verdict has one of ``reasons``."""
    wanted = {r.value for r in reasons}
    return [e for e in experiments if e.reason in wanted]
