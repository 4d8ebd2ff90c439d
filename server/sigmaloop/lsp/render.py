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

import difflib
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
    question: int | None = None
    rejection_reason: str | None = None
    warnings: dict[str, str] | None = None
    log_path: str | None = None
    detail: str = ""

    @property
    def is_baseline(self) -> bool:
        return self.source == "baseline"

    @classmethod
    def of(cls, e: Experiment) -> Row:
        return cls(e.id, e.status, e.source, e.hypothesis, e.predicted_delta, e.diff, e.metric,
                   e.delta, e.z, e.verdict, e.crash, e.confirms, e.started_at, e.rev, e.sandboxed,
                   e.reason, e.evaluator, e.question, e.rejection_reason, e.warnings or None,
                   e.log_path, e.detail)


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


def better(e: Experiment | Row, lower_is_better: bool = True) -> bool | None:
    """Whether the run did better than its reference (z > 0; else the delta's sign and the
    direction); None when it was not measured against one."""
    if e.z is not None and math.isfinite(e.z) and e.z != 0:
        return e.z > 0
    if e.delta is None or not math.isfinite(e.delta) or e.delta == 0:
        return None
    return (e.delta < 0) == lower_is_better


def amount(value: float) -> str:
    """A magnitude in a few characters: ``0.012``, ``0.0371``, ``1.15``, ``163``."""
    value = abs(value)
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def effect_words(e: Experiment | Row, lower_is_better: bool = True, unit: str = "") -> str:
    """``0.012 bpb better`` / ``0.037 worse`` (the magnitude and a word: one sign convention),
    "" when not measured against a reference."""
    b = better(e, lower_is_better)
    if b is None or e.delta is None:
        return ""
    return f"{amount(e.delta)}{' ' + unit if unit else ''} {'better' if b else 'worse'}"


def sigmas(e: Experiment | Row) -> str:
    """``3.1σ`` (the size of the difference in noise units; whole above 10)."""
    if e.z is None or not math.isfinite(e.z):
        return ""
    z = abs(e.z)
    return f"{z:.0f}σ" if z >= 10 else f"{z:.1f}σ"


#: VS Code cuts an inlay hint's label at 43 characters ("…"): the whole hint fits in it
HINT_MAX = 43


def hint_text(e: Experiment | Row, more: int = 0, lower_is_better: bool = True) -> str:
    """An inlay hint: the status first, then the id, the effect in words, its size in σ, and
    how many older experiments touched the line: ``kept #12 0.012 better 3.1σ``,
    ``discarded #9 0.037 worse · +3 more``, ``crashed #7``. Parts that do not fit in
    :data:`HINT_MAX` characters are left out, least important first."""
    head = f"{status_text(e)} #{e.id}"
    words, z = effect_words(e, lower_is_better), sigmas(e)
    if e.status in UNTRUSTED:  # its number can't be trusted: no size to read
        words = z = ""
    tails = [f" · +{more} more", f" +{more}", ""] if more else [""]
    for body in (f" {words} {z}" if words and z else None, f" {words}" if words else None, ""):
        if body is None:
            continue
        for tail in tails:
            text = head + body + tail
            if len(text) <= HINT_MAX:
                return text
    return _short(head, HINT_MAX)


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
    lower_is_better: bool = True
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
        lower_is_better: bool = True,
    ) -> HistoryIndex:
        """``diffs``: a cache {id: (diff, DiffInfo)} reused and filled across builds."""
        index = cls(doc, metric, lower_is_better, diffs={} if diffs is None else diffs)
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

    def tooltip(self, en: Entry) -> str:
        """What the hint leaves out: the change, the hypothesis, the verdict, the warnings."""
        e = en.exp
        what = ": ".join(p for p in (en.change, e.hypothesis) if p)
        lines = [f"#{e.id} {what}".rstrip(), e.verdict]
        if e.rejection_reason:
            lines.append(f"rejected because: {e.rejection_reason}")
        lines += [f"⚠ {w}" for w in (e.warnings or {}).values()]
        return "\n".join(x for x in lines if x)

    def label(self, line: int) -> tuple[str, str] | None:
        """(label, tooltip) for the end of a line, or None when nothing touched it."""
        got = self._labels.get(line)
        if got is not None:
            return got
        entries = self.by_line.get(line)
        if not entries:
            return None
        latest = entries[0]
        got = (hint_text(latest.exp, len(entries) - 1, self.lower_is_better), self.tooltip(latest))
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

    def hover_markdown(self, line: int, questions: dict[int, str] | None = None) -> str | None:
        """The line's history: one row an experiment, newest first; each id opens its diff,
        "log" its trial's log; what it tests, why it was rejected and its warnings in words."""
        entries = self.by_line.get(line)
        if not entries:
            return None
        unit = metric_unit(self.metric)
        rows = [f"**sigmaloop** · {len(entries)} experiment{'s' if len(entries) != 1 else ''} "
                "touched this line", "",
                f"| # | status | vs reference ({unit}) | hypothesis |", "|---|---|---|---|"]
        for en in entries[:HISTORY_ROWS]:
            e = en.exp
            effect = " · ".join(p for p in (effect_words(e, self.lower_is_better), sigmas(e)) if p)
            what = en.change + ": " + e.hypothesis if en.change and e.hypothesis else en.change or e.hypothesis
            notes = [what] if what else []
            if e.question is not None:
                notes.append(question_words(e.question, questions))
            if e.rejection_reason:
                notes.append(f"rejected because: {e.rejection_reason}")
            notes += [f"⚠ {w}" for w in (e.warnings or {}).values()]
            status = status_text(e)
            if flagged(e):
                status = f"**{status}**"
            if e.evaluator == SELF_REPORTED:
                status += " · self-reported metric"
            if e.sandboxed is False:
                status += " · **unsandboxed**"
            ident = f"[#{e.id}](command:sigmaloop.showExperiment?%5B{e.id}%5D)"
            if e.log_path:
                ident += f" [log](command:sigmaloop.openLog?%5B{e.id}%5D)"
            rows.append(f"| {ident} | {status} | {effect} | {_md_cell(' · '.join(notes), 240)} |")
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


