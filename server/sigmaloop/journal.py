"""The journal: every experiment and its training curve, in SQLite at ``.sigmaloop/journal.db``.

Several processes (the CLI running the loop, the language server watching it) and several
threads in each open the same file at the same time, so:

* WAL mode: readers never wait for the writer, and the writer never waits for readers.
* Every write is one ``BEGIN IMMEDIATE`` transaction, so writers queue on SQLite's lock (with a
  busy timeout) instead of failing half-way with "database is locked".
* One connection per thread (and per process, after a fork).
* Every insert or update of an experiment takes the next journal-wide revision number (``rev``),
  kept in the ``meta`` table and bumped inside the same transaction. A watcher polls
  :meth:`Journal.max_rev` (one indexed read) and fetches :meth:`Journal.changed_since`.

The schema is versioned with ``PRAGMA user_version`` and upgraded at open by :data:`MIGRATIONS`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import lifecycle
from .config import STATE_DIR
from .models import (
    FINISHED,
    MEASURED,
    CrashLocation,
    Experiment,
    ProgressRecord,
    Question,
    QuestionStatus,
    Status,
)

JOURNAL_NAME = "journal.db"
BUSY_TIMEOUT_S = 10.0

#: Schema migrations, in order. Step ``i`` (0-based) takes the schema from version ``i`` to
#: ``i + 1``; the database's ``PRAGMA user_version`` is the number of steps applied.
#: Never edit a released step: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: experiments, curves, the revision counter.
    (
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID""",
        """INSERT INTO meta (key, value) VALUES ('rev', 0)""",
        """CREATE TABLE experiments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            status TEXT NOT NULL,
            source TEXT NOT NULL,
            hypothesis TEXT NOT NULL DEFAULT '',
            predicted_delta REAL,
            rationale TEXT NOT NULL DEFAULT '',
            diff TEXT NOT NULL DEFAULT '',
            parent_commit TEXT,
            "commit" TEXT,
            code_hash TEXT,
            seed INTEGER,
            budget REAL,
            metric REAL,
            delta REAL,
            sigma REAL,
            z REAL,
            verdict TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            log_path TEXT,
            metrics_path TEXT,
            crash_file TEXT,
            crash_line INTEGER,
            crash_message TEXT,
            rejection_reason TEXT,
            confirms INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            pid INTEGER,
            owner_pid INTEGER,
            summary TEXT NOT NULL DEFAULT '{}',
            params TEXT NOT NULL DEFAULT '{}',
            timings TEXT NOT NULL DEFAULT '{}',
            rev INTEGER NOT NULL
        )""",
        """CREATE TABLE curves (
            exp_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            t REAL NOT NULL,
            frac REAL NOT NULL,
            loss REAL,
            extra TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE INDEX curves_exp_step ON curves (exp_id, step)""",
    ),
    # v2: LLM usage per experiment; indexes for the editor's queries (watchers poll by rev,
    # the tree view groups by status and asks for the best kept metric, source prefixes
    # filter proposers, the judge looks up baselines by code hash).
    (
        """ALTER TABLE experiments ADD COLUMN usage TEXT NOT NULL DEFAULT '{}'""",
        """CREATE UNIQUE INDEX experiments_rev ON experiments (rev)""",
        """CREATE INDEX experiments_status_metric ON experiments (status, metric)""",
        """CREATE INDEX experiments_source ON experiments (source)""",
        """CREATE INDEX experiments_code_hash ON experiments (code_hash)""",
    ),
    # v3: structured verdicts (lifecycle.Phase / Reason, a detail, the numbers); the text
    # column stays as the caption made from them. Old rows keep their text; the two reasons
    # consumers ask for (baselines, the user's rejections) are filled in.
    (
        """ALTER TABLE experiments ADD COLUMN phase TEXT NOT NULL DEFAULT ''""",
        """ALTER TABLE experiments ADD COLUMN reason TEXT NOT NULL DEFAULT ''""",
        """ALTER TABLE experiments ADD COLUMN detail TEXT NOT NULL DEFAULT ''""",
        """ALTER TABLE experiments ADD COLUMN numbers TEXT NOT NULL DEFAULT '{}'""",
        """UPDATE experiments SET reason = 'baseline' WHERE source = 'baseline' AND status = 'kept'""",
        """UPDATE experiments SET reason = 'user_rejected', detail = coalesce(rejection_reason, '')
           WHERE status = 'rejected' AND verdict LIKE 'rejected by user%'""",
    ),
    # v4: whether a trial ran inside the sandbox (shown with every unsandboxed run)
    (
        """ALTER TABLE experiments ADD COLUMN sandboxed INTEGER""",
    ),
    # v5: what makes runs comparable (evaluator, data, device) and the script's own printed metric
    (
        """ALTER TABLE experiments ADD COLUMN evaluator TEXT NOT NULL DEFAULT ''""",
        """ALTER TABLE experiments ADD COLUMN data TEXT NOT NULL DEFAULT ''""",
        """ALTER TABLE experiments ADD COLUMN device TEXT NOT NULL DEFAULT ''""",
        """ALTER TABLE experiments ADD COLUMN printed_metric REAL""",
    ),
    # v6: the machine a trial ran on
    (
        """ALTER TABLE experiments ADD COLUMN node TEXT NOT NULL DEFAULT ''""",
    ),
    # v7: the commit an edit was written against, when it ran rebased onto a newer head
    (
        """ALTER TABLE experiments ADD COLUMN rebased_from TEXT NOT NULL DEFAULT ''""",
    ),
    # v8: research questions, the one an experiment tests, and warnings about a run
    (
        """ALTER TABLE experiments ADD COLUMN question INTEGER""",
        """ALTER TABLE experiments ADD COLUMN warnings TEXT NOT NULL DEFAULT '{}'""",
        """CREATE TABLE questions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            text TEXT NOT NULL,
            decision TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'open',
            answer TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT 'user',
            created_at REAL NOT NULL,
            answered_at REAL,
            rev INTEGER NOT NULL
        )""",
        """CREATE INDEX experiments_question ON experiments (question)""",
    ),
    # v9: curve anomalies a researcher looked at and dismissed (anomaly.KINDS), per experiment
    (
        """CREATE TABLE dismissals (
            exp_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            at REAL NOT NULL,
            PRIMARY KEY (exp_id, kind)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class JournalError(Exception):
    """Something wrong with the journal file or a call on it."""


class SchemaTooNew(JournalError):
    """The journal was written by a newer sigmaloop than this one."""


class UnknownExperiment(JournalError, KeyError):
    """No experiment with that id."""

    def __init__(self, exp_id: int, path: Path | None = None) -> None:
        self.exp_id = exp_id
        where = f" in {path}" if path else ""
        super().__init__(f"no experiment #{exp_id}{where}")

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class ConcurrentChange(JournalError):
    """The row changed (another thread or process wrote it) since it was read."""

    def __init__(self, exp_id: int, expected: int, found: int) -> None:
        self.exp_id, self.expected, self.found = exp_id, expected, found
        super().__init__(f"experiment #{exp_id} changed since it was read (revision {expected} → {found})")


class UnknownQuestion(JournalError, KeyError):
    """No research question with this id."""

    def __init__(self, qid: int, path: Path | None = None) -> None:
        self.qid = qid
        where = f" in {path}" if path is not None else ""
        super().__init__(f"no question Q{qid}{where}; `sigmaloop questions` lists them")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownField(JournalError, ValueError):
    """A field name that Experiment does not have (or one the journal manages itself)."""


# --- columns ------------------------------------------------------------------------------

_FIELDS = [f.name for f in dataclasses.fields(Experiment)]
_DICT_FIELDS = frozenset({"summary", "params", "usage", "timings", "numbers", "warnings"})
_MANAGED = frozenset({"id", "rev"})  # set by the journal, never by callers
_SETTABLE = frozenset(_FIELDS) - _MANAGED
_CRASH_COLUMNS = ("crash_file", "crash_line", "crash_message")
#: Table columns, in the order every SELECT returns them.
_COLUMNS: tuple[str, ...] = tuple(
    c for name in _FIELDS for c in (_CRASH_COLUMNS if name == "crash" else (name,))
)
_SELECT = ", ".join(f'"{c}"' for c in _COLUMNS)
#: the same columns with the bulky text left out (diff, rationale, JSON fields): :meth:`Journal.slim`
_SLIM_SELECT = ", ".join(
    "''" if c in ("diff", "rationale") else "'{}'" if c in _DICT_FIELDS else f'"{c}"' for c in _COLUMNS
)
_IDX = {c: i for i, c in enumerate(_COLUMNS)}
_STATUS_OF = {s.value: s for s in Status}


def _json_dict(name: str, value: Any) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise TypeError(f"Experiment.{name} must be a dict, not {type(value).__name__}")
    return json.dumps(dict(value), separators=(",", ":"))


def _load_dict(text: str | None) -> dict[str, Any]:
    if not text or text == "{}":
        return {}
    return json.loads(text)


def _to_columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Experiment field values -> column values; checks names and the few typed fields."""
    unknown = sorted(set(fields) - _SETTABLE)
    if unknown:
        managed = [n for n in unknown if n in _MANAGED]
        if managed:
            raise UnknownField(f"{', '.join(managed)} is set by the journal and cannot be given")
        raise UnknownField(
            f"Experiment has no field {', '.join(map(repr, unknown))} "
            f"(fields: {', '.join(sorted(_SETTABLE))})"
        )
    cols: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, enum.Enum):  # lifecycle.Phase / Reason: stored by value
            value = value.value
        if name == "status":
            cols["status"] = Status(value).value
        elif name == "crash":
            if isinstance(value, Mapping):
                value = CrashLocation(**value)
            if value is None:
                cols.update(crash_file=None, crash_line=None, crash_message=None)
            elif isinstance(value, CrashLocation):
                cols.update(
                    crash_file=value.file, crash_line=value.line, crash_message=value.message
                )
            else:
                raise TypeError(f"Experiment.crash must be a CrashLocation or None, not {value!r}")
        elif name in _DICT_FIELDS:
            cols[name] = _json_dict(name, value)
        elif isinstance(value, os.PathLike):
            cols[name] = os.fspath(value)
        else:
            cols[name] = value
    return cols


