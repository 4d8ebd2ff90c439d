"""The lifecycle: every illegal move is refused with a clear error, through the journal and the engine."""

from __future__ import annotations

import itertools

import pytest

from sigmaloop.engine import Engine, EngineError
from sigmaloop.journal import Journal
from sigmaloop.lifecycle import (
    INITIAL,
    TRANSITIONS,
    IllegalTransition,
    Phase,
    Reason,
    check,
    describe,
)
from sigmaloop.models import Experiment, Proposal, Status

from enginekit import edit


def _row_in(j: Journal, status: Status) -> int:
    """A journal row in ``status`` (created there, as an import or a fixture may)."""
    return j.create(status=status, source="user").id


@pytest.mark.parametrize(("current", "target"), [
    (a, b) for a, b in itertools.product(Status, Status) if b not in TRANSITIONS[a]
])
def test_every_illegal_move_is_refused_and_writes_nothing(tmp_path, current, target):
    j = Journal(tmp_path / "journal.db")
    exp_id = _row_in(j, current)
    rev = j.max_rev()
    with pytest.raises(IllegalTransition) as err:
        j.move(exp_id, target, "test")
    msg = str(err.value)
    if current == target:
        assert f"#{exp_id} is already {current.value}" in msg
        return
    assert f"#{exp_id} is {current.value} and can't become {target.value}" in msg
    assert ("is final" in msg) == (not TRANSITIONS[current])  # and says what it could become instead
    assert j.get(exp_id).status == current and j.max_rev() == rev
    j.close()


@pytest.mark.parametrize(("current", "target"), [(a, b) for a in Status for b in TRANSITIONS[a]])
def test_every_legal_move_is_taken(tmp_path, current, target):
    j = Journal(tmp_path / "journal.db")
    exp_id = _row_in(j, current)
    assert j.move(exp_id, target).status == target
    j.close()


def test_new_rows_start_only_where_the_engine_may_create_them():
    for status in Status:
        if status in INITIAL:
            check(None, status)
        else:
            with pytest.raises(IllegalTransition, match="new experiments start as"):
                check(None, status)


def test_finals_are_final_and_every_status_is_in_the_table():
    assert set(TRANSITIONS) == set(Status)
    for final in (Status.KEPT, Status.CRASHED, Status.TIMEOUT, Status.REJECTED, Status.PRUNED,
                  Status.OVER_BUDGET, Status.TAMPERED):
        assert TRANSITIONS[final] == frozenset()
    # a discarded implausible gain may still be kept by hand ("accept result"), and nothing else
    assert TRANSITIONS[Status.DISCARDED] == frozenset({Status.KEPT})


def test_engine_operations_say_why_they_cannot(workspace):
    """As a user would meet it: accept a kept experiment, reject a running one, run a rejected one."""
    eng = Engine(workspace)
    try:
        p = eng.add_proposal(Proposal(edit(eng.head_source(), "LR = 0.1 ", "LR = 0.12 "), "a user edit", "user"))
        eng.reject(p.id, "not now")
        with pytest.raises(EngineError, match=rf"#{p.id} is rejected and can't become accepted \(accept it\): rejected is final"):
            eng.accept(p.id)
        with pytest.raises(EngineError, match=rf"#{p.id} is rejected and can't become running \(run it\)"):
            eng.run(p.id)
        with pytest.raises(EngineError, match=rf"#{p.id} is already rejected"):
            eng.reject(p.id)
        assert eng.get(p.id).reason == Reason.USER_REJECTED and eng.get(p.id).verdict == "rejected by user: not now"
    finally:
        eng.close()


def test_describe_is_made_from_fields_only():
    e = Experiment(id=7, status=Status.RUNNING, source="tune", phase=Phase.CONFIRMING, delta=-0.02, z=3.1)
    assert describe(e) == "0.0200 val_bpb better, 3.1σ: confirming on another seed"
    e = Experiment(id=7, status=Status.KEPT, source="tune", reason=Reason.IMPROVED, delta=-0.02, z=3.4,
                   numbers={"runs": 2})
    assert describe(e, "loss") == "0.0200 loss better, 3.4σ over 2 seeds, kept"
    e = Experiment(id=8, status=Status.DISCARDED, source="tune", reason=Reason.STALE, delta=-0.02, z=3.4,
                   detail="the branch moved on")
    assert describe(e) == "0.0200 val_bpb better, 3.4σ, beyond noise but not kept: the branch moved on"
    e = Experiment(id=9, status=Status.CRASHED, source="tune", reason=Reason.CRASHED, detail="FAIL: loss is NaN")
    assert describe(e) == "crashed: loss is NaN"  # the trainer's FAIL marker is for the runner
