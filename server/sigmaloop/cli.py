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

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from . import __version__, project
from . import config as config_mod
from .events import Event, ExperimentUpdated, LoopState, Notice, TrialProgress
from .lifecycle import Phase, delta_words, explain, short
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


def _cut(text: str, width: int) -> Text:
    """``text`` on one line, at most ``width`` cells, cut with "…"."""
    t = Text(" ".join((text or "").split()))
    if width <= 0:
        return Text("")
    if cell_len(t.plain) > width:
        t.truncate(width, overflow="ellipsis")
    return t


class _Col:
    def __init__(self, name: str, cells: list[str], right: bool = False, styles: list[str] | None = None):
        self.name, self.cells, self.right = name, cells, right
        self.styles = styles or [""] * len(cells)
        self.width = max([cell_len(c) for c in cells] + [cell_len(name)])

    def cell(self, text: str, style: str = "") -> Text:
        pad = " " * (self.width - cell_len(text))
        return Text.assemble(pad, (text, style)) if self.right else Text.assemble((text, style), pad)


def log_lines(exps: list[Experiment], metric: str, lower_is_better: bool, width: int) -> list[Text]:
    """The experiments, one line each, at most ``width`` cells: id, status, the metric, Δ in
    words ("0.0120 better"), a short verdict, the question it tests (when any does), the
    hypothesis cut to what is left; wider terminals add z, source and seed. ``show ID`` has the rest."""
    ids = _Col("#", [str(e.id) for e in exps], right=True)
    status = _Col("status", [e.status.value + ("*" if e.sandboxed is False else "") for e in exps],
                  styles=[STATUS_STYLE.get(e.status.value, "") for e in exps])
    metric_name = metric if len(metric) <= 12 else metric[:11] + "…"
    value = _Col(metric_name, [fmt(e.metric) for e in exps], right=True)
    delta = _Col("Δ vs ref", [delta_words(e.delta, lower_is_better) or ("" if e.is_baseline else "–")
                              for e in exps])
    why = _Col("verdict", [short(e) for e in exps], styles=["dim"] * len(exps))
    cols = [ids, status, value, delta, why]
    if any(e.question is not None for e in exps):
        cols.append(_Col("q", ["" if e.question is None else f"q{e.question}" for e in exps]))
    gap = 1 if width < 100 else 2
    extras = [_Col("z", ["" if e.z is None or e.is_baseline else f"{abs(e.z):.1f}σ" for e in exps], right=True),
              _Col("source", [e.source for e in exps]),
              _Col("seed", ["" if e.seed is None else str(e.seed) for e in exps], right=True)]

    def fixed(cs: list[_Col]) -> int:
        return sum(c.width + gap for c in cs)

    for extra in extras:  # while the hypothesis keeps 40 cells
        if width - fixed([*cols, extra]) >= 40:
            cols.insert(len(cols) if extra.name != "z" else 4, extra)
    room = width - fixed(cols)
    head = Text(" " * gap).join([c.cell(c.name) for c in cols])
    if room > 0:
        head.append(" " * gap + "hypothesis"[:room])
    head.stylize("bold")
    out = [head]
    for i, e in enumerate(exps):
        line = Text(" " * gap).join([c.cell(c.cells[i], c.styles[i]) for c in cols])
        if room > 0:
            line.append(" " * gap)
            line.append_text(_cut(e.hypothesis, room))
        out.append(line)
    for line in out:  # never more than the width, whatever the cells held
        if cell_len(line.plain) > width:
            line.truncate(width, overflow="ellipsis")
    return out


def print_log(exps: list[Experiment], metric: str, lower_is_better: bool) -> None:
    for line in log_lines(exps, metric, lower_is_better, console.width):
        console.print(line, no_wrap=True, overflow="ellipsis", crop=True)
    if any(e.sandboxed is False for e in exps):
        console.print("[red]*[/] ran unsandboxed, with your full authority")


