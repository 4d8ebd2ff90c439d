"""What every part of the engine shares: one workspace's settings, journal, ratchet and events.

:class:`Core` is the engine's inside, not an adapter's API (adapters call :class:`~.engine.Engine`).
Every status change goes through :meth:`Core.move` (the lifecycle's compare-and-set in the
journal) and every write is announced on the event bus.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

from . import config as config_mod
from . import evaluator
from .config import Config
from .diff import apply_unified_diff
from .events import EventBus, ExperimentUpdated, Notice
from .journal import Journal
from .judge import Judge, Reference, reference_for
from .lifecycle import IllegalTransition, describe
from .models import Experiment, Status, code_hash
from .ratchet import Ratchet


class EngineError(RuntimeError):
    """An operation that can't be done now; the message says why and what to do."""


class Core:
    def __init__(self, workspace: Path, config: Config, bus: EventBus) -> None:
        self.workspace = workspace
        self.config = config
        self.state_dir = config_mod.state_dir(workspace)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        (self.state_dir / "metrics").mkdir(exist_ok=True)
        exp_cfg = config.experiment
        self.journal = Journal(self.state_dir / "journal.db",
                               caption=lambda e: describe(e, self.config.experiment.metric))
        self.ratchet = Ratchet(workspace, exp_cfg.tag, exp_cfg.train_script)
        self.ratchet.ensure_ignored()
        self.bus = bus
        self.judge = Judge(config.judge, config.lower_is_better, exp_cfg.metric)
        self.lock = threading.RLock()  # one ratchet move (and the bookkeeping around it) at a time
        self._measured_as: dict[tuple[str, str, str], tuple[str, str]] = {}  # commits never change

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.judge = Judge(config.judge, config.lower_is_better, config.experiment.metric)

    @property
    def script_name(self) -> str:
        return self.config.experiment.train_script

    # -- writes: every one announced -----------------------------------------------------------
    def update(self, exp_id: int, **fields) -> Experiment:
        """Fields that are not the status (the status changes only through :meth:`move`)."""
        exp = self.journal.update(exp_id, **fields)
        self.bus.emit(ExperimentUpdated(exp))
        return exp

    def move(self, exp_id: int, to: Status, action: str = "", *, expect_rev: int | None = None,
             **fields) -> Experiment:
        """Change an experiment's status through the lifecycle (compare-and-set in the journal:
        another thread or process may have moved it first); an illegal move says what it is now.
        ``expect_rev``: only if the row is as read then (journal.ConcurrentChange otherwise)."""
        try:
            exp = self.journal.move(exp_id, to, action, expect_rev=expect_rev, **fields)
        except IllegalTransition as exc:
            raise EngineError(str(exc)) from None
        self.bus.emit(ExperimentUpdated(exp))
        return exp

    def create(self, **fields) -> Experiment:
        exp = self.journal.create(**fields)
        self.bus.emit(ExperimentUpdated(exp))
        return exp

    # -- the research branch's code --------------------------------------------------------------
    def head(self) -> str:
        """The research branch's head (made from the user's HEAD the first time)."""
        sha = self.ratchet.ensure_branch()
        if self.ratchet.warning:  # the branch was just made while the user's script had edits
            self.bus.emit(Notice(self.ratchet.warning))
            self.ratchet.warning = None
        return sha

    def head_source(self) -> str:
        return self.ratchet.read_script(self.head())

    def reference(self, experiments: list[Experiment] | None = None, budget: float | None = None) -> Reference:
        """The head's code as measured so far, per seed, at ``budget`` (default: the configured
        one) and with the head's evaluator; of those, on the data and device it last ran on."""
        exps = experiments if experiments is not None else self.journal.list()
        budget = budget or self.config.experiment.budget
        code, ident = self.measured_as(self.head())
        last = max((e for e in exps if e.code_hash == code and e.evaluator == ident and e.metric is not None
                    and e.budget is not None and math.isclose(e.budget, budget, rel_tol=1e-6)),
                   key=lambda e: e.id, default=None)
        data, device = (last.data, last.device) if last is not None else ("", "")
        return reference_for(exps, code, budget=budget, evaluator=ident, data=data, device=device)

    def measured_as(self, commit: str) -> tuple[str, str]:
        """The code hash of ``commit``'s script and the evaluator that scores experiments on it;
        cached per commit (state() asks up to 4 times a second; a commit never changes)."""
        e = self.config.experiment
        key = (commit, e.metric, e.evaluator)
        found = self._measured_as.get(key)
        if found is None:
            spec = evaluator.spec_for(self.ratchet, self.state_dir, commit, e.metric, e.evaluator)
            found = (code_hash(self.ratchet.read_script(commit)),
                     spec.identity if spec is not None else evaluator.SELF_REPORTED)
            self._measured_as[key] = found
        return found

    def sigma(self, experiments: list[Experiment] | None = None) -> float | None:
        exps = experiments if experiments is not None else self.journal.list()
        return self.judge.sigma(exps, self.reference(exps))

    def source_of(self, exp: Experiment) -> str | None:
        """The script an experiment runs; None when it runs its parent unchanged."""
        if not exp.diff:
            return None
        return apply_unified_diff(self.ratchet.read_script(exp.parent_commit), exp.diff)

    def experiment_source(self, exp: Experiment) -> str:
        """The train script as the experiment ran it (or would run it)."""
        src = self.source_of(exp)
        return src if src is not None else self.ratchet.read_script(exp.parent_commit)
