"""The experiment lifecycle: which status may follow which, and why an experiment ended as it did.

Every status change in the engine goes through :func:`check` (and the journal's compare-and-set),
so an illegal move fails loudly with what the experiment is now and what it could become. The
verdict is structured: a status, a :class:`Reason` code, the numbers, a free-text detail (an
error message, a ratchet refusal). Text is made from those fields by :func:`describe` at the edges
(CLI, language server, results.tsv); nothing decides anything by reading text back.

    proposed ─▶ accepted ─▶ queued ─▶ running ─▶ kept | discarded | crashed | timeout | pruned
        │           │          │         │             | over_budget | tampered
        └───────────┴──────────┴─▶ rejected        └─▶ interrupted ─▶ queued (recovery)

    discarded (reason implausible: a gain too large to believe unseen) ─accept result─▶ kept

``pruned`` is a fixed name that nothing produces yet (early pruning comes with scale-out).
"""

from __future__ import annotations

import enum
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
    Reason.WORSE: "worse",
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


def _numbers(e: Experiment, metric: str) -> str:
    if e.delta is None or e.z is None:
        return ""
    runs = int(e.numbers.get("runs", 1))
    over = f" over {runs} seeds" if runs > 1 else ""
    return f"{e.delta:+.4f} {metric}, {e.z:.1f}σ{over}"


_DISCARDS = (Reason.WITHIN_NOISE, Reason.WORSE, Reason.NOT_CONFIRMED, Reason.CONFIRMATION_FAILED)


_JUDGED = frozenset({Reason.BASELINE, Reason.IMPROVED, Reason.IMPROVED_ONE_SEED, Reason.WITHIN_NOISE, Reason.WORSE,
                     Reason.NOT_CONFIRMED, Reason.STALE, Reason.IMPLAUSIBLE, Reason.RESULT_ACCEPTED,
                     Reason.RESULT_REJECTED, Reason.OVER_BUDGET})


def describe(e: Experiment, metric: str = "val_bpb") -> str:
    """One line a person reads: where the experiment is, or why it ended as it did; a number
    the script printed itself (no fixed evaluator) says so."""
    text = _describe(e, metric)
    if e.evaluator == "self-reported" and e.reason in _JUDGED:
        return f"{text} (self-reported metric)"
    return text


def _describe(e: Experiment, metric: str) -> str:
    if e.status in (Status.PROPOSED, Status.ACCEPTED, Status.QUEUED, Status.RUNNING):
        if e.phase == Phase.CONFIRMING:
            nums = _numbers(e, metric)
            return f"{nums}: confirming on another seed" if nums else "confirming on another seed"
        return e.phase or e.status.value
    try:
        reason = Reason(e.reason)
    except ValueError:
        return e.status.value
    detail, nums = e.detail, _numbers(e, metric)
    if reason == Reason.BASELINE:
        return f"baseline (seed {e.seed}): " + ("–" if e.metric is None else f"{e.metric:.6f}")
    if reason == Reason.CONFIRMATION:
        return f"confirmation of #{e.confirms}" + (f": {detail}" if detail else "")
    if reason == Reason.IMPROVED:
        return f"{nums}, kept"
    if reason == Reason.IMPROVED_ONE_SEED:
        return f"{nums}, kept (no second seed to confirm on)"
    if reason == Reason.IMPLAUSIBLE:
        return f"{nums}: implausibly large, not kept until you look (accept or reject the result)"
    if reason == Reason.RESULT_ACCEPTED:
        return f"{nums}, kept after a look at an implausible gain"
    label = _REASON_TEXT.get(reason, reason.value)
    if reason in _DISCARDS:
        return ", ".join(p for p in (nums, label + (f" ({detail})" if detail else ""), "discarded") if p)
    if reason == Reason.STALE:
        return ", ".join(p for p in (nums, f"beyond noise but not kept: {detail}") if p)
    return f"{label}: {detail}" if detail else label


def reached(experiments: Iterable[Experiment], *reasons: Reason) -> list[Experiment]:
    """The experiments whose verdict has one of ``reasons``."""
    wanted = {r.value for r in reasons}
    return [e for e in experiments if e.reason in wanted]
