"""The train script as the editor has it: which document it is, its text, and the per-line
history index (:class:`render.HistoryIndex`) of the experiments that touched it.

The index is rebuilt when the document or the set of indexed experiments changes, never per
request; an experiment that changes status is updated in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pygls.uris import from_fs_path, to_fs_path

from ..models import Experiment
from . import render

if TYPE_CHECKING:
    from .server import SigmaloopServer


class Script:
    def __init__(self, ls: SigmaloopServer) -> None:
        self.ls = ls
        self.path: Path | None = None
        self.uri: str | None = None
        self.rows: dict[int, render.Row] = {}  # experiments with an edit of the script
        self.diffs: dict = {}  # {id: (diff, DiffInfo)}: parsing cache across rebuilds
        self._index: render.HistoryIndex | None = None
        self._dirty = True
        self._lines: tuple[int | None, render.DocLines] | None = None
        self._edit: tuple[tuple, Any] | None = None  # (head, version) → EditStatus

    def set_name(self, name: str) -> None:
        assert self.ls.root is not None
        self.path = (self.ls.root / name).resolve()
        self.uri = from_fs_path(str(self.path))
        self.invalidate()

    # --- which document -------------------------------------------------------------------
    def is_script(self, uri: str) -> bool:
        if self.path is None:
            return False
        if uri == self.uri:
            return True
        path = to_fs_path(uri)
        return path is not None and Path(path).resolve() == self.path

    def open_doc(self):
        """The script's open document in the client, or None."""
        if self.uri is None:
            return None
        for uri, doc in self.ls.workspace.text_documents.items():
            if self.is_script(uri):
                return doc
        return None

    def saved_text(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8") if self.path else None
        except OSError:
            return None

    def lines(self) -> render.DocLines:
        doc = self.open_doc()
        version = doc.version if doc is not None else None
        cached = self._lines
        if cached is not None and cached[0] == version and (version is not None or doc is None):
            return cached[1]
        lines = render.DocLines(doc.source if doc is not None else (self.saved_text() or ""))
        self._lines = (version, lines)
        return lines

    def edit_status(self) -> Any:
        """The engine's ``EditStatus`` of the script as the editor has it against the research
        head (the head's text as the last state read it); None until that is known."""
        from ..engine import edit_status

        head = self.ls.sync.head
        engine = self.ls.engine
        if head is None or engine is None:
            return None
        doc = self.open_doc()
        key = (head[0], doc.version if doc is not None else None)
        cached = self._edit
        if cached is not None and cached[0] == key and doc is not None:
            return cached[1]
        text = doc.source if doc is not None else self.saved_text()
        if text is None:
            return None
        status = edit_status(head[1], text, head[0], engine.script_name)
        self._edit = (key, status)
        return status

    # --- the history index ----------------------------------------------------------------
    def invalidate(self, text: bool = True) -> None:
        """The document's text (or only the indexed set) changed: rebuild on next use."""
        if text:
            self._lines = None
        self._dirty = True

    def take(self, e: Experiment) -> bool:
        """Index one new or changed experiment; True when the per-line history changed."""
        if not e.diff or e.is_baseline or e.confirms is not None:
            return False
        old = self.rows.get(e.id)
        row = render.Row.of(e)
        self.rows[e.id] = row
        if old is not None and old.status == e.status and old.delta == e.delta and old.reason == e.reason:
            return False
        if self._index is not None and not self._dirty:
            self._index.update(row)  # in place: no rebuild of thousands of entries
        return True

    def index(self) -> render.HistoryIndex:
        doc = self.lines()
        if self._index is None or self._dirty or self._index.doc is not doc:
            metric = self.ls.engine.config.experiment.metric if self.ls.engine else "val_bpb"
            lower = self.ls.engine.config.lower_is_better if self.ls.engine else True
            self._index = render.HistoryIndex.build(
                sorted(self.rows.values(), key=lambda e: e.id), doc, self.diffs, metric, lower)
            self._dirty = False
        return self._index
