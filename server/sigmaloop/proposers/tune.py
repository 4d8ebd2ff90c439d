"""The built-in tuner: Optuna TPE over the train script's top-level constants.

Used when there is no LLM key. Each proposal changes one constant (sometimes two) of the
current script; the study lives in ``<state_dir>/optuna.db`` so a restarted loop continues
where it left off.

Decisions (see also the module constants below):

* Ranges are built around the ORIGINAL value of a constant (the first value the study saw)
  and stored with the study (user attr ``space``), so they stay put when kept edits move the
  current value and across restarts.
* Negative constants are skipped: they are usually sentinels ("-1 = off") or signed
  quantities whose sign matters, and mirroring a range around them guesses too much.
* Names that define the seed, the time budget, the device, evaluation or logging are never
  tuned (changing them does not test a modelling idea, or changes what the metric means).
* A constant whose type no longer matches its stored range (e.g. ``LR = 1`` after
  ``LR = 0.1``) is skipped.
* Bools always flip (the only change there is); the flip goes through Optuna (an enqueued
  trial) so TPE still learns from it.
* When TPE samples the current value (after rounding to 4 significant digits), the trial is
  told FAIL with user attr ``noop`` and asked again (3 tries), then the value is nudged.
* Asked-but-never-told trials from a crashed process are told FAIL on the first
  ``propose`` (or an explicit ``reconcile``) unless an unfinished experiment in the journal
  still refers to them; finished experiments whose result never reached the study are told
  then.
* The predicted Δ comes from the night's earlier measured steps of the same constants
  (``effects.py``: a line or parabola through no change); none until a constant has 2. TPE
  may explore where that history predicts worse: the hypothesis keeps the bet and says so.
* A change of metric or direction starts a new study (the old values mean something else).
  Proposal params carry a study token so results of an old study are never told to a new
  one with the same trial numbers.
"""

from __future__ import annotations

import ast
import logging
import math
import random
import re
import uuid
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState

from sigmaloop.edits import (
    Constant,
    EditError,
    find_constants,
    format_value,
    set_constants,
    validate_source,
)
from sigmaloop.models import MEASURED, Experiment, Proposal, Question, Status
from sigmaloop.proposers.base import ProposalContext, ProposalError
from sigmaloop.proposers.effects import predict_delta
from sigmaloop.questions import mentions

log = logging.getLogger(__name__)

STUDY_NAME = "sigmaloop"
DB_NAME = "optuna.db"

#: Substrings of names never tuned.
SKIP_SUBSTRINGS = ("SEED", "BUDGET", "DEVICE")
#: Name parts (split on "_", trailing digits ignored) never tuned.
SKIP_TOKENS = frozenset(
    {"EVAL", "LOG", "PRINT", "VERBOSE", "DEBUG", "TIME", "TIMEOUT", "SECONDS", "VOCAB", "PORT"}
)
#: Name parts of quantities in (0, 1] searched on a linear scale in [v/2, v + (1-v)/2].
FRACTION_TOKENS = frozenset(
    {
        "BETA",
        "MOMENTUM",
        "DROPOUT",
        "DROP",
        "FRAC",
        "FRACTION",
        "RATIO",
        "PROB",
        "EMA",
        "SMOOTHING",
        "PCT",
    }
)
#: Significant digits of floats written into the script.
DIGITS = 4


def _tokens(name: str) -> set[str]:
    return {re.sub(r"\d+$", "", part) for part in name.upper().split("_") if part}


def skip_reason(name: str, exclude: Iterable[str] = ()) -> str | None:
    """Why a constant is never tuned, or None."""
    upper = name.upper()
    for pattern in exclude:
        if fnmatchcase(upper, pattern.upper()):
            return "excluded in sigmaloop.toml (proposer.exclude)"
    for sub in SKIP_SUBSTRINGS:
        if sub in upper:
            return f"names containing {sub} are never tuned"
    hit = _tokens(name) & SKIP_TOKENS
    if hit:
        return f"names containing {sorted(hit)[0]} are never tuned"
    return None


