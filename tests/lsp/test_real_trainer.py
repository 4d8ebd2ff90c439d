"""Run My Edit with the real trainer (sigmaloop's own train.py, prepared data, the fixed evaluator)
at a 3 s budget, through the real server: the researcher's unsaved edit of the open file runs as
an experiment and comes back with its steps, time, verdict, effect and question."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient
from test_research import said
from test_server import execute

from lspkit import wait_until

TRAINER = Path(__file__).resolve().parents[2] / "server" / "sigmaloop" / "trainer"
VOCAB = "2048"  # smaller than the default 8192: faster training and evaluation, same code paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def prepared_cache(tmp_path_factory) -> Path:
    """The stdlib corpus prepared once (prepare.py, as a researcher runs it)."""
    cache = tmp_path_factory.mktemp("cache")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "SIGMALOOP_CACHE": str(cache),
           "SIGMALOOP_VOCAB_SIZE": VOCAB}
    p = subprocess.run([sys.executable, str(TRAINER / "prepare.py")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0 and "prepared:" in p.stdout, p.stderr[-2000:]
    return cache


@pytest.fixture
def trainer_env(prepared_cache, monkeypatch):
    """The server (and its trials) find the prepared data; set before the server starts."""
    monkeypatch.setenv("SIGMALOOP_CACHE", str(prepared_cache))
    monkeypatch.setenv("SIGMALOOP_VOCAB_SIZE", VOCAB)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.mark.workspace("trainer")
@pytest.mark.settings({"budget": 3})
async def test_run_my_edit_with_the_real_trainer(trainer_env, client: LanguageClient):
    ws = client.ws
    text = (ws / "train.py").read_text()
    assert "MATRIX_LR = 0.02" in text
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=client.script_uri, language_id="python", version=1, text=text)))
    q = await execute(client, "sigmaloop.ask", "Does a higher Muon LR train faster in 2 s?", "≥ 0.01 better: keep it")

    await execute(client, "sigmaloop.runBaseline")
    done = await wait_until(lambda: said(client, "sigmaloop: Baseline"), timeout=240, every=0.5)
    assert done[0].startswith("sigmaloop: Baseline done: val_bpb ") and "over 2 seeds" in done[0], done

    edited = text.replace("MATRIX_LR = 0.02", "MATRIX_LR = 0.04")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.script_uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=edited)]))
    st = await execute(client, "sigmaloop.editStatus")
    assert st["differs"] and (st["added"], st["removed"]) == (1, 1)

    queued = await execute(client, "sigmaloop.runEdit", "a higher Muon LR converges faster", -0.02, q["id"])
    assert queued["source"] == "user" and queued["question"] == q["id"]
    e = await wait_until(lambda: (r := client.rec.latest(queued["id"])) and r["status"] not in
                         ("accepted", "queued", "running") and r, timeout=300, every=0.5)
    assert e["status"] in ("kept", "discarded"), e["verdict"]
    assert e["summary"]["num_steps"] > 0 and e["timings"]["wall"] > 2 and e["metric"] > 0
    assert e["effect"] is not None and e["effect"]["low"] <= e["effect"]["better"] <= e["effect"]["high"]
    assert "MATRIX_LR = 0.04" in e["diff"] and Path(e["logPath"]).exists()
    page = await execute(client, "sigmaloop.question", q["id"])
    assert [x["id"] for x in page["experiments"]] == [queued["id"]]
