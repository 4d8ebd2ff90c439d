"""The journal on real SQLite files: round trips, revisions, queries, exports, migrations and
several processes writing at once."""

from __future__ import annotations

import csv
import itertools
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from sigmaloop import journal as journal_mod
from sigmaloop.exports import export, write_results_tsv
from sigmaloop.journal import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Journal,
    SchemaTooNew,
    UnknownExperiment,
    UnknownField,
    journal_path,
)
from sigmaloop.lifecycle import IllegalTransition
from sigmaloop.models import CrashLocation, Experiment, ProgressRecord, Status


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / ".sigmaloop" / "journal.db")
    yield j
    j.close()


def full_fields() -> dict:
    """A value for every settable field, none of them a default."""
    return dict(
        status=Status.KEPT,
        source="llm:gpt-4o-mini",
        hypothesis="Raise LR to 0.04\twith warmup\nfor speed",
        predicted_delta=-0.0125,
        rationale="loss still falling at the end",
        diff="--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-LR = 0.02\n+LR = 0.04\n",
        parent_commit="1" * 40,
        commit="abcdef0123456789abcdef0123456789abcdef01",
        code_hash="0123456789abcdef",
        seed=43,
        budget=60.0,
        metric=0.987654321,
        delta=-0.0123,
        sigma=0.0021,
        z=5.857142857142857,
        verdict="keep: z = 5.86 > k = 2",
        phase="judging",
        reason="improved",
        detail="over 2 seeds",
        numbers={"runs": 2, "k": 2.0},
        sandboxed=True,
        created_at=1700000000.25,
        started_at=1700000001.5,
        finished_at=1700000090.75,
        log_path=".sigmaloop/runs/7/log.txt",
        metrics_path=".sigmaloop/runs/7/metrics.jsonl",
        crash=CrashLocation(file="train.py", line=212, message="RuntimeError: CUDA OOM"),
        rejection_reason="none really",
        confirms=3,
        attempts=2,
        pid=12345,
        owner_pid=999,
        summary={"val_bpb": 0.987654321, "peak_vram_mb": 45060.2, "mfu_percent": 39.8},
        params={"constant": "LR", "old": 0.02, "new": 0.04, "nested": {"a": [1, 2]}},
        usage={"prompt_tokens": 1234, "completion_tokens": 56},
        timings={"wall": 95.5, "startup": 3.25, "train": 60.0, "eval": 12.0},
        evaluator="prepare:0a1b2c3d4e5f",
        data="stdlib-v8192-0123456789abcdef",
        device="cuda:NVIDIA H200",
        printed_metric=0.987654,
        node="gpu-box-3",
        rebased_from="0123456789abcdef0123456789abcdef01234567",
        question=3,
        warnings={"barely_trained": "it made only 2 optimizer steps"},
    )


# --- round trips -------------------------------------------------------------------------


def test_round_trip_every_field(journal: Journal, tmp_path: Path) -> None:
    values = full_fields()
    settable = {f.name for f in fields(Experiment)} - {"id", "rev"}
    assert set(values) == settable  # the test covers every field

    created = journal.create(**values)
    assert created.id == 1 and created.rev == 1
    for name, value in values.items():
        assert getattr(created, name) == value, name
    assert isinstance(created.status, Status)
    assert journal.get(1) == created

    # A second Journal on the same file (another process, in effect) reads the same record.
    other = Journal(journal.path)
    try:
        assert other.get(1) == created
    finally:
        other.close()


def test_defaults_and_none_round_trip(journal: Journal) -> None:
    before = time.time()
    e = journal.create(status="queued", source="tune")
    assert before <= e.created_at <= time.time()
    expected = Experiment(id=1, status=Status.QUEUED, source="tune", created_at=e.created_at, rev=1)
    assert e == expected
    assert journal.get(1) == expected

    # Setting things back to None / empty works too.
    journal.update(1, **{k: v for k, v in full_fields().items() if k not in ("status", "source")})
    cleared = journal.update(
        1,
        crash=None,
        metric=None,
        commit=None,
        summary={},
        params={},
        usage={},
        timings={},
        hypothesis="",
    )
    assert cleared.crash is None and cleared.metric is None and cleared.commit is None
    assert cleared.summary == {} and cleared.params == {} and cleared.usage == {}
    assert journal.get(1) == cleared


