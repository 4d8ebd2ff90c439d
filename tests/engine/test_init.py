"""`sigmaloop init` on the user's own project, as a user runs it: real CLI subprocesses, real git."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sigmaloop import config as config_mod
from sigmaloop.project import (
    autoresearch_command,
    detect_autoresearch,
    printed_names,
    trainer_template,
)

from autoresearchkit import PREPARE, TRAIN, make_autoresearch
from enginekit import git

CLI = [sys.executable, "-m", "sigmaloop.cli"]

FIT = textwrap.dedent('''\
    """The user's own training script: not ours, prints its metric at the end."""
    import os
    import time

    LR = 0.01
    EPOCHS = 3

    budget = float(os.environ.get("SIGMALOOP_TIME_BUDGET", "1"))
    for epoch in range(EPOCHS):
        time.sleep(budget / EPOCHS)
        print(f"epoch {epoch} loss: {1.0 / (epoch + 1):.3f}")
    print(f"val_accuracy: {0.9 - abs(LR - 0.01):.4f}")
''')


def rl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def own_project(path: Path, git_repo: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "fit.py").write_text(FIT)
    (path / "helpers.py").write_text("def helper():\n    return 1\n")
    if git_repo:
        git(path, "init", "-q", "-b", "main")
        git(path, "add", "helpers.py")
        git(path, "commit", "-qm", "helpers")
    return path


def committed_files(repo: Path) -> list[str]:
    return sorted(git(repo, "show", "--name-only", "--format=", "HEAD").split())


# --------------------------------------------------------------------------- the user's own script


def test_script_flags_write_the_config_and_copy_none_of_our_trainer(tmp_path):
    proj = own_project(tmp_path / "proj", git_repo=True)
    r = rl("init", "--script", "fit.py", "--metric", "val_accuracy", "--direction", "maximize",
           "--command", "python fit.py --fast", "--budget", "2", cwd=proj)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = config_mod.load(proj)
    e = cfg.experiment
    assert (e.train_script, e.command, e.metric, e.direction, e.budget) == \
        ("fit.py", "python fit.py --fast", "val_accuracy", "maximize", 2.0)
    assert not cfg.lower_is_better
    for ours in ("prepare.py", "train.py", "program.md"):
        assert not (proj / ours).exists()
    # what was committed is printed, and is exactly that
    assert "committed to main: sigmaloop.toml, .gitignore, fit.py" in r.stdout
    assert committed_files(proj) == [".gitignore", "fit.py", "sigmaloop.toml"]
    assert git(proj, "status", "--porcelain").strip() == ""
    assert "using your script fit.py" in r.stdout and "higher is better" in r.stdout
    # helpers.py was committed before; the user's script is not edited
    assert (proj / "fit.py").read_text() == FIT


def test_no_commit_leaves_everything_uncommitted_and_says_what_to_commit(tmp_path):
    proj = own_project(tmp_path / "proj")
    r = rl("init", str(proj), "--script", "fit.py", "--metric", "val_accuracy", "--no-commit", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (proj / "sigmaloop.toml").exists() and (proj / ".git").is_dir()
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=proj).returncode != 0
    untracked = git(proj, "status", "--porcelain", "--untracked-files=all")
    assert "?? sigmaloop.toml" in untracked and "?? fit.py" in untracked
    assert "not committed (--no-commit): sigmaloop.toml, .gitignore, fit.py" in r.stdout
    assert "git add sigmaloop.toml .gitignore fit.py && git commit" in r.stdout
    assert "helpers.py" in r.stdout  # untracked, so trials would not see it: said so


def test_a_script_in_a_subfolder_given_by_absolute_path(tmp_path):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "fit.py").write_text(FIT)
    r = rl("init", str(proj), "--script", str(proj / "src" / "fit.py"), "--metric", "val_accuracy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    e = config_mod.load(proj).experiment
    assert (e.train_script, e.command) == ("src/fit.py", "python src/fit.py")
    assert committed_files(proj) == [".gitignore", "sigmaloop.toml", "src/fit.py"]


def test_a_folder_with_a_script_and_no_flags_writes_nothing_and_says_what_to_run(tmp_path):
    proj = own_project(tmp_path / "proj")
    r = rl("init", cwd=proj)
    assert r.returncode == 2
    assert "found fit.py (and 1 more: helpers.py)" in r.stderr
    assert "sigmaloop init --script fit.py --metric val_accuracy" in r.stderr  # read from its print
    assert "--trainer" in r.stderr and "wrote nothing" in r.stderr
    assert sorted(p.name for p in proj.iterdir()) == ["fit.py", "helpers.py"]  # not even git init


def test_trainer_flag_copies_our_trainer_next_to_other_files_but_never_over_them(tmp_path):
    proj = own_project(tmp_path / "proj")
    r = rl("init", "--trainer", "--budget", "5", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert (proj / "train.py").read_bytes() == (trainer_template() / "train.py").read_bytes()
    assert (proj / "fit.py").read_text() == FIT
    assert "budget = 5" in (proj / "sigmaloop.toml").read_text()

    other = tmp_path / "other"
    other.mkdir()
    (other / "train.py").write_text("# mine\n")
    r = rl("init", "--trainer", cwd=other)
    assert r.returncode == 2 and "train.py already exists" in r.stderr and "--force" in r.stderr
    assert (other / "train.py").read_text() == "# mine\n" and not (other / "sigmaloop.toml").exists()


@pytest.mark.parametrize("args, message", [
    (["--script", "nope.py", "--metric", "m"], "--script nope.py: no such file in"),
    (["--script", "../outside.py", "--metric", "m"], "must be inside the workspace folder"),
    (["--script", "notes.txt", "--metric", "m"], "must be a Python file"),
    (["--script", "fit.py"], "--metric is needed with --script"),
    (["--script", "fit.py", "--metric", ""], "--metric is empty"),
    (["--script", "fit.py", "--metric", "val accuracy"], "can't be read from the output"),
    (["--script", "fit.py", "--metric", "m", "--direction", "up"], "--direction must be minimize"),
    (["--script", "fit.py", "--metric", "m", "--budget", "0"], "--budget must be a positive number"),
    (["--script", "fit.py", "--metric", "m", "--budget", "nan"], "--budget must be a positive number"),
    (["--script", "fit.py", "--metric", "m", "--command", "  "], "--command is empty"),
    (["--script", "fit.py", "--metric", "m", "--command", "python 'fit.py"], "is not a valid command line"),
    (["--script", "fit.py", "--metric", "m", "--trainer"], "--trainer and --script exclude each other"),
    (["--metric", "val_accuracy"], "add --script"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, args, message):
    proj = own_project(tmp_path / "proj")
    (proj / "notes.txt").write_text("not python\n")
    (tmp_path / "outside.py").write_text("print('x: 1')\n")
    r = rl("init", *args, cwd=proj)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("error:")
    assert not (proj / "sigmaloop.toml").exists() and not (proj / ".git").exists()


def test_missing_metric_is_suggested_from_what_the_script_prints(tmp_path):
    proj = own_project(tmp_path / "proj")
    r = rl("init", "--script", "fit.py", cwd=proj)
    assert "e.g. --metric val_accuracy (fit.py prints `val_accuracy: …`)" in r.stderr
    assert printed_names(FIT)[0] == "val_accuracy"


def test_an_existing_workspace_is_left_alone_unless_forced(tmp_path):
    proj = own_project(tmp_path / "proj")
    assert rl("init", "--script", "fit.py", "--metric", "val_accuracy", cwd=proj).returncode == 0
    before = (proj / "sigmaloop.toml").read_text()
    r = rl("init", cwd=proj)
    assert r.returncode == 0 and "already a sigmaloop workspace" in r.stdout
    r = rl("init", "--script", "fit.py", "--metric", "loss", cwd=proj)
    assert r.returncode == 2 and "add --force" in r.stderr
    assert (proj / "sigmaloop.toml").read_text() == before
    r = rl("init", "--script", "fit.py", "--metric", "loss", "--force", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert config_mod.load(proj).experiment.metric == "loss"
    assert "committed to main: sigmaloop.toml" in r.stdout


def test_a_tracked_script_with_uncommitted_edits_is_not_committed_by_init(tmp_path):
    proj = own_project(tmp_path / "proj", git_repo=True)
    git(proj, "add", "fit.py")
    git(proj, "commit", "-qm", "fit")
    (proj / "fit.py").write_text(FIT + "# work in progress\n")
    r = rl("init", "--script", "fit.py", "--metric", "val_accuracy", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert committed_files(proj) == [".gitignore", "sigmaloop.toml"]
    assert "fit.py has uncommitted changes" in r.stdout
    assert git(proj, "status", "--porcelain").strip() == "M fit.py"


# --------------------------------------------------------------------------- autoresearch projects


def test_init_detects_an_autoresearch_project_and_edits_none_of_its_files(tmp_path):
    proj = make_autoresearch(tmp_path / "autoresearch")
    (proj / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")
    r = rl("init", cwd=proj)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "found an autoresearch project: prepare.py defines TIME_BUDGET (300) and evaluate_bpb" in r.stdout
    assert "sets prepare.TIME_BUDGET from SIGMALOOP_TIME_BUDGET" in r.stdout
    assert "results.tsv exists and is yours" in r.stdout
    e = config_mod.load(proj).experiment
    assert (e.train_script, e.metric, e.direction, e.budget) == ("train.py", "val_bpb", "minimize", 300.0)
    assert e.command == autoresearch_command(detect_autoresearch(proj))
    # its data cache stays readable to sandboxed trials
    assert config_mod.load(proj).runner.read_only == ["~/.cache/autoresearch"]
    assert "data cache: ~/.cache/autoresearch" in r.stdout
    assert (proj / "prepare.py").read_text() == PREPARE and (proj / "train.py").read_text() == TRAIN
    assert committed_files(proj) == [".gitignore", "sigmaloop.toml"]
    assert "committed to master: sigmaloop.toml, .gitignore" in r.stdout
    # --budget wins over TIME_BUDGET
    r = rl("init", "--budget", "2", "--force", cwd=proj)
    assert r.returncode == 0 and config_mod.load(proj).experiment.budget == 2.0


def test_the_launcher_runs_train_py_with_the_budget_from_the_environment(tmp_path):
    proj = make_autoresearch(tmp_path / "autoresearch")
    project = detect_autoresearch(proj)
    assert project.time_budget == 300 and project.budget_from_prepare
    cfg = config_mod.Config()
    cfg.experiment.command = autoresearch_command(project)
    r = subprocess.run(cfg.trial_command(), cwd=proj, capture_output=True, timeout=60,
                       env={**os.environ, "SIGMALOOP_TIME_BUDGET": "0.5"})
    out = r.stdout.decode()  # bytes: text mode would turn the \r into newlines
    assert r.returncode == 0, r.stderr
    assert "\rstep 00000 (0.0%) | loss:" in out and "\nstep 0" not in out
    summary = dict(line.split(":", 1) for line in out.split("---\n")[1].splitlines())
    assert 0.5 <= float(summary["training_seconds"]) < 1.0  # 0.5 s, not TIME_BUDGET's 300
    assert float(summary["val_bpb"]) > 1.0


def test_what_is_not_an_autoresearch_project(tmp_path):
    assert detect_autoresearch(Path(str(trainer_template()))) is None  # ours: evaluate_bpb, no TIME_BUDGET
    proj = make_autoresearch(tmp_path / "a", commit=False)
    (proj / "train.py").write_text(TRAIN.replace("val_bpb", "score"))
    assert detect_autoresearch(proj) is None  # prints no val_bpb
    proj = make_autoresearch(tmp_path / "b", commit=False)
    (proj / "prepare.py").write_text("TIME_BUDGET = (\n")  # not Python
    assert detect_autoresearch(proj) is None
    proj = make_autoresearch(tmp_path / "c", commit=False)
    (proj / "prepare.py").write_text(PREPARE.replace("TIME_BUDGET = 300", "TIME_BUDGET = 5 * 60"))
    (proj / "train.py").write_text(TRAIN.replace("from prepare import TIME_BUDGET, evaluate_bpb",
                                                 "from prepare import evaluate_bpb\nTIME_BUDGET = 10"))
    found = detect_autoresearch(proj)
    assert found.time_budget == 300 and not found.budget_from_prepare
    r = rl("init", cwd=proj)
    assert r.returncode == 0 and "does not take TIME_BUDGET from prepare.py" in r.stdout
