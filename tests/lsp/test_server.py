"""End to end: the real server process over stdio, a real git workspace, real trials."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from sigmaloop.engine import Engine
from sigmaloop.models import Proposal
from sigmaloop.runner import is_alive

from enginekit import FAKE_TRAIN, edit
from lspkit import _to_dict, wait_until

LINES = FAKE_TRAIN.splitlines()
BIAS_LINE = LINES.index("BIAS = 0.0          # added to the metric: a \"real\" improvement when negative")
CRASH_LINE = LINES.index('        raise RuntimeError("boom: the edit broke training")')
SLEEP_LINE = LINES.index("SLEEP = 0.0         # extra seconds before the summary (hang tests)")


async def execute(client: LanguageClient, command: str, *args):
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=list(args)))


def open_doc(client: LanguageClient, text: str = FAKE_TRAIN, version: int = 1) -> str:
    uri = client.script_uri
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))
    return uri


def propose_in_process(ws, old: str, new: str, hypothesis: str, source: str = "user") -> int:
    """A proposal written to the journal by another process (like a CLI beside the editor)."""
    eng = Engine(ws)
    try:
        exp = eng.add_proposal(Proposal(edit(eng.head_source(), old, new), hypothesis, source,
                                        predicted_delta=-0.05))
        return exp.id
    finally:
        eng.close()


async def code_actions(client: LanguageClient, line: int) -> list[dict]:
    """textDocument/codeAction as raw JSON (lsprotocol's client-side hook reads any CodeAction
    with a command as a bare Command, dropping kind and tags)."""
    proto = client.protocol
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=client.script_uri), range=whole(line),
        context=types.CodeActionContext(diagnostics=[]))
    proto.get_result_type = lambda method: None
    try:
        return await proto.send_request_async(types.TEXT_DOCUMENT_CODE_ACTION, params)
    finally:
        del proto.get_result_type


def diags(client: LanguageClient, severity=None):
    out = client.diagnostics.get(client.script_uri, [])
    return [d for d in out if severity is None or d.severity == severity]


def whole(line: int) -> types.Range:
    return types.Range(start=types.Position(line=line, character=0),
                       end=types.Position(line=line, character=1))


async def test_code_lens_shows_buttons(client: LanguageClient):
    uri = open_doc(client)
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    titles = [lens.command.title for lens in lenses]
    head = git_head(client.ws)
    # the open file is the research head: no edit to run, and nothing runs, so no Stop; the
    # buttons first (a narrow editor cuts the long title, not them), then the state's title
    assert titles[:-1] == [f"$(play) Same as research head {head} · Run Baseline", "$(lightbulb) Propose",
                           "$(sync) Run loop"]
    assert "no baseline yet" in titles[-1] and "kept 0 / 0 run" in titles[-1]
    assert all(lens.range.start.line == 0 for lens in lenses)
    assert [lens.command.command for lens in lenses] == [
        "sigmaloop.runBaseline", "sigmaloop.propose", "sigmaloop.startLoop", "sigmaloop.summary"]


async def summary_lens(client: LanguageClient) -> str:
    """The code lens with the state's title (sigmaloop.summary, not the advice)."""
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=client.script_uri)))
    return next(lens.command.title for lens in lenses if lens.command.command == "sigmaloop.summary"
                and not lens.command.title.startswith("$(warning)"))


def git_head(ws) -> str:
    return subprocess.run(["git", "rev-parse", "--short=7", "sigmaloop/test"], cwd=ws, capture_output=True,
                          text=True, check=True).stdout.strip()


