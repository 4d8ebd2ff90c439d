"""The LLM proposer against a real HTTP server speaking Chat Completions (scripted answers)."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fakeopenai import KEY, FakeOpenAI, completion, error, proposal

from sigmaloop import secret
from sigmaloop.edits import EditError
from sigmaloop.guard import check_edit
from sigmaloop.proposers import ProposalContext, ProposalError, make_proposer
from sigmaloop.proposers.llm import LLMProposalError, LLMProposer, parse_answer

from enginekit import FAKE_TRAIN

GOOD = [("BIAS = 0.0", "BIAS = -0.1")]


def ctx(source: str = FAKE_TRAIN, **kw) -> ProposalContext:
    return ProposalContext(source=source, script_name="train.py", experiments=kw.pop("experiments", []),
                           best=None, sigma=0.002, metric="val_bpb", lower_is_better=True, **kw)


def llm(fake: FakeOpenAI, **kw) -> LLMProposer:
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout", 5)
    return LLMProposer(model="fake-model", base_url=fake.base_url, **kw)


def test_good_proposal_request_shape_and_usage(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)  # the user's own endpoint: it gets the key
    fake.script(proposal(GOOD, "lower bias lowers val_bpb", -0.1, prompt_tokens=321, completion_tokens=45))
    p = llm(fake, temperature=0.3).propose(ctx(program="Try bold ideas."))
    assert p.source == "llm:fake-model"
    assert "BIAS = -0.1" in p.new_source and p.predicted_delta == -0.1
    assert p.hypothesis == "lower bias lowers val_bpb"
    assert p.params["usage"] == {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366,
                                 "requests": 1}
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"  # the key IS used
    assert req.body["model"] == "fake-model" and req.body["temperature"] == 0.3
    assert req.body["response_format"]["type"] == "json_schema"
    assert req.headers.get("x-stainless-retry-count", "0") == "0"
    text = req.text
    assert "Try bold ideas." in text and "  7| BIAS = 0.0" in text  # program.md, numbered script


def test_malformed_json_is_retried_with_the_error_shown(fake):
    fake.script(completion('{"hypothesis": "x", "edits": [oops'), proposal(GOOD))
    p = llm(fake).propose(ctx())
    assert "BIAS = -0.1" in p.new_source and p.params["attempts"] == 2
    assert p.params["usage"]["requests"] == 2 and p.params["usage"]["total_tokens"] == 300
    second = fake.requests[1].messages
    assert second[-2] == {"role": "assistant", "content": '{"hypothesis": "x", "edits": [oops'}
    assert "not valid JSON" in second[-1]["content"]
    assert len(fake.requests[0].messages) == 2  # the first request had no feedback


def test_missing_search_text_retried_then_proposal_error(fake):
    bad = proposal([("LR = 0.5", "LR = 0.2")])
    fake.script(bad, bad, bad)
    with pytest.raises(LLMProposalError) as info:
        llm(fake, max_retries=2).propose(ctx())
    assert "3 attempts" in str(info.value) and "missing from the file" in str(info.value)
    assert info.value.usage["requests"] == 3 and info.value.usage["total_tokens"] == 450
    assert len(fake.requests) == 3
    assert "missing from the file" in fake.requests[1].messages[-1]["content"]


def test_syntax_error_is_retried(fake):
    fake.script(proposal([("DEPTH = 4", "DEPTH = (4")]), proposal([("DEPTH = 4", "DEPTH = 5")]))
    p = llm(fake).propose(ctx())
    assert "DEPTH = 5" in p.new_source
    assert "does not parse" in fake.requests[1].messages[-1]["content"]
    assert p.params["rejected_answers"][0].startswith("the edit does not parse")


@pytest.mark.parametrize("edit", [
    [("BIAS = 0.0", "BIAS = 0.0\nopen('prepare.py', 'a').write('# tuned')")],
    [("import json", "import json\nfrom prepare import evaluate_bpb")],
])
def test_edit_touching_prepare_is_rejected(fake, edit):
    fake.script(proposal(edit))
    with pytest.raises(ProposalError, match="prepare"):
        llm(fake, max_retries=0).propose(ctx())


def test_a_guard_refusal_is_shown_to_the_model_and_retried(fake):
    forged = [("BIAS = 0.0", 'BIAS = 0.0\nprint("val_" + "bpb:          0.1")')]
    fake.script(proposal(forged), proposal(GOOD))
    p = llm(fake).propose(ctx())
    assert "BIAS = -0.1" in p.new_source and p.params["attempts"] == 2
    feedback = fake.requests[1].messages[-1]["content"]
    assert "rule 'summary', line 8" in feedback and "printing val_bpb" in feedback


def test_edit_naming_another_file_is_rejected(fake):
    reply = completion(json.dumps({"hypothesis": "h", "predicted_delta": -0.1, "rationale": "",
                                   "edits": [{"file": "prepare.py", "search": "BIAS = 0.0",
                                              "replace": "BIAS = -0.1"}]}))
    fake.script(reply)
    with pytest.raises(ProposalError, match=r"only train\.py may be edited"):
        llm(fake, max_retries=0).propose(ctx())


def test_seed_only_and_noop_edits_are_rejected(fake):
    fake.script(proposal([("SEED_OFFSET = 0", "SEED_OFFSET = 1")]),
                proposal([("DEPTH = 4", "DEPTH = 4  # deeper?")]))
    with pytest.raises(ProposalError, match="comments or formatting"):
        llm(fake, max_retries=1).propose(ctx())
    assert "seed" in fake.requests[1].messages[-1]["content"]


def test_429_with_retry_after_waits_then_succeeds(fake):
    fake.script(error(429, "slow down", {"Retry-After": "1"}), proposal(GOOD))
    t0 = time.monotonic()
    p = llm(fake).propose(ctx())
    waited = time.monotonic() - t0
    assert "BIAS = -0.1" in p.new_source
    assert 0.9 <= waited < 3.0, waited
    assert len(fake.requests) == 2


def test_500_then_success(fake):
    fake.script(error(500, "upstream exploded"), proposal(GOOD))
    p = llm(fake).propose(ctx())
    assert "BIAS = -0.1" in p.new_source and len(fake.requests) == 2


def test_5xx_retries_are_bounded(fake):
    sleeps = []
    fake.script(*[error(503, "overloaded", {"Retry-After": "0"})] * 5)
    with pytest.raises(ProposalError, match=r"answered 503 \(server error\) 3 times"):
        llm(fake, max_retries=2, sleep=sleeps.append).propose(ctx())
    assert len(fake.requests) == 3 and sleeps == [0.0, 0.0]


def test_timeout_gives_a_clear_error(fake):
    fake.script(proposal(GOOD))
    fake.replies[0].delay = 3.0
    t0 = time.monotonic()
    with pytest.raises(ProposalError) as info:
        llm(fake, timeout=1).propose(ctx())
    assert time.monotonic() - t0 < 2.5
    msg = str(info.value)
    assert "did not answer within 1 s" in msg and fake.base_url in msg and "llm.timeout" in msg


def test_connection_refused_names_the_base_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    proposer = LLMProposer(model="m", base_url=url, timeout=2)
    with pytest.raises(ProposalError) as info:
        proposer.propose(ctx())
    assert f"cannot connect to the LLM server at {url}" in str(info.value)
    assert KEY not in str(info.value)


def test_server_rejecting_response_format_falls_back_to_fenced_json():
    with FakeOpenAI(reject_response_format=True) as fake:
        fake.script(proposal(GOOD, fenced=True), proposal([("DEPTH = 4", "DEPTH = 5")], fenced=True))
        proposer = llm(fake)
        p = proposer.propose(ctx())
        assert "BIAS = -0.1" in p.new_source and p.params["response_format"] == "text"
        formats = [r.body.get("response_format", {}).get("type") for r in fake.requests]
        assert formats == ["json_schema", "json_object", None]
        proposer.propose(ctx())  # remembered: no more rejected requests
        assert len(fake.requests) == 4 and "response_format" not in fake.requests[3].body


def test_no_key_and_no_base_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ProposalError, match=r"set OPENAI_API_KEY or llm\.base_url"):
        LLMProposer(model="m").propose(ctx())


def test_local_server_works_without_a_key(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    fake.script(proposal(GOOD))
    llm(fake).propose(ctx())
    assert fake.requests[0].headers["authorization"] == "Bearer not-needed"


def test_explicit_key_wins_and_auth_errors_never_show_it(fake):
    other = "sk-editor-secret-abcdef0123456789"
    fake.script(error(401, f"Incorrect API key provided: {other}."))
    with pytest.raises(ProposalError) as info:
        llm(fake, api_key=other).propose(ctx())
    assert fake.requests[0].headers["authorization"] == f"Bearer {other}"
    assert other not in str(info.value) and "answered 401" in str(info.value)
    assert other not in repr(llm(fake, api_key=other))


def test_key_set_by_the_editor_is_used_and_a_new_key_rebuilds_the_client(fake, monkeypatch):
    from sigmaloop.proposers import llm as llm_mod

    monkeypatch.delenv("OPENAI_API_KEY")
    fake.script(proposal(GOOD), proposal(GOOD))
    proposer = LLMProposer(model="m", timeout=5, base_url=fake.base_url)
    secret.trust("127.0.0.1")  # as when the user answers Allow for this endpoint
    try:
        llm_mod.set_api_key("sk-from-editor-1111111111")
        proposer.propose(ctx())
        llm_mod.set_api_key("sk-from-editor-2222222222")
        proposer.propose(ctx())
    finally:
        llm_mod.set_api_key(None)
    assert [r.headers["authorization"] for r in fake.requests] == [
        "Bearer sk-from-editor-1111111111", "Bearer sk-from-editor-2222222222"]


def test_line_number_prefixes_copied_by_the_model_are_stripped(fake):
    fake.script(proposal([("  7| BIAS = 0.0", "  7| BIAS = -0.1")]))
    p = llm(fake).propose(ctx())
    assert "\nBIAS = -0.1 " in p.new_source


def test_registered_kind_reads_the_config(fake):
    from sigmaloop.config import from_dict

    cfg = from_dict({"llm": {"model": "m2", "base_url": fake.base_url, "temperature": 0.1,
                             "timeout": 7, "max_retries": 1, "context_tokens": 5000}})
    p = make_proposer("llm", cfg, None)
    assert (p.name, p.base_url, p.temperature, p.timeout, p.max_retries, p.context_tokens) == (
        "llm:m2", fake.base_url, 0.1, 7.0, 1, 5000)


def test_parse_answer_variants():
    assert parse_answer('<think>hmm</think>{"a": 1}') == {"a": 1}
    assert parse_answer('text\n```json\n{"a": 2}\n```\n') == {"a": 2}
    with pytest.raises(ValueError, match="exactly one"):
        parse_answer('```json\n{"a": 1}\n```\n```json\n{"a": 2}\n```')
    with pytest.raises(ValueError, match="not an object"):
        parse_answer("[1, 2]")


TRAIN_WITH_EVAL = """\
import math
import prepare

