"""Curve anomalies through the engine: found over the stored curve of a real run, dismissed by
the researcher, and still dismissed when the workspace is opened again (real git, SQLite and a
trial subprocess of the stand-in trainer)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from sigmaloop.core import EngineError
from sigmaloop.engine import Engine
from sigmaloop.journal import Journal
from sigmaloop.models import ProgressRecord, Status
from sigmaloop.output import loss_of

from enginekit import queue_edit

# the stand-in's curve falls 0.2 a step; a NaN from step 3 on is what a blown-up run writes
NAN_TRAIN_EDIT = ('"loss": 3.0 - 0.2 * step + BIAS}', '"loss": (3.0 - 0.2 * step + BIAS) if step < 3 else float("nan")}')


def test_a_nan_curve_is_found_dismissed_and_stays_dismissed(workspace):
    engine = Engine(workspace)
    try:
        engine.run_baseline()
        exp = engine.run(queue_edit(engine, *NAN_TRAIN_EDIT, "a run that blows up").id)
        curve = engine.curve(exp.id)
        # stored JSON-safe (loss None) but not lost: the NaN is read back for the anomaly check
        assert [r.loss is None for r in curve] == [False, False, False, True, True]
        assert math.isnan(loss_of(curve[3]))
        (nan,) = [a for a in engine.anomalies(exp.id) if a.kind == "nan"]
        assert nan.step == 3
        rev = engine.get(exp.id).rev
        after = engine.dismiss_anomaly(exp.id, "nan", "  known: I  made it blow up ")
        assert after.rev > rev  # watchers (the editor) see the change
        assert "nan" not in [a.kind for a in engine.anomalies(exp.id)]
        assert "nan" in [a.kind for a in engine.anomalies(exp.id, dismissed=True)]
        assert engine.dismissed_anomalies() == {exp.id: {"nan": "known: I made it blow up"}}
        # the baselines' clean curves have nothing to say
        for b in engine.experiments():
            if b.is_baseline:
                assert engine.anomalies(b.id) == []
    finally:
        engine.close()
    engine = Engine(workspace)  # reopened: the journal kept it
    try:
        assert "nan" not in [a.kind for a in engine.anomalies(exp.id)]
        assert engine.dismissed_anomalies()[exp.id] == {"nan": "known: I made it blow up"}
    finally:
        engine.close()


def test_dismissing_again_replaces_the_reason_and_bad_input_says_what_is_wrong(engine):
    exp = engine.core.create(status=Status.PROPOSED, source="user", hypothesis="h")
    engine.journal.add_progress(exp.id, [ProgressRecord(exp_id=exp.id, step=i, t=float(i), frac=i / 20, loss=3.0 - 0.05 * i)
                                         for i in range(20)])
    engine.dismiss_anomaly(exp.id, "plateau", "first")
    engine.dismiss_anomaly(exp.id, "plateau", "second")
    assert engine.dismissed_anomalies() == {exp.id: {"plateau": "second"}}
    with pytest.raises(EngineError, match="no anomaly kind 'wobble': one of nan, spike, divergence, plateau"):
        engine.dismiss_anomaly(exp.id, "wobble")
    with pytest.raises(EngineError, match="no experiment #999"):
        engine.dismiss_anomaly(999, "nan")
    assert engine.dismissed_anomalies() == {exp.id: {"plateau": "second"}}  # nothing half-written


def test_journal_v8_upgrades_to_dismissals(tmp_path):
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        exp = j.create(status=Status.PROPOSED, source="user", hypothesis="old row")
    conn = sqlite3.connect(path)  # back to v8: drop what v9 added
    conn.executescript("DROP TABLE dismissals; PRAGMA user_version = 8;")
    conn.close()
    with Journal(path) as j:
        assert j.dismissed() == {}
        j.dismiss(exp.id, "spike", "a data glitch")
        assert j.dismissed(exp.id) == {exp.id: {"spike": "a data glitch"}}
