"""Does the judge call noise an improvement? False-keep and true-keep rates on real trials.

Real subprocess trials of the embedded trainer (CPU preset, tiny budget) feed two judges in the
same run:
- ours (sigmaloop.judge: pooled same-code sigma, k sigma, confirmation rerun before a keep),
- greedy "keep if lower than the best so far" (autoresearch's rule).

Null experiments: the unchanged script on a new seed each time (20 by default); every keep is a
false keep. Known-good edit: the reference is the script with every learning rate divided by 10
(deliberately bad); the candidate restores them; every discard is a missed true keep.

    python bench/judge.py [--budget 3] [--nulls 20] [--goods 10]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sigmaloop.cli import trainer_template
from sigmaloop.config import JudgeConfig
from sigmaloop.judge import Judge, reference_for
from sigmaloop.models import Experiment, Outcome, Status, TrialSpec
from sigmaloop.runner import run_trial

LR_NAMES = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR")


def make_project(root: Path, lr_scale: float) -> Path:
    root.mkdir(parents=True)
    for name in ("prepare.py", "train.py"):
        (root / name).write_bytes((trainer_template() / name).read_bytes())
    if lr_scale != 1.0:
        src = (root / "train.py").read_text()
        for name in LR_NAMES:
            src, n = re.subn(rf"^({name}\s*=\s*)([0-9.eE+-]+)", lambda m: f"{m.group(1)}{float(m.group(2)) * lr_scale:.6g}", src, flags=re.M)
            assert n == 1, f"{name} not found once in train.py"
        (root / "train.py").write_text(src)
    return root


class Trials:
    def __init__(self, budget: float, logs: Path):
        self.budget, self.logs, self.n, self.seconds = budget, logs, 0, 0.0

    def run(self, project: Path, seed: int) -> float:
        self.n += 1
        spec = TrialSpec(exp_id=self.n, cwd=str(project), command=[sys.executable, "train.py"],
                         budget=self.budget, seed=seed, log_path=str(self.logs / f"{self.n}.log"),
                         metrics_path=str(self.logs / f"{self.n}.jsonl"), grace=120)
        t0 = time.perf_counter()
        res = run_trial(spec)
        self.seconds += time.perf_counter() - t0
        if res.outcome != Outcome.OK or res.metric is None:
            raise SystemExit(f"trial {self.n} failed: {res.error} (log {spec.log_path})")
        print(f"  trial {self.n:3d} {project.name:6s} seed {seed:5d} val_bpb {res.metric:.5f}", file=sys.stderr)
        return res.metric


def ours(judge: Judge, trials: Trials, project: Path, code: str, seed: int,
         history: list[Experiment]) -> tuple[bool, list[Experiment]]:
    """One candidate through our judge's policy, as the engine runs it; returns (kept, runs)."""
    ref_code = history[0].code_hash
    ref = reference_for(history, ref_code)
    sigma = judge.sigma(history, ref)
    runs = [(seed, trials.run(project, seed))]
    verdict = judge.judge(runs, ref, sigma)
    if verdict.needs_confirmation:
        conf_seed = judge.pick_seed(ref, exclude=[seed])
        runs.append((conf_seed, trials.run(project, conf_seed)))
        verdict = judge.judge(runs, ref, sigma)
    new = [Experiment(id=len(history) + i + 1, status=verdict.status, source="bench", code_hash=code,
                      seed=s, metric=m) for i, (s, m) in enumerate(runs)]
    return verdict.status == Status.KEPT, new


def baselines(trials: Trials, project: Path, code: str, seeds: list[int]) -> list[Experiment]:
    return [Experiment(id=i + 1, status=Status.KEPT, source="baseline", code_hash=code, seed=s,
                       metric=trials.run(project, s)) for i, s in enumerate(seeds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--nulls", type=int, default=20)
    ap.add_argument("--goods", type=int, default=10)
    ap.add_argument("--k", type=float, default=2.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rl-judge-"))
    (tmp / "logs").mkdir()
    subprocess.run([sys.executable, "prepare.py"], cwd=trainer_template(), check=True, capture_output=True)
    good = make_project(tmp / "good", 1.0)
    bad = make_project(tmp / "bad", 0.1)
    trials = Trials(args.budget, tmp / "logs")
    cfg = JudgeConfig(seeds=[42, 43], k=args.k)
    judge = Judge(cfg)

    # -- null experiments: unchanged code, a new seed each time --------------------------------
    history = baselines(trials, good, "good", cfg.seeds)
    greedy_best = history[0].metric  # autoresearch: the first run is the baseline
    ours_false = greedy_false = 0
    for i in range(args.nulls):
        seed = 1000 + i
        kept, runs = ours(judge, trials, good, "good", seed, history)
        ours_false += kept
        history.extend(runs)  # same code: every null run sharpens sigma, as in the engine
        if runs[0].metric < greedy_best:
            greedy_false += 1
            greedy_best = runs[0].metric
    sigma_null = judge.sigma(history, reference_for(history, "good"))

    # -- known-good edit: restore learning rates that were made 10x too small -----------------
    bad_history = baselines(trials, bad, "bad", cfg.seeds)
    pool = bad_history + history  # sigma pools every same-code group the journal holds
    ours_true = greedy_true = 0
    for j in range(args.goods):
        kept, runs = ours(judge, trials, good, "good-cand", 2000 + j, pool)
        ours_true += kept
        greedy_true += runs[0].metric < bad_history[0].metric

    print(json.dumps({
        "bench": "judge",
        "trainer": f"embedded train.py, CPU preset, {args.budget:g}s budget",
        "k": args.k,
        "nulls": args.nulls,
        "false_keep_rate": {"ours": round(ours_false / args.nulls, 3), "greedy": round(greedy_false / args.nulls, 3)},
        "goods": args.goods,
        "true_keep_rate": {"ours": round(ours_true / args.goods, 3), "greedy": round(greedy_true / args.goods, 3)},
        "goals": {"false_keep_max": 0.05, "true_keep_min": 0.9},
        "sigma_null": round(sigma_null, 5),
        "baseline_val_bpb": round(reference_for(history, "good").value, 5),
        "bad_lr_val_bpb": round(reference_for(bad_history, "bad").value, 5),
        "trials": trials.n,
        "trial_seconds_total": round(trials.seconds, 1),
    }))


if __name__ == "__main__":
    main()
