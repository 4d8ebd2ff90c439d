"""What crosses the wire between the language server and its client: the one schema.

The dataclasses below (and the engine's state records they include) *are* the protocol (docs/protocol.md explains it in prose): field names
are snake_case here and camelCase on the wire; ``X | None`` is ``null`` when unset; a field
with :data:`OPTIONAL` metadata may be left out. ``scripts/gen_protocol.py`` writes them as TypeScript
to ``extension/src/protocol.gen.ts`` (checked in; ``tests/lsp/test_protocol.py`` fails when it
drifts), and the server builds every record it sends from them: :func:`experiment`,
:func:`progress`, :func:`state`. Command parameters are converted into their classes by
:func:`.params.structure` (strict about types; errors name the argument).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from ..anomaly import Anomaly
from ..lifecycle import Phase, Reason
from ..models import Experiment, ProgressRecord, Status
from ..state import BestState, LoopStatus, QuestionState, ReferenceState  # the engine's own records

# --------------------------------------------------------------------------- names

TRIAL_PROGRESS = "sigmaloop/trialProgress"
EXPERIMENT_UPDATED = "sigmaloop/experimentUpdated"
STATE = "sigmaloop/state"
EXPERIMENTS = "sigmaloop/experiments"
SET_API_KEY = "sigmaloop/setApiKey"
DONE = "sigmaloop/done"

Direction = Literal["minimize", "maximize"]
ProposerKind = Literal["tune", "llm"]


#: metadata of a field the sender may leave out (``name?:`` in TypeScript)
OPTIONAL = {"optional": True}


# --------------------------------------------------------------------------- records


@dataclass
class Crash:
    """Where a trial died: the deepest traceback frame inside the workspace."""

    file: str
    line: int  # 1-based
    message: str


@dataclass
class EffectRecord:
    """What a judged candidate showed: the improvement over its paired reference in the metric's
    units, POSITIVE = BETTER whatever the direction, with its ``level`` interval [low, high]."""

    better: float
    low: float
    high: float
    level: float  # 0.95


@dataclass
class ExperimentRecord:
    """One experiment, as every notification and command that returns one sends it."""

    id: int
    status: Status
    source: str  # "baseline" | "tune" | "llm:<model>" | "user"
    is_baseline: bool
    hypothesis: str
    predicted_delta: float | None
    rationale: str
    diff: str  # unified diff of the train script against parentCommit
    parent_commit: str | None
    commit: str | None
    code_hash: str | None
    seed: int | None
    budget: float | None
    metric: float | None
    delta: float | None  # metric - paired reference
    sigma: float | None
    z: float | None  # improvement in units of sigma; > 0 is better
    verdict: str  # one line for people, made from phase/reason/detail/numbers; decide nothing from it
    phase: Phase  # while queued/running
    reason: Reason | Literal[""]  # why it ended as it did
    detail: str
    numbers: dict[str, float]
    sandboxed: bool | None  # ran in the trial sandbox; false: with the user's full authority
    created_at: float  # unix seconds
    started_at: float | None
    finished_at: float | None
    log_path: str | None
    metrics_path: str | None
    crash: Crash | None
    rejection_reason: str | None
    confirms: int | None  # id of the experiment this run confirms
    attempts: int
    pid: int | None
    owner_pid: int | None
    summary: dict[str, float]
    params: dict[str, Any]
    usage: dict[str, Any]
    timings: dict[str, float]
    rev: int  # journal revision of the last change
    # what makes runs comparable, and where the judged number came from
    evaluator: str = field(default="", metadata=OPTIONAL)  # "prepare:<blob>" (fixed evaluator) | "self-reported"
    data: str = field(default="", metadata=OPTIONAL)  # the data the metric was computed on
    device: str = field(default="", metadata=OPTIONAL)  # "cpu" | "cuda:<name>"
    printed_metric: float | None = field(default=None, metadata=OPTIONAL)  # the script's own number
    node: str = field(default="", metadata=OPTIONAL)  # the machine the trial ran on
    rebased_from: str = field(default="", metadata=OPTIONAL)  # the commit its edit was written against
    # the research question it tests; warnings (code → one sentence: "barely_trained",
    # "step_count"); the effect with its interval (null: a baseline, not measured, no noise yet)
    question: int | None = field(default=None, metadata=OPTIONAL)  # questions' id
    warnings: dict[str, str] = field(default_factory=dict, metadata=OPTIONAL)
    effect: EffectRecord | None = field(default=None, metadata=OPTIONAL)


@dataclass
class ProgressPoint:
    """One progress record of a running trial (plus any extra numbers the script logs)."""

    open_ended: ClassVar[bool] = True
    step: int
    t: float  # seconds since training started
    frac: float  # 0..1 of the time budget
    loss: float | None


@dataclass
class TrialProgressParams:
    """``sigmaloop/trialProgress``: batched, at most one per experiment per 100 ms."""

    exp_id: int
    records: list[ProgressPoint]


@dataclass
class CalibrationState:
    """How well proposers' predicted deltas held."""

    n: int
    n_predicted: int
    sign_accuracy: float | None
    pearson: float | None
    predicted_improvements: int
    improvements_within_noise: int
    improvements_confirmed: int
    mean_abs_error: float | None
    bias: float | None
    k: float
    sigma: float | None
    lower_is_better: bool