def _md_cell(text: str | None, n: int = 120) -> str:
    return _short(text or "", n).replace("|", "\\|")


def question_words(qid: int, questions: dict[int, str] | None, n: int = 60) -> str:
    """``tests Q2: does a longer warmup help?`` (the text when known)."""
    text = (questions or {}).get(qid)
    return f"tests Q{qid}: {_short(text, n)}" if text else f"tests Q{qid}"


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


def buttons(state: dict[str, Any] | None, edit: Any = None) -> list[tuple[str, str, str | None]]:
    """The code lens buttons the state allows, as (title, command, tooltip): Run My Edit when the
    open script differs from the research head (``edit``: the engine's ``EditStatus``; None while
    unknown) and what Run Baseline runs; Propose and Run Loop when no loop runs; Stop only while
    something runs or waits to."""
    st = state or {}
    loop = bool((st.get("loop") or {}).get("running"))
    running = list(st.get("running") or [])
    counts = st.get("counts") or {}
    waiting = sum(counts.get(k, 0) or 0 for k in ("queued", "accepted"))
    out: list[tuple[str, str, str | None]] = []
    if edit is not None and edit.differs:
        n = max(edit.added, edit.removed, 1)
        out.append((f"$(play) Run my edit ({n} line{'s differ' if n != 1 else ' differs'} from head {edit.head})",
                    "sigmaloop.runEdit", edit.summary))
        if not loop:
            out.append((f"$(history) Run baseline (head {edit.head}, not your file)", "sigmaloop.runBaseline",
                        edit.summary))
    elif not loop:
        if edit is not None:
            out.append((f"$(play) Same as research head {edit.head} · Run Baseline", "sigmaloop.runBaseline",
                        edit.summary))
        else:
            out.append(("$(play) Run baseline", "sigmaloop.runBaseline", None))
    if not loop:
        out.append(("$(lightbulb) Propose", "sigmaloop.propose", None))
        out.append(("$(sync) Run loop", "sigmaloop.startLoop", None))
    if loop or running or waiting:
        if loop:
            what = "Stop loop"
        elif running and len(running) <= 2 and not waiting:
            what = "Stop " + ", ".join(f"#{i}" for i in running)
        else:
            what = "Stop"
        out.append((f"$(debug-stop) {what}", "sigmaloop.stopLoop",
                    "stop the loop, the trials this window queued and the ones it runs"))
    return out


