"""Run one trial: a subprocess with a fixed time budget, live progress, a parsed summary.

The trial contract (other code relies on it):

* ``spec.command`` runs in ``spec.cwd`` in its own session / process group, stdin closed,
  stdout and stderr appended to ``spec.log_path``.
* Its environment is ours minus secrets (:func:`scrub_env`) plus ``SIGMALOOP_TIME_BUDGET``,
  ``SIGMALOOP_SEED``, ``SIGMALOOP_METRICS``, ``SIGMALOOP_EXP_ID``,
  ``PYTHONUNBUFFERED=1`` and ``spec.env``.
* The script appends JSON lines ``{"step", "t", "frac", "loss", ...}`` to the metrics file
  (delivered live as :class:`ProgressRecord` batches). A script that writes none but prints
  autoresearch's progress lines (``\\rstep 00012 (41.0%) | loss: 3.12 | ...``, carriage-return
  separated) gets its live curve from those instead (:func:`parse_printed_progress`).
  It ends by printing a summary block::

      ---
      val_bpb:          0.9979
      training_seconds: 300.1

* Exit 0 with a finite metric is OK; anything else is CRASHED (with the deepest workspace
  frame of the last traceback); past ``spec.kill_limit`` (the engine's, learned from the
  project's measured overhead; ``2 * budget + grace`` without one) the whole group is killed
  (TIMEOUT).

Neighbours: ``environment`` (what the trial's environment holds), ``output`` (reading what it
writes, within bounds), ``sandbox`` (bubblewrap), ``executors`` (running trials concurrently).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from . import evaluator, sandbox, secret
from .environment import trial_env
from .evaluator import SELF_REPORTED
from .lifecycle import Reason
from .models import KillLimit, Outcome, ProgressRecord, TrialResult, TrialSpec
from .output import (
    LOG_TAIL_BYTES,
    MetricsTail,
    OutputTail,
    describe_exit,
    fail_line,
    parse_summary,
    parse_traceback,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, list[ProgressRecord]], None]
StartCallback = Callable[[int, int], None]

PROGRESS_INTERVAL = 0.1  # seconds between progress batches (<= 10 Hz)
POLL_INTERVAL = 0.05  # seconds between checks of the process and the metrics file
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
LOG_CAP_BYTES = 64 << 20  # a trial's output past this keeps its head and tail (TrialSpec.log_cap)
_TIMING_KEYS = {"training_seconds": "train", "total_seconds": "total", "eval_seconds": "eval"}

# --------------------------------------------------------------------------- processes


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _leader_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the trial process has exited, without reaping it (its pid keeps the group id)."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # pragma: no cover - non-Linux fallback
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return proc.poll() is not None


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group; SIGKILL it if the leader outlives KILL_GRACE."""
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while not _leader_exited(proc) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    _signal_group(proc.pid, signal.SIGKILL)


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def kill_orphan(pid: int, exp_id: int) -> bool:
    """Kill the process group of a trial left running by a dead engine.

    Only when a live member of group ``pid`` (the leader, or a child that outlived it) has
    ``SIGMALOOP_EXP_ID=<exp_id>`` in /proc/<pid>/environ, which guards against PID reuse.
    Returns whether something was killed.
    """
    if pid <= 1 or pid == os.getpgrp():
        return False
    entry = f"SIGMALOOP_EXP_ID={exp_id}".encode()
    members = [pid]
    if not is_alive(pid):
        try:
            members = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return False
    matched = False
    for member in members:
        try:
            if os.getpgid(member) != pid:
                continue
        except OSError:
            continue
        if is_alive(member) and _environ_has(member, entry):
            matched = True
            break
    if not matched:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    _signal_group(pid, signal.SIGKILL)
    return True


# --------------------------------------------------------------------------- one trial


def _open_log(path: str, header: str) -> tuple[IO[bytes], int]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    log_file = open(path, "a+b")  # noqa: SIM115 - handed to the child, closed by run_trial
    log_file.write(header.encode("utf-8", "replace"))
    log_file.flush()
    return log_file, log_file.tell()


