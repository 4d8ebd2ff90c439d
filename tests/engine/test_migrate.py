"""A workspace of the old name (researchloop) is migrated once, on first use, losing nothing.

Every test builds the old layout for real: a git repository with a tracked researchloop.toml and
a `.researchloop/` line in .gitignore, a journal written by the Journal class at the old path with
the absolute log/metrics paths the old engine stored, the log and metrics files, experiment commits
under refs/researchloop/{exp,base}/<id>, the research branch researchloop/<tag>, a registered
experiment worktree left by a dead engine, and the user's copy of the old trainer, which reads
RESEARCHLOOP_* variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sigmaloop import migrate
from sigmaloop.engine import Engine
from sigmaloop.journal import Journal
from sigmaloop.migrate import MigrationError, legacy_env, migrate_workspace
from sigmaloop.models import CrashLocation, ProgressRecord, Status, TrialSpec

from enginekit import git

OLD = "researchloop"

OLD_TRAIN = textwrap.dedent('''\
    """The user's copy of the old trainer: reads the old variable names only."""
    import json
    import os
    import time

    LR = 0.1

    budget = float(os.environ.get("RESEARCHLOOP_TIME_BUDGET", "99"))
    seed = int(os.environ.get("RESEARCHLOOP_SEED", "-1"))
    metrics = os.environ.get("RESEARCHLOOP_METRICS")
    t0 = time.time()
    for step in range(2):
        time.sleep(min(budget, 5) / 4)
        if metrics:
            with open(metrics, "a") as f:
                rec = {"step": step, "t": time.time() - t0, "frac": (step + 1) / 2, "loss": 3.0 - step}
                f.write(json.dumps(rec) + "\\n")
    print("---")
    print(f"val_bpb:          {1.0 + (LR - 0.1) ** 2:.6f}")
    print(f"budget_seen:      {budget}")
    print(f"seed_seen:        {seed}")
    print(f"metrics_seen:     {1 if metrics else 0}")
    print(f"training_seconds: {time.time() - t0:.1f}")
''')

OLD_PREPARE = textwrap.dedent('''\
    import os
    DATA = os.environ.get("RESEARCHLOOP_DATA", "stdlib")
''')

OLD_CONFIG = textwrap.dedent('''\
    [experiment]
    train_script = "train.py"
    command = "python train.py"
    budget = 1
    grace = 5
    tag = "test"   # research branch: researchloop/<tag>

    [judge]
    seeds = [42, 43]
