"""Finishing an experiment: claim it, run its trial, judge the result, confirm, move the ratchet.

    queued ─claim─▶ running ─trial─▶ result ─▶ verdict ─(would-be keep)─▶ confirmation run
                                                   └──────────────▶ ratchet move ─▶ results.tsv

Also what happens to trials outside that path: stopping them (queued ones never start) and
recovering the ones a dead engine left running.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import budget as budget_rule
from . import evaluator, guard, sandbox, sanity
from .core import Core, EngineError
from .diff import EditError, unified_diff
from .edits import validate_source
from .events import Notice, TrialProgress
from .executors import Executor
from .exports import write_results_tsv
from .journal import ConcurrentChange
from .judge import reference_for
from .killlimit import kill_limit
from .lifecycle import Phase, Reason
from .migrate import legacy_env
from .models import (
    FINISHED,
    MEASURED,
    Experiment,
    Outcome,
    ProgressRecord,
    Status,
    TrialResult,
    TrialSpec,
    code_hash,
)
from .prune import Pruner, PruneRule
from .ratchet import RatchetError, StaleExperiment
from .runner import is_alive, kill_orphan
from .trial_lock import Holder, TrialLock

log = logging.getLogger(__name__)


MAX_LOST = 3  # attempts of one trial lost to a machine going away before it counts as crashed
MAX_REBASES = 3  # times a would-be keep is rebased and re-run because the branch moved on meanwhile


class _Rebased(Exception):
    """A would-be keep was rebased onto the moved head: its trial runs again there."""

    def __init__(self, exp: Experiment) -> None:
        super().__init__(f"#{exp.id} rebased")
        self.exp = exp


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Trials:
    def __init__(
        self,
        core: Core,
        executor: Callable[[], Executor],
        observe: Callable[[Experiment], None],
        started: Callable[[], Executor | None],
    ) -> None:
        self.core = core
        self._executor = executor  # made on first use
        self._started = started  # the executor if one was made (stopping makes none)
        self._observe = observe  # the proposers learn every result
        self._guard = threading.Lock()
        self._queued_here: set[int] = set()  # queued by this engine, not yet claimed: stop_all stops them
        self._stop_requested: set[int] = set()  # claimed, stopped before their trial started
        # one trial runner per workspace across processes (the CLI beside the editor)
        self._trial_lock = TrialLock(core.state_dir, "editor" if "sigmaloop.lsp.server" in sys.modules else "cli")
        self._said_unsandboxed = False
        self._pruners: dict[int, Pruner] = {}  # running candidates watched for early pruning
        self._pruned: dict[int, Pruner] = {}  # ... those pruned (their trial is being stopped)

    # -- queueing and stopping -------------------------------------------------------------------
    def queued(self, *ids: int) -> None:
        """These were queued by this engine: stop_all stops them before they start, and the
        journal says whose they are (another engine leaves them alone while this one lives)."""
        with self._guard:
            self._queued_here.update(ids)
        for exp_id in ids:
            self.core.update(exp_id, owner_pid=os.getpid())

    def stop_all(self) -> list[int]:
        """Queued experiments of this engine become interrupted (they never start); trials this
        process runs are stopped. Returns the ids."""
        core = self.core
        with self._guard:
            queued, self._queued_here = sorted(self._queued_here), set()
        stopped = []
        for exp_id in queued:
            try:
                core.move(exp_id, Status.INTERRUPTED, "stop it", reason=Reason.STOPPED, phase=Phase.NONE)
            except EngineError:  # claimed (running) or decided meanwhile: the trial stop below covers it
                continue
            stopped.append(exp_id)
        me = os.getpid()
        executor = self._started()
        for exp in core.journal.running():
            if exp.owner_pid == me:
                with self._guard:
                    self._stop_requested.add(exp.id)
                if executor is not None:
                    executor.stop(exp.id)
                stopped.append(exp.id)
        return sorted(set(stopped))

    def stop(self, exp_id: int) -> bool:
        executor = self._started()
        return executor.stop(exp_id) if executor is not None else False

    def _stopping(self, exp_id: int) -> bool:
        with self._guard:
            return exp_id in self._stop_requested

    # -- recovery ----------------------------------------------------------------------------------
    def recover(self) -> list[Experiment]:
        """Experiments left running by a dead engine become interrupted, are killed and re-queued."""
        core = self.core
        requeued = []
        me = os.getpid()
        for exp in core.journal.running():
            owner = exp.owner_pid
            if owner is not None and owner != me and is_alive(owner):
                continue  # another live engine (e.g. the CLI beside the editor) owns it
            if owner == me:
                continue
            try:  # only the row as read (its dead owner's): engines opening at once recover it once
                core.move(exp.id, Status.INTERRUPTED, reason=Reason.ENGINE_DIED, phase=Phase.NONE, pid=None,
                          expect_rev=exp.rev)
            except (EngineError, ConcurrentChange):
                continue
            if exp.pid:
                kill_orphan(exp.pid, exp.id)
            self._archive_attempt(exp)
            if exp.confirms is None:  # a confirmation is redone by its re-run parent
                requeued.append(core.move(exp.id, Status.QUEUED, pid=None, owner_pid=me, reason="", detail=""))
            try:
                core.ratchet.remove_worktree(exp.id)
            except Exception:
                log.exception("could not remove worktree of #%s", exp.id)
        for exp in core.journal.by_status(Status.QUEUED):  # stranded: queued by a dead engine
            owner = exp.owner_pid
            if owner == me or (owner is not None and is_alive(owner)):
                continue
            if exp.confirms is not None:  # retired: its parent is re-run and confirms anew
                with contextlib.suppress(EngineError, ConcurrentChange):
                    core.move(exp.id, Status.INTERRUPTED, reason=Reason.ENGINE_DIED, expect_rev=exp.rev)
                continue
            # adopted: this engine runs it (running claims with a compare-and-set: only once)
            requeued.append(core.update(exp.id, owner_pid=me))
        return requeued

    @staticmethod
    def _archive_attempt(exp: Experiment) -> None:
        """Keep the log of an interrupted attempt next to the new one: nothing is lost."""
        for path in (exp.log_path, exp.metrics_path):
            try:
                if path and os.path.exists(path):
                    os.replace(path, f"{path}.attempt{exp.attempts}")
            except OSError:  # never a reason not to open the workspace
                log.exception("could not keep %s of #%s", path, exp.id)

    # -- running -------------------------------------------------------------------------------------
    def run(self, exp_id: int, budget: float | None = None) -> Experiment:
        """Run a queued experiment to its verdict (blocking), confirmation rerun included."""
        core = self.core
        # claim it: a reject, a stop (or another engine) racing this start can't both win
        fields = {"budget": budget} if budget is not None else {}
        exp = core.move(exp_id, Status.RUNNING, "run it", owner_pid=os.getpid(), phase=Phase.STARTING, **fields)
        with self._guard:
            self._queued_here.discard(exp_id)
        try:
            exp = self._rebase(exp) or exp  # its parent moved on while it waited: onto the head
            for _ in range(MAX_REBASES):
                result = self._execute_surviving(exp)
                try:
                    return self._finish(core.journal.get(exp_id), result)
                except _Rebased as rebased:  # a would-be keep whose parent moved on: run it again on the head
                    exp = rebased.exp
            result = self._execute_surviving(exp)
            return self._finish(core.journal.get(exp_id), result, rebase=False)
        except Exception as exc:  # git, disk, a diff that no longer applies: record, don't die
            log.exception("experiment #%s failed inside sigmaloop", exp_id)
            exp = core.journal.get(exp_id)
            if exp.status != Status.RUNNING:  # it already has its verdict; the failure came after
                return exp
            exp = core.move(exp_id, Status.CRASHED, pid=None, finished_at=time.time(), phase=Phase.NONE,
                            reason=Reason.INTERNAL_ERROR, detail=f"{type(exc).__name__}: {exc}")
            self._after_finish(exp)
            return exp
        finally:
            with self._guard:
                self._stop_requested.discard(exp_id)

    def _execute_surviving(self, exp: Experiment) -> TrialResult:
        """Run its trial; when the machine running it goes away (a cluster node, a worker), the
        attempt is recorded as interrupted (node_lost, its log kept) and the trial re-queued and
        run again, up to MAX_LOST times."""
        core = self.core
        while True:
            result = self._execute(exp)
            if result.outcome != Outcome.LOST:
                return result
            exp = core.journal.get(exp.id)
            if exp.attempts >= MAX_LOST or self._stopping(exp.id):
                result.outcome = Outcome.CRASHED
                result.error = f"lost {exp.attempts} time(s), the last: {result.error}"
                return result
            log.warning("exp #%s: %s; re-queued", exp.id, result.error)
            self._archive_attempt(exp)
            core.move(exp.id, Status.INTERRUPTED, reason=Reason.NODE_LOST, detail=result.error, phase=Phase.NONE,
                      pid=None, node=result.node)
            core.move(exp.id, Status.QUEUED, reason="", detail="")
            exp = core.move(exp.id, Status.RUNNING, "run it again", owner_pid=os.getpid(), phase=Phase.STARTING)

    def _execute(self, exp: Experiment) -> TrialResult:
        core = self.core
        cfg = core.config.experiment
        if exp.seed is None:
            seed = core.judge.pick_seed(core.reference(budget=exp.budget))
            exp = core.update(exp.id, seed=seed if seed is not None else core.config.judge.seeds[0])
        budget = exp.budget or cfg.budget
        log_path = core.state_dir / "logs" / f"{exp.id}.log"
        metrics_path = core.state_dir / "metrics" / f"{exp.id}.jsonl"
        message = f"exp #{exp.id}: {exp.hypothesis or exp.source}"[:200]
        t_git = time.time()
        wt = core.ratchet.prepare_worktree(exp.id, exp.parent_commit, core.source_of(exp), message)
        git_seconds = time.time() - t_git
        core.update(
            exp.id, phase=Phase.TRAINING, commit=wt.commit, budget=budget,
            attempts=exp.attempts + 1, owner_pid=os.getpid(), log_path=str(log_path),
            metrics_path=str(metrics_path),
        )
        core.journal.clear_curve(exp.id)
        # how long before a trial counts as hung: learned from this project's measured runs
        limit = kill_limit(budget, cfg.grace, cfg.kill_margin, core.journal.by_status(*MEASURED))
        runner_cfg = core.config.runner
        spec = TrialSpec(
            exp_id=exp.id, cwd=str(wt.cwd), command=core.config.trial_command(), budget=budget,
            seed=exp.seed, log_path=str(log_path), metrics_path=str(metrics_path), metric=cfg.metric,
            grace=cfg.grace, kill_limit=limit, workspace_root=str(wt.cwd),
            log_cap=int(runner_cfg.log_cap_mb * (1 << 20)),
        )
        spec.env.update(legacy_env(spec, runner_cfg.env_allow))  # old trainer copies' names
        # the fixed evaluator: the base commit's prepare.py scores the model the trial hands over
        spec.evaluator = evaluator.spec_for(core.ratchet, core.state_dir, exp.parent_commit, cfg.metric,
                                            cfg.evaluator)
        spec.python = core.config.trial_python()
        spec.model_path = str(wt.path / ".handover" / evaluator.MODEL_FILE)
        Path(spec.model_path).parent.mkdir(parents=True, exist_ok=True)
        spec.eval_scratch = str(core.state_dir / "eval" / str(exp.id))
        locked = False
        try:
            spec.sandbox = self._sandbox_policy(wt.path, metrics_path, hide_validation=spec.evaluator is not None)
            if spec.sandbox is not None and spec.evaluator is not None:
                spec.evaluator_policy = evaluator.policy(
                    spec.evaluator, Path(spec.eval_scratch), Path(spec.model_path), spec.python,
                    spec.sandbox.gpu, core.workspace)
            locked = self._trial_lock.acquire(stop=lambda: self._stopping(exp.id), on_wait=self._waiting)
            if not locked or self._stopping(exp.id):  # stopped while its worktree was made / it waited
                result = TrialResult(exp.id, Outcome.STOPPED)
            else:
                core.update(exp.id, started_at=time.time())  # now it runs (after any wait for the lock)
                self._watch(exp, spec)
                handle = self._executor().submit(spec, on_progress=self._on_progress, on_start=self._on_start)
                if self._stopping(exp.id):  # stopped between the check and the submit
                    handle.stop()
                result = handle.result()
        finally:
            if locked:
                self._trial_lock.release()
            with self._guard:
                self._stop_requested.discard(exp.id)
                self._pruners.pop(exp.id, None)
            t_git = time.time()
            try:
                core.ratchet.remove_worktree(exp.id)
            except Exception:
                log.exception("could not remove worktree of #%s", exp.id)
            git_seconds += time.time() - t_git
        result.timings["git"] = git_seconds
        return result

    def _sandbox_policy(self, worktree: Path, metrics_path: Path, hide_validation: bool = False) -> sandbox.Policy | None:
        """The trial's sandbox (runner.sandbox): bubblewrap where it runs; "on" refuses to run
        without it; "auto" says once, clearly, that trials run unsandboxed here."""
        core, r = self.core, self.core.config.runner
        if r.sandbox == "off":
            return None
        why = sandbox.availability()
        if why is None:
            return sandbox.policy_for(core.workspace, worktree, metrics_path, python=core.config.trial_python(),
                                      read_only=r.read_only, network=r.network,
                                      gpu=any(Path("/dev").glob("nvidia*")), hide_validation=hide_validation)
        if r.sandbox == "on":
            raise sandbox.SandboxUnavailable(f'runner.sandbox = "on", but {why}')
        if not self._said_unsandboxed:
            self._said_unsandboxed = True
            core.bus.emit(Notice(f"trials run unsandboxed, with your full authority: {why}"))
        return None

    def _waiting(self, holder: Holder | None) -> None:
        who = holder.describe() if holder else "another sigmaloop process"
        self.core.bus.emit(Notice(f"waiting: {who} on this workspace; this trial starts when it finishes "
                                  "(fixed-time trials sharing a machine would measure each other)", "info"))

    def _on_start(self, exp_id: int, pid: int) -> None:
        self.core.update(exp_id, pid=pid)

    def _on_progress(self, exp_id: int, records: list[ProgressRecord]) -> None:
        self.core.journal.add_progress(exp_id, records)
        self.core.bus.emit(TrialProgress(exp_id, records))
        with self._guard:
            pruner = self._pruners.get(exp_id)
        if pruner is not None and pruner.update(records) is not None:
            with self._guard:
                self._pruners.pop(exp_id, None)
                self._pruned[exp_id] = pruner
            executor = self._started()
            if executor is not None:
                executor.stop(exp_id)

    # -- early pruning ---------------------------------------------------------------------------------
    def _watch(self, exp: Experiment, spec: TrialSpec) -> None:
        """Watch a candidate's curve against its reference runs' curves (judge.prune); never a
        baseline or a confirmation, nor without two reference curves at its budget and evaluator,
        nor in a project that maximizes its metric (its curve's loss says nothing sure about it)."""
        core, cfg = self.core, self.core.config.judge
        # the curve is a training loss (lower is better): a proxy only for a metric that is minimized
        if not cfg.prune or exp.is_baseline or exp.confirms is not None or not core.config.lower_is_better:
            return
        code = code_hash(core.ratchet.read_script(exp.parent_commit))
        ident = spec.evaluator.identity if spec.evaluator is not None else evaluator.SELF_REPORTED
        exps = core.journal.list()
        ref = reference_for(exps, code, budget=spec.budget, evaluator=ident, data=None, device=None)
        seed_of = {e.id: e.seed for e in exps}
        pruner = Pruner.for_references((core.journal.curve(i, max_points=600) for i in ref.ids),
                                       PruneRule(after=cfg.prune_after), seeds=[seed_of.get(i) for i in ref.ids],
                                       seed=exp.seed)
        if pruner is not None:
            with self._guard:
                self._pruners[exp.id] = pruner

    # -- result → verdict ------------------------------------------------------------------------------
    def _finish(self, exp: Experiment, result: TrialResult, rebase: bool = True) -> Experiment:
        core = self.core
        timings = dict(result.timings, wall=result.wall_seconds)
        common = dict(finished_at=time.time(), summary=result.summary, timings=timings, pid=None,
                      sandboxed=result.sandboxed, printed_metric=result.printed_metric,
                      evaluator=result.evaluator, data=result.data, device=result.device, node=result.node)
        with self._guard:
            pruner = self._pruned.pop(exp.id, None)
        if result.outcome == Outcome.STOPPED and pruner is not None and pruner.decision is not None:
            budget = exp.budget or core.config.experiment.budget
            saved = round((1 - pruner.decision.frac) * budget, 3)
            common["timings"] = dict(common["timings"], pruned_at=pruner.decision.frac, saved=saved)
            exp = core.move(exp.id, Status.PRUNED, reason=Reason.PRUNED, phase=Phase.NONE,
                            detail=pruner.decision.describe(budget), **common)
            self._after_finish(exp)
            return exp
        if result.outcome == Outcome.STOPPED:
            return core.move(exp.id, Status.INTERRUPTED, reason=Reason.STOPPED, phase=Phase.NONE, **common)
        if result.untrusted:  # the number can't be trusted: never judged, never kept
            exp = core.move(exp.id, Status.TAMPERED, metric=result.metric, phase=Phase.NONE,
                            reason=Reason(result.untrusted), detail=result.error, **common)
            self._after_finish(exp)
            return exp
        if result.outcome in (Outcome.CRASHED, Outcome.TIMEOUT) or result.metric is None or not math.isfinite(result.metric):
            status = Status.TIMEOUT if result.outcome == Outcome.TIMEOUT else Status.CRASHED
            reason = Reason.TIMEOUT if status == Status.TIMEOUT else Reason.CRASHED
            exp = core.move(exp.id, status, crash=result.crash, metric=None, phase=Phase.NONE,
                            reason=reason, detail=result.error or "", **common)
            self._after_finish(exp)
            return exp
        peers = core.journal.by_status(*MEASURED)  # read once: the budget rule and the warnings
        if not exp.is_baseline:
            check = budget_rule.check(exp.budget or core.config.experiment.budget, result.wall_seconds,
                                      result.summary.get("training_seconds"), result.evaluator, result.device,
                                      peers, core.config.judge,
                                      steps=result.summary.get("num_steps"))
            if check.over:
                exp = core.move(exp.id, Status.OVER_BUDGET, metric=result.metric, phase=Phase.NONE,
                                reason=Reason.OVER_BUDGET, detail=check.describe(), **common)
                self._after_finish(exp)
                return exp
        measured = replace(exp, metric=result.metric, **common)
        warnings = sanity.warnings_for(measured, core.journal.curve(exp.id), peers)
        exp = core.update(exp.id, metric=result.metric, phase=Phase.JUDGING, warnings=warnings, **common)
        t0 = time.time()
        exp = self._judge(exp, rebase)
        if exp.status in FINISHED:
            exp = core.update(exp.id, timings=dict(exp.timings, judge=time.time() - t0))
        return exp

    def _judge(self, exp: Experiment, rebase: bool = True) -> Experiment:
        """Decide a measured run: baselines become the reference, candidates face the judge."""
        core = self.core
        if exp.is_baseline:
            exp = core.move(exp.id, Status.KEPT, reason=Reason.BASELINE, phase=Phase.NONE)
            self._after_finish(exp)
            return exp
        if exp.confirms is not None:
            return exp  # measured (phase judging): the experiment it confirms decides
        exps = core.journal.list()
        parent_code = code_hash(core.ratchet.read_script(exp.parent_commit))
        # comparable or not compared: the same budget, evaluator, data and device
        ref = reference_for(exps, parent_code, budget=exp.budget, evaluator=exp.evaluator, data=exp.data,
                            device=exp.device)
        sigma, dof = core.judge.noise(exps, ref)
        if sigma is None or ref.value is None:
            # the same code under other conditions?
            elsewhere = reference_for(exps, parent_code, evaluator=None, data=None, device=None)
            if elsewhere.by_seed and not ref.by_seed:
                exp = core.move(exp.id, Status.DISCARDED, reason=Reason.NOT_COMPARABLE, phase=Phase.NONE,
                                detail=self._not_comparable(exp, [e for e in exps if e.id in elsewhere.ids]))
            else:
                exp = core.move(exp.id, Status.DISCARDED, reason=Reason.NO_REFERENCE, phase=Phase.NONE)
            self._after_finish(exp)
            return exp
        runs = [(exp.seed, exp.metric)]
        verdict = core.judge.judge(runs, ref, sigma, dof=dof)
        while verdict.needs_confirmation:  # a would-be keep (or a borderline one) earns another seed
            seed = core.judge.pick_seed(ref, exclude=[s for s, _ in runs])
            if seed is None:  # no seed left to confirm on: decide on the runs there are
                verdict = core.judge.judge(runs, ref, sigma, dof=dof, confirm=False)
                if len(runs) == 1 and verdict.status == Status.KEPT and verdict.reason == Reason.IMPROVED:
                    verdict.reason = Reason.IMPROVED_ONE_SEED
                break
            if self._stopping(exp.id):  # stopped before its confirmation started
                verdict.status, verdict.reason = Status.INTERRUPTED, Reason.STOPPED_IN_CONFIRMATION
                break
            core.update(exp.id, delta=verdict.delta, sigma=sigma, z=verdict.z, numbers=verdict.numbers,
                        phase=Phase.CONFIRMING)
            conf = self._confirm(exp, seed)
            if conf.status == Status.INTERRUPTED:  # stopped, not refuted: no verdict either way
                verdict.status, verdict.reason = Status.INTERRUPTED, Reason.STOPPED_IN_CONFIRMATION
                verdict.detail = f"confirmation #{conf.id}"
                break
            if conf.metric is None or conf.status != Status.RUNNING:
                verdict.status, verdict.reason = Status.DISCARDED, Reason.CONFIRMATION_FAILED
                verdict.detail = f"confirmation #{conf.id} {conf.status.value}"
                break
            runs.append((conf.seed, conf.metric))
            sigma, dof = core.judge.noise(core.journal.list(), ref)
            verdict = core.judge.judge(runs, ref, sigma, dof=dof)
        with core.lock:  # one ratchet move at a time
            if verdict.status == Status.KEPT:
                try:
                    core.ratchet.advance(exp.id)
                except StaleExperiment as exc:  # the branch moved on (a parallel slot kept something)
                    rebased = self._rebase(exp) if rebase else None
                    if rebased is None:
                        verdict.status, verdict.reason, verdict.detail = Status.DISCARDED, Reason.STALE, str(exc)
                    else:
                        self._retire_confirmations(exp.id, f"#{exp.id} was rebased onto {rebased.parent_commit[:8]} "
                                                           "and runs again there")
                        raise _Rebased(rebased) from None
                except RatchetError as exc:  # e.g. the branch is checked out somewhere
                    verdict.status, verdict.reason, verdict.detail = Status.DISCARDED, Reason.STALE, str(exc)
            exp = core.move(exp.id, verdict.status, delta=verdict.delta, sigma=verdict.sigma, z=verdict.z,
                            numbers=verdict.numbers, reason=verdict.reason, detail=verdict.detail,
                            phase=Phase.NONE)
        for conf in core.journal.list(status=Status.RUNNING):
            if conf.confirms == exp.id:  # a confirmation follows the experiment it confirms
                core.move(conf.id, verdict.status, reason=Reason.CONFIRMATION, phase=Phase.NONE)
        self._after_finish(exp)
        return exp

    def _retire_confirmations(self, exp_id: int, detail: str) -> None:
        for conf in self.core.journal.list(status=Status.RUNNING):
            if conf.confirms == exp_id:
                self.core.move(conf.id, Status.DISCARDED, reason=Reason.CONFIRMATION, phase=Phase.NONE, detail=detail)

    # -- rebasing ----------------------------------------------------------------------------------------
    def _rebase(self, exp: Experiment) -> Experiment | None:
        """A candidate whose parent is no longer the research branch's head, its edit replayed onto
        the head (a three-way merge of the script; parent, diff and code hash updated, and
        ``rebased_from`` the commit its edit was written against). None when there is nothing to
        rebase, or the edit no longer applies (conflicts, is already there, or breaks the guard)."""
        core = self.core
        head = core.head()
        if exp.is_baseline or exp.confirms is not None or not exp.diff or not exp.parent_commit \
                or exp.parent_commit == head:
            return None
        try:
            edited = core.experiment_source(exp)
            merged = core.ratchet.rebase_script(exp.parent_commit, head, edited)
            head_src = core.ratchet.read_script(head)
            if merged is None or merged == head_src:
                return None
            validate_source(merged, head_src)
            guard.check_edit(head_src, merged, core.config.experiment.metric)
        except (EditError, RatchetError) as exc:
            log.info("exp #%s can't be rebased onto %s: %s", exp.id, head[:8], exc)
            return None
        rebased = core.update(exp.id, parent_commit=head, diff=unified_diff(head_src, merged, core.script_name),
                              code_hash=code_hash(merged), rebased_from=exp.rebased_from or exp.parent_commit,
                              phase=Phase.STARTING)
        core.bus.emit(Notice(f"#{exp.id} was written against {exp.parent_commit[:8]}; the branch has moved on, "
                             f"so it runs rebased onto {head[:8]}", "info"))
        return rebased

    def review(self, exp_id: int, accept: bool, note: str = "") -> Experiment:
        """Accept or reject the result of an experiment held back as implausible."""
        core = self.core
        with core.lock:
            exp = core.journal.get(exp_id)
            if exp.reason != Reason.IMPLAUSIBLE.value:
                raise EngineError(f"#{exp_id} was not held back as implausible ({exp.verdict or exp.status.value});"
                                  " only an implausible gain waiting for a look can be accepted or rejected")
            note = note.strip()[:2000]
            if not accept:
                exp = core.update(exp_id, reason=Reason.RESULT_REJECTED, detail=note or exp.detail)
            else:
                try:
                    core.ratchet.advance(exp_id)
                except RatchetError as exc:  # the branch moved on: it can't be kept on top of it
                    raise EngineError(f"#{exp_id} can't be kept: {exc}") from None
                exp = core.move(exp_id, Status.KEPT, "accept its result", expect_rev=exp.rev,
                                reason=Reason.RESULT_ACCEPTED, detail=note or exp.detail)
                for conf in core.journal.list():
                    if conf.confirms == exp_id and conf.status == Status.DISCARDED:
                        core.move(conf.id, Status.KEPT, reason=Reason.CONFIRMATION)
        self._after_finish(exp)
        return exp

    @staticmethod
    def _not_comparable(exp: Experiment, others: list[Experiment]) -> str:
        """What the base code was measured under, and what this run needs."""
        def cond(e: Experiment) -> str:
            return f"{e.budget:g}s on {e.device or '?'} ({e.evaluator or '?'}, data {e.data or '?'})"
        seen = sorted({cond(e) for e in others})
        return (f"this ran {cond(exp)}; its base code was measured only at {'; '.join(seen[:3])}: "
                f"run the baseline at {exp.budget:g}s here to judge it")

    def _confirm(self, exp: Experiment, seed: int) -> Experiment:
        """Rerun a would-be keep's code on another paired seed; measured, it stays running
        (phase judging) until the experiment it confirms is decided."""
        core = self.core
        conf = core.create(
            status=Status.QUEUED, source=exp.source, parent_commit=exp.commit, seed=seed,
            hypothesis=f"confirm #{exp.id} on seed {seed}", confirms=exp.id,
            code_hash=exp.code_hash, budget=exp.budget,
        )
        conf = core.move(conf.id, Status.RUNNING, owner_pid=os.getpid(), phase=Phase.STARTING)
        return self._finish(core.journal.get(conf.id), self._execute_surviving(conf))

    def _after_finish(self, exp: Experiment) -> None:
        self._observe(exp)
        try:
            path = self.results_path()
            write_results_tsv(self.core.journal, path)
            if path.parent == self.core.workspace:
                self._results_stamp.write_text(_sha256(path))
        except OSError:
            log.exception("could not write results.tsv")

    # -- results.tsv ----------------------------------------------------------------------------------
    @property
    def _results_stamp(self) -> Path:
        return self.core.state_dir / "results.tsv.sha256"

    def results_path(self) -> Path:
        """Where results.tsv goes: next to the config, unless a file there is not the one we
        last wrote (an imported autoresearch project's own log, a user's edit): that file is
        never overwritten, and ours goes to the state folder instead."""
        mine = self.core.workspace / "results.tsv"
        if not mine.exists():
            return mine
        try:
            ours = self._results_stamp.read_text().strip() == _sha256(mine)
        except OSError:
            ours = False
        return mine if ours else self.core.state_dir / "results.tsv"
