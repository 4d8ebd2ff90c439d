"""Trials on a Ray cluster, one GPU (or ``ray.cpus_per_trial`` CPUs) each, behind the engine's
:class:`~sigmaloop.executors.Executor` interface (``runner.executor = "ray"``).

Driver (the engine's process, which has git) → worker (any node; no git there):

* the candidate's files travel as task arguments: the project's tracked files (``git ls-files``
  of its worktree, minus the train script) go into the object store once per content hash and
  are unpacked once per node (``$TMPDIR/sigmaloop-ray-<uid>/project/<hash>``), the fixed
  evaluator's folder likewise; the train script travels with each trial. Where the project has
  a ``prepare.py`` it runs once per node and project before the first trial (the data cache).
* the worker gives each trial a fresh folder, rebuilds the sandbox policies for its own paths
  and calls :func:`runner.run_trial` there: the sandbox and the fixed evaluator run on the worker.
* progress and the log stream back (≤ 10 Hz) through a mailbox actor on the driver's node, and
  every report's answer says whether to stop: a stop kills the trial's process group on the
  worker cooperatively (``ray.cancel`` alone would orphan it).
* a trial whose node or worker went away ends ``Outcome.LOST``; the engine decides about re-running.

Secrets: a local cluster (``ray.address = ""``) starts with the scrubbed environment, so no Ray
process holds the driver's secrets; what reaches a trial is the trial contract, the driver's
``SIGMALOOP_*`` knobs and what ``runner.env_allow`` names. Workers need sigmaloop installed
(the same version as the driver) and, for the embedded trainer, its extra.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import ray
import ray.exceptions as rex
from ray._private import ray_constants
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import evaluator, runner, sandbox, secret
from .config import Config
from .environment import scrub_env
from .executors import TrialHandle
from .models import EvaluatorSpec, Outcome, ProgressRecord, TrialResult, TrialSpec
from .runner import ProgressCallback, StartCallback

log = logging.getLogger(__name__)

PROJECT_CAP = 64 << 20  # bytes of tracked files shipped per project: data belongs in the cache
REPORT_INTERVAL = runner.PROGRESS_INTERVAL  # worker → driver reports (≤ 10 Hz)
STOP_POLL = 0.25  # a quiet trial still asks this often whether to stop
LOG_CHUNK = 1 << 20  # log bytes per report; the rest follows in the next ones
PREPARE_TIMEOUT = 3600.0  # prepare.py may download its data
CONNECT_TIMEOUT = 60.0
BUNDLES_KEPT = 8  # project / evaluator bundles the driver keeps in the object store
#: the trial contract's variables: the worker's run_trial sets them, never the driver's env
CONTRACT = frozenset({"SIGMALOOP_TIME_BUDGET", "SIGMALOOP_SEED", "SIGMALOOP_METRICS", "SIGMALOOP_EXP_ID",
                      "SIGMALOOP_MODEL", "SIGMALOOP_THREADS"})
#: a task that ended without its trial's word: the machine, its raylet or the worker went away
LOST_ERRORS = (rex.NodeDiedError, rex.WorkerCrashedError, rex.RayActorError, rex.ObjectLostError,
               rex.LocalRayletDiedError, rex.RaySystemError)

#: Runs a trial so that it dies with the Ray worker that started it (the kernel's parent-death
#: signal survives exec): a worker killed with its node must not leave an unsandboxed trial
#: running. A sandboxed one has bubblewrap's --die-with-parent instead.
_LAUNCHER = '''\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the worker died before that took effect
    sys.exit(137)
os.execvp(sys.argv[2], sys.argv[2:])
'''


# --------------------------------------------------------------------------- the wire


@dataclass
class _Job:
    """What a worker needs to run one trial; paths in ``spec`` are still the driver's."""

    spec: TrialSpec
    attempt: str  # this run of the experiment (the mailbox's key)
    project: str  # content hash of the fixed files
    project_ref: list[Any]  # [ObjectRef], nested so a node fetches it only when its cache lacks it
    script: str  # the train script's path in the project
    source: bytes  # the candidate's train script
    evaluator: str  # content hash of the evaluator's folder ("" none)
    evaluator_ref: list[Any]
    env: dict[str, str]  # the driver's knobs for the trial (SIGMALOOP_*, runner.env_allow)
    env_allow: tuple[str, ...]
    driver_python: str  # the driver's trial interpreter ("" = runner.python, the same path everywhere)
    sandbox: str  # runner.sandbox
    network: bool
    read_only: tuple[str, ...]
    mailbox: Any


