"""The engine: propose → accept → run → judge → ratchet → record, for every adapter.

The CLI and the language server are thin adapters over :class:`Engine`: they call its
operations and subscribe to its events. Nothing here knows about LSP, rich or VS Code.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from .calibration import Calibration, calibrate
from .config import Config
from .diff import EditError, apply_unified_diff, unified_diff
from .edits import validate_source
from .events import EventBus, ExperimentUpdated, LoopState, Notice, TrialProgress
from .journal import Journal
from .judge import Judge, Reference, pooled_sigma, reference_for
from .killlimit import kill_limit
from .lifecycle import IllegalTransition, Phase, Reason, describe
from .migrate import MigrationReport, legacy_env, migrate_workspace
from .models import (
    FINISHED,
    MEASURED,
    Experiment,
    Outcome,
    ProgressRecord,
    Proposal,
    Status,
    TrialResult,
    TrialSpec,
    code_hash,
)
from .proposers import ProposalContext, ProposalError, make_proposer
from .ratchet import Ratchet, RatchetError
from .runner import Executor, LocalExecutor, is_alive, kill_orphan
from .state import EngineState, LoopStatus, engine_state

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class EngineError(RuntimeError):
    """An operation that can't be done now; the message says why and what to do."""


@dataclass
class Summary:
    """The numbers an editor shows at the top of the script."""

    baseline: float | None
    sigma: float | None
    sigma_dof: int
    best: Experiment | None
    kept: int
    run: int
    running: list[int]
    counts: dict[str, int]
    calibration: Calibration | None = None  # how well proposers' predictions held


@dataclass
class ExperimentView:
    """What "show diff" needs: the record, the script's name, its text before and after."""

    experiment: Experiment
    script_name: str
    parent_text: str | None  # the script at the parent commit (None: no parent)
    proposed_text: str | None  # the script as the experiment runs it (None: no parent, or it no longer applies)


@dataclass
class Adoption:
    """What adopting a kept experiment into an open editor writes there."""

    exp_id: int
    new_text: str
    unchanged: bool  # the editor already holds exactly this text