''')


@dataclass
class OldWorkspace:
    path: Path
    head: str  # the user's HEAD (never moved by the migration)
    branch: str  # where researchloop/test pointed
    exp: dict[int, str] = field(default_factory=dict)  # id -> commit of refs/researchloop/exp/<id>
    base: dict[int, str] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)  # id -> log text
    rel: str = ""  # the workspace inside its repository ("" at the root, else "sub/")

    @property
    def old_state(self) -> Path:
        return self.path / f".{OLD}"

    @property
    def new_state(self) -> Path:
        return self.path / ".sigmaloop"


def _commit_script(ws: Path, base: str, text: str, message: str, script: str = "train.py") -> str:
    """A commit on top of ``base`` changing train.py, built with plumbing (no checkout)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "train.py"
        src.write_text(text)
        blob = git(ws, "hash-object", "-w", str(src)).strip()
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run = dict(os.environ, **env, GIT_AUTHOR_NAME=OLD, GIT_AUTHOR_EMAIL=f"{OLD}@localhost",
                   GIT_COMMITTER_NAME=OLD, GIT_COMMITTER_EMAIL=f"{OLD}@localhost")

        def g(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=ws, env=run, check=True, capture_output=True,
                                  text=True).stdout.strip()

        g("read-tree", base)
        g("update-index", "--add", "--cacheinfo", f"100644,{blob},{script}")
        tree = g("write-tree")
        return g("commit-tree", tree, "-p", base, "-m", message)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def make_old_workspace(path: Path, optuna_study: bool = False, repo: Path | None = None) -> OldWorkspace:
    """The old layout at ``path``; its git repository is ``repo`` (a parent) or ``path`` itself."""
    root = repo or path
    path.mkdir(parents=True)
    rel = f"{path.relative_to(root).as_posix()}/" if repo else ""
    (path / "train.py").write_text(OLD_TRAIN)
    (path / "prepare.py").write_text(OLD_PREPARE)
    (path / f"{OLD}.toml").write_text(OLD_CONFIG)
    (path / ".gitignore").write_text(f".{OLD}/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")
    head = git(path, "rev-parse", "HEAD").strip()

    def commit(base: str, lr: str, message: str) -> str:
        text = OLD_TRAIN.replace("LR = 0.1", f"LR = {lr}")
        return _commit_script(root, base, text, message, f"{rel}train.py")

    c2 = commit(head, "0.09", "exp #2: LR 0.09")
    c3 = commit(c2, "0.2", "exp #3: LR 0.2")
    c4 = commit(c2, "0.08", "exp #4: LR 0.08")
    ws = OldWorkspace(path, head, branch=c2, exp={1: head, 2: c2, 3: c3, 4: c4},
                      base={1: head, 2: head, 3: c2, 4: c2}, rel=rel)
    for i in ws.exp:
        git(path, "update-ref", f"refs/{OLD}/exp/{i}", ws.exp[i])
        git(path, "update-ref", f"refs/{OLD}/base/{i}", ws.base[i])
    git(path, "update-ref", f"refs/heads/{OLD}/test", c2)

    # The journal, as the old engine left it: absolute paths into .researchloop/.
    state = ws.old_state
    (state / "logs").mkdir(parents=True)
    (state / "metrics").mkdir()
    rows = [
        dict(status=Status.KEPT, source="baseline", seed=42, metric=1.0, hypothesis="baseline (seed 42)"),
        dict(status=Status.KEPT, source="tune", seed=42, metric=0.9999, hypothesis="LR 0.09"),
        dict(status=Status.CRASHED, source="tune", seed=42, hypothesis="LR 0.2",
             crash=CrashLocation("train.py", 12, "RuntimeError: boom")),
        dict(status=Status.RUNNING, source="tune", seed=42, hypothesis="LR 0.08", attempts=1,
             owner_pid=_dead_pid()),  # its engine died mid-trial; the worktree is still there
    ]
    with Journal(state / "journal.db") as journal:
        for i, row in enumerate(rows, start=1):
            log_path, metrics_path = state / "logs" / f"{i}.log", state / "metrics" / f"{i}.jsonl"
            ws.logs[i] = f"[{OLD}] exp {i}: python train.py\nval_bpb: 1.0\n"
            log_path.write_text(ws.logs[i])
            metrics_path.write_text(json.dumps({"step": 0, "t": 0.1, "frac": 0.5, "loss": 3.0}) + "\n")
            journal.create(parent_commit=ws.base[i], commit=ws.exp[i], log_path=str(log_path),
                           metrics_path=str(metrics_path), budget=1.0, **row)
        journal.add_progress(1, [ProgressRecord(1, s, 0.1 * s, s / 4, 3.0 - s / 10) for s in range(4)])
    git(path, "worktree", "add", "-q", "--detach", str(state / "worktrees" / "exp-4"), c4)
    if optuna_study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=f"sqlite:///{state / 'optuna.db'}", study_name=OLD)
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    return ws


@pytest.fixture
def old(tmp_path: Path) -> OldWorkspace:
    return make_old_workspace(tmp_path / "ws")


def refs(ws: Path, prefix: str) -> dict[str, str]:
    out = git(ws, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in out.splitlines())


def check_migrated(old: OldWorkspace, recovered: bool = False) -> None:
    """Everything the old workspace had is there under the new names; nothing old is left.

    ``recovered``: an engine opened it, so the dead engine's trial (#4) was recovered too: its
    attempt's files archived as ``.attempt1``, its worktree removed, the row re-queued."""
    ws = old.path
    assert not old.old_state.exists() and not (ws / f"{OLD}.toml").exists()
    assert (ws / "sigmaloop.toml").read_text() == OLD_CONFIG  # renamed, content untouched
    assert not (old.new_state / migrate.MARKER).exists()
    # every experiment ref resolves to the same commit under the new name; old names are gone
    assert refs(ws, f"refs/{OLD}") == {} and refs(ws, f"refs/heads/{OLD}") == {}
    for i in old.exp:
        assert git(ws, "rev-parse", f"refs/sigmaloop/exp/{i}").strip() == old.exp[i]
        assert git(ws, "rev-parse", f"refs/sigmaloop/base/{i}").strip() == old.base[i]
    assert git(ws, "rev-parse", "refs/heads/sigmaloop/test").strip() == old.branch
    # the user's branch did not move; the config rename is staged, not committed
    assert git(ws, "rev-parse", "HEAD").strip() == old.head
    status = git(ws, "status", "--porcelain").splitlines()
    assert f"R  {old.rel}{OLD}.toml -> {old.rel}sigmaloop.toml" in status, status
    assert (ws / ".gitignore").read_text() == ".sigmaloop/\n"
    # the journal's rows point at the moved files
    with Journal(old.new_state / "journal.db") as journal:
        assert [e.id for e in journal.list()] == [1, 2, 3, 4]
        for e in journal.list():
            assert Path(e.log_path).parent == old.new_state / "logs"
            attempt = ".attempt1" if recovered and e.id == 4 else ""
            assert Path(e.log_path + attempt).read_text() == old.logs[e.id]
            assert Path(e.metrics_path + attempt).is_file()
        assert journal.get(4).status == (Status.QUEUED if recovered else Status.RUNNING)
        assert len(journal.curve(1)) == 4
        assert journal.get(3).crash == CrashLocation("train.py", 12, "RuntimeError: boom")
    # the dead engine's worktree is registered at its new place, and is a working checkout
    # (until recovery removes it)
    wt = old.new_state / "worktrees" / "exp-4"
    listed = git(ws, "worktree", "list", "--porcelain")
    assert f".{OLD}" not in listed
    if recovered:
        assert not wt.exists() and f"worktree {wt}\n" not in listed
        return
    assert f"worktree {wt}\n" in listed
    assert git(wt, "rev-parse", "HEAD").strip() == old.exp[4]


def test_opening_an_engine_migrates_once_and_says_what_moved(tmp_path):
    old = make_old_workspace(tmp_path / "ws", optuna_study=True)
    eng = Engine(old.path)
    try:
        report = eng.migration
        assert report is not None and not report.resumed
        msg = report.message()
        print(msg)
        for line in (
            f"sigmaloop: migrated this workspace from its old name ({OLD}): {old.path}",
            f"  .{OLD}/ → .sigmaloop/ (journal.db, logs/ 4 items, metrics/ 4 items, optuna.db, worktrees/ 1 item)",
            "  journal: the log and metrics paths of 4 experiment(s) now point into .sigmaloop/",
            f"  tuner study {OLD} → sigmaloop (optuna.db)",
            "  1 experiment worktree(s) re-registered with git under .sigmaloop/worktrees/",
            f"  branch {OLD}/test → sigmaloop/test",
            f"  refs/{OLD}/* → refs/sigmaloop/* (8 refs: 4 base, 4 exp; same commits)",
            f"  .gitignore: .{OLD}/ → .sigmaloop/",
            f"  {OLD}.toml → sigmaloop.toml (staged with git mv)",
            f"  prepare.py, train.py read {OLD.upper()}_* variables: trials get those names as well as SIGMALOOP_*",
            f'To do: commit the rename (nothing was committed on your branch): git commit -m "Rename {OLD} to '
            f'sigmaloop" -- {OLD}.toml sigmaloop.toml .gitignore',
        ):
            assert line in msg.splitlines(), (line, msg)
        check_migrated(old, recovered=True)
        # the engine reads the migrated config and continues the research branch
        assert eng.config.experiment.tag == "test" and eng.config.experiment.budget == 1
        assert eng.head() == old.branch
        assert eng.get(2).log_path == str(old.new_state / "logs" / "2.log")
        assert Path(eng.get(2).log_path).exists()
        # recovery (when the engine opened) worked on the rewritten paths: the dead engine's
        # attempt is archived, the row re-queued
        assert [e.id for e in eng.recovered] == [4]
        assert (old.new_state / "logs" / "4.log.attempt1").read_text() == old.logs[4]
        assert not (old.new_state / "worktrees" / "exp-4").exists()
        rev = eng.journal.max_rev()
    finally:
        eng.close()

    import optuna

    study = optuna.load_study(study_name="sigmaloop", storage=f"sqlite:///{old.new_state / 'optuna.db'}")
    assert [t.value for t in study.trials] == [1.0]

    # a second open does nothing
    eng = Engine(old.path)
    try:
        assert eng.migration is None
        assert eng.journal.max_rev() == rev
        assert migrate_workspace(old.path) is None
    finally:
        eng.close()
    # the suggested commit does what it says, on the user's branch only
    git(old.path, "commit", "-qm", f"Rename {OLD} to sigmaloop", "--", f"{OLD}.toml", "sigmaloop.toml",
        ".gitignore")
    assert git(old.path, "status", "--porcelain") == ""
    assert git(old.path, "ls-files").split() == [".gitignore", "prepare.py", "sigmaloop.toml", "train.py"]


def test_cli_status_finds_and_migrates_an_old_workspace(old):
    cmd = [sys.executable, "-m", "sigmaloop.cli", "status"]
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(cmd, cwd=old.path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count(f"sigmaloop: migrated this workspace from its old name ({OLD})") == 1, r.stderr
    assert f"branch {OLD}/test → sigmaloop/test" in r.stderr
    assert f"{OLD}.toml → sigmaloop.toml (staged with git mv)" in r.stderr
    assert "git commit -m" in r.stderr
    assert "sigmaloop/test" in r.stdout
    check_migrated(old, recovered=True)  # `status` opened an engine
    # from a subfolder, the second time: found by its new name, nothing more to say
    sub = old.path / "notes"
    sub.mkdir()
    r = subprocess.run(cmd, cwd=sub, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "migrated" not in r.stderr and "sigmaloop/test" in r.stdout


def test_init_in_an_old_workspace_migrates_it_instead_of_adding_a_second_config(old):
    r = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "init"], cwd=old.path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "migrated this workspace" in r.stderr
    assert not (old.path / f"{OLD}.toml").exists() and (old.path / "sigmaloop.toml").exists()
    check_migrated(old)


def _interrupt_journal_midway(monkeypatch):
    real = Journal.update
    calls = []

    def update(self, exp_id, **fields):
        calls.append(exp_id)
        if len(calls) > 2:
            raise KeyboardInterrupt("power cut")
        return real(self, exp_id, **fields)

    monkeypatch.setattr(Journal, "update", update)


@pytest.mark.parametrize("step", ["_rewrite_journal", "journal midway", "_repair_worktrees",
                                  "_rename_branches", "_rename_refs", "_update_gitignore", "_rename_config"])
def test_an_interrupted_migration_finishes_on_the_next_open(old, monkeypatch, step):
    if step == "journal midway":
        _interrupt_journal_midway(monkeypatch)
    else:
        def cut(*args, **kwargs):
            raise KeyboardInterrupt("power cut")

        monkeypatch.setattr(migrate, step, cut)
    with pytest.raises(KeyboardInterrupt):
        migrate_workspace(old.path)
    monkeypatch.undo()
    assert (old.new_state / migrate.MARKER).exists()  # half-done, and it knows it
    assert not old.old_state.exists()

    eng = Engine(old.path)
    try:
        assert eng.migration is not None and eng.migration.resumed
        assert "finished migrating this workspace" in eng.migration.message()
        check_migrated(old, recovered=True)
        assert eng.migration.config == "staged"
        assert eng.migration.commit_paths == [f"{OLD}.toml", "sigmaloop.toml", ".gitignore"]
    finally:
        eng.close()
    assert migrate_workspace(old.path) is None


def test_both_configs_are_refused_and_nothing_moves(old):
    (old.path / "sigmaloop.toml").write_text("[experiment]\ntag = \"other\"\n")
    with pytest.raises(MigrationError) as err:
        Engine(old.path)
    msg = str(err.value)
    assert f"both {OLD}.toml (the old name) and sigmaloop.toml are in {old.path}" in msg
    assert f"git rm {OLD}.toml" in msg and "open the workspace again" in msg
    assert old.old_state.is_dir() and not old.new_state.exists()
    assert refs(old.path, f"refs/{OLD}/exp")[f"refs/{OLD}/exp/2"] == old.exp[2]
    assert (old.path / ".gitignore").read_text() == f".{OLD}/\n"
    # the CLI says the same, in one line, without a traceback
    r = subprocess.run([sys.executable, "-m", "sigmaloop.cli", "status"], cwd=old.path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and f"both {OLD}.toml" in r.stderr and "Traceback" not in r.stderr
    # following the advice, the next open migrates the rest
    git(old.path, "rm", "-q", f"{OLD}.toml")
    (old.path / "sigmaloop.toml").write_text(OLD_CONFIG)
    eng = Engine(old.path)
    try:
        assert eng.migration is not None and eng.migration.config is None
        assert eng.head() == old.branch
    finally:
        eng.close()


def test_a_new_state_folder_with_data_is_refused_an_empty_one_is_replaced(old, tmp_path):
    (old.new_state / "logs").mkdir(parents=True)
    (old.new_state / "logs" / "1.log").write_text("a newer run\n")
    with pytest.raises(MigrationError, match=r"mv \.sigmaloop \.sigmaloop\.bak"):
        migrate_workspace(old.path)
    assert old.old_state.is_dir() and (old.new_state / "logs" / "1.log").read_text() == "a newer run\n"
    assert (old.path / f"{OLD}.toml").exists()

    # what a new engine leaves before it has run anything: an empty journal, empty folders
    other = make_old_workspace(tmp_path / "other")
    Journal(other.new_state / "journal.db").close()
    (other.new_state / "logs").mkdir()
    report = migrate_workspace(other.path)
    assert report is not None and report.replaced_fresh_state
    assert "an empty .sigmaloop/ (no experiments) was removed to make way for it" in report.message()
    check_migrated(other)


def test_an_old_engine_still_running_here_is_refused(old):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", OLD])
    try:
        with Journal(old.old_state / "journal.db") as journal:
            journal.update(4, owner_pid=proc.pid)
        with pytest.raises(MigrationError, match=rf"#4 is still running under {OLD} \(process {proc.pid}\)"):
            migrate_workspace(old.path)
        assert old.old_state.is_dir() and not old.new_state.exists()
    finally:
        proc.kill()
        proc.wait()
    assert migrate_workspace(old.path) is not None
    check_migrated(old)


def test_a_trial_of_the_old_trainer_gets_the_old_variable_names(old):
    eng = Engine(old.path)
    try:
        (exp,) = eng.run_baseline(seeds=[42], budget=1.0)
        assert exp.metric is not None, (exp.status, exp.verdict, Path(exp.log_path).read_text())
        assert exp.summary["budget_seen"] == 1.0  # RESEARCHLOOP_TIME_BUDGET
        assert exp.summary["seed_seen"] == 42  # RESEARCHLOOP_SEED
        assert exp.summary["metrics_seen"] == 1  # RESEARCHLOOP_METRICS ...
        assert len(eng.journal.curve(exp.id)) == 2  # ... and the runner read the records written there
        assert Path(exp.log_path).parent == old.new_state / "logs"
    finally:
        eng.close()


def test_legacy_env_only_for_scripts_that_read_the_old_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGMALOOP_DATA", "/data/shards")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    spec = TrialSpec(exp_id=7, cwd=str(tmp_path), command=["python", "train.py"], budget=2.5, seed=3,
                     log_path=str(tmp_path / "7.log"), metrics_path=str(tmp_path / "7.jsonl"))
    (tmp_path / "train.py").write_text('import os\nB = os.environ["SIGMALOOP_TIME_BUDGET"]\n')
    assert legacy_env(spec) == {}
    (tmp_path / "prepare.py").write_text(OLD_PREPARE + 'K = os.environ.get("RESEARCHLOOP_OPENAI_KEY")\n')
    (tmp_path / "train.py").write_text(OLD_TRAIN)
    assert legacy_env(spec) == {
        f"{OLD.upper()}_TIME_BUDGET": "2.5",
        f"{OLD.upper()}_SEED": "3",
        f"{OLD.upper()}_METRICS": str(tmp_path / "7.jsonl"),
        f"{OLD.upper()}_DATA": "/data/shards",  # the user's own setting, under its new name
    }


def test_a_new_workspace_is_left_alone(workspace):
    before = sorted(p.name for p in workspace.iterdir())
    assert migrate_workspace(workspace) is None
    assert sorted(p.name for p in workspace.iterdir()) == before
    eng = Engine(workspace)
    try:
        assert eng.migration is None
    finally:
        eng.close()


# --- the language server: migrates before it reads the config, and says so -------------------

import pytest_lsp  # noqa: E402
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "sigmaloop.lsp"]))
async def lsp_old(lsp_client: LanguageClient, tmp_path):
    old = make_old_workspace(tmp_path / "ws")
    lsp_client.old = old  # type: ignore[attr-defined]

    @lsp_client.feature(types.WORKSPACE_INLAY_HINT_REFRESH)
    def on_hint_refresh(params):
        return None

    @lsp_client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
    def on_lens_refresh(params):
        return None

    uri = old.path.as_uri()
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=uri,
        workspace_folders=[types.WorkspaceFolder(uri=uri, name="ws")]))
    yield
    await lsp_client.shutdown_session()


async def test_the_language_server_migrates_and_shows_a_one_line_message(lsp_old: LanguageClient):
    old = lsp_old.old  # type: ignore[attr-defined]
    summary = await lsp_old.workspace_execute_command_async(
        types.ExecuteCommandParams(command="sigmaloop.summary", arguments=[]))
    assert summary["configError"] is None
    shown = [m.message for m in lsp_old.messages]
    assert [m for m in shown if m.startswith(f"sigmaloop: migrated this workspace from {OLD} (")], shown
    assert not [m for m in shown if "no sigmaloop.toml" in m], shown  # it read the migrated config
    migrated = next(m for m in shown if "migrated" in m)
    assert "\n" not in migrated and f"git commit -m \"Rename {OLD} to sigmaloop\"" in migrated
    check_migrated(old, recovered=True)  # the server opened an engine


def test_a_workspace_in_a_subfolder_of_its_repository(tmp_path):
    old = make_old_workspace(tmp_path / "repo" / "project", repo=tmp_path / "repo")
    eng = Engine(old.path)
    try:
        assert eng.migration is not None and eng.ratchet.workspace_rel == "project"
        check_migrated(old, recovered=True)
        assert eng.head() == old.branch
        assert eng.ratchet.read_script(eng.ratchet.experiment_commit(3)) == OLD_TRAIN.replace("LR = 0.1", "LR = 0.2")
    finally:
        eng.close()
    git(old.path, "commit", "-qm", "rename", "--", f"{OLD}.toml", "sigmaloop.toml", ".gitignore")
    assert git(old.path, "status", "--porcelain") == ""


def test_the_research_branch_checked_out_by_the_user_follows_the_rename(old):
    git(old.path, "checkout", "-q", f"{OLD}/test")
    old.head = old.branch
    report = migrate_workspace(old.path)
    assert report is not None and report.branches == [(f"{OLD}/test", "sigmaloop/test")]
    assert git(old.path, "symbolic-ref", "HEAD").strip() == "refs/heads/sigmaloop/test"
    check_migrated(old)


def test_a_ref_whose_new_name_holds_another_commit_is_kept_and_named(old):
    git(old.path, "update-ref", "refs/sigmaloop/exp/2", old.exp[3])
    report = migrate_workspace(old.path)
    assert report is not None and report.kept_refs == [f"refs/{OLD}/exp/2"]
    assert report.refs == {"base": 4, "exp": 3}
    assert (f"To do: refs/{OLD}/exp/2 was kept: refs/sigmaloop/exp/2 already names another commit; compare "
            f"them (git log -1 refs/{OLD}/exp/2 refs/sigmaloop/exp/2) and delete the one you don't need"
            ) in report.message().splitlines()
    assert refs(old.path, f"refs/{OLD}") == {f"refs/{OLD}/exp/2": old.exp[2]}  # neither commit lost
    assert git(old.path, "rev-parse", "refs/sigmaloop/exp/2").strip() == old.exp[3]
    assert git(old.path, "rev-parse", "refs/sigmaloop/exp/4").strip() == old.exp[4]
