"""A workspace made under the product's first name (researchloop) becomes a sigmaloop one, once.

:func:`migrate_workspace` runs wherever a workspace is opened (the engine, the CLI's workspace
lookup, the language server) and does nothing (three ``stat`` calls) unless the old layout is
there. It moves:

* ``researchloop.toml`` → ``sigmaloop.toml`` (``git mv`` when tracked, so the rename is staged;
  nothing is committed on the user's branch - the message says how to commit it);
* ``.researchloop/`` → ``.sigmaloop/`` (journal, logs, metrics, worktrees, optuna.db: one
  rename), then the absolute paths the journal stored (log, metrics) are rewritten through the
  journal's own API, and the tuner's optuna study gets the new study name;
* the experiment worktrees' git registrations (``git worktree repair``, then ``prune``);
* branch ``researchloop/<tag>`` → ``sigmaloop/<tag>`` and every ``refs/researchloop/*`` →
  ``refs/sigmaloop/*`` (one atomic ``update-ref`` transaction; same commits);
* the ``.researchloop/`` line of ``.gitignore``.

It never overwrites: if both the old and the new config (or a non-empty new state folder) exist
it changes nothing and raises :class:`MigrationError` saying what to do. It is idempotent and
safe to interrupt: a marker file in the new state folder stays until every step is done, and
each step only does what is left, so the next open finishes the job.

Old trainer copies read ``RESEARCHLOOP_TIME_BUDGET`` and friends: :func:`legacy_env` gives a
trial those names too (same values) when the scripts in its folder read them.

This module (and its test) is the only place in the project that spells the old name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import CONFIG_NAME, STATE_DIR

if TYPE_CHECKING:
    from .models import TrialSpec

log = logging.getLogger(__name__)

OLD_NAME = "researchloop"
NEW_NAME = "sigmaloop"
OLD_CONFIG = f"{OLD_NAME}.toml"
OLD_STATE_DIR = f".{OLD_NAME}"
OLD_ENV_PREFIX = f"{OLD_NAME.upper()}_"
NEW_ENV_PREFIX = f"{NEW_NAME.upper()}_"
_OLD_BRANCHES = f"refs/heads/{OLD_NAME}/"
_NEW_BRANCHES = f"refs/heads/{NEW_NAME}/"
_OLD_REFS = f"refs/{OLD_NAME}/"
_NEW_REFS = f"refs/{NEW_NAME}/"
#: In the new state folder while a migration is under way; removed when it is complete.
MARKER = "MIGRATING"
#: Files an engine creates in a fresh state folder (a new state folder holding only these, and
#: a journal without experiments, is replaced by the old one instead of refusing).
_FRESH_FILES = ("journal.db", "journal.db-wal", "journal.db-shm")

_HOOKS_OFF = ("-c", "core.hooksPath=/dev/null")
_IDENTITY = {"GIT_AUTHOR_NAME": NEW_NAME, "GIT_AUTHOR_EMAIL": f"{NEW_NAME}@localhost",
             "GIT_COMMITTER_NAME": NEW_NAME, "GIT_COMMITTER_EMAIL": f"{NEW_NAME}@localhost"}


class MigrationError(RuntimeError):
    """The old workspace can't be migrated as it is; the message says what to do."""


