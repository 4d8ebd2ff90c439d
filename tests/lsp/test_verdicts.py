"""Verdicts the edit under test cannot game, as the editor shows them: an implausibly large gain
waits for a look (a warning, code lenses and quick fixes to accept or reject its result), tampered
and over-budget results are flagged and never look like a keep, and the code lens on the reference
says the smallest improvement the judge can keep (with advice when the noise is large).

The judged rows are arranged through an engine beside the server, as a CLI would write them: a
real baseline and real trials, then the verdict the judge would have given, set in the journal."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient
from test_server import LINES, code_actions, diags, execute, open_doc

from sigmaloop.engine import Engine
from sigmaloop.lifecycle import Reason
from sigmaloop.models import Proposal, Status

from enginekit import FAKE_TRAIN, edit
from lspkit import wait_until

LR_LINE = LINES.index("LR = 0.1            # the metric grows with (LR - 0.1)^2")
DEPTH_LINE = LINES.index("DEPTH = 4")


def _propose(eng: Engine, old: str, new: str, hypothesis: str) -> int:
    return eng.add_proposal(Proposal(edit(eng.head_source(), old, new), hypothesis, "user")).id


def arrange_implausible(ws) -> tuple[int, int]:
    """A baseline, then two real candidates the judge discarded, marked as the judge marks an
    implausibly large gain (held back until the researcher looks)."""
    eng = Engine(ws)
    try:
        eng.run_baseline()
        ids = []
        for old, new, hyp in (("LR = 0.1 ", "LR = 0.3 ", "a much larger LR"),
                              ("DEPTH = 4", "DEPTH = 64", "sixteen times deeper")):
            exp = eng.run(_propose(eng, old, new, hyp))
            assert exp.status == Status.DISCARDED, exp.verdict
            # scored from the number the script printed (no fixed evaluator): the editor says so
            eng.core.update(exp.id, reason=Reason.IMPLAUSIBLE, delta=-1.15, z=163.2, numbers={"runs": 1},
                            evaluator="self-reported")
            ids.append(exp.id)
        return ids[0], ids[1]
    finally:
        eng.close()


def arrange_untrusted(ws) -> tuple[int, int]:
    """A noisy baseline (its seeds far apart) and two trials that ended tampered / over budget."""
    eng = Engine(ws)
    try:
        base = eng.run_baseline()
        eng.core.update(base[1].id, metric=base[1].metric + 0.1)
        ids = []
        for (old, new), status, reason, detail in (
                (("LR = 0.1 ", "LR = 0.4 "), Status.TAMPERED, Reason.METRIC_MISMATCH,
                 "printed 0.7000, the evaluator measured 1.0900"),
                (("DEPTH = 4", "DEPTH = 5"), Status.OVER_BUDGET, Reason.OVER_BUDGET,
                 "trained 0.9s of a 0.3s budget")):
            i = _propose(eng, old, new, f"{old.strip()} → {new.strip()}")
            for step in (Status.ACCEPTED, Status.QUEUED, Status.RUNNING):
                eng.core.move(i, step)
            eng.core.move(i, status, reason=reason, detail=detail, delta=-0.3, z=40.0,
                          evaluator="prepare:0123abcd", printed_metric=0.7)
            ids.append(i)
        return ids[0], ids[1]
    finally:
        eng.close()


async def lenses(client: LanguageClient) -> list[types.CodeLens]:
    return await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=client.script_uri)))


async def lens_until(client: LanguageClient, pred) -> list[types.CodeLens]:
    for _ in range(100):
        got = await lenses(client)
        if pred(got):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError([lens.command.title for lens in got])


async def test_implausible_gain_is_reviewed_in_the_editor(client: LanguageClient):
    lr, deep = await asyncio.to_thread(arrange_implausible, client.ws)
    open_doc(client)
    warnings = await wait_until(lambda: len(w := [d for d in diags(client, types.DiagnosticSeverity.Warning)
                                                  if "implausibly large" in d.message]) == 2 and w)
    (on_lr,) = [d for d in warnings if d.range.start.line == LR_LINE]
    assert on_lr.message == f"#{lr}: −1.15 val_bpb at 163σ is implausibly large — look before keeping it"

    # a code lens over the edit: the verdict, then Accept result / Reject result / Show diff
    got = await lens_until(client, lambda ls: any(lens.range.start.line == LR_LINE for lens in ls))
    over = [lens.command for lens in got if lens.range.start.line == LR_LINE]
    assert [c.title for c in over][1:] == ["$(check) Accept result", "$(close) Reject result", "$(diff) Show diff"]
    assert [c.command for c in over] == ["sigmaloop.showExperiment", "sigmaloop.acceptResult",
                                         "sigmaloop.rejectResult", "sigmaloop.showExperiment"]
    assert all(list(c.arguments) == [lr] for c in over)
    # the same as quick fixes on the warning
    actions = await code_actions(client, DEPTH_LINE)
    assert [a["title"] for a in actions] == [f"Accept result of #{deep} (keep it)",
                                             f"Reject result of #{deep}…", f"Show diff for #{deep}"]
    assert actions[1]["command"] == {"title": f"Reject result of #{deep}…", "command": "sigmaloop.rejectResult",
                                     "arguments": [deep]}

    # only an implausible gain waiting for a look can be reviewed: a baseline is refused, and why
    with pytest.raises(JsonRpcException, match="was not held back as implausible") as err:
        await execute(client, "sigmaloop.acceptResult", 1)
    assert err.value.code == -32803  # RequestFailed
    with pytest.raises(JsonRpcException, match="reason must be a string"):
        await execute(client, "sigmaloop.rejectResult", deep, 5)

    # reject one (with a reason), accept the other
    refused = await execute(client, "sigmaloop.rejectResult", deep, "a 64-layer net in 0.3 s? no")
    assert refused["status"] == "discarded" and refused["reason"] == "result_rejected"
    assert refused["detail"] == "a 64-layer net in 0.3 s? no"
    kept = await execute(client, "sigmaloop.acceptResult", {"id": lr})
    assert kept["status"] == "kept" and kept["reason"] == "result_accepted"
    with pytest.raises(JsonRpcException, match="was not held back as implausible"):
        await execute(client, "sigmaloop.acceptResult", lr)  # once is enough

    # after the look the warnings, lenses and quick fixes are gone; the history says what happened
    await wait_until(lambda: not [d for d in diags(client) if "implausibly" in d.message])
    await lens_until(client, lambda ls: all(lens.range.start.line == 0 for lens in ls))
    assert await code_actions(client, DEPTH_LINE) == []
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=client.script_uri),
        position=types.Position(line=LR_LINE, character=1)))
    assert "| kept after a look · self-reported metric |" in hover.contents.value  # the script printed it
    eng = Engine(client.ws)
    try:
        assert eng.get(lr).status == Status.KEPT and eng.head_source() != FAKE_TRAIN  # the branch advanced
    finally:
        eng.close()


async def test_tampered_and_over_budget_are_flagged_and_the_noise_advisor_speaks(client: LanguageClient):
    tampered, over = await asyncio.to_thread(arrange_untrusted, client.ws)
    open_doc(client)
    error = await wait_until(lambda: diags(client, types.DiagnosticSeverity.Error))
    assert error[0].range.start.line == LR_LINE
    assert error[0].message == (f"exp #{tampered} tampered: the printed metric is not the evaluator's: "
                                "printed 0.7000, the evaluator measured 1.0900")
    warning = await wait_until(lambda: diags(client, types.DiagnosticSeverity.Warning))
    assert warning[0].range.start.line == DEPTH_LINE
    assert warning[0].message == f"exp #{over} over budget: trained 0.9s of a 0.3s budget"

    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=client.script_uri),
        range=types.Range(start=types.Position(line=0, character=0),
                          end=types.Position(line=len(LINES), character=0))))
    labels = {h.position.line: h.label[0].value for h in hints}
    # status first; an untrusted number gets no size
    assert labels[LR_LINE] == f"tampered #{tampered}" and labels[DEPTH_LINE] == f"over budget #{over}"
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=client.script_uri),
        position=types.Position(line=LR_LINE, character=1)))
    assert "| **tampered** |" in hover.contents.value and "kept" not in hover.contents.value

    # code lenses: each flagged run over its edit; on top the reference with what it can keep,
    # and — the seeds being far apart — what would lower that
    got = await lens_until(client, lambda ls: any("keeps ≥" in lens.command.title for lens in ls)
                           and any(lens.range.start.line == LR_LINE for lens in ls))
    titles = {lens.range.start.line: lens.command.title for lens in got if lens.range.start.line}
    assert titles[LR_LINE].startswith(f"$(error) #{tampered} tampered: the printed metric")
    assert titles[DEPTH_LINE] == f"$(watch) #{over} over budget: trained 0.9s of a 0.3s budget"
    state = await execute(client, "sigmaloop.summary")
    assert state["counts"]["tampered"] == 1 and state["counts"]["over_budget"] == 1
    ref = state["reference"]
    assert ref["keepThreshold"] > 0.1 and ref["advice"]
    top = [lens.command for lens in got if lens.range.start.line == 0]
    keeps = f"keeps ≥ {ref['keepThreshold']:.2g} ({100 * ref['keepThreshold'] / ref['value']:.1f}%)"
    title = top[-2]  # after the buttons, before the advice
    assert title.command == "sigmaloop.summary"
    assert title.title.startswith("val_bpb ↓ ") and f"(#1, 2 seeds) · {keeps} · kept 0 / 0 run" in title.title
    assert top[-1].title == f"$(warning) {ref['advice']}" and title.tooltip == ref["advice"]
