"""
sigmaloop trial: pretrain a small GPT for a fixed wall-clock budget, report val_bpb.

This is the one file the agent edits. Data, tokenizer and the metric live in prepare.py
(fixed). Contract with the runner (environment):
    SIGMALOOP_TIME_BUDGET  training seconds (default: 60 on CPU/MPS, 300 on CUDA)
    SIGMALOOP_SEED         seed for torch / numpy / python and the batch sampler (default 42)
    SIGMALOOP_METRICS      JSON-lines file to append progress records to (optional)
    SIGMALOOP_MAX_STEPS    optional: run exactly this many steps (schedule on step fraction)
    SIGMALOOP_MODEL        where to hand the trained model over to the fixed evaluator (prepare.py)
Ends with the '---' summary block; any failure prints a line starting with FAIL, exit 1.
"""

import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare  # fixed data + metric, next to this file

T_START = time.time()


def _crash_hook(exc_type, exc, tb):
    # Any uncaught error (a bug in an edit, OOM, ...) still ends with one FAIL line for the runner.
    sys.__excepthook__(exc_type, exc, tb)
    print(f"FAIL crashed: {exc_type.__name__}: {exc}", flush=True)


sys.excepthook = _crash_hook

if torch.cuda.is_available():
    DEVICE = "cuda"
elif torch.backends.mps.is_available():
    DEVICE = "mps"
else:
    DEVICE = "cpu"

# ---------------------------------------------------------------------------
# Knobs. Presets by device: the CUDA one is karpathy/autoresearch's scale, the CPU one is
# sized so a 2-core laptop-class CPU shows a clearly falling loss within 30-60 s.
# ---------------------------------------------------------------------------

if DEVICE == "cuda":
    DEPTH = 8  # transformer blocks
    D_MODEL = 512  # residual width
    HEAD_DIM = 128  # attention head size (n_head = D_MODEL // HEAD_DIM)
    SEQ_LEN = 2048  # training context
    DEVICE_BATCH = 64  # sequences per forward/backward
    TOTAL_BATCH_TOKENS = 2**19  # tokens per optimizer step (gradient accumulation fills it)
    DEFAULT_BUDGET_S = 300
    LOGIT_SOFTCAP = 15.0  # tanh cap on the logits, keeps training stable at scale (0 = off)
else:
    DEPTH = 4
    D_MODEL = 128
    HEAD_DIM = 32
    SEQ_LEN = 256
    DEVICE_BATCH = 8
    TOTAL_BATCH_TOKENS = 8 * 256  # small steps: many updates beat big batches at this budget
    DEFAULT_BUDGET_S = 60
    # Off on CPU: its passes over the B*T*V logits cost ~8% of a step, and at this size it
    # measured no better (80 fixed steps: 2.1444 off vs 2.1495 on).
    LOGIT_SOFTCAP = 0.0

MLP_RATIO = 4  # hidden width of the MLP, in units of D_MODEL
ROPE_BASE = 10000.0

# Optimizers: Muon for the 2-D hidden matrices, AdamW for embeddings / head.
MATRIX_LR = 0.02  # Muon
EMBEDDING_LR = 0.3  # AdamW, token embedding
UNEMBEDDING_LR = 0.004  # AdamW, lm head
MUON_MOMENTUM = 0.95
ADAM_BETAS = (0.8, 0.95)
WEIGHT_DECAY = 0.0  # decoupled, on Muon matrices only
WARMUP_FRAC = 0.0  # fraction of the budget spent ramping the LR up (Muon needs little)
WARMDOWN_FRAC = 0.5  # final fraction of the budget spent decaying the LR linearly ...
FINAL_LR_FRAC = 0.0  # ... to this fraction of the peak

COMPILE = DEVICE == "cuda"  # torch.compile pays off on GPU; on CPU its start-up cost doesn't
AUTOCAST_BF16 = DEVICE == "cuda"
UNTIMED_STEPS = 10 if COMPILE else 0  # compile / warm-up steps not charged to the budget
LOG_EVERY_S = 0.25  # metrics record cadence (training seconds)
PRINT_EVERY_S = 5.0  # human progress line cadence
DIVERGE_FACTOR = 1.5  # loss above this x its first value (after warm-up) = diverged

# ---------------------------------------------------------------------------
# Trial contract
# ---------------------------------------------------------------------------


def fail(reason):
    print(f"FAIL {reason}", flush=True)
    sys.exit(1)


