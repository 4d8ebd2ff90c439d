"""Executors: run trials concurrently behind one interface (:class:`Executor`); the
:class:`LocalExecutor` uses a thread pool with one slot (GPU or CPU-thread share) per worker."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from .config import Config
from .models import TrialResult, TrialSpec
from .runner import ProgressCallback, StartCallback, run_trial

log = logging.getLogger(__name__)

class TrialHandle:
    """A submitted trial: wraps a ``Future[TrialResult]`` and its stop event."""

    def __init__(self, exp_id: int, future: cf.Future[TrialResult], stop_event: threading.Event):
        self.exp_id = exp_id
        self.pid: int | None = None  # set once the process started
        self._future = future
        self._stop_event = stop_event

    def result(self, timeout: float | None = None) -> TrialResult:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def stop(self) -> None:
        """Kill the trial (or make it end STOPPED without starting, if still queued)."""
        self._stop_event.set()

    def add_done_callback(self, fn: Callable[[TrialHandle], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))


class Executor(Protocol):
    """Runs trials concurrently, ``slots`` at a time (LocalExecutor now, Ray later)."""

    slots: int

    def submit(
        self,
        spec: TrialSpec,
        on_progress: ProgressCallback | None = None,
        on_start: StartCallback | None = None,
    ) -> TrialHandle: ...

    def stop(self, exp_id: int) -> bool: ...

    def shutdown(self, wait: bool = True) -> None: ...


def detect_gpus() -> list[str]:
    """GPU ids for trials: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``; never torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip()]
        return [] if ids in ([], ["-1"]) else ids
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.MULTILINE)]


def cpu_count() -> int:
    """CPUs this process may use (affinity-aware, so container limits count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def slot_envs(slots: int, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """Per-slot variables: one GPU each where there are GPUs, and a share of the CPU threads.

    ``gpus=None`` detects them. Never two slots on one GPU: two fixed-budget trials sharing a GPU
    would measure each other, so fewer GPUs than slots is an error that says what to set.
    """
    gpus = detect_gpus() if gpus is None else list(gpus)
    if gpus and len(gpus) < slots:
        raise ValueError(f"runner.slots = {slots} but {len(gpus)} GPU(s) ({', '.join(gpus)}): two fixed-budget "
                         f"trials on one GPU would measure each other; set runner.slots = {len(gpus)} "
                         "(or list more GPUs in runner.gpus)")
    threads = str(max(1, cpu_count() // slots))
    envs = []
    for i in range(slots):
        env = {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "SIGMALOOP_THREADS": threads,
        }
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        envs.append(env)
    return envs


def slot_cpus(slots: int) -> list[tuple[int, ...]]:
    """Disjoint CPU sets, one per slot, from the CPUs this process may use (none to pin with one
    slot: it has them all). Two fixed-budget trials on the same cores would measure each other."""
    if slots <= 1 or not hasattr(os, "sched_getaffinity"):
        return [() for _ in range(slots)]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < slots:  # fewer cores than slots: they share, as the thread split already says
        return [() for _ in range(slots)]
    per = len(cpus) // slots
    return [tuple(cpus[i * per:(i + 1) * per]) for i in range(slots)]


def make_executor(config: Config) -> Executor:
    """The executor ``runner.executor`` names: local subprocesses, or a Ray cluster."""
    r = config.runner
    if r.executor == "ray":
        try:
            from .ray_executor import RayExecutor
        except ModuleNotFoundError as exc:
            if exc.name != "ray" and not str(exc.name or "").startswith("ray."):
                raise
            raise ValueError('runner.executor = "ray" needs Ray: pip install "sigmaloop[ray]" '
                             '(or set runner.executor = "local")') from None
        return RayExecutor(config)
    return LocalExecutor(slots=r.slots, gpus=r.gpus or None, env_allow=r.env_allow)


class LocalExecutor:
    """Trials as local subprocesses, ``slots`` at a time; queued submissions wait for a slot.

    Each trial gets its slot's variables (:func:`slot_envs`); ``spec.env`` overrides them.
    """

    def __init__(
        self, slots: int = 1, gpus: list[str] | None = None, env_allow: Iterable[str] = ()
    ):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots}")
        self.slots = slots
        self.env_allow = tuple(env_allow)
        self.slot_envs = slot_envs(slots, gpus)
        self.slot_cpus = slot_cpus(slots)
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(slots):
            self._free.put(i)
        self._pool = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="trial")
        self._handles: dict[int, TrialHandle] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self,
        spec: TrialSpec,
        on_progress: ProgressCallback | None = None,
        on_start: StartCallback | None = None,
    ) -> TrialHandle:
        stop_event = threading.Event()
        holder: list[TrialHandle] = []

        def started(exp_id: int, pid: int) -> None:
            holder[0].pid = pid
            if on_start is not None:
                on_start(exp_id, pid)

        def work() -> TrialResult:
            slot = self._free.get()  # never blocks: one worker per slot
            try:
                run_spec = dataclasses.replace(spec, env={**self.slot_envs[slot], **spec.env},
                                               cpus=spec.cpus or self.slot_cpus[slot])
                return run_trial(run_spec, on_progress, stop_event, started, self.env_allow)
            finally:
                self._free.put(slot)

        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
            handle = TrialHandle(spec.exp_id, cf.Future(), stop_event)
            holder.append(handle)
            handle._future = self._pool.submit(work)
            self._handles[spec.exp_id] = handle
        handle._future.add_done_callback(lambda _f: self._forget(handle))
        return handle

    def _forget(self, handle: TrialHandle) -> None:
        with self._lock:
            if self._handles.get(handle.exp_id) is handle:
                del self._handles[handle.exp_id]

    def running(self) -> list[int]:
        """Ids of the trials submitted and not finished (running or queued)."""
        with self._lock:
            return list(self._handles)

    def stop(self, exp_id: int) -> bool:
        with self._lock:
            handle = self._handles.get(exp_id)
        if handle is None:
            return False
        handle.stop()
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop every running and queued trial; with ``wait``, until all have ended."""
        with self._lock:
            self._closed = True
            handles = list(self._handles.values())
        for handle in handles:
            handle.stop()
        self._pool.shutdown(wait=wait)
