"""The engine end to end on a real git workspace, real SQLite and real trial subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sigmaloop.diff import unified_diff
from sigmaloop.engine import Engine, EngineError
from sigmaloop.lifecycle import Reason
from sigmaloop.models import Proposal, Status
from sigmaloop.ratchet import AdoptConflict
from sigmaloop.runner import is_alive

from enginekit import FAKE_TRAIN, edit, git


def user_edit(engine: Engine, old: str, new: str, hypothesis: str = "an edit"):
    source = engine.head_source()
    return engine.add_proposal(Proposal(edit(source, old, new), hypothesis, "user", predicted_delta=-0.05))


def test_baseline_runs_on_two_seeds_and_gives_reference_and_sigma(engine, workspace):
    exps = engine.run_baseline()
    assert [e.status for e in exps] == [Status.KEPT, Status.KEPT]
    assert sorted(e.seed for e in exps) == [42, 43]
    ref = engine.reference()
    assert set(ref.by_seed) == {42, 43}
    assert engine.sigma() > 0
    # progress was streamed into the journal and the results file was written
    assert len(engine.journal.curve(exps[0].id)) == 5
    tsv = (workspace / "results.tsv").read_text().splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert len(tsv) == 3 and all("\tkeep\t" in line for line in tsv[1:])


def test_real_improvement_is_confirmed_kept_and_advances_the_branch(engine, workspace):
    engine.run_baseline()
    user_before = (workspace / "train.py").read_bytes()
    head_before = engine.head()
    exp = user_edit(engine, "BIAS = 0.0", "BIAS = -0.1", "lower bias lowers val_bpb")
    assert exp.status == Status.PROPOSED and "-BIAS = 0.0" in exp.diff
    exp = engine.run(exp.id)
    assert exp.status == Status.KEPT, exp.verdict
    assert exp.delta == pytest.approx(-0.1, abs=1e-3) and exp.z > 2
    assert "kept" in exp.verdict
    confirmations = [e for e in engine.experiments() if e.confirms == exp.id]
    assert len(confirmations) == 1 and confirmations[0].seed != exp.seed
    assert engine.head() != head_before and engine.head() == exp.commit
    assert "BIAS = -0.1" in engine.head_source()
    assert git(workspace, "rev-parse", f"refs/sigmaloop/exp/{exp.id}").strip() == exp.commit
    # the user's own file and branch are untouched until they adopt
    assert (workspace / "train.py").read_bytes() == user_before
    assert git(workspace, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(workspace, "status", "--porcelain").strip() in ("", "?? results.tsv")
    # the next candidate is judged against the new head's reference
    assert set(engine.reference().by_seed) == {42, 43}


def test_noise_sized_edit_is_discarded_but_its_diff_is_kept(engine, workspace):
    engine.run_baseline()
    exp = engine.run(user_edit(engine, "DEPTH = 4", "DEPTH = 5", "depth 5 helps").id)
    assert exp.status == Status.DISCARDED
    assert "within noise" in exp.verdict
    assert engine.head() == exp.parent_commit
    shown = git(workspace, "show", f"refs/sigmaloop/exp/{exp.id}", "--", "train.py")
    assert "+DEPTH = 5" in shown


def test_crashing_edit_is_crashed_at_its_line(engine):
    engine.run_baseline()
    exp = engine.run(user_edit(engine, "CRASH = False", "CRASH = True").id)
    assert exp.status == Status.CRASHED
    assert exp.crash is not None and exp.crash.file == "train.py"
    line = FAKE_TRAIN.splitlines().index('        raise RuntimeError("boom: the edit broke training")') + 1
    assert exp.crash.line == line
    assert "RuntimeError: boom" in exp.crash.message
    assert "RuntimeError" in exp.verdict


def test_nan_edit_fails_fast_with_the_scripts_message(engine):
    engine.run_baseline()
    exp = engine.run(user_edit(engine, "MAKE_NAN = False", "MAKE_NAN = True").id)
    assert exp.status == Status.CRASHED
    assert exp.verdict == "crashed: loss is NaN at step 3", exp.verdict


def test_hanging_trial_is_killed_at_the_limit(workspace):
    cfg = (workspace / "sigmaloop.toml").read_text().replace("grace = 5", "grace = 1")
    (workspace / "sigmaloop.toml").write_text(cfg)
    git(workspace, "commit", "-qam", "short grace")
    eng = Engine(workspace)
    try:
        eng.run_baseline()
        t0 = time.time()
        exp = eng.run(user_edit(eng, "SLEEP = 0.0", "SLEEP = 600.0").id)
        assert exp.status == Status.TIMEOUT
        assert time.time() - t0 < 10
        assert exp.pid is None
        assert "timeout" in exp.verdict
    finally:
        eng.close()


def test_edits_that_cannot_run_are_rejected_before_running(engine):
    engine.run_baseline()
    bad_diff = unified_diff("X = 1\n", "X = 2\n")
    exp = engine.propose_diff(bad_diff, "a diff against another file")
    assert exp.status == Status.REJECTED and exp.reason == Reason.INVALID_EDIT and "does not apply" in exp.detail
    assert exp.rejection_reason is None  # that field holds a person's reason only
    exp = user_edit(engine, "DEPTH = 4", "DEPTH = = 4")
    assert exp.status == Status.REJECTED and "parse" in exp.detail.lower()
    exp = user_edit(engine, "SEED_OFFSET = 0", "SEED_OFFSET = 7")
    assert exp.status == Status.REJECTED and "seed" in exp.detail.lower()
    assert exp.verdict.startswith("rejected before running: ")
    assert all(e.commit is None for e in engine.experiments() if e.status == Status.REJECTED)


def test_accept_reject_lifecycle_and_errors(engine):
    exp = user_edit(engine, "DEPTH = 4", "DEPTH = 6")
    rejected = engine.reject(exp.id, "depth is not the bottleneck")
    assert rejected.status == Status.REJECTED and rejected.rejection_reason == "depth is not the bottleneck"
    with pytest.raises(EngineError, match="only proposed"):
        engine.accept(exp.id)
    exp2 = user_edit(engine, "DEPTH = 4", "DEPTH = 7")
    assert engine.accept(exp2.id).status == Status.QUEUED
    with pytest.raises(KeyError):
        engine.get(999)


def test_tuner_loop_proposes_runs_and_persists_its_study(engine, workspace):
    done = engine.loop(3, proposer="tune")
    assert len(done) == 3
    cands = [e for e in engine.experiments() if e.source == "tune" and e.confirms is None]
    assert len(cands) == 3
    assert all(e.status in (Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.REJECTED) for e in cands)
    assert all(e.diff for e in cands if e.status != Status.REJECTED)
    assert all("SEED" not in e.hypothesis for e in cands)
    assert (workspace / ".sigmaloop" / "optuna.db").exists()
    # a restarted engine continues the same study
    engine.close()
    again = Engine(workspace)
    try:
        again.loop(1, proposer="tune")
        trials = [e.params.get("optuna_trial") for e in again.experiments() if e.source == "tune" and e.confirms is None]
        assert len(set(trials)) == 4
    finally:
        again.close()


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_engine_killed_mid_trial_is_recovered(workspace, sandboxed):
    """Sandboxed, the trial dies with its engine (its PID namespace goes); unsandboxed, it lives
    on as an orphan until the next engine finds it by its tag and kills it."""
    if not sandboxed:
        cfg = workspace / "sigmaloop.toml"
        cfg.write_text(cfg.read_text() + '\n[runner]\nsandbox = "off"\n')
        git(workspace, "commit", "-qam", "no sandbox")
    eng = Engine(workspace)
    eng.run_baseline()
    exp = user_edit(eng, "SLEEP = 0.0", "SLEEP = 30.0", "slow")
    eng.accept(exp.id)
    eng.close()
    code = f"from sigmaloop.engine import Engine; Engine({str(workspace)!r}).run({exp.id})"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.time() + 30
        pid = None
        while time.time() < deadline:
            probe = Engine(workspace)
            rec = probe.get(exp.id)
            probe.journal.close()
            if rec.status == Status.RUNNING and rec.pid:
                pid = rec.pid
                break
            time.sleep(0.2)
        assert pid is not None, "trial never started"
        os.kill(proc.pid, signal.SIGKILL)  # the engine dies
        proc.wait(10)
        if sandboxed:
            for _ in range(50):
                if not is_alive(pid):
                    break
                time.sleep(0.1)
            assert not is_alive(pid), "a sandboxed trial must die with its engine"
        else:
            assert is_alive(pid)  # an orphan, until the next engine opens
        eng = Engine(workspace)
        try:
            # recovery runs when an engine opens
            assert [e.id for e in eng.recovered] == [exp.id]
            assert eng.recover() == []
            rec = eng.get(exp.id)
            assert rec.status == Status.QUEUED and rec.attempts == 1
            for _ in range(50):
                if not is_alive(pid):
                    break
                time.sleep(0.1)
            assert not is_alive(pid), "orphan trial was not killed"
            assert Path(f"{rec.log_path}.attempt1").exists()
        finally:
            eng.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dirty_user_tree_is_never_overwritten(engine, workspace):
    engine.run_baseline()
    user_file = workspace / "train.py"
    user_file.write_text(user_file.read_text() + "\n# my own unsaved thought\n")
    mine = user_file.read_bytes()
    exp = engine.run(user_edit(engine, "BIAS = 0.0", "BIAS = -0.2").id)
    assert exp.status == Status.KEPT
    assert user_file.read_bytes() == mine
    with pytest.raises(AdoptConflict, match="uncommitted"):
        engine.adopt(exp.id)
    assert user_file.read_bytes() == mine
    git(workspace, "checkout", "--", "train.py")
    engine.adopt(exp.id)
    assert "BIAS = -0.2" in user_file.read_text()
    discarded = engine.run(user_edit(engine, "DEPTH = 4", "DEPTH = 9").id)
    assert discarded.status == Status.DISCARDED
    with pytest.raises(EngineError, match="only kept"):
        engine.adopt(discarded.id)


def test_bad_config_names_the_key(workspace):
    (workspace / "sigmaloop.toml").write_text("[experiment]\nbudget = -3\n")
    from sigmaloop.config import ConfigError

    with pytest.raises(ConfigError, match=r"experiment\.budget"):
        Engine(workspace)
    (workspace / "sigmaloop.toml").write_text("[judge]\nseeds = [1]\n")
    with pytest.raises(ConfigError, match=r"judge\.seeds"):
        Engine(workspace)
    (workspace / "sigmaloop.toml").write_text("[experiment]\nbudgett = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key experiment\.budgett"):
        Engine(workspace)


def test_a_sigmaloop_failure_is_recorded_and_the_loop_goes_on(engine, workspace):
    engine.run_baseline()
    exp = user_edit(engine, "DEPTH = 4", "DEPTH = 5")
    engine.journal.update(exp.id, diff="@@ -1,1 +1,1 @@\n-no such line\n+x = 1\n")  # a corrupt edit
    rec = engine.run(exp.id)
    assert rec.status == Status.CRASHED and rec.verdict.startswith("sigmaloop error: EditError")
    assert engine.journal.running() == []
    later = engine.run(user_edit(engine, "DEPTH = 4", "DEPTH = 6").id)
    assert later.status == Status.DISCARDED


def test_a_keep_while_the_research_branch_is_checked_out_is_refused_not_fatal(engine, workspace):
    engine.run_baseline()
    git(workspace, "worktree", "add", "-q", str(workspace.parent / "look"), engine.ratchet.branch_name)
    exp = engine.run(user_edit(engine, "BIAS = 0.0", "BIAS = -0.2").id)
    assert exp.status == Status.DISCARDED and "not kept" in exp.verdict
    assert engine.head() == exp.parent_commit


def test_stop_while_proposing_runs_nothing(engine):
    engine.run_baseline()
    real_propose = engine.propose

    def propose_then_stop(*args, **kwargs):
        exp = real_propose(*args, **kwargs)
        engine.stop_all()
        return exp

    engine.propose = propose_then_stop
    done = engine.loop(3, proposer="tune")
    assert len(done) == 1 and done[0].status == Status.PROPOSED


def test_a_borderline_keep_earns_a_third_seed(tmp_path):
    """Just short of the bar after its confirmation (z within judge.borderline of t_crit), a
    would-be keep runs on one more paired seed; the verdict is taken on all three."""
    from enginekit import CONFIG, make_workspace

    ws = make_workspace(tmp_path / "ws", config=CONFIG.replace("seeds = [42, 43]", "seeds = [42, 43, 44]"))
    eng = Engine(ws)
    try:
        eng.run_baseline()
        sigma = eng.sigma()
        crit = eng.core.judge.critical_value(2)
        delta = (crit - 0.5) * sigma  # the stand-in's noise is per seed: paired deltas are exactly -delta
        exp = user_edit(eng, "BIAS = 0.0", f"BIAS = {-delta!r}", "a borderline gain")
        exp = eng.run(exp.id)
        confirmations = [e for e in eng.experiments() if e.confirms == exp.id]
        assert len(confirmations) == 2 and sorted(c.seed for c in confirmations) == [43, 44]
        assert exp.status == Status.KEPT and exp.numbers["runs"] == 3, exp.verdict
        assert "over 3 seeds" in exp.verdict
    finally:
        eng.close()
