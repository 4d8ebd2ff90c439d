"""Journal bench: fill a journal the way the loop does, then time the editor's queries.

Fills 10k experiments, each with a ~20-line diff and a 200-point curve, through the public API
and one transaction per write, as the engine writes them: create (queued), update (running),
curve points in batches of 50, update (finished with metric, summary, timings). Then p50/p99
in ms over repeated calls of each query. Prints ONE JSON line.

    .venv/bin/python bench/journal.py [--experiments 10000] [--points 200]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sigmaloop.exports import write_results_tsv
from sigmaloop.journal import Journal
from sigmaloop.models import CrashLocation, ProgressRecord, Status


def make_diff(rng: random.Random, i: int) -> str:
    lines = ["--- a/train.py", "+++ b/train.py", f"@@ -{100 + i % 300},8 +{100 + i % 300},8 @@"]
    for k in range(17):
        kind = rng.choice(" " * 5 + "-+")
        lines.append(f"{kind}    x = layer_{k}(x, scale={rng.random():.4f})  # block {i}")
    return "\n".join(lines) + "\n"


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "n": n,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--long-curve", type=int, default=20_000)
    args = ap.parse_args()
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(Path(tmp) / ".sigmaloop" / "journal.db")
        n = args.experiments
        t_create = t_update = t_curve = 0.0
        n_update = n_curve_tx = n_points = 0
        for i in range(n):
            t0 = time.perf_counter()
            e = j.create(
                status=Status.QUEUED,
                source="baseline" if i < 2 else rng.choice(["tune", "llm:gpt-4o-mini", "user"]),
                hypothesis=f"try change #{i}: scale block {i % 17} by {rng.random():.3f}",
                rationale="because the loss curve flattens early " * 3,
                diff="" if i < 2 else make_diff(rng, i),
                parent_commit=f"{rng.getrandbits(160):040x}",
                code_hash=f"{rng.getrandbits(64):016x}",
                seed=42 + i % 2,
                budget=60.0,
                params={"constant": f"C{i % 40}", "old": 1.0, "new": rng.random()},
            )
            t1 = time.perf_counter()
            j.move(e.id, Status.RUNNING, started_at=time.time(), attempts=1, pid=1000 + i)
            t2 = time.perf_counter()
            t_create += t1 - t0
            t_update += t2 - t1
            n_update += 1
            last = i >= n - 2  # the last two stay running
            for start in range(0, args.points, args.batch):
                recs = [
                    ProgressRecord(
                        e.id, s, s * 0.3, s / args.points, 3.0 - s / args.points, {"lr": 0.02}
                    )
                    for s in range(start, min(args.points, start + args.batch))
                ]
                t3 = time.perf_counter()
                j.add_progress(e.id, recs)
                t_curve += time.perf_counter() - t3
                n_curve_tx += 1
                n_points += len(recs)
            if last:
                continue
            roll = rng.random()
            status = (
                Status.KEPT
                if roll < 0.1 or i < 2
                else Status.CRASHED
                if roll < 0.15
                else Status.DISCARDED
            )
            metric = None if status == Status.CRASHED else 1.0 - i * 1e-6 + rng.gauss(0, 0.002)
            t4 = time.perf_counter()
            j.update(
                e.id,
                status=status,
                finished_at=time.time(),
                commit=f"{rng.getrandbits(160):040x}",
                metric=metric,
                delta=None if metric is None else metric - 1.0,
                sigma=0.002,
                z=None if metric is None else (1.0 - metric) / 0.002,
                verdict=str(status),
                summary={"val_bpb": metric or 0.0, "peak_vram_mb": 45060.2, "mfu": 39.8},
                timings={"wall": 95.0, "train": 60.0, "eval": 12.0},
                crash=CrashLocation("train.py", 200, "RuntimeError: boom")
                if metric is None
                else None,
            )
            t_update += time.perf_counter() - t4
            n_update += 1
        long_id = j.create(status=Status.KEPT, source="user", metric=1.0).id
        j.add_progress(
            long_id,
            [
                ProgressRecord(long_id, s, s, s / args.long_curve, 1.0)
                for s in range(args.long_curve)
            ],
        )

        ids = [e.id for e in j.list(limit=1)] + list(range(1, n + 1))
        top = j.max_rev()

        def inlay(dicts: bool) -> list[tuple]:  # the inlay-hint source
            return [
                (e.id, e.status, e.diff, e.metric, e.delta, e.z, e.hypothesis)
                for e in j.with_diff(dicts=dicts)
            ]

        queries = {
            "get": timed(lambda: j.get(rng.choice(ids)), 2000),
            "recent_50": timed(lambda: j.list(order="desc", limit=50), 500),
            "running": timed(j.running, 500),
            "best": timed(j.best, 500),
            "counts": timed(j.counts, 500),
            "changed_since_max_rev_minus_10": timed(lambda: j.changed_since(top - 10), 500),
            "max_rev": timed(j.max_rev, 2000),
            "curve_200pts_max500": timed(lambda: j.curve(rng.randint(1, n), max_points=500), 500),
            f"curve_{args.long_curve}pts_max500": timed(
                lambda: j.curve(long_id, max_points=500), 50
            ),
            "with_diff_all": timed(lambda: inlay(True), 20),
            "with_diff_all_no_dicts": timed(lambda: inlay(False), 20),
            "with_diff_since_max_rev_minus_10": timed(lambda: j.with_diff(since_rev=top - 10), 500),
        }
        assert len(j.running()) == 2 and j.best() is not None
        with_diff = len(j.with_diff())
        db_mb = sum(p.stat().st_size for p in j.path.parent.glob("journal.db*")) / 2**20
        t0 = time.perf_counter()
        rows = write_results_tsv(j, Path(tmp) / "results.tsv")
        tsv_ms = (time.perf_counter() - t0) * 1000
        j.close()

    print(
        json.dumps(
            {
                "bench": "journal",
                "python": sys.version.split()[0],
                "experiments": n,
                "diff_lines": 20,
                "curve_points_per_exp": args.points,
                "curve_batch": args.batch,
                "with_diff": with_diff,
                "db_mb": round(db_mb, 1),
                "insert": {
                    "create_per_s": round(n / t_create),
                    "update_per_s": round(n_update / t_update),
                    "add_progress_tx_per_s": round(n_curve_tx / t_curve),
                    "curve_points_per_s": round(n_points / t_curve),
                },
                "queries": queries,
                "write_results_tsv_ms": round(tsv_ms, 1),
                "results_tsv_rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
