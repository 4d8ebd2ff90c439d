"""Arrange the e2e's maximize workspace through the engine, as a user's earlier session would
have: the baseline, then two edits of LR that each raise val_acc (kept, confirmation included).
The later one has the higher val_acc: a panel that reads the direction right draws it as the
best run; one that assumes "lower is better" would pick the first. Prints the ids as JSON.

    python tests/e2e/arrange_maximize.py WORKSPACE
"""
import json
import sys

from sigmaloop.diff import unified_diff
from sigmaloop.engine import Engine


def main(workspace: str) -> None:
    engine = Engine(workspace)
    try:
        baseline = engine.run_baseline()
        kept = []
        lr = "0.1"
        for new_lr in ("0.2", "0.3"):
            old = engine.head_source()
            new = old.replace(f"LR = {lr} ", f"LR = {new_lr} ", 1)
            exp = engine.propose_diff(unified_diff(old, new, engine.script_name), f"LR {lr} -> {new_lr}")
            engine.accept(exp.id)
            done = engine.run(exp.id)
            if done.status.value != "kept":
                raise SystemExit(f"#{done.id} ({exp.hypothesis}) ended {done.status.value}: {done.verdict}")
            kept.append({"id": done.id, "metric": done.metric})
            lr = new_lr
    finally:
        engine.close()
    print(json.dumps({"baseline": [e.id for e in baseline], "kept": kept, "best": kept[-1]["id"], "first": kept[0]["id"]}))


if __name__ == "__main__":
    main(sys.argv[1])
