"""The trial runner against real subprocesses: small fake training scripts, no mocks."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sigmaloop.environment import scrub_env
from sigmaloop.executors import LocalExecutor, cpu_count, slot_cpus, slot_envs
from sigmaloop.models import Outcome, ProgressRecord, TrialSpec
from sigmaloop.output import (
    NONFINITE_LOSS,
    loss_of,
    parse_printed_progress,
    parse_progress_line,
    parse_summary,
    parse_traceback,
)
from sigmaloop.runner import is_alive, kill_orphan, run_trial

pytestmark = pytest.mark.timeout(60)

PRELUDE = """\
import json, os, sys, time
METRICS = os.environ["SIGMALOOP_METRICS"]
def emit(step, **kw):
    rec = {"step": step, "t": step * 0.01, "frac": step / 10, "loss": 1.0 / (step + 1)}
    rec.update(kw)
    with open(METRICS, "a") as f:
        f.write(json.dumps(rec) + "\\n")
def summary(**kv):
    print("---")
    for k, v in kv.items():
        print(f"{k + ':':<20}{v}")
"""


def make_spec(tmp_path: Path, body: str, exp_id: int = 1, **kw) -> TrialSpec:
    """Write ``body`` (after PRELUDE) as ws/train.py and a spec that runs it."""
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (ws / "train.py").write_text(PRELUDE + textwrap.dedent(body))
    defaults = dict(
        exp_id=exp_id,
        cwd=str(ws),
        command=[sys.executable, "train.py"],
        budget=2.0,
        seed=42,
        log_path=str(tmp_path / "logs" / f"{exp_id}.log"),
        metrics_path=str(tmp_path / "metrics" / f"{exp_id}.jsonl"),
        workspace_root=str(ws),
        grace=5.0,
    )
    defaults.update(kw)
    return TrialSpec(**defaults)


def wait_dead(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.02)
    return False


class Progress:
    """Collects on_progress batches with the time each arrived."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[ProgressRecord]]] = []

    def __call__(self, exp_id: int, records: list[ProgressRecord]) -> None:
        self.batches.append((time.monotonic(), list(records)))

    @property
    def records(self) -> list[ProgressRecord]:
        return [r for _, batch in self.batches for r in batch]


# --------------------------------------------------------------------------- one trial


