"""Unit tests of the pure modules: anomaly detection and experiment → LSP rendering."""

from __future__ import annotations

import math

from lsprotocol import types

from sigmaloop.anomaly import detect
from sigmaloop.diff import change_blocks, parent_line, unified_diff
from sigmaloop.lsp import render
from sigmaloop.models import CrashLocation, Experiment, ProgressRecord, Status

SCRIPT = "import os\n\nLR = 0.04\nDEPTH = 4\n\n\ndef main():\n    x = 1\n    return x\n"


def curve(losses):
    n = len(losses)
    return [ProgressRecord(1, i, float(i), (i + 1) / n, v) for i, v in enumerate(losses)]


def exp(id_, new, status=Status.KEPT, old=SCRIPT, **kw):
    return Experiment(id=id_, status=status, source=kw.pop("source", "tune"),
                      diff=unified_diff(old, new), **kw)


# --- anomalies ---

def test_clean_curve_has_no_anomalies():
    assert detect(curve([3.0 - 0.1 * i for i in range(20)])) == []


def test_nan_spike_divergence_and_plateau():
    (nan,) = [a for a in detect(curve([3, 2.9, 2.8, math.nan, 2.7])) if a.kind == "nan"]
    assert nan.message == "loss NaN at 80% of budget"
    losses = [3.0 - 0.05 * i for i in range(20)]
    losses[8] = 9.0
    spikes = [a for a in detect(curve(losses)) if a.kind == "spike"]
    assert spikes and spikes[0].message.startswith("loss ×3.") and "at 45% of budget" in spikes[0].message
    diverged = detect(curve([3.0 - 0.1 * i for i in range(10)] + [2.2 + 0.2 * i for i in range(10)]))
    assert [a.kind for a in diverged] == ["divergence"]
    flat = detect(curve([3.0 - 0.2 * i for i in range(6)] + [2.0] * 14))
    assert [a.kind for a in flat] == ["plateau"]
    assert flat[0].message.startswith("loss plateaued")
    assert detect([]) == [] and detect(curve([None, None])) == []


# --- diffs and line anchoring ---

def test_parse_diff_blocks_and_constant_change():
    info = change_blocks(unified_diff(SCRIPT, SCRIPT.replace("LR = 0.04", "LR = 0.06")))
    assert info.change == "LR 0.04→0.06"
    (block,) = info.blocks
    assert block.start == 2 and block.span == 0
    ins = change_blocks(unified_diff(SCRIPT, SCRIPT.replace("    x = 1\n", "    x = 1\n    y = 2\n")))
    assert ins.change is None and ins.blocks[0].start == 7  # after "x = 1" (0-based 7)


def test_index_follows_moved_lines_and_falls_back():
    e = exp(7, SCRIPT.replace("DEPTH = 4", "DEPTH = 6"), delta=-0.012, z=3.1)
    moved = "# header\n# more\n" + SCRIPT
    index = render.HistoryIndex.build([e], render.DocLines(moved))
    assert list(index.by_line) == [5]  # DEPTH moved from line 3 to 5 (0-based)
    # the line's text is gone (e.g. adopted): the diff's new text anchors it
    adopted = moved.replace("DEPTH = 4", "DEPTH = 6")
    assert list(render.HistoryIndex.build([e], render.DocLines(adopted)).by_line) == [5]
    # no text matches: the diff's own line number
    other = render.HistoryIndex.build([e], render.DocLines(SCRIPT.replace("DEPTH = 4", "D = 1")))
    assert list(other.by_line) == [3]


def test_inlay_labels_full_and_compressed_and_hover():
    a = exp(12, SCRIPT.replace("LR = 0.04", "LR = 0.06"), delta=-0.012, z=3.1,
            hypothesis="higher LR")
    index = render.HistoryIndex.build([a], render.DocLines(SCRIPT))
    (hint,) = index.inlay_hints(0, 20)
    assert hint.position == types.Position(line=2, character=len("LR = 0.04"))
    assert hint.label[0].value == "#12 LR 0.04→0.06 −0.012 bpb (3.1σ) kept"
    assert hint.label[0].command.command == "sigmaloop.showExperiment"
    more = [exp(i, SCRIPT.replace("LR = 0.04", f"LR = 0.0{i}"), status=Status.DISCARDED,
                delta=0.001 * i, z=-0.5) for i in range(5, 9)]
    index = render.HistoryIndex.build([a, *more], render.DocLines(SCRIPT))
    (hint,) = index.inlay_hints(2, 2)
    assert hint.label[0].value == "#12 kept −0.012 bpb · +4 more"
    md = index.hover_markdown(2)
    assert "5 experiments" in md and "| [#12]" in md and "| kept | −0.012 | 3.1σ |" in md
    assert index.hover_markdown(0) is None
    a.sandboxed = False  # ran with the user's full authority: the hover says so
    index = render.HistoryIndex.build([a], render.DocLines(SCRIPT))
    assert "| kept · **unsandboxed** |" in index.hover_markdown(2)


def test_pending_proposals_diagnostics_and_actions():
    p = exp(14, SCRIPT.replace("DEPTH = 4", "DEPTH = 8"), status=Status.PROPOSED,
            source="llm:gpt-4o-mini", hypothesis="deeper nets fit better", predicted_delta=-0.01)
    index = render.HistoryIndex.build([p], render.DocLines(SCRIPT))
    (d,) = render.proposal_diagnostics(index.doc, index.pending[0])
    assert d.severity == types.DiagnosticSeverity.Information and d.range.start.line == 3
    assert d.message == "exp #14 proposed by llm:gpt-4o-mini: deeper nets fit better (predicted −0.010)"
    assert index.pending_at(3, 3) and not index.pending_at(0, 1)
    actions = render.proposal_actions(index.pending[0])
    assert [a.title for a in actions] == [
        "Accept experiment #14: deeper nets fit better", "Reject experiment #14…", "Show diff for #14"]
    assert all(a.tags == [types.CodeActionTag.LlmGenerated] for a in actions)


def test_crash_placement():
    new = SCRIPT.replace("LR = 0.04\n", "LR = 0.04\nEXTRA = 1\n")
    e = exp(3, new, status=Status.CRASHED, crash=CrashLocation("train.py", 10, "ValueError: bad"))
    assert parent_line(e.diff, 10) == (9, None)  # outside the diff: shifted
    assert parent_line(e.diff, 4) == (4, "EXTRA = 1")
    d = render.crash_diagnostic(render.DocLines(SCRIPT), e, "    return x")
    assert d.range.start.line == 8 and d.message == "exp #3 crashed: ValueError: bad"


def test_lens_title_from_the_state():
    state = {"metric": "val_bpb", "direction": "minimize", "kept": 3, "run": 17, "running": [],
             "reference": {"value": 1.2101, "sigma": 0.0023, "sigmaDof": 2, "seeds": [42, 43], "ids": [12, 13]},
             "best": {"id": 12, "metric": 1.2101, "hypothesis": "LR up"}}
    assert render.lens_title(state) == "val_bpb ↓ 1.2101 ± 0.0023 (#12) · kept 3 / 17 run"
    state.update(direction="maximize", metric="accuracy", running=[20, 21, 22, 23])
    assert render.lens_title(state).startswith("accuracy ↑ 1.2101")
    assert render.lens_title(state).endswith("running #20, #21, #22 …")
    assert render.lens_title({"reference": None, "best": None, "kept": 0, "run": 0}) == \
        "no baseline yet · kept 0 / 0 run"
