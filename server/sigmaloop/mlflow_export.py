"""The journal in an MLflow tracking store: one MLflow run per experiment, where people already look.

Every experiment becomes a run (baselines, confirmations nested under the run they confirm,
crashes, and rejected proposals too, so the night is complete): params are the constants the
edit changed (new values as written) plus seed, budget and source; metrics are the judged
metric, Δ, z, σ, the effect with its 95% interval, the summary block (``summary/…``), the
timings (``timings/…``), the verdict's numbers (``verdict/…``) and the training curve as
metric history (``train_loss``, extras as ``train/<name>``, step = the trainer's step; at
most :data:`MAX_CURVE_POINTS`);
tags say status, verdict, hypothesis, question, commits and the curve's anomalies (``anomaly.<kind>``,
left out once dismissed); ``edit.diff`` and ``trial.log`` are
artifacts. What a run holds is built by :func:`run_record` (pure); :func:`export_mlflow`
writes it.

Decisions:

* The store defaults to ``sqlite:///<state dir>/mlflow/mlflow.db`` with artifacts beside it:
  MLflow 3's file store is in maintenance mode, and the state folder is git-ignored.
* The MLflow experiment defaults to ``<workspace folder>/<research branch>``
  (``myproj/sigmaloop/apr20``); runs are found again by the tags ``sigmaloop.key`` (a hash of
  the workspace path and branch) and ``sigmaloop.exp_id``, so several workspaces can share one
  store and an export run twice never duplicates a run.
* A run whose ``sigmaloop.rev`` tag equals the experiment's revision is left alone. A changed
  one is updated in place (its run id stays; new curve points appended); when something MLflow
  cannot change was changed (a param's value, the start time: a proposal that has since
  started, a re-run), the run is deleted (MLflow hides it; ``mlflow gc`` removes it) and made
  again. A running experiment is synced on every export: its curve grows between revisions.
* ``mlflow`` is imported only here, only when exporting: the engine runs without it. MLflow 3
  sends its own anonymous usage telemetry unless ``MLFLOW_DISABLE_TELEMETRY=true`` or
  ``DO_NOT_TRACK=true`` is set; this module leaves the caller's environment as it is.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import logging
import math
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import questions as questions_mod
from .anomaly import Anomaly
from .diff import EditError, change_blocks, parse_hunks
from .models import Experiment, ProgressRecord, Question, Status
from .output import NONFINITE_LOSS

if TYPE_CHECKING:  # the engine imports nothing of this module; typing only
    from .engine import Engine

__all__ = [
    "EXPORT_VERSION",
    "MlflowExport",
    "MlflowExportError",
    "MlflowMissing",
    "RunRecord",
    "changed_constants",
    "default_uri",
    "export_mlflow",
    "redact",
    "run_record",
]

#: bump when what a run holds changes: every run is rewritten once on the next export
EXPORT_VERSION = "2"
#: a trial log larger than this stays out of the store (its path is a tag)
MAX_LOG_BYTES = 5 << 20
#: a longer curve is sent evenly thinned, first and last points kept (the journal keeps them
#: all): MLflow's SQL store writes ~3k points a second, and its charts sample anyway. A 5-minute
#: run of the trainer logs ~1200.
MAX_CURVE_POINTS = 2000
INSTALL_HINT = 'pip install "sigmaloop[mlflow]"'

# MLflow's limits (mlflow.utils.validation), kept here so a record is valid before it is sent
_MAX_PARAM = 6000
_MAX_TAG = 8000
_MAX_KEY = 250
_PER_BATCH = 1000  # entities per log_batch
_PARAMS_TAGS_PER_BATCH = 100

#: MLflow run status for each sigmaloop status
RUN_STATUS = {
    Status.PROPOSED: "SCHEDULED", Status.ACCEPTED: "SCHEDULED", Status.QUEUED: "SCHEDULED",
    Status.RUNNING: "RUNNING",
    Status.KEPT: "FINISHED", Status.DISCARDED: "FINISHED",
    Status.CRASHED: "FAILED", Status.TIMEOUT: "FAILED", Status.TAMPERED: "FAILED",
    Status.OVER_BUDGET: "FAILED",
    Status.INTERRUPTED: "KILLED", Status.PRUNED: "KILLED",
    Status.REJECTED: "KILLED",  # never ran: logged so the night's record is complete
}
_RESERVED_PARAMS = ("seed", "budget", "source")
#: tag keys this module writes besides ``sigmaloop.*`` and ``warning.*`` (others are left alone)
_OWN_TAGS = frozenset({
    "status", "reason", "verdict", "detail", "hypothesis", "predicted_delta", "rationale",
    "question", "question_text", "source", "commit", "parent_commit", "rebased_from", "confirms",
    "seed", "evaluator", "device", "node", "sandboxed", "crash", "rejection_reason", "log_path",
    "mlflow.note.content", "mlflow.source.git.commit", "mlflow.parentRunId",
})


class MlflowMissing(RuntimeError):
    """The mlflow client is not installed."""

    def __init__(self) -> None:
        super().__init__(f"exporting to MLflow needs the mlflow client: {INSTALL_HINT}")


class MlflowExportError(RuntimeError):
    """The tracking store can't be opened or written (a bad URI, a deleted experiment)."""


