"""What a run learned (learned.learned), on real journals: real git, SQLite and trial subprocesses
of the stand-in trainer at a tiny budget; kept or not, it ends with the bar and a next step."""

from __future__ import annotations

from sigmaloop.learned import learned
from sigmaloop.models import Status

from enginekit import edit, queue_edit


def test_nothing_kept_states_the_smallest_keepable_effect_and_what_to_try(engine):
    assert learned([], engine.state())[0].startswith("No reference yet")
    engine.run_baseline()
    near = engine.run(queue_edit(engine, "LR = 0.1 ", "LR = 0.12 ", "a slightly higher LR").id)  # +0.0004
    worse = engine.run(queue_edit(engine, "BIAS = 0.0 ", "BIAS = 0.3 ", "a bias up").id)
    crash = engine.run(queue_edit(engine, "CRASH = False", "CRASH = True", "a crash").id)
    assert (near.reason, worse.reason, crash.status) == ("within_noise", "worse", Status.CRASHED)
    state = engine.state()
    lines = learned(engine.experiments(), state)
    ref = state.reference
    assert lines[0] == f"Reference: val_bpb {ref.value:.4f} ± {ref.sigma:.4f}, the head's mean over 2 seeds " \
                       "(lower is better)."
    assert "Of 3 edits run: 0 kept, 1 within noise, 1 worse beyond noise, 1 crashed." in lines
    bar = next(line for line in lines if line.startswith("Nothing was kept."))
    assert f"The smallest effect that could have been kept: {ref.keep_threshold:.4f} val_bpb lower" in bar
    assert next(line for line in lines if line.startswith("Closest:")).startswith(
        f"Closest: #{near.id} (a slightly higher LR), ")
    nexts = [line for line in lines if line.startswith("Next: ")]
    assert 1 <= len(nexts) <= 3
    # the stand-in makes 5 steps: its reference barely trained, which comes first
    assert nexts[0].startswith("Next: the reference runs barely trained, #1 made 5 optimizer steps")
    # σ on 1 dof: the noise advisor's "more seeds", without repeating the bar
    assert any("More seeds lower it" in n and "can only keep" not in n for n in nexts)


def test_a_keep_is_named_with_its_size_and_the_open_question_with_where_it_stands(engine):
    engine.run_baseline()
    q = engine.ask("Does a negative bias help?", "≥ 0.05 better: keep it")
    exp = engine.run_edit(edit(engine.head_source(), "BIAS = 0.0 ", "BIAS = -0.2 "), "a negative bias",
                          question=q.id)
    kept = engine.run_if_queued(exp.id)
    assert kept.status == Status.KEPT, kept.verdict
    before = {e.id for e in engine.experiments()}
    lines = learned(engine.experiments(), engine.state())
    runs = int(kept.numbers["runs"])
    assert f"Kept #{kept.id} (a negative bias): 0.2000 val_bpb better, {abs(kept.z):.1f}σ over {runs} seeds." in lines
    assert "Of 1 edit run: 1 kept." in lines
    assert not any(line.startswith("Nothing was kept") for line in lines)
    assert any(line.startswith(f"Next: the loop goes on from the new head (#{kept.id})") for line in lines)
    assert any(line.startswith(f"Question #{q.id} (Does a negative bias help?): open: #{kept.id} kept") for line in lines)
    # one loop's rows only: nothing of it ran yet
    assert learned([e for e in engine.experiments() if e.id not in before], engine.state())[1] == "No edits were tried."


def test_a_gain_held_for_a_look_is_not_called_close_and_a_maximized_metric_reads_the_same():
    """Pure: hand-made rows and state (the shapes the engine stores)."""
    from sigmaloop.models import Experiment
    from sigmaloop.state import EngineState, ReferenceState

    ref = ReferenceState(0.80, 0.01, 10, [1, 2, 3], [1, 2, 3], keep_threshold=0.0227)
    state = EngineState("acc", "maximize", ref, None, {}, 0, 2, [], None)
    near = Experiment(id=4, status=Status.DISCARDED, source="tune", hypothesis="wider", reason="within_noise",
                      delta=0.01, z=0.7, metric=0.81, numbers={"runs": 1})
    held = Experiment(id=5, status=Status.DISCARDED, source="tune", hypothesis="leak?", reason="implausible",
                      delta=0.3, z=21.0, metric=1.1, numbers={"runs": 2})
    lines = learned([near, held], state)
    assert lines[0] == "Reference: acc 0.8000 ± 0.0100, the head's mean over 3 seeds (higher is better)."
    assert "Of 2 edits run: 0 kept, 1 within noise, 1 held as implausibly large." in lines
    assert "Nothing was kept. The smallest effect that could have been kept: 0.0227 acc higher " \
           "(2.8% of the reference)." in lines
    assert "Closest: #4 (wider), 0.0100 acc better, 0.7σ (within noise)." in lines
    nexts = [line for line in lines if line.startswith("Next: ")]
    assert nexts[0].startswith("Next: look at #5: a gain too large to keep unseen (`sigmaloop show 5`")
    assert nexts[1].startswith("Next: #4 pointed the right way but stayed within noise")
