"""An imported autoresearch project through the real engine: init → baseline → a hung edit.

The project is autoresearchkit's fixture (their layout and output, our tiny stdlib code):
``train.py`` takes TIME_BUDGET from prepare.py (300 s), prints \\r progress lines and writes
no metrics file. Everything is real: the CLI's init, git, SQLite, trial subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sigmaloop.engine import Engine
from sigmaloop.events import TrialProgress
from sigmaloop.killlimit import kill_limit
from sigmaloop.models import MEASURED, Proposal, Status

from autoresearchkit import make_autoresearch
from enginekit import edit, git

pytestmark = pytest.mark.timeout(120)


def imported(tmp_path: Path, budget: str = "1", **settings: str) -> Path:
    """The fixture, committed like a clone, imported with `sigmaloop init --budget N`."""
    proj = make_autoresearch(tmp_path / "autoresearch")
    for name, value in settings.items():  # a constant of their train.py, committed
        path = proj / "train.py"
        text = path.read_text()
        old = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
        path.write_text(text.replace(old, f"{name} = {value}", 1))
    git(proj, "commit", "-qam", "fixture settings", "--allow-empty")
    r = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "init", "--budget", budget], cwd=proj,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return proj


def set_limits(proj: Path, grace: float, kill_margin: float) -> None:
    cfg = proj / "sigmaloop.toml"
    lines = []
    for line in cfg.read_text().splitlines():
        if line.startswith("grace = "):
            line = f"grace = {grace:g}"
        elif line.startswith("kill_margin = "):
            line = f"kill_margin = {kill_margin:g}"
        lines.append(line)
    cfg.write_text("\n".join(lines) + "\n")


def test_baseline_gets_its_live_curve_from_printed_progress_and_honours_the_budget(tmp_path):
    proj = imported(tmp_path, budget="1")
    eng = Engine(proj)
    live: list[tuple[float, int]] = []
    lock = threading.Lock()

    def on_event(event) -> None:
        if isinstance(event, TrialProgress):
            with lock:
                live.extend((time.monotonic(), r.step) for r in event.records)

    eng.bus.subscribe(on_event)
    try:
        t0 = time.monotonic()
        exp = eng.run_baseline(seeds=[42])[0]
        ended = time.monotonic()
        assert exp.status == Status.KEPT, exp.verdict
        assert exp.metric is not None and 1.0 < exp.metric < 1.6
        # SIGMALOOP_TIME_BUDGET reached train.py through prepare.TIME_BUDGET: 1 s, not 300
        assert 1.0 <= exp.timings["train"] < 2.0
        assert ended - t0 < 30
        # the \r progress lines are the curve: many points, in order, t = frac x budget, extras
        curve = eng.journal.curve(exp.id)
        assert len(curve) >= 5
        assert [r.step for r in curve] == sorted({r.step for r in curve})
        assert curve[-1].frac == pytest.approx(1.0) and curve[0].frac < 0.5
        assert all(r.t == pytest.approx(r.frac * 1.0, abs=1e-3) for r in curve)
        assert curve[-1].loss < curve[0].loss
        assert {"tok_per_s", "mfu", "dt_ms", "lrm"} <= set(curve[-1].extra)
        # delivered live, while the trial ran
        assert live and live[0][0] < ended - 0.5
        assert "startup" in exp.timings and exp.timings["limit"] == 2 * 1 + 120  # first run: generous
        # their files were never edited
        assert git(proj, "status", "--porcelain", "--", "train.py", "prepare.py").strip() == ""
    finally:
        eng.close()


def test_learned_kill_limit_spares_a_slow_start_and_kills_a_hang_sooner(tmp_path):
    # a 1 s fixed start-up cost (like a compile) on a 1 s budget
    proj = imported(tmp_path, budget="1", STARTUP="1.0")
    set_limits(proj, grace=10, kill_margin=1)
    eng = Engine(proj)
    try:
        first, second = eng.run_baseline(seeds=[42, 43])
        # the first reference run has no history: 2 x budget + grace, so its start-up cost is fine
        assert first.status == Status.KEPT, first.verdict
        assert first.timings["limit"] == 12.0
        assert first.timings["wall"] > 1 + 1  # budget + kill_margin alone would have killed it
        # the second one ran under the limit learned from the first, and fit
        assert second.status == Status.KEPT, second.verdict
        assert second.timings["limit"] < 12.0 and second.timings["wall"] < second.timings["limit"]

        expected = kill_limit(1.0, 10.0, 1.0, eng.journal.by_status(*MEASURED))
        assert expected.learned and expected.overhead >= 1.0
        source = eng.head_source()
        hung = eng.add_proposal(Proposal(edit(source, "HANG = False", "HANG = True"), "hang", "user"))
        t0 = time.monotonic()
        exp = eng.run(hung.id)
        took = time.monotonic() - t0
        assert exp.status == Status.TIMEOUT
        assert exp.timings["limit"] == pytest.approx(expected.seconds, abs=1e-3)
        assert expected.seconds <= took < 12.0  # sooner than 2 x budget + grace
        assert "2 x overhead" in exp.verdict and "kill_margin 1s" in exp.verdict
        assert "raise experiment.kill_margin" in exp.verdict
        assert exp.pid is None
    finally:
        eng.close()


def test_a_user_script_without_progress_or_metrics_still_runs(tmp_path):
    """The user's own script via `init --script`: no curve to read, a metric all the same."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "fit.py").write_text(
        "import os, time\n"
        "LR = 0.1\n"
        "time.sleep(float(os.environ['SIGMALOOP_TIME_BUDGET']))\n"
        "print(f'val_accuracy: {0.8 + LR:.3f}')\n"
    )
    r = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "init", "--script", "fit.py", "--metric",
                        "val_accuracy", "--direction", "maximize", "--budget", "0.3"],
                       cwd=proj, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    eng = Engine(proj)
    try:
        exps = eng.run_baseline(seeds=[42, 43])
        assert [e.status for e in exps] == [Status.KEPT, Status.KEPT], [e.verdict for e in exps]
        assert all(e.metric == pytest.approx(0.9) for e in exps)
        assert eng.journal.curve(exps[0].id) == []
    finally:
        eng.close()


