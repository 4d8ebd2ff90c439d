"""The Ray executor on a real Ray cluster (on 127.0.0.1) with real subprocess trials.

The stand-in trials are small scripts that keep the trial contract (metrics records, the summary
block) and print what the test needs to see (their GPU, their pid, whether a secret reached them).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from sigmaloop import sandbox  # noqa: E402
from sigmaloop.config import Config  # noqa: E402
from sigmaloop.models import Outcome, Status, TrialSpec  # noqa: E402

from enginekit import git  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

STANDIN = textwrap.dedent('''\
    """A stand-in trial: STEPS metrics records SLEEP seconds apart, then the summary."""
    import json, os, subprocess, sys, time

    STEPS = 5
    SLEEP = 0.1
    CHILD = False  # start a long-lived child in the trial's process group

    print("PID", os.getpid(), flush=True)
    print("WORKER", os.getppid(), flush=True)
    print("CUDA", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
    print("SECRET", "OPENAI_API_KEY" in os.environ, flush=True)
    print("THREADS", os.environ.get("OMP_NUM_THREADS"), flush=True)
    if CHILD:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print("CHILD", child.pid, flush=True)
    print("START", time.time(), flush=True)
    t0 = time.time()
    for step in range(STEPS):
        time.sleep(SLEEP)
        with open(os.environ["SIGMALOOP_METRICS"], "a") as f:
            f.write(json.dumps({"step": step, "t": time.time() - t0, "frac": (step + 1) / STEPS,
                                "loss": 3.0 - 0.1 * step}) + "\\n")
        print(f"step {step}", flush=True)
    print("END", time.time(), flush=True)
    print("---")
    print("val_bpb:          1.230000")
    print(f"training_seconds: {time.time() - t0:.1f}")
''')


def standin(steps: int = 5, sleep: float = 0.1, child: bool = False) -> str:
    return (STANDIN.replace("STEPS = 5", f"STEPS = {steps}").replace("SLEEP = 0.1", f"SLEEP = {sleep}")
            .replace("CHILD = False", f"CHILD = {child}"))


@pytest.fixture(scope="module")
def cluster():
    """A two-'GPU' head on 127.0.0.1 (Ray accepts GPUs that don't exist); fast node-death checks."""
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 2}})
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def make_config(address: str, **runner) -> Config:
    cfg = Config()
    cfg.runner.executor = "ray"
    cfg.runner.sandbox = runner.pop("sandbox", "off")
    for key, value in runner.items():
        setattr(cfg.runner, key, value)
    cfg.ray.address = address
    return cfg


@pytest.fixture
def executor(cluster):
    from sigmaloop.ray_executor import RayExecutor

    ex = RayExecutor(make_config(cluster.address))
    yield ex
    ex.shutdown(wait=True)
    assert not ray.is_initialized()