def distribution_for(name: str, value: int | float | bool) -> BaseDistribution | None:
    """The search range around a constant's original value (None: not tunable)."""
    if isinstance(value, bool):
        return CategoricalDistribution([False, True])
    if isinstance(value, int):
        if value < 0:
            return None
        if value == 0:
            return IntDistribution(0, 4)
        low, high = max(1, value // 2), 2 * value
        return IntDistribution(low, high, log=value >= 8)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            return None
        if value == 0.0:
            return FloatDistribution(0.0, 0.1)
        if _tokens(name) & FRACTION_TOKENS and value <= 1.0:
            return FloatDistribution(max(0.0, value / 2), min(1.0, value + (1.0 - value) / 2))
        return FloatDistribution(value / 4, value * 4, log=True)
    return None


def _fits(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return isinstance(value, bool)
    if isinstance(dist, IntDistribution):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, float)


def _written(value: Any, like: Any) -> Any:
    """The value as it reads back from the script after formatting."""
    return ast.literal_eval(format_value(value, like, DIGITS))


def _range_text(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "{False, True}"
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    scale = "log scale" if dist.log else "linear"
    return f"[{dist.low:.4g}, {dist.high:.4g}] ({scale})"


class TuneProposer:
    """Proposes single-constant (sometimes two-constant) changes sampled by Optuna TPE."""

    name = "tune"

    def __init__(
        self,
        state_dir: Path | str | None,
        *,
        exclude: Sequence[str] = (),
        direction: str = "minimize",
        metric: str = "",
        seed: int = 0,
        n_startup_trials: int = 5,
        two_change_prob: float = 0.15,
        max_reasks: int = 3,
        question_prob: float = 0.75,
    ):
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.exclude = list(exclude)
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.two_change_prob = two_change_prob
        self.max_reasks = max_reasks
        self.question_prob = question_prob  # how often an open question's constants are tuned
        self._asked: set[int] = set()  # trials this instance asked (never "orphans")
        self._reconciled = False
        self.study = self._open(direction, metric)

    @classmethod
    def from_config(cls, config: Any, state_dir: Path | str | None) -> TuneProposer:
        """From a ``Config`` (or anything with ``proposer``/``experiment`` sections)."""
        proposer = getattr(config, "proposer", config)
        experiment = getattr(config, "experiment", None)
        return cls(
            state_dir,
            exclude=list(getattr(proposer, "exclude", []) or []),
            direction=getattr(experiment, "direction", "minimize"),
            metric=getattr(experiment, "metric", ""),
        )

    # ------------------------------------------------------------------ study

    @property
    def storage_url(self) -> str | None:
        if self.state_dir is None:
            return None
        return f"sqlite:///{(self.state_dir / DB_NAME).resolve().as_posix()}"

    @property
    def token(self) -> str:
        return str(self.study.user_attrs.get("token", ""))

    def _open(self, direction: str, metric: str) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage_url
        study = optuna.create_study(
            storage=storage, study_name=STUDY_NAME, load_if_exists=True, direction=direction
        )
        attrs = study.user_attrs
        old_metric = attrs.get("metric", "")
        wrong_direction = study.direction.name.lower() != direction
        wrong_metric = bool(metric and old_metric and metric != old_metric)
        if "token" in attrs and (wrong_direction or wrong_metric):
            log.warning(
                "tuner: the metric or direction changed (%s %s -> %s %s); starting a new study",
                attrs.get("direction"),
                old_metric,
                direction,
                metric,
            )
            optuna.delete_study(study_name=STUDY_NAME, storage=storage)
            study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction)
            attrs = {}
        elif wrong_direction:  # a study created elsewhere without our attrs
            raise ValueError(
                f"the tuner's study in {self.state_dir} has direction "
                f"{study.direction.name.lower()}, not {direction}; delete {DB_NAME} to start over"
            )
        if "token" not in attrs:
            study.set_user_attr("token", uuid.uuid4().hex[:12])
            study.set_user_attr("direction", direction)
            study.set_user_attr("space", {})
        if metric and attrs.get("metric") != metric:
            study.set_user_attr("metric", metric)
        n_trials = len(study.get_trials(deepcopy=False))
        # Seed the sampler with the history length: a restart does not replay the same draws.
        study.sampler = optuna.samplers.TPESampler(
            seed=self.seed + n_trials,
            multivariate=False,
            n_startup_trials=self.n_startup_trials,
            # trials still running (parallel slots) count as if they scored as badly as the worst
            # so far: N slots are not all sent to the same point
            constant_liar=True,
        )
        return study

    def _trial(self, number: int) -> FrozenTrial | None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number == number:
                return trial
        return None

    def _space(self) -> dict[str, dict[str, Any]]:
        return dict(self.study.user_attrs.get("space", {}))

    # ------------------------------------------------------------------ results

    def _ref(self, experiment: Experiment) -> int | None:
        params = experiment.params or {}
        number = params.get("optuna_trial")
        if not isinstance(number, int) or isinstance(number, bool):
            return None
        study_token = params.get("optuna_study")
        if study_token is not None and study_token != self.token:
            return None  # a result of an earlier study
        return number

    def observe(self, experiment: Experiment) -> None:
        """Tell the study how the trial behind ``experiment`` ended (idempotent)."""
        number = self._ref(experiment)
        if number is None:
            return
        status = Status(experiment.status)
        if status in MEASURED:
            metric = experiment.metric
            if metric is not None and math.isfinite(metric):
                values: float | None = float(metric)
                state = TrialState.COMPLETE
            else:
                values, state = None, TrialState.FAIL
        elif status == Status.PRUNED:  # stopped early as clearly worse: TPE counts it among the bad
            values, state = None, TrialState.PRUNED
        elif status in (Status.CRASHED, Status.TIMEOUT, Status.REJECTED, Status.TAMPERED, Status.OVER_BUDGET):
            values, state = None, TrialState.FAIL
        else:
            return  # not finished (queued, running, interrupted and re-queued, ...)
        trial = self._trial(number)
        if trial is None or trial.state != TrialState.RUNNING:
            return  # unknown here, or already told
        self.study.tell(number, values, state=state)
        self._asked.discard(number)

    def reconcile(self, experiments: Iterable[Experiment]) -> None:
        """Bring the study in line with the journal after a restart.

        Finished experiments are told (if they never were); RUNNING trials that no
        unfinished experiment refers to (asked before a crash) are told FAIL.
        """
        pending: set[int] = set()
        for experiment in experiments:
            number = self._ref(experiment)
            if number is None:
                continue
            if experiment.finished:
                self.observe(experiment)
            else:
                pending.add(number)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in pending and trial.number not in self._asked:
                self.study.tell(trial.number, state=TrialState.FAIL)
        for _ in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            leftover = self.study.ask()  # an enqueued trial never asked: drop it
            self.study.tell(leftover, state=TrialState.FAIL)
        self._reconciled = True

    # ------------------------------------------------------------------ proposals

    def tunables(self, source: str) -> tuple[list[Constant], dict[str, str]]:
        """The constants this tuner may change, and why the others are skipped."""
        try:
            constants = find_constants(source)
        except SyntaxError as exc:
            raise ProposalError(
                f"the train script does not parse (line {exc.lineno}: {exc.msg}); fix it first"
            ) from None
        space = self._space()
        chosen: list[Constant] = []
        skipped: dict[str, str] = {}
        for c in constants:
            reason = skip_reason(c.name, self.exclude)
            if reason is None:
                if c.name in space:
                    dist = json_to_distribution(space[c.name]["distribution"])
                    if not _fits(dist, c.value):
                        reason = "its type changed since the tuner first saw it"
                elif distribution_for(c.name, c.value) is None:
                    reason = "negative values are not tuned"
            if reason is None:
                chosen.append(c)
            else:
                skipped[c.name] = reason
        return chosen, skipped

    def _register(self, constants: list[Constant]) -> dict[str, dict[str, Any]]:
        space = self._space()
        added = False
        for c in constants:
            if c.name not in space:
                dist = distribution_for(c.name, c.value)
                assert dist is not None
                space[c.name] = {"original": c.value, "distribution": distribution_to_json(dist)}
                added = True
        if added:
            self.study.set_user_attr("space", space)
        return space

    def _pick(self, rng: random.Random, constants: list[Constant]) -> list[Constant]:
        counts = {c.name: 0 for c in constants}
        for trial in self.study.get_trials(deepcopy=False):
            for name in trial.params:
                if name in counts:
                    counts[name] += 1
        k = 2 if len(constants) >= 2 and rng.random() < self.two_change_prob else 1
        pool = list(constants)
        picked: list[Constant] = []
        for _ in range(k):
            weights = [1.0 / (1 + counts[c.name]) for c in pool]
            choice = rng.choices(pool, weights=weights)[0]
            picked.append(choice)
            pool.remove(choice)
        return picked

    def _steered(self, rng: random.Random, constants: list[Constant],
                 questions: Sequence[Question]) -> tuple[list[Constant], int | None]:
        """The constants to pick from, and the question they test: with probability
        ``question_prob`` the ones an open question names (one such question, drawn), else all
        of them (the tuner still explores; the engine credits such an edit by name if it can)."""
        named: dict[int, list[Constant]] = {}
        for q in questions:
            hits = [c for c in constants if mentions(f"{q.text} {q.decision}", c.name)]
            if hits:
                named[q.id] = hits
        if not named or rng.random() >= self.question_prob:
            return constants, None
        qid = sorted(named)[rng.randrange(len(named))]
        return named[qid], qid

    def _nudge(self, rng: random.Random, c: Constant, dist: BaseDistribution) -> Any:
        """A value in range that differs from the current one (after rounding)."""
        if isinstance(dist, CategoricalDistribution):
            return not c.value
        if isinstance(dist, IntDistribution):
            options = [v for v in range(dist.low, dist.high + 1) if v != c.value]
            close = sorted(options, key=lambda v: abs(v - c.value))[:2]
            return rng.choice(close) if close else c.value
        assert isinstance(dist, FloatDistribution)
        for _ in range(50):
            if dist.log:
                v = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
            else:
                v = rng.uniform(dist.low, dist.high)
            if _written(v, c.value) != c.value:
                return v
        return c.value

    def propose(self, ctx: ProposalContext) -> Proposal:
        direction = "minimize" if ctx.lower_is_better else "maximize"
        known_metric = self.study.user_attrs.get("metric")
        if self.study.direction.name.lower() != direction or (
            ctx.metric and known_metric and known_metric != ctx.metric
        ):
            self.study = self._open(direction, ctx.metric)
            self._asked.clear()
        elif ctx.metric and not known_metric:
            self.study.set_user_attr("metric", ctx.metric)
        if not self._reconciled:
            self.reconcile(ctx.experiments)

        constants, skipped = self.tunables(ctx.source)
        if not constants:
            detail = (
                "; skipped: " + ", ".join(f"{n} ({why})" for n, why in skipped.items())
                if skipped
                else ""
            )
            raise ProposalError(
                f"{ctx.script_name} has no top-level numeric constants to tune; add "
                "UPPER_CASE constants such as `LR = 0.01` or `DEPTH = 4` at the top of the "
                f"script, or use the LLM proposer{detail}"
            )
        space = self._register(constants)
        n_trials = len(self.study.get_trials(deepcopy=False))
        rng = random.Random(f"{self.seed}:{n_trials}")
        pool, question = self._steered(rng, constants, ctx.questions)
        picked = self._pick(rng, pool)
        dists = {c.name: json_to_distribution(space[c.name]["distribution"]) for c in picked}

        trial = None
        changes: dict[str, tuple[Any, Any]] = {}
        for attempt in range(self.max_reasks + 1):
            fixed = {
                c.name: not c.value
                for c in picked
                if isinstance(dists[c.name], CategoricalDistribution)
            }
            if attempt == self.max_reasks:  # TPE keeps sampling the current value: nudge
                fixed = {c.name: self._nudge(rng, c, dists[c.name]) for c in picked}
            if fixed:
                self.study.enqueue_trial(fixed, skip_if_exists=False)
            trial = self.study.ask(dists)
            changes = {}
            for c in picked:
                new = _written(trial.params[c.name], c.value)
                if new != c.value:
                    changes[c.name] = (c.value, new)
            if changes:
                break
            trial.set_user_attr("noop", True)
            self.study.tell(trial, state=TrialState.FAIL)
            trial = None
        if trial is None:
            names = ", ".join(c.name for c in picked)
            raise ProposalError(f"the tuner could not find a new value for {names}")

        new_source = set_constants(ctx.source, {name: new for name, (_, new) in changes.items()})
        try:
            validate_source(new_source, ctx.source)
        except EditError as exc:
            self.study.tell(trial, state=TrialState.FAIL)
            raise ProposalError(f"the tuner's edit is not valid: {exc}") from None

        self._asked.add(trial.number)
        by_name = {c.name: c for c in picked}
        parts = [
            f"{name} {by_name[name].text} → {format_value(new, old, DIGITS)}"
            for name, (old, new) in changes.items()
        ]
        verb = "lowers" if ctx.lower_is_better else "raises"
        metric = ctx.metric or "the metric"
        hypothesis = f"{' and '.join(parts)} {verb} {metric}"
        predicted = predict_delta(changes, ctx.experiments, self.token)
        if predicted is not None:
            size = f"{abs(predicted.delta):.2g}"
            if (predicted.delta < 0) == ctx.lower_is_better and predicted.delta != 0:
                hypothesis += f" by about {size}"
            else:  # TPE explores where the history says no: the number says so, the bet stays
                hypothesis += (f" (exploring: the history predicts {size} worse)" if predicted.delta
                               else " (exploring: the history predicts no change)")
        finished = len(
            self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        )
        phase = (
            f"a random start-up sample (TPE models the results after {self.n_startup_trials} "
            "finished trials)"
            if finished < self.n_startup_trials
            else f"sampled by TPE from {finished} finished trials"
        )
        ranges = "; ".join(
            f"{name} in {_range_text(dists[name])} around its original value "
            f"{space[name]['original']}"
            for name in changes
        )
        rationale = f"Optuna TPE trial #{trial.number}: {phase}. Searches {ranges}."
        if predicted is not None:
            rationale += f" Predicted Δ {predicted.delta:+.4g}: {predicted.basis}."
        json_changes = {name: [old, new] for name, (old, new) in changes.items()}
        trial.set_user_attr("changes", json_changes)
        return Proposal(
            question=question,
            new_source=new_source,
            hypothesis=hypothesis,
            source="tune",
            predicted_delta=None if predicted is None else predicted.delta,
            rationale=rationale,
            params={
                "optuna_trial": trial.number,
                "optuna_study": self.token,
                "changes": json_changes,
            },
        )
