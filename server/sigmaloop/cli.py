"""`sigmaloop`: the engine, headless, for a terminal or an SSH session.

A thin adapter: every command is a call into :mod:`sigmaloop.engine`; rich renders events.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from . import __version__, project
from . import config as config_mod
from .events import Event, ExperimentUpdated, LoopState, Notice, TrialProgress
from .lifecycle import Phase
from .models import Experiment, Status

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "kept": "green", "discarded": "yellow", "crashed": "red", "timeout": "red",
    "running": "cyan", "queued": "blue", "proposed": "magenta", "rejected": "dim",
    "interrupted": "red", "accepted": "blue", "tampered": "bold red", "over_budget": "bold red",
    "pruned": "yellow",
}


class CLIError(Exception):
    """A problem the user can fix; printed without a traceback."""


trainer_template = project.trainer_template  # the embedded trainer (package data)


# -- workspace setup ------------------------------------------------------------------------------
def init_workspace(directory: Path, budget: float = 60.0, force: bool = False) -> Path:
    """The embedded trainer in a folder, committed (the demo's and the benchmarks' start).

    A folder that already is a workspace is left as it is (unless ``force``)."""
    directory = Path(directory).expanduser().resolve()
    if (directory / config_mod.CONFIG_NAME).exists() and not force:
        return directory
    plan = project.plan_init(project.InitRequest(directory, budget=budget, trainer=True, force=force))
    project.apply_init(plan)
    return plan.directory


def find_workspace(start: Path | None) -> Path:
    """The folder holding sigmaloop.toml: the given one, or the nearest parent of the cwd.

    A workspace of the product's first name counts too; it is migrated here, once (the
    message says what moved)."""
    from .migrate import has_config

    if start is not None:
        start = start.resolve()
        if not has_config(start):
            raise CLIError(f"{start} has no {config_mod.CONFIG_NAME}; run `sigmaloop init {start}` first")
        return migrated(start)
    here = Path.cwd().resolve()
    for path in (here, *here.parents):
        if has_config(path):
            return migrated(path)
    raise CLIError(f"no {config_mod.CONFIG_NAME} here or in a parent folder; "
                   "run `sigmaloop init` to make this folder a workspace")


def migrated(workspace: Path) -> Path:
    """Migrate a workspace of the old name (printing what moved); refusals become CLIError."""
    from .migrate import MigrationError, migrate_workspace

    try:
        report = migrate_workspace(workspace)
    except MigrationError as exc:
        raise CLIError(str(exc)) from None
    if report is not None:
        err.print(report.message(), markup=False)
    return workspace


def open_engine(workspace: Path):
    from .engine import Engine  # imported late: `sigmaloop --help` stays fast
    from .migrate import MigrationError

    try:
        engine = Engine(workspace)
    except (config_mod.ConfigError, MigrationError) as exc:
        raise CLIError(str(exc)) from None
    if engine.migration is not None:  # not found through find_workspace
        err.print(engine.migration.message(), markup=False)
    if engine.recovered:
        ids = ", ".join(f"#{e.id}" for e in engine.recovered)
        err.print(f"re-queued {ids}: the engine that ran them stopped mid-trial", markup=False)
    engine.bus.subscribe(show_notice)
    return engine


def show_notice(event: Event) -> None:
    if isinstance(event, Notice):
        style = {"error": "red", "warning": "yellow"}.get(event.level, "")
        err.print(f"[{style}]{event.level}:[/] {escape(event.message)}" if style else escape(event.message))


@contextmanager
def opened(args):
    """The engine of the command's workspace, closed afterwards."""
    engine = open_engine(find_workspace(args.workspace))
    try:
        yield engine
    finally:
        engine.close()


def run_prepare(workspace: Path) -> None:
    cfg = config_mod.load(workspace)
    script = workspace / "prepare.py"
    if not script.exists():
        console.print("[dim]no prepare.py in the workspace: nothing to prepare[/]")
        return
    console.print(f"[bold]Preparing data and tokenizer[/] ({script})")
    r = subprocess.run([cfg.trial_python(), "prepare.py"], cwd=workspace)
    if r.returncode != 0:
        raise CLIError(f"prepare.py failed (exit {r.returncode}); see its message above")