@pytest.fixture
def project(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(standin())
    (ws / "notes.md").write_text("a fixed project file\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "start")
    return ws


_ids = iter(range(int(time.time()) % 100000 * 100, 10**9))


def trial(ws: Path, source: str | None = None, budget: float = 5.0) -> TrialSpec:
    """A spec as the engine makes one: the candidate's script is in its worktree (here: written)."""
    if source is not None:
        (ws / "train.py").write_text(source)
    exp_id = next(_ids)
    state = ws.parent / "state"
    return TrialSpec(exp_id=exp_id, cwd=str(ws), command=[sys.executable, "train.py"], budget=budget, seed=42,
                     log_path=str(state / "logs" / f"{exp_id}.log"),
                     metrics_path=str(state / "metrics" / f"{exp_id}.jsonl"), grace=30.0, workspace_root=str(ws))


def log_of(spec: TrialSpec) -> str:
    path = Path(spec.log_path)
    return path.read_text(errors="replace") if path.exists() else ""


def printed(spec: TrialSpec, key: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in log_of(spec).splitlines() if line.startswith(key + " ")]


def trial_pids(exp_id: int) -> list[int]:
    """Processes on this machine that belong to trial ``exp_id`` (its contract variable)."""
    entry = f"SIGMALOOP_EXP_ID={exp_id}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_trials_run_at_once_each_on_its_own_gpu(executor, project):
    assert executor.slots == 2
    starts: list[tuple[int, int]] = []
    a = trial(project, standin(steps=10, sleep=0.15))
    b = trial(project)
    handles = [executor.submit(s, on_start=lambda i, pid: starts.append((i, pid))) for s in (a, b)]
    results = [h.result(timeout=90) for h in handles]
    for spec, result in zip((a, b), results):
        assert result.outcome == Outcome.OK, (result.error, log_of(spec))
        assert result.metric == 1.23 and result.node and "(ray " in result.node
        assert printed(spec, "THREADS") == ["1"]
    assert {printed(s, "CUDA")[0] for s in (a, b)} == {"'0'", "'1'"}  # the GPU Ray gave each
    (a_start,), (a_end,) = map(float, printed(a, "START")), map(float, printed(a, "END"))
    (b_start,), (b_end,) = map(float, printed(b, "START")), map(float, printed(b, "END"))
    assert a_start < b_end and b_start < a_end  # they overlapped
    assert sorted(starts) == sorted([(a.exp_id, 0), (b.exp_id, 0)])  # pid 0: no local process
    workers = [int(printed(s, "WORKER")[0]) for s in (a, b)]  # the Ray workers that ran them
    wait_for(lambda: not any(alive(w) for w in workers), timeout=10, what="the GPU workers to exit (max_calls=1)")
    assert executor.running() == []


def test_progress_and_the_log_arrive_while_the_trial_runs(executor, project):
    spec = trial(project, standin(steps=20, sleep=0.1))
    seen: list[tuple[bool, int]] = []
    holder = []
    logged_early = threading.Event()

    def on_progress(exp_id, records):
        assert exp_id == spec.exp_id
        seen.extend((holder[0].done(), r.step) for r in records)
        if "step 0" in log_of(spec) and not holder[0].done():
            logged_early.set()

    holder.append(executor.submit(spec, on_progress=on_progress))
    result = holder[0].result(timeout=90)
    assert result.outcome == Outcome.OK, result.error
    assert [step for _, step in seen] == list(range(20))  # every record, in order
    assert any(not done for done, _ in seen)  # delivered live, not only at the end
    assert logged_early.is_set()  # the log streamed in too
    text = log_of(spec)
    assert text.count("[sigmaloop] exp") >= 2 and "runs on Ray node" in text and "val_bpb" in text


def test_stop_kills_the_remote_trials_process_group(executor, project):
    long = standin(steps=600, sleep=0.1, child=True)
    a, b = trial(project, long), trial(project, long)
    queued = trial(project, long)
    ha, hb = executor.submit(a), executor.submit(b)
    wait_for(lambda: printed(a, "CHILD") and printed(b, "CHILD"), what="both trials' children")
    hq = executor.submit(queued)  # both GPUs are taken: it waits
    time.sleep(0.5)
    hq.stop()
    rq = hq.result(timeout=30)
    assert rq.outcome == Outcome.STOPPED and "before it started" in rq.error
    pids = [int(printed(a, "PID")[0]), int(printed(a, "CHILD")[0])]
    assert all(alive(p) for p in pids)
    assert executor.stop(a.exp_id)
    ra = ha.result(timeout=30)
    assert ra.outcome == Outcome.STOPPED, ra.error
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10, what="the trial and its child to end")
    assert trial_pids(a.exp_id) == []
    assert alive(int(printed(b, "PID")[0]))  # the other trial runs on
    hb.stop()
    assert hb.result(timeout=30).outcome == Outcome.STOPPED
    assert trial_pids(b.exp_id) == [] and trial_pids(queued.exp_id) == []


def test_a_node_that_goes_away_mid_trial_ends_it_lost(cluster, project):
    from sigmaloop.ray_executor import RayExecutor

    node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ex = RayExecutor(make_config(cluster.address))
    specs: list[TrialSpec] = []
    try:
        assert ex.slots == 3
        long = standin(steps=600, sleep=0.1, child=True)
        specs = [trial(project, long) for _ in range(3)]
        handles = [ex.submit(s) for s in specs]
        wait_for(lambda: all(printed(s, "CHILD") for s in specs), timeout=60, what="three trials running")
        on_node = [h for h in handles if node.node_id[:8] in h.node]
        assert len(on_node) == 1, ([h.node for h in handles], node.node_id)
        victim = on_node[0]
        spec = next(s for s in specs if s.exp_id == victim.exp_id)
        cluster.remove_node(node)
        result = victim.result(timeout=90)
        assert result.outcome == Outcome.LOST, (result.outcome, result.error)
        assert "lost" in result.error and node.node_id[:8] in result.error
        assert "went away" in log_of(spec)
        # the trial died with its worker (the launcher's parent-death signal): nothing left behind
        leftovers = [int(printed(spec, "PID")[0]), int(printed(spec, "CHILD")[0])]
        wait_for(lambda: not alive(leftovers[0]), timeout=10, what="the lost trial to end")
        for h in handles:
            if h is not victim:
                assert h.done() is False
    finally:
        ex.shutdown(wait=True)
        for s in specs:  # a child of a lost trial is not in the launcher's reach: clean up after it
            for pid in trial_pids(s.exp_id):
                os.kill(pid, signal.SIGKILL)


def test_a_local_cluster_gets_none_of_the_drivers_secrets(project, monkeypatch, tmp_path):
    from sigmaloop.ray_executor import RayExecutor

    assert not ray.is_initialized()
    key = f"sk-test{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    # any earlier ray.init() on the machine leaves a ~/.ray/auth_token: Ray then turns token auth
    # on for a head it starts but not for a driver joining it; the local cluster uses its own
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(uuid.uuid4().hex)
    monkeypatch.setenv("HOME", str(home))
    ex = RayExecutor(make_config(""))
    cluster = ex._cluster
    try:
        assert cluster is not None and cluster.address.startswith("127.0.0.1:")
        spec = trial(project)
        result = ex.submit(spec).result(timeout=120)
        assert result.outcome == Outcome.OK, (result.error, log_of(spec))
        assert printed(spec, "SECRET") == ["False"]

        @ray.remote(num_cpus=0)
        def worker_env() -> dict[str, str]:
            return dict(os.environ)

        env = ray.get(worker_env.remote())
        assert "OPENAI_API_KEY" not in env and key not in "".join(env.values())
        needle = key.encode()
        holders = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if int(pid) != os.getpid() and needle in Path(f"/proc/{pid}/environ").read_bytes():
                    holders.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120])
            except OSError:
                continue
        assert holders == []  # no Ray process (head, raylet, workers, trial) holds it
    finally:
        ex.shutdown(wait=True)
    assert cluster.proc.poll() is not None and not Path(cluster.temp_dir).exists()
    assert not ray.is_initialized()


