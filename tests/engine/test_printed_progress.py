"""Live curves from what a script prints (autoresearch's \\r progress lines), and the kill limit
the runner is handed: real subprocesses, small budgets."""

from __future__ import annotations

import itertools
import math
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sigmaloop.models import KillLimit, Outcome, ProgressRecord, TrialSpec
from sigmaloop.output import NONFINITE_LOSS, OutputTail, loss_of, parse_printed_progress
from sigmaloop.runner import PROGRESS_INTERVAL, run_trial

pytestmark = pytest.mark.timeout(60)

AUTORESEARCH_LINE = ("\rstep 00012 (41.0%) | loss: 3.123456 | lrm: 1.00 | dt: 120ms | tok/sec: 12,345 | "
                     "mfu: 40.1% | epoch: 1 | remaining: 123s    ")

# prints like autoresearch: "\r" first, end="", flush; no SIGMALOOP_METRICS records
PRINTER = textwrap.dedent('''\
    import os, sys, time
    budget = float(os.environ["SIGMALOOP_TIME_BUDGET"])
    t0 = time.time()
    step = 0
    while True:
        time.sleep(0.02)
        frac = min((time.time() - t0) / budget, 1.0)
        print(f"\\rstep {step:05d} ({100 * frac:.1f}%) | loss: {4.0 - 2.0 * frac:.6f} | lrm: 1.00 | "
              f"dt: 20ms | tok/sec: 51,200 | mfu: 12.5% | epoch: 1 | remaining: {budget * (1 - frac):.0f}s    ",
              end="", flush=True)
        step += 1
        if frac >= 1.0:
            break
    print()
    print("---")
    print(f"val_bpb:          {1.5:.6f}")
    print(f"training_seconds: {time.time() - t0:.1f}")
''')


class Batches:
    def __init__(self) -> None:
        self.batches: list[tuple[float, list[ProgressRecord]]] = []
        self.lock = threading.Lock()

    def __call__(self, exp_id: int, records: list[ProgressRecord]) -> None:
        with self.lock:
            self.batches.append((time.monotonic(), list(records)))

    @property
    def records(self) -> list[ProgressRecord]:
        return [r for _, batch in self.batches for r in batch]


def spec_for(tmp_path: Path, script: str, budget: float = 1.0, **kw) -> TrialSpec:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (ws / "train.py").write_text(script)
    return TrialSpec(exp_id=kw.pop("exp_id", 1), cwd=str(ws), command=[sys.executable, "train.py"],
                     budget=budget, seed=42, log_path=str(tmp_path / "logs" / "1.log"),
                     metrics_path=str(tmp_path / "metrics" / "1.jsonl"), workspace_root=str(ws),
                     grace=5.0, **kw)


def test_parse_printed_progress_reads_autoresearch_lines():
    rec = parse_printed_progress(AUTORESEARCH_LINE.encode(), 7, budget=300.0)
    assert (rec.exp_id, rec.step, rec.frac, rec.loss) == (7, 12, 0.41, 3.123456)
    assert rec.t == pytest.approx(0.41 * 300)
    assert rec.extra == {"lrm": 1.0, "dt_ms": 120.0, "tok_per_s": 12345.0, "mfu": 40.1, "epoch": 1.0,
                         "remaining_s": 123.0}
    # forks vary the fields: "step N/M", "loss 3.1" without a colon, values without a name
    rec = parse_printed_progress("step 00003/1000 (0.3%) | loss 3.1 | lr: 3.00e-04 | 55 img/s | ep 2", 1, 10.0)
    assert (rec.step, rec.frac, rec.loss, rec.extra) == (3, 0.003, 3.1, {"lr": 0.0003, "ep": 2.0})
    # a NaN loss is kept as its marker (JSON and SQLite have no NaN; the anomaly detector needs
    # it); a field that is not a number is left out, never a crash
    rec = parse_printed_progress("step 00004 (1.0%) [BP] | loss: nan | note: warming up", 1, 10.0)
    assert rec.loss is None and rec.extra == {NONFINITE_LOSS: 0.0}
    assert math.isnan(loss_of(rec))


@pytest.mark.parametrize("line", ["", "stepping (12%)", "step 12 41%", "loss: 3.1 | step: x", "\x00\xff",
                                  "Training completed in 1.0s"])
def test_lines_that_are_not_progress_give_none(line):
    assert parse_printed_progress(line, 1, 10.0) is None