@ray.remote(num_cpus=0, max_restarts=0)
class _Mailbox:
    """Lives on the driver's node: workers report progress and log bytes; the answer says
    whether the driver asked that attempt to stop (attempts, not experiment ids: a re-run of an
    experiment is not stopped by its predecessor's stop)."""

    def __init__(self) -> None:
        self._inbox: list[tuple[str, str, list[ProgressRecord], bytes]] = []
        self._stop: set[str] = set()

    def report(self, attempt: str, node: str, records: list[ProgressRecord], log_bytes: bytes) -> bool:
        if node or records or log_bytes:
            self._inbox.append((attempt, node, records, log_bytes))
        return attempt in self._stop

    def stop(self, attempt: str) -> None:
        self._stop.add(attempt)

    def forget(self, attempt: str) -> None:
        self._stop.discard(attempt)

    def drain(self) -> list[tuple[str, str, list[ProgressRecord], bytes]]:
        out, self._inbox = self._inbox, []
        return out


# --------------------------------------------------------------------------- the worker's side


class _SetupError(RuntimeError):
    """The trial could not be set up on this node (the message says why)."""


class _Reporter:
    """The worker's end of the mailbox: new progress records and log bytes every
    REPORT_INTERVAL; a stop request (or a driver gone away) sets ``stop_event``."""

    def __init__(self, mailbox: Any, attempt: str, log_path: Path):
        self.stop_event = threading.Event()
        self._mailbox, self._attempt, self.log_path = mailbox, attempt, log_path
        self._closed = False
        self._records: list[ProgressRecord] = []
        self._lock = threading.Lock()
        self._sent = 0  # log bytes sent
        self._streaming = True
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sigmaloop-report", daemon=True)

    def progress(self, _exp_id: int, records: list[ProgressRecord]) -> None:
        with self._lock:
            self._records.extend(records)

    def start(self, node: str) -> bool:
        """Say the trial is here (and where); whether it was stopped already."""
        stopped = ray.get(self._send(node), timeout=CONNECT_TIMEOUT)
        self._thread.start()
        return bool(stopped)

    def note(self, text: str) -> None:
        with open(self.log_path, "ab") as f:
            f.write(f"[sigmaloop] {text}\n".encode())

    def close(self) -> None:
        """Stop reporting after one last report, waited for: the driver has everything when the
        task returns (a max_calls=1 worker exits right after)."""
        if self._closed:
            return
        self._closed = True
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(Exception):
            ray.get(self._send(), timeout=CONNECT_TIMEOUT)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._done.wait(REPORT_INTERVAL):
            with self._lock:
                news = bool(self._records)
            chunk = self._log_chunk()
            if not (news or chunk) and time.monotonic() - last < STOP_POLL:
                continue  # nothing to say yet: ask about a stop only every STOP_POLL (2 cores, 8 slots)
            last = time.monotonic()
            try:
                if ray.get(self._send(chunk=chunk), timeout=CONNECT_TIMEOUT):
                    self.stop_event.set()
            except Exception:  # the driver (its mailbox) is gone: nobody will take this result
                self.stop_event.set()

    def _send(self, node: str = "", chunk: bytes | None = None) -> Any:
        with self._lock:
            records, self._records = self._records, []
        chunk = self._log_chunk() if chunk is None else chunk
        return self._mailbox.report.remote(self._attempt, node, records, chunk)

    def _log_chunk(self) -> bytes:
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return b""
        if size < self._sent:  # the log was capped or redacted: the final copy replaces it
            self._streaming = False
        if not self._streaming or size == self._sent:
            return b""
        with open(self.log_path, "rb") as f:
            f.seek(self._sent)
            data = f.read(min(LOG_CHUNK, size - self._sent))
        self._sent += len(data)
        return data


def _node_root() -> Path:
    root = Path(tempfile.gettempdir()) / f"sigmaloop-ray-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock: one process per node unpacks or prepares a given thing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unpack(dest: Path, ref_box: list[Any]) -> Path:
    """The bundle in ``dest`` (this node's cache): fetched and written the first time only."""
    if dest.is_dir():
        return dest
    with _locked(dest.parent / ".locks" / dest.name):
        if dest.is_dir():
            return dest
        files: dict[str, tuple[int, bytes]] = ray.get(ref_box[0])
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, (mode, data) in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if mode == 0o120000:
                os.symlink(data.decode(), path)
            else:
                path.write_bytes(data)
                path.chmod(0o755 if mode & 0o111 else 0o644)
        tmp.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)  # whole or not at all
    return dest


