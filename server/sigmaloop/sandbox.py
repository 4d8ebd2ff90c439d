"""The trial sandbox: agent-written code runs with bubblewrap (Linux), not with the user's authority.

What a sandboxed trial sees (:func:`wrap` builds the ``bwrap`` command line):

* the system read-only (``/`` bound read-only), with the user's homes (``$HOME``, ``/root``,
  ``/home``) and the repository the workspace lives in replaced by empty tmpfs: no ``.git``
  (hooks, config, other refs), no state folder (journal, logs, other worktrees), no ``~/.ssh``,
  ``~/.aws``, ``~/.netrc``, ``~/.config``…;
* read-only again where the trial needs it: the interpreter's prefixes and ``sys.path`` entries
  (a venv inside the repo or the home keeps working), and the data cache;
* writable: its own worktree, its metrics file, a private ``/tmp`` and an empty ``HOME``;
* a new PID namespace (its own ``/proc``: no other process, the engine included, is visible;
  when the trial's first process ends, every process it started ends with it — no daemon
  survives), a new network namespace (no network, loopback only) unless the policy allows
  network, new IPC/UTS namespaces, all capabilities dropped, a new session (no terminal
  injection), and death with its parent (the runner).
* GPU slots: ``/dev/nvidia*`` (and ``/dev/dri`` where present) bound in; see docs/sandbox.md.

:func:`availability` says once, clearly, when bubblewrap can't be used here (not Linux, not
installed, no user namespaces) — the runner then marks the trial unsandboxed.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("auto", "on", "off")
SANDBOX_HOME = "/tmp/home"  # the trial's HOME: empty, private, writable


class SandboxUnavailable(RuntimeError):
    """``runner.sandbox = "on"`` but bubblewrap can't run here; the message says why and what to do."""


@dataclass(frozen=True)
class Policy:
    """What one trial may see and touch."""

    worktree: str  # read-write; the trial's cwd lives inside it
    hide: tuple[str, ...]  # replaced by empty tmpfs (the repository, the state folder)
    read_only: tuple[str, ...] = ()  # bound back read-only after hiding (data cache, …); ~/x also at $HOME/x
    writable_files: tuple[str, ...] = ()  # existing files bound read-write (the metrics file)
    blank: tuple[str, ...] = ()  # files that read as empty (the validation split: only the evaluator reads it)
    python: str = sys.executable  # the trial interpreter: its prefixes and sys.path stay visible
    network: bool = False
    gpu: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


def _bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def availability() -> str | None:
    """None when sandboxed trials can run here; otherwise why not (one line, with what to do)."""
    if not sys.platform.startswith("linux"):
        return f"no sandbox on {sys.platform}: bubblewrap is Linux-only; trials run unsandboxed"
    bwrap = _bwrap()
    if bwrap is None:
        return ("bubblewrap is not installed, so trials would run with your full authority; install it "
                "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)")
    try:
        probe = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--proc", "/proc",
             "--dev", "/dev", "--die-with-parent", "--cap-drop", "ALL", "true"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not run ({exc}); trials run unsandboxed"
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return (f"bubblewrap can't create namespaces here ({why}); enable unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1) or run trials unsandboxed with runner.sandbox = \"off\"")
    return None


@functools.lru_cache(maxsize=8)
def interpreter_paths(python: str) -> tuple[str, ...]:
    """The directories an interpreter needs to start and import: its prefixes and sys.path."""
    code = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]))"
    paths: list[str] = []
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30, check=True)
        paths = [p for p in json.loads(out.stdout) if p]
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    exe = Path(python)
    for candidate in (exe, exe.resolve()):
        paths.append(str(candidate.parent.parent))  # <prefix>/bin/python -> <prefix>
    return _outermost(p for p in paths if os.path.isdir(p))


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    """Real paths with nested ones dropped (binding a parent covers its children)."""
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths}, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(out)


def _homes() -> list[str]:
    homes = [os.path.expanduser("~"), "/root", "/home"]
    return [h for h in dict.fromkeys(os.path.realpath(h) for h in homes) if os.path.isdir(h) and h != "/"]


def _gpu_devices() -> list[str]:
    devs = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
    if os.path.isdir("/dev/dri"):
        devs.append("/dev/dri")
    return devs