def print_learned(engine, exps: list[Experiment] | None = None, title: str = "what it learned") -> None:
    """The end of a loop, the demo, `sigmaloop report`: learned.learned's sentences."""
    from .learned import learned

    console.rule(f"[bold]{title}")
    for line in learned(engine.experiments() if exps is None else exps, engine.state()):
        console.print(Padding(Text(line), (0, 0, 0, 2), expand=False))


class LiveReporter:
    """Renders engine events: a progress bar per running trial, a line per verdict."""

    def __init__(self, engine, quiet: bool = False):
        self.engine = engine
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]#{task.fields[exp]}[/] {task.description}"), BarColumn(bar_width=20),
            TextColumn("{task.fields[what]}"), TextColumn("loss {task.fields[loss]}"),
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
                frac = min(1.0, last.frac)
                # the budget is spent: what remains is the evaluation, not more training
                what = "evaluating…" if frac >= 1.0 else f"{100 * frac:3.0f}%"
                self.progress.update(self.tasks[event.exp_id], completed=frac * 100, loss=loss, what=what)
            elif isinstance(event, ExperimentUpdated):
                self._on_experiment(event.experiment)
            elif isinstance(event, LoopState) and event.running and event.iteration and not self.quiet:
                key = (-event.iteration, "loop")
                if key not in self.announced:
                    self.announced.add(key)
                    console.rule(f"iteration {event.iteration} of {event.iterations}")

    def _on_experiment(self, e: Experiment) -> None:
        if e.status == Status.RUNNING and e.id not in self.tasks and e.phase == Phase.TRAINING:
            label = " ".join((e.hypothesis or e.source).split())
            label = label if len(label) <= 28 else label[:27] + "…"
            self.tasks[e.id] = self.progress.add_task(escape(label), total=100, exp=e.id, loss="–", what="  0%")
            return
        if e.phase == Phase.CONFIRMING and (e.id, "confirm") not in self.announced:
            self.announced.add((e.id, "confirm"))
            print_rows([(f"#{e.id}", e.verdict)], indent=2)
        if e.id in self.tasks and e.status != Status.RUNNING:
            self.progress.remove_task(self.tasks.pop(e.id))
        if e.status in _ANNOUNCED and (e.id, e.status.value) not in self.announced:
            self.announced.add((e.id, e.status.value))
            style = STATUS_STYLE.get(e.status.value, "")
            text = e.verdict if e.status != Status.PROPOSED else e.hypothesis
            if e.status == Status.CRASHED and e.crash:
                text += f" (at {e.crash.file}:{e.crash.line}; sigmaloop show {e.id} for the log)"
            rows: list[tuple[str, str | Text]] = [(f"#{e.id}", Text.assemble((e.status.value, style), " ", text))]
            if e.confirms is None:  # a confirmation's warnings are its candidate's, said once
                rows += [("warning", sentence) for sentence in (e.warnings or {}).values()]
            print_rows(rows, indent=2)


_ANNOUNCED = frozenset({Status.PROPOSED, Status.REJECTED, Status.KEPT, Status.DISCARDED, Status.CRASHED,
                        Status.TIMEOUT, Status.INTERRUPTED, Status.PRUNED, Status.OVER_BUDGET, Status.TAMPERED})


def print_rows(rows: list[tuple[str, str | Text]], indent: int = 0) -> None:
    """label  value rows; a long value wraps under itself, not under the labels. Values that
    are plain strings are printed as text (no markup); empty ones are left out."""
    grid = Table.grid(padding=(0, 2))
    if indent:
        grid.add_column(width=indent - 2 if indent > 2 else None, no_wrap=True)
    grid.add_column(no_wrap=True, style="bold", min_width=7 if indent else None)  # "warning" lines up
    grid.add_column(overflow="fold")
    for label, value in rows:
        if isinstance(value, str) and value in ("", "–", "None"):
            continue
        style = "yellow" if label.startswith("warning") or label == "noise" else ""
        cell = Text(value, style=style) if isinstance(value, str) else value
        grid.add_row(*([""] if indent else []), Text(label, style="bold " + style), cell)
    console.print(grid)


