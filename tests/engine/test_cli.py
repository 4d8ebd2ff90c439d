"""The CLI as a user runs it: real subprocesses of `sigmaloop` on real workspaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sigmaloop.config import JudgeConfig

from enginekit import git

CLI = [sys.executable, "-m", "sigmaloop.cli"]


def rl(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_baseline_loop_log_show_status_export(workspace):
    r = rl("baseline", cwd=workspace)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "baseline (seed 42)" in r.stdout and "reference" in r.stdout
    r = rl("loop", "-n", "2", "--slots", "2", "--proposer", "tune", cwd=workspace)
    assert r.returncode == 0, r.stdout + r.stderr
    r = rl("log", "--json", cwd=workspace)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["id"] for row in rows][:2] == [1, 2]
    assert rows[2]["source"] == "tune" and rows[2]["diff"]
    r = rl("show", "3", cwd=workspace)
    assert r.returncode == 0 and "experiment #3" in r.stdout and "@@" in r.stdout
    assert "log tail" in r.stdout
    r = rl("status", cwd=workspace)
    assert "sigmaloop/test" in r.stdout and "± " in r.stdout
    assert "over 2 seeds (lower is better)" in r.stdout
    # the best is the head's mean over its seeds (never one lucky seed), with the bar to beat
    assert "the head's mean over 2 seeds: #" in r.stdout and "keep bar" in r.stdout
    r = rl("export", "--format", "csv", "-o", str(workspace / "out.csv"), cwd=workspace)
    assert r.returncode == 0 and (workspace / "out.csv").read_text().startswith("id,")


def test_errors_are_one_clear_line_and_exit_2(workspace, tmp_path):
    r = rl("status", cwd=tmp_path)
    assert r.returncode == 2 and "sigmaloop init" in r.stderr and "Traceback" not in r.stderr
    r = rl("show", "99", cwd=workspace)
    assert r.returncode == 2 and "#99" in r.stderr and "Traceback" not in r.stderr
    (workspace / "sigmaloop.toml").write_text("[judge]\nk = -1\n")
    r = rl("status", cwd=workspace)
    assert r.returncode == 2 and "judge.k" in r.stderr
    git(workspace, "checkout", "--", "sigmaloop.toml")
    r = rl("adopt", "1", cwd=workspace)
    assert r.returncode == 2 and "no experiment #1" in r.stderr
    r = rl("loop", "--slots", "0", cwd=workspace)
    assert r.returncode == 2 and "runner.slots must be >= 1" in r.stderr


def test_init_makes_a_committed_workspace(tmp_path):
    r = rl("init", str(tmp_path / "proj"), "--budget", "30", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    proj = tmp_path / "proj"
    for name in ("prepare.py", "train.py", "program.md", "sigmaloop.toml"):
        assert (proj / name).exists()
    assert "budget = 30" in (proj / "sigmaloop.toml").read_text()
    assert ".sigmaloop/" in (proj / ".gitignore").read_text()
    assert git(proj, "status", "--porcelain").strip() == ""
    assert "train.py" in git(proj, "ls-files")
    assert "committed to main: prepare.py, train.py, program.md, sigmaloop.toml, .gitignore" in r.stdout
    # running it again keeps the user's edits: the folder already is a workspace
    (proj / "train.py").write_text("# mine\n")
    r = rl("init", str(proj), cwd=tmp_path)
    assert r.returncode == 0 and "already a sigmaloop workspace" in r.stdout
    assert (proj / "train.py").read_text() == "# mine\n"


@pytest.mark.slow
def test_demo_runs_the_real_trainer_end_to_end(tmp_path):
    """The README's first command, small: real prepare, real train.py trials at a 3 s budget."""
    env = {"SIGMALOOP_CACHE": str(tmp_path / "cache")}
    r = rl("demo", "--dir", str(tmp_path / "demo"), "--budget", "3", "-n", "1", cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ws = tmp_path / "demo"
    tsv = (ws / "results.tsv").read_text().splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    seeds = len(JudgeConfig().seeds)
    assert sum("\tkeep\t" in line for line in tsv) >= seeds  # the baselines
    rows = [json.loads(x) for x in rl("log", "--json", cwd=ws).stdout.splitlines()]
    baselines = [x for x in rows if x["source"] == "baseline"]
    assert len(baselines) == seeds and all(x["metric"] and x["metric"] < 6 for x in baselines)
    assert all(x["evaluator"].startswith("prepare:") and x["printed_metric"] is None for x in baselines)
    tuned = [x for x in rows if x["source"] == "tune" and x["confirms"] is None]
    assert len(tuned) == 1 and tuned[0]["status"] in ("kept", "discarded", "crashed", "rejected")
    assert "where everything is" in r.stdout
    # it ends with what it learned, kept or not: the reference, the tally, the bar or the keep, a next step
    learned = r.stdout[r.stdout.index("what the demo learned"):]
    assert "Reference: val_bpb" in learned and "Next:" in learned
    assert "Of 1 edit run:" in learned or "1 proposal was rejected before running" in learned
    assert "Kept #" in learned or "The smallest effect that could have been kept" in learned
    # and the morning report of that real night, written at its end, as Chromium shows it
    from test_morning_report import chromium_view

    page = ws / ".sigmaloop" / "report.html"
    assert f"morning report: {page.resolve().as_uri()}" in r.stdout.replace("\n", "")
    view = chromium_view(page, tmp_path)
    assert view["requests"] == [] and view["consoleErrors"] == [] and view["pageErrors"] == []
    assert view["ids"] == ["timeline", "kept", "refuted", "calibration", "weird", "noise", "cost", "questions"]
    timeline = view["sections"]["timeline"]["charts"]
    assert [c["kind"] for c in timeline] == ["timeline", "scatter"] and all(c["marks"] > 0 for c in timeline)
    assert view["sections"]["noise"]["charts"][0]["marks"] >= seeds  # the real reference runs, one dot a seed
    assert "Which learning rate" in view["sections"]["questions"]["text"]  # the trainer's program.md question


LONG = ("a much longer hypothesis than any terminal row can hold: the bias moves the metric down because "
        "the stand-in adds it to val_bpb, and we want to see the row cut rather than wrapped")


def test_questions_run_edit_and_an_80_column_log(workspace):
    """As over SSH: ask a question, run an edit of the saved script for it, read its page, close it;
    the log is one line per experiment at 80 columns, more at 160."""
    narrow = {"COLUMNS": "80"}
    assert rl("baseline", cwd=workspace, env=narrow).returncode == 0
    r = rl("ask", "Does a negative bias help?", "--decision", "≥ 0.05 better: I keep it", cwd=workspace)
    assert r.returncode == 0 and r.stdout.startswith("question #1 (open): Does a negative bias help?"), r.stdout
    # the saved file differs from the research head: run-edit says so, then runs it for question 1
    train = workspace / "train.py"
    train.write_text(train.read_text().replace("BIAS = 0.0 ", "BIAS = -0.2 "))
    r = rl("run-edit", "-H", LONG, "--question", "1", cwd=workspace, env=narrow)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 line differs from the research head" in r.stdout and "#3 queued (source user)" in r.stdout
    assert "0.2000 val_bpb better" in r.stdout and "keep bar" in r.stdout and "kept" in r.stdout
    # the same text again is the head now: nothing to run, said in one line
    r = rl("run-edit", cwd=workspace)
    assert r.returncode == 2 and "same as the research head" in r.stderr

    r = rl("log", cwd=workspace, env=narrow)
    lines = r.stdout.splitlines()
    rows = [json.loads(x) for x in rl("log", "--json", cwd=workspace).stdout.splitlines()]
    assert len(lines) == 1 + len(rows), r.stdout  # a header, then exactly one line per experiment
    assert all(len(line) <= 80 for line in lines), [len(x) for x in lines]
    assert lines[0].split()[:5] == ["#", "status", "val_bpb", "Δ", "vs"] and "q" in lines[0].split()
    mine = next(line for line in lines if line.lstrip().startswith("3 "))
    assert "0.2000 better" in mine and " q1 " in mine and mine.endswith("…") and LONG[:20] in mine
    r = rl("log", cwd=workspace, env={"COLUMNS": "160"})
    wide = r.stdout.splitlines()
    assert all(len(line) <= 160 for line in wide) and "source" in wide[0] and "seed" in wide[0]
    assert len(next(line for line in wide if line.lstrip().startswith("3 "))) > len(mine)

    r = rl("questions", cwd=workspace, env=narrow)
    assert r.stdout.splitlines()[0].split()[:4] == ["#1", "open", "1", "exp"], r.stdout
    r = rl("question", "1", cwd=workspace, env=narrow)
    assert "decision  ≥ 0.05 better: I keep it" in r.stdout and "open: #3 kept" in r.stdout
    page = r.stdout.splitlines()
    row = next(line for line in page if line.lstrip().startswith("#3 "))
    assert "0.2000 better ± " in row and len(row) <= 80
    r = rl("question", "1", "--close", "yes: −0.2 bias is 0.2 bpb better", cwd=workspace)
    assert r.returncode == 0 and "question #1 is answered: yes" in r.stdout
    assert "answered" in rl("questions", "--all", cwd=workspace).stdout
    r = rl("status", cwd=workspace)  # the best: the kept edit's code, its mean over its two seeds
    assert "the head's mean over 2 seeds: #3 a much longer" in r.stdout, r.stdout
    r = rl("report", cwd=workspace, env=narrow)
    # the morning report's terminal summary: what was kept, what to do next, where the page is,
    # every line within the 80 columns but the page's address (a link stays whole)
    assert "Kept #3" in r.stdout and "\nnext " in r.stdout and "\nreport file://" in r.stdout, r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines() if "file://" not in line), r.stdout


