"""What a trial writes, read back: metrics records, printed progress, the summary block and
tracebacks — incrementally and within bounds, whatever the trial does."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
from pathlib import Path
from typing import IO

from .models import CrashLocation, ProgressRecord

LOG_TAIL_BYTES = 4 << 20  # how much of the log end is parsed for the summary and traceback
MAX_RECORDS_PER_POLL = 50  # a flood of metrics records is thinned to this many per poll

_SUMMARY_RE = re.compile(r"^([A-Za-z_]\w*):\s+(\S+)\s*$")
_FRAME_RE = re.compile(r'^\s+File "(?P<file>.+)", line (?P<line>\d+)(?:, in .*)?$')
_EXC_RE = re.compile(r"^[A-Za-z_][\w.]*(?::.*)?$")
# autoresearch's progress line: "step 00012 (41.0%) | loss: 3.123456 | lrm: 1.00 | dt: 120ms | ..."
_PRINTED_STEP_RE = re.compile(r"\bstep[\s:]*(\d+)(?:\s*/\s*\d+)?\s*\(\s*(\d+(?:\.\d*)?)\s*%\s*\)(.*)$", re.I)
_PRINTED_FIELD_RE = re.compile(
    r"^\s*([A-Za-z][\w/.-]*(?:\s[A-Za-z][\w/.-]*)?)\s*(?::\s*|=\s*|\s+)"
    r"([-+]?(?:(?:\d[\d,]*)?\.?\d+(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?)))\s*(%|ms|s)?\s*$"
)
#: A loss that is NaN or ±inf is stored as ``loss`` None (JSON, SQLite and the wire have no NaN)
#: with this extra saying which: 0 NaN, 1 +inf, -1 -inf. :func:`loss_of` reads it back.
NONFINITE_LOSS = "nonfinite_loss"
_LINE_BREAK_RE = re.compile(rb"[\r\n]")



def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _nonfinite_code(value: object) -> float | None:
    """0 / 1 / -1 for a NaN / +inf / -inf number (or its spelling as a string), else None."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, float) or math.isfinite(value):
        return None
    return 0.0 if math.isnan(value) else math.copysign(1.0, value)


def loss_of(record: ProgressRecord) -> float | None:
    """The loss the trial reported, NaN and ±inf included (stored as None + NONFINITE_LOSS)."""
    if record.loss is not None:
        return record.loss
    code = record.extra.get(NONFINITE_LOSS)
    if code is None:
        return None
    return math.nan if code == 0 else math.copysign(math.inf, code)


def parse_progress_line(line: bytes | str, exp_id: int) -> ProgressRecord | None:
    """One metrics line as a record; None for garbage (not JSON, no numeric ``step``).

    Non-finite numbers are dropped so records stay JSON-safe; a NaN or infinite loss becomes
    ``loss`` None with the NONFINITE_LOSS extra (the anomaly check must still see it).
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
        if key not in ("step", "t", "frac", "loss", NONFINITE_LOSS) and (num := _number(value)) is not None:
            extra[str(key)] = num
    loss = _number(data.get("loss"))
    if loss is None and (code := _nonfinite_code(data.get("loss"))) is not None:
        extra[NONFINITE_LOSS] = code
    return ProgressRecord(
        exp_id=exp_id,
        step=int(step),
        t=_number(data.get("t")) or 0.0,
        frac=_number(data.get("frac")) or 0.0,
        loss=loss,
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
        name = _printed_field(f.group(1), f.group(3))
        if not math.isfinite(value):
            if name in ("loss", "train_loss") and loss is None:
                extra[NONFINITE_LOSS] = _nonfinite_code(value)  # type: ignore[assignment]
            continue
        if name in ("loss", "train_loss"):
            loss = value if loss is None else loss
        elif name and name not in ("step", "t", "frac", NONFINITE_LOSS):
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


def fail_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.startswith("FAIL"):
            return line.strip()[:500]
    return ""


def describe_exit(code: int | None, metric: str, has_metric: bool) -> str:
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


class MetricsTail:
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


class OutputTail:
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


