"""Experiments → LSP shapes. Pure: no I/O, no server, no engine; unit-tested and benched.

The central piece is :class:`HistoryIndex`: for the current text of the train script it maps
every line to the experiments that touched it. Experiments carry unified diffs against *their*
parent commit, so a diff's line numbers drift from the document the user edits. Each changed
block is anchored by its text (the removed and the added lines): it lands on the line of the
document with that text nearest to the diff's own line number, and falls back to that number
when no line matches. The index is rebuilt when the journal or the document changes, never per
request; parsing a diff is cached per experiment (diffs do not change once proposed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types

from ..anomaly import Anomaly
from ..diff import DiffInfo, change_blocks
from ..lifecycle import Reason
from ..models import CrashLocation, Experiment, Status

SOURCE = "sigmaloop"
HISTORY_ROWS = 25  # rows of a hover table before "… N older"
MINUS = "−"

# --------------------------------------------------------------------------- compact rows


@dataclass(slots=True)
class Row:
    """What the server keeps of an experiment for rendering (10k of these stay small)."""

    id: int
    status: Status
    source: str
    hypothesis: str = ""
    predicted_delta: float | None = None
    diff: str = ""
    metric: float | None = None
    delta: float | None = None
    z: float | None = None
    verdict: str = ""
    crash: CrashLocation | None = None
    confirms: int | None = None
    started_at: float | None = None
    rev: int = 0
    sandboxed: bool | None = None
    reason: str = ""
    evaluator: str = ""

    @property
    def is_baseline(self) -> bool:
        return self.source == "baseline"

    @classmethod
    def of(cls, e: Experiment) -> Row:
        return cls(e.id, e.status, e.source, e.hypothesis, e.predicted_delta, e.diff, e.metric,
                   e.delta, e.z, e.verdict, e.crash, e.confirms, e.started_at, e.rev, e.sandboxed,
                   e.reason, e.evaluator)


# --------------------------------------------------------------------------- verdicts that need a word

#: results that can't be trusted: never shown like a keep
UNTRUSTED = frozenset({Status.TAMPERED, Status.OVER_BUDGET})
SELF_REPORTED = "self-reported"


def awaits_review(e: Experiment | Row) -> bool:
    """An implausibly large gain held back until the researcher accepts or rejects its result."""
    return e.status == Status.DISCARDED and e.reason == Reason.IMPLAUSIBLE.value


def flagged(e: Experiment | Row) -> bool:
    """Shown on its own in the editor: waiting for a look, or not to be trusted."""
    return e.status in UNTRUSTED or awaits_review(e)


def status_text(e: Experiment | Row) -> str:
    """The status as people read it: what it is, and why when the bare status would mislead."""
    if e.status == Status.OVER_BUDGET:
        return "over budget"
    if awaits_review(e):
        return "implausible"
    if e.reason in (Reason.RESULT_ACCEPTED.value, Reason.RESULT_REJECTED.value):
        return f"{e.status.value} after a look"
    return e.status.value


def untrusted_label(e: Experiment | Row) -> str:
    """``tampered: the printed metric is not the evaluator's (…)`` / ``over budget: …``."""
    label = status_text(e)
    text = e.verdict.strip()
    if text.startswith(label):
        text = text[len(label):].lstrip(" :")
    return f"{label}: {text}" if text else label


def delta_text(e: Experiment | Row, metric: str) -> str:
    """``−1.15 val_bpb at 163σ`` (three significant digits; z whole above 10)."""
    parts = []
    if e.delta is not None and math.isfinite(e.delta):
        parts.append(f"{e.delta:+.3g}".replace("-", MINUS) + (f" {metric}" if metric else ""))
    if e.z is not None and math.isfinite(e.z):
        parts.append(f"at {e.z:.0f}σ" if abs(e.z) >= 10 else f"at {e.z:.1f}σ")
    return " ".join(parts) or "a gain"


def implausible_message(e: Experiment | Row, metric: str) -> str:
    return f"#{e.id}: {delta_text(e, metric)} is implausibly large — look before keeping it"


# --------------------------------------------------------------------------- documents


