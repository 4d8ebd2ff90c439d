"""The API key over the LSP connection, and a project's foreign LLM endpoint asked about first."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from lspkit import _to_dict

KEY = "sk-editor-key-0123456789abcdef"


async def cmd(client: LanguageClient, name: str, *args):
    return _to_dict(await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(args))))


@pytest.mark.workspace("foreign_llm")
async def test_a_projects_foreign_llm_endpoint_needs_the_users_yes(client: LanguageClient):
    got = _to_dict(await client.protocol.send_request_async("sigmaloop/setApiKey", {"key": KEY}))
    assert got == {"hasKey": True, "host": "api.openai.com"}

    client.rec.message_answer = "Don't send"
    rec = await cmd(client, "sigmaloop.propose")
    (asked,) = client.rec.message_requests
    assert "llm.invalid" in asked.message and "api.openai.com" in asked.message
    assert KEY not in asked.message
    assert rec["status"] == "rejected" and "does not send it" in rec["verdict"], rec
    assert KEY not in str(rec)

    client.rec.message_answer = "Allow"
    rec = await cmd(client, "sigmaloop.propose")
    assert len(client.rec.message_requests) == 2
    # trusted now: the proposer tried the host (unreachable here), and the refusal is gone
    assert rec["status"] == "rejected" and "does not send it" not in rec["verdict"], rec
    rec = await cmd(client, "sigmaloop.propose")
    assert len(client.rec.message_requests) == 2  # asked once per host


async def test_removing_the_key(client: LanguageClient):
    got = _to_dict(await client.protocol.send_request_async("sigmaloop/setApiKey", {"key": KEY, "host": "my.example"}))
    assert got == {"hasKey": True, "host": "my.example"}
    got = _to_dict(await client.protocol.send_request_async("sigmaloop/setApiKey", {"key": None}))
    assert got == {"hasKey": False, "host": None}
