"""What crosses the wire between the language server and its client: the one schema.

The dataclasses below *are* the protocol (docs/protocol.md explains it in prose): field names
are snake_case here and camelCase on the wire; ``X | None`` is ``null`` when unset; a field
with :data:`OPTIONAL` metadata may be left out. ``scripts/gen_protocol.py`` writes them as TypeScript
to ``extension/src/protocol.gen.ts`` (checked in; ``tests/lsp/test_protocol.py`` fails when it
drifts), and the server builds every record it sends from them: :func:`experiment`,
:func:`progress`, :func:`state`. Command parameters are converted into their classes by
:func:`structure` (cattrs, strict about types, errors that name the argument).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args, get_origin

import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ..lifecycle import Phase, Reason
from ..models import Experiment, ProgressRecord, Status

# --------------------------------------------------------------------------- names

TRIAL_PROGRESS = "sigmaloop/trialProgress"
EXPERIMENT_UPDATED = "sigmaloop/experimentUpdated"
STATE = "sigmaloop/state"
EXPERIMENTS = "sigmaloop/experiments"

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
class ReferenceState:
    """The head's code, measured: mean over its seeds, the noise, the runs it comes from."""

    value: float
    sigma: float | None
    sigma_dof: int
    seeds: list[int]
    ids: list[int]


@dataclass
class BestState:
    """The best reference (the head's mean, never one lucky seed) and the experiment behind it."""

    id: int
    metric: float
    hypothesis: str


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
class LoopState:
    running: bool
    iteration: int
    iterations: int
    phase: str  # "starting", "proposing", "running #12", "done", "stopped"


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
    loop: LoopState
    config_error: str | None  # sigmaloop.toml or the editor settings are broken: the message


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
class ExperimentWithCurve(ExperimentRecord):
    curve: list[ProgressPoint] | None = field(default=None, metadata=OPTIONAL)


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


# setting → (toml section, key): what config.load's overrides are made of
SETTING_KEYS = {
    "python_path": ("runner", "python"), "budget": ("experiment", "budget"),
    "slots": ("runner", "slots"), "proposer": ("proposer", "kind"),
    "llm.base_url": ("llm", "base_url"), "llm.model": ("llm", "model"),
}


def overrides(settings: Settings) -> dict[str, dict[str, Any]]:
    """Editor settings as ``config.load`` overrides (shaped like sigmaloop.toml)."""
    out: dict[str, dict[str, Any]] = {}
    flat = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "llm"}
    if settings.llm is not None:
        flat.update({f"llm.{f.name}": getattr(settings.llm, f.name) for f in fields(settings.llm)})
    for name, value in flat.items():
        if value is not None and value != "":
            section, key = SETTING_KEYS[name]
            out.setdefault(section, {})[key] = value
    return out


#: what the generator writes, in this order
WIRE_TYPES = (
    Crash, ExperimentRecord, ProgressPoint, TrialProgressParams, ReferenceState, BestState,
    CalibrationState, LoopState, State, NoParams, ExperimentParams, RejectParams,
    RunBaselineParams, ProposeParams, StartLoopParams, ExperimentsParams, ExperimentWithCurve,
    ExperimentsResult, BaselineStarted, LoopStarted, StopLoopResult, StopExperimentResult,
    ShowExperimentResult, AdoptResult, LlmSettings, Settings, InitializationOptions,
)
#: what the client sends besides command arguments (fields with defaults may be left out)
INPUTS = (LlmSettings, Settings, InitializationOptions)
ENUMS = {"Status": Status, "Phase": Phase, "Reason": Reason}
ALIASES = {"Direction": Direction, "ProposerKind": ProposerKind}

#: commands (workspace/executeCommand): name → (params, result)
COMMANDS: dict[str, tuple[type, Any]] = {
    "sigmaloop.runBaseline": (RunBaselineParams, BaselineStarted),
    "sigmaloop.propose": (ProposeParams, ExperimentRecord),
    "sigmaloop.accept": (ExperimentParams, ExperimentRecord),
    "sigmaloop.reject": (RejectParams, ExperimentRecord),
    "sigmaloop.startLoop": (StartLoopParams, LoopStarted),
    "sigmaloop.stopLoop": (NoParams, StopLoopResult),
    "sigmaloop.stopExperiment": (ExperimentParams, StopExperimentResult),
    "sigmaloop.showExperiment": (ExperimentParams, ShowExperimentResult),
    "sigmaloop.adopt": (ExperimentParams, AdoptResult),
    "sigmaloop.summary": (NoParams, State),
}
NOTIFICATIONS = {
    TRIAL_PROGRESS: TrialProgressParams, EXPERIMENT_UPDATED: ExperimentRecord, STATE: State,
}
REQUESTS = {EXPERIMENTS: (ExperimentsParams, ExperimentsResult)}


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
    if isinstance(value, (Status, Phase, Reason)):
        return value.value
    return value


