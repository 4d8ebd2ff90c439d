"""The fixed evaluator through the real engine on the real embedded trainer: the number the judge
uses comes from a separate sandboxed process running the base commit's prepare.py.

The cheats here are queued straight into the journal, past the static guard (which would refuse
most of them at proposal time): these tests are about the line behind it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sigmaloop import evaluator, sandbox
from sigmaloop.engine import Engine
from sigmaloop.models import Evaluation, Status

from enginekit import git, queue_edit

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 2.0

pytestmark = pytest.mark.skipif(sandbox.availability() is not None, reason="needs bubblewrap")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("evalcache")
    env = dict(os.environ, SIGMALOOP_CACHE=str(cache), SIGMALOOP_VOCAB_SIZE="2048", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, str(ROOT / "trainer" / "prepare.py")], env=env, check=True,
                   capture_output=True, timeout=600)
    return cache


@pytest.fixture(scope="module")
def measured(tmp_path_factory, cache):
    """A workspace of the embedded trainer with its two baseline seeds measured."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGMALOOP_CACHE", str(cache))
    mp.setenv("SIGMALOOP_VOCAB_SIZE", "2048")
    mp.setenv("CUDA_VISIBLE_DEVICES", "")
    ws = tmp_path_factory.mktemp("evalws")
    git(ws, "init", "-q", "-b", "main")
    for name in ("train.py", "prepare.py"):
        shutil.copy(ROOT / "trainer" / name, ws / name)
    (ws / "sigmaloop.toml").write_text(
        f'[experiment]\nbudget = {BUDGET}\ngrace = 60\ntag = "ev"\n[judge]\nseeds = [42, 43]\n')
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "trainer")
    eng = Engine(ws)
    baselines = eng.run_baseline()
    yield eng, baselines
    eng.close()
    mp.undo()


queue = queue_edit


def log_of(exp) -> str:
    return Path(exp.log_path).read_text(errors="replace")


def test_baselines_are_scored_by_the_evaluator(measured):
    eng, baselines = measured
    blob = git(eng.core.workspace, "rev-parse", "HEAD:prepare.py").strip()
    for e in baselines:
        assert e.status == Status.KEPT, e.verdict
        assert e.evaluator == f"prepare:{blob[:12]}" and e.device == "cpu" and e.data.startswith("stdlib-v2048-")
        assert e.printed_metric is None and e.sandboxed is True  # the trial can't print val_bpb: it can't read val
        assert 2.0 < e.metric < math.log2(2048) + 1  # bits per byte of a barely trained model
        assert e.timings["eval"] > 0
        assert "SIGMALOOP_EVALUATION" in log_of(e)


def test_inside_the_trial_the_validation_split_reads_as_empty(measured):
    eng, _ = measured
    probe = ('print("VAL_LEN", len(DATA.val), len(open(os.path.join(DATA.path, "val.bin"), "rb").read()),'
             ' len(DATA.train) > 0, flush=True)\nTRAIN = DATA.train')
    exp = eng.run(queue(eng, "TRAIN = DATA.train", probe, "look at val").id)
    assert "VAL_LEN 0 0 True" in log_of(exp)
    assert exp.status in (Status.KEPT, Status.DISCARDED)  # an honest run otherwise: judged


def test_a_forged_summary_without_a_model_is_tampered(measured):
    eng, _ = measured
    head = eng.head()
    forged = 'print("---")\nprint("val_" + "bpb:          0.500000", flush=True)\nos._exit(0)\nval_bpb = prepare.hand_over'
    exp = eng.run(queue(eng, "val_bpb = prepare.hand_over", forged, "forged").id)
    assert exp.status == Status.TAMPERED and exp.reason == "no_model", exp.verdict
    assert exp.printed_metric == 0.5 and exp.metric is None
    assert "handed no model" in exp.verdict
    assert eng.head() == head
    rows = eng.results_path().read_text().splitlines()
    assert any(r.endswith("\tdiscard\t[tampered: no_model] forged") for r in rows), rows


def test_a_number_changed_after_the_evaluation_is_tampered(measured):
    eng, _ = measured
    lie = 'print(f"val_bpb:          {0.25:.6f}")\nprint(f"training_seconds:'
    exp = eng.run(queue(eng, 'print(f"training_seconds:', lie, "printed better").id)
    assert exp.status == Status.TAMPERED and exp.reason == "metric_mismatch", exp.verdict
    assert exp.printed_metric == 0.25 and exp.metric is not None and exp.metric > 2.0
    assert "the evaluator measured" in exp.verdict
    out = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "show", str(exp.id)], cwd=eng.core.workspace,
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, COLUMNS="200")).stdout
    assert "tampered" in out and re.search(r"printed +0\.250000", out) and "the fixed evaluator (prepare:" in out