def test_bad_addresses_and_a_missing_ray_are_said_clearly(monkeypatch, cluster):
    from sigmaloop.executors import make_executor

    with pytest.raises(ValueError, match=r"no Ray cluster answers at 127\.0\.0\.1:1 .*ray start --head"):
        make_executor(make_config("127.0.0.1:1"))
    with pytest.raises(ValueError, match="is not an address"):
        make_executor(make_config("no port here"))
    assert not ray.is_initialized()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "sigmaloop.ray_executor")
    with pytest.raises(ValueError, match=r'needs Ray: pip install "sigmaloop\[ray\]"'):
        make_executor(make_config(cluster.address))


def test_a_project_too_big_to_ship_is_refused_clearly(executor, project, monkeypatch):
    from sigmaloop import ray_executor

    monkeypatch.setattr(ray_executor, "PROJECT_CAP", 4096)  # as if the data were committed
    (project / "data.bin").write_bytes(os.urandom(8192))
    git(project, "add", "data.bin")
    git(project, "commit", "-qm", "data in git")
    result = executor.submit(trial(project)).result(timeout=30)
    assert result.outcome == Outcome.CRASHED
    assert "more than the Ray executor ships" in result.error and "keep data out of git" in result.error


def test_slots_follow_the_clusters_gpus_else_its_cpus():
    from sigmaloop.ray_executor import _capacity

    # every GPU usable: the CPUs per GPU of the leanest GPU node
    assert _capacity([{"CPU": 16, "GPU": 8}, {"CPU": 64, "GPU": 1}, {"CPU": 4}], 1) == (
        9, {"num_gpus": 1, "num_cpus": 2})
    assert _capacity([{"CPU": 3}, {"CPU": 3}], 2) == (2, {"num_gpus": 0, "num_cpus": 2})  # never across nodes
    with pytest.raises(ValueError, match=r"lower ray\.cpus_per_trial or add nodes"):
        _capacity([{"CPU": 1}], 2)