def test_ids_increase_from_one(journal: Journal) -> None:
    ids = [journal.create(status="proposed", source="tune").id for _ in range(5)]
    assert ids == [1, 2, 3, 4, 5]


def test_crash_as_dict_and_path_values(journal: Journal, tmp_path: Path) -> None:
    e = journal.create(
        status="crashed",
        source="user",
        crash={"file": "train.py", "line": 3, "message": "ValueError: x"},
        log_path=tmp_path / "log.txt",
    )
    assert e.crash == CrashLocation("train.py", 3, "ValueError: x")
    assert e.log_path == str(tmp_path / "log.txt")


def test_workspace_path(tmp_path: Path) -> None:
    assert journal_path(tmp_path) == tmp_path / ".sigmaloop" / "journal.db"
    j = Journal.for_workspace(tmp_path)
    try:
        assert j.path.exists()
        mode = sqlite3.connect(j.path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        j.close()


# --- revisions ---------------------------------------------------------------------------


def test_rev_increases_on_every_write(journal: Journal) -> None:
    assert journal.max_rev() == 0
    a = journal.create(status="queued", source="tune")
    b = journal.create(status="queued", source="tune")
    assert (a.rev, b.rev) == (1, 2)
    revs = [journal.update(a.id, attempts=i).rev for i in range(1, 6)]
    assert revs == [3, 4, 5, 6, 7]
    assert journal.get(a.id).rev == 7
    assert journal.update(b.id).rev == 8  # a bare update is a touch
    assert journal.max_rev() == 8


def test_changed_since(journal: Journal) -> None:
    for _ in range(4):
        journal.create(status="queued", source="tune")
    mark = journal.max_rev()
    assert journal.changed_since(mark) == []
    journal.move(3, "running")
    journal.move(1, "running")
    journal.move(3, "kept", metric=1.0)
    changed = journal.changed_since(mark)
    assert [e.id for e in changed] == [1, 3]  # by revision; 3 once, as it is now
    assert changed[1].status == Status.KEPT
    assert [e.rev for e in changed] == sorted(e.rev for e in changed)
    assert [e.id for e in journal.changed_since(0)] == [2, 4, 1, 3]


def test_failed_update_does_not_take_a_rev(journal: Journal) -> None:
    journal.create(status="queued", source="tune")
    with pytest.raises(UnknownExperiment):
        journal.move(99, "running")
    with pytest.raises(ValueError):
        journal.move(1, "no-such-status")
    with pytest.raises(IllegalTransition):
        journal.move(1, "kept")  # queued can't be kept without running
    with pytest.raises(UnknownField, match=r"Journal\.move"):
        journal.update(1, status="running")  # no status change around the lifecycle
    assert journal.max_rev() == 1


def test_data_version_changes_after_other_connection_writes(journal: Journal) -> None:
    journal.create(status="queued", source="tune")
    before = journal.data_version()
    other = Journal(journal.path)
    try:
        other.update(1, attempts=1)
    finally:
        other.close()
    assert journal.data_version() != before


# --- errors -------------------------------------------------------------------------------


def test_unknown_id(journal: Journal) -> None:
    with pytest.raises(UnknownExperiment, match=r"no experiment #42") as info:
        journal.get(42)
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("no experiment #42")  # not KeyError's quoted repr
    with pytest.raises(UnknownExperiment):
        journal.add_progress(42, [ProgressRecord(42, 1, 0.1, 0.1, 1.0)])


def test_unknown_field(journal: Journal) -> None:
    with pytest.raises(UnknownField, match="no field 'metrc'"):
        journal.create(status="queued", source="tune", metrc=1.0)
    journal.create(status="queued", source="tune")
    with pytest.raises(UnknownField, match="no field 'bogus'"):
        journal.update(1, bogus=1)
    with pytest.raises(UnknownField, match="set by the journal"):
        journal.update(1, rev=100)
    with pytest.raises(UnknownField, match="set by the journal"):
        journal.create(id=7, status="queued", source="tune")
    with pytest.raises(TypeError, match="status"):
        journal.create(source="tune")
    with pytest.raises(TypeError, match="summary must be a dict"):
        journal.update(1, summary=[1, 2])
    assert journal.max_rev() == 1


def test_closed_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.close()
    with pytest.raises(journal_mod.JournalError, match="closed"):
        j.get(1)


# --- queries ------------------------------------------------------------------------------


def populate(j: Journal) -> None:
    j.create(status="kept", source="baseline", seed=42, metric=1.010, code_hash="h0", commit="c0")
    j.create(status="kept", source="baseline", seed=43, metric=1.012, code_hash="h0", commit="c0")
    j.create(status="kept", source="llm:gpt-4o", metric=0.990, diff="d3", commit="c3")
    j.create(status="discarded", source="tune", metric=0.980, diff="d4", commit="c4")
    j.create(status="crashed", source="llm:claude", diff="d5", commit="c5")
    j.create(status="running", source="tune", diff="d6")
    j.create(status="running", source="user", diff="")
    j.create(status="queued", source="llm:gpt-4o")
    j.create(status="kept", source="baseline", seed=42, metric=0.985, code_hash="h1")


def test_list_filters(journal: Journal) -> None:
    populate(journal)
    assert [e.id for e in journal.list()] == list(range(1, 10))
    assert [e.id for e in journal.list(order="desc", limit=3)] == [9, 8, 7]
    assert [e.id for e in journal.list(status=Status.RUNNING)] == [6, 7]
    assert [e.id for e in journal.list(status="kept")] == [1, 2, 3, 9]
    assert [e.id for e in journal.list(status=["crashed", Status.DISCARDED])] == [4, 5]
    assert [e.id for e in journal.list(status=[])] == []
    assert [e.id for e in journal.list(source_prefix="llm:")] == [3, 5, 8]
    assert [e.id for e in journal.list(source_prefix="llm:gpt")] == [3, 8]
    assert [e.id for e in journal.list(status="kept", source_prefix="llm:", limit=1)] == [3]
    assert [e.id for e in journal.list(source_prefix="ll%")] == []  # no LIKE wildcards
    with pytest.raises(ValueError):
        journal.list(order="sideways")


def test_editor_queries(journal: Journal) -> None:
    assert journal.best() is None
    populate(journal)
    assert [e.id for e in journal.running()] == [6, 7]
    assert [e.id for e in journal.by_status("queued", Status.CRASHED)] == [5, 8]
    assert [e.id for e in journal.recent(2)] == [9, 8]
    assert [e.id for e in journal.with_diff()] == [3, 4, 5, 6]
    mark = journal.max_rev()
    journal.update(4, summary={"peak_vram_mb": 1.0}, z=-1.5)
    journal.update(7, hypothesis="no diff, not listed")
    (slim,) = journal.with_diff(since_rev=mark, dicts=False)
    assert (slim.id, slim.z, slim.diff, slim.metric, slim.summary) == (4, -1.5, "d4", 0.98, {})
    assert journal.with_diff(since_rev=mark)[0].summary == {"peak_vram_mb": 1.0}
    assert [e.id for e in journal.baselines()] == [1, 2, 9]
    assert [e.id for e in journal.baselines(code_hash="h0")] == [1, 2]
    # The discarded 0.980 does not count; the baseline of later code (0.985) does.
    assert journal.best().id == 9
    assert journal.best(lower_is_better=False).id == 2
    counts = journal.counts()
    assert counts["kept"] == 4 and counts["running"] == 2 and counts["proposed"] == 0
    assert set(counts) == {s.value for s in Status}
    assert len(journal) == 9


# --- curves -------------------------------------------------------------------------------


def test_curve_add_and_downsample(journal: Journal) -> None:
    e = journal.create(status="running", source="tune")
    records = [
        ProgressRecord(e.id, step, step * 0.5, step / 99, None if step == 5 else 3.0 - step / 50)
        for step in range(100)
    ]
    records[10].extra = {"lr": 0.04, "tok_per_s": 12345.5}
    # Out of order across batches: the curve comes back in step order.
    assert journal.add_progress(e.id, records[50:]) == 50
    assert journal.add_progress(e.id, records[:50]) == 50
    assert journal.add_progress(e.id, []) == 0
    assert journal.curve(e.id) == records
    rev = journal.max_rev()

    thin = journal.curve(e.id, max_points=10)
    assert len(thin) == 10
    assert thin[0] == records[0] and thin[-1] == records[-1]
    steps = [r.step for r in thin]
    assert steps == sorted(set(steps))
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced
    assert [r.step for r in journal.curve(e.id, max_points=1)] == [99]
    assert [r.step for r in journal.curve(e.id, max_points=2)] == [0, 99]
    assert journal.curve(e.id, max_points=500) == records
    with pytest.raises(ValueError):
        journal.curve(e.id, max_points=0)
    with pytest.raises(ValueError, match="record for #7"):
        journal.add_progress(e.id, [ProgressRecord(7, 1, 0, 0, 1.0)])

    # Repeated steps (a re-read metrics file) keep insertion order, thinned or not.
    dup = journal.create(status="running", source="tune")
    pts = [ProgressRecord(dup.id, s // 2, float(i), 0.0, float(i)) for i, s in enumerate(range(40))]
    journal.add_progress(dup.id, pts)
    assert journal.curve(dup.id) == pts
    assert [r.t for r in journal.curve(dup.id, max_points=5)] == [0.0, 10.0, 20.0, 29.0, 39.0]

    other = journal.create(status="running", source="tune")
    journal.add_progress(other.id, [ProgressRecord(other.id, 1, 0.1, 0.5, 2.0)])
    assert journal.clear_curve(e.id) == 100
    assert journal.curve(e.id) == []
    assert len(journal.curve(other.id)) == 1
    assert journal.max_rev() == rev + 2  # curves do not take revisions; the creates did
    assert journal.curve(12345) == []


# --- results.tsv and exports -------------------------------------------------------------


def test_results_tsv_exact(journal: Journal, tmp_path: Path) -> None:
    journal.create(
        status="kept",
        source="baseline",
        seed=42,
        metric=0.9979,
        commit="a1b2c3d4e5f6",
        summary={"peak_vram_mb": 45060.2},
        finished_at=100.0,
    )
    journal.create(
        status="kept",
        source="llm:gpt-4o",
        hypothesis="increase LR to 0.04",
        metric=0.993201234,
        commit="b2c3d4e5f6a7",
        summary={"peak_vram_mb": 45100.0},
        finished_at=200.0,
    )
    journal.create(
        status="discarded",
        source="tune",
        hypothesis="switch to\tGeLU\nactivation",
        metric=1.005,
        commit="c3d4e5f",
        finished_at=300.0,
    )
    journal.create(
        status="crashed",
        source="llm:gpt-4o",
        hypothesis="double the width (OOM)",
        metric=None,
        commit="d4e5f6a7b8",
        summary={"peak_vram_mb": 80000.0},
        finished_at=400.0,
    )
    journal.create(
        status="timeout",
        source="user",
        hypothesis="huge batch",
        commit="e5f6a7b8c9",
        finished_at=450.0,
    )
    # Not in the file: unfinished, no commit, rejected.
    journal.create(status="running", source="tune", commit="0123456789")
    journal.create(status="kept", source="tune", metric=0.5, commit=None, finished_at=500.0)
    journal.create(status="rejected", source="tune", commit="1234567890", finished_at=600.0)
    # Finished earlier than #2 although created later: rows come in finish order.
    journal.create(
        status="kept",
        source="baseline",
        seed=43,
        metric=0.998,
        commit="a1b2c3d4e5f6",
        finished_at=150.0,
    )

    out = tmp_path / "results.tsv"
    assert write_results_tsv(journal, out) == 6
    expected = (
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline (seed 42)\n"
        "a1b2c3d\t0.998000\t0.0\tkeep\tbaseline (seed 43)\n"
        "b2c3d4e\t0.993201\t44.0\tkeep\tincrease LR to 0.04\n"
        "c3d4e5f\t1.005000\t0.0\tdiscard\tswitch to GeLU activation\n"
        "d4e5f6a\t0.000000\t0.0\tcrash\tdouble the width (OOM)\n"
        "e5f6a7b\t0.000000\t0.0\tcrash\thuge batch\n"
    )
    assert out.read_text(encoding="utf-8") == expected
    rows = list(csv.reader(out.open(encoding="utf-8"), delimiter="\t"))
    assert all(len(r) == 5 for r in rows)


def test_export_jsonl_and_csv(journal: Journal, tmp_path: Path) -> None:
    full = journal.create(**full_fields())
    bare = journal.create(status="queued", source="tune")

    jsonl = tmp_path / "exp.jsonl"
    assert export(journal, jsonl) == 2
    lines = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == [1, 2]
    for line, e in zip(lines, (full, bare)):
        assert set(line) == {f.name for f in fields(Experiment)}
        expected = asdict(e)
        expected["status"] = e.status.value
        assert line == expected
    assert lines[0]["crash"] == {
        "file": "train.py",
        "line": 212,
        "message": "RuntimeError: CUDA OOM",
    }

    out = tmp_path / "exp.csv"
    assert export(journal, out, fmt="csv") == 2
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [f.name for f in fields(Experiment)]
    assert rows[0]["status"] == "kept"
    assert rows[0]["hypothesis"] == full.hypothesis  # tabs/newlines survive csv quoting
    assert rows[0]["diff"] == full.diff
    assert json.loads(rows[0]["params"]) == full.params
    assert json.loads(rows[0]["crash"]) == asdict(full.crash)
    assert float(rows[0]["metric"]) == full.metric
    assert rows[1]["metric"] == "" and rows[1]["crash"] == "" and rows[1]["summary"] == "{}"

    with pytest.raises(ValueError, match="jsonl"):
        export(journal, tmp_path / "x.xml", fmt="xml")


# --- schema versions ---------------------------------------------------------------------


def make_v1(path: Path) -> None:
    """A journal as sigmaloop with schema 1 wrote it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO experiments (status, source, hypothesis, metric, created_at, summary, "
        "crash_file, crash_line, crash_message, rev) "
        "VALUES ('kept', 'tune', 'old one', 1.25, 10.0, '{\"peak_vram_mb\": 1024}', "
        "'train.py', 7, 'boom', 1)"
    )
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'rev'")
    conn.execute("INSERT INTO curves (exp_id, step, t, frac, loss) VALUES (1, 5, 1.0, 0.5, 2.5)")
    conn.close()


def test_migrates_v1_forward(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 2
    path = tmp_path / "journal.db"
    make_v1(path)
    cols = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(experiments)")}
    assert "usage" not in cols

    j = Journal(path)
    try:
        assert j.schema_version() == SCHEMA_VERSION
        old = j.get(1)
        assert old.hypothesis == "old one" and old.metric == 1.25 and old.usage == {}
        assert old.crash == CrashLocation("train.py", 7, "boom")
        assert old.summary == {"peak_vram_mb": 1024}
        assert j.curve(1) == [ProgressRecord(1, 5, 1.0, 0.5, 2.5, {})]
        new = j.create(status="kept", source="llm:x", usage={"prompt_tokens": 10})
        assert (new.id, new.rev) == (2, 2)
        assert j.get(2).usage == {"prompt_tokens": 10}
        indexes = {r[1] for r in sqlite3.connect(path).execute("PRAGMA index_list(experiments)")}
        assert {"experiments_rev", "experiments_status_metric", "experiments_source"} <= indexes
    finally:
        j.close()
    # Re-opening a current journal changes nothing.
    Journal(path).close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_v2_verdicts_get_their_reasons_and_keep_their_text(tmp_path: Path) -> None:
    """v3 adds structured verdicts: old rows keep their words; baselines and the user's
    rejections (what the engine and the LLM context ask for) get their reason codes."""
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    rows = [("kept", "baseline", "baseline (seed 42): 1.5", None),
            ("rejected", "tune", "rejected by user: too risky", "too risky"),
            ("rejected", "llm:m", "no valid proposal: bad json", None),
            ("discarded", "tune", "+0.0100 val_bpb, within noise (0.5σ), discarded", None)]
    for i, (status, source, verdict, why) in enumerate(rows, 1):
        conn.execute("INSERT INTO experiments (status, source, verdict, rejection_reason, created_at, rev) "
                     "VALUES (?, ?, ?, ?, 1.0, ?)", (status, source, verdict, why, i))
    conn.close()
    j = Journal(path)
    try:
        got = [(e.reason, e.detail, e.verdict) for e in j.list()]
        assert got == [("baseline", "", rows[0][2]), ("user_rejected", "too risky", rows[1][2]),
                       ("", "", rows[2][2]), ("", "", rows[3][2])]
    finally:
        j.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(
        SchemaTooNew,
        match=rf"journal\.db was written by a newer sigmaloop \(schema {SCHEMA_VERSION + 5}\); "
        "upgrade sigmaloop",
    ):
        Journal(path)


# --- concurrency --------------------------------------------------------------------------


def test_reads_do_not_wait_for_a_writer(journal: Journal) -> None:
    journal.create(status="queued", source="tune", attempts=0)
    writer = sqlite3.connect(journal.path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE experiments SET attempts = 5 WHERE id = 1")
        t0 = time.perf_counter()
        assert journal.get(1).attempts == 0  # the committed state, at once
        assert journal.counts()["queued"] == 1
        assert time.perf_counter() - t0 < 0.5
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert journal.get(1).attempts == 5


def test_threads_share_a_journal(journal: Journal) -> None:
    ids = [journal.create(status="queued", source="tune").id for _ in range(4)]
    errors: list[BaseException] = []

    def work(exp_id: int) -> None:
        try:
            for i in range(50):
                journal.update(exp_id, attempts=i + 1)
                journal.add_progress(exp_id, [ProgressRecord(exp_id, i, i, i / 50, 1.0)])
                journal.list(limit=5, order="desc")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(journal.get(i).attempts == 50 for i in ids)
    assert all(len(journal.curve(i)) == 50 for i in ids)
    assert journal.max_rev() == 4 + 4 * 50


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sigmaloop.journal import Journal
    from sigmaloop.models import ProgressRecord

    path, exp_id, go, n = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    j = Journal(path, timeout=5.0)
    j.max_rev()
    go.with_name(f"ready-{exp_id}").touch()
    while not go.exists():
        time.sleep(0.005)
    for i in range(n):
        e = j.update(exp_id, attempts=i + 1, params={"i": i, "writer": exp_id})
        assert e.attempts == i + 1
        j.add_progress(exp_id, [ProgressRecord(exp_id, i, float(i), i / n, 1.0 / (i + 1))])
        time.sleep(0.0005)  # a real writer pauses between writes; lets the two interleave
    j.close()
    """
)


def test_two_processes_write_while_a_reader_polls(journal: Journal, tmp_path: Path) -> None:
    n = 200
    a = journal.create(status="running", source="tune")
    b = journal.create(status="running", source="tune")
    start_rev = journal.max_rev()
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(journal.path), str(e.id), str(go), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for e in (a, b)
    ]
    seen_rev = start_rev
    polls = 0
    seen_states: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{e.id}").exists() for e in (a, b)):
        assert all(p.poll() is None for p in procs), procs[0].communicate()
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.005)
    go.touch()
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "writers took too long"
        changed = journal.changed_since(seen_rev)
        revs = [e.rev for e in changed]
        assert revs == sorted(set(revs)) and all(r > seen_rev for r in revs)
        for e in changed:
            # An experiment's attempts never go backwards between polls.
            assert e.attempts >= seen_states.get(e.id, 0)
            seen_states[e.id] = e.attempts
        if changed:
            seen_rev = revs[-1]
        polls += 1
        time.sleep(0.001)
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err
        assert "locked" not in err
    final = journal.changed_since(seen_rev)
    if final:
        seen_rev = final[-1].rev
    assert polls > 1
    assert journal.max_rev() == start_rev + 2 * n  # every update took exactly one revision
    assert seen_rev == journal.max_rev()
    all_revs = [r for (r,) in sqlite3.connect(journal.path).execute("SELECT rev FROM experiments")]
    assert len(all_revs) == len(set(all_revs))
    for e in (a, b):
        now = journal.get(e.id)
        assert now.attempts == n and now.params == {"i": n - 1, "writer": e.id}
        curve = journal.curve(e.id)
        assert [r.step for r in curve] == list(range(n))  # nothing lost
    # The writers really ran at the same time: their curve rows interleave.
    owners = [
        r
        for (r,) in sqlite3.connect(journal.path).execute(
            "SELECT exp_id FROM curves ORDER BY rowid"
        )
    ]
    switches = sum(x != y for x, y in itertools.pairwise(owners))
    assert switches > 1


