"""Helpers shared by the trainer tests (real subprocess runs of trainer/*.py)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "trainer"
TEST_VOCAB = 2048  # smaller than the default 8192: faster training and eval, same code paths


def clean_env(**extra):
    """os.environ without any SIGMALOOP_* setting (and no GPU), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGMALOOP_")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_py(script, env, cwd=None, timeout=300, args=()):
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def cache_entries(cache: Path):
    """Everything in a cache root except the download folder: entries and temp dirs."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name != "downloads")
