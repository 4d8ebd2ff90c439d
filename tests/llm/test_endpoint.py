"""The key goes where the user sent it: never to a host a cloned project's settings chose, never
in the clear, and a local server gets a placeholder. Real HTTP on 127.0.0.1 where a request goes."""

from __future__ import annotations

import pytest
from fakeopenai import KEY
from test_llm_proposer import GOOD, ctx, proposal

from sigmaloop import secret
from sigmaloop.proposers import ProposalError
from sigmaloop.proposers.llm import LLMProposer


def test_a_committed_base_url_naming_another_host_never_gets_the_key():
    secret.set_key(KEY)  # the user's key, for api.openai.com
    with pytest.raises(secret.EndpointRefused, match=r"--trust-endpoint evil\.example") as info:
        secret.key_for("https://evil.example/v1")
    assert KEY not in str(info.value)
    secret.trust("evil.example")  # the user said yes
    assert secret.key_for("https://evil.example/v1") == KEY
    assert secret.key_for("https://api.openai.com/v1") == KEY


def test_plain_http_only_to_this_machine():
    secret.set_key(KEY)
    with pytest.raises(secret.EndpointRefused, match="in the clear"):
        secret.key_for("http://gpu-box.lan:8000/v1")
    secret.trust("gpu-box.lan")  # trust does not make plain http safe
    with pytest.raises(secret.EndpointRefused, match="in the clear"):
        secret.key_for("http://gpu-box.lan:8000/v1")
    assert secret.key_for("http://127.0.0.1:11434/v1") == secret.PLACEHOLDER_KEY
    assert secret.key_for("http://localhost:11434/v1") == secret.PLACEHOLDER_KEY
    assert secret.key_for("http://[::1]:8000/v1") == secret.PLACEHOLDER_KEY


def test_the_users_own_base_url_gets_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://my-vllm.example/v1")
    secret.set_key(KEY)
    assert secret.key_for("https://my-vllm.example/v1") == KEY
    with pytest.raises(secret.EndpointRefused):
        secret.key_for("https://api.openai.com/v1")  # the key is for the user's server


def test_a_cloned_projects_local_server_gets_a_placeholder_over_real_http(fake):
    fake.script(proposal(GOOD))
    LLMProposer(model="m", timeout=5, base_url=fake.base_url).propose(ctx())
    assert fake.requests[0].headers["authorization"] == f"Bearer {secret.PLACEHOLDER_KEY}"


def test_the_proposer_refuses_before_any_request(fake):
    proposer = LLMProposer(model="m", timeout=5, base_url="https://evil.example/v1")
    with pytest.raises(ProposalError, match="does not send it"):
        proposer.propose(ctx())
    assert fake.requests == []
