"""Starting a workspace: the user's own script, an autoresearch project, or the embedded trainer.

``sigmaloop init`` asks :func:`plan_init` what a folder is and what to write, then
:func:`apply_init` writes it; the CLI only prints the plan and the result. The rules:

* ``--script FILE --metric NAME``: the user's own script. Only ``sigmaloop.toml`` is written
  (and ``.sigmaloop/`` git-ignored); none of our trainer files are copied.
* A karpathy/autoresearch-style folder (``prepare.py`` with ``TIME_BUDGET`` and
  ``evaluate_bpb``, a ``train.py`` printing ``val_bpb``) is detected without flags. Its files
  are not edited: the run command is a launcher that sets ``prepare.TIME_BUDGET`` from
  ``SIGMALOOP_TIME_BUDGET`` and runs ``train.py`` as ``__main__``.
* A folder with other Python files and no flags: nothing is written; the message names the
  script found and the commands to choose (``--script``, or ``--trainer`` for our trainer).
* An empty folder (or ``--trainer``): the embedded trainer is copied, as before; it never
  replaces a file of the user's unless ``--force``.
* What init commits is the files it wrote plus the train script (and autoresearch's
  ``prepare.py``) when git does not track them yet, since trials run in a worktree of the
  committed tree. ``commit=False`` commits nothing and says what to commit.
"""

from __future__ import annotations

import ast
import math
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as config_mod
from .config import ExperimentConfig

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # 3.11+; typing only

TRAINER_FILES = ("prepare.py", "train.py", "program.md")
BUDGET_ENV = "SIGMALOOP_TIME_BUDGET"
AUTORESEARCH_CACHE = "~/.cache/autoresearch"  # where autoresearch's prepare.py keeps data and tokenizer
_METRIC_NAME = re.compile(r"^[A-Za-z_]\w*$")  # what output.parse_summary can read as "name: value"
_PRINTED_NAME = re.compile(r"""print\(\s*f?["']\s*([A-Za-z_]\w*)\s*:""")
_LIKELY_SCRIPTS = ("train.py", "fit.py", "main.py", "run.py")
_NOT_SCRIPTS = ("setup.py", "conftest.py", "__init__.py", "noxfile.py")


class InitError(ValueError):
    """What init was asked to do can't be done; the message says why and what to do."""


class NeedsChoice(InitError):
    """The folder holds the user's own Python files and init was not told what to do with them."""


@dataclass
class Autoresearch:
    """A karpathy/autoresearch-style project found in a folder."""

    train_script: str  # "train.py": prints the summary block with val_bpb
    prepare: str  # "prepare.py": defines TIME_BUDGET and evaluate_bpb
    time_budget: float | None  # TIME_BUDGET's value, when it is a plain number
    budget_from_prepare: bool  # train.py takes TIME_BUDGET from prepare (so the launcher can set it)


@dataclass
class InitRequest:
    """What the user asked `sigmaloop init` for (None = not given)."""

    directory: Path
    script: str | None = None
    metric: str | None = None
    direction: str | None = None
    command: str | None = None
    budget: float | None = None
    trainer: bool = False  # start from the embedded trainer even where Python files exist
    force: bool = False  # rewrite an existing sigmaloop.toml / replace trainer files
    commit: bool = True


@dataclass
class InitPlan:
    """What init will write, and why (``found``: one line per thing it noticed)."""

    directory: Path
    kind: str  # "script" | "autoresearch" | "trainer" | "existing"
    experiment: ExperimentConfig
    copy: list[str] = field(default_factory=list)  # trainer files to copy
    found: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings worth reading
    config_notes: list[str] = field(default_factory=list)  # comment lines for sigmaloop.toml
    read_only: list[str] = field(default_factory=list)  # runner.read_only: paths trials read outside the repo
    needs_committed: list[str] = field(default_factory=list)  # user files the trials need in git


@dataclass
class InitResult:
    """What init did."""

    plan: InitPlan
    written: list[str] = field(default_factory=list)  # files created or changed, relative
    committed: list[str] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)  # files the trials need that git lacks
    branch: str | None = None  # the branch the commit went to
    git_initialised: bool = False
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the trainer template


def trainer_template() -> Traversable:
    """The trainer a new workspace starts from: package data (``sigmaloop/trainer``)."""
    template = resources.files("sigmaloop") / "trainer"
    missing = [f for f in TRAINER_FILES if not (template / f).is_file()]
    if missing:
        raise InitError(f"this sigmaloop installation lacks its trainer template ({', '.join(missing)}); "
                        "reinstall it: pip install --force-reinstall sigmaloop")
    return template


