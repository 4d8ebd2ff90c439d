"""pytest-lsp fixtures: the real server process (``python -m sigmaloop.lsp``) on a real git
workspace with enginekit's fast, contract-true fake training script."""

from __future__ import annotations

import contextlib
import time

import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lspkit import SERVER, Recorder, _to_dict, make_ws


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, request, tmp_path):
    marker = request.node.get_closest_marker("workspace")
    kind = marker.args[0] if marker else "git"
    ws = make_ws(tmp_path, kind)
    rec = Recorder()
    lsp_client.rec = rec  # type: ignore[attr-defined]
    lsp_client.ws = ws  # type: ignore[attr-defined]
    lsp_client.script_uri = (ws / "train.py").as_uri()  # type: ignore[attr-defined]

    @lsp_client.feature("sigmaloop/experimentUpdated")
    def on_update(params):
        rec.updates.append((time.monotonic(), _to_dict(params)))

    @lsp_client.feature("sigmaloop/trialProgress")
    def on_progress(params):
        rec.progress.append((time.monotonic(), _to_dict(params)))

    @lsp_client.feature("sigmaloop/state")
    def on_state(params):
        rec.states.append(_to_dict(params))

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply(params: types.ApplyWorkspaceEditParams):
        rec.apply_edits.append(params)
        return types.ApplyWorkspaceEditResult(applied=rec.apply_result)

    @lsp_client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
    def on_message_request(params: types.ShowMessageRequestParams):
        rec.message_requests.append(params)
        return None if rec.message_answer is None else types.MessageActionItem(title=rec.message_answer)

    @lsp_client.feature(types.WORKSPACE_INLAY_HINT_REFRESH)
    def on_hint_refresh(params):
        return None

    @lsp_client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
    def on_lens_refresh(params):
        return None

    marked = request.node.get_closest_marker("settings")
    settings = marked.args[0] if marked else {"budget": 0.3}
    lsp_client.set_configuration(settings, section="sigmaloop")
    options = request.node.get_closest_marker("init_options")
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=ws.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")],
        initialization_options=options.args[0] if options else None,
    ))
    # wait until the server finished starting (commands wait for that), so nothing the test
    # writes to the journal happens before the server's first read of it
    with contextlib.suppress(JsonRpcException):
        await lsp_client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="sigmaloop.summary", arguments=[]))
    yield
    if lsp_client._server is not None and lsp_client._server.returncode is None:
        await lsp_client.shutdown_session()


def pytest_configure(config):
    config.addinivalue_line("markers", "workspace(kind): the workspace the server opens")
    config.addinivalue_line("markers", "init_options(dict): initializationOptions the client sends")
    config.addinivalue_line("markers", "settings(dict): the editor settings (default: a 0.3 s budget)")
