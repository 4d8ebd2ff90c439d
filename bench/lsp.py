"""Language-server bench: editor request latency on a 10k-experiment journal while a trial
streams 200 progress lines/s, server RSS, and crash → diagnostic latency. Prints ONE JSON line.

    .venv/bin/python bench/lsp.py [--experiments 10000] [--requests 300] [--no-trim]

The server runs with SIGMALOOP_MALLOC_TRIM=1 (it gives freed heap back to the OS after each
state computation, so RSS is the steady state, not glibc's high-water mark); ``--no-trim``
measures without it.

A real client (pygls) talks to ``python -m sigmaloop.lsp`` over stdio on a real git workspace.
Goals: p99 <= 20 ms per request kind, RSS <= 100 MB, crash → diagnostic <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from sigmaloop.diff import unified_diff
from sigmaloop.journal import Journal
from sigmaloop.models import CrashLocation, Status

CONSTANTS = ["LR", "WD", "DEPTH", "WIDTH", "HEADS", "WARMUP", "DROPOUT", "BATCH", "BETA1", "BETA2",
             "CLIP", "EMB_LR"]

SCRIPT = textwrap.dedent('''\
    """Bench trainer: streams ~200 metrics lines/s for the budget, or crashes at once."""
    import json
    import os
    import time

    LR = 0.04
    WD = 0.1
    DEPTH = 8
    WIDTH = 512
    HEADS = 8
    WARMUP = 100
    DROPOUT = 0.0
    BATCH = 32
    BETA1 = 0.9
    BETA2 = 0.95
    CLIP = 1.0
    EMB_LR = 0.2
    MODE = "stream"
    EXIT_FILE = {exit_file!r}


    def main():
        budget = float(os.environ.get("SIGMALOOP_TIME_BUDGET", "1"))
        metrics = os.environ.get("SIGMALOOP_METRICS")
        if MODE == "crash":
            with open(EXIT_FILE, "w") as f:
                f.write(repr(time.time()))
            raise RuntimeError("CUDA out of memory")
        t0 = time.time()
        step = 0
        with open(metrics, "a") as f:
            while time.time() - t0 < budget:
                step += 1
                t = time.time() - t0
                f.write(json.dumps({{"step": step, "t": t, "frac": t / budget,
                                    "loss": 3.0 / (1 + 0.01 * step)}}) + "\\n")
                f.flush()
                time.sleep(0.005)
        print("---")
        print("val_bpb:          1.000000")


    main()
''')


def git(cwd: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_workspace(root: Path, n: int) -> tuple[Path, str, str]:
    ws = root / "ws"
    ws.mkdir()
    exit_file = str(root / "exit_time")
    script = SCRIPT.format(exit_file=exit_file)
    (ws / "train.py").write_text(script)
    (ws / "sigmaloop.toml").write_text(textwrap.dedent("""\
        [experiment]
        budget = 30
        grace = 5
        tag = "bench"

        [runner]
        sandbox = "off"  # the stream trial writes its exit time outside its worktree, for the bench
        """))
    (ws / ".gitignore").write_text(".sigmaloop/\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "start")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout.strip()
    rng = random.Random(0)
    j = Journal(ws / ".sigmaloop" / "journal.db")
    lines = script.splitlines(keepends=True)
    statuses = [Status.DISCARDED] * 70 + [Status.KEPT] * 10 + [Status.CRASHED] * 8 + \
        [Status.REJECTED] * 10 + [Status.TIMEOUT] * 2
    for i in range(n):
        name = rng.choice(CONSTANTS)
        k = next(x for x, line in enumerate(lines) if line.startswith(f"{name} = "))
        old_value = lines[k].split("=", 1)[1].strip()
        new_value = f"{float(old_value) * rng.uniform(0.5, 2.0):.4g}"
        new = "".join([*lines[:k], f"{name} = {new_value}\n", *lines[k + 1:]])
        status = Status.PROPOSED if i >= n - 3 else rng.choice(statuses)
        fields = dict(status=status, source=rng.choice(["tune", "llm:gpt-4o-mini"]),
                      hypothesis=f"{name} {old_value}→{new_value} should lower val_bpb",
                      diff=unified_diff(script, new), parent_commit=head, seed=42)
        if status in (Status.KEPT, Status.DISCARDED):
            delta = rng.gauss(0, 0.01)
            fields.update(metric=1.0 + delta, delta=delta, sigma=0.003, z=-delta / 0.0042,
                          verdict="bench", started_at=time.time(), finished_at=time.time())
        if status == Status.CRASHED:
            fields.update(crash=CrashLocation("train.py", 30, "RuntimeError: CUDA out of memory"),
                          started_at=time.time())
        j.create(**fields)
    j.close()
    return ws, script, exit_file


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))], 2)


async def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--no-trim", action="store_true", help="run the server without SIGMALOOP_MALLOC_TRIM")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="rl-lsp-bench-")
    root = Path(tmp.name)
    t0 = time.time()
    ws, script, exit_file = make_workspace(root, args.experiments)
    setup_s = time.time() - t0
    uri = (ws / "train.py").as_uri()

    client = LanguageClient("bench", "1")
    diag_events: list[tuple[float, list[types.Diagnostic]]] = []
    progress_msgs = [0]
    updates: dict[int, dict] = {}

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diags(params: types.PublishDiagnosticsParams):
        diag_events.append((time.time(), list(params.diagnostics)))

    @client.feature(types.WORKSPACE_CONFIGURATION)
    def on_config(params):
        return [{} for _ in params.items]

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def on_create(params):
        return None

    @client.feature(types.PROGRESS)
    def on_progress(params):
        pass

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def on_message(params):
        pass

    @client.feature("sigmaloop/trialProgress")
    def on_trial(params):
        progress_msgs[0] += 1

    @client.feature("sigmaloop/experimentUpdated")
    def on_update(params):
        rec = params._asdict() if hasattr(params, "_asdict") else params
        updates[rec["id"]] = rec

    states = [0]

    @client.feature("sigmaloop/state")
    def on_state(params):
        states[0] += 1

    env = dict(os.environ, SIGMALOOP_MALLOC_TRIM="0" if args.no_trim else "1")
    await client.start_io(sys.executable, "-m", "sigmaloop.lsp", env=env)
    pid = client._server.pid
    caps = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(configuration=True))
    t_init = time.perf_counter()
    await client.initialize_async(types.InitializeParams(
        capabilities=caps, root_uri=ws.as_uri(), process_id=os.getpid(),
        workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name="ws")]))
    client.initialized(types.InitializedParams())
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=script)))

    async def cmd(name: str, *a):
        return await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(a)))

    await cmd("sigmaloop.summary")  # waits until the server has started
    lens = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    startup_ms = (time.perf_counter() - t_init) * 1000

    # a streaming trial (a user edit of CLIP), run by the server
    j = Journal(ws / ".sigmaloop" / "journal.db")
    head = subprocess.run(["git", "rev-parse", "sigmaloop/bench"], cwd=ws, capture_output=True,
                          text=True).stdout.strip()
    stream_src = script.replace("CLIP = 1.0", "CLIP = 0.5")
    stream = j.create(status=Status.PROPOSED, source="user", hypothesis="stream",
                      diff=unified_diff(script, stream_src), parent_commit=head, seed=42)
    await asyncio.sleep(0.7)
    await cmd("sigmaloop.accept", stream.id)
    while progress_msgs[0] < 5:
        await asyncio.sleep(0.05)

    lines = script.splitlines()
    lr_line = next(i for i, line in enumerate(lines) if line.startswith("LR = "))
    doc = types.TextDocumentIdentifier(uri=uri)
    full = types.Range(start=types.Position(line=0, character=0),
                       end=types.Position(line=len(lines), character=0))
    kinds = {
        "inlayHint": lambda: client.text_document_inlay_hint_async(
            types.InlayHintParams(text_document=doc, range=full)),
        "codeAction": lambda: client.text_document_code_action_async(types.CodeActionParams(
            text_document=doc, range=types.Range(start=types.Position(line=lr_line, character=0),
                                                 end=types.Position(line=lr_line, character=1)),
            context=types.CodeActionContext(diagnostics=[]))),
        "hover": lambda: client.text_document_hover_async(types.HoverParams(
            text_document=doc, position=types.Position(line=lr_line, character=1))),
        "codeLens": lambda: client.text_document_code_lens_async(types.CodeLensParams(text_document=doc)),
    }
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    rss: list[float] = []
    hints = await kinds["inlayHint"]()
    for i in range(args.requests):
        for name, call in kinds.items():
            t = time.perf_counter()
            await call()
            lat[name].append((time.perf_counter() - t) * 1000)
        if i % 20 == 0:
            rss.append(_rss_mb(pid))
        await asyncio.sleep(0.002)
    progress_during = progress_msgs[0]
    await cmd("sigmaloop.stopExperiment", stream.id)
    while updates.get(stream.id, {}).get("status") == "running":
        await asyncio.sleep(0.05)

    # crash → diagnostic, three times
    crash_ms: list[float] = []
    crash_src = script.replace('MODE = "stream"', 'MODE = "crash"')
    for _ in range(3):
        exp = j.create(status=Status.PROPOSED, source="user", hypothesis="crash",
                       diff=unified_diff(script, crash_src), parent_commit=head, seed=42)
        while exp.id not in updates:
            await asyncio.sleep(0.02)
        if os.path.exists(exit_file):
            os.remove(exit_file)
        mark = len(diag_events)
        await cmd("sigmaloop.accept", exp.id)
        want = f"exp #{exp.id} crashed"
        got = None
        deadline = time.time() + 20
        while got is None and time.time() < deadline:
            for t, ds in diag_events[mark:]:
                if any(d.message.startswith(want) for d in ds):
                    got = t
                    break
            await asyncio.sleep(0.002)
        exited = float(Path(exit_file).read_text())
        crash_ms.append((got - exited) * 1000 if got else float("inf"))
    rss.append(_rss_mb(pid))
    j.close()
    await client.shutdown_async(None)
    client.exit(None)
    await asyncio.wait_for(client._server.wait(), 20)
    await client.stop()
    tmp.cleanup()
    return {
        "bench": "lsp",
        "experiments": args.experiments,
        "requests_per_kind": args.requests,
        **{f"{k}_p50_ms": pct(v, 0.5) for k, v in lat.items()},
        **{f"{k}_p99_ms": pct(v, 0.99) for k, v in lat.items()},
        "rss_mb": round(max(rss), 1),
        "crash_to_diagnostic_ms": [round(x, 1) for x in crash_ms],
        "crash_to_diagnostic_max_ms": round(max(crash_ms), 1),
        "trial_progress_notifications": progress_during,
        "state_notifications": states[0],
        "malloc_trim": not args.no_trim,
        "inlay_hints": len(hints or []),
        "lens": lens[0].command.title if lens else None,
        "startup_ms": round(startup_ms, 1),
        "setup_s": round(setup_s, 1),
        "goals_met": all(pct(v, 0.99) <= 20 for v in lat.values()) and max(rss) <= 100
        and max(crash_ms) <= 200,
    }


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), ensure_ascii=False))