# --------------------------------------------------------------------------- what is in a folder


def python_files(directory: Path) -> list[str]:
    """Top-level ``*.py`` files, the likeliest training script first."""
    if not directory.is_dir():
        return []
    names = sorted(p.name for p in directory.glob("*.py") if p.is_file() and not p.name.startswith("."))

    def rank(name: str) -> tuple[int, str]:
        if name in _LIKELY_SCRIPTS:
            return (0, f"{_LIKELY_SCRIPTS.index(name)}")
        if "train" in name or "fit" in name:
            return (1, name)
        if name in _NOT_SCRIPTS or name.startswith("test_") or name.endswith("_test.py"):
            return (3, name)
        return (2, name)

    return sorted(names, key=rank)


def printed_names(source: str) -> list[str]:
    """Names a script prints as ``name: value`` (candidates for --metric), likeliest first."""
    seen: list[str] = []
    for name in _PRINTED_NAME.findall(source):
        if name not in seen:
            seen.append(name)
    good = ("val", "loss", "acc", "bpb", "score", "f1", "auc", "error", "ppl", "perplexity")
    return sorted(seen, key=lambda n: (not any(g in n.lower() for g in good), seen.index(n)))


def _number(node: ast.expr) -> float | None:
    """A numeric literal or simple arithmetic of them (``5 * 60``); None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return None if v is None else -v
    if isinstance(node, ast.BinOp):
        a, b = _number(node.left), _number(node.right)
        if a is None or b is None:
            return None
        ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
        if isinstance(node.op, ast.Div) and b:
            return a / b
        return ops.get(type(node.op))
    return None


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def detect_autoresearch(directory: Path) -> Autoresearch | None:
    """An autoresearch-style project: ``prepare.py`` defining ``TIME_BUDGET`` and
    ``evaluate_bpb``, and a ``train.py`` that prints the summary block with ``val_bpb``."""
    prepare, train = directory / "prepare.py", directory / "train.py"
    if not (prepare.is_file() and train.is_file()):
        return None
    tree = _parse(prepare)
    if tree is None:
        return None
    budget: float | None = None
    has_budget = has_eval = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "evaluate_bpb":
            has_eval = True
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == "TIME_BUDGET" for t in targets):
            has_budget = True
            budget = _number(node.value)
    if not (has_budget and has_eval):
        return None
    source = train.read_text(encoding="utf-8", errors="replace")
    if "val_bpb" not in source or "---" not in source:
        return None
    train_tree = _parse(train)
    def reads_budget(node: ast.AST) -> bool:
        if isinstance(node, ast.ImportFrom) and node.module == "prepare":
            return any(a.name in ("TIME_BUDGET", "*") for a in node.names)
        return isinstance(node, ast.Attribute) and node.attr == "TIME_BUDGET" and \
            isinstance(node.value, ast.Name) and node.value.id == "prepare"

    from_prepare = train_tree is not None and any(reads_budget(n) for n in ast.walk(train_tree))
    usable = budget if budget is not None and math.isfinite(budget) and budget > 0 else None
    return Autoresearch("train.py", "prepare.py", usable, from_prepare)


def autoresearch_command(project: Autoresearch) -> str:
    """A run command that gives an autoresearch train.py the budget without editing a file.

    Self-contained (the trial interpreter need not have sigmaloop installed): import their
    prepare module from the working folder, set ``prepare.TIME_BUDGET`` from
    ``SIGMALOOP_TIME_BUDGET`` (whole seconds stay an int), then run train.py as ``__main__``,
    where its ``from prepare import TIME_BUDGET`` picks the new value up.
    """
    module = Path(project.prepare).stem
    code = (
        f"import os, runpy, sys; import {module} as p; b = os.environ.get('{BUDGET_ENV}', '').strip(); "
        "b and setattr(p, 'TIME_BUDGET', int(float(b)) if float(b).is_integer() else float(b)); "
        f"sys.argv = ['{project.train_script}']; "
        f"runpy.run_path('{project.train_script}', run_name='__main__')"
    )
    assert '"' not in code and "\\" not in code and "$" not in code
    return f'python -c "{code}"'  # plain double quotes: readable in sigmaloop.toml


# --------------------------------------------------------------------------- planning


def _check_flags(req: InitRequest) -> None:
    if req.metric is not None and not _METRIC_NAME.match(req.metric.strip()):
        what = "is empty" if not req.metric.strip() else f"{req.metric!r} can't be read from the output"
        raise InitError(f"--metric {what}: give the name the script prints as `name: value` at the end "
                        "(letters, digits and _, e.g. --metric val_loss)")
    if req.direction is not None and req.direction not in ("minimize", "maximize"):
        raise InitError(f"--direction must be minimize (lower is better) or maximize (higher is better), "
                        f"not {req.direction!r}")
    if req.budget is not None and not (math.isfinite(req.budget) and req.budget > 0):
        raise InitError(f"--budget must be a positive number of training seconds, not {req.budget:g}")
    if req.command is not None:
        try:
            argv = shlex.split(req.command)
        except ValueError as exc:
            raise InitError(f"--command {req.command!r} is not a valid command line ({exc}); "
                            "quote it as you would in a shell") from None
        if not argv:
            raise InitError('--command is empty: give the command that runs the script, e.g. --command "python fit.py"')
    if req.trainer and req.script:
        raise InitError("--trainer and --script exclude each other: --script loops on your script, "
                        "--trainer copies sigmaloop's own trainer")


def _script_path(directory: Path, script: str) -> str:
    """``script`` as a posix path relative to ``directory``; it must exist inside it."""
    path = Path(script).expanduser()
    full = Path(os.path.normpath(path if path.is_absolute() else directory / path))
    full = Path(os.path.realpath(full.parent)) / full.name  # directory is resolved too
    try:
        rel = full.relative_to(directory)
    except ValueError:
        raise InitError(f"--script {script}: the script must be inside the workspace folder {directory}") from None
    if not full.is_file():
        found = python_files(directory)
        hint = f" (Python files there: {', '.join(found[:5])})" if found else ""
        raise InitError(f"--script {script}: no such file in {directory}{hint}")
    if full.suffix != ".py":
        raise InitError(f"--script {script}: the script sigmaloop edits must be a Python file (.py); "
                        "run other steps through --command")
    return rel.as_posix()


def _choice_message(directory: Path, scripts: list[str]) -> str:
    best = scripts[0]
    others = scripts[1:]
    more = f" (and {len(others)} more: {', '.join(others[:4])}{', …' if len(others) > 4 else ''})" if others else ""
    names = printed_names((directory / best).read_text(encoding="utf-8", errors="replace"))
    metric = names[0] if names else "NAME"
    where = "" if Path.cwd().resolve() == directory else f" {shlex.quote(str(directory))}"
    best_arg = shlex.quote(best)
    hint = (f"{best} prints `{metric}: …`" if names else
            "NAME is what the script prints as `NAME: value` when it ends")
    lines = [
        (f"sigmaloop init{where} --script {best_arg} --metric {metric}", f"loop on your script ({hint})"),
        (f"sigmaloop init{where} --trainer", "start from sigmaloop's trainer here anyway"),
        ("sigmaloop init NEW_FOLDER", "or start from sigmaloop's trainer in a new folder"),
    ]
    width = max(len(cmd) for cmd, _ in lines)
    return (
        f"found {best}{more} in {directory}, and no {config_mod.CONFIG_NAME}.\n"
        "sigmaloop will not copy its own trainer next to your project, so it wrote nothing. Choose:\n"
        + "\n".join(f"  {cmd:<{width}}   # {why}" for cmd, why in lines)
    )


def plan_init(req: InitRequest) -> InitPlan:
    """Decide what init writes in ``req.directory``; InitError for anything it can't do."""
    directory = req.directory.expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise InitError(f"{directory} is a file, not a folder")
    _check_flags(req)
    flags = any(v is not None for v in (req.script, req.metric, req.direction, req.command))
    config = directory / config_mod.CONFIG_NAME
    if config.exists() and not req.force:
        if flags or req.trainer:
            raise InitError(f"{config} already exists; add --force to rewrite it with these settings "
                            "(the journal and research branch stay)")
        return InitPlan(directory, "existing", ExperimentConfig(),
                        found=[f"{directory} is already a sigmaloop workspace ({config_mod.CONFIG_NAME}); "
                               "nothing changed (--force rewrites the config)"])
    project = None if req.trainer else detect_autoresearch(directory)
    script = _script_path(directory, req.script) if req.script else None
    if project is not None and script not in (None, project.train_script):
        project = None  # the user picked another script of theirs
    if project is not None:
        return _plan_autoresearch(directory, req, project)
    if script is not None:
        return _plan_script(directory, req, script)
    scripts = python_files(directory)
    if scripts and not req.trainer:
        if flags:
            raise InitError(f"--metric, --direction and --command describe your script: add --script "
                            f"(e.g. --script {scripts[0]})")
        raise NeedsChoice(_choice_message(directory, scripts))
    if flags:
        raise InitError("--metric, --direction and --command describe your own script: add --script FILE "
                        "(sigmaloop's trainer reports val_bpb, lower is better)")
    return _plan_trainer(directory, req)


