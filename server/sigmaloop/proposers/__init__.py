"""Proposers: where edits of the train script come from.

``make_proposer(kind, config, state_dir)`` builds one by kind; other kinds (e.g. "llm")
register themselves with ``register_proposer``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sigmaloop.proposers.base import Proposal, ProposalContext, ProposalError, Proposer

__all__ = [
    "Proposal",
    "ProposalContext",
    "ProposalError",
    "Proposer",
    "make_proposer",
    "proposer_kinds",
    "register_proposer",
]

#: kind -> factory(config, state_dir) -> Proposer
_REGISTRY: dict[str, Callable[[Any, Path | None], Proposer]] = {}


def register_proposer(kind: str, factory: Callable[[Any, Path | None], Proposer]) -> None:
    """Make ``make_proposer(kind, ...)`` call ``factory(config, state_dir)``."""
    _REGISTRY[kind] = factory


def proposer_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _make_tune(config: Any, state_dir: Path | None) -> Proposer:
    from sigmaloop.proposers.tune import TuneProposer

    return TuneProposer.from_config(config, state_dir)


register_proposer("tune", _make_tune)


def _make_llm(config: Any, state_dir: Path | None) -> Proposer:
    from sigmaloop.proposers.llm import LLMProposer

    return LLMProposer.from_config(config, state_dir)


register_proposer("llm", _make_llm)


def make_proposer(kind: str, config: Any, state_dir: Path | str | None) -> Proposer:
    """Build a proposer of ``kind`` from the workspace ``Config`` and its state dir."""
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise ValueError(
            f"unknown proposer kind {kind!r} (known: {', '.join(proposer_kinds())}); "
            "check proposer.kind in sigmaloop.toml"
        )
    return factory(config, Path(state_dir) if state_dir is not None else None)
