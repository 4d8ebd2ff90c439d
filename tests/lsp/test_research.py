"""The research view over the wire, end to end: the real server process over stdio, a real git
workspace, real trials of enginekit's contract-true trainer. A researcher asks a question, runs
their own edit of the open file as an experiment, reads what it showed; a crash's diagnostic
follows its line and opens the log; the code lens offers what the state allows."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient
from test_server import (
    BIAS_LINE,
    CRASH_LINE,
    LINES,
    code_actions,
    diags,
    execute,
    open_doc,
    propose_in_process,
)

from sigmaloop.lsp import render

from enginekit import FAKE_TRAIN
from lspkit import _to_dict, wait_until


def change(client: LanguageClient, version: int, start: int, end: int, text: str, end_char: int = 0) -> None:
    """An incremental edit of the open train script: lines [start, end) replaced by ``text``."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.script_uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=start, character=0),
                              end=types.Position(line=end, character=end_char)),
            text=text)]))


async def lens_titles(client: LanguageClient) -> list[str]:
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=client.script_uri)))
    return [lens.command.title for lens in lenses]


async def lens_until(client: LanguageClient, pred, timeout: float = 30.0) -> list[str]:
    """Code lens titles once ``pred(titles)`` holds (they follow the state, recomputed off the loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        titles = await lens_titles(client)
        if pred(titles):
            return titles
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"code lenses never matched: {titles}")
        await asyncio.sleep(0.05)


def research_head(ws: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short=7", "sigmaloop/test"], cwd=ws, capture_output=True,
                          text=True, check=True).stdout.strip()


def said(client: LanguageClient, start: str) -> list[str]:
    return [m.message for m in client.messages if m.message.startswith(start)]


async def finished(client: LanguageClient, exp_id: int) -> dict:
    return await wait_until(lambda: (r := client.rec.latest(exp_id)) and r["status"] in
                            ("kept", "discarded", "crashed", "timeout", "pruned") and r, timeout=60)


async def test_a_question_is_asked_tested_by_my_edit_and_answered(client: LanguageClient):
    rec = client.rec
    q = await execute(client, "sigmaloop.ask", "Does a lower bias help?", "if it is 0.05 better I keep it")
    assert q["id"] >= 1 and q["status"] == "open" and q["decision"] == "if it is 0.05 better I keep it"
    assert q["experiments"] == [] and q["verdict"].startswith("open")
    # the state carries it (the panel and the status bar read it there)
    await wait_until(lambda: any(x["id"] == q["id"] for s in rec.states for x in s.get("questions") or ()))

    uri = open_doc(client)
    head = research_head(client.ws)
    st = await execute(client, "sigmaloop.editStatus")
    assert st == {"differs": False, "added": 0, "removed": 0, "head": head, "summary": st["summary"]}
    with pytest.raises(JsonRpcException, match="same as the research head"):
        await execute(client, "sigmaloop.runEdit")

    # the researcher edits the open file (unsaved): the editor says it differs and what runs
    change(client, 2, BIAS_LINE, BIAS_LINE + 1, "BIAS = -0.1\n")
    st = await execute(client, "sigmaloop.editStatus")
    assert st["differs"] and (st["added"], st["removed"]) == (1, 1) and st["head"] == head
    assert "Run My Edit runs your file" in st["summary"] and "Run Baseline runs the head" in st["summary"]
    titles = await lens_until(client, lambda t: any("Run my edit" in x for x in t))
    assert f"$(play) Run my edit (1 line differs from head {head})" in titles
    assert f"$(history) Run baseline (head {head}, not your file)" in titles

    # the baseline measures the head; once done it says so, once, with numbers
    await execute(client, "sigmaloop.runBaseline")
    await wait_until(lambda: said(client, "sigmaloop: Baseline done"), timeout=60)
    (done,) = said(client, "sigmaloop: Baseline done")
    assert done.startswith("sigmaloop: Baseline done: val_bpb ") and " over 2 seeds; keep needs ≥ " in done
    # the stand-in trainer makes 5 steps: the engine warns that it barely trained, once for both seeds
    assert done.count("⚠") == 1 and "only 5 optimizer steps" in done

    # my edit, as an experiment: the unsaved text runs, with the hypothesis and prediction given
    queued = await execute(client, "sigmaloop.runEdit", "a lower bias lowers val_bpb", -0.08, q["id"])
    assert queued["source"] == "user" and queued["status"] in ("accepted", "queued", "running")
    assert queued["question"] == q["id"] and queued["predictedDelta"] == -0.08
    assert queued["hypothesis"] == "a lower bias lowers val_bpb" and "+BIAS = -0.1" in queued["diff"]
    assert Path(client.ws / "train.py").read_text() == FAKE_TRAIN  # the file on disk was never touched
    e = await finished(client, queued["id"])
    assert e["status"] == "kept", e["verdict"]
    f = e["effect"]
    assert f["level"] == 0.95 and 0.09 < f["better"] < 0.11 and f["low"] > 0 and f["high"] > f["better"]

    # the question's page: its experiment, the effect with its interval, where it stands
    page = await execute(client, "sigmaloop.question", q["id"])
    assert [x["id"] for x in page["experiments"]] == [queued["id"]]
    assert page["experiments"][0]["effect"]["better"] == pytest.approx(f["better"])
    assert page["question"]["experiments"] == [queued["id"]]
    assert page["question"]["verdict"].startswith(f"open: #{queued['id']} kept")

    # the line carries it, status first; the hover says what it tested
    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=0, character=0),
                          end=types.Position(line=len(LINES), character=0))))
    (hint,) = [h for h in hints if h.position.line == BIAS_LINE]
    assert hint.label[0].value.startswith(f"kept #{queued['id']} 0.1") and len(hint.label[0].value) <= 43
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=BIAS_LINE, character=1)))
    assert f"tests Q{q['id']}: Does a lower bias help?" in hover.contents.value
    assert f"command:sigmaloop.openLog?%5B{queued['id']}%5D" in hover.contents.value

    # kept: the head is now my edit, so the open file is the research head again
    new_head = research_head(client.ws)
    await lens_until(client, lambda t: f"$(play) Same as research head {new_head} · Run Baseline" in t)

    closed = await execute(client, "sigmaloop.closeQuestion", q["id"], "yes: 0.1 better, kept")
    assert closed["status"] == "answered" and closed["answer"] == "yes: 0.1 better, kept"
    assert closed["verdict"] == "answered: yes: 0.1 better, kept"
    with pytest.raises(JsonRpcException, match="question"):
        await execute(client, "sigmaloop.question", 999)


async def test_a_crash_diagnostic_follows_its_line_opens_the_log_and_goes_with_the_line(client: LanguageClient):
    open_doc(client)
    exp_id = await asyncio.to_thread(propose_in_process, client.ws, "CRASH = False", "CRASH = True", "crash it")
    await wait_until(lambda: client.rec.latest(exp_id))
    await execute(client, "sigmaloop.accept", exp_id)

    def crash():
        return [d for d in diags(client, types.DiagnosticSeverity.Error) if d.code == f"exp-{exp_id}"]

    await wait_until(crash, timeout=30)
    # placed by its text (fetched from the experiment's script), then tracked
    await wait_until(lambda: (c := crash()) and c[0].range.start.line == CRASH_LINE)
    actions = await code_actions(client, CRASH_LINE)
    (log,) = [a for a in actions if a["title"] == f"Open log of #{exp_id}"]
    assert log["command"] == {"title": f"Open log of #{exp_id}", "command": "sigmaloop.openLog",
                              "arguments": [exp_id]}
    rec = client.rec.latest(exp_id)
    assert rec["logPath"] and Path(rec["logPath"]).read_text()  # the log it opens is there

    # two lines inserted above: it moves down with its line
    change(client, 2, 0, 0, "# a comment\n# another\n")
    await wait_until(lambda: (c := crash()) and c[0].range.start.line == CRASH_LINE + 2)
    # three lines deleted above (the two comments and the docstring): up by three
    change(client, 3, 0, 3, "")
    await wait_until(lambda: (c := crash()) and c[0].range.start.line == CRASH_LINE - 1)
    # the crash line itself deleted: its diagnostic goes with it
    change(client, 4, CRASH_LINE - 1, CRASH_LINE, "")
    await wait_until(lambda: not crash())


async def test_code_lens_follows_the_loop_and_a_finished_loop_says_so_once(client: LanguageClient):
    open_doc(client)
    titles = await lens_titles(client)
    assert not any("Stop" in t for t in titles)
    await execute(client, "sigmaloop.startLoop", 1, None, "tune")
    # while the loop runs: Stop loop, and neither Propose nor Run loop
    titles = await lens_until(client, lambda t: "$(debug-stop) Stop loop" in t)
    assert not any("Propose" in t or "Run loop" in t or "Run Baseline" in t for t in titles)
    msg = await wait_until(lambda: said(client, "sigmaloop: Loop done"), timeout=90)
    assert len(msg) == 1 and msg[0].startswith("sigmaloop: Loop done: 1 run, ")
    assert "; best val_bpb " in msg[0]
    # what it learned, in sentences, in the log (the terminal's words: sigmaloop.learned)
    logged = [m.message for m in client.log_messages]
    assert "what the loop learned:" in logged
    assert any(m.startswith("Reference: val_bpb ") for m in logged)
    # and the buttons come back
    titles = await lens_until(client, lambda t: "$(sync) Run loop" in t)
    assert not any("Stop" in t for t in titles)
    await asyncio.sleep(0.5)
    assert len(said(client, "sigmaloop: Loop done")) == 1


@pytest.mark.workspace("spiky")
async def test_experiments_with_curves_carry_their_anomalies(client: LanguageClient):
    await execute(client, "sigmaloop.runBaseline")
    await wait_until(lambda: said(client, "sigmaloop: Baseline done"), timeout=60)
    got = _to_dict(await client.protocol.send_request_async(
        "sigmaloop/experiments", {"curves": True, "maxPoints": 10}))
    runs = [e for e in got["experiments"] if e["source"] == "baseline"]
    assert runs and all(len(e["curve"]) == 10 for e in runs)
    for e in runs:
        kinds = [a["kind"] for a in e["anomalies"]]
        assert "spike" in kinds, e["anomalies"]
        (spike,) = [a for a in e["anomalies"] if a["kind"] == "spike"]
        assert set(spike) == {"kind", "frac", "step", "message"} and spike["step"] == 8
        assert spike["message"].startswith("loss spike ×")
    # without curves, no anomalies either
    plain = _to_dict(await client.protocol.send_request_async("sigmaloop/experiments", {}))
    assert "anomalies" not in plain["experiments"][0] and "curve" not in plain["experiments"][0]


def test_the_loop_and_baseline_summaries_read_in_numbers():
    """The words of the two 'done' messages (the engine's numbers, nothing computed in the client)."""
    from sigmaloop.lifecycle import Reason
    from sigmaloop.models import CrashLocation, Experiment, Status
    from sigmaloop.questions import effect
    from sigmaloop.state import BestState, ReferenceState

    class State:
        reference = ReferenceState(1.23456, 0.0027, 5, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], keep_threshold=0.0077)
        best = BestState(12, 1.2233, "LR up")

    base = [Experiment(id=i, status=Status.KEPT, source="baseline", reason=Reason.BASELINE.value) for i in range(6)]
    assert render.baseline_done(base, State, "val_bpb") == \
        "Baseline done: val_bpb 1.2346 ± 0.0027 over 6 seeds; keep needs ≥ 0.0077 better"
    base[0] = Experiment(id=0, status=Status.KEPT, source="baseline", warnings={"barely_trained": "ran 2 steps"})
    assert render.baseline_done(base, State, "val_bpb").endswith("better; ⚠ #0: ran 2 steps")

    def cand(i, status, reason="", delta=None, z=None):
        return Experiment(id=i, status=status, source="tune", reason=reason, delta=delta, z=z, sigma=0.0027,
                          numbers={"runs": 2.0, "dof": 5.0})

    done = [cand(12, Status.KEPT, Reason.IMPROVED.value, -0.012, 3.1)]
    done += [cand(i, Status.DISCARDED, Reason.WITHIN_NOISE.value, 0.001, -0.3) for i in range(13, 20)]
    done += [Experiment(id=i, status=Status.CRASHED, source="tune", reason=Reason.CRASHED.value,
                        crash=CrashLocation("train.py", 3, "boom")) for i in (20, 21)]
    text = render.loop_done(done, 10, False, State, lambda e: effect(e), "val_bpb")
    assert text == ("Loop done: 10 run, 1 kept (#12, 0.012 better), 7 within noise, 2 crashed; "
                    "best val_bpb 1.2233 (#12)")
    none = render.loop_done(done[1:4], 10, True, State, lambda e: effect(e), "val_bpb")
    assert none == "Loop stopped: 3 run, none kept, 3 within noise; best val_bpb 1.2233 (#12); " \
                   "a keep needs ≥ 0.0077 better"
