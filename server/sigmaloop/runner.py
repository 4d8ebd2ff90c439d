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

Executors run trials concurrently behind one interface (:class:`Executor`); the
:class:`LocalExecutor` uses a thread pool with one slot (GPU or CPU-thread share) per worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Protocol

from . import sandbox, secret
from .models import CrashLocation, KillLimit, Outcome, ProgressRecord, TrialResult, TrialSpec

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, list[ProgressRecord]], None]
StartCallback = Callable[[int, int], None]

PROGRESS_INTERVAL = 0.1  # seconds between progress batches (<= 10 Hz)
POLL_INTERVAL = 0.05  # seconds between checks of the process and the metrics file
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_BYTES = 4 << 20  # how much of the log end is parsed for the summary and traceback
LOG_CAP_BYTES = 64 << 20  # a trial's output past this keeps its head and tail (TrialSpec.log_cap)
MAX_RECORDS_PER_POLL = 50  # a flood of metrics records is thinned to this many per poll

_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_SUMMARY_RE = re.compile(r"^([A-Za-z_]\w*):\s+(\S+)\s*$")
_FRAME_RE = re.compile(r'^\s+File "(?P<file>.+)", line (?P<line>\d+)(?:, in .*)?$')
_EXC_RE = re.compile(r"^[A-Za-z_][\w.]*(?::.*)?$")
_TIMING_KEYS = {"training_seconds": "train", "total_seconds": "total", "eval_seconds": "eval"}
# autoresearch's progress line: "step 00012 (41.0%) | loss: 3.123456 | lrm: 1.00 | dt: 120ms | ..."
_PRINTED_STEP_RE = re.compile(r"\bstep[\s:]*(\d+)(?:\s*/\s*\d+)?\s*\(\s*(\d+(?:\.\d*)?)\s*%\s*\)(.*)$", re.I)
_PRINTED_FIELD_RE = re.compile(
    r"^\s*([A-Za-z][\w/.-]*(?:\s[A-Za-z][\w/.-]*)?)\s*(?::\s*|=\s*|\s+)"
    r"([-+]?(?:\d[\d,]*)?\.?\d+(?:[eE][-+]?\d+)?)\s*(%|ms|s)?\s*$"
)
_LINE_BREAK_RE = re.compile(rb"[\r\n]")


# --------------------------------------------------------------------------- environment


#: What a trial gets from our environment by default: names, and name prefixes (the trial
#: contract, locale, interpreter and environment managers, compilers, CUDA/ROCm/BLAS/threading
#: knobs). Everything else stays out unless ``runner.env_allow`` names it.
ENV_ALLOW_NAMES = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "HOME", "TMPDIR",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "VIRTUAL_ENV",
    "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "CC", "CXX",
    "TOKENIZERS_PARALLELISM", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