def test_ok_run_parses_summary_delivers_progress_and_sets_env(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        with open("env.json", "w") as f:
            json.dump({k: v for k, v in os.environ.items()}, f)
        for step in range(12):
            emit(step, lr=0.01, tok_per_sec=1000 + step)
            time.sleep(0.04)
        print("training done")
        summary(val_bpb=0.9979, training_seconds=0.5, total_seconds=0.6, note="text")
        """,
        exp_id=7,
        env={"OMP_NUM_THREADS": "3"},
    )
    progress = Progress()
    started: list[tuple[int, int]] = []
    result = run_trial(spec, on_progress=progress, on_start=lambda e, p: started.append((e, p)))

    assert result.outcome is Outcome.OK, result.error
    assert result.metric == pytest.approx(0.9979)
    assert result.exit_code == 0 and result.crash is None and result.error == ""
    assert result.summary == {"val_bpb": 0.9979, "training_seconds": 0.5, "total_seconds": 0.6}
    assert result.timings["train"] == 0.5 and result.timings["total"] == 0.6
    assert (
        0
        < result.timings["startup"]
        < result.timings["wall"]
        == pytest.approx(result.wall_seconds, abs=0.01)
    )
    assert started and started[0][0] == 7

    records = progress.records
    assert [r.step for r in records] == list(range(12))
    assert all(r.exp_id == 7 for r in records)
    assert records[3].loss == pytest.approx(0.25) and records[3].frac == pytest.approx(0.3)
    assert records[3].extra == {"lr": 0.01, "tok_per_sec": 1003}
    assert len(progress.batches) >= 2  # batched, not one callback per line or one at the end
    times = [t for t, _ in progress.batches[:-1]]  # the last one is the final flush
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(times))

    env = json.loads((tmp_path / "ws" / "env.json").read_text())
    assert env["SIGMALOOP_TIME_BUDGET"] == "2.0"
    assert env["SIGMALOOP_SEED"] == "42"
    assert env["SIGMALOOP_METRICS"] == spec.metrics_path
    assert env["SIGMALOOP_EXP_ID"] == "7"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["OMP_NUM_THREADS"] == "3"
    log = Path(spec.log_path).read_text()
    assert "[sigmaloop] exp 7" in log and "training done" in log


def test_secrets_are_scrubbed_except_allow_listed(tmp_path, monkeypatch):
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MY_TOKEN",
        "DB_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "hf_token",
        "WANDB_API_KEY",
        "GH_PAT",
        "MYSQL_PWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SSH_AUTH_SOCK",
        "CUDA_AUTH_TOKEN",
    ):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgres://me:s3cret@db/x")
    monkeypatch.setenv("HTTPS_PROXY", "http://me:s3cret@proxy:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    monkeypatch.setenv("HARMLESS", "yes")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    spec = make_spec(
        tmp_path,
        """
        with open("env.json", "w") as f:
            json.dump(dict(os.environ), f)
        summary(val_bpb=1.0)
        """,
    )
    result = run_trial(spec, env_allow=["WANDB_API_KEY"])
    assert result.outcome is Outcome.OK
    env = json.loads((tmp_path / "ws" / "env.json").read_text())
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MY_TOKEN",
        "DB_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "hf_token",
        "GH_PAT",
        "MYSQL_PWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SSH_AUTH_SOCK",
        "CUDA_AUTH_TOKEN",
        "DATABASE_URL",
        "HTTPS_PROXY",
        "HARMLESS",  # not on the allow-list: a trial gets what it needs, not everything
    ):
        assert name not in env, name
    assert env["WANDB_API_KEY"] == "s3cret"  # runner.env_allow names it
    assert env["HTTP_PROXY"] == "http://proxy:3128"  # a proxy without credentials is harmless
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["OMP_NUM_THREADS"] == "3"
    assert env["LC_ALL"] == "C.UTF-8" and env["SIGMALOOP_SEED"] == "42" and "PATH" in env
    assert "s3cret" not in json.dumps({k: v for k, v in env.items() if k != "WANDB_API_KEY"})


def test_scrub_env_is_pure():
    src = {"PATH": "/bin", "OPENAI_ORG": "o", "SSH_KEY_PATH": "k", "Passwordless": "p", "A": "1"}
    assert scrub_env(src, ["SSH_KEY_PATH"]) == {"PATH": "/bin", "SSH_KEY_PATH": "k"}
    assert len(src) == 5


HELPER = """\
import json


def load(text):
    return json.loads(text)


def load_or_oom(text):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RuntimeError("CUDA out of memory") from exc
"""


def test_crash_points_at_deepest_workspace_frame(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        sys.path.insert(0, "lib")
        import helper
        emit(0)
        print("before crash")
        helper.load("{not json")
        """,
        workspace_root=None,  # falls back to cwd
    )
    (tmp_path / "ws" / "lib").mkdir()
    (tmp_path / "ws" / "lib" / "helper.py").write_text(HELPER)
    result = run_trial(spec)
    assert result.outcome is Outcome.CRASHED
    assert result.exit_code == 1 and result.metric is None
    assert result.crash is not None
    assert result.crash.file == "lib/helper.py" and result.crash.line == 5  # not json/decoder.py
    assert result.crash.message.startswith("json.decoder.JSONDecodeError: Expecting property name")
    assert result.error == result.crash.message


def test_chained_exception_uses_last_traceback(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        sys.path.insert(0, "lib")
        import helper
        helper.load_or_oom("{")
        """,
    )
    (tmp_path / "ws" / "lib").mkdir()
    (tmp_path / "ws" / "lib" / "helper.py").write_text(HELPER)
    result = run_trial(spec)
    assert result.outcome is Outcome.CRASHED
    assert result.crash is not None
    assert (result.crash.file, result.crash.line) == ("lib/helper.py", 12)
    assert result.crash.message == "RuntimeError: CUDA out of memory"
    assert result.error == "RuntimeError: CUDA out of memory"


def test_fail_line_becomes_the_error(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        emit(0)
        print("FAIL: loss is nan at step 3; lower the learning rate")
        sys.exit(1)
        """,
    )
    result = run_trial(spec)
    assert result.outcome is Outcome.CRASHED and result.exit_code == 1
    assert result.error == "FAIL: loss is nan at step 3; lower the learning rate"
    assert result.crash is None


