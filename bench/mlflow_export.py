"""
Bench: how long ``sigmaloop export --mlflow`` takes on a night-sized journal. Prints ONE JSON line.

    .venv/bin/python bench/mlflow_export.py [--experiments 50] [--points 500]

A real workspace (git) and journal (SQLite) get N finished experiments, each a one-constant
edit with a curve of P points (loss and lr: 2 histories), a summary block and timings, written
through the journal as the trials would; then, into a fresh local store (SQLite, the default
under the state folder), timed:
  first_s      the first export (includes MLflow making its database, ~4 s on its own)
  again_s      an export with nothing changed (every run left alone)
  updated_s    every experiment changed (a new revision, 10 more curve points): all updated in place
  store_only_s the same first export into an existing empty store (the database already made)
Also the count of metric points MLflow holds after, read back through its client.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "server"), str(ROOT / "tests" / "engine")]

from sigmaloop.diff import unified_diff  # noqa: E402
from sigmaloop.engine import Engine  # noqa: E402
from sigmaloop.mlflow_export import export_mlflow  # noqa: E402
from sigmaloop.models import ProgressRecord, Status  # noqa: E402

from enginekit import make_workspace  # noqa: E402


def night(eng: Engine, n: int, points: int) -> None:
    src = eng.head_source()
    now = time.time() - 3600
    for i in range(n):
        after = src.replace("LR = 0.1 ", f"LR = {0.1 + 0.001 * (i + 1):.3f} ", 1)
        e = eng.journal.create(status=Status.RUNNING, source="tune", parent_commit=eng.head(),
                               hypothesis=f"LR step {i}", diff=unified_diff(src, after), seed=42,
                               started_at=now + 60 * i)
        eng.journal.add_progress(e.id, [
            ProgressRecord(e.id, s, s * 0.1, (s + 1) / points, 3.0 - s / points, {"lr": 0.1 * (1 - s / points)})
            for s in range(points)])
        eng.journal.update(e.id, metric=1.0 + 0.0001 * i, delta=0.0001 * i, sigma=0.002, z=-0.05 * i,
                           summary={"val_bpb": 1.0 + 0.0001 * i, "num_steps": points},
                           timings={"wall": 55.0, "train": 50.0}, finished_at=now + 60 * i + 55,
                           verdict="within noise, discarded", reason="within_noise")
        eng.journal.move(e.id, Status.DISCARDED)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=50)
    ap.add_argument("--points", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engine(make_workspace(Path(tmp) / "ws"))
        try:
            night(eng, args.experiments, args.points)
            t = time.perf_counter()
            first = export_mlflow(eng)
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            again = export_mlflow(eng)
            again_s = time.perf_counter() - t
            for e in eng.experiments():
                eng.journal.add_progress(e.id, [ProgressRecord(e.id, args.points + k, 99.0, 1.0, 1.0)
                                                for k in range(10)])
                eng.journal.update(e.id, detail="looked at")
            t = time.perf_counter()
            upd = export_mlflow(eng)
            updated_s = time.perf_counter() - t
            other = f"sqlite:///{Path(tmp) / 'other.db'}"
            export_mlflow(eng, other, experiment="warm-up")  # makes the database
            t = time.perf_counter()
            export_mlflow(eng, other, experiment="timed")
            store_only_s = time.perf_counter() - t
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=first.uri)
            runs = client.search_runs([first.experiment_id])
            points = sum(len(client.get_metric_history(r.info.run_id, "train_loss")) for r in runs)
        finally:
            eng.close()
    print(json.dumps({
        "bench": "mlflow_export", "experiments": args.experiments, "points": args.points,
        "first_s": round(first_s, 2), "store_only_s": round(store_only_s, 2),
        "again_s": round(again_s, 3), "updated_s": round(updated_s, 2),
        "created": first.created, "unchanged_again": again.unchanged, "updated": upd.updated,
        "runs": len(runs), "train_loss_points": points,
    }))


if __name__ == "__main__":
    main()