async def test_baseline_progress_proposal_accept_hints_hover(client: LanguageClient):
    rec = client.rec
    uri = open_doc(client)
    started = await execute(client, "sigmaloop.runBaseline")
    assert started["started"] == "baseline"
    await wait_until(lambda: rec.progress)
    assert {"step", "t", "frac", "loss"} <= set(rec.progress[0][1]["records"][0])
    await wait_until(lambda: len({u["id"] for _, u in rec.updates
                                  if u["source"] == "baseline" and u["status"] == "kept"}) == 2)
    # progress is coalesced: never more than ~10 notifications a second
    times = [t for t, _ in rec.progress]
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(times))
    # $/progress for the server's own trials: begin, report(s), end
    await wait_until(lambda: sum(any(isinstance(v, types.WorkDoneProgressEnd) for v in vals)
                                 for vals in client.progress_reports.values()) == 2)
    (vals, *_) = client.progress_reports.values()
    assert isinstance(vals[0], types.WorkDoneProgressBegin) and vals[0].cancellable
    assert any(isinstance(v, types.WorkDoneProgressReport) and v.percentage for v in vals)

    # a proposal made beside the editor → Information diagnostic + code actions
    exp_id = await asyncio.to_thread(propose_in_process, client.ws, "BIAS = 0.0", "BIAS = -0.1", "lower bias lowers val_bpb")
    info = await wait_until(lambda: [d for d in diags(client, types.DiagnosticSeverity.Information)
                                     if f"#{exp_id}" in d.message])
    assert info[0].range.start.line == BIAS_LINE
    assert "lower bias lowers val_bpb" in info[0].message
    actions = await code_actions(client, BIAS_LINE)
    titles = [a["title"] for a in actions]
    assert titles[0].startswith(f"Accept experiment #{exp_id}: lower bias")
    assert titles[1] == f"Reject experiment #{exp_id}…" and titles[2] == f"Show diff for #{exp_id}"
    assert [a["command"]["command"] for a in actions] == [
        "sigmaloop.accept", "sigmaloop.reject", "sigmaloop.showExperiment"]
    assert all(a["command"]["arguments"] == [exp_id] for a in actions)
    assert all(a["kind"] == "quickfix" and "tags" not in a for a in actions)  # not LLM-made

    shown = await execute(client, "sigmaloop.showExperiment", exp_id)
    assert "-BIAS = 0.0" in shown["diff"] and "BIAS = -0.1" in shown["proposedText"]
    assert shown["parentText"] == FAKE_TRAIN

    queued = await execute(client, actions[0]["command"]["command"], *actions[0]["command"]["arguments"])
    assert queued["status"] == "queued" and queued["id"] == exp_id
    done = await wait_until(lambda: (r := rec.latest(exp_id)) and r["status"] in
                            ("kept", "discarded", "crashed") and r)
    assert done["status"] == "kept", done["verdict"]
    assert done["z"] > 2 and done["delta"] < 0

    # the proposal's diagnostic is gone; the line carries its history as an inlay hint
    await wait_until(lambda: not diags(client, types.DiagnosticSeverity.Information))
    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=0, character=0),
                          end=types.Position(line=len(LINES), character=0))))
    on_line = [h for h in hints if h.position.line == BIAS_LINE]
    assert len(on_line) == 1
    part = on_line[0].label[0]
    assert part.value.startswith(f"kept #{exp_id} 0.1 better ") and part.value.endswith("σ")
    assert part.tooltip.startswith(f"#{exp_id} BIAS 0.0→-0.1: lower bias lowers val_bpb")
    assert part.command.command == "sigmaloop.showExperiment" and list(part.command.arguments) == [exp_id]
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=BIAS_LINE, character=2)))
    assert f"#{exp_id}" in hover.contents.value and "| kept" in hover.contents.value
    assert "lower bias" in hover.contents.value

    # the code lens summary follows
    for _ in range(100):  # recomputed off the loop shortly after each finished trial
        title = await summary_lens(client)
        if "kept 1 / 1 run" in title:
            break
        await asyncio.sleep(0.05)
    assert title.startswith("val_bpb ↓ 0.9")  # the new head's reference
    assert f"(#{exp_id}, " in title and "kept 1 / 1 run" in title
    assert "keeps ≥ " in title  # the noise advisor: the smallest keepable gain

    # sigmaloop/experiments, with curves
    got = await client.protocol.send_request_async(
        "sigmaloop/experiments", {"ids": [exp_id], "curves": True, "maxPoints": 3})
    (one,) = _to_dict(got)["experiments"]
    assert one["id"] == exp_id and one["status"] == "kept" and len(one["curve"]) == 3
    everything = _to_dict(await client.protocol.send_request_async("sigmaloop/experiments", {}))
    assert len(everything["experiments"]) >= 4 and "curve" not in everything["experiments"][0]


async def test_crashing_proposal_gives_error_at_its_line(client: LanguageClient):
    open_doc(client)
    exp_id = await asyncio.to_thread(propose_in_process, client.ws, "CRASH = False", "CRASH = True", "crash it")
    await wait_until(lambda: client.rec.latest(exp_id))
    await execute(client, "sigmaloop.accept", exp_id)
    errors = await wait_until(lambda: diags(client, types.DiagnosticSeverity.Error))
    assert errors[0].range.start.line == CRASH_LINE
    assert errors[0].message == f"exp #{exp_id} crashed: RuntimeError: boom: the edit broke training"
    # edits above shift it: the diagnostic follows the line's text
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.script_uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=0),
                              end=types.Position(line=0, character=0)),
            text="# a comment\n# another\n")]))
    await wait_until(lambda: (e := diags(client, types.DiagnosticSeverity.Error))
                     and e[0].range.start.line == CRASH_LINE + 2)