def test_carriage_return_progress_becomes_the_live_curve(tmp_path):
    spec = spec_for(tmp_path, PRINTER, budget=1.0)
    got = Batches()
    result = run_trial(spec, on_progress=got)
    ended = time.monotonic()
    assert result.outcome is Outcome.OK, result.error
    assert result.metric == 1.5
    recs = got.records
    assert len(recs) >= 5, recs
    steps = [r.step for r in recs]
    assert steps == sorted(set(steps))  # increasing, no repeats
    assert recs[-1].frac == 1.0 and recs[-1].loss == pytest.approx(2.0)
    assert all(r.t == pytest.approx(r.frac * 1.0) for r in recs)
    assert recs[0].extra["tok_per_s"] == 51200 and recs[0].extra["mfu"] == 12.5
    # live: batches arrived while it trained, at most 10 per second (the last one is the flush)
    times = [t for t, _ in got.batches]
    assert times[0] < ended - 0.3
    assert all(b - a >= PROGRESS_INTERVAL * 0.9 for a, b in itertools.pairwise(times[:-1]))
    assert "startup" in result.timings


def test_metrics_records_win_over_printed_lines(tmp_path):
    """A script that keeps the contract and also prints progress: its records are the curve."""
    script = textwrap.dedent('''\
        import json, os, time
        for step in range(20):
            time.sleep(0.02)
            with open(os.environ["SIGMALOOP_METRICS"], "a") as f:  # the record first, then the print
                f.write(json.dumps({"step": step, "t": 0.0, "frac": step / 19, "loss": 9.0, "src": 1}) + "\\n")
            print(f"\\rstep {step:05d} ({100 * step / 19:.1f}%) | loss: 1.0    ", end="", flush=True)
        print("\\n---\\nval_bpb: 1.0")
    ''')
    got = Batches()
    result = run_trial(spec_for(tmp_path, script, budget=0.5), on_progress=got)
    assert result.outcome is Outcome.OK, result.error
    assert [r.step for r in got.records] == list(range(20))
    assert all(r.loss == 9.0 and r.extra == {"src": 1.0} for r in got.records)


def test_output_tail_reads_only_what_is_new_and_bounds_a_runaway_line(tmp_path):
    log = tmp_path / "out.log"
    log.write_bytes(b"[sigmaloop] header\n")
    start = log.stat().st_size
    tail = OutputTail(str(log), start, exp_id=1, budget=10.0)
    with open(log, "ab") as f:
        f.write(b"\rstep 00001 (10.0%) | loss: 3.0    \rstep 00002 (20.0%) | lo")
        f.flush()
        assert [r.step for r in tail.read()] == [1]  # step 2 is not finished yet
        f.write(b"ss: 2.5    \r")
        f.flush()
        recs = tail.read()
        assert [(r.step, r.loss) for r in recs] == [(2, 2.5)]
        assert tail.read() == []  # nothing new: nothing re-read
        assert tail.file.tell() == log.stat().st_size
        # 5 MB without a line break: dropped up to the next break, never buffered whole
        f.write(b"x" * (5 << 20))
        f.flush()
        while tail.file.tell() < log.stat().st_size:
            assert tail.read() == []
            assert len(tail.partial) <= OutputTail.MAX_PARTIAL
        f.write(b"step 00099 (99.0%) | loss: 9.9\rstep 00003 (30.0%) | loss: 2.0")
    recs = tail.read(final=True)  # the unterminated last line counts at the end
    assert [r.step for r in recs] == [3]
    assert tail.file is None


def test_the_runner_kills_at_the_limit_it_is_given_and_records_it(tmp_path):
    limit = KillLimit(seconds=1.5, budget=0.5, grace=30.0, overhead=0.2, runs=2, margin=0.6)
    spec = spec_for(tmp_path, "import time\nprint('starting', flush=True)\ntime.sleep(60)\n",
                    budget=0.5, kill_limit=limit)
    t0 = time.monotonic()
    result = run_trial(spec)
    assert result.outcome is Outcome.TIMEOUT
    assert 1.5 <= time.monotonic() - t0 < 8  # not 2 x budget + grace = 31 s
    assert result.timings["limit"] == 1.5
    assert "past the kill limit of budget 0.5s + 2 x overhead 0.2s + kill_margin 0.6s = 1.5s" in result.error
    assert "raise experiment.kill_margin" in result.error
