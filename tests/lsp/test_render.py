"""Unit tests of the pure modules: anomaly detection and experiment → LSP rendering."""

from __future__ import annotations

import math

from lsprotocol import types

from sigmaloop.anomaly import detect
from sigmaloop.diff import change_blocks, parent_line, unified_diff
from sigmaloop.lifecycle import Reason
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
    assert nan.step == 3 and nan.message.startswith("loss NaN at step 3 (80% of budget)")
    losses = [3.0 - 0.05 * i for i in range(20)]
    losses[8] = 9.0
    spikes = [a for a in detect(curve(losses)) if a.kind == "spike"]
    assert spikes and spikes[0].step == 8 and spikes[0].message.startswith("loss spike ×3.")
    assert "(45% of budget)" in spikes[0].message
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


def test_inlay_labels_status_first_and_hover():
    a = exp(12, SCRIPT.replace("LR = 0.04", "LR = 0.06"), delta=-0.012, z=3.1,
            hypothesis="higher LR", verdict="0.012 bpb better, 3.1σ; kept")
    index = render.HistoryIndex.build([a], render.DocLines(SCRIPT))
    (hint,) = index.inlay_hints(0, 20)
    assert hint.position == types.Position(line=2, character=len("LR = 0.04"))
    assert hint.label[0].value == "kept #12 0.012 better 3.1σ"
    assert hint.label[0].tooltip == "#12 LR 0.04→0.06: higher LR\n0.012 bpb better, 3.1σ; kept"
    assert hint.label[0].command.command == "sigmaloop.showExperiment"
    more = [exp(i, SCRIPT.replace("LR = 0.04", f"LR = 0.0{i}"), status=Status.DISCARDED,
                delta=0.001 * i, z=-0.5) for i in range(5, 9)]
    index = render.HistoryIndex.build([a, *more], render.DocLines(SCRIPT))
    (hint,) = index.inlay_hints(2, 2)
    assert hint.label[0].value == "kept #12 0.012 better 3.1σ · +4 more"
    md = index.hover_markdown(2)
    assert "5 experiments" in md and "| [#12]" in md and "| kept | 0.012 better · 3.1σ |" in md
    assert "| discarded | 0.008 worse · 0.5σ |" in md  # one sign convention: words, not signs
    assert index.hover_markdown(0) is None
    a.sandboxed = False  # ran with the user's full authority: the hover says so
    index = render.HistoryIndex.build([a], render.DocLines(SCRIPT))
    assert "| kept · **unsandboxed** |" in index.hover_markdown(2)


def test_inlay_hint_fits_in_43_characters_status_first():
    """VS Code cuts a hint's label at 43 characters: the status must come first and all of it fit."""
    def hint(e, more=0, lower=True):
        text = render.hint_text(e, more, lower)
        assert len(text) <= render.HINT_MAX, text
        return text

    kept = Experiment(id=12, status=Status.KEPT, source="tune", delta=-0.0123, z=3.14)
    assert hint(kept) == "kept #12 0.0123 better 3.1σ"
    worse = Experiment(id=9, status=Status.DISCARDED, source="tune", delta=0.037, z=-0.7)
    assert hint(worse) == "discarded #9 0.037 worse 0.7σ"
    crashed = Experiment(id=7, status=Status.CRASHED, source="tune")
    assert hint(crashed) == "crashed #7"
    # maximize: a higher metric is better (the delta's sign means the other thing)
    up = Experiment(id=4, status=Status.KEPT, source="tune", delta=0.5, z=None)
    assert hint(up, lower=False) == "kept #4 0.5 better"
    # the longest status words, big ids and many older runs: the tail parts give way, never the status
    long = Experiment(id=123456, status=Status.DISCARDED, source="tune", delta=-12.345, z=163.2,
                      reason=Reason.RESULT_ACCEPTED.value)
    text = hint(long, more=12345)
    assert text.startswith("discarded after a look #123456 12.3 better")
    review = Experiment(id=99999, status=Status.DISCARDED, source="tune", delta=-1.15, z=163.2,
                        reason=Reason.IMPLAUSIBLE.value)
    assert hint(review, more=3).startswith("implausible #99999 1.15 better 163σ")