class DocLines:
    """The current text of the script, with a text → line numbers lookup."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.where: dict[str, list[int]] = {}
        for i, line in enumerate(self.lines):
            s = line.strip()
            if s:
                self.where.setdefault(s, []).append(i)

    def __len__(self) -> int:
        return len(self.lines)

    def width(self, line: int) -> int:
        return len(self.lines[line]) if 0 <= line < len(self.lines) else 0

    def clamp(self, line: int) -> int:
        return max(0, min(line, max(len(self.lines) - 1, 0)))

    def locate(self, candidates: Iterable[tuple[str, int]], near: int) -> int:
        """The block start: the matching line nearest ``near``; ``near`` itself if none."""
        best: int | None = None
        for text, offset in candidates:
            for line in self.where.get(text, ()):
                start = line - offset
                if best is None or abs(start - near) < abs(best - near):
                    best = start
        return self.clamp(near if best is None else best)

    def locate_text(self, text: str | None, near: int) -> int:
        if text and text.strip():
            return self.locate([(text.strip(), 0)], near)
        return self.clamp(near)


# --------------------------------------------------------------------------- the index


def metric_unit(metric: str) -> str:
    return metric.rsplit("_", 1)[-1] if metric else ""


def signed(value: float, digits: int = 3) -> str:
    text = f"{value:+.{digits}f}"
    return text.replace("-", MINUS)


@dataclass
class Entry:
    exp: Experiment
    change: str | None
    ranges: list[tuple[int, int]]  # 0-based inclusive line ranges in the current document


@dataclass
class HistoryIndex:
    """Per-line experiment history of the current document (newest first on each line)."""

    doc: DocLines
    metric: str = "val_bpb"
    by_line: dict[int, list[Entry]] = field(default_factory=dict)
    pending: list[Entry] = field(default_factory=list)
    flagged: list[Entry] = field(default_factory=list)  # newest first: see :func:`flagged`
    entries: dict[int, Entry] = field(default_factory=dict)
    diffs: dict[int, tuple[str, DiffInfo]] = field(default_factory=dict)
    _labels: dict[int, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        experiments: Iterable[Experiment],
        doc: DocLines,
        diffs: dict[int, tuple[str, DiffInfo]] | None = None,
        metric: str = "val_bpb",
    ) -> HistoryIndex:
        """``diffs``: a cache {id: (diff, DiffInfo)} reused and filled across builds."""
        index = cls(doc, metric, diffs={} if diffs is None else diffs)
        entries = [en for e in experiments if (en := index._entry(e)) is not None]
        entries.sort(key=lambda en: en.exp.id, reverse=True)
        by_line = index.by_line
        for en in entries:
            index.entries[en.exp.id] = en
            for a, b in en.ranges:
                for line in range(a, b + 1):
                    lst = by_line.get(line)
                    if lst is None:
                        by_line[line] = [en]
                    elif lst[-1] is not en:
                        lst.append(en)
            if en.exp.status == Status.PROPOSED:
                index.pending.append(en)
            if flagged(en.exp):
                index.flagged.append(en)
        return index

    def _entry(self, e: Experiment) -> Entry | None:
        if not e.diff or e.confirms is not None or e.source == "baseline":
            return None
        cached = self.diffs.get(e.id)
        if cached is None or (cached[0] is not e.diff and cached[0] != e.diff):
            cached = (e.diff, change_blocks(e.diff))
            self.diffs[e.id] = cached
        info = cached[1]
        doc = self.doc
        ranges = []
        for b in info.blocks:
            start = doc.locate(b.candidates, b.start)
            ranges.append((start, doc.clamp(start + b.span)))
        return Entry(e, info.change, ranges)

    def update(self, e: Experiment) -> bool:
        """Take one new or changed experiment in without a rebuild; False if not indexed."""
        en = self.entries.get(e.id)
        if en is None:
            en = self._entry(e)
            if en is None:
                return False
            self.entries[e.id] = en
            for line in {line for a, b in en.ranges for line in range(a, b + 1)}:
                lst = self.by_line.setdefault(line, [])
                at = next((i for i, x in enumerate(lst) if x.exp.id < e.id), len(lst))
                lst.insert(at, en)
                self._labels.pop(line, None)
        else:
            en.exp = e
            for a, b in en.ranges:
                for line in range(a, b + 1):
                    self._labels.pop(line, None)
        was = en in self.pending
        if e.status == Status.PROPOSED and not was:
            self.pending.append(en)
            self.pending.sort(key=lambda x: x.exp.id, reverse=True)
        elif e.status != Status.PROPOSED and was:
            self.pending.remove(en)
        was = en in self.flagged
        if flagged(e) and not was:
            self.flagged.append(en)
            self.flagged.sort(key=lambda x: x.exp.id, reverse=True)
        elif not flagged(e) and was:
            self.flagged.remove(en)
        return True

    # --- inlay hints ---

    def describe(self, en: Entry, full: bool) -> str:
        e = en.exp
        parts = [f"#{e.id}"]
        if full:
            what = en.change or _short(e.hypothesis, 40)
            if what:
                parts.append(what)
        if e.delta is not None and math.isfinite(e.delta):
            unit = metric_unit(self.metric)
            parts.append(f"{signed(e.delta)} {unit}".rstrip())
            if full and e.z is not None and math.isfinite(e.z):
                parts.append(f"({e.z:.1f}σ)")
        parts.append(status_text(e))
        if not full:  # status reads better right after the id when compressed
            parts = [parts[0], parts[-1], *parts[1:-1]]
        return " ".join(parts)

    def label(self, line: int) -> tuple[str, str] | None:
        """(label, tooltip) for the end of a line, or None when nothing touched it."""
        got = self._labels.get(line)
        if got is not None:
            return got
        entries = self.by_line.get(line)
        if not entries:
            return None
        latest = entries[0]
        if len(entries) == 1:
            text = self.describe(latest, True)
        else:
            text = f"{self.describe(latest, False)} · +{len(entries) - 1} more"
        tip = latest.exp.verdict or latest.exp.hypothesis
        got = (text, tip)
        self._labels[line] = got
        return got

    def inlay_hints(self, start: int, end: int) -> list[types.InlayHint]:
        hints = []
        for line in range(max(start, 0), min(end, len(self.doc) - 1) + 1):
            got = self.label(line)
            if got is None:
                continue
            text, tip = got
            exp_id = self.by_line[line][0].exp.id
            hints.append(types.InlayHint(
                position=types.Position(line=line, character=self.doc.width(line)),
                label=[types.InlayHintLabelPart(
                    value=text, tooltip=tip or None,
                    command=types.Command(title=f"Show experiment #{exp_id}",
                                          command="sigmaloop.showExperiment",
                                          arguments=[exp_id]),
                )],
                padding_left=True,
            ))
        return hints

    # --- hover ---

    def hover_markdown(self, line: int) -> str | None:
        entries = self.by_line.get(line)
        if not entries:
            return None
        unit = metric_unit(self.metric)
        rows = [f"**sigmaloop** · {len(entries)} experiment{'s' if len(entries) != 1 else ''} "
                "touched this line", "",
                f"| # | status | Δ {unit} | z | hypothesis |", "|---|---|---|---|---|"]
        for en in entries[:HISTORY_ROWS]:
            e = en.exp
            delta = signed(e.delta) if e.delta is not None and math.isfinite(e.delta) else ""
            z = f"{e.z:.1f}σ" if e.z is not None and math.isfinite(e.z) else ""
            hyp = _md_cell(en.change + ": " + e.hypothesis if en.change and e.hypothesis
                           else en.change or e.hypothesis)
            status = status_text(e)
            if flagged(e):
                status = f"**{status}**"
            if e.evaluator == SELF_REPORTED:
                status += " · self-reported metric"
            if e.sandboxed is False:
                status += " · **unsandboxed**"
            rows.append(f"| [#{e.id}](command:sigmaloop.showExperiment?%5B{e.id}%5D) | "
                        f"{status} | {delta} | {z} | {hyp} |")
        if len(entries) > HISTORY_ROWS:
            rows.append("")
            rows.append(f"… and {len(entries) - HISTORY_ROWS} older")
        return "\n".join(rows)

    # --- pending proposals ---

    def pending_at(self, start: int, end: int) -> list[Entry]:
        return [en for en in self.pending
                if any(a <= end and start <= b for a, b in en.ranges)]

    def review_at(self, start: int, end: int) -> list[Entry]:
        """Implausible gains waiting for a look whose first changed block touches the range."""
        return [en for en in self.flagged if awaits_review(en.exp) and en.ranges
                and en.ranges[0][0] <= end and start <= en.ranges[0][1]]


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _md_cell(text: str | None) -> str:
    return _short(text or "", 120).replace("|", "\\|")


# --------------------------------------------------------------------------- code lens


def lens_title(state: dict[str, Any]) -> str:
    """The code lens summary, from a ``sigmaloop/state`` record: the reference (the head's mean
    ± σ, the experiment that made it), kept / run, running trials."""
    ref, best = state.get("reference"), state.get("best")
    arrow = "↑" if state.get("direction") == "maximize" else "↓"
    if ref is None:
        head = "no baseline yet"
    else:
        head = f"{state.get('metric', '')} {arrow} {ref['value']:.4f}"
        if ref.get("sigma") is not None:
            head += f" ± {ref['sigma']:.4f}"
        seeds = len(ref.get("seeds") or ())
        made = [f"#{best['id']}"] if best is not None else []
        if seeds:
            made.append(f"{seeds} seed{'s' if seeds != 1 else ''}")
        if made:
            head += f" ({', '.join(made)})"
        keeps = keep_text(ref)
        if keeps:
            head += f" · {keeps}"
    parts = [head, f"kept {state.get('kept', 0)} / {state.get('run', 0)} run"]
    running = state.get("running") or []
    if running:
        parts.append(f"running {', '.join(f'#{i}' for i in running[:3])}"
                     + (" …" if len(running) > 3 else ""))
    return " · ".join(parts)


def keep_text(ref: dict[str, Any]) -> str:
    """The noise advisor in a few words: ``keeps ≥ 0.035 (1.6%)`` (the smallest improvement the
    judge can keep at the current σ, k and seeds), or "" before σ is known."""
    thr = ref.get("keepThreshold")
    if thr is None or not math.isfinite(thr):
        return ""
    text = f"keeps ≥ {thr:.0f}" if thr >= 100 else f"keeps ≥ {thr:.2g}"
    value = ref.get("value")
    if value:
        text += f" ({100 * thr / abs(value):.1f}%)"
    return text


def lens_advice(state: dict[str, Any] | None) -> str | None:
    """What would lower the keep threshold, when it is large against the metric."""
    ref = (state or {}).get("reference") or {}
    return ref.get("advice") or None


BUTTONS = (
    ("$(play) Run baseline", "sigmaloop.runBaseline"),
    ("$(lightbulb) Propose", "sigmaloop.propose"),
    ("$(sync) Run loop", "sigmaloop.startLoop"),
    ("$(debug-stop) Stop", "sigmaloop.stopLoop"),
)


def _at(line: int) -> types.Range:
    return types.Range(start=types.Position(line=line, character=0),
                       end=types.Position(line=line, character=0))


def code_lenses(title: str, advice: str | None = None) -> list[types.CodeLens]:
    top = _at(0)
    lenses = [types.CodeLens(range=top, command=types.Command(
        title=title, command="sigmaloop.summary", tooltip=advice))]
    for label, command in BUTTONS:
        lenses.append(types.CodeLens(range=top, command=types.Command(title=label, command=command)))
    if advice:
        lenses.append(types.CodeLens(range=top, command=types.Command(
            title=f"$(warning) {advice}", command="sigmaloop.summary", tooltip=advice)))
    return lenses


FLAGGED_LENSES = 5  # experiments with their own code lens (the newest)


def experiment_lenses(index: HistoryIndex) -> list[types.CodeLens]:
    """Over the first changed block of the newest flagged experiments: an implausible gain's
    verdict with Accept result / Reject result / Show diff; a tampered or over-budget run's verdict."""
    out: list[types.CodeLens] = []
    for en in index.flagged[:FLAGGED_LENSES]:
        if not en.ranges:
            continue
        e, at = en.exp, _at(en.ranges[0][0])

        def lens(title: str, command: str, tooltip: str | None = None, e=e, at=at) -> types.CodeLens:
            return types.CodeLens(range=at, command=types.Command(
                title=title, command=command, arguments=[e.id], tooltip=tooltip))

        if awaits_review(e):
            out += [lens(f"$(warning) {implausible_message(e, index.metric)}", "sigmaloop.showExperiment",
                         e.verdict or None),
                    lens("$(check) Accept result", "sigmaloop.acceptResult", f"keep #{e.id}: the branch advances"),
                    lens("$(close) Reject result", "sigmaloop.rejectResult", f"#{e.id} stays discarded"),
                    lens("$(diff) Show diff", "sigmaloop.showExperiment")]
        else:
            icon = "$(error)" if e.status == Status.TAMPERED else "$(watch)"
            out.append(lens(f"{icon} #{e.id} {untrusted_label(e)}", "sigmaloop.showExperiment", e.verdict or None))
    return out