def print_status(engine) -> None:
    head = engine.head()
    s = engine.state()
    better = "lower" if s.direction == "minimize" else "higher"
    rows: list[tuple[str, str | Text]] = [("workspace", str(engine.workspace)),
                                          ("branch", f"{engine.branch} @ {head[:8]}")]
    ref = s.reference
    if ref is None:
        rows.append(("reference", f"{s.metric}: none yet ({better} is better; run `sigmaloop baseline`)"))
    else:
        sigma = "" if ref.sigma is None else f" ± {ref.sigma:.4f}"
        n = len(ref.seeds)
        seeds = f"{n} seed{'s' if n != 1 else ''}"
        rows.append(("reference", f"{s.metric} {ref.value:.6f}{sigma} over {seeds} ({better} is better)"))
        if s.best is not None:
            # the best is the head's code, measured as the mean over its seeds, never one lucky seed
            what = "the baseline" if s.best.hypothesis.startswith("baseline") else s.best.hypothesis
            rows.append(("best", f"{ref.value:.6f}, the head's mean over {seeds}: #{s.best.id} {what}"))
        if ref.keep_threshold is not None:
            rows.append(("keep bar", f"an edit must be ≥ {ref.keep_threshold:.4f} {s.metric} {better} "
                                     f"({100 * ref.keep_threshold / abs(ref.value or 1):.2f}%) to be kept"))
        else:
            rows.append(("keep bar", "none yet: σ needs two seeds of the head (sigmaloop baseline)"))
        rows.append(("noise", ref.advice or ""))
    rows.append(("kept", f"{s.kept} of {s.run} edits run"))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
    rows.append(("journal", counts or "empty"))
    if s.questions:
        n_open = sum(1 for q in s.questions if q.status == "open")
        rows.append(("questions", f"{n_open} open of {len(s.questions)} (sigmaloop questions)"))
    if s.running:
        rows.append(("running", ", ".join("#" + str(i) for i in s.running)))
    print_rows(rows)


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
        print_log(exps, engine.config.experiment.metric, engine.config.lower_is_better)
        console.rule("[bold]baseline done")
        print_status(engine)
        return 0 if all(e.status == Status.KEPT for e in exps) else 1

    return _with_engine(args, go)


def cmd_loop(args) -> int:
    def go(engine) -> int:
        before = engine.max_rev()
        with LiveReporter(engine):
            engine.loop(args.iterations, budget=args.budget, proposer=args.proposer)
        # this loop's rows: what it proposed and ran (confirmations and re-queued rows too)
        exps = [e for e in engine.experiments() if e.rev > before]
        print_log(exps, engine.config.experiment.metric, engine.config.lower_is_better)
        print_learned(engine, exps, "the loop " + ("stopped" if engine.stopping else "is done") + ": what it learned")
        _wrote_report(engine)
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
            print_log(exps, engine.config.experiment.metric, engine.config.lower_is_better)
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
        metric, lib = engine.config.experiment.metric, engine.config.lower_is_better
        console.rule(f"experiment #{e.id}  [{STATUS_STYLE.get(e.status.value, '')}]{e.status.value}[/]")
        question = ""
        if e.question is not None:
            try:
                question = f"#{e.question} {engine.question(e.question).question.text}"
            except _user_errors():  # a question row gone is no reason not to show the rest
                question = f"#{e.question}"
        rows = [("source", e.source), ("question", question), ("hypothesis", e.hypothesis),
                ("predicted", delta_words(e.predicted_delta, lib, metric)),
                ("rationale", e.rationale), ("seed", str(e.seed)), (metric, fmt(e.metric, ".6f")),
                ("scored by", _scored_by(e)), ("printed", fmt(e.printed_metric, ".6f")),
                ("ran on", " · ".join(p for p in (f"{e.budget:g}s" if e.budget else "", e.node, e.device, e.data)
                                      if p))]
        rows += explain(e, metric, lib)
        rows += [("sandbox", {True: "yes", False: "NO: ran with your full authority", None: ""}[e.sandboxed]),
                 ("parent", (e.parent_commit or "")[:10] + (f" (rebased from {e.rebased_from[:10]}: the edit was "
                                                            "written against that commit)" if e.rebased_from else "")),
                 ("commit", (e.commit or "")[:10]),
                 ("rejection reason", e.rejection_reason or ""), ("log", e.log_path or "")]
        if e.crash:
            rows.append(("crash", f"{e.crash.file}:{e.crash.line}: {e.crash.message}"))
        if e.timings:
            names = {"limit": "kill limit"}
            rows.append(("timings", ", ".join(f"{names.get(k, k)} {v:.1f}s" for k, v in e.timings.items())))
        if e.summary:
            rows.append(("summary", "  ".join(f"{k}={v:g}" for k, v in e.summary.items())))
        print_rows(rows)
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
    if args.mlflow is not None:
        return _export_mlflow(args)
    with opened(args) as engine:
        out = Path(args.output or (engine.state_dir / f"experiments.{args.format}"))
        engine.export(out, fmt=args.format)
        console.print(f"wrote {out}")
    return 0