def _at(line: int) -> types.Range:
    return types.Range(start=types.Position(line=line, character=0),
                       end=types.Position(line=line, character=0))


def code_lenses(title: str, advice: str | None = None, state: dict[str, Any] | None = None,
                edit: Any = None) -> list[types.CodeLens]:
    """The top of the script: the buttons first (a long title must not push Run My Edit out of
    a narrow editor), then the state's title, then the advice."""
    top = _at(0)
    lenses = [types.CodeLens(range=top, command=types.Command(title=label, command=command, tooltip=tooltip))
              for label, command, tooltip in buttons(state, edit)]
    lenses.append(types.CodeLens(range=top, command=types.Command(
        title=title, command="sigmaloop.summary", tooltip=advice)))
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


#: an edited line this similar to the crash line (difflib ratio) is still the crash line
SIMILAR = 0.75
#: how far from where the crash line was tracked to an edited (or repeated) line of it may be
TRACK_WINDOW = 3


def locate_crash(doc: DocLines, text: str | None, near: int, tracked: bool = False) -> int | None:
    """The crash line in the current document, or None when it is gone.

    ``near``: where it was (the crash's own line at first; once placed, where it was tracked to,
    shifted by the edits since). The line with the crash line's text nearest to it — anywhere at
    first, within :data:`TRACK_WINDOW` lines once tracked (a repeat of the text elsewhere is not
    it) — else a line within that window that is recognisably it (:data:`SIMILAR`): edited a
    little. Deleted or changed beyond recognition: None. Without the text (unknown) it stays at
    ``near``."""
    if not len(doc):
        return None
    if not text or not text.strip():
        return doc.clamp(near)
    want = text.strip()
    exact = doc.where.get(want, ())
    if tracked:
        exact = [i for i in exact if abs(i - near) <= TRACK_WINDOW]
    if exact:
        return min(exact, key=lambda i: (abs(i - near), i))
    best, best_score = None, SIMILAR
    want = _code(want)
    for i in range(max(0, near - TRACK_WINDOW), min(len(doc), near + TRACK_WINDOW + 1)):
        line = _code(doc.lines[i])
        if not line:
            continue
        if line == want:
            score = 1.0
            if best is None or score > best_score or abs(i - near) < abs(best - near):
                best, best_score = i, score
            continue
        m = difflib.SequenceMatcher(None, want, line, autojunk=False)
        if m.real_quick_ratio() < best_score or m.quick_ratio() < best_score:
            continue
        score = m.ratio()
        if score > best_score or (score == best_score and best is not None and abs(i - near) < abs(best - near)):
            best, best_score = i, score
    return best


def _code(line: str) -> str:
    """A line without its trailing comment (a comment added to a line leaves it the same line)."""
    text = line.strip()
    return text.split(" #", 1)[0].rstrip() if not text.startswith("#") else text


def crash_diagnostic(doc: DocLines, e: Experiment | Row, line: int) -> types.Diagnostic:
    """Error at the crash line (placed by :func:`locate_crash`); its code actions open the log."""
    assert e.crash is not None
    return types.Diagnostic(
        range=_line_range(doc, line, line), severity=types.DiagnosticSeverity.Error,
        source=SOURCE, code=f"exp-{e.id}",
        message=f"exp #{e.id} crashed: {e.crash.message}",
        data={"expId": e.id, "crash": True},
    )