async def test_reject_with_reason_is_stored(client: LanguageClient):
    exp_id = await asyncio.to_thread(propose_in_process, client.ws, "DEPTH = 4", "DEPTH = 5", "deeper is better",
                                source="llm:test-model")
    open_doc(client)
    await wait_until(lambda: diags(client, types.DiagnosticSeverity.Information))
    actions = await code_actions(client, LINES.index("DEPTH = 4"))
    assert len(actions) == 3 and all(a["tags"] == [1] for a in actions)  # LlmGenerated
    rec = await execute(client, "sigmaloop.reject", exp_id, "too risky today")
    assert rec["status"] == "rejected" and rec["rejectionReason"] == "too risky today"
    eng = Engine(client.ws)
    try:
        assert eng.get(exp_id).rejection_reason == "too risky today"
    finally:
        eng.close()
    await wait_until(lambda: not diags(client, types.DiagnosticSeverity.Information))


async def test_adopt_round_trip_and_unsaved_changes(client: LanguageClient):
    # a kept experiment, made by an engine beside the server
    eng = Engine(client.ws)
    try:
        eng.run_baseline()
        exp = eng.run(eng.add_proposal(Proposal(edit(eng.head_source(), "BIAS = 0.0", "BIAS = -0.1"),
                                                "lower bias", "user", predicted_delta=-0.08)).id)
        assert exp.status.value == "kept"
        expected = eng.experiment_source(exp.id)
    finally:
        eng.close()
    calibration = (await execute(client, "sigmaloop.summary"))["calibration"]
    assert calibration["n"] == 1 and calibration["signAccuracy"] == 1.0
    assert calibration["improvementsConfirmed"] == 1
    uri = open_doc(client)
    result = await execute(client, "sigmaloop.adopt", exp.id)
    assert result == {"id": exp.id, "applied": True, "via": "workspaceEdit"}
    (params,) = client.rec.apply_edits
    (doc_edit,) = params.edit.document_changes
    assert doc_edit.text_document.uri == uri and doc_edit.text_document.version == 1
    (text_edit,) = doc_edit.edits
    assert text_edit.range.start == types.Position(line=0, character=0)
    assert text_edit.range.end == types.Position(line=len(LINES), character=0)
    assert text_edit.new_text == expected and "BIAS = -0.1" in expected
    assert (client.ws / "train.py").read_text() == FAKE_TRAIN  # the server never wrote the file

    # unsaved changes in the editor: the server refuses and sends no edit
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=FAKE_TRAIN + "# wip\n")]))
    with pytest.raises(JsonRpcException, match="unsaved changes"):
        await execute(client, "sigmaloop.adopt", exp.id)
    assert len(client.rec.apply_edits) == 1
    # the client declining the edit is reported, not an error
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=3),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=FAKE_TRAIN)]))
    client.rec.apply_result = False
    result = await execute(client, "sigmaloop.adopt", exp.id)
    assert result["applied"] is False
    # not adoptable: a baseline
    with pytest.raises(JsonRpcException, match="only kept experiments"):
        await execute(client, "sigmaloop.adopt", 1)


async def test_cli_beside_the_server_shows_up_within_a_second(client: LanguageClient):
    code = ("import sys; from sigmaloop.engine import Engine; "
            "e = Engine(sys.argv[1]); e.run_baseline([42]); e.close()")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(client.ws),
                                                stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    exited = time.monotonic()
    assert proc.returncode == 0, err
    await wait_until(lambda: any(u["status"] == "kept" and u["source"] == "baseline"
                                 for _, u in client.rec.updates), timeout=5)
    arrived = next(t for t, u in client.rec.updates if u["status"] == "kept")
    assert arrived - exited < 1.0
    # the intermediate states were seen too (queued → running → kept)
    statuses = [u["status"] for _, u in client.rec.updates]
    assert "running" in statuses