def _export_mlflow(args) -> int:
    from .mlflow_export import MlflowExportError, MlflowMissing, export_mlflow

    # MLflow 3 reports usage to its makers unless told not to; a researcher's runs stay theirs
    # (set MLFLOW_DISABLE_TELEMETRY=false to allow it)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with opened(args) as engine:
        total = len(engine.experiments())
        progress = Progress(TextColumn("MLflow"), BarColumn(bar_width=30), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=console, transient=True)
        try:
            with progress:
                task = progress.add_task("export", total=total)
                done = export_mlflow(engine, args.mlflow or None, args.experiment,
                                     progress=lambda n, _total: progress.update(task, completed=n))
        except MlflowMissing as exc:
            err.print(f"[red]{escape(str(exc))}[/]")
            return 2
        except MlflowExportError as exc:
            err.print(f"[red]MLflow export failed:[/] {escape(str(exc))}")
            return 2
    console.print(f"MLflow: {done.created} new, {done.updated} updated, {done.unchanged} unchanged runs in "
                  f"experiment {escape(done.experiment_name)!r} at {escape(done.uri)}", soft_wrap=True)
    console.print(f"  look: {escape(done.ui_hint)}", soft_wrap=True)
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


def cmd_report(args) -> int:
    with opened(args) as engine:
        report = engine.report(since=args.since or None)
        print_report(report)
        if args.no_html:
            return 0
        from .report import render

        path = Path(args.html) if args.html else engine.state_dir / "report.html"
        from .exports import write_atomic

        write_atomic(path, render(report))
        console.print(f"\n[bold]report[/] {path.resolve().as_uri()}", soft_wrap=True)
        console.print("  one page, no network: open it in a browser, or run [bold]sigmaloop: Open Morning Report[/] "
                      "in VS Code")
    return 0


def _wrote_report(engine) -> None:
    """The end of a loop: the morning report's page, written beside the journal (never fatal)."""
    try:
        path = engine.write_report()
    except Exception as exc:  # a report must never turn a finished loop into a failure
        err.print(f"[yellow]the report page could not be written:[/] {escape(str(exc))}")
        return
    console.print(f"morning report: {path.resolve().as_uri()} (sigmaloop report prints its summary)", soft_wrap=True)