def _plan_script(directory: Path, req: InitRequest, script: str) -> InitPlan:
    if req.metric is None:
        names = printed_names((directory / script).read_text(encoding="utf-8", errors="replace"))
        hint = f" ({script} prints `{names[0]}: …`)" if names else ""
        raise InitError(f"--metric is needed with --script: the name {script} prints as `name: value` "
                        f"when it ends, e.g. --metric {names[0] if names else 'val_loss'}{hint}")
    metric = req.metric.strip()
    command = req.command.strip() if req.command else f"python {shlex.quote(script)}"
    exp = ExperimentConfig(train_script=script, command=command, metric=metric,
                           direction=req.direction or "minimize", budget=req.budget or 60.0)
    plan = InitPlan(directory, "script", exp, needs_committed=[script])
    plan.found.append(f"using your script {script}: trials run `{command}` and read `{metric}: value` "
                      f"from its output ({'higher' if exp.direction == 'maximize' else 'lower'} is better)")
    source = (directory / script).read_text(encoding="utf-8", errors="replace")
    if req.command and Path(script).name not in req.command:
        plan.notes.append(f"the command does not mention {script}: edits to {script} only count if it runs it")
    if metric not in source:
        plan.notes.append(f"{script} never mentions {metric}: a trial that prints no `{metric}: value` line "
                          "is recorded as crashed")
    if BUDGET_ENV not in source:
        plan.notes.append(f"{script} does not read {BUDGET_ENV}: trials train as long as it does; make "
                          f"--budget ({exp.budget:g}s) its usual training time, or read the variable")
    if "SIGMALOOP_METRICS" not in source:
        plan.found.append("live curve: from SIGMALOOP_METRICS records if the script writes them, else from "
                          "progress lines it prints like `step 12 (41.0%) | loss: 3.12`")
    plan.config_notes.append(f"Your own script ({script}); written by `sigmaloop init --script`.")
    return plan


