"""Proposals: ask a proposer (or take the user's edit), validate it, record it; tell proposers results.

An edit that cannot run (does not apply, does not parse, changes nothing, only the seed) is
recorded as ``rejected`` with the reason, never run. So is an edit the guard refuses
(:mod:`sigmaloop.guard`: reaching into the fixed evaluation, forging the summary, a run-time
route around either), whatever its source: the tuner, an LLM or the user; its detail is the
guard's message, prefixed with "guard: ".
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from . import guard, questions
from .core import Core
from .diff import EditError, apply_unified_diff, unified_diff
from .edits import validate_source
from .judge import reference_for
from .lifecycle import Reason
from .models import Experiment, Proposal, QuestionStatus, Status, code_hash
from .proposers import ProposalContext, ProposalError, make_proposer
from .state import head_experiment

log = logging.getLogger(__name__)


MAX_HYPOTHESIS = 2000  # characters kept of a proposal's hypothesis (a proposer may send megabytes)
MAX_RATIONALE = 8000
MAX_SOURCE = 200


def capped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    text = text or ""
    if len(text) <= limit:
        return text
    note = f" … [{len(text) - limit} characters cut]"
    return text[: limit - len(note)] + note


class Proposals:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._proposers: dict[str, object] = {}
        # a proposer is asked (the loop's thread) and told results (trial threads) at once with
        # parallel slots: one at a time per proposer (the tuner's study is not thread-safe)
        self._lock = threading.RLock()
        self._proposer_locks: dict[int, threading.Lock] = {}

    def reset(self) -> None:
        """Forget the proposers (new settings): they are made again on next use."""
        self._proposers.clear()

    def proposer(self, kind: str):
        with self._lock:
            if kind not in self._proposers:
                self._proposers[kind] = make_proposer(kind, self.core.config, self.core.state_dir)
            return self._proposers[kind]

    def _locked(self, proposer: object) -> threading.Lock:
        with self._lock:
            lock = self._proposer_locks.get(id(proposer))
            if lock is None:
                lock = self._proposer_locks[id(proposer)] = threading.Lock()
            return lock

    def kind_for(self, iteration: int) -> str:
        p = self.core.config.proposer
        if p.kind == "mixed":
            return p.mix[iteration % len(p.mix)]
        return p.kind

    def context(self, source: str) -> ProposalContext:
        core = self.core
        exps = core.journal.list()
        if source == core.head_source():  # the head's reference, at the configured budget
            ref = core.reference(exps)
        else:  # the same code, under whatever conditions it ran
            ref = reference_for(exps, code_hash(source), evaluator=None, data=None, device=None)
        best = head_experiment(exps, ref) if ref.value is not None else None
        if best is not None:  # "best so far" is the head's reference (its mean), not one seed
            best = replace(best, metric=ref.value)
        program = core.workspace / "program.md"
        return ProposalContext(
            source=source,
            script_name=core.script_name,
            experiments=exps,
            best=best,
            sigma=core.judge.sigma(exps, ref),
            metric=core.config.experiment.metric,
            lower_is_better=core.config.lower_is_better,
            program=program.read_text(encoding="utf-8") if program.exists() else "",
            state_dir=core.state_dir,
            questions=[q for q in core.journal.questions() if q.status == QuestionStatus.OPEN],
        )

    def propose(self, kind: str | None = None, iteration: int = 0) -> Experiment:
        """Ask a proposer for an edit; an invalid one is recorded as rejected, never run."""
        core = self.core
        kind = kind or self.kind_for(iteration)
        proposer = self.proposer(kind)
        head = core.head()  # read once: the edit, its parent and its diff all refer to this head
        ctx = self.context(core.ratchet.read_script(head))
        try:
            with self._locked(proposer):
                proposal = proposer.propose(ctx)
        except Exception as exc:  # a failed proposal is one rejected iteration, not a dead loop
            if not isinstance(exc, ProposalError):
                log.exception("proposer %s failed", kind)
            detail = str(exc) if isinstance(exc, ProposalError) else f"{type(exc).__name__}: {exc}"
            return core.create(
                status=Status.REJECTED, source=getattr(proposer, "name", kind),
                parent_commit=head, reason=Reason.PROPOSER_ERROR, detail=detail,
                usage=dict(getattr(exc, "usage", None) or {}),
            )
        return self.add(proposal, base_source=ctx.source, base_commit=head)

    def add(self, proposal: Proposal, base_source: str | None = None, base_commit: str | None = None) -> Experiment:
        """Record a proposal (from any proposer or the user) against the research branch head
        (or the commit it was written against; if the branch moved on since, the judge's
        ratchet step refuses it as stale instead of running it on code it never saw)."""
        core = self.core
        head = base_commit or core.head()
        old = base_source if base_source is not None else core.ratchet.read_script(head)
        diff = unified_diff(old, proposal.new_source, core.script_name)
        params = dict(proposal.params or {})
        usage = params.pop("usage", None) or {}  # e.g. LLM tokens: its own journal column
        fields = dict(
            source=proposal.source[:MAX_SOURCE], hypothesis=capped(proposal.hypothesis, MAX_HYPOTHESIS),
            predicted_delta=proposal.predicted_delta, rationale=capped(proposal.rationale, MAX_RATIONALE),
            parent_commit=head, params=params, usage=dict(usage), diff=diff,
            code_hash=code_hash(proposal.new_source),
            question=self._question_of(proposal, diff),
        )
        try:
            validate_source(proposal.new_source, old)
            guard.check_edit(old, proposal.new_source, core.config.experiment.metric)
        except EditError as exc:
            detail = f"guard: {exc}" if isinstance(exc, guard.GuardViolation) else str(exc)
            exp = core.create(status=Status.REJECTED, reason=Reason.INVALID_EDIT, detail=detail, **fields)
            self.observe(exp)
            return exp
        return core.create(status=Status.PROPOSED, **fields)

    def _question_of(self, proposal: Proposal, diff: str) -> int | None:
        """The question a proposal tests: the one it names (if it exists), else the one open
        question that names a constant the edit changes (none when that is ambiguous)."""
        journal = self.core.journal
        if proposal.question is not None:
            try:
                return journal.question(proposal.question).id
            except KeyError:
                log.info("proposal names Q%s, which does not exist", proposal.question)
                return None
        open_ = [q for q in journal.questions() if q.status == QuestionStatus.OPEN]
        return questions.match(open_, questions.changed_names(diff)) if open_ else None

    def add_diff(self, diff: str, hypothesis: str, predicted_delta: float | None = None,
                 question: int | None = None) -> Experiment:
        """A user's own edit as a unified diff against the research branch head."""
        core = self.core
        head = core.head()
        old = core.ratchet.read_script(head)
        try:
            new = apply_unified_diff(old, diff)
        except EditError as exc:
            return core.create(status=Status.REJECTED, source="user", hypothesis=hypothesis,
                               parent_commit=head, diff=diff, reason=Reason.INVALID_EDIT,
                               detail=f"edit does not apply: {exc}")
        return self.add(Proposal(new, hypothesis, "user", predicted_delta, question=question), base_source=old)

    def observe(self, exp: Experiment) -> None:
        """Tell the proposer that made it how an experiment ended (the tuner's ask-and-tell)."""
        if exp.confirms is not None:
            return
        kind = "tune" if exp.source == "tune" else ("llm" if exp.source.startswith("llm") else None)
        if kind is None:
            return
        try:
            proposer = self.proposer(kind)
            with self._locked(proposer):
                proposer.observe(exp)
        except Exception:
            log.exception("proposer %s failed to observe #%s", kind, exp.id)