def test_hover_says_what_it_tests_why_it_was_rejected_its_warnings_and_links_the_log():
    r = exp(14, SCRIPT.replace("DEPTH = 4", "DEPTH = 8"), status=Status.REJECTED, source="tune",
            hypothesis="deeper", question=2, rejection_reason="too slow at this budget")
    w = exp(15, SCRIPT.replace("DEPTH = 4", "DEPTH = 9"), status=Status.DISCARDED, delta=0.01, z=-1.0,
            warnings={"barely_trained": "ran 2 optimizer steps: loss ≈ ln(vocab)"}, log_path="/tmp/15.log")
    index = render.HistoryIndex.build([r, w], render.DocLines(SCRIPT))
    md = index.hover_markdown(3, {2: "Does depth help at 60 s?"})
    assert "tests Q2: Does depth help at 60 s?" in md and "rejected because: too slow at this budget" in md
    assert "⚠ ran 2 optimizer steps: loss ≈ ln(vocab)" in md
    assert "[log](command:sigmaloop.openLog?%5B15%5D)" in md and "openLog?%5B14%5D" not in md  # 14 never ran
    assert "rejected because: too slow" in index.label(3)[1] or index.by_line[3][0].exp.id == 15


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
    doc = render.DocLines(SCRIPT)
    line = render.locate_crash(doc, "    return x", 9)
    d = render.crash_diagnostic(doc, e, line)
    assert d.range.start.line == 8 and d.message == "exp #3 crashed: ValueError: bad"
    assert d.data == {"expId": 3, "crash": True}
    (action,) = render.log_actions([d], 8, 8)
    assert action.title == "Open log of #3" and action.command.command == "sigmaloop.openLog"
    assert action.command.arguments == [3] and render.log_actions([d], 0, 2) == []


def test_a_tracked_crash_line_follows_small_edits_and_goes_with_its_line():
    text = "    return x"
    edited = render.DocLines(SCRIPT.replace("    return x", "    return x  # why?"))
    assert render.locate_crash(edited, text, 8, tracked=True) == 8  # recognisably the same line
    rewritten = render.DocLines(SCRIPT.replace("    return x", "    print('a totally different line')"))
    assert render.locate_crash(rewritten, text, 8, tracked=True) is None
    deleted = render.DocLines(SCRIPT.replace("    return x\n", ""))
    assert render.locate_crash(deleted, text, 8, tracked=True) is None
    # a repeat of the text far away is not the tracked line; untracked, the nearest repeat is
    far = render.DocLines(SCRIPT.replace("    return x\n", "") + "\n" * 20 + "    return x\n")
    assert render.locate_crash(far, text, 8, tracked=True) is None
    assert render.locate_crash(far, text, 8) == len(far) - 1
    assert render.locate_crash(render.DocLines(SCRIPT), None, 4) == 4  # text unknown: where it was


def test_lens_title_from_the_state():
    state = {"metric": "val_bpb", "direction": "minimize", "kept": 3, "run": 17, "running": [],
             "reference": {"value": 1.2101, "sigma": 0.0023, "sigmaDof": 2, "seeds": [42, 43], "ids": [12, 13]},
             "best": {"id": 12, "metric": 1.2101, "hypothesis": "LR up"}}
    assert render.lens_title(state) == "val_bpb ↓ 1.2101 ± 0.0023 (#12, 2 seeds) · kept 3 / 17 run"
    state.update(direction="maximize", metric="accuracy", running=[20, 21, 22, 23])
    assert render.lens_title(state).startswith("accuracy ↑ 1.2101")
    assert render.lens_title(state).endswith("running #20, #21, #22 …")
    assert render.lens_title({"reference": None, "best": None, "kept": 0, "run": 0}) == \
        "no baseline yet · kept 0 / 0 run"