@functools.lru_cache(maxsize=1)
def _empty_file() -> str:
    """A private, empty, read-only file of this process (bound over what a trial must not read)."""
    fd, path = tempfile.mkstemp(prefix="sigmaloop-empty-")
    os.close(fd)
    os.chmod(path, 0o444)
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return path


def wrap(argv: list[str], policy: Policy, cwd: str) -> list[str]:
    """``argv`` run in ``cwd`` as a bubblewrap command line under ``policy`` (the caller checked
    availability)."""
    bwrap = _bwrap() or "bwrap"
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if not policy.network:
        args.append("--unshare-net")
    for hidden in _outermost([*_homes(), *policy.hide]):
        args += ["--tmpfs", hidden]
    args += ["--tmpfs", "/tmp", "--dir", SANDBOX_HOME]
    worktree = os.path.realpath(policy.worktree)
    home = os.path.realpath(os.path.expanduser("~"))
    for path in _outermost([*interpreter_paths(policy.python), *policy.read_only]):
        if path != worktree and os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in _outermost(policy.read_only):  # ~/… also where the trial's ~ (its HOME) finds it
        if path.startswith(home + "/") and os.path.exists(path):
            args += ["--ro-bind", path, SANDBOX_HOME + path[len(home):]]
    for f in policy.blank:
        f = os.path.realpath(f)
        if os.path.isfile(f):  # an empty regular file over it (a device node can't be opened: nodev)
            args += ["--ro-bind", _empty_file(), f]
            if f.startswith(home + "/"):
                args += ["--ro-bind", _empty_file(), SANDBOX_HOME + f[len(home):]]
    args += ["--bind", worktree, worktree]
    for f in policy.writable_files:
        args += ["--bind", f, f]
    if policy.gpu:
        for dev in _gpu_devices():
            args += ["--dev-bind", dev, dev]
    args += ["--setenv", "HOME", SANDBOX_HOME, "--setenv", "TMPDIR", "/tmp"]
    for name, value in policy.extra_env.items():
        args += ["--setenv", name, value]
    args += ["--chdir", os.path.realpath(cwd), "--"]
    return args + argv


def repository_root(path: str | os.PathLike[str]) -> str:
    """The top of the git repository holding ``path`` (the folder with ``.git``), else ``path``."""
    p = Path(path).resolve()
    for candidate in (p, *p.parents):
        if (candidate / ".git").exists():
            return str(candidate)
    return str(p)


def data_cache() -> str:
    """The trainer's data cache (prepare.py: ``$SIGMALOOP_CACHE`` or ``~/.cache/sigmaloop``)."""
    cache = os.environ.get("SIGMALOOP_CACHE", "").strip()
    return os.path.realpath(os.path.expanduser(cache) if cache else os.path.expanduser("~/.cache/sigmaloop"))


def validation_files(cache: str | None = None) -> tuple[str, ...]:
    """The validation split's files in the data cache: every entry's ``val.bin`` and the pinned
    climbmix validation shard (prepare.py's layout)."""
    root = Path(cache or data_cache())
    found = [*root.glob("*/val.bin"), *root.glob("downloads/*/shard_06542.parquet")]
    return tuple(sorted(str(p) for p in found if p.is_file()))


def policy_for(
    workspace: str | os.PathLike[str],
    worktree: str | os.PathLike[str],
    metrics_path: str | os.PathLike[str],
    python: str = sys.executable,
    read_only: Iterable[str] = (),
    network: bool = False,
    gpu: bool = False,
    hide_validation: bool = False,
) -> Policy:
    """The policy of one trial of a workspace: the repository (its ``.git``, the state folder,
    other worktrees) hidden; the trial's worktree and metrics file writable; the data cache and
    ``read_only`` visible read-only (its validation split empty with ``hide_validation``: the
    fixed evaluator scores the model); ``SIGMALOOP_CACHE`` pointing at the real cache."""
    cache = data_cache()
    return Policy(
        worktree=str(worktree),
        hide=(repository_root(workspace), os.path.realpath(workspace)),
        read_only=tuple(p for p in (cache, *(os.path.realpath(os.path.expanduser(r)) for r in read_only))
                        if os.path.exists(p)),
        writable_files=(os.path.realpath(metrics_path),),
        blank=validation_files(cache) if hide_validation else (),
        python=python,
        network=network,
        gpu=gpu,
        extra_env={"SIGMALOOP_CACHE": cache},
    )
