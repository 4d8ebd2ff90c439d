"""Research questions, the researcher's own edit, and warnings about a run — through the real
engine (git, SQLite, subprocess trials of the stand-in trainer)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from sigmaloop import questions as qmod
from sigmaloop import sanity
from sigmaloop.core import EngineError
from sigmaloop.engine import Engine
from sigmaloop.journal import Journal
from sigmaloop.models import Experiment, ProgressRecord, Proposal, QuestionStatus, Status

from enginekit import edit, make_workspace


def test_ask_list_close_and_reopen(engine):
    q = engine.ask("  Does a lower   LR help at this budget? ", "if it is ≥ 0.01 better I keep it")
    assert (q.id, q.text, q.status) == (1, "Does a lower LR help at this budget?", QuestionStatus.OPEN)
    assert q.decision == "if it is ≥ 0.01 better I keep it"
    assert [x.id for x in engine.questions()] == [1]
    closed = engine.close_question(1, "yes: LR 0.08 is 0.012 better")
    assert closed.status == QuestionStatus.ANSWERED and closed.answered_at
    assert engine.question(1).verdict == "answered: yes: LR 0.08 is 0.012 better"
    assert engine.close_question(1, status="open").status == QuestionStatus.OPEN
    state = engine.state().as_dict()
    assert state["questions"][0]["id"] == 1 and state["questions"][0]["status"] == "open"


def test_bad_questions_are_refused(engine):
    with pytest.raises(EngineError, match="needs words"):
        engine.ask("   ")
    with pytest.raises(EngineError, match="under 500"):
        engine.ask("x" * 501)
    with pytest.raises(EngineError, match="no question Q9"):
        engine.question(9)
    engine.ask("Is depth the bottleneck?")
    with pytest.raises(EngineError, match="not 'maybe'"):
        engine.close_question(1, status="maybe")


def test_program_md_questions_are_asked_once(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws / "program.md").write_text(
        "# Instructions\nBe careful.\n\n## Questions\n"
        "- Does LR matter at 0.3 s? (decision: below 0.05 I switch the default)\n"
        "- Is DEPTH 6 better than 4?\n  decision: switch to depth 6\n\n## Style\n- not a question\n")
    eng = Engine(ws)
    try:
        qs = eng.questions()
        assert [(q.text, q.decision, q.source) for q in qs] == [
            ("Does LR matter at 0.3 s?", "below 0.05 I switch the default", "program.md"),
            ("Is DEPTH 6 better than 4?", "switch to depth 6", "program.md")]
        eng.close_question(2, "no", status="dropped")
    finally:
        eng.close()
    eng = Engine(ws)  # reopened: nothing asked twice, a closed one stays closed
    try:
        assert [(q.id, q.status.value) for q in eng.questions()] == [(1, "open"), (2, "dropped")]
    finally:
        eng.close()


def test_a_proposal_is_credited_to_the_question_naming_what_it_changes(engine):
    engine.ask("Does LR matter here?")
    engine.ask("Is DEPTH the bottleneck?")
    src = engine.head_source()
    lr = engine.add_proposal(Proposal(edit(src, "LR = 0.1 ", "LR = 0.12 "), "LR up", "tune"))
    depth = engine.add_proposal(Proposal(edit(src, "DEPTH = 4", "DEPTH = 5"), "deeper", "tune"))
    both = engine.add_proposal(Proposal(edit(edit(src, "DEPTH = 4", "DEPTH = 5"), "LR = 0.1 ", "LR = 0.2 "),
                                        "both", "tune"))
    named = engine.add_proposal(Proposal(edit(src, "BIAS = 0.0", "BIAS = -0.1"), "bias", "user", question=2))
    assert (lr.question, depth.question, both.question, named.question) == (1, 2, None, 2)
    with pytest.raises(EngineError, match="no question Q7"):
        engine.propose_diff("--- a/train.py\n+++ b/train.py\n", "x", question=7)


def test_question_page_effects_with_intervals_from_real_trials(engine):
    engine.run_baseline()
    q = engine.ask("Does a negative BIAS help?", "keep it if ≥ 0.01 better")
    src = engine.head_source()
    better = engine.run_edit(edit(src, "BIAS = 0.0", "BIAS = -0.05"), "BIAS -0.05 lowers val_bpb",
                             -0.05, question=q.id)
    assert better.status == Status.QUEUED and better.source == "user" and better.question == q.id
    done = engine.run(better.id)
    assert done.status == Status.KEPT, done.verdict
    page = engine.question(q.id)
    assert [e.id for e in page.experiments] == [better.id]
    (f,) = page.effects
    assert f.exp_id == better.id and f.better == pytest.approx(-done.delta)
    assert f.low < f.better < f.high and f.low > 0  # kept: its interval excludes no effect
    half = f.high - f.better
    assert half == pytest.approx(f.better - f.low)
    assert page.verdict.startswith(f"open: #{better.id} kept, {abs(f.better):.4f} better (95%: ")
    assert "close it with what you learned" in page.verdict
    state_q = engine.state().questions[0]
    assert state_q.experiments == [better.id] and state_q.verdict == page.verdict


def test_run_edit_refuses_the_head_and_a_broken_file(engine):
    head = engine.head_source()
    st = engine.edit_status(head)
    assert not st.differs and "Run Baseline" in st.summary
    with pytest.raises(EngineError, match="same as the research head"):
        engine.run_edit(head)
    broken = head.replace("def main():", "def main(:")
    st = engine.edit_status(broken)
    assert st.differs and (st.added, st.removed) == (1, 1)
    assert st.summary.startswith(f"1 line differs from the research head {engine.head()[:7]}")
    with pytest.raises(EngineError, match="was not run"):
        engine.run_edit(broken, "broken")
    rejected = engine.experiments(Status.REJECTED)
    assert len(rejected) == 1 and rejected[0].source == "user"  # the attempt is kept, with why


def test_run_edit_without_a_hypothesis_says_what_it_is(engine):
    exp = engine.run_edit(edit(engine.head_source(), "DEPTH = 4", "DEPTH = 3"))
    assert exp.hypothesis == f"my edit: +1/-1 lines against {engine.head()[:7]}"


def test_effect_sign_follows_the_direction():
    e = Experiment(id=3, status=Status.DISCARDED, source="tune", delta=0.02, sigma=0.01, z=None,
                   numbers={"runs": 2, "dof": 5})
    lo = qmod.effect(e, lower_is_better=True)
    hi = qmod.effect(e, lower_is_better=False)
    assert lo.better == pytest.approx(-0.02) and hi.better == pytest.approx(0.02)
    se = math.sqrt(2) * 0.01 / math.sqrt(2)
    assert hi.high - hi.better == pytest.approx(2.5705818 * se, rel=1e-6)  # t(0.975, 5)
    assert qmod.fmt_effect(lo) == "0.0200 worse (95%: 0.0457 worse to 0.0057 better)"
    assert qmod.fmt_effect(hi) == "0.0200 better (95%: 0.0057 worse to 0.0457 better)"
    clear = qmod.Effect(1, -0.03, -0.05, -0.01, -3.0, 2)
    assert qmod.fmt_effect(clear) == "0.0300 worse (95%: 0.0100 to 0.0500 worse)"
    assert qmod.effect(Experiment(id=4, status=Status.KEPT, source="baseline", delta=0.0, sigma=0.01)) is None
    assert qmod.effect(Experiment(id=5, status=Status.CRASHED, source="tune")) is None


def test_program_section_parsing_edges():
    assert qmod.from_program("no sections at all\n- a bullet") == []
    text = ("## Research questions\n1. First? (would change: stop tuning)\n* Second?\n"
            "### Sub-notes\n- still inside\n# Top\n- outside\n")
    assert qmod.from_program(text) == [("First?", "stop tuning"), ("Second?", ""), ("still inside", "")]


def test_warnings_barely_trained_and_step_count():
    curve = [ProgressRecord(1, s, s, s / 10, 10.4 - 0.01 * s) for s in range(5)]
    w = sanity.warnings_for(Experiment(id=1, status=Status.KEPT, source="baseline", summary={"num_steps": 2}),
                            curve, [])
    assert set(w) == {"barely_trained"} and "only 2 optimizer steps" in w["barely_trained"]
    flat = sanity.barely_trained(500, curve)
    assert flat and "hardly fell (10.4 → 10.4)" in flat
    falling = [ProgressRecord(1, s, s, s / 10, 10.0 - s) for s in range(5)]
    assert sanity.barely_trained(500, falling) is None
    mine = Experiment(id=5, status=Status.DISCARDED, source="baseline", code_hash="c", seed=42, budget=1.0,
                      summary={"num_steps": 80})
    twin = Experiment(id=2, status=Status.KEPT, source="baseline", code_hash="c", seed=42, budget=1.0,
                      summary={"num_steps": 120})
    other_seed = Experiment(id=3, status=Status.KEPT, source="baseline", code_hash="c", seed=43, budget=1.0,
                            summary={"num_steps": 20})
    close = Experiment(id=4, status=Status.KEPT, source="baseline", code_hash="c", seed=42, budget=1.0,
                       summary={"num_steps": 85})
    msg = sanity.step_count(mine, 80, [twin, other_seed, close])
    assert msg and msg.startswith("it made 80 steps where #2 (the same code, seed 42, budget) made 120 (33% apart)")
    assert sanity.step_count(mine, 80, [other_seed, close]) is None


def test_a_real_run_that_barely_trained_says_so(engine):
    (exp, _) = engine.run_baseline()  # the stand-in makes 5 steps
    assert "barely_trained" in exp.warnings and "only 5 optimizer steps" in exp.warnings["barely_trained"]
    assert engine.get(exp.id).warnings == exp.warnings  # stored


def test_journal_v7_upgrades_to_questions(tmp_path):
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        j.create(status=Status.PROPOSED, source="user", hypothesis="old row")
    conn = sqlite3.connect(path)  # back to v7: drop what v8 and v9 added
    conn.executescript("DROP TABLE dismissals; DROP TABLE questions; DROP INDEX experiments_question;"
                       "ALTER TABLE experiments DROP COLUMN question;"
                       "ALTER TABLE experiments DROP COLUMN warnings; PRAGMA user_version = 7;")
    conn.close()
    with Journal(path) as j:
        (old,) = j.list()
        assert old.question is None and old.warnings == {}
        q = j.add_question("new?")
        j.update(old.id, question=q.id)
        assert [e.id for e in j.testing(q.id)] == [old.id]


def test_a_file_behind_the_head_is_not_run_as_an_edit(engine):
    engine.run_baseline()
    before = engine.head_source()
    kept = engine.run(engine.run_edit(edit(before, "BIAS = 0.0", "BIAS = -0.05"), "bias").id)
    assert kept.status == Status.KEPT, kept.verdict
    st = engine.edit_status(before)  # the researcher's file still holds the old head
    assert st.differs and st.behind == [kept.id]
    assert st.summary == (f"train.py is the research head as it was before #{kept.id} was kept: Run My Edit "
                          f"would undo it; adopt the head first (sigmaloop adopt {kept.id})")
    with pytest.raises(EngineError, match="would undo it"):
        engine.run_edit(before, "stale file")
    fresh = edit(engine.head_source(), "DEPTH = 4", "DEPTH = 5")
    assert engine.edit_status(fresh).behind == []
