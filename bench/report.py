"""Report bench: the morning report over a big night, and what it costs beside reading the journal.

A real workspace (git, SQLite) whose head ran two real baseline trials of a stand-in script, then
N judged candidates written through the journal as the engine writes them (diffs, verdict fields,
predictions, LLM token usage, warnings) with P-point training curves, a tenth of them with a
spike, a NaN or a divergence. Timed, median of R repeats, in one process:

- ``floor``: reading what the report needs and nothing else (every row, every curve);
- ``build``: ``Engine.report()`` (fields: effects, calibration, anomaly checks over full curves);
- ``render``: the HTML page from those fields; ``size``: its bytes.

Prints ONE JSON line.   .venv/bin/python bench/report.py [--experiments 500] [--points 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sigmaloop.engine import Engine
from sigmaloop.models import ProgressRecord, Status
from sigmaloop.report import render

STAND_IN = '''import json, os, time
budget = float(os.environ.get("SIGMALOOP_TIME_BUDGET", "1"))
seed = int(os.environ.get("SIGMALOOP_SEED", "0"))
with open(os.environ["SIGMALOOP_METRICS"], "a") as f:
    for step in range(20):
        f.write(json.dumps({"step": step, "t": step * budget / 20, "frac": (step + 1) / 20,
                            "loss": 3.0 * 0.97 ** step}) + "\\n")
time.sleep(budget)
print("---")
print(f"val_bpb:          {1.0 + 0.002 * (seed % 7):.6f}")
print("num_steps:        20")
'''
CONFIG = '''[experiment]
train_script = "train.py"
command = "python train.py"
budget = 0.2
tag = "bench"

[judge]
seeds = [42, 43]
prune = false
'''


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=cwd, check=True,
                   capture_output=True)


def workspace(root: Path) -> Path:
    ws = root / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(STAND_IN)
    (ws / "sigmaloop.toml").write_text(CONFIG)
    (ws / ".gitignore").write_text(".sigmaloop/\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "start")
    return ws


def curve(rng: random.Random, exp_id: int, points: int, fault: str | None) -> list[ProgressRecord]:
    losses = [3.0 * math.exp(-3 * i / points) + 0.8 + rng.gauss(0, 0.01) for i in range(points)]
    at = rng.randrange(points // 3, points - 2)
    if fault == "spike":
        losses[at] *= 5
    elif fault == "nan":
        losses[at:] = [math.nan] * (points - at)
    elif fault == "divergence":
        losses[at:] = [v + 0.02 * (i - at) ** 1.2 for i, v in enumerate(losses[at:], at)]
    return [ProgressRecord(exp_id, i, i * 0.3, (i + 1) / points,
                           None if math.isnan(v) else v, {} if not math.isnan(v) else {"nonfinite_loss": 0.0})
            for i, v in enumerate(losses)]


def fill(engine: Engine, n: int, points: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    sigma = engine.state().reference.sigma or 0.003
    head = engine.head()
    q = engine.ask("Which learning rate matters most: MATRIX_LR or EMBEDDING_LR?", "tune that one first")
    now = time.time() - n * 60
    for i in range(n):
        name = rng.choice(["MATRIX_LR", "EMBEDDING_LR", "WARMUP_RATIO", "DEPTH"])
        delta = rng.gauss(0.0, 2 * sigma)
        z = -delta / (math.sqrt(2) * sigma)
        kept = z > 3 and rng.random() < 0.5
        roll = rng.random()
        status, reason = (Status.KEPT, "improved") if kept else \
            (Status.CRASHED, "crashed") if roll < 0.05 else \
            (Status.DISCARDED, "worse" if z < -2 else "within_noise")
        llm = rng.random() < 0.5
        e = engine.journal.create(
            status=status, reason=reason, source="llm:bench" if llm else "tune", parent_commit=head,
            hypothesis=f"{name} {'up' if rng.random() < 0.5 else 'down'}: {'x' * rng.randrange(10, 80)}",
            diff=f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-{name} = 0.04\n+{name} = {rng.random():.4f}\n",
            predicted_delta=rng.gauss(-sigma, sigma), seed=42, budget=0.2,
            metric=None if status == Status.CRASHED else 1.0 + delta, delta=None if status == Status.CRASHED else delta,
            sigma=sigma, z=None if status == Status.CRASHED else z, numbers={"runs": 2, "dof": 4},
            started_at=now + 60 * i, finished_at=now + 60 * i + 55, timings={"wall": 55.0},
            usage={"prompt_tokens": 2000, "completion_tokens": 400, "total_tokens": 2400} if llm else {},
            question=q.id if name.endswith("_LR") else None,
            warnings={"step_count": "a same-seed repeat made 14% fewer steps"} if rng.random() < 0.03 else {},
        )
        fault = rng.choice(["spike", "nan", "divergence"]) if rng.random() < 0.1 else None
        engine.journal.add_progress(e.id, curve(rng, e.id, points, fault))


def median_ms(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=500)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(workspace(Path(tmp)))
        try:
            engine.run_baseline()
            fill(engine, args.experiments, args.points)

            def floor():
                exps = engine.experiments()
                return sum(len(engine.curve(e.id)) for e in exps)

            floor_ms, _ = median_ms(floor, args.repeats)
            build_ms, report = median_ms(engine.report, args.repeats)
            render_ms, page = median_ms(lambda: render(report), args.repeats)
        finally:
            engine.close()
    print(json.dumps({
        "bench": "report", "experiments": args.experiments + 2, "points_per_curve": args.points,
        "floor_ms": round(floor_ms, 1), "build_ms": round(build_ms, 1), "render_ms": round(render_ms, 1),
        "total_ms": round(build_ms + render_ms, 1), "ratio_to_floor": round((build_ms + render_ms) / floor_ms, 2),
        "page_kb": round(len(page.encode()) / 1024, 1),  # type: ignore[union-attr]
        "weird": len(report.weird), "charts": page.count('class="chart"'),  # type: ignore[union-attr]
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