async def test_malformed_arguments_get_errors_and_the_server_keeps_serving(client: LanguageClient):
    for args, message in (([], "sigmaloop.accept: needs id"),
                          (["abc"], "sigmaloop.accept: id must be an integer, not 'abc'"),
                          ([None], "id must be an integer, not None"),
                          ([True], "id must be an integer, not True"),
                          ([{"id": "x"}], "id must be an integer, not 'x'"),
                          ([{"ident": 1}], "unknown argument ident"),
                          ([1, 2], "takes at most 1 argument")):
        with pytest.raises(JsonRpcException, match=message) as err:
            await execute(client, "sigmaloop.accept", *args)
        assert err.value.code == -32602  # InvalidParams
    with pytest.raises(JsonRpcException, match="kind must be 'tune' or 'llm', not 'gpt'"):
        await execute(client, "sigmaloop.propose", "gpt")
    with pytest.raises(JsonRpcException, match="no experiment #999"):
        await execute(client, "sigmaloop.showExperiment", 999)
    with pytest.raises(JsonRpcException, match="reason must be a string"):
        await execute(client, "sigmaloop.reject", 1, 5)
    with pytest.raises(JsonRpcException, match="iterations"):
        await execute(client, "sigmaloop.startLoop", "many")
    with pytest.raises(JsonRpcException):
        await client.protocol.send_request_async("sigmaloop/experiments", {"ids": "all"})
    summary = await execute(client, "sigmaloop.summary")
    assert summary["reference"] is None and summary["run"] == 0


async def test_shutdown_leaves_no_trial_behind(client: LanguageClient):
    exp_id = await asyncio.to_thread(propose_in_process, client.ws, "SLEEP = 0.0", "SLEEP = 600.0", "hang")
    await wait_until(lambda: client.rec.latest(exp_id))
    await execute(client, "sigmaloop.accept", exp_id)
    running = await wait_until(lambda: (r := client.rec.latest(exp_id)) and r["pid"] and r)
    pid = running["pid"]
    assert is_alive(pid)
    await client.shutdown_session()
    assert client._server.returncode == 0
    await wait_until(lambda: not is_alive(pid), timeout=3)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the trial's whole process group is gone


@pytest.mark.workspace("nogit")
async def test_not_a_git_repository_is_reported_and_the_server_keeps_serving(client: LanguageClient):
    msg = await wait_until(lambda: [m for m in client.messages if m.type == types.MessageType.Error])
    assert "not inside a git repository" in msg[0].message
    with pytest.raises(JsonRpcException, match="git"):
        await execute(client, "sigmaloop.summary")
    uri = open_doc(client)
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    assert lenses is None or all(lens.command for lens in lenses)


async def test_broken_config_names_the_key_and_the_server_keeps_running(client: LanguageClient):
    toml = client.ws / "sigmaloop.toml"
    toml.write_text(toml.read_text().replace("k = 2.0", "k = \"high\""))
    msg = await wait_until(lambda: [m for m in client.messages
                                    if m.type == types.MessageType.Error and "judge.k" in m.message])
    assert "must be a number" in msg[0].message
    with pytest.raises(JsonRpcException, match=r"judge\.k"):
        await execute(client, "sigmaloop.runBaseline")
    summary = await execute(client, "sigmaloop.summary")
    assert "judge.k" in summary["configError"]
    toml.write_text(toml.read_text().replace("k = \"high\"", "k = 2.0"))
    for _ in range(100):  # re-read on change: the error clears
        summary = await execute(client, "sigmaloop.summary")
        if summary["configError"] is None:
            break
        await asyncio.sleep(0.05)
    assert summary["configError"] is None


async def test_state_is_sent_at_start_and_after_a_real_baseline(client: LanguageClient):
    rec = client.rec
    first = await wait_until(lambda: rec.states and rec.states[0])
    assert first["metric"] == "val_bpb" and first["direction"] == "minimize"
    assert first["reference"] is None and first["best"] is None and first["configError"] is None
    assert first["loop"] == {"running": False, "iteration": 0, "iterations": 0, "phase": ""}
    await execute(client, "sigmaloop.runBaseline")
    state = await wait_until(lambda: (s := rec.states[-1])["reference"] and s["counts"].get("kept") == 2 and s)
    seeds = {u["id"]: u for _, u in rec.updates if u["source"] == "baseline" and u["status"] == "kept"}
    ref = state["reference"]
    assert ref["seeds"] == [42, 43] and sorted(ref["ids"]) == sorted(seeds)
    mean = sum(u["metric"] for u in seeds.values()) / 2
    assert ref["value"] == pytest.approx(mean) and ref["sigma"] > 0 and ref["sigmaDof"] >= 1
    assert state["best"]["id"] == min(seeds) and state["best"]["metric"] == pytest.approx(mean)
    assert state["running"] == [] and state["kept"] == 0 and state["run"] == 0
    # the pull form is the same record
    assert await execute(client, "sigmaloop.summary") == rec.states[-1]
    # at most 4 a second
    assert len(rec.states) <= 2 + 4 * 3