def env_number(name, default, cast):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        fail(f"{name} must be a {cast.__name__}, got {raw!r}")
    if not math.isfinite(value) or value <= 0:
        fail(f"{name} must be a positive finite number, got {raw!r}")
    return value


TIME_BUDGET = env_number("SIGMALOOP_TIME_BUDGET", float(DEFAULT_BUDGET_S), float)
MAX_STEPS = env_number("SIGMALOOP_MAX_STEPS", None, int)
SEED = int(os.environ.get("SIGMALOOP_SEED", "").strip() or 42)
METRICS_PATH = os.environ.get("SIGMALOOP_METRICS", "").strip() or None

# Catch a broken knob before spending the budget (a NaN LR would otherwise only show as NaN loss).
for _name in ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "MUON_MOMENTUM", "WEIGHT_DECAY",
              "WARMUP_FRAC", "WARMDOWN_FRAC", "FINAL_LR_FRAC", "LOGIT_SOFTCAP", "ROPE_BASE"):
    _v = globals()[_name]
    if not (isinstance(_v, (int, float)) and math.isfinite(_v) and _v >= 0):
        fail(f"bad constant {_name} = {_v!r} (must be a finite number >= 0)")
for _name in ("DEPTH", "D_MODEL", "HEAD_DIM", "SEQ_LEN", "DEVICE_BATCH", "TOTAL_BATCH_TOKENS"):
    if not (isinstance(globals()[_name], int) and globals()[_name] > 0):
        fail(f"bad constant {_name} = {globals()[_name]!r} (must be a positive int)")
if D_MODEL % HEAD_DIM or TOTAL_BATCH_TOKENS % (DEVICE_BATCH * SEQ_LEN):
    fail("D_MODEL must be a multiple of HEAD_DIM and TOTAL_BATCH_TOKENS of DEVICE_BATCH*SEQ_LEN")
GRAD_ACCUM = TOTAL_BATCH_TOKENS // (DEVICE_BATCH * SEQ_LEN)

random.seed(SEED)
np.random.seed(SEED)
torch.manual_seed(SEED)
if DEVICE == "cpu":
    # glibc hands every large temporary (logits are B*T*V floats) back to the OS and page-faults
    # it in again next step; keeping freed blocks in the heap makes elementwise ops ~3x faster.
    try:
        import ctypes

        _libc = ctypes.CDLL("libc.so.6")
        _libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        _libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: only slower
    # One intra-op thread per available core; more only adds contention.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count() or 1))
if DEVICE == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

try:
    DATA = prepare.load()
except prepare.PrepareError as e:
    fail(f"data: {e}")
VOCAB_SIZE = DATA.vocab_size

# ---------------------------------------------------------------------------
# Model: pre-norm GPT with RMSNorm, RoPE, QK-norm, ReLU^2 MLP, untied embeddings, softcap
# ---------------------------------------------------------------------------


def rms_norm(x):
    return F.rms_norm(x, (x.size(-1),))  # parameter-free: one less thing to tune


def rotary_tables(seq_len, head_dim, base, device):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return freqs.cos().to(device), freqs.sin().to(device)