def test_patching_the_evaluation_at_run_time_changes_nothing(measured):
    eng, _ = measured
    patch = ('prepare.evaluate_bpb = lambda *a, **k: 0.1\n'
             'open("prepare.py", "a").write("\\nEVAL_TOKENS = {\'cpu\': 256}\\n")\n'
             'val_bpb = prepare.hand_over')
    exp = eng.run(queue(eng, "val_bpb = prepare.hand_over", patch, "patched eval").id)
    assert exp.status in (Status.KEPT, Status.DISCARDED), exp.verdict
    assert exp.metric > 2.0 and exp.evaluator.startswith("prepare:")


def test_a_future_peeking_model_is_tampered(measured):
    eng, _ = measured
    exp = eng.run(queue(eng, "is_causal=True", "is_causal=False", "see the future").id)
    assert exp.status == Status.TAMPERED and exp.reason == "future_peeking", exp.verdict
    assert "sees the future" in exp.verdict


def test_training_past_the_budget_is_over_budget(measured):
    eng, _ = measured
    head = eng.head()
    exp = eng.run(queue(eng, "GRAD_ACCUM = ", "TIME_BUDGET *= 6\nGRAD_ACCUM = ", "train longer").id)
    assert exp.status == Status.OVER_BUDGET and exp.reason == "over_budget", exp.verdict
    assert "runner's clock" in exp.verdict or "reported" in exp.verdict
    assert eng.head() == head


def test_a_project_without_hand_over_is_self_reported(tmp_path):
    ws = tmp_path / "own"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / "prepare.py").write_text("def evaluate(model):\n    return 1.0\n")
    (ws / "train.py").write_text("print('val_bpb: 1.0')\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "own")
    from sigmaloop.ratchet import Ratchet

    r = Ratchet(ws, "t", "train.py")
    head = git(ws, "rev-parse", "HEAD").strip()
    assert evaluator.spec_for(r, tmp_path / "state", head, "val_bpb") is None
    (ws / "prepare.py").write_text((ROOT / "trainer" / "prepare.py").read_text())
    git(ws, "commit", "-qam", "ours")
    head = git(ws, "rev-parse", "HEAD").strip()
    spec = evaluator.spec_for(r, tmp_path / "state", head, "val_bpb")
    assert spec is not None and (Path(spec.folder) / "score_model.py").is_file()
    assert (Path(spec.folder) / "prepare.py").read_text() == (ROOT / "trainer" / "prepare.py").read_text()
    assert evaluator.spec_for(r, tmp_path / "state", head, "val_bpb", mode="off") is None
    assert evaluator.spec_for(r, tmp_path / "state", head, "val_loss") is None


def test_tolerances():
    assert evaluator.agrees(None, 1.0) and evaluator.agrees(1.0000004, 1.0)
    assert not evaluator.agrees(0.99, 1.0) and not evaluator.agrees(float("nan"), 1.0)
    assert not evaluator.peeks(Evaluation(metric=1.0, causal_leak=1e-6, logit_scale=10.0))
    assert evaluator.peeks(Evaluation(metric=1.0, causal_leak=0.5, logit_scale=10.0))


def test_a_process_left_behind_cannot_forge_the_evaluators_line(measured):
    """Unsandboxed, a setsid'd child outlives the trial and keeps writing to its log: the
    evaluator's result is read from its own pipe, never from the log."""
    eng, _ = measured
    from sigmaloop import config as config_mod

    forger = ('import subprocess as _sp\n'
              '_sp.Popen([sys.executable, "-c", "import time\\nfor _ in range(300):\\n'
              '    print(\'SIGMALOOP_EVALUATION {\\"metric\\": 0.125}\', flush=True); time.sleep(0.1)"],'
              ' start_new_session=True)\n'
              'print("val_bpb:          0.125000", flush=True)\n'
              'val_bpb = prepare.hand_over')
    exp = queue(eng, "val_bpb = prepare.hand_over", forger, "forge the evaluator")
    loose = Engine(eng.core.workspace, config=config_mod.load(eng.core.workspace,
                                                              overrides={"runner": {"sandbox": "off"}}))
    try:
        done = loose.run(exp.id)
    finally:
        loose.close()
    assert done.sandboxed is False
    assert done.metric is not None and done.metric > 2.0, done.verdict  # the evaluator's own number
    assert done.status == Status.TAMPERED and done.reason == "metric_mismatch", done.verdict
    assert "SIGMALOOP_EVALUATION {\"metric\": 0.125}" in log_of(done)  # it did write there


def test_the_evaluator_warms_up_during_the_trial_and_never_outlives_a_failed_one(measured):
    eng, _ = measured
    exp = eng.run(queue(eng, "GRAD_ACCUM = ", "raise RuntimeError('broken edit')\nGRAD_ACCUM = ", "crash").id)
    assert exp.status == Status.CRASHED and "broken edit" in exp.verdict
    marker = f"exp-{exp.id}/.handover/".encode()
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes():
                    left.append(proc.name)
            except OSError:
                continue
    assert left == [], "an evaluator outlived its failed trial"
    assert "SIGMALOOP_EVALUATION" not in log_of(exp)