def test_export_to_mlflow_from_the_command_line(workspace, tmp_path):
    """`sigmaloop export --mlflow`: the default local store, read back with MLflow's own client;
    run again, nothing is written twice; without the client, one line that says what to install."""
    from mlflow import MlflowClient

    assert rl("baseline", cwd=workspace).returncode == 0
    r = rl("export", "--mlflow", cwd=workspace, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    db = workspace / ".sigmaloop" / "mlflow" / "mlflow.db"
    assert "MLflow: 2 new, 0 updated, 0 unchanged runs" in r.stdout and f"sqlite:///{db}" in r.stdout
    assert "mlflow ui --backend-store-uri" in r.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (exp,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([exp.experiment_id])
    assert sorted(run.data.params["seed"] for run in runs) == ["42", "43"]
    assert all(run.data.metrics["val_bpb"] > 0 for run in runs)
    again = rl("export", "--mlflow", cwd=workspace, timeout=300)
    assert "MLflow: 0 new, 0 updated, 2 unchanged runs" in again.stdout, again.stdout + again.stderr
    other = tmp_path / "other.db"
    r = rl("export", "--mlflow", f"sqlite:///{other}", "--experiment", "night-1", cwd=workspace, timeout=300)
    assert r.returncode == 0 and "'night-1'" in r.stdout and other.exists()
    r = rl("export", "--mlflow", "nosuch://store", cwd=workspace, timeout=120)
    assert r.returncode == 2 and "MLflow export failed" in r.stderr and "Traceback" not in r.stderr
    # no mlflow client installed: a clear line and exit 2, nothing half-done
    code = ("import sys; sys.modules['mlflow'] = None; from sigmaloop.cli import main; "
            f"sys.exit(main(['--workspace', {str(workspace)!r}, 'export', '--mlflow']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'pip install "sigmaloop[mlflow]"' in r.stderr and "Traceback" not in r.stderr