def test_their_results_tsv_is_never_overwritten(tmp_path):
    """autoresearch keeps its own results.tsv: ours goes to the state folder, theirs stays as is."""
    proj = make_autoresearch(tmp_path / "autoresearch")
    theirs = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t0.997900\t44.0\tkeep\tbaseline\n"
    (proj / "results.tsv").write_text(theirs)
    git(proj, "add", "results.tsv")
    git(proj, "commit", "-qm", "their log")
    r = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "init", "--budget", "1"], cwd=proj,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "leaves it alone" in r.stdout, r.stdout + r.stderr
    eng = Engine(proj)
    try:
        exp = eng.run_baseline(seeds=[42])[0]
        assert exp.status == Status.KEPT, exp.verdict
        assert (proj / "results.tsv").read_text() == theirs
        ours = (proj / ".sigmaloop" / "results.tsv").read_text().splitlines()
        assert len(ours) == 2 and ours[1].startswith(exp.commit[:7])
        assert eng.results_path() == proj / ".sigmaloop" / "results.tsv"
    finally:
        eng.close()


def test_our_own_results_tsv_keeps_being_updated_in_place(tmp_path):
    proj = imported(tmp_path, budget="1")
    eng = Engine(proj)
    try:
        eng.run_baseline(seeds=[42])
        assert eng.results_path() == proj / "results.tsv"
        eng.run_baseline(seeds=[43])
        assert len((proj / "results.tsv").read_text().splitlines()) == 3  # header + 2 runs, same file
        (proj / "results.tsv").write_text("edited by hand\n")  # now it is the user's
        assert eng.results_path() == proj / ".sigmaloop" / "results.tsv"
    finally:
        eng.close()
