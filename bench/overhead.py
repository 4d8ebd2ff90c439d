"""Wall time of one trial over its budget, with the real trainer on CPU, split by phase.

Runs baseline trials of the embedded trainer through the real engine (git worktree,
subprocess, journal, judge) side by side in one process: the default (sandbox on, the fixed
evaluator out of process), the sandbox off, and the evaluation in the trial's own process
(experiment.evaluator = "off": the trainer scores itself, the number is self-reported).
It prints one JSON line:
  ratio = engine wall time / budget, next to autoresearch's reference (325.9 s for 300 s),
  split = start-up (process start → first training step), train, hand-over/eval + exit,
  the evaluator process, judge + git,
  sandbox_cost_s = sandboxed wall − unsandboxed wall (goal: under 0.2 s per trial),
  evaluator_cost_s = out-of-process wall − in-process wall (what the fixed evaluator costs),
  warm_loader_saving_s = the evaluator without its loader warm-up − with it (the lever that
  pre-pays torch.export.load's first-call costs in the CPU the trial leaves idle), with the
  training steps of both (the warm-up must not take steps from the trial).

    python bench/overhead.py [--budget 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sigmaloop import config as config_mod
from sigmaloop.cli import init_workspace
from sigmaloop.engine import Engine

AUTORESEARCH_WALL, AUTORESEARCH_BUDGET = 325.9, 300.0


def measure(ws: Path, budget: float, seed: int, sandbox: str, evaluator: str = "auto",
            warm_loader: bool = True) -> dict:
    """One baseline trial with runner.sandbox = ``sandbox`` and experiment.evaluator =
    ``evaluator``; its figures."""
    overrides = {"runner": {"sandbox": sandbox}, "experiment": {"evaluator": evaluator}}
    engine = Engine(ws, config=config_mod.load(ws, overrides=overrides))
    os.environ["SIGMALOOP_WARM_LOADER"] = "1" if warm_loader else "0"  # read by score_model.py
    try:
        t0 = time.perf_counter()
        (exp,) = engine.run_baseline(seeds=[seed], budget=budget)
        engine_wall = time.perf_counter() - t0
        curve = engine.curve(exp.id)
    finally:
        engine.close()
    if exp.metric is None:
        print(json.dumps({"bench": "overhead", "error": exp.verdict, "log": exp.log_path}))
        sys.exit(1)
    tm = exp.timings
    trial_wall = tm["wall"]
    train = exp.summary.get("training_seconds", 0.0)
    # the runner's start-up is process start → first metrics record; the record's t is
    # seconds since training start, so their difference is the start-up before training
    startup = tm.get("startup", 0.0) - (curve[0].t if curve else 0.0)
    return {
        "sandboxed": exp.sandboxed,
        "engine_wall_s": round(engine_wall, 2),
        "ratio": round(engine_wall / budget, 3),
        "split_s": {
            "startup": round(startup, 2),
            "train": round(train, 2),
            "eval_and_exit": round(trial_wall - startup - train, 2),
            "evaluator_process": round(tm.get("eval", 0.0), 2),
            "judge_and_git": round(engine_wall - trial_wall - tm.get("eval", 0.0), 2),
            "git": round(tm.get("git", 0.0), 3),
        },
        "val_bpb": exp.metric,
        "evaluator": exp.evaluator,
        "num_steps": exp.summary.get("num_steps"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    ws = init_workspace(Path(tempfile.mkdtemp(prefix="sl-overhead-")) / "ws", budget=args.budget)
    subprocess.run([sys.executable, "prepare.py"], cwd=ws, check=True, capture_output=True)
    on = measure(ws, args.budget, args.seed, "on")
    off = measure(ws, args.budget, args.seed, "off")
    in_process = measure(ws, args.budget, args.seed, "on", evaluator="off")
    cold = measure(ws, args.budget, args.seed, "on", warm_loader=False)
    reference = AUTORESEARCH_WALL / AUTORESEARCH_BUDGET
    print(json.dumps({
        "bench": "overhead",
        "device": "cpu",
        "budget_s": args.budget,
        "ratio": on["ratio"],
        "reference_autoresearch_ratio": round(reference, 3),
        "ratio_vs_reference": round(on["ratio"] / reference, 3),
        "goal_ratio": 1.05,
        "sandbox_cost_s": round(on["engine_wall_s"] - off["engine_wall_s"], 2),
        "evaluator_cost_s": round(on["engine_wall_s"] - in_process["engine_wall_s"], 2),
        "warm_loader_saving_s": round(cold["engine_wall_s"] - on["engine_wall_s"], 2),
        "steps_warm_vs_cold": [on["num_steps"], cold["num_steps"]],
        "sandbox_on": on,
        "sandbox_off": off,
        "evaluation_in_process": in_process,
        "evaluator_cold_loader": cold,
    }))


if __name__ == "__main__":
    main()