# --------------------------------------------------------------------------- diagnostics


def _line_range(doc: DocLines, a: int, b: int) -> types.Range:
    return types.Range(start=types.Position(line=a, character=0),
                       end=types.Position(line=b, character=doc.width(b)))


def crash_diagnostic(doc: DocLines, e: Experiment, line_text: str | None) -> types.Diagnostic:
    """Error at the crash line (mapped by its text in the experiment's version)."""
    assert e.crash is not None
    line = doc.locate_text(line_text, e.crash.line - 1)
    return types.Diagnostic(
        range=_line_range(doc, line, line), severity=types.DiagnosticSeverity.Error,
        source=SOURCE, code=f"exp-{e.id}",
        message=f"exp #{e.id} crashed: {e.crash.message}",
    )


def anomaly_diagnostics(doc: DocLines, en: Entry, anomalies: Sequence[Anomaly]) -> list[types.Diagnostic]:
    if not en.ranges:
        return []
    a, b = en.ranges[0]
    return [types.Diagnostic(
        range=_line_range(doc, a, b), severity=types.DiagnosticSeverity.Warning,
        source=SOURCE, code=f"exp-{en.exp.id}", message=f"exp #{en.exp.id}: {an.message}",
    ) for an in anomalies]


def flagged_diagnostic(doc: DocLines, en: Entry, metric: str) -> types.Diagnostic | None:
    """At the first changed block: a warning for an implausible gain waiting for a look
    (``data.review``: the code actions offer Accept / Reject result), an error for a tampered
    result, a warning for an over-budget run."""
    e = en.exp
    if not en.ranges:
        return None
    a, b = en.ranges[0]
    if awaits_review(e):
        severity, message = types.DiagnosticSeverity.Warning, implausible_message(e, metric)
    else:
        severity = types.DiagnosticSeverity.Error if e.status == Status.TAMPERED else types.DiagnosticSeverity.Warning
        message = f"exp #{e.id} {untrusted_label(e)}"
    return types.Diagnostic(range=_line_range(doc, a, b), severity=severity, source=SOURCE,
                            code=f"exp-{e.id}", message=message,
                            data={"expId": e.id, "review": awaits_review(e)})