def print_report(r) -> None:
    """The morning report in the terminal: the same fields as the page, a line each."""
    from .questions import fmt_effect
    from .report.model import REFUTED_TITLES
    from .report.page import duration

    def say(text: str, indent: int = 2) -> None:
        console.print(Padding(Text(text), (0, 0, 0, indent), expand=False))

    console.rule(f"[bold]{escape(r.title)}")
    for line in r.learned:
        say(line)
    if r.kept:
        console.print(f"[bold green]kept[/] ({len(r.kept)})")
        for it in r.kept:
            say(f"#{it.id} {_cut_text(it.hypothesis, 50)}: {fmt_effect(it.effect) if it.effect else it.short}")
    if r.refuted:
        groups = [f"{sum(1 for x in r.refuted if x.kind == k)} {t}" for k, t in REFUTED_TITLES.items()
                  if any(x.kind == k for x in r.refuted)]
        console.print(f"[bold]refuted[/] ({len(r.refuted)}): {', '.join(groups)}")
        for x in r.refuted[:5]:
            it = x.item
            pred = "" if x.prediction_excluded is None else \
                ("; the prediction is outside the interval" if x.prediction_excluded else "; the prediction is not ruled out")
            say(f"#{it.id} {_cut_text(it.hypothesis, 50)}: {fmt_effect(it.effect) if it.effect else it.short}{pred}")
        if len(r.refuted) > 5:
            say(f"… {len(r.refuted) - 5} more in the page")
    for pc in r.calibration:
        c = pc.calibration
        acc = "–" if c.sign_accuracy is None else f"{100 * c.sign_accuracy:.0f}%"
        console.print(f"[bold]predictions[/] {escape(pc.source)}: {c.n_predicted} made, {c.n} measured, "
                      f"direction right {acc}, {c.improvements_confirmed} of {c.predicted_improvements} predicted "
                      f"improvements cleared {c.k:g}σ")
    if r.weird:
        console.print(f"[bold yellow]weird[/] ({len(r.weird)})")
        for w in r.weird[:8]:
            say(f"#{w.item.id} {w.what}: {w.message}")
        if len(r.weird) > 8:
            say(f"… {len(r.weird) - 8} more in the page")
    n, c = r.noise, r.cost
    if n.reference is not None:
        sigma = f" ± {n.sigma:.4f} ({n.sigma_dof} dof)" if n.sigma is not None else ""
        bar = f", keep bar {n.keep_threshold:.4g}" + (f" ({n.keep_pct:.1f}%)" if n.keep_pct else "") \
            if n.keep_threshold else ""
        console.print(f"[bold]noise[/] reference {n.reference:.4f}{sigma}{bar}; {n.baseline_runs} baseline and "
                      f"{n.confirmation_runs} confirmation runs, {duration(n.hours)} of trial time")
    tokens = "; ".join(f"{src} {t['total']:,} tokens" for src, t in sorted(c.tokens.items()))
    console.print(f"[bold]cost[/] {duration(c.trial_hours)} of trial time over {c.experiments} trials"
                  + (f"; {escape(tokens)}" if tokens else ""))
    for step in r.next_steps:
        console.print(f"[bold]next[/] {escape(step)}")
    for q in r.questions:
        if q.status == "open":
            console.print(f"[bold cyan]question #{q.id}[/] {escape(_cut_text(q.text, 60))}: {escape(q.verdict)}")
            for sug in q.suggestions:
                say(sug, 4)


