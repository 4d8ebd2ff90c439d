"""`sigmaloop export --mlflow`: a real night (git, SQLite journal, trial subprocesses of the
stand-in trainer) exported to a real local MLflow store and read back through MLflow's own
client, as someone opening MLflow in the morning would see it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sigmaloop.core import EngineError
from sigmaloop.engine import Engine
from sigmaloop.mlflow_export import (
    MlflowExportError,
    changed_constants,
    default_uri,
    export_mlflow,
    redact,
    run_name,
)
from sigmaloop.models import ProgressRecord, Proposal, Status

from enginekit import edit, make_workspace, queue_edit

# the store tests need the extra; the module itself, the pure parts and the "not installed"
# scenario do not
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason='the mlflow extra: pip install "sigmaloop[mlflow]"')


def store(uri: str) -> Any:
    """MLflow's own client on ``uri``: what the tests read the export back through."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_by_id(client: Any, experiment_id: str) -> dict[int, Any]:
    runs = client.search_runs([experiment_id], max_results=1000)
    by_id = {int(r.data.tags["sigmaloop.exp_id"]): r for r in runs}
    assert len(by_id) == len(runs), "one run per experiment"
    return by_id


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Baselines, a kept edit testing a question (and its confirmation), a crash, a rejected
    edit and a pending proposal; exported once to the default store."""
    eng = Engine(make_workspace(tmp_path_factory.mktemp("night") / "ws"))
    eng.run_baseline()
    q = eng.ask("Does a negative BIAS help?", "keep it if ≥ 0.01 better")
    src = eng.head_source()
    kept = eng.run(eng.run_edit(edit(src, "BIAS = 0.0", "BIAS = -0.05"), "a negative bias lowers val_bpb",
                                -0.05, question=q.id).id)
    assert kept.status == Status.KEPT, kept.verdict
    crash = eng.run(queue_edit(eng, "CRASH = False", "CRASH = True", "a crash").id)
    assert crash.status == Status.CRASHED
    with pytest.raises(EngineError, match="was not run"):
        eng.run_edit(eng.head_source().replace("def main():", "def main(:"), "broken")
    pending = eng.add_proposal(Proposal(edit(eng.head_source(), "DEPTH = 4", "DEPTH = 6"), "deeper", "tune"))
    result = export_mlflow(eng)
    yield eng, result, {"kept": kept, "crash": crash, "pending": pending, "question": q}
    eng.close()


@needs_mlflow
def test_every_experiment_is_a_run_read_back_through_mlflow(night):
    eng, result, ids = night
    exps = {e.id: e for e in eng.experiments()}
    assert result.uri == default_uri(eng.state_dir) == f"sqlite:///{eng.state_dir / 'mlflow' / 'mlflow.db'}"
    assert (result.created, result.updated, result.unchanged) == (len(exps), 0, 0)
    assert result.experiment_name == f"ws/{eng.branch}"
    assert result.artifact_root == (eng.state_dir / "mlflow" / "artifacts").as_uri()
    assert result.ui_hint == f"pip install mlflow && mlflow ui --backend-store-uri {result.uri}"
    client = store(result.uri)
    assert client.get_experiment(result.experiment_id).name == result.experiment_name
    runs = runs_by_id(client, result.experiment_id)
    assert set(runs) == set(exps)
    statuses = {i: (exps[i].status.value, runs[i].info.status) for i in exps}
    assert statuses[1] == statuses[2] == ("kept", "FINISHED")  # the baselines
    assert statuses[ids["crash"].id] == ("crashed", "FAILED")
    rejected = next(e for e in exps.values() if e.status == Status.REJECTED)
    assert statuses[rejected.id] == ("rejected", "KILLED")  # never ran: logged so the night is whole
    assert statuses[ids["pending"].id] == ("proposed", "SCHEDULED")
    assert runs[ids["pending"].id].info.run_name == f"#{ids['pending'].id} DEPTH 4→6"
    assert runs[1].info.run_name == "#1 baseline (seed 42)"


@needs_mlflow
def test_the_kept_edit_has_its_params_metrics_curve_tags_and_diff(night):
    eng, result, ids = night
    kept, q = eng.get(ids["kept"].id), ids["question"]
    client = store(result.uri)
    run = runs_by_id(client, result.experiment_id)[kept.id]
    assert run.info.run_name == f"#{kept.id} BIAS 0.0→-0.05"
    assert run.data.params == {"BIAS": "-0.05", "seed": str(kept.seed), "budget": "0.3", "source": "user"}
    m = run.data.metrics
    assert m["val_bpb"] == pytest.approx(kept.metric) and m["delta"] == pytest.approx(kept.delta)
    assert m["z"] == pytest.approx(kept.z) and m["sigma"] == pytest.approx(kept.sigma)
    assert m["predicted_delta"] == pytest.approx(-0.05)
    effect = eng.effect(kept)
    assert (m["effect"], m["effect_low95"], m["effect_high95"]) == pytest.approx((effect.better, effect.low, effect.high))
    assert m["summary/num_steps"] == 5 and m["summary/val_bpb"] == pytest.approx(kept.summary["val_bpb"])
    assert m["timings/wall"] == pytest.approx(kept.timings["wall"]) and m["verdict/runs"] == 2
    curve = eng.curve(kept.id)
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(curve) == 5 and len(history) == len(curve)  # a real trial's curve, once
    assert [(h.step, h.value) for h in sorted(history, key=lambda h: h.step)] == [(r.step, r.loss) for r in curve]
    assert all(h.timestamp >= run.info.start_time for h in history)
    t = run.data.tags
    assert (t["status"], t["reason"], t["verdict"]) == ("kept", kept.reason, kept.verdict)
    assert (t["hypothesis"], t["predicted_delta"]) == ("a negative bias lowers val_bpb", "-0.05")
    assert (t["question"], t["question_text"]) == (str(q.id), "Does a negative BIAS help?")
    assert (t["commit"], t["parent_commit"], t["source"]) == (kept.commit, kept.parent_commit, "user")
    assert t["sigmaloop.rev"] == str(kept.rev) and "warning.barely_trained" in t
    assert "a negative bias lowers val_bpb" in t["mlflow.note.content"]
    assert client.download_artifacts(run.info.run_id, "edit.diff") and \
        Path(client.download_artifacts(run.info.run_id, "edit.diff")).read_text() == kept.diff
    log = Path(client.download_artifacts(run.info.run_id, "trial.log")).read_text()
    assert log == Path(kept.log_path).read_text()
    assert run.info.start_time == round(kept.started_at * 1000)
    assert run.info.end_time == round(kept.finished_at * 1000)


@needs_mlflow
def test_a_confirmation_nests_under_its_experiment_and_a_crash_says_where(night):
    eng, result, ids = night
    client = store(result.uri)
    runs = runs_by_id(client, result.experiment_id)
    (conf,) = [e for e in eng.experiments() if e.confirms == ids["kept"].id]
    run = runs[conf.id]
    assert run.data.tags["mlflow.parentRunId"] == runs[ids["kept"].id].info.run_id
    assert run.data.params["BIAS"] == "-0.05"  # the code it ran: compare lines it up with #kept
    assert run.data.tags["confirms"] == str(ids["kept"].id)
    crash = eng.get(ids["crash"].id)
    tags = runs[crash.id].data.tags
    assert tags["crash"].startswith(f"{crash.crash.file}:{crash.crash.line} ") and "boom" in tags["crash"]
    assert runs[crash.id].data.params["CRASH"] == "True"


@needs_mlflow
def test_re_export_duplicates_nothing_and_leaves_unchanged_runs_alone(night):
    eng, result, ids = night
    client = store(result.uri)
    before = {i: (r.info.run_id, r.info.end_time) for i, r in runs_by_id(client, result.experiment_id).items()}
    seen = []
    again = export_mlflow(eng, progress=lambda done, total: seen.append((done, total)))
    n = len(eng.experiments())
    assert (again.created, again.updated, again.unchanged) == (0, 0, n)
    assert again.experiment_id == result.experiment_id
    assert seen == [(i, n) for i in range(1, n + 1)]
    after = {i: (r.info.run_id, r.info.end_time) for i, r in runs_by_id(client, result.experiment_id).items()}
    assert after == before
    kept = ids["kept"].id
    assert len(client.get_metric_history(after[kept][0], "train_loss")) == len(eng.curve(kept))


@needs_mlflow
def test_a_changed_experiment_is_updated_and_a_run_of_a_pending_one_replaces_it(tmp_path):
    eng = Engine(make_workspace(tmp_path / "ws"))
    try:
        uri = f"sqlite:///{tmp_path / 'store' / 'm.db'}"
        eng.run_baseline([42])
        pending = eng.add_proposal(Proposal(edit(eng.head_source(), "BIAS = 0.0", "BIAS = -0.1"), "bias", "user"))
        first = export_mlflow(eng, uri, experiment="night")
        assert first.artifact_root == (tmp_path / "store" / "artifacts").as_uri()
        client = store(uri)
        base_run = runs_by_id(client, first.experiment_id)[1].info.run_id
        # more curve points and a new field on a finished run: updated in place, curve appended
        eng.journal.add_progress(1, [ProgressRecord(1, 10 + i, 1.0 + i, 1.0, 1.5 - i / 10) for i in range(3)])
        eng.journal.update(1, detail="looked at again")
        # the pending proposal runs: its start time changes, so its run is made again
        ran = eng.run(pending.id)
        assert ran.status in (Status.KEPT, Status.DISCARDED), ran.verdict
        second = export_mlflow(eng, uri, experiment="night")
        assert second.created == len(eng.experiments()) - 2  # the new confirmation, if any
        assert (second.updated, second.unchanged) == (2, 0)
        runs = runs_by_id(client, second.experiment_id)
        assert set(runs) == {e.id for e in eng.experiments()}
        assert runs[1].info.run_id == base_run and runs[1].data.tags["detail"] == "looked at again"
        history = client.get_metric_history(base_run, "train_loss")
        assert sorted(h.step for h in history) == [r.step for r in eng.curve(1)]  # 5 + 3, none twice
        assert runs[pending.id].info.status == "FINISHED"
        assert runs[pending.id].data.metrics["val_bpb"] == pytest.approx(ran.metric)
        # a curve that was rewritten (a re-run) is not appended to: the run is made again
        eng.journal.clear_curve(1)
        eng.journal.add_progress(1, [ProgressRecord(1, 0, 0.1, 0.5, 9.0)])
        eng.journal.update(1, detail="")
        third = export_mlflow(eng, uri, experiment="night")
        assert (third.created, third.updated) == (0, 1)
        runs = runs_by_id(client, third.experiment_id)
        assert runs[1].info.run_id != base_run and "detail" not in runs[1].data.tags
        assert [(h.step, h.value) for h in client.get_metric_history(runs[1].info.run_id, "train_loss")] == [(0, 9.0)]
    finally:
        eng.close()


@needs_mlflow
def test_a_running_experiment_exported_mid_night_grows_in_place(engine, tmp_path):
    """An export while a trial runs, then again when it has finished: one run, the same id,
    its curve appended (the journal's revision does not move while points arrive)."""
    import time

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    j = engine.journal
    e = j.create(status=Status.RUNNING, source="tune", hypothesis="longer warmup", seed=42,
                 parent_commit=engine.head(), started_at=time.time() - 30)
    j.add_progress(e.id, [ProgressRecord(e.id, s, s, s / 10, 3.0 - s / 10, {"lr": 0.01}) for s in range(4)])
    first = export_mlflow(engine, uri)
    client = store(uri)
    (run,) = runs_by_id(client, first.experiment_id).values()
    assert run.info.status == "RUNNING" and run.info.end_time is None
    j.add_progress(e.id, [ProgressRecord(e.id, s, s, s / 10, 3.0 - s / 10, {"lr": 0.01}) for s in range(4, 7)])
    assert export_mlflow(engine, uri).updated == 1
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 7
    assert len(client.get_metric_history(run.info.run_id, "train/lr")) == 7
    done = j.move(e.id, Status.DISCARDED, metric=1.01, finished_at=time.time())
    last = export_mlflow(engine, uri)
    assert (last.created, last.updated) == (0, 1)
    (after,) = runs_by_id(client, last.experiment_id).values()
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.info.end_time == round(done.finished_at * 1000)
    assert after.data.metrics["val_bpb"] == 1.01 and after.data.tags["verdict"] == done.verdict
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 7
    assert export_mlflow(engine, uri).unchanged == 1


@needs_mlflow
def test_a_long_curve_is_sent_thinned_with_its_ends(engine, tmp_path, monkeypatch):
    from sigmaloop import mlflow_export

    monkeypatch.setattr(mlflow_export, "MAX_CURVE_POINTS", 4)
    e = engine.journal.create(status=Status.QUEUED, source="tune", hypothesis="long", started_at=100.0)
    engine.journal.add_progress(e.id, [ProgressRecord(e.id, s, s, s / 10, 10.0 - s) for s in range(10)])
    done = export_mlflow(engine, f"sqlite:///{tmp_path / 'm.db'}")
    client = store(done.uri)
    (run,) = runs_by_id(client, done.experiment_id).values()
    steps = sorted(h.step for h in client.get_metric_history(run.info.run_id, "train_loss"))
    assert len(steps) == 4 and steps[0] == 0 and steps[-1] == 9
    assert run.info.status == "SCHEDULED"


@needs_mlflow
def test_two_workspaces_share_a_store_without_touching_each_others_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    engines = [Engine(make_workspace(tmp_path / name)) for name in ("a", "b")]
    try:
        for eng in engines:
            eng.add_proposal(Proposal(edit(eng.head_source(), "LR = 0.1 ", "LR = 0.2 "), "lr up", "tune"))
        results = [export_mlflow(eng, uri, experiment="team") for eng in engines]
        assert results[0].experiment_id == results[1].experiment_id
        assert [(r.created, r.unchanged) for r in results] == [(1, 0), (1, 0)]
        assert [export_mlflow(eng, uri, experiment="team").unchanged for eng in engines] == [1, 1]
        runs = store(uri).search_runs([results[0].experiment_id])
        assert sorted(r.data.tags["sigmaloop.workspace"] for r in runs) == [str(tmp_path / "a"), str(tmp_path / "b")]
    finally:
        for eng in engines:
            eng.close()


@needs_mlflow
def test_a_bad_store_says_what_is_wrong(tmp_path, engine):
    with pytest.raises(MlflowExportError, match=r"cannot open the MLflow tracking store 'nonsense://x': "
                                                 r"MLflow has no store for the scheme 'nonsense'; use sqlite:///"):
        export_mlflow(engine, "nonsense://x")
    with pytest.raises(MlflowExportError, match=r"use sqlite:///<path>/mlflow.db"):
        export_mlflow(engine, str(tmp_path / "mlruns"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    done = export_mlflow(engine, uri, experiment="gone")
    store(uri).delete_experiment(done.experiment_id)
    with pytest.raises(MlflowExportError, match=r"'gone' .* was deleted .* restore it"):
        export_mlflow(engine, uri, experiment="gone")


@needs_mlflow
def test_a_tracking_server_that_is_not_there_is_found_out_at_once(tmp_path, engine):
    """MLflow's client retries a refused connection with backoff for minutes; the export tries
    one TCP connection first, with a short timeout, and says what to do. A password in the URI
    is never repeated."""
    import http.server
    import socket
    import threading
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(MlflowExportError, match=rf"no MLflow tracking server answers at http://127.0.0.1:{port} "
                                                r"\(.*refused.*\); start one \(mlflow server") as caught:
        export_mlflow(engine, f"http://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 60, "not MLflow's minutes of retries"
    with pytest.raises(MlflowExportError, match=rf"answers at http://me:\*\*\*@127.0.0.1:{port} ") as caught:
        export_mlflow(engine, f"http://me:hunter2@127.0.0.1:{port}")
    assert "hunter2" not in str(caught.value)

    class NotMlflow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    # something answers: the probe lets MLflow talk to it, and MLflow's own answer is the error
    # (a 404 is not retried), with the password left out of it
    srv = http.server.HTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        uri = f"http://me:hunter2@127.0.0.1:{srv.server_address[1]}/"
        t0 = time.monotonic()
        with pytest.raises(MlflowExportError, match=r"cannot open the MLflow tracking store 'http://me:\*\*\*@") as caught:
            export_mlflow(engine, uri)
        assert "hunter2" not in str(caught.value) and caught.value.__cause__ is None
        assert time.monotonic() - t0 < 60
    finally:
        srv.shutdown()
        srv.server_close()


def test_redact_hides_only_the_password():
    assert redact("http://me:pw@host:5000/x") == "http://me:***@host:5000/x"
    assert redact("postgresql://u:p%40ss@db/mlflow") == "postgresql://u:***@db/mlflow"
    for uri in ("http://host:5000", "sqlite:////tmp/m.db", "http://token@host", "databricks"):
        assert redact(uri) == uri


def test_without_mlflow_the_engine_works_and_the_export_says_what_to_install(workspace):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["mlflow"] = None  # as if the extra were not installed
        import sigmaloop.cli, sigmaloop.engine
        from sigmaloop.mlflow_export import MlflowMissing, export_mlflow
        eng = sigmaloop.engine.Engine({str(workspace)!r})
        try:
            export_mlflow(eng)
        except MlflowMissing as exc:
            print("MISSING:", exc)
        finally:
            eng.close()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'MISSING: exporting to MLflow needs the mlflow client: pip install "sigmaloop[mlflow]"' in out.stdout
    fresh = subprocess.run([sys.executable, "-c", "import sys, sigmaloop.engine, sigmaloop.mlflow_export; "
                            "print(any(m.split('.')[0] == 'mlflow' for m in sys.modules))"],
                           capture_output=True, text=True, timeout=120)
    assert fresh.stdout.strip() == "False", "the engine imports mlflow only when exporting"


def test_changed_constants_reads_the_edits_assignments():
    diff = textwrap.dedent("""\
        --- a/train.py
        +++ b/train.py
        @@ -1,6 +1,8 @@
        -LR = 0.1
        +LR = 0.05  # lower
         DEPTH = 4
        -WINDOW = (1, 2)
        +WINDOW = (
        +    1, 3)
        -OLD = 1
        +NAME: str = "x"
         def main():
        -    warmup = 10
        +    warmup = 20
        +    seed = 7
    """)
    assert changed_constants(diff) == {"LR": "0.05", "NAME": '"x"', "warmup": "20", "seed": "7",
                                       "OLD": "(see edit.diff)", "WINDOW": "(see edit.diff)"}
    assert changed_constants("not a diff") == {}


def test_run_names():
    from sigmaloop.models import Experiment

    one = "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-LR = 0.1\n+LR = 0.2\n"
    two = "--- a/train.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n-LR = 0.1\n-D = 4\n+LR = 0.2\n+D = 6\n"
    assert run_name(Experiment(12, Status.KEPT, "tune", diff=one), {}) == "#12 LR 0.1→0.2"
    assert run_name(Experiment(3, Status.KEPT, "tune", diff=two), {"LR": "0.2", "D": "6", "seed": "1"}) == "#3 LR=0.2 D=6"
    assert run_name(Experiment(1, Status.KEPT, "baseline", seed=42), {}) == "#1 baseline (seed 42)"
    long = Experiment(5, Status.CRASHED, "llm:x", hypothesis="word " * 40, diff="garbage")
    assert run_name(long, {}).endswith("…") and len(run_name(long, {})) == len("#5 ") + 81


@needs_mlflow
def test_a_curves_anomalies_are_tags_until_dismissed(engine, tmp_path):
    """A blown-up run (its NaN stored JSON-safe, as the runner stores it) carries `anomaly.nan`;
    the researcher dismisses it and the next export takes the tag away (the marker is no metric)."""
    from sigmaloop.output import parse_progress_line

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    e = engine.journal.create(status=Status.DISCARDED, source="tune", hypothesis="too high an LR", seed=42,
                              started_at=100.0, finished_at=160.0, metric=1.2)
    lines = [f'{{"step": {s}, "t": {s}, "frac": {s / 10}, "loss": {3.0 - s / 10 if s < 6 else "NaN"}}}'
             for s in range(10)]
    engine.journal.add_progress(e.id, [parse_progress_line(line, e.id) for line in lines])
    client = store(uri)
    first = export_mlflow(engine, uri)
    (run,) = runs_by_id(client, first.experiment_id).values()
    assert run.data.tags["anomaly.nan"].startswith("loss NaN at step 6")
    assert "train/nonfinite_loss" not in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 6  # the finite points
    engine.dismiss_anomaly(e.id, "nan", "I set the LR that high on purpose")
    assert export_mlflow(engine, uri).updated == 1
    (after,) = runs_by_id(client, first.experiment_id).values()
    assert after.info.run_id == run.info.run_id and "anomaly.nan" not in after.data.tags