# -- rendering --------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def experiments_table(exps: list[Experiment], metric: str) -> Table:
    table = Table(title=None, show_lines=False, header_style="bold")
    for col, kw in (("#", {"justify": "right"}), ("status", {}), ("source", {}), ("seed", {"justify": "right"}),
                    (metric, {"justify": "right"}), ("Δ", {"justify": "right"}), ("z", {"justify": "right"}),
                    ("hypothesis / verdict", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for e in exps:
        style = STATUS_STYLE.get(e.status.value, "")
        what = e.hypothesis or ""
        if e.verdict and not e.is_baseline:
            what = f"{what}\n[dim]{e.verdict}[/]" if what else e.verdict
        status = f"[{style}]{e.status.value}[/]" + ("\n[red]unsandboxed[/]" if e.sandboxed is False else "")
        table.add_row(str(e.id), status, e.source, fmt(e.seed, "d") if e.seed is not None else "–",
                      fmt(e.metric, ".6f"), fmt(e.delta, "+.4f"), fmt(e.z, ".1f"), what)
    return table


class LiveReporter:
    """Renders engine events: a progress bar per running trial, a line per verdict."""

    def __init__(self, engine, quiet: bool = False):
        self.engine = engine
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]#{task.fields[exp]}[/] {task.description}"), BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), console=console, transient=True,
        )
        self.tasks: dict[int, int] = {}
        self.announced: set[tuple[int, str]] = set()
        self.lock = threading.Lock()

    def __enter__(self):
        self.unsubscribe = self.engine.bus.subscribe(self.on_event)
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.unsubscribe()
        self.progress.stop()

    def on_event(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, TrialProgress) and event.exp_id in self.tasks and event.records:
                last = event.records[-1]
                loss = f"{last.loss:.3f}" if last.loss is not None else "–"
                self.progress.update(self.tasks[event.exp_id], completed=min(1.0, last.frac) * 100, loss=loss)
            elif isinstance(event, ExperimentUpdated):
                self._on_experiment(event.experiment)
            elif isinstance(event, LoopState) and event.running and event.iteration and not self.quiet:
                key = (-event.iteration, "loop")
                if key not in self.announced:
                    self.announced.add(key)
                    console.rule(f"iteration {event.iteration} of {event.iterations}")

    def _on_experiment(self, e: Experiment) -> None:
        if e.status == Status.RUNNING and e.id not in self.tasks and e.phase == Phase.TRAINING:
            label = e.hypothesis or e.source
            self.tasks[e.id] = self.progress.add_task(label[:60], total=100, exp=e.id, loss="–")
            return
        if e.phase == Phase.CONFIRMING and (e.id, "confirm") not in self.announced:
            self.announced.add((e.id, "confirm"))
            console.print(f"  #{e.id} {e.verdict}")
        if e.id in self.tasks and e.status != Status.RUNNING:
            self.progress.remove_task(self.tasks.pop(e.id))
        if e.status in (Status.PROPOSED, Status.REJECTED, Status.KEPT, Status.DISCARDED, Status.CRASHED,
                        Status.TIMEOUT, Status.INTERRUPTED) and (e.id, e.status.value) not in self.announced:
            self.announced.add((e.id, e.status.value))
            style = STATUS_STYLE.get(e.status.value, "")
            text = e.verdict if e.status != Status.PROPOSED else e.hypothesis
            if e.status == Status.CRASHED and e.crash:
                text += f" (at {e.crash.file}:{e.crash.line})"
            console.print(f"  [{style}]#{e.id} {e.status.value}[/] {text}")


