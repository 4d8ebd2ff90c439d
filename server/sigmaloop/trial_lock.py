"""One trial runner per workspace at a time, across processes.

Fixed-time trials that share a machine measure each other, so the CLI and the language server
(or two CLIs) on one workspace must never run trials at once. The engine holds an exclusive
``flock`` on ``.sigmaloop/trials.lock`` while any of its trials runs (its own slots share it);
a second engine waits for it and can say who holds it (pid, CLI or editor, since when). The
kernel drops the lock when its holder dies, so a crashed engine never blocks the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "trials.lock"


@dataclass(frozen=True)
class Holder:
    pid: int
    kind: str  # "cli", "editor", …
    since: float

    def describe(self) -> str:
        ago = max(0, int(time.time() - self.since))
        return f"the {self.kind} (pid {self.pid}), running trials for {ago} s"


class TrialLock:
    """Re-entrant within a process (one count per running trial), exclusive across processes."""

    def __init__(self, state_dir: str | os.PathLike[str], kind: str) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.kind = kind
        self._mutex = threading.Lock()
        self._count = 0
        self._fd: int | None = None

    def holder(self) -> Holder | None:
        """Who holds the lock, as it wrote itself down (None: nobody says)."""
        try:
            data = json.loads(self.path.read_text() or "{}")
            return Holder(int(data["pid"]), str(data["kind"]), float(data["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def acquire(
        self,
        stop: threading.Event | Callable[[], bool] | None = None,
        on_wait: Callable[[Holder | None], None] | None = None,
        poll: float = 0.25,
    ) -> bool:
        """Take the lock, waiting for another process to let go; False if ``stop`` (an event, or
        a function saying whether to give up) comes first. ``on_wait`` is called once, with the
        holder, when the lock is busy."""
        if callable(stop) and not isinstance(stop, threading.Event):
            should_stop = stop
        else:
            should_stop = stop.is_set if stop is not None else (lambda: False)
        told = False
        while True:
            with self._mutex:
                if self._count:
                    self._count += 1
                    return True
                if self._try_lock():
                    self._count = 1
                    return True
            if not told and on_wait is not None:
                on_wait(self.holder())
                told = True
            if should_stop():
                return False
            time.sleep(poll)

    def _try_lock(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "kind": self.kind, "since": time.time()}).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        with self._mutex:
            if not self._count:
                return
            self._count -= 1
            if self._count or self._fd is None:
                return
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._count > 0
