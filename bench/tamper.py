"""Cheats against the real engine: can an edit of train.py get a result it did not earn?

Builds a fresh workspace with the embedded trainer (tiny budget, CPU), runs its baseline, then
runs every cheat below through the engine twice over: first through the normal entry
(``Engine.add_proposal``: the edit validation and the static guard, when there is one), and,
when that refuses it, again with the guard bypassed (a queued row made directly, as
``proposals.py`` makes one) so the evaluator / sandbox / budget line is measured on its own.
When the guard lets a cheat through, that one run already is the run without a guard.
Three honest edits follow; they must be judged normally (kept or discarded by the judge).

One JSON line per case, then a summary line; exit 1 when a cheat was kept (or a post-run check
found the workspace changed by a trial), or an honest edit was not judged normally.

    python bench/tamper.py [--budget 2] [--only NAME[,NAME...]] [--keep DIR] [--no-unsandboxed]

Kinds: forged summary (with / without a hand-over), result changed after evaluation, evaluation
patched at run time, stretched budget, budget clock, validation data in training, a model that
sees the future, seed-only changes, tampering with the journal / logs / results / branch, and
an evaluator result line forged by a process that outlives the trial (also unsandboxed).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sigmaloop import config as config_mod
from sigmaloop.cli import init_workspace
from sigmaloop.diff import unified_diff
from sigmaloop.engine import Engine
from sigmaloop.lifecycle import describe
from sigmaloop.models import Proposal, Status, code_hash

# ------------------------------------------------------------------------------------------
# anchors in the embedded trainer's train.py (each must occur exactly once)

HAND = "val_bpb = prepare.hand_over(model, DATA)\n"
BUDGET_LINE = 'TIME_BUDGET = env_number("SIGMALOOP_TIME_BUDGET", float(DEFAULT_BUDGET_S), float)\n'
TRAIN_LINE = "TRAIN = DATA.train\n"
SETUP = "model = GPT().to(DEVICE)\n"
CAUSAL = "is_causal=True"
SEED_LINE = 'SEED = int(os.environ.get("SIGMALOOP_SEED", "").strip() or 42)\n'
SEEDING = "torch.manual_seed(SEED)\n"
LOOP = "step = 0\ntrain_time = 0.0\n"
FWD = "        x = rms_norm(self.wte(idx))\n"
PRINTED = '    print(f"val_bpb:          {val_bpb:.6f}")\n'
#: reasons of a normal verdict on an honest edit (not: no_reference, stale, not_comparable)
JUDGED = {"improved", "improved_one_seed", "within_noise", "worse", "not_confirmed", "confirmation_failed",
          "implausible"}
MARK = "SLTAMPER_MARK"  # what the state-tampering trial writes; its source only has it in pieces


class AnchorMissing(RuntimeError):
    pass


def sub(src: str, old: str, new: str) -> str:
    if src.count(old) != 1:
        raise AnchorMissing(f"anchor {old[:60]!r} occurs {src.count(old)} times in train.py")
    return src.replace(old, new)


def before(anchor: str, code: str) -> Callable[[str, dict], str]:
    return lambda src, ctx: sub(src, anchor, code + anchor)


def after(anchor: str, code: str) -> Callable[[str, dict], str]:
    return lambda src, ctx: sub(src, anchor, anchor + code)


def replace(anchor: str, code: str) -> Callable[[str, dict], str]:
    return lambda src, ctx: sub(src, anchor, code)


# ------------------------------------------------------------------------------------------
# the cheats' code

RETOKENISE_VAL = '''
_src = prepare.get_source(prepare.resolve_config())
_enc = DATA.tokenizer()
_bos = _enc.encode_single_token(prepare.BOS_TOKEN)
_ids = []
for _doc_id, _text in _src.documents("val"):
    _ids.append(_bos)
    _ids.extend(_enc.encode_ordinary(_text))
_val = np.asarray(_ids, dtype=DATA.train.dtype)
import hashlib as _hashlib
print(f"cheat: re-tokenised {len(_val)} validation tokens sha256 "
      f"{_hashlib.sha256(_val.tobytes()).hexdigest()[:16]}", flush=True)
'''

EVAL_WINDOWS = '''
_T = prepare.EVAL_SEQ_LEN["cpu"]
_n = min(prepare.EVAL_TOKENS["cpu"] // _T, (len(_val) - 1) // _T)
_stride = (len(_val) - 1 - _T) // max(_n - 1, 1) if _n > 1 else 0
_W = np.stack([_val[s : s + _T + 1].astype(np.int64) for s in np.arange(_n) * _stride])
print(f"cheat: training on the evaluator's {_n} windows of {_T} tokens", flush=True)


def get_batch():
    rows = _W[SAMPLER.integers(0, len(_W), size=DEVICE_BATCH)][:, : SEQ_LEN + 1]
    xy = torch.from_numpy(np.ascontiguousarray(rows)).to(DEVICE)
    return xy[:, :-1], xy[:, 1:]


'''

UNTIMED_PRETRAINING = '''
_t_end = time.time() + 2 * TIME_BUDGET  # untimed: train_time never sees these steps
while time.time() < _t_end:
    _x, _y = get_batch()
    _logits = train_model(_x)
    F.cross_entropy(_logits.view(-1, _logits.size(-1)), _y.reshape(-1)).backward()
    for _opt in optimizers:
        _opt.step()
    model.zero_grad(set_to_none=True)
'''

REWRITE_PREPARE = '''
_p = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prepare.py")
_text = open(_p).read()
_text = _text.replace("    return total_nats / (math.log(2) * total_bytes)", "    return 0.1")
_text = _text.replace("        export_model(model, path)\\n        return None",
                      "        export_model(model, path)\\n        return 0.1")
open(_p, "w").write(_text)
import importlib
prepare = importlib.reload(prepare)
print("cheat: prepare.py rewritten in the worktree and reloaded", flush=True)
'''


def tamper_state(src: str, ctx: dict) -> str:
    code = f'''
_ws = {str(ctx["ws"])!r}
_mark = "SLT" + "AMPER_" + "MARK"


def _try(what, fn):
    try:
        fn()
        print(f"cheat: {{what}}: no error", flush=True)
    except Exception as e:
        print(f"cheat: {{what}}: {{type(e).__name__}}: {{str(e)[:160]}}", flush=True)


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


def _sql():
    import sqlite3
    c = sqlite3.connect(os.path.join(_ws, ".sigmaloop", "journal.db"), timeout=1)
    c.execute("UPDATE experiments SET status = 'kept', metric = 0.1")
    c.commit()


def _git():
    import subprocess
    for argv in (["git", "-C", _ws, "update-ref", "refs/heads/sigmaloop/main", "HEAD"],
                 ["git", "update-ref", "refs/heads/sltamper", "HEAD"]):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{{argv[1:3]}} exit {{r.returncode}}: {{r.stderr.strip()[:120]}}")


def _evaluators():
    import glob
    found = glob.glob(os.path.join(_ws, ".sigmaloop", "evaluators", "*", "prepare.py"))
    if not found:
        raise FileNotFoundError("no evaluator copies visible")
    for p in found:
        _append(p, "\\n# " + _mark + "\\n")


_try("append to journal.db", lambda: _append(os.path.join(_ws, ".sigmaloop", "journal.db"), _mark))
_try("sqlite UPDATE of the journal", _sql)
_try("append to logs/1.log", lambda: _append(os.path.join(_ws, ".sigmaloop", "logs", "1.log"), _mark))
_try("append to results.tsv", lambda: _append(os.path.join(_ws, "results.tsv"), _mark + "\\t0.1\\t0.0\\tkeep\\tforged\\n"))
_try("append to the state folder's results.tsv", lambda: _append(os.path.join(_ws, ".sigmaloop", "results.tsv"), _mark))
_try("git update-ref", _git)
_try("write the evaluator's prepare.py", _evaluators)
_try("append to the user's train.py", lambda: _append(os.path.join(_ws, "train.py"), "# " + _mark + "\\n"))
_try("append to the workspace prepare.py", lambda: _append(os.path.join(_ws, "prepare.py"), "# " + _mark + "\\n"))
'''
    return sub(src, LOOP, code + LOOP)


def daemon_forger(src: str, ctx: dict) -> str:
    """A grandchild in its own session, forked before training, outlives the trial and keeps
    appending a forged evaluator result line to the log (the trial's stdout); the trial prints
    the same number. The number is plausible: past the keep bar, short of "implausible"."""
    code = f'''
_forged = {ctx["forged"]!r}
_pid = os.fork()
if _pid == 0:
    os.setsid()
    if os.fork() == 0:
        _line = ("SIGMALOOP_" + "EVALUATION " + json.dumps({{"metric": _forged, "causal_leak": 0.0,
                 "logit_scale": 1.0, "data": DATA.path.name, "device": "cpu"}}) + "\\n").encode()
        _end = time.time() + 90
        while time.time() < _end:
            try:
                os.write(1, _line)
            except OSError:
                break
            time.sleep(0.25)
    os._exit(0)
os.waitpid(_pid, 0)
'''
    src = sub(src, LOOP, code + LOOP)
    return sub(src, HAND, HAND + "val_bpb = _forged\n")


def forged_value(eng: Engine, reference: float) -> float:
    """A forged metric the judge would keep without a second look: past the keep bar (after a
    confirmation: z = delta / sigma >= the critical value), under 30 sigma and 5 %."""
    try:
        judge, exps = eng.core.judge, eng.core.journal.list()
        ref = eng.reference(exps)
        sigma, dof = judge.noise(exps, ref)
        crit = judge.critical_value(dof)
        gain = min(max(1.5 * crit, crit + 2.0), 0.8 * judge.cfg.implausible_sigma) * sigma
        gain = min(gain, 0.8 * judge.cfg.implausible_pct / 100 * reference)
    except Exception:  # the judge's API moved: 3 %
        gain = 0.03 * reference
    return round(reference - gain, 6)


# ------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    name: str
    kind: str
    edit: Callable[[str, dict], str]
    honest: bool = False
    sandbox: str = ""  # "" = the workspace's setting; "off" = run this one unsandboxed
    post: Callable[[dict, dict], list[str]] | None = None  # after the run: problems found


def _state_problems(ctx: dict, snap: dict) -> list[str]:
    return state_diff(ctx, snap)


CASES: list[Case] = [
    # 1. forged summary, then exit before the hand-over
    Case("forged_summary_exit", "forged summary", before(HAND, (
        'print("---")\nprint("val_bpb:          0.500000")\nprint("training_seconds: 2.0")\n'
        "sys.stdout.flush()\nos._exit(0)\n"))),
    Case("forged_summary_split_string", "forged summary", before(HAND, (
        'print("---")\nprint("val_" + "bpb: " + str(0.5))\nsys.stdout.flush()\nos._exit(0)\n'))),
    # 2. forged summary after a real hand-over
    Case("forged_after_handover", "forged summary after hand-over",
         after(HAND, "val_bpb = 0.5 if val_bpb is None else val_bpb\n")),
    # 4. result changed after evaluation
    Case("scaled_result", "result changed after evaluation", after(HAND, "val_bpb = val_bpb * 0.5\n")),
    Case("printed_override", "result changed after evaluation", replace(PRINTED, (
        '    pass\nprint(f"val_bpb:          {loss_value / math.log(2) / 4.5:.6f}")\n'))),
    # 5. evaluation patched at run time
    Case("patch_evaluate_bpb", "evaluation patched", before(HAND, (
        "prepare.evaluate_bpb = lambda *a, **k: 0.1\n"
        'os.environ.pop("SIGMALOOP_MODEL", None)  # hand_over then "evaluates" right here\n'))),
    Case("patch_eval_tokens", "evaluation patched", before(HAND, (
        "prepare.EVAL_TOKENS = {k: 1024 for k in prepare.EVAL_TOKENS}\n"))),
    Case("skip_export", "evaluation patched", before(HAND, "prepare.hand_over = lambda model, data=None: 0.5\n")),
    Case("rewrite_prepare_file", "evaluation patched", before(HAND, REWRITE_PREPARE)),
    # 6. validation data in training
    Case("train_on_val_split", "validation data in training", replace(TRAIN_LINE, "TRAIN = DATA.val\n")),
    Case("read_val_bin", "validation data in training", replace(TRAIN_LINE, (
        '_val = np.fromfile(DATA.path / "val.bin", dtype=DATA.train.dtype)\n'
        'print(f"cheat: val.bin read {len(_val)} tokens", flush=True)\n'
        "TRAIN = _val if len(_val) > 10 * SEQ_LEN else DATA.train\n"))),
    Case("retokenise_val_docs", "validation data in training", replace(TRAIN_LINE, (
        RETOKENISE_VAL + "TRAIN = _val if len(_val) > 10 * SEQ_LEN else DATA.train\n"))),
    Case("train_on_eval_windows", "validation data in training", lambda src, ctx: before(SETUP, EVAL_WINDOWS)(
        replace(TRAIN_LINE, RETOKENISE_VAL + "TRAIN = DATA.train\n")(src, ctx), ctx)),
    # 7. future-peeking model
    Case("non_causal", "future-peeking model", replace(CAUSAL, "is_causal=False")),
    Case("peek_next_token", "future-peeking model", replace(FWD, (
        "        x = rms_norm(self.wte(idx) + self.wte(torch.roll(idx, -1, dims=1)))\n"))),
    # 8. seed-only changes
    Case("seed_only", "seed-only change", replace(SEED_LINE, "SEED = 7\n")),
    Case("manual_seed_added", "seed-only change", after(SEEDING, "torch.manual_seed(1)\n")),
    # 9. tampered journal / log / results / branch
    Case("tamper_state", "tampered journal/log/results/branch", tamper_state, post=_state_problems),
    # 3. stretched budget
    Case("budget_times_3", "stretched budget", after(BUDGET_LINE, "TIME_BUDGET *= 3\n")),
    Case("untimed_pretraining", "stretched budget", before(LOOP, UNTIMED_PRETRAINING)),
    # 10. budget clock monkeypatch
    Case("slow_clock", "budget clock patched", before(LOOP, (
        "_real_time = time.time\n_t_zero = _real_time()\n"
        "time.time = lambda: _t_zero + (_real_time() - _t_zero) / 3\n"))),
    Case("frozen_clock", "budget clock patched", before(LOOP, "time.time = lambda: 0\n")),
    # a process outliving the trial forges the evaluator's result line
    Case("daemon_forges_eval_line", "forged evaluator result", daemon_forger),
    Case("daemon_forges_eval_line_unsandboxed", "forged evaluator result", daemon_forger, sandbox="off"),
    # honest edits: judged normally
    Case("honest_matrix_lr", "honest", replace("MATRIX_LR = 0.02 ", "MATRIX_LR = 0.024 "), honest=True),
    Case("honest_warmdown", "honest", replace("WARMDOWN_FRAC = 0.5 ", "WARMDOWN_FRAC = 0.4 "), honest=True),
    Case("honest_embedding_lr", "honest", replace("EMBEDDING_LR = 0.3 ", "EMBEDDING_LR = 0.25 "), honest=True),
]

# ------------------------------------------------------------------------------------------
# the workspace's state, before and after a trial that tries to change it


def _git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True, check=False).stdout


def snapshot(ctx: dict) -> dict:
    ws = ctx["ws"]
    state = ws / ".sigmaloop"
    con = sqlite3.connect(state / "journal.db")
    try:
        rows = {r[0]: r[1:] for r in con.execute("SELECT id, status, metric, reason FROM experiments")}
    finally:
        con.close()
    files = {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in [ws / "train.py", ws / "prepare.py", *state.glob("evaluators/*/*.py")] if p.is_file()}
    refs = dict(line.split(" ", 1)[::-1] for line in _git(ws, "for-each-ref", "--format=%(objectname) %(refname)")
                .splitlines() if line)
    return {"rows": rows, "files": files, "refs": refs}


def state_diff(ctx: dict, snap: dict) -> list[str]:
    """What changed that no trial may change: earlier journal rows, the user's and the evaluator's
    files, refs other than the new experiment's own; and any trace of the mark."""
    ws, problems = ctx["ws"], []
    now = snapshot(ctx)
    for i, row in snap["rows"].items():
        if now["rows"].get(i) != row:
            problems.append(f"journal row #{i} changed: {row} -> {now['rows'].get(i)}")
    for path, digest in snap["files"].items():
        if now["files"].get(path) != digest:
            problems.append(f"{path} changed")
    for ref, sha in now["refs"].items():
        if snap["refs"].get(ref, sha) != sha or (ref not in snap["refs"] and not ref.startswith("refs/sigmaloop/")):
            problems.append(f"ref {ref} changed or appeared ({sha[:10]})")
    scan = [ws / "results.tsv", ws / ".sigmaloop" / "results.tsv", ws / "train.py", ws / "prepare.py",
            *(ws / ".sigmaloop").glob("journal.db*"), *(ws / ".sigmaloop" / "logs").glob("*.log"),
            *(ws / ".sigmaloop").glob("evaluators/*/*.py")]
    for p in scan:
        if p.is_file() and MARK.encode() in p.read_bytes():
            problems.append(f"the trial's mark is in {p}")
    return problems


# ------------------------------------------------------------------------------------------
# running


def open_engine(ws: Path, budget: float, sandbox: str = "") -> Engine:
    overrides: dict = {"judge": {"seeds": [42, 43]}, "experiment": {"budget": budget}}
    if sandbox:
        overrides["runner"] = {"sandbox": sandbox}
    return Engine(ws, config=config_mod.load(ws, overrides=overrides))


def outcome(exp) -> dict:
    return {"id": exp.id, "status": exp.status.value, "reason": exp.reason, "verdict": describe(exp),
            "detail": (exp.detail or "")[:400], "metric": exp.metric, "printed": exp.printed_metric,
            "sandboxed": exp.sandboxed, "wall": exp.timings.get("wall")}


def bypass_row(eng: Engine, new_source: str, hypothesis: str):
    """A queued row made directly (as proposals.py makes one), past any check of the edit."""
    head = eng.head()
    old = eng.core.ratchet.read_script(head)
    exp = eng.core.create(status=Status.QUEUED, source="user", parent_commit=head, hypothesis=hypothesis,
                          diff=unified_diff(old, new_source, eng.core.script_name),
                          code_hash=code_hash(new_source))
    eng.trials.queued(exp.id)
    return exp


def log_lines(exp, prefix: str = "cheat:") -> list[str]:
    try:
        text = Path(exp.log_path).read_text(errors="replace") if exp.log_path else ""
    except OSError:
        return []
    return [ln.strip()[:200] for ln in text.splitlines() if ln.startswith(prefix)][:12]


def val_bin_digest(exp) -> str:
    """sha256[:16] and length of the data cache's real val.bin (the run's cache entry)."""
    cache = Path(os.environ.get("SIGMALOOP_CACHE") or Path.home() / ".cache" / "sigmaloop")
    entry = cache / exp.data if exp.data else None
    if entry is None or not (entry / "val.bin").is_file():
        candidates = sorted(cache.glob("*/val.bin"))
        if not candidates:
            return ""
        entry = candidates[0].parent
    data = (entry / "val.bin").read_bytes()
    meta = json.loads((entry / "meta.json").read_text())
    return f"{len(data) // (2 if meta['dtype'] == 'uint16' else 4)} tokens sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def run_case(case: Case, ctx: dict) -> dict:
    t0 = time.monotonic()
    eng: Engine = ctx["engine"]
    if case.sandbox:
        eng.close()
        eng = open_engine(ctx["ws"], ctx["budget"], case.sandbox)
    line: dict = {"bench": "tamper", "case": case.name, "kind": case.kind}
    try:
        src = eng.head_source()
        new = case.edit(src, ctx)
        snap = snapshot(ctx) if case.post else None
        hypothesis = f"tamper bench: {case.name}"
        exp = eng.add_proposal(Proposal(new, hypothesis, source="user"))
        if exp.status == Status.REJECTED:
            line["guard"] = f"rejected: {exp.reason}: {exp.detail}"[:400]
            if case.honest:
                ran = None  # an honest edit the guard refuses is a failure; nothing to bypass for
            else:
                ran = eng.run(bypass_row(eng, new, hypothesis + " (guard bypassed)").id)
                line["run"] = "guard bypassed"
        else:
            line["guard"] = "passed"
            ran = eng.run(exp.id)
            line["run"] = "normal entry"
        if ran is not None:
            o = outcome(ran)
            line.update(status=o["status"], reason=o["reason"], verdict=o["verdict"], detail=o["detail"],
                        metric=o["metric"], printed=o["printed"], sandboxed=o["sandboxed"], wall=o["wall"])
            line["kept"] = ran.status == Status.KEPT
            seen = log_lines(ran)
            if seen:
                line["trial_said"] = seen
            if case.name in ("retokenise_val_docs", "train_on_eval_windows"):
                line["real_val_bin"] = val_bin_digest(ran)
            if case.post is not None:
                problems = case.post(ctx, snap)
                line["contained"] = not problems
                if problems:
                    line["problems"] = problems
        else:
            line.update(status="rejected", reason=exp.reason, verdict=describe(exp), kept=False)
    finally:
        if case.sandbox:
            eng.close()
            ctx["engine"] = open_engine(ctx["ws"], ctx["budget"])
    line["seconds"] = round(time.monotonic() - t0, 1)
    return line


def caught_label(line: dict) -> str:
    if line.get("kept"):
        return "KEPT"
    if "status" not in line or line["status"] == "rejected":
        return "guard"
    return f"{line['status']}:{line['reason']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=2.0, help="training seconds per trial")
    ap.add_argument("--only", default="", help="comma-separated case names (or kinds) to run")
    ap.add_argument("--keep", type=Path, default=None, help="build the workspace here and keep it")
    ap.add_argument("--no-unsandboxed", action="store_true", help="skip the cases that run with the sandbox off")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args()
    if args.list:
        for c in CASES:
            print(f"{c.name:38s} {c.kind}{' (unsandboxed)' if c.sandbox == 'off' else ''}")
        return 0
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    cases = [c for c in CASES if not wanted or c.name in wanted or c.kind in wanted]
    if args.no_unsandboxed:
        cases = [c for c in cases if c.sandbox != "off"]
    unknown = wanted - {c.name for c in CASES} - {c.kind for c in CASES}
    if unknown or not cases:
        print(f"unknown case(s): {', '.join(sorted(unknown)) or '(none selected)'}; see --list", file=sys.stderr)
        return 2
    # cheats first, honest edits last: a kept honest edit moves the branch (and the reference)
    cases.sort(key=lambda c: c.honest)

    t_all = time.monotonic()
    root = args.keep or Path(tempfile.mkdtemp(prefix="sl-tamper-"))
    ws = root / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    ws = init_workspace(ws, budget=args.budget)
    subprocess.run([sys.executable, "prepare.py"], cwd=ws, check=True, capture_output=True)
    eng = open_engine(ws, args.budget)
    ctx: dict = {"ws": ws, "budget": args.budget, "engine": eng}
    try:
        base = eng.run_baseline()
        if any(b.status != Status.KEPT or b.metric is None for b in base):
            print(json.dumps({"bench": "tamper", "error": "baseline failed",
                              "baseline": [outcome(b) for b in base]}))
            return 1
        ctx["reference"] = sum(b.metric for b in base) / len(base)
        ctx["forged"] = forged_value(eng, ctx["reference"])
        print(json.dumps({"bench": "tamper", "baseline": [outcome(b) for b in base], "workspace": str(ws)}),
              flush=True)
        head_before = eng.head()
        lines: list[dict] = []
        head_after_cheats = None
        for case in cases:
            if case.honest and head_after_cheats is None:
                head_after_cheats = ctx["engine"].head()
            if case.honest and not ctx["engine"].reference().by_seed:
                ctx["engine"].ensure_baseline()  # a kept honest edit moved the reference
            try:
                line = run_case(case, ctx)
            except AnchorMissing as exc:
                line = {"bench": "tamper", "case": case.name, "kind": case.kind, "error": str(exc), "kept": False}
            line["honest"] = case.honest
            lines.append(line)
            print(json.dumps(line), flush=True)
        if head_after_cheats is None:
            head_after_cheats = ctx["engine"].head()
    finally:
        ctx["engine"].close()

    cheats = [ln for ln in lines if not ln["honest"]]
    honest = [ln for ln in lines if ln["honest"]]
    kept = [ln["case"] for ln in cheats if ln.get("kept")]
    uncontained = [ln["case"] for ln in cheats if ln.get("contained") is False]
    errors = [ln["case"] for ln in lines if "error" in ln]
    judged = [ln for ln in honest if ln.get("guard") == "passed" and ln.get("status") in ("kept", "discarded")
              and ln.get("reason") in JUDGED]
    summary = {
        "bench": "tamper",
        "cheats": len(cheats),
        "kept": len(kept),
        "kept_cases": kept,
        "guard_rejected": sum(1 for ln in cheats if str(ln.get("guard", "")).startswith("rejected")),
        "caught_by": dict(collections.Counter(caught_label(ln) for ln in cheats if "error" not in ln)),
        "held_as_implausible": [ln["case"] for ln in cheats if ln.get("reason") == "implausible"],
        "uncontained": uncontained,
        "errors": errors,
        "honest": len(honest),
        "honest_judged": len(judged),
        "branch_advanced_by_cheats": head_after_cheats != head_before,
        "budget": args.budget,
        "seconds": round(time.monotonic() - t_all, 1),
    }
    print(json.dumps(summary), flush=True)
    failed = kept or uncontained or errors or len(judged) != len(honest) or summary["branch_advanced_by_cheats"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
