"""The fixed evaluator, engine side: the number the judge uses comes from outside the edited code.

A trial of the embedded trainer ends with ``prepare.hand_over(model)``: under sigmaloop that
exports the trained model (``torch.export``) to ``$SIGMALOOP_MODEL`` instead of scoring it. The
runner then starts ``score_model.py`` — a separate process, in its own sandbox, running the
``prepare.py`` *of the experiment's base commit* (copied out of git into the state folder, so
neither the edit nor anything the trial wrote can change it). That sandbox can read the
validation split; the trial's cannot (its ``val.bin`` reads as empty). The evaluator also checks
causality: changing later tokens must not change earlier predictions.

What the trial printed is kept for people (``printed_metric``); when it disagrees with the
evaluator's number beyond float tolerance the experiment is ``tampered``.

A project whose ``prepare.py`` has no ``hand_over`` (a user's own script, an imported
autoresearch project, a workspace made before this) is judged on the number its script prints:
its verdicts say "self-reported metric" and the other checks (budget, guard, sandbox) still apply.

This module never imports torch; ``score_model.py`` does, in its own process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path, PurePosixPath
from typing import IO

from . import sandbox
from .models import Evaluation, EvaluatorSpec

SELF_REPORTED = "self-reported"
HAND_OVER_MARK = "def hand_over("  # a prepare.py that can score a handed-over model
MODEL_FILE = "model.pt2"
SCRIPT = Path(__file__).with_name("score_model.py")
RESULT_PREFIX = "SIGMALOOP_EVALUATION "  # score_model.RESULT_PREFIX (that file imports torch)
EVAL_TIMEOUT_S = 600.0  # scoring takes seconds on CPU, ~1 min for the GPU preset's 20M tokens
CAUSAL_TOLERANCE = 1e-3  # relative to the logits' scale: float noise, never a real peek
#: |printed - evaluated| allowed, relative: the summary prints 6 decimals and GPU kernels differ
MATCH_REL = 1e-3
MATCH_ABS = 1e-4


def prepare_path(script_path: str) -> str:
    """prepare.py next to the train script (both as repository paths)."""
    parent = PurePosixPath(script_path).parent
    return str(parent / "prepare.py") if str(parent) != "." else "prepare.py"


def spec_for(ratchet, state_dir: Path, commit: str, metric: str, mode: str = "auto") -> EvaluatorSpec | None:
    """The fixed evaluator for experiments built on ``commit``: its prepare.py copied out of git
    (once per blob) with the scoring script. None when the project can't hand a model over (or
    ``experiment.evaluator = "off"``, or the metric is not prepare's val_bpb): self-reported."""
    if mode == "off" or metric != "val_bpb":
        return None
    path = prepare_path(ratchet.script_path)
    blob = ratchet.blob_sha(commit, path)
    if blob is None:
        return None
    text = ratchet.read_file(commit, path)
    if HAND_OVER_MARK not in text or "SIGMALOOP_MODEL" not in text:
        return None
    folder = state_dir / "evaluators" / blob[:16]
    if not (folder / "prepare.py").is_file() or not (folder / SCRIPT.name).is_file():
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "prepare.py").write_text(text)
        shutil.copyfile(SCRIPT, tmp / SCRIPT.name)
        try:
            os.replace(tmp, folder)
        except OSError:  # made by a twin meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return EvaluatorSpec(identity=f"prepare:{blob[:12]}", folder=str(folder))


def policy(spec: EvaluatorSpec, scratch: Path, model_path: Path, python: str, gpu: bool,
           workspace: Path) -> sandbox.Policy:
    """The evaluator's sandbox: like a trial's (no repository, no state folder, no home, no
    network), but the data cache with its validation split, the fixed prepare.py and the model
    file readable; writable only its scratch folder."""
    cache = sandbox.data_cache()
    return sandbox.Policy(
        worktree=str(scratch),
        hide=(sandbox.repository_root(workspace), os.path.realpath(workspace)),
        read_only=tuple(p for p in (cache, spec.folder, str(model_path.parent)) if os.path.exists(p)),
        python=python,
        network=False,
        gpu=gpu,
        extra_env={"SIGMALOOP_CACHE": cache},
    )


