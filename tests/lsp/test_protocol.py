"""The wire schema: the checked-in TypeScript matches it, the records the server builds match it,
and command arguments are converted strictly, with errors that name the argument."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from sigmaloop import state as state_mod
from sigmaloop.engine import Engine
from sigmaloop.lsp import params, protocol
from sigmaloop.models import CrashLocation, Experiment, ProgressRecord, Status
from sigmaloop.questions import effect

from enginekit import make_workspace

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protocol", ROOT / "scripts" / "gen_protocol.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_typescript_is_up_to_date():
    gen = _generator()
    assert gen.OUT.read_text(encoding="utf-8") == gen.render(), \
        "extension/src/protocol.gen.ts drifted from server/sigmaloop/lsp/protocol.py: " \
        "run .venv/bin/python scripts/gen_protocol.py"


def wire_keys(cls) -> set[str]:
    return {protocol.camel(f.name) for f in dataclasses.fields(cls)}


def test_experiment_record_has_exactly_the_schema_fields():
    e = Experiment(id=3, status=Status.CRASHED, source="tune", metric=float("nan"),
                   crash=CrashLocation("train.py", 4, "boom"), numbers={"k": float("inf")})
    rec = protocol.experiment(e)
    assert set(rec) == wire_keys(protocol.ExperimentRecord)
    assert rec["status"] == "crashed" and rec["metric"] is None and rec["numbers"] == {"k": None}
    assert rec["crash"] == {"file": "train.py", "line": 4, "message": "boom"}
    assert rec["effect"] is None and rec["warnings"] == {} and rec["question"] is None
    # every schema field is an Experiment field (or derived from one: the effect is the engine's)
    names = {f.name for f in dataclasses.fields(Experiment)} | {"is_baseline", "effect"}
    assert {f.name for f in dataclasses.fields(protocol.ExperimentRecord)} <= names
    shown = protocol.experiment(e, script_name="train.py", parent_text="a", proposed_text="b")
    assert set(shown) == wire_keys(protocol.ShowExperimentResult)


def test_effect_question_and_warnings_on_the_record():
    """A judged candidate's effect (positive = better, whatever the direction) with its interval."""
    e = Experiment(id=5, status=Status.DISCARDED, source="user", metric=1.03, delta=0.03, sigma=0.01,
                   z=-2.1, numbers={"runs": 2.0, "dof": 3.0}, question=2,
                   warnings={"barely_trained": "ran 2 optimizer steps"})
    rec = protocol.experiment(e, effect(e, lower_is_better=True))
    assert set(rec) == wire_keys(protocol.ExperimentRecord)
    assert rec["question"] == 2 and rec["warnings"] == {"barely_trained": "ran 2 optimizer steps"}
    f = rec["effect"]
    assert set(f) == wire_keys(protocol.EffectRecord) and f["level"] == 0.95
    assert f["better"] == -0.03 and f["low"] < -0.03 < f["high"]
    up = protocol.experiment(e, effect(e, lower_is_better=False))["effect"]  # maximize: higher is better
    assert up["better"] == 0.03


def test_progress_point_keeps_extra_numbers():
    rec = protocol.progress(ProgressRecord(1, 5, 1.5, 0.25, float("nan"), {"lr": 0.1}))
    assert rec == {"step": 5, "t": 1.5, "frac": 0.25, "loss": None, "lr": 0.1}


def test_engine_state_matches_the_state_schema(tmp_path):
    eng = Engine(make_workspace(tmp_path / "ws"))
    try:
        eng_state = eng.state()
        d = protocol.state(eng_state, None)
    finally:
        eng.close()
    assert set(d) == wire_keys(protocol.State)
    assert set(d["loop"]) == wire_keys(protocol.LoopStatus)
    assert d["questions"] == []
    assert d["reference"] is None and d["best"] is None and d["direction"] == "minimize"
    fake = {"n": 0, "n_predicted": 0}  # calibration: its as_dict() camelCased, as the schema says
    from sigmaloop.calibration import Calibration
    cal = Calibration(**fake, sign_accuracy=None, pearson=None, predicted_improvements=0,
                      improvements_within_noise=0, improvements_confirmed=0, mean_abs_error=None,
                      bias=None)
    assert {protocol.camel(k) for k in cal.as_dict()} == wire_keys(protocol.CalibrationState)
    d = protocol.state(dataclasses.replace(eng_state, reference=state_mod.ReferenceState(1.0, 0.1, 1, [42, 43], [1, 2]),
                                           best=state_mod.BestState(1, 1.0, "h")), None)
    assert set(d["reference"]) == wire_keys(protocol.ReferenceState)
    assert set(d["best"]) == wire_keys(protocol.BestState)


@pytest.mark.parametrize(("cls", "args", "message"), [
    (protocol.ExperimentParams, [], "accept: needs id"),
    (protocol.ExperimentParams, ["abc"], "id must be an integer, not 'abc'"),
    (protocol.ExperimentParams, [True], "id must be an integer, not True"),
    (protocol.ExperimentParams, [None], "id must be an integer, not None"),
    (protocol.ExperimentParams, [{"id": "x"}], "id must be an integer, not 'x'"),
    (protocol.ExperimentParams, [{"id": 1, "ident": 2}], "unknown argument ident"),
    (protocol.ExperimentParams, [1, 2], "takes at most 1 argument"),
    (protocol.RejectParams, [1, 5], "reason must be a string, not 5"),
    (protocol.StartLoopParams, ["many"], "iterations must be an integer"),
    (protocol.ProposeParams, ["gpt"], "kind must be 'tune' or 'llm', not 'gpt'"),
    (protocol.ExperimentsParams, {"ids": "all"}, "ids must be a list"),
    (protocol.AskParams, [], "needs text"),
    (protocol.AskParams, [3], "text must be a string, not 3"),
    (protocol.CloseQuestionParams, [1, "", "closed"], "status must be 'answered' or 'dropped' or 'open'"),
    (protocol.RunEditParams, ["h", "big"], "predictedDelta must be a number, not 'big'"),
    (protocol.InitializationOptions, {"settings": {"budget": "x"}}, "settings.budget must be a number"),
])
def test_bad_arguments_name_the_argument(cls, args, message):
    with pytest.raises(params.ParamsError, match=message.replace("(", r"\(").replace("[", r"\[")):
        params.structure(cls, args, "accept")


def test_arguments_positional_or_one_object_defaults_filled():
    assert params.structure(protocol.RejectParams, [4], "x") == protocol.RejectParams(4, None)
    assert params.structure(protocol.RejectParams, [{"id": 4, "reason": "no"}], "x").reason == "no"
    assert params.structure(protocol.StartLoopParams, [], "x").iterations == 10
    assert params.structure(protocol.StartLoopParams, None, "x").iterations == 10
    assert params.structure(protocol.ExperimentsParams, {"maxPoints": 3}, "x").max_points == 3
    assert params.structure(protocol.RunEditParams, [], "x") == protocol.RunEditParams(None, None, None)
    assert params.structure(protocol.RunEditParams, ["h", -0.01, 2], "x").predicted_delta == -0.01
    assert params.structure(protocol.AskParams, ["Does warmup help?"], "x").decision is None
    settings = {"budget": 2, "llm": {"model": "m", "baseUrl": ""}, "proposer": None, "trace": "x"}
    assert protocol.overrides(settings) == {"experiment": {"budget": 2}, "llm": {"model": "m"}}
