"""Commands (``workspace/executeCommand``) and the ``sigmaloop/experiments`` request.

Each handler gets its typed parameters (a dataclass of :mod:`.protocol`, converted by
:mod:`.params` from the positional arguments or one object; a bad argument is an
InvalidParams error that names it),
calls one engine operation (in a thread when it blocks) and returns a wire record. Errors:
an unknown id is InvalidParams, an engine refusal RequestFailed with the engine's message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from .. import secret
from ..config import ConfigError
from ..learned import learned
from . import params, protocol, render
from .protocol import (
    ApiKeyParams,
    AskParams,
    CloseQuestionParams,
    DismissAnomalyParams,
    ExperimentParams,
    ExperimentsParams,
    NoParams,
    ProposeParams,
    QuestionParams,
    RejectParams,
    RejectResultParams,
    ReportParams,
    RunBaselineParams,
    RunEditParams,
    StartLoopParams,
)
from .render import thin
from .server import RequestFailed

if TYPE_CHECKING:
    from .server import SigmaloopServer

log = logging.getLogger(__name__)

Handler = Callable[["SigmaloopServer", Any], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a handler for a command of :data:`protocol.COMMANDS` (its params class there)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


async def run(ls: SigmaloopServer, fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking engine call, off the event loop."""
    return await asyncio.to_thread(fn, *args)


@command("sigmaloop.runBaseline")
async def run_baseline(ls: SigmaloopServer, p: RunBaselineParams) -> dict[str, Any]:
    engine = ls.engine_or_fail(runs_trials=True)

    def baseline() -> None:
        runs = engine.run_baseline(budget=p.budget)
        ls.say_done(render.baseline_done(runs, engine.state(), engine.config.experiment.metric))

    ls.in_background("baseline", baseline)
    return {"started": "baseline", "seeds": list(engine.config.judge.seeds)}


async def confirm_endpoint(ls: SigmaloopServer, kind: str | None) -> None:
    """Before an LLM proposal: if the project's base URL would get the key only with the user's
    trust, ask (a committed sigmaloop.toml or .vscode/settings.json chose it, not the user)."""
    engine = ls.engine_or_fail()
    cfg = engine.config
    kinds = {kind or cfg.proposer.kind}
    if "mixed" in kinds:
        kinds = set(cfg.proposer.mix)
    if "llm" not in kinds:
        return
    try:
        secret.key_for(cfg.llm.base_url or None)
        return
    except secret.EndpointRefused as exc:
        if exc.host is None:
            return  # nothing the user can allow here: the proposer reports it
        host = exc.host
    answer = await ls.window_show_message_request_async(types.ShowMessageRequestParams(
        type=types.MessageType.Warning,
        message=(f"This project's llm.base_url sends requests to {host}, but your API key is for "
                 f"{secret.key_host()}. Send your key to {host}?"),
        actions=[types.MessageActionItem(title="Allow"), types.MessageActionItem(title="Don't send")],
    ))
    if answer is not None and answer.title == "Allow":
        secret.trust(host)


@command("sigmaloop.propose")
async def propose(ls: SigmaloopServer, p: ProposeParams) -> dict[str, Any]:
    engine = ls.engine_or_fail(runs_trials=True)
    await confirm_endpoint(ls, p.kind)
    return ls.record(await run(ls, engine.propose, p.kind))


@command("sigmaloop.accept")
async def accept(ls: SigmaloopServer, p: ExperimentParams) -> dict[str, Any]:
    engine = ls.engine_or_fail(runs_trials=True)
    exp = await run(ls, engine.accept, p.id)
    ls.in_background(f"experiment #{p.id}", lambda: engine.run(p.id))
    return ls.record(exp)


@command("sigmaloop.reject")
async def reject(ls: SigmaloopServer, p: RejectParams) -> dict[str, Any]:
    engine = ls.engine_or_fail()
    return ls.record(await run(ls, engine.reject, p.id, p.reason))


@command("sigmaloop.acceptResult")
async def accept_result(ls: SigmaloopServer, p: ExperimentParams) -> dict[str, Any]:
    """Keep an implausibly large gain after a look (the research branch advances)."""
    engine = ls.engine_or_fail()
    return ls.record(await run(ls, engine.review_result, p.id, True))


@command("sigmaloop.rejectResult")
async def reject_result(ls: SigmaloopServer, p: RejectResultParams) -> dict[str, Any]:
    """Refuse an implausibly large gain after a look: it stays discarded, for good."""
    engine = ls.engine_or_fail()
    return ls.record(await run(ls, engine.review_result, p.id, False, p.reason or ""))


@command("sigmaloop.startLoop")
async def start_loop(ls: SigmaloopServer, p: StartLoopParams) -> dict[str, Any]:
    engine = ls.engine_or_fail(runs_trials=True)
    if p.iterations < 1:
        raise JsonRpcInvalidParams(message="sigmaloop.startLoop: iterations must be >= 1")
    if engine.loop_running:
        raise RequestFailed(message="a loop is already running; stop it first")
    await confirm_endpoint(ls, p.proposer)

    def loop() -> None:
        done = engine.loop(p.iterations, p.budget, p.proposer)
        st = engine.state()
        ls.say_done(render.loop_done(done, p.iterations, engine.stopping, st, engine.effect,
                                     engine.config.experiment.metric),
                    details=["what the loop learned:", *learned(done, st)], what="loop")

    ls.in_background("loop", loop)
    return {"started": "loop", "iterations": p.iterations}