def test_exit_zero_without_metric_is_crashed(tmp_path):
    spec = make_spec(tmp_path, "summary(val_loss=1.0)\n")
    result = run_trial(spec)
    assert result.outcome is Outcome.CRASHED and result.exit_code == 0
    assert result.error == "exited with code 0 and printed no val_bpb line"
    assert result.summary == {"val_loss": 1.0}


def test_custom_metric_name_without_separator(tmp_path):
    spec = make_spec(
        tmp_path, 'print("epoch 1 done")\nprint("val_loss: 1.23")\n', metric="val_loss"
    )
    result = run_trial(spec)
    assert result.outcome is Outcome.OK, result.error
    assert result.metric == pytest.approx(1.23)


def test_non_finite_metric_is_crashed(tmp_path):
    result = run_trial(make_spec(tmp_path, "summary(val_bpb=float('nan'))\n"))
    assert result.outcome is Outcome.CRASHED
    assert "val_bpb is nan" in result.error


def test_timeout_kills_the_whole_process_group(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        import subprocess
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        with open("pids.json", "w") as f:
            json.dump([os.getpid(), child.pid], f)
        emit(0)
        time.sleep(60)
        """,
        budget=0.5,
        grace=0.5,
    )
    t0 = time.monotonic()
    result = run_trial(spec)
    assert time.monotonic() - t0 < 5
    assert result.outcome is Outcome.TIMEOUT
    assert "2 x budget + grace = 1.5s" in result.error
    assert result.wall_seconds >= 1.5
    pids = json.loads((tmp_path / "ws" / "pids.json").read_text())
    assert all(wait_dead(pid) for pid in pids)
    assert "timed out" in Path(spec.log_path).read_text()


def test_stop_on_request(tmp_path):
    spec = make_spec(tmp_path, "emit(0)\ntime.sleep(60)\n")
    stop = threading.Event()
    pids: list[int] = []
    threading.Timer(0.4, stop.set).start()
    t0 = time.monotonic()
    result = run_trial(spec, stop_event=stop, on_start=lambda e, p: pids.append(p))
    assert time.monotonic() - t0 < 3
    assert result.outcome is Outcome.STOPPED
    assert wait_dead(pids[0])


def test_stop_before_start_does_not_run(tmp_path):
    spec = make_spec(tmp_path, "open('ran', 'w').close()\n")
    stop = threading.Event()
    stop.set()
    assert run_trial(spec, stop_event=stop).outcome is Outcome.STOPPED
    assert not (tmp_path / "ws" / "ran").exists()


def test_garbage_and_partial_metrics_lines_are_skipped(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        emit(0)
        with open(METRICS, "ab") as f:
            f.write(b"not json\\n\\xff\\xfe\\x00binary\\n[1, 2]\\n{\\"t\\": 1}\\n{\\"step\\": \\"x\\"}\\n")
            f.write(b'{"step": 1, "t": 0.1, "frac": 0.1, "loss": NaN, "flag": true, "name": "a"}\\n')
            f.write(b'{"step": 2, "t"')  # partial line, completed later
            f.flush()
            time.sleep(0.3)
            f.write(b': 0.2, "frac": 0.2, "loss": 0.5}\\n')
            f.write(b'{"step": 3, "t": 0.3, "frac": 0.3, "loss": 0.4}')  # no newline at the end
        sys.stdout.buffer.write(b"\\x00\\xff garbage on stdout\\n")
        summary(val_bpb=1.5)
        """,
    )
    progress = Progress()
    result = run_trial(spec, on_progress=progress)
    assert result.outcome is Outcome.OK, result.error
    assert [r.step for r in progress.records] == [0, 1, 2, 3]
    # NaN: loss None with the non-finite marker; the bool and the string are left out
    assert progress.records[1].loss is None and progress.records[1].extra == {NONFINITE_LOSS: 0.0}
    assert progress.records[2].loss == 0.5