def _prepare_data(root: Path, prepare: Path, python: str, env: dict[str, str], key: str,
                  reporter: _Reporter) -> None:
    """Run the project's prepare.py once per node, project and data settings (it builds the
    data cache; idempotent), under a lock: later trials find it done."""
    marker = root / "prepared" / key
    if marker.exists():
        return
    with _locked(root / "prepared" / ".locks" / key):
        if marker.exists():
            return
        reporter.note(f"preparing the data on this node: {prepare.name} (once per node and project)")
        t0 = time.monotonic()
        out = root / "prepared" / f"{key}.log"
        with open(out, "wb") as f:
            proc = subprocess.Popen([python, prepare.name], cwd=prepare.parent, env=env, stdin=subprocess.DEVNULL,
                                    stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                while proc.poll() is None:
                    if reporter.stop_event.is_set() or time.monotonic() - t0 > PREPARE_TIMEOUT:
                        break
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if reporter.stop_event.is_set():
            raise _SetupError("stopped while prepare.py ran")
        if proc.returncode != 0:
            tail = out.read_bytes()[-4000:].decode("utf-8", "replace").strip().splitlines()
            why = tail[-1] if tail else f"exit {proc.returncode}"
            raise _SetupError(f"{prepare.name} failed on this node (exit {proc.returncode}): {why} "
                              f"(its output: {out})")
        marker.write_text(f"{time.monotonic() - t0:.1f}s\n")
        reporter.note(f"data ready after {time.monotonic() - t0:.1f}s")


def _sweep(trials: Path) -> None:
    """Remove the folders of trials whose worker died (a lost worker never cleans up)."""
    with contextlib.suppress(OSError):
        for d in trials.iterdir():
            parts = d.name.split("-")
            if len(parts) == 3 and parts[1].isdigit() and not runner.is_alive(int(parts[1])):
                shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _cache_setting(cache: str | None) -> Iterator[None]:
    """The driver's SIGMALOOP_CACHE while the policies are built (sandbox.data_cache reads our
    environment); the worker's own afterwards (a CPU worker runs more trials)."""
    old = os.environ.get("SIGMALOOP_CACHE")
    if cache is not None:
        os.environ["SIGMALOOP_CACHE"] = cache
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SIGMALOOP_CACHE", None)
        else:
            os.environ["SIGMALOOP_CACHE"] = old


@functools.lru_cache(maxsize=4)
def _launcher(root: Path) -> str:
    path = root / "launch.py"
    if not path.is_file() or path.read_text() != _LAUNCHER:
        tmp = path.with_name(f".launch.{os.getpid()}.tmp")
        tmp.write_text(_LAUNCHER)
        os.replace(tmp, path)
    return str(path)


def _worker_spec(job: _Job, root: Path, trial_dir: Path, reporter: _Reporter) -> TrialSpec:
    """The driver's spec on this worker: its files here, its paths, its interpreter, its GPU and
    threads, and the sandbox policies rebuilt for them."""
    spec = job.spec
    project = _unpack(root / "project" / job.project, job.project_ref)
    ev_spec = None
    if spec.evaluator is not None and job.evaluator:
        folder = _unpack(root / "evaluators" / job.evaluator, job.evaluator_ref)
        ev_spec = EvaluatorSpec(identity=spec.evaluator.identity, folder=str(folder))

    def python_here(path: str) -> str:
        return sys.executable if job.driver_python and path == job.driver_python else path

    python = python_here(spec.python or (spec.command[0] if spec.command else sys.executable))
    base_env = {**scrub_env(os.environ, job.env_allow), **job.env}
    prepare = project / PurePosixPath(job.script).parent / "prepare.py"
    if prepare.is_file():
        key = hashlib.sha256(repr((job.project, sorted(job.env.items()), python)).encode()).hexdigest()[:20]
        _prepare_data(root, prepare, python, base_env, key, reporter)

    wt = trial_dir / "wt"  # the trial's worktree: a private copy (it may write there)
    shutil.copytree(project, wt, symlinks=True)
    (wt / job.script).parent.mkdir(parents=True, exist_ok=True)
    (wt / job.script).write_bytes(job.source)
    metrics = trial_dir / "metrics.jsonl"
    metrics.touch()
    model = wt / ".handover" / (Path(spec.model_path).name or evaluator.MODEL_FILE)
    model.parent.mkdir(parents=True, exist_ok=True)
    scratch = trial_dir / "eval"
    moved = {spec.cwd: str(wt), spec.metrics_path: str(metrics), spec.log_path: str(reporter.log_path),
             spec.model_path: str(model), spec.eval_scratch: str(scratch)}
    moved.pop("", None)

    def here(value: str) -> str:
        if value in moved:
            return moved[value]
        prefix = spec.cwd.rstrip("/") + "/"
        return str(wt) + "/" + value[len(prefix):] if value.startswith(prefix) else value

    ctx = ray.get_runtime_context()
    threads = str(max(1, int(ctx.get_assigned_resources().get("CPU", 0))))
    slot = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "SIGMALOOP_THREADS": threads}
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    if gpu_ids:  # the GPU(s) Ray gave this task, never one another trial holds
        slot["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    env = {**job.env, **{k: here(v) for k, v in spec.env.items()}, **slot}

    gpu = any(Path("/dev").glob("nvidia*"))
    policy = ev_policy = None
    if job.sandbox != "off":
        why = sandbox.availability()
        if why is None:  # ours hidden (other trials, caches, logs), as the repository is locally
            policy = sandbox.policy_for(root, wt, metrics, python=python, read_only=job.read_only,
                                        network=job.network, gpu=gpu, hide_validation=ev_spec is not None)
            if ev_spec is not None:
                ev_policy = evaluator.policy(ev_spec, scratch, model, python, gpu, root)
        elif job.sandbox == "on":
            raise _SetupError(f'runner.sandbox = "on", but on this node {why}')
        else:
            reporter.note(f"runs unsandboxed on this node: {why}")
    command = [here(a) for a in spec.command]
    if command:
        command[0] = python_here(command[0])
    if policy is None:
        # -I -S: the launcher needs no site-packages; it costs a trial ~10 ms instead of ~40
        command = [sys.executable, "-I", "-S", _launcher(root), str(os.getpid()), *command]
    return dataclasses.replace(
        spec, cwd=str(wt), command=command, log_path=str(reporter.log_path), metrics_path=str(metrics),
        workspace_root=str(wt), env=env, sandbox=policy, evaluator=ev_spec, evaluator_policy=ev_policy,
        model_path=str(model) if spec.model_path else "", eval_scratch=str(scratch), python=python, cpus=())


def _run_on_worker(job: _Job) -> tuple[TrialResult, bytes]:
    """The Ray task: one trial on this node; returns its result and its whole log."""
    spec = job.spec
    node = f"{socket.gethostname()} (ray {ray.get_runtime_context().get_node_id()[:8]})"
    root = _node_root()
    _sweep(root / "trials")
    trial_dir = root / "trials" / f"{spec.exp_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    trial_dir.mkdir(parents=True)
    log_path = trial_dir / "trial.log"
    reporter = _Reporter(job.mailbox, job.attempt, log_path)
    try:
        reporter.note(f"exp {spec.exp_id} runs on Ray node {node}")
        if reporter.start(node):
            result = TrialResult(spec.exp_id, Outcome.STOPPED, error="stopped before it started")
        else:
            try:
                with _cache_setting(job.env.get("SIGMALOOP_CACHE")):
                    wspec = _worker_spec(job, root, trial_dir, reporter)
                result = runner.run_trial(wspec, reporter.progress, reporter.stop_event, None, job.env_allow)
            except KeyboardInterrupt:  # ray.cancel as it started: run_trial killed its group on the way out
                result = TrialResult(spec.exp_id, Outcome.STOPPED, error="stopped on request")
            except (_SetupError, OSError, rex.RayError) as exc:
                stopped = reporter.stop_event.is_set() and isinstance(exc, _SetupError)
                result = TrialResult(spec.exp_id, Outcome.STOPPED if stopped else Outcome.CRASHED,
                                     error=f"on Ray node {node}: {exc}")
                reporter.note(result.error)
        reporter.close()
        result.node = node
        return result, log_path.read_bytes() if log_path.exists() else b""
    finally:
        reporter.close()
        shutil.rmtree(trial_dir, ignore_errors=True)


def _run_on_gpu_worker(job: _Job) -> tuple[TrialResult, bytes]:
    return _run_on_worker(job)


# max_retries=0: the engine decides about re-running (Outcome.LOST). A GPU trial's worker exits
# after it (max_calls=1: nothing of it stays with that GPU); CPU trials reuse workers: the trial
# is a subprocess (its group killed at its end) and the worker never touches a device, while a
# fresh worker per trial costs ~1 CPU-second of start-up (bench/slots.py: 8 slots of short
# trials on 2 cores were 17% busy with it, ~90% without)
_cpu_trial = ray.remote(max_retries=0)(_run_on_worker)
_gpu_trial = ray.remote(max_retries=0, max_calls=1)(_run_on_gpu_worker)


# --------------------------------------------------------------------------- the driver's side


class RayTrialHandle(TrialHandle):
    """A trial submitted to Ray; ``node`` says where it runs once it started there."""

    def __init__(self, exp_id: int, future: cf.Future[TrialResult], stop: Callable[[], None]):
        super().__init__(exp_id, future, threading.Event())
        self.node = ""
        self._stop_remote = stop

    def stop(self) -> None:
        super().stop()
        self._stop_remote()


@dataclass
class _Trial:
    spec: TrialSpec
    handle: RayTrialHandle
    on_progress: ProgressCallback | None
    on_start: StartCallback | None
    log_offset: int  # the driver's log before this attempt (earlier attempts stay)
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex)
    ref: Any = None
    started: bool = False
    stop_requested: bool = False
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _LocalCluster:
    """A Ray head started for this run, on 127.0.0.1, with the scrubbed environment and a token
    of its own (Ray's token authentication: only the driver that started it can join)."""

    proc: subprocess.Popen[bytes]
    address: str
    temp_dir: str
    token: str

    @classmethod
    def start(cls, env: dict[str, str], gpus: list[str]) -> _LocalCluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        temp_dir = tempfile.mkdtemp(prefix="sigmaloop-rayhead-")
        # `ray start` and ray.init turn 127.0.0.1 into the machine's outward address (ray#59110);
        # with this off the head's node address stays the loopback one, and what it binds with it
        env = dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        # explicit auth: with RAY_AUTH_MODE unset, Ray turns token auth on whenever a
        # ~/.ray/auth_token exists (any earlier ray.init() on this machine writes one), and a
        # driver joining an existing cluster does not: it was refused. A token of our own instead.
        token = secrets.token_hex(32)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
                "--dashboard-host=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
        out = Path(temp_dir) / "ray-start.log"
        with open(out, "wb") as f:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        cluster = cls(proc, f"127.0.0.1:{port}", temp_dir, token)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = out.read_text(errors="replace").strip().splitlines()[-3:]
                cluster.stop()
                raise ValueError(f"could not start a local Ray cluster (ray start exited {proc.returncode}): "
                                 + " / ".join(tail))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return cluster
            time.sleep(0.2)
        cluster.stop()
        raise ValueError(f"a local Ray cluster did not come up within {CONNECT_TIMEOUT:g}s (log: {out})")

    def stop(self) -> None:
        """End the head and everything it started (`ray start --block` cleans up on SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=40)  # it drains for up to 30 s
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in its process group
        self.proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _reload_auth() -> None:
    """Make this process's Ray read its auth settings again (they are cached)."""
    with contextlib.suppress(Exception):
        from ray._raylet import AuthenticationTokenLoader
        from ray._raylet import Config as RayConfig

        RayConfig.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _use_token(token: str) -> dict[str, str | None]:
    """This driver joins with ``token``; returns the settings it had, for :func:`_restore_auth`."""
    before = {k: os.environ.get(k) for k in _AUTH_VARS}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    _reload_auth()
    return before