def print_status(engine) -> None:
    head = engine.head()
    s = engine.state()
    better = "lower" if s.direction == "minimize" else "higher"
    console.print(f"[bold]workspace[/] {engine.workspace}")
    console.print(f"[bold]branch[/]    {engine.branch} @ {head[:8]}")
    ref = s.reference
    if ref is None:
        console.print(f"[bold]reference[/] {s.metric} – ({better} is better; run `sigmaloop baseline`)")
    else:
        sigma = "" if ref.sigma is None else f" ± {ref.sigma:.4f} (σ from {ref.sigma_dof} repeat dof)"
        seeds = ", ".join(str(x) for x in ref.seeds)
        console.print(f"[bold]reference[/] {s.metric} {ref.value:.6f}{sigma}, seeds {seeds} ({better} is better)")
        if ref.keep_threshold is not None:
            console.print(f"[bold]keepable[/]  an edit must be ≥ {ref.keep_threshold:.4f} {better} "
                          f"({100 * ref.keep_threshold / abs(ref.value or 1):.2f}%) to be kept")
        if ref.advice:
            console.print(f"[yellow]noise:[/] {escape(ref.advice)}")
    if s.best is not None:
        console.print(f"[bold]best[/]      #{s.best.id} {s.metric} {s.best.metric:.6f}  {escape(s.best.hypothesis)}")
    console.print(f"[bold]kept[/]      {s.kept} of {s.run} candidates run")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
    console.print(f"[bold]journal[/]   {counts or 'empty'}")
    if s.running:
        console.print(f"[bold]running[/]   {', '.join('#' + str(i) for i in s.running)}")


# -- commands ---------------------------------------------------------------------------------------
def cmd_init(args) -> int:
    from .migrate import needs_migration

    if needs_migration(args.dir):  # a workspace of the old name: migrate it, never add a second config
        migrated(Path(args.dir).resolve())
    req = project.InitRequest(
        Path(args.dir), script=args.script, metric=args.metric, direction=args.direction,
        command=args.command, budget=args.budget, trainer=args.trainer, force=args.force,
        commit=not args.no_commit,
    )
    def say(text: str) -> None:  # long lines stay whole: they hold paths and commands to copy
        console.print(text, soft_wrap=True)

    try:
        plan = project.plan_init(req)
    except project.NeedsChoice as exc:  # not an error: the user's project, and no flags
        err.print(escape(str(exc)), soft_wrap=True)
        return 2
    for i, line in enumerate(plan.found):
        say(("" if i == 0 else "  ") + escape(line))
    for note in plan.notes:
        say(f"[yellow]note:[/] {escape(note)}")
    if plan.kind == "existing":
        return 0
    result = project.apply_init(plan, commit=req.commit)
    for note in result.notes:
        say(f"[yellow]note:[/] {escape(note)}")
    ws = plan.directory
    if result.git_initialised:
        say(f"initialised a git repository in {ws} (branch {result.branch or 'main'})")
    say(f"wrote {', '.join(result.written)}")
    if result.committed:
        say(f"[bold]committed to {result.branch or 'HEAD'}[/]: {', '.join(result.committed)}")
    elif result.uncommitted:
        files = " ".join(shlex.quote(f) for f in result.uncommitted)
        say(f"[bold]not committed[/] (--no-commit): {', '.join(result.uncommitted)}. Trials run "
                      "from committed files: commit them before `sigmaloop baseline`:")
        say(f"  git add {escape(files)} && git commit -m 'sigmaloop: init'")
    say(f"[green]workspace ready[/]: {ws}")
    if plan.kind == "trainer":
        say("next: [bold]sigmaloop prepare[/] then [bold]sigmaloop baseline[/] and "
                      "[bold]sigmaloop loop --iterations 10[/]")
        return 0
    python = config_mod.load(ws).trial_python()
    own = ws / ".venv" / "bin" / "python"
    hint = f"; found {own}: set [runner] python to it if that is the project's" if own.exists() else ""
    say(escape(f"trials run with {python} ([runner] python in {config_mod.CONFIG_NAME} changes it"
                         f"{hint})"))
    if plan.kind == "autoresearch":
        say("next: prepare the data as the project says (e.g. [bold]uv run prepare.py[/]), then "
                      "[bold]sigmaloop baseline[/] and [bold]sigmaloop loop --iterations 10[/]")
    else:
        say("next: [bold]sigmaloop baseline[/] (the judge's seeds → reference ± sigma), then "
                      "[bold]sigmaloop loop --iterations 10[/]")
    return 0


def cmd_prepare(args) -> int:
    run_prepare(find_workspace(args.workspace))
    return 0


