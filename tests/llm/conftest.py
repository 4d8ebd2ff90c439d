"""LLM proposer fixtures: a scripted Chat Completions server and engine workspaces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))

from fakeopenai import KEY, FakeOpenAI


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    """A recognisable key in the environment; no stray base URL from the host."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("SIGMALOOP_NO_TIKTOKEN", "1")
    return KEY


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server
