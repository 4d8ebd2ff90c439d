"""Engine events: adapters (CLI, language server) subscribe; the engine never imports them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .models import Experiment, ProgressRecord

log = logging.getLogger(__name__)


@dataclass
class ExperimentUpdated:
    experiment: Experiment


@dataclass
class TrialProgress:
    exp_id: int
    records: list[ProgressRecord]


@dataclass
class LoopState:
    running: bool
    iteration: int = 0
    iterations: int = 0
    message: str = ""


@dataclass
class Notice:
    """Something the user should read that is no experiment's verdict (e.g. the research
    branch started from the committed script while the working copy has edits)."""

    message: str
    level: str = "warning"  # "info" | "warning" | "error"


Event = ExperimentUpdated | TrialProgress | LoopState | Notice
Listener = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out. Listeners must be quick (hand work to their own loop/thread)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken adapter must not break the engine
                log.exception("event listener failed on %s", type(event).__name__)