def proposal_diagnostics(doc: DocLines, en: Entry) -> list[types.Diagnostic]:
    e = en.exp
    what = e.hypothesis or en.change or "proposed edit"
    pred = ""
    if e.predicted_delta is not None and math.isfinite(e.predicted_delta):
        pred = f" (predicted {signed(e.predicted_delta)})"
    return [types.Diagnostic(
        range=_line_range(doc, a, b), severity=types.DiagnosticSeverity.Information,
        source=SOURCE, code=f"exp-{e.id}",
        message=f"exp #{e.id} proposed by {e.source}: {what}{pred}",
        data={"expId": e.id},
    ) for a, b in en.ranges]


def proposal_actions(en: Entry) -> list[types.CodeAction]:
    e = en.exp
    hyp = _short(e.hypothesis or en.change or "proposed edit", 80)
    tags = [types.CodeActionTag.LlmGenerated] if e.source.startswith("llm:") else None
    kind = types.CodeActionKind.QuickFix

    def action(title: str, command: str) -> types.CodeAction:
        return types.CodeAction(title=title, kind=kind, tags=tags,
                                command=types.Command(title=title, command=command, arguments=[e.id]))

    return [
        action(f"Accept experiment #{e.id}: {hyp}", "sigmaloop.accept"),
        action(f"Reject experiment #{e.id}…", "sigmaloop.reject"),
        action(f"Show diff for #{e.id}", "sigmaloop.showExperiment"),
    ]


def review_actions(en: Entry) -> list[types.CodeAction]:
    """Quick fixes on an implausible gain: keep it after a look, refuse it, or look at it."""
    e = en.exp
    kind = types.CodeActionKind.QuickFix

    def action(title: str, command: str) -> types.CodeAction:
        return types.CodeAction(title=title, kind=kind,
                                command=types.Command(title=title, command=command, arguments=[e.id]))

    return [
        action(f"Accept result of #{e.id} (keep it)", "sigmaloop.acceptResult"),
        action(f"Reject result of #{e.id}…", "sigmaloop.rejectResult"),
        action(f"Show diff for #{e.id}", "sigmaloop.showExperiment"),
    ]