@dataclass
class State:
    """``sigmaloop/state``: sent after initialize and whenever it changes (at most 4 Hz).
    The status bar, the code lens and the panel render it."""

    metric: str
    direction: Direction
    reference: ReferenceState | None
    best: BestState | None
    counts: dict[str, int]  # status → number of experiments
    kept: int  # candidates kept (baselines and confirmations not counted)
    run: int  # candidates that ran to a verdict
    running: list[int]
    calibration: CalibrationState | None
    loop: LoopStatus
    config_error: str | None  # sigmaloop.toml or the editor settings are broken: the message
    questions: list[QuestionState] = field(default_factory=list, metadata=OPTIONAL)  # research questions, oldest first


# --------------------------------------------------------------------------- commands


@dataclass
class NoParams:
    """A command without arguments."""


@dataclass
class ExperimentParams:
    """``[id]`` or ``[{"id": 14}]``."""

    id: int


@dataclass
class RejectParams:
    id: int
    reason: str | None = None


@dataclass
class RejectResultParams:
    """``sigmaloop.rejectResult``: ``[id, reason?]``; the reason is kept with the verdict."""

    id: int
    reason: str | None = None


@dataclass
class RunBaselineParams:
    budget: float | None = None


@dataclass
class ProposeParams:
    kind: ProposerKind | None = None


@dataclass
class StartLoopParams:
    iterations: int = 10
    budget: float | None = None
    proposer: ProposerKind | None = None


@dataclass
class ExperimentsParams:
    """``sigmaloop/experiments`` request."""

    ids: list[int] | None = None
    curves: bool = False
    max_points: int = 500


@dataclass
class ApiKeyParams:
    """``sigmaloop/setApiKey`` request: the editor's stored key, over the connection (never the
    environment); ``null`` removes it. ``host``: the endpoint host it was stored for."""

    key: str | None
    host: str | None = field(default=None, metadata=OPTIONAL)


@dataclass
class ApiKeyResult:
    has_key: bool
    host: str | None


@dataclass
class AnomalyRecord:
    """Something odd in a loss curve (``sigmaloop.anomaly.detect``)."""

    kind: str  # "nan" | "spike" | "divergence" | "plateau"
    frac: float  # where in the budget (0..1)
    step: int
    message: str  # "loss ×3.2 spike at 41% of budget"
    # the researcher looked and said it is nothing (``sigmaloop.dismissAnomaly``): the panel
    # shows it faded, the diagnostics leave it out; with the reason they gave ("" for none)
    dismissed: bool = field(default=False, metadata=OPTIONAL)
    dismissed_reason: str = field(default="", metadata=OPTIONAL)