@dataclass
class MigrationReport:
    """What one call of :func:`migrate_workspace` moved (only what it did itself)."""

    workspace: Path
    resumed: bool = False  # finished a migration an earlier, interrupted open started
    config: str | None = None  # "staged" (git mv), "renamed" (untracked), or "renamed: <why not staged>"
    state_dir: list[str] | None = None  # what .old/ held when it became .sigmaloop/
    replaced_fresh_state: bool = False  # an empty .sigmaloop/ (no experiments) made way for it
    journal_rows: int = 0  # experiments whose stored paths now point into .sigmaloop/
    optuna_study: bool = False  # the tuner's study renamed
    worktrees_repaired: int = 0
    worktrees_pruned: int = 0
    branches: list[tuple[str, str]] = field(default_factory=list)  # (old, new) branch names
    refs: dict[str, int] = field(default_factory=dict)  # kind (exp, base, ...) -> refs renamed
    kept_refs: list[str] = field(default_factory=list)  # old refs left: the new name holds another commit
    gitignore: bool = False
    legacy_scripts: list[str] = field(default_factory=list)  # workspace scripts reading the old variables
    commit_paths: list[str] = field(default_factory=list)  # what to commit (paths in the workspace)

    @property
    def moved(self) -> list[str]:
        """One line per thing that moved or changed."""
        out = []
        if self.state_dir is not None:
            held = f" ({', '.join(self.state_dir)})" if self.state_dir else ""
            out.append(f"{OLD_STATE_DIR}/ → {STATE_DIR}/{held}")
            if self.replaced_fresh_state:
                out.append(f"an empty {STATE_DIR}/ (no experiments) was removed to make way for it")
        if self.journal_rows:
            out.append(f"journal: the log and metrics paths of {self.journal_rows} experiment(s) "
                       f"now point into {STATE_DIR}/")
        if self.optuna_study:
            out.append(f"tuner study {OLD_NAME} → {NEW_NAME} (optuna.db)")
        if self.worktrees_repaired:
            out.append(f"{self.worktrees_repaired} experiment worktree(s) re-registered with git "
                       f"under {STATE_DIR}/worktrees/")
        if self.worktrees_pruned:
            out.append(f"{self.worktrees_pruned} stale worktree registration(s) pruned")
        for old, new in self.branches:
            out.append(f"branch {old} → {new}")
        if self.refs:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.refs.items()))
            out.append(f"{_OLD_REFS}* → {_NEW_REFS}* ({sum(self.refs.values())} refs: {kinds}; "
                       "same commits)")
        if self.gitignore:
            out.append(f".gitignore: {OLD_STATE_DIR}/ → {STATE_DIR}/")
        if self.config is not None:
            how = {"staged": "staged with git mv", "renamed": "not tracked by git"}.get(self.config, self.config)
            out.append(f"{OLD_CONFIG} → {CONFIG_NAME} ({how})")
        if self.legacy_scripts:
            out.append(f"{', '.join(self.legacy_scripts)} read{'s' if len(self.legacy_scripts) == 1 else ''} "
                       f"{OLD_ENV_PREFIX}* variables: trials get those names as well as {NEW_ENV_PREFIX}*")
        return out

    @property
    def todo(self) -> list[str]:
        """What the user should do next."""
        out = []
        if self.commit_paths:
            out.append("commit the rename (nothing was committed on your branch): "
                       f'git commit -m "Rename {OLD_NAME} to {NEW_NAME}" -- {" ".join(self.commit_paths)}')
        if self.config and self.config.startswith("renamed:"):
            out.append(f"stage the rename: git rm --cached -q {OLD_CONFIG} && git add {CONFIG_NAME}")
        for ref in self.kept_refs:
            new = _NEW_REFS + ref[len(_OLD_REFS):] if ref.startswith(_OLD_REFS) else \
                _NEW_BRANCHES + ref[len(_OLD_BRANCHES):]
            out.append(f"{ref} was kept: {new} already names another commit; compare them "
                       f"(git log -1 {ref} {new}) and delete the one you don't need")
        return out

    def message(self) -> str:
        """The multi-line message the CLI prints and the engine logs."""
        head = "finished migrating" if self.resumed else "migrated"
        lines = [f"{NEW_NAME}: {head} this workspace from its old name ({OLD_NAME}): {self.workspace}"]
        lines += [f"  {line}" for line in self.moved or ["(nothing was left to move)"]]
        lines += [f"To do: {line}" for line in self.todo]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line, for an editor notification."""
        parts = []
        if self.config:
            parts.append(f"{OLD_CONFIG} → {CONFIG_NAME}")
        if self.state_dir is not None:
            parts.append(f"{OLD_STATE_DIR}/ → {STATE_DIR}/")
        n = sum(self.refs.values()) + len(self.branches)
        if n:
            parts.append(f"{n} git ref(s) renamed")
        text = f"{NEW_NAME}: migrated this workspace from {OLD_NAME} ({', '.join(parts) or 'finished'})"
        if self.commit_paths:
            text += (f'; commit the staged rename: git commit -m "Rename {OLD_NAME} to {NEW_NAME}" '
                     f"-- {' '.join(self.commit_paths)}")
        return text

    def __str__(self) -> str:
        return self.message()


# --------------------------------------------------------------------------- detection


def has_config(folder: str | os.PathLike[str]) -> bool:
    """Whether a folder holds a workspace config, by the new name or the old one."""
    folder = Path(folder)
    return (folder / CONFIG_NAME).exists() or (folder / OLD_CONFIG).exists()


def needs_migration(workspace: str | os.PathLike[str]) -> bool:
    """Whether :func:`migrate_workspace` has anything to do (cheap: three stat calls)."""
    ws = Path(workspace)
    return ((ws / OLD_CONFIG).exists() or (ws / OLD_STATE_DIR).is_dir()
            or (ws / STATE_DIR / MARKER).exists())


# --------------------------------------------------------------------------- the migration


def migrate_workspace(workspace: str | os.PathLike[str]) -> MigrationReport | None:
    """Migrate a workspace of the old name; None when there is nothing to do.

    Raises :class:`MigrationError` (having changed nothing) when old and new files both exist
    or an engine of the old name is still running trials here.
    """
    ws = Path(workspace).resolve()
    if not needs_migration(ws):
        return None
    with _locked(ws):  # another process (CLI beside the editor) may be opening it too
        if not needs_migration(ws):
            return None
        return _migrate(ws)


def _migrate(ws: Path) -> MigrationReport:
    old_cfg, new_cfg = ws / OLD_CONFIG, ws / CONFIG_NAME
    old_state, new_state = ws / OLD_STATE_DIR, ws / STATE_DIR
    report = MigrationReport(ws, resumed=(new_state / MARKER).exists())

    # 1. Refuse, before touching anything, where moving would overwrite or pull the rug.
    if old_cfg.exists() and new_cfg.exists():
        raise MigrationError(
            f"both {OLD_CONFIG} (the old name) and {CONFIG_NAME} are in {ws}; {NEW_NAME} will not "
            f"overwrite either. Keep the settings you want in {CONFIG_NAME}, then remove {OLD_CONFIG} "
            f"(git rm {OLD_CONFIG}, or move it out of the folder) and open the workspace again")
    fresh = False
    if old_state.is_dir() and new_state.exists():
        fresh = _is_fresh(new_state)
        if not fresh:
            raise MigrationError(
                f"both {OLD_STATE_DIR}/ (the old name's journal, logs and worktrees) and {STATE_DIR}/ "
                f"are in {ws}, and {STATE_DIR}/ already has data; {NEW_NAME} will not merge or "
                f"overwrite them. To migrate the old history, move the new folder aside "
                f"(mv {STATE_DIR} {STATE_DIR}.bak) and open the workspace again; to keep only the new "
                f"one, move the old folder out of the workspace (mv {OLD_STATE_DIR} ../{OLD_NAME}-state). "
                "Nothing is deleted either way")
    if old_state.is_dir() and (old_state / "journal.db").exists():
        _refuse_if_running(old_state / "journal.db")

    # 2. The state folder: one rename carries the journal (with its WAL), logs, metrics,
    #    worktrees and optuna.db together. The marker travels with it.
    if old_state.is_dir():
        (old_state / MARKER).write_text(
            f"a migration from {OLD_NAME} is under way; opening the workspace finishes it\n", encoding="utf-8")
        if fresh:
            shutil.rmtree(new_state)
            report.replaced_fresh_state = True
        os.rename(old_state, new_state)
        report.state_dir = _contents(new_state)
    else:
        new_state.mkdir(exist_ok=True)
        if not (new_state / MARKER).exists():
            (new_state / MARKER).write_text(
                f"a migration from {OLD_NAME} is under way; opening the workspace finishes it\n", encoding="utf-8")

    # 3. Stored paths, the tuner's study.
    if (new_state / "journal.db").exists():
        report.journal_rows = _rewrite_journal(new_state / "journal.db", new_state)
    if (new_state / "optuna.db").exists():
        report.optuna_study = _rename_study(new_state / "optuna.db")

    # 4. git: worktrees, branches, refs.
    git = _Git.find(ws)
    if git is not None:
        report.worktrees_repaired, report.worktrees_pruned = _repair_worktrees(git, new_state)
        _rename_branches(git, report)
        _rename_refs(git, report)

    # 5. .gitignore, then the config (last: while it has the old name, the next open resumes).
    report.gitignore = _update_gitignore(ws / ".gitignore")
    if (git is not None and (report.gitignore or report.resumed) and git.tracked(ws, ".gitignore")
            and git("diff", "--quiet", "--", ".gitignore", cwd=ws, check=False).returncode == 1):
        report.commit_paths.append(".gitignore")  # changed now, or by the interrupted run
    if old_cfg.exists():
        report.config = _rename_config(git, ws)
        if report.config == "staged":
            report.commit_paths[:0] = [OLD_CONFIG, CONFIG_NAME]
    report.legacy_scripts = sorted(p.name for p in _scripts(ws) if legacy_names(_read(p)))

    (new_state / MARKER).unlink(missing_ok=True)
    log.info("%s", report.message())  # the adapters show it (CLI: stderr; editor: a message)
    return report


@contextlib.contextmanager
def _locked(ws: Path) -> Iterator[None]:
    """An exclusive lock on the workspace folder itself (no lock file left behind)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock, still idempotent
        yield
        return
    fd = os.open(ws, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _is_fresh(state: Path) -> bool:
    """A state folder an engine just created: only an empty journal and empty folders."""
    for path in state.rglob("*"):
        if path.is_dir():
            continue
        if path.parent != state or path.name not in _FRESH_FILES:
            return False
    if not (state / "journal.db").exists():
        return True
    from .journal import Journal

    with Journal(state / "journal.db") as journal:
        return len(journal) == 0 and journal.max_rev() == 0


def _refuse_if_running(db: Path) -> None:
    """An engine of the old name still running trials here would write into the moved folder."""
    from .journal import Journal
    from .runner import is_alive

    with Journal(db) as journal:
        running = journal.running()
    me = os.getpid()
    for exp in running:
        owner = exp.owner_pid
        if owner and owner != me and is_alive(owner) and _is_old_engine(owner):
            raise MigrationError(
                f"experiment #{exp.id} is still running under {OLD_NAME} (process {owner}); stop that "
                f"loop (or let it finish), then open the workspace again to migrate it to {NEW_NAME}")


def _is_old_engine(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # can't tell (not Linux): be safe
    return OLD_NAME.encode() in cmdline


def _contents(state: Path) -> list[str]:
    out = []
    for path in sorted(state.iterdir()):
        if path.name == MARKER or path.name.startswith("journal.db-"):
            continue
        if path.is_dir():
            n = sum(1 for _ in path.iterdir())
            out.append(f"{path.name}/ {n} item{'s' if n != 1 else ''}")
        else:
            out.append(path.name)
    return out


def _moved_path(value: str | None, new_state: Path) -> str | None:
    """A stored path inside the old state folder → the same file inside the new one (also when
    the workspace itself was moved since the path was stored)."""
    if not value:
        return value
    for sep in {os.sep, "/"}:
        seg = f"{sep}{OLD_STATE_DIR}{sep}"
        if seg in value:
            tail = value.rsplit(seg, 1)[1]
            return str(new_state.joinpath(*tail.split(sep)))
        if value.endswith(f"{sep}{OLD_STATE_DIR}"):
            return str(new_state)
        if value.startswith(f"{OLD_STATE_DIR}{sep}"):  # relative to the workspace
            return STATE_DIR + value[len(OLD_STATE_DIR):]
    return value


def _rewrite_journal(db: Path, new_state: Path) -> int:
    """Point stored log/metrics paths into the new state folder; each row is its own update
    (a new revision, so a watching editor refreshes), so an interruption loses nothing."""
    from .journal import Journal
    from .models import CrashLocation

    n = 0
    with Journal(db) as journal:
        for exp in journal.list():
            fields: dict[str, object] = {}
            for name in ("log_path", "metrics_path"):
                value = getattr(exp, name)
                moved = _moved_path(value, new_state)
                if moved != value:
                    fields[name] = moved
            if exp.crash is not None:
                moved = _moved_path(exp.crash.file, new_state)
                if moved != exp.crash.file:
                    fields["crash"] = CrashLocation(moved or "", exp.crash.line, exp.crash.message)
            if fields:
                journal.update(exp.id, **fields)
                n += 1
    return n


def _rename_study(db: Path) -> bool:
    """The tuner keeps its study under the product's name; give it the new one."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone()
        if not has_table:
            return False
        with conn:
            cur = conn.execute(
                "UPDATE studies SET study_name = ? WHERE study_name = ? AND NOT EXISTS "
                "(SELECT 1 FROM studies WHERE study_name = ?)", (NEW_NAME, OLD_NAME, NEW_NAME))
        return cur.rowcount > 0
    finally:
        conn.close()


# --------------------------------------------------------------------------- git


class _Git:
    """git in one repository, hooks off, an identity for reflog entries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**_IDENTITY, **os.environ} | {"GIT_TERMINAL_PROMPT": "0"}

    @classmethod
    def find(cls, ws: Path) -> _Git | None:
        try:
            r = subprocess.run(["git", *_HOOKS_OFF, "rev-parse", "--show-toplevel"], cwd=ws,
                               capture_output=True, text=True)
        except OSError:
            return None
        if r.returncode != 0 or not r.stdout.strip():
            return None
        return cls(Path(r.stdout.strip()))

    def __call__(self, *args: str, cwd: Path | None = None, input: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["git", *_HOOKS_OFF, *args], cwd=cwd or self.root, env=self.env,
                           input=input, capture_output=True, text=True)
        if check and r.returncode != 0:
            detail = (r.stderr or r.stdout).strip().splitlines()
            raise MigrationError(
                f"git {' '.join(args[:2])} failed in {self.root}: {detail[-1] if detail else r.returncode}; "
                "fix that and open the workspace again (the migration picks up where it stopped)")
        return r

    def refs(self, prefix: str) -> dict[str, str]:
        out = self("for-each-ref", "--format=%(refname) %(objectname)", prefix.rstrip("/")).stdout
        pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
        return {name: sha for name, sha in pairs if name.startswith(prefix)}

    def tracked(self, cwd: Path, path: str) -> bool:
        return self("ls-files", "--error-unmatch", "--", path, cwd=cwd, check=False).returncode == 0

    def worktrees(self) -> list[str]:
        out = self("worktree", "list", "--porcelain").stdout
        return [line[len("worktree "):] for line in out.splitlines() if line.startswith("worktree ")]


def _repair_worktrees(git: _Git, new_state: Path) -> tuple[int, int]:
    """The moved experiment checkouts: tell git where they are now, drop what is gone."""
    wt_dir = new_state / "worktrees"
    before = git.worktrees()
    dirs = sorted(d for d in wt_dir.iterdir() if (d / ".git").is_file()) if wt_dir.is_dir() else []
    registered = {os.path.realpath(p) for p in before}
    stale = [d for d in dirs if os.path.realpath(d) not in registered]
    if stale:
        git("worktree", "repair", *map(str, stale), check=False)
    git("worktree", "prune")
    after = git.worktrees()
    now = {os.path.realpath(p) for p in after}
    repaired = sum(1 for d in stale if os.path.realpath(d) in now)
    return repaired, max(0, len(before) - len(after))


def _rename_branches(git: _Git, report: MigrationReport) -> None:
    """``researchloop/<tag>`` → ``sigmaloop/<tag>``; ``git branch -m`` keeps the reflog and the
    branch's config, and moves HEAD along if the user has it checked out."""
    old = git.refs(_OLD_BRANCHES)
    if not old:
        return
    new = git.refs(_NEW_BRANCHES)
    for ref, sha in sorted(old.items()):
        short_old = ref[len("refs/heads/"):]
        target = _NEW_BRANCHES + ref[len(_OLD_BRANCHES):]
        short_new = target[len("refs/heads/"):]
        if target in new and new[target] != sha:
            report.kept_refs.append(ref)
            continue
        flag = "-M" if target in new else "-m"  # -M only when both name the same commit
        git("branch", flag, short_old, short_new)
        report.branches.append((short_old, short_new))


def _rename_refs(git: _Git, report: MigrationReport) -> None:
    """Every ``refs/researchloop/*`` → ``refs/sigmaloop/*`` in one atomic transaction."""
    old = git.refs(_OLD_REFS)
    if not old:
        return
    new = git.refs(_NEW_REFS)
    lines = []
    for ref, sha in sorted(old.items()):
        rest = ref[len(_OLD_REFS):]
        target = _NEW_REFS + rest
        if target in new and new[target] != sha:
            report.kept_refs.append(ref)
            continue
        if target not in new:
            lines.append(f"create {target} {sha}")
        lines.append(f"delete {ref} {sha}")
        kind = rest.split("/", 1)[0] if "/" in rest else "other"
        report.refs[kind] = report.refs.get(kind, 0) + 1
    if lines:
        git("update-ref", "--stdin", input="\n".join(lines) + "\n")


def _rename_config(git: _Git | None, ws: Path) -> str:
    if git is not None and git.tracked(ws, OLD_CONFIG):
        r = git("mv", "--", OLD_CONFIG, CONFIG_NAME, cwd=ws, check=False)
        if r.returncode == 0:
            return "staged"
        why = (r.stderr or r.stdout).strip().splitlines()
        os.rename(ws / OLD_CONFIG, ws / CONFIG_NAME)
        return f"renamed: git mv failed ({why[-1] if why else r.returncode}), so it is not staged"
    os.rename(ws / OLD_CONFIG, ws / CONFIG_NAME)
    return "renamed"


_IGNORE_LINE = re.compile(rf"(^|/)\.{OLD_NAME}(?=/|$)")


def _update_gitignore(path: Path) -> bool:
    """Rewrite ``.researchloop/`` patterns to ``.sigmaloop/`` (line endings and order kept)."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    changed = False
    for i, line in enumerate(lines):
        body = line.rstrip("\r\n")
        if body.lstrip().startswith("#"):
            continue
        new = _IGNORE_LINE.sub(rf"\1{STATE_DIR}", body.strip())
        if new != body.strip():
            lines[i] = body.replace(body.strip(), new) + line[len(body):]
            changed = True
    if changed:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(lines), encoding="utf-8", newline="")
        os.replace(tmp, path)
    return changed


# --------------------------------------------------------------------------- old trainer copies

_OLD_VAR = re.compile(rf"\b{OLD_ENV_PREFIX}[A-Z0-9_]+")
_MAX_SCRIPT_BYTES = 4 << 20


def legacy_names(script_text: str) -> set[str]:
    """The old-name environment variables a script mentions (``RESEARCHLOOP_SEED``, ...)."""
    return set(_OLD_VAR.findall(script_text)) if OLD_ENV_PREFIX in script_text else set()


def _scripts(folder: Path) -> Iterable[Path]:
    try:
        return sorted(p for p in folder.glob("*.py") if p.is_file())
    except OSError:
        return []


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_SCRIPT_BYTES:
            return ""
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def legacy_env(spec: TrialSpec, env_allow: Iterable[str] = ()) -> dict[str, str]:
    """Old-name copies of the trial's ``SIGMALOOP_*`` variables, for the ones the Python files
    in its folder (a user's copy of the old train.py / prepare.py) read; ``{}`` for a script of
    the new name. The values are exactly what :func:`environment.trial_env` gives the new names."""
    wanted: set[str] = set()
    for path in _scripts(Path(spec.cwd)):
        wanted |= legacy_names(_read(path))
    if not wanted:
        return {}
    from .environment import trial_env

    env: Mapping[str, str] = trial_env(spec, env_allow)
    out = {}
    for old in sorted(wanted):
        new = NEW_ENV_PREFIX + old[len(OLD_ENV_PREFIX):]
        if new in env:
            out[old] = env[new]
    return out