@dataclass
class MlflowExport:
    """What an export did, and where to look at it."""

    uri: str
    experiment_id: str
    experiment_name: str
    created: int
    updated: int
    unchanged: int
    artifact_root: str | None  # where the artifacts went (None: the store decides)

    @property
    def ui_hint(self) -> str:
        """The command line that shows the export (MLflow's UI is not in the client extra)."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri}/#/experiments/{self.experiment_id}"
        if self.uri.startswith("databricks"):
            return f"open the experiment {self.experiment_name!r} in your Databricks workspace"
        return f"pip install mlflow && mlflow ui --backend-store-uri {self.uri}"


@dataclass
class RunRecord:
    """One experiment as an MLflow run: everything :func:`export_mlflow` sends for it."""

    exp_id: int
    name: str
    status: str  # an MLflow RunStatus name
    start_ms: int
    end_ms: int | None
    params: dict[str, str]
    metrics: dict[str, float]  # single values, logged at step 0
    history: dict[str, list[tuple[int, float, int]]]  # key → (step, value, timestamp ms)
    tags: dict[str, str]
    diff: str
    log_path: str | None  # the trial log to attach (exists and under MAX_LOG_BYTES)
    parent: int | None = None  # the experiment whose run this one nests under (a confirmation)


# --- what a run holds (pure) ---------------------------------------------------------------------

def changed_constants(diff: str) -> dict[str, str]:
    """The names an edit assigns, each with its new value as written, in diff order
    (``+LR = 0.05  # up`` → ``{"LR": "0.05"}``). A name whose new value is not on one added
    line (removed, or a multi-line value) maps to ``"(see edit.diff)"``."""
    out: dict[str, str] = {}
    try:
        hunks = parse_hunks(diff)
    except EditError:
        hunks = []
    for hunk in hunks:
        for tag, content in hunk.body:
            if tag != "+":
                continue
            line = content.strip()  # dedented: an assignment inside a function parses alone
            try:
                tree = ast.parse(line)
            except SyntaxError:
                continue
            for stmt in tree.body:
                target, value = _assigned(stmt)
                if target is not None and value is not None:
                    out[target] = ast.get_source_segment(line, value) or ""
    # questions.changed_names is the one reading of "what an edit changed" (the loop credits
    # questions by it): every name it finds is a param, with a value or not
    for name in sorted(questions_mod.changed_names(diff) - out.keys()):
        out[name] = "(see edit.diff)"
    return out


def _assigned(stmt: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id, stmt.value
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id, stmt.value
    return None, None


def run_name(e: Experiment, params: dict[str, str]) -> str:
    """``#12 MATRIX_LR 0.04→0.05``, ``#3 baseline (seed 42)``, ``#14 confirm #12 on seed 43``,
    ``#9 LR=0.05 DEPTH=6``, else the hypothesis."""
    if e.is_baseline:
        return f"#{e.id} baseline" + (f" (seed {e.seed})" if e.seed is not None else "")
    if e.confirms is None and e.diff:
        change = change_blocks(e.diff).change
        if change:
            return f"#{e.id} {change}"
        edited = {k: v for k, v in params.items() if k not in _RESERVED_PARAMS}
        if 0 < len(edited) <= 3 and all(len(v) <= 20 for v in edited.values()):
            return f"#{e.id} " + " ".join(f"{k}={v}" for k, v in edited.items())
    words = " ".join(e.hypothesis.split())
    return f"#{e.id} {words[:80] + '…' if len(words) > 80 else words}".rstrip()


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _key(k: str) -> str:
    """A metric/param/tag key MLflow accepts (letters, digits, ``_-./ :``, ≤ 250 characters)."""
    safe = "".join(c if c.isalnum() or c in "_-./ :" else "_" for c in str(k))
    return safe[:_MAX_KEY] or "_"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_record(
    e: Experiment,
    curve: list[ProgressRecord],
    metric: str,
    default_budget: float,
    questions: dict[int, Question],
    effect: questions_mod.Effect | None = None,
    identity: dict[str, str] | None = None,
    code_diff: str | None = None,
    anomalies: Sequence[Anomaly] = (),
) -> RunRecord:
    """What experiment ``e`` becomes in MLflow. ``identity``: the tags that find the run again
    (``sigmaloop.key``, workspace, branch); ``questions``: id → question, for its text;
    ``code_diff``: the edit its code carries when not its own (a confirmation runs the code of
    the experiment it confirms: the same params, so MLflow's compare lines them up);
    ``anomalies``: what looks wrong in its curve and was not dismissed (tags ``anomaly.<kind>``)."""
    # an edit's own `seed = …` is kept apart from the run's seed
    changed = changed_constants(e.diff if code_diff is None else code_diff)
    params = {_key(f"edit.{k}" if k in _RESERVED_PARAMS else k): _clip(v, _MAX_PARAM)
              for k, v in changed.items()}
    if e.seed is not None:
        params["seed"] = str(e.seed)
    params["budget"] = f"{e.budget if e.budget is not None else default_budget:g}"
    params["source"] = e.source

    metrics: dict[str, float] = {}
    for k, v in ((metric, e.metric), ("delta", e.delta), ("z", e.z), ("sigma", e.sigma),
                 ("predicted_delta", e.predicted_delta)):
        if (x := _num(v)) is not None:
            metrics[_key(k)] = x
    if effect is not None:
        metrics.update(effect=effect.better, effect_low95=effect.low, effect_high95=effect.high)
    for prefix, numbers in (("summary", e.summary), ("timings", e.timings), ("verdict", e.numbers)):
        for k, v in numbers.items():
            if (x := _num(v)) is not None:
                metrics[_key(f"{prefix}/{k}")] = x

    t0 = e.started_at if e.started_at is not None else e.created_at
    history: dict[str, list[tuple[int, float, int]]] = {}
    for r in curve:
        ts = _ms(t0 + (r.t or 0.0)) or 0
        if (x := _num(r.loss)) is not None:
            history.setdefault("train_loss", []).append((int(r.step), x, ts))
        for k, v in r.extra.items():
            if k != NONFINITE_LOSS and (x := _num(v)) is not None:  # the marker: an anomaly tag says it
                history.setdefault(_key(f"train/{k}"), []).append((int(r.step), x, ts))

    q = questions.get(e.question) if e.question is not None else None
    tags = {
        **(identity or {}),
        "sigmaloop.exp_id": str(e.id),
        "sigmaloop.export": EXPORT_VERSION,
        "status": e.status.value,
        "reason": e.reason,
        "verdict": e.verdict,
        "detail": e.detail,
        "hypothesis": e.hypothesis,
        "rationale": e.rationale,
        "predicted_delta": "" if e.predicted_delta is None else f"{e.predicted_delta:g}",
        "question": "" if e.question is None else str(e.question),
        "question_text": q.text if q else "",
        "source": e.source,
        "seed": "" if e.seed is None else str(e.seed),
        "commit": e.commit or "",
        "parent_commit": e.parent_commit or "",
        "rebased_from": e.rebased_from,
        "confirms": "" if e.confirms is None else str(e.confirms),
        "evaluator": e.evaluator,
        "device": e.device,
        "node": e.node,
        "sandboxed": "" if e.sandboxed is None else str(e.sandboxed).lower(),
        "crash": f"{e.crash.file}:{e.crash.line} {e.crash.message}" if e.crash else "",
        "rejection_reason": e.rejection_reason or "",
        "log_path": e.log_path or "",
        "mlflow.source.git.commit": e.commit or "",
        "mlflow.note.content": _note(e, q),
    }
    tags.update({_key(f"warning.{k}"): v for k, v in e.warnings.items()})
    tags.update({_key(f"anomaly.{a.kind}"): a.message for a in anomalies})
    tags = {k: _clip(str(v), _MAX_TAG) for k, v in tags.items() if v not in ("", None)}

    log = e.log_path if e.log_path and _small_file(e.log_path) else None
    start = _ms(t0) or 0
    end = _ms(e.finished_at) if e.finished and e.finished_at is not None else None
    return RunRecord(e.id, run_name(e, params), RUN_STATUS.get(e.status, "SCHEDULED"), start,
                     max(end, start) if end is not None else None, params, metrics, history, tags,
                     e.diff, log, e.confirms)


def _small_file(path: str) -> bool:
    try:
        return os.path.getsize(path) < MAX_LOG_BYTES
    except OSError:
        return False


def _note(e: Experiment, q: Question | None) -> str:
    """The run's description in MLflow's UI (markdown): the claim, the verdict, the question."""
    lines = [f"**{e.hypothesis or e.source}**", ""]
    if e.verdict:
        lines += [f"Verdict ({e.status.value}): {e.verdict}", ""]
    if q:
        lines += [f"Tests question #{q.id}: {q.text}", ""]
    if e.confirms is not None:
        lines += [f"Confirmation rerun of #{e.confirms}.", ""]
    lines.append(f"sigmaloop experiment #{e.id}; the edit is the artifact edit.diff.")
    return "\n".join(lines)


# --- the store ------------------------------------------------------------------------------------

def default_uri(state_dir: Path) -> str:
    """``sqlite:///<state dir>/mlflow/mlflow.db``."""
    return "sqlite:///" + str((Path(state_dir) / "mlflow" / "mlflow.db").resolve())


def _artifact_location(uri: str) -> str | None:
    """Artifacts beside a SQLite store (MLflow would put them under the caller's cwd);
    other stores decide for themselves."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri[len("sqlite:///"):]
    if db in ("", ":memory:"):
        return None
    return (Path(db).resolve().parent / "artifacts").as_uri()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow logs its schema migrations at INFO when it makes a store; the caller's output
    is theirs. Levels are restored after."""
    loggers = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, before):
            lg.setLevel(level)