def _plan_autoresearch(directory: Path, req: InitRequest, project: Autoresearch) -> InitPlan:
    budget = req.budget or project.time_budget or 300.0
    command = req.command.strip() if req.command else autoresearch_command(project)
    exp = ExperimentConfig(train_script=project.train_script, command=command,
                           metric=(req.metric or "val_bpb").strip(), direction=req.direction or "minimize",
                           budget=budget)
    plan = InitPlan(directory, "autoresearch", exp,
                    needs_committed=[project.train_script, project.prepare])
    budget_text = "not a plain number" if project.time_budget is None else f"{project.time_budget:g}"
    plan.found.append(f"found an autoresearch project: {project.prepare} defines TIME_BUDGET ({budget_text}) and "
                      f"evaluate_bpb; {project.train_script} prints the `---` summary with val_bpb")
    if req.command:
        plan.found.append(f"trials run your command `{command}`")
    elif project.budget_from_prepare:
        plan.found.append(f"trials run {project.train_script} through a launcher that sets "
                          f"{Path(project.prepare).stem}.TIME_BUDGET from {BUDGET_ENV} "
                          f"(budget {budget:g}s per trial); your files are not edited")
    else:
        plan.notes.append(f"{project.train_script} does not take TIME_BUDGET from {project.prepare}, so the "
                          "launcher's budget can't reach it; trials train as long as it does")
    plan.found.append(f"live curve: {project.train_script}'s `step N (P%) | loss: …` progress lines")
    if (directory / "results.tsv").exists():
        plan.notes.append("results.tsv exists and is yours: sigmaloop leaves it alone and writes its own "
                          "to .sigmaloop/results.tsv")
    plan.config_notes += [
        f"Imported autoresearch project: {project.train_script} runs through a launcher that sets",
        f"{Path(project.prepare).stem}.TIME_BUDGET from {BUDGET_ENV}; no file of the project is edited.",
    ]
    # its prepare.py keeps data and tokenizer in ~/.cache/autoresearch: trials read it there
    # (the sandbox hides the home otherwise; ~ inside the sandbox finds it too)
    plan.read_only.append(AUTORESEARCH_CACHE)
    plan.found.append(f"data cache: {AUTORESEARCH_CACHE} (readable by the sandboxed trials)")
    return plan


