"""The sigmaloop language server: a thin adapter from LSP to :class:`Engine`.

Handlers translate; the engine decides; :mod:`.render` shapes. Long work (trials, loops,
baselines, proposers) runs in threads; engine events arrive on worker threads and are handed
to the asyncio loop with ``call_soon_threadsafe``. Nothing here imports torch.

Protocol surface: docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from .. import __version__
from .. import config as config_mod
from ..anomaly import Anomaly, detect
from ..config import Config, ConfigError
from ..diff import parent_line
from ..events import ExperimentUpdated, LoopState, TrialProgress
from ..models import FINISHED, Experiment, ProgressRecord, Status
from . import render
from .watch import Watcher

log = logging.getLogger("sigmaloop.lsp")

COMMANDS = (
    "sigmaloop.runBaseline", "sigmaloop.propose", "sigmaloop.accept",
    "sigmaloop.reject", "sigmaloop.startLoop", "sigmaloop.stopLoop",
    "sigmaloop.showExperiment", "sigmaloop.adopt", "sigmaloop.stopExperiment",
    "sigmaloop.summary",
)
TRIAL_PROGRESS = "sigmaloop/trialProgress"
EXPERIMENT_UPDATED = "sigmaloop/experimentUpdated"
LOOP_STATE = "sigmaloop/loopState"
EXPERIMENTS = "sigmaloop/experiments"

PROGRESS_FLUSH = 0.1  # s: trialProgress at most 10 Hz
POLL_EVERY = 0.5  # s: journal max_rev fallback poll
REFRESH_DEBOUNCE = 0.05  # s: index rebuild + diagnostics after changes
SUMMARY_DEBOUNCE = 0.3  # s
RECENT_CRASHES = 10  # crash diagnostics for the newest N crashed experiments
RECENT_ANOMALIES = 20  # anomaly warnings for the newest N finished experiments
REQUEST_FAILED = -32803  # LSP RequestFailed


class RequestFailed(JsonRpcException):
    CODE = REQUEST_FAILED
    MESSAGE = "Request failed"


def _bad(message: str) -> JsonRpcInvalidParams:
    return JsonRpcInvalidParams(message=message)


# ----------------------------------------------------------------------------- arguments


def _args(args: tuple[Any, ...], names: tuple[str, ...]) -> list[Any]:
    """Positional arguments, or one object with those names (both shapes are accepted)."""
    args = tuple(_plain(a) for a in args)
    if len(args) == 1 and isinstance(args[0], dict):
        obj = args[0]
        return [obj.get(n) for n in names]
    out = list(args[: len(names)])
    return out + [None] * (len(names) - len(out))


def _exp_id(value: Any, command: str) -> int:
    if value is None:
        raise _bad(f"{command} needs an experiment id (arguments: [id])")
    if isinstance(value, bool):
        raise _bad(f"{command}: experiment id must be an integer, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("#").isdigit():
        return int(value.strip().lstrip("#"))
    raise _bad(f"{command}: experiment id must be an integer, not {value!r}")


def _slim(e: Experiment) -> render.Row:
    """What the index keeps of an experiment: a compact row."""
    return render.Row.of(e)


def _plain(value: Any) -> Any:
    """pygls hands unknown methods' params over as namedtuples: back to plain JSON values."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _opt_number(value: Any, name: str, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        raise _bad(f"{name} must be {'an integer' if integer else 'a number'}, not {value!r}")
    return int(value) if integer else float(value)


# ----------------------------------------------------------------------------- settings

SETTINGS_MAP = {  # workspace/configuration key (section "sigmaloop") → (toml section, key)
    "pythonPath": ("runner", "python"),
    "budget": ("experiment", "budget"),
    "slots": ("runner", "slots"),
    "proposer": ("proposer", "kind"),
    "llm.baseUrl": ("llm", "base_url"),
    "llm.model": ("llm", "model"),
}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out


