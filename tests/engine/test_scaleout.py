"""Scale-out on one machine: N slots kept full by the loop, candidates whose parent moved on
rebased and re-run (not discarded), lost trials re-queued, never two trials on one GPU."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sigmaloop import config as config_mod
from sigmaloop.core import EngineError
from sigmaloop.engine import Engine
from sigmaloop.executors import LocalExecutor, make_executor, slot_envs
from sigmaloop.models import Outcome, Proposal, Status, TrialResult

from enginekit import CONFIG, FAKE_TRAIN, edit, make_workspace

TWO_KNOBS = FAKE_TRAIN.replace("SEED_OFFSET = 0\n", "SEED_OFFSET = 0\nBONUS = 0.0         # another real gain when negative\n") \
    .replace("val = 1.0 + BIAS +", "val = 1.0 + BIAS + BONUS +")
SLOTS2 = CONFIG + "\n[runner]\nslots = 2\n"


def propose(engine: Engine, old: str, new: str, hypothesis: str):
    return engine.add_proposal(Proposal(edit(engine.head_source(), old, new), hypothesis, "user"))


# -- fair timing -------------------------------------------------------------------------------------
def test_two_slots_never_share_a_gpu():
    assert [e["CUDA_VISIBLE_DEVICES"] for e in slot_envs(2, ["0", "1"])] == ["0", "1"]
    with pytest.raises(ValueError, match=r"runner.slots = 3 but 2 GPU\(s\).*set runner.slots = 2"):
        slot_envs(3, ["0", "1"])
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in slot_envs(4, []))  # CPU: threads split instead


def test_the_engine_says_what_to_set_for_too_many_slots(tmp_path):
    ws = make_workspace(tmp_path / "ws", config=CONFIG + '\n[runner]\nslots = 2\ngpus = ["0"]\n')
    eng = Engine(ws)
    try:
        with pytest.raises(EngineError, match=r"set runner\.slots = 1"):
            eng.run_baseline()
    finally:
        eng.close()


def test_the_ray_executor_without_ray_says_how_to_get_it(tmp_path, monkeypatch):
    cfg = config_mod.load(make_workspace(tmp_path / "ws"), {"runner": {"executor": "ray"}})
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "sigmaloop.ray_executor", raising=False)
    with pytest.raises(ValueError, match=r"pip install \"sigmaloop\[ray\]\""):
        make_executor(cfg)
    assert isinstance(make_executor(config_mod.load(tmp_path / "ws")), LocalExecutor)
    with pytest.raises(config_mod.ConfigError, match=r'runner\.executor must be "local" or "ray"'):
        config_mod.load(tmp_path / "ws", {"runner": {"executor": "k8s"}})


# -- lost machines -----------------------------------------------------------------------------------
class LosingExecutor(LocalExecutor):
    """Local trials, except that the first ``lose`` attempts of each are reported lost (as a Ray
    executor reports a node that went away mid-trial), after really running."""

    def __init__(self, lose: int):
        super().__init__(slots=1, gpus=[])
        self.lose, self.seen = lose, {}

    def submit(self, spec, on_progress=None, on_start=None):
        handle = super().submit(spec, on_progress, on_start)
        n = self.seen[spec.exp_id] = self.seen.get(spec.exp_id, 0) + 1
        if n <= self.lose:
            real = handle.result

            def lost(timeout=None):
                real(timeout)
                return TrialResult(spec.exp_id, Outcome.LOST, node="node-b", error="node node-b died mid-trial")
            handle.result = lost
        return handle


def test_a_trial_lost_with_its_node_is_requeued_and_run_again(workspace):
    eng = Engine(workspace, executor=LosingExecutor(lose=1))
    try:
        a, b = eng.run_baseline()
        assert a.status == b.status == Status.KEPT and a.attempts == b.attempts == 2
        assert Path(f"{a.log_path}.attempt1").exists()  # the lost attempt's log is kept
    finally:
        eng.close()


def test_a_trial_lost_every_time_ends_crashed_saying_so(workspace):
    eng = Engine(workspace, executor=LosingExecutor(lose=99))
    try:
        exp = eng.run_baseline(seeds=[42])[0]
        assert exp.status == Status.CRASHED and exp.attempts == 3
        assert "lost 3 time(s)" in exp.detail and "node-b died" in exp.detail
    finally:
        eng.close()


# -- rebasing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("old", "new", "applies"), [
    ("BONUS = 0.0 ", "BONUS = -0.05 ", True),  # another line: replayed onto the new head
    ("BIAS = 0.0 ", "BIAS = -0.04 ", False),  # the line the kept edit changed: conflicts
])
def test_a_queued_candidate_whose_parent_moved_on_runs_rebased_if_its_edit_applies(tmp_path, old, new, applies):
    eng = Engine(make_workspace(tmp_path / "ws", train=TWO_KNOBS))
    try:
        eng.run_baseline()
        old_head = eng.head()
        a = propose(eng, "BIAS = 0.0 ", "BIAS = -0.05 ", "lower bias")
        b = propose(eng, old, new, "the second idea")
        assert eng.run(a.id).status == Status.KEPT
        assert eng.head() != old_head
        b = eng.run(b.id)
        if applies:
            assert b.rebased_from == old_head and b.parent_commit == eng.get(a.id).commit
            assert b.status == Status.KEPT, b.verdict
            ran = eng.experiment_source(b.id)
            assert "BIAS = -0.05 " in ran and new in ran  # its edit on top of the kept one
        else:
            assert b.rebased_from == "" and b.parent_commit == old_head
            assert b.status == Status.DISCARDED and b.reason == "stale" and "moved on" in b.detail
    finally:
        eng.close()


def test_two_would_be_keeps_in_parallel_both_land(tmp_path):
    """Both start on the same head; the one that keeps second finds the branch moved on: it is
    rebased onto the new head and re-run there (its confirmations retired), and kept on merit."""
    eng = Engine(make_workspace(tmp_path / "ws", train=TWO_KNOBS, config=SLOTS2))
    try:
        eng.run_baseline()
        start = eng.head()
        a = propose(eng, "BIAS = 0.0 ", "BIAS = -0.05 ", "lower bias")
        b = propose(eng, "BONUS = 0.0 ", "BONUS = -0.05 ", "a bonus")
        for exp in (a, b):
            eng.accept(exp.id)
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(eng.run, [a.id, b.id])
        assert a.status == b.status == Status.KEPT, (a.verdict, b.verdict)
        second = max((a, b), key=lambda e: e.finished_at)
        assert second.rebased_from == start and second.attempts >= 2
        final = eng.experiment_source(second.id)
        assert "BIAS = -0.05 " in final and "BONUS = -0.05 " in final
        retired = [e for e in eng.experiments() if e.confirms == second.id and "rebased" in e.detail]
        assert retired and all(e.status == Status.DISCARDED for e in retired)
    finally:
        eng.close()


# -- the loop keeps the slots full ---------------------------------------------------------------------
def test_the_loop_keeps_two_slots_busy_with_distinct_proposals(tmp_path):
    eng = Engine(make_workspace(tmp_path / "ws", config=SLOTS2.replace("budget = 0.3", "budget = 1.0")))
    overlap = threading.Event()
    running: set[int] = set()
    lock = threading.Lock()

    def watch(ev):
        exp = getattr(ev, "experiment", None)
        if exp is None or exp.is_baseline or exp.confirms is not None:
            return
        with lock:
            if exp.status == Status.RUNNING and exp.phase == "training":
                running.add(exp.id)
            elif exp.status != Status.RUNNING:
                running.discard(exp.id)
            if len(running) >= 2:
                overlap.set()

    eng.bus.subscribe(watch)
    try:
        done = eng.loop(4)
        assert len(done) == 4 and all(e.finished for e in done)
        assert overlap.is_set()  # two candidates trained at once
        assert len({e.diff for e in done}) == 4  # the constant liar sent each slot somewhere else
    finally:
        eng.close()
