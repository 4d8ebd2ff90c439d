"""The device check for a lent GPU: train.py's default preset on CUDA for a short budget.

One prepared run (see DEVELOPERS' device notes): prepares the offline corpus, runs the embedded
train.py unchanged with its CUDA preset (torch.compile, bf16 autocast, depth 8 / d_model 512)
for --budget seconds, and prints one JSON line: device name, tok/s, MFU, val_bpb, steps, VRAM.
Then the same trainer runs as a sandboxed trial (bubblewrap with the GPU device nodes bound in,
through the real runner, the validation split blanked) for --sandbox-budget seconds, handing
its model over to the fixed evaluator (torch.export on CUDA, scored in its own sandbox on the
GPU): the line gains "sandbox": its outcome, the evaluator's val_bpb, the causality check's
leak, the evaluator's seconds and device, so CUDA inside both sandboxes is checked on real
hardware.
Last, "engine": two trials (the baseline on 2 seeds) through the real engine on this box, at
--engine-budget seconds, with the local executor (one slot per GPU: a one-GPU box runs them one
after the other, never both on one GPU) and, when Ray is installed, the Ray executor (a local
cluster started for the run): per executor the trials' MFU, wall / budget, GPU utilisation
(training seconds / slot wall seconds) and where each ran.
Exits non-zero with the log tail when CUDA is missing or a run fails.

    python bench/cuda.py [--budget 120] [--engine-budget 30] [--no-engine]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[1] / "trainer"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--sandbox-budget", type=float, default=30.0)
    ap.add_argument("--engine-budget", type=float, default=30.0)
    ap.add_argument("--no-engine", action="store_true", help="skip the two engine trials per executor")
    args = ap.parse_args()
    import torch  # the bench may import torch; the server never does

    if not torch.cuda.is_available():
        print(json.dumps({"bench": "cuda", "error": "no CUDA device visible"}))
        sys.exit(2)
    subprocess.run([sys.executable, "prepare.py"], cwd=TRAINER, check=True)
    metrics = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    env = dict(os.environ, SIGMALOOP_TIME_BUDGET=str(args.budget), SIGMALOOP_METRICS=str(metrics))
    p = subprocess.run([sys.executable, "train.py"], cwd=TRAINER, env=env, capture_output=True, text=True)
    summary = dict(re.findall(r"^(\w+):\s+(\S+)$", p.stdout.split("\n---\n")[-1], re.M))
    if p.returncode != 0 or "val_bpb" not in summary:
        print(json.dumps({"bench": "cuda", "error": f"exit {p.returncode}", "tail": (p.stdout + p.stderr)[-3000:]}))
        sys.exit(1)
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steady = records[len(records) // 2:] or records  # after compile and warm-up
    tok_s = sorted(r["tok_per_s"] for r in steady)[len(steady) // 2]
    boxed = sandboxed_run(args.sandbox_budget)
    engine = {} if args.no_engine else {ex: engine_runs(args.engine_budget, ex) for ex in ("local", "ray")}
    print(json.dumps({
        "bench": "cuda", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "sandbox": boxed, "engine": engine,
        "budget_s": args.budget, "tok_per_s_median": tok_s,
        "mfu_percent": float(summary["mfu_percent"]), "val_bpb": float(summary["val_bpb"]),
        "num_steps": int(float(summary["num_steps"])), "peak_vram_mb": float(summary["peak_vram_mb"]),
        "total_seconds": float(summary["total_seconds"]),
    }))


def sandboxed_run(budget: float) -> dict:
    """train.py as a sandboxed trial on the GPU (the runner, bubblewrap, /dev/nvidia* bound in)."""
    from sigmaloop import evaluator, sandbox
    from sigmaloop.executors import slot_envs
    from sigmaloop.models import EvaluatorSpec, TrialSpec
    from sigmaloop.runner import run_trial

    why = sandbox.availability()
    if why is not None:
        return {"error": why}
    ws = Path(tempfile.mkdtemp(prefix="sigmaloop-cuda-"))
    for name in ("prepare.py", "train.py"):
        (ws / name).write_bytes((TRAINER / name).read_bytes())
    metrics, log = ws / "m.jsonl", ws / "trial.log"
    metrics.write_bytes(b"")
    folder = ws / "evaluator"
    folder.mkdir()
    (folder / "prepare.py").write_bytes((TRAINER / "prepare.py").read_bytes())
    (folder / "score_model.py").write_bytes(evaluator.SCRIPT.read_bytes())
    ev = EvaluatorSpec(identity="prepare:bench", folder=str(folder))
    model = ws / "handover" / evaluator.MODEL_FILE
    model.parent.mkdir()
    spec = TrialSpec(
        exp_id=1, cwd=str(ws), command=[sys.executable, "train.py"], budget=budget, seed=42,
        log_path=str(log), metrics_path=str(metrics), grace=600, workspace_root=str(ws),
        env=slot_envs(1)[0], sandbox=sandbox.policy_for(ws, ws, metrics, gpu=True, hide_validation=True),
        evaluator=ev, model_path=str(model), eval_scratch=str(ws / "scratch"), python=sys.executable,
        evaluator_policy=evaluator.policy(ev, ws / "scratch", model, sys.executable, True, ws),
    )
    result = run_trial(spec)
    out = {"outcome": result.outcome.value, "sandboxed": result.sandboxed, "val_bpb": result.metric,
           "evaluator": result.evaluator, "evaluator_device": result.device, "untrusted": result.untrusted,
           "evaluator_s": result.timings.get("eval"),
           "mfu_percent": result.summary.get("mfu_percent"), "wall_s": round(result.wall_seconds, 1)}
    if result.metric is None:
        out["tail"] = log.read_text(errors="replace")[-2000:]
    return out


def engine_runs(budget: float, executor: str) -> dict:
    """The baseline on two seeds through the real engine (sandbox, evaluator) with ``executor``."""
    import shutil
    import time

    from sigmaloop.engine import Engine

    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ModuleNotFoundError:
            return {"skipped": 'ray not installed (pip install "sigmaloop[ray]")'}
    ws = Path(tempfile.mkdtemp(prefix=f"sigmaloop-cuda-{executor}-"))
    for name in ("prepare.py", "train.py"):
        shutil.copy(TRAINER / name, ws / name)
    (ws / "sigmaloop.toml").write_text(f'[experiment]\nbudget = {budget}\ngrace = 300\ntag = "cuda"\n'
                                       f'[judge]\nseeds = [42, 43]\n[runner]\nexecutor = "{executor}"\n')
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "cuda bench"]):
        subprocess.run(["git", *cmd], cwd=ws, env=env, check=True, capture_output=True)
    eng = Engine(ws)
    t0 = time.time()
    try:
        exps = eng.run_baseline()
        wall = time.time() - t0
        slots = eng.executor.slots
    except Exception as exc:  # report, don't lose the rest of the line
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        eng.close()
    trained = sum(e.summary.get("training_seconds", 0.0) for e in exps)
    return {
        "slots": slots, "wall_s": round(wall, 1), "statuses": [e.status.value for e in exps],
        "mfu_percent": [e.summary.get("mfu_percent") for e in exps],
        "wall_over_budget": [round(e.timings.get("wall", 0) / budget, 3) for e in exps],
        "gpu_utilisation": round(trained / (wall * slots), 3) if wall else None,
        "ran_on": sorted({f"{e.node} {e.device}" for e in exps}), "val_bpb": [e.metric for e in exps],
    }


if __name__ == "__main__":
    main()
