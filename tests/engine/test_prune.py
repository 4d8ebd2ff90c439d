"""Early pruning: the rule on curves, then the real trainer through the engine (a deliberately
bad edit is stopped early as ``pruned``; a good one runs to its verdict)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sigmaloop.engine import Engine
from sigmaloop.exports import write_results_tsv
from sigmaloop.models import ProgressRecord, Status
from sigmaloop.prune import Pruner, PruneRule

from enginekit import git, queue_edit

ROOT = Path(__file__).resolve().parents[2]


def curve(fn, n: int = 60, noise: float = 0.01, seed: int = 0) -> list[ProgressRecord]:
    rng = random.Random(seed)
    return [ProgressRecord(0, i, i / n, (i + 1) / n, fn((i + 1) / n) + rng.gauss(0, noise)) for i in range(n)]


def base(f: float) -> float:
    return 3.0 + 4.0 * (1 - f) ** 2


REFS = [curve(base, seed=s) for s in range(3)]


def run(pruner: Pruner, records: list[ProgressRecord], batch: int = 3):
    for i in range(0, len(records), batch):
        if (d := pruner.update(records[i:i + batch])) is not None:
            return d
    return None


def test_a_clearly_worse_curve_is_pruned_after_the_minimum_fraction():
    pruner = Pruner.for_references(REFS, PruneRule(after=0.3))
    d = run(pruner, curve(lambda f: base(f) + 1.0, seed=9))
    assert d is not None and 0.3 <= d.frac < 0.6
    assert d.loss - d.reference > d.margin and d.refs == 3
    assert "over 3 seeds" in d.describe(60.0) and "saved ~" in d.describe(60.0)


def test_same_code_on_another_seed_is_never_pruned():
    for seed in range(20):  # runs of the reference code itself: noise only
        assert run(Pruner.for_references(REFS, PruneRule()), curve(base, seed=100 + seed)) is None


def test_one_slow_reference_run_neither_hides_a_loser_nor_lowers_the_bar():
    slow = curve(lambda f: base(f) + 1.5, seed=3)  # a reference seed that ran on a busy machine
    refs = [*REFS, slow]
    assert run(Pruner.for_references(refs, PruneRule()), curve(lambda f: base(f) + 1.0, seed=9)) is not None
    for seed in range(10):
        assert run(Pruner.for_references(refs, PruneRule()), curve(base, seed=200 + seed)) is None


def test_one_noisy_stretch_is_not_enough():
    spike = curve(lambda f: base(f) + (2.0 if 0.40 <= f <= 0.44 else 0.0), seed=5)
    assert run(Pruner.for_references(REFS, PruneRule()), spike) is None


def test_a_slow_starter_within_reach_runs_on():
    # behind by 6% early (a higher learning rate before its warmdown), ahead at the end
    slow = curve(lambda f: base(f) * (1 + 0.06 * (1 - f)) - 0.05 * f, seed=7)
    assert run(Pruner.for_references(REFS, PruneRule()), slow) is None


def test_nothing_is_pruned_before_the_minimum_or_in_the_last_window():
    early = Pruner.for_references(REFS, PruneRule(after=0.3))
    assert run(early, curve(lambda f: base(f) + 1.0)[:17]) is None  # up to 28% of the budget
    late = Pruner.for_references(REFS, PruneRule(after=0.3))
    late.points = [(r.frac, r.loss) for r in curve(lambda f: base(f) + 1.0)]
    assert late.check(0.95) is None


def test_runs_on_one_seed_are_one_voice():
    twins = [REFS[0], REFS[0], REFS[0], REFS[1]]  # the same seed measured three times
    pruner = Pruner.for_references(twins, PruneRule(), seeds=[42, 42, 42, 43])
    assert len(pruner.references) == 2 and len(pruner.references[42]) == 3
    assert Pruner.for_references(twins[:3], PruneRule(), seeds=[42, 42, 42]) is None  # one seed: no spread


def test_no_pruner_without_two_reference_curves():
    assert Pruner.for_references([REFS[0]], PruneRule()) is None
    assert Pruner.for_references([REFS[0], []], PruneRule()) is None
    assert Pruner.for_references([REFS[0], [ProgressRecord(0, 1, 0.1, 0.5, None)] * 5], PruneRule()) is None


# --------------------------------------------------------------------------- the real trainer
BUDGET = 6.0


@pytest.fixture(scope="module")
def trainer_ws(tmp_path_factory):
    cache = tmp_path_factory.mktemp("prunecache")
    mp = pytest.MonkeyPatch()
    for k, v in (("SIGMALOOP_CACHE", str(cache)), ("SIGMALOOP_VOCAB_SIZE", "2048"), ("CUDA_VISIBLE_DEVICES", "")):
        mp.setenv(k, v)
    subprocess.run([sys.executable, str(ROOT / "trainer" / "prepare.py")], env=dict(os.environ), check=True,
                   capture_output=True, timeout=600)
    ws = tmp_path_factory.mktemp("prunews")
    git(ws, "init", "-q", "-b", "main")
    for name in ("train.py", "prepare.py"):
        shutil.copy(ROOT / "trainer" / name, ws / name)
    (ws / "sigmaloop.toml").write_text(
        f'[experiment]\nbudget = {BUDGET}\ngrace = 60\ntag = "pr"\n[judge]\nseeds = [42, 43, 44]\n'
        "implausible_sigma = 1000.0\nimplausible_pct = 50.0\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "trainer")
    eng = Engine(ws)
    eng.run_baseline()
    yield eng
    eng.close()
    mp.undo()


queue = queue_edit


def test_a_bad_edit_is_pruned_early_and_a_good_one_is_not(trainer_ws):
    eng = trainer_ws
    assert all(e.status == Status.KEPT for e in eng.experiments() if e.is_baseline)
    bad = eng.run(queue(eng, "UNEMBEDDING_LR = 0.004", "UNEMBEDDING_LR = 0.0004", "starve the head").id)
    assert bad.status == Status.PRUNED and bad.reason == "pruned", (bad.status, bad.detail)
    assert bad.metric is None and 0.3 <= bad.timings["pruned_at"] < 0.9
    assert bad.timings["saved"] > 0
    assert bad.timings["wall"] < BUDGET * 0.9 + bad.timings.get("startup", 5.0)
    assert "over 3 seeds" in bad.detail
    good = eng.run(queue(eng, "UNEMBEDDING_LR = 0.004", "UNEMBEDDING_LR = 0.0045", "a nudge").id)
    assert good.status in (Status.KEPT, Status.DISCARDED), (good.status, good.detail)
    assert good.metric is not None and "pruned_at" not in good.timings
    # autoresearch's log says what happened to it
    path = eng.state_dir / "r.tsv"
    write_results_tsv(eng.journal, path)
    assert "discard\t[pruned at" in path.read_text()


def test_pruning_can_be_switched_off_and_never_touches_a_baseline(trainer_ws):
    eng = trainer_ws
    eng.config.judge.prune = False
    try:
        exp = eng.run(queue(eng, "UNEMBEDDING_LR = 0.004", "UNEMBEDDING_LR = 0.00039", "starve it, unpruned").id)
    finally:
        eng.config.judge.prune = True
    assert exp.status == Status.DISCARDED and exp.metric is not None
    assert not [e for e in eng.experiments() if e.is_baseline and e.status == Status.PRUNED]
