"""A small project in karpathy/autoresearch's layout and output format, written by the tests.

Our own stdlib code, not a copy of theirs: ``prepare.py`` holds the fixed constants
(``TIME_BUDGET = 300``) and ``evaluate_bpb``; ``train.py`` does ``from prepare import
TIME_BUDGET, evaluate_bpb``, prints ``\\rstep 00012 (41.0%) | loss: ... `` progress lines with
``end=""`` while it "trains" for TIME_BUDGET seconds (warm-up steps not counted, like theirs),
writes no metrics file, and ends with the ``---`` summary block. Its knobs are top-level
constants, so an edit can make it start slowly (STARTUP) or hang (HANG).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from enginekit import git

PREPARE = textwrap.dedent('''\
    """Fixed constants and the metric (do not edit): the fixture's stand-in for data + eval."""
    import math

    MAX_SEQ_LEN = 256
    TIME_BUDGET = 300        # training seconds (wall clock, warm-up excluded)
    EVAL_TOKENS = 4096


    def evaluate_bpb(model):
        """Bits per byte of the "model" (a dict of its knobs) on the fixed validation split."""
        return 1.0 + model["bias"] + 0.5 * math.exp(-model["steps"] / 50.0)


    if __name__ == "__main__":
        print("nothing to download: the fixture's data is built in")
''')

TRAIN = textwrap.dedent('''\
    """Train for TIME_BUDGET seconds, print progress like autoresearch, then the summary."""
    import math
    import time

    from prepare import TIME_BUDGET, evaluate_bpb

    STARTUP = 0.0        # a fixed start-up cost before training (seconds), like a compile
    HANG = False         # hang after the warm-up steps (never ends on its own)
    BIAS = 0.0           # added to val_bpb
    WARMUP_STEPS = 3     # not counted as training time
    STEP_SECONDS = 0.02

    t_start = time.time()
    time.sleep(STARTUP)
    step = 0
    total_training_time = 0.0
    smooth = 0.0
    while True:
        t0 = time.time()
        time.sleep(STEP_SECONDS)
        loss = 2.0 + 2.0 * math.exp(-3.0 * total_training_time / TIME_BUDGET) + BIAS
        dt = time.time() - t0
        if step >= WARMUP_STEPS:
            total_training_time += dt
        smooth = 0.9 * smooth + 0.1 * loss
        debiased = smooth / (1 - 0.9 ** (step + 1))
        progress = min(total_training_time / TIME_BUDGET, 1.0)
        remaining = max(0, TIME_BUDGET - total_training_time)
        print(f"\\rstep {step:05d} ({100 * progress:.1f}%) | loss: {debiased:.6f} | lrm: 1.00 | "
              f"dt: {dt * 1000:.0f}ms | tok/sec: {int(65536 / dt):,} | mfu: 1.5% | epoch: 1 | "
              f"remaining: {remaining:.0f}s    ", end="", flush=True)
        step += 1
        if HANG and step == WARMUP_STEPS:
            time.sleep(3600)
        if step > WARMUP_STEPS and total_training_time >= TIME_BUDGET:
            break

    print()
    val_bpb = evaluate_bpb({"bias": BIAS, "steps": step})
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {total_training_time:.1f}")
    print(f"total_seconds:    {time.time() - t_start:.1f}")
    print(f"num_steps:        {step}")
    print(f"depth:            {8}")
''')

PROGRAM = "# autoresearch\n\nEdit train.py only; prepare.py is fixed. Lower val_bpb is better.\n"


def make_autoresearch(path: Path, commit: bool = True) -> Path:
    """The fixture project in ``path`` as its own git repository (committed, like a clone)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "prepare.py").write_text(PREPARE)
    (path / "train.py").write_text(TRAIN)
    (path / "program.md").write_text(PROGRAM)
    (path / ".gitignore").write_text("__pycache__/\n")
    git(path, "init", "-q", "-b", "master")
    if commit:
        git(path, "add", "-A")
        git(path, "commit", "-qm", "autoresearch project")
    return path
