"""Early pruning on real trials: budget saved on losing trials vs true keeps lost.

    python bench/prune.py                          # replay bench/data/prune_trials.json
    python bench/prune.py --collect --budget 8     # (re)collect: real trainer trials, ~6 min

Collect: the embedded trainer in a temp git workspace, through the real engine with pruning
off: the baseline on 6 seeds, then a fixed list of edits (learning rates up and down, schedule
and shape changes), each judged to its verdict (confirmations included). Saved per candidate:
its verdict, its first run's training curve, and the curves of the reference runs its pruner
would have watched (the parent code's measured runs at that moment).

Replay: each candidate's curve goes through :class:`sigmaloop.prune.Pruner` exactly as the
engine feeds it (batches of records). Figures: the share of the budget saved on trials judged
clearly worse (goal >= 30%) and on all the losing ones, the true keeps lost (goal 0), pruned
trials that ended within noise of the reference (could still have won: goal 0), and each
baseline run replayed against the other seeds (same code: it must never be pruned). A naive
rule (prune at the first point 2 spreads behind the reference mean, from 30% of the budget)
runs side by side on the same curves.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sigmaloop.models import ProgressRecord
from sigmaloop.prune import Pruner, PruneRule, window_mean

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "prune_trials.json"

# (constant, new value, hypothesis): a spread of real outcomes, from clear losses to keeps. The
# value is set whatever the head has then (a keep changes the head: the edit stays a real one).
EDITS = [
    ("UNEMBEDDING_LR", "0.0004", "unembedding LR 0.0004"),
    ("UNEMBEDDING_LR", "0.0015", "unembedding LR 0.0015"),
    ("UNEMBEDDING_LR", "0.0045", "unembedding LR 0.0045"),
    ("UNEMBEDDING_LR", "0.006", "unembedding LR 0.006"),
    ("UNEMBEDDING_LR", "0.012", "unembedding LR 0.012"),
    ("EMBEDDING_LR", "0.03", "embedding LR 0.03"),
    ("EMBEDDING_LR", "0.6", "embedding LR 0.6"),
    ("MATRIX_LR", "0.002", "matrix LR 0.002"),
    ("MATRIX_LR", "0.04", "matrix LR 0.04"),
    ("MATRIX_LR", "0.08", "matrix LR 0.08"),
    ("WARMDOWN_FRAC", "0.2", "shorter warmdown"),
    ("WARMDOWN_FRAC", "0.8", "longer warmdown"),
    ("MUON_MOMENTUM", "0.8", "less Muon momentum"),
    ("WEIGHT_DECAY", "0.2", "weight decay 0.2"),
    ("WARMUP_FRAC", "0.3", "30% warmup (a slow start)"),
    ("MLP_RATIO", "1", "thin MLP"),
    ("MLP_RATIO", "8", "wide MLP"),
    ("EMBEDDING_LR", "0.003", "embedding LR 0.003"),
    ("UNEMBEDDING_LR", "0.0001", "unembedding LR 0.0001"),
    ("ADAM_BETAS", "(0.99, 0.999)", "slow Adam betas"),
    ("FINAL_LR_FRAC", "0.5", "warmdown to half"),
    ("MATRIX_LR", "0.01", "matrix LR 0.01"),
]


def set_constant(source: str, name: str, value: str) -> str:
    """``name = <value>`` at the top level, whatever its value was (its comment kept)."""
    new, n = re.subn(rf"^{name} = [^#\n]*?(\s*#|\s*$)", rf"{name} = {value}\1", source, count=1, flags=re.M)
    assert n == 1, name
    return new


def points(curve: list[ProgressRecord]) -> list[list[float]]:
    return [[r.frac, r.loss] for r in curve if r.loss is not None]


def collect(budget: float, out: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from sigmaloop.diff import unified_diff
    from sigmaloop.engine import Engine
    from sigmaloop.judge import reference_for
    from sigmaloop.models import Status, code_hash

    from enginekit import git

    tmp = Path(tempfile.mkdtemp(prefix="sl-prune-collect-"))
    os.environ.update(SIGMALOOP_CACHE=str(tmp / "cache"), SIGMALOOP_VOCAB_SIZE="2048", CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, str(ROOT / "trainer" / "prepare.py")], check=True, capture_output=True)
    ws = tmp / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    for name in ("train.py", "prepare.py"):
        shutil.copy(ROOT / "trainer" / name, ws / name)
    (ws / "sigmaloop.toml").write_text(f'[experiment]\nbudget = {budget}\ngrace = 60\ntag = "bench"\n'
                                       "[judge]\nprune = false\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "trainer")
    eng = Engine(ws)
    t0 = time.time()
    candidates = []
    try:
        eng.run_baseline()
        for name, value, hypothesis in EDITS:
            source = eng.head_source()
            after = set_constant(source, name, value)
            if after == source:
                continue  # the head already has it
            exps = eng.journal.list()
            ref = reference_for(exps, code_hash(source), budget=budget, evaluator=None, data=None, device=None)
            exp = eng.core.create(status=Status.QUEUED, source="user", parent_commit=eng.head(), hypothesis=hypothesis,
                                  diff=unified_diff(source, after, "train.py"), code_hash=code_hash(after))
            exp = eng.run(exp.id)
            candidates.append(dict(
                hypothesis=hypothesis, status=exp.status.value, reason=exp.reason, metric=exp.metric,
                delta=exp.delta, z=exp.z, sigma=exp.sigma, reference=ref.value, seed=exp.seed,
                curve=points(eng.curve(exp.id)), references=[points(eng.curve(i)) for i in ref.ids],
                reference_seeds=[eng.get(i).seed for i in ref.ids]))
            print(f"{hypothesis}: {exp.verdict}", file=sys.stderr)
    finally:
        eng.close()
    out.write_text(json.dumps(dict(
        budget=budget, collected=time.strftime("%Y-%m-%d %H:%M"), seconds=round(time.time() - t0),
        machine=f"{platform.machine()} {os.cpu_count()} cpus", candidates=candidates), indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Figures:
    pruned: int = 0
    losing_budget: float = 0.0
    saved: float = 0.0
    worse_budget: float = 0.0  # trials judged clearly worse
    worse_saved: float = 0.0
    keeps_lost: int = 0
    within_noise_pruned: int = 0


def naive(refs: list[list[tuple[float, float]]], curve: list[tuple[float, float]]) -> float | None:
    """Prune at the first point beyond 2 spreads of the reference mean (after 30%): one point,
    the plain mean and standard deviation."""
    import statistics

    for frac, loss in curve:
        if frac < 0.3 or frac > 0.9:
            continue
        vals = [m for m, _ in (window_mean(r, frac, 0.05) for r in refs) if m is not None]
        if len(vals) >= 2 and loss > statistics.fmean(vals) + 2 * statistics.stdev(vals):
            return frac
    return None


def records(points_: list) -> list[ProgressRecord]:
    return [ProgressRecord(0, i, 0.0, f, v) for i, (f, v) in enumerate(points_)]


def _feed(pruner: Pruner, recs: list[ProgressRecord]):
    for i in range(0, len(recs), 2):  # the engine's batches: a few records each
        if (decision := pruner.update(recs[i:i + 2])) is not None:
            return decision
    return None


def _null_runs(data: dict) -> list:
    """The baseline runs' curves (the first candidate's references: the unchanged code)."""
    return data["candidates"][0]["references"] if data["candidates"] else []


def replay(data: dict, rule: PruneRule) -> dict:
    ours, simple = Figures(), Figures()
    rows = []
    for c in data["candidates"]:
        refs = [[(f, v) for f, v in r] for r in c["references"]]
        curve = [(f, v) for f, v in c["curve"]]
        pruner = Pruner.for_references([records(r) for r in refs], rule, seeds=c.get("reference_seeds"),
                                       seed=c.get("seed"))
        decision = _feed(pruner, records(curve)) if pruner is not None else None
        kept = c["status"] == "kept"
        # "could still win": it ended within noise (not clearly worse) of its reference
        within = c["reason"] in ("within_noise", "not_confirmed") or kept
        worse = c["reason"] == "worse"
        for fig, at in ((ours, decision.frac if decision else None), (simple, naive(refs, curve))):
            if not kept:
                fig.losing_budget += 1.0
            fig.worse_budget += worse
            if at is None:
                continue
            fig.pruned += 1
            if kept:
                fig.keeps_lost += 1
            else:
                fig.saved += 1.0 - at
                fig.worse_saved += (1.0 - at) * worse
            if within:
                fig.within_noise_pruned += 1
        rows.append(dict(edit=c["hypothesis"], verdict=c["reason"] or c["status"],
                         pruned_at=None if decision is None else round(decision.frac, 2)))
    n_keep = sum(c["status"] == "kept" for c in data["candidates"])
    # same code, another seed: each baseline run against the others (it could win within noise)
    nulls = _null_runs(data)
    null_seeds = (data["candidates"][0].get("reference_seeds") if data["candidates"] else None) or [None] * len(nulls)
    null_pruned = 0
    for i, run_curve in enumerate(nulls):
        others = [records(c) for j, c in enumerate(nulls) if j != i]
        pruner = Pruner.for_references(others, rule, seeds=[s for j, s in enumerate(null_seeds) if j != i],
                                       seed=null_seeds[i])
        if pruner is not None and _feed(pruner, records(run_curve)) is not None:
            null_pruned += 1

    def summary(f: Figures) -> dict:
        return dict(pruned=f.pruned, saved_share_of_losing_budget=round(f.saved / f.losing_budget, 3)
                    if f.losing_budget else None,
                    saved_share_of_worse_budget=round(f.worse_saved / f.worse_budget, 3) if f.worse_budget else None,
                    keeps_lost=f.keeps_lost, within_noise_pruned=f.within_noise_pruned)

    return dict(bench="prune", budget_s=data["budget"], candidates=len(data["candidates"]), true_keeps=n_keep,
                losing=int(ours.losing_budget), rule=summary(ours), naive=summary(simple),
                null_runs=len(nulls), null_runs_pruned=null_pruned,
                goal_saved=0.30, ok=null_pruned == 0 and ours.keeps_lost == 0 and ours.within_noise_pruned == 0
                and ours.worse_budget > 0 and ours.worse_saved / ours.worse_budget >= 0.30, per_edit=rows,
                data=dict(collected=data.get("collected"), machine=data.get("machine")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", action="store_true", help="run the real trials first (~6 min)")
    ap.add_argument("--budget", type=float, default=8.0)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--after", type=float, default=PruneRule.after)
    args = ap.parse_args()
    if args.collect:
        args.data.parent.mkdir(parents=True, exist_ok=True)
        collect(args.budget, args.data)
    print(json.dumps(replay(json.loads(args.data.read_text()), PruneRule(after=args.after))))


if __name__ == "__main__":
    main()