class Pending:
    """An evaluator started while its trial trains: interpreter, torch and the data loaded, it
    waits for ``go`` (the trial has ended and handed its model over). :meth:`finish` scores;
    :meth:`cancel` ends it when there is nothing to score."""

    def __init__(self, spec: EvaluatorSpec, argv: list[str], scratch: Path, env: dict[str, str],
                 sandboxed: bool) -> None:
        self.spec, self.scratch, self.sandboxed = spec, scratch, sandboxed
        self.t0 = time.monotonic()
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""
        try:
            self.proc = subprocess.Popen(argv, cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self.error = f"could not start the evaluator: {exc}"

    def finish(self, log_file: IO[bytes], timeout: float = EVAL_TIMEOUT_S) -> Evaluation:
        """Score the handed-over model; its output goes to the trial's log after a header line
        (read from its own pipe, never from the log: a process the trial left behind can write
        there)."""
        log_file.write(f"\n[sigmaloop] evaluator ({self.spec.identity}, "
                       f"{'sandboxed' if self.sandboxed else 'unsandboxed'}): scoring the handed-over model\n".encode())
        log_file.flush()
        t_go = time.monotonic()
        if self.proc is None:
            return Evaluation(error=self.error, seconds=0.0)
        try:
            raw, _ = self.proc.communicate(b"go\n", timeout=timeout)
            code = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.cancel()
            return Evaluation(error=f"the evaluator did not finish within {timeout:g}s",
                              seconds=time.monotonic() - t_go)
        except OSError as exc:  # it died before reading "go" (e.g. the data failed to load)
            raw, code = (self.proc.stdout.read() if self.proc.stdout else b""), self.proc.wait()
            if not raw:
                raw = f"evaluator: {exc}".encode()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        seconds = time.monotonic() - t_go
        _copy(log_file, raw)
        return _parse(raw, code, seconds)

    def cancel(self) -> None:
        """No model to score (the trial failed or was stopped): end it, leave nothing behind."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def start(
    spec: EvaluatorSpec,
    model_path: Path,
    python: str,
    env: dict[str, str],
    scratch: Path,
    sandbox_policy: sandbox.Policy | None,
    cpus: tuple[int, ...] = (),
) -> Pending:
    """Start the evaluator for a trial that is about to train: it warms up meanwhile (on the
    trial's slot's cores, so it never slows another slot's trial)."""
    argv = [python, str(Path(spec.folder) / SCRIPT.name), "--model", str(model_path),
            "--prepare-dir", spec.folder, "--wait"]
    scratch.mkdir(parents=True, exist_ok=True)
    if sandbox_policy is not None:
        argv = sandbox.wrap(argv, sandbox_policy, str(scratch))
    if cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    return Pending(spec, argv, scratch, env, sandbox_policy is not None)


def _parse(raw: bytes, code: int | None, seconds: float) -> Evaluation:
    out = raw[-(1 << 20):].decode("utf-8", "replace")
    result = None
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = line[len(RESULT_PREFIX):]
    if code != 0 or result is None:
        last = next((ln for ln in reversed(out.splitlines()) if ln.startswith("evaluator:")), "")
        why = last.removeprefix("evaluator:").strip() or f"the evaluator exited with {code}"
        return Evaluation(error=why, seconds=seconds)
    try:
        data = json.loads(result)
        metric = data.get("metric")
        return Evaluation(
            metric=float(metric) if metric is not None else None,
            causal_leak=float(data.get("causal_leak", 0.0)),
            logit_scale=float(data.get("logit_scale", 1.0)),
            data=str(data.get("data", "")),
            device=str(data.get("device", "")),
            seconds=seconds,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return Evaluation(error=f"unreadable evaluator result: {exc}", seconds=seconds)


def _copy(log_file: IO[bytes], raw: bytes) -> None:
    """The evaluator's output into the trial's log, for people (bounded)."""
    try:
        log_file.write(raw[-(1 << 20):])
        log_file.flush()
    except OSError:
        pass


def peeks(ev: Evaluation) -> bool:
    """Whether the model's earlier predictions changed with later tokens (beyond float noise)."""
    return ev.causal_leak > CAUSAL_TOLERANCE * max(1.0, ev.logit_scale)


def agrees(printed: float | None, evaluated: float) -> bool:
    """Whether what the script printed is the evaluator's number (absent: nothing to disagree)."""
    if printed is None:
        return True
    if not math.isfinite(printed):
        return False
    return abs(printed - evaluated) <= max(MATCH_ABS, MATCH_REL * abs(evaluated))