def _with_engine(args, fn) -> int:
    engine = open_engine(find_workspace(args.workspace))
    if getattr(args, "slots", None) is not None:  # this run only: trials at once (one GPU each where there are GPUs)
        try:
            engine.reconfigure(config_mod.load(engine.workspace, {"runner": {"slots": args.slots}}))
        except config_mod.ConfigError as exc:
            engine.close()
            raise CLIError(str(exc)) from None
    stop_once = threading.Event()

    def on_sigint(signum, frame):
        if stop_once.is_set():
            raise KeyboardInterrupt
        stop_once.set()
        err.print("[yellow]stopping: the running trial is being stopped (Ctrl-C again to force)[/]")
        engine.stop_all()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return fn(engine)
    finally:
        signal.signal(signal.SIGINT, previous)
        engine.close()


def cmd_baseline(args) -> int:
    def go(engine) -> int:
        with LiveReporter(engine):
            exps = engine.run_baseline(budget=args.budget)
        console.print(experiments_table(exps, engine.config.experiment.metric))
        print_status(engine)
        return 0 if all(e.status == Status.KEPT for e in exps) else 1

    return _with_engine(args, go)


def cmd_loop(args) -> int:
    def go(engine) -> int:
        with LiveReporter(engine):
            exps = engine.loop(args.iterations, budget=args.budget, proposer=args.proposer)
        console.print(experiments_table(exps, engine.config.experiment.metric))
        print_status(engine)
        return 130 if engine.stopping else 0

    return _with_engine(args, go)


def cmd_log(args) -> int:
    from .exports import as_json

    with opened(args) as engine:
        exps = engine.experiments()
        if args.limit:
            exps = exps[-args.limit:]
        if args.json:
            for e in exps:
                print(json.dumps(as_json(e)))
        else:
            console.print(experiments_table(exps, engine.config.experiment.metric))
    return 0


def _scored_by(e) -> str:
    if e.evaluator == "self-reported":
        return "the script's own printed number (self-reported metric: no fixed evaluator)"
    if e.evaluator:
        return f"the fixed evaluator ({e.evaluator}: the base commit's prepare.py, out of the trial's reach)"
    return ""


def cmd_show(args) -> int:
    with opened(args) as engine:
        e = engine.get(args.id)
        metric = engine.config.experiment.metric
        console.rule(f"experiment #{e.id}  [{STATUS_STYLE.get(e.status.value, '')}]{e.status.value}[/]")
        rows = [("source", e.source), ("hypothesis", e.hypothesis), ("predicted Δ", fmt(e.predicted_delta, "+.4f")),
                ("rationale", e.rationale), ("seed", str(e.seed)), (metric, fmt(e.metric, ".6f")),
                ("scored by", _scored_by(e)), ("printed", fmt(e.printed_metric, ".6f")),
                ("ran on", " · ".join(p for p in (f"{e.budget:g}s" if e.budget else "", e.node, e.device, e.data)
                                      if p)),
                ("Δ vs reference", fmt(e.delta, "+.4f")), ("σ", fmt(e.sigma)), ("z", fmt(e.z, ".2f")),
                ("verdict", e.verdict),
                ("sandbox", {True: "yes", False: "NO: ran with your full authority", None: ""}[e.sandboxed]),
                ("parent", (e.parent_commit or "")[:10] + (f" (rebased from {e.rebased_from[:10]}: the edit was "
                                                             "written against that commit)" if e.rebased_from else "")),
                ("commit", (e.commit or "")[:10]),
                ("rejection reason", e.rejection_reason or ""), ("log", e.log_path or "")]
        if e.crash:
            rows.append(("crash", f"{e.crash.file}:{e.crash.line}: {e.crash.message}"))
        if e.timings:
            names = {"limit": "kill limit"}
            rows.append(("timings", ", ".join(f"{names.get(k, k)} {v:.1f}s" for k, v in e.timings.items())))
        for k, v in rows:
            if v not in ("", "–", "None"):
                console.print(f"[bold]{k:>16}[/]  {v}")
        if e.summary:
            console.print("[bold]         summary[/]  " + "  ".join(f"{k}={v:g}" for k, v in e.summary.items()))
        if e.diff:
            console.print(Syntax(e.diff, "diff", theme="ansi_dark", background_color="default"))
        if e.log_path and os.path.exists(e.log_path):
            lines = Path(e.log_path).read_text(errors="replace").splitlines()[-args.tail:]
            console.rule("log tail")
            for line in lines:
                console.print(line, markup=False)
    return 0