def test_survives_deleted_files_closed_stdout_and_instant_exit(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        emit(0)
        time.sleep(0.2)
        os.remove(METRICS)
        os.remove(sys.argv[1])
        emit(1)  # recreates the metrics file
        time.sleep(0.2)
        summary(val_bpb=0.5)
        sys.stdout.flush()
        os.close(1)
        os.close(2)
        emit(2)
        """,
    )
    spec.command.append(spec.log_path)
    progress = Progress()
    result = run_trial(spec, on_progress=progress)
    assert result.outcome is Outcome.OK, result.error
    assert result.metric == 0.5
    assert [r.step for r in progress.records] == [0, 1, 2]

    instant = run_trial(make_spec(tmp_path, "", exp_id=2))
    assert instant.outcome is Outcome.CRASHED
    assert instant.error == "exited with code 0 and printed no val_bpb line"


def test_killed_by_signal_and_missing_command(tmp_path):
    result = run_trial(make_spec(tmp_path, "os.kill(os.getpid(), 9)\n"))
    assert result.outcome is Outcome.CRASHED and result.exit_code == -9
    assert result.error.startswith("killed by SIGKILL")

    missing = run_trial(make_spec(tmp_path, "", exp_id=2, command=["/no/such/python"]))
    assert missing.outcome is Outcome.CRASHED
    assert missing.error.startswith("could not start /no/such/python")


def test_appended_log_only_parses_this_attempt(tmp_path):
    first = make_spec(tmp_path, "summary(val_bpb=1.0)\n")
    assert run_trial(first).outcome is Outcome.OK
    second = make_spec(tmp_path, "print('no metric this time')\n")
    result = run_trial(second)
    assert result.outcome is Outcome.CRASHED
    assert Path(second.log_path).read_text().count("[sigmaloop] exp 1") == 2


# --------------------------------------------------------------------------- parsing


def test_parse_summary_uses_last_block():
    text = "---\nval_bpb: 9\nstep 3\n---\nval_bpb:   1.25\nnum_steps: 10\nbad: x\n"
    assert parse_summary(text, "val_bpb") == {"val_bpb": 1.25, "num_steps": 10.0}
    assert parse_summary("noise\nval_bpb: 2.5\n", "val_bpb") == {"val_bpb": 2.5}


def test_parse_traceback_skips_site_packages_and_handles_syntax_errors(tmp_path):
    root = str(tmp_path)
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{root}/train.py", line 40, in <module>\n'
        "    main()\n"
        f'  File "{root}/.venv/lib/python3.11/site-packages/torch/nn.py", line 9, in f\n'
        "    x()\n"
        "    ^^^\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n"
        "more detail\n"
    )
    crash, message = parse_traceback(text, root)
    assert crash is not None and (crash.file, crash.line) == ("train.py", 40)
    assert message == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"

    syntax = (
        f'  File "{root}/train.py", line 3\n    x = = 1\n        ^\nSyntaxError: invalid syntax\n'
    )
    crash, message = parse_traceback(syntax, root)
    assert crash is not None and (crash.file, crash.line, message) == (
        "train.py",
        3,
        "SyntaxError: invalid syntax",
    )
    assert parse_traceback("all good\n", root) == (None, "")


def test_parse_progress_line():
    rec = parse_progress_line('{"step": 5, "t": 1.5, "frac": 0.5, "loss": 2.0, "lr": 0.1}', 3)
    assert rec == ProgressRecord(exp_id=3, step=5, t=1.5, frac=0.5, loss=2.0, extra={"lr": 0.1})
    assert parse_progress_line("garbage", 3) is None
    assert parse_progress_line(b"\xff\xfe", 3) is None


@pytest.mark.parametrize(("loss", "read_back"), [
    ("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ('"nan"', "nan"), ('"inf"', "inf"),
])
def test_a_non_finite_loss_is_kept_json_safe_and_read_back(loss, read_back):
    rec = parse_progress_line(f'{{"step": 7, "loss": {loss}, "lr": NaN}}', 3)
    assert rec.loss is None and NONFINITE_LOSS in rec.extra and "lr" not in rec.extra
    json.dumps(rec.extra, allow_nan=False)  # the wire and the journal take it
    assert str(loss_of(rec)) == read_back
    printed = parse_printed_progress(f"step 00012 (41.0%) | loss: {read_back} | dt: 120ms", 3, 10.0)
    assert printed.loss is None and str(loss_of(printed)) == read_back and printed.extra["dt_ms"] == 120
    # a script's own key of that name is not taken for the marker
    assert loss_of(parse_progress_line('{"step": 1, "loss": null, "nonfinite_loss": 0}', 3)) is None


# --------------------------------------------------------------------------- executor


WINDOW = """
with open(f"window{os.environ['SIGMALOOP_EXP_ID']}.json", "w") as f:
    start = time.time()
    time.sleep(0.8)
    json.dump({"start": start, "end": time.time(), "omp": os.environ["OMP_NUM_THREADS"],
               "mkl": os.environ["MKL_NUM_THREADS"], "threads": os.environ["SIGMALOOP_THREADS"],
               "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
summary(val_bpb=1.0)
"""


def test_local_executor_runs_slots_concurrently_and_queues_the_rest(tmp_path):
    ex = LocalExecutor(slots=2, gpus=[])
    starts: list[int] = []
    try:
        handles = [
            ex.submit(make_spec(tmp_path, WINDOW, exp_id=i), on_start=lambda e, p: starts.append(e))
            for i in (1, 2, 3)
        ]
        assert [h.exp_id for h in handles] == [1, 2, 3]
        results = [h.result(timeout=20) for h in handles]
    finally:
        ex.shutdown()
    assert all(r.outcome is Outcome.OK for r in results), [r.error for r in results]
    assert all(h.done() and h.pid for h in handles)
    w = {i: json.loads((tmp_path / "ws" / f"window{i}.json").read_text()) for i in (1, 2, 3)}
    assert w[1]["start"] < w[2]["end"] and w[2]["start"] < w[1]["end"]  # overlapping
    assert w[3]["start"] >= min(w[1]["end"], w[2]["end"]) - 0.05  # waited for a slot
    threads = str(max(1, cpu_count() // 2))
    assert (
        {w[i]["omp"] for i in w}
        == {w[i]["mkl"] for i in w}
        == {w[i]["threads"] for i in w}
        == {threads}
    )
    assert {w[i]["cuda"] for i in w} == {None}
    assert sorted(starts) == [1, 2, 3]


AFFINITY = """
with open(f"cpus{os.environ['SIGMALOOP_EXP_ID']}.json", "w") as f:
    json.dump(sorted(os.sched_getaffinity(0)), f)
time.sleep(0.5)
summary(val_bpb=1.0)
"""


def test_cpu_slots_run_on_disjoint_cores_and_the_result_names_the_machine(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to split")
    assert slot_cpus(1) == [()]  # one slot has every core: nothing to pin
    sets = slot_cpus(2)
    assert len(sets) == 2 and not set(sets[0]) & set(sets[1]) and set(sets[0]) | set(sets[1]) <= set(cores)
    ex = LocalExecutor(slots=2, gpus=[])
    try:
        results = [h.result(timeout=30) for h in [ex.submit(make_spec(tmp_path, AFFINITY, exp_id=i)) for i in (1, 2)]]
    finally:
        ex.shutdown()
    assert all(r.outcome is Outcome.OK and r.node == socket.gethostname() for r in results)
    seen = [tuple(json.loads((tmp_path / "ws" / f"cpus{i}.json").read_text())) for i in (1, 2)]
    assert set(seen) == set(sets)  # each trial saw exactly its slot's cores


def test_slot_envs_one_gpu_per_slot():
    envs = slot_envs(2, ["0", "1"])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
    assert "CUDA_VISIBLE_DEVICES" not in slot_envs(1, [])[0]


def test_executor_stop_and_shutdown(tmp_path):
    ex = LocalExecutor(slots=1, gpus=[])
    started = threading.Event()
    running = ex.submit(
        make_spec(tmp_path, "time.sleep(60)\n", exp_id=1), on_start=lambda e, p: started.set()
    )
    queued = ex.submit(make_spec(tmp_path, "time.sleep(60)\n", exp_id=2))
    assert started.wait(5)
    assert ex.stop(1) is True
    assert ex.stop(99) is False
    assert running.result(timeout=10).outcome is Outcome.STOPPED
    t0 = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - t0 < 6
    assert queued.result(timeout=1).outcome is Outcome.STOPPED
    assert wait_dead(running.pid)
    with pytest.raises(RuntimeError):
        ex.submit(make_spec(tmp_path, "", exp_id=3))


# --------------------------------------------------------------------------- orphans


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_kill_orphan_checks_environ(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, SIGMALOOP_EXP_ID="77")
    orphan = subprocess.Popen(
        [sys.executable, "-c", code], env=env, start_new_session=True, stdout=subprocess.PIPE
    )
    plain_env = {k: v for k, v in os.environ.items() if k != "SIGMALOOP_EXP_ID"}
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=plain_env, start_new_session=True
    )
    try:
        child = int(orphan.stdout.readline())
        assert kill_orphan(orphan.pid, 78) is False  # wrong experiment: PID reused
        assert kill_orphan(stranger.pid, 77) is False  # no SIGMALOOP_EXP_ID at all
        assert is_alive(orphan.pid) and is_alive(stranger.pid)
        assert kill_orphan(orphan.pid, 77) is True
        orphan.wait(timeout=5)
        assert wait_dead(child) and not is_alive(orphan.pid)
        assert kill_orphan(orphan.pid, 77) is False  # nothing left to kill
    finally:
        for proc in (orphan, stranger):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        orphan.stdout.close()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_kill_orphan_kills_children_that_outlived_the_leader(tmp_path):
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
    )
    env = dict(os.environ, SIGMALOOP_EXP_ID="5")
    leader = subprocess.Popen(
        [sys.executable, "-c", code], env=env, start_new_session=True, stdout=subprocess.PIPE
    )
    try:
        child = int(leader.stdout.readline())
        leader.wait(timeout=5)
        assert is_alive(child)
        assert kill_orphan(leader.pid, 6) is False
        assert kill_orphan(leader.pid, 5) is True
        assert wait_dead(child)
        assert kill_orphan(os.getpid(), 5) is False  # never our own group
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.stdout.close()


def test_children_left_behind_by_a_finished_trial_are_killed(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        summary(val_bpb=1.0)
        """,
    )
    t0 = time.monotonic()
    result = run_trial(spec)
    assert result.outcome is Outcome.OK and time.monotonic() - t0 < 3
    assert wait_dead(int((tmp_path / "ws" / "child.pid").read_text()))


def test_a_flooding_trial_keeps_head_and_tail_of_its_log(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        print("FIRST LINE", flush=True)
        chunk = "x" * 1023 + "\\n"
        for _ in range(40 * 1024):  # 40 MB of output
            sys.stdout.write(chunk)
        summary(val_bpb=1.25)
        print("LAST LINE")
        """,
        log_cap=4 << 20,
        budget=30.0,
    )
    result = run_trial(spec)
    log = Path(spec.log_path).read_bytes()
    assert result.outcome is Outcome.OK and result.metric == 1.25
    assert len(log) < (4 << 20) + (64 << 10), len(log)
    assert b"FIRST LINE" in log[:4096] and log.rstrip().endswith(b"LAST LINE")
    assert b"bytes of output omitted here" in log


def test_the_summary_is_found_after_megabytes_of_later_output(tmp_path):
    spec = make_spec(
        tmp_path,
        """
        summary(val_bpb=1.5, num_steps=7)
        for _ in range(12 * 1024):  # 12 MB after the summary
            print("y" * 1023)
        """,
        budget=30.0,
    )
    result = run_trial(spec)
    assert result.outcome is Outcome.OK and result.metric == 1.5 and result.summary["num_steps"] == 7


def test_a_metrics_flood_is_read_in_bounded_pieces_and_thinned(tmp_path):
    import resource

    spec = make_spec(
        tmp_path,
        """
        line = json.dumps({"step": 1, "t": 0.1, "frac": 0.5, "loss": 2.0, "pad": "z" * 900}) + "\\n"
        with open(METRICS, "a") as f:
            for i in range(150 * 1024):  # ~150 MB of records
                f.write(line.replace('"step": 1', f'"step": {i}'))
        summary(val_bpb=1.0)
        """,
        budget=60.0,
    )
    batches: list[int] = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_trial(spec, on_progress=lambda _id, recs: batches.append(len(recs)))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.outcome is Outcome.OK
    assert batches and max(batches) <= 50 * 3, batches  # thinned per poll (a batch spans ≤ a few polls)
    assert grown_mb < 80, grown_mb  # never the whole file in memory
