"""Builders for engine scenarios: a real git workspace with a small, fast training script.

The fake script honours the real trial contract (env vars, metrics file, summary block) and
its metric is a known function of its constants plus a per-seed offset, so verdicts are
predictable while every part (git, SQLite, subprocesses) is real.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

FAKE_TRAIN = textwrap.dedent('''\
    """A stand-in trainer: fast, contract-true, metric = f(constants) + seed offset."""
    import json
    import os
    import random
    import time

    BIAS = 0.0          # added to the metric: a "real" improvement when negative
    LR = 0.1            # the metric grows with (LR - 0.1)^2
    DEPTH = 4
    CRASH = False
    MAKE_NAN = False
    SLEEP = 0.0         # extra seconds before the summary (hang tests)
    SEED_OFFSET = 0


    def main():
        budget = float(os.environ.get("SIGMALOOP_TIME_BUDGET", "1"))
        seed = int(os.environ.get("SIGMALOOP_SEED", "0")) + SEED_OFFSET
        metrics = os.environ.get("SIGMALOOP_METRICS")
        noise = random.Random(seed).gauss(0.0, 0.002)
        t0 = time.time()
        steps = 5
        for step in range(steps):
            time.sleep(budget / steps)
            if metrics:
                with open(metrics, "a") as f:
                    rec = {"step": step, "t": time.time() - t0, "frac": (step + 1) / steps,
                           "loss": 3.0 - 0.2 * step + BIAS}
                    f.write(json.dumps(rec) + "\\n")
        if CRASH:
            raise RuntimeError("boom: the edit broke training")
        if MAKE_NAN:
            print("FAIL: loss is NaN at step 3")
            raise SystemExit(1)
        time.sleep(SLEEP)
        val = 1.0 + BIAS + (LR - 0.1) ** 2 + noise
        print("---")
        print(f"val_bpb:          {val:.6f}")
        print(f"training_seconds: {time.time() - t0:.1f}")
        print(f"num_steps:        {steps}")


    main()
''')

CONFIG = textwrap.dedent('''\
    [experiment]
    train_script = "train.py"
    command = "python train.py"
    budget = 0.3
    grace = 5
    tag = "test"

    [judge]
    seeds = [42, 43]
    k = 2.0
    # the stand-in's effects are large and exact: no second look unless a test asks for one
    implausible_sigma = 1000.0
    implausible_pct = 50.0
    # its 5-point curves are step functions of BIAS: early pruning is tested on its own
    # (test_prune.py on the real trainer, test_scaleout.py)
    prune = false
''')


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="user", GIT_AUTHOR_EMAIL="user@example.com",
               GIT_COMMITTER_NAME="user", GIT_COMMITTER_EMAIL="user@example.com")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


def make_workspace(path: Path, train: str = FAKE_TRAIN, config: str = CONFIG) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.py").write_text(train)
    (path / "sigmaloop.toml").write_text(config)
    (path / ".gitignore").write_text(".sigmaloop/\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def engine(workspace: Path):
    from sigmaloop.engine import Engine

    eng = Engine(workspace)
    yield eng
    eng.close()


def edit(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"{old!r} not found once"
    return source.replace(old, new)


def queue_edit(eng, old: str, new: str, hypothesis: str):
    """A user edit of the head's script queued as-is (past the guard): what runs is exactly it."""
    from sigmaloop.diff import unified_diff
    from sigmaloop.models import Status, code_hash

    source = eng.head_source()
    assert old in source, old
    after = source.replace(old, new, 1)
    exp = eng.core.create(status=Status.QUEUED, source="user", parent_commit=eng.head(), hypothesis=hypothesis,
                          diff=unified_diff(source, after, "train.py"), code_hash=code_hash(after))
    eng.trials.queued(exp.id)
    return exp


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` loaded as a module (the bench folder is not a package), so a test
    runs the bench's own cases rather than a copy of them."""
    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(f"{name}_bench", repo / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(f"{name}_bench", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
