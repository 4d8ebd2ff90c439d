"""Isolation through the real engine: every trial sandboxed (or marked not), git hooks never run,
and two engines on one workspace never run trials at once."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import pytest

from sigmaloop import sandbox
from sigmaloop.engine import Engine
from sigmaloop.events import Notice
from sigmaloop.models import Status

from enginekit import git


def set_runner(workspace, **values: str) -> None:
    cfg = workspace / "sigmaloop.toml"
    lines = "\n".join(f"{k} = {v}" for k, v in values.items())
    cfg.write_text(cfg.read_text() + f"\n[runner]\n{lines}\n")
    git(workspace, "commit", "-qam", "runner settings")


def test_trials_are_sandboxed_and_say_so(workspace):
    eng = Engine(workspace)
    try:
        exps = eng.run_baseline()
        assert [e.status for e in exps] == [Status.KEPT, Status.KEPT]
        assert all(e.sandboxed is True for e in exps)
    finally:
        eng.close()
    out = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "show", str(exps[0].id)], cwd=workspace,
                         capture_output=True, text=True, timeout=60).stdout
    assert "sandbox" in out and "yes" in out


def test_without_bubblewrap_auto_says_so_once_and_marks_the_trials(workspace, monkeypatch):
    monkeypatch.setattr(sandbox, "availability", lambda: "bubblewrap is not installed (test)")
    eng = Engine(workspace)
    notices: list[str] = []
    eng.bus.subscribe(lambda ev: notices.append(ev.message) if isinstance(ev, Notice) else None)
    try:
        exps = eng.run_baseline()
        assert all(e.status == Status.KEPT and e.sandboxed is False for e in exps)
        said = [n for n in notices if "unsandboxed" in n]
        assert len(said) == 1 and "bubblewrap is not installed" in said[0]
    finally:
        eng.close()
    out = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "log"], cwd=workspace,
                         capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    # each row marked (its status starred), and the mark said once under the table
    assert sum(line.split()[1] == "kept*" for line in out.splitlines()[1:] if line.strip()[:1].isdigit()) == 2, out
    assert out.count("ran unsandboxed") == 1


def test_sandbox_on_refuses_to_run_without_it(workspace, monkeypatch):
    set_runner(workspace, sandbox='"on"')
    monkeypatch.setattr(sandbox, "availability", lambda: "bubblewrap is not installed (test)")
    eng = Engine(workspace)
    try:
        exp = eng.run_baseline(seeds=[42])[0]
        assert exp.status == Status.CRASHED and exp.sandboxed is None
        assert 'runner.sandbox = "on"' in exp.verdict and "bubblewrap is not installed" in exp.verdict
    finally:
        eng.close()


def test_a_planted_git_hook_never_runs(workspace):
    marker = workspace.parent / "hook-ran"
    hook = workspace / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\necho ran > {marker}\n")
    hook.chmod(0o755)
    eng = Engine(workspace)
    try:
        assert eng.run_baseline(seeds=[42])[0].status == Status.KEPT  # made and removed a worktree
    finally:
        eng.close()
    assert not marker.exists()


def test_two_engines_on_one_workspace_never_overlap_trials(workspace):
    """The CLI beside another engine (e.g. the editor's): the second waits for the first."""
    code = textwrap.dedent(f"""
        from sigmaloop.engine import Engine
        eng = Engine({str(workspace)!r})
        eng.run_baseline(seeds=[101, 102], budget=1.0)
        eng.close()
    """)
    other = subprocess.Popen([sys.executable, "-c", code])
    eng = Engine(workspace)
    notices: list[str] = []
    eng.bus.subscribe(lambda ev: notices.append(ev.message) if isinstance(ev, Notice) else None)
    try:
        import time

        time.sleep(0.8)  # the other process has claimed its first trial
        mine = eng.run_baseline(seeds=[42, 43], budget=1.0)
        assert other.wait(timeout=120) == 0
        runs = [e for e in eng.experiments() if e.started_at and e.finished_at]
        assert len(runs) == 4 and all(e.status == Status.KEPT for e in runs), [e.verdict for e in runs]
        spans = sorted((e.started_at, e.finished_at) for e in runs)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.05, spans  # one at a time, across both processes
        assert mine and any("waiting: the cli (pid" in n for n in notices), notices
    finally:
        if other.poll() is None:
            other.kill()
        eng.close()


@pytest.mark.parametrize("bad", ['"maybe"', "true"])
def test_bad_sandbox_setting_is_a_clear_config_error(workspace, bad):
    from sigmaloop.config import ConfigError

    set_runner(workspace, sandbox=bad)
    with pytest.raises(ConfigError, match=r"runner\.sandbox"):
        Engine(workspace)


def test_a_dead_engines_stranded_queued_seed_is_adopted_and_run(workspace):
    """An engine died with its second baseline seed queued: the next engine runs it (once)."""
    code = textwrap.dedent(f"""
        import os
        from sigmaloop.engine import Engine
        from sigmaloop.models import code_hash
        eng = Engine({str(workspace)!r})
        head = eng.head()
        for seed in (42, 43):  # as run_baseline queues them
            e = eng.core.create(status="queued", source="baseline", parent_commit=head, seed=seed,
                                hypothesis=f"baseline (seed {{seed}})", code_hash=code_hash(eng.head_source()))
            eng.trials.queued(e.id)
        os._exit(0)  # dies before running them
    """)
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    eng = Engine(workspace)
    try:
        assert sorted(e.id for e in eng.recovered) == [1, 2]
        done = eng.loop(0)
        assert [e.status for e in done] == [Status.KEPT, Status.KEPT]
        assert len(eng.experiments()) == 2  # no duplicate seeds made by ensure_baseline
    finally:
        eng.close()


def test_a_megabyte_hypothesis_is_capped(workspace):
    from sigmaloop.models import Proposal
    from sigmaloop.proposals import MAX_HYPOTHESIS, MAX_RATIONALE

    from enginekit import edit

    eng = Engine(workspace)
    try:
        p = eng.add_proposal(Proposal(edit(eng.head_source(), "LR = 0.1 ", "LR = 0.12 "), "h" * 20_000_000,
                                      "user", rationale="r" * 1_000_000))
        assert len(p.hypothesis) == MAX_HYPOTHESIS and p.hypothesis.endswith("characters cut]")
        assert len(p.rationale) == MAX_RATIONALE
    finally:
        eng.close()
