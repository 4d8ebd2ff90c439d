"""Helpers for the language-server tests (importable under a unique name, unlike conftest)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from lsprotocol import types

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from enginekit import CONFIG, FAKE_TRAIN, git, make_workspace

SERVER = [sys.executable, "-m", "sigmaloop.lsp"]


class Recorder:
    """Custom notifications and requests the server sent, with arrival times."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, dict[str, Any]]] = []
        self.progress: list[tuple[float, dict[str, Any]]] = []
        self.states: list[dict[str, Any]] = []  # sigmaloop/state notifications
        self.apply_edits: list[types.ApplyWorkspaceEditParams] = []
        self.apply_result = True
        self.message_requests: list[types.ShowMessageRequestParams] = []
        self.message_answer: str | None = None  # the action title the "user" picks

    def latest(self, exp_id: int) -> dict[str, Any] | None:
        for _, rec in reversed(self.updates):
            if rec["id"] == exp_id:
                return rec
        return None


async def wait_until(pred, timeout: float = 15.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {pred}")
        await asyncio.sleep(every)


def _to_dict(params: Any) -> Any:
    if isinstance(params, dict):
        return params
    if hasattr(params, "_asdict"):
        return {k: _to_dict(v) for k, v in params._asdict().items()}
    if isinstance(params, list):
        return [_to_dict(v) for v in params]
    if hasattr(params, "__dict__"):
        return {k: _to_dict(v) for k, v in vars(params).items()}
    return params


def make_ws(tmp_path: Path, kind: str) -> Path:
    ws = tmp_path / "ws"
    if kind == "maximize":
        return make_workspace(ws, config=CONFIG.replace('tag = "test"', 'tag = "test"\ndirection = "maximize"'))
    if kind == "foreign_llm":  # a cloned project whose committed config points the LLM elsewhere
        return make_workspace(ws, config=CONFIG + '[proposer]\nkind = "llm"\n\n[llm]\n'
                              'base_url = "https://llm.invalid/v1"\ntimeout = 2\nmax_retries = 0\n')
    if kind == "spiky":  # a loss curve with a spike at step 8 of 20 (an anomaly to find)
        train = FAKE_TRAIN.replace("steps = 5", "steps = 20").replace(
            '"loss": 3.0 - 0.2 * step + BIAS', '"loss": (9.0 if step == 8 else 3.0 - 0.05 * step) + BIAS')
        assert train != FAKE_TRAIN
        return make_workspace(ws, train=train)
    if kind == "trainer":  # the real trainer, as `sigmaloop init` writes it: 2 s trials, two seeds
        from sigmaloop.cli import init_workspace

        init_workspace(ws, budget=2)
        toml = ws / "sigmaloop.toml"
        text = toml.read_text()
        seeds = next(line for line in text.splitlines() if line.startswith("seeds = "))
        # no early pruning: a clearly worse edit would be stopped (tested in test_prune.py) and
        # the tests here read a measured run's numbers
        toml.write_text(text.replace(seeds, "seeds = [42, 43]\nprune = false"))
        git(ws, "commit", "-qam", "two seeds")
        return ws
    if kind == "nogit":
        ws.mkdir()
        (ws / "train.py").write_text(FAKE_TRAIN)
        (ws / "sigmaloop.toml").write_text(CONFIG)
        return ws
    return make_workspace(ws)