@dataclass
class DismissAnomalyParams:
    """``sigmaloop.dismissAnomaly``: ``[id, kind, reason?]``: the ``kind`` anomaly of experiment
    ``id`` is nothing (kept in the journal: it stays dismissed across restarts)."""

    id: int
    kind: str  # anomaly.KINDS
    reason: str | None = None


@dataclass
class DismissAnomalyResult:
    id: int
    kind: str
    anomalies: list[AnomalyRecord]  # what is still shown for the experiment


@dataclass
class ReportParams:
    """``sigmaloop.report``: ``[since?]``: the morning report (experiments with id > ``since``;
    all when left out), written to ``<state dir>/report.html``."""

    since: int | None = None


@dataclass
class ReportResult:
    path: str  # the file written (one self-contained page: no scripts, no network)
    html: str  # the same page


@dataclass
class DoneParams:
    """``sigmaloop/done``: a baseline or a loop started from the editor ended, said once. Sent
    instead of ``window/showMessage`` to a client that announced ``client: "vscode"`` (it adds
    its buttons: Open Report, Show Panel); other clients get the message as a showMessage."""

    what: Literal["baseline", "loop"]
    message: str  # "sigmaloop: Loop done: 10 run, 1 kept (#12, 0.012 better), …"


@dataclass
class ExperimentWithCurve(ExperimentRecord):
    curve: list[ProgressPoint] | None = field(default=None, metadata=OPTIONAL)
    anomalies: list[AnomalyRecord] | None = field(default=None, metadata=OPTIONAL)  # with the curve


@dataclass
class ExperimentsResult:
    experiments: list[ExperimentWithCurve]


@dataclass
class BaselineStarted:
    started: Literal["baseline"]
    seeds: list[int]


@dataclass
class LoopStarted:
    started: Literal["loop"]
    iterations: int


@dataclass
class StopLoopResult:
    stopped: list[int]  # ids stopped: queued ones this server queued and its running trials


@dataclass
class StopExperimentResult:
    id: int
    stopped: bool  # false: not running in this server


@dataclass
class ShowExperimentResult(ExperimentRecord):
    """The record plus both sides of its diff (set whenever it has a parent commit)."""

    script_name: str = ""
    parent_text: str | None = None  # the script at parentCommit
    proposed_text: str | None = None  # the script the experiment runs


@dataclass
class AdoptResult:
    id: int
    applied: bool
    via: Literal["workspaceEdit", "file", "none"]
    failure_reason: str | None = field(default=None, metadata=OPTIONAL)
    path: str | None = field(default=None, metadata=OPTIONAL)
    unchanged: bool | None = field(default=None, metadata=OPTIONAL)


@dataclass
class AskParams:
    """``sigmaloop.ask``: ``[text, decision?]``: a research question and the result that would
    change the next decision."""

    text: str
    decision: str | None = None


@dataclass
class QuestionParams:
    """``[id]`` of a research question."""

    id: int


@dataclass
class CloseQuestionParams:
    """``sigmaloop.closeQuestion``: ``[id, answer?, status?]``: closed with what was learned
    (status "answered", the default, or "dropped"; "open" reopens it)."""

    id: int
    answer: str | None = None
    status: Literal["answered", "dropped", "open"] | None = None


@dataclass
class QuestionResult:
    """``sigmaloop.question``: the question and the experiments testing it (each with its effect)."""

    question: QuestionState
    experiments: list[ExperimentRecord]


@dataclass
class RunEditParams:
    """``sigmaloop.runEdit``: ``[hypothesis?, predictedDelta?, question?]``: the open train
    script's current text (the synced document, else the file) as an experiment (source "user")."""

    hypothesis: str | None = None
    predicted_delta: float | None = None
    question: int | None = None