LR = 0.1
DATA = prepare.load()
val_bpb = prepare.evaluate_bpb(None, DATA)
if not math.isfinite(val_bpb):
    raise SystemExit(1)
print(f"val_bpb:          {val_bpb:.6f}")
"""


@pytest.mark.parametrize("old,new,why", [
    ("LR = 0.1\n", "LR = 0.1\ndef evaluate_bpb(*a):\n    return 0.0\n", "defines 'evaluate_bpb'"),
    ("LR = 0.1\n", "LR = 0.1\nprepare.evaluate_bpb = lambda *a: 0.0\n", "monkeypatching"),
    ("LR = 0.1\n", "LR = 0.1\nsetattr(prepare, 'EVAL_TOKENS', 1)\n", "monkeypatching"),
    ("import prepare\n", "import prepare as p\n", "imports from prepare"),
    ("if not math", "val_bpb *= 0.5\nif not math", "defines 'val_bpb'"),
    ("(None, DATA)", "(None, DATA[:10])", "evaluation call"),
    ("{val_bpb:.6f}", "{val_bpb - 0.1:.6f}", "printing val_bpb"),
])
def test_protected_evaluation_rule(old, new, why):
    with pytest.raises(EditError, match=why.replace("(", r"\(")):
        check_edit(TRAIN_WITH_EVAL, TRAIN_WITH_EVAL.replace(old, new, 1))


def test_protected_rule_allows_training_changes_and_moving_code():
    check_edit(TRAIN_WITH_EVAL, TRAIN_WITH_EVAL.replace("LR = 0.1", "LR = 0.05\nWD = 0.1"))
    check_edit(TRAIN_WITH_EVAL, TRAIN_WITH_EVAL.replace(
        "LR = 0.1\n", "LR = 0.1\n\ndef evaluate_train_loss():\n    return 1.0\n"))
