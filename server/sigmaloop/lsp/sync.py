"""Keeping the client in sync with the engine and the journal.

- Engine events (worker threads) reach the asyncio loop with ``call_soon_threadsafe``.
- Another process on the same journal (a CLI loop beside the editor) is seen through watchdog
  on ``journal.db*`` plus a ``max_rev`` poll every 0.5 s; its rows arrive by revision.
- Every new revision of an experiment is sent once as ``sigmaloop/experimentUpdated``.
- ``sigmaloop/state`` (:meth:`Engine.state`, computed in a thread) is sent after start-up and
  whenever it changes, at most 4 times a second; the code lens title is made from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from .. import config as config_mod
from ..events import EventBus, ExperimentUpdated, LoopState, Notice, TrialProgress
from ..models import FINISHED, Experiment, Status
from . import protocol, render
from .diagnostics import REFRESH_DEBOUNCE
from .watch import Watcher

if TYPE_CHECKING:
    from ..engine import Engine
    from .server import SigmaloopServer

log = logging.getLogger(__name__)

POLL_EVERY = 0.5  # s: journal max_rev fallback poll
STATE_EVERY = 0.25  # s: sigmaloop/state at most 4 Hz
#: bench/lsp.py sets it: give freed heap back to the OS after each state (glibc), so the bench's
#: RSS figure is the steady state rather than the allocator's high-water mark
TRIM = os.environ.get("SIGMALOOP_MALLOC_TRIM") == "1"
LEVELS = {"info": types.MessageType.Info, "warning": types.MessageType.Warning,
          "error": types.MessageType.Error}


class Sync:
    def __init__(self, ls: SigmaloopServer) -> None:
        self.ls = ls
        self.bus = EventBus()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rev = 0  # journal cursor: every revision up to here was read
        self._seen: dict[int, tuple[int, Status]] = {}  # id → (rev, status) last sent
        self._watcher: Watcher | None = None
        self._poll: asyncio.Future | None = None
        self._reading = False
        self._read_again = False
        self._unsubscribe = self.bus.subscribe(self._on_bus)
        self.state: dict[str, Any] | None = None  # the last state sent
        self.head: tuple[str, str] | None = None  # the research head (sha, script) when the state was read
        self.lens_title: str | None = None
        self._lens_advice: str | None = None
        self._state_handle: asyncio.TimerHandle | None = None
        self._state_task: asyncio.Future | None = None
        self._state_dirty = False
        self._state_at = 0.0

    async def start(self, engine: Engine) -> None:
        """The engine is open: read the journal once, then follow it."""
        self.loop = asyncio.get_running_loop()
        rev, rows = await asyncio.to_thread(lambda: (engine.max_rev(), engine.with_diff(dicts=False)))
        self.rev = max(self.rev, rev)
        script = self.ls.script
        for e in rows:
            script.rows[e.id] = render.Row.of(e)
            self._seen.setdefault(e.id, (e.rev, e.status))
        script.invalidate(text=False)
        self._watcher = Watcher(self.loop, engine.workspace, engine.script_name,
                                config_mod.CONFIG_NAME, engine.state_dir, self._on_watch)
        self._watcher.start()
        self._poll = asyncio.ensure_future(self._polling())
        self.changed()
        self.ls.diagnostics.schedule(0)
        self.ls.diagnostics.start()

    def stop(self) -> None:
        self._unsubscribe()
        if self._watcher is not None:
            self._watcher.stop()
        if self._poll is not None:
            self._poll.cancel()

    # --- engine events (worker threads → loop) -------------------------------------------
    def _on_bus(self, event: Any) -> None:
        loop = self.loop
        if loop is None or self.ls.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ExperimentUpdated):
            self.ingest([event.experiment])
        elif isinstance(event, TrialProgress):
            self.ls.progress.add(event.exp_id, event.records)
        elif isinstance(event, LoopState):
            self.changed()
        elif isinstance(event, Notice):
            self.ls.show(f"sigmaloop: {event.message}", LEVELS.get(event.level, types.MessageType.Warning))

    def ingest(self, exps: list[Experiment]) -> None:
        """New or changed experiments (this server's events or another process's writes)."""
        ls = self.ls
        me = os.getpid()
        history = crashed = status_changed = False
        for e in exps:
            seen = self._seen.get(e.id)
            if seen is not None and e.rev <= seen[0]:
                continue
            self._seen[e.id] = (e.rev, e.status)
            ls.notify(protocol.EXPERIMENT_UPDATED, ls.record(e))
            status_changed = status_changed or seen is None or seen[1] != e.status
            history = ls.script.take(e) or history
            ls.progress.follow(e, own=e.owner_pid == me)
            ls.progress.phase(e)
            if e.status in FINISHED:
                crashed = crashed or e.status == Status.CRASHED
                ls.diagnostics.finished(e)
        if history:
            ls.diagnostics.schedule(0 if crashed else REFRESH_DEBOUNCE)
        if status_changed:
            self.changed()

    # --- another process's writes -----------------------------------------------------------
    def _on_watch(self, kind: str) -> None:
        if kind == "journal":
            self.ls.spawn(self.poll())
        elif kind == "config":
            self.ls.reload_config()
        elif kind == "script" and self.ls.script.open_doc() is None:
            self.ls.script.invalidate()
            self.ls.diagnostics.schedule()

    async def _polling(self) -> None:
        while not self.ls.closed:
            await asyncio.sleep(POLL_EVERY)
            await self.poll()

    async def poll(self) -> None:
        """Read what the journal got since the cursor (off the loop; one read at a time)."""
        engine = self.ls.engine
        if engine is None or self.ls.closed:
            return
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        try:
            while True:
                self._read_again = False
                rows = await asyncio.to_thread(_changed_since, engine, self.rev)
                # The cursor moves only here: an own event with a later rev must not hide an
                # earlier write of another process that this read has not seen yet.
                if rows and not self.ls.closed:
                    self.rev = max(self.rev, rows[-1].rev)
                    self.ingest(rows)
                if not self._read_again:
                    break
        except Exception:
            log.exception("journal read failed")
        finally:
            self._reading = False

    # --- sigmaloop/state ------------------------------------------------------------------
    def changed(self, config: bool = False) -> None:
        """The state may have changed: compute and send it soon (≤ 4 Hz)."""
        if config:
            self.ls.diagnostics.schedule()
        if self.loop is None or self.ls.engine is None or self.ls.closed:
            return
        if self._state_task is not None and not self._state_task.done():
            self._state_dirty = True  # again when this one is done
            return
        if self._state_handle is None:
            delay = max(0.0, self._state_at + STATE_EVERY - time.monotonic())
            self._state_handle = self.loop.call_later(delay, self._compute)

    def _compute(self) -> None:
        self._state_handle = None
        self._state_at = time.monotonic()
        self._state_dirty = False
        self._state_task = self.ls.spawn(self._send_state())

    async def _send_state(self) -> dict[str, Any] | None:
        ls = self.ls
        try:
            st, head = await asyncio.to_thread(_engine_state, ls.engine, self.head)
        except Exception as exc:
            log.warning("state failed: %s", exc)
            return self.state
        finally:
            if self._state_dirty:
                self.loop.call_soon(self.changed)
        state = protocol.state(st, ls.config_error)
        old = self.state
        if state != old:
            self.state = state
            ls.notify(protocol.STATE, state)
            if (old or {}).get("questions") != state.get("questions"):
                ls.diagnostics.schedule()  # proposals say which question they test
        title = render.lens_title(state)
        advice = render.lens_advice(state)
        buttons = render.buttons(old), render.buttons(state)
        if (title != self.lens_title or advice != self._lens_advice or head != self.head
                or buttons[0] != buttons[1]):
            self.lens_title, self._lens_advice, self.head = title, advice, head
            if ls.supports("workspace", "code_lens", "refresh_support"):
                ls.workspace_code_lens_refresh(None)
        return state

    def questions(self) -> dict[int, str]:
        """The research questions' texts by id, as the last state had them."""
        return {q["id"]: q["text"] for q in (self.state or {}).get("questions") or ()
                if isinstance(q, dict) and isinstance(q.get("id"), int)}

    async def current(self) -> dict[str, Any] | None:
        """The latest state (computing the first one if none was sent yet)."""
        if self.state is None and self.ls.engine is not None:
            if self._state_task is None or self._state_task.done():
                self._compute()
            await asyncio.shield(self._state_task)
        return self.state

    async def fresh(self) -> dict[str, Any] | None:
        """The state now (for sigmaloop.summary): computed, sent if it changed."""
        if self._state_handle is not None:
            self._state_handle.cancel()
            self._state_handle = None
        if self._state_task is not None and not self._state_task.done():
            await asyncio.shield(self._state_task)
        self._compute()
        return await asyncio.shield(self._state_task)


def _changed_since(engine: Engine, rev: int) -> list[Experiment]:
    return engine.changed_since(rev) if engine.max_rev() > rev else []


def _engine_state(engine: Engine, head: tuple[str, str] | None):
    """The state, and the research head's (sha, script): read again only when the sha moved."""
    st = engine.state()
    sha = engine.head()
    if head is None or head[0] != sha:
        head = (sha, engine.ratchet.read_script(sha))
    if TRIM:
        _malloc_trim()
    return st, head


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass
