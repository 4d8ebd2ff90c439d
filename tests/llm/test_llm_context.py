"""The prompt fits llm.context_tokens, keeps the script whole and drops old history first."""

from __future__ import annotations

import pytest

from sigmaloop.models import CrashLocation, Experiment, Status
from sigmaloop.proposers import ProposalContext, ProposalError
from sigmaloop.proposers.llm import _numbered, build_messages, messages_tokens

from enginekit import FAKE_TRAIN

STATUSES = [Status.KEPT, Status.DISCARDED, Status.CRASHED, Status.DISCARDED, Status.REJECTED]


def journal(n: int, tmp_path) -> list[Experiment]:
    exps = [Experiment(id=1, status=Status.KEPT, source="baseline", hypothesis="baseline (seed 42)",
                       metric=1.0, seed=42)]
    for i in range(2, n + 2):
        status = STATUSES[i % len(STATUSES)]
        e = Experiment(id=i, status=status, source="llm:m" if i % 2 else "tune",
                       hypothesis=f"idea number {i}: change the learning-rate schedule to variant {i} "
                                  "because the loss plateaus early",
                       predicted_delta=-0.01, delta=0.002 * (i % 7) - 0.006, z=0.5, sigma=0.002,
                       verdict="within noise" if status == Status.DISCARDED else status.value)
        if status == Status.CRASHED:
            log = tmp_path / f"{i}.log"
            log.write_text("".join(f"step {s} loss 3.0\n" for s in range(100)) +
                           "Traceback...\nRuntimeError: boom\n")
            e.log_path = str(log)
            e.crash = CrashLocation("train.py", 40, "RuntimeError: boom")
        if status == Status.REJECTED and i % 3 == 0:
            e.verdict, e.reason = "rejected by user: too risky", "user_rejected"
            e.rejection_reason = f"reason {i}: no changes to the tokenizer please"
        exps.append(e)
    return exps


def ctx(exps, source=FAKE_TRAIN) -> ProposalContext:
    return ProposalContext(source=source, script_name="train.py", experiments=exps, best=exps[0] if exps else None,
                           sigma=0.002, metric="val_bpb", lower_is_better=True,
                           program="# program\nBe bold. " * 20)


@pytest.mark.parametrize("n", [10, 100, 1000])
@pytest.mark.parametrize("budget", [2500, 6000])
def test_context_stays_within_budget_and_keeps_the_script(n, budget, tmp_path):
    exps = journal(n, tmp_path)
    built = build_messages(ctx(exps), budget, k=2.0, reserve=300)
    assert built.tokens <= budget - 300
    assert built.tokens == messages_tokens(built.messages)
    user = built.messages[1]["content"]
    assert _numbered(FAKE_TRAIN) in user  # the script, whole
    assert "Be bold." in user and "Best so far: 1.000000" in user
    newest = f"idea number {n + 1}:"
    assert newest in user  # the newest experiment always makes it
    if n == 1000:
        assert built.dropped  # older history was left out, not the script
        assert "idea number 2:" not in user


def test_priorities_old_rows_and_crash_tails_go_first(tmp_path):
    exps = journal(100, tmp_path)
    roomy = build_messages(ctx(exps), 20000, k=2.0)
    tight = build_messages(ctx(exps), 2600, k=2.0)
    assert "Tails of recent crash logs" in roomy.messages[1]["content"]
    assert "RuntimeError: boom" in roomy.messages[1]["content"]
    user = tight.messages[1]["content"]
    assert "reason" in user and "no changes to the tokenizer" in user  # the researcher's word stays
    assert "Tails of recent crash logs" not in user
    assert tight.dropped


def test_tried_ideas_and_rejection_reasons_are_listed(tmp_path):
    user = build_messages(ctx(journal(60, tmp_path)), 30000, k=2.0).messages[1]["content"]
    assert "Ideas already tried" in user and "idea number 2:" in user
    assert "Reasons the researcher gave" in user and "reason 3:" not in user  # 3 % 5 != 4
    assert "| id | source | hypothesis | predicted Δ | measured Δ | z | verdict |" in user
    assert "baseline (seed 42)" not in user.split("## Recent experiments")[1]


def test_a_script_too_big_for_the_budget_is_an_error_not_a_cut():
    big = FAKE_TRAIN + "".join(f"X{i} = {i}\n" for i in range(2000))
    with pytest.raises(ProposalError, match=r"alone needs about \d+ tokens.*llm\.context_tokens is 3000"):
        build_messages(ctx([], source=big), 3000)


def test_program_md_is_cut_with_a_note_when_it_alone_overflows():
    c = ctx([])
    c.program = "long instructions. " * 5000
    built = build_messages(c, 4000)
    assert built.tokens <= 4000
    assert "cut to fit" in built.messages[1]["content"]
    assert _numbered(FAKE_TRAIN) in built.messages[1]["content"]
