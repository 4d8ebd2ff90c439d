"""The sigmaloop language server: a pygls ``LanguageServer`` that holds one session's state.

Handlers (``features.py``, ``commands.py``) translate between LSP and :class:`Engine` and
delegate; the engine decides. The parts of the session each live in their own module:
``sync.py`` (engine events, the journal of other processes, the ``sigmaloop/state``
notification), ``document.py`` (the train script and its per-line history), ``diagnostics.py``,
``progress.py`` (trial progress). Blocking work runs in threads; engine events arrive on
worker threads and reach the asyncio loop through ``call_soon_threadsafe``. Nothing here
imports torch. Protocol: docs/protocol.md; wire schema: ``protocol.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from .. import __version__
from .. import config as config_mod
from ..config import Config, ConfigError
from . import protocol
from .diagnostics import Diagnostics
from .document import Script
from .params import plain
from .progress import Progress
from .sync import Sync

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("sigmaloop.lsp")

REQUEST_FAILED = -32803  # LSP RequestFailed


class RequestFailed(JsonRpcException):
    CODE = REQUEST_FAILED
    MESSAGE = "Request failed"


class SigmaloopServer(LanguageServer):
    """One editor session: the workspace, its engine, the settings, and the parts that keep the
    client in sync with them."""

    def __init__(self) -> None:
        super().__init__("sigmaloop", __version__,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.root: Path | None = None
        self.engine: Engine | None = None
        self.problem: str | None = None  # why there is no engine (shown, and every command's error)
        self.config_error: str | None = None  # sigmaloop.toml or the settings are broken
        self.settings: dict[str, Any] = {}  # the client's `sigmaloop` settings, as sent
        self.client_name: str | None = None  # initializationOptions.client ("vscode": our extension)
        self.script = Script(self)
        self.diagnostics = Diagnostics(self)
        self.progress = Progress(self)
        self.sync = Sync(self)
        self.ready = asyncio.Event()
        self.closed = False
        self._close_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._tasks: set[asyncio.Future] = set()

    # --- talking to the client ------------------------------------------------------------
    def show(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def say_done(self, message: str, details: list[str] | None = None,
                 what: str = "baseline") -> None:
        """From a worker thread: one information message (a finished baseline or loop); the
        ``details`` (what it learned, in sentences) go to the client's log. Our own extension
        gets it as ``sigmaloop/done`` (it adds Open Report and Show Panel); any other client as
        a plain showMessage."""
        loop = self.sync.loop
        if self.closed or not message or loop is None:
            return

        def say() -> None:
            for line in details or ():
                self.window_log_message(types.LogMessageParams(type=types.MessageType.Info, message=line))
            if self.client_name == "vscode":
                self.notify(protocol.DONE, {"what": what, "message": f"sigmaloop: {message}"})
            else:
                self.show(f"sigmaloop: {message}")

        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(say)

    def notify(self, method: str, params: Any) -> None:
        if not self.closed:
            self.protocol.notify(method, params)

    def supports(self, *path: str) -> bool:
        """Whether the client announced a capability (``supports("window", "work_done_progress")``)."""
        try:
            obj: Any = self.client_capabilities
        except Exception:
            return False
        for p in path:
            obj = getattr(obj, p, None)
            if obj is None:
                return False
        return bool(obj)

    def report_server_error(self, error: Exception, source: Any) -> None:
        log.error("server error (%s): %s", getattr(source, "__name__", source), error)

    # --- start-up -------------------------------------------------------------------------
    def on_initialize(self, params: types.InitializeParams) -> None:
        root = None
        if params.workspace_folders:
            root = to_fs_path(params.workspace_folders[0].uri)
        elif params.root_uri:
            root = to_fs_path(params.root_uri)
        elif params.root_path:
            root = params.root_path
        self.root = Path(root).resolve() if root else None
        options = plain(params.initialization_options)
        if isinstance(options, dict) and isinstance(options.get("settings"), dict):
            self.settings = options["settings"]
        if isinstance(options, dict) and isinstance(options.get("client"), str):
            self.client_name = options["client"]
        if self.root is not None:  # the script's name now, so early requests know it
            try:
                script = config_mod.load(self.root).experiment.train_script
            except Exception:
                script = config_mod.ExperimentConfig().train_script
            self.script.set_name(script)

    async def on_initialized(self) -> None:
        self.sync.loop = asyncio.get_running_loop()  # engine events from here on (recovery too)
        try:
            await self._start()
        finally:
            self.ready.set()

    async def _start(self) -> None:
        if self.root is None:
            self.problem = "sigmaloop: no workspace folder is open; open the folder of your train script"
            self.show(self.problem, types.MessageType.Error)
            return
        if not self.settings:
            await self._fetch_settings()
        if not await self._migrate():
            return
        cfg = self.load_config(initial=True)
        await self._start_engine(cfg)

    async def _migrate(self) -> bool:
        """A workspace of the product's first name: migrate it before its config is read."""
        from ..migrate import MigrationError, migrate_workspace

        try:
            report = await asyncio.to_thread(migrate_workspace, self.root)
        except Exception as exc:
            self.problem = f"sigmaloop: {exc}" if isinstance(exc, MigrationError) else \
                f"sigmaloop: could not migrate the workspace from its old name: {exc}"
            self.show(self.problem, types.MessageType.Error)
            return False
        if report is not None:
            log.warning("%s", report.message())  # the whole list, in the server's log
            self.show(report.summary())
        return True

    async def _start_engine(self, cfg: Config | None) -> None:
        from ..engine import Engine
        from ..ratchet import RatchetError

        try:
            engine = await asyncio.to_thread(Engine, self.root, cfg or Config(), None,
                                             self.sync.bus)
        except RatchetError as exc:
            self.problem = f"sigmaloop: {exc}"
            self.show(self.problem, types.MessageType.Error)
            return
        except Exception as exc:
            self.problem = f"sigmaloop: could not open the workspace: {exc}"
            log.exception("engine start failed")
            self.show(self.problem, types.MessageType.Error)
            return
        self.engine = engine
        self.script.set_name(engine.script_name)
        await self.sync.start(engine)

    # --- settings and sigmaloop.toml: one channel, validated by config.load -------------
    async def _fetch_settings(self) -> None:
        """Clients that send no settings with initialize are asked (workspace/configuration)."""
        if not self.supports("workspace", "configuration"):
            return
        try:
            got = await asyncio.wait_for(self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="sigmaloop")])), 5)
            got = plain(got)
            self.settings = got[0] if got and isinstance(got[0], dict) else {}
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)

    def load_config(self, initial: bool = False) -> Config | None:
        """sigmaloop.toml with the editor settings over it; None (and the error shown and put in
        the state) when either is broken."""
        assert self.root is not None
        if initial and not (self.root / config_mod.CONFIG_NAME).exists():
            self.show(f"sigmaloop: no {config_mod.CONFIG_NAME} in {self.root}; "
                      "using defaults (run `sigmaloop init` to write one)")
        try:
            cfg = config_mod.load(self.root, protocol.overrides(self.settings))
        except (ConfigError, OSError) as exc:
            self.config_error = str(exc)
            self.show(f"sigmaloop: {exc}", types.MessageType.Error)
            return None
        self.config_error = None
        return cfg

    def reload_config(self) -> None:
        if self.root is None:
            return
        cfg = self.load_config()
        engine = self.engine
        if engine is not None and cfg is not None:
            for note in engine.reconfigure(cfg) or ():  # what it kept out (script, tag), and why
                self.show(f"sigmaloop: {note}", types.MessageType.Warning)
        self.script.invalidate()
        self.sync.changed(config=True)

    async def on_settings(self, params: types.DidChangeConfigurationParams) -> None:
        settings = plain(params.settings)
        if isinstance(settings, dict) and isinstance(settings.get("sigmaloop"), dict):
            self.settings = settings["sigmaloop"]
        else:
            await self._fetch_settings()
        self.reload_config()

    # --- the engine, for handlers ---------------------------------------------------------
    def engine_or_fail(self, runs_trials: bool = False) -> Engine:
        if self.engine is None:
            raise RequestFailed(message=self.problem or "sigmaloop is not ready yet")
        if runs_trials and self.config_error:
            raise RequestFailed(message=f"fix the configuration first: {self.config_error}")
        return self.engine

    def record(self, e: Any, **extra: Any) -> dict[str, Any]:
        """An experiment as the wire's record, with its effect (``Engine.effect``)."""
        engine = self.engine
        effect = None
        if engine is not None:
            try:
                effect = engine.effect(e)
            except Exception:
                log.exception("effect of #%s failed", getattr(e, "id", "?"))
        return protocol.experiment(e, effect, **extra)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)

    # --- background work ------------------------------------------------------------------
    def spawn(self, coro) -> asyncio.Future:
        """A task on the loop that is kept until it is done."""
        fut = asyncio.ensure_future(coro)
        self._tasks.add(fut)
        fut.add_done_callback(self._tasks.discard)
        return fut

    def in_background(self, name: str, fn: Callable[[], Any]) -> None:
        """Blocking engine work (trials, loops) on its own thread; a failure is shown."""
        loop = asyncio.get_running_loop()

        def work() -> None:
            try:
                fn()
            except Exception as exc:
                if self.closed:
                    return
                log.warning("%s failed: %s", name, exc)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(
                        self.show, f"sigmaloop: {name} failed: {exc}", types.MessageType.Error)

        t = threading.Thread(target=work, name=f"sigmaloop-{name}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    # --- shutdown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the loop, queued work and every trial this server started; release all. Idempotent."""
        with self._close_lock:
            if self.closed:
                return
            self.closed = True
        self.sync.stop()
        engine = self.engine
        if engine is None:
            return
        try:
            engine.stop_all()
        except Exception:
            log.exception("engine.stop_all failed")
        engine.shutdown_trials()  # kills running trials' process groups, waits for them
        for t in list(self._threads):
            t.join(timeout=5)
        try:
            engine.close()
        except Exception:
            log.exception("engine.close failed")


def make_server() -> SigmaloopServer:
    from . import commands, features

    server = SigmaloopServer()

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: SigmaloopServer, params: types.InitializeParams) -> None:
        ls.on_initialize(params)

    @server.feature(types.INITIALIZED)
    async def on_initialized(ls: SigmaloopServer, params: types.InitializedParams) -> None:
        await ls.on_initialized()

    @server.feature(types.SHUTDOWN)
    async def on_shutdown(ls: SigmaloopServer, params: Any) -> None:
        await asyncio.to_thread(ls.close)

    @server.feature(types.EXIT)
    def on_exit(ls: SigmaloopServer, params: Any) -> None:
        ls.close()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_settings(ls: SigmaloopServer, params: types.DidChangeConfigurationParams) -> None:
        await ls.on_settings(params)

    features.register(server)
    commands.register(server)
    return server