_CRASH_AT = _COLUMNS.index("crash_file")
_SANDBOXED_AT = _FIELDS.index("sandboxed")
_FIELD_DICT_AT = tuple(_FIELDS.index(n) for n in sorted(_DICT_FIELDS))
_loads = json.loads


def _from_row(row: Sequence[Any], dicts: bool = True) -> Experiment:
    """A table row (columns in ``_COLUMNS`` order) -> Experiment; positional for speed.

    ``dicts=False`` leaves the JSON fields empty (skips decoding, the bulk of the cost)."""
    at = _CRASH_AT
    values = list(row[:at])
    file = row[at]
    values.append(
        CrashLocation(file=file, line=row[at + 1], message=row[at + 2])
        if file is not None
        else None
    )
    values += row[at + 3 :]
    values[1] = _STATUS_OF[values[1]]
    if values[_SANDBOXED_AT] is not None:
        values[_SANDBOXED_AT] = bool(values[_SANDBOXED_AT])
    for i in _FIELD_DICT_AT:
        text = values[i]
        values[i] = _loads(text) if dicts and text and text != "{}" else {}
    return Experiment(*values)


def _statuses(status: Status | str | Iterable[Status | str]) -> list[str]:
    if isinstance(status, (Status, str)):
        return [Status(status).value]
    return [Status(s).value for s in status]


