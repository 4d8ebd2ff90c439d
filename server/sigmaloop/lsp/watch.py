"""File watching for the language server: watchdog events, debounced onto the asyncio loop.

The train script, ``sigmaloop.toml`` and the journal (``.sigmaloop/journal.db*``) are
watched; a CLI loop writing the same journal from another process shows up through these
events (and through the server's periodic ``max_rev`` poll when events are missed, e.g. on
network file systems).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class Watcher:
    """Calls ``on_change(kind)`` on the loop, debounced per kind ("script", "config", "journal")."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workspace: Path, script: str,
                 config_name: str, state_dir: Path, on_change: Callable[[str], None],
                 debounce: float = 0.05) -> None:
        self.loop = loop
        self.workspace = workspace
        self.on_change = on_change
        self.debounce = debounce
        self.names = {
            str((workspace / script).resolve()): "script",
            str((workspace / config_name).resolve()): "config",
        }
        self.state_dir = state_dir.resolve()
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._observer = None

    def kind_of(self, path: str) -> str | None:
        kind = self.names.get(path)
        if kind:
            return kind
        p = Path(path)
        if p.parent == self.state_dir and p.name.startswith("journal.db"):
            return "journal"
        return None

    def start(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - a dependency, but polling still works
            log.warning("watchdog is not installed; relying on polling")
            return
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                for path in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
                    if not path:
                        continue
                    kind = watcher.kind_of(str(Path(path).resolve()) if path else "")
                    if kind:
                        watcher.loop.call_soon_threadsafe(watcher._schedule, kind)

        observer = Observer()
        handler = Handler()
        try:
            observer.schedule(handler, str(self.workspace), recursive=False)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            observer.schedule(handler, str(self.state_dir), recursive=False)
            observer.daemon = True
            observer.start()
        except Exception:
            log.exception("could not start the file watcher; relying on polling")
            return
        self._observer = observer

    def _schedule(self, kind: str) -> None:
        if kind in self._handles:
            return
        self._handles[kind] = self.loop.call_later(self.debounce, self._fire, kind)

    def _fire(self, kind: str) -> None:
        self._handles.pop(kind, None)
        try:
            self.on_change(kind)
        except Exception:
            log.exception("watch handler failed for %s", kind)

    def stop(self) -> None:
        for h in self._handles.values():
            h.cancel()
        self._handles.clear()
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
