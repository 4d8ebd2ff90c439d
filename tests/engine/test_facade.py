"""The engine's façade as an adapter uses it: state, view, adoption, stop, settings, recovery.

Real git workspaces, real SQLite, real trial subprocesses (the fake trainer in enginekit.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from sigmaloop import config as config_mod
from sigmaloop.config import ConfigError
from sigmaloop.engine import Engine, EngineError
from sigmaloop.events import ExperimentUpdated, Notice
from sigmaloop.journal import Journal
from sigmaloop.lifecycle import Phase, Reason
from sigmaloop.models import Proposal, Status

from enginekit import CONFIG, edit, git, make_workspace


def propose(engine: Engine, old: str, new: str, hypothesis: str = "an edit"):
    source = engine.head_source()
    return engine.add_proposal(Proposal(edit(source, old, new), hypothesis, "user", predicted_delta=-0.05))


# -- state ------------------------------------------------------------------------------------------
def test_state_before_and_after_a_baseline(engine):
    empty = engine.state()
    assert empty.reference is None and empty.best is None and empty.counts == {}
    assert (empty.metric, empty.direction) == ("val_bpb", "minimize")

    seeds = engine.run_baseline()
    s = engine.state()
    mean = sum(e.metric for e in seeds) / 2
    assert s.reference.value == pytest.approx(mean)
    assert s.reference.seeds == [42, 43] and s.reference.ids == sorted(e.id for e in seeds)
    assert s.reference.sigma > 0 and s.reference.sigma_dof == 1
    # best is the best reference (the head's mean over its seeds), never the luckier seed
    assert s.best.id == seeds[0].id and s.best.metric == pytest.approx(mean)
    assert s.counts == {"kept": 2} and (s.kept, s.run, s.running) == (0, 0, [])
    assert s.loop.running is False

    wire = s.as_dict()
    assert json.loads(json.dumps(wire)) == wire  # JSON as it is
    assert set(wire) == {"metric", "direction", "reference", "best", "counts", "kept", "run", "running",
                         "calibration", "loop", "configError", "questions"}
    assert wire["reference"]["sigmaDof"] == 1 and wire["reference"]["seeds"] == [42, 43]
    assert wire["loop"] == {"running": False, "iteration": 0, "iterations": 0, "phase": ""}


def test_state_of_a_maximize_project_after_a_keep(tmp_path):
    cfg = CONFIG.replace('tag = "test"', 'tag = "test"\ndirection = "maximize"')
    ws = make_workspace(tmp_path / "ws", config=cfg)
    engine = Engine(ws)
    try:
        engine.run_baseline()
        worse = engine.run(propose(engine, "BIAS = 0.0", "BIAS = -0.2", "lower is worse here").id)
        assert worse.status == Status.DISCARDED
        assert engine.state().best.hypothesis.startswith("baseline")
        better = engine.run(propose(engine, "BIAS = 0.0", "BIAS = 0.2", "higher is better here").id)
        assert better.status == Status.KEPT, better.verdict
        s = engine.state()
        assert (s.metric, s.direction) == ("val_bpb", "maximize")
        confirmation = next(e for e in engine.experiments() if e.confirms == better.id)
        assert s.best.id == better.id and s.best.hypothesis == "higher is better here"
        assert s.best.metric == pytest.approx((better.metric + confirmation.metric) / 2)
        assert s.reference.ids == [better.id, confirmation.id]
        assert (s.kept, s.run) == (1, 2)
    finally:
        engine.close()


def test_the_loop_shows_in_the_state(engine):
    seen = []

    def on_iteration(i, exp):
        seen.append(engine.state().loop)

    engine.loop(1, proposer="tune", on_iteration=on_iteration)
    assert seen[0].running and seen[0].iteration == 1 and seen[0].iterations == 1
    after = engine.state().loop
    assert not after.running and after.phase == "done"


# -- view ---------------------------------------------------------------------------------------------
def test_view_of_a_proposal_and_of_a_baseline(engine):
    exp = propose(engine, "DEPTH = 4", "DEPTH = 6")
    view = engine.view(exp.id)
    assert view.experiment.id == exp.id and view.script_name == "train.py"
    assert view.parent_text == engine.head_source()
    assert view.proposed_text == edit(view.parent_text, "DEPTH = 4", "DEPTH = 6")
    base = engine.run_baseline([42])[0]
    view = engine.view(base.id)
    assert view.parent_text == view.proposed_text == engine.head_source()  # runs its parent unchanged
    with pytest.raises(KeyError):
        engine.view(999)


# -- adoption -------------------------------------------------------------------------------------------
def test_adoption_into_an_open_editor_refuses_what_it_must(engine, workspace):
    engine.run_baseline()
    kept = engine.run(propose(engine, "BIAS = 0.0", "BIAS = -0.2").id)
    assert kept.status == Status.KEPT
    pending = propose(engine, "DEPTH = 4", "DEPTH = 6")
    on_disk = (workspace / "train.py").read_text()

    with pytest.raises(EngineError, match="only kept"):
        engine.adoption(pending.id, on_disk, on_disk)
    with pytest.raises(EngineError, match="baseline"):
        engine.adoption(1, on_disk, on_disk)
    with pytest.raises(EngineError, match="unsaved changes"):
        engine.adoption(kept.id, on_disk + "# typing\n", on_disk)

    ok = engine.adoption(kept.id, on_disk, on_disk)
    assert not ok.unchanged and ok.exp_id == kept.id and "BIAS = -0.2" in ok.new_text
    assert (workspace / "train.py").read_text() == on_disk  # adoption writes nothing itself

    (workspace / "train.py").write_text(on_disk + "# saved, not committed\n")
    saved = (workspace / "train.py").read_text()
    with pytest.raises(EngineError, match="uncommitted changes"):
        engine.adoption(kept.id, saved, saved)
    # the editor already shows the experiment's text: nothing to do, whatever git says
    assert engine.adoption(kept.id, ok.new_text, saved).unchanged


# -- stop ----------------------------------------------------------------------------------------------
def test_stop_all_stops_the_queued_baseline_seed_so_it_never_starts(engine):
    training = threading.Event()

    def on_event(event):
        if isinstance(event, ExperimentUpdated) and event.experiment.pid:
            training.set()

    engine.bus.subscribe(on_event)
    assert engine.executor.slots == 1
    out: list = []
    runner = threading.Thread(target=lambda: out.extend(engine.run_baseline(budget=20.0)))
    runner.start()
    assert training.wait(30), "the first seed never started"
    first, second = engine.experiments()
    assert (first.status, second.status) == (Status.RUNNING, Status.QUEUED)
    stopped = engine.stop_all()
    runner.join(30)
    assert not runner.is_alive(), "run_baseline did not return after stop_all"
    assert stopped == [first.id, second.id]
    first, second = engine.get(first.id), engine.get(second.id)
    assert first.status == Status.INTERRUPTED and first.reason == Reason.STOPPED
    assert second.status == Status.INTERRUPTED and second.reason == Reason.STOPPED
    assert second.attempts == 0 and second.started_at is None and second.log_path is None  # never started
    assert [e.status for e in out] == [Status.INTERRUPTED, Status.INTERRUPTED]
    assert engine.state().running == []


# -- settings ------------------------------------------------------------------------------------------
def test_settings_are_layered_over_the_toml_and_checked_by_the_same_rules(workspace):
    assert config_mod.load(workspace).experiment.budget == 0.3
    cfg = config_mod.load(workspace, {"experiment": {"budget": 5}, "runner.slots": 2, "llm.base_url": ""})
    assert cfg.experiment.budget == 5.0 and cfg.runner.slots == 2 and cfg.llm.base_url == ""
    assert cfg.judge.seeds == [42, 43]  # the file's values stay where no setting is given
    assert config_mod.load(workspace, {"experiment.budget": None}).experiment.budget == 0.3

    with pytest.raises(ConfigError, match=r"settings.*experiment\.budget must be > 0"):
        config_mod.load(workspace, {"experiment.budget": -1})
    with pytest.raises(ConfigError, match=r"settings: runner\.slots must be an integer"):
        config_mod.load(workspace, {"runner": {"slots": "two"}})
    with pytest.raises(ConfigError, match=r"settings: unknown key experiment\.budgett"):
        config_mod.load(workspace, {"experiment.budgett": 3})
    with pytest.raises(ConfigError, match=r"settings: unknown section \[experimnt\]"):
        config_mod.load(workspace, {"experimnt.budget": 3})
    with pytest.raises(ConfigError, match=r'proposer\.kind must be "tune", "llm" or "mixed"'):
        config_mod.load(workspace, {"proposer.kind": "magic"})
    # the file's own errors still name the file, settings or not
    (workspace / "sigmaloop.toml").write_text("[experiment]\nbudget = -3\n")
    with pytest.raises(ConfigError, match=r"sigmaloop\.toml: experiment\.budget"):
        config_mod.load(workspace, {"runner.slots": 2})


# -- recovery --------------------------------------------------------------------------------------------
def test_recovery_runs_when_an_engine_opens(workspace):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (workspace / ".sigmaloop").mkdir()
    with Journal(workspace / ".sigmaloop" / "journal.db") as journal:
        orphan = journal.create(status=Status.QUEUED, source="user", hypothesis="its engine died")
        journal.move(orphan.id, Status.RUNNING, owner_pid=dead.pid, phase=Phase.TRAINING)
        alive = journal.create(status=Status.QUEUED, source="user", hypothesis="its engine lives")
        journal.move(alive.id, Status.RUNNING, owner_pid=os.getppid(), phase=Phase.TRAINING)  # alive
        stale = journal.running()  # what a second engine opening at the same moment reads
    engine = Engine(workspace)
    second = Engine(workspace)
    try:
        assert [e.id for e in engine.recovered] == [orphan.id]
        assert engine.get(orphan.id).status == Status.QUEUED
        assert engine.get(alive.id).status == Status.RUNNING  # another live engine's trial is left alone
        # the second engine decided on a snapshot the first one has changed since: it does nothing
        second.journal.running = lambda: stale
        assert second.recover() == []
        assert engine.get(orphan.id).status == Status.QUEUED and engine.get(orphan.id).attempts == 0
    finally:
        second.close()
        engine.close()


# -- notices ---------------------------------------------------------------------------------------------
def test_a_research_branch_started_over_uncommitted_edits_says_so(engine, workspace):
    notices = []
    engine.bus.subscribe(lambda ev: notices.append(ev) if isinstance(ev, Notice) else None)
    (workspace / "train.py").write_text((workspace / "train.py").read_text() + "# not committed\n")
    engine.head()
    engine.head()
    assert len(notices) == 1 and "uncommitted changes" in notices[0].message
    assert "committed version" in notices[0].message
    assert git(workspace, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"


# -- settings while open ----------------------------------------------------------------------------------
def test_reconfigure_takes_new_settings_but_keeps_the_script_and_branch(engine, workspace):
    cfg = config_mod.load(workspace, {"experiment": {"budget": 2, "tag": "other", "train_script": "x.py"}})
    notes = engine.reconfigure(cfg)
    assert engine.config.experiment.budget == 2.0
    assert (engine.config.experiment.tag, engine.script_name) == ("test", "train.py")
    assert len(notes) == 1 and "experiment.tag" in notes[0] and "restart" in notes[0]
    assert engine.reconfigure(config_mod.load(workspace)) == []


def test_stop_all_during_a_confirmation_decides_nothing(engine):
    engine.run_baseline(budget=4.0)  # comparable with the candidate's 4 s runs
    head = engine.head()
    confirming = threading.Event()

    def on_event(event):
        if isinstance(event, ExperimentUpdated) and event.experiment.confirms is not None and event.experiment.pid:
            confirming.set()

    engine.bus.subscribe(on_event)
    exp = propose(engine, "BIAS = 0.0", "BIAS = -0.2", "a real gain")
    out: list = []
    runner = threading.Thread(target=lambda: out.append(engine.run(exp.id, budget=4.0)))
    runner.start()
    assert confirming.wait(60), "the confirmation never started"
    conf = next(e for e in engine.experiments() if e.confirms == exp.id)
    assert engine.stop_all() == [exp.id, conf.id]
    runner.join(30)
    assert not runner.is_alive()
    (done,) = out
    assert done.status == Status.INTERRUPTED and done.reason == Reason.STOPPED_IN_CONFIRMATION
    assert engine.get(conf.id).status == Status.INTERRUPTED
    assert engine.head() == head  # stopped, not kept


def test_view_of_an_edit_that_no_longer_applies(engine):
    engine.run_baseline([42])
    corrupt = "@@ -1,1 +1,1 @@\n-no such line\n+x = 1\n"
    ran = engine.run(propose(engine, "DEPTH = 4", "DEPTH = 5").id)
    engine.journal.update(ran.id, diff=corrupt)
    view = engine.view(ran.id)  # it ran: its commit holds the script as it ran
    assert "DEPTH = 5" in view.proposed_text and view.proposed_text != view.parent_text
    never = propose(engine, "DEPTH = 4", "DEPTH = 6")
    engine.journal.update(never.id, diff=corrupt)
    view = engine.view(never.id)
    assert view.parent_text == engine.head_source() and view.proposed_text is None  # never ran: nothing to show