def test_move_is_compare_and_set(tmp_path):
    j = Journal(tmp_path / "journal.db")
    exp = j.create(status=Status.QUEUED, source="user")
    rev = j.max_rev()
    won = j.move(exp.id, Status.RUNNING)
    assert won.status == Status.RUNNING and won.rev > rev
    with pytest.raises(IllegalTransition, match="is running and can't become rejected"):
        j.move(exp.id, Status.REJECTED)  # the racing reject lost: nothing written
    assert j.get(exp.id).status == Status.RUNNING and j.max_rev() == won.rev
    with pytest.raises(UnknownExperiment):
        j.move(999, Status.RUNNING)
    j.close()


def test_caption_follows_the_fields_in_the_same_revision(tmp_path):
    j = Journal(tmp_path / "journal.db", caption=lambda e: f"{e.status.value}/{e.phase}/{e.reason}")
    exp = j.create(status=Status.QUEUED, source="user")
    assert exp.verdict == "queued//"
    moved = j.move(exp.id, Status.RUNNING, phase="training")
    assert moved.verdict == "running/training/" == j.get(exp.id).verdict
    assert j.max_rev() == moved.rev  # one revision per change, caption included
    j.close()


def test_a_move_decided_on_an_old_read_is_refused(tmp_path):
    from sigmaloop.journal import ConcurrentChange

    with Journal(tmp_path / "journal.db") as journal:
        exp = journal.create(status="queued", source="user")
        journal.update(exp.id, hypothesis="changed by someone else")
        with pytest.raises(ConcurrentChange, match=rf"#{exp.id} changed since it was read"):
            journal.move(exp.id, Status.RUNNING, expect_rev=exp.rev)
        assert journal.get(exp.id).status == Status.QUEUED
        now = journal.get(exp.id)
        assert journal.move(exp.id, Status.RUNNING, expect_rev=now.rev).status == Status.RUNNING


def test_slim_rows_carry_every_number_but_no_bulky_text(journal: Journal) -> None:
    full = journal.create(**full_fields())
    (slim,) = journal.slim()
    assert slim.diff == "" and slim.rationale == "" and slim.summary == {} and slim.params == {}
    for name in ("id", "status", "source", "hypothesis", "metric", "delta", "sigma", "z", "seed",
                 "code_hash", "predicted_delta", "confirms", "verdict", "reason", "sandboxed", "rev"):
        assert getattr(slim, name) == getattr(full, name), name