ENV_ALLOW_PREFIXES = (
    "LC_", "SIGMALOOP_", "CUDA_", "NVIDIA_", "ROCM_", "HIP_", "HSA_", "OMP_", "MKL_", "OPENBLAS_",
    "BLIS_", "VECLIB_", "NUMEXPR_", "KMP_", "GOTO_", "TORCH_", "PYTORCH_", "TORCHINDUCTOR_", "TRITON_",
    "NCCL_", "CUBLAS_", "CUDNN_", "XLA_", "JAX_",
)
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")
_URL_CREDENTIALS_RE = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def scrub_env(env: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The part of ``env`` a trial may see: the allow-list (:data:`ENV_ALLOW_NAMES`,
    :data:`ENV_ALLOW_PREFIXES`) minus anything secret-looking inside it (a name with KEY,
    TOKEN, SECRET, PASSWORD, CREDENTIAL, AUTH… — unless listed by exact name — or a URL with
    credentials), plus the names in ``allow`` (``runner.env_allow``), which pass as they are."""
    allowed = set(allow)
    out: dict[str, str] = {}
    for name, value in env.items():
        if name in allowed:
            out[name] = value
            continue
        if name not in ENV_ALLOW_NAMES:
            if not name.startswith(ENV_ALLOW_PREFIXES):
                continue
            if any(w in name.upper() for w in _SECRET_WORDS):
                continue
        if _URL_CREDENTIALS_RE.search(value):
            continue
        out[name] = value
    return out


def trial_env(spec: TrialSpec, env_allow: Iterable[str] = ()) -> dict[str, str]:
    """The environment a trial runs with (see the module docstring)."""
    env = scrub_env(os.environ, env_allow)
    env.update(
        SIGMALOOP_TIME_BUDGET=str(spec.budget),
        SIGMALOOP_SEED=str(spec.seed),
        SIGMALOOP_METRICS=str(spec.metrics_path),
        SIGMALOOP_EXP_ID=str(spec.exp_id),
        PYTHONUNBUFFERED="1",
    )
    env.update(spec.env)
    return env


# --------------------------------------------------------------------------- parsing


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_progress_line(line: bytes | str, exp_id: int) -> ProgressRecord | None:
    """One metrics line as a record; None for garbage (not JSON, no numeric ``step``).

    Non-finite numbers are dropped (a NaN loss becomes None) so records stay JSON-safe.
    """
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    step = _number(data.get("step"))
    if step is None:
        return None
    extra = {}
    for key, value in data.items():
        if key not in ("step", "t", "frac", "loss") and (num := _number(value)) is not None:
            extra[str(key)] = num
    return ProgressRecord(
        exp_id=exp_id,
        step=int(step),
        t=_number(data.get("t")) or 0.0,
        frac=_number(data.get("frac")) or 0.0,
        loss=_number(data.get("loss")),
        extra=extra,
    )


def _printed_field(key: str, unit: str | None) -> str:
    """``tok/sec`` → ``tok_per_s``, ``dt`` in ms → ``dt_ms``, ``remaining`` in s → ``remaining_s``."""
    name = re.sub(r"\s*/\s*s(?:ec)?$", "_per_s", key.strip().lower())
    name = re.sub(r"\W+", "_", name).strip("_")
    return f"{name}_{unit}" if unit in ("ms", "s") else name


def parse_printed_progress(
    line: bytes | str, exp_id: int, budget: float
) -> ProgressRecord | None:
    """One progress line a script printed (autoresearch style) as a record; None otherwise.

    ``step 00012 (41.0%) | loss: 3.123456 | lrm: 1.00 | dt: 120ms | tok/sec: 12,345 | mfu: 40.1%``
    gives step 12, frac 0.41, loss 3.123456, ``t`` = frac x budget (the script prints no
    elapsed time) and the other numbers as extras (``lrm``, ``dt_ms``, ``tok_per_s``, ``mfu``).
    Fields that are not ``name: number`` are ignored; a line without ``step N (P%)`` is None.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    m = _PRINTED_STEP_RE.search(line)
    if m is None:
        return None
    frac = float(m.group(2)) / 100.0
    loss = None
    extra: dict[str, float] = {}
    for part in m.group(3).split("|"):
        f = _PRINTED_FIELD_RE.match(part)
        if f is None:
            continue
        try:
            value = float(f.group(2).replace(",", ""))
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        name = _printed_field(f.group(1), f.group(3))
        if name in ("loss", "train_loss"):
            loss = value if loss is None else loss
        elif name and name not in ("step", "t", "frac"):
            extra[name] = value
    return ProgressRecord(exp_id=exp_id, step=int(m.group(1)), t=round(frac * budget, 3), frac=frac,
                          loss=loss, extra=extra)


def parse_summary(text: str, metric: str | None = None) -> dict[str, float]:
    """``key: value`` float lines after the last ``---`` line.

    Without a ``---`` line (or when the block lacks it), the last ``<metric>: value`` line
    anywhere in the text still counts. Non-finite values are kept only for ``metric``.
    """
    lines = text.splitlines()
    start = 0
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() == "---":
            start = i + 1
            break
    summary: dict[str, float] = {}
    if start:
        for line in lines[start:]:
            m = _SUMMARY_RE.match(line)
            if m:
                with contextlib.suppress(ValueError):
                    summary[m.group(1)] = float(m.group(2))
    if metric and metric not in summary:
        for line in reversed(lines):
            m = _SUMMARY_RE.match(line)
            if m and m.group(1) == metric:
                try:
                    summary[metric] = float(m.group(2))
                    break
                except ValueError:
                    continue
    return {k: v for k, v in summary.items() if math.isfinite(v) or k == metric}


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` when it lies inside it (and not in installed packages)."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return None
    parts = Path(rel).parts
    if not parts or parts[0] == ".." or os.path.isabs(rel):
        return None
    if "site-packages" in parts or "dist-packages" in parts:
        return None
    return Path(rel).as_posix()


def parse_traceback(
    text: str, root: str, cwd: str | None = None
) -> tuple[CrashLocation | None, str]:
    """The last Python traceback in ``text``: (deepest frame inside ``root``, exception line).

    Handles chained exceptions (the last traceback wins) and the header-less form Python
    prints for a SyntaxError in the main script. Relative frame paths resolve against ``cwd``.
    """
    lines = text.splitlines()
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last):"):
            start = i + 1
            break
    if start is None:  # e.g. "  File "train.py", line 3" + "SyntaxError: ..." with no header
        for i in range(len(lines) - 1, -1, -1):
            m = _FRAME_RE.match(lines[i])
            if m and ", in " not in lines[i]:
                start = i
                break
    if start is None:
        return None, ""
    real_root = os.path.realpath(root)
    base = cwd or root
    frames: list[tuple[str, int]] = []
    message = ""
    for line in lines[start:]:
        m = _FRAME_RE.match(line)
        if m:
            frames.append((m.group("file"), int(m.group("line"))))
            continue
        if not line.strip() or line[0].isspace():
            continue  # source lines, carets, blank lines
        if _EXC_RE.match(line.rstrip()):
            message = line.strip()
            break
    crash = None
    for file, lineno in reversed(frames):
        if file.startswith("<"):
            continue  # <frozen runpy>, <string>
        rel = _inside(os.path.realpath(os.path.join(base, file)), real_root)
        if rel is not None:
            crash = CrashLocation(file=rel, line=lineno, message=message[:500])
            break
    return crash, message


def _fail_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.startswith("FAIL"):
            return line.strip()[:500]
    return ""


def _describe_exit(code: int | None, metric: str, has_metric: bool) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    text = f"exited with code {code}"
    return text if has_metric else f"{text} and printed no {metric} line"


# --------------------------------------------------------------------------- metrics tail


class _MetricsTail:
    """Follows a JSON-lines file that may be partial, truncated, replaced or deleted.

    Bounded whatever the trial writes: at most ``CHUNK`` bytes per poll (the final read skips to
    the last ``FINAL_BYTES``), at most ``MAX_RECORDS_PER_POLL`` records per poll (evenly thinned,
    the newest kept), a partial line of at most ``MAX_PARTIAL`` bytes.
    """

    MAX_PARTIAL = 1 << 20
    CHUNK = 1 << 20
    FINAL_BYTES = 4 << 20

    def __init__(self, path: str, exp_id: int) -> None:
        self.path = path
        self.exp_id = exp_id
        self.file: IO[bytes] | None = None
        self.inode: int | None = None
        self.partial = b""
        self.seen = False  # whether any record arrived yet

    def read(self, final: bool = False) -> list[ProgressRecord]:
        records: list[ProgressRecord] = []
        try:
            st = os.stat(self.path)
        except OSError:
            st = None  # deleted: keep reading the open file, if any
        if st is not None:
            if self.file is not None and st.st_ino != self.inode:
                records += self._drain()  # replaced: finish the old file first
                self._close()
            elif self.file is not None and st.st_size < self.file.tell():
                self.file.seek(0)  # truncated
                self.partial = b""
            if self.file is None:
                try:
                    self.file = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
                    self.inode = os.fstat(self.file.fileno()).st_ino
                except OSError:
                    self.file = None
        if final and self.file is not None:
            with contextlib.suppress(OSError):
                size = os.fstat(self.file.fileno()).st_size
                if size - self.file.tell() > self.FINAL_BYTES:  # only the end matters now
                    self.file.seek(size - self.FINAL_BYTES)
                    self.partial = b""
                    self.file.readline()  # resynchronise on a line start
        records += self._drain(final)
        if final:
            if self.partial:
                rec = parse_progress_line(self.partial, self.exp_id)
                records += [rec] if rec else []
                self.partial = b""
            self._close()
        self.seen = self.seen or bool(records)
        return thin(records, MAX_RECORDS_PER_POLL)

    def _drain(self, final: bool = False) -> list[ProgressRecord]:
        if self.file is None:
            return []
        try:
            data = self.file.read(self.FINAL_BYTES if final else self.CHUNK)
        except OSError:
            return []
        if not data:
            return []
        *lines, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > self.MAX_PARTIAL:
            self.partial = b""  # a runaway line without newline is garbage
        out = []
        for line in lines:
            if line.strip() and (rec := parse_progress_line(line, self.exp_id)):
                out.append(rec)
        return out

    def _close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.inode, self.partial = None, None, b""


def thin(records: list[ProgressRecord], n: int) -> list[ProgressRecord]:
    """At most ``n`` records, evenly spaced, the newest always kept."""
    if len(records) <= n:
        return records
    step = len(records) / n
    return [records[min(len(records) - 1, int((i + 1) * step) - 1)] for i in range(n)]


class _OutputTail:
    """Follows the trial's own output (this attempt's part of its log) for printed progress.

    Reads only what is new on each call (at most ``CHUNK`` bytes, so a chatty script can't stall
    a poll), splits on ``\\r`` and ``\\n`` (progress lines are carriage-return separated, with
    no newline), and keeps a partial line of at most ``MAX_PARTIAL`` bytes: a longer run
    without a line break is dropped up to the next break.
    """

    MAX_PARTIAL = 64 << 10
    CHUNK = 1 << 20

    def __init__(self, path: str, start: int, exp_id: int, budget: float) -> None:
        self.path = path
        self.exp_id = exp_id
        self.budget = budget
        self.partial = b""
        self.skipping = False  # inside an over-long line: drop bytes up to the next break
        try:  # opened now, before the trial starts: the same file even if the path is replaced
            self.file: IO[bytes] | None = open(path, "rb")  # noqa: SIM115 - kept open across polls
            self.file.seek(start)
        except OSError:
            self.file = None

    def read(self, final: bool = False) -> list[ProgressRecord]:
        if self.file is None:
            return []
        records: list[ProgressRecord] = []
        try:
            if os.fstat(self.file.fileno()).st_size < self.file.tell():  # the log cap cut it
                self.file.seek(0, os.SEEK_END)
                self.partial, self.skipping = b"", True
            if final:  # only the end matters now: skip a huge backlog
                size = os.fstat(self.file.fileno()).st_size
                if size - self.file.tell() > LOG_TAIL_BYTES:
                    self.file.seek(size - LOG_TAIL_BYTES)
                    self.partial, self.skipping = b"", True
            while data := self.file.read(self.CHUNK):
                records += self._feed(data)
                if not final:
                    break
        except OSError:
            pass
        if final:
            if self.partial and not self.skipping:
                rec = parse_printed_progress(self.partial, self.exp_id, self.budget)
                records += [rec] if rec else []
            self.close()
        return records

    def _feed(self, data: bytes) -> list[ProgressRecord]:
        pieces = _LINE_BREAK_RE.split(data)
        if self.skipping:
            if len(pieces) == 1:
                return []
            pieces[0], self.skipping = b"", False
        pieces[0] = self.partial + pieces[0]
        *lines, self.partial = pieces
        if len(self.partial) > self.MAX_PARTIAL:
            self.partial, self.skipping = b"", True
        out = []
        for line in lines:
            if b"step" in line or b"STEP" in line or b"Step" in line:
                rec = parse_printed_progress(line, self.exp_id, self.budget)
                if rec is not None:
                    out.append(rec)
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.partial = None, b""


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
    try:
        result = _run(spec, env, log_file, log_start, on_progress, stop_event, on_start)
        _redact_log(log_file, log_start)
        result.error = secret.redact(result.error)
        if result.crash is not None:
            result.crash.message = secret.redact(result.crash.message)
        return result
    finally:
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
    printed: _OutputTail | None = _OutputTail(spec.log_path, log_start, spec.exp_id, spec.budget)
    t0 = time.monotonic()
    try:
        argv = spec.command if spec.sandbox is None else sandbox.wrap(spec.command, spec.sandbox, spec.cwd)
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
    tail = _MetricsTail(spec.metrics_path, spec.exp_id)
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
    if code == 0 and value is not None and math.isfinite(value):
        result.metric = value
        return result
    result.outcome = Outcome.CRASHED
    root = spec.workspace_root or spec.cwd
    result.crash, exception = parse_traceback(text, root, spec.cwd)
    if value is not None and not math.isfinite(value) and code == 0:
        fallback = f"{spec.metric} is {value} (training diverged?)"
    else:
        fallback = _describe_exit(code, spec.metric, value is not None)
    result.error = _fail_line(text) or exception[:500] or fallback
    return result


# --------------------------------------------------------------------------- executors


class TrialHandle:
    """A submitted trial: wraps a ``Future[TrialResult]`` and its stop event."""

    def __init__(self, exp_id: int, future: cf.Future[TrialResult], stop_event: threading.Event):
        self.exp_id = exp_id
        self.pid: int | None = None  # set once the process started
        self._future = future
        self._stop_event = stop_event

    def result(self, timeout: float | None = None) -> TrialResult:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def stop(self) -> None:
        """Kill the trial (or make it end STOPPED without starting, if still queued)."""
        self._stop_event.set()

    def add_done_callback(self, fn: Callable[[TrialHandle], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))


class Executor(Protocol):
    """Runs trials concurrently, ``slots`` at a time (LocalExecutor now, Ray later)."""

    slots: int

    def submit(
        self,
        spec: TrialSpec,
        on_progress: ProgressCallback | None = None,
        on_start: StartCallback | None = None,
    ) -> TrialHandle: ...

    def stop(self, exp_id: int) -> bool: ...

    def shutdown(self, wait: bool = True) -> None: ...


def detect_gpus() -> list[str]:
    """GPU ids for trials: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``; never torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip()]
        return [] if ids in ([], ["-1"]) else ids
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.MULTILINE)]


def cpu_count() -> int:
    """CPUs this process may use (affinity-aware, so container limits count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def slot_envs(slots: int, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """Per-slot variables: one GPU each where there are GPUs, and a share of the CPU threads.

    ``gpus=None`` detects them; with fewer GPUs than slots, slots share them round-robin.
    """
    gpus = detect_gpus() if gpus is None else list(gpus)
    threads = str(max(1, cpu_count() // slots))
    envs = []
    for i in range(slots):
        env = {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "SIGMALOOP_THREADS": threads,
        }
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        envs.append(env)
    return envs


class LocalExecutor:
    """Trials as local subprocesses, ``slots`` at a time; queued submissions wait for a slot.

    Each trial gets its slot's variables (:func:`slot_envs`); ``spec.env`` overrides them.
    """

    def __init__(
        self, slots: int = 1, gpus: list[str] | None = None, env_allow: Iterable[str] = ()
    ):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots}")
        self.slots = slots
        self.env_allow = tuple(env_allow)
        self.slot_envs = slot_envs(slots, gpus)
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(slots):
            self._free.put(i)
        self._pool = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="trial")
        self._handles: dict[int, TrialHandle] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self,
        spec: TrialSpec,
        on_progress: ProgressCallback | None = None,
        on_start: StartCallback | None = None,
    ) -> TrialHandle:
        stop_event = threading.Event()
        holder: list[TrialHandle] = []

        def started(exp_id: int, pid: int) -> None:
            holder[0].pid = pid
            if on_start is not None:
                on_start(exp_id, pid)

        def work() -> TrialResult:
            slot = self._free.get()  # never blocks: one worker per slot
            try:
                run_spec = dataclasses.replace(spec, env={**self.slot_envs[slot], **spec.env})
                return run_trial(run_spec, on_progress, stop_event, started, self.env_allow)
            finally:
                self._free.put(slot)

        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
            handle = TrialHandle(spec.exp_id, cf.Future(), stop_event)
            holder.append(handle)
            handle._future = self._pool.submit(work)
            self._handles[spec.exp_id] = handle
        handle._future.add_done_callback(lambda _f: self._forget(handle))
        return handle

    def _forget(self, handle: TrialHandle) -> None:
        with self._lock:
            if self._handles.get(handle.exp_id) is handle:
                del self._handles[handle.exp_id]

    def running(self) -> list[int]:
        """Ids of the trials submitted and not finished (running or queued)."""
        with self._lock:
            return list(self._handles)

    def stop(self, exp_id: int) -> bool:
        with self._lock:
            handle = self._handles.get(exp_id)
        if handle is None:
            return False
        handle.stop()
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop every running and queued trial; with ``wait``, until all have ended."""
        with self._lock:
            self._closed = True
            handles = list(self._handles.values())
        for handle in handles:
            handle.stop()
        self._pool.shutdown(wait=wait)