@command("sigmaloop.stopLoop")
async def stop_loop(ls: SigmaloopServer, p: NoParams) -> dict[str, Any]:
    engine = ls.engine_or_fail()
    return {"stopped": await run(ls, engine.stop_all)}


@command("sigmaloop.stopExperiment")
async def stop_experiment(ls: SigmaloopServer, p: ExperimentParams) -> dict[str, Any]:
    engine = ls.engine_or_fail()
    await run(ls, engine.get, p.id)  # an unknown id is an error
    return {"id": p.id, "stopped": engine.stop_experiment(p.id)}


@command("sigmaloop.showExperiment")
async def show_experiment(ls: SigmaloopServer, p: ExperimentParams) -> dict[str, Any]:
    view = await run(ls, ls.engine_or_fail().view, p.id)
    return ls.record(view.experiment, script_name=view.script_name,
                     parent_text=view.parent_text, proposed_text=view.proposed_text)


@command("sigmaloop.adopt")
async def adopt(ls: SigmaloopServer, p: ExperimentParams) -> dict[str, Any]:
    """Open in the editor: a version-checked workspace edit the user saves (undoable); not
    open: the engine writes the file. Both refuse over unsaved or uncommitted edits."""
    engine = ls.engine_or_fail()
    doc = ls.script.open_doc()
    if doc is None:
        path = await run(ls, engine.adopt, p.id)
        return {"id": p.id, "applied": True, "via": "file", "path": str(path)}
    current = doc.source
    adoption = await run(ls, lambda: engine.adoption(p.id, current, ls.script.saved_text()))
    if adoption.unchanged:
        return {"id": p.id, "applied": True, "via": "none", "unchanged": True}
    end = types.Position(line=len(current.splitlines(keepends=True)), character=0)
    edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
        edits=[types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=end),
                              new_text=adoption.new_text)])])
    result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
        edit=edit, label=f"Adopt experiment #{p.id}"))
    out: dict[str, Any] = {"id": p.id, "applied": bool(getattr(result, "applied", False)),
                           "via": "workspaceEdit"}
    if not out["applied"] and getattr(result, "failure_reason", None):
        out["failureReason"] = result.failure_reason
    return out


# --------------------------------------------------------------------------- research questions


async def _question_state(ls: SigmaloopServer, qid: int) -> dict[str, Any]:
    view = await run(ls, ls.engine_or_fail().question, qid)
    return protocol.question_state(view.question, [e.id for e in view.experiments], view.verdict)


@command("sigmaloop.ask")
async def ask(ls: SigmaloopServer, p: AskParams) -> dict[str, Any]:
    """A new open research question (and the result that would change the next decision)."""
    q = await run(ls, ls.engine_or_fail().ask, p.text, p.decision or "")
    ls.sync.changed()
    return await _question_state(ls, q.id)


@command("sigmaloop.question")
async def question(ls: SigmaloopServer, p: QuestionParams) -> dict[str, Any]:
    """A question's page: the question, where it stands, and its experiments with their effects."""
    view = await run(ls, ls.engine_or_fail().question, p.id)
    return {"question": protocol.question_state(view.question, [e.id for e in view.experiments], view.verdict),
            "experiments": [ls.record(e) for e in view.experiments]}


@command("sigmaloop.closeQuestion")
async def close_question(ls: SigmaloopServer, p: CloseQuestionParams) -> dict[str, Any]:
    """Close a question with what was learned ("answered"), drop it, or reopen it ("open")."""
    q = await run(ls, ls.engine_or_fail().close_question, p.id, p.answer or "", p.status or "answered")
    ls.sync.changed()
    return await _question_state(ls, q.id)


# --------------------------------------------------------------------------- the researcher's edit


def _script_text(ls: SigmaloopServer) -> str:
    """The train script as the researcher has it: the open document (unsaved edits too), else the file."""
    doc = ls.script.open_doc()
    if doc is not None:
        return doc.source
    text = ls.script.saved_text()
    if text is None:
        raise RequestFailed(message=f"cannot read {ls.script.path}")
    return text


@command("sigmaloop.runEdit")
async def run_edit(ls: SigmaloopServer, p: RunEditParams) -> dict[str, Any]:
    """The open train script's text as an experiment (source "user"): recorded against the research
    head, queued, and run in the background; the record comes back at once."""
    engine = ls.engine_or_fail(runs_trials=True)
    text = _script_text(ls)
    exp = await run(ls, lambda: engine.run_edit(text, p.hypothesis or "", p.predicted_delta, p.question))
    ls.in_background(f"experiment #{exp.id}", lambda: engine.run_if_queued(exp.id))
    return ls.record(exp)


