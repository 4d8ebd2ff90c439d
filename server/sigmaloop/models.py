"""Records that cross module boundaries: experiments, proposals, trial specs and results.

Status names and field meanings follow the contracts in docs/architecture.md (fixed names).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from .sandbox import Policy


class Status(str, enum.Enum):
    """Lifecycle of an experiment (fixed names)."""

    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    QUEUED = "queued"
    RUNNING = "running"
    KEPT = "kept"
    DISCARDED = "discarded"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    PRUNED = "pruned"
    INTERRUPTED = "interrupted"
    OVER_BUDGET = "over_budget"  # trained past its budget (the runner's clock): never kept
    TAMPERED = "tampered"  # its result can't be trusted (printed ≠ evaluated, peeks at the future)

    def __str__(self) -> str:
        return self.value


#: Statuses after which nothing more happens to an experiment.
FINISHED = frozenset(
    {Status.REJECTED, Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.TIMEOUT, Status.PRUNED,
     Status.OVER_BUDGET, Status.TAMPERED}
)
#: Statuses of experiments that produced a usable metric.
MEASURED = frozenset({Status.KEPT, Status.DISCARDED})


class Outcome(str, enum.Enum):
    """How a trial subprocess ended, before any judging."""

    OK = "ok"  # exit 0 and the metric line was found
    CRASHED = "crashed"  # non-zero exit, or no metric line
    TIMEOUT = "timeout"  # killed at the kill limit (see KillLimit)
    STOPPED = "stopped"  # stopped on request (user, loop stop, shutdown)
    LOST = "lost"  # the machine or worker running it went away (a remote executor): re-queued

    def __str__(self) -> str:
        return self.value


@dataclass
class CrashLocation:
    """Where a trial died: the deepest traceback frame inside the workspace."""

    file: str  # path relative to the workspace (e.g. "train.py")
    line: int  # 1-based
    message: str  # e.g. "RuntimeError: CUDA out of memory"


@dataclass
class Proposal:
    """An edit of the train script with the claim it tests.

    ``new_source`` is the whole script after the edit; the unified diff is derived from it.
    """

    new_source: str
    hypothesis: str
    source: str  # "tune", "llm:<model>", "user"
    predicted_delta: float | None = None
    rationale: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # proposer bookkeeping (json-able)
    question: int | None = None  # the research question it tests


@dataclass
class Experiment:
    """One row of the journal."""

    id: int
    status: Status
    source: str  # "baseline", "tune", "llm:<model>", "user"
    hypothesis: str = ""
    predicted_delta: float | None = None
    rationale: str = ""
    diff: str = ""  # unified diff of the train script against parent_commit
    parent_commit: str | None = None
    commit: str | None = None
    code_hash: str | None = None  # sha256 of the train script this experiment runs
    seed: int | None = None
    budget: float | None = None
    metric: float | None = None
    delta: float | None = None  # metric - reference metric (paired seed)
    sigma: float | None = None  # noise estimate used for the verdict
    z: float | None = None  # improvement in units of sigma (positive = better)
    verdict: str = ""  # one line for people, made from the fields below (lifecycle.describe)
    phase: str = ""  # lifecycle.Phase while queued/running: starting, training, judging, confirming
    reason: str = ""  # lifecycle.Reason: why it ended as it did (set with its final status)
    detail: str = ""  # what the reason needs said: an error message, a ratchet refusal
    numbers: dict[str, float] = field(default_factory=dict)  # the verdict's numbers beyond delta/z: runs, k
    sandboxed: bool | None = None  # ran inside the trial sandbox (None: not run yet / before v4)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    log_path: str | None = None
    metrics_path: str | None = None
    crash: CrashLocation | None = None
    rejection_reason: str | None = None
    confirms: int | None = None  # id of the experiment this one re-runs on another seed
    attempts: int = 0  # how many times it was started (interrupted runs are re-queued)
    pid: int | None = None  # process group leader of the running trial
    owner_pid: int | None = None  # engine process that started the trial
    summary: dict[str, float] = field(default_factory=dict)  # the parsed summary block
    params: dict[str, Any] = field(default_factory=dict)  # proposer bookkeeping
    usage: dict[str, Any] = field(default_factory=dict)  # e.g. LLM token usage
    timings: dict[str, float] = field(default_factory=dict)  # wall, startup, train, eval, judge
    rev: int = 0  # journal revision of the last change (for watchers)
    # what makes two runs comparable (with code_hash and budget): see judge.reference_for
    evaluator: str = ""  # "prepare:<blob>" (the fixed evaluator, base commit's prepare.py) or "self-reported"
    data: str = ""  # the data the metric was computed on (the evaluator's cache entry), "" unknown
    device: str = ""  # "cpu" or "cuda:<name>" where the trial ran
    printed_metric: float | None = None  # what the script itself printed (the evaluator's is `metric`)
    node: str = ""  # the machine the trial ran on (host name); with device: where it ran
    rebased_from: str = ""  # the commit its edit was written against, when it ran rebased onto a newer head
    question: int | None = None  # the research question it tests (questions.Question.id)
    warnings: dict[str, str] = field(default_factory=dict)  # code → one sentence ("barely_trained", "step_count")

    @property
    def is_baseline(self) -> bool:
        return self.source == "baseline"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class QuestionStatus(str, enum.Enum):
    """Where a research question stands (fixed names, stored)."""

    OPEN = "open"  # the loop is steered to it; its experiments gather evidence
    ANSWERED = "answered"  # the researcher closed it with what was learned
    DROPPED = "dropped"  # closed without an answer (no longer worth asking)

    def __str__(self) -> str:
        return self.value


@dataclass
class Question:
    """A research question: what the researcher wants to know, and the result that would change
    their next decision. Experiments say which one they test (``Experiment.question``)."""

    id: int
    text: str
    decision: str = ""  # "if X beats the reference by ≥ 0.01 bpb I switch to it"
    status: QuestionStatus = QuestionStatus.OPEN
    answer: str = ""  # what was learned, when closed
    source: str = "user"  # "user" (ask) | "program.md" (its Questions section)
    created_at: float = 0.0
    answered_at: float | None = None
    rev: int = 0


@dataclass
class ProgressRecord:
    """One line of a trial's SIGMALOOP_METRICS file."""

    exp_id: int
    step: int
    t: float
    frac: float
    loss: float | None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class KillLimit:
    """When the runner kills a trial that has not ended, and what that was derived from.

    Before any run at this budget was measured it is ``2 x budget + grace``; afterwards it is
    ``budget + 2 x overhead + margin`` (never more than the first), where ``overhead`` is the
    largest fixed cost (wall - training time) of the recent measured runs. The rule lives in
    :mod:`sigmaloop.killlimit`; the text is rendered here, from the fields.
    """

    seconds: float
    budget: float
    grace: float  # experiment.grace: the allowance before the overhead is known
    overhead: float | None = None  # learned fixed overhead; None = nothing to learn from yet
    runs: int = 0  # measured runs the overhead was learned from
    margin: float = 0.0  # experiment.kill_margin, on top of the learned limit

    @classmethod
    def initial(cls, budget: float, grace: float) -> KillLimit:
        return cls(seconds=2 * budget + grace, budget=budget, grace=grace)

    @property
    def learned(self) -> bool:
        return self.overhead is not None and self.seconds < 2 * self.budget + self.grace

    def rule(self) -> str:
        """How the limit was derived, e.g. for the timeout message."""
        first = (f"2 x budget + grace = {self.seconds:g}s (budget {self.budget:g}s, "
                 f"grace {self.grace:g}s")
        if self.overhead is None:
            return f"{first}; no measured run at this budget yet to learn the overhead from)"
        learned = (f"budget {self.budget:g}s + 2 x overhead {self.overhead:.1f}s + "
                   f"kill_margin {self.margin:g}s")
        source = (f"overhead = the largest wall - training time of the last {self.runs} "
                  f"measured run{'s' if self.runs != 1 else ''} at this budget")
        if not self.learned:
            return f"{first}; the learned {learned} is no shorter; {source})"
        return f"{learned} = {self.seconds:.1f}s ({source})"

    def advice(self, exp_id: int | None = None) -> str:
        """What to do when a trial hits it."""
        if self.learned:
            return (f"if the script hung, fix it (the log tail is in `sigmaloop show {exp_id or 'ID'}`); "
                    "if it now needs longer to start or evaluate, raise experiment.kill_margin")
        return ("make the script stop training after SIGMALOOP_TIME_BUDGET seconds, or raise "
                "experiment.grace if its start-up and evaluation take longer than that")