def overlay_settings(data: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Editor settings over sigmaloop.toml's table (empty / null values leave it alone)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, value in _flatten(settings).items():
        if key not in SETTINGS_MAP or value is None or value == "":
            continue
        section, name = SETTINGS_MAP[key]
        data.setdefault(section, {})[name] = value
    return data


# ----------------------------------------------------------------------------- the adapter


class Adapter:
    """State of one server session: the engine, caches, and the glue to the client."""

    def __init__(self, server: LanguageServer) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self.workspace: Path | None = None
        self.engine = None
        self.problem: str | None = None  # why the engine is unavailable
        self.config_error: str | None = None
        self.settings: dict[str, Any] = {}
        self.script_path: Path | None = None
        self.script_uri: str | None = None
        self.metric = "val_bpb"
        # experiments with a diff (the index's input), journal cursor, dedupe of notifications
        self.exps: dict[int, Experiment] = {}
        self.rev = 0
        self.seen_rev: dict[int, int] = {}
        self.diffs: dict[int, tuple[str, render.DiffInfo]] = {}
        self.index: render.HistoryIndex | None = None
        self.index_dirty = True
        self.doc_cache: tuple[int | None, render.DocLines] | None = None
        self.crash_text: dict[int, str | None] = {}
        self.anomalies: dict[int, list[Anomaly]] = {}
        self.published: list[types.Diagnostic] | None = None
        self.summary_title: str | None = None
        self.summary_task: asyncio.Task | None = None
        self.summary_dirty = True
        self.summary_handle: asyncio.TimerHandle | None = None
        self.refresh_handle: asyncio.TimerHandle | None = None
        self.pending_progress: dict[int, list[ProgressRecord]] = {}
        self.flush_handle: asyncio.TimerHandle | None = None
        self.progress_tokens: dict[int, str] = {}
        self.token_ids: dict[str, int] = {}
        self.progress_ready: dict[int, asyncio.Task] = {}
        self.background: set[asyncio.Future] = set()
        self.threads: list[threading.Thread] = []
        self.watcher: Watcher | None = None
        self.poll_task: asyncio.Task | None = None
        self.unsubscribe: Callable[[], None] | None = None
        self.closed = False
        self.close_lock = threading.Lock()
        self.ready = asyncio.Event()

    # --- messages -------------------------------------------------------------------------
    def show(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        self.server.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def notify(self, method: str, params: Any) -> None:
        if not self.closed:
            self.server.protocol.notify(method, params)

    def _caps(self) -> types.ClientCapabilities | None:
        try:
            return self.server.client_capabilities
        except Exception:
            return None

    def _supports(self, *path: str) -> bool:
        obj: Any = self._caps()
        for p in path:
            obj = getattr(obj, p, None)
            if obj is None:
                return False
        return bool(obj)

    # --- start-up -------------------------------------------------------------------------
    def initialize(self, params: types.InitializeParams) -> None:
        opts = params.initialization_options
        if isinstance(opts, dict):
            key = opts.get("apiKey")
            if isinstance(key, str) and key.strip():
                os.environ["OPENAI_API_KEY"] = key.strip()  # trials never see it (runner scrubs)
        root = None
        if params.workspace_folders:
            root = to_fs_path(params.workspace_folders[0].uri)
        elif params.root_uri:
            root = to_fs_path(params.root_uri)
        elif params.root_path:
            root = params.root_path
        self.workspace = Path(root).resolve() if root else None
        if self.workspace is not None:  # the script's name now, so early requests know it
            try:
                script = config_mod.load(self.workspace).experiment.train_script
            except Exception:
                script = config_mod.ExperimentConfig().train_script
            self.script_path = (self.workspace / script).resolve()
            self.script_uri = from_fs_path(str(self.script_path))

    async def initialized(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await self._initialized()
        finally:
            self.ready.set()

    async def _initialized(self) -> None:
        if self.workspace is None:
            self.problem = "sigmaloop: no workspace folder is open; open the folder of your train script"
            self.show(self.problem, types.MessageType.Error)
            return
        await self._fetch_settings()
        if not await self._migrate():
            return
        cfg = self._load_config(initial=True)
        await self._start_engine(cfg)

    async def _migrate(self) -> bool:
        """A workspace of the product's first name: migrate it before its config is read."""
        from ..migrate import MigrationError, migrate_workspace

        try:
            report = await asyncio.to_thread(migrate_workspace, self.workspace)
        except Exception as exc:
            self.problem = f"sigmaloop: {exc}" if isinstance(exc, MigrationError) else \
                f"sigmaloop: could not migrate the workspace from its old name: {exc}"
            self.show(self.problem, types.MessageType.Error)
            return False
        if report is not None:
            log.warning("%s", report.message())  # the whole list, in the server's log
            self.show(report.summary())
        return True

    async def _fetch_settings(self) -> None:
        if not self._supports("workspace", "configuration"):
            return
        try:
            got = await asyncio.wait_for(self.server.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="sigmaloop")])), 5)
            self.settings = got[0] if got and isinstance(got[0], dict) else {}
        except Exception as exc:
            log.warning("workspace/configuration failed: %s", exc)
            self.settings = {}

    def _load_config(self, initial: bool = False) -> Config | None:
        """sigmaloop.toml + editor settings; None (and a message naming the key) if broken."""
        assert self.workspace is not None
        import tomllib

        path = self.workspace / config_mod.CONFIG_NAME
        try:
            if path.exists():
                try:
                    data = tomllib.loads(path.read_text(encoding="utf-8"))
                except tomllib.TOMLDecodeError as exc:
                    raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file or delete it for defaults") from None
            else:
                data = {}
                if initial:
                    self.show(f"sigmaloop: no {config_mod.CONFIG_NAME} in {self.workspace}; "
                              "using defaults (run `sigmaloop init` to write one)")
            cfg = config_mod.from_dict(overlay_settings(data, self.settings), str(path))
        except (ConfigError, OSError) as exc:
            self.config_error = str(exc)
            self.show(f"sigmaloop: {exc}", types.MessageType.Error)
            return None
        self.config_error = None
        return cfg

    async def _start_engine(self, cfg: Config | None) -> None:
        from ..engine import Engine
        from ..ratchet import RatchetError

        try:
            engine = await asyncio.to_thread(Engine, self.workspace, cfg or Config())
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
        self._apply_config_names(engine.config)
        self.unsubscribe = engine.bus.subscribe(self._on_bus)
        rows = await asyncio.to_thread(self._initial_rows)
        self.rev = rows[0]
        for e in rows[1]:
            self.exps[e.id] = _slim(e)
            self.seen_rev[e.id] = e.rev
        self.index_dirty = True
        self.watcher = Watcher(self.loop, self.workspace, engine.config.experiment.train_script,
                               config_mod.CONFIG_NAME, engine.state_dir, self._on_watch)
        self.watcher.start()
        self.poll_task = asyncio.ensure_future(self._poll())
        self._schedule_summary(0)
        self._schedule_refresh(0)
        for e in self._recent_finished():
            self._analyse(e)
        for e in self._recent_crashes():
            self._fetch_crash_text(e)

    def _initial_rows(self) -> tuple[int, list[Experiment]]:
        j = self.engine.journal
        rev = j.max_rev()
        return rev, j.with_diff(dicts=False)

    def _apply_config_names(self, cfg: Config) -> None:
        self.metric = cfg.experiment.metric
        self.script_path = (self.workspace / cfg.experiment.train_script).resolve()
        self.script_uri = from_fs_path(str(self.script_path))

    def _engine(self, runs_trials: bool = False):
        if self.engine is None:
            raise RequestFailed(message=self.problem or "sigmaloop is not ready yet")
        if runs_trials and self.config_error:
            raise RequestFailed(message=f"fix sigmaloop.toml first: {self.config_error}")
        return self.engine

    # --- engine events (worker threads → loop) ------------------------------------------
    def _on_bus(self, event: Any) -> None:
        loop = self.loop
        if loop is None or self.closed:
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ExperimentUpdated):
            self.ingest([event.experiment])
        elif isinstance(event, TrialProgress):
            self.pending_progress.setdefault(event.exp_id, []).extend(event.records)
            if self.flush_handle is None:
                self.flush_handle = self.loop.call_later(PROGRESS_FLUSH, self._flush_progress)
        elif isinstance(event, LoopState):
            self.notify(LOOP_STATE, {"running": event.running, "iteration": event.iteration,
                                     "iterations": event.iterations, "message": event.message})

    def _flush_progress(self) -> None:
        self.flush_handle = None
        pending, self.pending_progress = self.pending_progress, {}
        for exp_id, records in pending.items():
            if not records:
                continue
            self.notify(TRIAL_PROGRESS, {"expId": exp_id,
                                         "records": [render.progress_json(r) for r in records]})
            self._report_progress(exp_id, records[-1])

    def ingest(self, exps: list[Experiment]) -> None:
        """New or changed experiments (own events or another process's journal writes)."""
        changed = False
        crashed = False
        for e in exps:
            if e.rev <= self.seen_rev.get(e.id, -1):
                continue
            self.seen_rev[e.id] = e.rev
            self.notify(EXPERIMENT_UPDATED, render.exp_json(e))
            old = self.exps.get(e.id)
            if e.diff and not e.is_baseline and e.confirms is None:
                row = _slim(e)
                self.exps[e.id] = row
                if old is None or old.status != e.status or old.delta != e.delta:
                    changed = True
                    if self.index is not None and not self.index_dirty:
                        self.index.update(row)  # in place: no rebuild of thousands of entries
            if e.status == Status.RUNNING and e.owner_pid == os.getpid():
                self._begin_progress(e)
            elif e.status != Status.RUNNING and e.id in self.progress_tokens:
                self._end_progress(e)
            if e.status in FINISHED or e.status == Status.INTERRUPTED:
                self.summary_dirty = True
                if e.status == Status.CRASHED and e.crash is not None:
                    crashed = True
                    self._fetch_crash_text(e)
                elif e.status in FINISHED:
                    self._analyse(e)
        if changed:
            self._schedule_refresh(0 if crashed else REFRESH_DEBOUNCE)
        if self.summary_dirty:
            self._schedule_summary(SUMMARY_DEBOUNCE)

    # --- watching -------------------------------------------------------------------------
    def _on_watch(self, kind: str) -> None:
        if kind == "journal":
            self.poll_journal()
        elif kind == "config":
            self.reload_config()
        elif kind == "script" and self.script_uri and self._open_doc() is None:
            self.doc_cache = None
            self.index_dirty = True
            self._schedule_refresh(REFRESH_DEBOUNCE)

    async def _poll(self) -> None:
        while not self.closed:
            await asyncio.sleep(POLL_EVERY)
            try:
                self.poll_journal()
            except Exception:
                log.exception("journal poll failed")

    def poll_journal(self) -> None:
        if self.engine is None or self.closed:
            return
        j = self.engine.journal
        if j.max_rev() <= self.rev:
            return
        # The cursor moves only here: an own event with a later rev must not hide an earlier
        # write of another process that this poll has not read yet.
        rows = j.changed_since(self.rev)
        if rows:
            self.rev = max(self.rev, rows[-1].rev)
            self.ingest(rows)

    def reload_config(self) -> None:
        if self.workspace is None:
            return
        cfg = self._load_config()
        if cfg is None or self.engine is None:
            return
        old = self.engine.config.experiment
        if (cfg.experiment.train_script, cfg.experiment.tag) != (old.train_script, old.tag):
            self.show("sigmaloop: experiment.train_script / experiment.tag changed; "
                      "restart the language server to use them", types.MessageType.Warning)
            cfg.experiment.train_script, cfg.experiment.tag = old.train_script, old.tag
        self.engine.reconfigure(cfg)
        self.metric = cfg.experiment.metric
        self.index_dirty = True
        self.summary_dirty = True
        self._schedule_summary(0)
        self._schedule_refresh(REFRESH_DEBOUNCE)

    async def settings_changed(self, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        if isinstance(settings, dict) and isinstance(settings.get("sigmaloop"), dict):
            self.settings = settings["sigmaloop"]
        else:
            await self._fetch_settings()
        self.reload_config()

    # --- the document ---------------------------------------------------------------------
    def is_script(self, uri: str) -> bool:
        if self.script_path is None:
            return False
        if uri == self.script_uri:
            return True
        path = to_fs_path(uri)
        return path is not None and Path(path).resolve() == self.script_path

    def _open_doc(self):
        if self.script_uri is None:
            return None
        ws = self.server.workspace
        for uri, doc in ws.text_documents.items():
            if self.is_script(uri):
                return doc
        return None

    def doc_lines(self) -> render.DocLines:
        doc = self._open_doc()
        version = doc.version if doc is not None else None
        if doc is not None and self.doc_cache is not None and self.doc_cache[0] == version \
                and version is not None:
            return self.doc_cache[1]
        if doc is not None:
            text = doc.source
        else:
            try:
                text = self.script_path.read_text(encoding="utf-8") if self.script_path else ""
            except OSError:
                text = ""
            if self.doc_cache is not None and self.doc_cache[0] is None:
                return self.doc_cache[1]
        lines = render.DocLines(text)
        self.doc_cache = (version, lines)
        return lines

    def document_changed(self) -> None:
        self.doc_cache = None
        self.index_dirty = True
        self._schedule_refresh(REFRESH_DEBOUNCE)

    def get_index(self) -> render.HistoryIndex:
        doc = self.doc_lines()
        if self.index is None or self.index_dirty or self.index.doc is not doc:
            self.index = render.HistoryIndex.build(
                sorted(self.exps.values(), key=lambda e: e.id), doc, self.diffs, self.metric)
            self.index_dirty = False
        return self.index

    # --- refresh: diagnostics, inlay hints, code lens ------------------------------------
    def _schedule_refresh(self, delay: float) -> None:
        if self.loop is None or self.closed:
            return
        if self.refresh_handle is not None:
            if delay > 0:
                return
            self.refresh_handle.cancel()
        self.refresh_handle = self.loop.call_later(delay, self._refresh)

    def _refresh(self) -> None:
        self.refresh_handle = None
        if self.closed or self.engine is None:
            return
        self.publish_diagnostics()
        if self._supports("workspace", "inlay_hint", "refresh_support"):
            self.server.workspace_inlay_hint_refresh(None)

    def _recent_crashes(self) -> list[Experiment]:
        script = self.engine.config.experiment.train_script if self.engine else "train.py"
        crashed = [e for e in self.exps.values()
                   if e.status == Status.CRASHED and e.crash is not None
                   and Path(e.crash.file).as_posix() == Path(script).as_posix()]
        crashed.sort(key=lambda e: e.id, reverse=True)
        return crashed[:RECENT_CRASHES]

    def _recent_finished(self) -> list[Experiment]:
        done = [e for e in self.exps.values() if e.status in FINISHED and e.started_at]
        done.sort(key=lambda e: e.id, reverse=True)
        return done[:RECENT_ANOMALIES]

    def diagnostics(self) -> list[types.Diagnostic]:
        index = self.get_index()
        doc = index.doc
        out: list[types.Diagnostic] = []
        for e in self._recent_crashes():
            text = self.crash_text.get(e.id)
            if text is None:  # not fetched yet: place it through the diff, no git needed
                old_line, text = parent_line(e.diff, e.crash.line)
                moved = dataclasses.replace(
                    e, crash=dataclasses.replace(e.crash, line=old_line))
                out.append(render.crash_diagnostic(doc, moved, text))
            else:
                out.append(render.crash_diagnostic(doc, e, text))
        for e in self._recent_finished():
            found = self.anomalies.get(e.id)
            if not found:
                continue
            en = index.entries.get(e.id)
            if en is not None:
                out += render.anomaly_diagnostics(doc, en, found)
        for en in index.pending:
            out += render.proposal_diagnostics(doc, en)
        return out

    def publish_diagnostics(self) -> None:
        if self.script_uri is None:
            return
        diags = self.diagnostics()
        if diags == self.published:
            return
        self.published = diags
        doc = self._open_doc()
        uri = doc.uri if doc is not None else self.script_uri
        self.server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, diagnostics=diags, version=doc.version if doc is not None else None))

    def _spawn(self, coro) -> asyncio.Future:
        fut = asyncio.ensure_future(coro)
        self.background.add(fut)
        fut.add_done_callback(self.background.discard)
        return fut

    def _fetch_crash_text(self, e: Experiment) -> None:
        """The crash line's text in the experiment's own script (one git read), to anchor it."""
        if e.id in self.crash_text or self.engine is None:
            return

        async def fetch() -> None:
            try:
                source = await asyncio.to_thread(self.engine.experiment_source, e.id)
                lines = source.splitlines()
                text = lines[e.crash.line - 1] if 0 < e.crash.line <= len(lines) else None
            except Exception:
                text = None
            self.crash_text[e.id] = text
            self._schedule_refresh(0)

        self._spawn(fetch())

    def _analyse(self, e: Experiment) -> None:
        if e.id in self.anomalies or self.engine is None:
            return
        self.anomalies[e.id] = []

        async def run() -> None:
            try:
                curve = await asyncio.to_thread(self.engine.journal.curve, e.id, 2000)
                found = detect(curve)
            except Exception:
                log.exception("anomaly check of #%s failed", e.id)
                return
            if found:
                self.anomalies[e.id] = found
                self._schedule_refresh(REFRESH_DEBOUNCE)

        self._spawn(run())

    # --- summary / code lens --------------------------------------------------------------
    def _schedule_summary(self, delay: float) -> None:
        if self.loop is None or self.engine is None or self.closed:
            return
        if self.summary_handle is not None:
            return
        self.summary_handle = self.loop.call_later(delay, self._start_summary)

    def _start_summary(self) -> None:
        self.summary_handle = None
        if self.summary_task is not None and not self.summary_task.done():
            self._schedule_summary(SUMMARY_DEBOUNCE)  # again once this one is done
            return
        self.summary_dirty = False
        self.summary_task = self._spawn(self._compute_summary())

    async def _compute_summary(self) -> str:
        try:
            s = await asyncio.to_thread(self.engine.summary)
            title = render.lens_title(s.baseline, s.sigma, s.best, s.kept, s.run, s.running)
        except Exception as exc:
            log.warning("summary failed: %s", exc)
            title = f"sigmaloop: {exc}"
        changed = title != self.summary_title
        self.summary_title = title
        _trim()
        if changed and self._supports("workspace", "code_lens", "refresh_support"):
            self.server.workspace_code_lens_refresh(None)
        return title

    async def wait_ready(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)

    async def lens_title(self) -> str:
        await self.wait_ready()
        if self.engine is None:
            return self.problem or "sigmaloop: starting…"
        if self.summary_title is None:
            if self.summary_task is None:
                self._start_summary()
            try:
                return await asyncio.shield(self.summary_task)
            except Exception:
                return "sigmaloop"
        return self.summary_title

    # --- work-done progress ---------------------------------------------------------------
    def _begin_progress(self, e: Experiment) -> None:
        if e.id in self.progress_tokens or not self._supports("window", "work_done_progress"):
            return
        token = f"sigmaloop-exp-{e.id}-{e.attempts}"
        self.progress_tokens[e.id] = token
        self.token_ids[token] = e.id
        title = f"exp #{e.id}" + (f": {render._short(e.hypothesis, 60)}" if e.hypothesis else "")

        async def create() -> bool:
            try:
                await asyncio.wait_for(self.server.work_done_progress.create_async(token), 5)
            except Exception:
                return False
            self.server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=title, cancellable=True, percentage=0, message="starting"))
            return True

        self.progress_ready[e.id] = self._spawn(create())

    def _report_progress(self, exp_id: int, last: ProgressRecord) -> None:
        task = self.progress_ready.get(exp_id)
        if task is None or not task.done() or not task.result():
            return
        pct = int(max(0.0, min(1.0, last.frac)) * 100)
        loss = f"loss {last.loss:.4f}" if last.loss is not None and math.isfinite(last.loss) else \
            f"loss {last.loss}"
        self.server.work_done_progress.report(self.progress_tokens[exp_id], types.WorkDoneProgressReport(
            percentage=pct, message=f"{loss} · step {last.step}", cancellable=True))

    def _end_progress(self, e: Experiment) -> None:
        token = self.progress_tokens.pop(e.id, None)
        task = self.progress_ready.pop(e.id, None)
        if token is None or task is None:
            return
        self.token_ids.pop(token, None)
        message = e.verdict or e.status.value

        async def end() -> None:
            if await task:
                self.server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

        self._spawn(end())

    def progress_cancelled(self, token: str) -> None:
        exp_id = self.token_ids.get(str(token))
        if exp_id is not None and self.engine is not None:
            self.engine.stop_experiment(exp_id)

    # --- background work ------------------------------------------------------------------
    def in_background(self, name: str, fn: Callable[[], Any]) -> None:
        """Run blocking engine work on its own thread; failures become a showMessage."""

        def work() -> None:
            try:
                fn()
            except Exception as exc:
                if self.closed:
                    return
                log.warning("%s failed: %s", name, exc)
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(
                        self.show, f"sigmaloop: {name} failed: {exc}", types.MessageType.Error)

        t = threading.Thread(target=work, name=f"sigmaloop-{name}", daemon=True)
        self.threads = [x for x in self.threads if x.is_alive()]
        self.threads.append(t)
        t.start()

    # --- shutdown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every trial this server started and release everything. Idempotent."""
        with self.close_lock:
            if self.closed:
                return
            self.closed = True
        if self.watcher is not None:
            self.watcher.stop()
        if self.unsubscribe is not None:
            self.unsubscribe()
        engine = self.engine
        if engine is None:
            return
        try:
            engine.stop()
        except Exception:
            log.exception("engine.stop failed")
        engine.shutdown_trials()  # kills running trials' process groups, waits for them
        for t in list(self.threads):
            t.join(timeout=5)
        try:
            engine.close()
        except Exception:
            log.exception("engine.close failed")