class Engine:
    def __init__(
        self,
        workspace: Path | str,
        config: Config | None = None,
        executor: Executor | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.workspace = Path(workspace).resolve()
        # A workspace of the product's first name is migrated once, before anything reads it.
        self.migration: MigrationReport | None = migrate_workspace(self.workspace)
        self.config = config or config_mod.load(self.workspace)
        self.state_dir = config_mod.state_dir(self.workspace)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        (self.state_dir / "metrics").mkdir(exist_ok=True)
        exp_cfg = self.config.experiment
        self.journal = Journal(self.state_dir / "journal.db",
                               caption=lambda e: describe(e, self.config.experiment.metric))
        self.ratchet = Ratchet(self.workspace, exp_cfg.tag, exp_cfg.train_script)
        self.ratchet.ensure_ignored()
        self.bus = bus or EventBus()
        self.judge = Judge(self.config.judge, self.config.lower_is_better, exp_cfg.metric)
        self._executor = executor
        self._proposers: dict[str, object] = {}
        self._stop = threading.Event()
        self._lock = threading.RLock()  # serialises judging + ratchet moves
        self._loop_thread_busy = threading.Lock()
        self._loop_status = LoopStatus()
        self._queued_here: set[int] = set()  # queued by this engine and not yet claimed: stop_all stops them
        self._stop_requested: set[int] = set()  # claimed trials stop_all stopped before they started
        # Recovery runs when an engine opens: rows a dead engine left running are re-queued.
        self.recovered: list[Experiment] = self.recover()

    # -- plumbing ------------------------------------------------------------------------------
    def reconfigure(self, config: Config) -> None:
        """Use new settings from now on; running trials keep theirs (added for the language
        server, which re-reads sigmaloop.toml and editor settings on change). The research
        branch tag and the train script are fixed for an Engine's life."""
        self.config = config
        self.judge = Judge(config.judge, config.lower_is_better, config.experiment.metric)
        self._proposers.clear()
        ex = self._executor
        if ex is not None and ex.slots != config.runner.slots and not getattr(ex, "running", list)():
            ex.shutdown(wait=False)
            self._executor = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            r = self.config.runner
            self._executor = LocalExecutor(slots=r.slots, gpus=r.gpus or None, env_allow=r.env_allow)
        return self._executor

    @property
    def loop_running(self) -> bool:
        return self._loop_thread_busy.locked()

    def shutdown_trials(self) -> None:
        """Kill every trial this engine started (their process groups) and wait for them."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def close(self) -> None:
        """Stop running trials and release resources."""
        self._stop.set()
        self.shutdown_trials()
        self.journal.close()

    def _update(self, exp_id: int, **fields) -> Experiment:
        exp = self.journal.update(exp_id, **fields)
        self.bus.emit(ExperimentUpdated(exp))
        return exp

    def _move(self, exp_id: int, to: Status, action: str = "", **fields) -> Experiment:
        """Change an experiment's status through the lifecycle (compare-and-set in the journal:
        another thread or process may have moved it first); an illegal move says what it is now."""
        try:
            exp = self.journal.move(exp_id, to, action, **fields)
        except IllegalTransition as exc:
            raise EngineError(str(exc)) from None
        self.bus.emit(ExperimentUpdated(exp))
        return exp

    def _create(self, **fields) -> Experiment:
        exp = self.journal.create(**fields)
        self.bus.emit(ExperimentUpdated(exp))
        return exp

    # -- the journal's queries, through the engine --------------------------------------------
    def experiments(self, status: Status | None = None) -> list[Experiment]:
        return self.journal.list() if status is None else self.journal.list(status=status)

    def get(self, exp_id: int) -> Experiment:
        return self.journal.get(exp_id)

    def changed_since(self, rev: int) -> list[Experiment]:
        """Experiments written after journal revision ``rev`` (by any process), in rev order."""
        return self.journal.changed_since(rev)

    def max_rev(self) -> int:
        return self.journal.max_rev()

    def with_diff(self, since_rev: int = 0, dicts: bool = True) -> list[Experiment]:
        """Experiments that carry an edit (the editor's per-line history), by id."""
        return self.journal.with_diff(since_rev=since_rev, dicts=dicts)

    def curve(self, exp_id: int, max_points: int | None = None) -> list[ProgressRecord]:
        return self.journal.curve(exp_id, max_points)

    def export(self, path: Path | str, fmt: str = "jsonl") -> int:
        """Every field of every experiment to a jsonl or csv file; returns how many."""
        return self.journal.export(path, fmt=fmt)

    @property
    def branch(self) -> str:
        """The research branch's name (``sigmaloop/<tag>``)."""
        return self.ratchet.branch_name

    @property
    def script_name(self) -> str:
        return self.config.experiment.train_script

    # -- what the current state is ---------------------------------------------------------------
    def head(self) -> str:
        sha = self.ratchet.ensure_branch()
        if self.ratchet.warning:  # the branch was just made while the user's script had edits
            self.bus.emit(Notice(self.ratchet.warning))
            self.ratchet.warning = None
        return sha

    def head_source(self) -> str:
        return self.ratchet.read_script(self.head())

    def reference(self, experiments: list[Experiment] | None = None) -> Reference:
        exps = experiments if experiments is not None else self.journal.list()
        return reference_for(exps, code_hash(self.head_source()))

    def sigma(self, experiments: list[Experiment] | None = None) -> float | None:
        exps = experiments if experiments is not None else self.journal.list()
        return self.judge.sigma(exps, reference_for(exps, code_hash(self.head_source())))

    def state(self) -> EngineState:
        """Reference ± σ with its seeds, the best reference, counts, calibration, the loop."""
        exps = self.journal.list()
        ref = reference_for(exps, code_hash(self.head_source()))
        e = self.config.experiment
        return engine_state(exps, ref, self.judge, e.metric, e.direction, self._loop_status)

    def summary(self) -> Summary:
        exps = self.journal.list()
        ref = self.reference(exps)
        s, dof = pooled_sigma(exps)
        measured = [e for e in exps if e.status == Status.KEPT and e.metric is not None]
        best = None
        if measured:
            key = (lambda e: e.metric) if self.config.lower_is_better else (lambda e: -e.metric)
            best = min(measured, key=key)
        counts: dict[str, int] = {}
        for e in exps:
            counts[e.status.value] = counts.get(e.status.value, 0) + 1
        ran = [e for e in exps if e.status in (Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.TIMEOUT)]
        sigma = self.judge.sigma(exps, ref) if s is not None else None
        return Summary(
            baseline=ref.value,
            sigma=sigma,
            sigma_dof=dof,
            best=best,
            kept=sum(1 for e in exps if e.status == Status.KEPT and not e.is_baseline and e.confirms is None),
            run=sum(1 for e in ran if not e.is_baseline and e.confirms is None),
            running=[e.id for e in exps if e.status == Status.RUNNING],
            counts=counts,
            calibration=calibrate(exps, sigma, self.config.lower_is_better, self.config.judge.k),
        )

    # -- recovery --------------------------------------------------------------------------------
    def recover(self) -> list[Experiment]:
        """Experiments left running by a dead engine become interrupted, are killed and re-queued."""
        requeued = []
        me = os.getpid()
        for exp in self.journal.running():
            owner = exp.owner_pid
            if owner is not None and owner != me and is_alive(owner):
                continue  # another live engine (e.g. the CLI beside the editor) owns it
            if owner == me:
                continue
            if exp.pid:
                kill_orphan(exp.pid, exp.id)
            self._archive_attempt(exp)
            self._move(exp.id, Status.INTERRUPTED, reason=Reason.ENGINE_DIED, phase=Phase.NONE, pid=None)
            if exp.confirms is None:  # a confirmation is redone by its re-run parent
                requeued.append(self._move(exp.id, Status.QUEUED, pid=None, owner_pid=None, reason="", detail=""))
            try:
                self.ratchet.remove_worktree(exp.id)
            except Exception:
                log.exception("could not remove worktree of #%s", exp.id)
        return requeued

    def _archive_attempt(self, exp: Experiment) -> None:
        """Keep the log of an interrupted attempt next to the new one: nothing is lost."""
        for path in (exp.log_path, exp.metrics_path):
            if path and os.path.exists(path):
                os.replace(path, f"{path}.attempt{exp.attempts}")

    # -- proposals -------------------------------------------------------------------------------
    def _proposer(self, kind: str):
        if kind not in self._proposers:
            self._proposers[kind] = make_proposer(kind, self.config, self.state_dir)
        return self._proposers[kind]

    def _context(self, source: str) -> ProposalContext:
        exps = self.journal.list()
        ref = reference_for(exps, code_hash(source))
        program = self.workspace / "program.md"
        summary = self.summary()
        return ProposalContext(
            source=source,
            script_name=self.script_name,
            experiments=exps,
            best=summary.best,
            sigma=self.judge.sigma(exps, ref),
            metric=self.config.experiment.metric,
            lower_is_better=self.config.lower_is_better,
            program=program.read_text(encoding="utf-8") if program.exists() else "",
            state_dir=self.state_dir,
        )

    def propose(self, kind: str | None = None, iteration: int = 0) -> Experiment:
        """Ask a proposer for an edit; an invalid one is recorded as rejected, never run."""
        kind = kind or self._kind_for(iteration)
        proposer = self._proposer(kind)
        head = self.head()  # read once: the edit, its parent and its diff all refer to this head
        ctx = self._context(self.ratchet.read_script(head))
        try:
            proposal = proposer.propose(ctx)
        except Exception as exc:  # a failed proposal is one rejected iteration, not a dead loop
            if not isinstance(exc, ProposalError):
                log.exception("proposer %s failed", kind)
            detail = str(exc) if isinstance(exc, ProposalError) else f"{type(exc).__name__}: {exc}"
            return self._create(
                status=Status.REJECTED, source=getattr(proposer, "name", kind),
                parent_commit=head, reason=Reason.PROPOSER_ERROR, detail=detail,
                usage=dict(getattr(exc, "usage", None) or {}),
            )
        return self.add_proposal(proposal, base_source=ctx.source, base_commit=head)

    def _kind_for(self, iteration: int) -> str:
        p = self.config.proposer
        if p.kind == "mixed":
            return p.mix[iteration % len(p.mix)]
        return p.kind

    def add_proposal(
        self, proposal: Proposal, base_source: str | None = None, base_commit: str | None = None
    ) -> Experiment:
        """Record a proposal (from any proposer or the user) against the research branch head
        (or the commit it was written against; if the branch moved on since, the judge's
        ratchet step refuses it as stale instead of running it on code it never saw)."""
        head = base_commit or self.head()
        old = base_source if base_source is not None else self.ratchet.read_script(head)
        diff = unified_diff(old, proposal.new_source, self.script_name)
        params = dict(proposal.params or {})
        usage = params.pop("usage", None) or {}  # e.g. LLM tokens: its own journal column
        fields = dict(
            source=proposal.source, hypothesis=proposal.hypothesis,
            predicted_delta=proposal.predicted_delta, rationale=proposal.rationale,
            parent_commit=head, params=params, usage=dict(usage), diff=diff,
            code_hash=code_hash(proposal.new_source),
        )
        try:
            validate_source(proposal.new_source, old)
        except EditError as exc:
            exp = self._create(status=Status.REJECTED, reason=Reason.INVALID_EDIT, detail=str(exc), **fields)
            self._observe(exp)
            return exp
        return self._create(status=Status.PROPOSED, **fields)

    def propose_diff(self, diff: str, hypothesis: str, predicted_delta: float | None = None) -> Experiment:
        """A user's own edit as a unified diff against the research branch head."""
        head = self.head()
        old = self.ratchet.read_script(head)
        try:
            new = apply_unified_diff(old, diff)
        except EditError as exc:
            return self._create(status=Status.REJECTED, source="user", hypothesis=hypothesis,
                                parent_commit=head, diff=diff, reason=Reason.INVALID_EDIT,
                                detail=f"edit does not apply: {exc}")
        return self.add_proposal(Proposal(new, hypothesis, "user", predicted_delta), base_source=old)

    def accept(self, exp_id: int) -> Experiment:
        self._move(exp_id, Status.ACCEPTED, "accept it")
        exp = self._move(exp_id, Status.QUEUED)
        self._queued_here.add(exp_id)
        return exp

    def reject(self, exp_id: int, reason: str | None = None) -> Experiment:
        reason = (reason or "").strip() or None
        exp = self._move(exp_id, Status.REJECTED, "reject it", rejection_reason=reason,
                         reason=Reason.USER_REJECTED, detail=reason or "")
        self._observe(exp)
        return exp

    def _observe(self, exp: Experiment) -> None:
        if exp.confirms is not None:
            return
        kind = "tune" if exp.source == "tune" else ("llm" if exp.source.startswith("llm") else None)
        if kind is None:
            return
        try:
            self._proposer(kind).observe(exp)
        except Exception:
            log.exception("proposer %s failed to observe #%s", kind, exp.id)

    # -- running ---------------------------------------------------------------------------------
    def run_baseline(self, seeds: list[int] | None = None, budget: float | None = None) -> list[Experiment]:
        """Run the head's code unchanged on each seed (default: the judge's seeds) in parallel."""
        head = self.head()
        source = self.ratchet.read_script(head)
        exps = [
            self._create(status=Status.QUEUED, source="baseline", parent_commit=head,
                         hypothesis=f"baseline (seed {seed})", seed=seed, code_hash=code_hash(source),
                         budget=budget)
            for seed in (seeds or self.config.judge.seeds)
        ]
        self._queued_here.update(e.id for e in exps)
        return self._run_many([e.id for e in exps])

    def ensure_baseline(self, budget: float | None = None) -> list[Experiment]:
        """Run whatever baseline seeds the current head lacks (none when it has them all)."""
        ref = self.reference()
        missing = [s for s in self.config.judge.seeds if s not in ref.by_seed]
        if not missing:
            return []
        return self.run_baseline(missing, budget)

    def _run_many(self, ids: list[int]) -> list[Experiment]:
        if len(ids) == 1 or self.executor.slots == 1:
            return [self._run_if_queued(i) for i in ids]
        with ThreadPoolExecutor(max_workers=min(len(ids), self.executor.slots)) as pool:
            return list(pool.map(self._run_if_queued, ids))

    def _run_if_queued(self, exp_id: int, budget: float | None = None) -> Experiment:
        """Run it unless it was stopped (or taken) while it waited for its turn."""
        try:
            return self.run(exp_id, budget)
        except EngineError:
            exp = self.journal.get(exp_id)
            if exp.status in (Status.QUEUED, Status.PROPOSED):
                raise
            return exp

    def run_queued(self) -> list[Experiment]:
        return self._run_many([e.id for e in self.journal.list(status=Status.QUEUED)])

    def run(self, exp_id: int, budget: float | None = None) -> Experiment:
        """Run a queued experiment to its verdict (blocking), confirmation rerun included."""
        exp = self.journal.get(exp_id)
        if exp.status == Status.PROPOSED:
            exp = self.accept(exp_id)
        # claim it: a reject (or another engine) racing this start can't both win
        fields = {"budget": budget} if budget is not None else {}
        exp = self._move(exp_id, Status.RUNNING, "run it", owner_pid=os.getpid(), phase=Phase.STARTING, **fields)
        self._queued_here.discard(exp_id)
        try:
            result = self._execute(exp)
            return self._finish(self.journal.get(exp_id), result)
        except Exception as exc:  # git, disk, a diff that no longer applies: record, don't die
            log.exception("experiment #%s failed inside sigmaloop", exp_id)
            exp = self.journal.get(exp_id)
            if exp.status != Status.RUNNING:  # it already has its verdict; the failure came after
                return exp
            exp = self._move(exp_id, Status.CRASHED, pid=None, finished_at=time.time(), phase=Phase.NONE,
                             reason=Reason.INTERNAL_ERROR, detail=f"{type(exc).__name__}: {exc}")
            self._after_finish(exp)
            return exp

    def _source_of(self, exp: Experiment) -> str | None:
        """The script an experiment runs; None when it runs its parent unchanged."""
        if not exp.diff:
            return None
        return apply_unified_diff(self.ratchet.read_script(exp.parent_commit), exp.diff)

    def _execute(self, exp: Experiment) -> TrialResult:
        cfg = self.config.experiment
        if exp.seed is None:
            ref = self.reference()
            seed = self.judge.pick_seed(ref)
            exp = self._update(exp.id, seed=seed if seed is not None else self.config.judge.seeds[0])
        budget = exp.budget or cfg.budget
        log_path = self.state_dir / "logs" / f"{exp.id}.log"
        metrics_path = self.state_dir / "metrics" / f"{exp.id}.jsonl"
        message = f"exp #{exp.id}: {exp.hypothesis or exp.source}"[:200]
        t_git = time.time()
        wt = self.ratchet.prepare_worktree(exp.id, exp.parent_commit, self._source_of(exp), message)
        git_seconds = time.time() - t_git
        self._update(
            exp.id, phase=Phase.TRAINING, commit=wt.commit, started_at=time.time(), budget=budget,
            attempts=exp.attempts + 1, owner_pid=os.getpid(), log_path=str(log_path),
            metrics_path=str(metrics_path),
        )
        self.journal.clear_curve(exp.id)
        # how long before a trial counts as hung: learned from this project's measured runs
        limit = kill_limit(budget, cfg.grace, cfg.kill_margin, self.journal.by_status(*MEASURED))
        spec = TrialSpec(
            exp_id=exp.id, cwd=str(wt.cwd), command=self.config.trial_command(), budget=budget,
            seed=exp.seed, log_path=str(log_path), metrics_path=str(metrics_path), metric=cfg.metric,
            grace=cfg.grace, kill_limit=limit, workspace_root=str(wt.cwd),
        )
        spec.env.update(legacy_env(spec, self.config.runner.env_allow))  # old trainer copies' names
        try:
            if exp.id in self._stop_requested:  # stopped while its worktree was made
                result = TrialResult(exp.id, Outcome.STOPPED)
            else:
                handle = self.executor.submit(spec, on_progress=self._on_progress, on_start=self._on_start)
                if exp.id in self._stop_requested:  # stopped between the check and the submit
                    handle.stop()
                result = handle.result()
        finally:
            self._stop_requested.discard(exp.id)
            t_git = time.time()
            try:
                self.ratchet.remove_worktree(exp.id)
            except Exception:
                log.exception("could not remove worktree of #%s", exp.id)
            git_seconds += time.time() - t_git
        result.timings["git"] = git_seconds
        return result

    def _on_start(self, exp_id: int, pid: int) -> None:
        self._update(exp_id, pid=pid)

    def _on_progress(self, exp_id: int, records: list[ProgressRecord]) -> None:
        self.journal.add_progress(exp_id, records)
        self.bus.emit(TrialProgress(exp_id, records))

    def _finish(self, exp: Experiment, result: TrialResult) -> Experiment:
        now = time.time()
        timings = dict(result.timings, wall=result.wall_seconds)
        common = dict(finished_at=now, summary=result.summary, timings=timings, pid=None)
        if result.outcome == Outcome.STOPPED:
            return self._move(exp.id, Status.INTERRUPTED, reason=Reason.STOPPED, phase=Phase.NONE, **common)
        if result.outcome in (Outcome.CRASHED, Outcome.TIMEOUT) or result.metric is None or not math.isfinite(result.metric):
            status = Status.TIMEOUT if result.outcome == Outcome.TIMEOUT else Status.CRASHED
            reason = Reason.TIMEOUT if status == Status.TIMEOUT else Reason.CRASHED
            exp = self._move(exp.id, status, crash=result.crash, metric=None, phase=Phase.NONE,
                             reason=reason, detail=result.error or "", **common)
            self._after_finish(exp)
            return exp
        exp = self._update(exp.id, metric=result.metric, phase=Phase.JUDGING, **common)
        t0 = time.time()
        exp = self._judge(exp)
        if exp.status in FINISHED:
            exp = self._update(exp.id, timings=dict(exp.timings, judge=time.time() - t0))
        return exp

    def _judge(self, exp: Experiment) -> Experiment:
        """Decide a measured run: baselines become the reference, candidates face the judge."""
        if exp.is_baseline:
            exp = self._move(exp.id, Status.KEPT, reason=Reason.BASELINE, phase=Phase.NONE)
            self._after_finish(exp)
            return exp
        if exp.confirms is not None:
            # a confirmation run: the experiment it confirms takes the decision
            return exp  # measured (phase judging): the experiment it confirms decides
        exps = self.journal.list()
        ref = reference_for(exps, code_hash(self.ratchet.read_script(exp.parent_commit)))
        sigma = self.judge.sigma(exps, ref)
        if sigma is None or ref.value is None:
            exp = self._move(exp.id, Status.DISCARDED, reason=Reason.NO_REFERENCE, phase=Phase.NONE)
            self._after_finish(exp)
            return exp
        runs = [(exp.seed, exp.metric)]
        verdict = self.judge.judge(runs, ref, sigma)
        seed = self.judge.pick_seed(ref, exclude=[exp.seed]) if verdict.needs_confirmation else None
        if seed is not None and exp.id in self._stop_requested:  # stopped before its confirmation
            self._stop_requested.discard(exp.id)
            seed = None
            verdict.status, verdict.reason = Status.INTERRUPTED, Reason.STOPPED_IN_CONFIRMATION
            verdict.needs_confirmation = False
        if seed is not None:
            self._update(exp.id, delta=verdict.delta, sigma=sigma, z=verdict.z, numbers=verdict.numbers,
                         phase=Phase.CONFIRMING)
            conf = self._create(
                status=Status.QUEUED, source=exp.source, parent_commit=exp.commit, seed=seed,
                hypothesis=f"confirm #{exp.id} on seed {seed}", confirms=exp.id,
                code_hash=exp.code_hash, budget=exp.budget,
            )
            conf = self._move(conf.id, Status.RUNNING, owner_pid=os.getpid(), phase=Phase.STARTING)
            conf = self._finish(self.journal.get(conf.id), self._execute(conf))
            exps = self.journal.list()
            sigma = self.judge.sigma(exps, ref)
            if conf.status == Status.INTERRUPTED:  # stopped, not refuted: no verdict either way
                verdict.status, verdict.reason = Status.INTERRUPTED, Reason.STOPPED_IN_CONFIRMATION
                verdict.detail = f"confirmation #{conf.id}"
            elif conf.metric is None or conf.status != Status.RUNNING:
                verdict.status, verdict.reason = Status.DISCARDED, Reason.CONFIRMATION_FAILED
                verdict.detail = f"confirmation #{conf.id} {conf.status.value}"
            else:
                runs.append((conf.seed, conf.metric))
                verdict = self.judge.judge(runs, ref, sigma)
        elif verdict.needs_confirmation and verdict.status == Status.RUNNING:  # the reference has one seed only: decide on one run
            verdict.status, verdict.reason = Status.KEPT, Reason.IMPROVED_ONE_SEED
        with self._lock:  # one ratchet move at a time
            if verdict.status == Status.KEPT:
                try:
                    self.ratchet.advance(exp.id)
                except RatchetError as exc:  # stale, or the branch is checked out somewhere
                    verdict.status, verdict.reason, verdict.detail = Status.DISCARDED, Reason.STALE, str(exc)
            exp = self._move(exp.id, verdict.status, delta=verdict.delta, sigma=verdict.sigma, z=verdict.z,
                             numbers=verdict.numbers, reason=verdict.reason, detail=verdict.detail,
                             phase=Phase.NONE)
        for conf in self.journal.list(status=Status.RUNNING):
            if conf.confirms == exp.id:  # a confirmation follows the experiment it confirms
                self._move(conf.id, verdict.status, reason=Reason.CONFIRMATION, phase=Phase.NONE)
        self._after_finish(exp)
        return exp

    def _after_finish(self, exp: Experiment) -> None:
        self._observe(exp)
        try:
            path = self.results_path()
            self.journal.write_results_tsv(path, self.config.lower_is_better)
            if path.parent == self.workspace:
                self._results_stamp.write_text(_sha256(path))
        except OSError:
            log.exception("could not write results.tsv")

    @property
    def _results_stamp(self) -> Path:
        return self.state_dir / "results.tsv.sha256"

    def results_path(self) -> Path:
        """Where results.tsv goes: next to the config, unless a file there is not the one we
        last wrote (an imported autoresearch project's own log, a user's edit): that file is
        never overwritten, and ours goes to the state folder instead."""
        mine = self.workspace / "results.tsv"
        if not mine.exists():
            return mine
        try:
            ours = self._results_stamp.read_text().strip() == _sha256(mine)
        except OSError:
            ours = False
        return mine if ours else self.state_dir / "results.tsv"

    # -- the loop --------------------------------------------------------------------------------
    def loop(
        self,
        iterations: int,
        budget: float | None = None,
        proposer: str | None = None,
        on_iteration: Callable[[int, Experiment], None] | None = None,
    ) -> list[Experiment]:
        """Propose → run → judge → ratchet, `iterations` times or until stop() is called."""
        if not self._loop_thread_busy.acquire(blocking=False):
            raise EngineError("a loop is already running in this engine; stop it first")
        self._stop.clear()
        done: list[Experiment] = []
        try:
            self._loop_event(LoopState(True, 0, iterations, "starting"))
            # what a dead engine left running: found when this engine opened, or since
            requeued = {e.id for e in self.recovered} | {e.id for e in self.recover()}
            self.recovered = []
            for exp_id in sorted(requeued):
                if self.journal.get(exp_id).status == Status.QUEUED:
                    self._queued_here.add(exp_id)
            for exp_id in sorted(requeued):
                if not self._stop.is_set():
                    done.append(self._run_if_queued(exp_id, budget))
            if not self._stop.is_set():
                self.ensure_baseline(budget)
                if self.sigma() is None and not self._stop.is_set():
                    raise EngineError("the baseline did not give a noise estimate (a seed crashed?): "
                                      "see `sigmaloop log`, fix the script, then run the loop again")
            for i in range(iterations):
                if self._stop.is_set():
                    break
                self._loop_event(LoopState(True, i + 1, iterations, "proposing"))
                exp = self.propose(proposer, iteration=i)
                if self._stop.is_set():  # stopped while proposing: leave it proposed, run nothing
                    done.append(exp)
                    break
                if exp.status == Status.PROPOSED:
                    self.accept(exp.id)
                    self._loop_event(LoopState(True, i + 1, iterations, f"running #{exp.id}"))
                    exp = self.run(exp.id, budget)
                done.append(exp)
                if on_iteration:
                    on_iteration(i, exp)
        finally:
            self._loop_event(LoopState(False, len(done), iterations, "stopped" if self._stop.is_set() else "done"))
            self._loop_thread_busy.release()
        return done

    def _loop_event(self, event: LoopState) -> None:
        self._loop_status = LoopStatus(event.running, event.iteration, event.iterations, event.message)
        self.bus.emit(event)

    def stop_all(self) -> list[int]:
        """Stop means stop: the loop after its current step, every experiment this engine
        queued and has not started (they become interrupted, so they never start), and every
        trial this process runs. Returns the ids it stopped."""
        self._stop.set()
        stopped: list[int] = []
        with self._lock:
            queued, self._queued_here = sorted(self._queued_here), set()
        for exp_id in queued:
            try:
                self._move(exp_id, Status.INTERRUPTED, "stop it", reason=Reason.STOPPED, phase=Phase.NONE)
            except EngineError:  # claimed (running) or decided meanwhile: the trial stop below covers it
                continue
            stopped.append(exp_id)
        me = os.getpid()
        for exp in self.journal.running():
            if exp.owner_pid == me:
                self._stop_requested.add(exp.id)
                if self._executor is not None:
                    self._executor.stop(exp.id)
                stopped.append(exp.id)
        return sorted(set(stopped))

    def stop(self) -> None:
        """The same as :meth:`stop_all` (kept while adapters move to it)."""
        self.stop_all()

    def stop_experiment(self, exp_id: int) -> bool:
        return self.executor.stop(exp_id)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the user's file -------------------------------------------------------------------------
    def _adoptable(self, exp_id: int) -> Experiment:
        exp = self.journal.get(exp_id)
        if exp.status != Status.KEPT or exp.is_baseline or exp.confirms is not None:
            what = "a baseline" if exp.is_baseline else (
                f"a confirmation of #{exp.confirms}" if exp.confirms is not None else exp.status.value)
            raise EngineError(f"experiment #{exp_id} is {what}; only kept experiments can be adopted")
        return exp

    def adopt(self, exp_id: int) -> Path:
        """Write a kept experiment's script into the user's file (never over their edits)."""
        self._adoptable(exp_id)
        return self.ratchet.adopt(exp_id)

    def adoption(self, exp_id: int, editor_text: str | None, editor_saved_text: str | None) -> Adoption:
        """What adopting into an open editor writes, or why it can't: ``editor_text`` is the
        buffer, ``editor_saved_text`` the file on disk as the editor knows it (None: unknown).
        Refuses (EngineError) a non-kept experiment, a buffer with unsaved edits, a file with
        uncommitted edits; the caller applies ``new_text`` to the buffer (undoable)."""
        self._adoptable(exp_id)
        text = self.experiment_source(exp_id)
        if editor_text is not None and editor_text == text:
            return Adoption(exp_id, text, unchanged=True)
        name = self.script_name
        if editor_text is not None and editor_saved_text is not None and editor_text != editor_saved_text:
            raise EngineError(f"{name} has unsaved changes; save or revert them, then adopt #{exp_id} again")
        if self.ratchet.dirty_script():
            raise EngineError(f"{name} has uncommitted changes; commit or stash them, then adopt #{exp_id} again")
        return Adoption(exp_id, text, unchanged=False)

    def view(self, exp_id: int) -> ExperimentView:
        """The experiment with its script before (parent) and after (as it runs)."""
        exp = self.journal.get(exp_id)
        if not exp.parent_commit:
            return ExperimentView(exp, self.script_name, None, None)
        before = self.ratchet.read_script(exp.parent_commit)
        try:
            after = self._source_of(exp)
        except EditError:  # a stored diff that no longer applies: show the parent alone
            after = None
        return ExperimentView(exp, self.script_name, before, before if after is None and not exp.diff else after)

    def experiment_source(self, exp_id: int) -> str:
        """The train script as the experiment ran it (or would run it)."""
        exp = self.journal.get(exp_id)
        src = self._source_of(exp)
        return src if src is not None else self.ratchet.read_script(exp.parent_commit)
