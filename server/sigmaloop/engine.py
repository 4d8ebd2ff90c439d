"""The engine's façade: the one API the adapters (CLI, language server) call.

It opens a workspace (migrating an old-name one, recovering what a dead engine left running),
answers queries (state, experiments, curves, a view of one experiment) and runs operations
(propose, accept, reject, run, loop, stop, adopt). The work is done by its parts:
:mod:`.proposals` (edits in), :mod:`.trials` (a claimed experiment → verdict → ratchet move),
:mod:`.loop` (propose → run → judge, N times), all over :class:`~.core.Core` (journal, ratchet,
events). Adapters subscribe to ``engine.bus``. Nothing here knows about LSP, rich or VS Code.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import anomaly as anomaly_mod
from . import config as config_mod
from . import exports
from . import questions as questions_mod
from . import report as report_mod
from .config import Config
from .core import Core, EngineError
from .diff import EditError
from .events import EventBus
from .executors import Executor, make_executor
from .journal import Journal
from .judge import Reference
from .lifecycle import Reason
from .loop import Loop
from .migrate import MigrationReport, migrate_workspace
from .models import (
    Experiment,
    ProgressRecord,
    Proposal,
    Question,
    QuestionStatus,
    Status,
    code_hash,
)
from .proposals import Proposals
from .questions import Effect, QuestionView
from .ratchet import Ratchet
from .report import MorningReport
from .state import EngineState, QuestionState, engine_state
from .trials import Trials

__all__ = ["Adoption", "EditStatus", "Engine", "EngineError", "ExperimentView"]

log = logging.getLogger(__name__)

#: the longest question (or decision) text kept, in characters
MAX_QUESTION = 500


@dataclass
class EditStatus:
    """The researcher's file against the research head: whether it differs, by how much, and
    what Run My Edit / Run Baseline would run, in words."""

    differs: bool
    added: int  # lines in the file, not in the head
    removed: int  # lines in the head, not in the file
    head: str  # the head commit, short
    summary: str
    behind: list[int] = field(default_factory=list)  # the file is an older head: the keeps it lacks

    @property
    def summary_short(self) -> str:
        return f"+{self.added}/-{self.removed} lines against {self.head}"


def edit_status(head_text: str, text: str, head: str, script_name: str) -> EditStatus:
    """:class:`EditStatus` of ``text`` against the head's script."""
    short = head[:7]
    if text == head_text:
        return EditStatus(False, 0, 0, short, f"{script_name} is the research head ({short}): "
                          "Run Baseline measures it; there is no edit to run")
    added = removed = 0
    for line in difflib.unified_diff(head_text.splitlines(), text.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    n = max(added, removed)
    return EditStatus(True, added, removed, short,
                      f"{n} line{'s differ' if n != 1 else ' differs'} from the research head {short} "
                      f"(+{added}/-{removed}): Run My Edit runs your file; Run Baseline runs the head")


@dataclass
class ExperimentView:
    """What "show diff" needs: the record, the script's name, its text before and after."""

    experiment: Experiment
    script_name: str
    parent_text: str | None  # the script at the parent commit (None: no parent)
    proposed_text: str | None  # the script as it runs (None: no parent, or its edit no longer applies)


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
        self.core = Core(self.workspace, config or config_mod.load(self.workspace), bus or EventBus())
        self._executor = executor
        self._executor_settings = self._settings_of(self.core.config)
        self.proposals = Proposals(self.core)
        self.trials = Trials(self.core, lambda: self.executor, self.proposals.observe, lambda: self._executor)
        self._loop = Loop(self)
        # Recovery runs when an engine opens: rows a dead engine left running are re-queued.
        self.recovered: list[Experiment] = self.trials.recover()
        # program.md's "## Questions" section: asked once each, when an engine opens
        self.sync_program_questions()

    # -- what it holds ----------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self.core.config

    @property
    def bus(self) -> EventBus:
        return self.core.bus

    @property
    def state_dir(self) -> Path:
        return self.core.state_dir

    @property
    def journal(self) -> Journal:
        """The engine's storage (its parts and tests use it; adapters call the façade)."""
        return self.core.journal

    @property
    def ratchet(self) -> Ratchet:
        """The engine's git side (its parts and tests use it; adapters call the façade)."""
        return self.core.ratchet

    @property
    def script_name(self) -> str:
        return self.core.script_name

    @property
    def branch(self) -> str:
        """The research branch's name (``sigmaloop/<tag>``)."""
        return self.core.ratchet.branch_name

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            try:
                self._executor = make_executor(self.config)
            except ValueError as exc:  # no Ray, or more slots than GPUs: say what to set
                raise EngineError(str(exc)) from None
        return self._executor

    @staticmethod
    def _settings_of(config: Config) -> tuple:
        """What the executor is made from: a change of these makes a new one (a Ray cluster's
        slots are its own, so other settings never restart it)."""
        r = config.runner
        if r.executor == "ray":
            return ("ray", config.ray.address, config.ray.cpus_per_trial, tuple(r.env_allow))
        return ("local", r.slots, tuple(r.gpus), tuple(r.env_allow))

    @property
    def slots(self) -> int:
        """How many trials run at once (the executor's, once made; else the configured slots)."""
        return self._executor.slots if self._executor is not None else self.config.runner.slots

    def reconfigure(self, config: Config) -> list[str]:
        """Use new settings from now on; running trials keep theirs. The research branch tag and
        the train script are fixed for an Engine's life: a change of them is kept out and said
        (the returned messages; reopen the engine to use them)."""
        old = self.config.experiment
        notes = []
        if (config.experiment.train_script, config.experiment.tag) != (old.train_script, old.tag):
            notes.append("experiment.train_script / experiment.tag changed; they take effect when "
                         "sigmaloop restarts (the language server: restart it)")
            config.experiment.train_script, config.experiment.tag = old.train_script, old.tag
        self.core.reconfigure(config)
        self.proposals.reset()
        ex, before = self._executor, self._executor_settings
        now = self._executor_settings = self._settings_of(config)
        if ex is not None and now != before and not getattr(ex, "running", list)():
            ex.shutdown(wait=False)  # made again, with the new settings, on next use
            self._executor = None
        return notes

    def shutdown_trials(self) -> None:
        """Kill every trial this engine started (their process groups) and wait for them."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def close(self) -> None:
        """Stop the loop and running trials, and release resources."""
        self._loop.stop()
        self.shutdown_trials()
        self.core.journal.close()

    # -- queries -----------------------------------------------------------------------------------
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

    def anomalies(self, exp_id: int, dismissed: bool = False) -> list[anomaly_mod.Anomaly]:
        """What looks wrong in an experiment's training curve (``anomaly.detect`` over every
        point); the kinds the researcher dismissed are left out unless ``dismissed``."""
        found = anomaly_mod.detect(self.journal.curve(exp_id))  # reads stored NaN/inf (loss_of)
        if dismissed or not found:
            return found
        gone = self.journal.dismissed(exp_id).get(exp_id, {})
        return [a for a in found if a.kind not in gone]

    def dismiss_anomaly(self, exp_id: int, kind: str, reason: str = "") -> Experiment:
        """The researcher looked at an anomaly and says it is nothing: it stops being shown
        (diagnostics, the report's weird section) for this experiment. Kept in the journal."""
        if kind not in anomaly_mod.KINDS:
            raise EngineError(f"no anomaly kind {kind!r}: one of {', '.join(anomaly_mod.KINDS)}")
        try:
            return self.journal.dismiss(exp_id, kind, " ".join((reason or "").split()))
        except KeyError:
            raise EngineError(f"no experiment #{exp_id}") from None

    def dismissed_anomalies(self) -> dict[int, dict[str, str]]:
        """Experiment id → {dismissed kind: the researcher's reason}."""
        return self.journal.dismissed()

    def report(self, since: int | None = None) -> MorningReport:
        """The morning report's fields over every experiment (or those from #``since`` on)."""
        return report_mod.build(
            self.experiments(), self.state(), self.journal.curve, self.anomalies,
            workspace=self.workspace.name, branch=self.branch, since=since, k=self.config.judge.k)

    def report_html(self, since: int | None = None) -> str:
        """The morning report as one self-contained HTML page (no script, no network)."""
        return report_mod.render(self.report(since))

    def write_report(self, path: Path | str | None = None, since: int | None = None) -> Path:
        """Write the report page (default ``<state>/report.html``, atomically); returns its path."""
        target = Path(path) if path is not None else self.state_dir / "report.html"
        exports.write_atomic(target, self.report_html(since))
        return target

    def export(self, path: Path | str, fmt: str = "jsonl") -> int:
        """Every field of every experiment to a jsonl or csv file; returns how many."""
        return exports.export(self.journal, path, fmt)

    def head(self) -> str:
        return self.core.head()

    def head_source(self) -> str:
        return self.core.head_source()

    def reference(self, experiments: list[Experiment] | None = None) -> Reference:
        return self.core.reference(experiments)

    def sigma(self, experiments: list[Experiment] | None = None) -> float | None:
        return self.core.sigma(experiments)

    def state(self) -> EngineState:
        """Reference ± σ with its seeds, the best reference, counts, calibration, the loop,
        the research questions."""
        exps = self.journal.slim()  # numbers only: no diffs or JSON fields for 10k rows
        e = self.config.experiment
        state = engine_state(exps, self.core.reference(exps), self.core.judge, e.metric, e.direction,
                             self._loop.status)
        threshold = state.reference.keep_threshold if state.reference else None
        state.questions = [self._question_state(q, threshold) for q in self.journal.questions()]
        return state

    # -- research questions --------------------------------------------------------------------------
    def ask(self, text: str, decision: str = "") -> Question:
        """A new open research question; ``decision``: the result that would change the next
        decision. The LLM proposer is steered to open questions; proposals say which they test."""
        text, decision = " ".join(text.split()), " ".join((decision or "").split())
        if not text:
            raise EngineError("a question needs words: sigmaloop ask \"Does a longer warmup help at 60 s?\"")
        if len(text) > MAX_QUESTION or len(decision) > MAX_QUESTION:
            raise EngineError(f"keep a question and its decision under {MAX_QUESTION} characters each")
        return self.journal.add_question(text, decision)

    def questions(self) -> list[Question]:
        return self.journal.questions()

    def question(self, qid: int) -> QuestionView:
        """A question's page: its experiments, their effects with 95% intervals, where it stands."""
        q = self._question(qid)
        ref = self.core.reference()
        threshold = None
        sigma, dof = self.core.judge.noise(self.journal.slim(), ref)
        if sigma is not None:
            threshold = self.core.judge.keep_threshold(sigma, dof)
        return questions_mod.view(q, self.journal.testing(qid), self.config.lower_is_better, threshold)

    def close_question(self, qid: int, answer: str = "", status: str = "answered") -> Question:
        """Close a question with what was learned (``status`` "answered" or "dropped"), or
        reopen it (``status`` "open")."""
        self._question(qid)
        try:
            st = QuestionStatus(status)
        except ValueError:
            raise EngineError(f"a question is open, answered or dropped, not {status!r}") from None
        return self.journal.update_question(
            qid, status=st, answer=" ".join((answer or "").split()),
            answered_at=None if st == QuestionStatus.OPEN else time.time())

    def effect(self, exp: Experiment) -> Effect | None:
        """The improvement a judged candidate showed (positive = better) with its 95% interval."""
        return questions_mod.effect(exp, self.config.lower_is_better)

    def _question(self, qid: int) -> Question:
        try:
            return self.journal.question(qid)
        except KeyError as exc:
            raise EngineError(str(exc)) from None

    def _question_state(self, q: Question, threshold: float | None) -> QuestionState:
        view = questions_mod.view(q, self.journal.testing(q.id), self.config.lower_is_better, threshold)
        return QuestionState(q.id, q.text, q.decision, q.status.value, q.answer,
                             [e.id for e in view.experiments], view.verdict)

    def sync_program_questions(self) -> list[Question]:
        """Add the questions of program.md's ``## Questions`` section not asked yet (matched by
        their text, whatever their status: a closed one is not asked again). Returns the new ones."""
        program = self.workspace / "program.md"
        try:
            text = program.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
        known = {q.text for q in self.journal.questions()}
        added = []
        for q, decision in questions_mod.from_program(text):
            q = " ".join(q.split())[:MAX_QUESTION]
            if q not in known:
                known.add(q)
                added.append(self.journal.add_question(q, " ".join(decision.split())[:MAX_QUESTION],
                                                       source="program.md"))
        return added

    def view(self, exp_id: int) -> ExperimentView:
        """The experiment with its script before (parent) and after (as it runs)."""
        exp = self.journal.get(exp_id)
        if not exp.parent_commit:
            return ExperimentView(exp, self.script_name, None, None)
        before = self.ratchet.read_script(exp.parent_commit)
        try:
            after: str | None = self.core.experiment_source(exp)
        except EditError:  # a stored edit that no longer applies: the commit it ran as, if any
            after = self.ratchet.read_script(exp.commit) if exp.commit else None
        return ExperimentView(exp, self.script_name, before, after)

    def experiment_source(self, exp_id: int) -> str:
        """The train script as the experiment ran it (or would run it)."""
        return self.core.experiment_source(self.journal.get(exp_id))

    def results_path(self) -> Path:
        """Where results.tsv goes (next to the config unless a file there is not ours)."""
        return self.trials.results_path()

    # -- proposals -----------------------------------------------------------------------------------
    def propose(self, kind: str | None = None, iteration: int = 0) -> Experiment:
        """Ask a proposer for an edit; an invalid one is recorded as rejected, never run."""
        return self.proposals.propose(kind, iteration)

    def add_proposal(
        self, proposal: Proposal, base_source: str | None = None, base_commit: str | None = None
    ) -> Experiment:
        """Record a proposal (any proposer's or the user's) against the research branch head."""
        return self.proposals.add(proposal, base_source, base_commit)

    def propose_diff(self, diff: str, hypothesis: str, predicted_delta: float | None = None,
                     question: int | None = None) -> Experiment:
        """A user's own edit as a unified diff against the research branch head."""
        if question is not None:
            self._question(question)
        return self.proposals.add_diff(diff, hypothesis, predicted_delta, question)

    def edit_status(self, text: str) -> EditStatus:
        """What running ``text`` (the researcher's file) would run, against the research head."""
        head = self.head()
        status = edit_status(self.ratchet.read_script(head), text, head, self.script_name)
        if status.differs:
            status.behind = self._kept_since(code_hash(text))
            if status.behind:
                kept = ", ".join(f"#{i}" for i in status.behind)
                status.summary = (f"{self.script_name} is the research head as it was before {kept} "
                                  f"{'was' if len(status.behind) == 1 else 'were'} kept: Run My Edit would undo "
                                  f"{'it' if len(status.behind) == 1 else 'them'}; adopt the head first "
                                  f"(sigmaloop adopt {status.behind[-1]})")
        return status

    def _kept_since(self, code: str) -> list[int]:
        """The candidates kept after the research branch last ran code ``code`` (its older head):
        what a file holding that code lacks. Empty when the code never was a head."""
        exps = self.journal.slim()
        was_head = [e.id for e in exps if e.code_hash == code and e.status == Status.KEPT]
        if not was_head:
            return []
        return [e.id for e in exps if e.id > max(was_head) and e.status == Status.KEPT
                and not e.is_baseline and e.confirms is None]

    def run_edit(self, new_source: str, hypothesis: str = "", predicted_delta: float | None = None,
                 question: int | None = None) -> Experiment:
        """The researcher's own edit of the train script (their file's text) as an experiment:
        recorded against the research head (source ``user``), accepted and queued; run it with
        :meth:`run_if_queued`. Refuses text equal to the head (that is the baseline) and an edit
        that does not parse or passes the guard's check badly (the rejected row stays, with why)."""
        status = self.edit_status(new_source)
        if status.behind:
            raise EngineError(status.summary)
        if not status.differs:
            raise EngineError(f"{self.script_name} is the same as the research head ({status.head}): "
                              "there is no edit to run; Run Baseline measures the head")
        if question is not None:
            self._question(question)
        hypothesis = " ".join((hypothesis or "").split()) or f"my edit: {status.summary_short}"
        exp = self.proposals.add(Proposal(new_source, hypothesis, "user", predicted_delta, question=question))
        if exp.status == Status.REJECTED:
            raise EngineError(f"#{exp.id} was not run: {exp.detail or exp.verdict}")
        return self.accept(exp.id)

    def accept(self, exp_id: int) -> Experiment:
        self.core.move(exp_id, Status.ACCEPTED, "accept it")
        exp = self.core.move(exp_id, Status.QUEUED)
        self.trials.queued(exp_id)
        return exp

    def reject(self, exp_id: int, reason: str | None = None) -> Experiment:
        reason = (reason or "").strip() or None
        exp = self.core.move(exp_id, Status.REJECTED, "reject it", rejection_reason=reason,
                             reason=Reason.USER_REJECTED, detail=reason or "")
        self.proposals.observe(exp)
        return exp

    def review_result(self, exp_id: int, accept: bool, note: str = "") -> Experiment:
        """The researcher's second look at an implausibly large gain (reason ``implausible``):
        accept keeps it (the research branch advances, as for any keep); reject leaves it
        discarded for good. Anything else says why it can't be reviewed."""
        return self.trials.review(exp_id, accept, note)

    # -- running -------------------------------------------------------------------------------------
    def run(self, exp_id: int, budget: float | None = None) -> Experiment:
        """Run a queued (or proposed: accepted first) experiment to its verdict, blocking."""
        if self.journal.get(exp_id).status == Status.PROPOSED:
            self.accept(exp_id)
        return self.trials.run(exp_id, budget)

    def run_if_queued(self, exp_id: int, budget: float | None = None) -> Experiment:
        """:meth:`run`, unless it was stopped (or taken) while it waited: then it is returned as is."""
        try:
            return self.run(exp_id, budget)
        except EngineError:
            exp = self.journal.get(exp_id)
            if exp.status in (Status.QUEUED, Status.PROPOSED):
                raise
            return exp

    def run_baseline(self, seeds: list[int] | None = None, budget: float | None = None) -> list[Experiment]:
        """Run the head's code unchanged on each seed (default: the judge's seeds), in parallel
        up to the slots; stop_all stops the seeds still waiting."""
        head = self.head()
        code = code_hash(self.ratchet.read_script(head))
        exps = [
            self.core.create(status=Status.QUEUED, source="baseline", parent_commit=head,
                             hypothesis=f"baseline (seed {seed})", seed=seed, code_hash=code, budget=budget)
            for seed in (seeds or self.config.judge.seeds)
        ]
        self.trials.queued(*(e.id for e in exps))
        return self._run_many([e.id for e in exps])

    def ensure_baseline(self, budget: float | None = None) -> list[Experiment]:
        """Run whatever baseline seeds the current head lacks (none when it has them all)."""
        ref = self.core.reference(budget=budget)
        missing = [s for s in self.config.judge.seeds if s not in ref.by_seed]
        return self.run_baseline(missing, budget) if missing else []

    def _run_many(self, ids: list[int]) -> list[Experiment]:
        if len(ids) == 1 or self.executor.slots == 1:
            return [self.run_if_queued(i) for i in ids]
        with ThreadPoolExecutor(max_workers=min(len(ids), self.executor.slots)) as pool:
            return list(pool.map(self.run_if_queued, ids))

    def recover(self) -> list[Experiment]:
        """Re-queue what a dead engine left running (done when the engine opens, and by the loop)."""
        return self.trials.recover()

    def requeued(self) -> list[int]:
        """Ids re-queued by recovery (when this engine opened, or now) still waiting to run;
        they count as queued by this engine from here on (stop_all stops them)."""
        ids = sorted({e.id for e in self.recovered} | {e.id for e in self.recover()})
        self.recovered = []
        waiting = [i for i in ids if self.journal.get(i).status == Status.QUEUED]
        self.trials.queued(*waiting)
        return waiting

    # -- the loop and stopping -----------------------------------------------------------------------
    def loop(
        self,
        iterations: int,
        budget: float | None = None,
        proposer: str | None = None,
        on_iteration: Callable[[int, Experiment], None] | None = None,
    ) -> list[Experiment]:
        """Propose → run → judge → ratchet, ``iterations`` times or until stopped."""
        return self._loop.run(iterations, budget, proposer, on_iteration)

    @property
    def loop_running(self) -> bool:
        return self._loop.running

    @property
    def stopping(self) -> bool:
        return self._loop.stopping

    def stop_all(self) -> list[int]:
        """Stop means stop: the loop after its current step, every experiment this engine
        queued and has not started (they become interrupted, so they never start), and every
        trial this process runs. Returns the ids it stopped."""
        self._loop.stop()
        return self.trials.stop_all()

    def stop_experiment(self, exp_id: int) -> bool:
        """Stop one running trial of this process; False when it runs nowhere here."""
        return self.trials.stop(exp_id)

    # -- the user's file -----------------------------------------------------------------------------
    def _adoptable(self, exp_id: int) -> Experiment:
        exp = self.journal.get(exp_id)
        if exp.status != Status.KEPT or exp.is_baseline or exp.confirms is not None:
            what = "a baseline" if exp.is_baseline else (
                f"a confirmation of #{exp.confirms}" if exp.confirms is not None else exp.status.value)
            raise EngineError(f"experiment #{exp_id} is {what}; only kept experiments can be adopted")
        return exp

    def adopt(self, exp_id: int) -> Path:
        """Write a kept experiment's script into the user's file (never over their edits:
        ratchet.AdoptConflict says what to do)."""
        self._adoptable(exp_id)
        return self.ratchet.adopt(exp_id)

    def adoption(self, exp_id: int, editor_text: str | None, editor_saved_text: str | None) -> Adoption:
        """What adopting into an open editor writes, or why it can't: ``editor_text`` is the
        buffer, ``editor_saved_text`` the file as saved (None: unknown). Refuses (EngineError)
        an experiment that is not kept, a buffer with unsaved edits, a file with uncommitted
        edits; the caller applies ``new_text`` to the buffer (undoable)."""
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
