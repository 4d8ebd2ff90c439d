"""The ratchet: experiment commits, worktrees and the research branch in the user's repository.

Every experiment is a commit whose only change is the train script. It lives in a detached
worktree under ``<workspace>/.sigmaloop/worktrees/exp-<id>`` while it runs, and is named
by ``refs/sigmaloop/exp/<id>`` forever after (discarded diffs are never lost). Kept
experiments fast-forward the research branch ``sigmaloop/<tag>``.

The user's current branch, index and working tree are never touched, except by
:meth:`Ratchet.adopt` (writes the train script, never commits) and
:meth:`Ratchet.ensure_ignored` (appends to ``.gitignore``).

Fixed ref names (other code relies on them):

* ``refs/heads/sigmaloop/<tag>``: the research branch.
* ``refs/sigmaloop/exp/<id>``: the commit experiment ``<id>`` ran.
* ``refs/sigmaloop/base/<id>``: the commit it was built on (its parent; for a baseline
  with no edit, the same commit).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from .config import STATE_DIR

AUTHOR_NAME = "sigmaloop"
AUTHOR_EMAIL = "sigmaloop@localhost"
BRANCH_PREFIX = "sigmaloop/"
EXP_REF_PREFIX = "refs/sigmaloop/exp/"
BASE_REF_PREFIX = "refs/sigmaloop/base/"
WORKTREES_DIR = "worktrees"

#: Identity for every git call that may write a commit or a reflog entry, so that a repo
#: without user.name / user.email configured still works.
_IDENTITY_ENV = {
    "GIT_AUTHOR_NAME": AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
}

#: git runs with hooks off: a hook planted in .git/hooks (by a trial, a cloned repo) never runs
#: on our commands, whatever the repository's config says.
_NO_HOOKS_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": os.devnull}


class RatchetError(RuntimeError):
    """A git-side problem, with a message saying what to do."""


class AdoptConflict(RatchetError):
    """The user's train script has uncommitted changes; adopting would overwrite them."""


class StaleExperiment(RatchetError):
    """The research branch moved on since the experiment was built; it cannot fast-forward."""

    def __init__(self, message: str, exp_id: int, head: str, parent: str) -> None:
        super().__init__(message)
        self.exp_id = exp_id
        self.head = head
        self.parent = parent


@dataclass
class Worktree:
    """A prepared experiment checkout."""

    path: Path  # the worktree root (a checkout of the whole repository)
    cwd: Path  # where the trial runs: the workspace folder inside the worktree
    commit: str  # the commit checked out (the experiment's commit)
    parent: str  # the commit it was built on (== commit for a baseline)

    @property
    def edited(self) -> bool:
        return self.commit != self.parent


# One lock per repository (its common git dir), shared by every Ratchet in this process.
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _repo_lock(key: str) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
        return lock


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "(none)"


