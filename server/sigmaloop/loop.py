"""The research loop: recover, make sure there is a baseline, then propose → run → judge, N times.

It only orchestrates the engine's own operations (so the loop does exactly what a person doing
the same steps by hand would); stopping is a flag it checks between steps. With N slots it keeps
N trials in flight: a new proposal as soon as a slot frees up (the tuner's constant liar and the
LLM's "in flight" list keep them apart), and a would-be keep whose parent moved on meanwhile is
rebased onto the new head and re-run (trials.py), not lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
            self._iterate(iterations, budget, proposer, on_iteration, done)
        finally:
            self._emit(False, len(done), iterations, "stopped" if self._stop.is_set() else "done")
            self._busy.release()
        return done

    def _iterate(self, iterations: int, budget: float | None, proposer: str | None,
                 on_iteration: Callable[[int, Experiment], None] | None, done: list[Experiment]) -> None:
        """Propose into free slots and run; every slot busy while proposals last."""
        engine = self.engine
        slots = max(1, engine.slots)
        in_flight: dict[Future[Experiment], int] = {}
        proposed = 0

        count = 0

        def finished(exp: Experiment) -> None:
            nonlocal count
            done.append(exp)
            if on_iteration:
                on_iteration(count, exp)
            count += 1

        with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="loop") as pool:
            while True:
                while len(in_flight) < slots and proposed < iterations and not self._stop.is_set():
                    proposed += 1
                    self._emit(True, proposed, iterations, "proposing")
                    exp = engine.propose(proposer, iteration=proposed - 1)
                    if self._stop.is_set():  # stopped while proposing: leave it proposed, run nothing
                        done.append(exp)
                        break
                    if exp.status != Status.PROPOSED:  # refused by the guard, or the proposer failed
                        finished(exp)
                        continue
                    engine.accept(exp.id)
                    in_flight[pool.submit(engine.run_if_queued, exp.id, budget)] = exp.id
                    running = ", ".join(f"#{i}" for i in sorted(in_flight.values()))
                    self._emit(True, proposed, iterations, f"running {running}")
                if not in_flight:
                    return
                ready, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in ready:
                    del in_flight[fut]
                    finished(fut.result())