# --------------------------------------------------------------------------- the real trainer


def ray_workspace(ws: Path, cluster, budget: float, seeds: str, sandbox: str = "auto") -> Path:
    """``ws`` (its files written) as a committed workspace whose trials run on ``cluster``."""
    (ws / ".gitignore").write_text(".sigmaloop/\n")
    (ws / "sigmaloop.toml").write_text(
        f'[experiment]\nbudget = {budget}\ngrace = 60\ntag = "ray"\n[judge]\nseeds = {seeds}\n'
        f'[runner]\nexecutor = "ray"\nsandbox = "{sandbox}"\n[ray]\naddress = "{cluster.address}"\n')
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "start")
    return ws


@pytest.mark.slow
def test_the_embedded_trainer_runs_remotely_through_the_engine(cluster, tmp_path, monkeypatch):
    """A baseline of the real trainer through a full Engine on the Ray cluster: the worker
    prepares the data (once per node), the trial runs sandboxed where bubblewrap runs, and the
    fixed evaluator scores the model it hands over."""
    from sigmaloop.engine import Engine

    monkeypatch.setenv("SIGMALOOP_CACHE", str(tmp_path / "cache"))  # reaches the workers (SIGMALOOP_*)
    monkeypatch.setenv("SIGMALOOP_VOCAB_SIZE", "2048")
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("train.py", "prepare.py"):
        shutil.copy(ROOT / "trainer" / name, ws / name)
    eng = Engine(ray_workspace(ws, cluster, budget=2.0, seeds="[42, 43]"))
    try:
        (exp,) = eng.run_baseline(seeds=[42])
        curve = eng.curve(exp.id)
    finally:
        eng.close()
    log = Path(exp.log_path).read_text(errors="replace")
    assert exp.status == Status.KEPT, (exp.verdict, log[-3000:])
    assert "(ray " in exp.node and "runs on Ray node" in log and "preparing the data on this node" in log
    assert exp.evaluator.startswith("prepare:") and exp.data.startswith("stdlib-v2048-")
    assert exp.sandboxed is (sandbox.availability() is None)
    assert 2.0 < exp.metric < 13 and "SIGMALOOP_EVALUATION" in log
    assert curve  # progress came back live into the journal
    assert not ray.is_initialized()


def test_the_engine_requeues_a_trial_whose_node_went_away_and_it_lands(cluster, tmp_path):
    """Through the engine: three baseline seeds on three 'GPUs', one of them on a node that goes
    away mid-trial. That attempt is recorded interrupted (node_lost), its log kept, and the trial
    is re-queued and run again where there is room, to its verdict."""
    from sigmaloop.engine import Engine

    node = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(standin(steps=60, sleep=0.1))
    eng = Engine(ray_workspace(ws, cluster, budget=6.0, seeds="[42, 43, 44]", sandbox="off"))
    done: list = []
    runner_thread = threading.Thread(target=lambda: done.extend(eng.run_baseline()))
    try:
        runner_thread.start()

        def all_training() -> bool:
            running = eng.experiments(Status.RUNNING)
            return len(running) == 3 and all(eng.curve(e.id) for e in running)

        wait_for(all_training, timeout=90, what="three seeds training")
        cluster.remove_node(node)
        runner_thread.join(timeout=240)
        assert not runner_thread.is_alive()
    finally:
        eng.close()
    assert [e.status for e in done] == [Status.KEPT] * 3, [(e.status, e.verdict) for e in done]
    again = [e for e in done if e.attempts == 2]
    assert len(again) == 1, [(e.id, e.attempts, e.node) for e in done]
    lost = again[0]
    assert node.node_id[:8] not in lost.node  # it landed elsewhere
    first = Path(f"{lost.log_path}.attempt1").read_text(errors="replace")
    assert "went away" in first and node.node_id[:8] in first
    assert not ray.is_initialized()