def apply_rotary(x, cos, sin):  # x: (B, H, T, D)
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos[: x.size(-2)], sin[: x.size(-2)]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Block(nn.Module):
    def __init__(self, d, head_dim, mlp_ratio):
        super().__init__()
        self.n_head, self.head_dim = d // head_dim, head_dim
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.fc = nn.Linear(d, mlp_ratio * d, bias=False)
        self.fc_out = nn.Linear(mlp_ratio * d, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(rms_norm(x)).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = rms_norm(apply_rotary(q, cos, sin)), rms_norm(apply_rotary(k, cos, sin))  # QK-norm
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_out(F.relu(self.fc(rms_norm(x))).square())


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB_SIZE, D_MODEL)
        self.blocks = nn.ModuleList(Block(D_MODEL, HEAD_DIM, MLP_RATIO) for _ in range(DEPTH))
        self.lm_head = nn.Linear(D_MODEL, VOCAB_SIZE, bias=False)
        # RoPE tables long enough for training and for prepare's fixed eval length.
        rope_len = max(SEQ_LEN, prepare.EVAL_SEQ_LEN[DEVICE])
        cos, sin = rotary_tables(rope_len, HEAD_DIM, ROPE_BASE, "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)  # near-uniform first predictions
        bound = 3**0.5 * D_MODEL**-0.5
        for blk in self.blocks:
            for lin in (blk.qkv, blk.fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            # Zero output projections: each block starts as the identity.
            nn.init.zeros_(blk.proj.weight)
            nn.init.zeros_(blk.fc_out.weight)

    def forward(self, idx):
        x = rms_norm(self.wte(idx))
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        x = rms_norm(x)
        if not LOGIT_SOFTCAP:
            return self.lm_head(x).float()
        # Softcap cap * tanh(z / cap), computed as 2cap * sigmoid(2z / cap) - cap: the same
        # function, but sigmoid is far cheaper than tanh on CPU, the 2/cap scale is folded into
        # the (V times smaller) input of the head, and the constant -cap is dropped because
        # softmax / cross-entropy are shift-invariant. These B*T*V passes are ~1/3 of a CPU step.
        logits = self.lm_head(x * (2 / LOGIT_SOFTCAP)).float()
        return torch.sigmoid(logits) * (2 * LOGIT_SOFTCAP)


# ---------------------------------------------------------------------------
# Muon: momentum, then orthogonalise the update with a Newton-Schulz iteration
# ---------------------------------------------------------------------------


def newton_schulz(G, steps=5):
    """Approximate U V^T of each G = U S V^T in a (k, m, n) stack (Keller Jordan's quintic)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()  # bf16 is fast on GPU, slow on CPU
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if transposed else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """SGD-momentum (Nesterov) whose update is orthogonalised per matrix. Matrices of the same
    shape are orthogonalised together as one batched matmul: fewer, larger kernels."""

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            by_shape = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(p.shape, []).append(p)
            for shape, params in by_shape.items():
                grads = []
                for p in params:
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    grads.append(p.grad.lerp(buf, group["momentum"]))  # Nesterov
                updates = newton_schulz(torch.stack(grads))
                # Scale so tall and wide matrices get comparable per-element step sizes.
                scale = max(1.0, shape[0] / shape[1]) ** 0.5
                for p, update in zip(params, updates.unbind(0)):
                    if group["weight_decay"]:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update, alpha=-group["lr"] * scale)


# ---------------------------------------------------------------------------
# Data: random windows from the memory-mapped training tokens, seeded
# ---------------------------------------------------------------------------

TRAIN = DATA.train
SAMPLER = np.random.default_rng(SEED)


def get_batch():
    starts = SAMPLER.integers(0, len(TRAIN) - SEQ_LEN - 1, size=DEVICE_BATCH)
    rows = np.stack([np.asarray(TRAIN[s : s + SEQ_LEN + 1], dtype=np.int64) for s in starts])
    xy = torch.from_numpy(rows)
    if DEVICE == "cuda":
        xy = xy.pin_memory().to(DEVICE, non_blocking=True)
    else:
        xy = xy.to(DEVICE)
    return xy[:, :-1], xy[:, 1:]


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

model = GPT().to(DEVICE)
num_params = sum(p.numel() for p in model.parameters())
matrix_params = [p for p in model.blocks.parameters() if p.ndim == 2]
optimizers = [
    Muon(matrix_params, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY),
    torch.optim.AdamW(
        [dict(params=[model.wte.weight], lr=EMBEDDING_LR),
         dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR)],
        betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0, fused=DEVICE == "cuda",
    ),
]
for opt in optimizers:
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]

train_model = torch.compile(model) if COMPILE else model

# Model FLOPs per token (forward + backward): 6 per matmul weight plus attention scores.
FLOPS_PER_TOKEN = 6 * sum(p.numel() for p in model.blocks.parameters()) \
    + 6 * model.lm_head.weight.numel() + 12 * DEPTH * D_MODEL * SEQ_LEN // 2  # causal: half
# Dense bf16 peak FLOP/s by device name (first match wins); 0 = unknown (mfu reported as 0).
PEAK_FLOPS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
              ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
              ("A10G", 70e12), ("A10", 125e12), ("4090", 165e12), ("3090", 71e12)]
peak_flops = 0.0
if DEVICE == "cuda":
    name = torch.cuda.get_device_name()
    peak_flops = next((f for key, f in PEAK_FLOPS if key in name), 0.0)


def lr_multiplier(frac):
    if frac < WARMUP_FRAC:
        return (frac + 1e-8) / WARMUP_FRAC
    if frac > 1.0 - WARMDOWN_FRAC:
        progress = (1.0 - frac) / WARMDOWN_FRAC
        return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * max(progress, 0.0)
    return 1.0


metrics_file = open(METRICS_PATH, "a") if METRICS_PATH else None  # noqa: SIM115


def log_record(**rec):
    if metrics_file:
        metrics_file.write(json.dumps(rec) + "\n")
        metrics_file.flush()


print(f"device {DEVICE}  params {num_params / 1e6:.2f}M  depth {DEPTH}  d_model {D_MODEL}  "
      f"seq {SEQ_LEN}  batch {TOTAL_BATCH_TOKENS} tok  budget "
      f"{f'{MAX_STEPS} steps' if MAX_STEPS else f'{TIME_BUDGET:g}s'}  data {DATA.path}", flush=True)

# ---------------------------------------------------------------------------
# Training loop: the schedule runs on elapsed training time / budget (or step / MAX_STEPS)
# ---------------------------------------------------------------------------

step = 0
train_time = 0.0
frac = 0.0
first_loss = None
last_log = -math.inf
last_print = 0.0
tok_per_s = 0.0
while True:
    t0 = time.time()
    lrm = lr_multiplier(frac)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
    for _ in range(GRAD_ACCUM):
        x, y = get_batch()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=AUTOCAST_BF16):
            logits = train_model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        (loss / GRAD_ACCUM).backward()
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    loss_value = loss.item()  # also synchronises the device, so the timing below is honest
    dt = time.time() - t0
    if step >= UNTIMED_STEPS:
        train_time += dt
    step += 1

    if not math.isfinite(loss_value):
        fail(f"loss is {loss_value} at step {step} (check learning rates / init)")
    if first_loss is None:
        first_loss = loss_value
    elif step > 10 and loss_value > DIVERGE_FACTOR * first_loss:
        fail(f"diverged: loss {loss_value:.3f} at step {step} > {DIVERGE_FACTOR} x "
             f"start {first_loss:.3f}")

    frac = step / MAX_STEPS if MAX_STEPS else train_time / TIME_BUDGET
    done = frac >= 1.0
    tok_per_s = TOTAL_BATCH_TOKENS / dt
    mfu = 100 * FLOPS_PER_TOKEN * tok_per_s / peak_flops if peak_flops else 0.0
    if done or train_time - last_log >= LOG_EVERY_S:
        last_log = train_time
        log_record(step=step, t=round(train_time, 3), frac=round(min(frac, 1.0), 4),
                   loss=round(loss_value, 5), lr=MATRIX_LR * lrm, tok_per_s=round(tok_per_s, 1),
                   mfu=round(mfu, 2))
    if done or train_time - last_print >= PRINT_EVERY_S:
        last_print = train_time
        print(f"step {step:5d}  {100 * min(frac, 1):5.1f}%  loss {loss_value:.4f}  "
              f"lrm {lrm:.2f}  {tok_per_s:,.0f} tok/s  mfu {mfu:.1f}%", flush=True)
    if done:
        break

# ---------------------------------------------------------------------------
# Evaluation and summary. Under sigmaloop the model is handed over to the fixed evaluator (a
# separate process with the base commit's prepare.py: this script can't read the validation
# split, and what it prints can't change the score); run by hand it is evaluated right here.
# ---------------------------------------------------------------------------

if metrics_file:
    metrics_file.close()
val_bpb = prepare.hand_over(model, DATA)
if val_bpb is not None and not math.isfinite(val_bpb):
    fail(f"val_bpb is {val_bpb}")

steps_timed = max(step - UNTIMED_STEPS, 1)
mfu_avg = 100 * FLOPS_PER_TOKEN * steps_timed * TOTAL_BATCH_TOKENS / max(train_time, 1e-9) \
    / peak_flops if peak_flops else 0.0
peak_vram = torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else 0.0
print("---")
if val_bpb is not None:  # under sigmaloop the evaluator's number is the result, not a printed one
    print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {train_time:.1f}")
print(f"total_seconds:    {time.time() - T_START:.1f}")
print(f"peak_vram_mb:     {peak_vram:.1f}")
print(f"mfu_percent:      {mfu_avg:.2f}")
print(f"total_tokens_M:   {step * TOTAL_BATCH_TOKENS / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")

# The summary above is the trial's result. Skip the interpreter's teardown of torch state
# (~0.5 s on CPU, a few % of a short trial); the metrics file is closed, stdout flushed here.
sys.stdout.flush()
os._exit(0)