def _read_tail(log_file: IO[bytes], start: int, end: int | None = None) -> str:
    """This run's part of the log (its last LOG_TAIL_BYTES before ``end``), via our fd:
    survives deletion."""
    try:
        size = os.fstat(log_file.fileno()).st_size if end is None else end
        begin = max(start, size - LOG_TAIL_BYTES)
        log_file.seek(begin)
        return log_file.read(size - begin).decode("utf-8", "replace")
    except OSError:
        return ""


def _find_summary(log_file: IO[bytes], start: int, metric: str) -> dict[str, float]:
    """The summary block holding ``metric``, searched back from the end of the log in
    LOG_TAIL_BYTES windows: found even after megabytes of later output."""
    try:
        end = os.fstat(log_file.fileno()).st_size
    except OSError:
        return {}
    while end > start:
        found = parse_summary(_read_tail(log_file, start, end), metric)
        if metric in found:
            return found
        end -= LOG_TAIL_BYTES - (64 << 10)  # windows overlap: a block is never cut in two
    return {}


class _LogCap:
    """Keeps a flooding trial's log bounded: past ``cap`` bytes of output, the head (first half)
    stays, the middle goes (one line says how much), and the newest quarter is kept after it.
    The trial appends (O_APPEND), so cutting the file under it is safe."""

    def __init__(self, log_file: IO[bytes], start: int, cap: int) -> None:
        self.file, self.start, self.cap = log_file, start, max(cap, 1 << 16)
        self.omitted = 0

    def check(self) -> None:
        try:
            size = os.fstat(self.file.fileno()).st_size
            if size - self.start <= self.cap:
                return
            keep = self.cap // 4
            self.file.seek(size - keep)
            tail = self.file.read(keep)
            head_end = self.start + self.cap // 2
            self.omitted += size - keep - head_end
            os.ftruncate(self.file.fileno(), head_end)
            note = (f"\n[sigmaloop] {self.omitted} bytes of output omitted here: the log keeps its first "
                    f"{self.cap // 2} and last {keep} bytes (runner.log_cap_mb)\n")
            self.file.write(note.encode() + tail)
            self.file.flush()
        except OSError:
            log.exception("could not cap the log %s", getattr(self.file, "name", "?"))


def _note(log_file: IO[bytes], text: str) -> None:
    try:
        log_file.write(f"\n[sigmaloop] {text}\n".encode())
        log_file.flush()
    except OSError:
        pass


