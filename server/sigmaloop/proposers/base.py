"""The one interface every proposer implements (built-in tuner, LLM, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from sigmaloop.models import Experiment, Proposal, Question


class ProposalError(Exception):
    """A proposer could not produce a valid proposal; the message says why."""


@dataclass
class ProposalContext:
    """What a proposer sees when asked for the next edit."""

    source: str  # current train script (the research branch head's version)
    script_name: str  # e.g. "train.py"
    experiments: list[Experiment]  # the journal so far (oldest first)
    best: Experiment | None
    sigma: float | None
    metric: str  # e.g. "val_bpb"
    lower_is_better: bool
    program: str = ""  # program.md text if present
    state_dir: Path | None = None  # .sigmaloop/ (proposers persist state here)
    questions: list[Question] = field(default_factory=list)  # the researcher's open questions


@runtime_checkable
class Proposer(Protocol):
    name: str

    def propose(self, ctx: ProposalContext) -> Proposal:
        """The next edit to try; raises ProposalError when there is none."""
        ...

    def observe(self, experiment: Experiment) -> None:
        """Told every finished result (kept, discarded, crashed, timeout, rejected).

        Must be idempotent: the engine may tell the same experiment twice (e.g. after a
        restart).
        """
        ...