def journal_path(workspace: str | os.PathLike[str]) -> Path:
    """Where a workspace keeps its journal."""
    return Path(workspace) / STATE_DIR / JOURNAL_NAME


# --- the journal --------------------------------------------------------------------------


class Journal:
    """Experiments and curves of one workspace. Safe across threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = BUSY_TIMEOUT_S,
        caption: Callable[[Experiment], str] | None = None,
    ) -> None:
        """``caption``: makes the one-line ``verdict`` text from a row's fields; applied inside
        every write (the engine passes :func:`lifecycle.describe`), so text never lags state."""
        self.path = Path(path)
        self._caption = caption
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[int, sqlite3.Connection]] = []  # (pid, connection)
        self._closed = False
        self._migrate(self._conn())

    @classmethod
    def for_workspace(cls, workspace: str | os.PathLike[str]) -> Journal:
        return cls(journal_path(workspace))

    # --- connections and transactions ---

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._timeout,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # used by one thread only; close() may come from another
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network file system
            conn.close()
            raise JournalError(f"cannot use WAL mode for {self.path} (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        local = self._local
        pid = os.getpid()
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != pid:  # new thread, or a forked child
            conn = self._connect()
            local.conn, local.pid = conn, pid
            with self._lock:
                self._conns.append((pid, conn))
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _next_rev(conn: sqlite3.Connection) -> int:
        return conn.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'rev' RETURNING value"
        ).fetchall()[0][0]

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process?
            self._check_version(version)
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path.name} was written by a newer sigmaloop (schema {version}); "
                f"upgrade sigmaloop (this one reads schema {SCHEMA_VERSION} and older): "
                f"{self.path}"
            )

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        """Close every connection this process opened. Later calls raise JournalError."""
        self._closed = True
        pid = os.getpid()
        with self._lock:
            conns, self._conns = self._conns, []
        for owner, conn in conns:
            if owner == pid:  # a parent's connection must not be touched after a fork
                conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # --- experiments ---

    def create(self, **fields: Any) -> Experiment:
        """Add an experiment. ``status`` is required; ``id``, ``rev`` are assigned."""
        if "status" not in fields:
            raise TypeError("Journal.create() needs status=")
        if "source" not in fields:
            raise TypeError("Journal.create() needs source=")
        cols = _to_columns(fields)
        cols.setdefault("created_at", time.time())
        names = list(cols)
        with self._write() as conn:
            cols_sql = ", ".join(f'"{n}"' for n in [*names, "rev"])
            marks = ", ".join("?" * (len(names) + 1))
            row = conn.execute(
                f"INSERT INTO experiments ({cols_sql}) VALUES ({marks}) RETURNING {_SELECT}",
                [*(cols[n] for n in names), self._next_rev(conn)],
            ).fetchall()[0]
            return self._captioned(conn, _from_row(row))

    def update(self, exp_id: int, **fields: Any) -> Experiment:
        """Change some fields (never the status: that is :meth:`move`); returns the record as
        stored, with its new ``rev``. With no fields it only takes a new revision."""
        if "status" in fields:
            raise UnknownField("status changes go through Journal.move (the lifecycle checks them)")
        cols = _to_columns(fields)
        with self._write() as conn:
            return self._update_row(conn, exp_id, cols)

    def move(
        self, exp_id: int, to: Status | str, action: str = "", *, expect_rev: int | None = None, **fields: Any
    ) -> Experiment:
        """Change an experiment's status, and any fields with it, if the lifecycle allows the
        move from the status it has *now* (read in the same write transaction: compare-and-set,
        so two processes racing to move one experiment can't both win). Raises
        :class:`lifecycle.IllegalTransition` (saying what it is and could become) otherwise.
        With ``expect_rev``, the row must also be unchanged since it was read at that revision
        (:class:`ConcurrentChange` otherwise): a decision made on a snapshot holds only for it."""
        target = Status(to)
        cols = _to_columns({**fields, "status": target})
        with self._write() as conn:
            row = conn.execute("SELECT status, rev FROM experiments WHERE id = ?", [exp_id]).fetchone()
            if row is None:
                raise UnknownExperiment(exp_id, self.path)
            if expect_rev is not None and row[1] != expect_rev:
                raise ConcurrentChange(exp_id, expect_rev, row[1])
            lifecycle.check(_STATUS_OF[row[0]], target, exp_id, action)
            return self._update_row(conn, exp_id, cols)

    def _update_row(self, conn: sqlite3.Connection, exp_id: int, cols: dict[str, Any]) -> Experiment:
        """Set columns and a new rev inside an open write transaction."""
        rev = self._next_rev(conn)
        sets = ", ".join(f'"{n}" = ?' for n in [*cols, "rev"])
        rows = conn.execute(
            f"UPDATE experiments SET {sets} WHERE id = ? RETURNING {_SELECT}",
            [*cols.values(), rev, exp_id],
        ).fetchall()
        if not rows:
            raise UnknownExperiment(exp_id, self.path)  # rolls the rev back too
        return self._captioned(conn, _from_row(rows[0]))

    def _captioned(self, conn: sqlite3.Connection, exp: Experiment) -> Experiment:
        """Bring the row's caption in line with its fields (same transaction, same rev)."""
        if self._caption is not None:
            text = self._caption(exp)
            if text != exp.verdict:
                conn.execute("UPDATE experiments SET verdict = ? WHERE id = ?", [text, exp.id])
                exp.verdict = text
        return exp

    def get(self, exp_id: int) -> Experiment:
        row = (
            self._conn()
            .execute(f"SELECT {_SELECT} FROM experiments WHERE id = ?", (exp_id,))
            .fetchone()
        )
        if row is None:
            raise UnknownExperiment(exp_id, self.path)
        return _from_row(row)

    def exists(self, exp_id: int) -> bool:
        return (
            self._conn().execute("SELECT 1 FROM experiments WHERE id = ?", (exp_id,)).fetchone()
            is not None
        )

    def _query(self, where: str = "", args: Sequence[Any] = (), tail: str = "") -> list[Experiment]:
        sql = f"SELECT {_SELECT} FROM experiments"
        if where:
            sql += f" WHERE {where}"
        if tail:
            sql += f" {tail}"
        return [_from_row(r) for r in self._conn().execute(sql, args)]

    def slim(self) -> list[Experiment]:
        """Every experiment by id without its diff, rationale and JSON fields (left empty): what
        numbers over the whole journal need (the state, σ, calibration), at a fraction of the
        memory of :meth:`list` for thousands of rows."""
        sql = f"SELECT {_SLIM_SELECT} FROM experiments ORDER BY id"
        return [_from_row(r, dicts=False) for r in self._conn().execute(sql)]

    def changed_since(self, rev: int) -> list[Experiment]:
        """Experiments inserted or updated after revision ``rev``, in revision order."""
        return self._query("rev > ?", (rev,), "ORDER BY rev")

    def max_rev(self) -> int:
        """The latest revision (0 for an empty journal). Cheap enough to poll."""
        return self._conn().execute("SELECT value FROM meta WHERE key = 'rev'").fetchone()[0]

    def data_version(self) -> int:
        """SQLite's per-connection change counter: differs after another connection commits."""
        return self._conn().execute("PRAGMA data_version").fetchone()[0]

    def by_status(self, *statuses: Status | str) -> list[Experiment]:
        if not statuses:
            return []
        values = _statuses(statuses)
        marks = ", ".join("?" * len(values))
        return self._query(f"status IN ({marks})", values, "ORDER BY id")

    def running(self) -> list[Experiment]:
        return self.by_status(Status.RUNNING)

    def recent(self, n: int) -> list[Experiment]:
        """The ``n`` newest experiments, newest first."""
        return self._query("", (), f"ORDER BY id DESC LIMIT {int(n)}")

    def with_diff(self, *, since_rev: int = 0, dicts: bool = True) -> list[Experiment]:
        """Experiments with a non-empty diff (the editor's inlay hints), oldest first.

        ``since_rev``: only those changed after that revision (refresh a cache cheaply).
        ``dicts=False``: leave summary/params/usage/timings empty (not decoded) - several times
        faster for thousands of rows when only the scalar fields are needed.
        """
        if not since_rev:
            sql = f"SELECT {_SELECT} FROM experiments WHERE diff != '' ORDER BY id"
            return [_from_row(r, dicts) for r in self._conn().execute(sql)]
        sql = f"SELECT {_SELECT} FROM experiments WHERE rev > ? AND diff != '' ORDER BY rev"
        found = [_from_row(r, dicts) for r in self._conn().execute(sql, (since_rev,))]
        return sorted(found, key=lambda e: e.id)

    def baselines(self, code_hash: str | None = None) -> list[Experiment]:
        if code_hash is None:
            return self._query("source = 'baseline'", (), "ORDER BY id")
        return self._query("source = 'baseline' AND code_hash = ?", (code_hash,), "ORDER BY id")

    def best(self, lower_is_better: bool = True) -> Experiment | None:
        """The best metric among kept experiments and measured baselines (ties: oldest)."""
        agg = "min" if lower_is_better else "max"
        measured = ", ".join(f"'{s.value}'" for s in MEASURED)
        counted = f"(status = 'kept' OR (source = 'baseline' AND status IN ({measured})))"
        conn = self._conn()
        # Two index lookups (status, metric) and (source), then the row itself.
        candidates = [
            conn.execute(f"SELECT {agg}(metric) FROM experiments WHERE status = 'kept'"),
            conn.execute(
                f"SELECT {agg}(metric) FROM experiments "
                f"WHERE source = 'baseline' AND +status IN ({measured})"  # + : use the source index
            ),
        ]
        values = [v for (v,) in (c.fetchone() for c in candidates) if v is not None]
        if not values:
            return None
        target = min(values) if lower_is_better else max(values)
        rows = self._query(f"metric = ? AND {counted}", (target,), "ORDER BY id LIMIT 1")
        return rows[0] if rows else None

    def counts(self) -> dict[str, int]:
        """Number of experiments per status (every status present, zeros included)."""
        out = {s.value: 0 for s in Status}
        for status, n in self._conn().execute(
            "SELECT status, count(*) FROM experiments GROUP BY status"
        ):
            out[status] = n
        return out

    def __len__(self) -> int:
        return self._conn().execute("SELECT count(*) FROM experiments").fetchone()[0]

    # --- curves ---

    def add_progress(self, exp_id: int, records: Iterable[ProgressRecord]) -> int:
        """Append curve points in one transaction; returns how many were added."""
        rows = []
        for r in records:
            if r.exp_id != exp_id:
                raise ValueError(f"progress record for #{r.exp_id} given for #{exp_id}")
            rows.append((exp_id, r.step, r.t, r.frac, r.loss, _json_dict("extra", r.extra)))
        if not rows:
            return 0
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM experiments WHERE id = ?", (exp_id,)).fetchone() is None:
                raise UnknownExperiment(exp_id, self.path)
            conn.executemany(
                "INSERT INTO curves (exp_id, step, t, frac, loss, extra) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def curve(self, exp_id: int, max_points: int | None = None) -> list[ProgressRecord]:
        """The training curve in step order; evenly thinned to ``max_points`` (first and last
        points always kept)."""
        if max_points is not None and max_points < 1:
            raise ValueError("max_points must be at least 1")
        conn = self._conn()
        order = "ORDER BY step, rowid"
        conn.execute("BEGIN")  # one snapshot for the count and the rows
        try:
            n = conn.execute("SELECT count(*) FROM curves WHERE exp_id = ?", (exp_id,)).fetchone()[
                0
            ]
            if max_points is None or n <= max_points:
                rows = conn.execute(
                    f"SELECT step, t, frac, loss, extra FROM curves WHERE exp_id = ? {order}",
                    (exp_id,),
                ).fetchall()
            else:
                # Pick positions from the rowids alone (a covering-index scan), then read only
                # the rows kept: ~3x faster than decoding every row of a 20k-point curve.
                rowids = [
                    r
                    for (r,) in conn.execute(
                        f"SELECT rowid FROM curves WHERE exp_id = ? {order}", (exp_id,)
                    )
                ]
                n = len(rowids)
                if max_points == 1:
                    wanted = [rowids[-1]]
                else:  # evenly spaced positions, rounded; the first and the last included
                    span, last = n - 1, max_points - 1
                    wanted = [rowids[(i * span + last // 2) // last] for i in range(max_points)]
                rows = conn.execute(
                    "SELECT step, t, frac, loss, extra FROM curves"
                    f" WHERE rowid IN (SELECT value FROM json_each(?)) {order}",
                    (json.dumps(wanted),),
                ).fetchall()
        finally:
            conn.execute("COMMIT")
        return [
            ProgressRecord(
                exp_id=exp_id, step=step, t=t, frac=frac, loss=loss, extra=_load_dict(extra)
            )
            for step, t, frac, loss, extra in rows
        ]

    def clear_curve(self, exp_id: int) -> int:
        """Drop an experiment's curve (before a re-run); returns how many points went."""
        with self._write() as conn:
            return conn.execute("DELETE FROM curves WHERE exp_id = ?", (exp_id,)).rowcount

    def finished_with_commit(self) -> list[Experiment]:
        """Finished experiments that have a commit, in the order they finished (results.tsv)."""
        finished = [st.value for st in FINISHED]
        return self._query(
            f'"commit" IS NOT NULL AND "commit" != \'\' AND status IN '
            f"({', '.join('?' * len(finished))})",
            finished,
            "ORDER BY coalesce(finished_at, created_at), id",
        )

    # --- dismissed anomalies ---

    def dismiss(self, exp_id: int, kind: str, reason: str = "") -> Experiment:
        """Record that the researcher dismissed the ``kind`` anomaly of an experiment (once a
        kind; again replaces the reason). The experiment takes a new rev, so watchers refresh."""
        with self._write() as conn:
            exp = self._update_row(conn, exp_id, {})  # UnknownExperiment rolls it all back
            conn.execute(
                "INSERT OR REPLACE INTO dismissals (exp_id, kind, reason, at) VALUES (?, ?, ?, ?)",
                (exp_id, kind, reason, time.time()),
            )
        return exp

    def dismissed(self, exp_id: int | None = None) -> dict[int, dict[str, str]]:
        """Dismissed anomalies: experiment id → {kind: reason}."""
        sql, args = "SELECT exp_id, kind, reason FROM dismissals", ()
        if exp_id is not None:
            sql, args = sql + " WHERE exp_id = ?", (exp_id,)
        out: dict[int, dict[str, str]] = {}
        for eid, kind, reason in self._conn().execute(sql + " ORDER BY exp_id, kind", args):
            out.setdefault(eid, {})[kind] = reason
        return out

    # --- research questions ---

    _Q_COLUMNS = ("id", "text", "decision", "status", "answer", "source", "created_at", "answered_at", "rev")

    @classmethod
    def _question(cls, row: Sequence[Any]) -> Question:
        q = Question(*row)
        q.status = QuestionStatus(q.status)
        return q

    def add_question(self, text: str, decision: str = "", source: str = "user") -> Question:
        """A new open question (its id and rev assigned)."""
        cols = ", ".join(self._Q_COLUMNS)
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO questions (text, decision, source, created_at, rev) VALUES (?, ?, ?, ?, ?)"
                f" RETURNING {cols}",
                (text, decision, source, time.time(), self._next_rev(conn)),
            ).fetchall()[0]
        return self._question(row)

    def update_question(self, qid: int, **fields: Any) -> Question:
        """Change a question's text, decision, status, answer or answered_at (a new rev)."""
        allowed = {"text", "decision", "status", "answer", "answered_at"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise UnknownField(f"Question has no settable field {', '.join(map(repr, unknown))}")
        if "status" in fields:
            fields["status"] = QuestionStatus(fields["status"]).value
        sets = ", ".join(f"{n} = ?" for n in [*fields, "rev"])
        cols = ", ".join(self._Q_COLUMNS)
        with self._write() as conn:
            rows = conn.execute(
                f"UPDATE questions SET {sets} WHERE id = ? RETURNING {cols}",
                [*fields.values(), self._next_rev(conn), qid],
            ).fetchall()
            if not rows:
                raise UnknownQuestion(qid, self.path)
        return self._question(rows[0])

    def question(self, qid: int) -> Question:
        row = self._conn().execute(
            f"SELECT {', '.join(self._Q_COLUMNS)} FROM questions WHERE id = ?", (qid,)
        ).fetchone()
        if row is None:
            raise UnknownQuestion(qid, self.path)
        return self._question(row)

    def questions(self, since_rev: int = 0) -> list[Question]:
        """Every question by id (those changed after ``since_rev`` only, when given)."""
        rows = self._conn().execute(
            f"SELECT {', '.join(self._Q_COLUMNS)} FROM questions WHERE rev > ? ORDER BY id", (since_rev,)
        )
        return [self._question(r) for r in rows]

    def testing(self, qid: int) -> list[Experiment]:
        """The experiments that test question ``qid``, by id."""
        return self._query("question = ?", (qid,), "ORDER BY id")

    # Defined last: inside the class body the name ``list`` means this method from here on.
    def list(
        self,
        status: Status | str | Iterable[Status | str] | None = None,
        source_prefix: str | None = None,
        limit: int | None = None,
        order: str = "asc",
    ) -> list[Experiment]:
        """Experiments by id (``order`` "asc" or "desc"), optionally filtered by status(es)
        and by source prefix (e.g. ``"llm:"``), at most ``limit`` of them."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            values = _statuses(status)
            if not values:
                return []
            where.append(f"status IN ({', '.join('?' * len(values))})")
            args += values
        if source_prefix:  # a range on the source index (no LIKE wildcards to escape)
            where.append("source >= ? AND source < ?")
            args += [source_prefix, source_prefix[:-1] + chr(ord(source_prefix[-1]) + 1)]
        tail = f"ORDER BY id {order.upper()}"
        if limit is not None:
            tail += f" LIMIT {int(limit)}"
        return self._query(" AND ".join(where), args, tail)