def test_noise_advisor_in_the_lens_title_and_its_advice_lens():
    advice = ("the judge can only keep improvements of 0.035 val_bpb or more (1.6% of the reference): "
              "run-to-run noise is large here. More baseline seeds (now 3; judge.seeds), …")
    state = {"metric": "val_bpb", "direction": "minimize", "kept": 0, "run": 0, "running": [],
             "reference": {"value": 2.1234, "sigma": 0.0123, "sigmaDof": 2, "seeds": [42, 43, 44],
                           "ids": [1, 2, 3], "keepThreshold": 0.0348, "advice": advice},
             "best": {"id": 1, "metric": 2.1234, "hypothesis": "baseline"}}
    assert render.lens_title(state) == \
        "val_bpb ↓ 2.1234 ± 0.0123 (#1, 3 seeds) · keeps ≥ 0.035 (1.6%) · kept 0 / 0 run"
    lenses = render.code_lenses(render.lens_title(state), render.lens_advice(state))
    (summary,) = [lens for lens in lenses if lens.command.command == "sigmaloop.summary"
                  and not lens.command.title.startswith("$(warning)")]
    assert summary.command.tooltip == advice and lenses[-2] is summary  # after the buttons
    assert lenses[-1].command.title == f"$(warning) {advice}" and lenses[-1].range.start.line == 0
    quiet = {**state, "reference": {**state["reference"], "keepThreshold": 0.004, "advice": None}}
    assert "keeps ≥ 0.004 (0.2%)" in render.lens_title(quiet)
    assert render.lens_advice(quiet) is None and len(render.code_lenses("t", None)) == 4


class Edit:  # the engine's EditStatus, as the code lens reads it
    def __init__(self, differs, added=0, removed=0, head="a1b2c3d"):
        self.differs, self.added, self.removed, self.head = differs, added, removed, head
        self.summary = "what runs"


def test_code_lens_buttons_follow_the_state_and_the_open_file():
    idle = {"loop": {"running": False}, "running": [], "counts": {"kept": 2}}
    titles = [t for t, _, _ in render.buttons(idle, Edit(False))]
    assert titles == ["$(play) Same as research head a1b2c3d · Run Baseline", "$(lightbulb) Propose",
                      "$(sync) Run loop"]  # no Stop: nothing runs
    titles = [(t, c) for t, c, _ in render.buttons(idle, Edit(True, 3, 1))]
    assert titles[:2] == [("$(play) Run my edit (3 lines differ from head a1b2c3d)", "sigmaloop.runEdit"),
                          ("$(history) Run baseline (head a1b2c3d, not your file)", "sigmaloop.runBaseline")]
    assert render.buttons(idle, Edit(True, 1, 1))[0][0] == "$(play) Run my edit (1 line differs from head a1b2c3d)"
    one = {**idle, "running": [12]}
    assert render.buttons(one, None)[-1][:2] == ("$(debug-stop) Stop #12", "sigmaloop.stopLoop")
    looping = {"loop": {"running": True}, "running": [12], "counts": {"queued": 1}}
    assert [t for t, _, _ in render.buttons(looping, Edit(True, 2, 2))] == [
        "$(play) Run my edit (2 lines differ from head a1b2c3d)", "$(debug-stop) Stop loop"]
    assert [t for t, _, _ in render.buttons(None, None)] == [
        "$(play) Run baseline", "$(lightbulb) Propose", "$(sync) Run loop"]


