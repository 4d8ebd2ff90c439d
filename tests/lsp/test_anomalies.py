"""Curve anomalies in the editor, over the wire: the real server process, a real git workspace,
real trials. The researcher's edit makes the loss spike and go NaN; the edited lines get a
warning for each, with Open log / Show curve / Dismiss; a dismissal takes its warning away at
once and for good (a new server on the same workspace reads it from the journal)."""

from __future__ import annotations

import contextlib

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_research import finished, said
from test_server import code_actions, execute, open_doc

from enginekit import FAKE_TRAIN
from lspkit import SERVER, _to_dict, wait_until

LOSS = '"loss": 3.0 - 0.2 * step + BIAS}'
#: the edit: 20 logged steps (the spike check needs some history), a 30× spike at step 8 and a
#: NaN at step 15; the printed metric is untouched (the run itself finishes and is judged)
SPIKY = FAKE_TRAIN.replace("steps = 5", "steps = 20").replace(
    LOSS, '"loss": (90.0 if step == 8 else float("nan") if step == 15 else 3.0 - 0.05 * step) + BIAS}')
assert SPIKY.count("steps = 20") == 1 and "float(\"nan\")" in SPIKY
SPIKY_LINES = SPIKY.splitlines()
STEPS_LINE = SPIKY_LINES.index("    steps = 20")


def anomaly_diags(client: LanguageClient, exp_id: int) -> dict[str, types.Diagnostic]:
    """The anomaly warnings of one experiment on the open script, by kind."""
    out = {}
    for d in client.diagnostics.get(client.script_uri, []):
        data = _to_dict(d.data) if d.data is not None else {}
        if d.severity == types.DiagnosticSeverity.Warning and data.get("expId") == exp_id and data.get("anomaly"):
            out[data["anomaly"]] = d
    return out


async def run_spiky_edit(client: LanguageClient) -> int:
    """A baseline, then the researcher's unsaved edit of the open script, run to its verdict."""
    open_doc(client)
    await execute(client, "sigmaloop.runBaseline")
    await wait_until(lambda: said(client, "sigmaloop: Baseline done"), timeout=60)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.script_uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=SPIKY)]))
    queued = await execute(client, "sigmaloop.runEdit", "more steps log a finer curve")
    e = await finished(client, queued["id"])
    assert e["status"] in ("kept", "discarded"), e["verdict"]  # it ran and was judged: no crash
    return queued["id"]


@contextlib.asynccontextmanager
async def another_server(ws, text: str):
    """A second server process on the same workspace (an editor restarted), the script open."""
    lsp = await ClientServerConfig(server_command=SERVER).start()
    for method in (types.WORKSPACE_INLAY_HINT_REFRESH, types.WORKSPACE_CODE_LENS_REFRESH):
        lsp.feature(method)(lambda params: None)
    lsp.set_configuration({"budget": 0.3}, section="sigmaloop")
    lsp.script_uri = (ws / "train.py").as_uri()
    try:
        await lsp.initialize_session(types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"), root_uri=ws.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")]))
        await execute(lsp, "sigmaloop.summary")  # the engine is open
        open_doc(lsp, text)
        yield lsp
    finally:
        if lsp._server is not None and lsp._server.returncode is None:
            await lsp.shutdown_session()