@dataclass
class EditStatusResult:
    """``sigmaloop.editStatus``: the open train script against the research head."""

    differs: bool
    added: int  # lines in the file, not in the head
    removed: int  # lines in the head, not in the file
    head: str  # the head commit, short
    summary: str  # what Run My Edit / Run Baseline would run, in words


# --------------------------------------------------------------------------- settings


@dataclass
class LlmSettings:
    base_url: str | None = None
    model: str | None = None


@dataclass
class Settings:
    """Editor settings (section ``sigmaloop``); null or "" leaves sigmaloop.toml's value."""

    python_path: str | None = None
    budget: float | None = None
    slots: int | None = None
    proposer: Literal["tune", "llm", "mixed"] | None = None
    llm: LlmSettings | None = None


@dataclass
class InitializationOptions:
    settings: Settings | None = None
    trusted: bool | None = None
    client: str | None = None


#: editor setting (as the client sends it) → (sigmaloop.toml section, key)
SETTING_KEYS = {
    "pythonPath": ("runner", "python"), "budget": ("experiment", "budget"),
    "slots": ("runner", "slots"), "proposer": ("proposer", "kind"),
    "llm.baseUrl": ("llm", "base_url"), "llm.model": ("llm", "model"),
}


def overrides(settings: Any) -> dict[str, dict[str, Any]]:
    """The client's :class:`Settings` as ``config.load`` overrides (shaped like sigmaloop.toml).
    Values pass as sent: ``config.load`` validates them with sigmaloop.toml's rules (one rule
    set); keys the server has no use for (client-side settings) are ignored."""
    flat: dict[str, Any] = {}
    for key, value in (settings if isinstance(settings, dict) else {}).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key in SETTING_KEYS and value is not None and value != "":
            section, name = SETTING_KEYS[key]
            out.setdefault(section, {})[name] = value
    return out


#: what the generator writes, in this order
WIRE_TYPES = (
    Crash, EffectRecord, ExperimentRecord, ProgressPoint, TrialProgressParams, ReferenceState, BestState,
    CalibrationState, LoopStatus, QuestionState, State, NoParams, ExperimentParams, RejectParams,
    RejectResultParams, RunBaselineParams, ProposeParams, StartLoopParams, ExperimentsParams, AnomalyRecord,
    ExperimentWithCurve, ExperimentsResult, BaselineStarted, LoopStarted, StopLoopResult, StopExperimentResult,
    ShowExperimentResult, AdoptResult, AskParams, QuestionParams, CloseQuestionParams, QuestionResult,
    RunEditParams, EditStatusResult, LlmSettings, Settings, InitializationOptions, ApiKeyParams,
    ApiKeyResult, DismissAnomalyParams, DismissAnomalyResult, ReportParams, ReportResult, DoneParams,
)
#: what the client sends besides command arguments (fields with defaults may be left out)
INPUTS = (LlmSettings, Settings, InitializationOptions, ApiKeyParams)
ENUMS = {"Status": Status, "Phase": Phase, "Reason": Reason}
ALIASES = {"Direction": Direction, "ProposerKind": ProposerKind}