def _cut_text(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


# -- research questions -------------------------------------------------------------------------------
def cmd_ask(args) -> int:
    with opened(args) as engine:
        q = engine.ask(args.text, args.decision or "")
        console.print(f"question [bold]#{q.id}[/] (open): {escape(q.text)}")
        if q.decision:
            console.print(f"  decision: {escape(q.decision)}")
        console.print(f"  proposals now say which question they test; `sigmaloop question {q.id}` shows its "
                      f"experiments, `sigmaloop run-edit --question {q.id}` runs your edit for it")
    return 0


def cmd_questions(args) -> int:
    with opened(args) as engine:
        qs = engine.state().questions
        if not args.all:
            qs = [q for q in qs if q.status == "open"] or qs
        if not qs:
            console.print('no questions yet: sigmaloop ask "Does a longer warmup help at this budget?" '
                          '--decision "what result would change your next step"')
            return 0
        width = console.width
        for q in qs:
            style = {"open": "cyan", "answered": "green", "dropped": "dim"}.get(q.status, "")
            n = len(q.experiments)
            head = Text.assemble((f"#{q.id} ", "bold"), (f"{q.status:<8} ", style), f"{n:>3} exp  ")
            head.append_text(_cut(q.text, width - cell_len(head.plain)))
            console.print(head, no_wrap=True, crop=True)
            console.print(Text("    ").append_text(_cut(q.verdict, width - 4)).copy(), style="dim",
                          no_wrap=True, crop=True)
    return 0


def cmd_question(args) -> int:
    with opened(args) as engine:
        if args.close is not None or args.drop is not None or args.reopen:
            if args.reopen:
                q = engine.close_question(args.id, "", "open")
            elif args.drop is not None:
                q = engine.close_question(args.id, args.drop, "dropped")
            else:
                q = engine.close_question(args.id, args.close, "answered")
            console.print(f"question #{q.id} is {q.status.value}" + (f": {escape(q.answer)}" if q.answer else ""))
            return 0
        print_question(engine, args.id)
    return 0


def print_question(engine, qid: int) -> None:
    """A question's page: its words, the decision it feeds, where it stands, its experiments
    with their effects and 95% intervals, one line each."""
    view = engine.question(qid)
    q = view.question
    metric = engine.config.experiment.metric
    style = {"open": "cyan", "answered": "green", "dropped": "dim"}.get(q.status.value, "")
    console.rule(f"question #{q.id}  [{style}]{q.status.value}[/]")
    print_rows([("question", q.text), ("decision", q.decision), ("stands", view.verdict),
                ("answer", q.answer if q.status.value != "open" else ""),
                ("from", "program.md" if q.source == "program.md" else "")])
    if not view.experiments:
        console.print(f"[dim]no experiment tests it yet: the LLM proposer is steered to open questions; "
                      f"`sigmaloop run-edit --question {q.id}` runs your own edit for it[/]")
        return
    effects = {f.exp_id: f for f in view.effects}
    cells = []
    for e in view.experiments:
        f = effects.get(e.id)
        if f is not None:
            size = delta_words(-f.better, True) + f" ± {(f.high - f.low) / 2:.4f}"
        else:
            size = "–"
        cells.append((e, size))
    level = view.effects[0].level if view.effects else 0.95
    console.print(f"[bold]experiments[/] (the effect in {metric}, ± its {100 * level:.0f}% interval)")
    ids = _Col("#", [f"#{e.id}" for e, _ in cells], right=True)
    status = _Col("status", [e.status.value for e, _ in cells], styles=[STATUS_STYLE.get(e.status.value, "")
                                                                       for e, _ in cells])
    size = _Col("effect", [c for _, c in cells])
    why = _Col("verdict", [short(e) for e, _ in cells], styles=["dim"] * len(cells))
    cols = [ids, status, size, why]
    room = console.width - sum(c.width + 1 for c in cols) - 2
    for i, (e, _) in enumerate(cells):
        line = Text("  ").append_text(Text(" ").join([c.cell(c.cells[i], c.styles[i]) for c in cols]))
        if room > 0:
            line.append(" ")
            line.append_text(_cut(e.hypothesis, room))
        console.print(line, no_wrap=True, crop=True)


def cmd_run_edit(args) -> int:
    def go(engine) -> int:
        path = Path(args.file) if args.file else engine.workspace / engine.script_name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"can't read {path}: {exc}") from None
        status = engine.edit_status(text)
        console.print(escape(status.summary))
        exp = engine.run_edit(text, args.hypothesis or "", args.predicted_delta, args.question)
        console.print(f"#{exp.id} queued (source user): {escape(exp.hypothesis)}")
        with LiveReporter(engine, quiet=True):
            exp = engine.run_if_queued(exp.id, args.budget)
        metric, lib = engine.config.experiment.metric, engine.config.lower_is_better
        print_rows(explain(exp, metric, lib))
        console.print(f"[dim]sigmaloop show {exp.id} for the diff and the log[/]")
        return 0 if exp.status in (Status.KEPT, Status.DISCARDED) else 1

    return _with_engine(args, go)


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
        print_log(engine.experiments(), engine.config.experiment.metric, engine.config.lower_is_better)
        console.print(f"\n[bold]where everything is[/]\n  journal   {engine.state_dir / 'journal.db'}\n"
                      f"  logs      {engine.state_dir / 'logs'}\n  results   {engine.results_path()}\n"
                      f"  branch    {engine.branch} (every experiment at refs/sigmaloop/exp/<id>)\n"
                      f"  try       sigmaloop --workspace {ws} show 3", soft_wrap=True)
        print_learned(engine, title="what the demo learned")
        _wrote_report(engine)
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

    s = sub.add_parser("log", help="the experiments, one line each (`show ID` for the rest)")
    s.add_argument("--limit", type=int, default=0)
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(fn=cmd_log)

    s = sub.add_parser("show", help="one experiment: diff, metrics, verdict, log tail")
    s.add_argument("id", type=int)
    s.add_argument("--tail", type=int, default=20, help="log lines to show")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("status", help="reference ± sigma, the best (the head's mean), the keep bar, counts")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("export", help="every field of every experiment, as jsonl or csv, or to MLflow")
    s.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    s.add_argument("--output", "-o", default=None)
    s.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                   help="log every experiment to an MLflow tracking store (default: a SQLite store under the state "
                        "folder); needs sigmaloop[mlflow]")
    s.add_argument("--experiment", default=None, help="with --mlflow: the MLflow experiment's name "
                                                      "(default <workspace>/<branch>)")
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

    s = sub.add_parser("report", help="the morning report: what was kept, refuted and weird, as one HTML page "
                                      "and a terminal summary")
    s.add_argument("--since", type=int, default=0, help="only experiments from this id on (the night)")
    s.add_argument("--html", metavar="PATH", default=None, help="where to write the page (default: "
                                                                "<state>/report.html)")
    s.add_argument("--no-html", action="store_true", help="the terminal summary only")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("ask", help="state a research question (and the result that would change your decision)")
    s.add_argument("text", help='e.g. "Does a longer warmup help at a 60 s budget?"')
    s.add_argument("--decision", "-d", default="",
                   help='what result would change your next decision, e.g. "≥ 0.01 bpb better: I keep it"')
    s.set_defaults(fn=cmd_ask)

    s = sub.add_parser("questions", help="the research questions: status, experiments, where each stands")
    s.add_argument("--all", action="store_true", help="answered and dropped ones too")
    s.set_defaults(fn=cmd_questions)

    s = sub.add_parser("question", help="one question's page: its experiments with effects and 95%% intervals")
    s.add_argument("id", type=int)
    s.add_argument("--close", metavar="ANSWER", default=None, help="close it as answered, with what you learned")
    s.add_argument("--drop", metavar="WHY", default=None, help="close it without an answer")
    s.add_argument("--reopen", action="store_true", help="open a closed question again")
    s.set_defaults(fn=cmd_question)

    s = sub.add_parser("run-edit", help="run your edit of the train script as an experiment (source user)")
    s.add_argument("file", nargs="?", default=None,
                   help="the edited script (default: the workspace's train script as saved)")
    s.add_argument("--hypothesis", "-H", default="", help="what you expect and why (default: the diff's size)")
    s.add_argument("--predicted-delta", type=float, default=None,
                   help="the change in the metric you expect (signed, metric units)")
    s.add_argument("--question", "-q", type=int, default=None, help="the research question it tests")
    s.add_argument("--budget", type=float, default=None, help="training seconds (default: the config's)")
    s.set_defaults(fn=cmd_run_edit)

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
