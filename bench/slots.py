"""How full the slots stay: short stand-in trials through the LocalExecutor and the RayExecutor.

Runs ``--trials`` stand-in trials (each sleeps 0.3–0.5 s, seeded, so a 2-core machine suffices)
through ``LocalExecutor(slots=N)`` and through ``RayExecutor`` on a local Ray cluster declaring N
CPUs (``ray.cpus_per_trial = 1``), side by side in one process, all submitted at once as the
loop keeps N slots full. It prints one JSON line:
  utilization = busy slot-seconds (the trials' own runs, as the runner measured them)
                / available slot-seconds (N x wall from the first submit to the last result);
                goal >= 0.95,
  overhead_per_trial_s = (available - busy) / trials: the slot time a trial costs beyond its run,
  overhead_ratio = Ray's overhead per trial / the local one's.

    python bench/slots.py [--trials 100] [--slots 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from sigmaloop.config import Config
from sigmaloop.executors import LocalExecutor
from sigmaloop.models import TrialSpec
from sigmaloop.ray_executor import RayExecutor

STANDIN = textwrap.dedent('''\
    """A stand-in trial: sleeps a seeded 0.3-0.5 s in a few steps, keeps the trial contract."""
    import json, os, random, time

    LOW, HIGH = {low}, {high}
    seconds = random.Random(int(os.environ["SIGMALOOP_SEED"])).uniform(LOW, HIGH)
    t0 = time.time()
    for step in range(3):
        time.sleep(seconds / 3)
        with open(os.environ["SIGMALOOP_METRICS"], "a") as f:
            f.write(json.dumps({{"step": step, "t": time.time() - t0, "frac": (step + 1) / 3, "loss": 1.0}}) + "\\n")
    print("---")
    print("val_bpb:          1.000000")
    print(f"training_seconds: {{time.time() - t0:.2f}}")
''')


def workspace(low: float, high: float) -> Path:
    ws = Path(tempfile.mkdtemp(prefix="sl-slots-")) / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(STANDIN.format(low=low, high=high))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "stand-in"]):
        subprocess.run(["git", *args], cwd=ws, check=True, capture_output=True)
    return ws


def specs(ws: Path, trials: int, first_id: int) -> list[TrialSpec]:
    state = ws.parent / "state"
    # the same seeds (so the same trial lengths) for both executors: only the ids differ
    return [TrialSpec(exp_id=i, cwd=str(ws), command=[sys.executable, "train.py"], budget=1.0, seed=i - first_id,
                      log_path=str(state / "logs" / f"{i}.log"), metrics_path=str(state / "metrics" / f"{i}.jsonl"),
                      grace=30.0, workspace_root=str(ws))
            for i in range(first_id, first_id + trials)]


def measure(executor, batch: list[TrialSpec]) -> dict:
    """All of ``batch`` submitted at once; how busy the executor's slots were until the last result."""
    t0 = time.perf_counter()
    handles = [executor.submit(s) for s in batch]
    results = [h.result() for h in handles]
    wall = time.perf_counter() - t0
    busy = sum(r.wall_seconds for r in results)
    available = executor.slots * wall
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[str(r.outcome)] = outcomes.get(str(r.outcome), 0) + 1
    return {
        "slots": executor.slots,
        "wall_s": round(wall, 2),
        "busy_slot_s": round(busy, 2),
        "available_slot_s": round(available, 2),
        "utilization": round(busy / available, 3),
        "trial_run_s": round(busy / len(results), 3),
        "overhead_per_trial_s": round((available - busy) / len(results), 3),
        "outcomes": outcomes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--low", type=float, default=0.3, help="shortest stand-in trial (s)")
    ap.add_argument("--high", type=float, default=0.5, help="longest stand-in trial (s)")
    args = ap.parse_args()
    ws = workspace(args.low, args.high)

    local = LocalExecutor(slots=args.slots, gpus=[])
    try:
        measure(local, specs(ws, args.slots, 10**6))  # warm: interpreter and page cache
        local_figures = measure(local, specs(ws, args.trials, 1))
    finally:
        local.shutdown(wait=True)

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": args.slots, "num_gpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        config = Config()
        config.runner.executor, config.runner.sandbox = "ray", "off"
        config.ray.address, config.ray.cpus_per_trial = cluster.address, 1
        t0 = time.perf_counter()
        remote = RayExecutor(config)
        connect = time.perf_counter() - t0
        try:
            measure(remote, specs(ws, args.slots, 2 * 10**6))  # warm: workers' imports, the project bundle
            ray_figures = measure(remote, specs(ws, args.trials, 10**5))
        finally:
            remote.shutdown(wait=True)
        ray_figures["connect_s"] = round(connect, 2)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()

    print(json.dumps({
        "bench": "slots",
        "trials": args.trials,
        "slots": args.slots,
        "trial_s": [args.low, args.high],
        "goal_utilization": 0.95,
        "local": local_figures,
        "ray": ray_figures,
        "overhead_ratio": round(ray_figures["overhead_per_trial_s"] / max(local_figures["overhead_per_trial_s"], 1e-3), 2),
    }))


if __name__ == "__main__":
    main()