def cmd_review(args) -> int:
    with opened(args) as engine:
        e = engine.review_result(args.id, args.decision == "accept", args.note)  # EngineError: why not
        console.print(f"#{e.id} [{STATUS_STYLE.get(e.status.value, '')}]{e.status.value}[/]: {escape(e.verdict)}")
    return 0


def cmd_status(args) -> int:
    with opened(args) as engine:
        print_status(engine)
    return 0


def cmd_export(args) -> int:
    with opened(args) as engine:
        out = Path(args.output or (engine.state_dir / f"experiments.{args.format}"))
        engine.export(out, fmt=args.format)
        console.print(f"wrote {out}")
    return 0


def cmd_adopt(args) -> int:
    with opened(args) as engine:
        path = engine.adopt(args.id)
        console.print(f"[green]adopted #{args.id}[/] into {path} (not committed: review and commit it)")
    return 0


def cmd_calibration(args) -> int:
    from .calibration import calibrate

    with opened(args) as engine:
        exps = engine.experiments()
        cal = calibrate(exps, engine.sigma(exps), engine.config.lower_is_better,
                        k=engine.config.judge.k, source=args.source)
    if args.json:
        print(json.dumps(cal.as_dict(points=args.points)))
        return 0
    table = Table(title="calibration: predicted vs measured Δ", show_header=False)

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.0f}%"

    table.add_row("proposals with a prediction", f"{cal.n_predicted} ({cal.n} measured)")
    table.add_row("sign accuracy", pct(cal.sign_accuracy))
    table.add_row("pearson r", fmt(cal.pearson, "+.2f"))
    table.add_row("predicted improvements", str(cal.predicted_improvements))
    table.add_row(f"  within noise (|z| < {cal.k:g})", str(cal.improvements_within_noise))
    table.add_row(f"  confirmed (z ≥ {cal.k:g})", str(cal.improvements_confirmed))
    table.add_row("mean |error|", fmt(cal.mean_abs_error, ".4f"))
    table.add_row("bias (measured − predicted)", fmt(cal.bias, "+.4f"))
    console.print(table)
    return 0