_RECORD_FIELDS = tuple((f.name, camel(f.name)) for f in fields(ExperimentRecord)
                       if f.name != "is_baseline")
_PLAIN = (int, str, type(None))


def experiment(e: Experiment, **extra: Any) -> dict[str, Any]:
    """An experiment as an :class:`ExperimentRecord` (plus ``extra`` camelCase fields)."""
    out: dict[str, Any] = {}
    for name, key in _RECORD_FIELDS:
        value = getattr(e, name)
        if name == "crash" and value is not None:
            value = {"file": value.file, "line": value.line, "message": value.message}
        elif type(value) not in _PLAIN:
            value = clean(value)
        out[key] = value
    out["isBaseline"] = e.is_baseline
    for k, v in extra.items():
        out[camel(k)] = clean(v)
    return out


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


def to_wire(obj: Any) -> Any:
    """A dataclass of this module as JSON (camelCase keys; optional fields left out when None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[camel(f.name)] = to_wire(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    return clean(obj)


# --------------------------------------------------------------------------- from the wire


class ParamsError(ValueError):
    """Arguments that do not fit a command's parameters; the message names the argument."""


def _strict(kind: type, what: str):
    def hook(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"must be {what}, not {value!r}")
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise TypeError(f"must be {what}, not {value!r}")
        return value

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind, what in ((int, "an integer"), (float, "a number"), (str, "a string"),
                       (bool, "true or false")):
        conv.register_structure_hook(kind, _strict(kind, what))

    def dataclass_hook(cls: type) -> Any:
        renames = {f.name: override(rename=camel(f.name)) for f in fields(cls)}
        return make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames)

    def literal_hook(tp: Any) -> Any:
        allowed = get_args(tp)

        def hook(value: Any, _type: Any) -> Any:
            if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
                raise TypeError(f"must be {' or '.join(repr(a) for a in allowed)}, not {value!r}")
            return value

        return hook

    def list_hook(tp: Any) -> Any:
        (item,) = get_args(tp) or (Any,)

        def hook(value: Any, _type: Any) -> Any:
            if not isinstance(value, list):
                raise TypeError(f"must be a list, not {value!r}")
            return [conv.structure(v, item) for v in value]

        return hook

    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, literal_hook)
    conv.register_structure_hook_factory(lambda t: get_origin(t) is list, list_hook)
    conv.register_structure_hook_factory(dataclasses.is_dataclass, dataclass_hook)
    return conv


converter = _make_converter()


def _plain(value: Any) -> Any:
    """pygls hands unknown methods' params over as namedtuples: back to JSON values."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def structure(cls: type, arguments: Any, what: str) -> Any:
    """Command arguments (positional ``[a, b]``, or one object ``[{"a": …}]``) or request
    params (an object) → ``cls``; :class:`ParamsError` names the argument and what it must be."""
    arguments = _plain(arguments)
    names = [camel(f.name) for f in fields(cls)]
    if arguments is None:
        data: Any = {}
    elif isinstance(arguments, dict):
        data = arguments
    elif isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], dict):
        data = arguments[0]
    elif isinstance(arguments, list):
        if len(arguments) > len(names):
            raise ParamsError(f"{what} takes at most {len(names)} argument"
                              f"{'s' if len(names) != 1 else ''} ({', '.join(names) or 'none'}), "
                              f"got {len(arguments)}")
        data = dict(zip(names, arguments))
    else:
        raise ParamsError(f"{what}: arguments must be a list or an object, not {arguments!r}")
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        raise ParamsError(f"{what}: {_explain(exc, names)}") from None


def _explain(exc: BaseException, names: list[str]) -> str:
    problems = []
    for leaf, name in _leaves(exc, ""):
        if isinstance(leaf, KeyError):
            problems.append(f"needs {name or leaf.args[0]} (arguments: [{', '.join(names)}])")
        elif isinstance(leaf, cattrs.ForbiddenExtraKeysError):
            problems.append(f"unknown argument{'s' if len(leaf.extra_fields) > 1 else ''} "
                            f"{', '.join(sorted(leaf.extra_fields))} (known: {', '.join(names)})")
        elif name:
            text = str(leaf)
            problems.append(f"{name} {text if text.startswith('must be') else 'is invalid: ' + text}")
        else:
            problems.append(str(leaf))
    return "; ".join(problems) or str(exc)


try:
    _Group = BaseExceptionGroup
except NameError:  # Python 3.10: cattrs depends on the backport
    from exceptiongroup import BaseExceptionGroup as _Group


def _leaves(exc: BaseException, name: str):
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        yield exc, name
        return
    if isinstance(exc, _Group):
        for sub in exc.exceptions:
            sub_name = name
            for note in getattr(sub, "__notes__", ()):
                attr = getattr(note, "name", None)
                if isinstance(attr, str):
                    sub_name = f"{name}.{camel(attr)}" if name else camel(attr)
            yield from _leaves(sub, sub_name)
        return
    yield exc, name