# ----------------------------------------------------------------------------- the server


class SigmaloopServer(LanguageServer):
    def report_server_error(self, error: Exception, source: Any) -> None:
        log.error("server error (%s): %s", getattr(source, "__name__", source), error)


def make_server() -> tuple[SigmaloopServer, Adapter]:
    server = SigmaloopServer("sigmaloop", __version__,
                                text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
    ad = Adapter(server)

    @server.feature(types.INITIALIZE)
    def on_initialize(params: types.InitializeParams) -> None:
        ad.initialize(params)

    @server.feature(types.INITIALIZED)
    async def on_initialized(params: types.InitializedParams) -> None:
        await ad.initialized()

    @server.feature(types.SHUTDOWN)
    async def on_shutdown(params: Any) -> None:
        await asyncio.to_thread(ad.close)

    @server.feature(types.EXIT)
    def on_exit(params: Any) -> None:
        ad.close()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_settings(params: types.DidChangeConfigurationParams) -> None:
        await ad.settings_changed(params)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        if ad.is_script(params.text_document.uri):
            ad.published = None
            ad.document_changed()

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        if ad.is_script(params.text_document.uri):
            ad.document_changed()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        if ad.is_script(params.text_document.uri):
            ad.document_changed()

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        pass

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def on_cancel(params: types.WorkDoneProgressCancelParams) -> None:
        ad.progress_cancelled(params.token)

    # --- editor features ---
    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
    def inlay_hints(params: types.InlayHintParams) -> list[types.InlayHint] | None:
        if ad.engine is None or not ad.is_script(params.text_document.uri):
            return None
        return ad.get_index().inlay_hints(params.range.start.line, params.range.end.line)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(params: types.HoverParams) -> types.Hover | None:
        if ad.engine is None or not ad.is_script(params.text_document.uri):
            return None
        md = ad.get_index().hover_markdown(params.position.line)
        if md is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=md))

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix], resolve_provider=False))
    def code_actions(params: types.CodeActionParams) -> list[types.CodeAction] | None:
        if ad.engine is None or not ad.is_script(params.text_document.uri):
            return None
        index = ad.get_index()
        out: list[types.CodeAction] = []
        for en in index.pending_at(params.range.start.line, params.range.end.line):
            out += render.proposal_actions(en)
        return out

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    async def code_lens(params: types.CodeLensParams) -> list[types.CodeLens] | None:
        if not ad.is_script(params.text_document.uri):
            return None
        return render.code_lenses(await ad.lens_title())

    # --- custom request ---
    @server.feature(EXPERIMENTS)
    async def experiments(params: Any) -> dict[str, Any]:
        await ad.wait_ready()
        engine = ad._engine()
        params = _plain(params) if params is not None else {}
        if not isinstance(params, dict):
            raise _bad("params must be an object: {curves?, ids?, maxPoints?}")
        ids = params.get("ids")
        if ids is not None and (not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            raise _bad("ids must be a list of integers")
        curves = bool(params.get("curves"))
        max_points = _opt_number(params.get("maxPoints"), "maxPoints", integer=True) or 500
        if max_points < 1:
            raise _bad("maxPoints must be >= 1")

        def read() -> list[dict[str, Any]]:
            j = engine.journal
            if ids is None:
                rows = j.list()
            else:
                rows = [j.get(i) for i in ids if j.exists(i)]
            out = []
            for e in rows:
                rec = render.exp_json(e)
                if curves:
                    rec["curve"] = [render.progress_json(r) for r in j.curve(e.id, max_points)]
                out.append(rec)
            return out

        return {"experiments": await asyncio.to_thread(read)}

    # --- commands ---
    def command(name: str):
        def register(fn):
            async def handler(*args: Any) -> Any:
                await ad.wait_ready()
                try:
                    return await fn(*args)
                except JsonRpcException:
                    raise
                except Exception as exc:
                    raise _translate(exc) from exc

            server.command(name)(handler)
            return fn

        return register

    async def get_exp(exp_id: int) -> Experiment:
        engine = ad._engine()
        return await asyncio.to_thread(engine.journal.get, exp_id)

    @command("sigmaloop.runBaseline")
    async def run_baseline(*args: Any) -> dict[str, Any]:
        engine = ad._engine(runs_trials=True)
        (budget,) = _args(args, ("budget",))
        budget = _opt_number(budget, "budget")
        ad.in_background("baseline", lambda: engine.run_baseline(budget=budget))
        return {"started": "baseline", "seeds": list(engine.config.judge.seeds)}

    @command("sigmaloop.propose")
    async def propose(*args: Any) -> dict[str, Any]:
        engine = ad._engine(runs_trials=True)
        (kind,) = _args(args, ("kind",))
        if kind is not None and kind not in ("tune", "llm"):
            raise _bad(f'kind must be "tune" or "llm", not {kind!r}')
        exp = await asyncio.to_thread(engine.propose, kind)
        return render.exp_json(exp)

    @command("sigmaloop.accept")
    async def accept(*args: Any) -> dict[str, Any]:
        engine = ad._engine(runs_trials=True)
        exp_id = _exp_id(_args(args, ("id",))[0], "sigmaloop.accept")
        exp = await asyncio.to_thread(engine.accept, exp_id)
        ad.in_background(f"experiment #{exp_id}", lambda: engine.run(exp_id))
        return render.exp_json(exp)

    @command("sigmaloop.reject")
    async def reject(*args: Any) -> dict[str, Any]:
        engine = ad._engine()
        raw_id, reason = _args(args, ("id", "reason"))
        exp_id = _exp_id(raw_id, "sigmaloop.reject")
        if reason is not None and not isinstance(reason, str):
            raise _bad(f"reason must be a string, not {reason!r}")
        exp = await asyncio.to_thread(engine.reject, exp_id, reason)
        return render.exp_json(exp)

    @command("sigmaloop.startLoop")
    async def start_loop(*args: Any) -> dict[str, Any]:
        engine = ad._engine(runs_trials=True)
        iterations, budget, kind = _args(args, ("iterations", "budget", "proposer"))
        iterations = _opt_number(iterations, "iterations", integer=True) or 10
        if iterations < 1:
            raise _bad("iterations must be >= 1")
        budget = _opt_number(budget, "budget")
        if engine.loop_running:
            raise RequestFailed(message="a loop is already running; stop it first")
        ad.in_background("loop", lambda: engine.loop(iterations, budget, kind))
        return {"started": "loop", "iterations": iterations}

    @command("sigmaloop.stopLoop")
    async def stop_loop(*args: Any) -> dict[str, Any]:
        engine = ad._engine()
        running = [e.id for e in await asyncio.to_thread(engine.journal.running)
                   if e.owner_pid == os.getpid()]
        await asyncio.to_thread(engine.stop)
        return {"stopped": running}

    @command("sigmaloop.stopExperiment")
    async def stop_experiment(*args: Any) -> dict[str, Any]:
        engine = ad._engine()
        exp_id = _exp_id(_args(args, ("id",))[0], "sigmaloop.stopExperiment")
        await get_exp(exp_id)  # unknown id → error
        return {"id": exp_id, "stopped": engine.stop_experiment(exp_id)}

    @command("sigmaloop.showExperiment")
    async def show_experiment(*args: Any) -> dict[str, Any]:
        engine = ad._engine()
        exp_id = _exp_id(_args(args, ("id",))[0], "sigmaloop.showExperiment")
        exp = await get_exp(exp_id)

        def sources() -> tuple[str | None, str | None]:
            if not exp.parent_commit:
                return None, None
            before = engine.ratchet.read_script(exp.parent_commit)
            try:
                after = engine.experiment_source(exp_id)
            except Exception:
                after = None
            return before, after

        before, after = await asyncio.to_thread(sources)
        rec = render.exp_json(exp)
        rec.update(scriptName=engine.config.experiment.train_script,
                   parentText=before, proposedText=after)
        return rec

    @command("sigmaloop.adopt")
    async def adopt(*args: Any) -> dict[str, Any]:
        engine = ad._engine()
        exp_id = _exp_id(_args(args, ("id",))[0], "sigmaloop.adopt")
        exp = await get_exp(exp_id)
        if exp.status != Status.KEPT or exp.is_baseline:
            raise RequestFailed(message=f"experiment #{exp_id} is {exp.status.value}; "
                                "only kept experiments can be adopted")
        doc = ad._open_doc()
        if doc is None:  # not open in the editor: the engine writes the file (refuses over edits)
            path = await asyncio.to_thread(engine.adopt, exp_id)
            return {"id": exp_id, "applied": True, "via": "file", "path": str(path)}
        text = await asyncio.to_thread(engine.experiment_source, exp_id)
        current = doc.source
        if current == text:
            return {"id": exp_id, "applied": True, "via": "none", "unchanged": True}
        try:
            on_disk = ad.script_path.read_text(encoding="utf-8")
        except OSError:
            on_disk = None
        if on_disk is not None and current != on_disk:
            raise RequestFailed(message=f"{engine.config.experiment.train_script} has unsaved "
                                f"changes; save or revert them, then adopt #{exp_id} again")
        if await asyncio.to_thread(engine.ratchet.dirty_script):
            raise RequestFailed(message=f"{engine.config.experiment.train_script} has uncommitted "
                                f"changes; commit or stash them, then adopt #{exp_id} again")
        lines = current.splitlines(keepends=True)
        end = types.Position(line=len(lines), character=0)
        edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
            edits=[types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=end),
                                  new_text=text)])])
        result = await ad.server.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
            edit=edit, label=f"Adopt experiment #{exp_id}"))
        applied = bool(getattr(result, "applied", False))
        out: dict[str, Any] = {"id": exp_id, "applied": applied, "via": "workspaceEdit"}
        if not applied and getattr(result, "failure_reason", None):
            out["failureReason"] = result.failure_reason
        return out

    @command("sigmaloop.summary")
    async def summary(*args: Any) -> dict[str, Any]:
        engine = ad._engine()
        s = await asyncio.to_thread(engine.summary)
        return {
            "baseline": s.baseline, "sigma": s.sigma, "sigmaDof": s.sigma_dof,
            "best": render.exp_json(s.best) if s.best else None, "kept": s.kept, "run": s.run,
            "running": s.running, "counts": s.counts,
            "title": render.lens_title(s.baseline, s.sigma, s.best, s.kept, s.run, s.running),
            "configError": ad.config_error,
            "calibration": _camel(s.calibration.as_dict()) if s.calibration else None,
        }

    return server, ad


def _camel(d: dict[str, Any]) -> dict[str, Any]:
    """snake_case keys → camelCase, as everything on the wire."""
    return {k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]): v for k, v in d.items()}


def _trim() -> None:
    """Give freed heap back to the OS after big transient reads (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def _translate(exc: Exception) -> JsonRpcException:
    from ..engine import EngineError
    from ..journal import UnknownExperiment
    from ..ratchet import RatchetError

    if isinstance(exc, UnknownExperiment):
        return JsonRpcInvalidParams(message=str(exc))
    if isinstance(exc, (EngineError, RatchetError, ConfigError)):
        return RequestFailed(message=str(exc))
    log.exception("command failed")
    return RequestFailed(message=f"{type(exc).__name__}: {exc}")
