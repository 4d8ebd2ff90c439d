"""The morning report over the wire: the real server process, a real git workspace, real trials.
``sigmaloop.report`` writes one self-contained page to the state folder and hands back its path
and its text (the editor shows the text in a panel): every section is there, nothing in it runs
or reaches the network, and bad arguments are refused with what is wrong."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient
from test_research import finished, said
from test_server import BIAS_LINE, execute, open_doc

from enginekit import FAKE_TRAIN
from lspkit import _to_dict, wait_until

SECTIONS = ("timeline", "kept", "refuted", "calibration", "weird", "noise", "cost", "questions")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def section_ids(html: str) -> list[str]:
    return re.findall(r'<h2[^>]*\bid="([a-z]+)"', html)


def assert_self_contained(html: str) -> None:
    """One page that runs nothing and fetches nothing: its own strict CSP, no script, no URL."""
    assert html.lstrip().lower().startswith("<!doctype html")
    assert re.search(r'<meta http-equiv="Content-Security-Policy" content="' + re.escape(CSP) + '"', html)
    assert "<script" not in html.lower()
    assert not re.search(r'\b(?:src|href)\s*=\s*["\']?(?:https?:)?//', html, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html, re.I)
    assert not re.search(r"\bon[a-z]+\s*=", html, re.I)  # no inline event handlers


async def test_the_report_is_written_and_returned_with_every_section(client: LanguageClient):
    state_dir = client.ws / ".sigmaloop"

    # an empty journal still has a report: every section, saying there is nothing yet
    empty = await execute(client, "sigmaloop.report")
    assert Path(empty["path"]) == state_dir / "report.html"
    assert section_ids(empty["html"]) == list(SECTIONS)
    assert_self_contained(empty["html"])

    # a night's work: a baseline, a question, and the researcher's edit that tests it
    q = await execute(client, "sigmaloop.ask", "Does a lower bias help?", "keep it if 0.05 better")
    open_doc(client)
    await execute(client, "sigmaloop.runBaseline")
    await wait_until(lambda: said(client, "sigmaloop: Baseline done"), timeout=60)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=client.script_uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(
            text=FAKE_TRAIN.replace(FAKE_TRAIN.splitlines()[BIAS_LINE], "BIAS = -0.1"))]))
    queued = await execute(client, "sigmaloop.runEdit", "a lower bias lowers val_bpb", -0.08, q["id"])
    e = await finished(client, queued["id"])
    assert e["status"] == "kept", e["verdict"]

    got = await execute(client, "sigmaloop.report")
    path, html = Path(got["path"]), got["html"]
    # the path is the file the editor (and a browser) opens, and it holds exactly the page returned
    assert path == state_dir / "report.html" and path.is_file()
    assert path.read_text(encoding="utf-8") == html
    assert section_ids(html) == list(SECTIONS)
    assert_self_contained(html)
    # the night is in it: the kept edit with its hypothesis, the question
    assert f"#{queued['id']}" in html and "a lower bias lowers val_bpb" in html
    assert "Does a lower bias help?" in html
    assert html != empty["html"]

    # since: only what came after; the page keeps its shape; the file is the latest page
    later = await execute(client, "sigmaloop.report", queued["id"])
    assert section_ids(later["html"]) == list(SECTIONS) and later["path"] == got["path"]
    assert Path(later["path"]).read_text(encoding="utf-8") == later["html"]
    same = await execute(client, "sigmaloop.report", {"since": queued["id"]})
    assert section_ids(same["html"]) == list(SECTIONS)


async def test_bad_report_arguments_are_refused_and_the_server_keeps_serving(client: LanguageClient):
    with pytest.raises(JsonRpcException, match="since must be >= 0"):
        await execute(client, "sigmaloop.report", -1)
    with pytest.raises(JsonRpcException, match="since must be an integer"):
        await execute(client, "sigmaloop.report", "yesterday")
    with pytest.raises(JsonRpcException, match="unknown argument"):
        await execute(client, "sigmaloop.report", {"until": 3})
    with pytest.raises(JsonRpcException, match="at most 1 argument"):
        await execute(client, "sigmaloop.report", 1, 2)
    got = await execute(client, "sigmaloop.report")
    assert section_ids(got["html"]) == list(SECTIONS)


@pytest.mark.init_options({"client": "vscode"})
async def test_our_client_hears_a_finished_loop_as_done_and_can_open_its_report(client: LanguageClient):
    """The extension (``client: "vscode"``) gets ``sigmaloop/done`` (it adds Open Report), once;
    not a showMessage as well. The report it opens then covers the loop's run."""
    done: list[dict] = []
    client.feature("sigmaloop/done")(lambda params: done.append(_to_dict(params)))
    await execute(client, "sigmaloop.startLoop", 1, None, "tune")
    await wait_until(lambda: any(d["what"] == "loop" for d in done), timeout=90)
    (loop,) = done
    assert loop["what"] == "loop" and loop["message"].startswith("sigmaloop: Loop done: 1 run, ")
    await asyncio.sleep(0.3)
    assert len(done) == 1 and not said(client, "sigmaloop: Loop done")
    assert "what the loop learned:" in [m.message for m in client.log_messages]
    got = await execute(client, "sigmaloop.report")
    assert section_ids(got["html"]) == list(SECTIONS) and "#3" in got["html"]
