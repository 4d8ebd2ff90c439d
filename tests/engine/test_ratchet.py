"""Ratchet against real git repositories in tmp_path (no mocks)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from sigmaloop.ratchet import (
    AdoptConflict,
    Ratchet,
    RatchetError,
    StaleExperiment,
    Worktree,
)

SCRIPT = "import os\nlr = 0.01\nprint('val_bpb: 1.0')\n"
EDITED = "import os\nlr = 0.02\nprint('val_bpb: 1.0')\n"


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global/system git config: the user has no identity configured at all."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    for var in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
    ):
        monkeypatch.delenv(var, raising=False)


def git(cwd: Path, *args: str) -> str:
    """Run git as the user would (identity given on the command line, not configured)."""
    out = subprocess.run(
        ["git", "-c", "user.name=User", "-c", "user.email=user@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def make_repo(root: Path, sub: str = "", script: str = SCRIPT) -> Path:
    """A repo with a committed train.py (in ``sub`` if given) and .sigmaloop/ ignored."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    ws = root / sub if sub else root
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "train.py").write_text(script)
    (ws / "sigmaloop.toml").write_text("[experiment]\n")
    (ws / ".gitignore").write_text(".sigmaloop/\n")
    (root / "README.md").write_text("hi\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return ws


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def status(root: Path) -> str:
    return git(root, "status", "--porcelain")


def test_ensure_branch_leaves_user_untouched(ws: Path) -> None:
    head = git(ws, "rev-parse", "HEAD")
    r = Ratchet(ws, "main")
    assert r.branch_name == "sigmaloop/main"
    assert r.ensure_branch() == head
    assert r.warning is None
    assert r.head() == head
    assert git(ws, "rev-parse", "refs/heads/sigmaloop/main") == head
    assert git(ws, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(ws, "rev-parse", "HEAD") == head
    assert status(ws) == ""
    assert not r.dirty_script()
    # idempotent
    assert r.ensure_branch() == head


def test_dirty_script_warns_and_branch_starts_from_head(ws: Path) -> None:
    (ws / "train.py").write_text(SCRIPT + "# wip\n")
    r = Ratchet(ws, "t")
    assert r.dirty_script()
    head = r.ensure_branch()
    assert head == git(ws, "rev-parse", "HEAD")
    assert r.warning and "uncommitted" in r.warning
    assert r.read_script(head) == SCRIPT
    assert (ws / "train.py").read_text() == SCRIPT + "# wip\n"


def test_prepare_edit_worktree(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    wt = r.prepare_worktree(12, base, EDITED, "exp #12: higher lr")
    assert isinstance(wt, Worktree)
    assert wt.path == ws / ".sigmaloop" / "worktrees" / "exp-12"
    assert wt.cwd == wt.path
    assert wt.parent == base and wt.commit != base and wt.edited
    assert (wt.cwd / "train.py").read_text() == EDITED
    assert r.experiment_commit(12) == wt.commit
    assert git(ws, "rev-parse", "refs/sigmaloop/exp/12") == wt.commit
    assert git(ws, "rev-parse", f"{wt.commit}^") == base
    assert git(ws, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", wt.commit) == (
        "sigmaloop <sigmaloop@localhost>|sigmaloop <sigmaloop@localhost>|"
        "exp #12: higher lr"
    )
    assert r.read_script(wt.commit) == EDITED
    d = r.diff(12)
    assert "--- a/train.py" in d and "+++ b/train.py" in d
    assert "-lr = 0.01" in d and "+lr = 0.02" in d
    # the user's file, branch, HEAD and status are untouched
    assert (ws / "train.py").read_text() == SCRIPT
    assert r.head() == base
    assert git(ws, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert status(ws) == ""
    # worktree is detached and clean
    assert git(wt.path, "status", "--porcelain") == ""
    with pytest.raises(subprocess.CalledProcessError):
        git(wt.path, "symbolic-ref", "-q", "HEAD")


def test_baseline_ref_at_base(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    wt = r.prepare_worktree(1, base, None, "baseline")
    assert wt.commit == base and wt.parent == base and not wt.edited
    assert r.experiment_commit(1) == base
    assert r.diff(1) == ""
    # identical source counts as no edit
    wt2 = r.prepare_worktree(2, base, SCRIPT, "exp #2: no-op")
    assert wt2.commit == base
    assert r.diff(2) == ""
    assert r.experiment_commit(99) is None


def test_advance_and_stale(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    a = r.prepare_worktree(3, base, EDITED, "exp #3: a")
    b = r.prepare_worktree(4, base, SCRIPT.replace("0.01", "0.005"), "exp #4: b")
    assert r.advance(3) == a.commit
    assert r.head() == a.commit
    assert r.advance(3) == a.commit  # idempotent
    with pytest.raises(StaleExperiment) as err:
        r.advance(4)
    assert a.commit[:10] in str(err.value)
    assert err.value.head == a.commit
    assert r.head() == a.commit
    assert b.commit != a.commit
    # the user's branch never moves
    assert git(ws, "rev-parse", "HEAD") == base
    assert status(ws) == ""


def test_remove_worktree_keeps_ref(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    wt = r.prepare_worktree(5, base, EDITED, "exp #5: discard me")
    r.remove_worktree(5)
    assert not wt.path.exists()
    assert r.experiment_commit(5) == wt.commit
    assert "+lr = 0.02" in r.diff(5)
    assert str(wt.path) not in git(ws, "worktree", "list")
    r.remove_worktree(5)  # twice is fine


def test_cleanup_worktrees(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    for i in (1, 2):
        r.prepare_worktree(i, base, EDITED + f"# {i}\n", f"exp #{i}")
    r.cleanup_worktrees()
    assert list((ws / ".sigmaloop" / "worktrees").iterdir()) == []
    assert git(ws, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert r.experiment_commit(1) and r.experiment_commit(2)


def test_adopt_clean_file(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    r.prepare_worktree(7, base, EDITED, "exp #7")
    assert r.adopt(7) == ws / "train.py"
    assert (ws / "train.py").read_text() == EDITED
    assert git(ws, "rev-parse", "HEAD") == base  # not committed
    assert status(ws) == "M train.py"
    assert r.adopt(7) == ws / "train.py"  # already adopted: fine


def test_adopt_dirty_file_conflicts(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    r.prepare_worktree(12, base, EDITED, "exp #12")
    mine = b"import os\nlr = 0.5  # my local tweak\n"
    (ws / "train.py").write_bytes(mine)
    with pytest.raises(AdoptConflict) as err:
        r.adopt(12)
    assert "uncommitted changes" in str(err.value) and "adopt #12" in str(err.value)
    assert (ws / "train.py").read_bytes() == mine


def test_workspace_in_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "mono"
    ws = make_repo(root, sub="research/nano")
    r = Ratchet(ws, "sub")
    assert r.script_path == "research/nano/train.py"
    base = r.ensure_branch()
    wt = r.prepare_worktree(1, base, EDITED, "exp #1: sub")
    assert wt.path == ws / ".sigmaloop" / "worktrees" / "exp-1"
    assert wt.cwd == wt.path / "research" / "nano"
    assert (wt.cwd / "train.py").read_text() == EDITED
    assert (wt.cwd / "sigmaloop.toml").exists()
    d = r.diff(1)
    assert "--- a/train.py" in d and "+++ b/train.py" in d and "+lr = 0.02" in d
    assert status(root) == ""
    assert r.advance(1) == wt.commit
    r.adopt(1)
    assert (ws / "train.py").read_text() == EDITED
    assert status(root) == "M research/nano/train.py"


def test_not_a_git_repo(tmp_path: Path) -> None:
    ws = tmp_path / "plain"
    ws.mkdir()
    (ws / "train.py").write_text(SCRIPT)
    with pytest.raises(RatchetError, match="git init"):
        Ratchet(ws, "main")


def test_repo_without_commits(tmp_path: Path) -> None:
    ws = tmp_path / "empty"
    ws.mkdir()
    git(ws, "init", "-q")
    (ws / "train.py").write_text(SCRIPT)
    r = Ratchet(ws, "main")
    assert r.ensure_ignored() is True  # works before the first commit (init flow)
    with pytest.raises(RatchetError, match="no commits"):
        r.ensure_branch()


def test_script_not_committed(tmp_path: Path) -> None:
    ws = tmp_path / "r"
    ws.mkdir()
    git(ws, "init", "-q")
    (ws / "README.md").write_text("x\n")
    git(ws, "add", "README.md")
    git(ws, "commit", "-q", "-m", "readme")
    (ws / "train.py").write_text(SCRIPT)
    r = Ratchet(ws, "main")
    with pytest.raises(RatchetError, match=r"train\.py is not committed"):
        r.ensure_branch()
    assert git(ws, "branch", "--list", "sigmaloop/*") == ""


def test_commits_without_user_identity(ws: Path) -> None:
    # The autouse fixture removed every identity source; git itself refuses to commit.
    (ws / "other.txt").write_text("x")
    subprocess.run(["git", "add", "other.txt"], cwd=ws, check=True)
    plain = subprocess.run(
        ["git", "-c", "user.useConfigOnly=true", "commit", "-m", "x"], cwd=ws, capture_output=True
    )
    assert plain.returncode != 0
    subprocess.run(["git", "reset", "-q"], cwd=ws, check=True)
    (ws / "other.txt").unlink()
    subprocess.run(["git", "config", "user.useConfigOnly", "true"], cwd=ws, check=True)
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    wt = r.prepare_worktree(1, base, EDITED, "exp #1")
    assert wt.commit != base
    assert r.advance(1) == wt.commit


def test_stale_worktree_dir_recovered(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    first = r.prepare_worktree(8, base, EDITED, "exp #8")
    (first.path / "junk.bin").write_bytes(b"half-written")
    (first.path / "train.py").write_text("garbage")
    # a "crashed" engine restarts: a new Ratchet prepares the same id again
    again = Ratchet(ws, "main").prepare_worktree(8, base, EDITED, "exp #8")
    assert again.path == first.path
    assert again.commit == first.commit  # same base + source: the commit is reused
    assert (again.path / "train.py").read_text() == EDITED
    assert not (again.path / "junk.bin").exists()
    # an unregistered leftover folder (git metadata gone) is replaced too
    r.remove_worktree(8)
    leftover = r.worktree_path(9)
    leftover.mkdir(parents=True)
    (leftover / "stale.txt").write_text("x")
    wt9 = r.prepare_worktree(9, base, None, "baseline")
    assert wt9.commit == base and not (leftover / "stale.txt").exists()
    assert status(ws) == ""


def test_concurrent_prepare(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    results: dict[int, Worktree] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            rr = Ratchet(ws, "main") if i % 2 else r
            results[i] = rr.prepare_worktree(i, base, SCRIPT + f"# variant {i}\n", f"exp #{i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4]
    for i, wt in results.items():
        assert r.experiment_commit(i) == wt.commit
        assert (wt.cwd / "train.py").read_text().endswith(f"# variant {i}\n")
    assert len({wt.commit for wt in results.values()}) == 4
    assert status(ws) == ""


def test_ensure_ignored(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text(SCRIPT)
    (root / ".gitignore").write_text("*.pyc")  # no trailing newline
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    r = Ratchet(root, "main")
    assert r.ensure_ignored() is True
    assert (root / ".gitignore").read_text() == "*.pyc\n.sigmaloop/\n"
    assert r.ensure_ignored() is False
    git(root, "commit", "-q", "-am", "ignore")
    r.prepare_worktree(1, r.ensure_branch(), EDITED, "exp #1")
    assert status(root) == ""


def test_bad_tag(ws: Path) -> None:
    with pytest.raises(RatchetError, match="tag"):
        Ratchet(ws, "bad tag..")


def test_ensure_ignored_in_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "mono"
    root.mkdir()
    git(root, "init", "-q")
    ws = root / "proj"
    ws.mkdir()
    (ws / "train.py").write_text(SCRIPT)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    r = Ratchet(ws, "main")
    assert r.ensure_ignored() is True
    assert (ws / ".gitignore").read_text() == ".sigmaloop/\n"
    assert not (root / ".gitignore").exists()
    assert r.ensure_ignored() is False
    r.prepare_worktree(1, r.ensure_branch(), EDITED, "exp #1")
    assert status(root) == "?? proj/.gitignore"


def test_advance_refuses_when_branch_checked_out(ws: Path) -> None:
    r = Ratchet(ws, "main")
    base = r.ensure_branch()
    r.prepare_worktree(1, base, EDITED, "exp #1")
    git(ws, "checkout", "-q", "sigmaloop/main")
    with pytest.raises(RatchetError, match="checked out"):
        r.advance(1)
    assert r.head() == base