def run_trial(
    spec: TrialSpec,
    on_progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    on_start: StartCallback | None = None,
    env_allow: Iterable[str] = (),
) -> TrialResult:
    """Run one trial synchronously and classify how it ended. Never raises for trial failures."""
    stop_event = stop_event or threading.Event()
    if stop_event.is_set():
        return TrialResult(spec.exp_id, Outcome.STOPPED, error="stopped before it started")
    env = trial_env(spec, env_allow)
    started_at = time.strftime("%Y-%m-%d %H:%M:%S")
    header = f"[sigmaloop] exp {spec.exp_id} {started_at}: {shlex.join(spec.command)} (cwd {spec.cwd})\n"
    try:
        Path(spec.metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(spec.metrics_path).write_bytes(b"")
        log_file, log_start = _open_log(spec.log_path, header)
    except OSError as exc:
        return TrialResult(
            spec.exp_id, Outcome.CRASHED, error=f"could not create trial files: {exc}"
        )
    pending = None
    if spec.evaluator is not None:  # it warms up (interpreter, torch, data) while the trial trains
        eval_env = {k: v for k, v in env.items() if k != "SIGMALOOP_MODEL"}
        pending = evaluator.start(spec.evaluator, Path(spec.model_path), spec.python or spec.command[0],
                                  eval_env, Path(spec.eval_scratch or Path(spec.model_path).parent / "scratch"),
                                  spec.evaluator_policy, spec.cpus)
    try:
        result = _run(spec, env, log_file, log_start, on_progress, stop_event, on_start)
        if result.outcome == Outcome.OK and pending is not None:
            _score(spec, result, pending, log_file)
        _redact_log(log_file, log_start)
        result.error = secret.redact(result.error)
        if result.crash is not None:
            result.crash.message = secret.redact(result.crash.message)
        return result
    finally:
        if pending is not None:
            pending.cancel()  # nothing left to score (or already scored)
        log_file.close()


def _redact_log(log_file: IO[bytes], start: int) -> None:
    """Cut any known secret out of this attempt's output (bounded by the log cap)."""
    try:
        log_file.seek(start)
        data = log_file.read()
        clean = secret.redact_bytes(data)
        if clean != data:
            os.ftruncate(log_file.fileno(), start)
            log_file.seek(start)
            log_file.write(clean)
            log_file.flush()
    except OSError:
        log.exception("could not redact the log %s", getattr(log_file, "name", "?"))


def _run(
    spec: TrialSpec,
    env: dict[str, str],
    log_file: IO[bytes],
    log_start: int,
    on_progress: ProgressCallback | None,
    stop_event: threading.Event,
    on_start: StartCallback | None,
) -> TrialResult:
    printed: OutputTail | None = OutputTail(spec.log_path, log_start, spec.exp_id, spec.budget)
    t0 = time.monotonic()
    try:
        argv = spec.command if spec.sandbox is None else sandbox.wrap(spec.command, spec.sandbox, spec.cwd)
        if spec.cpus and shutil.which("taskset"):  # the slot's own cores (everything it starts inherits them)
            argv = ["taskset", "-c", ",".join(map(str, spec.cpus)), *argv]
        proc = subprocess.Popen(
            argv,
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        error = f"could not start {spec.command[0] if spec.command else 'an empty command'}: {exc}"
        _note(log_file, error)
        printed.close()
        return TrialResult(spec.exp_id, Outcome.CRASHED, error=error)
    if on_start is not None:
        try:
            on_start(spec.exp_id, proc.pid)
        except Exception:
            log.exception("on_start callback failed for exp %s", spec.exp_id)

    limit = spec.kill_limit or KillLimit.initial(spec.budget, spec.grace)
    tail = MetricsTail(spec.metrics_path, spec.exp_id)
    pending: list[ProgressRecord] = []
    first_record: float | None = None
    last_sent = 0.0
    last_printed_step = -1

    def deliver(force: bool = False) -> None:
        nonlocal last_sent
        if not pending:
            return
        if on_progress is None:
            pending.clear()
            return
        now = time.monotonic()
        if not force and now - last_sent < PROGRESS_INTERVAL:
            return
        batch = pending.copy()
        pending.clear()
        last_sent = now
        try:
            on_progress(spec.exp_id, batch)
        except Exception:
            log.exception("on_progress callback failed for exp %s", spec.exp_id)

    def collect(final: bool = False) -> None:
        """New metrics records; printed progress only while the metrics file has given none.

        The output is read before the metrics file: a script that does both writes its record
        before printing, so a printed line seen here has its record visible below.
        """
        nonlocal first_record, printed, last_printed_step
        from_output = printed.read(final=final) if printed is not None else []
        records = tail.read(final=final)
        if tail.seen:
            if printed is not None:  # the script keeps the contract: stop reading its output
                printed.close()
                printed = None
        elif from_output and from_output[-1].step > last_printed_step:
            # printed every step for a human, with \r: the latest per poll (<= 20/s) is the curve
            records = [from_output[-1]]
            last_printed_step = records[0].step
        if records and first_record is None:
            first_record = time.monotonic()
        pending.extend(records)

    forced: Outcome | None = None
    capped = _LogCap(log_file, log_start, spec.log_cap)
    try:
        while True:
            exited = _leader_exited(proc)
            capped.check()
            collect()
            deliver()
            if exited:
                break
            if stop_event.is_set():
                forced = Outcome.STOPPED
            elif time.monotonic() - t0 > limit.seconds:
                forced = Outcome.TIMEOUT
            if forced is not None:
                _terminate(proc)
                break
            stop_event.wait(POLL_INTERVAL)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # leftovers (forked children), before reaping
        proc.wait()
    wall = time.monotonic() - t0
    collect(final=True)
    deliver(force=True)
    if printed is not None:
        printed.close()
    startup = None if first_record is None else first_record - t0
    return _classify(spec, proc.returncode, forced, wall, startup, log_file, log_start, limit)


def _device(spec: TrialSpec) -> str:
    """Where a self-reported trial ran: "cuda" when its slot has a GPU, else "cpu"."""
    visible = spec.env.get("CUDA_VISIBLE_DEVICES", "").strip()
    return "cuda" if visible and visible != "-1" else "cpu"


def _score(spec: TrialSpec, result: TrialResult, pending: evaluator.Pending, log_file: IO[bytes]) -> None:
    """The fixed evaluator's number for a trial that ended well, or why there is none."""
    assert spec.evaluator is not None
    model = Path(spec.model_path)
    result.evaluator = spec.evaluator.identity
    if not model.is_file():
        result.outcome = Outcome.CRASHED
        if result.printed_metric is not None:
            result.outcome, result.untrusted = Outcome.OK, Reason.NO_MODEL.value
            result.error = (f"it printed {spec.metric} {result.printed_metric:g} but handed no model to the "
                            "evaluator, so that number was never measured")
        else:
            result.error = ("the script ended without handing its model over: end it with "
                            "prepare.hand_over(model) (it exports the model for the fixed evaluator)")
        _note(log_file, result.error)
        return
    ev = pending.finish(log_file)
    result.timings["eval"] = round(ev.seconds, 3)
    result.data, result.device = ev.data, ev.device
    if ev.error or ev.metric is None or not math.isfinite(ev.metric):
        result.outcome = Outcome.CRASHED
        result.error = f"evaluator: {ev.error}" if ev.error else f"{spec.metric} is {ev.metric} (training diverged?)"
        _note(log_file, result.error)
        return
    result.metric = ev.metric
    if evaluator.peeks(ev):
        result.untrusted = Reason.FUTURE_PEEKING.value
        result.error = (f"earlier predictions changed by up to {ev.causal_leak:.3g} when only later tokens "
                        "changed: the model sees the future")
    elif not evaluator.agrees(result.printed_metric, ev.metric):
        result.untrusted = Reason.METRIC_MISMATCH.value
        result.error = f"it printed {spec.metric} {result.printed_metric:g}; the evaluator measured {ev.metric:.6f}"
    if result.untrusted:
        _note(log_file, result.error)


def _classify(
    spec: TrialSpec,
    code: int | None,
    forced: Outcome | None,
    wall: float,
    startup: float | None,
    log_file: IO[bytes],
    log_start: int,
    limit: KillLimit,
) -> TrialResult:
    text = _read_tail(log_file, log_start)
    summary = parse_summary(text, spec.metric)
    if spec.metric not in summary:
        summary = _find_summary(log_file, log_start, spec.metric) or summary
    value = summary.pop(spec.metric, None)
    if value is not None and math.isfinite(value):
        summary[spec.metric] = value
    timings = {"wall": round(wall, 3), "limit": round(limit.seconds, 3)}
    if startup is not None:
        timings["startup"] = round(startup, 3)
    for key, name in _TIMING_KEYS.items():
        if key in summary:
            timings[name] = summary[key]
    result = TrialResult(
        exp_id=spec.exp_id,
        node=socket.gethostname(),
        outcome=Outcome.OK,
        summary=summary,
        exit_code=code,
        wall_seconds=wall,
        timings=timings,
        sandboxed=spec.sandbox is not None,
    )
    if forced is Outcome.TIMEOUT:
        result.outcome = Outcome.TIMEOUT
        result.error = (
            f"timed out: killed after {wall:.1f}s, past the kill limit of {limit.rule()}; "
            f"{limit.advice(spec.exp_id)}"
        )
        _note(log_file, result.error)
        return result
    if forced is Outcome.STOPPED:
        result.outcome = Outcome.STOPPED
        result.error = "stopped on request"
        _note(log_file, result.error)
        return result
    result.printed_metric = value
    if code == 0 and spec.evaluator is not None:
        return result  # the evaluator decides (_score)
    if code == 0 and value is not None and math.isfinite(value):
        result.metric = value
        result.evaluator = SELF_REPORTED
        result.device = _device(spec)
        return result
    result.outcome = Outcome.CRASHED
    root = spec.workspace_root or spec.cwd
    result.crash, exception = parse_traceback(text, root, spec.cwd)
    if value is not None and not math.isfinite(value) and code == 0:
        fallback = f"{spec.metric} is {value} (training diverged?)"
    else:
        fallback = describe_exit(code, spec.metric, value is not None)
    result.error = fail_line(text) or exception[:500] or fallback
    return result