def _git_error(err: GitCommandError) -> str:
    text = (err.stderr or "").strip() or str(err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


class Ratchet:
    """Experiment commits, worktrees and the research branch for one workspace."""

    def __init__(self, workspace: Path, tag: str, train_script: str = "train.py") -> None:
        self.workspace = Path(workspace).resolve()
        self.tag = tag
        self.train_script = train_script
        if not self.workspace.is_dir():
            raise RatchetError(f"workspace {self.workspace} is not a folder")
        try:
            repo = git.Repo(self.workspace, search_parent_directories=True)
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise RatchetError(
                f"{self.workspace} is not inside a git repository; run `git init` there "
                "(or `sigmaloop init`) and commit your train script first"
            ) from None
        if repo.working_tree_dir is None:
            raise RatchetError(f"{self.workspace} is inside a bare git repository; use a checkout")
        self.repo_root = Path(repo.working_tree_dir).resolve()
        try:
            rel = self.workspace.relative_to(self.repo_root)
        except ValueError:
            raise RatchetError(
                f"workspace {self.workspace} is not inside its repository {self.repo_root}"
            ) from None
        #: the workspace relative to the repo root ("" when it is the root)
        self.workspace_rel = rel.as_posix() if rel.parts else ""
        script = Path(train_script)
        if script.is_absolute() or ".." in script.parts:
            raise RatchetError(
                f"train_script must be a path inside the workspace, not {train_script!r}"
            )
        #: the train script relative to the repo root, posix style (as git names it)
        self.script_path = (rel / script).as_posix()
        self._git = git.Git(str(self.repo_root))
        try:
            common = self._git.rev_parse("--git-common-dir")
        except GitCommandError as err:
            raise RatchetError(f"git failed in {self.repo_root}: {_git_error(err)}") from None
        common_dir = Path(common)
        if not common_dir.is_absolute():
            common_dir = self.repo_root / common_dir
        self.git_common_dir = common_dir.resolve()
        self._lock = _repo_lock(str(self.git_common_dir))
        try:
            self._git.check_ref_format("--branch", self.branch_name)
        except GitCommandError:
            raise RatchetError(
                f"tag {tag!r} does not make a valid branch name ({self.branch_name}); "
                "pick a tag of letters, digits, '-', '_' or '.'"
            ) from None
        #: warning recorded by the last ensure_branch (uncommitted edits ignored), or None
        self.warning: str | None = None

    # ----------------------------------------------------------------- names and paths

    @property
    def branch_name(self) -> str:
        return f"{BRANCH_PREFIX}{self.tag}"

    @property
    def branch_ref(self) -> str:
        return f"refs/heads/{self.branch_name}"

    @staticmethod
    def exp_ref(exp_id: int) -> str:
        return f"{EXP_REF_PREFIX}{int(exp_id)}"

    @staticmethod
    def base_ref(exp_id: int) -> str:
        return f"{BASE_REF_PREFIX}{int(exp_id)}"

    @property
    def state_dir(self) -> Path:
        return self.workspace / STATE_DIR

    @property
    def worktrees_dir(self) -> Path:
        return self.state_dir / WORKTREES_DIR

    def worktree_path(self, exp_id: int) -> Path:
        return self.worktrees_dir / f"exp-{int(exp_id)}"

    @property
    def user_script(self) -> Path:
        """The train script in the user's working tree."""
        return self.workspace / self.train_script

    # ----------------------------------------------------------------- git helpers

    def _run(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        raw: bool = False,
    ) -> str | bytes:
        g = self._git if cwd is None else git.Git(str(cwd))
        full_env = dict(_IDENTITY_ENV, **_NO_HOOKS_ENV)
        if env:
            full_env.update(env)
        return g.execute(
            ["git", *args],
            env=full_env,
            stdout_as_string=not raw,
            strip_newline_in_stdout=not raw,
        )

    def _rev(self, rev: str) -> str | None:
        """The commit sha a revision names, or None."""
        try:
            out = self._run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except GitCommandError:
            return None
        return str(out).strip() or None

    def _blob_sha(self, commit: str) -> str | None:
        try:
            return str(
                self._run("rev-parse", "--verify", "--quiet", f"{commit}:{self.script_path}")
            )
        except GitCommandError:
            return None

    def blob_sha(self, commit: str, path: str) -> str | None:
        """The blob sha of a repository path at a commit (None: not there)."""
        try:
            return str(self._run("rev-parse", "--verify", "--quiet", f"{commit}:{path}")).strip() or None
        except GitCommandError:
            return None

    def read_file(self, commit: str, path: str) -> str:
        """A repository file's text at a commit."""
        try:
            data = self._run("cat-file", "blob", f"{commit}:{path}", raw=True)
        except GitCommandError:
            raise RatchetError(f"{path} is not committed at {_short(commit)}") from None
        assert isinstance(data, bytes)
        return data.decode("utf-8")

    def _blob_bytes(self, commit: str) -> bytes:
        try:
            data = self._run("cat-file", "blob", f"{commit}:{self.script_path}", raw=True)
        except GitCommandError:
            raise RatchetError(
                f"{self.train_script} is not committed at {_short(commit)} "
                f"(looked for {self.script_path})"
            ) from None
        assert isinstance(data, bytes)
        return data

    def _mode(self, commit: str) -> str:
        out = str(self._run("ls-tree", commit, "--", self.script_path))
        return out.split(None, 1)[0] if out else "100644"

    def _hash_file(self, path: Path) -> str | None:
        """The blob sha the file would get if added (attributes and filters applied)."""
        if not path.is_file():
            return None
        return str(self._run("hash-object", f"--path={self.script_path}", "--", str(path))).strip()

    def _user_head(self) -> str:
        sha = self._rev("HEAD")
        if sha is None:
            raise RatchetError(
                f"the repository at {self.repo_root} has no commits yet; commit "
                f"{self.train_script} first (git add {self.script_path} && "
                "git commit -m 'add train script')"
            )
        return sha

    # ----------------------------------------------------------------- research branch

    def dirty_script(self) -> bool:
        """Whether the user's train script differs from the version in their HEAD."""
        head = self._rev("HEAD")
        if head is None:
            return True
        committed = self._blob_sha(head)
        return committed is None or committed != self._hash_file(self.user_script)

    def ensure_branch(self) -> str:
        """Create ``sigmaloop/<tag>`` from the user's HEAD if missing; return its head sha.

        Never checks the branch out. If the user's train script has uncommitted edits, the
        branch still starts from HEAD and :attr:`warning` says so.
        """
        with self._lock:
            self.warning = None
            existing = self._rev(self.branch_ref)
            if existing is not None:
                if self._blob_sha(existing) is None:
                    raise RatchetError(
                        f"research branch {self.branch_name} has no {self.script_path}; "
                        "delete the branch or pick another tag"
                    )
                return existing
            head = self._user_head()
            if self._blob_sha(head) is None:
                raise RatchetError(
                    f"{self.script_path} is not committed (HEAD {_short(head)} lacks it); "
                    f"commit it first: git add {self.script_path} && "
                    "git commit -m 'add train script'"
                )
            try:
                # The empty old value makes this create-only (safe against a racing creator).
                self._run(
                    "update-ref",
                    "-m",
                    "sigmaloop: start research branch",
                    self.branch_ref,
                    head,
                    "",
                )
            except GitCommandError as err:
                current = self._rev(self.branch_ref)
                if current is None:
                    raise RatchetError(
                        f"could not create {self.branch_name}: {_git_error(err)}"
                    ) from None
                return current
            if self.dirty_script():
                self.warning = (
                    f"{self.train_script} has uncommitted changes; {self.branch_name} starts "
                    f"from the committed version (HEAD {_short(head)}). Commit your edits to "
                    "include them."
                )
            return head

    def head(self) -> str:
        """The research branch's head sha."""
        sha = self._rev(self.branch_ref)
        if sha is None:
            raise RatchetError(
                f"research branch {self.branch_name} does not exist yet; call ensure_branch()"
            )
        return sha

    def read_script(self, commit: str) -> str:
        """The train script's text at a commit."""
        return self._blob_bytes(commit).decode("utf-8")

    def rebase_script(self, base_commit: str, onto: str, edited: str) -> str | None:
        """``edited`` (the script at ``base_commit`` plus an edit) replayed onto ``onto``'s
        script by a three-way merge (``git merge-file``); None when the edit conflicts with
        what changed since (it no longer applies)."""
        base, theirs = self.read_script(base_commit), self.read_script(onto)
        with tempfile.TemporaryDirectory(prefix="sigmaloop-rebase-") as tmp:
            paths = []
            for name, text in (("head", theirs), ("base", base), ("edit", edited)):
                path = Path(tmp) / name
                path.write_bytes(text.encode("utf-8"))
                paths.append(str(path))
            try:
                merged = self._git.execute(["git", "merge-file", "-p", "--quiet", *paths],
                                           strip_newline_in_stdout=False)
            except GitCommandError:  # exit status = the number of conflicts (or an error)
                return None
        return merged if isinstance(merged, str) else None

    # ----------------------------------------------------------------- experiments

    def experiment_commit(self, exp_id: int) -> str | None:
        """The commit experiment ``exp_id`` ran, or None if it has none."""
        return self._rev(self.exp_ref(exp_id))

    def base_commit(self, exp_id: int) -> str | None:
        """The commit experiment ``exp_id`` was built on (== its commit for a baseline)."""
        base = self._rev(self.base_ref(exp_id))
        if base is not None:
            return base
        commit = self.experiment_commit(exp_id)
        if commit is None:
            return None
        # Fallback when only the exp ref exists: our own commits have exactly one parent.
        try:
            author = str(self._run("log", "-1", "--format=%ae", commit)).strip()
        except GitCommandError:
            return commit
        if author == AUTHOR_EMAIL:
            parent = self._rev(f"{commit}^")
            if parent is not None:
                return parent
        return commit

    def _make_commit(self, base: str, source: str, message: str) -> str:
        """A commit on top of ``base`` whose only change is the train script; no checkout."""
        tmpdir = Path(tempfile.mkdtemp(prefix="commit-", dir=self._tmp_dir()))
        try:
            src = tmpdir / "script"
            src.write_bytes(source.encode("utf-8"))
            blob = str(
                self._run("hash-object", "-w", f"--path={self.script_path}", "--", str(src))
            ).strip()
            index_env = {"GIT_INDEX_FILE": str(tmpdir / "index")}
            self._run("read-tree", base, env=index_env)
            self._run(
                "update-index",
                "--add",
                "--cacheinfo",
                f"{self._mode(base)},{blob},{self.script_path}",
                env=index_env,
            )
            tree = str(self._run("write-tree", env=index_env)).strip()
            return str(
                self._run("commit-tree", "--no-gpg-sign", tree, "-p", base, "-m", message)
            ).strip()
        except GitCommandError as err:
            raise RatchetError(f"could not commit the experiment: {_git_error(err)}") from None
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _tmp_dir(self) -> Path:
        path = self.state_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare_worktree(
        self, exp_id: int, base_commit: str, new_source: str | None, message: str
    ) -> Worktree:
        """Build experiment ``exp_id``'s commit on ``base_commit`` and check it out detached.

        ``new_source`` is the whole train script (None, or equal to the base's, for a
        baseline: the ref then points at ``base_commit`` itself).
        """
        base = self._rev(base_commit)
        if base is None:
            raise RatchetError(f"base commit {base_commit!r} does not exist in {self.repo_root}")
        old = self._blob_bytes(base)
        commit = base
        if new_source is not None and new_source.encode("utf-8") != old:
            commit = self._reuse(exp_id, base, new_source) or self._make_commit(
                base, new_source, message
            )
        path = self.worktree_path(exp_id)
        with self._lock:
            self._remove_worktree_locked(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._run("worktree", "add", "--detach", str(path), commit)
                self._run(
                    "update-ref", "-m", f"sigmaloop: exp #{exp_id}", self.exp_ref(exp_id), commit
                )
                self._run(
                    "update-ref",
                    "-m",
                    f"sigmaloop: exp #{exp_id} base",
                    self.base_ref(exp_id),
                    base,
                )
            except GitCommandError as err:
                raise RatchetError(
                    f"could not prepare the worktree for exp #{exp_id}: {_git_error(err)}"
                ) from None
        cwd = path / self.workspace_rel if self.workspace_rel else path
        return Worktree(path=path, cwd=cwd, commit=commit, parent=base)

    def _reuse(self, exp_id: int, base: str, new_source: str) -> str | None:
        """An existing commit for this experiment with the same base and source (a re-run)."""
        existing = self.experiment_commit(exp_id)
        if existing is None or existing == base or self.base_commit(exp_id) != base:
            return None
        try:
            same = self._blob_bytes(existing) == new_source.encode("utf-8")
        except RatchetError:
            return None
        return existing if same else None

    def diff(self, exp_id: int) -> str:
        """Unified diff of the train script, base -> experiment, paths relative to the workspace."""
        commit = self.experiment_commit(exp_id)
        if commit is None:
            raise RatchetError(f"exp #{exp_id} has no commit ({self.exp_ref(exp_id)} is missing)")
        base = self.base_commit(exp_id) or commit
        if base == commit:
            return ""
        args = [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--src-prefix=a/",
            "--dst-prefix=b/",
        ]
        if self.workspace_rel:
            args.append(f"--relative={self.workspace_rel}/")
        args += [base, commit, "--", self.script_path]
        out = self._run(*args, raw=True)
        assert isinstance(out, bytes)
        return out.decode("utf-8", errors="replace")

    def advance(self, exp_id: int) -> str:
        """Fast-forward the research branch to the experiment's commit; return the new head.

        Only allowed while the branch head is still the experiment's parent.
        """
        commit = self.experiment_commit(exp_id)
        if commit is None:
            raise RatchetError(f"exp #{exp_id} has no commit ({self.exp_ref(exp_id)} is missing)")
        parent = self.base_commit(exp_id) or commit
        with self._lock:
            head = self.head()
            if head == commit:
                return head  # already advanced
            if head != parent:
                raise StaleExperiment(
                    f"exp #{exp_id} was built on {_short(parent)} but {self.branch_name} has "
                    f"moved on to {_short(head)}; re-run it on the current head",
                    exp_id=exp_id,
                    head=head,
                    parent=parent,
                )
            self._check_not_checked_out()
            try:
                self._run(
                    "update-ref",
                    "-m",
                    f"sigmaloop: keep exp #{exp_id}",
                    self.branch_ref,
                    commit,
                    parent,
                )
            except GitCommandError as err:
                now = self._rev(self.branch_ref) or ""
                raise StaleExperiment(
                    f"could not advance {self.branch_name} to exp #{exp_id} "
                    f"({_git_error(err)}); its head is now {_short(now)}",
                    exp_id=exp_id,
                    head=now,
                    parent=parent,
                ) from None
            return commit

    def _check_not_checked_out(self) -> None:
        """Moving a branch that some working tree has checked out would desync that tree."""
        for entry in self._worktree_list():
            if entry.get("branch") == self.branch_ref:
                raise RatchetError(
                    f"{self.branch_name} is checked out in {entry.get('worktree')}; switch that "
                    "checkout to another branch so sigmaloop can advance it"
                )

    # ----------------------------------------------------------------- worktrees

    def _worktree_list(self) -> list[dict[str, str]]:
        out = str(self._run("worktree", "list", "--porcelain"))
        entries: list[dict[str, str]] = []
        for line in out.splitlines():
            if line.startswith("worktree "):
                entries.append({"worktree": line[len("worktree ") :]})
            elif entries and line:
                key, _, value = line.partition(" ")
                entries[-1][key] = value
        return entries

    def _registered(self, path: Path) -> bool:
        target = os.path.normcase(str(path.resolve()))
        for entry in self._worktree_list():
            if os.path.normcase(str(Path(entry["worktree"]).resolve())) == target:
                return True
        return False

    def _remove_worktree_locked(self, path: Path) -> None:
        if self._registered(path):
            # on failure, fall back to deleting the folder and pruning
            with contextlib.suppress(GitCommandError):
                self._run("worktree", "remove", "--force", "--force", str(path))
        if path.exists() or path.is_symlink():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        self._run("worktree", "prune")

    def remove_worktree(self, exp_id: int) -> None:
        """Delete experiment ``exp_id``'s worktree; its ref (and commit) stay."""
        with self._lock:
            self._remove_worktree_locked(self.worktree_path(exp_id))

    def cleanup_worktrees(self) -> None:
        """Delete every worktree under ``.sigmaloop/worktrees``."""
        with self._lock:
            if self.worktrees_dir.is_dir():
                for child in sorted(self.worktrees_dir.iterdir()):
                    self._remove_worktree_locked(child)
            root = os.path.normcase(str(self.worktrees_dir.resolve()))
            for entry in self._worktree_list():
                wt = os.path.normcase(str(Path(entry["worktree"]).resolve()))
                if wt.startswith(root + os.sep):
                    self._remove_worktree_locked(Path(entry["worktree"]))
            self._run("worktree", "prune")

    # ----------------------------------------------------------------- user's tree

    def adopt(self, exp_id: int) -> Path:
        """Write the experiment's train script into the user's working tree (no commit).

        Refuses (:class:`AdoptConflict`, nothing written) when the user's file has
        uncommitted changes, unless it already equals the experiment's version.
        """
        commit = self.experiment_commit(exp_id)
        if commit is None:
            raise RatchetError(f"exp #{exp_id} has no commit ({self.exp_ref(exp_id)} is missing)")
        data = self._blob_bytes(commit)
        target = self.user_script
        with self._lock:
            current = self._hash_file(target)
            if current is not None and current == self._blob_sha(commit):
                return target  # already adopted
            head = self._rev("HEAD")
            committed = self._blob_sha(head) if head else None
            if current != committed:
                raise AdoptConflict(
                    f"{self.train_script} has uncommitted changes; commit or stash them, "
                    f"then adopt #{exp_id} again"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                if target.exists():
                    shutil.copymode(target, tmp)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return target

    def ensure_ignored(self) -> bool:
        """Make git ignore ``.sigmaloop/``; return True if ``.gitignore`` was changed."""
        with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            rel = f"{self.workspace_rel}/{STATE_DIR}/" if self.workspace_rel else f"{STATE_DIR}/"
            try:
                self._run("check-ignore", "-q", "--", rel)
                return False  # exit 0: already ignored
            except GitCommandError as err:
                if err.status != 1:
                    raise RatchetError(f"git check-ignore failed: {_git_error(err)}") from None
            gitignore = self.workspace / ".gitignore"
            text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
            if text and not text.endswith("\n"):
                text += "\n"
            gitignore.write_text(text + f"{STATE_DIR}/\n", encoding="utf-8")
            return True