def test_implausible_gain_warns_offers_review_and_goes_after_it():
    e = exp(9, SCRIPT.replace("DEPTH = 4", "DEPTH = 64"), status=Status.DISCARDED, delta=-1.15, z=163.2,
            reason=Reason.IMPLAUSIBLE.value, verdict="-1.1500 val_bpb, 163.2σ: implausibly large, …")
    index = render.HistoryIndex.build([e], render.DocLines(SCRIPT), metric="val_bpb")
    (en,) = index.flagged
    d = render.flagged_diagnostic(index.doc, en, index.metric)
    assert d.severity == types.DiagnosticSeverity.Warning and d.range.start.line == 3
    assert d.message == "#9: −1.15 val_bpb at 163σ is implausibly large — look before keeping it"
    assert d.data == {"expId": 9, "review": True}
    assert [a.title for a in render.review_actions(en)] == [
        "Accept result of #9 (keep it)", "Reject result of #9…", "Show diff for #9"]
    assert [a.command.command for a in render.review_actions(en)] == [
        "sigmaloop.acceptResult", "sigmaloop.rejectResult", "sigmaloop.showExperiment"]
    assert index.review_at(3, 3) == [en] and index.review_at(0, 1) == []
    lenses = render.experiment_lenses(index)
    assert [lens.command.title for lens in lenses][1:] == [
        "$(check) Accept result", "$(close) Reject result", "$(diff) Show diff"]
    assert all(lens.range.start.line == 3 and lens.command.arguments == [9] for lens in lenses)
    (hint,) = index.inlay_hints(3, 3)
    assert hint.label[0].value.startswith("implausible #9")
    # looked at and refused: no longer flagged; the history says what happened
    index.update(Experiment(**{**e.__dict__, "reason": Reason.RESULT_REJECTED.value}))
    assert index.flagged == [] and render.experiment_lenses(index) == []
    assert "| discarded after a look |" in index.hover_markdown(3)


def test_tampered_and_over_budget_are_never_shown_like_a_keep():
    t = exp(5, SCRIPT.replace("LR = 0.04", "LR = 0.4"), status=Status.TAMPERED, delta=-0.3, z=40.0,
            reason=Reason.METRIC_MISMATCH.value, evaluator="prepare:abc123",
            verdict="tampered: the printed metric is not the evaluator's (printed 0.7, evaluated 1.0)")
    o = exp(6, SCRIPT.replace("DEPTH = 4", "DEPTH = 5"), status=Status.OVER_BUDGET, delta=-0.01, z=3.0,
            reason=Reason.OVER_BUDGET.value, verdict="over budget: trained 75s of a 60s budget")
    s = exp(7, SCRIPT.replace("    x = 1", "    x = 2"), status=Status.KEPT, delta=-0.01, z=3.0,
            reason=Reason.IMPROVED.value, evaluator="self-reported")
    index = render.HistoryIndex.build([t, o, s], render.DocLines(SCRIPT))
    assert [en.exp.id for en in index.flagged] == [6, 5]
    by_id = {en.exp.id: render.flagged_diagnostic(index.doc, en, "val_bpb") for en in index.flagged}
    assert by_id[5].severity == types.DiagnosticSeverity.Error
    assert by_id[5].message == ("exp #5 tampered: the printed metric is not the evaluator's "
                                "(printed 0.7, evaluated 1.0)")
    assert by_id[6].severity == types.DiagnosticSeverity.Warning
    assert by_id[6].message == "exp #6 over budget: trained 75s of a 60s budget"
    assert index.label(2)[0].startswith("tampered #5") and index.label(3)[0].startswith("over budget #6")
    assert "| **tampered** |" in index.hover_markdown(2)
    assert "| **over budget** |" in index.hover_markdown(3)
    assert "| kept · self-reported metric |" in index.hover_markdown(7)
    titles = [lens.command.title for lens in render.experiment_lenses(index)]
    assert titles == ["$(watch) #6 over budget: trained 75s of a 60s budget",
                      "$(error) #5 tampered: the printed metric is not the evaluator's (printed 0.7, evaluated 1.0)"]