def cmd_demo(args) -> int:
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sigmaloop-demo-"))
    console.rule("[bold]sigmaloop demo")
    console.print("The embedded default: CPU, the offline corpus (this Python's standard library), "
                  f"the built-in Optuna tuner; {args.budget:g} s per trial.")
    ws = init_workspace(base, budget=args.budget)
    console.print(f"workspace: {ws}")
    run_prepare(ws)

    def go(engine) -> int:
        with LiveReporter(engine):
            console.rule(f"baseline on {len(engine.config.judge.seeds)} seeds")
            engine.run_baseline(budget=args.budget)
            console.rule(f"{args.iterations} tuned proposals")
            engine.loop(args.iterations, budget=args.budget, proposer="tune")
        console.print(experiments_table(engine.experiments(), engine.config.experiment.metric))
        print_status(engine)
        console.print(f"\n[bold]where everything is[/]\n  journal   {engine.state_dir / 'journal.db'}\n"
                      f"  logs      {engine.state_dir / 'logs'}\n  results   {engine.results_path()}\n"
                      f"  branch    {engine.branch} (every experiment at refs/sigmaloop/exp/<id>)\n"
                      f"  try       sigmaloop --workspace {ws} show 3")
        return 130 if engine.stopping else 0

    args.workspace = ws
    return _with_engine(args, go)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sigmaloop", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"sigmaloop {__version__}")
    p.add_argument("-w", "--workspace", type=Path, default=None,
                   help="workspace folder (default: the nearest folder with sigmaloop.toml)")
    p.add_argument("--trust-endpoint", action="append", default=[], metavar="HOST",
                   help="let the API key go to HOST although a project's settings chose it (llm.base_url)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="make a folder a workspace: your script (--script), an autoresearch "
                                     "project (detected), or the embedded trainer (an empty folder)")
    s.add_argument("dir", nargs="?", default=".")
    s.add_argument("--script", default=None, help="your training script, inside the folder: the file the loop edits")
    s.add_argument("--metric", default=None,
                   help="with --script: the name the script prints as `name: value` when it ends")
    s.add_argument("--direction", default=None, help="minimize (lower is better, the default) or maximize")
    s.add_argument("--command", default=None,
                   help='how a trial runs it (default "python SCRIPT"; a leading python is the trial interpreter)')
    s.add_argument("--budget", type=float, default=None,
                   help="training seconds per trial (default 60; an autoresearch project's TIME_BUDGET)")
    s.add_argument("--trainer", action="store_true",
                   help="copy sigmaloop's trainer even though the folder has Python files")
    s.add_argument("--no-commit", action="store_true", help="write the files but commit nothing")
    s.add_argument("--force", action="store_true", help="rewrite an existing config / replace trainer files")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("prepare", help="build the data cache and tokenizer (runs prepare.py)")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("baseline", help="run the current code on the judge's seeds")
    s.add_argument("--budget", type=float, default=None, help="training seconds (default: the config's)")
    s.add_argument("--slots", type=int, default=None, help="trials at once (default: runner.slots)")
    s.set_defaults(fn=cmd_baseline)

    s = sub.add_parser("loop", help="propose, run, judge and keep, N times")
    s.add_argument("--iterations", "-n", type=int, default=10)
    s.add_argument("--slots", type=int, default=None,
                   help="trials at once, each slot refilled as it frees (default: runner.slots)")
    s.add_argument("--budget", type=float, default=None, help="training seconds (default: the config's)")
    s.add_argument("--proposer", choices=["tune", "llm"], default=None, help="default: the config's")
    s.set_defaults(fn=cmd_loop)

    s = sub.add_parser("log", help="the experiments as a table")
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(fn=cmd_log)

    s = sub.add_parser("show", help="one experiment: diff, metrics, verdict, log tail")
    s.add_argument("id", type=int)
    s.add_argument("--tail", type=int, default=20, help="log lines to show")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("status", help="reference ± sigma, best so far, counts")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("export", help="every field of every experiment, as jsonl or csv")
    s.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    s.add_argument("--output", "-o", default=None)
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("adopt", help="copy a kept experiment's script into your working tree")
    s.add_argument("id", type=int)
    s.set_defaults(fn=cmd_adopt)

    s = sub.add_parser("review", help="accept or reject the result of an implausibly large gain held for a look")
    s.add_argument("id", type=int)
    s.add_argument("decision", choices=("accept", "reject"))
    s.add_argument("--note", default="", help="why (kept in the journal)")
    s.set_defaults(fn=cmd_review)

    s = sub.add_parser("calibration", help="how well predicted effects matched measured ones")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.add_argument("--points", action="store_true", help="with --json: every (predicted, measured) pair")
    s.add_argument("--source", default=None, help='only sources starting with this, e.g. "llm"')
    s.set_defaults(fn=cmd_calibration)

    s = sub.add_parser("demo", help="the embedded default: the baseline seeds + N tuned proposals on CPU")
    s.add_argument("--dir", default=None, help="workspace folder (default: a new temporary one)")
    s.add_argument("--budget", type=float, default=15.0, help="training seconds per trial (default 15)")
    s.add_argument("--iterations", "-n", type=int, default=4)
    s.set_defaults(fn=cmd_demo)
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """Engine errors whose message tells the user what to do: printed without a traceback."""
    from .engine import EngineError
    from .journal import JournalError
    from .ratchet import RatchetError

    return (EngineError, JournalError, RatchetError)


def main(argv: list[str] | None = None) -> int:
    from . import secret

    secret.take_from_environment()  # before any child (git, trials, pip) could inherit the key
    args = build_parser().parse_args(argv)
    for host in args.trust_endpoint:
        secret.trust(host)
    try:
        return args.fn(args)
    except (CLIError, config_mod.ConfigError, project.InitError, *_user_errors()) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        return 130
    finally:
        time.sleep(0)


if __name__ == "__main__":
    sys.exit(main())