def _client_class() -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowMissing() from None
    return MlflowClient


def _why(exc: BaseException, uri: str) -> str:
    """MLflow's complaint in one line, with what to use instead where it is a known mistake."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    if "unsupported URI" in text:  # MLflow words it as the model registry's, whatever the store
        text = (f"MLflow has no store for the scheme {uri.split(':', 1)[0]!r}; use sqlite:///<path>/mlflow.db, "
                "http(s)://<tracking server>, postgresql://, mysql:// or databricks")
    elif "://" not in uri:
        text += " (a folder is MLflow's old file store: use sqlite:///<path>/mlflow.db)"
    return text


PROBE_TIMEOUT = 5.0  # seconds: a tracking server that does not take a connection by then is not there


def redact(uri: str) -> str:
    """``uri`` with any password in it replaced by ``***`` (``http://user:pw@host``,
    ``postgresql://user:pw@host/db``): what messages and results show."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _scrub(text: str, uri: str) -> str:
    """``text`` (an error of the store's) without the password ``uri`` carries, wherever it is quoted."""
    password = urllib.parse.urlsplit(uri).password
    return text.replace(password, "***") if password else text


def _probe(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast on a tracking server that is not there: MLflow's own client retries a refused
    connection with exponential backoff for minutes before it gives up. One TCP connection to
    the server's host and port, with a short timeout, says at once when nothing listens (no
    HTTP: a path prefix, a proxy's authentication or TLS settings are MLflow's to handle). A
    server reached through a proxy is left to MLflow."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise MlflowExportError(
            f"no MLflow tracking server answers at {redact(uri)} ({why}); start one "
            "(mlflow server --host 127.0.0.1 --port 5000) or leave the URI out for the local store") from None


