"""The research loop: recover, make sure there is a baseline, then propose → run → judge, N times.

It only orchestrates the engine's own operations (so the loop does exactly what a person doing
the same steps by hand would); stopping is a flag it checks between steps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .core import EngineError
from .events import LoopState
from .models import Experiment, Status
from .state import LoopStatus

if TYPE_CHECKING:
    from .engine import Engine


class Loop:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self.status = LoopStatus()

    @property
    def running(self) -> bool:
        return self._busy.locked()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop after the current step."""
        self._stop.set()

    def _emit(self, running: bool, iteration: int, iterations: int, phase: str) -> None:
        self.status = LoopStatus(running, iteration, iterations, phase)
        self.engine.bus.emit(LoopState(running, iteration, iterations, phase))

    def run(
        self,
        iterations: int,
        budget: float | None = None,
        proposer: str | None = None,
        on_iteration: Callable[[int, Experiment], None] | None = None,
    ) -> list[Experiment]:
        """Propose → run → judge → ratchet, ``iterations`` times or until :meth:`stop`."""
        if not self._busy.acquire(blocking=False):
            raise EngineError("a loop is already running in this engine; stop it first")
        self._stop.clear()
        engine = self.engine
        done: list[Experiment] = []
        try:
            self._emit(True, 0, iterations, "starting")
            for exp_id in engine.requeued():  # what a dead engine left running, re-queued
                if self._stop.is_set():
                    break
                done.append(engine.run_if_queued(exp_id, budget))
            if not self._stop.is_set():
                engine.ensure_baseline(budget)
                if engine.sigma() is None and not self._stop.is_set():
                    raise EngineError("the baseline did not give a noise estimate (a seed crashed?): "
                                      "see `sigmaloop log`, fix the script, then run the loop again")
            for i in range(iterations):
                if self._stop.is_set():
                    break
                self._emit(True, i + 1, iterations, "proposing")
                exp = engine.propose(proposer, iteration=i)
                if self._stop.is_set():  # stopped while proposing: leave it proposed, run nothing
                    done.append(exp)
                    break
                if exp.status == Status.PROPOSED:
                    engine.accept(exp.id)
                    self._emit(True, i + 1, iterations, f"running #{exp.id}")
                    exp = engine.run_if_queued(exp.id, budget)
                done.append(exp)
                if on_iteration:
                    on_iteration(i, exp)
        finally:
            self._emit(False, len(done), iterations, "stopped" if self._stop.is_set() else "done")
            self._busy.release()
        return done