@command("sigmaloop.editStatus")
async def edit_status(ls: SigmaloopServer, p: NoParams) -> dict[str, Any]:
    """What Run My Edit would run: the open train script against the research head."""
    engine = ls.engine_or_fail()
    text = _script_text(ls)
    st = await run(ls, engine.edit_status, text)
    return {"differs": st.differs, "added": st.added, "removed": st.removed, "head": st.head,
            "summary": st.summary}


# --------------------------------------------------------------------------- anomalies, the report


@command("sigmaloop.dismissAnomaly")
async def dismiss_anomaly(ls: SigmaloopServer, p: DismissAnomalyParams) -> dict[str, Any]:
    """The researcher looked at an anomaly and says it is nothing: kept in the journal (it stays
    dismissed after a restart); its diagnostic goes at once; the panel shows it faded."""
    engine = ls.engine_or_fail()

    def dismiss() -> list[Any]:
        engine.dismiss_anomaly(p.id, p.kind, p.reason or "")
        return engine.anomalies(p.id)

    left = await run(ls, dismiss)
    ls.diagnostics.dismissed(p.id, left)
    return {"id": p.id, "kind": p.kind, "anomalies": [protocol.anomaly(a) for a in left]}


@command("sigmaloop.report")
async def report(ls: SigmaloopServer, p: ReportParams) -> dict[str, Any]:
    """The morning report: one self-contained page (no scripts, no network) written to the
    state folder; its path and its text (the editor shows the text in a panel)."""
    engine = ls.engine_or_fail()
    if p.since is not None and p.since < 0:
        raise JsonRpcInvalidParams(message="sigmaloop.report: since must be >= 0")

    def write() -> tuple[str, str]:
        path = engine.write_report(None, p.since)
        return str(path), path.read_text(encoding="utf-8")

    path, html = await run(ls, write)
    return {"path": path, "html": html}


@command("sigmaloop.summary")
async def summary(ls: SigmaloopServer, p: NoParams) -> dict[str, Any] | None:
    """The state, now (what ``sigmaloop/state`` sends when it changes)."""
    ls.engine_or_fail()
    return await ls.sync.fresh()


async def experiments(ls: SigmaloopServer, params: Any) -> dict[str, Any]:
    """``sigmaloop/experiments``: records (all, or those ids), optionally with their curves."""
    p = _params(ExperimentsParams, params, protocol.EXPERIMENTS)
    await ls.wait_ready()
    engine = ls.engine_or_fail()
    if p.max_points < 1:
        raise JsonRpcInvalidParams(message="sigmaloop/experiments: maxPoints must be >= 1")

    def read() -> list[dict[str, Any]]:
        from ..journal import UnknownExperiment

        if p.ids is None:
            rows = engine.experiments()
        else:
            rows = []
            for i in p.ids:
                try:
                    rows.append(engine.get(i))
                except UnknownExperiment:
                    continue
        if not p.curves:
            return [ls.record(e) for e in rows]
        out = []
        gone = engine.dismissed_anomalies() if any(e.finished for e in rows) else {}
        for e in rows:
            curve = engine.curve(e.id, p.max_points)
            # every anomaly, the dismissed ones marked (the panel shows them faded)
            found = engine.anomalies(e.id, dismissed=True) if e.finished else []
            reasons = gone.get(e.id, {})
            out.append(ls.record(e, curve=[protocol.progress(r) for r in thin(curve, p.max_points)],
                                 anomalies=[protocol.anomaly(a, reasons.get(a.kind)) for a in found]))
        return out

    try:
        return {"experiments": await asyncio.to_thread(read)}
    except JsonRpcException:
        raise
    except Exception as exc:
        raise _translate(exc) from exc


# ----------------------------------------------------------------------------- wiring


def _params(cls: type, arguments: Any, name: str) -> Any:
    try:
        return params.structure(cls, arguments, name)
    except params.ParamsError as exc:
        raise JsonRpcInvalidParams(message=str(exc)) from None


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


def _bind(name: str, fn: Handler) -> Callable[..., Awaitable[Any]]:
    params_cls = protocol.COMMANDS[name][0]

    async def handler(ls, *arguments: Any) -> Any:  # pygls passes the server as `ls`
        p = _params(params_cls, list(arguments), name)
        await ls.wait_ready()
        try:
            return await fn(ls, p)
        except JsonRpcException:
            raise
        except Exception as exc:
            raise _translate(exc) from exc

    handler.__name__ = fn.__name__
    return handler


def register(server: SigmaloopServer) -> None:
    assert set(HANDLERS) == set(protocol.COMMANDS), "every command of the schema has a handler"
    for name, fn in HANDLERS.items():
        server.command(name)(_bind(name, fn))
    server.feature(protocol.EXPERIMENTS)(experiments)
    server.feature(protocol.SET_API_KEY)(set_api_key)


async def set_api_key(ls: SigmaloopServer, params: Any) -> dict[str, Any]:
    """``sigmaloop/setApiKey``: the editor's key, held in memory (never an environment)."""
    p = _params(ApiKeyParams, params, protocol.SET_API_KEY)
    secret.set_key(p.key, p.host)
    return {"hasKey": secret.key() is not None, "host": secret.key_host()}