def anomaly_diagnostics(doc: DocLines, en: Entry, anomalies: Sequence[Anomaly]) -> list[types.Diagnostic]:
    if not en.ranges:
        return []
    a, b = en.ranges[0]
    return [types.Diagnostic(
        range=_line_range(doc, a, b), severity=types.DiagnosticSeverity.Warning,
        source=SOURCE, code=f"exp-{en.exp.id}", message=f"exp #{en.exp.id}: {an.message}",
        data={"expId": en.exp.id, "anomaly": an.kind},
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


def proposal_diagnostics(doc: DocLines, en: Entry, questions: dict[int, str] | None = None) -> list[types.Diagnostic]:
    e = en.exp
    what = e.hypothesis or en.change or "proposed edit"
    pred = ""
    if e.predicted_delta is not None and math.isfinite(e.predicted_delta):
        pred = f" (predicted {signed(e.predicted_delta)})"
    if e.question is not None:
        pred += f"; {question_words(e.question, questions)}"
    return [types.Diagnostic(
        range=_line_range(doc, a, b), severity=types.DiagnosticSeverity.Information,
        source=SOURCE, code=f"exp-{e.id}",
        message=f"exp #{e.id} proposed by {e.source}: {what}{pred}",
        data={"expId": e.id},
    ) for a, b in en.ranges]


def proposal_actions(en: Entry, questions: dict[int, str] | None = None) -> list[types.CodeAction]:
    e = en.exp
    hyp = _short(e.hypothesis or en.change or "proposed edit", 80)
    if e.question is not None:
        hyp += f" ({question_words(e.question, questions, 50)})"
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


def log_actions(diagnostics: Sequence[types.Diagnostic], start: int, end: int) -> list[types.CodeAction]:
    """``Open log of #N`` for the crash and curve-anomaly diagnostics on the range (once an experiment)."""
    out: list[types.CodeAction] = []
    seen: set[int] = set()
    for d in diagnostics:
        data = d.data if isinstance(d.data, dict) else {}
        exp_id = data.get("expId")
        if not (data.get("crash") or data.get("anomaly")) or not isinstance(exp_id, int) or exp_id in seen:
            continue
        if d.range.start.line <= end and start <= d.range.end.line:
            seen.add(exp_id)
            title = f"Open log of #{exp_id}"
            out.append(types.CodeAction(title=title, kind=types.CodeActionKind.QuickFix, diagnostics=[d],
                                        command=types.Command(title=title, command="sigmaloop.openLog",
                                                              arguments=[exp_id])))
    return out


def anomaly_actions(diagnostics: Sequence[types.Diagnostic], start: int, end: int) -> list[types.CodeAction]:
    """On the curve-anomaly diagnostics of the range: ``Show curve of #N`` (the loss panel with
    #N overlaid, its anomalies marked; once an experiment) and ``Dismiss <kind> on #N`` (one a
    diagnostic: the researcher looked and it is nothing)."""
    curves: list[types.CodeAction] = []
    dismiss: list[types.CodeAction] = []
    seen: set[int] = set()
    for d in diagnostics:
        data = d.data if isinstance(d.data, dict) else {}
        exp_id, kind = data.get("expId"), data.get("anomaly")
        if not isinstance(exp_id, int) or not isinstance(kind, str) or not kind:
            continue
        if not (d.range.start.line <= end and start <= d.range.end.line):
            continue
        if exp_id not in seen:
            seen.add(exp_id)
            title = f"Show curve of #{exp_id}"
            curves.append(types.CodeAction(title=title, kind=types.CodeActionKind.QuickFix, diagnostics=[d],
                                           command=types.Command(title=title, command="sigmaloop.showCurve",
                                                                 arguments=[exp_id])))
        title = f"Dismiss {kind} on #{exp_id}"
        dismiss.append(types.CodeAction(title=title, kind=types.CodeActionKind.QuickFix, diagnostics=[d],
                                        command=types.Command(title=title, command="sigmaloop.dismissAnomaly",
                                                              arguments=[exp_id, kind])))
    return curves + dismiss


# --------------------------------------------------------------------------- what finished, in words


def thin(points: Sequence[Any], max_points: int) -> list[Any]:
    """Evenly spaced points, the first and the last kept (as the journal thins a curve)."""
    n = len(points)
    if n <= max_points:
        return list(points)
    if max_points == 1:
        return [points[-1]]
    span, last = n - 1, max_points - 1
    return [points[(i * span + last // 2) // last] for i in range(max_points)]


def decimals(sigma: float | None) -> int:
    """Decimals that show σ with two significant digits (2 to 8; 4 when σ is unknown)."""
    if sigma is None or not math.isfinite(sigma) or sigma <= 0:
        return 4
    return min(8, max(2, 1 - math.floor(math.log10(sigma))))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def baseline_done(runs: Sequence[Experiment], state: Any, metric: str) -> str:
    """Once a baseline run from the editor has finished, in numbers: ``Baseline done: val_bpb
    1.2345 ± 0.0027 over 6 seeds; keep needs ≥ 0.0077 better`` (the engine's reference and keep
    threshold), with what went wrong and the runs' warnings."""
    crashed = [e for e in runs if e.status in (Status.CRASHED, Status.TIMEOUT)]
    stopped = [e for e in runs if e.status == Status.INTERRUPTED]
    ref = getattr(state, "reference", None)
    parts: list[str] = []
    if ref is not None:
        d = decimals(ref.sigma)
        value = f"{ref.value:.{d}f}" + (f" ± {ref.sigma:.{d}f}" if ref.sigma is not None else "")
        head = f"{metric} {value} over {_plural(len(ref.seeds), 'seed')}"
        if ref.keep_threshold is not None and math.isfinite(ref.keep_threshold):
            head += f"; keep needs ≥ {amount(ref.keep_threshold)} better"
        elif ref.sigma is None:
            head += "; no noise estimate yet (one seed)"
        parts.append(head)
    if stopped:
        parts.append(f"{len(stopped)} of {len(runs)} seeds stopped")
    for e in crashed[:2]:
        where = f" ({e.crash.file}:{e.crash.line})" if e.crash else ""
        parts.append(f"#{e.id} {e.status.value}: {_short(e.crash.message if e.crash else e.detail or e.verdict, 90)}{where}")
    warned: dict[str, list[int]] = {}  # the same warning on every seed is said once
    for e in runs:
        for w in (e.warnings or {}).values():
            warned.setdefault(w, []).append(e.id)
    parts += [f"⚠ {', '.join(f'#{i}' for i in ids)}: {w}" for w, ids in list(warned.items())[:2]]
    word = "Baseline stopped" if stopped else "Baseline failed" if ref is None else "Baseline done"
    return f"{word}: " + "; ".join(parts) if parts else f"{word}."


def loop_done(done: Sequence[Experiment], iterations: int, stopped: bool, state: Any,
              effect: Any, metric: str) -> str:
    """Once a loop run from the editor has ended, in numbers: ``Loop done: 10 run, 1 kept (#12,
    0.012 better), 7 within noise, 2 crashed; best val_bpb 1.2233``. ``effect``: the engine's
    ``effect(exp)`` (positive = better)."""
    runs = [e for e in done if not e.is_baseline and e.confirms is None and e.status in FINISHED_WORDS]
    kept = [e for e in runs if e.status == Status.KEPT]
    counts: dict[str, int] = {}
    for e in runs:
        if e.status == Status.KEPT:
            continue
        word = REASON_WORDS.get(e.reason) or FINISHED_WORDS[e.status]
        counts[word] = counts.get(word, 0) + 1
    parts = [f"{len(runs)} run"]
    if kept:
        shown = []
        for e in kept[:3]:
            f = effect(e)
            shown.append(f"#{e.id}, {amount(f.better)} better" if f is not None else f"#{e.id}")
        parts.append(f"{len(kept)} kept ({'; '.join(shown)}{'; …' if len(kept) > 3 else ''})")
    else:
        parts.append("none kept")
    parts += [f"{n} {word}" for word, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    text = ("Loop stopped" if stopped else "Loop done") + ": " + ", ".join(parts)
    best = getattr(state, "best", None)
    ref = getattr(state, "reference", None)
    if best is not None:
        d = decimals(ref.sigma if ref is not None else None)
        text += f"; best {metric} {best.metric:.{d}f} (#{best.id})"
    if not kept and ref is not None and ref.keep_threshold is not None:
        text += f"; a keep needs ≥ {amount(ref.keep_threshold)} better"
    return text


#: verdicts the loop summary counts by their reason
REASON_WORDS = {Reason.WITHIN_NOISE.value: "within noise", Reason.NOT_CONFIRMED.value: "not confirmed",
                Reason.IMPLAUSIBLE.value: "implausible (look at them)", Reason.STALE.value: "stale"}
#: finished statuses as the loop summary counts them
FINISHED_WORDS = {
    Status.KEPT: "kept", Status.DISCARDED: "worse", Status.CRASHED: "crashed", Status.TIMEOUT: "timed out",
    Status.PRUNED: "pruned", Status.OVER_BUDGET: "over budget", Status.TAMPERED: "tampered",
    Status.INTERRUPTED: "stopped",
}
