"""
Bench: trainer/train.py against a plain nanoGPT-style reference, same data, same metric,
same wall-clock budget, one after the other on this machine. Prints ONE JSON line.

    .venv/bin/python bench/trainer.py [--budget 60] [--seed 42]

Reference: LayerNorm (with bias), GELU MLP, learned positional embeddings, AdamW with a
warmup + cosine schedule on the time fraction. Same depth / width / sequence length / batch
as train.py's preset for this device, and an untied head like train.py, so the parameter
counts match within a few percent (the difference is the positional table and the biases).
It is evaluated by prepare.evaluate_bpb, exactly as train.py is.

Goal: train.py reaches a lower val_bpb at >= 0.9x the reference's tokens/s.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "trainer"

REF_LR = 2e-3  # tried 1e-3 and 3e-3 too; 2e-3 was best for the CPU preset
REF_BETAS = (0.9, 0.95)
REF_WEIGHT_DECAY = 0.1
REF_WARMUP_FRAC = 0.05
REF_FINAL_LR_FRAC = 0.1


def read_preset():
    """DEPTH / D_MODEL / HEAD_DIM / SEQ_LEN / DEVICE_BATCH of train.py's CPU preset."""
    src = (TRAINER / "train.py").read_text()
    preset = src.split('if DEVICE == "cuda":\n    DEPTH', 1)[1]
    block = preset.split("\nelse:\n", 1)[1]  # the non-CUDA branch of the preset if/else
    out = {}
    for key in ("DEPTH", "D_MODEL", "HEAD_DIM", "SEQ_LEN", "DEVICE_BATCH"):
        out[key] = int(re.search(rf"^\s+{key} = (\d+)", block, re.M).group(1))
    return out


def build_reference(V, L, D, H, max_t):
    """nanoGPT: LayerNorm, GELU, learned positions, GPT-2 init; untied head like train.py."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.attn, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
            self.fc, self.fc_out = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.attn(self.ln1(x)).view(b, t, 3, H, c // H).unbind(2)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))

    class NanoGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(max_t, D)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(D)
            self.lm_head = nn.Linear(D, V, bias=False)
            self.apply(self._init)
            for blk in self.blocks:  # GPT-2's scaled init of the residual projections
                for lin in (blk.proj, blk.fc_out):
                    nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * L))

        @staticmethod
        def _init(m):
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

        def forward(self, idx):
            pos = torch.arange(idx.size(1), device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for blk in self.blocks:
                x = blk(x)
            return self.lm_head(self.ln_f(x))

    return NanoGPT()


def reference_worker(budget, seed):
    """Train the reference in this process; print its summary like train.py does."""
    import ctypes

    import numpy as np
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(TRAINER))
    import prepare

    t_start = time.time()
    try:  # same allocator setting as train.py (see there), so the comparison is fair
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)
        libc.mallopt(-1, 1 << 30)
    except (OSError, AttributeError):
        pass
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(seed)
    cfg = read_preset()
    L, D, H, T, B = (cfg["DEPTH"], cfg["D_MODEL"], cfg["D_MODEL"] // cfg["HEAD_DIM"],
                     cfg["SEQ_LEN"], cfg["DEVICE_BATCH"])
    data = prepare.load()
    V = data.vocab_size
    max_t = max(T, prepare.EVAL_SEQ_LEN["cpu"])

    model = build_reference(V, L, D, H, max_t)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": REF_WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=REF_LR, betas=REF_BETAS)
    rng = np.random.default_rng(seed)
    train = data.train
    step, train_time, frac = 0, 0.0, 0.0
    while frac < 1.0:
        t0 = time.time()
        if frac < REF_WARMUP_FRAC:
            lrm = (frac + 1e-3) / REF_WARMUP_FRAC
        else:
            p = (frac - REF_WARMUP_FRAC) / (1 - REF_WARMUP_FRAC)
            lrm = REF_FINAL_LR_FRAC + (1 - REF_FINAL_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * p))
        for g in opt.param_groups:
            g["lr"] = REF_LR * lrm
        starts = rng.integers(0, len(train) - T - 1, size=B)
        xy = torch.from_numpy(np.stack([np.asarray(train[s : s + T + 1], dtype=np.int64)
                                        for s in starts]))
        logits = model(xy[:, :-1])
        loss = F.cross_entropy(logits.view(-1, V), xy[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        train_time += time.time() - t0
        step += 1
        frac = train_time / budget
    val_bpb = prepare.evaluate_bpb(model, data)
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {train_time:.1f}")
    print(f"total_seconds:    {time.time() - t_start:.1f}")
    print(f"total_tokens:     {step * B * T}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {sum(p.numel() for p in model.parameters()) / 1e6:.3f}")


def parse_summary(text):
    out = {}
    for line in text.split("\n---\n")[-1].splitlines():
        m = re.match(r"(\w+):\s+(\S+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0 or "val_bpb" not in p.stdout:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed (rc {p.returncode}):\n"
                 f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per model")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_worker:
        return reference_worker(args.budget, args.seed)

    env = dict(os.environ, SIGMALOOP_TIME_BUDGET=str(args.budget),
               SIGMALOOP_SEED=str(args.seed), CUDA_VISIBLE_DEVICES="")
    env.pop("SIGMALOOP_MAX_STEPS", None)
    subprocess.run([sys.executable, str(TRAINER / "prepare.py")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        out = run([sys.executable, str(TRAINER / "train.py")],
                  dict(env, SIGMALOOP_METRICS=str(metrics)))
        ours = parse_summary(out)
        batch = int(re.search(r"batch (\d+) tok", out).group(1))
        ours["num_params_M"] = float(re.search(r"params ([\d.]+)M", out).group(1))
    ref = parse_summary(run([sys.executable, __file__, "--reference-worker",
                             "--budget", str(args.budget), "--seed", str(args.seed)], env))
    ours_tps = ours["num_steps"] * batch / ours["training_seconds"]
    ref_tps = ref["total_tokens"] / ref["training_seconds"]
    result = {
        "bench": "trainer", "device": "cpu", "threads": len(os.sched_getaffinity(0)),
        "budget_s": args.budget, "seed": args.seed,
        "train_py": {"val_bpb": ours["val_bpb"], "tok_per_s": round(ours_tps),
                     "steps": int(ours["num_steps"]), "params_M": ours["num_params_M"]},
        "reference": {"val_bpb": ref["val_bpb"], "tok_per_s": round(ref_tps),
                      "steps": int(ref["num_steps"]), "params_M": ref["num_params_M"]},
        "val_bpb_ratio": round(ours["val_bpb"] / ref["val_bpb"], 4),
        "tok_per_s_ratio": round(ours_tps / ref_tps, 3),
    }
    result["goal_met"] = (result["val_bpb_ratio"] < 1.0 and result["tok_per_s_ratio"] >= 0.9)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