@pytest.mark.workspace("maximize")
async def test_state_of_a_maximize_project_says_so(client: LanguageClient):
    state = await wait_until(lambda: client.rec.states and client.rec.states[0])
    assert state["direction"] == "maximize"
    open_doc(client)
    assert await summary_lens(client) == "no baseline yet · kept 0 / 0 run"
    await execute(client, "sigmaloop.runBaseline")
    await wait_until(lambda: (s := client.rec.states[-1])["reference"] and s["counts"].get("kept") == 2)
    for _ in range(100):
        title = await summary_lens(client)
        if title.startswith("val_bpb ↑"):
            break
        await asyncio.sleep(0.05)
    assert title.startswith("val_bpb ↑ ")


async def test_show_experiment_always_has_both_texts(client: LanguageClient):
    await execute(client, "sigmaloop.runBaseline")
    await wait_until(lambda: client.rec.latest(1))
    shown = await execute(client, "sigmaloop.showExperiment", 1)  # a baseline: no edit
    assert shown["isBaseline"] and shown["diff"] == "" and shown["scriptName"] == "train.py"
    assert shown["parentText"] == FAKE_TRAIN and shown["proposedText"] == FAKE_TRAIN
    exp_id = await asyncio.to_thread(propose_in_process, client.ws, "DEPTH = 4", "DEPTH = 6", "deeper")
    shown = await execute(client, "sigmaloop.showExperiment", {"id": exp_id})
    assert shown["parentText"] == FAKE_TRAIN
    assert shown["proposedText"] == FAKE_TRAIN.replace("DEPTH = 4", "DEPTH = 6")


async def test_stop_loop_stops_the_queued_baseline_seed_too(client: LanguageClient):
    started = await execute(client, "sigmaloop.runBaseline", 30)
    assert started["seeds"] == [42, 43]
    await wait_until(lambda: (r := client.rec.latest(1)) and r["status"] == "running" and r["pid"])
    assert client.rec.latest(2)["status"] == "queued"  # one slot: the second seed waits
    stopped = await execute(client, "sigmaloop.stopLoop")
    assert stopped == {"stopped": [1, 2]}
    await wait_until(lambda: all((r := client.rec.latest(i)) and r["status"] == "interrupted" for i in (1, 2)))
    await asyncio.sleep(1.0)
    statuses = [u["status"] for _, u in client.rec.updates if u["id"] == 2]
    assert "running" not in statuses and client.rec.latest(2)["status"] == "interrupted"
    assert client.rec.latest(2)["reason"] == "stopped"


@pytest.mark.init_options({"settings": {"budget": "soon", "llm": {"model": "m"}}, "client": "test"})
async def test_settings_come_with_initialize_and_are_checked_by_the_config_rules(client: LanguageClient):
    state = await wait_until(lambda: client.rec.states and client.rec.states[-1])
    assert "experiment.budget" in state["configError"]
    with pytest.raises(JsonRpcException, match=r"experiment\.budget"):
        await execute(client, "sigmaloop.runBaseline")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"sigmaloop": {"budget": 0.3}}))
    await wait_until(lambda: client.rec.states[-1]["configError"] is None)
    assert (await execute(client, "sigmaloop.runBaseline"))["started"] == "baseline"


async def test_changing_the_research_tag_is_kept_out_and_said(client: LanguageClient):
    toml = client.ws / "sigmaloop.toml"
    toml.write_text(toml.read_text().replace('tag = "test"', 'tag = "elsewhere"'))
    msg = await wait_until(lambda: [m for m in client.messages
                                    if m.type == types.MessageType.Warning and "experiment.tag" in m.message])
    assert "restart" in msg[0].message
    started = await execute(client, "sigmaloop.runBaseline")  # the engine keeps its branch
    assert started["started"] == "baseline"
    await wait_until(lambda: (r := client.rec.latest(2)) and r["status"] == "kept")
    out = subprocess.run(["git", "branch", "--list", "sigmaloop/*"], cwd=client.ws,
                         capture_output=True, text=True).stdout
    assert "sigmaloop/test" in out and "elsewhere" not in out