async def test_an_anomaly_is_a_diagnostic_with_actions_and_a_dismissal_lasts(client: LanguageClient):
    exp_id = await run_spiky_edit(client)

    # one warning a kind, on the lines the edit changed, in words
    got = await wait_until(lambda: (d := anomaly_diags(client, exp_id)) and {"spike", "nan"} <= set(d) and d,
                           timeout=30)
    spike, nan = got["spike"], got["nan"]
    # the words are anomaly.detect's (tuned elsewhere): the experiment first, then what and where
    assert spike.message.startswith(f"exp #{exp_id}: ") and "spike" in spike.message
    assert nan.message.startswith(f"exp #{exp_id}: ") and "NaN" in nan.message
    assert spike.range.start.line == STEPS_LINE and spike.code == f"exp-{exp_id}"

    # the quick fixes: the log, the curve in the panel, and a dismissal per kind
    actions = await code_actions(client, STEPS_LINE)
    titles = [a["title"] for a in actions]
    assert titles.count(f"Open log of #{exp_id}") == 1 and titles.count(f"Show curve of #{exp_id}") == 1
    assert titles.index(f"Open log of #{exp_id}") < titles.index(f"Show curve of #{exp_id}")
    by_title = {a["title"]: a for a in actions}
    assert by_title[f"Show curve of #{exp_id}"]["command"] == {
        "title": f"Show curve of #{exp_id}", "command": "sigmaloop.showCurve", "arguments": [exp_id]}
    dismiss = by_title[f"Dismiss spike on #{exp_id}"]
    assert dismiss["command"]["command"] == "sigmaloop.dismissAnomaly"
    assert dismiss["command"]["arguments"] == [exp_id, "spike"] and dismiss["kind"] == "quickfix"
    assert f"Dismiss nan on #{exp_id}" in by_title

    # the panel's curves carry both, none dismissed yet
    curves = _to_dict(await client.protocol.send_request_async(
        "sigmaloop/experiments", {"ids": [exp_id], "curves": True, "maxPoints": 50}))
    marks = {a["kind"]: a for a in curves["experiments"][0]["anomalies"]}
    assert {"spike", "nan"} <= set(marks) and not any(a.get("dismissed") for a in marks.values())

    # bad input is refused with what is wrong, and changes nothing
    with pytest.raises(JsonRpcException, match="no anomaly kind 'wobble'"):
        await execute(client, "sigmaloop.dismissAnomaly", exp_id, "wobble")
    with pytest.raises(JsonRpcException, match="999"):
        await execute(client, "sigmaloop.dismissAnomaly", 999, "spike")
    with pytest.raises(JsonRpcException, match="kind must be a string"):
        await execute(client, "sigmaloop.dismissAnomaly", exp_id, 3)
    with pytest.raises(JsonRpcException, match="needs kind"):
        await execute(client, "sigmaloop.dismissAnomaly", {"id": exp_id})

    # the researcher dismisses the spike (the action's arguments, plus a reason): its warning goes
    left = await execute(client, "sigmaloop.dismissAnomaly", exp_id, "spike", "  a logging glitch  ")
    assert left["id"] == exp_id and left["kind"] == "spike"
    assert [a["kind"] for a in left["anomalies"]] == ["nan"]
    await wait_until(lambda: set(anomaly_diags(client, exp_id)) == {"nan"}, timeout=10)
    assert "spike" not in [a["anomaly"] for a in (_to_dict(d.data) for d in anomaly_diags(client, exp_id).values())]
    actions = [a["title"] for a in await code_actions(client, STEPS_LINE)]
    assert f"Dismiss spike on #{exp_id}" not in actions and f"Dismiss nan on #{exp_id}" in actions
    # the experiment took a new revision (watchers refresh), and the panel shows the spike faded
    await wait_until(lambda: (r := client.rec.latest(exp_id)) and r["rev"] > curves["experiments"][0]["rev"])
    curves = _to_dict(await client.protocol.send_request_async(
        "sigmaloop/experiments", {"ids": [exp_id], "curves": True}))
    marks = {a["kind"]: a for a in curves["experiments"][0]["anomalies"]}
    assert marks["spike"]["dismissed"] is True and marks["spike"]["dismissedReason"] == "a logging glitch"
    assert "dismissed" not in marks["nan"]

    # the editor restarts: a new server reads the dismissal from the journal
    await client.shutdown_session()
    async with another_server(client.ws, SPIKY) as again:
        # the NaN warning comes back (the check ran), the dismissed spike does not
        await wait_until(lambda: "nan" in anomaly_diags(again, exp_id), timeout=30)
        assert set(anomaly_diags(again, exp_id)) == {"nan"}
        # dismissing the other kind works from the new server too
        left = await execute(again, "sigmaloop.dismissAnomaly", {"id": exp_id, "kind": "nan"})
        assert left["anomalies"] == []
        await wait_until(lambda: not anomaly_diags(again, exp_id), timeout=10)
