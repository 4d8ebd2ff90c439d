"""The morning report, from a night the test builds: real trials of the stand-in trainer (git,
SQLite, subprocesses) for what can be run, journal rows for what a night of an LLM proposer and a
cheating edit leave behind (token usage, tampered, over budget). Then the page as a researcher
sees it, in Debian's Chromium: every section, plots drawn, no console error, no network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from sigmaloop.cli import main as cli_main
from sigmaloop.models import ProgressRecord, Status
from sigmaloop.report import SECTIONS

from enginekit import queue_edit

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
NAN_EDIT = ('"loss": 3.0 - 0.2 * step + BIAS}',
            '"loss": (3.0 - 0.2 * step + BIAS) if step < 3 else float("nan")}')


def _night(engine):
    """A small night: a keep, a worse edit, one within noise, a crash, a blown-up curve, plus what an
    LLM proposer and two cheats leave in the journal. Returns the ids by name."""
    engine.run_baseline()
    q = engine.ask("Does a negative BIAS help?", "≥ 0.05 better: keep it")
    ids = {}
    kept = queue_edit(engine, "BIAS = 0.0 ", "BIAS = -0.2 ", "a negative bias lowers the metric")
    engine.journal.update(kept.id, predicted_delta=-0.1, question=q.id)
    ids["kept"] = engine.run(kept.id).id
    worse = queue_edit(engine, "BIAS = -0.2 ", "BIAS = 0.1 ", "the llm thinks a positive bias helps")
    engine.journal.update(worse.id, source="llm:fake-model", predicted_delta=-0.05,
                          usage={"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500})
    ids["worse"] = engine.run(worse.id).id
    noise = queue_edit(engine, "LR = 0.1 ", "LR = 0.11 ", "a slightly higher LR")
    engine.journal.update(noise.id, source="llm:fake-model", predicted_delta=-0.0001,
                          usage={"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250})
    ids["noise"] = engine.run(noise.id).id
    ids["crash"] = engine.run(queue_edit(engine, "CRASH = False", "CRASH = True", "a crash").id).id
    ids["nan"] = engine.run(queue_edit(engine, *NAN_EDIT, "a run that blows up").id).id
    now = time.time()
    for status, reason, hyp in ((Status.TAMPERED, "metric_mismatch", "prints a better number than it scored"),
                                (Status.OVER_BUDGET, "over_budget", "trains past its budget")):
        e = engine.core.create(status=status, source="user", hypothesis=hyp, reason=reason, started_at=now - 60,
                               finished_at=now - 30, timings={"wall": 30.0}, diff="")
        engine.journal.add_progress(e.id, [ProgressRecord(e.id, i, i * 1.0, i / 20, 3.0 - 0.02 * i) for i in range(20)])
        ids[status.value] = e.id
    spike = engine.core.create(status=Status.DISCARDED, source="tune", hypothesis="a spiky run", reason="within_noise",
                               started_at=now - 20, finished_at=now - 10, timings={"wall": 10.0})
    losses = [3.0 * 0.97 ** i for i in range(60)]
    losses[40] *= 6
    engine.journal.add_progress(spike.id, [ProgressRecord(spike.id, i, i * 0.2, i / 60, v) for i, v in enumerate(losses)])
    ids["spike"] = spike.id
    return q, ids


def test_the_report_says_what_was_kept_refuted_and_weird(engine, tmp_path):
    q, ids = _night(engine)
    engine.dismiss_anomaly(ids["spike"], "spike", "a known data glitch")
    r = engine.report()
    exps = {e.id: e for e in engine.experiments()}

    # kept: with its effect and an interval that excludes no effect
    assert [it.id for it in r.kept] == [ids["kept"]]
    f = r.kept[0].effect
    assert f is not None and 0 < f.low < f.better < f.high and abs(f.better - 0.2) < 0.01

    # refuted: split by what the numbers allow one to say; a prediction called refuted only when
    # the interval excludes it
    by_id = {x.item.id: x for x in r.refuted}
    assert by_id[ids["worse"]].kind == "worse" and by_id[ids["worse"]].prediction_excluded is True
    assert by_id[ids["noise"]].kind == "no_effect" and by_id[ids["noise"]].prediction_excluded is False
    assert ids["kept"] not in by_id and ids["crash"] not in by_id

    # calibration, per proposer
    cal = {pc.source: pc.calibration for pc in r.calibration}
    assert set(cal) == {"llm:fake-model", "user"}
    assert cal["llm:fake-model"].n == 2 and cal["llm:fake-model"].predicted_improvements == 2
    assert cal["user"].n == 1 and cal["user"].improvements_confirmed == 1

    # weird: the crash, the NaN curve, the two cheats, the barely-trained warning once for all;
    # the dismissed spike is gone
    weird = {(w.item.id, w.what) for w in r.weird}
    assert (ids["crash"], "crashed") in weird and (ids["nan"], "anomaly") in weird
    assert (ids["tampered"], "untrusted") in weird and (ids["over_budget"], "untrusted") in weird
    assert not any(w.item.id == ids["spike"] for w in r.weird)
    warnings = [w for w in r.weird if w.what == "warning"]
    assert len(warnings) == 1 and "runs in all" in warnings[0].message
    nan = next(w for w in r.weird if w.what == "anomaly")
    assert nan.curve and nan.anomalies[0].kind == "nan"

    # noise budget and cost
    assert r.noise.reference == pytest.approx(engine.state().reference.value)
    assert r.noise.keep_threshold and r.noise.baseline_runs == 2 and r.noise.confirmation_runs >= 1
    assert r.cost.tokens == {"llm:fake-model": {"prompt": 2200, "completion": 550, "total": 2750, "calls": 2}}
    walls = sum(e.timings.get("wall", 0) for e in exps.values() if e.started_at)
    assert r.cost.trial_hours == pytest.approx(walls / 3600, rel=1e-6)
    assert r.cost.hours_by_outcome["untrusted"] == pytest.approx(60 / 3600)

    # the question, with what to do next
    (qe,) = r.questions
    assert qe.id == q.id and [it.id for it in qe.items] == [ids["kept"]]
    assert any("close the question" in s for s in qe.suggestions)

    # the page: self-contained, every section, a plot where there is data
    page = engine.report_html()
    assert "<script" not in page.lower() and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert page.count('data-chart="forest"') >= 2  # every effect, and the question's
    assert "a known data glitch" not in page and "spike" not in page.split('id="weird"')[1].split("</section>")[0]


def test_an_empty_journal_reports_without_failing(engine):
    r = engine.report()
    assert r.kept == [] and r.items == [] and r.cost.trial_hours == 0
    page = engine.report_html()
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert "No trial has run yet." in page and "No reference yet" in page


def test_since_keeps_the_night_only(engine):
    first = engine.run_baseline()
    edit = engine.run(queue_edit(engine, "LR = 0.1 ", "LR = 0.11 ", "tonight's edit").id)
    r = engine.report(since=edit.id)
    assert [it.id for it in r.items] == [edit.id]
    assert r.noise.runs and {it.id for it in r.noise.runs} == {e.id for e in first}  # the head's reference stays


def test_the_cli_prints_the_summary_and_writes_the_page(engine, workspace, tmp_path, capsys):
    _night(engine)
    out = tmp_path / "night.html"
    assert cli_main(["--workspace", str(workspace), "report", "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kept (1)" in text and "refuted (4): 1 worse beyond noise, 3 no effect the bar can see" in text
    assert "crashed" in text and "untrusted" in text and "cost" in text and "tokens" in text
    assert out.exists() and 'id="weird"' in out.read_text()
    assert cli_main(["--workspace", str(workspace), "report", "--no-html", "--since", "999"]) == 0
    assert "kept (" not in capsys.readouterr().out


def chromium_view(html: Path, tmp_path: Path) -> dict:
    """What Chromium shows of a report page (tests/engine/report_page.mjs), with a screenshot."""
    if not Path(CHROMIUM).exists() or not (REPO / "node_modules" / "playwright-core").exists():
        pytest.skip("no Chromium or playwright-core (scripts/install-e2e-deps.sh installs both)")
    shot = tmp_path / "report.png"
    r = subprocess.run(["node", str(REPO / "tests" / "engine" / "report_page.mjs"), str(html), str(shot), "1000"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    view = json.loads(r.stdout.strip().splitlines()[-1])
    assert shot.stat().st_size > 20_000  # a real picture of a long page
    view["screenshot"] = shot
    return view


def test_the_page_in_chromium(engine, tmp_path):
    _night(engine)
    view = chromium_view(engine.write_report(tmp_path / "report.html"), tmp_path)
    assert view["requests"] == [] and view["consoleErrors"] == [] and view["pageErrors"] == []
    assert view["scripts"] == 0 and view["overflowX"] <= 0
    assert view["csp"] and "default-src 'none'" in view["csp"]
    assert view["ids"] == list(SECTIONS)
    s = view["sections"]
    kinds = {name: [c["kind"] for c in sec["charts"]] for name, sec in s.items()}
    assert kinds["timeline"] == ["timeline", "scatter"] and "forest" in kinds["kept"]
    assert kinds["calibration"].count("scatter") == 2 and "curves" in kinds["weird"]
    assert kinds["noise"] == ["scatter"] and kinds["cost"] == ["stacked"] and "forest" in kinds["questions"]
    for sec in s.values():
        for chart in sec["charts"]:
            assert chart["width"] > 200 and chart["height"] > 40 and chart["marks"] > 0, chart
    assert "Nothing was kept" not in s["kept"]["text"]
    assert "worse beyond noise" in s["refuted"]["text"] and "refuted (outside the interval)" in s["refuted"]["text"]
    assert "llm:fake-model" in s["calibration"]["text"] and "2,750" in s["cost"]["text"]