def _restore_auth(before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reload_auth()


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _loopback_driver(host: str) -> Iterator[None]:
    """ray.init rewrites a loopback address to this machine's outward one (ray#59110), where a
    cluster bound to 127.0.0.1 does not listen: for such an address the driver stays on loopback."""
    if not _is_loopback(host):
        yield
        return
    old = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


def _connect(address: str) -> None:
    """Join the cluster at ``address``, or say clearly why not (ValueError)."""
    setting = f"ray.address = {address!r}"
    hint = 'start one there (ray start --head), or set ray.address = "" to start a local one for the run'
    target = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        target = get_ray_address_from_environment("auto", None) or ""
        if not target:
            raise ValueError(f"{setting}, but no Ray cluster runs on this machine: {hint}")
    parts = urlsplit(target if "://" in target else f"//{target}")
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError:
        host, port = "", None
    if not host or port is None:
        raise ValueError(f'{setting} is not an address: use "" (a local Ray for the run), "auto", '
                         '"host:port" (e.g. "127.0.0.1:6379") or "ray://host:10001"')
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        raise ValueError(f"{setting}: no Ray cluster answers at {host}:{port} ({exc.strerror or exc}); {hint}") from None
    try:
        with _loopback_driver(host):
            ray.init(address=target, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, RuntimeError, version mismatch…
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise ValueError(f"{setting}: could not join the Ray cluster there ({type(exc).__name__}: {exc}); "
                         f"{hint}") from None


def _near_driver() -> dict[str, Any]:
    """Actor options that keep the mailbox on the cluster's head node (it lives as long as the
    cluster, never dies with a worker node), else on the driver's node; none where neither is
    known (a ray:// client)."""
    try:
        head = next((n["NodeID"] for n in ray.nodes()
                     if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})), None)
        if head is not None:  # hard: a soft affinity was seen to land it on a worker node anyway
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)}
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                      soft=True)}
    except Exception:
        return {}