def _open_experiment(client: Any, uri: str, name: str, tags: dict[str, str]) -> tuple[str, str | None]:
    """The MLflow experiment's id (made when missing) and its artifact location."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = _artifact_location(uri)
        eid = client.create_experiment(name, artifact_location=location, tags=tags)
        return eid, client.get_experiment(eid).artifact_location
    if exp.lifecycle_stage != "active":
        raise MlflowExportError(
            f"the MLflow experiment {name!r} (id {exp.experiment_id}) was deleted in {uri}: restore it "
            f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or export under another name")
    return exp.experiment_id, exp.artifact_location


def _existing(client: Any, eid: str, key: str) -> dict[int, Any]:
    """This workspace's runs in the experiment, by sigmaloop id; a duplicate (two exports at
    once) is deleted, the oldest run kept."""
    runs: dict[int, Any] = {}
    token = None
    while True:
        page = client.search_runs([eid], f"tags.`sigmaloop.key` = '{key}'", max_results=10000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            try:
                exp_id = int(run.data.tags.get("sigmaloop.exp_id", ""))
            except ValueError:
                continue
            if exp_id in runs:
                client.delete_run(run.info.run_id)
            else:
                runs[exp_id] = run
        token = page.token
        if not token:
            return runs


# --- writing a run --------------------------------------------------------------------------------

def _batches(client: Any, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any]) -> None:
    """log_batch within MLflow's limits (100 params/tags, 1000 entities a call)."""
    while metrics or params or tags:
        p, params = params[:_PARAMS_TAGS_PER_BATCH], params[_PARAMS_TAGS_PER_BATCH:]
        t, tags = tags[:_PARAMS_TAGS_PER_BATCH], tags[_PARAMS_TAGS_PER_BATCH:]
        room = _PER_BATCH - len(p) - len(t)
        m, metrics = metrics[:room], metrics[room:]
        client.log_batch(run_id, metrics=m, params=p, tags=t)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