def _plan_trainer(directory: Path, req: InitRequest) -> InitPlan:
    template = trainer_template()
    clash = [n for n in TRAINER_FILES if (directory / n).exists()
             and (directory / n).read_bytes() != (template / n).read_bytes()]
    if clash and not req.force:
        raise InitError(f"{', '.join(clash)} already exist{'s' if len(clash) == 1 else ''} in {directory} "
                        "and differ from sigmaloop's trainer; start in a new folder, use --script to loop on "
                        "your own, or --force to replace them")
    plan = InitPlan(directory, "trainer", ExperimentConfig(budget=req.budget or 60.0),
                    copy=list(TRAINER_FILES))
    plan.found.append("starting from sigmaloop's trainer: prepare.py (fixed data, tokenizer, metric), train.py (the file "
                      "the loop edits), program.md" + (f"; replacing {', '.join(clash)}" if clash else ""))
    return plan


# --------------------------------------------------------------------------- doing it


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """git in ``cwd`` with hooks off (init's commit must not run the user's hooks)."""
    return subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd,
                          capture_output=True, text=True)


def _tracked(directory: Path, path: str) -> bool:
    return _git(directory, "ls-files", "--error-unmatch", "--", path).returncode == 0


def _modified(directory: Path, path: str) -> bool:
    return bool(_git(directory, "status", "--porcelain", "--", path).stdout.strip())


def _ignore(directory: Path, pattern: str) -> bool:
    """Append ``pattern`` to the folder's .gitignore unless git ignores it already."""
    probe = pattern.rstrip("/") + ("/" if pattern.endswith("/") else "")
    if _git(directory, "check-ignore", "-q", "--no-index", "--", probe).returncode == 0:
        return False
    gitignore = directory / ".gitignore"
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if pattern in text.splitlines():
        return False
    gitignore.write_text(text + ("\n" if text and not text.endswith("\n") else "") + pattern + "\n",
                         encoding="utf-8")
    return True


def apply_init(plan: InitPlan, commit: bool = True) -> InitResult:
    """Write what ``plan`` says, make the folder a git repository if needed, and commit."""
    result = InitResult(plan)
    if plan.kind == "existing":
        return result
    directory = plan.directory
    directory.mkdir(parents=True, exist_ok=True)
    if plan.copy:
        template = trainer_template()
        for name in plan.copy:
            data = (template / name).read_bytes()
            dst = directory / name
            if not dst.exists() or dst.read_bytes() != data:
                dst.write_bytes(data)
                result.written.append(name)
    config_mod.write(directory, plan.experiment, plan.config_notes, plan.read_only)
    result.written.append(config_mod.CONFIG_NAME)
    if _git(directory, "rev-parse", "--show-toplevel").returncode != 0:
        r = _git(directory, "init", "-q", "-b", "main")
        if r.returncode != 0:
            raise InitError(f"git init failed in {directory}: {r.stderr.strip()}")
        result.git_initialised = True
    patterns = [f"{config_mod.STATE_DIR}/"] + (["__pycache__/"] if plan.kind == "trainer" else [])
    if any([_ignore(directory, p) for p in patterns]):
        result.written.append(".gitignore")
    to_commit = list(result.written)
    for path in plan.needs_committed:
        if not _tracked(directory, path):
            to_commit.append(path)
        elif _modified(directory, path):
            result.notes.append(f"{path} has uncommitted changes: the research branch starts from its "
                                "committed version; commit them to include them")
    untracked = _git(directory, "ls-files", "--others", "--exclude-standard", "--", "*.py").stdout.split()
    left = [p for p in untracked if p not in to_commit and "/" not in p]
    if left:
        result.notes.append(f"not in git, so trials won't see them (they run in a worktree of the committed "
                            f"tree): {', '.join(left[:5])}{', …' if len(left) > 5 else ''}; commit what "
                            f"{plan.experiment.train_script} needs")
    branch = _git(directory, "symbolic-ref", "--short", "-q", "HEAD").stdout.strip() or None
    result.branch = branch
    if not commit:
        result.uncommitted = to_commit
        return result
    r = _git(directory, "add", "--", *to_commit)
    if r.returncode != 0:
        raise InitError(f"could not add {', '.join(to_commit)} to git: {r.stderr.strip()}; commit them "
                        "yourself, or run init again with --no-commit")
    # the user's identity when git has one; a fresh machine without one still gets a commit
    who = [] if _git(directory, "config", "user.email").stdout.strip() else \
        ["-c", "user.name=sigmaloop", "-c", "user.email=sigmaloop@localhost"]
    r = _git(directory, *who, "commit", "-q", "-m", f"sigmaloop: init ({plan.kind})", "--", *to_commit)
    if r.returncode != 0:
        if "nothing to commit" in r.stdout + r.stderr or "no changes added" in r.stdout + r.stderr:
            return result
        raise InitError(f"could not commit {', '.join(to_commit)}: {(r.stderr or r.stdout).strip()}")
    result.committed = to_commit
    return result
