"""The fixed evaluator process: score a model a trial handed over, with the base commit's prepare.py.

Run by sigmaloop (``evaluator.py``), never imported by it: this file imports torch, and runs as
a standalone script with the trial's interpreter, inside its own sandbox that can read the
validation split (the trial's cannot) and nothing of the workspace but this folder's copy of
``prepare.py`` and the model file::

    python score_model.py --model model.pt2 [--wait]

With ``--wait`` it starts while the trial trains (interpreter, torch, the data), then reads one
line from stdin: ``go`` (the trial has ended and handed its model over) scores the model as it
is then; anything else (the trial failed) exits 3 without scoring.

It prints one JSON line, prefixed by :data:`RESULT_PREFIX`, and exits 0 — or prints why it
could not score the model and exits 1:

* ``metric``: ``prepare.evaluate_bpb`` of the model on the fixed validation windows;
* ``causal_leak``: the largest change of a position's logits when only *later* tokens change
  (a model that sees the future scores far better than it is; an honest one leaks exactly 0);
* ``data`` (the cache entry scored on), ``device``, ``seconds``, ``params``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

RESULT_PREFIX = "SIGMALOOP_EVALUATION "
CAUSAL_SPLITS = 15  # perturbed copies of one window, each from another position onward


def _causal_leak(model, window, vocab_size: int):
    """Max |Δ logits| at positions before a split when the tokens from the split on are
    replaced. One batch: row 0 the window as is, row i perturbed from split s_i on."""
    import torch

    T = window.size(-1)
    gen = torch.Generator().manual_seed(1234)
    splits = sorted({1, T - 1, *torch.randint(1, T, (CAUSAL_SPLITS - 2,), generator=gen).tolist()})
    rows = [window]
    for s in splits:
        row = window.clone()
        noise = torch.randint(0, vocab_size, (T - s,), generator=gen).to(window.device)
        row[s:] = (row[s:] + 1 + noise % (vocab_size - 1)) % vocab_size  # every later token differs
        rows.append(row)
    with torch.no_grad():
        logits = model(torch.stack(rows)).float()
    leak = 0.0
    for i, s in enumerate(splits, start=1):
        leak = max(leak, (logits[i, :s] - logits[0, :s]).abs().max().item())
    scale = max(1.0, logits[0].abs().max().item())
    return leak, scale


def _warm_loader() -> None:
    """Pay ``torch.export.load``'s first-call costs before 'go' (its deserializer's lazy imports,
    sympy and type-hint caches: a cold load of the CPU preset's model took 1.4 s, a warm one
    0.35 s) by exporting, saving and loading a tiny model with a free batch dimension. Best
    effort: the real load does it anyway."""
    import tempfile

    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(16, 8)
            self.head = torch.nn.Linear(8, 16)

        def forward(self, idx):
            x = self.emb(idx)
            att = torch.softmax(x @ x.transpose(-1, -2), dim=-1)
            return self.head(torch.nn.functional.rms_norm(att @ x, (8,)))

    try:
        idx = torch.zeros((2, 8), dtype=torch.long)
        batch = torch.export.Dim("batch", min=1, max=4096)
        with torch.no_grad():
            program = torch.export.export(Tiny().eval(), (idx,), dynamic_shapes=({0: batch},))
        with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
            path = os.path.join(tmp, "warm.pt2")
            torch.export.save(program, path)
            with torch.no_grad():
                torch.export.load(path).module()(idx)
    except Exception:  # a warm-up that fails costs nothing but its time
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the torch.export program the trial wrote")
    ap.add_argument("--prepare-dir", default=os.path.dirname(os.path.abspath(__file__)),
                    help="folder of the fixed prepare.py (default: next to this file)")
    ap.add_argument("--wait", action="store_true",
                    help="warm up (imports, data), then score only after a line 'go' on stdin")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.wait:
        # the warm-up runs beside a training trial on its cores: only in the CPU time it leaves
        # idle (its start-up is one thread). Once it ends nothing else runs on those cores, so
        # the scoring after 'go' is as fast at this priority.
        with contextlib.suppress(OSError):
            os.nice(19)
    sys.path.insert(0, os.path.abspath(args.prepare_dir))
    import prepare  # the base commit's: the metric the edit can't change
    import torch

    try:
        data = prepare.load()
    except Exception as exc:  # no data cache for this configuration
        print(f"evaluator: could not load the data: {type(exc).__name__}: {exc}", flush=True)
        return 1
    if args.wait and os.environ.get("SIGMALOOP_WARM_LOADER", "1") != "0":
        _warm_loader()
    if args.wait and sys.stdin.readline().strip() != "go":  # the trial failed: nothing to score
        return 3
    t_go = time.time()
    try:
        program = torch.export.load(args.model)
    except Exception as exc:  # not a model, or not one this torch can read
        print(f"evaluator: could not load the handed-over model: {type(exc).__name__}: {exc}", flush=True)
        return 1
    graph = program.module()

    class Model(torch.nn.Module):
        """The exported graph as prepare.evaluate_bpb expects a model (train()/eval() are no-ops:
        an exported program has no modes)."""

        def __init__(self) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, idx):
            return self.graph(idx)

        def train(self, mode: bool = True):
            return self

    model = Model()
    try:
        metric = float(prepare.evaluate_bpb(model, data))
        device = next(model.parameters()).device
        T, _ = prepare.eval_windows(data, device.type)
        window = torch.from_numpy(data.val[:T].astype("int64")).to(device)
        leak, scale = _causal_leak(model, window, data.vocab_size)
    except Exception as exc:  # the model does not take token ids to logits, or data is missing
        print(f"evaluator: could not score the model: {type(exc).__name__}: {exc}", flush=True)
        return 1
    name = "cpu" if device.type == "cpu" else f"{device.type}:{torch.cuda.get_device_name(device)}" \
        if device.type == "cuda" else device.type
    result = {
        "metric": metric if math.isfinite(metric) else None,
        "causal_leak": leak,
        "logit_scale": scale,
        "data": data.path.name,
        "device": name,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.time() - t_go, 3),  # after 'go': what the trial waits for
        "warm_seconds": round(t_go - t0, 3),  # start-up and data, overlapped with training under --wait
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
