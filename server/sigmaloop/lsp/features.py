"""Editor features on the train script: inlay hints (per-line history), hover, code actions on
pending proposals, on implausible gains and on crash / anomaly diagnostics (open the log; an
anomaly's curve in the panel, dismiss it), the
code lenses (the state's title, the noise advice and the buttons the state allows — Run My Edit
when the open file differs from the research head — at the top; flagged experiments over their
edit), and document sync.

Each handler translates LSP → the history index or the state and back; :mod:`.render` shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from . import render

if TYPE_CHECKING:
    from .server import SigmaloopServer


def did_open(ls: SigmaloopServer, params: types.DidOpenTextDocumentParams) -> None:
    if ls.script.is_script(params.text_document.uri):
        ls.diagnostics.published = None  # a newly opened document gets them again
        ls.diagnostics.crash_at.clear()
        ls.script.invalidate()
        ls.diagnostics.schedule()


def did_change(ls: SigmaloopServer, params: types.DidChangeTextDocumentParams) -> None:
    if ls.script.is_script(params.text_document.uri):
        ls.diagnostics.edited(params.content_changes)
        ls.script.invalidate()
        ls.diagnostics.schedule()


def did_close(ls: SigmaloopServer, params: types.DidCloseTextDocumentParams) -> None:
    if ls.script.is_script(params.text_document.uri):
        ls.diagnostics.crash_at.clear()
        ls.script.invalidate()
        ls.diagnostics.schedule()


def inlay_hints(ls: SigmaloopServer, params: types.InlayHintParams) -> list[types.InlayHint] | None:
    if ls.engine is None or not ls.script.is_script(params.text_document.uri):
        return None
    return ls.script.index().inlay_hints(params.range.start.line, params.range.end.line)


def hover(ls: SigmaloopServer, params: types.HoverParams) -> types.Hover | None:
    if ls.engine is None or not ls.script.is_script(params.text_document.uri):
        return None
    md = ls.script.index().hover_markdown(params.position.line, ls.sync.questions())
    if md is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=md))


def code_actions(ls: SigmaloopServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    if ls.engine is None or not ls.script.is_script(params.text_document.uri):
        return None
    out: list[types.CodeAction] = []
    index = ls.script.index()
    start, end = params.range.start.line, params.range.end.line
    questions = ls.sync.questions()
    for en in index.pending_at(start, end):
        out += render.proposal_actions(en, questions)
    for en in index.review_at(start, end):
        out += render.review_actions(en)
    published = ls.diagnostics.published or []
    out += render.log_actions(published, start, end)
    out += render.anomaly_actions(published, start, end)
    return out


async def code_lens(ls: SigmaloopServer, params: types.CodeLensParams) -> list[types.CodeLens] | None:
    if not ls.script.is_script(params.text_document.uri):
        return None
    await ls.wait_ready()
    if ls.engine is None:
        return render.code_lenses(ls.problem or "sigmaloop: starting…")
    title, state = ls.sync.lens_title, ls.sync.state
    if title is None:
        state = await ls.sync.current()
        title = render.lens_title(state) if state else "sigmaloop"
    return (render.code_lenses(title, render.lens_advice(state), state, ls.script.edit_status())
            + render.experiment_lenses(ls.script.index()))


def cancel(ls: SigmaloopServer, params: types.WorkDoneProgressCancelParams) -> None:
    ls.progress.cancelled(params.token)


def register(server: SigmaloopServer) -> None:
    feature = server.feature
    feature(types.TEXT_DOCUMENT_DID_OPEN)(did_open)
    feature(types.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    feature(types.TEXT_DOCUMENT_DID_CLOSE)(did_close)
    feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)(cancel)
    feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))(inlay_hints)
    feature(types.TEXT_DOCUMENT_HOVER)(hover)
    feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix], resolve_provider=False))(code_actions)
    feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))(code_lens)
