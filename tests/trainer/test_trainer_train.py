"""train.py: real short CPU runs against the session's prepared cache."""

import json
import math
import re
import shutil

import numpy as np
import pytest
from trainerkit import TRAINER, cache_entries, clean_env, run_py

SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth"]


def parse_summary(stdout):
    assert "\n---\n" in stdout, stdout
    lines = stdout.split("\n---\n")[-1].strip().splitlines()
    pairs = [re.match(r"(\w+):\s+(\S+)$", line).groups() for line in lines]
    assert [k for k, _ in pairs] == SUMMARY_KEYS
    return {k: float(v) for k, v in pairs}


def untrained_bpb_bound(entry):
    """log2(V) bits per token over the mean bytes per token of the validation split."""
    meta = json.loads((entry / "meta.json").read_text())
    val = np.fromfile(entry / "val.bin", dtype=meta["dtype"])
    token_bytes = np.load(entry / "token_bytes.npy")
    n_bytes = token_bytes[val].sum()
    n_scored = (token_bytes[val] > 0).sum()
    return math.log2(meta["vocab_size"]) * n_scored / n_bytes


def test_short_cpu_run(prepared, tmp_path):
    budget = 8.0
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("")  # appended to, never truncated
    env = dict(prepared["env"], SIGMALOOP_TIME_BUDGET=budget, SIGMALOOP_METRICS=metrics)
    p = run_py(TRAINER / "train.py", {k: str(v) for k, v in env.items()})
    assert p.returncode == 0, p.stdout + p.stderr
    s = parse_summary(p.stdout)
    bound = untrained_bpb_bound(prepared["entry"])
    assert math.isfinite(s["val_bpb"])
    assert s["val_bpb"] < 0.8 * bound, (s["val_bpb"], bound)
    assert abs(s["training_seconds"] - budget) <= 0.1 * budget
    assert s["peak_vram_mb"] == 0 and s["mfu_percent"] == 0  # CPU
    assert s["depth"] >= 1 and s["num_steps"] >= 5

    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(records) >= 5
    for r in records:
        assert set(r) == {"step", "t", "frac", "loss", "lr", "tok_per_s", "mfu"}
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert [r["t"] for r in records] == sorted(r["t"] for r in records)
    assert records[-1]["frac"] >= 0.95 and all(0 <= r["frac"] <= 1 for r in records)
    assert records[-1]["step"] == s["num_steps"]
    assert records[-1]["loss"] < records[0]["loss"] - 1.0  # clearly learning


def test_same_seed_same_steps_is_reproducible(prepared):
    env = dict(prepared["env"], SIGMALOOP_MAX_STEPS="6", SIGMALOOP_SEED="7")
    a = parse_summary(run_py(TRAINER / "train.py", env).stdout)
    b = parse_summary(run_py(TRAINER / "train.py", env).stdout)
    assert a["num_steps"] == b["num_steps"] == 6
    assert a["val_bpb"] == b["val_bpb"]


def assert_fail(p, *needles):
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    fail_lines = [line for line in p.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail_lines) == 1, p.stdout
    for needle in needles:
        assert needle in fail_lines[0], fail_lines[0]
    assert "val_bpb:" not in p.stdout


@pytest.mark.parametrize("budget", ["0", "-5", "abc", "nan"])
def test_bad_time_budget(prepared, budget):
    p = run_py(TRAINER / "train.py", dict(prepared["env"], SIGMALOOP_TIME_BUDGET=budget))
    assert_fail(p, "SIGMALOOP_TIME_BUDGET", repr(budget))


def copy_trainer(tmp_path, old, new):
    for name in ("train.py", "prepare.py"):
        shutil.copy(TRAINER / name, tmp_path / name)
    src = (tmp_path / "train.py").read_text()
    assert src.count(old) == 1, old
    (tmp_path / "train.py").write_text(src.replace(old, new))
    return tmp_path / "train.py"


def test_nan_learning_rate_constant(prepared, tmp_path):
    script = copy_trainer(tmp_path, "MATRIX_LR = 0.02", 'MATRIX_LR = float("nan")')
    p = run_py(script, dict(prepared["env"], SIGMALOOP_TIME_BUDGET="5"))
    assert_fail(p, "MATRIX_LR", "nan")
    assert cache_entries(prepared["cache"]) == [prepared["entry"].name]


def test_nan_during_training_fails_fast(prepared, tmp_path):
    # Past the constant checks: NaN weights make the very first loss NaN.
    script = copy_trainer(tmp_path, "nn.init.normal_(self.lm_head.weight, std=0.001)",
                          'self.lm_head.weight.fill_(float("nan"))')
    p = run_py(script, dict(prepared["env"], SIGMALOOP_TIME_BUDGET="30"))
    assert_fail(p, "loss is nan", "step 1")


def test_crash_in_edited_code_ends_with_fail(prepared, tmp_path):
    script = copy_trainer(tmp_path, "x = rms_norm(self.wte(idx))", "x = rms_norm(self.wte(idx)) + undefined_name")
    p = run_py(script, dict(prepared["env"], SIGMALOOP_TIME_BUDGET="30"))
    assert p.returncode == 1
    assert "NameError" in p.stderr  # the traceback is kept for the agent to read
    assert p.stdout.splitlines()[-1].startswith("FAIL crashed: NameError")


def test_bad_data_source_fails_clearly(prepared, tmp_path):
    (tmp_path / "empty").mkdir()
    cache = tmp_path / "cache"
    env = clean_env(SIGMALOOP_CACHE=cache, SIGMALOOP_DATA=tmp_path / "empty",
                    SIGMALOOP_TIME_BUDGET=5)
    p = run_py(TRAINER / "train.py", env)
    assert_fail(p, "data:", "no data files found", str(tmp_path / "empty"))
    assert cache_entries(cache) == []
