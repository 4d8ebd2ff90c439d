"""Diagnostics on the train script: crashes at their line, loss-curve anomalies, implausible
gains waiting for a look, tampered and over-budget results, pending proposals; and the refresh
that follows any change (diagnostics, then inlay hints and the experiments' code lenses).

A crash line is anchored by its text in the experiment's own script (one git read through the
engine, cached); until that text is fetched the line is placed through the diff. Once placed it
is tracked: edits above it shift where it is looked for (:meth:`Diagnostics.edited`), and it is
found there by its text (or a recognisable edit of it); a crash line deleted or changed beyond
recognition takes its diagnostic with it. Crash and curve-anomaly diagnostics carry
``data.expId`` and offer "Open log of #N" (:func:`render.log_actions`); anomaly diagnostics
(``data.anomaly``: the kind) also "Show curve of #N" and "Dismiss <kind> on #N"
(:func:`render.anomaly_actions`).

Anomalies come from :meth:`Engine.anomalies` (the dismissed ones left out), read again whenever
the experiment takes a new revision (a dismissal bumps it, in this process or another); a
dismissal from this editor updates the list at once (:meth:`Diagnostics.dismissed`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types

from ..anomaly import Anomaly
from ..diff import parent_line
from ..models import FINISHED, Experiment, Status
from . import render

if TYPE_CHECKING:
    from .server import SigmaloopServer

log = logging.getLogger(__name__)

RECENT_CRASHES = 10  # crash diagnostics for the newest N crashed experiments
RECENT_ANOMALIES = 20  # anomaly warnings for the newest N finished experiments
RECENT_FLAGGED = 20  # implausible / tampered / over-budget diagnostics for the newest N
REFRESH_DEBOUNCE = 0.05  # s


class Diagnostics:
    def __init__(self, ls: SigmaloopServer) -> None:
        self.ls = ls
        self.crash_text: dict[int, str | None] = {}
        self.anomalies: dict[int, list[Anomaly]] = {}
        self._analysed: dict[int, int] = {}  # id → the revision its anomalies were read at
        self._asked: dict[int, int] = {}  # id → the newest read asked for (an older answer is dropped)
        self.published: list[types.Diagnostic] | None = None
        self.crash_at: dict[int, int] = {}  # id → the line its crash diagnostic was tracked to
        self._lensed: list[tuple[int, str, str]] | None = None  # what the experiments' lenses showed
        self._handle: asyncio.TimerHandle | None = None

    # --- what finished experiments leave behind ------------------------------------------
    def finished(self, e: Experiment) -> None:
        """Look at a finished experiment: fetch its crash line, or check its curve."""
        if e.status == Status.CRASHED and e.crash is not None:
            self._fetch_crash_text(e)
        elif e.status in FINISHED:
            self._analyse(e)

    def _fetch_crash_text(self, e: Experiment) -> None:
        engine = self.ls.engine
        if e.id in self.crash_text or engine is None:
            return

        async def fetch() -> None:
            try:
                lines = (await asyncio.to_thread(engine.experiment_source, e.id)).splitlines()
                text = lines[e.crash.line - 1] if 0 < e.crash.line <= len(lines) else None
            except Exception:
                text = None
            self.crash_text[e.id] = text
            self.schedule(0)

        self.ls.spawn(fetch())

    def _analyse(self, e: Experiment | render.Row) -> None:
        engine = self.ls.engine
        if self._analysed.get(e.id) == e.rev or engine is None or not e.started_at:
            return
        self._analysed[e.id] = e.rev
        self.anomalies.setdefault(e.id, [])
        ask = self._asked[e.id] = self._asked.get(e.id, 0) + 1

        async def run() -> None:
            try:
                found = await asyncio.to_thread(engine.anomalies, e.id)
            except Exception:
                log.exception("anomaly check of #%s failed", e.id)
                return
            if self._asked.get(e.id) != ask:
                return  # a newer read (or a dismissal) answered already
            if found != self.anomalies.get(e.id):
                self.anomalies[e.id] = found
                self.schedule(REFRESH_DEBOUNCE)

        self.ls.spawn(run())

    def dismissed(self, exp_id: int, left: list[Anomaly]) -> None:
        """A dismissal from this editor: what is left of the experiment's anomalies, shown now."""
        self._asked[exp_id] = self._asked.get(exp_id, 0) + 1  # a read under way is out of date
        self.anomalies[exp_id] = list(left)
        self.schedule(0)

    def _recent(self) -> tuple[list[render.Row], list[render.Row]]:
        rows = sorted(self.ls.script.rows.values(), key=lambda e: e.id, reverse=True)
        script = Path(self.ls.engine.script_name if self.ls.engine else "train.py").as_posix()
        crashed = [e for e in rows if e.status == Status.CRASHED and e.crash is not None
                   and Path(e.crash.file).as_posix() == script][:RECENT_CRASHES]
        finished = [e for e in rows if e.status in FINISHED and e.started_at][:RECENT_ANOMALIES]
        return crashed, finished

    def start(self) -> None:
        """At start-up: the newest crashes and finished runs already in the journal."""
        crashed, finished = self._recent()
        for e in finished:
            self._analyse(e)
        for e in crashed:
            self._fetch_crash_text(e)

    # --- the list -------------------------------------------------------------------------
    def compute(self) -> list[types.Diagnostic]:
        index = self.ls.script.index()
        doc = index.doc
        crashed, finished = self._recent()
        questions = self.ls.sync.questions()
        out: list[types.Diagnostic] = []
        for e in crashed:
            text, near = self.crash_text.get(e.id), e.crash.line - 1
            if text is None:  # not fetched yet: place it through the diff, no git needed
                old_line, text = parent_line(e.diff, e.crash.line)
                near = old_line - 1
            tracked = e.id in self.crash_at
            line = render.locate_crash(doc, text, self.crash_at.get(e.id, near), tracked)
            if line is None and tracked:  # the crash line left the document: so does its diagnostic
                del self.crash_at[e.id]
                continue
            if line is None:  # its text was never here (a line the edit added): at the edit
                en = index.entries.get(e.id)
                if en is None or not en.ranges:
                    continue
                line = en.ranges[0][0]
            elif e.id in self.crash_text:  # placed by its own text: tracked from here on
                self.crash_at[e.id] = line
            out.append(render.crash_diagnostic(doc, e, line))
        for e in finished:
            en = index.entries.get(e.id)
            if en is not None and self.anomalies.get(e.id):
                out += render.anomaly_diagnostics(doc, en, self.anomalies[e.id])
        for en in index.flagged[:RECENT_FLAGGED]:
            d = render.flagged_diagnostic(doc, en, index.metric)
            if d is not None:
                out.append(d)
        for en in index.pending:
            out += render.proposal_diagnostics(doc, en, questions)
        return out

    def edited(self, changes: list) -> None:
        """The open document changed: tracked crash lines below an edit move with it (a change
        that touches the line itself leaves it where it is: its text decides)."""
        for change in changes:
            rng = getattr(change, "range", None)
            if rng is None:  # the whole text replaced: found again by their text
                self.crash_at.clear()
                return
            start, end = rng.start.line, rng.end.line
            shift = change.text.count("\n") - (end - start)
            if not shift:
                continue
            for exp_id, line in list(self.crash_at.items()):
                if line > end or (line == end and (end > start or rng.end.character == 0)):
                    self.crash_at[exp_id] = line + shift  # wholly after the edit
                elif start < line < end:
                    self.crash_at[exp_id] = start  # among the replaced lines: its text decides

    def publish(self) -> None:
        script = self.ls.script
        if script.uri is None:
            return
        diags = self.compute()
        if diags == self.published:
            return
        self.published = diags
        doc = script.open_doc()
        self.ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=doc.uri if doc is not None else script.uri, diagnostics=diags,
            version=doc.version if doc is not None else None))

    # --- refresh after a change -----------------------------------------------------------
    def schedule(self, delay: float = REFRESH_DEBOUNCE) -> None:
        """Diagnostics and inlay hints again, soon (a zero delay jumps the queue)."""
        ls = self.ls
        if ls.closed:
            return
        if self._handle is not None:
            if delay > 0:
                return
            self._handle.cancel()
        self._handle = asyncio.get_running_loop().call_later(delay, self._refresh)

    def _refresh(self) -> None:
        self._handle = None
        if self.ls.closed or self.ls.engine is None:
            return
        self.publish()
        if self.ls.supports("workspace", "inlay_hint", "refresh_support"):
            self.ls.workspace_inlay_hint_refresh(None)
        lensed = [(en.exp.id, en.exp.status.value, en.exp.reason)
                  for en in self.ls.script.index().flagged[:render.FLAGGED_LENSES]]
        if lensed != self._lensed:
            self._lensed = lensed
            if self.ls.supports("workspace", "code_lens", "refresh_support"):
                self.ls.workspace_code_lens_refresh(None)