@dataclass(frozen=True)
class EvaluatorSpec:
    """The fixed evaluator of a trial: the base commit's prepare.py, copied out of git."""

    identity: str  # "prepare:<blob>": runs scored by the same evaluator are comparable
    folder: str  # holds that prepare.py and score_model.py (read-only to the evaluator)


@dataclass
class Evaluation:
    """What the evaluator measured of a handed-over model (or why it could not)."""

    metric: float | None = None
    causal_leak: float = 0.0  # max |Δ logits| before a position when only later tokens change
    logit_scale: float = 1.0
    data: str = ""  # the data cache entry scored on
    device: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass
class TrialSpec:
    """Everything the runner needs to start one trial."""

    exp_id: int
    cwd: str  # directory the command runs in (inside the experiment's worktree)
    command: list[str]
    budget: float
    seed: int
    log_path: str
    metrics_path: str
    metric: str = "val_bpb"
    grace: float = 60.0  # used for the kill limit 2 x budget + grace when kill_limit is None
    kill_limit: KillLimit | None = None  # the engine's (learned) limit; see KillLimit
    workspace_root: str | None = None  # frames under this path count as "inside the workspace"
    env: dict[str, str] = field(default_factory=dict)  # extra variables (slot devices, threads)
    sandbox: Policy | None = None  # run inside bubblewrap under this policy; None: unsandboxed
    log_cap: int = 64 << 20  # output bytes kept in the log: head and tail past this
    evaluator: EvaluatorSpec | None = None  # score the handed-over model; None: the printed metric
    evaluator_policy: Policy | None = None  # the evaluator's own sandbox; None: unsandboxed
    model_path: str = ""  # where the trial hands its model over ($SIGMALOOP_MODEL)
    eval_scratch: str = ""  # the evaluator's writable folder (removed after)
    python: str = ""  # the interpreter the evaluator runs with (the trial's)
    cpus: tuple[int, ...] = ()  # the slot's cores (taskset); () = whatever this process may use


@dataclass
class TrialResult:
    """What the runner learned from one finished trial."""

    exp_id: int
    outcome: Outcome
    metric: float | None = None
    summary: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    crash: CrashLocation | None = None
    error: str = ""  # one line a user can act on (FAIL line, last exception line, timeout note)
    wall_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    sandboxed: bool = False  # it ran inside the sandbox
    printed_metric: float | None = None  # what the script printed (the judged one is `metric`)
    evaluator: str = ""  # EvaluatorSpec.identity, or "self-reported"
    data: str = ""
    device: str = ""
    untrusted: str = ""  # a lifecycle.Reason value (metric_mismatch, no_model, future_peeking)
    node: str = ""  # the machine it ran on (host name)


def code_hash(source: str) -> str:
    """Identity of a script's content, used to group repeats of the same code."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