def _capacity(nodes: list[dict[str, float]], cpus_per_trial: int) -> tuple[int, dict[str, Any]]:
    """Trials at once, and each one's reservation, from the nodes' resources: a GPU each where
    the cluster has GPUs (two fixed-budget trials on one GPU would measure each other) with the
    CPUs per GPU of the leanest GPU node (so every GPU stays usable), else ``cpus_per_trial``
    CPUs (a trial never spans nodes)."""
    gpu_nodes = [(int(n.get("GPU", 0)), int(n.get("CPU", 0))) for n in nodes if int(n.get("GPU", 0)) >= 1]
    if gpu_nodes:
        share = min(cpus // gpus for gpus, cpus in gpu_nodes)
        return sum(g for g, _ in gpu_nodes), {"num_gpus": 1, "num_cpus": share}
    slots = sum(int(n.get("CPU", 0)) // cpus_per_trial for n in nodes)
    if slots < 1:
        raise ValueError(f"no node of the Ray cluster has ray.cpus_per_trial = {cpus_per_trial} CPUs (and it has "
                         "no GPU): lower ray.cpus_per_trial or add nodes")
    return slots, {"num_gpus": 0, "num_cpus": cpus_per_trial}


def _tracked(cwd: Path) -> list[tuple[str, str, str]]:
    """(mode, blob, path) of the files git tracks under ``cwd``, paths relative to it."""
    try:
        out = subprocess.run(["git", "-C", str(cwd), "ls-files", "-s", "-z"], capture_output=True,
                             check=True, timeout=60).stdout.decode("utf-8", "surrogateescape")
    except (OSError, subprocess.SubprocessError) as exc:
        raise _SetupError(f"could not list the project's files in {cwd} (git ls-files): {exc}") from None
    entries = []
    for item in filter(None, out.split("\0")):
        meta, _, path = item.partition("\t")
        mode, blob, _stage = meta.split()
        if mode != "160000":  # submodules stay behind
            entries.append((mode, blob, path))
    return sorted(entries, key=lambda e: e[2])


class RayExecutor:
    """Trials on a Ray cluster: ``ray.address`` "" starts a local one for the run (and ends it
    in :meth:`shutdown`); anything else joins that cluster."""

    def __init__(self, config: Config):
        self.config = config
        self.env_allow = tuple(config.runner.env_allow)
        self._cluster: _LocalCluster | None = None
        self._auth_before: dict[str, str | None] | None = None
        self._owns_ray = False
        if not ray.is_initialized():
            address = config.ray.address.strip()
            if not address:
                self._cluster = _LocalCluster.start(scrub_env(os.environ, self.env_allow), config.runner.gpus)
                atexit.register(self._cluster.stop)
                address = self._cluster.address
                self._auth_before = _use_token(self._cluster.token)
            try:
                _connect(address)
            except BaseException:
                if self._cluster is not None:
                    self._stop_cluster()
                raise
            self._owns_ray = True
        try:
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            self.slots, self._task_options = _capacity(nodes, config.ray.cpus_per_trial)
            self._mailbox = _Mailbox.options(**_near_driver()).remote()
        except BaseException:
            self._release()
            raise
        self._bundles: OrderedDict[str, Any] = OrderedDict()
        self._trials: dict[int, _Trial] = {}
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="sigmaloop-ray-progress", daemon=True)
        self._pump.start()

    # -- the Executor interface --------------------------------------------------------------------
    def submit(self, spec: TrialSpec, on_progress: ProgressCallback | None = None,
               on_start: StartCallback | None = None) -> TrialHandle:
        future: cf.Future[TrialResult] = cf.Future()
        handle = RayTrialHandle(spec.exp_id, future, lambda: self.stop(spec.exp_id))
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
        try:
            offset = os.path.getsize(spec.log_path)
        except OSError:
            offset = 0
        with contextlib.suppress(OSError):  # this attempt's records only, as run_trial leaves it
            Path(spec.metrics_path).parent.mkdir(parents=True, exist_ok=True)
            Path(spec.metrics_path).write_bytes(b"")
        trial = _Trial(spec, handle, on_progress, on_start, offset)
        try:
            job = self._job(spec, trial.attempt)
        except (_SetupError, OSError) as exc:
            future.set_result(TrialResult(spec.exp_id, Outcome.CRASHED, error=str(exc)))
            return handle
        with self._lock:
            self._trials[spec.exp_id] = trial
        task = _gpu_trial if self._task_options["num_gpus"] else _cpu_trial
        trial.ref = task.options(**self._task_options).remote(job)
        trial.thread = threading.Thread(target=self._wait, args=(trial,), name=f"sigmaloop-ray-{spec.exp_id}",
                                        daemon=True)
        trial.thread.start()
        return handle

    def running(self) -> list[int]:
        """Ids of the trials submitted and not finished (running or queued)."""
        with self._lock:
            return list(self._trials)

    def stop(self, exp_id: int) -> bool:
        with self._lock:
            trial = self._trials.get(exp_id)
        if trial is None:
            return False
        with trial.lock:
            if trial.stop_requested:
                return True
            trial.stop_requested = True
        with contextlib.suppress(Exception):
            self._mailbox.stop.remote(trial.attempt)  # the worker polls it and kills the trial's group
        if trial.ref is not None and not trial.started:
            with contextlib.suppress(Exception):
                ray.cancel(trial.ref)  # still queued: there is no process to orphan
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop every trial; with ``wait`` until all ended. A local cluster is ended after its
        trials (never under them: that would orphan their processes)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            trials = list(self._trials.values())
        for trial in trials:
            self.stop(trial.spec.exp_id)
        deadline = None if wait else time.monotonic() + runner.KILL_GRACE + 10
        for trial in trials:
            if trial.thread is not None:
                trial.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._stopping.set()
        self._pump.join(timeout=10)
        self._release()

    # -- driver internals --------------------------------------------------------------------------
    def _release(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._mailbox)
        if self._owns_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()
        if self._cluster is not None:
            self._stop_cluster()

    def _stop_cluster(self) -> None:
        assert self._cluster is not None
        atexit.unregister(self._cluster.stop)
        self._cluster.stop()
        if self._auth_before is not None:  # the driver's own Ray auth settings, as they were
            _restore_auth(self._auth_before)
            self._auth_before = None

    def _job(self, spec: TrialSpec, attempt: str) -> _Job:
        """What the worker needs: the fixed files by hash (in the object store once), the
        candidate's script, the evaluator's folder, the knobs the trial may see."""
        cwd = Path(spec.cwd)
        script = PurePosixPath(self.config.experiment.train_script).as_posix()
        fixed = [e for e in _tracked(cwd) if e[2] != script]
        project = hashlib.sha256(repr(fixed).encode()).hexdigest()[:20]
        project_ref = self._bundle(project, lambda: _read_project(cwd, fixed))
        try:
            source = (cwd / script).read_bytes()
        except OSError as exc:
            raise _SetupError(f"could not read the train script {cwd / script}: {exc}") from None
        ev_hash, ev_ref = "", None
        if spec.evaluator is not None:
            folder = Path(spec.evaluator.folder)
            files = {p.name: (0o100644, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}
            ev_hash = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:20]
            ev_ref = self._bundle(ev_hash, lambda: files)
        env = {k: v for k, v in scrub_env(os.environ, self.env_allow).items()
               if (k.startswith("SIGMALOOP_") or k in self.env_allow) and k not in CONTRACT}
        r = self.config.runner
        return _Job(spec=spec, attempt=attempt, project=project, project_ref=[project_ref], script=script, source=source,
                    evaluator=ev_hash, evaluator_ref=[ev_ref], env=env, env_allow=self.env_allow,
                    driver_python="" if r.python else sys.executable, sandbox=r.sandbox, network=r.network,
                    read_only=tuple(r.read_only), mailbox=self._mailbox)

    def _bundle(self, key: str, read: Callable[[], dict[str, tuple[int, bytes]]]) -> Any:
        with self._lock:
            ref = self._bundles.get(key)
            if ref is not None:
                self._bundles.move_to_end(key)
                return ref
        ref = ray.put(read())
        with self._lock:
            self._bundles[key] = ref
            while len(self._bundles) > BUNDLES_KEPT:
                self._bundles.popitem(last=False)  # tasks that use it hold their own reference
        return ref

    def _wait(self, trial: _Trial) -> None:
        spec = trial.spec
        final: bytes | None = None
        try:
            result, final = ray.get(trial.ref)
        except rex.TaskCancelledError:
            why = "stopped on request" if trial.started else "stopped before it started"
            result = TrialResult(spec.exp_id, Outcome.STOPPED, error=why)
        except rex.RayTaskError as exc:  # our worker code raised: not a lost machine, don't re-run forever
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, LOST_ERRORS):
                result = self._lost(trial, cause)
            else:
                result = TrialResult(spec.exp_id, Outcome.CRASHED,
                                     error=f"the Ray worker{self._where(trial)} failed: {type(cause).__name__}: {cause}")
        except rex.OutOfMemoryError as exc:
            result = TrialResult(spec.exp_id, Outcome.CRASHED,
                                 error=f"Ray's memory monitor killed it{self._where(trial)}: {_first_line(exc)}")
        except rex.RayError as exc:
            result = self._lost(trial, exc)
        except Exception as exc:
            log.exception("exp %s: waiting for its Ray task failed", spec.exp_id)
            result = self._lost(trial, exc)
        try:
            with self._drain_lock:
                self._drain()  # what it reported before it returned (its last report was waited for)
        except Exception:
            log.exception("exp %s: could not collect its last progress", spec.exp_id)
        result.node = result.node or trial.handle.node
        result.error = secret.redact(result.error)
        self._write_log(trial, final, result)
        with contextlib.suppress(Exception):
            self._mailbox.forget.remote(trial.attempt)
        with self._lock:
            if self._trials.get(spec.exp_id) is trial:
                del self._trials[spec.exp_id]
        trial.handle._future.set_result(result)

    def _where(self, trial: _Trial) -> str:
        return f" on Ray node {trial.handle.node}" if trial.handle.node else ""

    def _lost(self, trial: _Trial, exc: BaseException) -> TrialResult:
        where = self._where(trial) or " (before it reported a node)"
        error = (f"lost: the machine or Ray worker running exp {trial.spec.exp_id}{where} went away: "
                 f"{type(exc).__name__}: {_first_line(exc)}")
        return TrialResult(trial.spec.exp_id, Outcome.LOST, error=error)

    def _write_log(self, trial: _Trial, final: bytes | None, result: TrialResult) -> None:
        """The worker's final log replaces what streamed in (it may have been capped or
        redacted there); a lost trial keeps what streamed, with a line saying what happened."""
        path = Path(trial.spec.log_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a+b") as f:
                if final is not None:
                    f.truncate(trial.log_offset)
                    f.write(secret.redact_bytes(final))
                elif result.error:
                    f.write(f"\n[sigmaloop] {result.error}\n".encode())
        except OSError:
            log.exception("exp %s: could not write its log %s", trial.spec.exp_id, path)

    def _pump_loop(self) -> None:
        while not self._stopping.wait(REPORT_INTERVAL):
            with self._lock:
                idle = not self._trials
            if idle:
                continue
            try:
                with self._drain_lock:
                    self._drain()
            except Exception:
                if not self._stopping.is_set():
                    log.exception("could not collect trial progress from Ray")
                    time.sleep(1.0)

    def _drain(self) -> None:
        """Deliver what workers reported: starts, progress, log bytes (in their order)."""
        for attempt, node, records, chunk in ray.get(self._mailbox.drain.remote(), timeout=CONNECT_TIMEOUT):
            with self._lock:
                trial = next((t for t in self._trials.values() if t.attempt == attempt), None)
            if trial is None:
                continue
            exp_id = trial.spec.exp_id
            if node and not trial.started:
                trial.started = True
                trial.handle.node, trial.handle.pid = node, 0
                if trial.on_start is not None:
                    try:  # pid 0: a remote process is none of this machine's, no orphan killer may act on it
                        trial.on_start(exp_id, 0)
                    except Exception:
                        log.exception("on_start callback failed for exp %s", exp_id)
            if chunk:
                _append(trial.spec.log_path, secret.redact_bytes(chunk))
            if records:  # the driver's metrics file, as a local trial leaves it
                _append(trial.spec.metrics_path, b"".join(_record_line(r) for r in records))
            if records and trial.on_progress is not None:
                try:
                    trial.on_progress(exp_id, records)
                except Exception:
                    log.exception("on_progress callback failed for exp %s", exp_id)


def _read_project(cwd: Path, entries: list[tuple[str, str, str]]) -> dict[str, tuple[int, bytes]]:
    """The tracked files' contents (symlinks as their targets), refused past PROJECT_CAP."""
    files: dict[str, tuple[int, bytes]] = {}
    total = 0
    for mode, _blob, rel in entries:
        path = cwd / rel
        try:
            if mode == "120000":
                data = os.readlink(path).encode()
            else:
                data = path.read_bytes()
        except OSError:
            continue  # tracked but absent from this checkout (sparse): the trial never had it either
        total += len(data)
        if total > PROJECT_CAP:
            raise _SetupError(f"the project's tracked files in {cwd} come to more than {PROJECT_CAP >> 20} MiB, "
                              "more than the Ray executor ships to its nodes: keep data out of git (prepare.py "
                              "can build it on each node, into the data cache)")
        files[rel] = (int(mode, 8), data)
    return files


def _append(path: str, data: bytes) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
    except OSError:
        log.exception("could not append to %s", path)


def _record_line(r: ProgressRecord) -> bytes:
    return (json.dumps({"step": r.step, "t": r.t, "frac": r.frac, "loss": r.loss, **r.extra}) + "\n").encode()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