class _Writer:
    """Writes :class:`RunRecord`s into one MLflow experiment (creates, updates, recreates)."""

    def __init__(self, client: Any, eid: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.client, self.eid = client, eid
        self.Metric, self.Param, self.RunTag = Metric, Param, RunTag

    def create(self, rec: RunRecord) -> str:
        tags = dict(rec.tags)
        rev = tags.pop("sigmaloop.rev", None)  # written last: a run cut short is redone next time
        identity = {k: tags.pop(k) for k in ("sigmaloop.key", "sigmaloop.exp_id") if k in tags}
        run = self.client.create_run(self.eid, start_time=rec.start_ms, tags=identity, run_name=rec.name)
        run_id = run.info.run_id
        metrics = [self.Metric(k, v, rec.end_ms or rec.start_ms, 0) for k, v in rec.metrics.items()]
        metrics += [self.Metric(k, v, ts, step) for k, points in rec.history.items() for step, v, ts in points]
        _batches(self.client, run_id, metrics, [self.Param(k, v) for k, v in rec.params.items()],
                 [self.RunTag(k, v) for k, v in tags.items()])
        self._artifacts(run_id, rec)
        self._status(run_id, rec, None)
        if rev is not None:
            self.client.set_tag(run_id, "sigmaloop.rev", rev)
        return run_id

    def update(self, run: Any, rec: RunRecord) -> str:
        """Bring ``run`` up to ``rec`` in place; delete and recreate it when MLflow can't
        change what changed. Returns the run's id (a new one when recreated)."""
        run_id, data = run.info.run_id, run.data
        histories = {k: self.client.get_metric_history(run_id, k) for k in rec.history if k in data.metrics}
        if not self._updatable(run, rec, histories):
            self.client.delete_run(run_id)
            return self.create(rec)
        rev = rec.tags.get("sigmaloop.rev")
        tags = {k: v for k, v in rec.tags.items() if k != "sigmaloop.rev" and data.tags.get(k) != v}
        stale = [k for k in data.tags if _own_tag(k) and k not in rec.tags and k != "sigmaloop.rev"]
        ts = rec.end_ms or rec.start_ms
        metrics = [self.Metric(k, v, ts, 0) for k, v in rec.metrics.items()
                   if not _same(data.metrics.get(k), v)]
        for k, points in rec.history.items():
            metrics += [self.Metric(k, v, t, step) for step, v, t in points[len(histories.get(k, [])):]]
        params = [self.Param(k, v) for k, v in rec.params.items() if k not in data.params]
        _batches(self.client, run_id, metrics, params, [self.RunTag(k, v) for k, v in tags.items()])
        for k in stale:
            self.client.delete_tag(run_id, k)
        if run.info.run_name != rec.name:
            self.client.update_run(run_id, name=rec.name)
        self._artifacts(run_id, rec)
        self._status(run_id, rec, run.info)
        if rev is not None:
            self.client.set_tag(run_id, "sigmaloop.rev", rev)
        return run_id

    @staticmethod
    def _updatable(run: Any, rec: RunRecord, histories: dict[str, list[Any]]) -> bool:
        """Whether ``run`` can become ``rec`` by adding: same start, no param value changed, no
        metric gone, each curve logged so far a prefix of the new one, not reopened."""
        info, data = run.info, run.data
        if info.start_time != rec.start_ms or (info.end_time and rec.end_ms is None):
            return False
        if any(rec.params.get(k) != v for k, v in data.params.items()):
            return False
        if any(k not in rec.metrics and k not in rec.history for k in data.metrics):
            return False
        for k, logged in histories.items():
            new = rec.history[k]
            ordered = sorted(logged, key=lambda m: (m.step, m.timestamp))
            if len(ordered) > len(new) or any(
                    m.step != s or not _same(m.value, v) for m, (s, v, _) in zip(ordered, new)):
                return False
        return True

    def _status(self, run_id: str, rec: RunRecord, info: Any) -> None:
        if info is not None and info.status == rec.status and info.end_time == rec.end_ms:
            return
        if rec.end_ms is not None:
            self.client.set_terminated(run_id, rec.status, end_time=rec.end_ms)
        else:
            self.client.update_run(run_id, status=rec.status)

    def _artifacts(self, run_id: str, rec: RunRecord) -> None:
        if rec.diff:
            self.client.log_text(run_id, rec.diff, "edit.diff")
        if rec.log_path:
            try:
                text = Path(rec.log_path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = None
            if text is not None:
                self.client.log_text(run_id, text, "trial.log")


def _own_tag(k: str) -> bool:
    return k in _OWN_TAGS or k.startswith(("sigmaloop.", "warning.", "anomaly."))


# --- the export -----------------------------------------------------------------------------------

def workspace_key(workspace: Path, branch: str) -> str:
    """What tells this workspace's runs from another's in a shared store."""
    return hashlib.sha256(f"{Path(workspace).resolve()}\0{branch}".encode()).hexdigest()[:16]


def export_mlflow(
    engine: Engine,
    uri: str | None = None,
    experiment: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MlflowExport:
    """Log every experiment of ``engine``'s journal to the MLflow store at ``uri`` (default
    :func:`default_uri` under the state folder) in the MLflow experiment ``experiment``
    (default ``<workspace folder>/<research branch>``). Idempotent: an unchanged experiment's
    run is left alone, a changed one updated; nothing is logged twice. ``progress(done, total)``
    after each experiment. Raises :class:`MlflowMissing` without the client,
    :class:`MlflowExportError` when the store can't be opened (a tracking server that does not
    answer is found out in seconds, not after MLflow's minutes of retries)."""
    uri = uri or default_uri(engine.state_dir)
    name = experiment or f"{engine.workspace.name}/{engine.branch}"
    key = workspace_key(engine.workspace, engine.branch)
    cfg = engine.config.experiment
    client_class = _client_class()  # MlflowMissing first: it says what to install
    _probe(uri)
    with _quiet():
        try:
            client = client_class(tracking_uri=uri, registry_uri=uri if uri.startswith("sqlite") else None)
            eid, artifact_root = _open_experiment(client, uri, name, {
                "sigmaloop.workspace": str(engine.workspace), "sigmaloop.branch": engine.branch,
                "sigmaloop.metric": cfg.metric, "sigmaloop.direction": cfg.direction,
                "mlflow.note.content": f"sigmaloop experiments of {engine.workspace} on {engine.branch}; "
                                       f"{cfg.metric}, {'lower' if engine.config.lower_is_better else 'higher'} is better."})
            existing = _existing(client, eid, key)
        except MlflowExportError:
            raise
        except Exception as exc:  # mlflow's, SQLAlchemy's, the network's: say where and what
            shown = redact(uri)
            raise MlflowExportError(
                f"cannot open the MLflow tracking store {shown!r}: {_scrub(_why(exc, uri), uri)}"
            ) from (None if shown != uri else exc)  # a traceback would quote the password
    writer = _Writer(client, eid)
    identity = {"sigmaloop.key": key, "sigmaloop.workspace": str(engine.workspace),
                "sigmaloop.branch": engine.branch}
    questions = {q.id: q for q in engine.questions()}
    exps = engine.experiments()
    by_id = {e.id: e for e in exps}
    run_ids = {i: r.info.run_id for i, r in existing.items()}
    created = updated = unchanged = 0
    for n, e in enumerate(sorted(exps, key=lambda x: x.id), 1):
        run = existing.get(e.id)
        tags = run.data.tags if run is not None else {}
        if (run is not None and tags.get("sigmaloop.rev") == str(e.rev)
                and tags.get("sigmaloop.export") == EXPORT_VERSION and e.status != Status.RUNNING):
            unchanged += 1
        else:
            code = by_id[e.confirms].diff if e.confirms in by_id else None
            rec = run_record(e, engine.curve(e.id, MAX_CURVE_POINTS), cfg.metric, cfg.budget, questions,
                             engine.effect(e), identity, code,
                             engine.anomalies(e.id) if e.started_at else ())
            rec.tags["sigmaloop.rev"] = str(e.rev)
            if rec.parent is not None and rec.parent in run_ids:  # a confirmation: nested
                rec.tags["mlflow.parentRunId"] = run_ids[rec.parent]
            if run is None:
                run_ids[e.id] = writer.create(rec)
                created += 1
            else:
                run_ids[e.id] = writer.update(run, rec)
                updated += 1
        if progress is not None:
            progress(n, len(exps))
    return MlflowExport(redact(uri), eid, name, created, updated, unchanged, artifact_root)
