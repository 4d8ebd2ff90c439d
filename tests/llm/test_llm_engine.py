"""The LLM proposer inside the real Engine: git workspace, SQLite journal, trial subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeopenai import KEY, FakeOpenAI, error, proposal

from sigmaloop import config as config_mod
from sigmaloop.engine import Engine
from sigmaloop.models import Status

from enginekit import make_workspace


def llm_engine(tmp_path: Path, fake: FakeOpenAI | None, base_url: str | None = None, **over) -> Engine:
    ws = make_workspace(tmp_path / "ws")
    cfg = config_mod.load(ws)
    cfg.proposer.kind = over.pop("kind", "llm")
    cfg.proposer.mix = over.pop("mix", ["llm", "tune"])
    cfg.proposer.exclude = over.pop("exclude", [])
    cfg.llm.model = "fake-model"
    cfg.llm.base_url = base_url or fake.base_url
    cfg.llm.timeout = over.pop("timeout", 5.0)
    cfg.llm.max_retries = over.pop("max_retries", 1)
    assert not over
    return Engine(ws, cfg)


@pytest.fixture
def closing():
    engines = []
    yield engines.append
    for e in engines:
        e.close()


def test_good_proposal_runs_and_is_judged(tmp_path, fake, closing):
    engine = llm_engine(tmp_path, fake)
    closing(engine)
    fake.script(
        proposal([("BIAS = 0.0", "BIAS = -0.1")], "lower bias lowers val_bpb", -0.08),
        proposal([("DEPTH = 4", "DEPTH = 5")], "depth 5 lowers val_bpb", -0.01),
    )
    kept, discarded = engine.loop(2)
    assert kept.status == Status.KEPT and "kept" in kept.verdict, kept.verdict
    assert kept.source == "llm:fake-model" and kept.predicted_delta == -0.08
    assert kept.delta == pytest.approx(-0.1, abs=1e-2)
    assert kept.usage == {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                          "requests": 1}
    assert "usage" not in kept.params and kept.params["attempts"] == 1
    assert "BIAS = -0.1" in engine.head_source()
    assert discarded.status == Status.DISCARDED and "within noise" in discarded.verdict
    # the second request saw the first result, the new head, best and sigma
    text = fake.requests[1].text
    assert "lower bias lowers val_bpb" in text and "kept" in text
    assert "BIAS = -0.1" in text and "Best so far:" in text and "noise sigma:" in text
    # stored in the journal (re-read from disk)
    again = engine.journal.get(kept.id)
    assert again.usage["total_tokens"] == 150 and again.predicted_delta == -0.08


def test_the_llm_is_steered_to_open_questions_and_says_which_it_tests(tmp_path, fake, closing):
    engine = llm_engine(tmp_path, fake)
    closing(engine)
    engine.ask("Does a deeper model help at this budget?", "if DEPTH 5 is 0.01 better, go deeper")
    engine.ask("Is the BIAS term worth keeping?")
    closed = engine.ask("An old question")
    engine.close_question(closed.id, "settled")
    fake.script(
        proposal([("BIAS = 0.0", "BIAS = -0.1")], "lower bias lowers val_bpb", -0.08, question=2),
        proposal([("DEPTH = 4", "DEPTH = 5")], "depth 5 lowers val_bpb", -0.01, question=99),
        proposal([("LR = 0.1 ", "LR = 0.09 ")], "lower LR", -0.01, question=True),
    )
    a, b, c = (engine.propose("llm") for _ in range(3))
    # named (and open) → that one; a made-up id → the one open question naming what it changes;
    # nothing usable and no question names LR → none
    assert (a.question, b.question, c.question) == (2, 1, None)
    text = fake.requests[0].text
    assert "Open research questions" in text
    assert ("- Q1: Does a deeper model help at this budget? (what would change the researcher's decision: "
            "if DEPTH 5 is 0.01 better, go deeper); not tested yet") in text
    assert "Q3" not in text  # closed questions are not asked about
    assert '"question"' in fake.requests[0].text  # the answer format asks for it
    assert f"- Q2: Is the BIAS term worth keeping?; tested so far by #{a.id} proposed" in fake.requests[1].text


def test_failed_proposals_are_recorded_and_the_loop_goes_on(tmp_path, fake, closing):
    engine = llm_engine(tmp_path, fake, timeout=1.0, max_retries=1)
    closing(engine)
    missing = proposal([("LR = 0.5", "LR = 0.2")])
    hang = proposal([("DEPTH = 4", "DEPTH = 5")])
    hang.delay = 3.0
    fake.script(missing, missing, hang, proposal([("DEPTH = 4", "DEPTH = 3")], "shallower"))
    first, second, third = engine.loop(3)
    assert first.status == Status.REJECTED and first.source == "llm:fake-model"
    assert first.verdict.startswith("no valid proposal:") and "missing from the file" in first.verdict
    assert first.usage["requests"] == 2 and first.usage["total_tokens"] == 300
    assert second.status == Status.REJECTED and "did not answer within 1 s" in second.verdict
    assert fake.base_url in second.verdict
    assert third.status in (Status.KEPT, Status.DISCARDED) and third.hypothesis == "shallower"


def test_connection_refused_is_recorded_with_the_base_url(tmp_path, closing):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    engine = llm_engine(tmp_path, None, base_url=url)
    closing(engine)
    exp = engine.propose()
    assert exp.status == Status.REJECTED and f"cannot connect to the LLM server at {url}" in exp.verdict


def test_the_key_is_used_but_never_stored_logged_or_passed_to_trials(tmp_path, fake, closing, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)  # the user's own endpoint: it gets the key
    engine = llm_engine(tmp_path, fake)
    closing(engine)
    # the trial writes its environment where it may write (its metrics file; the sandbox hides the rest)
    env_dump = (
        "def main():\n"
        "    open(os.environ['SIGMALOOP_METRICS'], 'a').write(json.dumps(dict(os.environ)) + '\\n')\n"
    )
    fake.script(
        error(401, f"Incorrect API key provided: {KEY}. You can find your API key at ..."),
        proposal([("def main():\n", env_dump), ("BIAS = 0.0", "BIAS = -0.1")],
                 f"dump the env (key {KEY} should not be here)", -0.1,
                 rationale=f"the model echoes {KEY}"),
    )
    rejected, ran = engine.loop(2)
    assert rejected.status == Status.REJECTED and "answered 401" in rejected.verdict
    assert ran.status in (Status.KEPT, Status.DISCARDED), ran.verdict
    # the key went to the server ...
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    # ... and reached the trial's environment neither by name nor by value
    dump = Path(ran.metrics_path).read_text()
    env = json.loads(next(line for line in dump.splitlines() if "SIGMALOOP_SEED" in line))
    assert "OPENAI_API_KEY" not in env and KEY not in dump
    assert "SIGMALOOP_SEED" in env
    # nothing under .sigmaloop/ (journal, logs, metrics) nor results.tsv holds it
    engine.journal.close()
    state = engine.workspace / ".sigmaloop"
    files = [p for p in state.rglob("*") if p.is_file()] + [engine.workspace / "results.tsv"]
    assert any(p.name == "journal.db" for p in files) and any(p.suffix == ".log" for p in files)
    key = KEY.encode()
    leaks = [str(p) for p in files if key in p.read_bytes()]
    # (the model's prose echoing a key is redacted too)
    assert leaks == [], leaks


def test_mixed_mode_tunes_constants_the_llm_introduced(tmp_path, fake, closing):
    engine = llm_engine(
        tmp_path, fake, kind="mixed", mix=["llm", "tune"],
        exclude=["BIAS", "LR", "DEPTH", "CRASH", "MAKE_NAN", "SLEEP", "SEED_OFFSET"],
    )
    closing(engine)
    fake.script(proposal([("BIAS = 0.0", "BIAS = -0.1\nNEW_KNOB = 3")], "a new knob", -0.1))
    llm_exp, tune_exp = engine.loop(2)
    assert llm_exp.source == "llm:fake-model" and llm_exp.status == Status.KEPT, llm_exp.verdict
    assert tune_exp.source == "tune", tune_exp.verdict
    assert set(tune_exp.params["changes"]) == {"NEW_KNOB"}
    assert "-NEW_KNOB = 3" in tune_exp.diff
    assert len(fake.requests) == 1
