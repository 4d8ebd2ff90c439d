"""Trial progress for the client: ``sigmaloop/trialProgress`` batches (at most 10 Hz per
experiment) and a ``$/progress`` bar (work-done progress) for each trial this server runs,
cancellable from the client (cancel stops that trial). Once the budget is spent the bar says
"evaluating…" (the fixed evaluator scores the model), then "judging…".
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from lsprotocol import types

from ..lifecycle import Phase
from ..models import Experiment, ProgressRecord, Status
from . import protocol, render

if TYPE_CHECKING:
    from .server import SigmaloopServer

FLUSH_EVERY = 0.1  # s: trialProgress at most 10 Hz
TRAINED = 0.999  # frac from which the training is over (then the evaluation runs)


class Progress:
    def __init__(self, ls: SigmaloopServer) -> None:
        self.ls = ls
        self._pending: dict[int, list[ProgressRecord]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._tokens: dict[int, str] = {}
        self._token_ids: dict[str, int] = {}
        self._bars: dict[int, asyncio.Future] = {}  # id → creating the bar (True when it exists)

    # --- sigmaloop/trialProgress ----------------------------------------------------------
    def add(self, exp_id: int, records: list[ProgressRecord]) -> None:
        self._pending.setdefault(exp_id, []).extend(records)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_EVERY, self._send)

    def _send(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        for exp_id, records in pending.items():
            if records:
                self.ls.notify(protocol.TRIAL_PROGRESS, {
                    "expId": exp_id, "records": [protocol.progress(r) for r in records]})
                self._report(exp_id, records[-1])

    # --- $/progress -------------------------------------------------------------------------
    def follow(self, e: Experiment, own: bool) -> None:
        """An experiment changed: a bar begins for a trial this server runs, ends after it."""
        if e.status == Status.RUNNING and own:
            self._begin(e)
        elif e.status != Status.RUNNING and e.id in self._tokens:
            self._end(e)

    def _begin(self, e: Experiment) -> None:
        ls = self.ls
        if e.id in self._tokens or not ls.supports("window", "work_done_progress"):
            return
        token = f"sigmaloop-exp-{e.id}-{e.attempts}"
        self._tokens[e.id] = token
        self._token_ids[token] = e.id
        title = f"exp #{e.id}" + (f": {render._short(e.hypothesis, 60)}" if e.hypothesis else "")

        async def create() -> bool:
            try:
                await asyncio.wait_for(ls.work_done_progress.create_async(token), 5)
            except Exception:
                return False
            ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=title, cancellable=True, percentage=0, message="starting"))
            return True

        self._bars[e.id] = ls.spawn(create())

    def _report(self, exp_id: int, last: ProgressRecord) -> None:
        bar = self._bars.get(exp_id)
        if bar is None or not bar.done() or not bar.result():
            return
        pct = int(max(0.0, min(1.0, last.frac)) * 100)
        loss = f"loss {last.loss:.4f}" if last.loss is not None and math.isfinite(last.loss) \
            else f"loss {last.loss}"
        message = f"{loss} · step {last.step}"
        if last.frac >= TRAINED:  # the budget is spent: the fixed evaluator scores the model now
            message = f"evaluating… ({message})"
        self.ls.work_done_progress.report(self._tokens[exp_id], types.WorkDoneProgressReport(
            percentage=pct, message=message, cancellable=True))

    def phase(self, e: Experiment) -> None:
        """A running trial's phase moved on: judging says so in its bar."""
        bar = self._bars.get(e.id)
        if e.status != Status.RUNNING or e.phase != Phase.JUDGING or bar is None or not bar.done() \
                or not bar.result():
            return
        self.ls.work_done_progress.report(self._tokens[e.id], types.WorkDoneProgressReport(
            percentage=100, message="judging…", cancellable=True))

    def _end(self, e: Experiment) -> None:
        token = self._tokens.pop(e.id, None)
        bar = self._bars.pop(e.id, None)
        if token is None or bar is None:
            return
        self._token_ids.pop(token, None)
        message = e.verdict or e.status.value

        async def end() -> None:
            if await bar:
                self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

        self.ls.spawn(end())

    def cancelled(self, token: str) -> None:
        exp_id = self._token_ids.get(str(token))
        if exp_id is not None and self.ls.engine is not None:
            self.ls.engine.stop_experiment(exp_id)