#: commands (workspace/executeCommand): name → (params, result)
COMMANDS: dict[str, tuple[type, Any]] = {
    "sigmaloop.runBaseline": (RunBaselineParams, BaselineStarted),
    "sigmaloop.propose": (ProposeParams, ExperimentRecord),
    "sigmaloop.accept": (ExperimentParams, ExperimentRecord),
    "sigmaloop.reject": (RejectParams, ExperimentRecord),
    "sigmaloop.acceptResult": (ExperimentParams, ExperimentRecord),
    "sigmaloop.rejectResult": (RejectResultParams, ExperimentRecord),
    "sigmaloop.startLoop": (StartLoopParams, LoopStarted),
    "sigmaloop.stopLoop": (NoParams, StopLoopResult),
    "sigmaloop.stopExperiment": (ExperimentParams, StopExperimentResult),
    "sigmaloop.showExperiment": (ExperimentParams, ShowExperimentResult),
    "sigmaloop.adopt": (ExperimentParams, AdoptResult),
    "sigmaloop.summary": (NoParams, State),
    "sigmaloop.ask": (AskParams, QuestionState),
    "sigmaloop.question": (QuestionParams, QuestionResult),
    "sigmaloop.closeQuestion": (CloseQuestionParams, QuestionState),
    "sigmaloop.runEdit": (RunEditParams, ExperimentRecord),
    "sigmaloop.editStatus": (NoParams, EditStatusResult),
    "sigmaloop.dismissAnomaly": (DismissAnomalyParams, DismissAnomalyResult),
    "sigmaloop.report": (ReportParams, ReportResult),
}
NOTIFICATIONS = {
    TRIAL_PROGRESS: TrialProgressParams, EXPERIMENT_UPDATED: ExperimentRecord, STATE: State,
    DONE: DoneParams,
}
REQUESTS = {EXPERIMENTS: (ExperimentsParams, ExperimentsResult), SET_API_KEY: (ApiKeyParams, ApiKeyResult)}


# --------------------------------------------------------------------------- to the wire

_CAMEL = re.compile(r"_([a-z])")


def camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def clean(value: Any) -> Any:
    """JSON values: NaN/inf → null, enums → their value."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


_RECORD_FIELDS = tuple((f.name, camel(f.name)) for f in fields(ExperimentRecord)
                       if f.name not in ("is_baseline", "effect"))
_PLAIN = (int, str, type(None))


def experiment(e: Experiment, effect: Any = None, **extra: Any) -> dict[str, Any]:
    """An experiment as an :class:`ExperimentRecord` (plus ``extra`` camelCase fields);
    ``effect``: the engine's :class:`~sigmaloop.questions.Effect` of it (``Engine.effect``)."""
    out: dict[str, Any] = {}
    for name, key in _RECORD_FIELDS:
        value = getattr(e, name)
        if name == "crash" and value is not None:
            value = {"file": value.file, "line": value.line, "message": value.message}
        elif type(value) not in _PLAIN:
            value = clean(value)
        out[key] = value
    out["isBaseline"] = e.is_baseline
    out["effect"] = None if effect is None else clean(
        {"better": effect.better, "low": effect.low, "high": effect.high, "level": effect.level})
    for k, v in extra.items():
        out[camel(k)] = clean(v)
    return out


def anomaly(a: Anomaly, dismissed: str | None = None) -> dict[str, Any]:
    """An :class:`AnomalyRecord`; ``dismissed``: the researcher's reason when they dismissed it."""
    out = {"kind": a.kind, "frac": a.frac, "step": a.step, "message": a.message}
    if dismissed is not None:
        out.update(dismissed=True, dismissedReason=dismissed)
    return clean(out)


def question_state(q: Any, experiments: list[int], verdict: str) -> dict[str, Any]:
    """A :class:`QuestionState` from the engine's ``Question``."""
    return {"id": q.id, "text": q.text, "decision": q.decision, "status": clean(q.status),
            "answer": q.answer, "experiments": list(experiments), "verdict": verdict}


def progress(r: ProgressRecord) -> dict[str, Any]:
    """A :class:`ProgressPoint`: the record plus its extra numbers."""
    rec: dict[str, Any] = {"step": r.step, "t": r.t, "frac": r.frac, "loss": r.loss}
    for k, v in r.extra.items():
        rec.setdefault(k, v)
    return clean(rec)


def state(engine_state: Any, config_error: str | None) -> dict[str, Any]:
    """The engine's state (``EngineState.as_dict()``, already camelCase) as a :class:`State`."""
    d = clean(engine_state.as_dict())
    d["configError"] = config_error
    return d
